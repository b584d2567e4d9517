//! The floor: a bare `io_uring` hello loop on one core (`io-uring` 0.7). `SINGLE_ISSUER` +
//! `DEFER_TASKRUN` (falling back to `COOP_TASKRUN`), multishot accept, multishot recv into a
//! provided-buffer ring, one send per connection per loop pass carrying every response owed,
//! one `submit_and_wait` per pass. Framing is a count of `\r\n\r\n`: GET only, on purpose.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use clap::Parser;
use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};
use subzero_benches::{
    install_stop_handler, raise_backlog, set_nodelay, stop_requested, TerminatorScanner,
    HELLO_RESPONSE,
};

/// Bare `io_uring` hello responder (the floor).
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9004.
    #[arg(long)]
    listen: SocketAddr,
}

/// Submission queue size; completions get twice that.
const RING_ENTRIES: u32 = 4096;
/// Open connections at most; accepts beyond it are closed at once.
const CONNECTIONS_MAX: usize = 4096;
/// Provided buffers in the ring (a power of two, at most 2^15).
const BUFFER_COUNT: u16 = 4096;
/// Bytes per provided buffer.
const BUFFER_LEN: usize = 4096;
/// The buffer group id of the one provided-buffer ring.
const BUFFER_GROUP: u16 = 0;
/// Responses batched into one send at most; the rest go out on the next pass.
const RESPONSES_PER_SEND_MAX: usize = 1024;

/// What a completion belongs to, in the top byte of `user_data`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Close = 4,
}

fn user_data(op: Op, conn_idx: usize, generation: u32) -> u64 {
    ((op as u64) << 56) | (u64::from(generation & 0x00FF_FFFF) << 32) | conn_idx as u64
}

fn decode(user_data: u64) -> (u64, usize, u32) {
    (
        user_data >> 56,
        (user_data & 0xFFFF_FFFF) as usize,
        ((user_data >> 32) & 0x00FF_FFFF) as u32,
    )
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "independent per-connection flags, read one at a time"
)]
struct Conn {
    fd: RawFd,
    generation: u32,
    scanner: TerminatorScanner,
    n_responses_owed: usize,
    send_buf: Vec<u8>,
    send_offset: usize,
    send_in_flight: bool,
    /// The peer closed or an op failed: close once the send in flight (if any) completes.
    closing: bool,
    /// The close was submitted; the slot frees on its completion.
    close_submitted: bool,
    dirty: bool,
}

/// The provided-buffer ring: page-aligned entries shared with the kernel plus the buffers.
struct BufRing {
    entries: *mut BufRingEntry,
    entries_len: usize,
    buffers: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring) -> std::io::Result<BufRing> {
        let entries_len = usize::from(BUFFER_COUNT) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping; checked for MAP_FAILED below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf_ring = BufRing {
            entries: addr.cast(),
            entries_len,
            buffers: vec![0; usize::from(BUFFER_COUNT) * BUFFER_LEN],
            tail: 0,
        };
        // SAFETY: the mapping is page-aligned, zeroed and lives as long as `buf_ring`, which
        // outlives every recv that selects from it (the ring is dropped first in `main`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                addr as u64,
                BUFFER_COUNT,
                BUFFER_GROUP,
                0,
            )?;
        }
        for bid in 0..BUFFER_COUNT {
            buf_ring.push(bid);
        }
        buf_ring.publish();
        Ok(buf_ring)
    }

    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * BUFFER_LEN;
        &self.buffers[start..start + len.min(BUFFER_LEN)]
    }

    /// Hands buffer `bid` back to the kernel (visible after `publish`).
    fn push(&mut self, bid: u16) {
        assert!(bid < BUFFER_COUNT);
        let slot = usize::from(self.tail & (BUFFER_COUNT - 1));
        let addr = self.buffers.as_ptr() as u64 + (usize::from(bid) * BUFFER_LEN) as u64;
        // SAFETY: `slot` is below BUFFER_COUNT, inside the mapping.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(addr);
        entry.set_len(BUFFER_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of our mapping; the kernel reads it
        // with acquire semantics, so a release store orders the entries written before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`, once.
        unsafe {
            libc::munmap(self.entries.cast(), self.entries_len);
        }
    }
}

fn build_ring() -> std::io::Result<(IoUring, &'static str)> {
    if let Ok(ring) = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
    {
        return Ok((ring, "single_issuer+defer_taskrun"));
    }
    if let Ok(ring) = IoUring::builder().setup_coop_taskrun().build(RING_ENTRIES) {
        return Ok((ring, "coop_taskrun"));
    }
    Ok((IoUring::new(RING_ENTRIES)?, "default"))
}

/// Queues one SQE, flushing the submission queue to the kernel if it is full.
fn push(ring: &mut IoUring, entry: &squeue::Entry) -> std::io::Result<()> {
    loop {
        // SAFETY: every buffer an entry points to (send buffers in `Conn`, the provided-buffer
        // ring) stays alive and unmoved until that entry's completion arrives.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

struct Server {
    ring: IoUring,
    buf_ring: BufRing,
    listener_fd: RawFd,
    conns: Vec<Option<Conn>>,
    free_slots: Vec<usize>,
    dirty: Vec<usize>,
    next_generation: u32,
}

impl Server {
    fn arm_accept(&mut self) -> std::io::Result<()> {
        let entry = opcode::AcceptMulti::new(Fd(self.listener_fd))
            .build()
            .user_data(user_data(Op::Accept, 0, 0));
        push(&mut self.ring, &entry)
    }

    fn arm_recv(&mut self, conn_idx: usize) -> std::io::Result<()> {
        let Some(conn) = self.conns[conn_idx].as_ref() else {
            return Ok(());
        };
        let entry = opcode::RecvMulti::new(Fd(conn.fd), BUFFER_GROUP)
            .build()
            .user_data(user_data(Op::Recv, conn_idx, conn.generation));
        push(&mut self.ring, &entry)
    }

    fn mark_dirty(&mut self, conn_idx: usize) {
        if let Some(conn) = self.conns[conn_idx].as_mut() {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(conn_idx);
            }
        }
    }

    fn on_accept(&mut self, result: i32, flags: u32) -> std::io::Result<()> {
        if result >= 0 {
            let fd = result;
            match self.free_slots.pop() {
                Some(conn_idx) => {
                    let _ = set_nodelay(fd);
                    self.next_generation = self.next_generation.wrapping_add(1);
                    self.conns[conn_idx] = Some(Conn {
                        fd,
                        generation: self.next_generation & 0x00FF_FFFF,
                        scanner: TerminatorScanner::default(),
                        n_responses_owed: 0,
                        send_buf: Vec::with_capacity(HELLO_RESPONSE.len() * 16),
                        send_offset: 0,
                        send_in_flight: false,
                        closing: false,
                        close_submitted: false,
                        dirty: false,
                    });
                    self.arm_recv(conn_idx)?;
                }
                None => {
                    // Over the connection limit: refuse by closing.
                    // SAFETY: `fd` was just accepted and is owned by nobody else.
                    unsafe { libc::close(fd) };
                }
            }
        }
        if !cqueue::more(flags) {
            self.arm_accept()?;
        }
        Ok(())
    }

    fn on_recv(&mut self, conn_idx: usize, result: i32, flags: u32) -> std::io::Result<()> {
        if result > 0 {
            let Some(bid) = cqueue::buffer_select(flags) else {
                return Err(std::io::Error::other("recv completion without a buffer"));
            };
            let n_heads = {
                let bytes = self.buf_ring.buffer(bid, result as usize);
                match self.conns[conn_idx].as_mut() {
                    Some(conn) => conn.scanner.feed(bytes),
                    None => 0,
                }
            };
            self.buf_ring.push(bid);
            if n_heads > 0 {
                if let Some(conn) = self.conns[conn_idx].as_mut() {
                    conn.n_responses_owed += n_heads;
                }
                self.mark_dirty(conn_idx);
            }
            if !cqueue::more(flags) {
                self.arm_recv(conn_idx)?;
            }
            return Ok(());
        }
        if result == -libc::ENOBUFS {
            // Every buffer is in use this pass; they come back before the next submit.
            return self.arm_recv(conn_idx);
        }
        // EOF or an error: the multishot recv is over; close once any send finishes.
        if let Some(conn) = self.conns[conn_idx].as_mut() {
            conn.closing = true;
        }
        self.mark_dirty(conn_idx);
        Ok(())
    }

    fn on_send(&mut self, conn_idx: usize, result: i32) -> std::io::Result<()> {
        let Some(conn) = self.conns[conn_idx].as_mut() else {
            return Ok(());
        };
        conn.send_in_flight = false;
        if result < 0 {
            conn.closing = true;
        } else {
            conn.send_offset += result as usize;
            if conn.send_offset < conn.send_buf.len() {
                // Short send: the rest goes out first.
                let rest = &conn.send_buf[conn.send_offset..];
                let entry = opcode::Send::new(Fd(conn.fd), rest.as_ptr(), rest.len() as u32)
                    .build()
                    .user_data(user_data(Op::Send, conn_idx, conn.generation));
                conn.send_in_flight = true;
                return push(&mut self.ring, &entry);
            }
        }
        self.mark_dirty(conn_idx);
        Ok(())
    }

    /// Sends what each touched connection owes, in one send each, or closes it.
    fn flush_dirty(&mut self) -> std::io::Result<()> {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &conn_idx in &dirty {
            let Some(conn) = self.conns[conn_idx].as_mut() else {
                continue;
            };
            conn.dirty = false;
            if conn.send_in_flight || conn.close_submitted {
                continue;
            }
            if conn.closing {
                conn.close_submitted = true;
                let entry = opcode::Close::new(Fd(conn.fd)).build().user_data(user_data(
                    Op::Close,
                    conn_idx,
                    conn.generation,
                ));
                push(&mut self.ring, &entry)?;
                continue;
            }
            if conn.n_responses_owed == 0 {
                continue;
            }
            let n_responses = conn.n_responses_owed.min(RESPONSES_PER_SEND_MAX);
            conn.n_responses_owed -= n_responses;
            conn.send_buf.clear();
            for _ in 0..n_responses {
                conn.send_buf.extend_from_slice(HELLO_RESPONSE);
            }
            conn.send_offset = 0;
            conn.send_in_flight = true;
            let entry = opcode::Send::new(
                Fd(conn.fd),
                conn.send_buf.as_ptr(),
                conn.send_buf.len() as u32,
            )
            .build()
            .user_data(user_data(Op::Send, conn_idx, conn.generation));
            push(&mut self.ring, &entry)?;
        }
        dirty.clear();
        self.dirty = dirty;
        Ok(())
    }

    fn run(&mut self) -> std::io::Result<()> {
        self.arm_accept()?;
        let mut completions: Vec<cqueue::Entry> = Vec::with_capacity(RING_ENTRIES as usize * 2);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error) if matches!(error.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(error) => return Err(error),
            }
            if stop_requested() {
                return Ok(());
            }
            completions.clear();
            completions.extend(self.ring.completion());
            for completion in &completions {
                let (op, conn_idx, generation) = decode(completion.user_data());
                let live = self
                    .conns
                    .get(conn_idx)
                    .and_then(Option::as_ref)
                    .is_some_and(|conn| conn.generation == generation);
                let result = completion.result();
                let flags = completion.flags();
                match op {
                    x if x == Op::Accept as u64 => self.on_accept(result, flags)?,
                    x if x == Op::Recv as u64 && live => self.on_recv(conn_idx, result, flags)?,
                    x if x == Op::Recv as u64 => {
                        // A stale completion still owns a buffer: give it back.
                        if let Some(bid) = cqueue::buffer_select(flags) {
                            self.buf_ring.push(bid);
                        }
                    }
                    x if x == Op::Send as u64 && live => self.on_send(conn_idx, result)?,
                    x if x == Op::Close as u64 && live => {
                        self.conns[conn_idx] = None;
                        self.free_slots.push(conn_idx);
                    }
                    _ => {}
                }
            }
            self.buf_ring.publish();
            self.flush_dirty()?;
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    install_stop_handler()?;
    let listener = std::net::TcpListener::bind(args.listen)?;
    raise_backlog(listener.as_raw_fd())?;
    let (ring, ring_mode) = build_ring()?;
    let buf_ring = BufRing::new(&ring)?;
    let mut server = Server {
        ring,
        buf_ring,
        listener_fd: listener.as_raw_fd(),
        conns: (0..CONNECTIONS_MAX).map(|_| None).collect(),
        free_slots: (0..CONNECTIONS_MAX).rev().collect(),
        dirty: Vec::with_capacity(CONNECTIONS_MAX),
        next_generation: 0,
    };
    eprintln!("io_uring setup: {ring_mode}");
    eprintln!("listening on {}", listener.local_addr()?);
    server.run()
}
