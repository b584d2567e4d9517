//! Bounded single-producer single-consumer queue, split into a move-only `Producer` and
//! `Consumer`, with an eventfd wake-up for parked consumers.
//!
//! Single-producer and single-consumer are types, not comments: `channel` hands out exactly one
//! `Producer` and one `Consumer`; neither is `Clone` nor `Sync`, and both push and pop take
//! `&mut self`, so safe code cannot reach one end from two threads at once. Head and tail sit on
//! separate cache lines so the two sides do not false-share.
//!
//! The consumer (a shard loop) keeps an eventfd read armed on its ring. A producer writes the
//! eventfd only when the consumer has said it is about to park, so a busy shard takes no
//! syscalls for messages that arrive while it is running.
//!
//! ```
//! let (mut tx, mut rx) = subzero::shard::spsc::channel::<u32>(4);
//! tx.push(7).unwrap();
//! let consumer_thread = std::thread::spawn(move || rx.pop());
//! assert_eq!(consumer_thread.join().unwrap(), Some(7));
//! fn is_send<T: Send>() {}
//! is_send::<subzero::shard::spsc::Producer<u32>>();
//! is_send::<subzero::shard::spsc::Consumer<u32>>();
//! ```
//!
//! Neither end can be cloned:
//! ```compile_fail
//! let (_tx, rx) = subzero::shard::spsc::channel::<u32>(4);
//! let second_consumer = rx.clone();
//! ```
//! ```compile_fail
//! let (tx, _rx) = subzero::shard::spsc::channel::<u32>(4);
//! let second_producer = tx.clone();
//! ```
//! nor shared between threads by reference:
//! ```compile_fail
//! fn is_sync<T: Sync>() {}
//! is_sync::<subzero::shard::spsc::Consumer<u32>>();
//! ```
//! ```compile_fail
//! fn is_sync<T: Sync>() {}
//! is_sync::<subzero::shard::spsc::Producer<u32>>();
//! ```

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Keeps its value on its own 128-byte line (two 64-byte lines: adjacent-line prefetch).
#[repr(align(128))]
struct CachePadded<T>(T);

const _: () = assert!(std::mem::align_of::<CachePadded<AtomicUsize>>() == 128);

/// The shared ring. Only `Producer` writes `tail` and the slots in `[tail, head + capacity)`;
/// only `Consumer` writes `head` and reads the slots in `[head, tail)`.
struct Ring<T> {
    /// Next slot the consumer reads.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: the ring is reached only through the one `Producer` and the one `Consumer` (plus
// `Gauge`s that read the two atomics only). The producer writes only slots outside [head, tail)
// and publishes them with a release store of `tail`; the consumer reads only slots inside
// [head, tail) after an acquire load of `tail`, and frees them with a release store of `head`
// that the producer acquires. Values of T move between threads, so T: Send suffices.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Ring<T> {
    fn len(&self) -> usize {
        // Head first: `tail` only grows and never passes `head + capacity` as seen by the
        // producer, so the difference is never negative; a racing pop and push can make it
        // overshoot, hence the cap.
        let head = self.head.0.load(Ordering::Acquire);
        let tail = self.tail.0.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.mask + 1)
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Both ends are gone (this is the last `Arc`), so plain reads of the indexes are exact.
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        let mut at = head;
        while at != tail {
            // SAFETY: slots in [head, tail) were written by the producer and never read.
            unsafe { self.slots[at & self.mask].get_mut().assume_init_drop() };
            at = at.wrapping_add(1);
        }
    }
}

/// A bounded SPSC queue of up to `capacity` items (rounded up to a power of two, at least 2).
pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(2).next_power_of_two();
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let ring = Arc::new(Ring {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        slots,
        mask: capacity - 1,
    });
    debug_assert!(capacity.is_power_of_two());
    (
        Producer {
            ring: Arc::clone(&ring),
            cached_head: 0,
            not_sync: PhantomData,
        },
        Consumer {
            ring,
            cached_tail: 0,
            not_sync: PhantomData,
        },
    )
}

/// The sending end. Move it into the one thread that sends; it cannot be cloned or shared.
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    /// Last `head` seen: the producer reloads it only when the ring looks full.
    cached_head: usize,
    not_sync: PhantomData<Cell<()>>,
}

impl<T> Producer<T> {
    /// Appends; gives the item back when the queue is full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        let ring = &*self.ring;
        let tail = ring.tail.0.load(Ordering::Relaxed);
        if tail.wrapping_sub(self.cached_head) > ring.mask {
            self.cached_head = ring.head.0.load(Ordering::Acquire);
            if tail.wrapping_sub(self.cached_head) > ring.mask {
                return Err(item);
            }
        }
        // SAFETY: slot `tail` is outside [head, tail), so the consumer does not touch it, and it
        // is not visible to the consumer until the release store below. `&mut self` makes this
        // the only producer.
        unsafe { (*ring.slots[tail & ring.mask].get()).write(item) };
        ring.tail.0.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Items queued now (exact for the producer up to concurrent pops).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A read-only depth gauge of this queue for other threads.
    pub fn gauge(&self) -> Gauge<T> {
        Gauge {
            ring: Arc::clone(&self.ring),
        }
    }
}

/// The receiving end. Move it into the one thread that receives; it cannot be cloned or shared.
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    /// Last `tail` seen: the consumer reloads it only when the ring looks empty.
    cached_tail: usize,
    not_sync: PhantomData<Cell<()>>,
}

impl<T> Consumer<T> {
    /// Removes the oldest item.
    pub fn pop(&mut self) -> Option<T> {
        let ring = &*self.ring;
        let head = ring.head.0.load(Ordering::Relaxed);
        if head == self.cached_tail {
            self.cached_tail = ring.tail.0.load(Ordering::Acquire);
            if head == self.cached_tail {
                return None;
            }
        }
        // SAFETY: slot `head` is inside [head, tail): the producer wrote it before its release
        // store of `tail`, which we acquired, and will not write it again until our release
        // store of `head` below. `&mut self` makes this the only consumer.
        let item = unsafe { (*ring.slots[head & ring.mask].get()).assume_init_read() };
        ring.head.0.store(head.wrapping_add(1), Ordering::Release);
        Some(item)
    }

    /// Items queued now (approximate while the producer pushes).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A read-only depth gauge of this queue for other threads.
    pub fn gauge(&self) -> Gauge<T> {
        Gauge {
            ring: Arc::clone(&self.ring),
        }
    }
}

/// Reads a queue's depth from any thread (for `/metrics`); touches only the two indexes.
pub struct Gauge<T> {
    ring: Arc<Ring<T>>,
}

impl<T> Clone for Gauge<T> {
    fn clone(&self) -> Gauge<T> {
        Gauge {
            ring: Arc::clone(&self.ring),
        }
    }
}

impl<T> Gauge<T> {
    /// Items queued now (a snapshot while both ends run).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Wakes one shard: an eventfd plus a "parked" flag the shard sets before it waits.
pub struct Waker {
    fd: OwnedFd,
    parked: AtomicBool,
}

impl Waker {
    /// A new non-blocking eventfd.
    pub fn new() -> std::io::Result<Arc<Waker>> {
        // SAFETY: eventfd takes no pointers; it returns a fresh fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arc::new(Waker {
            // SAFETY: fd is valid and owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            parked: AtomicBool::new(false),
        }))
    }

    /// The eventfd the consumer reads.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Consumer: about to wait. Re-check queues after calling this.
    pub fn park(&self) {
        self.parked.store(true, Ordering::SeqCst);
    }

    /// Consumer: running again.
    pub fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Producer: after pushing, wake the consumer if it is (about to be) parked.
    pub fn wake(&self) {
        if self.parked.swap(false, Ordering::SeqCst) {
            self.wake_always();
        }
    }

    /// Wakes regardless of the flag (shutdown).
    pub fn wake_always(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd; a full counter (EAGAIN)
        // already means "wake", so the result needs no check.
        unsafe { libc::write(self.fd(), (&raw const one).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_bounded() {
        let (mut tx, mut rx) = channel(4);
        for i in 0..4 {
            tx.push(i).unwrap();
        }
        assert_eq!(tx.push(9), Err(9));
        assert_eq!(tx.len(), 4);
        assert_eq!(rx.pop(), Some(0));
        tx.push(4).unwrap();
        assert_eq!(
            (1..=4).map(|_| rx.pop().unwrap()).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(rx.pop(), None);
        assert!(rx.is_empty() && tx.gauge().is_empty());
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        let (mut tx, _rx) = channel(5);
        let accepted = (0..100).take_while(|&i| tx.push(i).is_ok()).count();
        assert_eq!(accepted, 8);
    }

    /// Millions of items across two threads: every one arrives, once, in order, and the
    /// consumer's view of the depth never exceeds the capacity.
    #[test]
    fn stress_order_and_no_loss_across_threads() {
        const N_ITEMS: u64 = 2_000_000;
        let (mut tx, mut rx) = channel::<u64>(64);
        let gauge = tx.gauge();
        let producer = std::thread::spawn(move || {
            let mut n_full = 0u64;
            for i in 0..N_ITEMS {
                let mut item = i;
                while let Err(back) = tx.push(item) {
                    item = back;
                    n_full += 1;
                    std::hint::spin_loop();
                }
            }
            n_full
        });
        let mut next = 0u64;
        let mut sum = 0u64;
        let mut spins = 0u64;
        while next < N_ITEMS {
            assert!(gauge.len() <= 64);
            match rx.pop() {
                Some(v) => {
                    assert_eq!(v, next, "out of order or duplicated");
                    sum = sum.wrapping_add(v);
                    next += 1;
                }
                None => {
                    spins += 1;
                    assert!(spins < 1_000_000_000, "producer stalled");
                    std::hint::spin_loop();
                }
            }
        }
        producer.join().unwrap();
        assert_eq!(sum, N_ITEMS * (N_ITEMS - 1) / 2);
        assert_eq!(rx.pop(), None);
    }

    /// Items left in the queue are dropped exactly once when both ends are gone, whichever end
    /// (or gauge) goes last.
    #[test]
    fn drops_queued_items_once() {
        let item = Arc::new(());
        let (mut tx, mut rx) = channel(4);
        for _ in 0..3 {
            tx.push(Arc::clone(&item)).unwrap();
        }
        drop(rx.pop());
        let gauge = rx.gauge();
        drop(tx);
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 3);
        drop(gauge);
        assert_eq!(Arc::strong_count(&item), 1);
    }

    #[test]
    fn wraps_around_many_times() {
        let (mut tx, mut rx) = channel(2);
        for i in 0..10_000u32 {
            tx.push(i).unwrap();
            tx.push(i + 1).unwrap();
            assert_eq!(tx.push(0), Err(0));
            assert_eq!((rx.pop(), rx.pop(), rx.pop()), (Some(i), Some(i + 1), None));
        }
    }
}
