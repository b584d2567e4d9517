//! Small process helpers shared by the subcommands: timed steps, checked commands, child
//! guards that kill by pid, and a minimal blocking HTTP/1.1 client for probes.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Upper bound on the bytes a probe reads back; probes only look at small responses.
const MAX_PROBE_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The cargo target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The cargo binary that runs us (cargo sets `CARGO`), or `cargo` from `PATH`.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Prints a step header, runs `f`, prints how long it took; errors carry the step's name.
pub fn step<T>(
    timings: &mut Vec<(String, Duration)>,
    name: &str,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    println!("\n==> {name}");
    let start = Instant::now();
    let result = f().with_context(|| format!("step `{name}` failed"));
    let elapsed = start.elapsed();
    match &result {
        Ok(_) => println!("<== {name}: ok in {:.1} s", elapsed.as_secs_f64()),
        Err(_) => println!("<== {name}: FAILED after {:.1} s", elapsed.as_secs_f64()),
    }
    timings.push((name.to_string(), elapsed));
    result
}

/// Renders a command line for messages.
pub fn display(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs a command with inherited stdio; a non-zero exit is an error naming the command.
pub fn run(cmd: &mut Command) -> Result<()> {
    println!("    $ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    check_status(cmd, status)
}

fn check_status(cmd: &Command, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{}` exited with {status}", display(cmd))
    }
}

/// Runs a command and returns its stdout; stderr is passed through. Non-zero exit is an error.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    check_status(cmd, out.status)?;
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// Finds an executable in `PATH` or the sbin directories (root's tools live there).
pub fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A child process killed (SIGTERM, then SIGKILL after a grace period) when dropped.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<ChildGuard> {
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {name}: `{}`", display(cmd)))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails if the child has already exited (a server that died during a run).
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} was already stopped", self.name);
        };
        if let Some(status) = child.try_wait()? {
            bail!("{} exited unexpectedly with {status}", self.name);
        }
        Ok(())
    }

    /// SIGTERM, wait up to two seconds, then SIGKILL; always reaps.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("could not bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A parsed HTTP response from [`http_request`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// One HTTP/1.1 request with `Connection: close`; reads the whole response.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    if !body.is_empty() || method == "POST" {
        let _ = write!(request, "Content-Length: {}\r\n", body.len());
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    // Some peers keep the connection open despite `Connection: close`: stop at the end of
    // the first response (Content-Length), or at close when there is none.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if response_complete(&raw) {
            break;
        }
        if raw.len() > MAX_PROBE_RESPONSE_BYTES {
            bail!("response from {addr} is larger than {MAX_PROBE_RESPONSE_BYTES} bytes");
        }
    }
    parse_http_response(&raw)
}

/// Whether `raw` holds a whole response whose body length is given by Content-Length.
pub fn response_complete(raw: &[u8]) -> bool {
    let Some(header_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..header_end]);
    let content_length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    content_length.is_some_and(|len| raw.len() >= header_end + 4 + len)
}

/// Splits a raw HTTP/1.1 response into status code and body (no chunked decoding needed for
/// the probes we make; a chunked body is returned as is).
pub fn parse_http_response(raw: &[u8]) -> Result<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let Some(status_line) = text.lines().next() else {
        bail!("empty HTTP response");
    };
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 response: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok(HttpResponse { status, body })
}

/// Polls `GET path` until it answers `200` (or, with `any_status`, any HTTP response).
pub fn wait_ready(
    child: &mut ChildGuard,
    addr: SocketAddr,
    path: &str,
    any_status: bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        child.check_alive()?;
        match http_request(addr, "GET", path, &[], b"") {
            Ok(res) if res.status == 200 || any_status => return Ok(()),
            Ok(res) => last = format!("status {}", res.status),
            Err(err) => last = err.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} on {addr} was not ready after 20 s (last: {last})",
        child.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let res =
            parse_http_response(b"HTTP/1.1 401 Unauthorized\r\nX: y\r\n\r\n{\"error\":1}").unwrap();
        assert_eq!(res.status, 401);
        assert_eq!(res.body, "{\"error\":1}");
        assert!(parse_http_response(b"SSH-2.0-x\r\n").is_err());
        assert!(parse_http_response(b"").is_err());
    }

    #[test]
    fn knows_when_a_response_is_complete() {
        assert!(!response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
        ));
        assert!(!response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no"
        ));
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        ));
        // Without a length the body runs to close.
        assert!(!response_complete(b"HTTP/1.1 200 OK\r\n\r\nok"));
    }

    #[test]
    fn guard_kills_child_on_drop() {
        let guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("30")).unwrap();
        let pid = guard.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(guard);
        // Reaped by stop(): the pid is gone (or reused by something that is not our sleep).
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_ne!(comm.trim(), "sleep");
    }
}
