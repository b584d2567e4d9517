//! Provided-buffer ring (IORING_REGISTER_PBUF_RING): the kernel picks a receive buffer per
//! completion, so idle connections hold no buffer memory.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Buffers registered with one ring under one group id.
pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    n_entries: u16,
    tail: u16,
    buf_bytes: usize,
    bufs: Box<[u8]>,
    bgid: u16,
}

impl BufRing {
    /// Allocates `n_entries` (power of two) buffers of `buf_bytes` and registers them.
    pub fn register(
        uring: &IoUring,
        bgid: u16,
        n_entries: u16,
        buf_bytes: usize,
    ) -> io::Result<BufRing> {
        assert!(
            n_entries.is_power_of_two(),
            "buffer count must be a power of two"
        );
        let ring_bytes = usize::from(n_entries) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping; checked for MAP_FAILED below. Page-aligned as the
        // kernel requires.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut this = BufRing {
            ring: ptr.cast(),
            ring_bytes,
            n_entries,
            tail: 0,
            buf_bytes,
            bufs: vec![0u8; usize::from(n_entries) * buf_bytes].into_boxed_slice(),
            bgid,
        };
        // SAFETY: the ring memory lives as long as `this`, which unregisters before unmapping.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(ptr as u64, n_entries, bgid, 0)?;
        }
        for bid in 0..n_entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The group id to put in recv SQEs.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The bytes the kernel wrote into buffer `bid`.
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.buf_bytes;
        &self.bufs[start..start + len.min(self.buf_bytes)]
    }

    /// Hands buffer `bid` back to the kernel (visible after `publish`).
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.n_entries - 1));
        let addr = self.bufs.as_ptr() as u64 + (usize::from(bid) * self.buf_bytes) as u64;
        // SAFETY: idx < n_entries, inside the mapping.
        let entry = unsafe { &mut *self.ring.add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.buf_bytes as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's reserved field; the kernel reads it with
        // acquire semantics, so a release store publishes the entries written before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast_mut();
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters from the ring (call before the ring is dropped).
    pub fn unregister(&self, uring: &IoUring) {
        let _ = uring.submitter().unregister_buf_ring(self.bgid);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: mapping created in `register` with this size.
        unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
    }
}
