//! Bounded single-producer single-consumer queue with an eventfd wake-up for parked consumers.
//!
//! The consumer (a shard loop) keeps an eventfd read armed on its ring. A producer writes the
//! eventfd only when the consumer has said it is about to park, so a busy shard takes no
//! syscalls for messages that arrive while it is running.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A bounded SPSC ring. `push` only from one thread, `pop` only from one (other) thread.
pub struct Spsc<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    head: AtomicUsize,
    tail: AtomicUsize,
}

// SAFETY: the producer only writes slots in [tail, head+cap) and the consumer only reads
// [head, tail); the acquire/release pairs on head and tail order those accesses.
unsafe impl<T: Send> Sync for Spsc<T> {}
// SAFETY: as above; values of T move between threads, so T: Send suffices.
unsafe impl<T: Send> Send for Spsc<T> {}

impl<T> Spsc<T> {
    /// A queue holding up to `capacity` (rounded up to a power of two) items.
    pub fn new(capacity: usize) -> Spsc<T> {
        let capacity = capacity.max(2).next_power_of_two();
        let slots = (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect();
        Spsc {
            slots,
            mask: capacity - 1,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// Appends; gives the item back when the queue is full.
    pub fn push(&self, item: T) -> Result<(), T> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > self.mask {
            return Err(item);
        }
        // SAFETY: slot `tail` is not visible to the consumer until the release store below.
        unsafe { (*self.slots[tail & self.mask].get()).write(item) };
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Removes the oldest item.
    pub fn pop(&self) -> Option<T> {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        // SAFETY: the producer wrote this slot before its release store of `tail`.
        let item = unsafe { (*self.slots[head & self.mask].get()).assume_init_read() };
        self.head.store(head.wrapping_add(1), Ordering::Release);
        Some(item)
    }

    /// Items queued now (approximate when racing with the other side).
    pub fn len(&self) -> usize {
        self.tail
            .load(Ordering::Acquire)
            .wrapping_sub(self.head.load(Ordering::Acquire))
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for Spsc<T> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
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
        // SAFETY: eventfd returns a fresh fd or -1.
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
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.fd(), (&raw const one).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_bounded() {
        let q = Spsc::new(4);
        for i in 0..4 {
            q.push(i).unwrap();
        }
        assert_eq!(q.push(9), Err(9));
        assert_eq!(q.pop(), Some(0));
        q.push(4).unwrap();
        assert_eq!(
            (1..=4).map(|_| q.pop().unwrap()).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn crosses_threads_in_order() {
        let q = Arc::new(Spsc::new(64));
        let producer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                for i in 0..100_000u64 {
                    let mut item = i;
                    while let Err(back) = q.push(item) {
                        item = back;
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let mut next = 0u64;
        while next < 100_000 {
            if let Some(v) = q.pop() {
                assert_eq!(v, next);
                next += 1;
            }
        }
        producer.join().unwrap();
    }

    #[test]
    fn drops_queued_items() {
        let q = Spsc::new(4);
        let item = Arc::new(());
        q.push(Arc::clone(&item)).unwrap();
        drop(q);
        assert_eq!(Arc::strong_count(&item), 1);
    }
}
