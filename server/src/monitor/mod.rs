//! Monitor: per-shard latency histograms and counters, and the Prometheus text exposition.
//!
//! Each shard records into its own histograms (no sharing on the request path) and, once a
//! second on its background queue, renders its section of `/metrics` into its slot on the
//! [`Board`]. Any shard answering `/metrics` concatenates the slots.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Gateway operations we time; the label in `/metrics`.
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

/// Latency histograms (nanoseconds of server time per request) for every op.
pub struct OpHistograms {
    hists: Vec<Histogram<u64>>,
}

impl Default for OpHistograms {
    fn default() -> Self {
        OpHistograms::new()
    }
}

impl OpHistograms {
    /// 1 ns .. 60 s at 2 significant figures; allocated once at start.
    pub fn new() -> OpHistograms {
        let hists = Op::ALL
            .iter()
            .map(|_| {
                Histogram::new_with_bounds(1, 60_000_000_000, 2)
                    .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!()))
            })
            .collect();
        OpHistograms { hists }
    }

    /// Records one request of `op` that took `ns`.
    pub fn record(&mut self, op: Op, ns: u64) {
        let idx = Op::ALL
            .iter()
            .position(|&o| o == op)
            .unwrap_or(Op::ALL.len() - 1);
        self.hists[idx].saturating_record(ns.max(1));
    }

    /// Renders summaries (quantiles in seconds, count) labelled with `shard`.
    pub fn render(&self, shard: usize, out: &mut String) {
        for (op, hist) in Op::ALL.iter().zip(&self.hists) {
            if hist.is_empty() {
                continue;
            }
            for q in [0.5, 0.9, 0.99, 0.999] {
                let _ = writeln!(
                    out,
                    "subzero_request_duration_seconds{{shard=\"{shard}\",op=\"{}\",quantile=\"{q}\"}} {:.9}",
                    op.label(),
                    hist.value_at_quantile(q) as f64 / 1e9
                );
            }
            let _ = writeln!(
                out,
                "subzero_request_duration_seconds_count{{shard=\"{shard}\",op=\"{}\"}} {}",
                op.label(),
                hist.len()
            );
        }
    }

    /// p99 of `op` in nanoseconds (0 when empty).
    pub fn p99_ns(&self, op: Op) -> u64 {
        let idx = Op::ALL.iter().position(|&o| o == op).unwrap_or(0);
        self.hists[idx].value_at_quantile(0.99)
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
    /// format requires it; each section lists its own shard's samples of many families).
    pub fn render(&self, out: &mut String) {
        let mut text = String::from("# TYPE subzero_request_duration_seconds summary\n");
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
/// samples within one; `# HELP`/`# TYPE` lines are kept once, ahead of their samples. The
/// `_count`/`_sum` samples of a summary join its family.
fn group_families(text: &str, out: &mut String) {
    let mut order: Vec<&str> = Vec::new();
    let mut families: std::collections::HashMap<&str, (Vec<&str>, Vec<&str>)> =
        std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (name, is_header) = if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            (rest.split(' ').next().unwrap_or(""), true)
        } else if line.starts_with('#') {
            continue;
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let base = name
                .strip_suffix("_count")
                .or_else(|| name.strip_suffix("_sum"))
                .filter(|base| families.contains_key(base));
            (base.unwrap_or(name), false)
        };
        let family = families.entry(name).or_insert_with(|| {
            order.push(name);
            (Vec::new(), Vec::new())
        });
        if is_header {
            if !family.0.contains(&line) {
                family.0.push(line);
            }
        } else {
            family.1.push(line);
        }
    }
    for name in order {
        if let Some((headers, samples)) = families.get(name) {
            for line in headers.iter().chain(samples) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_groups_each_family_across_shards() {
        let board = Board::new(2);
        board.publish_shard(0, "a_total{shard=\"0\"} 1\nb_total{shard=\"0\"} 2\n".into());
        board.publish_shard(1, "a_total{shard=\"1\"} 3\nb_total{shard=\"1\"} 4\n".into());
        board.publish_control("# TYPE g gauge\ng 7\n".into());
        let mut out = String::new();
        board.render(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            vec![
                "# TYPE subzero_request_duration_seconds summary",
                "a_total{shard=\"0\"} 1",
                "a_total{shard=\"1\"} 3",
                "b_total{shard=\"0\"} 2",
                "b_total{shard=\"1\"} 4",
                "# TYPE g gauge",
                "g 7",
            ]
        );
        let mut h = OpHistograms::new();
        h.record(Op::Other, 10);
        let mut a = String::new();
        h.render(0, &mut a);
        let mut b = String::new();
        h.render(1, &mut b);
        board.publish_shard(0, a);
        board.publish_shard(1, b);
        let mut out = String::new();
        board.render(&mut out);
        let names: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('{').next().unwrap())
            .collect();
        // The summary family (quantiles and `_count` of both shards) is one contiguous group.
        assert_eq!(names.len(), 11, "{names:?}");
        assert!(
            names[..10]
                .iter()
                .all(|n| n.starts_with("subzero_request_duration_seconds")),
            "{names:?}"
        );
        assert_eq!(names[10], "g 7");
    }

    #[test]
    fn records_and_renders_quantiles() {
        let mut h = OpHistograms::new();
        for ns in 1..=1000 {
            h.record(Op::AuthenticateHit, ns * 1000);
        }
        let mut out = String::new();
        h.render(3, &mut out);
        assert!(out.contains(
            "subzero_request_duration_seconds_count{shard=\"3\",op=\"authenticate_cache_hit\"} 1000"
        ));
        let p99 = h.p99_ns(Op::AuthenticateHit);
        assert!((980_000..=1_000_000).contains(&p99), "{p99}");
        assert!(!out.contains("token_sign"), "empty ops are not rendered");
    }
}
