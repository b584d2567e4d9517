//! Command-line interface (clap): serve, keygen, token issue/verify, audit verify (and the
//! gate's stats/block).
//!
//! Errors are one sentence on stderr; exit codes: 0 ok, 1 runtime failure, 2 usage or config.

mod block;
mod remote;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::{self, Claims, KeyRing, Verifier};
use crate::config::{Config, Overrides, Shards};

/// subzero: a zero-trust authentication gateway (thread-per-core io_uring, eBPF pre-filter).
#[derive(Parser, Debug)]
#[command(name = "subzero", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (no flags: 127.0.0.1:8080, ./var/subzero, one shard per core).
    Serve(ServeArgs),
    /// Create an Ed25519 signing key (PKCS#8 PEM, mode 0600) and its JWK.
    Keygen {
        /// Data directory that holds `keys/`.
        #[arg(long, default_value = "var/subzero")]
        data_dir: PathBuf,
    },
    /// Issue or verify tokens offline.
    #[command(subcommand)]
    Token(TokenCommand),
    /// eBPF gate stats from the pinned maps: counts per reason and CPU, blocklist, top
    /// offenders; with `--server`, each shard's requests/s, p99, CPU, perf counters and
    /// degraded flags beside the gate's counters.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Then print rates every SECS seconds until interrupted.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
        /// A running server to read (`http://127.0.0.1:8080` or `unix:/path`): its
        /// `/metrics`, scraped twice a second apart (or every SECS with `--watch`).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Edit the kernel blocklist through the pinned maps (works while the server runs), or
    /// with `--server URL` through a running server's `/v1/block`.
    #[command(subcommand)]
    Block(BlockCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check every chain link across all segments and every stored checkpoint; name the
    /// first bad record (exit 1) or print the records, segments and head hash.
    Verify {
        /// Data directory that holds `audit/`.
        #[arg(long, default_value = "var/subzero")]
        data_dir: PathBuf,
        /// Also check this checkpoint (a signed note saved earlier; repeatable).
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// Verifier key of the checkpoints (`name+keyid+key`); default: the log's own
        /// `audit/checkpoint.vkey`.
        #[arg(long)]
        vkey: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BlockCommand {
    /// Block a CIDR (bare address = /32 or /128).
    Add {
        /// e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7.
        cidr: String,
        /// Seconds until the entry expires (default: never).
        #[arg(long)]
        ttl_s: Option<u64>,
        /// manual, threat, ratelimit or other.
        #[arg(long, default_value = "manual")]
        reason: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Remove the exact entry for a CIDR.
    Del {
        /// The CIDR as added.
        cidr: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the entries.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Where `block` acts: the pinned maps (default) or a running server.
#[derive(Args, Debug)]
struct RemoteArgs {
    /// Act through a running server's `/v1/block` instead of the pinned maps:
    /// `unix:/path` (no token needed for an `[admin] unix_uids` uid) or `http://host:port`.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// File holding the admin token (for `--server http://...`).
    #[arg(long, value_name = "FILE", requires = "server")]
    admin_token_file: Option<PathBuf>,
}

impl RemoteArgs {
    fn remote(&self) -> Option<block::Remote<'_>> {
        Some(block::Remote {
            server: self.server.as_deref()?,
            admin_token_file: self.admin_token_file.as_deref(),
        })
    }
}

fn gate_failure(e: &crate::gate::GateError) -> Failure {
    if e.is_usage() {
        usage(e.to_string())
    } else {
        runtime(e.to_string())
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// TOML config file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address: IP:PORT, or unix:/path for a Unix stream socket; repeatable (one of
    /// each kind at most); replaces the file's whole `server.listen` list, so `--listen
    /// unix:/path` alone runs with no TCP listener.
    #[arg(long)]
    listen: Vec<String>,
    /// Data directory (keys, revocations, vault, audit log).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shards: a number, or `auto` for one per CPU.
    #[arg(long)]
    shards: Option<String>,
    /// Attach the XDP gate to this interface (repeatable).
    #[arg(long)]
    xdp: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Sign a token with the data dir's current key and print it.
    Issue {
        /// Data directory that holds `keys/`.
        #[arg(long, default_value = "var/subzero")]
        data_dir: PathBuf,
        /// Subject (`sub`).
        #[arg(long)]
        sub: String,
        /// Audience (`aud`).
        #[arg(long)]
        aud: String,
        /// Scope (repeatable).
        #[arg(long)]
        scope: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 900)]
        ttl_s: u64,
        /// Issuer (`iss`).
        #[arg(long, default_value = "subzero")]
        iss: String,
    },
    /// Verify a token and print its claims as JSON.
    Verify {
        /// Verify against this data dir's keys (issuer `subzero`).
        #[arg(long, conflicts_with = "jwks")]
        data_dir: Option<PathBuf>,
        /// Verify against the keys in this JWKS file (any issuer).
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Only accept this audience (default: any).
        #[arg(long)]
        aud: Option<String>,
        /// The token.
        token: String,
    },
}

/// A CLI failure: the message and the exit code.
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn runtime(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

/// Entry point for the `subzero` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("subzero: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run(cli: Cli) -> Result<(), Failure> {
    let now_s = crate::unix_now_s();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Keygen { data_dir } => {
            let ring = KeyRing::generate(&data_dir, now_s).map_err(|e| runtime(e.to_string()))?;
            println!("{}", ring.jwks_json());
            eprintln!(
                "created key {} in {}",
                ring.current_kid(),
                data_dir.join("keys").display()
            );
            Ok(())
        }
        Command::Token(TokenCommand::Issue {
            data_dir,
            sub,
            aud,
            scope,
            ttl_s,
            iss,
        }) => {
            if ttl_s == 0 || ttl_s > 86_400 * 366 {
                return Err(usage("--ttl-s must be between 1 and 31622400 seconds"));
            }
            let ring = load_ring(&data_dir, now_s)?;
            let scopes: Vec<&str> = scope.iter().map(String::as_str).collect();
            let claims = Claims::new_for(
                &iss,
                &sub,
                vec![aud],
                &scopes,
                ttl_s,
                now_s,
                crate::auth::new_jti(),
            );
            println!(
                "{}",
                auth::sign(ring.signing_key(), ring.current_kid(), &claims)
            );
            Ok(())
        }
        Command::Token(TokenCommand::Verify {
            data_dir,
            jwks,
            aud,
            token,
        }) => verify(data_dir.as_deref(), jwks.as_deref(), aud, &token, now_s),
        Command::Stats {
            json,
            watch,
            server: Some(server),
        } => stats::server_stats(&server, json, watch).map_err(runtime),
        Command::Stats {
            json,
            watch,
            server: None,
        } => crate::gate::cli_stats(json, watch).map_err(|e| gate_failure(&e)),
        Command::Block(BlockCommand::Add {
            cidr,
            ttl_s,
            reason,
            remote,
        }) => match remote.remote() {
            Some(r) => block::add(&r, &cidr, ttl_s, &reason).map_err(runtime),
            None => crate::gate::cli_block_add(&cidr, ttl_s, &reason).map_err(|e| gate_failure(&e)),
        },
        Command::Block(BlockCommand::Del { cidr, remote }) => match remote.remote() {
            Some(r) => block::del(&r, &cidr).map_err(runtime),
            None => crate::gate::cli_block_del(&cidr).map_err(|e| gate_failure(&e)),
        },
        Command::Block(BlockCommand::List { json, remote }) => match remote.remote() {
            Some(r) => block::list(&r, json).map_err(runtime),
            None => crate::gate::cli_block_list(json).map_err(|e| gate_failure(&e)),
        },
        Command::Audit(AuditCommand::Verify {
            data_dir,
            checkpoint,
            vkey,
        }) => audit_verify(&data_dir, &checkpoint, vkey.as_deref()),
    }
}

fn audit_verify(
    data_dir: &Path,
    checkpoints: &[PathBuf],
    vkey: Option<&str>,
) -> Result<(), Failure> {
    if !data_dir.join(crate::audit::AUDIT_DIR).is_dir() {
        return Err(usage(format!(
            "{} holds no audit log (no audit/ directory); pass the server's --data-dir",
            data_dir.display()
        )));
    }
    let report = crate::audit::verify_dir(data_dir, checkpoints, vkey)
        .map_err(|e| runtime(format!("audit log verification FAILED: {e}")))?;
    println!(
        "audit log OK: {} records (seq {}..{}) in {} segments; head {}",
        report.n_records,
        report.first_seq,
        report.last_seq,
        report.n_segments,
        crate::audit::record::hex(&report.head)
    );
    println!(
        "checkpoints: {} verified, {} older than the first retained record",
        report.n_checkpoints, report.n_checkpoints_skipped
    );
    if report.torn_bytes > 0 {
        println!(
            "note: the last segment ends in {} bytes of an interrupted write (never acknowledged); the server cuts them at its next start",
            report.torn_bytes
        );
    }
    if let Some(vkey) = report.vkey {
        println!("checkpoint verifier key: {vkey}");
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let shards = args
        .shards
        .as_deref()
        .map(Shards::parse)
        .transpose()
        .map_err(|e| usage(e.to_string()))?;
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        shards,
        xdp: args.xdp,
    };
    let config =
        Config::load(args.config.as_deref(), &overrides).map_err(|e| usage(e.to_string()))?;
    crate::serve::serve(config).map_err(|e| runtime(e.to_string()))
}

fn load_ring(data_dir: &Path, now_s: u64) -> Result<KeyRing, Failure> {
    KeyRing::load(data_dir, now_s).map_err(|e| {
        runtime(format!(
            "{e} (create a key with `subzero keygen --data-dir {}`)",
            data_dir.display()
        ))
    })
}

fn verify(
    data_dir: Option<&Path>,
    jwks: Option<&Path>,
    aud: Option<String>,
    token: &str,
    now_s: u64,
) -> Result<(), Failure> {
    let leeway_s = 60;
    let verifier = match (data_dir, jwks) {
        (_, Some(path)) => {
            Verifier::from_jwks_file(path, leeway_s).map_err(|e| runtime(e.to_string()))?
        }
        (dir, None) => {
            let dir = dir.unwrap_or(Path::new("var/subzero"));
            let ring = load_ring(dir, now_s)?;
            // Any issuer and audience; signature, exp and nbf are checked (--aud below).
            Verifier::from_keyring(&ring, leeway_s)
        }
    };
    let claims = verifier
        .verify(token.trim().as_bytes(), now_s)
        .map_err(|e| runtime(format!("token is invalid: {}", e.description())))?;
    if let Some(aud) = aud {
        if !claims.aud.contains(&aud) {
            return Err(runtime(format!(
                "token is invalid: audience {aud:?} is not among {:?}",
                claims.aud
            )));
        }
    }
    let text = serde_json::to_string_pretty(&claims).map_err(|e| runtime(e.to_string()))?;
    println!("{text}");
    Ok(())
}
