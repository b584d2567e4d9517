//! GCRA (the generic cell rate algorithm): one theoretical arrival time (TAT) per key, in a
//! bounded map. Decision code: takes `now_ms`, does no I/O.
//!
//! A limit of `rate` per second and `burst` is an emission interval `T = 1/rate` and a
//! tolerance of `burst · T`: a request of cost `c` is allowed when
//! `max(tat, now) + c·T − burst·T ≤ now`, and then moves the TAT by `c·T`. Over any interval
//! of length `t` a key is therefore allowed at most `burst + rate·t` units.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Lowest configurable rate, per second (one unit every 1000 s).
pub const MIN_RATE_PER_S: f64 = 0.001;
/// Highest configurable rate, per second.
pub const MAX_RATE_PER_S: f64 = 1_000_000.0;
/// Largest configurable burst; with `MIN_RATE_PER_S` the tolerance (`burst · T` in ns) still
/// fits in a `u64` (10^6 · 10^12 = 10^18).
pub const MAX_BURST: u32 = 1_000_000;

const NS_PER_S: u64 = 1_000_000_000;
const NS_PER_MS: u64 = 1_000_000;

const _: () = assert!((MAX_BURST as u64) * 1_000 * NS_PER_S < u64::MAX / 4);

/// A rate limit: an emission interval and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Nanoseconds per unit (`1/rate`, rounded up so the rate is never exceeded).
    interval_ns: u64,
    /// Units allowed at once.
    burst: u32,
}

impl Limit {
    /// `rate_per_s` units per second, up to `burst` at once. The config validated the ranges.
    pub fn new(rate_per_s: f64, burst: u32) -> Limit {
        assert!(
            (MIN_RATE_PER_S..=MAX_RATE_PER_S).contains(&rate_per_s),
            "rate {rate_per_s} out of range"
        );
        assert!(
            (1..=MAX_BURST).contains(&burst),
            "burst {burst} out of range"
        );
        let interval_ns = (NS_PER_S as f64 / rate_per_s).ceil() as u64;
        Limit {
            interval_ns: interval_ns.max(1),
            burst,
        }
    }

    /// Shard `shard_idx`'s share of a limit that `n_shards` shards enforce independently: the
    /// rate divided by `n_shards`, and the burst split so the shares add up to exactly `burst`
    /// (the first `burst % n_shards` shards get one more). Each share is at least 1, so when
    /// `burst < n_shards` the shares add up to `n_shards`.
    pub fn share(rate_per_s: f64, burst: u32, n_shards: usize, shard_idx: usize) -> Limit {
        assert!(n_shards >= 1 && shard_idx < n_shards);
        let n = n_shards as u32;
        let extra = u32::from((shard_idx as u32) < burst % n);
        let shard_burst = (burst / n + extra).max(1);
        let shard_rate = (rate_per_s / f64::from(n)).max(MIN_RATE_PER_S);
        Limit::new(shard_rate, shard_burst)
    }

    /// The burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Seconds a key takes to refill from empty to the whole burst (at least 1): the `w` of
    /// the policy the `RateLimit-Policy` header advertises with `q` = burst.
    pub fn window_s(&self) -> u64 {
        (self.tolerance_ns().div_ceil(NS_PER_S)).max(1)
    }

    fn tolerance_ns(&self) -> u64 {
        self.interval_ns * u64::from(self.burst)
    }
}

/// What one check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the units were granted (and taken).
    pub allowed: bool,
    /// Whole units still available right after this check.
    pub remaining: u32,
    /// Seconds until this cost would be allowed (0 when allowed), rounded up.
    pub retry_after_s: u64,
    /// Seconds until the key is back to its whole burst, rounded up.
    pub reset_after_s: u64,
}

/// A cost no check can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    /// A cost of zero asks for nothing.
    #[error("cost must be at least 1")]
    Zero,
    /// More than the burst would never be allowed, however long the caller waited.
    #[error("cost {cost} exceeds the rule's burst of {burst}, so it could never be allowed")]
    OverBurst {
        /// The requested cost.
        cost: u32,
        /// The rule's burst.
        burst: u32,
    },
}

/// The GCRA step for one key whose TAT is `tat_ns` (0 for a key never seen): the decision and
/// the new TAT when allowed.
pub fn decide(
    limit: Limit,
    tat_ns: u64,
    now_ns: u64,
    cost: u32,
) -> Result<(Decision, Option<u64>), CostError> {
    if cost == 0 {
        return Err(CostError::Zero);
    }
    if cost > limit.burst {
        return Err(CostError::OverBurst {
            cost,
            burst: limit.burst,
        });
    }
    let tolerance_ns = limit.tolerance_ns();
    let tat_ns = tat_ns.max(now_ns);
    let new_tat_ns = tat_ns + u64::from(cost) * limit.interval_ns;
    let allow_at_ns = new_tat_ns - tolerance_ns.min(new_tat_ns);
    let remaining_of = |tat: u64| -> u32 {
        let used_ns = tat - now_ns;
        (tolerance_ns.saturating_sub(used_ns) / limit.interval_ns) as u32
    };
    if allow_at_ns > now_ns {
        let decision = Decision {
            allowed: false,
            remaining: remaining_of(tat_ns),
            retry_after_s: (allow_at_ns - now_ns).div_ceil(NS_PER_S).max(1),
            reset_after_s: (tat_ns - now_ns).div_ceil(NS_PER_S),
        };
        debug_assert!(decision.remaining < cost);
        return Ok((decision, None));
    }
    let decision = Decision {
        allowed: true,
        remaining: remaining_of(new_tat_ns),
        retry_after_s: 0,
        reset_after_s: (new_tat_ns - now_ns).div_ceil(NS_PER_S),
    };
    debug_assert!(decision.remaining < limit.burst);
    Ok((decision, Some(new_tat_ns)))
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tat_ns: u64,
    /// Refusals since the key was last full (its offence window).
    rejections: u32,
    /// Whether this offence window was reported already.
    reported: bool,
}

/// What [`GcraMap::check`] decided, and what the caller should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The decision.
    pub decision: Decision,
    /// True exactly once per offence window, when the key's refusals reached `report_after`.
    pub report: bool,
    /// False when the map was full and the key is not tracked (fail open: allowed).
    pub tracked: bool,
}

/// TATs per key, at most `max_keys` of them (per shard).
pub struct GcraMap<K> {
    entries: HashMap<K, Entry>,
    max_keys: usize,
    last_evict_ms: u64,
    /// Checks of keys not tracked because the map was full (they were allowed).
    pub untracked: u64,
}

impl<K: Hash + Eq> GcraMap<K> {
    /// An empty map that holds at most `max_keys` keys.
    pub fn new(max_keys: usize) -> GcraMap<K> {
        assert!(max_keys >= 1);
        GcraMap {
            entries: HashMap::new(),
            max_keys,
            last_evict_ms: 0,
            untracked: 0,
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks (and, when allowed, takes) `cost` units for `key` under `limit`. A key seen for
    /// the first time while the map is full is allowed and counted in `untracked`, after at
    /// most one eviction scan a second of keys whose TAT has passed (they hold no state a new
    /// entry would not).
    pub fn check<Q>(
        &mut self,
        key: &Q,
        limit: Limit,
        cost: u32,
        now_ms: u64,
        report_after: u32,
    ) -> Result<Checked, CostError>
    where
        K: Borrow<Q> + From<<Q as ToOwned>::Owned>,
        Q: Hash + Eq + ToOwned + ?Sized,
    {
        let now_ns = now_ms * NS_PER_MS;
        if let Some(entry) = self.entries.get_mut(key) {
            return step(entry, limit, cost, now_ns, report_after);
        }
        // A new key starts full: decide first, so a refused cost never takes a slot.
        let (decision, _) = decide(limit, 0, now_ns, cost)?;
        if self.entries.len() >= self.max_keys {
            // The scan is O(map): at most once a second, so a flood of new keys cannot turn
            // it into a CPU sink.
            if now_ms.saturating_sub(self.last_evict_ms) >= 1000 {
                self.last_evict_ms = now_ms;
                self.entries.retain(|_, e| e.tat_ns > now_ns);
            }
            if self.entries.len() >= self.max_keys {
                self.untracked += 1;
                return Ok(Checked {
                    decision,
                    report: false,
                    tracked: false,
                });
            }
        }
        let mut entry = Entry {
            tat_ns: 0,
            rejections: 0,
            reported: false,
        };
        let checked = step(&mut entry, limit, cost, now_ns, report_after)?;
        self.entries.insert(K::from(key.to_owned()), entry);
        debug_assert!(self.entries.len() <= self.max_keys);
        Ok(checked)
    }

    /// Gives back `cost` units a check took for a request that was not served after all.
    pub fn refund<Q>(&mut self, key: &Q, limit: Limit, cost: u32)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.tat_ns = entry
                .tat_ns
                .saturating_sub(u64::from(cost) * limit.interval_ns);
        }
    }
}

fn step(
    entry: &mut Entry,
    limit: Limit,
    cost: u32,
    now_ns: u64,
    report_after: u32,
) -> Result<Checked, CostError> {
    let was_full = entry.tat_ns <= now_ns;
    let (decision, new_tat_ns) = decide(limit, entry.tat_ns, now_ns, cost)?;
    if let Some(tat_ns) = new_tat_ns {
        entry.tat_ns = tat_ns;
        if was_full {
            // Full again: the offence window is over.
            entry.rejections = 0;
            entry.reported = false;
        }
        return Ok(Checked {
            decision,
            report: false,
            tracked: true,
        });
    }
    entry.rejections = entry.rejections.saturating_add(1);
    let report = entry.rejections >= report_after.max(1) && !entry.reported;
    entry.reported |= report;
    Ok(Checked {
        decision,
        report,
        tracked: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(m: &mut GcraMap<Box<str>>, key: &str, limit: Limit, cost: u32, now_ms: u64) -> bool {
        m.check(key, limit, cost, now_ms, u32::MAX)
            .unwrap()
            .decision
            .allowed
    }

    #[test]
    fn at_below_and_above_the_burst() {
        let limit = Limit::new(10.0, 20);
        let mut m = GcraMap::<Box<str>>::new(16);
        for i in 0..20u32 {
            let c = m.check("k", limit, 1, 1000, u32::MAX).unwrap();
            assert!(c.decision.allowed, "request {i} of the burst");
            assert_eq!(c.decision.remaining, 19 - i, "counts down");
            assert_eq!(c.decision.retry_after_s, 0);
        }
        let refused = m.check("k", limit, 1, 1000, u32::MAX).unwrap().decision;
        assert_eq!(
            refused,
            Decision {
                allowed: false,
                remaining: 0,
                retry_after_s: 1, // 100 ms, rounded up to a whole second
                reset_after_s: 2, // 20 units at 10/s
            }
        );
        assert!(
            allowed(&mut m, "other", limit, 1, 1000),
            "keys are independent"
        );
    }

    #[test]
    fn refills_over_time() {
        let limit = Limit::new(10.0, 5);
        let mut m = GcraMap::<Box<str>>::new(16);
        for _ in 0..5 {
            assert!(allowed(&mut m, "k", limit, 1, 0));
        }
        assert!(!allowed(&mut m, "k", limit, 1, 0));
        assert!(!allowed(&mut m, "k", limit, 1, 99), "not before 100 ms");
        assert!(
            allowed(&mut m, "k", limit, 1, 100),
            "one unit back after 100 ms"
        );
        assert!(!allowed(&mut m, "k", limit, 1, 100));
        // Half a second later the whole burst is back, and no more.
        let n = (0..10)
            .filter(|_| allowed(&mut m, "k", limit, 1, 600))
            .count();
        assert_eq!(n, 5);
    }

    #[test]
    fn cost_takes_several_units_and_more_than_the_burst_is_an_error() {
        let limit = Limit::new(1.0, 10);
        let mut m = GcraMap::<Box<str>>::new(16);
        let c = m.check("k", limit, 4, 0, u32::MAX).unwrap().decision;
        assert!(c.allowed);
        assert_eq!(c.remaining, 6);
        assert_eq!(c.reset_after_s, 4);
        assert!(allowed(&mut m, "k", limit, 6, 0), "exactly the rest");
        let refused = m.check("k", limit, 3, 0, u32::MAX).unwrap().decision;
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_s, 3, "three units at 1/s");
        assert_eq!(
            m.check("k", limit, 11, 0, u32::MAX),
            Err(CostError::OverBurst {
                cost: 11,
                burst: 10
            })
        );
        assert_eq!(m.check("k", limit, 0, 0, u32::MAX), Err(CostError::Zero));
        assert_eq!(
            m.check("new", limit, 11, 0, u32::MAX),
            Err(CostError::OverBurst {
                cost: 11,
                burst: 10
            }),
            "refused before a slot is taken"
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn never_more_than_burst_plus_rate_times_elapsed() {
        let limit = Limit::new(3.0, 7);
        let mut m = GcraMap::<Box<str>>::new(16);
        let mut n_allowed = 0u64;
        for now_ms in (0..10_000).step_by(7) {
            for _ in 0..3 {
                n_allowed += u64::from(allowed(&mut m, "k", limit, 1, now_ms));
            }
            let bound = 7 + (3 * now_ms) / 1000;
            assert!(n_allowed <= bound, "{n_allowed} > {bound} at {now_ms} ms");
        }
        assert!(
            n_allowed >= 7 + 3 * 9,
            "and it does allow the rate: {n_allowed}"
        );
    }

    #[test]
    fn the_map_is_bounded_fails_open_and_evicts_refilled_keys() {
        let limit = Limit::new(1.0, 1);
        let mut m = GcraMap::<Box<str>>::new(2);
        assert!(allowed(&mut m, "a", limit, 1, 0));
        assert!(allowed(&mut m, "b", limit, 1, 0));
        let c = m.check("c", limit, 1, 0, u32::MAX).unwrap();
        assert!(c.decision.allowed && !c.tracked, "full: fails open");
        assert_eq!(m.untracked, 1);
        assert!(
            !allowed(&mut m, "a", limit, 1, 500),
            "a tracked key still limits"
        );
        // After their TATs pass, a and b are evicted and c is tracked.
        let c = m.check("c", limit, 1, 5000, u32::MAX).unwrap();
        assert!(c.tracked);
        assert_eq!(m.untracked, 1);
        assert!(m.len() <= 2);
        // A flood of new keys scans at most once a second.
        m.check("d", limit, 1, 5001, u32::MAX).unwrap();
        for i in 0..10 {
            m.check(format!("x{i}").as_str(), limit, 1, 5002, u32::MAX)
                .unwrap();
        }
        assert!(m.len() <= 2);
    }

    #[test]
    fn reports_a_repeat_offender_once_per_offence_window() {
        let limit = Limit::new(1.0, 1);
        let mut m = GcraMap::<std::net::IpAddr>::new(16);
        let ip = std::net::IpAddr::from([10, 0, 0, 1]);
        assert!(m.check(&ip, limit, 1, 0, 3).unwrap().decision.allowed);
        let reports: Vec<bool> = (0..6)
            .map(|_| m.check(&ip, limit, 1, 0, 3).unwrap().report)
            .collect();
        assert_eq!(reports, vec![false, false, true, false, false, false]);
        // Full again after the TAT: a new window, reported again after 3 refusals.
        assert!(m.check(&ip, limit, 1, 2000, 3).unwrap().decision.allowed);
        let reports: Vec<bool> = (0..3)
            .map(|_| m.check(&ip, limit, 1, 2000, 3).unwrap().report)
            .collect();
        assert_eq!(reports, vec![false, false, true]);
    }

    #[test]
    fn refund_gives_the_units_back() {
        let limit = Limit::new(1.0, 1);
        let mut m = GcraMap::<Box<str>>::new(4);
        assert!(allowed(&mut m, "k", limit, 1, 0));
        m.refund("k", limit, 1);
        assert!(allowed(&mut m, "k", limit, 1, 0));
        assert!(!allowed(&mut m, "k", limit, 1, 0));
    }

    #[test]
    fn shares_add_up_to_the_limit() {
        for n_shards in 1..=8 {
            for burst in [1u32, 2, 3, 7, 20, 101] {
                let shares: Vec<Limit> = (0..n_shards)
                    .map(|i| Limit::share(10.0, burst, n_shards, i))
                    .collect();
                let total: u32 = shares.iter().map(Limit::burst).sum();
                assert_eq!(total, burst.max(n_shards as u32), "{burst} over {n_shards}");
                assert!(shares.iter().all(|s| s.burst >= 1));
                // The rates add up to at most 10/s (intervals rounded up).
                let rate: f64 = shares.iter().map(|s| 1e9 / s.interval_ns as f64).sum();
                assert!(rate <= 10.0 + 1e-9, "{rate}");
            }
        }
        assert_eq!(Limit::new(10.0, 20).window_s(), 2);
        assert_eq!(Limit::new(0.5, 1).window_s(), 2);
        assert_eq!(Limit::new(1000.0, 1).window_s(), 1, "at least a second");
    }
}
