//! Rate limits as decision code: GCRA (`gcra.rs`), the rules of `[[ratelimit.rules]]`
//! (`rules.rs`), the per-key limiter a key's owner shard runs for `POST /v1/ratelimit/check`
//! and the per-source limiter every shard runs on every request. No I/O; every function takes
//! `now_ms`.

pub mod gcra;
pub mod rules;

use std::net::IpAddr;

pub use gcra::{CostError, Decision, GcraMap, Limit};
pub use rules::{KeyRule, RouteClass, RouteRule};

/// Longest key `POST /v1/ratelimit/check` accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The shard that owns `key`'s state among `n_shards`: a fixed (unseeded) xxh3 of its bytes,
/// so every shard of the process computes the same owner.
pub fn owner_of(key: &[u8], n_shards: usize) -> usize {
    assert!(n_shards >= 1);
    (xxhash_rust::xxh3::xxh3_64(key) % n_shards as u64) as usize
}

/// The answer to one key check, as the owner computed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVerdict {
    /// The numbers; `allowed` is the answer the caller gets (always true under a shadow rule).
    pub decision: Decision,
    /// Index of the matching rule in the config, `None` when no rule matched (allowed).
    pub rule_idx: Option<usize>,
    /// The matching rule is in shadow mode: evaluated and counted, never enforced.
    pub shadow: bool,
    /// A shadow rule would have denied this check.
    pub shadow_denied: bool,
}

/// Counters of one rule on one shard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RuleCounts {
    /// Checks allowed.
    pub allowed: u64,
    /// Checks denied.
    pub denied: u64,
    /// Checks a shadow rule would have denied (and allowed).
    pub shadow_denied: u64,
}

/// The key limiter of one shard: the state of the keys this shard owns.
pub struct KeyLimiter {
    rules: Vec<KeyRule>,
    limits: Vec<Limit>,
    map: GcraMap<Box<str>>,
    /// Per rule, index as in `rules`.
    pub counts: Vec<RuleCounts>,
    /// Checks of keys no rule matched (always allowed).
    pub unmatched: u64,
}

impl KeyLimiter {
    /// A limiter over `rules` (first matching prefix wins) holding at most `max_keys` keys.
    pub fn new(rules: &[KeyRule], max_keys: usize) -> KeyLimiter {
        KeyLimiter {
            limits: rules
                .iter()
                .map(|r| Limit::new(r.rate_per_s, r.burst))
                .collect(),
            counts: vec![RuleCounts::default(); rules.len()],
            rules: rules.to_vec(),
            map: GcraMap::new(max_keys),
            unmatched: 0,
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[KeyRule] {
        &self.rules
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Checks not tracked because the map was full (allowed).
    pub fn untracked(&self) -> u64 {
        self.map.untracked
    }

    /// Checks `cost` units for `key` (this shard must own it). A key no rule matches is
    /// allowed, as Envoy answers OK for a descriptor no rule names.
    pub fn check(&mut self, key: &str, cost: u32, now_ms: u64) -> Result<KeyVerdict, CostError> {
        let Some(rule_idx) = rules::match_key(&self.rules, key) else {
            if cost == 0 {
                return Err(CostError::Zero);
            }
            self.unmatched += 1;
            return Ok(KeyVerdict {
                decision: Decision {
                    allowed: true,
                    remaining: 0,
                    retry_after_s: 0,
                    reset_after_s: 0,
                },
                rule_idx: None,
                shadow: false,
                shadow_denied: false,
            });
        };
        let limit = self.limits[rule_idx];
        let checked = self.map.check(key, limit, cost, now_ms, u32::MAX)?;
        Ok(self.settle(rule_idx, checked.decision))
    }

    /// The verdict of rule `rule_idx`'s decision (local, or the fleet's), counted under the
    /// rule; a shadow rule's denial is counted and allowed.
    pub fn settle(&mut self, rule_idx: usize, mut decision: Decision) -> KeyVerdict {
        let shadow = self.rules[rule_idx].shadow;
        let counts = &mut self.counts[rule_idx];
        let shadow_denied = shadow && !decision.allowed;
        if decision.allowed {
            counts.allowed += 1;
        } else if shadow {
            counts.shadow_denied += 1;
            counts.allowed += 1;
            decision.allowed = true;
            decision.retry_after_s = 0;
        } else {
            counts.denied += 1;
        }
        KeyVerdict {
            decision,
            rule_idx: Some(rule_idx),
            shadow,
            shadow_denied,
        }
    }
}

/// What the per-source limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceVerdict {
    /// Serve it (no rule for its route class, within the limit, or a shadow rule).
    Allow,
    /// Refuse it with 429.
    Limit {
        /// The rule that refused it.
        route: RouteClass,
        /// The numbers (this shard's share).
        decision: Decision,
        /// The source crossed its report threshold: put it on the kernel blocklist.
        report: bool,
    },
}

/// A route rule as one shard enforces it.
struct SourceRule {
    rule: RouteRule,
    /// This shard's share of the limit.
    share: Limit,
    map: GcraMap<IpAddr>,
    limited: u64,
    shadow_denied: u64,
}

/// The per-source limiter of one shard: for each route class with a rule (or the default
/// rule), a GCRA per source address at this shard's share of the limit, so the shards
/// together never allow a source more than the limit.
pub struct SourceLimiter {
    /// Index into `rules` by `RouteClass as usize`: the class's own rule, else the default.
    by_class: [Option<usize>; RouteClass::ALL.len()],
    rules: Vec<SourceRule>,
    report_after: u32,
}

impl SourceLimiter {
    /// Shard `shard_idx` of `n_shards`; each map holds at most `max_sources` addresses.
    pub fn new(
        route_rules: &[RouteRule],
        n_shards: usize,
        shard_idx: usize,
        max_sources: usize,
        report_after: u32,
    ) -> SourceLimiter {
        let rules: Vec<SourceRule> = route_rules
            .iter()
            .map(|r| SourceRule {
                rule: r.clone(),
                share: Limit::share(r.rate_per_s, r.burst, n_shards, shard_idx),
                map: GcraMap::new(max_sources),
                limited: 0,
                shadow_denied: 0,
            })
            .collect();
        let find = |class: RouteClass| rules.iter().position(|r| r.rule.route == class);
        let default_idx = find(RouteClass::Default);
        let mut by_class = [None; RouteClass::ALL.len()];
        for class in RouteClass::ALL {
            by_class[class as usize] = find(class).or(default_idx);
        }
        SourceLimiter {
            by_class,
            rules,
            report_after: report_after.max(1),
        }
    }

    /// Whether any rule is configured.
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The rule that applies to `class`, if any.
    pub fn rule_for(&self, class: RouteClass) -> Option<&RouteRule> {
        self.by_class[class as usize].map(|i| &self.rules[i].rule)
    }

    /// Takes one unit for a request of `class` from `ip`.
    pub fn check(&mut self, class: RouteClass, ip: IpAddr, now_ms: u64) -> SourceVerdict {
        let Some(idx) = self.by_class[class as usize] else {
            return SourceVerdict::Allow;
        };
        let r = &mut self.rules[idx];
        let Ok(checked) = r.map.check(&ip, r.share, 1, now_ms, self.report_after) else {
            return SourceVerdict::Allow; // a cost of 1 always fits a burst ≥ 1
        };
        if checked.decision.allowed {
            return SourceVerdict::Allow;
        }
        if r.rule.shadow {
            r.shadow_denied += 1;
            return SourceVerdict::Allow;
        }
        r.limited += 1;
        SourceVerdict::Limit {
            route: r.rule.route,
            decision: checked.decision,
            report: checked.report,
        }
    }

    /// Gives back the unit `check` took for a request that was not served after all.
    pub fn refund(&mut self, class: RouteClass, ip: IpAddr) {
        if let Some(idx) = self.by_class[class as usize] {
            let r = &mut self.rules[idx];
            r.map.refund(&ip, r.share, 1);
        }
    }

    /// Sources tracked over every rule.
    pub fn n_tracked(&self) -> usize {
        self.rules.iter().map(|r| r.map.len()).sum()
    }

    /// Per rule: `(route label, limited, shadow denied, untracked)`.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64, u64, u64)> + '_ {
        self.rules.iter().map(|r| {
            (
                r.rule.route.label(),
                r.limited,
                r.shadow_denied,
                r.map.untracked,
            )
        })
    }
}

/// Rule labels for metrics: a key rule's prefix, or `none`.
pub fn rule_label(rules: &[KeyRule], rule_idx: Option<usize>) -> &str {
    rule_idx
        .and_then(|i| rules.get(i))
        .map_or("none", |r| r.key_prefix.as_str())
}

#[cfg(test)]
mod tests;
