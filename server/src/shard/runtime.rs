//! One shard's io_uring event loop: accept, receive, parse, dispatch, send, time out, shut down.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::BufRing;
use super::listen::{peer_cred, peer_ip, set_nodelay, Listeners, PeerCred};
use super::mesh::Inbox;
use super::{Cx, Handler, Outcome, Ready, Ticket};
use crate::http::{self, Parsed};

const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_WAKE: u64 = 4;
const OP_CANCEL: u64 = 5;
/// Which listener an accept completion is for (the `idx` field of its user data).
const LISTEN_TCP: usize = 0;
const LISTEN_UNIX: usize = 1;

/// Background work units granted per loop iteration: request handling always comes first.
const BACKGROUND_BUDGET: u32 = 16;
/// Requests one connection may have dispatched per loop pass; then it waits for the next pass
/// (the backlog), so a pipelined flood on one connection cannot hold the shard.
const MAX_REQUESTS_PER_CONN_PASS: u32 = 32;
/// Response bytes one connection may have produced per pass before its turn ends (so a pass
/// stays short when many connections ask for large responses).
const MAX_OUTPUT_PER_CONN_PASS: usize = 32 * 1024;
/// Above this much unsent output a connection's requests are not parsed until it drains: a
/// client that does not read stops costing work and memory.
const OUTPUT_PAUSE_BYTES: usize = 64 * 1024;
/// A connection waiting for its turn or its output with this much unparsed input has its
/// receive cancelled until it catches up (TCP flow control then holds the client back).
const INBUF_PAUSE_BYTES: usize = 64 * 1024;
/// Emptied buffers larger than this are released rather than kept for reuse.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;
/// The interim response for `Expect: 100-continue`.
const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
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
    /// A deferred response not answered within this is answered `503` and the connection
    /// closed (the control plane or a peer shard never answered).
    pub deferred_timeout_s: u64,
    /// SQ entries.
    pub ring_entries: u32,
    /// Provided buffer size.
    pub recv_buffer_bytes: usize,
    /// Provided buffer count (power of two).
    pub recv_buffer_count: usize,
    /// Bytes all connections of the shard may hold in buffers (input, output, deferred
    /// answers); above it the connections holding the most are closed. 0: derived from the
    /// connection limit (`buffered_bytes_budget`).
    pub max_buffered_bytes: usize,
}

impl ShardLimits {
    /// The shard's buffer budget: `max_buffered_bytes`, or 128 KiB per allowed connection
    /// capped at 256 MiB.
    pub fn buffered_bytes_budget(&self) -> usize {
        if self.max_buffered_bytes > 0 {
            self.max_buffered_bytes
        } else {
            self.max_connections
                .saturating_mul(128 * 1024)
                .min(256 << 20)
        }
    }
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
    /// Connections accepted on the Unix-socket listener (a subset of `accepted`).
    pub unix_accepted: AtomicU64,
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
    /// Times a connection used its turn and was put back behind the others.
    pub turns_yielded: AtomicU64,
    /// Receives cancelled because a connection had too much unparsed input.
    pub recv_paused: AtomicU64,
    /// Connections closed because the shard's buffers were over budget.
    pub shed_for_memory: AtomicU64,
    /// Bytes held in connection buffers at the last sweep.
    pub buffered_bytes: AtomicU64,
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
    /// `SO_PEERCRED` uid and pid of a Unix-socket peer (read once at accept); `None` over TCP.
    cred: Option<PeerCred>,
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
    /// Loop pass `n_served` counts for.
    served_pass: u64,
    /// Requests dispatched in `served_pass`.
    n_served: u32,
    /// Response bytes produced in `served_pass`.
    served_bytes: usize,
    /// Queued in the shard's backlog: it has complete requests waiting for its next turn.
    backlogged: bool,
    /// Its output is above `OUTPUT_PAUSE_BYTES`: nothing is parsed until it drains.
    output_paused: bool,
    /// A cancel of its multishot receive is in flight.
    recv_cancel_sent: bool,
    /// `100 Continue` was sent for the request now being received.
    continue_sent: bool,
}

/// The 64 bits of an SQE's user data: connection slot index, slot generation, operation.
const IDX_BITS: u32 = 32;
const GEN_BITS: u32 = 24;
const OP_BITS: u32 = 8;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
const _: () = assert!(IDX_BITS + GEN_BITS + OP_BITS == u64::BITS);
const _: () = assert!(OP_CANCEL < 1 << OP_BITS);

/// Most connections one shard may hold: every slot index must fit its user-data field.
pub const MAX_CONNECTIONS_PER_SHARD: usize = 1 << 20;
const _: () = assert!(MAX_CONNECTIONS_PER_SHARD <= 1 << IDX_BITS);

impl Conn {
    /// Unsent output, including responses queued behind deferred ones.
    fn output_bytes(&self) -> usize {
        let queued: usize = self.waiting.iter().map(|w| w.after.len()).sum();
        self.out.len() + (self.sending.len() - self.sent) + queued
    }

    /// Memory this connection's buffers hold (capacities: what the allocator gave out).
    fn held_bytes(&self) -> usize {
        let waiting: usize = self
            .waiting
            .iter()
            .map(|w| w.after.capacity() + w.reply.as_ref().map_or(0, Vec::capacity))
            .sum();
        self.inbuf.capacity() + self.out.capacity() + self.sending.capacity() + waiting
    }

    /// Whether it is waiting (its turn, or its output to drain) with much input unparsed:
    /// then receiving more only grows memory.
    fn input_saturated(&self) -> bool {
        (self.backlogged || self.output_paused) && self.inbuf.len() >= INBUF_PAUSE_BYTES
    }

    /// Whether a receive should be armed now.
    fn wants_recv(&self) -> bool {
        !self.recv_armed && !self.closing && !self.input_saturated()
    }

    /// Where the next response goes: behind the last deferred response, or straight out.
    fn output(&mut self) -> &mut Vec<u8> {
        match self.waiting.back_mut() {
            Some(w) => &mut w.after,
            None => &mut self.out,
        }
    }

    /// Whether the connection holds more pipelined work or unsent output than allowed.
    fn over_limits(&self, limits: &ShardLimits) -> bool {
        self.waiting.len() > limits.max_pipeline_depth
            || self.output_bytes() > limits.max_output_bytes
    }

    /// Keeps the bytes after `at` for later: an unfinished request, or (`waiting`) requests
    /// left for the connection's next turn. `bytes` is `inbuf` when `from_inbuf`, else the
    /// receive buffer `data`.
    fn keep_unparsed(
        &mut self,
        mut inbuf: Vec<u8>,
        data: &[u8],
        at: usize,
        from_inbuf: bool,
        waiting: bool,
        now_s: u64,
    ) {
        let n_bytes = if from_inbuf { inbuf.len() } else { data.len() };
        debug_assert!(at <= n_bytes);
        if self.closing || at >= n_bytes {
            self.partial_since_s = 0;
            inbuf.clear();
            if inbuf.capacity() > KEEP_BUFFER_BYTES {
                inbuf = Vec::new();
            }
        } else if waiting {
            // Whole requests wait for the next turn: the server is slow, not the client.
            self.partial_since_s = 0;
            if from_inbuf {
                inbuf.drain(..at);
            } else {
                inbuf.extend_from_slice(&data[at..]);
            }
        } else {
            // The slow-request clock starts when a request starts, not when the connection
            // first had a partial one: completed requests are progress.
            if self.partial_since_s == 0 || at > 0 {
                self.partial_since_s = now_s;
            }
            if from_inbuf {
                inbuf.drain(..at);
            } else {
                inbuf.extend_from_slice(&data[at..]);
            }
        }
        self.inbuf = inbuf;
    }
}

fn user_data(op: u64, idx: usize, gen: u32) -> u64 {
    debug_assert!(op < 1 << OP_BITS && idx < MAX_CONNECTIONS_PER_SHARD && gen <= GEN_MASK);
    ((idx as u64) << (GEN_BITS + OP_BITS)) | (u64::from(gen & GEN_MASK) << OP_BITS) | op
}

fn split_user_data(ud: u64) -> (u64, usize, u32) {
    (
        ud & ((1 << OP_BITS) - 1),
        (ud >> (GEN_BITS + OP_BITS)) as usize,
        ((ud >> OP_BITS) as u32) & GEN_MASK,
    )
}

struct Shard<H: Handler> {
    idx: usize,
    ring: IoUring,
    bufs: BufRing,
    /// This shard's TCP listener; `None` for a Unix-only server.
    listener: Option<OwnedFd>,
    /// The one Unix-socket listener every shard also accepts on (shared, not owned here).
    unix_listener: Option<Arc<OwnedFd>>,
    limits: ShardLimits,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    n_conns: usize,
    next_gen: u32,
    dirty: Vec<usize>,
    tickets: HashMap<Ticket, (usize, u32)>,
    next_ticket: Ticket,
    /// Loop passes so far; fairness budgets are per pass.
    pass: u64,
    /// Connections with whole requests left over, in turn order.
    backlog: VecDeque<(usize, u32)>,
    handler: H,
    inbox: Inbox<H::Msg>,
    stats: Arc<RuntimeStats>,
    wake_buf: Box<u64>,
    ready: Ready,
    accepting: bool,
    /// The multishot accept (TCP, Unix) ended with an error; re-armed at the next sweep.
    accept_rearm_due: [bool; 2],
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
    listener: impl Into<Listeners>,
    limits: ShardLimits,
    inbox: Inbox<H::Msg>,
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
    let Listeners { tcp, unix } = listener.into();
    let mut shard = Shard {
        idx,
        ring,
        bufs,
        listener: tcp,
        unix_listener: unix,
        conns: Vec::with_capacity(limits.max_connections.min(65_536)),
        free: Vec::new(),
        n_conns: 0,
        next_gen: 1,
        dirty: Vec::with_capacity(256),
        tickets: HashMap::new(),
        next_ticket: 0,
        pass: 0,
        backlog: VecDeque::new(),
        handler,
        inbox,
        stats,
        wake_buf: Box::new(0),
        ready: Vec::new(),
        accepting: true,
        accept_rearm_due: [false; 2],
        limits,
    };
    shard.arm_accept(LISTEN_TCP);
    shard.arm_accept(LISTEN_UNIX);
    shard.arm_wake();
    let result = shard.run(shutdown);
    shard.bufs.unregister(&shard.ring);
    result
}

impl<H: Handler> Shard<H> {
    fn run(&mut self, shutdown: &AtomicBool) -> io::Result<()> {
        let mut now_s = crate::unix_now_s();
        let mut last_sweep_s = now_s;
        let mut shutdown_deadline: Option<Instant> = None;
        let mut more_background = false;
        loop {
            RuntimeStats::bump(&self.stats.loops);
            self.pass += 1;
            // One enter per iteration: submit everything queued and wait for at least one
            // completion, unless background work or a connection's next turn is pending.
            let idle = !more_background && self.backlog.is_empty() && self.inbox.depth() == 0;
            if idle {
                self.inbox.waker().park();
            }
            let wait = if idle && self.inbox.depth() == 0 {
                IDLE_WAIT
            } else {
                Duration::ZERO
            };
            self.enter(wait)?;
            self.inbox.waker().unpark();
            now_s = crate::unix_now_s();

            self.drain_completions(now_s);
            self.run_backlog(now_s);
            more_background = self
                .handler
                .background(now_s, BACKGROUND_BUDGET, &mut self.ready);
            self.deliver_ready();
            if now_s != last_sweep_s {
                last_sweep_s = now_s;
                self.sweep_timeouts(now_s);
                self.shed_memory();
                for which in [LISTEN_TCP, LISTEN_UNIX] {
                    if std::mem::take(&mut self.accept_rearm_due[which]) && self.accepting {
                        self.arm_accept(which);
                    }
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
        // Always enter with GETEVENTS (a zero timeout when there is work to go on with): with
        // DEFER_TASKRUN, completions are only posted while the task enters to get events, so a
        // plain submit while busy (backlog, background) would never see new completions.
        let ts = types::Timespec::from(wait);
        let args = types::SubmitArgs::new().timespec(&ts);
        let result = self.ring.submitter().submit_with_args(1, &args);
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

    fn arm_accept(&mut self, which: usize) {
        let fd = if which == LISTEN_UNIX {
            match &self.unix_listener {
                Some(l) => l.as_raw_fd(),
                None => return,
            }
        } else {
            match &self.listener {
                Some(l) => l.as_raw_fd(),
                None => return,
            }
        };
        // The Unix listener is one socket shared by every shard: a single-shot accept,
        // re-armed after each connection, queues this shard behind the others' waits, so the
        // kernel's wake-one hands connections round the shards (a multishot accept stays
        // first in line and would take them all).
        let entry = if which == LISTEN_UNIX {
            opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::AcceptMulti::new(types::Fd(fd))
                .flags(libc::SOCK_CLOEXEC)
                .build()
        }
        .user_data(user_data(OP_ACCEPT, which, 0));
        self.push_sqe(&entry);
    }

    fn arm_wake(&mut self) {
        let fd = self.inbox.waker().fd();
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
            for which in [LISTEN_TCP, LISTEN_UNIX] {
                let entry = opcode::AsyncCancel::new(user_data(OP_ACCEPT, which, 0))
                    .build()
                    .user_data(user_data(OP_CANCEL, 0, 0));
                self.push_sqe(&entry);
            }
        }
    }

    fn drain_completions(&mut self, now_s: u64) {
        // Copy out first: handling a completion pushes SQEs, which needs the ring mutably.
        let mut batch: [(u64, i32, u32); 256] = [(0, 0, 0); 256];
        loop {
            // Mesh messages first: a revocation broadcast before a request's arrival is applied
            // before that request is answered.
            while let Some(msg) = self.inbox.recv() {
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
                    OP_ACCEPT => self.on_accept(idx, res, flags, now_s),
                    OP_RECV => self.on_recv(idx, gen, res, flags, now_s),
                    OP_SEND => self.on_send(idx, gen, res),
                    OP_WAKE => self.arm_wake(),
                    _ => {}
                }
            }
        }
    }

    fn on_accept(&mut self, which: usize, res: i32, flags: u32, now_s: u64) {
        if res < 0 {
            if res != -libc::ECANCELED {
                tracing::debug!(shard = self.idx, errno = -res, "accept failed");
                RuntimeStats::bump(&self.stats.accept_errors);
            }
            // Out of fds (EMFILE/ENFILE) would fail again at once: re-arm from the sweep.
            if !cqueue::more(flags) && self.accepting {
                self.accept_rearm_due[which] = true;
            }
            return;
        }
        if !cqueue::more(flags) && self.accepting {
            self.arm_accept(which);
        }
        // SAFETY: the kernel handed us this fresh fd.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(res) };
        if self.n_conns >= self.limits.max_connections || !self.accepting {
            RuntimeStats::bump(&self.stats.rejected_over_limit);
            return; // dropping `fd` closes it
        }
        let (peer, cred) = if which == LISTEN_UNIX {
            RuntimeStats::bump(&self.stats.unix_accepted);
            let cred = peer_cred(fd.as_raw_fd());
            match cred {
                Some(PeerCred { uid, pid }) => {
                    tracing::debug!(shard = self.idx, uid, pid, "unix-socket peer connected");
                }
                None => tracing::debug!(shard = self.idx, "unix-socket peer without credentials"),
            }
            // Keyed per uid, not per pid: a front proxy's workers are several pids of one uid
            // and share one budget (and a pid is reused once its process exits).
            let uid = cred.map_or(u32::MAX, |c| c.uid);
            (super::unix_peer_key(uid), cred)
        } else {
            set_nodelay(fd.as_raw_fd());
            (peer_ip(fd.as_raw_fd()), None)
        };
        let gen = self.next_gen;
        self.next_gen = (self.next_gen + 1) & GEN_MASK;
        let conn = Conn {
            fd,
            gen,
            peer,
            cred,
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
            served_pass: 0,
            n_served: 0,
            served_bytes: 0,
            backlogged: false,
            output_paused: false,
            recv_cancel_sent: false,
            continue_sent: false,
        };
        let idx = if let Some(idx) = self.free.pop() {
            self.conns[idx] = Some(conn);
            idx
        } else {
            self.conns.push(Some(conn));
            self.conns.len() - 1
        };
        self.n_conns += 1;
        assert!(self.n_conns <= self.limits.max_connections);
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
            conn.recv_cancel_sent = false;
        }
        if res <= 0 {
            if res == -libc::ECANCELED && !more {
                // Our own pause (`input_saturated`): resumed when the input is parsed.
                self.mark_dirty(idx);
                return;
            }
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
            self.process(idx, Some((bid, res as usize)), now_s);
        }
        self.bufs.recycle(bid);
        self.rearm_recv_if_wanted(idx);
        self.mark_dirty(idx);
    }

    fn rearm_recv_if_wanted(&mut self, idx: usize) {
        if self.conns[idx].as_ref().is_some_and(Conn::wants_recv) {
            self.arm_recv(idx);
        }
    }

    /// Gives every backlogged connection its next turn (each at most once per pass).
    fn run_backlog(&mut self, now_s: u64) {
        for _ in 0..self.backlog.len() {
            let Some((idx, gen)) = self.backlog.pop_front() else {
                break;
            };
            let Some(conn) = self.conn_mut(idx, gen) else {
                continue; // closed meanwhile
            };
            conn.backlogged = false;
            if !conn.closing {
                self.process(idx, None, now_s);
                self.rearm_recv_if_wanted(idx);
            }
        }
    }

    /// Parses and dispatches the complete requests in the connection's unparsed input plus
    /// `new` bytes (a receive buffer), until the input runs out, the connection's turn ends
    /// (`MAX_REQUESTS_PER_CONN_PASS`, or the handler answers `Later`), or its output is over
    /// `OUTPUT_PAUSE_BYTES`.
    fn process(&mut self, idx: usize, new: Option<(u16, usize)>, now_s: u64) {
        let pass = self.pass;
        let Some(conn) = self.conns[idx].as_mut() else {
            return;
        };
        let data: &[u8] = match new {
            Some((bid, len)) => {
                conn.last_active_s = now_s;
                self.bufs.data(bid, len)
            }
            None => &[],
        };
        let mut inbuf = std::mem::take(&mut conn.inbuf);
        let from_inbuf = !inbuf.is_empty();
        if from_inbuf {
            inbuf.extend_from_slice(data);
        }
        let bytes: &[u8] = if from_inbuf { &inbuf } else { data };
        if conn.served_pass != pass {
            conn.served_pass = pass;
            conn.n_served = 0;
            conn.served_bytes = 0;
        }
        let mut at = 0;
        let mut turn_over = false;
        let limits = &self.limits;
        let stats = &*self.stats;
        while at < bytes.len() && !conn.closing {
            if conn.output_bytes() > OUTPUT_PAUSE_BYTES {
                conn.output_paused = true;
                break;
            }
            if conn.n_served >= MAX_REQUESTS_PER_CONN_PASS
                || conn.served_bytes >= MAX_OUTPUT_PER_CONN_PASS
            {
                turn_over = true;
                break;
            }
            match http::parse(&bytes[at..], limits.max_header_bytes, limits.max_body_bytes) {
                Ok(Parsed::Partial) => break,
                Ok(Parsed::BodyExpected) => {
                    if !conn.continue_sent {
                        conn.continue_sent = true;
                        conn.output().extend_from_slice(CONTINUE_100);
                    }
                    break;
                }
                Ok(Parsed::Complete(req, used)) => {
                    let mut cx = Cx {
                        peer: conn.peer,
                        peer_uid: conn.cred.map(|c| c.uid),
                        peer_pid: conn.cred.map(|c| c.pid),
                        now_s,
                        shard_idx: self.idx,
                        pass,
                        runtime: stats,
                        next_ticket: &mut self.next_ticket,
                    };
                    let out = conn.output();
                    let out_before = out.len();
                    let outcome = self.handler.handle(&req, &mut cx, out);
                    let wrote = out.len() - out_before;
                    if outcome == Outcome::Later {
                        // Over this pass's budget for costly work: the request stays in the
                        // input and is offered again at the connection's next turn.
                        turn_over = true;
                        break;
                    }
                    at += used;
                    conn.n_served += 1;
                    conn.served_bytes += wrote;
                    conn.continue_sent = false;
                    RuntimeStats::bump(&stats.requests);
                    if let Outcome::Deferred(ticket) = outcome {
                        self.tickets.insert(ticket, (idx, conn.gen));
                        conn.waiting.push_back(Waiting {
                            ticket,
                            reply: None,
                            after: Vec::new(),
                            since_s: now_s,
                        });
                    }
                    if !req.keep_alive {
                        conn.closing = true;
                    }
                    if conn.over_limits(limits) {
                        RuntimeStats::bump(&stats.output_overflows);
                        conn.closing = true;
                    }
                }
                Err(err) => {
                    RuntimeStats::bump(&stats.bad_requests);
                    http::write_http_error(conn.output(), err);
                    conn.closing = true;
                }
            }
        }
        let waiting = turn_over || conn.output_paused;
        conn.keep_unparsed(inbuf, data, at, from_inbuf, waiting, now_s);
        self.end_turn(idx, turn_over);
    }

    /// After parsing: a connection whose turn ended goes to the back of the backlog, and one
    /// with too much unparsed input stops receiving until it catches up.
    fn end_turn(&mut self, idx: usize, turn_over: bool) {
        let Some(conn) = self.conns[idx].as_mut() else {
            return;
        };
        if turn_over && !conn.closing && !conn.backlogged {
            conn.backlogged = true;
            self.backlog.push_back((idx, conn.gen));
            RuntimeStats::bump(&self.stats.turns_yielded);
        }
        if conn.recv_armed && !conn.recv_cancel_sent && conn.input_saturated() {
            conn.recv_cancel_sent = true;
            RuntimeStats::bump(&self.stats.recv_paused);
            let entry = opcode::AsyncCancel::new(user_data(OP_RECV, idx, conn.gen))
                .build()
                .user_data(user_data(OP_CANCEL, 0, 0));
            self.push_sqe(&entry);
        }
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
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if conn.gen != gen {
            return;
        }
        conn.send_inflight = false;
        conn.last_send_s = crate::unix_now_s();
        if res < 0 {
            conn.closing = true;
            conn.out = Vec::new();
            for w in conn.waiting.drain(..) {
                self.tickets.remove(&w.ticket);
            }
        } else {
            conn.sent += res as usize;
            if conn.sent < conn.sending.len() {
                self.push_send(idx);
                return;
            }
            conn.sending.clear();
            if conn.sending.capacity() > KEEP_BUFFER_BYTES {
                conn.sending = Vec::new();
            }
            conn.sent = 0;
            if conn.output_paused && conn.output_bytes() <= OUTPUT_PAUSE_BYTES / 2 {
                // Drained: parse what waited, and receive again.
                conn.output_paused = false;
                if !conn.inbuf.is_empty() && !conn.backlogged && !conn.closing {
                    conn.backlogged = true;
                    self.backlog.push_back((idx, gen));
                }
                self.rearm_recv_if_wanted(idx);
            }
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
            // No SQE may still point at this connection's buffers or name its slot.
            assert!(!conn.send_inflight && !conn.recv_armed);
            assert!(self.n_conns > 0, "connection count would go negative");
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
            let mut dirty =
                expire_deferred(conn, &mut self.tickets, now_s, limits.deferred_timeout_s);
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
                    && !conn.backlogged
                    && conn.inbuf.is_empty()
                    && !conn.send_inflight
                    && now_s.saturating_sub(conn.last_active_s) >= limits.idle_timeout_s;
                if slow {
                    http::write_oauth_error(
                        conn.output(),
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

    /// Keeps the shard's buffers within budget: measures what every connection holds and, when
    /// the total is over `buffered_bytes_budget`, closes the connections holding the most.
    fn shed_memory(&mut self) {
        let budget = self.limits.buffered_bytes_budget();
        let mut held: Vec<(usize, usize)> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(idx, c)| c.as_ref().map(|c| (c.held_bytes(), idx)))
            .collect();
        let mut total: usize = held.iter().map(|&(bytes, _)| bytes).sum();
        self.stats
            .buffered_bytes
            .store(total as u64, Ordering::Relaxed);
        if total <= budget {
            return;
        }
        held.sort_unstable_by(|a, b| b.cmp(a));
        for (bytes, idx) in held {
            if total <= budget {
                break;
            }
            let Some(conn) = self.conns[idx].as_mut() else {
                continue;
            };
            if conn.shut {
                continue; // already closing; its completions free it
            }
            tracing::warn!(
                shard = self.idx,
                bytes,
                peer = %conn.peer,
                uid = conn.cred.map(|c| c.uid),
                pid = conn.cred.map(|c| c.pid),
                "closing a connection: shard buffers over budget"
            );
            force_close(conn, &mut self.tickets);
            RuntimeStats::bump(&self.stats.shed_for_memory);
            total = total.saturating_sub(bytes);
            self.mark_dirty(idx);
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

/// Answers deferred responses older than `timeout_s` with 503; true if any was.
fn expire_deferred(
    conn: &mut Conn,
    tickets: &mut HashMap<Ticket, (usize, u32)>,
    now_s: u64,
    timeout_s: u64,
) -> bool {
    let mut expired = false;
    for w in &mut conn.waiting {
        if w.reply.is_none() && now_s.saturating_sub(w.since_s) >= timeout_s {
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
    conn.out = Vec::new();
    conn.inbuf = Vec::new();
    for w in conn.waiting.drain(..) {
        tickets.remove(&w.ticket);
    }
    if !conn.shut {
        conn.shut = true;
        // SAFETY: shutting down our own socket.
        unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

#[cfg(test)]
mod tests;
