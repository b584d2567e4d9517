//! Tests for the token pool: freshness, lifetime, adaptation, bounds and budget.

use super::{normalize_scopes, PoolKey, PoolLimits, PooledToken, TokenPool};

const TTL_S: u64 = 3600;

fn limits() -> PoolLimits {
    PoolLimits {
        max_keys: 8,
        min_per_key: 2,
        max_per_key: 32,
        max_total: 200,
        min_remaining_s: 60,
        freshness_s: 300,
    }
}

fn key(client_idx: u32) -> PoolKey {
    PoolKey::new(client_idx, "api://orders", "orders:read orders:write")
}

/// A fake signer: tokens name their key and signing time and live `ttl_s`; counts its calls.
struct FakeSigner {
    ttl_s: u64,
    n_calls: usize,
    fail: bool,
}

impl FakeSigner {
    fn new(ttl_s: u64) -> FakeSigner {
        FakeSigner {
            ttl_s,
            n_calls: 0,
            fail: false,
        }
    }

    fn sign(&mut self, key: &PoolKey, now_s: u64) -> Option<PooledToken> {
        self.n_calls += 1;
        if self.fail {
            return None;
        }
        Some(PooledToken {
            token: format!(
                "tok.{}.{}.{}.{}",
                key.client_idx, key.audience, now_s, self.n_calls
            ),
            expires_at_s: now_s + self.ttl_s,
        })
    }
}

fn refill(pool: &mut TokenPool, signer: &mut FakeSigner, now_s: u64, budget: usize) -> usize {
    pool.refill(now_s, budget, &mut |key, now_s| signer.sign(key, now_s))
}

fn minted_at(token: &PooledToken) -> u64 {
    token
        .token
        .split('.')
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap()
}

#[test]
fn scopes_are_normalized() {
    assert_eq!(normalize_scopes("b a  c a"), "a b c");
    assert_eq!(normalize_scopes(""), "");
    assert_eq!(
        PoolKey::new(1, "aud", "write read"),
        PoolKey::new(1, "aud", " read write read ")
    );
}

#[test]
fn miss_registers_then_refill_serves() {
    let mut pool = TokenPool::new(limits());
    let mut signer = FakeSigner::new(TTL_S);
    assert_eq!(pool.take(&key(1), 100), None);
    assert_eq!(pool.stats().keys, 1);
    assert_eq!(pool.stats().misses, 1);
    let n_added = refill(&mut pool, &mut signer, 100, 100);
    assert!(n_added >= limits().min_per_key);
    assert_eq!(pool.len_for(&key(1)), n_added);
    let token = pool.take(&key(1), 100).unwrap();
    assert!(token.token.starts_with("tok.1.api://orders.100."));
    assert_eq!(token.expires_at_s, 100 + TTL_S);
    assert_eq!(pool.stats().hits, 1);
    // Other keys never see this key's tokens.
    assert_eq!(pool.take(&key(2), 100), None);
}

#[test]
fn a_token_past_freshness_is_never_returned() {
    let mut pool = TokenPool::new(limits());
    let mut signer = FakeSigner::new(TTL_S);
    pool.register(&key(1), 0);
    refill(&mut pool, &mut signer, 1000, 100);
    let n_pooled = pool.len_for(&key(1));
    assert_eq!(n_pooled, limits().min_per_key);
    // Just inside freshness: served.
    let token = pool.take(&key(1), 1299).unwrap();
    assert_eq!(minted_at(&token), 1000);
    // At freshness_s of age, without any refill in between: dropped, counted, a miss.
    assert_eq!(pool.take(&key(1), 1300), None);
    let stats = pool.stats();
    assert_eq!(stats.discarded_stale, (n_pooled - 1) as u64);
    assert_eq!(stats.tokens, 0);
    // A refill replaces stale tokens with fresh ones.
    refill(&mut pool, &mut signer, 1300, 100);
    refill(&mut pool, &mut signer, 1599, 100);
    for _ in 0..pool.len_for(&key(1)) {
        let token = pool.take(&key(1), 1599).unwrap();
        assert!(1599 - minted_at(&token) < limits().freshness_s);
    }
}

#[test]
fn refill_drops_stale_tokens_and_replaces_them() {
    let mut pool = TokenPool::new(limits());
    let mut signer = FakeSigner::new(TTL_S);
    pool.register(&key(1), 0);
    refill(&mut pool, &mut signer, 0, 100);
    assert_eq!(pool.len_for(&key(1)), 2);
    let n_added = refill(&mut pool, &mut signer, 300, 100);
    assert_eq!(n_added, 2);
    assert_eq!(pool.stats().discarded_stale, 2);
    while let Some(token) = pool.take(&key(1), 301) {
        assert_eq!(minted_at(&token), 300);
    }
}

#[test]
fn never_hands_out_less_than_min_remaining_lifetime() {
    let limits = PoolLimits {
        freshness_s: 10_000,
        ..limits()
    };
    let mut pool = TokenPool::new(limits);
    // Tokens live 100 s; the pool needs 60 s left: usable until now = exp - 60.
    let mut signer = FakeSigner::new(100);
    pool.register(&key(1), 0);
    refill(&mut pool, &mut signer, 0, 100);
    let token = pool.take(&key(1), 40).unwrap();
    assert_eq!(token.expires_at_s - 40, 60);
    assert_eq!(pool.take(&key(1), 41), None, "59 s left is too little");
    assert_eq!(pool.stats().discarded_stale, 1);
    // A signer whose tokens are born too short is refused and counted, within budget.
    let mut short = FakeSigner::new(59);
    assert_eq!(refill(&mut pool, &mut short, 50, 100), 0);
    assert_eq!(
        short.n_calls, 1,
        "the key is skipped after its first bad token"
    );
    assert_eq!(pool.stats().sign_failures, 1);
}

#[test]
fn sustained_demand_grows_target_to_max_and_idle_shrinks_it() {
    let limits = limits();
    let mut pool = TokenPool::new(limits);
    let mut signer = FakeSigner::new(TTL_S);
    let k = key(1);
    pool.take(&k, 0);
    let mut last_target = 0;
    let mut n_hits_late = 0;
    for now_s in 0..40 {
        for _ in 0..50 {
            if pool.take(&k, now_s).is_some() && now_s >= 20 {
                n_hits_late += 1;
            }
        }
        refill(&mut pool, &mut signer, now_s, 1000);
        let target = pool.target_for(&k).unwrap();
        assert!(target >= last_target, "target fell under steady demand");
        last_target = target;
    }
    assert_eq!(last_target, limits.max_per_key);
    assert_eq!(pool.len_for(&k), limits.max_per_key);
    // Under steady demand most takes hit (each second drains 32 of 50).
    assert_eq!(n_hits_late, 20 * limits.max_per_key);
    // Idle: the target decays to min_per_key and refills trim the pool down to it.
    let mut prev_target = last_target;
    for now_s in 40..80 {
        refill(&mut pool, &mut signer, now_s, 1000);
        let target = pool.target_for(&k).unwrap();
        assert!(target <= prev_target, "target grew while idle");
        prev_target = target;
    }
    assert_eq!(prev_target, limits.min_per_key);
    assert_eq!(pool.len_for(&k), limits.min_per_key);
    assert!(pool.stats().trimmed > 0);
}

#[test]
fn max_keys_is_respected_and_idle_keys_make_room() {
    let limits = PoolLimits {
        max_keys: 3,
        ..limits()
    };
    let mut pool = TokenPool::new(limits);
    // Three busy keys: a fourth cannot displace them.
    for client_idx in 0..3 {
        for _ in 0..5 {
            pool.take(&key(client_idx), 10);
        }
    }
    assert_eq!(pool.take(&key(3), 10), None);
    assert_eq!(pool.stats().keys, 3);
    assert_eq!(pool.len_for(&key(3)), 0);
    assert!(!pool.register(&key(4), 10));
    // Once the others have been idle long enough, a new key takes the idlest one's place.
    pool.take(&key(0), 20);
    assert_eq!(pool.take(&key(5), 1000), None);
    assert_eq!(pool.stats().keys, 3);
    assert!(pool.target_for(&key(5)).is_some());
    assert!(
        pool.target_for(&key(0)).is_some(),
        "the most recently used key survives"
    );
}

#[test]
fn max_total_is_respected() {
    let limits = PoolLimits {
        max_total: 40,
        ..limits()
    };
    let mut pool = TokenPool::new(limits);
    let mut signer = FakeSigner::new(TTL_S);
    for now_s in 0..10 {
        for client_idx in 0..4 {
            for _ in 0..30 {
                pool.take(&key(client_idx), now_s);
            }
        }
        refill(&mut pool, &mut signer, now_s, 1000);
        assert!(pool.stats().tokens <= 40);
    }
    assert_eq!(pool.stats().tokens, 40);
    // Round robin shares the total between the hot keys.
    for client_idx in 0..4 {
        assert!(
            pool.len_for(&key(client_idx)) >= 9,
            "key {client_idx} starved"
        );
    }
}

#[test]
fn budget_bounds_signatures_per_refill() {
    let mut pool = TokenPool::new(limits());
    let mut signer = FakeSigner::new(TTL_S);
    for client_idx in 0..4 {
        for _ in 0..20 {
            pool.take(&key(client_idx), 0);
        }
    }
    assert_eq!(refill(&mut pool, &mut signer, 0, 5), 5);
    assert_eq!(signer.n_calls, 5);
    // Small budgets rotate across keys instead of always feeding the first.
    for _ in 0..3 {
        refill(&mut pool, &mut signer, 0, 5);
    }
    for client_idx in 0..4 {
        assert_eq!(pool.len_for(&key(client_idx)), 5);
    }
    // Zero budget: no signing at all.
    assert_eq!(refill(&mut pool, &mut signer, 0, 0), 0);
    assert_eq!(signer.n_calls, 20);
}

#[test]
fn failing_signer_consumes_budget_once_per_key() {
    let mut pool = TokenPool::new(limits());
    let mut signer = FakeSigner::new(TTL_S);
    signer.fail = true;
    pool.register(&key(1), 0);
    pool.register(&key(2), 0);
    assert_eq!(refill(&mut pool, &mut signer, 0, 100), 0);
    assert_eq!(signer.n_calls, 2);
    assert_eq!(pool.stats().sign_failures, 2);
    signer.fail = false;
    assert_eq!(refill(&mut pool, &mut signer, 1, 100), 4);
}

#[test]
fn retain_keys_drops_keys_and_their_tokens() {
    let mut pool = TokenPool::new(limits());
    let mut signer = FakeSigner::new(TTL_S);
    for client_idx in 0..4 {
        pool.register(&key(client_idx), 0);
    }
    refill(&mut pool, &mut signer, 0, 100);
    assert_eq!(pool.stats().tokens, 8);
    assert_eq!(pool.retain_keys(|k| k.client_idx % 2 == 0), 2);
    assert_eq!(pool.stats().keys, 2);
    assert_eq!(pool.stats().tokens, 4);
    assert_eq!(pool.take(&key(1), 1), None);
    assert!(pool.take(&key(2), 1).is_some());
    assert!(pool.take(&key(0), 1).is_some());
}
