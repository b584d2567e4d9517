//! One shard's io_uring event loop: accept, receive, parse, dispatch, send, time out, shut down.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::BufRing;
use super::mesh::Mesh;
use super::{Cx, Handler, Outcome, Ready, Ticket};
use crate::http::{self, Parsed};

const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_WAKE: u64 = 4;
const OP_CANCEL: u64 = 5;

/// Background work units granted per loop iteration: request handling always comes first.
const BACKGROUND_BUDGET: u32 = 16;
/// Longest sleep when idle; bounds how late timers fire.
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// How long shutdown waits for in-flight responses before closing connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Limits the loop enforces, copied from the validated config.
#[derive(Debug, Clone)]
pub struct ShardLimits {
    /// Open connections on this shard.
    pub max_connections: usize,
    /// Request line plus headers.
    pub max_header_bytes: usize,
    /// Request body.
    pub max_body_bytes: usize,
    /// Deferred responses outstanding per connection.
    pub max_pipeline_depth: usize,
    /// Unsent output per connection.
    pub max_output_bytes: usize,
    /// Idle keep-alive timeout.
    pub idle_timeout_s: u64,
    /// A started request must complete within this.
    pub request_timeout_s: u64,
    /// SQ entries.
    pub ring_entries: u32,
    /// Provided buffer size.
    pub recv_buffer_bytes: usize,
    /// Provided buffer count (power of two).
    pub recv_buffer_count: usize,
}

/// Counters of one shard's runtime, readable from other threads.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed.
    pub closed: AtomicU64,
    /// Accepts refused because the shard was at its connection limit.
    pub rejected_over_limit: AtomicU64,
    /// Requests parsed and dispatched.
    pub requests: AtomicU64,
    /// Requests rejected by the HTTP parser (4xx).
    pub bad_requests: AtomicU64,
    /// Connections closed by the idle or slow-request timeout.
    pub timeouts: AtomicU64,
    /// Connections closed because their output exceeded the limit.
    pub output_overflows: AtomicU64,
    /// Loop iterations.
    pub loops: AtomicU64,
    /// Receive completions that found no provided buffer.
    pub no_buffers: AtomicU64,
    /// Accepts that failed (other than cancellation at shutdown).
    pub accept_errors: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
}

impl RuntimeStats {
    fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

struct Waiting {
    ticket: Ticket,
    reply: Option<Vec<u8>>,
    /// Responses to the requests that followed this one, sent right after its reply.
    after: Vec<u8>,
    since_s: u64,
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "independent state flags of one connection"
)]
struct Conn {
    fd: OwnedFd,
    gen: u32,
    peer: IpAddr,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sending: Vec<u8>,
    sent: usize,
    send_inflight: bool,
    recv_armed: bool,
    waiting: VecDeque<Waiting>,
    closing: bool,
    shut: bool,
    dirty: bool,
    last_active_s: u64,
    partial_since_s: u64,
    /// When `closing` was first seen by the sweep (0: not yet).
    closing_since_s: u64,
    /// Last time a send was issued or completed.
    last_send_s: u64,
}

fn user_data(op: u64, idx: usize, gen: u32) -> u64 {
    ((idx as u64) << 32) | (u64::from(gen & 0x00ff_ffff) << 8) | op
}

fn split_user_data(ud: u64) -> (u64, usize, u32) {
    (
        ud & 0xff,
        (ud >> 32) as usize,
        ((ud >> 8) & 0x00ff_ffff) as u32,
    )
}

struct Shard<'m, H: Handler> {
    idx: usize,
    ring: IoUring,
    bufs: BufRing,
    listener: OwnedFd,
    limits: ShardLimits,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    n_conns: usize,
    next_gen: u32,
    dirty: Vec<usize>,
    tickets: HashMap<Ticket, (usize, u32)>,
    next_ticket: Ticket,
    handler: H,
    mesh: &'m Mesh<H::Msg>,
    stats: Arc<RuntimeStats>,
    wake_buf: Box<u64>,
    ready: Ready,
    accepting: bool,
    /// The multishot accept ended with an error; re-armed at the next sweep.
    accept_rearm_due: bool,
}

fn build_ring(entries: u32) -> io::Result<IoUring> {
    let defer = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(entries * 4)
        .build(entries);
    if let Ok(ring) = defer {
        return Ok(ring);
    }
    let coop = IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(entries * 4)
        .build(entries);
    match coop {
        Ok(ring) => Ok(ring),
        Err(_) => IoUring::new(entries),
    }
}

/// Runs shard `idx` until `shutdown` is set and its connections have drained.
///
/// Called on the shard's own (already pinned) thread; `make_handler` runs here too, so handler
/// state may use `Rc`/`RefCell` freely.
pub fn run_shard<H: Handler>(
    idx: usize,
    listener: OwnedFd,
    limits: ShardLimits,
    mesh: &Mesh<H::Msg>,
    stats: Arc<RuntimeStats>,
    shutdown: &AtomicBool,
    handler: H,
) -> io::Result<()> {
    let ring = build_ring(limits.ring_entries)?;
    let bufs = BufRing::register(
        &ring,
        0,
        limits.recv_buffer_count as u16,
        limits.recv_buffer_bytes,
    )?;
    let mut shard = Shard {
        idx,
        ring,
        bufs,
        listener,
        conns: Vec::with_capacity(limits.max_connections.min(65_536)),
        free: Vec::new(),
        n_conns: 0,
        next_gen: 1,
        dirty: Vec::with_capacity(256),
        tickets: HashMap::new(),
        next_ticket: 0,
        handler,
        mesh,
        stats,
        wake_buf: Box::new(0),
        ready: Vec::new(),
        accepting: true,
        accept_rearm_due: false,
        limits,
    };
    shard.arm_accept();
    shard.arm_wake();
    let result = shard.run(shutdown);
    shard.bufs.unregister(&shard.ring);
    result
}

impl<H: Handler> Shard<'_, H> {
    fn run(&mut self, shutdown: &AtomicBool) -> io::Result<()> {
        let mut now_s = crate::unix_now_s();
        let mut last_sweep_s = now_s;
        let mut shutdown_deadline: Option<Instant> = None;
        let mut more_background = false;
        loop {
            RuntimeStats::bump(&self.stats.loops);
            // One enter per iteration: submit everything queued and wait for at least one
            // completion, unless background work is pending.
            let waker = self.mesh.waker(self.idx);
            let idle = !more_background && self.mesh.depth(self.idx) == 0;
            if idle {
                waker.park();
            }
            let wait = if idle && self.mesh.depth(self.idx) == 0 {
                IDLE_WAIT
            } else {
                Duration::ZERO
            };
            self.enter(wait)?;
            waker.unpark();
            now_s = crate::unix_now_s();

            self.drain_completions(now_s);
            more_background = self
                .handler
                .background(now_s, BACKGROUND_BUDGET, &mut self.ready);
            self.deliver_ready();
            if now_s != last_sweep_s {
                last_sweep_s = now_s;
                self.sweep_timeouts(now_s);
                if std::mem::take(&mut self.accept_rearm_due) && self.accepting {
                    self.arm_accept();
                }
            }
            self.flush_dirty();

            if shutdown.load(Ordering::Relaxed) {
                let deadline = *shutdown_deadline.get_or_insert_with(|| {
                    self.stop_accepting();
                    Instant::now() + SHUTDOWN_GRACE
                });
                self.close_idle_for_shutdown(Instant::now() >= deadline);
                self.flush_dirty();
                if self.n_conns == 0 {
                    return Ok(());
                }
            }
        }
    }

    fn enter(&mut self, wait: Duration) -> io::Result<()> {
        let submitter = self.ring.submitter();
        let result = if wait.is_zero() {
            submitter.submit()
        } else {
            let ts = types::Timespec::from(wait);
            let args = types::SubmitArgs::new().timespec(&ts);
            submitter.submit_with_args(1, &args)
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                _ => Err(e),
            },
        }
    }

    fn push_sqe(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every buffer an SQE points at (connection output, wake buffer) is owned
            // by the shard and stays alive and unmoved until its completion arrives.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            // SQ full: hand what is queued to the kernel and retry.
            let _ = self.ring.submit();
        }
    }

    fn arm_accept(&mut self) {
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(OP_ACCEPT, 0, 0));
        self.push_sqe(&entry);
    }

    fn arm_wake(&mut self) {
        let fd = self.mesh.waker(self.idx).fd();
        let buf: *mut u64 = &raw mut *self.wake_buf;
        let entry = opcode::Read::new(types::Fd(fd), buf.cast(), 8)
            .build()
            .user_data(user_data(OP_WAKE, 0, 0));
        self.push_sqe(&entry);
    }

    fn arm_recv(&mut self, idx: usize) {
        let Some(conn) = self.conns[idx].as_mut() else {
            return;
        };
        conn.recv_armed = true;
        let entry = opcode::RecvMulti::new(types::Fd(conn.fd.as_raw_fd()), self.bufs.bgid())
            .build()
            .user_data(user_data(OP_RECV, idx, conn.gen));
        self.push_sqe(&entry);
    }

    fn stop_accepting(&mut self) {
        if self.accepting {
            self.accepting = false;
            let entry = opcode::AsyncCancel::new(user_data(OP_ACCEPT, 0, 0))
                .build()
                .user_data(user_data(OP_CANCEL, 0, 0));
            self.push_sqe(&entry);
        }
    }

    fn drain_completions(&mut self, now_s: u64) {
        // Copy out first: handling a completion pushes SQEs, which needs the ring mutably.
        let mut batch: [(u64, i32, u32); 256] = [(0, 0, 0); 256];
        loop {
            // Mesh messages first: a revocation broadcast before a request's arrival is applied
            // before that request is answered.
            while let Some(msg) = self.mesh.recv(self.idx) {
                self.handler.on_message(msg, now_s, &mut self.ready);
            }
            let mut n = 0;
            {
                let mut cq = self.ring.completion();
                cq.sync();
                for cqe in &mut cq {
                    batch[n] = (cqe.user_data(), cqe.result(), cqe.flags());
                    n += 1;
                    if n == batch.len() {
                        break;
                    }
                }
            }
            if n == 0 {
                return;
            }
            for &(ud, res, flags) in &batch[..n] {
                let (op, idx, gen) = split_user_data(ud);
                match op {
                    OP_ACCEPT => self.on_accept(res, flags, now_s),
                    OP_RECV => self.on_recv(idx, gen, res, flags, now_s),
                    OP_SEND => self.on_send(idx, gen, res),
                    OP_WAKE => self.arm_wake(),
                    _ => {}
                }
            }
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32, now_s: u64) {
        if res < 0 {
            if res != -libc::ECANCELED {
                tracing::debug!(shard = self.idx, errno = -res, "accept failed");
                RuntimeStats::bump(&self.stats.accept_errors);
            }
            // Out of fds (EMFILE/ENFILE) would fail again at once: re-arm from the sweep.
            if !cqueue::more(flags) && self.accepting {
                self.accept_rearm_due = true;
            }
            return;
        }
        if !cqueue::more(flags) && self.accepting {
            self.arm_accept();
        }
        // SAFETY: the kernel handed us this fresh fd.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(res) };
        if self.n_conns >= self.limits.max_connections || !self.accepting {
            RuntimeStats::bump(&self.stats.rejected_over_limit);
            return; // dropping `fd` closes it
        }
        set_nodelay(fd.as_raw_fd());
        let peer = peer_ip(fd.as_raw_fd());
        let gen = self.next_gen;
        self.next_gen = (self.next_gen + 1) & 0x00ff_ffff;
        let conn = Conn {
            fd,
            gen,
            peer,
            inbuf: Vec::new(),
            out: Vec::new(),
            sending: Vec::new(),
            sent: 0,
            send_inflight: false,
            recv_armed: false,
            waiting: VecDeque::new(),
            closing: false,
            shut: false,
            dirty: false,
            last_active_s: now_s,
            partial_since_s: 0,
            closing_since_s: 0,
            last_send_s: now_s,
        };
        let idx = if let Some(idx) = self.free.pop() {
            self.conns[idx] = Some(conn);
            idx
        } else {
            self.conns.push(Some(conn));
            self.conns.len() - 1
        };
        self.n_conns += 1;
        RuntimeStats::bump(&self.stats.accepted);
        self.stats
            .open
            .store(self.n_conns as u64, Ordering::Relaxed);
        self.arm_recv(idx);
    }

    fn conn_mut(&mut self, idx: usize, gen: u32) -> Option<&mut Conn> {
        self.conns
            .get_mut(idx)
            .and_then(Option::as_mut)
            .filter(|c| c.gen == gen)
    }

    fn on_recv(&mut self, idx: usize, gen: u32, res: i32, flags: u32, now_s: u64) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let stats = Arc::clone(&self.stats);
        let Some(conn) = self.conn_mut(idx, gen) else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return;
        };
        if !more {
            conn.recv_armed = false;
        }
        if res <= 0 {
            if res == -libc::ENOBUFS {
                RuntimeStats::bump(&stats.no_buffers);
                if !more && !conn.closing {
                    self.arm_recv(idx);
                } else if !more {
                    self.mark_dirty(idx); // a closing connection may now be freed
                }
                return;
            }
            // EOF or error: answer what was already asked, then close.
            conn.closing = true;
            self.mark_dirty(idx);
            return;
        }
        let Some(bid) = bid else {
            conn.closing = true;
            self.mark_dirty(idx);
            return;
        };
        if !conn.closing {
            self.process(idx, bid, res as usize, now_s);
        }
        self.bufs.recycle(bid);
        if let Some(conn) = self.conns[idx].as_mut() {
            if !conn.recv_armed && !conn.closing {
                self.arm_recv(idx);
            }
        }
        self.mark_dirty(idx);
    }

    /// Parses and dispatches every complete request in the new bytes.
    fn process(&mut self, idx: usize, bid: u16, len: usize, now_s: u64) {
        let Some(conn) = self.conns[idx].as_mut() else {
            return;
        };
        conn.last_active_s = now_s;
        let data = self.bufs.data(bid, len);
        let mut inbuf = std::mem::take(&mut conn.inbuf);
        let from_inbuf = !inbuf.is_empty();
        if from_inbuf {
            inbuf.extend_from_slice(data);
        }
        let bytes: &[u8] = if from_inbuf { &inbuf } else { data };
        let mut at = 0;
        let limits = &self.limits;
        let stats = &*self.stats;
        while at < bytes.len() && !conn.closing {
            match http::parse(&bytes[at..], limits.max_header_bytes, limits.max_body_bytes) {
                Ok(Parsed::Partial) => break,
                Ok(Parsed::Complete(req, used)) => {
                    at += used;
                    RuntimeStats::bump(&stats.requests);
                    let out = match conn.waiting.back_mut() {
                        Some(w) => &mut w.after,
                        None => &mut conn.out,
                    };
                    let mut cx = Cx {
                        peer: conn.peer,
                        now_s,
                        shard_idx: self.idx,
                        runtime: stats,
                        next_ticket: &mut self.next_ticket,
                    };
                    match self.handler.handle(&req, &mut cx, out) {
                        Outcome::Done => {}
                        Outcome::Deferred(ticket) => {
                            self.tickets.insert(ticket, (idx, conn.gen));
                            conn.waiting.push_back(Waiting {
                                ticket,
                                reply: None,
                                after: Vec::new(),
                                since_s: now_s,
                            });
                        }
                    }
                    if !req.keep_alive {
                        conn.closing = true;
                    }
                    let queued: usize = conn.waiting.iter().map(|w| w.after.len()).sum();
                    if conn.waiting.len() > limits.max_pipeline_depth
                        || conn.out.len() + conn.sending.len() + queued > limits.max_output_bytes
                    {
                        RuntimeStats::bump(&stats.output_overflows);
                        conn.closing = true;
                    }
                }
                Err(err) => {
                    RuntimeStats::bump(&stats.bad_requests);
                    let out = match conn.waiting.back_mut() {
                        Some(w) => &mut w.after,
                        None => &mut conn.out,
                    };
                    http::write_http_error(out, err);
                    conn.closing = true;
                }
            }
        }
        let consumed_all = at >= bytes.len();
        if conn.closing || consumed_all {
            conn.partial_since_s = 0;
            inbuf.clear();
        } else {
            // The slow-request clock starts when a request starts, not when the connection
            // first had a partial one: completed requests are progress.
            if conn.partial_since_s == 0 || at > 0 {
                conn.partial_since_s = now_s;
            }
            if from_inbuf {
                inbuf.drain(..at);
            } else {
                inbuf.extend_from_slice(&data[at..]);
            }
        }
        conn.inbuf = inbuf;
        self.mark_dirty(idx);
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(conn) = self.conns[idx].as_mut() {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    fn on_send(&mut self, idx: usize, gen: u32, res: i32) {
        let Some(conn) = self.conn_mut(idx, gen) else {
            return;
        };
        conn.send_inflight = false;
        conn.last_send_s = crate::unix_now_s();
        if res < 0 {
            conn.closing = true;
            conn.out.clear();
            conn.waiting.clear();
        } else {
            conn.sent += res as usize;
            if conn.sent < conn.sending.len() {
                self.push_send(idx);
                return;
            }
            conn.sending.clear();
            conn.sent = 0;
        }
        self.mark_dirty(idx);
    }

    fn push_send(&mut self, idx: usize) {
        let Some(conn) = self.conns[idx].as_mut() else {
            return;
        };
        let rest = &conn.sending[conn.sent..];
        let entry = opcode::Send::new(
            types::Fd(conn.fd.as_raw_fd()),
            rest.as_ptr(),
            rest.len() as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(OP_SEND, idx, conn.gen));
        conn.send_inflight = true;
        conn.last_send_s = crate::unix_now_s();
        self.push_sqe(&entry);
    }

    /// One send per connection with new output; closes connections that are done.
    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            let Some(conn) = self.conns[idx].as_mut() else {
                continue;
            };
            conn.dirty = false;
            if !conn.send_inflight && !conn.out.is_empty() {
                std::mem::swap(&mut conn.out, &mut conn.sending);
                conn.sent = 0;
                self.push_send(idx);
                continue;
            }
            if conn.closing && !conn.send_inflight && conn.out.is_empty() && conn.waiting.is_empty()
            {
                if !conn.shut {
                    conn.shut = true;
                    // SAFETY: shutting down our own socket; a pending multishot recv then
                    // completes, after which the slot is freed.
                    unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
                }
                if !conn.recv_armed {
                    self.free_conn(idx);
                }
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        debug_assert!(
            self.dirty.is_empty(),
            "flushing never marks connections dirty"
        );
        self.dirty = dirty;
    }

    fn free_conn(&mut self, idx: usize) {
        if let Some(conn) = self.conns[idx].take() {
            for w in &conn.waiting {
                self.tickets.remove(&w.ticket);
            }
            drop(conn); // closes the fd
            self.free.push(idx);
            self.n_conns -= 1;
            RuntimeStats::bump(&self.stats.closed);
            self.stats
                .open
                .store(self.n_conns as u64, Ordering::Relaxed);
        }
    }

    fn deliver_ready(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        for (ticket, bytes) in ready {
            let Some((idx, gen)) = self.tickets.remove(&ticket) else {
                continue; // connection went away
            };
            let Some(conn) = self.conn_mut(idx, gen) else {
                continue;
            };
            if let Some(w) = conn.waiting.iter_mut().find(|w| w.ticket == ticket) {
                w.reply = Some(bytes);
            }
            release_answered(conn);
            self.mark_dirty(idx);
        }
    }

    fn sweep_timeouts(&mut self, now_s: u64) {
        let limits = self.limits.clone();
        for idx in 0..self.conns.len() {
            let Some(conn) = self.conns[idx].as_mut() else {
                continue;
            };
            let mut dirty = expire_deferred(conn, &mut self.tickets, now_s);
            let stalled_send = conn.send_inflight
                && now_s.saturating_sub(conn.last_send_s) >= limits.idle_timeout_s;
            if conn.closing || stalled_send {
                // A peer that stops reading cannot keep a slot: after the grace period the
                // socket is shut, the pending send fails, and the slot is freed.
                if conn.closing_since_s == 0 && !stalled_send {
                    conn.closing_since_s = now_s;
                } else if !conn.shut
                    && (stalled_send
                        || now_s.saturating_sub(conn.closing_since_s) >= limits.request_timeout_s)
                {
                    force_close(conn, &mut self.tickets);
                    RuntimeStats::bump(&self.stats.timeouts);
                    dirty = true;
                }
            } else {
                let slow = conn.partial_since_s != 0
                    && now_s.saturating_sub(conn.partial_since_s) >= limits.request_timeout_s;
                let idle = conn.partial_since_s == 0
                    && conn.waiting.is_empty()
                    && !conn.send_inflight
                    && now_s.saturating_sub(conn.last_active_s) >= limits.idle_timeout_s;
                if slow {
                    let out = match conn.waiting.back_mut() {
                        Some(w) => &mut w.after,
                        None => &mut conn.out,
                    };
                    http::write_oauth_error(
                        out,
                        http::Status::RequestTimeout,
                        "invalid_request",
                        "request was not completed in time",
                        &[],
                        false,
                    );
                }
                if slow || idle {
                    RuntimeStats::bump(&self.stats.timeouts);
                    conn.closing = true;
                    conn.inbuf = Vec::new();
                    dirty = true;
                }
            }
            if dirty {
                self.mark_dirty(idx);
            }
        }
    }

    fn close_idle_for_shutdown(&mut self, force: bool) {
        for idx in 0..self.conns.len() {
            let Some(conn) = self.conns[idx].as_mut() else {
                continue;
            };
            let busy = !conn.waiting.is_empty() || conn.send_inflight || !conn.out.is_empty();
            if force {
                force_close(conn, &mut self.tickets);
            } else if !busy {
                conn.closing = true;
            }
            if force || !busy {
                self.mark_dirty(idx);
            }
        }
    }
}

/// A deferred response not answered in this long is answered `503` and the connection closed.
const DEFERRED_TIMEOUT_S: u64 = 30;

/// Moves answered deferred responses, and the responses queued behind each, to the output in
/// request order.
fn release_answered(conn: &mut Conn) {
    while conn.waiting.front().is_some_and(|w| w.reply.is_some()) {
        let Some(w) = conn.waiting.pop_front() else {
            break;
        };
        conn.out.extend_from_slice(&w.reply.unwrap_or_default());
        conn.out.extend_from_slice(&w.after);
    }
}

/// Answers deferred responses older than `DEFERRED_TIMEOUT_S` with 503; true if any was.
fn expire_deferred(
    conn: &mut Conn,
    tickets: &mut HashMap<Ticket, (usize, u32)>,
    now_s: u64,
) -> bool {
    let mut expired = false;
    for w in &mut conn.waiting {
        if w.reply.is_none() && now_s.saturating_sub(w.since_s) >= DEFERRED_TIMEOUT_S {
            tickets.remove(&w.ticket);
            let mut out = Vec::new();
            http::write_oauth_error(
                &mut out,
                http::Status::ServiceUnavailable,
                "temporarily_unavailable",
                "the answer to this request did not arrive in time",
                &[],
                false,
            );
            w.reply = Some(out);
            expired = true;
        }
    }
    if expired {
        conn.closing = true;
        release_answered(conn);
    }
    expired
}

/// Shuts the socket down and drops unsent output; completions then free the slot.
fn force_close(conn: &mut Conn, tickets: &mut HashMap<Ticket, (usize, u32)>) {
    conn.closing = true;
    conn.out.clear();
    for w in conn.waiting.drain(..) {
        tickets.remove(&w.ticket);
    }
    if !conn.shut {
        conn.shut = true;
        // SAFETY: shutting down our own socket.
        unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: valid fd, c_int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
}

fn peer_ip(fd: RawFd) -> IpAddr {
    // SAFETY: zeroed storage is valid; getpeername writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above.
    let rc = unsafe { libc::getpeername(fd, (&raw mut storage).cast(), &raw mut len) };
    if rc != 0 {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    }
    super::sockaddr_to(&storage).map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Echoes the path; `/defer?L` answers `later-L` from background work.
    struct Echo {
        pending: Vec<(Ticket, String)>,
    }

    impl Handler for Echo {
        type Msg = u32;
        fn handle(
            &mut self,
            req: &http::Request<'_>,
            cx: &mut Cx<'_>,
            out: &mut Vec<u8>,
        ) -> Outcome {
            if req.path == "/big" {
                let body = vec![b'x'; 32 << 20];
                http::write_response(out, http::Status::Ok, None, &[], &body, true);
                return Outcome::Done;
            }
            if req.path == "/defer" {
                let t = cx.defer();
                self.pending.push((t, req.query.to_owned()));
                return Outcome::Deferred(t);
            }
            http::write_response(
                out,
                http::Status::Ok,
                None,
                &[],
                req.path.as_bytes(),
                req.keep_alive,
            );
            Outcome::Done
        }
        fn on_message(&mut self, _msg: u32, _now_s: u64, _ready: &mut Ready) {}
        fn background(&mut self, _now_s: u64, _budget: u32, ready: &mut Ready) -> bool {
            for (t, label) in self.pending.drain(..) {
                let mut out = Vec::new();
                let body = format!("later-{label}");
                http::write_response(&mut out, http::Status::Ok, None, &[], body.as_bytes(), true);
                ready.push((t, out));
            }
            false
        }
    }

    fn limits() -> ShardLimits {
        ShardLimits {
            max_connections: 4,
            max_header_bytes: 1024,
            max_body_bytes: 1024,
            max_pipeline_depth: 64,
            max_output_bytes: 1 << 20,
            idle_timeout_s: 2,
            request_timeout_s: 1,
            ring_entries: 64,
            recv_buffer_bytes: 4096,
            recv_buffer_count: 16,
        }
    }

    fn start() -> (
        std::net::SocketAddr,
        Arc<AtomicBool>,
        std::thread::JoinHandle<()>,
    ) {
        start_with(limits())
    }

    fn start_with(
        limits: ShardLimits,
    ) -> (
        std::net::SocketAddr,
        Arc<AtomicBool>,
        std::thread::JoinHandle<()>,
    ) {
        let listener = super::super::bind_listener("127.0.0.1:0".parse().unwrap(), 64).unwrap();
        let addr = super::super::local_addr(&listener).unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&shutdown);
        let handle = std::thread::spawn(move || {
            let mesh = Mesh::<u32>::new(1).unwrap();
            let stats = Arc::new(RuntimeStats::default());
            run_shard(
                0,
                listener,
                limits,
                &mesh,
                stats,
                &stop,
                Echo { pending: vec![] },
            )
            .unwrap();
        });
        (addr, shutdown, handle)
    }

    fn read_responses(stream: &mut TcpStream, n: usize) -> Vec<String> {
        let mut buf = Vec::new();
        let mut bodies = Vec::new();
        let mut chunk = vec![0u8; 65536];
        while bodies.len() < n {
            let got = stream.read(&mut chunk).unwrap();
            assert!(
                got > 0,
                "server closed early after {} responses",
                bodies.len()
            );
            buf.extend_from_slice(&chunk[..got]);
            while let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if buf.len() < head_end + 4 + len {
                    break;
                }
                bodies.push(
                    String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).to_string(),
                );
                buf.drain(..head_end + 4 + len);
            }
        }
        bodies
    }

    #[test]
    fn pipelined_burst_answers_in_order_with_several_deferred_in_the_middle() {
        let (addr, shutdown, handle) = start();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut burst = Vec::new();
        for i in 0..100 {
            // Deferred at 50, 52 and 53, answered at once in between.
            let deferred = [50, 52, 53].contains(&i);
            let path = if deferred {
                format!("/defer?{i}")
            } else {
                format!("/r{i}")
            };
            burst.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        }
        // Split mid-request to exercise the partial-request path.
        s.write_all(&burst[..777]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(&burst[777..]).unwrap();
        let bodies = read_responses(&mut s, 100);
        for (i, body) in bodies.iter().enumerate() {
            let want = if [50, 52, 53].contains(&i) {
                format!("later-{i}")
            } else {
                format!("/r{i}")
            };
            assert_eq!(body, &want);
        }
        shutdown.store(true, Ordering::Relaxed);
        drop(s);
        handle.join().unwrap();
    }

    #[test]
    fn bad_request_gets_400_and_close_and_others_keep_working() {
        let (addr, shutdown, handle) = start();
        let mut bad = TcpStream::connect(addr).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        bad.write_all(b"\x01\x02 nonsense\r\n\r\n").unwrap();
        let mut text = String::new();
        bad.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("invalid_request"));
        let mut good = TcpStream::connect(addr).unwrap();
        good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        good.write_all(b"GET /ok HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_responses(&mut good, 1), vec!["/ok".to_owned()]);
        shutdown.store(true, Ordering::Relaxed);
        drop(good);
        handle.join().unwrap();
    }

    #[test]
    fn slow_client_gets_408_and_connection_limit_holds() {
        let (addr, shutdown, handle) = start();
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        slow.write_all(b"GET /slow HTTP/1.1\r\nHost:").unwrap();
        let mut text = String::new();
        slow.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        // The slow connection's slot is freed when its last completion arrives, just after the
        // client saw EOF: give it a moment before filling the shard.
        drop(slow);
        std::thread::sleep(Duration::from_millis(300));
        // Four connections fit (each proves it by being served); the fifth is closed at once.
        let conns: Vec<TcpStream> = (0..4)
            .map(|i| {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c.write_all(format!("GET /c{i} HTTP/1.1\r\n\r\n").as_bytes())
                    .unwrap();
                assert_eq!(read_responses(&mut c, 1), vec![format!("/c{i}")]);
                c
            })
            .collect();
        let mut fifth = TcpStream::connect(addr).unwrap();
        fifth
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = fifth.write_all(b"GET / HTTP/1.1\r\n\r\n");
        let mut buf = [0u8; 16];
        assert!(
            matches!(fifth.read(&mut buf), Ok(0) | Err(_)),
            "fifth connection was served"
        );
        drop(conns);
        shutdown.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }

    #[test]
    fn clients_that_stop_reading_lose_their_slots() {
        let (addr, shutdown, handle) = start_with(ShardLimits {
            max_output_bytes: 64 << 20,
            ..limits()
        });
        // Four clients fill the shard, each asking for 32 MiB and never reading it.
        let stuck: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut c = TcpStream::connect(addr).unwrap();
                c.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut refused = TcpStream::connect(addr).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = refused.write_all(b"GET /x HTTP/1.1\r\n\r\n");
        let mut buf = [0u8; 16];
        assert!(
            matches!(refused.read(&mut buf), Ok(0) | Err(_)),
            "shard was not full"
        );
        // Their sends make no progress for the idle timeout (2 s): the sweep shuts them down
        // and the slots come back.
        std::thread::sleep(Duration::from_millis(3500));
        let mut fresh = TcpStream::connect(addr).unwrap();
        fresh
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        fresh.write_all(b"GET /after HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_responses(&mut fresh, 1), vec!["/after".to_owned()]);
        drop(stuck);
        shutdown.store(true, Ordering::Relaxed);
        drop(fresh);
        handle.join().unwrap();
    }
}
