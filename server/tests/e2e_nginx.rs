//! subzero behind the real nginx (Debian package) as an `auth_request` target, configured by
//! the shipped `scripts/nginx-auth-request.conf` with only its addresses changed.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bearer, issue, Conn, Server};

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// `text` with each `(from, to)` replaced; each `from` must occur exactly once, so a change
/// to the shipped file's shape fails here rather than silently testing something else.
fn substitute(text: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in pairs {
        assert_eq!(
            out.matches(from).count(),
            1,
            "scripts/nginx-auth-request.conf should contain {from:?} once"
        );
        out = out.replace(from, to);
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the shipped example, with only its addresses changed, and a test-only `nginx.conf`
/// that includes it where a distribution's nginx.conf includes conf.d/*.conf, under `prefix`.
/// A broken shipped file fails the test.
fn write_config(
    prefix: &Path,
    subzero: std::net::SocketAddr,
    front: u16,
    backend: u16,
) -> std::path::PathBuf {
    let upstream = format!("server {subzero};");
    let file = "nginx-auth-request.conf";
    write_config_from(
        prefix,
        file,
        ("server 127.0.0.1:8080;", &upstream),
        front,
        backend,
    )
}

/// `write_config` from the shipped file `file`, its upstream line `from` replaced by `to`.
fn write_config_from(
    prefix: &Path,
    file: &str,
    (from, to): (&str, &str),
    front: u16,
    backend: u16,
) -> std::path::PathBuf {
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts")
            .join(file),
    )
    .expect("read the shipped nginx example");
    let site = substitute(
        &shipped,
        &[
            (from, to),
            ("listen 80;", &format!("listen 127.0.0.1:{front};")),
            (
                "proxy_pass http://127.0.0.1:9000;",
                &format!("proxy_pass http://127.0.0.1:{backend};"),
            ),
        ],
    );
    std::fs::write(prefix.join("subzero-site.conf"), site).unwrap();
    let conf = format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/subzero-site.conf;
    # The API behind nginx: echoes the identity nginx passed on.
    server {{
        listen 127.0.0.1:{backend};
        location / {{ return 200 "hello $http_x_auth_subject scopes=$http_x_auth_scopes"; }}
    }}
}}
"#,
        prefix = prefix.display(),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    conf_path
}

#[test]
fn nginx_auth_request_passes_identity_and_refuses_bad_tokens() {
    run_nginx(false);
}

/// The same over the Unix socket: `scripts/nginx-auth-request-unix.conf`, upstream
/// `server unix:/path;` with keep-alive.
#[test]
fn nginx_auth_request_over_the_unix_socket() {
    run_nginx(true);
}

fn run_nginx(unix: bool) {
    let Some(nginx) = nginx_binary() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nginx is missing under CI=true: `cargo xtask test` installs it"
        );
        eprintln!("skipping: nginx is not installed (cargo xtask test installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    let listen = format!("unix:{}", sock.display());
    let mut args = vec!["--shards", "1"];
    if unix {
        args.extend(["--listen", &listen]);
    }
    let server = Server::start(&dir.path().join("data"), &args);
    let front = free_port();
    let backend = free_port();
    let prefix = dir.path().join("nginx");
    let conf_path = if unix {
        let to = format!("server {listen};");
        let (file, from) = (
            "nginx-auth-request-unix.conf",
            "server unix:/run/subzero/subzero.sock;",
        );
        write_config_from(&prefix, file, (from, &to), front, backend)
    } else {
        write_config(&prefix, server.addr, front, backend)
    };
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nginx");
    let mut nginx = Nginx(child);
    let front_addr: std::net::SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(front_addr).is_err() {
        if let Ok(Some(status)) = nginx.0.try_wait() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(nginx.0.stderr.as_mut().unwrap(), &mut err);
            panic!("nginx exited ({status}) with the shipped config:\n{err}");
        }
        assert!(Instant::now() < deadline, "nginx did not start within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    let token = issue(server.data_dir.as_path(), "alice", "subzero", &["read"]);
    let mut conn = Conn::new(front_addr);
    conn.send(
        "GET",
        "/api/orders",
        &[("Authorization", &bearer(&token))],
        "",
    );
    let ok = conn.read_response();
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, "hello alice scopes=read");

    conn.send(
        "GET",
        "/api/orders",
        &[("Authorization", "Bearer not.a.token")],
        "",
    );
    assert_eq!(conn.read_response().status, 401);
    conn.send("GET", "/api/orders", &[], "");
    assert_eq!(conn.read_response().status, 401);
    // Many requests over nginx's keep-alive upstream pool.
    for _ in 0..50 {
        conn.send("GET", "/api/x", &[("Authorization", &bearer(&token))], "");
        assert_eq!(conn.read_response().body, "hello alice scopes=read");
    }
    if unix {
        // The checks really went over the Unix socket.
        server.wait_metrics("a Unix-socket connection counted", |text| {
            common::metric_sum(text, "subzero_unix_connections_accepted_total") >= 1
        });
    }
}
