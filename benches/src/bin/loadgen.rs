//! subzero's fixed-rate (open-loop) HTTP/1.1 load generator on `io_uring`, one thread.
//!
//! Request `i` is due at `start + i / rate` whatever happened before it; it goes to connection
//! `i % connections` and waits there, in schedule order, until the connection may send
//! (`--pipeline` requests in flight at most). Latency runs from the due time to the response,
//! so a server that falls behind is charged for the queueing it causes (no coordinated
//! omission). Prints one JSON line on stdout at the end.
//!
//! `--closed-loop` instead keeps `--pipeline` requests in flight on every connection for the
//! duration (saturation, like wrk, but also over a Unix socket): each response sends the next
//! request at once, and latency runs from that send.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring};
use subzero_benches::{
    build_request, install_stop_handler, parse_header_arg, parse_response, parse_url,
    stop_requested, ResponseParse, Schedule, Target,
};

/// Fixed-rate HTTP/1.1 load generator (open loop, latency from the scheduled send time).
#[derive(Parser, Debug)]
struct Args {
    /// Target URL, `http://HOST:PORT/path`.
    #[arg(long, conflicts_with_all = ["addr", "path"])]
    url: Option<String>,
    /// Target `HOST:PORT` (with `--path`), instead of `--url`.
    #[arg(long)]
    addr: Option<String>,
    /// Request path with `--addr`.
    #[arg(long, default_value = "/")]
    path: String,
    /// Offered load, requests per second (all connections together).
    #[arg(long, required_unless_present = "closed_loop")]
    rate: Option<u64>,
    /// Closed loop (saturation) instead of a fixed rate: each connection always has
    /// `--pipeline` requests in flight until the duration is over.
    #[arg(long, conflicts_with = "rate")]
    closed_loop: bool,
    /// Keep-alive connections opened before the run starts.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How long requests are offered, seconds.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Extra request header `"Name: value"`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// File whose bytes are sent as each request's body.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// Requests in flight per connection at most.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// File of bearer tokens, one per line: request `i` carries `Authorization: Bearer
    /// <line i mod n>` (the unique-token, cold-verify scenario).
    #[arg(long)]
    bearer_file: Option<std::path::PathBuf>,
    /// After the offered period, how long to wait for outstanding responses, seconds.
    #[arg(long, default_value_t = 5)]
    drain_s: u64,
    /// Connect to this Unix stream socket instead; `--url`/`--addr` then give only the Host
    /// header and path.
    #[arg(long)]
    unix: Option<std::path::PathBuf>,
}

/// A connection's socket: TCP or Unix stream.
enum Stream {
    Tcp(TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

const CONNECTIONS_MAX: usize = 1024;
const DURATION_S_MAX: u64 = 600;
const RATE_MAX: u64 = 10_000_000;
const PIPELINE_MAX: usize = 256;
const DRAIN_S_MAX: u64 = 60;
const BODY_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Bytes of `--bearer-file` at most (about a million tokens).
const BEARER_FILE_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// Requests waiting on one connection at most; beyond it a due request is dropped and counted
/// as an error (the server is hopelessly behind and memory must stay bounded).
const QUEUE_PER_CONNECTION_MAX: usize = 1 << 20;
/// Reconnects over the whole run at most; a connection that cannot reconnect is dead and the
/// requests assigned to it count as errors.
const RECONNECTS_MAX: u64 = 10_000;
/// Bytes of unread responses buffered per connection.
const RECV_BUFFER_LEN: usize = 64 * 1024;
const RING_ENTRIES: u32 = 4096;
const LATENCY_US_MAX: u64 = 60_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Send = 1,
    Recv = 2,
}

fn user_data(op: Op, conn_idx: usize) -> u64 {
    ((op as u64) << 56) | conn_idx as u64
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "independent per-connection flags, read one at a time"
)]
struct Conn {
    stream: Option<Stream>,
    /// Due times (ns since start) and indexes of requests assigned here and not sent yet.
    queued: VecDeque<(u64, u64)>,
    /// Due times of requests sent and not answered yet, oldest first.
    in_flight: VecDeque<u64>,
    send_buf: Vec<u8>,
    send_offset: usize,
    send_in_flight: bool,
    recv_buf: Vec<u8>,
    n_filled: usize,
    recv_in_flight: bool,
    /// The socket failed: reconnect once no op is in flight on it.
    broken: bool,
    dirty: bool,
}

impl Conn {
    fn fd(&self) -> Option<RawFd> {
        self.stream.as_ref().map(Stream::fd)
    }
}

#[derive(Default)]
struct Counters {
    n_requests: u64,
    n_responses: u64,
    n_errors: u64,
    n_non_2xx: u64,
    n_reconnects: u64,
    status: BTreeMap<u16, u64>,
}

struct Loadgen {
    ring: IoUring,
    conns: Vec<Conn>,
    dirty: Vec<usize>,
    addr: SocketAddr,
    unix: Option<std::path::PathBuf>,
    /// Request `i` is `requests[i % requests.len()]`; never empty.
    requests: Vec<Vec<u8>>,
    pipeline: usize,
    histogram: Histogram<u64>,
    counters: Counters,
    /// Closed loop: a response sends the next request while `now_ns` is before this (ns since
    /// the start); 0 in fixed-rate mode.
    refill_until_ns: u64,
    /// Closed loop: the index of the next request.
    next_idx: u64,
    /// When the run loop last looked at the clock, ns since the start.
    now_ns: u64,
}

fn push(ring: &mut IoUring, entry: &squeue::Entry) -> std::io::Result<()> {
    loop {
        // SAFETY: send and recv buffers live in `Conn`s that outlive the ring's use of them:
        // a connection's buffers are only touched again after its op's completion arrives.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

fn connect(addr: SocketAddr, unix: Option<&std::path::Path>) -> std::io::Result<Stream> {
    if let Some(path) = unix {
        return Ok(Stream::Unix(std::os::unix::net::UnixStream::connect(path)?));
    }
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    Ok(Stream::Tcp(stream))
}

impl Loadgen {
    fn mark_dirty(&mut self, conn_idx: usize) {
        let conn = &mut self.conns[conn_idx];
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(conn_idx);
        }
    }

    /// Assigns request `idx`, due at `due_ns`, to its connection.
    fn enqueue(&mut self, idx: u64, due_ns: u64) {
        let conn_idx = (idx % self.conns.len() as u64) as usize;
        self.enqueue_on(conn_idx, idx, due_ns);
    }

    /// Closed loop: tops connection `conn_idx` up to `pipeline` requests, due now, while the
    /// run lasts.
    fn refill(&mut self, conn_idx: usize) {
        if self.now_ns >= self.refill_until_ns {
            return;
        }
        let conn = &self.conns[conn_idx];
        let n_missing = self
            .pipeline
            .saturating_sub(conn.queued.len() + conn.in_flight.len());
        for _ in 0..n_missing {
            let idx = self.next_idx;
            self.next_idx += 1;
            self.enqueue_on(conn_idx, idx, self.now_ns);
        }
    }

    /// Assigns request `idx`, due at `due_ns`, to connection `conn_idx`.
    fn enqueue_on(&mut self, conn_idx: usize, idx: u64, due_ns: u64) {
        self.counters.n_requests += 1;
        let conn = &mut self.conns[conn_idx];
        if conn.stream.is_none() && !conn.broken {
            // Dead for good: it could not reconnect.
            self.counters.n_errors += 1;
            return;
        }
        if conn.queued.len() >= QUEUE_PER_CONNECTION_MAX {
            self.counters.n_errors += 1;
            return;
        }
        conn.queued.push_back((due_ns, idx));
        self.mark_dirty(conn_idx);
    }

    fn arm_recv(&mut self, conn_idx: usize) -> std::io::Result<()> {
        let conn = &mut self.conns[conn_idx];
        let Some(fd) = conn.fd() else { return Ok(()) };
        let free = &mut conn.recv_buf[conn.n_filled..];
        let entry = opcode::Recv::new(Fd(fd), free.as_mut_ptr(), free.len() as u32)
            .build()
            .user_data(user_data(Op::Recv, conn_idx));
        conn.recv_in_flight = true;
        push(&mut self.ring, &entry)
    }

    fn fail(&mut self, conn_idx: usize) {
        let conn = &mut self.conns[conn_idx];
        if !conn.broken {
            conn.broken = true;
            if let Some(stream) = conn.stream.as_ref() {
                // Makes the op still in flight on this socket complete promptly.
                stream.shutdown();
            }
        }
        self.mark_dirty(conn_idx);
    }

    /// Replaces a broken connection once nothing is in flight on it; its unanswered requests
    /// are errors, its queued ones go out on the new connection.
    fn reconnect(&mut self, conn_idx: usize) -> std::io::Result<()> {
        let conn = &mut self.conns[conn_idx];
        self.counters.n_errors += conn.in_flight.len() as u64;
        conn.in_flight.clear();
        conn.stream = None;
        conn.n_filled = 0;
        conn.broken = false;
        if self.counters.n_reconnects >= RECONNECTS_MAX {
            self.counters.n_errors += conn.queued.len() as u64;
            conn.queued.clear();
            return Ok(());
        }
        self.counters.n_reconnects += 1;
        if let Ok(stream) = connect(self.addr, self.unix.as_deref()) {
            conn.stream = Some(stream);
            self.refill(conn_idx);
            self.arm_recv(conn_idx)?;
        } else {
            self.counters.n_errors += conn.queued.len() as u64;
            conn.queued.clear();
        }
        Ok(())
    }

    fn on_send(&mut self, conn_idx: usize, result: i32) -> std::io::Result<()> {
        let conn = &mut self.conns[conn_idx];
        conn.send_in_flight = false;
        if result <= 0 || conn.broken {
            self.fail(conn_idx);
            return Ok(());
        }
        conn.send_offset += result as usize;
        if conn.send_offset < conn.send_buf.len() {
            let Some(fd) = conn.fd() else { return Ok(()) };
            let rest = &conn.send_buf[conn.send_offset..];
            let entry = opcode::Send::new(Fd(fd), rest.as_ptr(), rest.len() as u32)
                .build()
                .user_data(user_data(Op::Send, conn_idx));
            conn.send_in_flight = true;
            return push(&mut self.ring, &entry);
        }
        self.mark_dirty(conn_idx);
        Ok(())
    }

    fn on_recv(&mut self, conn_idx: usize, result: i32, now_ns: u64) -> std::io::Result<()> {
        let conn = &mut self.conns[conn_idx];
        conn.recv_in_flight = false;
        if result <= 0 || conn.broken {
            self.fail(conn_idx);
            return Ok(());
        }
        conn.n_filled += result as usize;
        let mut n_consumed = 0;
        loop {
            match parse_response(&conn.recv_buf[n_consumed..conn.n_filled]) {
                Ok(ResponseParse::Complete { status, n_bytes }) => {
                    n_consumed += n_bytes;
                    let Some(due_ns) = conn.in_flight.pop_front() else {
                        // A response nobody asked for: the stream is out of step.
                        self.fail(conn_idx);
                        return Ok(());
                    };
                    let latency_us =
                        (now_ns.saturating_sub(due_ns) / 1000).clamp(1, LATENCY_US_MAX);
                    self.histogram.saturating_record(latency_us);
                    self.counters.n_responses += 1;
                    if !(200..300).contains(&status) {
                        self.counters.n_non_2xx += 1;
                    }
                    *self.counters.status.entry(status).or_insert(0) += 1;
                }
                Ok(ResponseParse::Partial) => break,
                Err(_) => {
                    self.fail(conn_idx);
                    return Ok(());
                }
            }
        }
        conn.recv_buf.copy_within(n_consumed..conn.n_filled, 0);
        conn.n_filled -= n_consumed;
        if conn.n_filled == conn.recv_buf.len() {
            // A response larger than the buffer: report it as broken framing.
            self.fail(conn_idx);
            return Ok(());
        }
        self.refill(conn_idx);
        self.mark_dirty(conn_idx);
        self.arm_recv(conn_idx)
    }

    /// Sends what each touched connection may send now, in one send each.
    fn flush_dirty(&mut self) -> std::io::Result<()> {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &conn_idx in &dirty {
            self.conns[conn_idx].dirty = false;
            let conn = &self.conns[conn_idx];
            if conn.broken {
                if !conn.send_in_flight && !conn.recv_in_flight {
                    self.reconnect(conn_idx)?;
                }
                continue;
            }
            let conn = &mut self.conns[conn_idx];
            let Some(fd) = conn.fd() else { continue };
            if conn.send_in_flight || conn.queued.is_empty() {
                continue;
            }
            let n_sendable = self
                .pipeline
                .saturating_sub(conn.in_flight.len())
                .min(conn.queued.len());
            if n_sendable == 0 {
                continue;
            }
            conn.send_buf.clear();
            for _ in 0..n_sendable {
                let Some((due_ns, idx)) = conn.queued.pop_front() else {
                    break;
                };
                conn.in_flight.push_back(due_ns);
                let request = &self.requests[(idx % self.requests.len() as u64) as usize];
                conn.send_buf.extend_from_slice(request);
            }
            conn.send_offset = 0;
            conn.send_in_flight = true;
            let entry =
                opcode::Send::new(Fd(fd), conn.send_buf.as_ptr(), conn.send_buf.len() as u32)
                    .build()
                    .user_data(user_data(Op::Send, conn_idx));
            push(&mut self.ring, &entry)?;
        }
        dirty.clear();
        self.dirty = dirty;
        Ok(())
    }

    fn n_outstanding(&self) -> u64 {
        self.conns
            .iter()
            .map(|conn| (conn.queued.len() + conn.in_flight.len()) as u64)
            .sum()
    }

    /// Runs the offered load and the drain; returns the elapsed time.
    fn run(&mut self, offer: &Offer, drain: Duration) -> std::io::Result<Duration> {
        for conn_idx in 0..self.conns.len() {
            self.arm_recv(conn_idx)?;
        }
        let start = Instant::now();
        let (offered_ns, mut n_total) = match offer {
            Offer::Rate(schedule) => (
                schedule.due_ns(schedule.n_requests()),
                schedule.n_requests(),
            ),
            Offer::Closed { duration_ns } => {
                self.refill_until_ns = *duration_ns;
                for conn_idx in 0..self.conns.len() {
                    self.refill(conn_idx);
                }
                (*duration_ns, 0)
            }
        };
        let deadline_ns = offered_ns + drain.as_nanos() as u64;
        let mut n_scheduled: u64 = 0;
        let mut completions = Vec::with_capacity(RING_ENTRIES as usize * 2);
        loop {
            let now_ns = start.elapsed().as_nanos() as u64;
            self.now_ns = now_ns;
            if stop_requested() {
                n_total = n_scheduled;
                self.refill_until_ns = 0;
            }
            if let Offer::Rate(schedule) = offer {
                let n_due = schedule.n_due(now_ns).min(n_total);
                while n_scheduled < n_due {
                    self.enqueue(n_scheduled, schedule.due_ns(n_scheduled));
                    n_scheduled += 1;
                }
            }
            self.flush_dirty()?;
            let all_sent = match offer {
                Offer::Rate(_) => n_scheduled == n_total,
                Offer::Closed { .. } => now_ns >= self.refill_until_ns,
            };
            if all_sent && (self.n_outstanding() == 0 || now_ns >= deadline_ns) {
                break;
            }
            let wake_ns = match offer {
                _ if all_sent => deadline_ns,
                Offer::Rate(schedule) => schedule.due_ns(n_scheduled),
                Offer::Closed { .. } => self.refill_until_ns,
            };
            let wait = Duration::from_nanos(wake_ns.saturating_sub(now_ns));
            let timespec = Timespec::from(wait);
            let args = SubmitArgs::new().timespec(&timespec);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(error) => return Err(error),
            }
            let now_ns = start.elapsed().as_nanos() as u64;
            self.now_ns = now_ns;
            completions.clear();
            completions.extend(self.ring.completion());
            for completion in &completions {
                let conn_idx = (completion.user_data() & 0xFFFF_FFFF) as usize;
                if conn_idx >= self.conns.len() {
                    continue;
                }
                if completion.user_data() >> 56 == Op::Send as u64 {
                    self.on_send(conn_idx, completion.result())?;
                } else {
                    self.on_recv(conn_idx, completion.result(), now_ns)?;
                }
            }
        }
        let elapsed = start.elapsed();
        // Whatever is still queued or in flight was never answered.
        self.counters.n_errors += self.n_outstanding();
        Ok(elapsed)
    }

    fn report(&self, elapsed: Duration) -> serde_json::Value {
        let duration_s = elapsed.as_secs_f64();
        let quantile = |q: f64| {
            if self.histogram.is_empty() {
                0
            } else {
                self.histogram.value_at_quantile(q)
            }
        };
        let status: serde_json::Map<String, serde_json::Value> = self
            .counters
            .status
            .iter()
            .map(|(code, n)| (code.to_string(), serde_json::Value::from(*n)))
            .collect();
        serde_json::json!({
            "requests": self.counters.n_requests,
            "responses": self.counters.n_responses,
            "errors": self.counters.n_errors,
            "non_2xx": self.counters.n_non_2xx,
            "duration_s": duration_s,
            "achieved_rps": if duration_s > 0.0 { self.counters.n_responses as f64 / duration_s } else { 0.0 },
            "p50_us": quantile(0.50),
            "p90_us": quantile(0.90),
            "p99_us": quantile(0.99),
            "p999_us": quantile(0.999),
            "max_us": if self.histogram.is_empty() { 0 } else { self.histogram.max() },
            "status": status,
            "reconnects": self.counters.n_reconnects,
            "connections": self.conns.len(),
            "pipeline": self.pipeline,
            "mode": if self.refill_until_ns > 0 || self.next_idx > 0 { "closed-loop" } else { "rate" },
        })
    }
}

fn resolve(args: &Args) -> Result<(SocketAddr, Target), String> {
    let target = match (&args.url, &args.addr) {
        (Some(url), None) => parse_url(url)?,
        (None, Some(addr)) => {
            if !args.path.starts_with('/') {
                return Err(format!("--path must start with '/': {}", args.path));
            }
            Target {
                addr: addr.clone(),
                host: addr.clone(),
                path: args.path.clone(),
            }
        }
        _ => return Err("give --url, or --addr with --path".into()),
    };
    let addr = target
        .addr
        .to_socket_addrs()
        .map_err(|error| format!("resolve {}: {error}", target.addr))?
        .next()
        .ok_or_else(|| format!("{} resolves to nothing", target.addr))?;
    Ok((addr, target))
}

fn check_limits(args: &Args) -> Result<(), String> {
    if !(1..=CONNECTIONS_MAX).contains(&args.connections) {
        return Err(format!("--connections must be in 1..={CONNECTIONS_MAX}"));
    }
    if !(1..=DURATION_S_MAX).contains(&args.duration_s) {
        return Err(format!("--duration-s must be in 1..={DURATION_S_MAX}"));
    }
    if args
        .rate
        .is_some_and(|rate| !(1..=RATE_MAX).contains(&rate))
    {
        return Err(format!("--rate must be in 1..={RATE_MAX}"));
    }
    if !(1..=PIPELINE_MAX).contains(&args.pipeline) {
        return Err(format!("--pipeline must be in 1..={PIPELINE_MAX}"));
    }
    if args.drain_s > DRAIN_S_MAX {
        return Err(format!("--drain-s must be at most {DRAIN_S_MAX}"));
    }
    if args.method.is_empty() || !args.method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("bad --method {}", args.method));
    }
    Ok(())
}

/// What the run offers: a fixed-rate schedule, or a closed loop for a duration.
enum Offer {
    Rate(Schedule),
    Closed { duration_ns: u64 },
}

fn setup(args: &Args) -> Result<(Loadgen, Offer), String> {
    check_limits(args)?;
    let (addr, target) = resolve(args)?;
    let headers = args
        .headers
        .iter()
        .map(|header| parse_header_arg(header))
        .collect::<Result<Vec<_>, _>>()?;
    let body = match &args.body_file {
        Some(path) => {
            let size = std::fs::metadata(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .len();
            if size > BODY_BYTES_MAX {
                return Err(format!("--body-file larger than {BODY_BYTES_MAX} bytes"));
            }
            std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let requests = match &args.bearer_file {
        None => vec![build_request(&args.method, &target, &headers, &body)],
        Some(path) => {
            let size = std::fs::metadata(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .len();
            if size > BEARER_FILE_BYTES_MAX {
                return Err(format!(
                    "--bearer-file larger than {BEARER_FILE_BYTES_MAX} bytes"
                ));
            }
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let requests: Vec<Vec<u8>> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(|token| {
                    let mut with_token = headers.clone();
                    with_token.push(("authorization".to_owned(), format!("Bearer {token}")));
                    build_request(&args.method, &target, &with_token, &body)
                })
                .collect();
            if requests.is_empty() {
                return Err(format!("{}: no tokens", path.display()));
            }
            requests
        }
    };
    let request_len_max = requests.iter().map(Vec::len).max().unwrap_or(0);
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| IoUring::builder().setup_coop_taskrun().build(RING_ENTRIES))
        .map_err(|e| format!("io_uring setup: {e}"))?;
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let stream =
            connect(addr, args.unix.as_deref()).map_err(|e| format!("connect {addr}: {e}"))?;
        conns.push(Conn {
            stream: Some(stream),
            queued: VecDeque::new(),
            in_flight: VecDeque::with_capacity(args.pipeline),
            send_buf: Vec::with_capacity(request_len_max * args.pipeline),
            send_offset: 0,
            send_in_flight: false,
            recv_buf: vec![0; RECV_BUFFER_LEN],
            n_filled: 0,
            recv_in_flight: false,
            broken: false,
            dirty: false,
        });
    }
    let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| e.to_string())?;
    let loadgen = Loadgen {
        ring,
        conns,
        dirty: Vec::with_capacity(args.connections),
        addr,
        unix: args.unix.clone(),
        requests,
        pipeline: args.pipeline,
        histogram,
        counters: Counters::default(),
        refill_until_ns: 0,
        next_idx: 0,
        now_ns: 0,
    };
    let offer = match args.rate {
        Some(rate) => Offer::Rate(Schedule::new(rate, args.duration_s)),
        None => Offer::Closed {
            duration_ns: args.duration_s * 1_000_000_000,
        },
    };
    Ok((loadgen, offer))
}

fn main() {
    let args = Args::parse();
    // Timer slack would add up to 50 µs to every timed wake-up, i.e. to measured latency.
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_u64) };
    if let Err(error) = install_stop_handler() {
        eprintln!("loadgen: signal handler: {error}");
        std::process::exit(2);
    }
    let (mut loadgen, offer) = match setup(&args) {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::exit(2);
        }
    };
    let elapsed = match loadgen.run(&offer, Duration::from_secs(args.drain_s)) {
        Ok(elapsed) => elapsed,
        Err(error) => {
            eprintln!("loadgen: io_uring: {error}");
            std::process::exit(1);
        }
    };
    let line = loadgen.report(elapsed).to_string();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    // Exit without unwinding the ring: ops may still be queued on sockets that never answered.
    std::process::exit(0);
}
