//! Monitor: per-shard latency histograms, perf-event counters and the degradation detector,
//! and the Prometheus text exposition.
//!
//! Each shard records into its own [`ShardMonitor`] (no sharing on the request path) and, once
//! a second on its background queue, reads its perf counters, closes the interval, feeds the
//! detector and renders its section of `/metrics` into its slot on the [`Board`]. Any shard
//! answering `/metrics` concatenates the slots; the board adds each family's `# HELP` and
//! `# TYPE` from [`families`].

pub mod detector;
pub mod families;
pub mod hist;
pub mod perf;
pub mod process;
mod shard;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use detector::DetectorConfig;
pub use hist::OpHistograms;
pub use shard::{MonitorSettings, ShardMonitor};

/// Gateway operations we time; the label in `/metrics`. `op as usize` indexes [`Op::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Authenticate answered from the cache.
    AuthenticateHit,
    /// Authenticate that needed a signature verification.
    AuthenticateVerify,
    /// Batch verification.
    AuthenticateBatch,
    /// Token issue served from the pool.
    TokenPoolHit,
    /// Token issue that signed inline.
    TokenSign,
    /// Revocation.
    Revoke,
    /// Permission check answered from the decision cache.
    PermissionHit,
    /// Permission check that evaluated the relationships.
    PermissionCheck,
    /// Vault request handed to the control plane (shard time only, not the round trip).
    Vault,
    /// Audit write or read handed to the control plane (shard time only).
    Audit,
    /// `POST /v1/ratelimit/check` (shard time only when the key's owner is another shard).
    RateLimitCheck,
    /// `POST /v1/threat/check` (shard time only, at the origin, when a part crossed the mesh).
    ThreatCheck,
    /// `POST /v1/risk/assess` (likewise).
    RiskAssess,
    /// Everything else (health, jwks, metrics, errors).
    Other,
}

impl Op {
    /// All ops, in exposition order.
    pub const ALL: [Op; 14] = [
        Op::AuthenticateHit,
        Op::AuthenticateVerify,
        Op::AuthenticateBatch,
        Op::TokenPoolHit,
        Op::TokenSign,
        Op::Revoke,
        Op::PermissionHit,
        Op::PermissionCheck,
        Op::Vault,
        Op::Audit,
        Op::RateLimitCheck,
        Op::ThreatCheck,
        Op::RiskAssess,
        Op::Other,
    ];

    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            Op::AuthenticateHit => "authenticate_cache_hit",
            Op::AuthenticateVerify => "authenticate_verify",
            Op::AuthenticateBatch => "authenticate_batch",
            Op::TokenPoolHit => "token_pool_hit",
            Op::TokenSign => "token_sign",
            Op::Revoke => "revoke",
            Op::PermissionHit => "permission_cache_hit",
            Op::PermissionCheck => "permission_check",
            Op::Vault => "vault",
            Op::Audit => "audit",
            Op::RateLimitCheck => "ratelimit_check",
            Op::ThreatCheck => "threat_check",
            Op::RiskAssess => "risk_assess",
            Op::Other => "other",
        }
    }
}

/// Where shards and the control plane publish their `/metrics` sections.
pub struct Board {
    shards: Vec<Mutex<String>>,
    control: Mutex<String>,
    /// Bumped by every publish, so readers re-render only when something changed.
    version: AtomicU64,
}

impl Board {
    /// One slot per shard plus one for the control plane.
    pub fn new(n_shards: usize) -> Board {
        Board {
            shards: (0..n_shards).map(|_| Mutex::new(String::new())).collect(),
            control: Mutex::new(String::new()),
            version: AtomicU64::new(0),
        }
    }

    /// Changes whenever a section is published.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Replaces shard `idx`'s section.
    pub fn publish_shard(&self, idx: usize, text: String) {
        if let Ok(mut slot) = self.shards[idx].lock() {
            *slot = text;
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Replaces the control plane's section (gate counters, key ring).
    pub fn publish_control(&self, text: String) {
        if let Ok(mut slot) = self.control.lock() {
            *slot = text;
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The whole exposition, with every metric family's lines grouped together (the text
    /// format requires it; each section lists its own shard's samples of many families), each
    /// family led by exactly one `# HELP` and one `# TYPE` from the registry.
    pub fn render(&self, out: &mut String) {
        let mut text = String::new();
        for slot in &self.shards {
            if let Ok(section) = slot.lock() {
                text.push_str(&section);
            }
        }
        if let Ok(section) = self.control.lock() {
            text.push_str(&section);
        }
        group_families(&text, out);
    }
}

/// Regroups exposition lines by metric family, keeping first-seen order of families and of
/// samples within one, and writes each family's `# HELP` and `# TYPE` once, ahead of its
/// samples: a section's own header lines win, then the registry's, then a guess (see
/// [`families`]). `_bucket`/`_count`/`_sum` samples join their histogram or summary.
fn group_families(text: &str, out: &mut String) {
    struct Family<'a> {
        help: Option<&'a str>,
        kind: Option<&'a str>,
        samples: Vec<&'a str>,
    }
    let mut order: Vec<&str> = Vec::new();
    let mut by_name: std::collections::HashMap<&str, Family<'_>> = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (name, help, kind) = if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            (name, Some(help), None)
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            (name, None, Some(kind))
        } else if line.starts_with('#') {
            continue;
        } else {
            (
                families::family_of(line.split(['{', ' ']).next().unwrap_or("")),
                None,
                None,
            )
        };
        let family = by_name.entry(name).or_insert_with(|| {
            order.push(name);
            Family {
                help: None,
                kind: None,
                samples: Vec::new(),
            }
        });
        match (help, kind) {
            (Some(h), _) => {
                family.help.get_or_insert(h);
            }
            (_, Some(k)) => {
                family.kind.get_or_insert(k);
            }
            _ => family.samples.push(line),
        }
    }
    for name in order {
        let Some(family) = by_name.get(name) else {
            continue;
        };
        let registered = families::lookup(name);
        let help = family
            .help
            .or(registered.map(|r| r.1))
            .unwrap_or(families::UNDOCUMENTED);
        let kind = family.kind.unwrap_or_else(|| {
            registered
                .map_or_else(|| families::guess_kind(name), |r| r.0)
                .as_str()
        });
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for line in &family.samples {
            out.push_str(line);
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_groups_each_family_across_shards_with_one_help_and_type() {
        let board = Board::new(2);
        board.publish_shard(
            0,
            "subzero_cache_hits_total{shard=\"0\"} 1\nnew_thing{shard=\"0\"} 2\n".into(),
        );
        board.publish_shard(
            1,
            "subzero_cache_hits_total{shard=\"1\"} 3\nnew_thing{shard=\"1\"} 4\n".into(),
        );
        board.publish_control("# HELP g Own help.\n# TYPE g gauge\ng 7\n".into());
        let mut out = String::new();
        board.render(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            vec![
                "# HELP subzero_cache_hits_total Token cache hits.",
                "# TYPE subzero_cache_hits_total counter",
                "subzero_cache_hits_total{shard=\"0\"} 1",
                "subzero_cache_hits_total{shard=\"1\"} 3",
                &format!("# HELP new_thing {}", families::UNDOCUMENTED),
                "# TYPE new_thing gauge",
                "new_thing{shard=\"0\"} 2",
                "new_thing{shard=\"1\"} 4",
                "# HELP g Own help.",
                "# TYPE g gauge",
                "g 7",
            ]
        );
    }

    #[test]
    fn histograms_of_two_shards_form_one_family() {
        let board = Board::new(2);
        for shard in 0..2 {
            let mut h = OpHistograms::new();
            h.record(Op::Other, 10);
            h.tick();
            let mut text = String::new();
            h.render(shard, &mut text);
            board.publish_shard(shard, text);
        }
        let mut out = String::new();
        board.render(&mut out);
        let mut seen: Vec<&str> = Vec::new();
        let mut current = "";
        for line in out.lines() {
            let family = match line
                .strip_prefix("# HELP ")
                .or(line.strip_prefix("# TYPE "))
            {
                Some(rest) => rest.split(' ').next().unwrap(),
                None => families::family_of(line.split(['{', ' ']).next().unwrap()),
            };
            if family != current {
                assert!(!seen.contains(&family), "{family} split:\n{out}");
                seen.push(family);
                current = family;
            }
        }
        assert_eq!(
            seen,
            [
                "subzero_request_duration_seconds",
                "subzero_request_latency_seconds",
                "subzero_request_p99_seconds"
            ]
        );
        assert_eq!(
            out.matches("# TYPE subzero_request_duration_seconds histogram")
                .count(),
            1
        );
        assert_eq!(out.matches("_bucket{").count(), 2 * (hist::N_BOUNDS + 1));
    }
}
