//! A one-request HTTP/1.1 client for the CLI's `--server URL`: `http://host:port` over TCP or
//! `unix:/path` over the server's Unix socket (where an `[admin] unix_uids` uid needs no
//! token), with `Connection: close` and a bounded response.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Longest response read (a `/metrics` of a large server, a full blocklist, is well under it).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Connect, read and write timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Where `--server` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `http://host:port` (or bare `host:port`).
    Tcp(SocketAddr),
    /// `unix:/path`.
    Unix(PathBuf),
}

impl Target {
    /// Parses `--server`.
    pub fn parse(server: &str) -> Result<Target, String> {
        if let Some(path) = server.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "--server unix: needs a path, e.g. unix:/run/subzero/subzero.sock".into(),
                );
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if server.starts_with("https://") {
            return Err(
                "--server must be http://host:port or unix:/path (the local listener)".into(),
            );
        }
        let hostport = server
            .strip_prefix("http://")
            .unwrap_or(server)
            .trim_end_matches('/');
        hostport
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
            .next()
            .map(Target::Tcp)
            .ok_or_else(|| format!("cannot resolve {hostport}"))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "http://{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A response: status code and body text.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Response {
    /// The OAuth-shaped error's `error_description` (or the body).
    pub fn description(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error_description"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.body.trim().to_owned())
    }
}

fn exchange(mut conn: impl Read + Write, request: &[u8]) -> std::io::Result<Vec<u8>> {
    conn.write_all(request)?;
    let mut bytes = Vec::new();
    conn.take(MAX_RESPONSE_BYTES as u64)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Sends one request (`body` as JSON when not empty) and reads the whole response.
pub fn request(
    target: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<Response, String> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: subzero\r\nConnection: close\r\n");
    if let Some(token) = token {
        let _ = write!(head, "Authorization: Bearer {token}\r\n");
    }
    if !body.is_empty() || method != "GET" {
        let _ = write!(
            head,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    head.push_str("\r\n");
    head.push_str(body);
    let fail = |e: std::io::Error| format!("cannot reach {target}: {e}");
    let bytes = match target {
        Target::Tcp(addr) => {
            let conn = TcpStream::connect_timeout(addr, IO_TIMEOUT).map_err(fail)?;
            conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
            conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
            exchange(conn, head.as_bytes()).map_err(fail)?
        }
        Target::Unix(path) => {
            let conn = UnixStream::connect(path).map_err(fail)?;
            conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
            conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
            exchange(conn, head.as_bytes()).map_err(fail)?
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let (status_head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{target}: no HTTP response"))?;
    let status = status_head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{target}: no HTTP status line"))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_parse() {
        assert_eq!(
            Target::parse("unix:/run/sz.sock").unwrap(),
            Target::Unix(PathBuf::from("/run/sz.sock"))
        );
        assert_eq!(
            Target::parse("http://127.0.0.1:8080/").unwrap(),
            Target::Tcp("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            Target::parse("127.0.0.1:9").unwrap(),
            Target::Tcp("127.0.0.1:9".parse().unwrap())
        );
        assert!(Target::parse("unix:").is_err());
        assert!(Target::parse("https://127.0.0.1:1").is_err());
    }

    #[test]
    fn a_response_is_read_whole_over_a_unix_socket() {
        let dir = std::env::temp_dir().join(format!("sz-remote-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 47\r\n\r\n{\"error\":\"x\",\"error_description\":\"not blocked\"}")
                .unwrap();
            req
        });
        let resp = request(&Target::Unix(path), "DELETE", "/v1/block", Some("t"), "{}").unwrap();
        let req = server.join().unwrap();
        assert!(req.starts_with("DELETE /v1/block HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Authorization: Bearer t\r\n"), "{req}");
        assert!(req.ends_with("Content-Length: 2\r\n\r\n{}"), "{req}");
        assert_eq!(resp.status, 404);
        assert_eq!(resp.description(), "not blocked");
    }
}
