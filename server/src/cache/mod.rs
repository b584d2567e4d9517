//! Shard-local bucketized cuckoo cache of validated tokens.
//!
//! Each shard owns one [`CuckooCache`]; it is never shared, so it has no locks. The cache maps
//! the full bytes of a token to a value (the validated claims) until the token's `exp`.
//!
//! Layout: `n_buckets` (a power of two, at least 2) buckets of [`SLOTS_PER_BUCKET`] slots. A
//! token hashes once with xxh3-64 (seeded per process by the caller); the hash gives the
//! token's two candidate buckets and a 16-bit tag. Tags live in their own dense array, so a
//! miss reads two small runs of tags and nothing else; a tag match then confirms the stored
//! 64-bit hash and the full token bytes, so a collision can never return another token's value.
//!
//! Architecture Invariant: a lookup probes at most 2 buckets and never allocates; an insert
//! allocates only the boxed token bytes and moves at most [`MAX_KICKS`] entries; all tables are
//! allocated in [`CuckooCache::new`]. No I/O, no clock: callers pass `now_s`.
//!
//! Memory: each slot costs [`SLOT_OVERHEAD_BYTES`] beyond the value (a 2-byte tag, the 8-byte
//! hash, the 8-byte expiry and the 16-byte boxed-slice pointer: 34 bytes for a value with
//! alignment ≤ 8), plus the token bytes themselves and the allocator's header for that box
//! (8–16 bytes with glibc malloc). Values are stored inline, so an empty slot also holds a
//! value's space: at load factor `L` the overhead per cached entry is
//! `(34 + size_of::<V>()) / L - size_of::<V>()`. For a 96-byte value at 90% load that is 48
//! bytes (64 with the allocator header): within the 128-byte budget. Size the cache near the
//! expected entry count; a mostly empty table wastes value-sized slots.

#[cfg(test)]
mod tests;

use std::mem::size_of;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Slots per bucket: four 16-bit tags fill 8 bytes, and 4-way buckets let two-choice cuckoo
/// hashing reach load factors above 95% before insertions start to evict.
pub const SLOTS_PER_BUCKET: usize = 4;

/// Maximum entries displaced by one insertion before the last displaced entry is evicted.
pub const MAX_KICKS: usize = 500;

/// Kick limit once the table is saturated (at least [`SATURATED_LOAD_PCT`] full). A full
/// cache under churn would otherwise spend all [`MAX_KICKS`] moves (~20 µs) on every insert
/// only to evict anyway; past this load a short walk followed by eviction of a random victim
/// (random replacement) is the better trade.
pub const SATURATED_KICKS: usize = 16;

/// Load factor, in percent of slots, from which insertions use [`SATURATED_KICKS`].
pub const SATURATED_LOAD_PCT: usize = 96;

/// Largest capacity accepted by [`CuckooCache::new`], in entries (2^28 slots ≈ 9 GiB of slots).
pub const MAX_CAPACITY_ENTRIES: usize = 1 << 28;

/// Longest token the cache stores: the longest token the verifier accepts, so every verified
/// token can be cached; longer tokens are not stored ([`Insert::TooLong`]).
pub use crate::auth::MAX_TOKEN_BYTES;

/// Bytes each slot costs beyond the value and the token bytes (tag + hash + expiry + box).
pub const SLOT_OVERHEAD_BYTES: usize = size_of::<Option<Entry<()>>>() + size_of::<u16>();

const _: () = assert!(SLOT_OVERHEAD_BYTES <= 64, "per-slot overhead budget");

/// Tag value of an empty slot; [`tag_of`] never returns it.
const TAG_EMPTY: u16 = 0;

/// Odd multiplier (2^64 / golden ratio) that mixes the hash before the second bucket is taken.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// What [`CuckooCache::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// The token was not cached before and now is; nothing was evicted.
    Inserted,
    /// The token was cached; its value and expiry were replaced in place.
    Replaced,
    /// The token is now cached, but the displacement path ran out (after [`MAX_KICKS`] moves,
    /// or [`SATURATED_KICKS`] in a saturated table) and
    /// the last displaced entry (possibly this token) was dropped; counted in `evictions`.
    InsertedWithEviction,
    /// `expires_at_s <= now_s`: not stored (and any previous entry for the token was removed).
    Expired,
    /// The token is longer than [`MAX_TOKEN_BYTES`]: not stored.
    TooLong,
}

/// Counters since construction. All counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `get` calls that returned a value.
    pub hits: u64,
    /// `get` calls that returned nothing (absent or expired).
    pub misses: u64,
    /// Values stored by `insert` (new entries and in-place replacements).
    pub inserts: u64,
    /// Live entries dropped because an insertion's displacement path was exhausted.
    pub evictions: u64,
    /// Entries freed because their `expires_at_s` had passed (on lookup, insert or sweep).
    pub expired: u64,
    /// Slots whose tag matched a lookup but whose hash or token bytes did not.
    pub collisions_rejected: u64,
    /// Entries displaced to their other bucket by insertions (cuckoo kicks).
    pub kicks: u64,
}

/// One cached token. `Option<Entry<V>>` uses the box's non-null niche, so it costs no tag byte.
struct Entry<V> {
    hash: u64,
    expires_at_s: u64,
    token: Box<[u8]>,
    value: V,
}

/// Bucketized two-choice cuckoo hash table from token bytes to `V`, with per-entry expiry.
pub struct CuckooCache<V> {
    /// One tag per slot, `TAG_EMPTY` when the slot is empty; bucket `b` owns `b*4..b*4+4`.
    tags: Box<[u16]>,
    /// One entry per slot, `Some` exactly when the slot's tag is not `TAG_EMPTY`.
    slots: Box<[Option<Entry<V>>]>,
    bucket_mask: usize,
    seed: u64,
    /// Applied (bitwise and) to every hash; `u64::MAX` except in tests that force collisions.
    hash_mask: u64,
    n_entries: usize,
    sweep_cursor: usize,
    /// xorshift64 state choosing which slot to displace; never zero.
    rng: u64,
    stats: CacheStats,
}

impl<V> CuckooCache<V> {
    /// A cache with room for at least `capacity_entries` slots (rounded up to a power-of-two
    /// number of buckets, at least 2), hashing with xxh3-64 under `seed`.
    ///
    /// Insertions start to evict above roughly 95% load; size with headroom. Allocates every
    /// table now. Panics (at startup) if `capacity_entries` exceeds [`MAX_CAPACITY_ENTRIES`].
    pub fn new(capacity_entries: usize, seed: u64) -> Self {
        Self::with_hash_mask(capacity_entries, seed, u64::MAX)
    }

    /// A cache whose hashes keep only the bits of `hash_mask`, so distinct tokens collide on
    /// purpose: for tests and the `fuzz/` cache target, never for serving.
    #[doc(hidden)]
    pub fn with_hash_mask(capacity_entries: usize, seed: u64, hash_mask: u64) -> Self {
        assert!(
            capacity_entries <= MAX_CAPACITY_ENTRIES,
            "cache capacity {capacity_entries} exceeds {MAX_CAPACITY_ENTRIES}"
        );
        let n_buckets = capacity_entries
            .div_ceil(SLOTS_PER_BUCKET)
            .next_power_of_two()
            .max(2);
        let n_slots = n_buckets * SLOTS_PER_BUCKET;
        let mut slots = Vec::with_capacity(n_slots);
        slots.resize_with(n_slots, || None);
        Self {
            tags: vec![TAG_EMPTY; n_slots].into_boxed_slice(),
            slots: slots.into_boxed_slice(),
            bucket_mask: n_buckets - 1,
            seed,
            hash_mask,
            n_entries: 0,
            sweep_cursor: 0,
            rng: seed | 1,
            stats: CacheStats::default(),
        }
    }

    /// Entries currently stored (expired entries count until a lookup, insert or sweep frees
    /// them).
    pub fn len(&self) -> usize {
        self.n_entries
    }

    /// Whether no entries are stored.
    pub fn is_empty(&self) -> bool {
        self.n_entries == 0
    }

    /// Number of slots (the most entries the table can hold).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Counters since construction.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// The value cached for exactly these token bytes, unless absent or `now_s >= expires_at_s`
    /// (an expired entry is freed). Probes at most two buckets; never allocates.
    pub fn get(&mut self, token: &[u8], now_s: u64) -> Option<&V> {
        let hash = self.hash(token);
        let Some(slot_idx) = self.find(hash, token, true) else {
            self.stats.misses += 1;
            return None;
        };
        let expired = self.slots[slot_idx]
            .as_ref()
            .is_some_and(|entry| now_s >= entry.expires_at_s);
        if expired {
            self.clear_slot(slot_idx);
            self.stats.expired += 1;
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        self.slots[slot_idx].as_ref().map(|entry| &entry.value)
    }

    /// Whether a live entry holds exactly these token bytes; counts nothing and frees nothing.
    pub fn contains(&mut self, token: &[u8], now_s: u64) -> bool {
        let hash = self.hash(token);
        self.find(hash, token, false).is_some_and(|slot_idx| {
            self.slots[slot_idx]
                .as_ref()
                .is_some_and(|entry| now_s < entry.expires_at_s)
        })
    }

    /// Caches `value` for `token` until `expires_at_s`, replacing any previous value.
    ///
    /// Expired entries in the probed buckets count as free space. When both candidate
    /// buckets are full, entries are displaced to their other bucket, at most [`MAX_KICKS`]
    /// times ([`SATURATED_KICKS`] once the table is [`SATURATED_LOAD_PCT`] full); then the last
    /// displaced entry is dropped and counted as an eviction.
    pub fn insert(&mut self, token: &[u8], value: V, expires_at_s: u64, now_s: u64) -> Insert {
        if token.len() > MAX_TOKEN_BYTES {
            return Insert::TooLong;
        }
        let hash = self.hash(token);
        if let Some(slot_idx) = self.find(hash, token, false) {
            if expires_at_s <= now_s {
                self.clear_slot(slot_idx);
                return Insert::Expired;
            }
            if let Some(entry) = self.slots[slot_idx].as_mut() {
                entry.value = value;
                entry.expires_at_s = expires_at_s;
            }
            self.stats.inserts += 1;
            return Insert::Replaced;
        }
        if expires_at_s <= now_s {
            return Insert::Expired;
        }
        self.stats.inserts += 1;
        let entry = Entry {
            hash,
            expires_at_s,
            token: token.into(),
            value,
        };
        self.place(entry, now_s)
    }

    /// Removes the entry for `token` (expired or not) and returns its value.
    pub fn remove(&mut self, token: &[u8]) -> Option<V> {
        let hash = self.hash(token);
        let slot_idx = self.find(hash, token, false)?;
        self.clear_slot(slot_idx).map(|entry| entry.value)
    }

    /// Keeps only the entries whose value satisfies `keep`; returns how many were removed.
    /// Visits every slot: meant for revocation (by `jti`) and key retirement (by `kid`), which
    /// are rare control-plane events.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) -> usize {
        let mut n_removed = 0;
        for slot_idx in 0..self.slots.len() {
            let drop_it = self.slots[slot_idx]
                .as_ref()
                .is_some_and(|entry| !keep(&entry.value));
            if drop_it {
                self.clear_slot(slot_idx);
                n_removed += 1;
            }
        }
        n_removed
    }

    /// Frees expired entries among the next `max_slots` slots after the sweep cursor (wrapping)
    /// and advances the cursor; returns how many entries were freed. Call it from background
    /// work with a per-iteration budget: a full pass takes `capacity() / max_slots` calls.
    pub fn sweep_expired(&mut self, now_s: u64, max_slots: usize) -> usize {
        let n_slots = self.slots.len();
        let mut n_freed = 0;
        for _ in 0..max_slots.min(n_slots) {
            let slot_idx = self.sweep_cursor;
            self.sweep_cursor = (slot_idx + 1) & (n_slots - 1);
            if self.is_expired(slot_idx, now_s) {
                self.clear_slot(slot_idx);
                n_freed += 1;
            }
        }
        self.stats.expired += n_freed as u64;
        n_freed
    }

    fn hash(&self, token: &[u8]) -> u64 {
        xxh3_64_with_seed(token, self.seed) & self.hash_mask
    }

    /// The two candidate buckets of a hash; always distinct (there are at least 2 buckets).
    fn buckets(&self, hash: u64) -> (usize, usize) {
        let bucket_a = (hash as usize) & self.bucket_mask;
        let offset = ((hash.wrapping_mul(MIX) >> 32) as usize) & self.bucket_mask;
        let bucket_b = bucket_a ^ offset.max(1);
        debug_assert!(bucket_b <= self.bucket_mask && bucket_b != bucket_a);
        (bucket_a, bucket_b)
    }

    fn other_bucket(&self, hash: u64, bucket: usize) -> usize {
        let (bucket_a, bucket_b) = self.buckets(hash);
        if bucket == bucket_a {
            bucket_b
        } else {
            bucket_a
        }
    }

    /// Slot index holding exactly `token`, if any. `count_collisions` adds tag matches on other
    /// tokens to the stats (done for lookups only, so the counter means what callers saw).
    fn find(&mut self, hash: u64, token: &[u8], count_collisions: bool) -> Option<usize> {
        let tag = tag_of(hash);
        let (bucket_a, bucket_b) = self.buckets(hash);
        let mut n_collisions = 0;
        let mut found = None;
        'buckets: for bucket in [bucket_a, bucket_b] {
            let base = bucket * SLOTS_PER_BUCKET;
            for slot_idx in base..base + SLOTS_PER_BUCKET {
                if self.tags[slot_idx] != tag {
                    continue;
                }
                let same = self.slots[slot_idx]
                    .as_ref()
                    .is_some_and(|entry| entry.hash == hash && *entry.token == *token);
                if same {
                    found = Some(slot_idx);
                    break 'buckets;
                }
                n_collisions += 1;
            }
        }
        if count_collisions {
            self.stats.collisions_rejected += n_collisions;
        }
        found
    }

    fn is_expired(&self, slot_idx: usize, now_s: u64) -> bool {
        self.slots[slot_idx]
            .as_ref()
            .is_some_and(|entry| now_s >= entry.expires_at_s)
    }

    /// An empty slot in `bucket`, or one whose entry has expired (freed and counted).
    fn free_slot(&mut self, bucket: usize, now_s: u64) -> Option<usize> {
        let base = bucket * SLOTS_PER_BUCKET;
        let range = base..base + SLOTS_PER_BUCKET;
        if let Some(slot_idx) = range.clone().find(|&i| self.tags[i] == TAG_EMPTY) {
            return Some(slot_idx);
        }
        let slot_idx = range.into_iter().find(|&i| self.is_expired(i, now_s))?;
        self.clear_slot(slot_idx);
        self.stats.expired += 1;
        Some(slot_idx)
    }

    fn place(&mut self, entry: Entry<V>, now_s: u64) -> Insert {
        let (bucket_a, bucket_b) = self.buckets(entry.hash);
        let free = match self.free_slot(bucket_a, now_s) {
            Some(slot_idx) => Some(slot_idx),
            None => self.free_slot(bucket_b, now_s),
        };
        if let Some(slot_idx) = free {
            self.fill_slot(slot_idx, entry);
            return Insert::Inserted;
        }
        // Both buckets are full of live entries: random-walk displacement.
        let mut homeless = entry;
        let mut bucket = if self.next_random() & 1 == 0 {
            bucket_a
        } else {
            bucket_b
        };
        let max_kicks = if self.n_entries * 100 >= self.slots.len() * SATURATED_LOAD_PCT {
            SATURATED_KICKS
        } else {
            MAX_KICKS
        };
        for _ in 0..max_kicks {
            let slot_idx =
                bucket * SLOTS_PER_BUCKET + (self.next_random() as usize % SLOTS_PER_BUCKET);
            self.tags[slot_idx] = tag_of(homeless.hash);
            self.stats.kicks += 1;
            let Some(displaced) = self.slots[slot_idx].replace(homeless) else {
                // Unreachable while tags and slots agree; stay correct regardless.
                self.n_entries += 1;
                return Insert::Inserted;
            };
            homeless = displaced;
            bucket = self.other_bucket(homeless.hash, bucket);
            if let Some(free_idx) = self.free_slot(bucket, now_s) {
                self.fill_slot(free_idx, homeless);
                return Insert::Inserted;
            }
        }
        drop(homeless);
        self.stats.evictions += 1;
        Insert::InsertedWithEviction
    }

    fn fill_slot(&mut self, slot_idx: usize, entry: Entry<V>) {
        debug_assert!(self.slots[slot_idx].is_none());
        self.tags[slot_idx] = tag_of(entry.hash);
        self.slots[slot_idx] = Some(entry);
        self.n_entries += 1;
    }

    fn clear_slot(&mut self, slot_idx: usize) -> Option<Entry<V>> {
        self.tags[slot_idx] = TAG_EMPTY;
        let entry = self.slots[slot_idx].take();
        if entry.is_some() {
            self.n_entries -= 1;
        }
        entry
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// The slot tag of a hash: its top 16 bits, never [`TAG_EMPTY`]. The bucket index uses the low
/// bits, so tag and bucket are independent.
fn tag_of(hash: u64) -> u16 {
    ((hash >> 48) as u16).max(1)
}
