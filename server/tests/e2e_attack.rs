//! Fair and bounded under attack: each cheap, well-formed attack from issue 8 runs against the
//! real binary while a well-behaved client authenticates every 10 ms beside it.
//!
//! - clients that never read: the server's RSS stays within its configured buffer budget;
//! - one connection pipelining thousands of costly invalid tokens, and several pipelining large
//!   batches of them: the good client keeps being answered between the attacker's requests;
//! - a revocation flood: throughput does not depend on the cache size, and the good client
//!   sees no stall;
//! - with the default failure budget, the costly-token flood is cut off with 429s.
//!
//! Latency figures are printed; the hard assertions are about order (the good client is served
//! while the attack is still running) and about loss (every good request answered), with one
//! generous latency bound per attack, stated where it is checked.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::scalar::Scalar;

use common::{bearer, issue, metric_sum, request_bytes, Conn, Server};

/// The attacks are heavy: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Latencies the good client saw, and whether every request got a 200.
struct GoodRun {
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

impl GoodRun {
    /// The good client got answers while `attack` ran, and its p99 stayed under the stated
    /// bound: it waits about one pass of the shard; 100 ms leaves room for this shared VM's
    /// stalls (the unprotected server made it wait 0.4–2.3 s).
    fn assert_served_during(&self, good_during: usize, attack: &str) {
        assert!(
            good_during >= 5,
            "the good client was not served while {attack} ran"
        );
        let p99 = self.quantile(0.99);
        assert!(
            p99 < Duration::from_millis(100),
            "p99 {p99:?} during {attack}"
        );
    }

    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[idx]
    }

    fn report(&self, attack: &str) {
        println!(
            "{attack}: good client {} requests, p50 {:?}, p99 {:?}, max {:?}",
            self.latencies.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0)
        );
        assert!(self.failures.is_empty(), "{attack}: {:?}", self.failures);
        assert!(self.latencies.len() >= 20, "{attack}: too few samples");
    }
}

/// Answers the good client gets before any attack starts.
const WARM_UP_ANSWERS: usize = 3;

/// The good client's thread and its running count of answers.
struct Good {
    thread: JoinHandle<GoodRun>,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Good {
    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    fn finish(self) -> GoodRun {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Authenticates with `token` every 10 ms on one keep-alive connection until told to stop.
fn good_client(addr: SocketAddr, token: String) -> Good {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&answered));
    let thread = std::thread::spawn(move || {
        let stop = stop_flag;
        let mut conn = Conn::new(addr);
        let auth = bearer(&token);
        let mut run = GoodRun {
            latencies: Vec::new(),
            failures: Vec::new(),
        };
        while !stop.load(Ordering::Relaxed) && run.latencies.len() < 3000 {
            let started = Instant::now();
            conn.send("GET", "/v1/authenticate", &[("Authorization", &auth)], "");
            match conn.try_read_response() {
                Ok(resp) if resp.status == 200 => {
                    // The first answers warm the connection and the cache; they are not
                    // under attack and are not measured.
                    if count.fetch_add(1, Ordering::Relaxed) >= WARM_UP_ANSWERS {
                        run.latencies.push(started.elapsed());
                    }
                }
                Ok(resp) => run.failures.push(format!("status {}", resp.status)),
                Err(end) => {
                    run.failures.push(format!("{end:?}"));
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        run
    });
    // A few answers before any attack starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.load(Ordering::Relaxed) < WARM_UP_ANSWERS {
        assert!(
            Instant::now() < deadline,
            "the good client got no answer before the attack"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Good {
        thread,
        answered,
        stop,
    }
}

/// Good answers while `attack_running` holds (polled every 20 ms, 180 s deadline).
fn good_answers_during(good: &Good, attack_running: impl Fn() -> bool) -> usize {
    let before = good.answered();
    let deadline = Instant::now() + Duration::from_mins(3);
    let mut during = 0;
    while attack_running() {
        assert!(
            Instant::now() < deadline,
            "the attack was not answered within 180 s"
        );
        during = good.answered() - before;
        std::thread::sleep(Duration::from_millis(20));
    }
    during
}

/// Resident set size of `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("subzero.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `n` distinct tokens that each cost a full signature verification and fail it: a real
/// header and payload (our `kid`), a valid `R` point, a random canonical `S`.
fn costly_invalid_tokens(data_dir: &std::path::Path, n: usize) -> Vec<String> {
    let real = issue(data_dir, "mallory", "subzero", &[]);
    let signing_input = real.rsplit_once('.').unwrap().0.to_owned();
    let r = ED25519_BASEPOINT_POINT * Scalar::from(7_654_321_u64);
    let r_bytes = r.compress().to_bytes();
    (0..n)
        .map(|_| {
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&r_bytes);
            sig[32..].copy_from_slice(&rand::random::<[u8; 32]>());
            sig[63] &= 0x0f; // below the group order: canonical
            format!("{signing_input}.{}", common::b64(&sig))
        })
        .collect()
}

/// Reads `n` responses from `stream` on a thread, counting them in `seen`.
fn drain_responses(mut stream: TcpStream, n: usize, seen: Arc<AtomicUsize>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        stream
            .set_read_timeout(Some(Duration::from_mins(1)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut pending = Vec::new();
        let mut n_seen = 0;
        while n_seen < n {
            let got = stream.read(&mut buf).expect("attacker read");
            assert!(
                got > 0,
                "server closed the attacker after {n_seen} responses"
            );
            pending.extend_from_slice(&buf[..got]);
            while let Some(head_end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if pending.len() < head_end + 4 + len {
                    break;
                }
                pending.drain(..head_end + 4 + len);
                n_seen += 1;
                seen.store(n_seen, Ordering::Relaxed);
            }
        }
    })
}

#[test]
fn clients_that_never_read_cannot_grow_the_server_past_its_buffer_budget() {
    const N_CONNS: usize = 300;
    const BUDGET_BYTES: u64 = 32 << 20;
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("[server]\nmax_buffered_bytes_per_shard = {BUDGET_BYTES}\n"),
    );
    let server = Server::start(dir.path(), &["--shards", "2", "--config", &config]);
    let pid = server.child.id();
    let token = issue(dir.path(), "alice", "subzero", &["read"]);
    let good = good_client(server.addr, token);
    let rss_before = rss_bytes(pid);
    let burst: Vec<u8> = (0..620)
        .flat_map(|_| request_bytes("GET", "/metrics", &[], ""))
        .collect();
    let attackers: Vec<TcpStream> = (0..N_CONNS)
        .map(|_| {
            let s = TcpStream::connect(server.addr).unwrap();
            let small: libc::c_int = 4096;
            // SAFETY: a valid socket and a c_int option value of the right size.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&raw const small).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                );
            }
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut s = s;
            // The whole pipeline in one write; the kernel may take only part of it.
            let _ = s.write_all(&burst);
            s
        })
        .collect();
    let mut rss_max = rss_before;
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        rss_max = rss_max.max(rss_bytes(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = good.finish();
    run.report("never-read");
    let grown = rss_max.saturating_sub(rss_before);
    println!(
        "never-read: RSS {} MiB before, {} MiB at most ({} connections x 620 /metrics)",
        rss_before >> 20,
        rss_max >> 20,
        N_CONNS
    );
    // Two shards, each within its budget, plus room for the allocator's slack.
    let bound = 2 * BUDGET_BYTES + (32 << 20);
    assert!(
        grown <= bound,
        "RSS grew by {} MiB, over the {} MiB the configuration allows",
        grown >> 20,
        bound >> 20
    );
    drop(attackers);
}

#[test]
fn a_pipelined_flood_of_costly_invalid_tokens_does_not_starve_other_clients() {
    const N_TOKENS: usize = 12_000;
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    // No failure budget: only the per-pass budget stands between the flood and the others.
    let config = write_config(dir.path(), "[ratelimit]\nverify_failures_per_s = 0\n");
    let server = Server::start(dir.path(), &["--shards", "1", "--config", &config]);
    let token = issue(dir.path(), "alice", "subzero", &["read"]);
    let flood: Vec<u8> = costly_invalid_tokens(dir.path(), N_TOKENS)
        .iter()
        .flat_map(|t| {
            request_bytes(
                "GET",
                "/v1/authenticate",
                &[("Authorization", &bearer(t))],
                "",
            )
        })
        .collect();
    let good = good_client(server.addr, token);
    let mut attacker = TcpStream::connect(server.addr).unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = drain_responses(attacker.try_clone().unwrap(), N_TOKENS, Arc::clone(&seen));
    let started = Instant::now();
    let writer = std::thread::spawn(move || attacker.write_all(&flood).unwrap());
    // While the flood is being verified, the good client must keep getting answers.
    let good_during = good_answers_during(&good, || seen.load(Ordering::Relaxed) < N_TOKENS);
    reader.join().unwrap();
    writer.join().unwrap();
    let flood_s = started.elapsed().as_secs_f64();
    let run = good.finish();
    run.report("costly-token flood");
    println!("costly-token flood: {N_TOKENS} verifications in {flood_s:.2} s; good answers during it: {good_during}");
    // One pass spends at most 16 verifications (under 1 ms here).
    run.assert_served_during(good_during, "the flood");
    // Sections are published once a second: wait for the one that counts the flood.
    server.wait_metrics("verifications left for a later pass", |t| {
        metric_sum(t, "subzero_verifications_deferred_total") > 0
    });
}

#[test]
fn pipelined_batches_of_costly_tokens_do_not_starve_other_clients() {
    const N_CONNS: usize = 4;
    const N_BATCHES: usize = 8;
    const BATCH_TOKENS: usize = 2000;
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[ratelimit]\nverify_failures_per_s = 0\n");
    let server = Server::start(dir.path(), &["--shards", "1", "--config", &config]);
    let token = issue(dir.path(), "alice", "subzero", &["read"]);
    let tokens = costly_invalid_tokens(dir.path(), N_CONNS * N_BATCHES * BATCH_TOKENS);
    let good = good_client(server.addr, token);
    let started = Instant::now();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for chunk in tokens.chunks(N_BATCHES * BATCH_TOKENS) {
        let mut conn = TcpStream::connect(server.addr).unwrap();
        let pipeline: Vec<u8> = chunk
            .chunks(BATCH_TOKENS)
            .flat_map(|batch| {
                let body = serde_json::json!({ "tokens": batch }).to_string();
                request_bytes("POST", "/v1/authenticate/batch", &[], &body)
            })
            .collect();
        let seen = Arc::new(AtomicUsize::new(0));
        readers.push(drain_responses(conn.try_clone().unwrap(), N_BATCHES, seen));
        writers.push(std::thread::spawn(move || {
            conn.write_all(&pipeline).unwrap();
        }));
    }
    let good_during = good_answers_during(&good, || !readers.iter().all(JoinHandle::is_finished));
    for t in readers.into_iter().chain(writers) {
        t.join().unwrap();
    }
    let flood_s = started.elapsed().as_secs_f64();
    let run = good.finish();
    run.report("batch flood");
    println!(
        "batch flood: {} tokens in {} batches answered in {flood_s:.2} s; good answers during it: {good_during}",
        tokens.len(),
        N_CONNS * N_BATCHES
    );
    // A job verifies 32 tokens per pass (about 1 ms here).
    run.assert_served_during(good_during, "the batches");
}

/// Admin revocations by `jti`, `n_conns` connections × `per_conn` each, pipelined; returns
/// revocations/s.
fn revocation_flood(
    server: &Server,
    admin: &str,
    round: usize,
    n_conns: usize,
    per_conn: usize,
) -> f64 {
    let exp = subzero::unix_now_s() + 600;
    let started = Instant::now();
    let threads: Vec<JoinHandle<()>> = (0..n_conns)
        .map(|c| {
            let addr = server.addr;
            let auth = bearer(admin);
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr);
                // Pipelined in windows of 256: the control queue (4096) stays below full.
                let indexes: Vec<usize> = (0..per_conn).collect();
                for window in indexes.chunks(256) {
                    let pipeline: Vec<u8> = window
                        .iter()
                        .flat_map(|i| {
                            let body =
                                format!("{{\"jti\":\"flood-{round}-{c}-{i}\",\"exp\":{exp}}}");
                            request_bytes("POST", "/v1/revoke", &[("Authorization", &auth)], &body)
                        })
                        .collect();
                    conn.raw(&pipeline);
                    for _ in window {
                        let resp = conn.read_response();
                        assert_eq!(resp.status, 200, "{}", resp.body);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (n_conns * per_conn) as f64 / started.elapsed().as_secs_f64()
}

#[test]
fn revocations_cost_the_same_whatever_the_cache_size_and_do_not_stall_others() {
    const N_CONNS: usize = 4;
    const PER_CONN: usize = 5000;
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut rates = Vec::new();
    for cache_entries in [65_536_usize, 4_194_304] {
        let dir = tempfile::tempdir().unwrap();
        let admin = "admin-token-for-the-flood-test";
        std::fs::write(dir.path().join("admin.token"), admin).unwrap();
        let config = write_config(
            dir.path(),
            &format!(
                "[auth]\ncache_entries_per_shard = {cache_entries}\n[admin]\ntoken_file = \"admin.token\"\n[ratelimit]\nrevocations_per_s = 0\n"
            ),
        );
        let server = Server::start(dir.path(), &["--shards", "2", "--config", &config]);
        let token = issue(dir.path(), "alice", "subzero", &["read"]);
        let good = good_client(server.addr, token);
        // The better of two rounds: this shared VM's noise is one-sided (stalls only slow).
        let rate = (0..2)
            .map(|round| revocation_flood(&server, admin, round, N_CONNS, PER_CONN))
            .fold(0.0, f64::max);
        let run = good.finish();
        run.report(&format!("revocation flood, cache {cache_entries}"));
        println!("revocation flood, cache {cache_entries}: {rate:.0} revocations/s");
        // Stated bound: revoking touches no cache entry and shares one fdatasync per group,
        // so the good client never waits on it; 100 ms leaves room for VM stalls.
        assert!(
            run.quantile(1.0) < Duration::from_millis(100),
            "a {:?} stall during the revocation flood",
            run.quantile(1.0)
        );
        let n_revoked = (2 * N_CONNS * PER_CONN) as u64;
        server.wait_metrics("every revocation live", |t| {
            metric_sum(t, "subzero_revocations_live") == n_revoked
        });
        rates.push(rate);
    }
    assert!(
        rates[1] * 2.0 >= rates[0],
        "with a 4M-entry cache revocations ran at {:.0}/s against {:.0}/s with the default",
        rates[1],
        rates[0]
    );
}

#[test]
fn the_default_failure_budget_cuts_a_costly_token_flood_off_with_429() {
    const N_TOKENS: usize = 1000;
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "1"]);
    let tokens = costly_invalid_tokens(dir.path(), N_TOKENS);
    let mut conn = server.connect();
    let (mut n_401, mut n_429) = (0, 0);
    for t in &tokens {
        conn.send(
            "GET",
            "/v1/authenticate",
            &[("Authorization", &bearer(t))],
            "",
        );
        let resp = conn.read_response();
        match resp.status {
            401 => n_401 += 1,
            429 => {
                n_429 += 1;
                let retry = resp.header("retry-after").expect("retry-after");
                // The IETF headers name the budget: 200 failures, back in full in 4 s at 50/s.
                assert_eq!(
                    resp.header("ratelimit-policy"),
                    Some("\"verify_failures\";q=200;w=4")
                );
                let state = format!("\"verify_failures\";r=0;t={retry}");
                assert_eq!(resp.header("ratelimit"), Some(state.as_str()));
            }
            other => panic!("status {other}"),
        }
    }
    println!("default failure budget: {n_401} verified and refused, {n_429} refused unverified");
    // Burst 200 plus what refills at 50/s while the loop runs.
    assert!(
        (200..600).contains(&n_401),
        "{n_401} verifications for one source"
    );
    assert_eq!(n_401 + n_429, N_TOKENS);
    // A replayed invalid token costs a lookup, not a verification.
    let n_verified = n_401 as u64;
    server.wait_metrics("the flood's verifications counted", |t| {
        metric_sum(t, "subzero_verifications_total") == n_verified
    });
    let replay = &tokens[0];
    let resp = server.request(
        "GET",
        "/v1/authenticate",
        &[("Authorization", &bearer(replay))],
        "",
    );
    assert!(resp.status == 401 || resp.status == 429, "{}", resp.status);
    let text = server.wait_metrics("the replay counted", |t| {
        metric_sum(t, "subzero_invalid_token_cache_hits_total") >= 1
    });
    assert_eq!(metric_sum(&text, "subzero_verifications_total"), n_verified);
}

#[test]
fn holder_revocations_are_bounded_per_source_and_per_subject() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let revoke = |server: &Server, token: &str| {
        let body = serde_json::json!({ "token": token }).to_string();
        server.request("POST", "/v1/revoke", &[], &body)
    };
    // Per subject: the fourth holder revocation for one subject is refused; another subject
    // from the same source goes on. Tokens are issued first, so the revocations follow each
    // other well within the 1 s refill.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[ratelimit]\nrevocations_per_s = 0\nrevocations_per_subject_per_s = 1\nrevocations_per_subject_burst = 3\n",
    );
    let server = Server::start(dir.path(), &["--shards", "1", "--config", &config]);
    let same: Vec<String> = (0..4)
        .map(|_| issue(dir.path(), "svc-a", "subzero", &[]))
        .collect();
    let other = issue(dir.path(), "svc-b", "subzero", &[]);
    let statuses: Vec<u16> = same[..3]
        .iter()
        .map(|t| revoke(&server, t).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200]);
    let refused = revoke(&server, &same[3]);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.error_description().contains("subject"));
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"subject_revocations\";q=3;w=3")
    );
    assert_eq!(revoke(&server, &other).status, 200);
    drop(server);
    // Per source: the fourth revocation from one address is refused, whatever the subject.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[ratelimit]\nrevocations_per_s = 1\nrevocations_burst = 3\nrevocations_per_subject_per_s = 0\n",
    );
    let server = Server::start(dir.path(), &["--shards", "1", "--config", &config]);
    let tokens: Vec<String> = (0..4)
        .map(|i| issue(dir.path(), &format!("svc-{i}"), "subzero", &[]))
        .collect();
    let statuses: Vec<u16> = tokens[..3]
        .iter()
        .map(|t| revoke(&server, t).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200]);
    let refused = revoke(&server, &tokens[3]);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.error_description().contains("address"));
}
