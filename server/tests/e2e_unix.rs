//! End to end over a Unix stream socket with the real binary: curl, a pipelined burst, the
//! socket file's mode, stale-file replacement and removal at shutdown (and after a failed
//! start), Unix-only mode (no TCP listener), Envoy ext_authz shapes, connections spread over
//! shards, audit events naming the peer uid and pid, and `/v1/block` with the CLI's
//! `--server unix:` while the gate is off (the gate-on half is in gate_e2e.rs).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{bearer, issue, metric_values, poll, request_bytes, Server};

fn start(dir: &Path, sock: &Path, extra: &[&str]) -> Server {
    let listen = format!("unix:{}", sock.display());
    // `Server::start` passes `--listen 127.0.0.1:0` first: the list is TCP + Unix.
    let mut args = vec!["--listen", &listen];
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

/// Writes `bytes` on a fresh connection to `sock` and reads until `n` responses arrived.
fn exchange(sock: &Path, bytes: &[u8], n: usize) -> String {
    let mut stream = UnixStream::connect(sock).expect("connect to the unix socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut text = String::new();
    let mut chunk = [0u8; 16384];
    while text.matches("HTTP/1.1 ").count() < n || !complete(&text, n) {
        let got = stream.read(&mut chunk).expect("read");
        assert!(got > 0, "closed early after: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..got]));
    }
    text
}

/// True when the `n`-th response's body (by content-length) has arrived whole.
fn complete(text: &str, n: usize) -> bool {
    let Some(start) = text.match_indices("HTTP/1.1 ").nth(n - 1).map(|(i, _)| i) else {
        return false;
    };
    let tail = &text[start..];
    let Some(head_end) = tail.find("\r\n\r\n") else {
        return false;
    };
    let len: usize = tail[..head_end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    tail.len() >= head_end + 4 + len
}

#[test]
fn curl_over_the_unix_socket_authenticates_with_identity_headers() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    let server = start(dir.path(), &sock, &["--shards", "2"]);
    let token = issue(dir.path(), "alice", "subzero", &["read"]);
    let out = Command::new("curl")
        .args(["-s", "-i", "--unix-socket"])
        .arg(&sock)
        .args(["-H", &format!("Authorization: {}", bearer(&token))])
        .arg("http://localhost/v1/authenticate")
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("x-auth-subject: alice"), "{text}");
    assert!(text.contains("x-auth-scopes: read"), "{text}");
    // TCP still answers beside it.
    let tcp = server.request(
        "GET",
        "/v1/authenticate",
        &[("Authorization", &bearer(&token))],
        "",
    );
    assert_eq!(tcp.status, 200);
    assert!(server.terminate());
}

#[test]
fn a_pipelined_burst_of_100_is_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    let server = start(dir.path(), &sock, &["--shards", "2"]);
    let mut bytes = Vec::new();
    for i in 0..100 {
        let path = format!("/v1/ext-authz/item/{i}");
        bytes.extend(request_bytes("GET", &path, &[], ""));
    }
    let text = exchange(&sock, &bytes, 100);
    let codes: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(codes.len(), 100, "{text}");
    assert!(codes.iter().all(|c| *c == "401"), "{codes:?}");
    assert!(server.terminate());
}

#[test]
fn a_stale_socket_is_replaced_the_mode_applied_and_the_file_removed_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    drop(UnixListener::bind(&sock).unwrap()); // a crash's leftover: nobody answers on it
    assert!(sock.exists());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("sz.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\", \"unix:{}\"]\nunix_mode = \"0600\"\nunix_group = \"root\"\n",
            sock.display()
        ),
    )
    .unwrap();
    // `--listen` replaces the file's list, so the Unix entry is repeated there.
    let server = start(&data, &sock, &["--config", config.to_str().unwrap()]);
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = exchange(&sock, &request_bytes("GET", "/v1/authenticate", &[], ""), 1);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    // A second server refuses the live socket rather than stealing it.
    let (code, _, err) = common::cli(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &format!("unix:{}", sock.display()),
        "--data-dir",
        dir.path().join("other").to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("already answers"), "{err}");
    assert!(server.terminate());
    assert!(!sock.exists(), "the socket file is removed at shutdown");
}

/// Envoy's ext_authz (HTTP mode) over a pipe address: any method, the original path under the
/// prefix, with and without a body.
#[test]
fn envoy_ext_authz_shapes_and_connections_spread_over_shards() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    let server = start(dir.path(), &sock, &["--shards", "2"]);
    let token = issue(dir.path(), "alice", "subzero", &["read"]);
    let auth = bearer(&token);
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for body in ["", "{\"a\":1}"] {
            let path = "/v1/ext-authz/api/orders?id=7";
            let ok = exchange(
                &sock,
                &request_bytes(method, path, &[("Authorization", &auth)], body),
                1,
            );
            assert!(ok.starts_with("HTTP/1.1 200"), "{method} {body:?}: {ok}");
            assert!(ok.to_lowercase().contains("x-auth-subject: alice"), "{ok}");
            let none = exchange(&sock, &request_bytes(method, path, &[], body), 1);
            assert!(
                none.starts_with("HTTP/1.1 401"),
                "{method} {body:?}: {none}"
            );
        }
    }
    // 24 connections so far, each on its own socket: every shard took some.
    let text = server.wait_metrics("unix accepts on both shards", |t| {
        let v = metric_values(t, "subzero_unix_connections_accepted_total");
        v.len() == 2 && v.iter().sum::<f64>() >= 24.0
    });
    let per_shard = metric_values(&text, "subzero_unix_connections_accepted_total");
    assert_eq!(per_shard.iter().sum::<f64>() as u64, 24, "{per_shard:?}");
    assert!(per_shard.iter().all(|n| *n >= 1.0), "{per_shard:?}");
    assert!(server.terminate());
}

/// An audit event's source names the Unix peer's uid.
#[test]
fn audit_events_name_the_peer_uid() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    std::fs::write(dir.path().join("admin.token"), "admin-token-for-unix-tests").unwrap();
    let config = dir.path().join("sz.toml");
    std::fs::write(&config, "[admin]\ntoken_file = \"admin.token\"\n").unwrap();
    let server = start(
        dir.path(),
        &sock,
        &["--shards", "1", "--config", config.to_str().unwrap()],
    );
    let denied = exchange(&sock, &request_bytes("GET", "/v1/authenticate", &[], ""), 1);
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    // `exchange` connects from this process: SO_PEERCRED names its pid.
    let want = format!("uid:{uid} pid:{}", std::process::id());
    let admin = bearer("admin-token-for-unix-tests");
    let sources = poll(
        "an audit event with the uid",
        Duration::from_secs(10),
        || {
            let sources: Vec<String> = audit_events(&server, &admin)?
                .iter()
                .filter_map(|e| e["source"].as_str().map(str::to_owned))
                .collect();
            sources.contains(&want).then_some(sources)
        },
    );
    // The TCP request above (the poll itself) is named by IP, not by a uid.
    assert!(
        sources.iter().all(|s| s == &want || !s.starts_with("uid:")),
        "{sources:?}"
    );
    assert!(server.terminate());
}

/// `[admin] unix_uids`: root over the Unix socket is admin without a token; uid 65534 over the
/// same socket is not, and still is with the bearer token.
#[test]
fn admin_by_unix_uid_is_allowed_and_other_uids_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("sz.sock");
    std::fs::write(dir.path().join("admin.token"), "admin-token-for-unix-tests").unwrap();
    let config = dir.path().join("sz.toml");
    std::fs::write(
        &config,
        "[server]\nunix_mode = \"0666\"\n[admin]\ntoken_file = \"admin.token\"\nunix_uids = [0]\n",
    )
    .unwrap();
    let server = start(
        dir.path(),
        &sock,
        &["--shards", "1", "--config", config.to_str().unwrap()],
    );
    let curl = |as_nobody: bool, token: Option<&str>| -> String {
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "curl",
            ]);
            c
        } else {
            Command::new("curl")
        };
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["--unix-socket", sock.to_str().unwrap()]);
        if let Some(token) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = cmd.arg("http://localhost/v1/keys/rotate").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let root = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run this test as root"
        );
        println!("skipped: not root, cannot act as uid 0 and 65534");
        return;
    }
    assert_eq!(curl(false, None), "200", "root over the socket is admin");
    assert_eq!(curl(true, None), "401", "uid 65534 is not");
    assert_eq!(curl(true, Some("admin-token-for-unix-tests")), "200");
    // Over TCP no uid applies: the token is needed.
    let tcp = server.request("POST", "/v1/keys/rotate", &[], "");
    assert_eq!(tcp.status, 401);
    assert!(server.terminate());
}

/// The per-source rate limit keys a Unix peer on its uid: root spends its burst, uid 65534
/// and a TCP client still have theirs.
#[test]
fn per_source_limits_key_unix_peers_on_their_uid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("sz.sock");
    let config = dir.path().join("sz.toml");
    std::fs::write(
        &config,
        "[server]\nunix_mode = \"0666\"\n[[ratelimit.rules]]\nroute = \"authenticate\"\nrate_per_s = 0.01\nburst = 3\n",
    )
    .unwrap();
    let server = start(
        dir.path(),
        &sock,
        &["--shards", "1", "--config", config.to_str().unwrap()],
    );
    let get = request_bytes("GET", "/v1/authenticate", &[], "");
    let codes: Vec<String> = (0..5)
        .map(|_| exchange(&sock, &get, 1)[9..12].to_owned())
        .collect();
    assert_eq!(
        codes,
        ["401", "401", "401", "429", "429"],
        "root's burst of 3"
    );
    let root = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&root.stdout).trim() == "0" {
        let out = Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "curl",
            ])
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&sock)
            .arg("http://localhost/v1/authenticate")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "401",
            "uid 65534 has its own"
        );
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run this test as root"
        );
        println!("skipped the uid 65534 half: not root");
    }
    let tcp = server.request("GET", "/v1/authenticate", &[], "");
    assert_eq!(tcp.status, 401, "a TCP source has its own budget");
    assert!(server.terminate());
}

/// Inodes of the TCP sockets in LISTEN state (`0A`) that process `pid` holds, read from its
/// `/proc/<pid>/net/tcp{,6}` and matched against its own fds.
fn tcp_listen_inodes(pid: u32) -> Vec<u64> {
    let own: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|link| {
            let text = link.to_string_lossy().into_owned();
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut listening = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = fields[9].parse().unwrap();
            if fields[3] == "0A" && own.contains(&inode) {
                listening.push(inode);
            }
        }
    }
    listening
}

/// `listen` naming only `unix:` means no TCP listener at all, not the default 127.0.0.1:8080
/// beside it; with a TCP entry the same probe sees one listener per shard.
#[test]
fn a_unix_only_listen_list_opens_no_tcp_port() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    let config = dir.path().join("sz.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"unix:{}\"\n", sock.display()),
    )
    .unwrap();
    let data = dir.path().join("data");
    // From the file alone (no --listen).
    let server = Server::start_args(
        &[
            "serve",
            "--shards",
            "2",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &data,
    );
    let healthz = exchange(&sock, &request_bytes("GET", "/healthz", &[], ""), 1);
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert_eq!(
        tcp_listen_inodes(server.pid),
        Vec::<u64>::new(),
        "a unix-only server holds a TCP listener"
    );
    assert_eq!(
        server.addr.port(),
        0,
        "it logged a TCP address: {}",
        server.addr
    );
    assert!(server.terminate());
    assert!(!sock.exists(), "the socket file is removed at shutdown");

    // The same probe sees TCP listeners when the list has an IP:PORT (one per shard).
    let both = start(&dir.path().join("both"), &sock, &["--shards", "2"]);
    assert_eq!(tcp_listen_inodes(both.pid).len(), 2);
    assert!(both.terminate());
    // And `--listen unix:` alone replaces the file's list the same way.
    let only = Server::start_unix_only(&dir.path().join("flag"), &sock, &["--shards", "1"]);
    assert_eq!(tcp_listen_inodes(only.pid), Vec::<u64>::new());
    assert!(only.terminate());
}

/// A start that fails after the Unix socket is bound (here the TCP port is taken) removes the
/// socket file before it exits.
#[test]
fn a_start_that_fails_after_the_bind_removes_the_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (code, _, err) = common::cli_env(
        &[
            "serve",
            "--listen",
            &format!("unix:{}", sock.display()),
            "--listen",
            &port,
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        &[("RUST_LOG", "info")],
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(&format!("accepting on unix:{}", sock.display())),
        "bound first: {err}"
    );
    assert!(err.contains(&format!("cannot listen on {port}")), "{err}");
    assert!(!sock.exists(), "the socket file outlived the failed start");
}

/// `/v1/block` with the gate off: 503 naming the gate, 400 for bad input, 405 with the allow
/// line, 401 over TCP without the token; the CLI's `--server unix:` reaches it without a token
/// and `stats --server unix:` reads `/metrics`; each attempted edit is in the audit log.
#[test]
fn block_endpoints_and_the_cli_over_the_socket_with_the_gate_off() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    std::fs::write(dir.path().join("admin.token"), "admin-token-for-unix-tests").unwrap();
    let config = dir.path().join("sz.toml");
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    std::fs::write(
        &config,
        format!("[admin]\ntoken_file = \"admin.token\"\nunix_uids = [{uid}]\n"),
    )
    .unwrap();
    let server = start(
        dir.path(),
        &sock,
        &["--shards", "1", "--config", config.to_str().unwrap()],
    );
    let call = |method: &str, body: &str| {
        exchange(&sock, &request_bytes(method, "/v1/block", &[], body), 1)
    };
    let off = call(
        "POST",
        r#"{"cidr":"203.0.113.0/24","ttl_s":600,"reason":"manual"}"#,
    );
    assert!(off.starts_with("HTTP/1.1 503"), "{off}");
    assert!(off.contains("the eBPF gate is off: "), "{off}");
    assert!(call("GET", "").starts_with("HTTP/1.1 503"));
    for bad in [
        r#"{"cidr":"203.0.113.0/33"}"#,
        r#"{"cidr":"10.0.0.0/8","ttl_s":99999999999}"#,
        r#"{"cidr":"10.0.0.0/8","reason":"because"}"#,
    ] {
        let resp = call("POST", bad);
        assert!(resp.starts_with("HTTP/1.1 400"), "{bad}: {resp}");
        assert!(resp.contains("\"error\":\"invalid_request\""), "{resp}");
    }
    let put = call("PUT", "{}");
    assert!(put.starts_with("HTTP/1.1 405"), "{put}");
    assert!(put.contains("allow: GET, HEAD, POST, DELETE"), "{put}");
    let tcp = server.request("GET", "/v1/block", &[], "");
    assert_eq!(tcp.status, 401, "over TCP the token is needed");
    let admin = bearer("admin-token-for-unix-tests");
    let tcp = server.request("GET", "/v1/block", &[("Authorization", &admin)], "");
    assert_eq!(tcp.status, 503, "{tcp:?}");

    let server_arg = format!("unix:{}", sock.display());
    let (code, _, err) = common::cli(&["block", "list", "--server", &server_arg]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("503") && err.contains("the eBPF gate is off"),
        "{err}"
    );
    let (code, _, err) = common::cli(&["block", "add", "192.0.2.7", "--server", &server_arg]);
    assert_eq!(code, 1, "{err}");
    let url = format!("http://{}", server.addr);
    let (code, _, err) = common::cli(&["block", "del", "192.0.2.7", "--server", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "no token file over http: {err}");
    let (code, out, err) = common::cli(&["stats", "--server", &server_arg, "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["shards"].as_array().map(Vec::len), Some(1), "{doc}");

    let actions = poll(
        "the block attempts in the audit log",
        Duration::from_secs(10),
        || {
            let actions: Vec<String> = audit_events(&server, &admin)?
                .iter()
                .filter(|e| {
                    e["action"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("gate.block."))
                })
                .map(|e| format!("{} {} {}", e["action"], e["resource"], e["outcome"]))
                .collect();
            (actions.len() >= 2).then_some(actions)
        },
    );
    assert_eq!(
        actions,
        [
            r#""gate.block.add" "203.0.113.0/24" "failed""#,
            r#""gate.block.add" "192.0.2.7/32" "failed""#,
        ],
        "the 400s never reach the control plane"
    );
    assert!(server.terminate());
}

/// The connection's log line names the peer's uid and pid (here this test process).
#[test]
fn the_connection_log_names_the_peer_uid_and_pid() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sz.sock");
    let data = dir.path().join("data");
    let listen = format!("unix:{}", sock.display());
    let server = Server::start_args_log(
        &[
            "serve",
            "--listen",
            &listen,
            "--shards",
            "1",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "info,subzero::shard=debug",
        &data,
    );
    let healthz = exchange(&sock, &request_bytes("GET", "/healthz", &[], ""), 1);
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    let want = format!("uid={uid} pid={}", std::process::id());
    let mut seen = Vec::new();
    poll("the connection's log line", Duration::from_secs(10), || {
        seen.extend(server.drain_log());
        seen.iter()
            .find(|l| l.contains("unix-socket peer connected") && l.contains(&want))
            .cloned()
    });
    assert!(server.terminate());
}

/// The audit log's first 1,000 events, read with the admin bearer `admin` (`None` when the
/// answer holds no event list).
fn audit_events(server: &Server, admin: &str) -> Option<Vec<serde_json::Value>> {
    let resp = server.request(
        "GET",
        "/v1/audit/events?after=0&limit=1000",
        &[("Authorization", admin)],
        "",
    );
    resp.json()["events"].as_array().cloned()
}
