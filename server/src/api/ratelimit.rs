//! Budgets of one shard for costly work: a token bucket per key (a source IP, or a token
//! subject) in a bounded map, for failed verifications and revocations. A source that keeps
//! hitting one is reported to the control plane, which blocks it in the kernel. (The request
//! rate limits are GCRA, in `crate::ratelimit`.)
//!
//! Decision code: takes `now_ms`, does no I/O.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// Refuse with 429; `retry_after_s` until a token is back.
    Limit {
        /// Seconds until the next token.
        retry_after_s: u64,
        /// True exactly once per offence window when the source crossed the report threshold.
        report: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens × 1000, so refills below one token per millisecond are not lost.
    milli_tokens: u64,
    last_ms: u64,
    rejections: u32,
    reported: bool,
}

/// Token buckets per source IP.
pub type IpLimiter = KeyedLimiter<IpAddr>;

/// Token buckets per key.
pub struct KeyedLimiter<K> {
    rps: u64,
    burst: u64,
    max_ips: usize,
    report_after: u32,
    buckets: HashMap<K, Bucket>,
    last_evict_ms: u64,
    /// Sources not tracked because the map was full (they are served).
    pub untracked: u64,
}

impl<K: Hash + Eq + Copy> KeyedLimiter<K> {
    /// `rps` tokens per second, `burst` at most (0: `rps`); `rps == 0` disables the limiter.
    pub fn new(rps: u32, burst: u32, max_ips: usize, report_after: u32) -> KeyedLimiter<K> {
        KeyedLimiter {
            rps: u64::from(rps),
            // No burst configured: one second's worth.
            burst: u64::from(if burst == 0 { rps } else { burst }).max(1),
            max_ips,
            report_after: report_after.max(1),
            buckets: HashMap::new(),
            last_evict_ms: 0,
            untracked: 0,
        }
    }

    /// `(quota, window_s)` of the policy this limiter enforces, for the `RateLimit-Policy`
    /// header: `burst` units, back in full within `window_s` seconds.
    pub fn policy(&self) -> (u64, u64) {
        (self.burst, self.burst.div_ceil(self.rps.max(1)))
    }

    /// Whether `ip` has no whole token now, without taking one (refills first). A source it
    /// does not track has a full bucket.
    pub fn exhausted(&mut self, ip: K, now_ms: u64) -> bool {
        let (rps, burst) = (self.rps, self.burst);
        if rps == 0 {
            return false;
        }
        let Some(bucket) = self.buckets.get_mut(&ip) else {
            return false;
        };
        let elapsed_ms = now_ms.saturating_sub(bucket.last_ms);
        bucket.milli_tokens = (bucket.milli_tokens + elapsed_ms * rps).min(burst * 1000);
        bucket.last_ms = now_ms;
        bucket.milli_tokens < 1000
    }

    /// Takes one token for `ip`.
    pub fn check(&mut self, ip: K, now_ms: u64) -> Verdict {
        if self.rps == 0 {
            return Verdict::Allow;
        }
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_ips {
            // The eviction scan is O(map), so it runs at most once a second: a flood of new
            // source addresses cannot turn it into a CPU sink.
            if now_ms.saturating_sub(self.last_evict_ms) >= 1000 {
                self.last_evict_ms = now_ms;
                self.evict_full(now_ms);
            }
            if self.buckets.len() >= self.max_ips {
                self.untracked += 1;
                return Verdict::Allow;
            }
        }
        let (rps, burst, report_after) = (self.rps, self.burst, self.report_after);
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            milli_tokens: burst * 1000,
            last_ms: now_ms,
            rejections: 0,
            reported: false,
        });
        let elapsed_ms = now_ms.saturating_sub(bucket.last_ms);
        bucket.milli_tokens = (bucket.milli_tokens + elapsed_ms * rps).min(burst * 1000);
        bucket.last_ms = now_ms;
        if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            if bucket.milli_tokens == burst * 1000 - 1000 {
                bucket.rejections = 0; // a full bucket again: the offence window is over
                bucket.reported = false;
            }
            return Verdict::Allow;
        }
        bucket.rejections = bucket.rejections.saturating_add(1);
        let report = bucket.rejections >= report_after && !bucket.reported;
        bucket.reported |= report;
        let missing = 1000 - bucket.milli_tokens;
        Verdict::Limit {
            retry_after_s: (missing / rps).div_ceil(1000).max(1),
            report,
        }
    }

    /// Drops buckets that have refilled completely: they carry no state worth keeping.
    fn evict_full(&mut self, now_ms: u64) {
        let (rps, burst) = (self.rps, self.burst);
        self.buckets
            .retain(|_, b| b.milli_tokens + now_ms.saturating_sub(b.last_ms) * rps < burst * 1000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn exhausted_peeks_without_taking() {
        let mut l = IpLimiter::new(10, 2, 16, 3);
        assert!(
            !l.exhausted(ip(1), 0),
            "an unknown source has a full bucket"
        );
        assert_eq!(l.check(ip(1), 0), Verdict::Allow);
        assert!(!l.exhausted(ip(1), 0));
        assert!(!l.exhausted(ip(1), 0), "peeking takes nothing");
        assert_eq!(l.check(ip(1), 0), Verdict::Allow);
        assert!(l.exhausted(ip(1), 0));
        assert!(l.exhausted(ip(1), 99));
        assert!(
            !l.exhausted(ip(1), 100),
            "one token back after 100 ms at 10/s"
        );
        assert!(!IpLimiter::new(0, 0, 16, 3).exhausted(ip(1), 0), "disabled");
    }

    #[test]
    fn allows_burst_then_limits_then_refills() {
        let mut l = IpLimiter::new(10, 5, 16, 3);
        for _ in 0..5 {
            assert_eq!(l.check(ip(1), 0), Verdict::Allow);
        }
        assert_eq!(
            l.check(ip(1), 0),
            Verdict::Limit {
                retry_after_s: 1,
                report: false
            }
        );
        assert_eq!(
            l.check(ip(2), 0),
            Verdict::Allow,
            "other sources are independent"
        );
        // 100 ms at 10/s is one token.
        assert_eq!(l.check(ip(1), 100), Verdict::Allow);
        assert!(matches!(l.check(ip(1), 100), Verdict::Limit { .. }));
    }

    #[test]
    fn reports_a_repeat_offender_once() {
        let mut l = IpLimiter::new(1, 1, 16, 3);
        assert_eq!(l.check(ip(1), 0), Verdict::Allow);
        let reports: Vec<bool> = (0..6)
            .map(|_| match l.check(ip(1), 0) {
                Verdict::Limit { report, .. } => report,
                Verdict::Allow => panic!("allowed over the limit"),
            })
            .collect();
        assert_eq!(reports, vec![false, false, true, false, false, false]);
    }

    #[test]
    fn map_is_bounded_and_fails_open() {
        let mut l = IpLimiter::new(1, 1, 2, 3);
        assert_eq!(l.check(ip(1), 0), Verdict::Allow);
        assert_eq!(l.check(ip(2), 0), Verdict::Allow);
        assert_eq!(l.check(ip(3), 0), Verdict::Allow);
        assert_eq!(l.untracked, 1);
        assert_eq!(l.buckets.len(), 2);
        // Once the others refill they are evicted and the new source is tracked.
        assert_eq!(l.check(ip(3), 5000), Verdict::Allow);
        assert!(l.buckets.len() <= 2);
        assert_eq!(l.untracked, 1, "ip 3 is tracked now");
        // A flood of new sources scans for evictions at most once a second.
        for n in 10..20 {
            l.check(ip(n), 5000);
        }
        assert_eq!(l.untracked, 1 + 10 - 1);
    }

    #[test]
    fn disabled_allows_everything() {
        let mut l = IpLimiter::new(0, 0, 2, 3);
        for n in 0..10 {
            assert_eq!(l.check(ip(n), 0), Verdict::Allow);
        }
    }
}
