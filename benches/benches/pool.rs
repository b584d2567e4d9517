//! Token pool: take on a hit, take on a miss, and refill with a fake signer.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use subzero::pool::{PoolKey, PoolLimits, PooledToken, TokenPool};
use subzero_benches::thread_cpu_time;

const TTL_S: u64 = 3600;

fn limits() -> PoolLimits {
    PoolLimits {
        max_keys: 64,
        min_per_key: 0,
        max_per_key: 256,
        max_total: 16_384,
        min_remaining_s: 60,
        freshness_s: 300,
    }
}

/// A signer that only copies a JWS-sized string: the pool's own cost, not Ed25519's.
fn fake_signer(template: &str) -> impl FnMut(&PoolKey, u64) -> Option<PooledToken> + '_ {
    move |_key, now_s| {
        Some(PooledToken {
            token: template.to_owned(),
            expires_at_s: now_s + TTL_S,
        })
    }
}

fn keys() -> Vec<PoolKey> {
    (0..16)
        .map(|client_idx| PoolKey::new(client_idx, "api://orders", "orders:read orders:write"))
        .collect()
}

/// A pool whose keys all want `max_per_key` tokens (sustained demand at second 0).
fn hot_pool(keys: &[PoolKey]) -> TokenPool {
    let mut pool = TokenPool::new(limits());
    for key in keys {
        for _ in 0..200 {
            pool.take(key, 0);
        }
    }
    pool
}

fn pool_take(c: &mut Criterion) {
    let template = "e".repeat(223);
    let keys = keys();
    let mut sign = fake_signer(&template);

    c.bench_function("pool/take_hit", |b| {
        let mut pool = hot_pool(&keys);
        b.iter_custom(|iters| {
            // Refill outside the timed region; time batches of takes that all hit.
            let mut elapsed = Duration::ZERO;
            let mut n_done = 0;
            let mut key_idx = 0;
            while n_done < iters {
                pool.refill(0, usize::MAX, &mut sign);
                let n_batch = (iters - n_done).min(200);
                let key = &keys[key_idx % keys.len()];
                key_idx += 1;
                let started = thread_cpu_time();
                for _ in 0..n_batch {
                    black_box(pool.take(black_box(key), 1));
                }
                elapsed += thread_cpu_time().saturating_sub(started);
                n_done += n_batch;
            }
            elapsed
        });
        assert!(pool.stats().hits > 0 && pool.stats().misses == 16 * 200);
    });

    c.bench_function("pool/take_miss", |b| {
        let mut pool = hot_pool(&keys);
        let key = &keys[3];
        b.iter_custom(|iters| {
            let started = thread_cpu_time();
            for _ in 0..iters {
                black_box(pool.take(black_box(key), 1));
            }
            thread_cpu_time().saturating_sub(started)
        });
        assert_eq!(pool.stats().hits, 0);
    });

    c.bench_function("pool/refill_64", |b| {
        let mut pool = hot_pool(&keys);
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                // Drain one key outside the timed region, then time refilling 64 tokens.
                let key = &keys[0];
                while pool.take(key, 0).is_some() {}
                let started = thread_cpu_time();
                black_box(pool.refill(0, 64, &mut sign));
                elapsed += thread_cpu_time().saturating_sub(started);
            }
            elapsed
        });
    });
}

criterion_group!(benches, pool_take);
criterion_main!(benches);
