//! Unit and model-based tests for the cuckoo cache.

use std::collections::HashMap;

use proptest::prelude::*;

use std::mem::size_of;

use super::{CuckooCache, Insert, SLOTS_PER_BUCKET, SLOT_OVERHEAD_BYTES};

const SEED: u64 = 0x5eed_cafe;

impl<V> CuckooCache<V> {
    /// The stored value and expiry for `token`, ignoring expiry and without touching stats.
    fn peek(&self, token: &[u8]) -> Option<(&V, u64)> {
        let hash = self.hash(token);
        let (bucket_a, bucket_b) = self.buckets(hash);
        [bucket_a, bucket_b]
            .into_iter()
            .flat_map(|bucket| bucket * SLOTS_PER_BUCKET..(bucket + 1) * SLOTS_PER_BUCKET)
            .filter_map(|slot_idx| self.slots[slot_idx].as_ref())
            .find(|entry| entry.hash == hash && *entry.token == *token)
            .map(|entry| (&entry.value, entry.expires_at_s))
    }

    /// Checks that tags, slots and the entry count agree.
    fn check_invariants(&self) {
        let mut n_entries = 0;
        for (slot_idx, slot) in self.slots.iter().enumerate() {
            match slot {
                None => assert_eq!(self.tags[slot_idx], super::TAG_EMPTY),
                Some(entry) => {
                    n_entries += 1;
                    assert_eq!(self.tags[slot_idx], super::tag_of(entry.hash));
                    let (bucket_a, bucket_b) = self.buckets(entry.hash);
                    let bucket = slot_idx / SLOTS_PER_BUCKET;
                    assert!(
                        bucket == bucket_a || bucket == bucket_b,
                        "entry in a foreign bucket"
                    );
                }
            }
        }
        assert_eq!(n_entries, self.len());
    }
}

fn token(i: usize) -> Vec<u8> {
    // JWT-like length, distinct bytes per index.
    format!(
        "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyLXtpfSJ9.sig-{i:08}-{}",
        "x".repeat(i % 7)
    )
    .into_bytes()
}

#[test]
fn overhead_per_entry_is_within_budget() {
    type Claims = [u64; 12];
    // Tag (2) + hash (8) + expiry (8) + boxed slice (16); the Option uses the box's niche.
    assert_eq!(SLOT_OVERHEAD_BYTES, 34);
    // The same holds with a realistic claims-sized value: the value adds only itself.
    let slot_bytes = size_of::<Option<super::Entry<Claims>>>() + size_of::<u16>();
    assert_eq!(slot_bytes - size_of::<Claims>(), SLOT_OVERHEAD_BYTES);
    // Empty slots hold an inline value too: at load factor L the overhead per entry is
    // slot_bytes / L - value. At 90% load with this value it is about 48 bytes.
    let overhead_at_90 = slot_bytes * 10 / 9 - size_of::<Claims>();
    assert!(overhead_at_90 <= 128, "{overhead_at_90}");
}

#[test]
fn capacity_rounds_up_to_power_of_two_buckets() {
    let cache = CuckooCache::<u32>::new(1000, SEED);
    assert_eq!(cache.capacity(), 1024);
    let tiny = CuckooCache::<u32>::new(0, SEED);
    assert_eq!(tiny.capacity(), 2 * SLOTS_PER_BUCKET);
}

#[test]
fn insert_get_replace_remove() {
    let mut cache = CuckooCache::new(64, SEED);
    let (a, b) = (token(1), token(2));
    assert_eq!(cache.insert(&a, 10_u32, 100, 0), Insert::Inserted);
    assert_eq!(cache.insert(&b, 20, 100, 0), Insert::Inserted);
    assert_eq!(cache.get(&a, 1), Some(&10));
    assert_eq!(cache.get(&b, 1), Some(&20));
    assert_eq!(cache.insert(&a, 11, 200, 1), Insert::Replaced);
    assert_eq!(cache.get(&a, 150), Some(&11));
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.remove(&a), Some(11));
    assert_eq!(cache.remove(&a), None);
    assert_eq!(cache.get(&a, 2), None);
    assert_eq!(cache.len(), 1);
    // A prefix or extension of a cached token is a different token.
    assert_eq!(cache.get(&b[..b.len() - 1], 2), None);
    let mut longer = b.clone();
    longer.push(b'!');
    assert_eq!(cache.get(&longer, 2), None);
    let stats = cache.stats();
    assert_eq!(stats.hits, 3);
    assert_eq!(stats.misses, 3);
    assert_eq!(stats.inserts, 3);
    cache.check_invariants();
}

#[test]
fn ttl_expiry_is_a_miss_and_frees_the_slot() {
    let mut cache = CuckooCache::new(64, SEED);
    let a = token(7);
    assert_eq!(cache.insert(&a, 1_u8, 100, 50), Insert::Inserted);
    assert_eq!(cache.get(&a, 99), Some(&1));
    assert_eq!(cache.get(&a, 100), None, "now_s == expires_at_s is expired");
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.stats().expired, 1);
    assert_eq!(cache.get(&a, 99), None, "freed, not merely hidden");
    // Inserting an already-expired token stores nothing and drops an older entry.
    assert_eq!(cache.insert(&a, 2, 100, 100), Insert::Expired);
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.insert(&a, 3, 200, 100), Insert::Inserted);
    assert_eq!(cache.insert(&a, 4, 150, 150), Insert::Expired);
    assert_eq!(cache.peek(&a), None);
    cache.check_invariants();
}

#[test]
fn too_long_tokens_are_not_cached() {
    let mut cache = CuckooCache::new(64, SEED);
    let huge = vec![b'a'; super::MAX_TOKEN_BYTES + 1];
    assert_eq!(cache.insert(&huge, 1_u8, 100, 0), Insert::TooLong);
    assert_eq!(cache.len(), 0);
}

#[test]
fn forced_collisions_never_return_another_tokens_value() {
    // Every token hashes to 0: same tag, same two buckets, same stored hash. Only the byte
    // comparison tells them apart.
    let mut cache = CuckooCache::with_hash_mask(64, SEED, 0);
    let n_fit = 2 * SLOTS_PER_BUCKET;
    for i in 0..n_fit {
        assert_eq!(cache.insert(&token(i), i, 1000, 0), Insert::Inserted);
    }
    for i in 0..n_fit {
        assert_eq!(cache.get(&token(i), 1), Some(&i));
    }
    let before = cache.stats().collisions_rejected;
    assert!(before > 0, "lookups must have rejected colliding slots");
    // Tokens that collide but were never inserted miss, and are counted.
    for i in n_fit..n_fit + 20 {
        assert_eq!(cache.get(&token(i), 1), None);
    }
    assert_eq!(
        cache.stats().collisions_rejected,
        before + 20 * n_fit as u64,
        "each miss compared all 8 colliding slots"
    );
    // A ninth colliding token does not fit: the walk exhausts its kicks and evicts one entry.
    assert_eq!(
        cache.insert(&token(99), 99, 1000, 0),
        Insert::InsertedWithEviction
    );
    assert_eq!(cache.stats().evictions, 1);
    assert_eq!(cache.len(), n_fit);
    let mut n_present = 0;
    for i in (0..n_fit).chain([99]) {
        if let Some(&value) = cache.get(&token(i), 1) {
            assert_eq!(value, i);
            n_present += 1;
        }
    }
    assert_eq!(n_present, n_fit);
    cache.check_invariants();
}

#[test]
fn full_table_evicts_boundedly_and_stays_correct() {
    let mut cache = CuckooCache::new(1024, SEED);
    let n_inserted = 3 * cache.capacity();
    let mut n_evicting = 0;
    for i in 0..n_inserted {
        match cache.insert(&token(i), i, 1000, 0) {
            Insert::Inserted => {}
            Insert::InsertedWithEviction => n_evicting += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let stats = cache.stats();
    assert_eq!(stats.evictions, n_evicting);
    // Every insert either found room or evicted exactly one entry.
    assert_eq!(cache.len() as u64 + stats.evictions, n_inserted as u64);
    // Load factor reached before evicting is high (bucketized cuckoo: > 90%).
    assert!(
        cache.len() * 100 >= cache.capacity() * 90,
        "len {}",
        cache.len()
    );
    let mut n_present = 0;
    for i in 0..n_inserted {
        if let Some(&value) = cache.get(&token(i), 1) {
            assert_eq!(value, i);
            n_present += 1;
        }
    }
    assert_eq!(n_present, cache.len());
    cache.check_invariants();
}

#[test]
fn saturated_table_bounds_insert_work() {
    let mut cache = CuckooCache::new(1024, SEED);
    for i in 0..2 * cache.capacity() {
        cache.insert(&token(i), i, 1000, 0);
    }
    assert!(cache.len() * 100 >= cache.capacity() * super::SATURATED_LOAD_PCT);
    let before = cache.stats();
    let n_new = 500;
    for i in 0..n_new {
        cache.insert(&token(1_000_000 + i), i, 1000, 0);
    }
    let after = cache.stats();
    let n_kicks = after.kicks - before.kicks;
    assert!(
        n_kicks <= (n_new * super::SATURATED_KICKS) as u64,
        "{n_kicks} kicks"
    );
    // Nearly every insert into a saturated table evicts, and each eviction is counted.
    assert!(after.evictions - before.evictions >= n_new as u64 / 2);
    assert_eq!(
        cache.len() as u64 + after.evictions,
        (2 * cache.capacity() + n_new) as u64
    );
    cache.check_invariants();
}

#[test]
fn load_factor_before_first_eviction_exceeds_90_percent() {
    let mut cache = CuckooCache::new(1 << 14, SEED);
    let mut i = 0;
    while cache.insert(&token(i), (), 1000, 0) == Insert::Inserted {
        i += 1;
    }
    assert!(
        i * 100 >= cache.capacity() * 90,
        "first eviction at {i} of {}",
        cache.capacity()
    );
}

/// `n` distinct tokens whose candidate buckets in `cache` are exactly `(bucket_a, bucket_b)`.
fn tokens_in_buckets<V>(
    cache: &CuckooCache<V>,
    bucket_a: usize,
    bucket_b: usize,
    n: usize,
) -> Vec<Vec<u8>> {
    (0..100_000)
        .map(|i| format!("probe-{i}").into_bytes())
        .filter(|t| cache.buckets(cache.hash(t)) == (bucket_a, bucket_b))
        .take(n)
        .collect()
}

#[test]
fn full_buckets_relocate_instead_of_evicting() {
    // 4 buckets. Bucket 0 holds tokens whose other bucket (2) is empty; bucket 1 likewise (3).
    // A token whose candidates are 0 and 1 finds both full: displacement must move an entry to
    // bucket 2 or 3 rather than evict anything.
    let mut cache = CuckooCache::new(4 * SLOTS_PER_BUCKET, SEED);
    let mut stored = tokens_in_buckets(&cache, 0, 2, SLOTS_PER_BUCKET);
    stored.extend(tokens_in_buckets(&cache, 1, 3, SLOTS_PER_BUCKET));
    assert_eq!(stored.len(), 2 * SLOTS_PER_BUCKET);
    for (i, t) in stored.iter().enumerate() {
        assert_eq!(cache.insert(t, i, 1000, 0), Insert::Inserted);
    }
    assert!(cache.tags[..2 * SLOTS_PER_BUCKET]
        .iter()
        .all(|&tag| tag != super::TAG_EMPTY));
    let newcomer = tokens_in_buckets(&cache, 0, 1, 1).remove(0);
    assert_eq!(cache.insert(&newcomer, 99, 1000, 0), Insert::Inserted);
    assert_eq!(cache.stats().evictions, 0);
    assert_eq!(cache.get(&newcomer, 1), Some(&99));
    for (i, t) in stored.iter().enumerate() {
        assert_eq!(cache.get(t, 1), Some(&i));
    }
    cache.check_invariants();
}

#[test]
fn expired_entries_make_room_before_anything_is_evicted() {
    let mut cache = CuckooCache::with_hash_mask(64, SEED, 0);
    for i in 0..2 * SLOTS_PER_BUCKET {
        cache.insert(&token(i), i, 10, 0);
    }
    assert_eq!(cache.insert(&token(50), 50, 100, 10), Insert::Inserted);
    assert_eq!(cache.stats().evictions, 0);
    assert_eq!(cache.stats().expired, 1);
    assert_eq!(cache.get(&token(50), 11), Some(&50));
}

#[test]
fn retain_removes_by_value() {
    let mut cache = CuckooCache::new(256, SEED);
    for i in 0..100 {
        cache.insert(&token(i), (i % 3, i), 1000, 0);
    }
    // Revoke everything signed by "kid" 1.
    assert_eq!(cache.retain(|&(kid, _)| kid != 1), 33);
    assert_eq!(cache.len(), 67);
    for i in 0..100 {
        let got = cache.get(&token(i), 1).copied();
        if i % 3 == 1 {
            assert_eq!(got, None);
        } else {
            assert_eq!(got, Some((i % 3, i)));
        }
    }
    cache.check_invariants();
}

#[test]
fn sweep_cursor_advances_under_budget_and_wraps() {
    let mut cache = CuckooCache::new(64, SEED);
    for i in 0..40 {
        let expires_at_s = if i % 2 == 0 { 10 } else { 1000 };
        cache.insert(&token(i), i, expires_at_s, 0);
    }
    let capacity = cache.capacity();
    let budget = 10;
    let mut n_freed = 0;
    for call in 0..capacity / budget {
        n_freed += cache.sweep_expired(20, budget);
        assert_eq!(cache.sweep_cursor, (call + 1) * budget);
    }
    // The last partial chunk finishes the pass and wraps the cursor.
    n_freed += cache.sweep_expired(20, budget);
    assert_eq!(
        cache.sweep_cursor,
        (capacity / budget + 1) * budget % capacity
    );
    assert_eq!(n_freed, 20);
    assert_eq!(cache.len(), 20);
    assert_eq!(cache.stats().expired, 20);
    // Nothing live was swept.
    assert_eq!(cache.sweep_expired(20, capacity * 3), 0);
    for i in (1..40).step_by(2) {
        assert_eq!(cache.get(&token(i), 20), Some(&i));
    }
    cache.check_invariants();
}

#[test]
fn different_seeds_place_tokens_differently() {
    let a = CuckooCache::<()>::new(1 << 12, 1);
    let b = CuckooCache::<()>::new(1 << 12, 2);
    let t = token(3);
    assert_ne!(a.hash(&t), b.hash(&t));
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        key_idx: usize,
        value: u32,
        ttl_s: u64,
    },
    Get {
        key_idx: usize,
    },
    Remove {
        key_idx: usize,
    },
    Advance {
        dt_s: u64,
    },
    Sweep {
        max_slots: usize,
    },
    RetainOdd,
}

fn op_strategy(n_keys: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..n_keys, any::<u32>(), 0_u64..40)
            .prop_map(|(key_idx, value, ttl_s)| Op::Insert { key_idx, value, ttl_s }),
        6 => (0..n_keys).prop_map(|key_idx| Op::Get { key_idx }),
        2 => (0..n_keys).prop_map(|key_idx| Op::Remove { key_idx }),
        2 => (0_u64..15).prop_map(|dt_s| Op::Advance { dt_s }),
        1 => (0_usize..40).prop_map(|max_slots| Op::Sweep { max_slots }),
        1 => Just(Op::RetainOdd),
    ]
}

/// Runs `ops` against the cache and a `HashMap` model. The cache may forget a live entry only
/// through a counted eviction, and must never return a wrong or expired value.
fn run_model(capacity_entries: usize, hash_mask: u64, keys: &[Vec<u8>], ops: &[Op]) {
    let mut cache = CuckooCache::with_hash_mask(capacity_entries, SEED, hash_mask);
    let mut model: HashMap<Vec<u8>, (u32, u64)> = HashMap::new();
    let mut now_s = 0_u64;
    let mut n_evicting = 0_u64;
    for op in ops {
        let mut evicted = false;
        match *op {
            Op::Insert {
                key_idx,
                value,
                ttl_s,
            } => {
                let key = &keys[key_idx];
                let expires_at_s = now_s + ttl_s;
                let result = cache.insert(key, value, expires_at_s, now_s);
                let was_live = model.get(key).is_some_and(|&(_, exp)| now_s < exp);
                match result {
                    Insert::Expired => {
                        assert_eq!(ttl_s, 0);
                        model.remove(key);
                    }
                    Insert::Replaced => {
                        assert!(model.contains_key(key), "replaced an entry the model lacks");
                        model.insert(key.clone(), (value, expires_at_s));
                    }
                    Insert::Inserted | Insert::InsertedWithEviction => {
                        assert!(
                            !was_live,
                            "a live entry was inserted anew: it had been lost"
                        );
                        model.insert(key.clone(), (value, expires_at_s));
                        if result == Insert::InsertedWithEviction {
                            n_evicting += 1;
                            evicted = true;
                        }
                    }
                    Insert::TooLong => panic!("keys are short"),
                }
            }
            Op::Get { key_idx } => {
                let key = &keys[key_idx];
                let got = cache.get(key, now_s).copied();
                match model.get(key) {
                    Some(&(value, exp)) if now_s < exp => assert_eq!(got, Some(value)),
                    _ => assert_eq!(got, None, "returned an absent or expired entry"),
                }
            }
            Op::Remove { key_idx } => {
                let key = &keys[key_idx];
                let got = cache.remove(key);
                assert_eq!(got, model.remove(key).map(|(value, _)| value));
            }
            Op::Advance { dt_s } => now_s += dt_s,
            Op::Sweep { max_slots } => {
                let n_freed = cache.sweep_expired(now_s, max_slots);
                assert!(n_freed <= max_slots);
            }
            Op::RetainOdd => {
                let n_odd = model.values().filter(|&&(value, _)| value % 2 == 1).count();
                let n_removed = cache.retain(|&value| value % 2 == 0);
                assert_eq!(n_removed, n_odd);
                model.retain(|_, &mut (value, _)| value % 2 == 0);
            }
        }
        // Reconcile: entries may vanish only if expired, or (one) through a counted eviction.
        let mut lost_live = Vec::new();
        model.retain(|key, &mut (value, exp)| {
            if let Some((&got, got_exp)) = cache.peek(key) {
                assert_eq!((got, got_exp), (value, exp), "cache holds a wrong value");
                return true;
            }
            if now_s < exp {
                lost_live.push(key.clone());
            }
            false
        });
        assert!(
            lost_live.len() <= usize::from(evicted),
            "lost live entries without eviction: {} (evicted: {evicted})",
            lost_live.len()
        );
        assert_eq!(cache.len(), model.len());
        assert_eq!(cache.stats().evictions, n_evicting);
    }
    cache.check_invariants();
}

fn model_keys() -> Vec<Vec<u8>> {
    // Includes the empty token and tokens that are prefixes of each other.
    let mut keys: Vec<Vec<u8>> = (0..48).map(token).collect();
    keys.push(Vec::new());
    keys.push(b"a".to_vec());
    keys.push(b"ab".to_vec());
    keys.push(b"abc".to_vec());
    keys
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn model_roomy_table(ops in prop::collection::vec(op_strategy(52), 1..400)) {
        run_model(256, u64::MAX, &model_keys(), &ops);
    }

    #[test]
    fn model_tiny_table_evicts(ops in prop::collection::vec(op_strategy(52), 1..400)) {
        run_model(8, u64::MAX, &model_keys(), &ops);
    }

    #[test]
    fn model_colliding_hashes(ops in prop::collection::vec(op_strategy(52), 1..400)) {
        // Only 4 distinct hashes: tags, buckets and stored hashes collide constantly.
        run_model(16, 0b11, &model_keys(), &ops);
    }
}
