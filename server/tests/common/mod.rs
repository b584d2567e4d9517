//! Shared helpers for end-to-end tests: start the real `subzero` binary on loopback, speak
//! HTTP/1.1 to it over plain sockets, and stop it by pid.
#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(
    clippy::zombie_processes,
    reason = "`Server::drop` kills and reaps the child"
)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_subzero")
}

/// A running server; killed (SIGKILL) on drop if still running.
pub struct Server {
    /// The process started: the server, or its wrapper.
    pub child: Child,
    /// The server's own pid (differs from `child` under a wrapper).
    pub pid: u32,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `subzero serve --listen 127.0.0.1:0 --data-dir DIR` plus `extra` args and waits
    /// until it reports its address.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_wrapped(&[], data_dir, extra)
    }

    /// Like `start`, with the binary run under `wrapper` (e.g. `strace -f ... --`); `pid` is
    /// then the server's own pid, a child of the wrapper.
    pub fn start_wrapped(wrapper: &[&str], data_dir: &Path, extra: &[&str]) -> Server {
        let mut cmd = match wrapper.split_first() {
            None => Command::new(bin()),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin());
                cmd
            }
        };
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra);
        Server::launch(cmd, !wrapper.is_empty(), data_dir, "info")
    }

    /// Starts `subzero serve --listen unix:SOCK --data-dir DIR` plus `extra` args: no TCP
    /// listener (`addr` is 0.0.0.0:0, so the TCP helpers do not apply), ready once it logs
    /// "listening on unix:".
    pub fn start_unix_only(data_dir: &Path, sock: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--listen", &format!("unix:{}", sock.display())])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        Server::launch(cmd, false, data_dir, "info")
    }

    /// Starts `subzero ARGS` exactly as given (no `--listen` added) and waits (bounded) until
    /// it logs where it listens; `addr` is 0.0.0.0:0 when that is a Unix socket only.
    pub fn start_args(args: &[&str], data_dir: &Path) -> Server {
        Server::start_args_log(args, "info", data_dir)
    }

    /// Like `start_args`, with `RUST_LOG=rust_log` (e.g. `info,subzero::shard=debug`).
    pub fn start_args_log(args: &[&str], rust_log: &str, data_dir: &Path) -> Server {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        Server::launch(cmd, false, data_dir, rust_log)
    }

    /// Spawns `cmd` and waits (bounded) until it logs where it listens.
    fn launch(mut cmd: Command, wrapped: bool, data_dir: &Path, rust_log: &str) -> Server {
        cmd.env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start subzero");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "subzero did not report its address within 20 s; it said:\n{}",
                    seen.join("\n")
                );
            };
            seen.push(line.clone());
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = if rest.starts_with("unix:") {
                    SocketAddr::from(([0, 0, 0, 0], 0))
                } else {
                    rest.trim().parse().expect("address in log line")
                };
                let pid = if wrapped {
                    only_child_of(child.id())
                } else {
                    child.id()
                };
                return Server {
                    child,
                    pid,
                    addr,
                    data_dir: data_dir.to_owned(),
                    log: rx,
                };
            }
        }
    }

    /// Log lines printed so far.
    pub fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns whether it exited 0.
    pub fn terminate(mut self) -> bool {
        self.sigterm();
        self.wait_exit(Duration::from_secs(10)) == Some(0)
    }

    /// Sends SIGTERM to the server (not its wrapper) and returns at once.
    pub fn sigterm(&self) {
        unsafe_kill(self.pid, 15);
    }

    /// Waits (bounded) for the process to exit; its exit code, or `None` if it is still
    /// running at the deadline or was killed by a signal. Under strace this is the server's.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The `/metrics` text now.
    pub fn metrics(&self) -> String {
        let resp = self.request("GET", "/metrics", &[], "");
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.body
    }

    /// Polls `/metrics` (each shard publishes its section once a second) until `done` holds,
    /// for at most 10 s; returns that text. Panics naming `what` and showing the last text.
    pub fn wait_metrics(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics();
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics did not show {what} within 10 s; last scrape:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        unsafe_kill(self.pid, 9);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new keep-alive connection.
    pub fn connect(&self) -> Conn {
        Conn::new(self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let mut c = self.connect();
        c.send(method, path, headers, body);
        c.read_response()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.pid != self.child.id() && matches!(self.child.try_wait(), Ok(None)) {
            unsafe_kill(self.pid, 9);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: i32) {
    // SAFETY: signals only the server this test started (its child, or its wrapper's child).
    unsafe { libc::kill(pid as i32, signal) };
}

/// The one child process of `pid` (the server under a wrapper), read from /proc.
fn only_child_of(pid: u32) -> u32 {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let children: Vec<u32> = text
        .split_ascii_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        children.len(),
        1,
        "expected one child of {pid}: {children:?}"
    );
    children[0]
}

/// Calls `f` every 100 ms until it gives a value, for at most `timeout`; panics naming `what`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut n_tries = 0u32;
    loop {
        if let Some(value) = f() {
            return value;
        }
        n_tries += 1;
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?} ({n_tries} tries)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Values of every sample of the metric family `name` (exact name, any labels).
pub fn metric_values(text: &str, name: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// Sum of every sample of the metric family `name` (counters are whole numbers).
pub fn metric_sum(text: &str, name: &str) -> u64 {
    metric_values(text, name).iter().sum::<f64>() as u64
}

/// The value of the one sample whose series (name and labels) is exactly `series`.
pub fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse::<f64>().unwrap() as u64)
}

/// Unpadded base64url.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The JSON of a token's `index`-th segment (0: header, 1: claims), unverified.
pub fn token_part(token: &str, index: usize) -> serde_json::Value {
    use base64::Engine as _;
    let part = token.split('.').nth(index).expect("token segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url segment");
    serde_json::from_slice(&bytes).expect("JSON segment")
}

/// An ES256 (P-256) key of an external issuer, made here.
pub struct EcKey {
    pair: ring::signature::EcdsaKeyPair,
}

impl EcKey {
    pub fn generate() -> EcKey {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        EcKey { pair }
    }

    /// Its public JWK under `kid`.
    pub fn jwk(&self, kid: &str) -> serde_json::Value {
        use ring::signature::KeyPair as _;
        let point = self.pair.public_key().as_ref();
        serde_json::json!({ "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]) })
    }

    /// An ES256 token with header kid `kid` over `claims`.
    pub fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// Writes `{"keys": keys}` to `path` atomically (a reader never sees half a file).
pub fn write_jwks(path: &Path, keys: &[serde_json::Value]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::json!({ "keys": keys }).to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `strace` if installed. Under `CI=true` its absence is a failure (`cargo xtask test` must
/// install it); elsewhere the caller skips.
pub fn strace() -> Option<&'static str> {
    let found = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "strace is missing under CI=true: `cargo xtask test` must install it"
        );
        eprintln!("skipping: strace is not installed");
    }
    found
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// `error_description` of an OAuth error body.
    pub fn error_description(&self) -> String {
        self.json()["error_description"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// A client connection that reads responses one at a time.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) {
        let bytes = request_bytes(method, path, headers, body);
        self.raw(&bytes);
    }

    /// The next response; panics saying whether the server closed the connection or the
    /// read timed out (10 s), which are different failures.
    pub fn read_response(&mut self) -> Response {
        match self.try_read_response() {
            Ok(resp) => resp,
            Err(End::Closed) => panic!("server closed the connection before answering"),
            Err(End::TimedOut) => panic!("no response within the read time-out (10 s)"),
        }
    }

    /// The next response, or how the wait for it ended.
    pub fn try_read_response(&mut self) -> Result<Response, End> {
        loop {
            if let Some((resp, used)) = parse_response(&self.buf) {
                self.buf.drain(..used);
                return Ok(resp);
            }
            let mut chunk = vec![0u8; 65536];
            let n = read_or_end(&mut self.stream, &mut chunk)?;
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits up to `timeout` for the server to close the connection (EOF or ECONNRESET).
    /// Returns `End::TimedOut` if it is still open then; panics if the server sends bytes.
    pub fn wait_closed(&mut self, timeout: Duration) -> End {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut chunk = [0u8; 4096];
        let end = match read_or_end(&mut self.stream, &mut chunk) {
            Ok(n) => panic!(
                "expected the connection to close, got data: {}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(end) => end,
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        end
    }

    /// Sets the read time-out for the following reads.
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }
}

/// How a read that returned no data ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer closed the connection: EOF, ECONNRESET or EPIPE.
    Closed,
    /// The read time-out passed with the connection still open.
    TimedOut,
}

/// Reads at least one byte, or says how the connection ended. A time-out is never a close.
fn read_or_end(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, End> {
    loop {
        match stream.read(buf) {
            Ok(0) => return Err(End::Closed),
            Ok(n) => return Ok(n),
            Err(e) => match e.kind() {
                ErrorKind::Interrupted => {}
                ErrorKind::WouldBlock | ErrorKind::TimedOut => return Err(End::TimedOut),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => return Err(End::Closed),
                _ => panic!("read failed: {e}"),
            },
        }
    }
}

pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (k, v) in headers {
        let _ = write!(text, "{k}: {v}\r\n");
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        let _ = write!(text, "Content-Length: {}\r\n", body.len());
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

/// One request on a fresh connection to `addr`; `None` when the connection fails or closes
/// before a whole answer (a server killed meanwhile), where `Server::request` would panic.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Response> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(&request_bytes(method, path, headers, body))
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((resp, _)) = parse_response(&buf) {
            return Some(resp);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn parse_response(buf: &[u8]) -> Option<(Response, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let total = head_end + 4 + len;
    if buf.len() < total {
        return None;
    }
    let body = String::from_utf8_lossy(&buf[head_end + 4..total]).into_owned();
    Some((
        Response {
            status,
            headers,
            body,
        },
        total,
    ))
}

/// Runs the CLI; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run subzero");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `subzero ARGS` with extra environment variables; (exit code, stdout, stderr).
pub fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run subzero");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `subzero token issue` for `sub`/`aud`.
pub fn issue(data_dir: &Path, sub: &str, aud: &str, scopes: &[&str]) -> String {
    issue_with(data_dir, sub, aud, scopes, &[])
}

/// `subzero token issue` with a lifetime of `ttl_s`.
pub fn issue_ttl(data_dir: &Path, sub: &str, aud: &str, ttl_s: u64) -> String {
    issue_with(data_dir, sub, aud, &[], &["--ttl-s", &ttl_s.to_string()])
}

fn issue_with(data_dir: &Path, sub: &str, aud: &str, scopes: &[&str], extra: &[&str]) -> String {
    let dir = data_dir.to_str().unwrap();
    let mut args = vec![
        "token",
        "issue",
        "--data-dir",
        dir,
        "--sub",
        sub,
        "--aud",
        aud,
    ];
    for s in scopes {
        args.extend_from_slice(&["--scope", s]);
    }
    args.extend_from_slice(extra);
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "token issue failed: {err}");
    out.trim().to_owned()
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

impl Conn {
    /// The next response to a `HEAD`: status line and headers only. Its `content-length`
    /// describes the body a GET would get, so no body is read; bytes after the head stay
    /// buffered for the next response (a body sent by mistake shows up there).
    pub fn read_head_response(&mut self) -> Response {
        loop {
            if let Some(head_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
                self.buf.drain(..head_end + 4);
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or("");
                let status = status_line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad status line: {status_line:?}"));
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                return Response {
                    status,
                    headers,
                    body: String::new(),
                };
            }
            let mut chunk = vec![0u8; 65536];
            match read_or_end(&mut self.stream, &mut chunk) {
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(End::Closed) => panic!("server closed the connection before answering"),
                Err(End::TimedOut) => panic!("no response within the read time-out"),
            }
        }
    }
}

impl Conn {
    /// The next `n` bytes the server sends, left unread (waits for them): after a `HEAD`
    /// response, the next response's status line, or the body it should not have had.
    pub fn peek(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = vec![0u8; 65536];
            match read_or_end(&mut self.stream, &mut chunk) {
                Ok(got) => self.buf.extend_from_slice(&chunk[..got]),
                Err(end) => panic!("connection ended ({end:?}) before {n} more bytes"),
            }
        }
        self.buf[..n].to_vec()
    }
}

/// Runs the CLI for at most `timeout`; `Some((exit code, stderr))`, or `None` if it was still
/// running then (it is killed), so a command that should fail at once cannot hang a test.
pub fn cli_within(args: &[&str], timeout: Duration) -> Option<(i32, String)> {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run subzero");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            return Some((status.code().unwrap_or(-1), err));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl EcKey {
    /// An ES256 token with header `typ` and kid `kid` over `claims` (an ID-JAG is
    /// `oauth-id-jag+jwt`).
    pub fn sign_typed(&self, kid: &str, typ: &str, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({ "alg": "ES256", "typ": typ, "kid": kid });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// `Authorization: Basic` for client credentials.
pub fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let pair = format!("{id}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A form body from pairs, percent-encoding every byte outside the unreserved set.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        let mut out = String::new();
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}
