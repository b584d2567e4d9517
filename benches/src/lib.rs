//! Peer servers, the crypto ceiling, the fixed-rate load generator and criterion benches for
//! `cargo xtask bench`; this library holds what the `src/bin/*` programs share.
//!
//! Everything here is pure (no sockets, no clocks read): request framing for the hello floors,
//! HTTP response parsing and the open-loop schedule for `loadgen`, plus the signal flag and
//! socket helpers the bins call once at start and the thread CPU clock the benches time with.
//! CPU affinity comes from the server crate (`subzero::config::allowed_cpus`), so the peers pin
//! exactly as subzero does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The response every hand-rolled hello peer writes (glommio and the bare `io_uring` loop):
/// the same bytes for each, so they compare like for like.
pub const HELLO_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

/// Set by the SIGTERM/SIGINT handler; polled by the bins' loops.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Installs a SIGTERM and SIGINT handler that sets the stop flag. The handler is installed
/// without `SA_RESTART`, so a blocking `io_uring_enter` returns `EINTR` and the loop can look at
/// [`stop_requested`].
pub fn install_stop_handler() -> std::io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `sigaction` is given a zeroed struct with a valid handler address; the handler
        // only stores to an atomic, which is async-signal-safe.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&raw mut action.sa_mask);
            action.sa_flags = 0;
            libc::sigaction(signal, &raw const action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGTERM or SIGINT has arrived since [`install_stop_handler`].
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// CPU time the calling thread has used. The machine is shared (several builds at once on 2
/// cores), so wall time mostly measures the scheduler; the benches and the crypto ceiling divide
/// by thread CPU time, which measures the code.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Listen backlog the peers ask for; `std` uses 128, which drops SYNs when a load generator
/// opens hundreds of connections at once.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Raises the backlog of a socket that is already listening (Linux re-applies `listen`).
pub fn raise_backlog(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: `listen` on a caller-owned listening fd only changes its queue length.
    if unsafe { libc::listen(fd, LISTEN_BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `TCP_NODELAY` on a connected socket: every peer answers small requests and must not
/// wait for Nagle.
pub fn set_nodelay(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option value points to a live c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Counts HTTP/1.1 request heads (`\r\n\r\n` terminators) across reads of one connection.
///
/// This is the bare `io_uring` floor's whole parser: it assumes body-less requests (GET), which
/// is what the hello scenario sends. It keeps how much of a terminator the previous read ended
/// with, so a terminator split across reads is still counted once.
#[derive(Debug, Default, Clone, Copy)]
pub struct TerminatorScanner {
    /// How many bytes of `\r\n\r\n` the bytes seen so far end with (0..=3).
    matched: u8,
}

impl TerminatorScanner {
    const TERMINATOR: &'static [u8; 4] = b"\r\n\r\n";

    /// Feeds the next bytes read; returns how many request heads they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut n_heads = 0;
        let mut matched = usize::from(self.matched);
        for &byte in bytes {
            if byte == Self::TERMINATOR[matched] {
                matched += 1;
                if matched == Self::TERMINATOR.len() {
                    n_heads += 1;
                    matched = 0;
                }
            } else {
                // Only `\r` can restart a match: `\r\n\r` + `\r` restarts at one byte.
                matched = usize::from(byte == b'\r');
            }
        }
        debug_assert!(matched < Self::TERMINATOR.len());
        self.matched = matched as u8;
        n_heads
    }
}

/// Request heads larger than this close the connection (glommio hello peer).
pub const REQUEST_HEAD_BYTES_MAX: usize = 16 * 1024;

/// Why a request buffer could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Not HTTP/1.x, or a bad `content-length`.
    Malformed,
    /// A head larger than [`REQUEST_HEAD_BYTES_MAX`].
    TooLarge,
}

/// Frames the complete requests at the front of `buf` with httparse (bodies by
/// `content-length`): returns how many there are and how many bytes they span. A trailing
/// partial request is left for the next read.
pub fn frame_requests(buf: &[u8]) -> Result<(usize, usize), RequestError> {
    let mut n_requests = 0;
    let mut consumed = 0;
    loop {
        let rest = &buf[consumed..];
        if rest.is_empty() {
            break;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(rest) {
            Ok(httparse::Status::Complete(head_len)) => head_len,
            Ok(httparse::Status::Partial) if rest.len() > REQUEST_HEAD_BYTES_MAX => {
                return Err(RequestError::TooLarge);
            }
            Ok(httparse::Status::Partial) => break,
            Err(_) => return Err(RequestError::Malformed),
        };
        let mut body_len = 0;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                body_len = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|text| text.trim().parse::<usize>().ok())
                    .filter(|&len| len <= REQUEST_HEAD_BYTES_MAX)
                    .ok_or(RequestError::Malformed)?;
            }
        }
        if rest.len() < head_len + body_len {
            break;
        }
        consumed += head_len + body_len;
        n_requests += 1;
    }
    Ok((n_requests, consumed))
}

/// Where `loadgen` sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to.
    pub addr: String,
    /// The `Host` header value.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parses `http://HOST:PORT/path` (plain HTTP only: the load generator measures servers, not
/// TLS stacks).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(idx) => (&rest[..idx], &rest[idx..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("URL has no host: {url}"));
    }
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        addr,
        host: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// Builds one request's bytes; `loadgen` repeats them for pipelined and queued sends.
pub fn build_request(
    method: &str,
    target: &Target,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut request = Vec::with_capacity(128 + body.len());
    request.extend_from_slice(format!("{method} {} HTTP/1.1\r\n", target.path).as_bytes());
    let has_host = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"));
    if !has_host {
        request.extend_from_slice(format!("host: {}\r\n", target.host).as_bytes());
    }
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
        request.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

/// Splits `"Name: value"` as given to `--header`.
pub fn parse_header_arg(arg: &str) -> Result<(String, String), String> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| format!("header without ':': {arg}"))?;
    let name = name.trim();
    if name.is_empty()
        || name
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!("bad header name: {arg}"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// One parsed response at the front of a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseParse {
    /// A whole response: its status and how many bytes of the buffer it spans.
    Complete {
        /// HTTP status code.
        status: u16,
        /// Bytes of head plus body.
        n_bytes: usize,
    },
    /// More bytes are needed.
    Partial,
}

/// Why a response could not be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// The head is not valid HTTP/1.x.
    Malformed(String),
    /// `transfer-encoding: chunked` or a missing length on a status that carries a body: the
    /// peers and subzero all send `content-length`, so this is a server bug worth reporting.
    UnsupportedFraming,
    /// The head or body is larger than the read buffer allows.
    TooLarge,
}

/// Heads larger than this are treated as broken servers.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Bodies larger than this are treated as broken servers.
pub const RESPONSE_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Frames the first response in `buf` (a response to a `HEAD` request is not supported).
pub fn parse_response(buf: &[u8]) -> Result<ResponseParse, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > RESPONSE_HEAD_BYTES_MAX {
                return Err(ResponseError::TooLarge);
            }
            return Ok(ResponseParse::Partial);
        }
        Err(error) => return Err(ResponseError::Malformed(error.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let mut content_length: Option<usize> = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(header.value)
                .map_err(|_| ResponseError::Malformed("content-length".into()))?;
            let length = text
                .trim()
                .parse::<usize>()
                .map_err(|_| ResponseError::Malformed("content-length".into()))?;
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ResponseError::UnsupportedFraming);
        }
    }
    let body_len = match content_length {
        Some(length) => length,
        None if status < 200 || status == 204 || status == 304 => 0,
        None => return Err(ResponseError::UnsupportedFraming),
    };
    if body_len > RESPONSE_BODY_BYTES_MAX {
        return Err(ResponseError::TooLarge);
    }
    let n_bytes = head_len + body_len;
    if buf.len() < n_bytes {
        return Ok(ResponseParse::Partial);
    }
    Ok(ResponseParse::Complete { status, n_bytes })
}

/// The open-loop schedule: request `idx` is due `idx / rate` seconds after the start, whatever
/// happened to earlier requests. Latency is measured from this due time, which is what keeps
/// coordinated omission out of the figures.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    rate_per_s: u64,
    n_requests: u64,
}

impl Schedule {
    /// A schedule of `rate_per_s` requests per second over `duration_s` seconds.
    pub fn new(rate_per_s: u64, duration_s: u64) -> Schedule {
        assert!(rate_per_s > 0);
        Schedule {
            rate_per_s,
            n_requests: rate_per_s.saturating_mul(duration_s),
        }
    }

    /// How many requests the whole run sends.
    pub fn n_requests(&self) -> u64 {
        self.n_requests
    }

    /// When request `idx` is due, in ns since the start.
    pub fn due_ns(&self, idx: u64) -> u64 {
        (u128::from(idx) * 1_000_000_000 / u128::from(self.rate_per_s)) as u64
    }

    /// How many requests are due at `elapsed_ns` since the start (capped at the total).
    pub fn n_due(&self, elapsed_ns: u64) -> u64 {
        // due_ns(idx) = floor(idx * 1e9 / rate) <= elapsed  <=>  idx * 1e9 < (elapsed + 1) * rate,
        // so the count of due requests is ceil((elapsed + 1) * rate / 1e9).
        let scaled = (u128::from(elapsed_ns) + 1) * u128::from(self.rate_per_s);
        let n_due = scaled.div_ceil(1_000_000_000);
        n_due.min(u128::from(self.n_requests)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_counts_split_terminators() {
        let mut scanner = TerminatorScanner::default();
        let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        assert_eq!(scanner.feed(request), 1);
        let twice = [&request[..], &request[..]].concat();
        for split in 0..twice.len() {
            let mut scanner = TerminatorScanner::default();
            let n = scanner.feed(&twice[..split]) + scanner.feed(&twice[split..]);
            assert_eq!(n, 2, "split at {split}");
        }
        let mut scanner = TerminatorScanner::default();
        assert_eq!(scanner.feed(b"\r\n\r\r\n\r\n"), 1);
    }

    #[test]
    fn request_framing() {
        let get = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let post = b"POST /b HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc";
        let both = [&get[..], &post[..], &get[..]].concat();
        assert_eq!(frame_requests(&both), Ok((3, both.len())));
        assert_eq!(
            frame_requests(&both[..both.len() - 1]),
            Ok((2, get.len() + post.len()))
        );
        assert_eq!(
            frame_requests(&both[..get.len() + post.len() - 1]),
            Ok((1, get.len()))
        );
        assert_eq!(frame_requests(b""), Ok((0, 0)));
        assert_eq!(
            frame_requests(b"\x00\x01 nonsense\r\n\r\n"),
            Err(RequestError::Malformed)
        );
        let huge = vec![b'a'; REQUEST_HEAD_BYTES_MAX + 1];
        assert_eq!(
            frame_requests(&[&b"GET /"[..], &huge].concat()),
            Err(RequestError::TooLarge)
        );
    }

    #[test]
    fn url_parsing() {
        let target = parse_url("http://127.0.0.1:8080/v1/authenticate?x=1").unwrap();
        assert_eq!(target.addr, "127.0.0.1:8080");
        assert_eq!(target.host, "127.0.0.1:8080");
        assert_eq!(target.path, "/v1/authenticate?x=1");
        assert_eq!(parse_url("http://localhost").unwrap().addr, "localhost:80");
        assert_eq!(parse_url("http://localhost").unwrap().path, "/");
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn request_building() {
        let target = parse_url("http://h:1/p").unwrap();
        let headers = vec![parse_header_arg("Authorization: Bearer abc").unwrap()];
        let get = build_request("GET", &target, &headers, b"");
        assert_eq!(
            get,
            b"GET /p HTTP/1.1\r\nhost: h:1\r\nAuthorization: Bearer abc\r\n\r\n"
        );
        let post = build_request("POST", &target, &[], b"{}");
        assert_eq!(
            post,
            b"POST /p HTTP/1.1\r\nhost: h:1\r\ncontent-length: 2\r\n\r\n{}"
        );
        assert!(parse_header_arg("no colon").is_err());
        assert!(parse_header_arg(": v").is_err());
    }

    #[test]
    fn response_framing() {
        let one = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let two = [
            &one[..],
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
        ]
        .concat();
        assert_eq!(
            parse_response(&two),
            Ok(ResponseParse::Complete {
                status: 200,
                n_bytes: one.len()
            })
        );
        assert_eq!(
            parse_response(&two[one.len()..]),
            Ok(ResponseParse::Complete {
                status: 401,
                n_bytes: two.len() - one.len()
            })
        );
        for cut in 0..one.len() {
            assert_eq!(
                parse_response(&one[..cut]),
                Ok(ResponseParse::Partial),
                "cut {cut}"
            );
        }
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(ResponseError::UnsupportedFraming)
        );
        assert!(matches!(
            parse_response(b"HTTP/1.1 2x0\r\n\r\n"),
            Err(ResponseError::Malformed(_))
        ));
        assert_eq!(
            parse_response(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Ok(ResponseParse::Complete {
                status: 204,
                n_bytes: 27
            })
        );
    }

    #[test]
    fn schedule_is_open_loop_and_exact() {
        let schedule = Schedule::new(2000, 1);
        assert_eq!(schedule.n_requests(), 2000);
        assert_eq!(schedule.due_ns(0), 0);
        assert_eq!(schedule.due_ns(1), 500_000);
        assert_eq!(schedule.due_ns(2000), 1_000_000_000);
        assert_eq!(schedule.n_due(0), 1);
        assert_eq!(schedule.n_due(499_999), 1);
        assert_eq!(schedule.n_due(500_000), 2);
        assert_eq!(schedule.n_due(10_000_000_000), 2000);
        // Every request becomes due exactly at its due time.
        let schedule = Schedule::new(7, 3);
        for idx in 0..schedule.n_requests() {
            let due = schedule.due_ns(idx);
            assert_eq!(schedule.n_due(due), idx + 1);
            if due > 0 {
                assert_eq!(schedule.n_due(due - 1), idx);
            }
        }
    }
}
