//! `[fleet]`: several gateways acting as one through Redis (one instance or a Redis Cluster),
//! parsed onto [`FleetConfig`] and validated at start. Absent, the node runs alone.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{check_range, ConfigError};

/// Longest timeout accepted for a Redis connect or call (ms).
const MAX_TIMEOUT_MS: u64 = 60_000;
/// Most cluster seed nodes listed.
pub const MAX_FLEET_SEEDS: usize = 64;

/// What a global rate-limit check answers while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Allow (Envoy's and Kong's default): availability over the limit.
    Open,
    /// Deny with 429: the limit over availability.
    Closed,
}

/// `[fleet]`.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// One `redis://` URL (a single instance), or several (Redis Cluster seed nodes).
    pub redis: Vec<String>,
    /// Whether `redis` names Cluster seeds (a list was given) rather than one instance.
    pub cluster: bool,
    /// This node's name in the fleet; default: random, kept in `<data_dir>/fleet-node-id`.
    pub node_id: Option<String>,
    /// The vault master key every node shares (so any node opens any entry); Redis only ever
    /// holds sealed bytes. `None`: the node's own `<data_dir>/vault.key`.
    pub vault_key_file: Option<PathBuf>,
    /// Global rate limits while Redis is unreachable.
    pub fail_mode: FailMode,
    /// How long leased rate-limit units stay spendable (ms); 0: no leases, every global
    /// rate-limit check is one Redis round trip for exactly its cost.
    pub lease_ms: u64,
    /// A node publishes a snapshot (and trims the feed behind it) every this many changes.
    pub snapshot_every: u64,
    /// Connect timeout (ms).
    pub connect_timeout_ms: u64,
    /// Per-call read/write timeout (ms).
    pub io_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileRedis {
    One(String),
    Seeds(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileFleet {
    redis: Option<FileRedis>,
    node_id: Option<String>,
    vault_key_file: Option<PathBuf>,
    fail_mode: Option<String>,
    lease_ms: Option<u64>,
    snapshot_every: Option<u64>,
    connect_timeout_ms: Option<u64>,
    io_timeout_ms: Option<u64>,
}

/// The file's `[fleet]`, validated; `None` when it names no Redis.
pub(super) fn from_file(file: FileFleet, base: &Path) -> Result<Option<FleetConfig>, ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    let (redis, cluster) = match file.redis {
        None => {
            let set = file.node_id.is_some()
                || file.vault_key_file.is_some()
                || file.fail_mode.is_some()
                || file.lease_ms.is_some()
                || file.snapshot_every.is_some();
            if set {
                return invalid("[fleet] settings need fleet.redis (the Redis URL)".into());
            }
            return Ok(None);
        }
        Some(FileRedis::One(url)) => (vec![url], false),
        Some(FileRedis::Seeds(seeds)) => (seeds, true),
    };
    if redis.is_empty() || redis.len() > MAX_FLEET_SEEDS {
        return invalid(format!(
            "fleet.redis must name 1 to {MAX_FLEET_SEEDS} Redis URLs, got {}",
            redis.len()
        ));
    }
    for url in &redis {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return invalid(format!(
                "fleet.redis: {url:?} is not a redis:// or rediss:// URL"
            ));
        }
    }
    if let Some(id) = &file.node_id {
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return invalid(format!(
                "fleet.node_id must be 1 to 64 of [A-Za-z0-9._-], got {id:?}"
            ));
        }
    }
    let fail_mode = match file.fail_mode.as_deref() {
        None | Some("open") => FailMode::Open,
        Some("closed") => FailMode::Closed,
        Some(other) => {
            return invalid(format!(
                "fleet.fail_mode must be \"open\" or \"closed\", got {other:?}"
            ))
        }
    };
    let c = FleetConfig {
        redis,
        cluster,
        node_id: file.node_id,
        vault_key_file: file.vault_key_file.map(|p| base.join(p)),
        fail_mode,
        lease_ms: file.lease_ms.unwrap_or(50),
        snapshot_every: file.snapshot_every.unwrap_or(10_000),
        connect_timeout_ms: file.connect_timeout_ms.unwrap_or(250),
        io_timeout_ms: file.io_timeout_ms.unwrap_or(500),
    };
    check_range("fleet.lease_ms", c.lease_ms as usize, 0, 10_000)?;
    check_range(
        "fleet.snapshot_every",
        c.snapshot_every as usize,
        10,
        10_000_000,
    )?;
    for (name, v) in [
        ("fleet.connect_timeout_ms", c.connect_timeout_ms),
        ("fleet.io_timeout_ms", c.io_timeout_ms),
    ] {
        check_range(name, v as usize, 1, MAX_TIMEOUT_MS as usize)?;
    }
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::FailMode;
    use crate::config::Config;

    #[test]
    fn fleet_section_parses_one_url_or_seeds_and_refuses_nonsense() {
        let base = Path::new("/etc/subzero");
        let c = Config::from_toml("", base).unwrap();
        assert!(c.fleet.is_none(), "absent → single node");
        let c = Config::from_toml("[fleet]\nredis = \"redis://127.0.0.1:6379\"\n", base).unwrap();
        let f = c.fleet.unwrap();
        assert_eq!(f.redis, ["redis://127.0.0.1:6379"]);
        assert!(!f.cluster);
        assert_eq!(f.fail_mode, FailMode::Open);
        assert_eq!(f.lease_ms, 50);
        // 0: no leases, one Redis round trip per check.
        let c = Config::from_toml("[fleet]\nredis = \"redis://h\"\nlease_ms = 0\n", base).unwrap();
        assert_eq!(c.fleet.unwrap().lease_ms, 0);
        let c = Config::from_toml(
            "[fleet]\nredis = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]\nfail_mode = \"closed\"\nvault_key_file = \"fleet.key\"\n",
            base,
        )
        .unwrap();
        let f = c.fleet.unwrap();
        assert!(f.cluster);
        assert_eq!(f.fail_mode, FailMode::Closed);
        assert_eq!(
            f.vault_key_file.as_deref(),
            Some(Path::new("/etc/subzero/fleet.key"))
        );
        for (text, says) in [
            ("[fleet]\nredis = \"http://x\"\n", "not a redis://"),
            ("[fleet]\nredis = []\n", "1 to 64"),
            (
                "[fleet]\nredis = \"redis://h\"\nfail_mode = \"maybe\"\n",
                "fail_mode",
            ),
            ("[fleet]\nnode_id = \"a\"\n", "need fleet.redis"),
            (
                "[fleet]\nredis = \"redis://h\"\nnode_id = \"a b\"\n",
                "node_id",
            ),
            (
                "[fleet]\nredis = \"redis://h\"\nlease_ms = 10001\n",
                "lease_ms",
            ),
            ("[fleet]\nredis = \"redis://h\"\nbogus = 1\n", "bogus"),
        ] {
            let err = Config::from_toml(text, base).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
