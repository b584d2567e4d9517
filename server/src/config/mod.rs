//! Configuration: TOML file, flags on top, every limit validated once at start.
//!
//! The embedded default (no file, no flags) is a working gateway on 127.0.0.1:8080 with its
//! data under `./var/subzero`. Unknown keys are errors, so a typo never silently falls back to
//! a default. Paths inside the file are relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::gate::GateConfig;
use crate::shard::ShardLimits;

mod audit;
mod fleet;
mod monitor;
mod ratelimit;
mod security;
mod xaa;
pub use audit::AuditConfig;
pub use fleet::{FailMode, FleetConfig};
pub use ratelimit::{MAX_RULES, MAX_TRACKED_KEYS};
pub use security::{RiskConfig, RiskWeights, SignalWeights, ThreatConfig};
pub use xaa::XaaConfig;

/// A configuration error: one sentence saying what, where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for our schema (includes unknown keys).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, including the line.
        message: String,
    },
    /// A value is outside its allowed range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A secret file named by the config could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    SecretFile {
        /// Which setting named it.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How many shards to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    /// One per CPU the process may run on.
    Auto,
    /// Exactly this many.
    Count(usize),
}

impl Shards {
    /// Parses `auto` or a positive number.
    pub fn parse(text: &str) -> Result<Shards, ConfigError> {
        if text == "auto" {
            return Ok(Shards::Auto);
        }
        match text.parse::<usize>() {
            Ok(n) if (1..=MAX_SHARDS).contains(&n) => Ok(Shards::Count(n)),
            _ => Err(ConfigError::Invalid(format!(
                "shards must be \"auto\" or a number from 1 to {MAX_SHARDS}, got {text:?}"
            ))),
        }
    }
}

/// Upper bound on shards; also bounds the cross-shard mesh (`n_shards²` queues).
pub const MAX_SHARDS: usize = 256;

/// `server.max_body_bytes` by default.
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Ceiling of the derived `auth.max_batch_tokens` (a larger body limit does not raise it).
pub const MAX_BATCH_TOKENS_DEFAULT: usize = 4096;

/// No token this server signs is shorter: the header alone is 104 characters (its `kid` is a
/// 43-character RFC 7638 thumbprint) and the signature 86; with one-character `iss`, `sub` and
/// `aud`, no scope, and the 22-character `jti`, a whole token is 345 bytes. Typical ones are
/// 360-400. A unit test signs the shortest to keep this bound true and tight.
pub const MIN_BATCH_TOKEN_BYTES: usize = 344;

/// The most tokens a `POST /v1/authenticate/batch` body of `max_body_bytes` can hold, at
/// [`MIN_BATCH_TOKEN_BYTES`] each: `{"tokens":[` + n × (token + 2 quotes + comma) − 1 + `]}`.
pub const fn batch_tokens_fitting(max_body_bytes: usize) -> usize {
    max_body_bytes.saturating_sub(12) / (MIN_BATCH_TOKEN_BYTES + 3)
}

/// `auth.max_batch_tokens` when the file does not set it: as many as fit in the body limit
/// (at least 1), at most [`MAX_BATCH_TOKENS_DEFAULT`].
pub const fn default_max_batch_tokens(max_body_bytes: usize) -> usize {
    let fitting = batch_tokens_fitting(max_body_bytes);
    if fitting < 1 {
        1
    } else if fitting > MAX_BATCH_TOKENS_DEFAULT {
        MAX_BATCH_TOKENS_DEFAULT
    } else {
        fitting
    }
}

/// The whole configuration after validation.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener, data dir, shards and per-connection limits.
    pub server: ServerConfig,
    /// Token issuing and acceptance.
    pub auth: AuthConfig,
    /// Client credentials for `POST /v1/token`.
    pub clients: Vec<ClientConfig>,
    /// Admin bearer token; `None` turns admin endpoints off (except for `admin_unix_uids`).
    pub admin_token: Option<String>,
    /// `[admin] unix_uids`: a request over the Unix socket from one of these uids is admin
    /// without a bearer token.
    pub admin_unix_uids: Vec<u32>,
    /// The eBPF gate.
    pub gate: GateConfig,
    /// Token pool sizing.
    pub pool: PoolConfig,
    /// `[xaa]`: cross-app access (delegation, ID-JAG targets).
    pub xaa: XaaConfig,
    /// `[audit]`: the audit log.
    pub audit: AuditConfig,
    /// Per-source request rate limit in the shards.
    pub ratelimit: RateLimitConfig,
    /// `[permissions]`: the schema, parsed at start; `None` turns the permission endpoints off.
    pub permissions: Option<std::sync::Arc<crate::authz::Schema>>,
    /// `[monitor]`: histograms and perf counters, degradation detector.
    pub monitor: crate::monitor::MonitorSettings,
    /// `[threat]`: threat-check signals, weights, thresholds and table bounds.
    pub threat: ThreatConfig,
    /// `[risk]`: risk-assessment factors and decision thresholds.
    pub risk: RiskConfig,
    /// `[fleet]`: shared state through Redis; `None` runs this node alone.
    pub fleet: Option<FleetConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address every shard's SO_REUSEPORT listener binds; `None` when `listen` names only a
    /// `unix:/path` (Unix-only: no TCP listener at all). The default 127.0.0.1:8080 applies
    /// only when no `listen` is given.
    pub listen: Option<SocketAddr>,
    /// Keys, vault, revocations, audit log.
    pub data_dir: PathBuf,
    /// Shard count.
    pub shards: Shards,
    /// Per-shard limits the runtime enforces (TOML keys are flat under `[server]`;
    /// `max_connections_per_shard` is `limits.max_connections`).
    pub limits: ShardLimits,
    /// Base of the absolute URLs in our metadata (`/.well-known/oauth-authorization-server`),
    /// without a trailing `/`; `None`: `http://<listen>` (see [`Config::public_url`]).
    pub public_url: Option<String>,
    /// A `unix:/path` entry of `listen`: the Unix stream socket every shard also accepts on.
    pub unix_socket: Option<PathBuf>,
    /// `unix_mode` (octal text in the file): the socket file's permission bits.
    pub unix_mode: u32,
    /// `unix_group`: the group the socket file is given (`None`: the server's own).
    pub unix_group: Option<String>,
}

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `iss` of tokens we issue.
    pub issuer: String,
    /// Accepted `aud` values for our own tokens.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`/`nbf`.
    pub leeway_s: u64,
    /// Lifetime of tokens issued by `POST /v1/token`.
    pub token_ttl_s: u64,
    /// External issuers.
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
    /// Tokens per `POST /v1/authenticate/batch`.
    pub max_batch_tokens: usize,
    /// Cuckoo cache entries per shard.
    pub cache_entries_per_shard: usize,
    /// Batch endpoint: one `verify_strict` per token instead of Ed25519 batch verification
    /// (which may also accept a cofactored-valid signature that only the key holder can make).
    pub strict_batch: bool,
}

/// One `[[auth.trusted_issuers]]`.
#[derive(Debug, Clone)]
pub struct TrustedIssuerConfig {
    /// `iss` value.
    pub issuer: String,
    /// JWKS file, resolved against the config file's directory.
    pub jwks_file: PathBuf,
    /// Accepted audiences for this issuer.
    pub audiences: Vec<String>,
    /// Its ID-JAGs (`typ: oauth-id-jag+jwt`, `aud` = our issuer) are redeemable at
    /// `POST /v1/token` with the jwt-bearer grant.
    pub id_jag: bool,
}

/// One `[[clients]]`.
#[derive(Clone)]
pub struct ClientConfig {
    /// `client_id`.
    pub id: String,
    /// `client_secret`.
    pub secret: String,
    /// Audiences the client may ask for; the first is the default.
    pub audiences: Vec<String>,
    /// Scopes the client may ask for; all of them by default.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("audiences", &self.audiences)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// `[pool]`.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Never hand out a pooled token with less remaining lifetime than this.
    pub min_remaining_s: u64,
    /// Pooled tokens older than this are replaced.
    pub freshness_s: u64,
    /// Upper bound of tokens held per (client, audience, scopes).
    pub max_per_key: usize,
    /// Upper bound of tokens held per shard.
    pub max_total: usize,
    /// Signatures per background refill pass.
    pub refill_budget: usize,
}

/// `[ratelimit]`.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Sustained requests per second per source IP for the whole server (the `default` route
    /// rule, split over the shards); 0: no default rule.
    pub per_ip_rps: u32,
    /// Burst per source IP (0: one second's worth).
    pub per_ip_burst: u32,
    /// Source IPs tracked per shard (bounded map).
    pub max_tracked_ips: usize,
    /// Rejections in one offence window after which a source is blocked in the kernel gate.
    pub block_after_rejections: u32,
    /// Failed token verifications per second per source, per shard; beyond it `429`
    /// (repeat offenders to the kernel blocklist). 0 disables.
    pub verify_failures_per_s: u32,
    /// Burst of failed verifications per source.
    pub verify_failures_burst: u32,
    /// `POST /v1/revoke` requests per second per source, per shard; beyond it `429`. 0
    /// disables. With the default token lifetime this bounds how fast one source can fill
    /// the live revocation table.
    pub revocations_per_s: u32,
    /// Burst of revocation requests per source.
    pub revocations_burst: u32,
    /// Holder revocations per second per token subject (the client, for client-credentials
    /// tokens), per shard; beyond it `429`. 0 disables.
    pub revocations_per_subject_per_s: u32,
    /// Burst of holder revocations per subject.
    pub revocations_per_subject_burst: u32,
    /// `[[ratelimit.rules]]` with `key_prefix`, in order (first match wins).
    pub key_rules: Vec<crate::ratelimit::KeyRule>,
    /// `[[ratelimit.rules]]` with `route`, plus `per_ip_rps` as the `default` route; each
    /// limits a source for the whole server (every shard enforces its share).
    pub route_rules: Vec<crate::ratelimit::RouteRule>,
    /// Keys of `POST /v1/ratelimit/check` tracked per shard (bounded map; fails open when
    /// full).
    pub max_tracked_keys: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
                data_dir: PathBuf::from("var/subzero"),
                shards: Shards::Auto,
                limits: ShardLimits {
                    max_connections: 16_384,
                    max_header_bytes: 16 * 1024,
                    max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                    max_pipeline_depth: 1024,
                    max_output_bytes: 4 * 1024 * 1024,
                    idle_timeout_s: 60,
                    request_timeout_s: 10,
                    deferred_timeout_s: 30,
                    ring_entries: 4096,
                    recv_buffer_bytes: 16 * 1024,
                    recv_buffer_count: 1024,
                    max_buffered_bytes: 0,
                },
                public_url: None,
                unix_socket: None,
                unix_mode: 0o660,
                unix_group: None,
            },
            auth: AuthConfig {
                issuer: "subzero".to_owned(),
                audiences: vec!["subzero".to_owned()],
                leeway_s: 60,
                token_ttl_s: 900,
                trusted_issuers: Vec::new(),
                max_batch_tokens: default_max_batch_tokens(DEFAULT_MAX_BODY_BYTES),
                cache_entries_per_shard: 1 << 16,
                strict_batch: false,
            },
            clients: Vec::new(),
            admin_token: None,
            admin_unix_uids: Vec::new(),
            gate: GateConfig::default(),
            pool: PoolConfig {
                min_remaining_s: 600,
                freshness_s: 120,
                max_per_key: 256,
                max_total: 8192,
                refill_budget: 8,
            },
            xaa: XaaConfig::default(),
            audit: AuditConfig::default(),
            monitor: crate::monitor::MonitorSettings::default(),
            fleet: None,
            ratelimit: RateLimitConfig {
                per_ip_rps: 0,
                per_ip_burst: 0,
                max_tracked_ips: 65_536,
                block_after_rejections: 1000,
                verify_failures_per_s: 50,
                verify_failures_burst: 200,
                revocations_per_s: 20,
                revocations_burst: 100,
                revocations_per_subject_per_s: 10,
                revocations_per_subject_burst: 50,
                key_rules: Vec::new(),
                route_rules: Vec::new(),
                max_tracked_keys: 65_536,
            },
            permissions: None,
            threat: ThreatConfig::default(),
            risk: RiskConfig::default(),
        }
    }
}

// ---- The file schema (serde). Everything optional; defaults come from `Config::default`. ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    clients: Vec<FileClient>,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default)]
    gate: FileGate,
    #[serde(default)]
    pool: FilePool,
    #[serde(default)]
    xaa: xaa::FileXaa,
    #[serde(default)]
    audit: audit::FileAudit,
    #[serde(default)]
    ratelimit: FileRateLimit,
    #[serde(default)]
    permissions: FilePermissions,
    #[serde(default)]
    monitor: monitor::FileMonitor,
    #[serde(default)]
    threat: security::FileThreat,
    #[serde(default)]
    risk: security::FileRisk,
    #[serde(default)]
    fleet: fleet::FileFleet,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilePermissions {
    schema_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileServer {
    listen: Option<toml::Value>,
    unix_mode: Option<String>,
    unix_group: Option<String>,
    data_dir: Option<PathBuf>,
    shards: Option<toml::Value>,
    max_connections_per_shard: Option<usize>,
    max_header_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    max_pipeline_depth: Option<usize>,
    max_output_bytes: Option<usize>,
    idle_timeout_s: Option<u64>,
    request_timeout_s: Option<u64>,
    deferred_timeout_s: Option<u64>,
    max_buffered_bytes_per_shard: Option<usize>,
    ring_entries: Option<u32>,
    recv_buffer_bytes: Option<usize>,
    recv_buffer_count: Option<usize>,
    public_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    leeway_s: Option<u64>,
    token_ttl_s: Option<u64>,
    #[serde(default)]
    trusted_issuers: Vec<FileIssuer>,
    max_batch_tokens: Option<usize>,
    cache_entries_per_shard: Option<usize>,
    strict_batch: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIssuer {
    issuer: String,
    jwks_file: PathBuf,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    id_jag: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClient {
    id: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    token_file: Option<PathBuf>,
    unix_uids: Option<Vec<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileGate {
    #[serde(default)]
    xdp: Vec<String>,
    syn_rate_per_s: Option<u32>,
    syn_burst: Option<u32>,
    pkt_rate_per_s: Option<u32>,
    pkt_burst: Option<u32>,
    block_ttl_s: Option<u64>,
    persist_blocklist: Option<bool>,
    socket_filter: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilePool {
    min_remaining_s: Option<u64>,
    freshness_s: Option<u64>,
    max_per_key: Option<usize>,
    max_total: Option<usize>,
    refill_budget: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileRateLimit {
    per_ip_rps: Option<u32>,
    per_ip_burst: Option<u32>,
    max_tracked_ips: Option<usize>,
    block_after_rejections: Option<u32>,
    verify_failures_per_s: Option<u32>,
    verify_failures_burst: Option<u32>,
    revocations_per_s: Option<u32>,
    revocations_burst: Option<u32>,
    revocations_per_subject_per_s: Option<u32>,
    revocations_per_subject_burst: Option<u32>,
    max_tracked_keys: Option<usize>,
    #[serde(default)]
    rules: Vec<ratelimit::FileRule>,
}

/// Command-line overrides for `serve`; `None` keeps the file's (or default) value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` (repeatable); non-empty replaces the file's `server.listen`.
    pub listen: Vec<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--shards`.
    pub shards: Option<Shards>,
    /// `--xdp` (repeatable); non-empty replaces the file's list.
    pub xdp: Vec<String>,
}

impl Config {
    /// Loads the file (if any), applies overrides and validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match file {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let base = path.parent().unwrap_or_else(|| Path::new("."));
                Config::from_toml(&text, base).map_err(|e| match e {
                    ConfigError::Parse { message, .. } => ConfigError::Parse {
                        path: path.to_owned(),
                        message,
                    },
                    other => other,
                })?
            }
        };
        if !overrides.listen.is_empty() {
            apply_listen(&mut config.server, &overrides.listen)?;
        }
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir.clone_from(dir);
        }
        // The gate keeps `blocklist.json` in the data dir: one setting, copied once it is final.
        config.gate.data_dir.clone_from(&config.server.data_dir);
        if let Some(shards) = overrides.shards {
            config.server.shards = shards;
        }
        if !overrides.xdp.is_empty() {
            config.gate.xdp_ifaces.clone_from(&overrides.xdp);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; relative paths resolve against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let mut c = Config {
            monitor: monitor::from_file(file.monitor)?,
            xaa: XaaConfig::from_file(file.xaa),
            audit: AuditConfig::from_file(file.audit),
            threat: ThreatConfig::from_file(file.threat),
            risk: RiskConfig::from_file(file.risk),
            fleet: fleet::from_file(file.fleet, base)?,
            ..Config::default()
        };
        apply_server(&mut c.server, file.server, base)?;

        let a = file.auth;
        set(&mut c.auth.issuer, a.issuer);
        set(&mut c.auth.leeway_s, a.leeway_s);
        set(&mut c.auth.token_ttl_s, a.token_ttl_s);
        // Unset, it follows the body limit, so the default batch always fits in a body.
        c.auth.max_batch_tokens = a
            .max_batch_tokens
            .unwrap_or(default_max_batch_tokens(c.server.limits.max_body_bytes));
        set(
            &mut c.auth.cache_entries_per_shard,
            a.cache_entries_per_shard,
        );
        set(&mut c.auth.strict_batch, a.strict_batch);
        c.auth.trusted_issuers = a
            .trusted_issuers
            .into_iter()
            .map(|i| TrustedIssuerConfig {
                issuer: i.issuer,
                jwks_file: base.join(i.jwks_file),
                audiences: i.audiences,
                id_jag: i.id_jag,
            })
            .collect();

        for client in file.clients {
            let secret = match (client.secret, client.secret_file) {
                (Some(secret), None) => secret,
                (None, Some(path)) => read_secret(&base.join(path), "clients.secret_file")?,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "client {:?} needs exactly one of secret or secret_file",
                        client.id
                    )))
                }
            };
            c.clients.push(ClientConfig {
                id: client.id,
                secret,
                audiences: client.audiences,
                scopes: client.scopes,
            });
        }
        // Accepted audiences: explicit list, or "subzero" plus every client's audiences.
        c.auth.audiences = a.audiences.unwrap_or_else(|| default_audiences(&c));
        c.admin_unix_uids = file.admin.unix_uids.unwrap_or_default();
        if let Some(path) = file.admin.token_file {
            c.admin_token = Some(read_secret(&base.join(path), "admin.token_file")?);
        }
        apply_gate(&mut c.gate, file.gate);
        c.gate.data_dir.clone_from(&c.server.data_dir);
        apply_pool(&mut c.pool, &file.pool);
        let r = file.ratelimit;
        set(&mut c.ratelimit.per_ip_rps, r.per_ip_rps);
        set(&mut c.ratelimit.per_ip_burst, r.per_ip_burst);
        set(&mut c.ratelimit.max_tracked_ips, r.max_tracked_ips);
        set(
            &mut c.ratelimit.block_after_rejections,
            r.block_after_rejections,
        );
        set(
            &mut c.ratelimit.verify_failures_per_s,
            r.verify_failures_per_s,
        );
        set(
            &mut c.ratelimit.verify_failures_burst,
            r.verify_failures_burst,
        );
        set(&mut c.ratelimit.revocations_per_s, r.revocations_per_s);
        set(&mut c.ratelimit.revocations_burst, r.revocations_burst);
        if let Some(path) = file.permissions.schema_file {
            c.permissions = Some(std::sync::Arc::new(read_schema(&base.join(path))?));
        }
        set(
            &mut c.ratelimit.revocations_per_subject_per_s,
            r.revocations_per_subject_per_s,
        );
        set(
            &mut c.ratelimit.revocations_per_subject_burst,
            r.revocations_per_subject_burst,
        );
        set(&mut c.ratelimit.max_tracked_keys, r.max_tracked_keys);
        let (key_rules, route_rules) = ratelimit::parse_rules(r.rules)?;
        c.ratelimit.key_rules = key_rules;
        c.ratelimit.route_rules = ratelimit::with_per_ip_default(
            route_rules,
            c.ratelimit.per_ip_rps,
            c.ratelimit.per_ip_burst,
        )?;
        Ok(c)
    }

    /// Checks every limit once, so the rest of the server can rely on them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_limits(&self.server.limits)?;
        validate_gate(&self.gate)?;
        debug_assert_eq!(self.gate.data_dir, self.server.data_dir);
        let a = &self.auth;
        if a.issuer.is_empty() {
            return Err(ConfigError::Invalid("auth.issuer must not be empty".into()));
        }
        check_range("auth.token_ttl_s", a.token_ttl_s as usize, 10, 86_400 * 30)?;
        check_range("auth.leeway_s", a.leeway_s as usize, 0, 3600)?;
        check_range("auth.max_batch_tokens", a.max_batch_tokens, 1, 65_536)?;
        check_batch_fits(a.max_batch_tokens, self.server.limits.max_body_bytes)?;
        check_range(
            "auth.cache_entries_per_shard",
            a.cache_entries_per_shard,
            16,
            1 << 26,
        )?;
        for (i, client) in self.clients.iter().enumerate() {
            if client.id.is_empty() || client.secret.len() < 8 {
                return Err(ConfigError::Invalid(format!(
                    "clients[{i}] needs a non-empty id and a secret of at least 8 characters"
                )));
            }
            if self.clients[..i].iter().any(|c| c.id == client.id) {
                return Err(ConfigError::Invalid(format!(
                    "client id {:?} appears twice",
                    client.id
                )));
            }
        }
        if let Some(token) = &self.admin_token {
            if token.len() < 16 {
                return Err(ConfigError::Invalid(
                    "admin token must be at least 16 characters".into(),
                ));
            }
        }
        let p = &self.pool;
        if p.min_remaining_s >= self.auth.token_ttl_s {
            return Err(ConfigError::Invalid(format!(
                "pool.min_remaining_s ({}) must be below auth.token_ttl_s ({})",
                p.min_remaining_s, self.auth.token_ttl_s
            )));
        }
        // The pool asserts these at start: refuse them here, with the key's name.
        check_range("pool.max_per_key", p.max_per_key, 1, 1 << 16)?;
        check_range("pool.max_total", p.max_total, p.max_per_key, 1 << 20)?;
        check_range("pool.freshness_s", p.freshness_s as usize, 1, 86_400)?;
        check_range("pool.refill_budget", p.refill_budget, 1, 1024)?;
        check_range(
            "ratelimit.max_tracked_ips",
            self.ratelimit.max_tracked_ips,
            16,
            1 << 24,
        )?;
        check_range(
            "ratelimit.max_tracked_keys",
            self.ratelimit.max_tracked_keys,
            16,
            MAX_TRACKED_KEYS,
        )?;
        self.xaa.validate(&self.auth.issuer)?;
        self.audit.validate()?;
        self.threat.validate()?;
        self.risk.validate()?;
        self.validate_id_jag_issuers()?;
        Ok(())
    }

    /// An `id_jag = true` issuer's ID-JAGs carry `aud` = our issuer: its accepted audiences
    /// must include it, or none of them would ever verify.
    fn validate_id_jag_issuers(&self) -> Result<(), ConfigError> {
        for issuer in self.auth.trusted_issuers.iter().filter(|i| i.id_jag) {
            let accepted = if issuer.audiences.is_empty() {
                &self.auth.audiences
            } else {
                &issuer.audiences
            };
            if !accepted.contains(&self.auth.issuer) {
                return Err(ConfigError::Invalid(format!(
                    "trusted issuer {:?} has id_jag = true, but its accepted audiences do not                      include auth.issuer {:?}, which every ID-JAG for us carries as aud; add it                      to that issuer's audiences",
                    issuer.issuer, self.auth.issuer
                )));
            }
        }
        Ok(())
    }

    /// Base of our absolute URLs: `server.public_url`, or `http://<listen>` (`http://localhost`
    /// for a Unix-only server, as a front proxy on the same host addresses it).
    pub fn public_url(&self) -> String {
        match (&self.server.public_url, self.server.listen) {
            (Some(url), _) => url.clone(),
            (None, Some(addr)) => format!("http://{addr}"),
            (None, None) => "http://localhost".to_owned(),
        }
    }

    /// Shard count after resolving `auto` against the CPUs this process may use.
    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            Shards::Count(n) => n,
            Shards::Auto => allowed_cpus().len().clamp(1, MAX_SHARDS),
        }
    }
}

/// CPUs in this process's affinity mask, in order (so `taskset -c 1 subzero serve` pins shard 0
/// to CPU 1).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) != 0 {
            return vec![0];
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect();
        if cpus.is_empty() {
            vec![0]
        } else {
            cpus
        }
    }
}

/// `[gate]` keys onto the gate's defaults. A rate given without its burst gets a burst of two
/// seconds' worth, so setting a rate alone never leaves its bucket off.
fn apply_pool(pool: &mut PoolConfig, p: &FilePool) {
    set(&mut pool.min_remaining_s, p.min_remaining_s);
    set(&mut pool.freshness_s, p.freshness_s);
    set(&mut pool.max_per_key, p.max_per_key);
    set(&mut pool.max_total, p.max_total);
    set(&mut pool.refill_budget, p.refill_budget);
}

fn apply_gate(gate: &mut GateConfig, g: FileGate) {
    gate.xdp_ifaces = g.xdp;
    if let Some(rate) = g.syn_rate_per_s {
        gate.syn_rate_per_s = rate;
        gate.syn_burst = rate.saturating_mul(2);
    }
    set(&mut gate.syn_burst, g.syn_burst);
    if let Some(rate) = g.pkt_rate_per_s {
        gate.pkt_rate_per_s = rate;
        gate.pkt_burst = rate.saturating_mul(2);
    }
    set(&mut gate.pkt_burst, g.pkt_burst);
    set(&mut gate.block_ttl_s, g.block_ttl_s);
    set(&mut gate.persist_blocklist, g.persist_blocklist);
    set(&mut gate.socket_filter, g.socket_filter);
}

/// Ranges of the gate's settings.
fn validate_gate(g: &GateConfig) -> Result<(), ConfigError> {
    for iface in &g.xdp_ifaces {
        // IFNAMSIZ is 16 bytes with the terminating NUL.
        let ok = !iface.is_empty()
            && iface.len() < 16
            && !iface.contains(['/', ' ', '\0'])
            && iface != "."
            && iface != "..";
        if !ok {
            return Err(ConfigError::Invalid(format!(
                "gate.xdp: {iface:?} is not an interface name (1-15 characters, no '/' or spaces)"
            )));
        }
    }
    check_range(
        "gate.syn_rate_per_s",
        g.syn_rate_per_s as usize,
        1,
        10_000_000,
    )?;
    check_range("gate.syn_burst", g.syn_burst as usize, 1, 100_000_000)?;
    check_range(
        "gate.pkt_rate_per_s",
        g.pkt_rate_per_s as usize,
        0,
        100_000_000,
    )?;
    if g.pkt_rate_per_s > 0 {
        check_range("gate.pkt_burst", g.pkt_burst as usize, 1, 1_000_000_000)?;
    }
    check_range("gate.block_ttl_s", g.block_ttl_s as usize, 1, 86_400 * 365)?;
    Ok(())
}

/// Applies a `listen` list, which replaces the listeners wholly: at most one `IP:PORT` and at
/// most one `unix:/path`. A list with only a `unix:` entry means no TCP listener (the default
/// 127.0.0.1:8080 applies only when no list is given at all); an empty list is an error.
fn apply_listen(server: &mut ServerConfig, entries: &[String]) -> Result<(), ConfigError> {
    if entries.is_empty() {
        return Err(ConfigError::Invalid(
            "server.listen names no listener: give IP:PORT, unix:/path, or both".into(),
        ));
    }
    let (mut tcp, mut unix) = (None, None);
    for entry in entries {
        if let Some(path) = entry.strip_prefix("unix:") {
            if path.is_empty() || unix.replace(PathBuf::from(path)).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "server.listen takes one unix:/path entry, got {entry:?} as well"
                )));
            }
        } else {
            let addr: SocketAddr = entry.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "server.listen entries must be IP:PORT (e.g. 127.0.0.1:8080) or unix:/path, got {entry:?}"
                ))
            })?;
            if tcp.replace(addr).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "server.listen takes one IP:PORT entry, got {entry:?} as well"
                )));
            }
        }
    }
    server.listen = tcp;
    server.unix_socket = unix;
    Ok(())
}

fn apply_server(server: &mut ServerConfig, s: FileServer, base: &Path) -> Result<(), ConfigError> {
    if let Some(listen) = s.listen {
        let entries: Vec<String> = match listen {
            toml::Value::String(one) => vec![one],
            toml::Value::Array(list) => list
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(text) => Ok(text),
                    other => Err(ConfigError::Invalid(format!(
                        "server.listen entries must be strings, got {other}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "server.listen must be a string or a list of strings, got {other}"
                )))
            }
        };
        apply_listen(server, &entries)?;
    }
    if let Some(mode) = s.unix_mode {
        server.unix_mode = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "server.unix_mode must be octal permission bits (e.g. \"0660\"), got {mode:?}"
                ))
            })?;
    }
    if let Some(group) = s.unix_group {
        server.unix_group = Some(group);
    }
    if let Some(dir) = s.data_dir {
        server.data_dir = base.join(dir);
    }
    if let Some(shards) = s.shards {
        server.shards = match shards {
            toml::Value::String(text) => Shards::parse(&text)?,
            toml::Value::Integer(n) => Shards::parse(&n.to_string())?,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "server.shards must be \"auto\" or a number, got {other}"
                )))
            }
        };
    }
    set(
        &mut server.limits.max_connections,
        s.max_connections_per_shard,
    );
    set(&mut server.limits.max_header_bytes, s.max_header_bytes);
    set(&mut server.limits.max_body_bytes, s.max_body_bytes);
    set(&mut server.limits.max_pipeline_depth, s.max_pipeline_depth);
    set(&mut server.limits.max_output_bytes, s.max_output_bytes);
    set(&mut server.limits.idle_timeout_s, s.idle_timeout_s);
    set(&mut server.limits.request_timeout_s, s.request_timeout_s);
    set(&mut server.limits.deferred_timeout_s, s.deferred_timeout_s);
    set(
        &mut server.limits.max_buffered_bytes,
        s.max_buffered_bytes_per_shard,
    );
    set(&mut server.limits.ring_entries, s.ring_entries);
    set(&mut server.limits.recv_buffer_bytes, s.recv_buffer_bytes);
    set(&mut server.limits.recv_buffer_count, s.recv_buffer_count);
    if let Some(url) = s.public_url {
        server.public_url = Some(xaa::public_url(&url)?);
    }
    Ok(())
}

/// `"subzero"` (and our issuer name) plus every client's audiences.
fn default_audiences(c: &Config) -> Vec<String> {
    let mut list = vec![c.auth.issuer.clone()];
    if c.auth.issuer != "subzero" {
        list.push("subzero".to_owned());
    }
    for aud in c.clients.iter().flat_map(|client| &client.audiences) {
        if !list.contains(aud) {
            list.push(aud.clone());
        }
    }
    list
}

/// The runtime limits: each within its range.
fn validate_limits(l: &ShardLimits) -> Result<(), ConfigError> {
    check_range(
        "server.max_connections_per_shard",
        l.max_connections,
        1,
        crate::shard::MAX_CONNECTIONS_PER_SHARD,
    )?;
    check_range("server.max_header_bytes", l.max_header_bytes, 256, 1 << 20)?;
    check_range("server.max_body_bytes", l.max_body_bytes, 0, 64 << 20)?;
    check_range(
        "server.max_pipeline_depth",
        l.max_pipeline_depth,
        1,
        1 << 16,
    )?;
    check_range("server.max_output_bytes", l.max_output_bytes, 4096, 1 << 30)?;
    check_range(
        "server.idle_timeout_s",
        l.idle_timeout_s as usize,
        1,
        86_400,
    )?;
    check_range(
        "server.request_timeout_s",
        l.request_timeout_s as usize,
        1,
        3600,
    )?;
    check_range(
        "server.deferred_timeout_s",
        l.deferred_timeout_s as usize,
        1,
        3600,
    )?;
    if l.max_buffered_bytes != 0 {
        check_range(
            "server.max_buffered_bytes_per_shard",
            l.max_buffered_bytes,
            1 << 20,
            1 << 40,
        )?;
    }
    check_range("server.ring_entries", l.ring_entries as usize, 64, 32_768)?;
    check_range(
        "server.recv_buffer_bytes",
        l.recv_buffer_bytes,
        1024,
        1 << 20,
    )?;
    check_range("server.recv_buffer_count", l.recv_buffer_count, 16, 32_768)?;
    if !l.recv_buffer_count.is_power_of_two() {
        return Err(ConfigError::Invalid(format!(
            "server.recv_buffer_count must be a power of two, got {}",
            l.recv_buffer_count
        )));
    }
    Ok(())
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// The body limit wins over the batch limit (a larger body is a `413` before it is read), so
/// a `max_batch_tokens` that no body within `max_body_bytes` can reach, even of our shortest
/// tokens, is a setting that does nothing but mislead: refuse it, saying both ways out.
fn check_batch_fits(max_batch_tokens: usize, max_body_bytes: usize) -> Result<(), ConfigError> {
    let fitting = batch_tokens_fitting(max_body_bytes).max(1);
    if max_batch_tokens <= fitting {
        return Ok(());
    }
    let needed = 12 + max_batch_tokens * (MIN_BATCH_TOKEN_BYTES + 3);
    Err(ConfigError::Invalid(format!(
        "auth.max_batch_tokens = {max_batch_tokens} cannot be reached: that many tokens (at \
         least {MIN_BATCH_TOKEN_BYTES} bytes each) need a body of {needed} bytes, above \
         server.max_body_bytes = {max_body_bytes}; set auth.max_batch_tokens to at most \
         {fitting} (or leave it unset to derive it), or raise server.max_body_bytes"
    )))
}

fn check_range(name: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{name} must be between {min} and {max}, got {value}"
        )))
    }
}

/// Reads and parses a SpiceDB-language schema; errors name the file, line and column.
fn read_schema(path: &Path) -> Result<crate::authz::Schema, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        what: "permissions.schema_file",
        path: path.to_owned(),
        source,
    })?;
    let name = path.display().to_string();
    crate::authz::Schema::parse(&name, &text)
        .map_err(|e| ConfigError::Invalid(format!("permissions.schema_file: {e}")))
}

fn read_secret(path: &Path, what: &'static str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| ConfigError::SecretFile {
            what,
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests;
