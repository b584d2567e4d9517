//! The bounded building blocks of the keyed tables: `Lru`, a map of at most `max_keys` entries
//! that evicts the least recently touched one, and `Ring`, a fixed-capacity queue of the most
//! recent values.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

const NIL: u32 = u32::MAX;

struct Slot<K, V> {
    key: K,
    value: V,
    /// Towards the most recently touched.
    prev: u32,
    /// Towards the least recently touched.
    next: u32,
}

/// A map bounded to `max_keys` entries; touching an entry makes it the most recent, and
/// inserting into a full map reuses the least recent entry's slot (counted in `n_evictions`).
/// Slots live in one vector linked by index, so the map allocates nothing per touch.
pub(crate) struct Lru<K, V> {
    map: HashMap<K, u32>,
    slots: Vec<Slot<K, V>>,
    head: u32,
    tail: u32,
    max_keys: usize,
    n_evictions: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map for at most `max_keys` entries (grown on demand, never beyond).
    pub(crate) fn new(max_keys: usize) -> Self {
        assert!(
            max_keys >= 1 && max_keys < NIL as usize,
            "max_keys {max_keys}"
        );
        Lru {
            map: HashMap::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            max_keys,
            n_evictions: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn n_evictions(&self) -> u64 {
        self.n_evictions
    }

    /// The entry for `key`, without touching it.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map
            .get(key)
            .map(|&idx| &self.slots[idx as usize].value)
    }

    /// The entry for `key`, made the most recent; created with `owned()` and `make()` when
    /// missing (evicting the least recent entry when full).
    pub(crate) fn touch<Q>(
        &mut self,
        key: &Q,
        owned: impl FnOnce() -> K,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let idx = if let Some(&idx) = self.map.get(key) {
            self.unlink(idx);
            idx
        } else if self.slots.len() < self.max_keys {
            let idx = self.slots.len() as u32;
            if self.slots.len() == self.slots.capacity() {
                // Double, but never past the bound.
                let more = self
                    .slots
                    .len()
                    .max(16)
                    .min(self.max_keys - self.slots.len());
                self.slots.reserve_exact(more);
            }
            let key = owned();
            self.map.insert(key.clone(), idx);
            self.slots.push(Slot {
                key,
                value: make(),
                prev: NIL,
                next: NIL,
            });
            idx
        } else {
            let idx = self.tail;
            debug_assert_ne!(idx, NIL);
            self.unlink(idx);
            let key = owned();
            let slot = &mut self.slots[idx as usize];
            self.map.remove::<K>(&slot.key);
            self.map.insert(key.clone(), idx);
            slot.key = key;
            slot.value = make();
            self.n_evictions += 1;
            idx
        };
        self.push_front(idx);
        debug_assert!(self.map.len() <= self.max_keys);
        &mut self.slots[idx as usize].value
    }

    /// Every value (for memory accounting in tests and metrics).
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().map(|s| &s.value)
    }

    /// Every entry, in slot order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots.iter().map(|s| (&s.key, &s.value))
    }

    /// Heap bytes of the map and slots themselves (not what the values point to).
    pub(crate) fn own_heap_bytes(&self) -> usize {
        // hashbrown reports 7/8 of its buckets as capacity; each bucket is an entry plus a
        // control byte.
        self.slots.capacity() * std::mem::size_of::<Slot<K, V>>()
            + (self.map.capacity() * 8 / 7 + 1) * Self::map_entry_bytes()
    }

    /// Worst-case bytes per key of the slot and the map. Under churn (evict one, insert one)
    /// hashbrown's tombstones make it grow once its live entries pass half its capacity,
    /// so its buckets settle below `2 * max_keys * 8/7` rounded up to a power of two: at most
    /// about 4.6 buckets per key, counted as 5.
    pub(crate) fn per_key_bytes() -> usize {
        std::mem::size_of::<Slot<K, V>>() + 5 * Self::map_entry_bytes()
    }

    fn map_entry_bytes() -> usize {
        std::mem::size_of::<(K, u32)>() + 1
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next) = {
            let s = &self.slots[idx as usize];
            (s.prev, s.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, idx: u32) {
        let old_head = self.head;
        {
            let s = &mut self.slots[idx as usize];
            s.prev = NIL;
            s.next = old_head;
        }
        if old_head == NIL {
            self.tail = idx;
        } else {
            self.slots[old_head as usize].prev = idx;
        }
        self.head = idx;
    }
}

/// The `cap` most recent values, oldest first; allocated at exactly `cap` on first push.
#[derive(Debug, Clone)]
pub(crate) struct Ring<T> {
    items: VecDeque<T>,
    cap: usize,
}

impl<T> Ring<T> {
    pub(crate) fn new(cap: usize) -> Self {
        assert!(cap >= 1);
        Ring {
            items: VecDeque::new(),
            cap,
        }
    }

    pub(crate) fn push(&mut self, value: T) {
        if self.items.capacity() == 0 {
            self.items.reserve_exact(self.cap);
        }
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(value);
        debug_assert!(self.items.len() <= self.cap);
    }

    /// Drops values from the oldest end while `old` says so.
    pub(crate) fn drop_while(&mut self, mut old: impl FnMut(&T) -> bool) {
        while self.items.front().is_some_and(&mut old) {
            self.items.pop_front();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.items.iter()
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<T>()
    }

    /// Heap bytes when full.
    pub(crate) fn worst_case_bytes(cap: usize) -> usize {
        cap * std::mem::size_of::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::{Lru, Ring};

    #[test]
    fn lru_evicts_the_least_recently_touched_key_and_counts_it() {
        let mut lru: Lru<u32, u32> = Lru::new(3);
        for k in 0..3 {
            *lru.touch(&k, || k, || 0) += k;
        }
        lru.touch(&0, || 0, || 99); // 0 is now the most recent; 1 the least.
        lru.touch(&7, || 7, || 70);
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.n_evictions(), 1);
        assert!(lru.get(&1).is_none(), "the least recent key went");
        assert_eq!(lru.get(&0), Some(&0), "a touch keeps the value");
        assert_eq!(lru.get(&7), Some(&70));
        lru.touch(&8, || 8, || 80);
        assert!(lru.get(&2).is_none());
        assert_eq!(lru.n_evictions(), 2);
        for k in 100..1000 {
            lru.touch(&k, || k, || k);
            assert!(lru.len() <= 3);
        }
        assert_eq!(lru.values().count(), 3);
        assert!(lru.slots.capacity() <= 3);
    }

    #[test]
    fn ring_keeps_the_most_recent_values_and_no_more() {
        let mut r = Ring::new(3);
        for v in 0..10 {
            r.push(v);
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [7, 8, 9]);
        assert_eq!(r.heap_bytes(), Ring::<i32>::worst_case_bytes(3));
        r.drop_while(|&v| v < 9);
        assert_eq!(r.len(), 1);
        r.clear();
        assert_eq!(r.len(), 0);
    }
}
