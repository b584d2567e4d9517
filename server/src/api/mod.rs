//! Request handlers: routes an HTTP request to a gateway operation over shard-local state.
//!
//! `ShardApp` is one shard's whole application state (cache, pool, verifier, revocations,
//! histograms). It implements [`shard::Handler`], so it never sees sockets or the ring.
//!
//! Architecture Invariant: nothing here blocks or does I/O on a request path, except the
//! rate-limited JWKS reload on an unknown `kid`. Changes to global state (revocations, keys) go
//! to the control plane, and the response waits for it as a deferred ticket.

mod audit;
mod authn;
mod authz;
mod batch;
mod block;
mod budget;
mod channel;
#[doc(hidden)]
pub mod fuzzing;
mod gather;
mod leased;
mod owned;
mod ratecheck;
mod ratelimit;
mod respond;
mod security;
mod token;
mod vault;
mod xaa;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use crate::auth::{Claims, Verifier};
use crate::cache::CuckooCache;
use crate::config::Config;
use crate::http::{self, Method, Request, Status};
use crate::monitor::{Board, Op, ShardMonitor};
pub use crate::plane::Denial;
use crate::plane::{ControlMsg, Denylist, KeySnapshot, OwnedResult, ShardMsg};
use crate::pool::{PoolLimits, TokenPool};
use crate::shard::mesh::{MeshGauges, Outbox};
use crate::shard::{Cx, Handler, Outcome, Ready, RuntimeStats, Ticket};

/// What every shard shares read-only.
pub struct AppShared {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Mesh inbox depths (for `/metrics`).
    pub mesh_gauges: MeshGauges<ShardMsg>,
    /// `/metrics` sections.
    pub board: Arc<Board>,
    /// The threat checks' read-only detectors (phrase automaton, disposable domains), built
    /// once per process.
    pub detectors: crate::security::Detectors,
}

/// How one shard reaches the rest of the server; moved into the shard's thread.
pub struct ShardLinks {
    /// Requests to the control plane (bounded; full means `503`).
    pub control: SyncSender<ControlMsg>,
    /// This shard's end of the mesh.
    pub outbox: Outbox<ShardMsg>,
    /// The runtime's connection counters, for `/metrics`.
    pub runtime: Arc<RuntimeStats>,
    /// Fleet mode with key rules: asks for global rate-limit units to the lease thread
    /// (bounded; shards only `try_send`).
    pub lease: Option<SyncSender<crate::plane::LeaseRequest>>,
}

/// A validated token as the cache keeps it.
pub struct Cached {
    claims: Claims,
    /// Pre-rendered `X-Auth-*` header lines for `GET /v1/authenticate`.
    headers: Box<[u8]>,
    /// Verified by `verify_strict` (single-token paths, strict batches). A fast batch's
    /// cofactored check accepts a torsion component in `R` that the strict check refuses, so
    /// single-token paths treat a non-strict entry as a miss and verify again.
    strict: bool,
}

/// Whether `claims` carries an `(iss, jti)` on the denylist. Costs one branch while nothing
/// is revoked.
fn is_revoked(revoked: &Denylist, claims: &Claims) -> bool {
    !revoked.is_empty()
        && claims
            .jti
            .as_deref()
            .is_some_and(|jti| revoked.contains(&claims.iss, jti))
}

/// Per-shard counters that are not latency.
#[derive(Debug, Default)]
struct Counters {
    /// Responses by status code (index = code; codes are below 600).
    responses_by_status: Vec<u64>,
    auth_ok: u64,
    auth_denied: u64,
    jwks_reloads: u64,
    control_busy: u64,
    batch_parts_served: u64,
    /// Signature verifications performed (cache misses after coalescing).
    verifications: u64,
    /// Invalid tokens answered from the invalid-token cache.
    rejected_hits: u64,
    /// Verifications left for a later pass (this pass's budget was spent).
    verify_deferred: u64,
    /// Requests refused because their source failed too many verifications.
    verify_limited: u64,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            responses_by_status: vec![0; 600],
            ..Counters::default()
        }
    }

    fn count_status(&mut self, code: u16) {
        if let Some(n) = self.responses_by_status.get_mut(usize::from(code)) {
            *n += 1;
        }
    }
}

/// Cache slots swept per second: a full pass over the cache every this many seconds.
const SWEEP_PASS_S: usize = 32;

/// One shard's application state.
pub struct ShardApp {
    idx: usize,
    shared: Arc<AppShared>,
    control: SyncSender<ControlMsg>,
    /// This shard's end of the mesh: edges to every other shard.
    outbox: Outbox<ShardMsg>,
    keys: Arc<KeySnapshot>,
    verifier: Verifier,
    cache: CuckooCache<Rc<Cached>>,
    /// Invalid tokens by their exact bytes, for `authn::REJECTED_TTL_S`.
    rejected: CuckooCache<crate::auth::TokenError>,
    /// Costly work this pass may still do.
    pass_budget: budget::PassBudget,
    /// Failed verifications per source.
    failures: ratelimit::IpLimiter,
    /// Revocation requests per source.
    revocation_limiter: ratelimit::IpLimiter,
    /// Holder revocations per token subject (keyed by a seeded hash of `iss` and `sub`).
    subject_revocations: ratelimit::KeyedLimiter<u64>,
    /// Seed of that hash, per process.
    subject_seed: u64,
    /// The last rendered `/metrics` text and the board version it rendered.
    metrics_text: (u64, String),
    /// The relationships (one snapshot per process, swapped on every write); `None` without
    /// a schema.
    relationships: Option<Arc<crate::authz::Snapshot>>,
    /// Permission decisions, each valid only at the revision it was computed at.
    decisions: crate::authz::DecisionCache<crate::authz::Decision>,
    revoked: Denylist,
    pool: TokenPool,
    /// Pool key of each client's default grant, so the common request allocates no key.
    default_keys: Vec<crate::pool::PoolKey>,
    /// Latency histograms, perf counters, degradation detector.
    monitor: ShardMonitor,
    counters: Counters,
    batches: batch::Batches,
    /// The per-source limits of every request (this shard's share of each route rule).
    source_limiter: crate::ratelimit::SourceLimiter,
    /// The `POST /v1/ratelimit/check` keys this shard owns.
    key_limiter: crate::ratelimit::KeyLimiter,
    /// Owned work: tickets waiting for other shards, replies owed to them.
    owned: owned::Owned,
    /// Fleet mode with key rules: global limits answered from this shard's leases.
    global: Option<ratecheck::Global>,
    /// Threat and risk state this shard owns, its open gathers and its counters.
    sec: security::SecurityState,
    /// The `RateLimit-Policy` header line of each key rule, rendered once.
    rate_policies: Vec<String>,
    last_tick_s: u64,
    sweep_slots_left: usize,
    pool_refill_due: bool,
    /// The runtime's connection counters, for `/metrics`.
    runtime: Arc<RuntimeStats>,
    /// Deferred responses to HTTP/1.0 keep-alive requests (ticket → when deferred), which
    /// must echo `connection: keep-alive` once ready. Entries leave when answered, or after
    /// the runtime's deferred timeout (it answers those itself and closes).
    echo_tickets: HashMap<Ticket, u64>,
    /// Cross-app access: delegation policies, ID-JAG issuers, metadata, counters.
    xaa: xaa::XaaState,
    /// This shard's own audit events (denials, delegations) waiting to be shipped.
    audit_buffer: audit::AuditBuffer,
    /// The request being handled came over the Unix socket from an `[admin] unix_uids` uid
    /// (set at the top of `handle`, read by `is_admin`).
    unix_admin: bool,
}

impl ShardApp {
    /// Builds shard `idx`'s state; called on the shard's own thread.
    pub fn new(
        idx: usize,
        shared: Arc<AppShared>,
        links: ShardLinks,
        keys: Arc<KeySnapshot>,
        revoked: Denylist,
        cache_seed: u64,
    ) -> ShardApp {
        let ShardLinks {
            control,
            outbox,
            runtime,
            lease,
        } = links;
        debug_assert_eq!(outbox.sender(), crate::shard::mesh::Sender::Shard(idx));
        let config = &shared.config;
        let pool = TokenPool::new(PoolLimits {
            max_keys: 256,
            min_per_key: 1,
            max_per_key: config.pool.max_per_key,
            max_total: config.pool.max_total,
            min_remaining_s: config.pool.min_remaining_s,
            freshness_s: config.pool.freshness_s,
        });
        let cache = CuckooCache::new(config.auth.cache_entries_per_shard, cache_seed);
        let verifier = keys.verifier.clone();
        let default_keys = token::default_pool_keys(config);
        let n_shards = outbox.n_shards();
        ShardApp {
            idx,
            control,
            outbox,
            verifier,
            keys,
            cache,
            revoked,
            pool,
            default_keys,
            monitor: ShardMonitor::new(
                idx,
                &config.monitor,
                &mut crate::monitor::perf::PerfEventOpener,
            ),
            counters: Counters::new(),
            batches: batch::Batches::default(),
            source_limiter: crate::ratelimit::SourceLimiter::new(
                &config.ratelimit.route_rules,
                n_shards,
                idx,
                config.ratelimit.max_tracked_ips,
                config.ratelimit.block_after_rejections,
            ),
            key_limiter: crate::ratelimit::KeyLimiter::new(
                &config.ratelimit.key_rules,
                config.ratelimit.max_tracked_keys,
            ),
            owned: owned::Owned::default(),
            global: lease.and_then(|tx| ratecheck::Global::new(config, tx)),
            sec: security::SecurityState::new(config, cache_seed),
            rate_policies: config
                .ratelimit
                .key_rules
                .iter()
                .map(|r| {
                    let window_s = crate::ratelimit::Limit::new(r.rate_per_s, r.burst).window_s();
                    ratecheck::rate_limit_policy(&r.key_prefix, r.burst, window_s)
                })
                .collect(),
            metrics_text: (0, String::new()),
            relationships: None,
            decisions: crate::authz::DecisionCache::new(
                self::authz::DECISION_CACHE_ENTRIES,
                cache_seed.rotate_left(41),
            ),
            subject_revocations: ratelimit::KeyedLimiter::new(
                config.ratelimit.revocations_per_subject_per_s,
                config.ratelimit.revocations_per_subject_burst,
                config.ratelimit.max_tracked_ips,
                u32::MAX,
            ),
            subject_seed: cache_seed.rotate_left(29) ^ 0x5eed,
            rejected: CuckooCache::new(authn::REJECTED_ENTRIES, cache_seed.rotate_left(17)),
            pass_budget: budget::PassBudget::new(budget::VERIFY_UNITS_PER_PASS),
            revocation_limiter: ratelimit::IpLimiter::new(
                config.ratelimit.revocations_per_s,
                config.ratelimit.revocations_burst,
                config.ratelimit.max_tracked_ips,
                config.ratelimit.block_after_rejections,
            ),
            failures: ratelimit::IpLimiter::new(
                config.ratelimit.verify_failures_per_s,
                config.ratelimit.verify_failures_burst,
                config.ratelimit.max_tracked_ips,
                config.ratelimit.block_after_rejections,
            ),
            last_tick_s: 0,
            sweep_slots_left: 0,
            unix_admin: false,
            pool_refill_due: false,
            runtime,
            echo_tickets: HashMap::new(),
            xaa: xaa::XaaState::new(config),
            audit_buffer: audit::AuditBuffer::new(config.audit.max_buffered_denials),
            shared,
        }
    }

    /// Starts from the control plane's relationship snapshot.
    #[must_use]
    pub fn with_relationships(
        mut self,
        relationships: Option<Arc<crate::authz::Snapshot>>,
    ) -> ShardApp {
        self.relationships = relationships;
        self
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    fn route(&mut self, req: &Request<'_>, cx: &mut Cx<'_>, out: &mut Vec<u8>) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = |op| (Outcome::Done, op);
        if let Some(err) = req.header_error {
            // Well delimited but not servable (no Host in HTTP/1.1, a repeated Host,
            // Authorization or Content-Type): refuse it rather than guess which value counts.
            respond::error(out, err.status(), "invalid_request", &err.to_string(), ka);
            return done(Op::Other);
        }
        // HEAD is GET without the body (RFC 9110 §9.3.2): every GET route answers it, and
        // `handle` strips the body after routing, keeping GET's `content-length`.
        let method = match req.method {
            Method::Head => Method::Get,
            other => other,
        };
        match (method, req.path) {
            (Method::Get, "/v1/authenticate") => self.authenticate_get(req, cx, out),
            (Method::Post, "/v1/authenticate") => self.authenticate_post(req, cx, out),
            (Method::Post, "/v1/authenticate/batch") => self.authenticate_batch(req, cx, out),
            (Method::Post, "/v1/token") => self.issue_token(req, cx, out),
            (Method::Post, "/v1/revoke") => self.revoke(req, cx, out),
            (Method::Post, "/v1/permissions/check") => self.permission_check(req, cx, out),
            (Method::Post, ratecheck::RATELIMIT_CHECK_PATH) => self.ratelimit_check(req, cx, out),
            (Method::Post, security::THREAT_CHECK_PATH) => self.threat_check(req, cx, out),
            (Method::Post, security::RISK_ASSESS_PATH) => self.risk_assess(req, cx, out),
            (Method::Post, "/v1/relationships") => self.write_relationships(req, cx, out, false),
            (Method::Delete, "/v1/relationships") => self.write_relationships(req, cx, out, true),
            (Method::Get, "/v1/relationships") => done(self.list_relationships(req, out)),
            (Method::Post, channel::CHANNEL_PATH) => self.create_channel(req, cx, out),
            (Method::Delete, path) if path.starts_with("/v1/xaa/channel/") => {
                let id = &path["/v1/xaa/channel/".len()..];
                self.delete_channel(req, cx, out, id)
            }
            (Method::Post, "/v1/keys/rotate") => self.rotate_keys(req, cx, out),
            (Method::Get | Method::Post | Method::Delete, block::BLOCK_PATH) => {
                self.admin_block(req, cx, out)
            }
            (Method::Post, "/v1/xaa/delegate") => self.xaa_delegate(req, cx, out),
            (Method::Get, "/.well-known/oauth-authorization-server") => {
                self.authorization_server_metadata(req, out)
            }
            (Method::Get, "/healthz") => {
                http::write_response(out, Status::Ok, Some("text/plain"), &[], b"ok", ka);
                done(Op::Other)
            }
            (Method::Get, "/.well-known/jwks.json") => {
                http::write_response(
                    out,
                    Status::Ok,
                    Some("application/json"),
                    &[b"cache-control: max-age=60"],
                    self.keys.jwks_json.as_bytes(),
                    ka,
                );
                done(Op::Other)
            }
            (Method::Get, "/metrics") => {
                // Sections change once a second: render once per change, not per request.
                let version = self.shared.board.version();
                if self.metrics_text.0 != version || self.metrics_text.1.is_empty() {
                    let mut text = String::new();
                    self.shared.board.render(&mut text);
                    self.metrics_text = (version, text);
                }
                http::write_response(
                    out,
                    Status::Ok,
                    Some("text/plain; version=0.0.4"),
                    &[],
                    self.metrics_text.1.as_bytes(),
                    ka,
                );
                done(Op::Other)
            }
            // Envoy's ext_authz (HTTP mode) sends the original method and path under its
            // configured prefix: every method answers like `GET /v1/authenticate`.
            (_, path) if path == EXT_AUTHZ_PREFIX || path.starts_with(EXT_AUTHZ_SUBPATHS) => {
                self.authenticate_get(req, cx, out)
            }
            (_, path) if vault::is_vault_path(path) => self.vault(req, cx, out),
            (_, audit::AUDIT_PATH) => self.audit_events(req, cx, out),
            (_, audit::CHECKPOINT_PATH) => self.audit_checkpoint(req, cx, out),
            (_, path) => {
                // A known path with another method is 405 with its `allow` line; else 404.
                match KNOWN_PATHS.iter().find(|(known, _)| *known == path) {
                    Some((_, allow)) => respond::method_not_allowed(out, allow, ka),
                    None => respond::error(
                        out,
                        Status::NotFound,
                        "invalid_request",
                        "no such endpoint",
                        ka,
                    ),
                }
                done(Op::Other)
            }
        }
    }

    /// Routes `req` if its source is within its rate for the request's route class, else
    /// answers 429 with `Retry-After` and the RateLimit headers (and reports a repeat
    /// offender to the control plane for the kernel blocklist).
    fn limited(&mut self, req: &Request<'_>, cx: &mut Cx<'_>, out: &mut Vec<u8>) -> (Outcome, Op) {
        let class = crate::ratelimit::RouteClass::of_path(req.path);
        let verdict = self
            .source_limiter
            .check(class, cx.peer, crate::unix_now_ms());
        let crate::ratelimit::SourceVerdict::Limit {
            route,
            decision,
            report,
        } = verdict
        else {
            return self.route(req, cx, out);
        };
        if report {
            self.report_offender(cx.peer);
        }
        let mut headers = vec![format!("retry-after: {}", decision.retry_after_s)];
        if let Some(rule) = self.source_limiter.rule_for(class) {
            let window_s = crate::ratelimit::Limit::new(rule.rate_per_s, rule.burst).window_s();
            headers.extend(ratecheck::rate_limit_headers(
                route.label(),
                rule.burst,
                window_s,
                &decision,
            ));
        }
        let lines: Vec<&[u8]> = headers.iter().map(String::as_bytes).collect();
        respond::error_with(
            out,
            Status::TooManyRequests,
            "rate_limited",
            "too many requests from this address",
            &lines,
            req.keep_alive,
        );
        (Outcome::Done, Op::Other)
    }

    /// `Some(retry_after_s)` for a limited verdict; a source that crossed its report threshold
    /// is reported for the kernel blocklist.
    fn refusal(&self, verdict: ratelimit::Verdict, ip: std::net::IpAddr) -> Option<u64> {
        match verdict {
            ratelimit::Verdict::Allow => None,
            ratelimit::Verdict::Limit {
                retry_after_s,
                report,
            } => {
                if report {
                    self.report_offender(ip);
                }
                Some(retry_after_s)
            }
        }
    }

    /// Asks the control plane to put `ip` on the kernel blocklist (best effort: a full control
    /// queue drops the report, the next offence reports again).
    fn report_offender(&self, ip: std::net::IpAddr) {
        if crate::shard::is_unix_peer_key(ip) {
            return; // a Unix-socket peer: the kernel blocklist is for network addresses
        }
        let msg = ControlMsg::Block {
            ip,
            reason: crate::gate::BlockReason::RateLimit,
            ttl_s: None,
        };
        let _ = self.control.try_send(msg);
    }

    /// Whether `req` carries the configured admin token (constant-time compare), or came over
    /// the Unix socket from an `[admin] unix_uids` uid.
    fn is_admin(&self, req: &Request<'_>) -> bool {
        if self.unix_admin {
            return true;
        }
        match (&self.config().admin_token, req.bearer()) {
            (Some(admin), Some(given)) => respond::ct_eq(admin.as_bytes(), given),
            _ => false,
        }
    }

    fn publish_metrics(&self) {
        let mut text = String::new();
        let shard = self.idx;
        self.monitor.render(&mut text);
        let c = self.cache.stats();
        let p = self.pool.stats();
        let statuses = self.counters.responses_by_status.iter().enumerate();
        for (code, n) in statuses.filter(|(_, &n)| n > 0) {
            let _ = writeln!(
                text,
                "subzero_responses_total{{shard=\"{shard}\",code=\"{code}\"}} {n}"
            );
        }
        let lines = [
            ("subzero_auth_allowed_total", self.counters.auth_ok),
            ("subzero_auth_denied_total", self.counters.auth_denied),
            ("subzero_jwks_reloads_total", self.counters.jwks_reloads),
            ("subzero_control_busy_total", self.counters.control_busy),
            (
                "subzero_batch_parts_served_total",
                self.counters.batch_parts_served,
            ),
            ("subzero_verifications_total", self.counters.verifications),
            (
                "subzero_invalid_token_cache_hits_total",
                self.counters.rejected_hits,
            ),
            (
                "subzero_verifications_deferred_total",
                self.counters.verify_deferred,
            ),
            (
                "subzero_verify_failure_limited_total",
                self.counters.verify_limited,
            ),
            ("subzero_cache_hits_total", c.hits),
            ("subzero_cache_misses_total", c.misses),
            ("subzero_cache_evictions_total", c.evictions),
            ("subzero_cache_expired_total", c.expired),
            ("subzero_cache_entries", self.cache.len() as u64),
            ("subzero_pool_hits_total", p.hits),
            ("subzero_pool_misses_total", p.misses),
            ("subzero_pool_refilled_total", p.refilled),
            ("subzero_pool_tokens", p.tokens as u64),
            ("subzero_revoked_jti", self.revoked.len() as u64),
            (
                "subzero_ratelimit_tracked_ips",
                self.source_limiter.n_tracked() as u64,
            ),
        ];
        let r = &self.runtime;
        let runtime = [
            ("subzero_connections_accepted_total", &r.accepted),
            ("subzero_connections_closed_total", &r.closed),
            ("subzero_connections_open", &r.open),
            ("subzero_connections_rejected_total", &r.rejected_over_limit),
            ("subzero_unix_connections_accepted_total", &r.unix_accepted),
            ("subzero_connection_timeouts_total", &r.timeouts),
            ("subzero_output_overflows_total", &r.output_overflows),
            ("subzero_http_bad_requests_total", &r.bad_requests),
            ("subzero_http_requests_total", &r.requests),
            ("subzero_recv_no_buffer_total", &r.no_buffers),
            ("subzero_accept_errors_total", &r.accept_errors),
            ("subzero_loop_iterations_total", &r.loops),
            ("subzero_turns_yielded_total", &r.turns_yielded),
            ("subzero_recv_paused_total", &r.recv_paused),
            ("subzero_connections_shed_total", &r.shed_for_memory),
            ("subzero_buffered_bytes", &r.buffered_bytes),
        ];
        let lines = lines.into_iter().chain(self.audit_metrics());
        let runtime = runtime
            .into_iter()
            .map(|(name, v)| (name, v.load(std::sync::atomic::Ordering::Relaxed)));
        for (name, value) in lines.chain(runtime) {
            let _ = writeln!(text, "{name}{{shard=\"{shard}\"}} {value}");
        }
        let _ = writeln!(
            text,
            "subzero_mesh_queue_depth{{shard=\"{shard}\"}} {}",
            self.shared.mesh_gauges.depth(shard)
        );
        let ratio = |hits: u64, misses: u64| hits as f64 / (hits + misses).max(1) as f64;
        let _ = writeln!(
            text,
            "subzero_cache_hit_ratio{{shard=\"{shard}\"}} {:.4}\nsubzero_pool_hit_ratio{{shard=\"{shard}\"}} {:.4}",
            ratio(c.hits, c.misses),
            ratio(p.hits, p.misses)
        );
        self.xaa.render_metrics(shard, &mut text);
        self.render_rate_metrics(&mut text);
        self.render_security_metrics(&mut text);
        self.shared.board.publish_shard(shard, text);
    }
}

/// The ext_authz target: `ANY /v1/ext-authz/{path}` authenticates like `GET /v1/authenticate`.
const EXT_AUTHZ_PREFIX: &str = "/v1/ext-authz";
/// Everything under it.
const EXT_AUTHZ_SUBPATHS: &str = "/v1/ext-authz/";

/// Paths with a fixed set of methods, and the `allow` line their `405` carries (GET routes
/// answer HEAD too).
const KNOWN_PATHS: &[(&str, &[u8])] = &[
    ("/v1/authenticate", b"allow: GET, HEAD, POST"),
    ("/v1/authenticate/batch", b"allow: POST"),
    ("/v1/token", b"allow: POST"),
    ("/v1/revoke", b"allow: POST"),
    ("/v1/keys/rotate", b"allow: POST"),
    ("/v1/block", b"allow: GET, HEAD, POST, DELETE"),
    ("/v1/permissions/check", b"allow: POST"),
    ("/v1/ratelimit/check", b"allow: POST"),
    ("/v1/threat/check", b"allow: POST"),
    ("/v1/risk/assess", b"allow: POST"),
    ("/v1/relationships", b"allow: GET, HEAD, POST, DELETE"),
    ("/v1/xaa/channel", b"allow: POST"),
    ("/v1/xaa/delegate", b"allow: POST"),
    (
        "/.well-known/oauth-authorization-server",
        b"allow: GET, HEAD",
    ),
    ("/healthz", b"allow: GET, HEAD"),
    ("/.well-known/jwks.json", b"allow: GET, HEAD"),
    ("/metrics", b"allow: GET, HEAD"),
];

impl Handler for ShardApp {
    type Msg = ShardMsg;

    fn handle(&mut self, req: &Request<'_>, cx: &mut Cx<'_>, out: &mut Vec<u8>) -> Outcome {
        self.unix_admin = cx
            .peer_uid
            .is_some_and(|uid| self.shared.config.admin_unix_uids.contains(&uid));
        let started = self.monitor.start();
        let out_start = out.len();
        let (outcome, op) = if self.source_limiter.enabled() {
            self.limited(req, cx, out)
        } else {
            self.route(req, cx, out)
        };
        if outcome == Outcome::Later {
            // Offered again at the connection's next turn: charge it then, not twice.
            debug_assert_eq!(out.len(), out_start, "Later writes nothing");
            let class = crate::ratelimit::RouteClass::of_path(req.path);
            self.source_limiter.refund(class, cx.peer);
            return outcome;
        }
        if req.method == Method::Head {
            respond::strip_body(out, out_start);
        }
        if req.echoes_keep_alive() {
            match outcome {
                Outcome::Done => http::echo_keep_alive(out, out_start),
                Outcome::Deferred(ticket) => {
                    self.echo_tickets.insert(ticket, cx.now_s);
                }
                Outcome::Later => {}
            }
        }
        if outcome == Outcome::Done {
            let code = respond::status_of(&out[out_start..]);
            self.counters.count_status(code);
            match code {
                401 | 403 | 429 => self.note_denial(req, code, cx),
                200 if req.path == "/v1/xaa/delegate" => {
                    self.note_decision("xaa.delegate", req.path, cx);
                }
                _ => {}
            }
        }
        self.monitor.record(op, started);
        outcome
    }

    fn on_message(&mut self, msg: ShardMsg, _now_s: u64, ready: &mut Ready) {
        let n_ready = ready.len();
        self.apply_message(msg, ready);
        self.echo_deferred(ready, n_ready);
    }

    fn background(&mut self, now_s: u64, budget: u32, ready: &mut Ready) -> bool {
        if now_s != self.last_tick_s {
            self.last_tick_s = now_s;
            self.revoked.retain_live(now_s);
            let deferred_timeout_s = self.config().server.limits.deferred_timeout_s;
            self.echo_tickets
                .retain(|_, &mut since_s| since_s + deferred_timeout_s >= now_s);
            self.owned.expire(now_s, deferred_timeout_s);
            if let Some(global) = &mut self.global {
                global.expire(deferred_timeout_s);
            }
            self.sec.expire(now_s, deferred_timeout_s);
            self.sweep_slots_left = self.cache.capacity().div_ceil(SWEEP_PASS_S);
            self.pool_refill_due = true;
            self.ship_audit_events();
            self.monitor.tick(self.shared.mesh_gauges.depth(self.idx));
            self.publish_metrics();
        }
        let n_ready = ready.len();
        let mut more = false;
        if self.sweep_slots_left > 0 {
            let n_slots = self.sweep_slots_left.min(budget as usize * 64);
            self.cache.sweep_expired(now_s, n_slots);
            self.sweep_slots_left -= n_slots;
            more |= self.sweep_slots_left > 0;
        }
        if self.pool_refill_due {
            // Still due while each pass uses its whole budget.
            self.pool_refill_due = self.refill_pool(now_s, budget as usize);
            more |= self.pool_refill_due;
        }
        // Batch jobs: a chunk per pass, after the requests of the pass.
        more |= self.run_jobs(now_s, ready);
        more |= self.owned.flush(&mut self.outbox);
        self.echo_deferred(ready, n_ready);
        more
    }
}

impl ShardApp {
    /// Adds `connection: keep-alive` to the deferred responses from `ready[from..]` whose
    /// requests were HTTP/1.0 keep-alive.
    fn echo_deferred(&mut self, ready: &mut Ready, from: usize) {
        if self.echo_tickets.is_empty() {
            return;
        }
        for (ticket, response) in ready.iter_mut().skip(from) {
            if self.echo_tickets.remove(ticket).is_some() {
                http::echo_keep_alive(response, 0);
            }
        }
    }

    fn apply_message(&mut self, msg: ShardMsg, ready: &mut Ready) {
        match msg {
            ShardMsg::BatchPart {
                origin,
                batch_id,
                offset,
                tokens,
            } => self.on_batch_part(origin, batch_id, offset, tokens),
            ShardMsg::BatchDone {
                batch_id,
                offset,
                verdicts,
            } => self.on_batch_done(batch_id, offset, verdicts, ready),
            ShardMsg::Owned {
                origin,
                ticket,
                work,
            } => {
                let result = self.do_owned(work);
                self.owned.reply(&mut self.outbox, origin, ticket, result);
            }
            ShardMsg::OwnedDone {
                ticket,
                result: OwnedResult::Rate(verdict),
            } => {
                // `None`: answered 503 by the runtime's deferred timeout already.
                if let Some(keep_alive) = self.owned.complete(ticket) {
                    let mut response = Vec::new();
                    self.render_owned(&mut response, &verdict, keep_alive);
                    self.counters.count_status(respond::status_of(&response));
                    ready.push((ticket, response));
                }
            }
            ShardMsg::OwnedDone { ticket, result } => {
                self.security_part_done(ticket, result, ready);
            }
            ShardMsg::ThreatBlocked { source } => self.note_threat_block(source),
            ShardMsg::Lease(answer) => self.on_lease_answer(answer, ready),
            ShardMsg::Relationships(snapshot) => self.relationships = Some(snapshot),
            ShardMsg::Keys(snapshot) => {
                let retired = self.keys.kids.iter().any(|k| !snapshot.kids.contains(k));
                self.verifier.adopt_own_keys(&snapshot.verifier);
                self.keys = snapshot;
                if retired {
                    // Cached entries do not record their kid; a retirement is rare, so drop all.
                    self.cache.retain(|_| false);
                }
            }
            ShardMsg::Revoked { iss, jti, exp_s } => {
                // O(1): every cache hit checks the denylist, so nothing is scanned here; the
                // entry outlives the token (`exp_s` ≥ its `exp`), so no hit can miss it. The
                // control plane bounds the list; a re-revocation only lengthens an entry.
                self.revoked.insert(iss, jti, exp_s);
            }
            ShardMsg::Reply { to, reply } => {
                self.xaa.note_reply(&reply);
                let mut response = Vec::new();
                respond::control_reply(&mut response, &reply, to.keep_alive);
                let code = respond::status_of(&response);
                self.counters.count_status(code);
                ready.push((to.ticket, response));
            }
        }
    }
}
