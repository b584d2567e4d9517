//! The degradation detector: decision code over one shard's one-second intervals (no I/O, no
//! clock; the shard's tick feeds it), raising a reason after `raise_after` consecutive bad
//! intervals and clearing it after `clear_after` consecutive good ones (hysteresis).
//!
//! Reasons: an op's p99 over its SLO (with at least `min_samples` requests in the interval),
//! the shard's CPU over the saturation threshold, its inbox over the high-water mark.

use super::hist::OpInterval;
use super::Op;

/// Number of reasons: one per op, CPU, queue.
pub const N_REASONS: usize = Op::ALL.len() + 2;

/// What the detector watches (from `[monitor]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// p99 SLO per op in nanoseconds (index = `Op as usize`; 0: none).
    pub slo_p99_ns: [u64; Op::ALL.len()],
    /// Fewest requests of an op in an interval for its p99 to count.
    pub min_samples: u64,
    /// CPU share (0..1) of the shard thread at or over which the interval is saturated.
    pub cpu_saturation: f64,
    /// Inbox depth at or over which the interval is bad.
    pub queue_high_water: usize,
    /// Consecutive bad intervals that raise a reason (K).
    pub raise_after: u32,
    /// Consecutive good intervals that clear it.
    pub clear_after: u32,
}

/// One interval of one shard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Per op (index = `Op as usize`).
    pub ops: [OpInterval; Op::ALL.len()],
    /// CPU share of the shard thread over the interval.
    pub cpu: f64,
    /// The shard's inbox depth at the end of the interval.
    pub queue_depth: usize,
}

impl Default for Interval {
    fn default() -> Self {
        Interval {
            ops: [OpInterval::default(); Op::ALL.len()],
            cpu: 0.0,
            queue_depth: 0,
        }
    }
}

/// A reason being raised or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Index of the reason (see [`reason_label`]).
    pub reason: usize,
    /// Raised (true) or cleared.
    pub raised: bool,
}

/// The `reason` label: `slo_<op>`, `cpu_saturated` or `queue_high`.
pub fn reason_label(reason: usize) -> String {
    match reason {
        r if r < Op::ALL.len() => format!("slo_{}", Op::ALL[r].label()),
        r if r == Op::ALL.len() => "cpu_saturated".into(),
        _ => "queue_high".into(),
    }
}

/// Streaks and flags of one shard.
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    bad_streak: [u32; N_REASONS],
    good_streak: [u32; N_REASONS],
    raised: [bool; N_REASONS],
}

impl Detector {
    /// Nothing raised.
    pub fn new(config: DetectorConfig) -> Detector {
        debug_assert!(config.raise_after >= 1 && config.clear_after >= 1);
        Detector {
            config,
            bad_streak: [0; N_REASONS],
            good_streak: [0; N_REASONS],
            raised: [false; N_REASONS],
        }
    }

    /// Whether each reason is bad in `iv`.
    fn bad(&self, iv: &Interval) -> [bool; N_REASONS] {
        let mut bad = [false; N_REASONS];
        for (idx, op) in iv.ops.iter().enumerate() {
            let slo = self.config.slo_p99_ns[idx];
            bad[idx] = slo > 0 && op.count >= self.config.min_samples && op.p99_ns > slo;
        }
        bad[Op::ALL.len()] = iv.cpu >= self.config.cpu_saturation;
        bad[Op::ALL.len() + 1] = iv.queue_depth >= self.config.queue_high_water;
        bad
    }

    /// Takes one interval; returns the reasons raised or cleared by it.
    pub fn observe(&mut self, iv: &Interval) -> Vec<Change> {
        let mut changes = Vec::new();
        for (reason, bad) in self.bad(iv).into_iter().enumerate() {
            if bad {
                self.bad_streak[reason] = self.bad_streak[reason].saturating_add(1);
                self.good_streak[reason] = 0;
            } else {
                self.good_streak[reason] = self.good_streak[reason].saturating_add(1);
                self.bad_streak[reason] = 0;
            }
            let raised = &mut self.raised[reason];
            if !*raised && self.bad_streak[reason] >= self.config.raise_after {
                *raised = true;
                changes.push(Change {
                    reason,
                    raised: true,
                });
            } else if *raised && self.good_streak[reason] >= self.config.clear_after {
                *raised = false;
                changes.push(Change {
                    reason,
                    raised: false,
                });
            }
        }
        changes
    }

    /// Whether `reason` is raised.
    pub fn is_raised(&self, reason: usize) -> bool {
        self.raised[reason]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DetectorConfig {
        let mut slo_p99_ns = [0; Op::ALL.len()];
        slo_p99_ns[Op::AuthenticateHit as usize] = 1_000_000;
        DetectorConfig {
            slo_p99_ns,
            min_samples: 10,
            cpu_saturation: 0.95,
            queue_high_water: 1000,
            raise_after: 3,
            clear_after: 5,
        }
    }

    fn slow(p99_ns: u64, count: u64) -> Interval {
        let mut iv = Interval::default();
        iv.ops[Op::AuthenticateHit as usize] = OpInterval { count, p99_ns };
        iv
    }

    const SLO: usize = Op::AuthenticateHit as usize;

    #[test]
    fn fires_at_k_not_before_and_clears_only_after_the_hysteresis() {
        let mut d = Detector::new(config());
        // K − 1 bad intervals: nothing.
        for _ in 0..2 {
            assert!(d.observe(&slow(2_000_000, 100)).is_empty());
        }
        // A good one resets the streak.
        assert!(d.observe(&slow(500_000, 100)).is_empty());
        for _ in 0..2 {
            assert!(d.observe(&slow(2_000_000, 100)).is_empty());
        }
        assert_eq!(
            d.observe(&slow(2_000_000, 100)),
            vec![Change {
                reason: SLO,
                raised: true
            }]
        );
        assert!(d.is_raised(SLO));
        assert_eq!(reason_label(SLO), "slo_authenticate_cache_hit");
        // Still bad: no second raise.
        assert!(d.observe(&slow(2_000_000, 100)).is_empty());
        // Good for clear_after − 1 intervals (idle ones count as good), a bad one in between
        // restarts the count.
        for _ in 0..4 {
            assert!(d.observe(&Interval::default()).is_empty());
        }
        assert!(d.observe(&slow(2_000_000, 100)).is_empty());
        for _ in 0..4 {
            assert!(d.observe(&slow(100, 100)).is_empty());
            assert!(d.is_raised(SLO));
        }
        assert_eq!(
            d.observe(&slow(100, 100)),
            vec![Change {
                reason: SLO,
                raised: false
            }]
        );
        assert!(!d.is_raised(SLO));
    }

    #[test]
    fn too_few_samples_cpu_and_queue() {
        let mut d = Detector::new(config());
        for _ in 0..10 {
            assert!(
                d.observe(&slow(9_000_000, 9)).is_empty(),
                "below min_samples"
            );
        }
        let hot = Interval {
            cpu: 0.97,
            queue_depth: 1000,
            ..Interval::default()
        };
        d.observe(&hot);
        d.observe(&hot);
        let changes = d.observe(&hot);
        let labels: Vec<String> = changes.iter().map(|c| reason_label(c.reason)).collect();
        assert_eq!(labels, ["cpu_saturated", "queue_high"]);
        // An op without an SLO never fires.
        let mut iv = Interval::default();
        iv.ops[Op::Other as usize] = OpInterval {
            count: 1000,
            p99_ns: u64::MAX,
        };
        let mut d = Detector::new(config());
        for _ in 0..10 {
            assert!(d.observe(&iv).is_empty());
        }
    }
}
