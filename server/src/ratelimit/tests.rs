//! Tests of the key and source limiters: rules, shadow mode, and the bound across shards.

use super::*;

fn key_rule(prefix: &str, rate_per_s: f64, burst: u32, shadow: bool) -> KeyRule {
    KeyRule {
        key_prefix: prefix.into(),
        rate_per_s,
        burst,
        shadow,
    }
}

fn route_rule(route: RouteClass, rate_per_s: f64, burst: u32) -> RouteRule {
    RouteRule {
        route,
        rate_per_s,
        burst,
        shadow: false,
    }
}

#[test]
fn a_key_no_rule_matches_is_allowed_and_counted() {
    let mut l = KeyLimiter::new(&[key_rule("login:", 1.0, 1, false)], 16);
    for _ in 0..5 {
        let v = l.check("signup:x", 1, 0).unwrap();
        assert!(v.decision.allowed);
        assert_eq!(v.rule_idx, None);
    }
    assert_eq!(l.unmatched, 5);
    assert!(l.is_empty(), "unmatched keys take no slot");
    assert_eq!(l.check("signup:x", 0, 0), Err(CostError::Zero));
}

#[test]
fn a_shadow_rule_counts_what_it_would_deny_and_allows() {
    let rules = [
        key_rule("shadow:", 1.0, 2, true),
        key_rule("login:", 1.0, 2, false),
    ];
    let mut l = KeyLimiter::new(&rules, 16);
    let shadow: Vec<KeyVerdict> = (0..5).map(|_| l.check("shadow:a", 1, 0).unwrap()).collect();
    assert!(shadow.iter().all(|v| v.decision.allowed && v.shadow));
    assert_eq!(shadow.iter().filter(|v| v.shadow_denied).count(), 3);
    assert_eq!(
        shadow[4].decision.remaining, 0,
        "the numbers are the real ones"
    );
    let enforced: Vec<bool> = (0..5)
        .map(|_| l.check("login:a", 1, 0).unwrap().decision.allowed)
        .collect();
    assert_eq!(enforced, [true, true, false, false, false]);
    assert_eq!(
        l.counts,
        [
            RuleCounts {
                allowed: 5,
                denied: 0,
                shadow_denied: 3
            },
            RuleCounts {
                allowed: 2,
                denied: 3,
                shadow_denied: 0
            },
        ]
    );
}

/// A deterministic stream of shard indexes (xorshift), standing in for the kernel spreading
/// connections over SO_REUSEPORT listeners.
fn shard_stream(n_shards: usize, seed: u64) -> impl FnMut() -> usize {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n_shards as u64) as usize
    }
}

/// The per-source split: N shards each enforcing their share never allow one source more
/// than `burst + rate·t` in total, however its requests spread over the shards.
#[test]
fn split_source_limits_never_allow_more_than_the_limit_over_n_shards() {
    let ip = IpAddr::from([192, 0, 2, 7]);
    for n_shards in [2usize, 4] {
        for (rate, burst) in [(10.0, 20u32), (5.0, 7), (100.0, 4)] {
            let rules = [route_rule(RouteClass::Default, rate, burst)];
            let mut shards: Vec<SourceLimiter> = (0..n_shards)
                .map(|i| SourceLimiter::new(&rules, n_shards, i, 64, u32::MAX))
                .collect();
            let mut next_shard = shard_stream(n_shards, 7 + n_shards as u64);
            let mut n_allowed = 0u64;
            for now_ms in (0..5_000u64).step_by(3) {
                for _ in 0..4 {
                    let shard = &mut shards[next_shard()];
                    if shard.check(RouteClass::Token, ip, now_ms) == SourceVerdict::Allow {
                        n_allowed += 1;
                    }
                }
                let bound = u64::from(burst.max(n_shards as u32)) + (rate as u64 * now_ms) / 1000;
                assert!(
                    n_allowed <= bound,
                    "{n_shards} shards, {rate}/s burst {burst}: {n_allowed} > {bound} at {now_ms} ms"
                );
            }
            // And the sources get (nearly) their rate: the shares are not so small that
            // the total starves.
            let floor = (rate * 4.0) as u64;
            assert!(n_allowed >= floor, "{n_allowed} < {floor}");
        }
    }
}

/// The owner mechanism: whichever shard a check arrives on, it is evaluated on the key's
/// owner, so N shards allow exactly what one limiter would.
#[test]
fn owner_routed_checks_never_allow_more_than_the_limit_over_n_shards() {
    let rules = [key_rule("login:", 10.0, 20, false)];
    for n_shards in [2usize, 4] {
        let mut shards: Vec<KeyLimiter> =
            (0..n_shards).map(|_| KeyLimiter::new(&rules, 64)).collect();
        let mut next_shard = shard_stream(n_shards, 99);
        let keys = ["login:alice", "login:bob", "login:carol"];
        let mut n_allowed = [0u64; 3];
        for now_ms in (0..3_000u64).step_by(5) {
            for (k, key) in keys.iter().enumerate() {
                let _arrived_on = next_shard();
                let owner = owner_of(key.as_bytes(), n_shards);
                let v = shards[owner].check(key, 1, now_ms).unwrap();
                n_allowed[k] += u64::from(v.decision.allowed);
                let bound = 20 + (10 * now_ms) / 1000;
                assert!(n_allowed[k] <= bound, "{key}: {} > {bound}", n_allowed[k]);
            }
        }
        assert!(n_allowed.iter().all(|&n| n >= 20 + 29), "{n_allowed:?}");
    }
}

#[test]
fn owners_are_stable_and_spread() {
    let mut per_shard = [0usize; 4];
    for i in 0..4000 {
        let key = format!("user:{i}");
        let owner = owner_of(key.as_bytes(), 4);
        assert_eq!(owner, owner_of(key.as_bytes(), 4));
        per_shard[owner] += 1;
    }
    assert!(per_shard.iter().all(|&n| n > 800), "{per_shard:?}");
}

#[test]
fn route_rules_fall_back_to_the_default_and_shadow_never_refuses() {
    let ip = IpAddr::from([10, 0, 0, 1]);
    let rules = [
        route_rule(RouteClass::Default, 1.0, 1),
        RouteRule {
            shadow: true,
            ..route_rule(RouteClass::Token, 1.0, 1)
        },
        route_rule(RouteClass::Authenticate, 1000.0, 1000),
    ];
    let mut l = SourceLimiter::new(&rules, 1, 0, 64, 3);
    assert_eq!(l.check(RouteClass::Public, ip, 0), SourceVerdict::Allow);
    assert!(
        matches!(
            l.check(RouteClass::Revoke, ip, 0),
            SourceVerdict::Limit {
                route: RouteClass::Default,
                ..
            }
        ),
        "revoke has no rule: the default's bucket, shared with public"
    );
    for _ in 0..5 {
        assert_eq!(l.check(RouteClass::Token, ip, 0), SourceVerdict::Allow);
    }
    for _ in 0..100 {
        assert_eq!(
            l.check(RouteClass::Authenticate, ip, 0),
            SourceVerdict::Allow
        );
    }
    let counts: Vec<_> = l.counts().collect();
    assert_eq!(counts[1], ("token", 0, 4, 0));
    assert_eq!(counts[0].1, 1);
}
