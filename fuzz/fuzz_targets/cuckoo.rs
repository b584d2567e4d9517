//! Fuzz target: the cuckoo cache (`subzero::cache::CuckooCache`) against a `HashMap` model,
//! with forced hash collisions, expiry, sweeps and removals driven by the input.
//!
//! The cache may drop entries (counted evictions), but it must never answer a value the model
//! does not hold for exactly those bytes, never answer an expired entry, and, while nothing
//! was ever evicted, must hold exactly the model's live entries.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use subzero::cache::{CuckooCache, Insert};

/// Tokens come from a small alphabet of lengths and bytes, so they repeat and collide.
fn token(byte: u8) -> Vec<u8> {
    vec![b'a' + (byte & 0x07); usize::from(byte >> 3 & 0x07) + 1]
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, ops)) = data.split_first() else {
        return;
    };
    // Capacity 8..64 slots; a hash mask of 0..=3 bits forces collisions, or none.
    let capacity = 8 << (shape & 0x03);
    let hash_mask = match shape >> 2 & 0x03 {
        0 => 0,
        1 => 0x3,
        2 => 0xff,
        _ => u64::MAX,
    };
    let mut cache: CuckooCache<u32> = CuckooCache::with_hash_mask(capacity, 7, hash_mask);
    let mut model: HashMap<Vec<u8>, (u32, u64)> = HashMap::new();
    let mut now_s: u64 = 100;
    for (op_idx, op) in ops.chunks_exact(3).enumerate() {
        let key = token(op[1]);
        let value = op_idx as u32;
        match op[0] % 6 {
            0 | 1 => {
                let expires_at_s = now_s + u64::from(op[2] % 8);
                match cache.insert(&key, value, expires_at_s, now_s) {
                    Insert::Inserted | Insert::Replaced | Insert::InsertedWithEviction => {
                        model.insert(key.clone(), (value, expires_at_s));
                    }
                    Insert::Expired => {
                        model.remove(&key);
                    }
                    Insert::TooLong => unreachable!("tokens here are short"),
                }
            }
            2 => {
                let got = cache.remove(&key);
                let want = model.remove(&key).map(|(v, _)| v);
                if got.is_some() {
                    assert_eq!(got, want, "removed a value the model does not hold");
                }
            }
            3 => now_s += u64::from(op[2] % 4),
            4 => {
                cache.sweep_expired(now_s, usize::from(op[2]));
            }
            _ => {
                let live = model
                    .get(&key)
                    .filter(|(_, exp)| now_s < *exp)
                    .map(|(v, _)| *v);
                assert_eq!(
                    cache.contains(&key, now_s),
                    cache_get(&mut cache, &key, now_s).is_some()
                );
                let got = cache_get(&mut cache, &key, now_s);
                if let Some(got) = got {
                    assert_eq!(
                        Some(got),
                        live,
                        "a value the model does not hold, or expired"
                    );
                } else if cache.stats().evictions == 0 {
                    assert_eq!(live, None, "lost a live entry without any eviction");
                }
            }
        }
        assert!(cache.len() <= cache.capacity());
    }
    if cache.stats().evictions == 0 {
        for (key, (value, exp)) in &model {
            let got = cache_get(&mut cache, key, now_s);
            assert_eq!(
                got,
                (now_s < *exp).then_some(*value),
                "final state for {key:?}"
            );
        }
    }
});

fn cache_get(cache: &mut CuckooCache<u32>, key: &[u8], now_s: u64) -> Option<u32> {
    cache.get(key, now_s).copied()
}
