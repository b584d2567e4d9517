//! Shard-local pool of pre-signed tokens per (client, audience, scope set).
//!
//! `POST /v1/token` pops a ready token with [`TokenPool::take`] instead of signing on the
//! request path; background work calls [`TokenPool::refill`] under a per-iteration signing
//! budget. The pool never hands out a token older than `freshness_s` or with less than
//! `min_remaining_s` of lifetime left, and sizes itself per key from measured demand.
//!
//! Demand: each key keeps an exponentially weighted average of takes per second (updated as
//! `now_s` advances, so the estimate does not depend on how often `refill` runs). A key's
//! target is that rate times [`TARGET_HORIZON_S`] (including the current second's takes, so a
//! burst is seen at once), clamped to `[min_per_key, max_per_key]`. Idle keys decay towards
//! `min_per_key`; tokens above the target are dropped at the next refill.
//!
//! Freshness: tokens are handed out oldest first, so a hot key turns its tokens over long
//! before `freshness_s`. A token that does reach `freshness_s` is dropped (by `take` or
//! `refill`) and replaced by the next refill; with refill running every background tick, the
//! gap is one tick. (Replacing tokens ahead of `freshness_s` would close it at the cost of
//! signing more; not done yet.)
//!
//! Architecture Invariant: no I/O, no clock, no signing of its own (the caller passes the
//! signer); `take` allocates nothing on a hit; every collection is bounded by [`PoolLimits`].

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

/// Seconds of demand a key's pool aims to hold.
pub const TARGET_HORIZON_S: f64 = 2.0;

/// Weight of the newest second in the demand average.
const DEMAND_ALPHA: f64 = 0.3;

/// Seconds after which an idle key's demand counts as zero (0.7^64 < 1e-9).
const MAX_DEMAND_DECAY_S: u64 = 64;

/// Demand (takes per second) below which a key is idle and may be replaced by a new key.
const IDLE_RATE_PER_S: f64 = 0.01;

/// A pool key: the client, the audience and the normalized scope set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Index of the client in the configured client list.
    pub client_idx: u32,
    /// The `aud` claim of the tokens.
    pub audience: String,
    /// Scopes sorted, deduplicated and joined with single spaces (see [`normalize_scopes`]).
    pub scopes: String,
}

impl PoolKey {
    /// A key with `scope` (space-separated, any order, duplicates allowed) normalized.
    pub fn new(client_idx: u32, audience: &str, scope: &str) -> PoolKey {
        PoolKey {
            client_idx,
            audience: audience.to_owned(),
            scopes: normalize_scopes(scope),
        }
    }
}

/// Sorts and deduplicates the whitespace-separated scopes of `scope` and joins them with single
/// spaces, so equal scope sets give equal keys.
pub fn normalize_scopes(scope: &str) -> String {
    let mut scopes: Vec<&str> = scope.split_ascii_whitespace().collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes.join(" ")
}

/// Limits, validated by [`TokenPool::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// Most keys tracked at once.
    pub max_keys: usize,
    /// Tokens kept for every registered key, even when idle.
    pub min_per_key: usize,
    /// Most tokens kept for one key.
    pub max_per_key: usize,
    /// Most tokens kept in the whole pool.
    pub max_total: usize,
    /// Never hand out a token with less remaining lifetime than this.
    pub min_remaining_s: u64,
    /// Drop (and replace) tokens signed this long ago or earlier.
    pub freshness_s: u64,
}

impl Default for PoolLimits {
    fn default() -> PoolLimits {
        PoolLimits {
            max_keys: 256,
            min_per_key: 1,
            max_per_key: 64,
            max_total: 4096,
            min_remaining_s: 60,
            freshness_s: 300,
        }
    }
}

/// A signed token ready to hand out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PooledToken {
    /// The compact JWS.
    pub token: String,
    /// Its `exp` claim.
    pub expires_at_s: u64,
}

/// Counters since construction (`keys` and `tokens` are current sizes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Takes served from the pool.
    pub hits: u64,
    /// Takes that found no usable token (the caller signs on the request path).
    pub misses: u64,
    /// Tokens added by refills.
    pub refilled: u64,
    /// Tokens dropped for age (`freshness_s`) or short remaining lifetime (`min_remaining_s`).
    pub discarded_stale: u64,
    /// Fresh tokens dropped because their key's target shrank or the key was removed.
    pub trimmed: u64,
    /// Signer calls that returned `None` or an already-unusable token.
    pub sign_failures: u64,
    /// Keys currently registered.
    pub keys: usize,
    /// Tokens currently pooled.
    pub tokens: usize,
}

struct Pooled {
    token: String,
    expires_at_s: u64,
    minted_at_s: u64,
}

/// Takes per second for one key, as an exponentially weighted average over whole seconds.
struct Demand {
    rate_per_s: f64,
    /// Takes counted in second `second_s`, not yet folded into the average.
    n_takes: u32,
    second_s: u64,
    /// Second of the latest take (or of registration).
    last_take_s: u64,
}

impl Demand {
    fn new(now_s: u64) -> Demand {
        Demand {
            rate_per_s: 0.0,
            n_takes: 0,
            second_s: now_s,
            last_take_s: now_s,
        }
    }

    /// Folds finished seconds into the average. Time going backwards is treated as "same second".
    fn roll(&mut self, now_s: u64) {
        if now_s <= self.second_s {
            return;
        }
        let n_idle_s = (now_s - self.second_s - 1).min(MAX_DEMAND_DECAY_S);
        let rate = self.rate_per_s * (1.0 - DEMAND_ALPHA) + DEMAND_ALPHA * f64::from(self.n_takes);
        self.rate_per_s = rate * (1.0 - DEMAND_ALPHA).powi(n_idle_s as i32);
        self.n_takes = 0;
        self.second_s = now_s;
    }

    fn record_take(&mut self, now_s: u64) {
        self.roll(now_s);
        self.n_takes = self.n_takes.saturating_add(1);
        self.last_take_s = self.last_take_s.max(now_s);
    }

    /// The rate to provision for: the average, or the current second if it is already busier.
    fn rate_per_s(&self) -> f64 {
        self.rate_per_s.max(f64::from(self.n_takes))
    }

    fn is_idle(&self) -> bool {
        self.rate_per_s() < IDLE_RATE_PER_S
    }
}

struct KeyState {
    key: PoolKey,
    /// Oldest first: tokens are signed in time order and handed out oldest first, so the
    /// front is always the next to go stale.
    tokens: VecDeque<Pooled>,
    demand: Demand,
    /// Set when the signer failed for this key during the current refill.
    sign_blocked: bool,
}

impl KeyState {
    fn target(&self, limits: &PoolLimits) -> usize {
        let wanted = (self.demand.rate_per_s() * TARGET_HORIZON_S).ceil() as usize;
        wanted.clamp(limits.min_per_key, limits.max_per_key)
    }
}

/// Pre-signed tokens per [`PoolKey`], with demand-driven sizes and a signing budget.
pub struct TokenPool {
    limits: PoolLimits,
    index: HashMap<PoolKey, usize>,
    keys: Vec<KeyState>,
    n_tokens: usize,
    /// Key index where the next refill starts, so small budgets rotate over all keys.
    refill_cursor: usize,
    stats: PoolStats,
}

impl TokenPool {
    /// An empty pool. Panics (at startup) on inconsistent limits: `max_keys` or `max_per_key`
    /// zero, `min_per_key > max_per_key`, `max_per_key > max_total`, or `freshness_s` zero.
    pub fn new(limits: PoolLimits) -> TokenPool {
        assert!(limits.max_keys > 0, "pool max_keys must be positive");
        assert!(limits.max_per_key > 0, "pool max_per_key must be positive");
        assert!(
            limits.min_per_key <= limits.max_per_key,
            "pool min_per_key exceeds max_per_key"
        );
        assert!(
            limits.max_per_key <= limits.max_total,
            "pool max_per_key exceeds max_total"
        );
        assert!(limits.freshness_s > 0, "pool freshness_s must be positive");
        TokenPool {
            limits,
            index: HashMap::with_capacity(limits.max_keys),
            keys: Vec::with_capacity(limits.max_keys),
            n_tokens: 0,
            refill_cursor: 0,
            stats: PoolStats::default(),
        }
    }

    /// The limits the pool was built with.
    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            keys: self.keys.len(),
            tokens: self.n_tokens,
            ..self.stats
        }
    }

    /// Pops the oldest usable token for `key`, dropping (and counting) stale ones on the way,
    /// and records the demand. On a miss for an unknown key, registers the key so the next
    /// refill provisions it. A hit allocates nothing.
    pub fn take(&mut self, key: &PoolKey, now_s: u64) -> Option<PooledToken> {
        let Some(&key_idx) = self.index.get(key) else {
            self.stats.misses += 1;
            if let Some(key_idx) = self.register_at(key, now_s) {
                self.keys[key_idx].demand.record_take(now_s);
            }
            return None;
        };
        let limits = self.limits;
        let state = &mut self.keys[key_idx];
        state.demand.record_take(now_s);
        while let Some(pooled) = state.tokens.pop_front() {
            self.n_tokens -= 1;
            if is_usable(&pooled, &limits, now_s) {
                self.stats.hits += 1;
                return Some(PooledToken {
                    token: pooled.token,
                    expires_at_s: pooled.expires_at_s,
                });
            }
            self.stats.discarded_stale += 1;
        }
        self.stats.misses += 1;
        None
    }

    /// Registers `key` ahead of demand (for example every configured client's default
    /// audience and scopes), so refills keep `min_per_key` tokens for it. Returns whether the
    /// key is registered now; false when `max_keys` keys are registered and none is idle at
    /// `now_s`.
    pub fn register(&mut self, key: &PoolKey, now_s: u64) -> bool {
        if self.index.contains_key(key) {
            return true;
        }
        self.register_at(key, now_s).is_some()
    }

    /// Removes every key for which `keep` is false, with its tokens (client deleted or
    /// secret rotated); returns how many keys were removed.
    pub fn retain_keys(&mut self, mut keep: impl FnMut(&PoolKey) -> bool) -> usize {
        let n_keys_before = self.keys.len();
        let mut key_idx = 0;
        while key_idx < self.keys.len() {
            if keep(&self.keys[key_idx].key) {
                key_idx += 1;
            } else {
                self.remove_key(key_idx);
            }
        }
        n_keys_before - self.keys.len()
    }

    /// Tokens pooled for `key` right now (usable or not).
    pub fn len_for(&self, key: &PoolKey) -> usize {
        self.index
            .get(key)
            .map_or(0, |&key_idx| self.keys[key_idx].tokens.len())
    }

    /// The number of tokens the pool currently aims to hold for `key`.
    pub fn target_for(&self, key: &PoolKey) -> Option<usize> {
        let &key_idx = self.index.get(key)?;
        Some(self.keys[key_idx].target(&self.limits))
    }

    /// Background refill: drops stale tokens and tokens above each key's target, then signs
    /// tokens for keys below target, one key at a time in rotation, calling `sign` at most
    /// `budget` times and never exceeding `max_total`. Returns the number of tokens added.
    ///
    /// `sign(key, now_s)` returns a token for `key` signed at `now_s`, or `None` if signing is
    /// impossible right now (that key is skipped until the next refill).
    pub fn refill(
        &mut self,
        now_s: u64,
        budget: usize,
        sign: &mut dyn FnMut(&PoolKey, u64) -> Option<PooledToken>,
    ) -> usize {
        self.prune(now_s);
        let n_keys = self.keys.len();
        if n_keys == 0 {
            return 0;
        }
        let mut n_signed = 0;
        let mut n_added = 0;
        loop {
            let mut progressed = false;
            for step in 0..n_keys {
                if n_signed == budget || self.n_tokens >= self.limits.max_total {
                    return n_added;
                }
                let key_idx = (self.refill_cursor + step) % n_keys;
                let state = &self.keys[key_idx];
                if state.sign_blocked || state.tokens.len() >= state.target(&self.limits) {
                    continue;
                }
                n_signed += 1;
                progressed = true;
                match sign(&state.key, now_s) {
                    Some(signed)
                        if signed.expires_at_s
                            >= now_s.saturating_add(self.limits.min_remaining_s) =>
                    {
                        self.keys[key_idx].tokens.push_back(Pooled {
                            token: signed.token,
                            expires_at_s: signed.expires_at_s,
                            minted_at_s: now_s,
                        });
                        self.n_tokens += 1;
                        self.stats.refilled += 1;
                        n_added += 1;
                        self.refill_cursor = (key_idx + 1) % n_keys;
                    }
                    _ => {
                        self.stats.sign_failures += 1;
                        self.keys[key_idx].sign_blocked = true;
                    }
                }
            }
            if !progressed {
                return n_added;
            }
        }
    }

    /// Rolls every key's demand, drops stale tokens and trims each key to its target.
    fn prune(&mut self, now_s: u64) {
        let limits = self.limits;
        for state in &mut self.keys {
            state.sign_blocked = false;
            state.demand.roll(now_s);
            let len_before = state.tokens.len();
            state
                .tokens
                .retain(|pooled| is_usable(pooled, &limits, now_s));
            let n_stale = len_before - state.tokens.len();
            let target = state.target(&limits);
            let n_excess = state.tokens.len().saturating_sub(target);
            // The oldest go first: they would go stale first.
            state.tokens.drain(..n_excess);
            self.n_tokens -= n_stale + n_excess;
            self.stats.discarded_stale += n_stale as u64;
            self.stats.trimmed += n_excess as u64;
        }
    }

    /// Registers `key` with its demand clock at `now_s`; when full, replaces the idle key
    /// (demand below `IDLE_RATE_PER_S`) that was taken from least recently. Allocates (clones
    /// the key) only when the key is actually added.
    fn register_at(&mut self, key: &PoolKey, now_s: u64) -> Option<usize> {
        if self.keys.len() == self.limits.max_keys {
            for state in &mut self.keys {
                state.demand.roll(now_s);
            }
            let idlest = self
                .keys
                .iter()
                .enumerate()
                .filter(|(_, state)| state.demand.is_idle())
                .min_by_key(|(_, state)| state.demand.last_take_s)
                .map(|(key_idx, _)| key_idx)?;
            self.remove_key(idlest);
        }
        let key_idx = self.keys.len();
        self.index.insert(key.clone(), key_idx);
        self.keys.push(KeyState {
            key: key.clone(),
            tokens: VecDeque::with_capacity(self.limits.max_per_key),
            demand: Demand::new(now_s),
            sign_blocked: false,
        });
        Some(key_idx)
    }

    fn remove_key(&mut self, key_idx: usize) {
        let state = self.keys.swap_remove(key_idx);
        self.index.remove(&state.key);
        if let Some(moved) = self.keys.get(key_idx) {
            if let Some(moved_idx) = self.index.get_mut(&moved.key) {
                *moved_idx = key_idx;
            }
        }
        self.n_tokens -= state.tokens.len();
        self.stats.trimmed += state.tokens.len() as u64;
        self.refill_cursor = 0;
    }
}

fn is_usable(pooled: &Pooled, limits: &PoolLimits, now_s: u64) -> bool {
    let age_s = now_s.saturating_sub(pooled.minted_at_s);
    let remaining_s = pooled.expires_at_s.saturating_sub(now_s);
    age_s < limits.freshness_s && remaining_s >= limits.min_remaining_s
}
