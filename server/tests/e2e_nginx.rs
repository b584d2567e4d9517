//! subzero behind the real nginx (Debian package) as an `auth_request` target.

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn nginx_auth_request_passes_identity_and_refuses_bad_tokens() {
    let Some(nginx) = nginx_binary() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nginx is missing under CI=true: `cargo xtask test` installs it"
        );
        eprintln!("skipping: nginx is not installed (cargo xtask test installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--shards", "1"]);
    let front = free_port();
    let backend = free_port();
    let prefix = dir.path().join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
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
    upstream subzero {{ server {subzero}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{front};
        location = /_auth {{
            internal;
            proxy_pass http://subzero/v1/authenticate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
        location /api/ {{
            auth_request /_auth;
            auth_request_set $sub $upstream_http_x_auth_subject;
            proxy_set_header X-User $sub;
            proxy_pass http://127.0.0.1:{backend};
        }}
    }}
    server {{
        listen 127.0.0.1:{backend};
        location / {{ return 200 "hello $http_x_user"; }}
    }}
}}
"#,
        prefix = prefix.display(),
        subzero = server.addr,
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nginx");
    let _nginx = Nginx(child);
    let front_addr: std::net::SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(front_addr).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
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
    assert_eq!(ok.body, "hello alice");

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
        assert_eq!(conn.read_response().body, "hello alice");
    }
}
