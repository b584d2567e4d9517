//! Per-op request latency on one shard: fixed Prometheus buckets that aggregate across shards
//! and nodes, plus hdrhistogram for exact quantiles.
//!
//! Bucket layout (documented in README): 1-2-5 per decade from 1 µs to 10 s, 22 upper bounds
//! plus `+Inf`. The layout is a constant, so `sum by (le)` over shards and servers adds like
//! for like. Recording is a plain `&mut` update on the shard's own thread (no atomics, no
//! locks): the bucket index is `leading_zeros` into a 64-entry table and at most two compares.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::Op;

/// Number of finite bucket bounds.
pub const N_BOUNDS: usize = 22;

/// Upper bounds of the buckets in nanoseconds (`le`), 1-2-5 per decade, 1 µs .. 10 s.
pub const BOUNDS_NS: [u64; N_BOUNDS] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The `le` label of each bound, in seconds (fixed strings, so every shard writes the same).
pub const BOUND_LABELS: [&str; N_BOUNDS] = [
    "1e-06", "2e-06", "5e-06", "1e-05", "2e-05", "5e-05", "0.0001", "0.0002", "0.0005", "0.001",
    "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5", "10",
];

/// `FIRST_BY_LOG2[k]`: the first bucket whose bound is at least `2^k`. A value in
/// `[2^k, 2^(k+1))` lands there or at most two buckets further: consecutive bounds differ by at
/// least ×2, so such an interval holds at most one bound.
const FIRST_BY_LOG2: [u8; 64] = {
    let mut table = [0u8; 64];
    let mut k = 0;
    while k < 64 {
        let low = 1u64 << k;
        let mut idx = 0;
        while idx < N_BOUNDS && BOUNDS_NS[idx] < low {
            idx += 1;
        }
        table[k] = idx as u8;
        k += 1;
    }
    table
};

/// Index of the bucket `ns` falls in (`N_BOUNDS` = `+Inf`): the first bound ≥ `ns`.
#[inline]
pub fn bucket_index(ns: u64) -> usize {
    let log2 = 63 - (ns | 1).leading_zeros() as usize;
    let mut idx = usize::from(FIRST_BY_LOG2[log2]);
    while idx < N_BOUNDS && ns > BOUNDS_NS[idx] {
        idx += 1;
    }
    idx
}

/// Quantiles of the exact summary.
const QUANTILES: [(f64, &str); 4] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999")];

/// One op's record.
struct OpHist {
    /// Since the last tick (for the detector's p99), merged into `total` at each tick.
    interval: Histogram<u64>,
    /// Since start (the exact summary).
    total: Histogram<u64>,
    /// Per-bucket counts (not cumulative; the last one is `+Inf`).
    buckets: [u64; N_BOUNDS + 1],
    sum_ns: u64,
    count: u64,
}

/// What one op did during the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpInterval {
    /// Requests recorded.
    pub count: u64,
    /// Their p99 in nanoseconds (0 when none).
    pub p99_ns: u64,
}

/// Latency of every op on one shard.
pub struct OpHistograms {
    ops: Vec<OpHist>,
    /// The last interval's figures, rendered as `subzero_request_p99_seconds`.
    last: [OpInterval; Op::ALL.len()],
}

impl Default for OpHistograms {
    fn default() -> Self {
        OpHistograms::new()
    }
}

fn new_hdr() -> Histogram<u64> {
    // 1 ns .. 60 s at 2 significant figures; allocated once at start.
    Histogram::new_with_bounds(1, 60_000_000_000, 2)
        .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!()))
}

impl OpHistograms {
    /// Allocates every histogram once.
    pub fn new() -> OpHistograms {
        let ops = Op::ALL
            .iter()
            .map(|_| OpHist {
                interval: new_hdr(),
                total: new_hdr(),
                buckets: [0; N_BOUNDS + 1],
                sum_ns: 0,
                count: 0,
            })
            .collect();
        OpHistograms {
            ops,
            last: [OpInterval::default(); Op::ALL.len()],
        }
    }

    /// Records one request of `op` that took `ns`: an hdrhistogram record, a bucket index and
    /// three adds.
    #[inline]
    pub fn record(&mut self, op: Op, ns: u64) {
        let Some(h) = self.ops.get_mut(op as usize) else {
            return;
        };
        h.interval.saturating_record(ns.max(1));
        h.buckets[bucket_index(ns)] += 1;
        h.sum_ns = h.sum_ns.saturating_add(ns);
        h.count += 1;
    }

    /// Closes the interval (once a second, in the shard's tick): computes each op's p99 over
    /// it, merges it into the totals and starts a new one.
    pub fn tick(&mut self) -> [OpInterval; Op::ALL.len()] {
        for (h, last) in self.ops.iter_mut().zip(self.last.iter_mut()) {
            *last = OpInterval {
                count: h.interval.len(),
                p99_ns: if h.interval.is_empty() {
                    0
                } else {
                    h.interval.value_at_quantile(0.99)
                },
            };
            let _ = h.total.add(&h.interval);
            h.interval.reset();
        }
        self.last
    }

    /// Cumulative count of `op` at each bound (`le`), the last being `+Inf` (= the count).
    pub fn cumulative(&self, op: Op) -> [u64; N_BOUNDS + 1] {
        let mut out = [0; N_BOUNDS + 1];
        let mut acc = 0;
        for (o, n) in out.iter_mut().zip(self.ops[op as usize].buckets) {
            acc += n;
            *o = acc;
        }
        out
    }

    /// Exact quantile of `op` since start, as of the last tick (ns; 0 when empty).
    pub fn quantile_ns(&self, op: Op, q: f64) -> u64 {
        let h = &self.ops[op as usize].total;
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    }

    /// Renders the histogram, the exact summary and the last interval's p99 of every op that
    /// has seen a request, labelled with `shard`.
    pub fn render(&self, shard: usize, out: &mut String) {
        for op in Op::ALL {
            let h = &self.ops[op as usize];
            if h.count == 0 {
                continue;
            }
            let op_label = op.label();
            let labels = format!("shard=\"{shard}\",op=\"{op_label}\"");
            let cumulative = self.cumulative(op);
            for (le, n) in BOUND_LABELS.iter().chain(["+Inf"].iter()).zip(cumulative) {
                let _ = writeln!(
                    out,
                    "subzero_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let sum_s = h.sum_ns as f64 / 1e9;
            let _ = writeln!(
                out,
                "subzero_request_duration_seconds_sum{{{labels}}} {sum_s:.9}"
            );
            let _ = writeln!(
                out,
                "subzero_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
            if !h.total.is_empty() {
                for (q, q_label) in QUANTILES {
                    let v = h.total.value_at_quantile(q) as f64 / 1e9;
                    let _ = writeln!(
                        out,
                        "subzero_request_latency_seconds{{{labels},quantile=\"{q_label}\"}} {v:.9}"
                    );
                }
                let _ = writeln!(
                    out,
                    "subzero_request_latency_seconds_sum{{{labels}}} {sum_s:.9}"
                );
                let _ = writeln!(
                    out,
                    "subzero_request_latency_seconds_count{{{labels}}} {}",
                    h.total.len()
                );
            }
            let p99 = self.last[op as usize].p99_ns as f64 / 1e9;
            let _ = writeln!(out, "subzero_request_p99_seconds{{{labels}}} {p99:.9}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_index_is_the_first_bound_at_or_above() {
        for ns in (0..20_000u64).chain([
            u64::MAX,
            10_000_000_000,
            10_000_000_001,
            999_999,
            1_000_000,
            1_000_001,
        ]) {
            let expected = BOUNDS_NS.iter().position(|&b| ns <= b).unwrap_or(N_BOUNDS);
            assert_eq!(bucket_index(ns), expected, "{ns}");
        }
        for &b in &BOUNDS_NS {
            for ns in [b - 1, b, b + 1, b * 3 / 2] {
                let expected = BOUNDS_NS.iter().position(|&x| ns <= x).unwrap_or(N_BOUNDS);
                assert_eq!(bucket_index(ns), expected, "{ns}");
            }
        }
        for (label, ns) in BOUND_LABELS.iter().zip(BOUNDS_NS) {
            let s: f64 = label.parse().unwrap();
            assert!((s * 1e9 - ns as f64).abs() < 1e-3, "{label} vs {ns}");
        }
        assert!(BOUNDS_NS.windows(2).all(|w| w[1] >= 2 * w[0]));
    }

    #[test]
    fn known_distribution_gives_expected_buckets_and_quantiles() {
        let mut h = OpHistograms::new();
        // 1000 requests at 1..=1000 µs, uniformly.
        for us in 1..=1000u64 {
            h.record(Op::AuthenticateHit, us * 1000);
        }
        let last = h.tick();
        let idx = Op::AuthenticateHit as usize;
        assert_eq!(last[idx].count, 1000);
        assert!(
            (985_000..=995_000).contains(&last[idx].p99_ns),
            "{:?}",
            last[idx]
        );
        let c = h.cumulative(Op::AuthenticateHit);
        // le=1e-06: exactly 1 µs; 2e-06: 2; 5e-06: 5; ...; 0.0005: 500; 0.001: all 1000.
        let expected: [(usize, u64); 10] = [
            (0, 1),
            (1, 2),
            (2, 5),
            (3, 10),
            (4, 20),
            (5, 50),
            (6, 100),
            (7, 200),
            (8, 500),
            (9, 1000),
        ];
        for (i, n) in expected {
            assert_eq!(c[i], n, "le={}", BOUND_LABELS[i]);
        }
        assert_eq!(c[N_BOUNDS], 1000, "+Inf is the count");
        let p50 = h.quantile_ns(Op::AuthenticateHit, 0.5);
        assert!((495_000..=505_000).contains(&p50), "{p50}");
        let mut out = String::new();
        h.render(3, &mut out);
        for line in [
            "subzero_request_duration_seconds_bucket{shard=\"3\",op=\"authenticate_cache_hit\",le=\"0.0005\"} 500",
            "subzero_request_duration_seconds_bucket{shard=\"3\",op=\"authenticate_cache_hit\",le=\"+Inf\"} 1000",
            "subzero_request_duration_seconds_count{shard=\"3\",op=\"authenticate_cache_hit\"} 1000",
            "subzero_request_duration_seconds_sum{shard=\"3\",op=\"authenticate_cache_hit\"} 0.500500000",
            "subzero_request_latency_seconds_count{shard=\"3\",op=\"authenticate_cache_hit\"} 1000",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
        assert!(!out.contains("token_sign"), "empty ops are not rendered");
        // The next interval is empty: its p99 is 0, the totals stay.
        let last = h.tick();
        assert_eq!(last[idx], OpInterval::default());
        assert_eq!(h.cumulative(Op::AuthenticateHit)[N_BOUNDS], 1000);
    }

    #[test]
    fn op_discriminants_index_all() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
    }
}
