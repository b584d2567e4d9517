//! Loopback tests of one shard's loop with a toy handler: ordering, deferred answers,
//! fairness, backpressure, limits and time-outs.

use super::*;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Echoes the path; `/defer?L` answers `later-L` from background work, the deferred
/// requests of one pass in reverse order; `/never` is deferred and never answered.
struct Echo {
    pending: Vec<(Ticket, String)>,
    /// Paths of the requests handled, in order (shared with the test).
    log: Arc<std::sync::Mutex<Vec<String>>>,
    /// Pass in which a `/costly` request last ran: one per pass.
    costly_pass: u64,
}

impl Handler for Echo {
    type Msg = u32;
    fn handle(&mut self, req: &http::Request<'_>, cx: &mut Cx<'_>, out: &mut Vec<u8>) -> Outcome {
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
        if req.path == "/never" {
            return Outcome::Deferred(cx.defer());
        }
        if req.path == "/costly" {
            // Two milliseconds of "verification", at most one per pass.
            if self.costly_pass == cx.pass {
                return Outcome::Later;
            }
            self.costly_pass = cx.pass;
            std::thread::sleep(Duration::from_millis(2));
        }
        if req.path == "/64k" {
            self.log
                .lock()
                .unwrap()
                .push(format!("{}?{}", req.path, req.query));
            let body = vec![b'y'; 64 * 1024];
            http::write_response(out, http::Status::Ok, None, &[], &body, true);
            return Outcome::Done;
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("{}?{}", req.path, req.query));
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
        // Last deferred first: the runtime must still answer in request order.
        for (t, label) in self.pending.drain(..).rev() {
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
        deferred_timeout_s: 1,
        ring_entries: 64,
        recv_buffer_bytes: 4096,
        recv_buffer_count: 16,
        max_buffered_bytes: 0,
    }
}

/// A running test shard.
struct Running {
    addr: std::net::SocketAddr,
    shutdown: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
    stats: Arc<RuntimeStats>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Polls a runtime counter until `done` holds (10 s deadline).
    fn wait_for(&self, what: &str, done: impl Fn(&RuntimeStats) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.stats) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn open(&self) -> u64 {
        self.stats.open.load(Ordering::Relaxed)
    }

    fn stop(self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.handle.join().unwrap();
    }
}

fn start() -> Running {
    start_with(limits())
}

fn start_with(limits: ShardLimits) -> Running {
    let listener = super::super::bind_listener("127.0.0.1:0".parse().unwrap(), 64).unwrap();
    let addr = super::super::local_addr(&listener).unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&shutdown);
    let stats = Arc::new(RuntimeStats::default());
    let shard_stats = Arc::clone(&stats);
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let echo = Echo {
        pending: vec![],
        log: Arc::clone(&log),
        costly_pass: 0,
    };
    let handle = std::thread::spawn(move || {
        let mesh = super::super::mesh::Mesh::<u32>::build(1).unwrap();
        let (_outbox, inbox) = mesh.shards.into_iter().next().unwrap();
        let stats = shard_stats;
        run_shard(0, listener, limits, inbox, stats, &stop, echo).unwrap();
    });
    Running {
        addr,
        shutdown,
        handle,
        stats,
        log,
    }
}

/// True when the server closed the connection (EOF or reset); a read time-out is a
/// failure, never "closed".
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!(
            "expected a close, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(e) => panic!("neither answered nor closed: {e}"),
    }
}

/// Reads `n` whole responses: `(status code, body)` each.
fn read_statuses_and_bodies(stream: &mut TcpStream, n: usize) -> Vec<(u16, String)> {
    let mut buf = Vec::new();
    let mut responses = Vec::new();
    let mut chunk = vec![0u8; 65536];
    while responses.len() < n {
        let got = stream.read(&mut chunk).unwrap();
        assert!(
            got > 0,
            "server closed early after {} responses",
            responses.len()
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
            let status: u16 = head[9..12].parse().unwrap();
            let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]);
            responses.push((status, body.to_string()));
            buf.drain(..head_end + 4 + len);
        }
    }
    responses
}

fn read_responses(stream: &mut TcpStream, n: usize) -> Vec<String> {
    let responses = read_statuses_and_bodies(stream, n);
    responses.into_iter().map(|(_, body)| body).collect()
}

#[test]
fn user_data_round_trips_at_the_edges_of_its_fields() {
    for (op, idx, gen) in [
        (OP_ACCEPT, 0, 0),
        (OP_CANCEL, MAX_CONNECTIONS_PER_SHARD - 1, GEN_MASK),
        (OP_SEND, 12_345, 1),
    ] {
        assert_eq!(split_user_data(user_data(op, idx, gen)), (op, idx, gen));
    }
}

#[test]
fn pipelined_burst_answers_in_order_with_deferred_answers_arriving_out_of_order() {
    let shard = start();
    let mut s = shard.connect();
    let mut burst = Vec::new();
    for i in 0..100 {
        // Deferred at 50, 52 and 53 (answered 53, 52, 50), answered at once in between.
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
    drop(s);
    shard.stop();
}

#[test]
fn a_deferred_answer_that_never_comes_is_a_503_then_a_close() {
    let shard = start();
    let mut s = shard.connect();
    s.write_all(
        b"GET /before HTTP/1.1\r\n\r\nGET /never HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n",
    )
    .unwrap();
    let responses = read_statuses_and_bodies(&mut s, 3);
    assert_eq!(responses[0], (200, "/before".to_owned()));
    assert_eq!(responses[1].0, 503, "{responses:?}");
    assert!(responses[1].1.contains("temporarily_unavailable"));
    // The request queued behind the lost answer is still answered, in order.
    assert_eq!(responses[2], (200, "/after".to_owned()));
    assert!(closed_by_server(&mut s));
    // Its slot comes back.
    shard.wait_for("the connection to be freed", |st| {
        st.open.load(Ordering::Relaxed) == 0
    });
    shard.stop();
}

/// A connection pipelining costly requests gets one per pass (`Outcome::Later` for the
/// rest); a cheap request on another connection is served in between, not after the burst.
#[test]
fn costly_requests_of_one_connection_take_turns_with_the_others() {
    let shard = start();
    let mut flood = shard.connect();
    let burst = (0..50).fold(String::new(), |mut b, i| {
        let _ = write!(b, "GET /costly?{i} HTTP/1.1\r\n\r\n");
        b
    });
    flood.write_all(burst.as_bytes()).unwrap();
    // Once the flood is being served, a second client asks for something cheap.
    assert_eq!(read_responses(&mut flood, 1), vec!["/costly".to_owned()]);
    let mut good = shard.connect();
    good.write_all(b"GET /cheap?good HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_responses(&mut good, 1), vec!["/cheap".to_owned()]);
    assert_eq!(read_responses(&mut flood, 49).len(), 49);
    let log = shard.log.lock().unwrap().clone();
    let good_at = log.iter().position(|p| p == "/cheap?good").unwrap();
    // The good request arrived after one costly request (2 ms each, one per pass): it must
    // be served long before the 50 are done.
    assert!(
        good_at < 10,
        "good request served after {good_at} costly ones: {log:?}"
    );
    assert!(shard.stats.turns_yielded.load(Ordering::Relaxed) >= 40);
    drop((flood, good));
    shard.stop();
}

/// A client that pipelines large responses and does not read stops being served once its
/// unsent output passes the pause threshold; reading resumes it and nothing is lost.
#[test]
fn a_client_that_does_not_read_stops_costing_work_until_it_does() {
    const N_REQUESTS: usize = 400;
    let shard = start_with(ShardLimits {
        max_output_bytes: 64 << 20,
        idle_timeout_s: 3600,
        ..limits()
    });
    let mut slow = shard.connect();
    let burst = (0..N_REQUESTS).fold(String::new(), |mut b, i| {
        let _ = write!(b, "GET /64k?{i} HTTP/1.1\r\n\r\n");
        b
    });
    slow.write_all(burst.as_bytes()).unwrap();
    shard.wait_for("the burst to start", |st| {
        st.requests.load(Ordering::Relaxed) >= 1
    });
    // Wait until the shard stops answering (its count holds for 300 ms; 10 s deadline).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut since) = (0, Instant::now());
    while since.elapsed() < Duration::from_millis(300) {
        assert!(
            Instant::now() < deadline,
            "the shard never stopped answering"
        );
        let now = shard.log.lock().unwrap().len();
        if now != last {
            (last, since) = (now, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let served = shard.log.lock().unwrap().len();
    // Loopback socket buffers take up to about 10 MB (150 responses); the shard holds one
    // pause threshold more. Without the pause it would answer all 400 (26 MB) at once.
    assert!(
        served < N_REQUESTS * 3 / 4,
        "served {served} of {N_REQUESTS} to a client that does not read"
    );
    let responses = read_statuses_and_bodies(&mut slow, N_REQUESTS);
    assert!(responses
        .iter()
        .all(|(code, body)| *code == 200 && body.len() == 64 * 1024));
    assert_eq!(shard.log.lock().unwrap().len(), N_REQUESTS);
    drop(slow);
    shard.stop();
}

#[test]
fn expect_100_continue_gets_an_interim_response_before_the_body() {
    let shard = start();
    let mut s = shard.connect();
    s.write_all(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; CONTINUE_100.len()];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim[..], CONTINUE_100);
    s.write_all(b"hello").unwrap();
    assert_eq!(read_responses(&mut s, 1), vec!["/echo".to_owned()]);
    drop(s);
    shard.stop();
}

#[test]
fn connections_holding_the_most_are_closed_when_the_shard_is_over_its_buffer_budget() {
    let shard = start_with(ShardLimits {
        max_output_bytes: 64 << 20,
        idle_timeout_s: 3600,
        max_buffered_bytes: 1 << 20,
        ..limits()
    });
    // 32 MiB responses that nobody reads: one connection is far over the 1 MiB budget.
    let mut hog = shard.connect();
    hog.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
    shard.wait_for("the hog to be shed", |st| {
        st.shed_for_memory.load(Ordering::Relaxed) >= 1 && st.open.load(Ordering::Relaxed) == 0
    });
    let mut fresh = shard.connect();
    fresh.write_all(b"GET /after HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_responses(&mut fresh, 1), vec!["/after".to_owned()]);
    drop((hog, fresh));
    shard.stop();
}

#[test]
fn bad_request_gets_400_and_close_and_others_keep_working() {
    let shard = start();
    let mut bad = shard.connect();
    bad.write_all(b"\x01\x02 nonsense\r\n\r\n").unwrap();
    let mut text = String::new();
    bad.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("invalid_request"));
    let mut good = shard.connect();
    good.write_all(b"GET /ok HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_responses(&mut good, 1), vec!["/ok".to_owned()]);
    drop(good);
    shard.stop();
}

#[test]
fn slow_client_gets_408_and_connection_limit_holds() {
    let shard = start();
    let mut slow = shard.connect();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost:").unwrap();
    let mut text = String::new();
    slow.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // The slow connection's slot is freed when its last completion arrives, just after the
    // client saw EOF.
    drop(slow);
    shard.wait_for("the slow connection's slot", |st| {
        st.open.load(Ordering::Relaxed) == 0
    });
    // Four connections fit (each proves it by being served); the fifth is closed at once.
    let conns: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut c = shard.connect();
            c.write_all(format!("GET /c{i} HTTP/1.1\r\n\r\n").as_bytes())
                .unwrap();
            assert_eq!(read_responses(&mut c, 1), vec![format!("/c{i}")]);
            c
        })
        .collect();
    let mut fifth = shard.connect();
    let _ = fifth.write_all(b"GET / HTTP/1.1\r\n\r\n");
    assert!(closed_by_server(&mut fifth), "fifth connection was served");
    assert_eq!(shard.open(), 4);
    drop(conns);
    shard.stop();
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let shard = start();
    let mut idle = shard.connect();
    idle.write_all(b"GET /once HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_responses(&mut idle, 1), vec!["/once".to_owned()]);
    // Nothing more is sent: the sweep closes it after idle_timeout_s (2 s, ±1 s sweep).
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(closed_by_server(&mut idle));
    assert!(shard.stats.timeouts.load(Ordering::Relaxed) >= 1);
    shard.stop();
}

#[test]
fn clients_that_stop_reading_lose_their_slots() {
    let shard = start_with(ShardLimits {
        max_output_bytes: 64 << 20,
        ..limits()
    });
    // Four clients fill the shard, each asking for 32 MiB and never reading it.
    let stuck: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = shard.connect();
            c.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
            c
        })
        .collect();
    shard.wait_for("four open connections", |st| {
        st.open.load(Ordering::Relaxed) == 4
    });
    let mut refused = shard.connect();
    let _ = refused.write_all(b"GET /x HTTP/1.1\r\n\r\n");
    assert!(closed_by_server(&mut refused), "shard was not full");
    // Their sends make no progress for the idle timeout (2 s): the sweep shuts them down
    // and the slots come back.
    shard.wait_for("the stalled connections to be closed", |st| {
        st.open.load(Ordering::Relaxed) == 0
    });
    let mut fresh = shard.connect();
    fresh.write_all(b"GET /after HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_responses(&mut fresh, 1), vec!["/after".to_owned()]);
    drop(stuck);
    drop(fresh);
    shard.stop();
}
