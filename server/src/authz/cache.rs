//! The shard-local decision cache: (subject, permission, object) → an answer computed at one
//! snapshot revision, valid only while that revision is current.
//!
//! A hit requires the entry's revision to equal the revision of the snapshot the shard reads
//! now, so nothing computed before a write (a delete acknowledged at revision R) is served once
//! the shard holds R. Bounded: a fixed array of two-way buckets, each key confirmed in full (no
//! false hits on a hash collision), the older entry of a full bucket replaced. No clocks, no
//! I/O; one shard owns it (`&mut self`).

use xxhash_rust::xxh3::Xxh3;

use super::Decision;

/// Largest capacity accepted, in entries.
pub const MAX_CACHE_ENTRIES: usize = 1 << 24;

struct Entry<V> {
    hash: u64,
    /// subject, permission and object concatenated; the lengths split them.
    key: Box<str>,
    subject_len: u32,
    permission_len: u32,
    revision: u64,
    stamp: u64,
    value: V,
}

impl<V> Entry<V> {
    fn is(&self, hash: u64, subject: &str, permission: &str, object: &str) -> bool {
        let s = self.subject_len as usize;
        let p = s + self.permission_len as usize;
        self.hash == hash
            && self.key.get(..s) == Some(subject)
            && self.key.get(s..p) == Some(permission)
            && self.key.get(p..) == Some(object)
    }
}

/// A bounded cache of check answers keyed by (subject, permission, object). `V` is what the
/// shard keeps: a [`Decision`], or the response it renders from one.
pub struct DecisionCache<V = Decision> {
    slots: Vec<Option<Entry<V>>>,
    seed: u64,
    stamp: u64,
    n_hits: u64,
    n_misses: u64,
}

impl<V> DecisionCache<V> {
    /// A cache of at least `capacity` entries (rounded up to a power of two, at least 2, at
    /// most [`MAX_CACHE_ENTRIES`]); `seed` keys its hash (random per process).
    pub fn new(capacity: usize, seed: u64) -> Self {
        let n = capacity.clamp(2, MAX_CACHE_ENTRIES).next_power_of_two();
        DecisionCache {
            slots: (0..n).map(|_| None).collect(),
            seed,
            stamp: 0,
            n_hits: 0,
            n_misses: 0,
        }
    }

    fn hash(&self, subject: &str, permission: &str, object: &str) -> u64 {
        let mut h = Xxh3::with_seed(self.seed);
        h.update(subject.as_bytes());
        h.update(&[0]);
        h.update(permission.as_bytes());
        h.update(&[0]);
        h.update(object.as_bytes());
        h.digest()
    }

    fn bucket(&self, hash: u64) -> usize {
        (hash as usize) & (self.slots.len() - 1) & !1
    }

    /// The answer cached for this key at exactly `revision` (the revision of the snapshot the
    /// shard would evaluate against now).
    pub fn get(
        &mut self,
        subject: &str,
        permission: &str,
        object: &str,
        revision: u64,
    ) -> Option<&V> {
        let hash = self.hash(subject, permission, object);
        let b = self.bucket(hash);
        let found = (b..b + 2).find(|&i| {
            self.slots[i]
                .as_ref()
                .is_some_and(|e| e.revision == revision && e.is(hash, subject, permission, object))
        });
        match found {
            Some(i) => {
                self.n_hits += 1;
                self.slots[i].as_ref().map(|e| &e.value)
            }
            None => {
                self.n_misses += 1;
                None
            }
        }
    }

    /// Remembers the answer computed at `revision`. Replaces the same key, else a free or
    /// stale slot (older than `revision`), else the bucket's older entry.
    pub fn insert(
        &mut self,
        subject: &str,
        permission: &str,
        object: &str,
        revision: u64,
        value: V,
    ) {
        let (Ok(subject_len), Ok(permission_len)) = (
            u32::try_from(subject.len()),
            u32::try_from(permission.len()),
        ) else {
            return;
        };
        let hash = self.hash(subject, permission, object);
        let b = self.bucket(hash);
        let score = |slot: Option<&Entry<V>>| match slot {
            Some(e) if e.is(hash, subject, permission, object) => (0, 0),
            None => (1, 0),
            Some(e) if e.revision < revision => (2, e.stamp),
            Some(e) => (3, e.stamp),
        };
        let i = if score(self.slots[b].as_ref()) <= score(self.slots[b + 1].as_ref()) {
            b
        } else {
            b + 1
        };
        self.stamp += 1;
        let mut key = String::with_capacity(subject.len() + permission.len() + object.len());
        key.push_str(subject);
        key.push_str(permission);
        key.push_str(object);
        self.slots[i] = Some(Entry {
            hash,
            key: key.into_boxed_str(),
            subject_len,
            permission_len,
            revision,
            stamp: self.stamp,
            value,
        });
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    /// Capacity in entries.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.n_hits
    }

    /// Lookups that found nothing current.
    pub fn misses(&self) -> u64 {
        self.n_misses
    }
}
