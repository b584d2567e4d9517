//! subzero behind the real Caddy (Debian package): `forward_auth` over the Unix socket,
//! configured by the shipped `scripts/Caddyfile` with only its addresses changed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bearer, issue, Conn, Server};

struct Caddy(Child);

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A backend that answers every request with the `X-Auth-Subject` it was given.
fn backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1000) {
            let Ok(stream) = stream else { break };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut subject = String::from("-");
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("x-auth-subject") {
                                v.trim().clone_into(&mut subject);
                            }
                        }
                    }
                    let body = format!("hello {subject}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if out.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn caddy_forward_auth_over_the_unix_socket_copies_the_subject() {
    let Some(caddy) = ["/usr/bin/caddy", "/usr/local/bin/caddy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "caddy is missing under CI=true: `cargo xtask test` installs it"
        );
        eprintln!("skipping: caddy is not installed (cargo xtask test installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    let listen = format!("unix:{}", sock.display());
    let server = Server::start(
        &dir.path().join("data"),
        &["--shards", "1", "--listen", &listen],
    );
    let front = free_port();
    let back = backend();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/Caddyfile"))
            .expect("read scripts/Caddyfile");
    let mut site = shipped.clone();
    for (from, to) in [
        (":80 {", format!(":{front} {{")),
        (
            "unix//run/subzero/subzero.sock",
            format!("unix/{}", sock.display()),
        ),
        (
            "reverse_proxy 127.0.0.1:9000",
            format!("reverse_proxy 127.0.0.1:{back}"),
        ),
    ] {
        assert_eq!(
            site.matches(from).count(),
            1,
            "scripts/Caddyfile should contain {from:?} once"
        );
        site = site.replace(from, &to);
    }
    // Test-only globals: no admin endpoint, no HTTPS, state under the temp dir.
    let file = dir.path().join("Caddyfile");
    std::fs::write(
        &file,
        format!("{{\n\tadmin off\n\tauto_https off\n}}\n{site}"),
    )
    .unwrap();
    let child = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg-data"))
        .env("XDG_CONFIG_HOME", dir.path().join("xdg-config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start caddy");
    let mut caddy = Caddy(child);
    let front_addr: std::net::SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(front_addr).is_err() {
        if let Ok(Some(status)) = caddy.0.try_wait() {
            panic!("caddy exited ({status}) with the shipped Caddyfile");
        }
        assert!(Instant::now() < deadline, "caddy did not start within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = issue(server.data_dir.as_path(), "alice", "subzero", &["read"]);
    let mut conn = Conn::new(front_addr);
    for _ in 0..20 {
        conn.send(
            "GET",
            "/api/orders",
            &[("Authorization", &bearer(&token))],
            "",
        );
        let ok = conn.read_response();
        assert_eq!(ok.status, 200, "{ok:?}");
        assert_eq!(ok.body, "hello alice");
    }
    conn.send(
        "GET",
        "/api/orders",
        &[("Authorization", "Bearer not.a.token")],
        "",
    );
    assert_eq!(conn.read_response().status, 401);
    conn.send("GET", "/api/orders", &[], "");
    assert_eq!(conn.read_response().status, 401);
    server.wait_metrics("a Unix-socket connection counted", |text| {
        common::metric_sum(text, "subzero_unix_connections_accepted_total") >= 1
    });
}
