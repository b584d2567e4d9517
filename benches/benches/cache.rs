//! Token lookup: `CuckooCache` vs std `HashMap` (`SipHash`) vs `hashbrown` (`foldhash`), keyed by
//! JWT-sized token bytes, at several sizes and load factors.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Bencher, BenchmarkId, Criterion};
use subzero::cache::{CuckooCache, Insert};
use subzero_benches::thread_cpu_time;

/// A claims-sized value stand-in.
type Value = [u64; 4];

/// Distinct lookup keys per benchmark; lookups cycle through them in a shuffled order.
const N_QUERIES_MAX: usize = 1 << 17;

const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A compact-JWS-shaped token: a shared header, a 100-char payload and an 86-char signature
/// (`EdDSA`), 223 bytes in all.
fn token(rng: &mut Rng) -> Vec<u8> {
    let mut token = b"eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.".to_vec();
    token.extend((0..100).map(|_| BASE64URL[rng.below(64)]));
    token.push(b'.');
    token.extend((0..86).map(|_| BASE64URL[rng.below(64)]));
    token
}

/// Like `Bencher::iter`, timed in thread CPU time.
fn iter_cpu<O>(b: &mut Bencher<'_>, mut routine: impl FnMut() -> O) {
    b.iter_custom(|iters| {
        let started = thread_cpu_time();
        for _ in 0..iters {
            black_box(routine());
        }
        thread_cpu_time().saturating_sub(started)
    });
}

struct Fixture {
    label: String,
    cuckoo: CuckooCache<Value>,
    std_map: HashMap<Box<[u8]>, Value>,
    hashbrown_map: hashbrown::HashMap<Box<[u8]>, Value>,
    /// Fresh copies (not the stored allocations) of stored tokens, shuffled.
    hit_queries: Vec<Vec<u8>>,
    /// Tokens never stored.
    miss_queries: Vec<Vec<u8>>,
}

fn fixture(n_entries: usize, capacity_entries: usize) -> Fixture {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n_entries as u64);
    let tokens: Vec<Vec<u8>> = (0..n_entries).map(|_| token(&mut rng)).collect();
    let mut cuckoo = CuckooCache::new(capacity_entries, 0x5eed);
    let mut std_map = HashMap::with_capacity(n_entries);
    let mut hashbrown_map = hashbrown::HashMap::with_capacity(n_entries);
    let mut n_evicted = 0;
    for (i, t) in tokens.iter().enumerate() {
        let value = [i as u64; 4];
        if cuckoo.insert(t, value, u64::MAX, 0) == Insert::InsertedWithEviction {
            n_evicted += 1;
        }
        std_map.insert(t.clone().into_boxed_slice(), value);
        hashbrown_map.insert(t.clone().into_boxed_slice(), value);
    }
    let load_pct = cuckoo.len() * 100 / cuckoo.capacity();
    let label = format!("{n_entries}@{load_pct}%");
    eprintln!(
        "fixture {label}: {} of {} slots, {n_evicted} evicted while filling",
        cuckoo.len(),
        cuckoo.capacity()
    );
    let n_queries = n_entries.min(N_QUERIES_MAX);
    let hit_queries = (0..n_queries)
        .map(|_| tokens[rng.below(n_entries)].clone())
        .collect();
    let miss_queries = (0..n_queries).map(|_| token(&mut rng)).collect();
    Fixture {
        label,
        cuckoo,
        std_map,
        hashbrown_map,
        hit_queries,
        miss_queries,
    }
}

fn bench_fixture(c: &mut Criterion, fx: &mut Fixture) {
    for (kind, queries) in [("hit", &fx.hit_queries), ("miss", &fx.miss_queries)] {
        let mut group = c.benchmark_group(format!("cache_{kind}"));
        let n = queries.len();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("cuckoo", &fx.label), |b| {
            iter_cpu(b, || {
                i = if i + 1 == n { 0 } else { i + 1 };
                black_box(fx.cuckoo.get(black_box(&queries[i]), 1).copied())
            });
        });
        group.bench_function(BenchmarkId::new("std_siphash", &fx.label), |b| {
            iter_cpu(b, || {
                i = if i + 1 == n { 0 } else { i + 1 };
                black_box(fx.std_map.get(black_box(queries[i].as_slice())).copied())
            });
        });
        group.bench_function(BenchmarkId::new("hashbrown_foldhash", &fx.label), |b| {
            iter_cpu(b, || {
                i = if i + 1 == n { 0 } else { i + 1 };
                black_box(
                    fx.hashbrown_map
                        .get(black_box(queries[i].as_slice()))
                        .copied(),
                )
            });
        });
        group.finish();
    }
}

fn cache_lookup(c: &mut Criterion) {
    // 10k entries at 61% load; ~15.5k at 95%; 1M at 95% (2^20 slots).
    for (n_entries, capacity_entries) in [(10_000, 16_384), (15_565, 16_384), (1_000_000, 1 << 20)]
    {
        let mut fx = fixture(n_entries, capacity_entries);
        bench_fixture(c, &mut fx);
    }
}

fn cache_insert(c: &mut Criterion) {
    // Steady-state replacement churn in a full table: each insert evicts or reuses a slot.
    let mut rng = Rng(7);
    let tokens: Vec<Vec<u8>> = (0..1 << 16).map(|_| token(&mut rng)).collect();
    let mut cuckoo = CuckooCache::<Value>::new(1 << 14, 0x5eed);
    let mut i = 0;
    c.bench_function("cache_insert/cuckoo/full_16k", |b| {
        iter_cpu(b, || {
            i = (i + 1) % tokens.len();
            black_box(cuckoo.insert(&tokens[i], [0; 4], u64::MAX, 0))
        });
    });
}

criterion_group!(benches, cache_lookup, cache_insert);
criterion_main!(benches);
