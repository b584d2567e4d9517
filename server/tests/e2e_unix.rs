//! End to end over a Unix stream socket with the real binary: curl, a pipelined burst, the
//! socket file's mode, stale-file replacement and removal at shutdown, Envoy ext_authz shapes,
//! connections spread over shards, and audit events naming the peer uid.

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
    let want = format!("uid:{uid}");
    let admin = bearer("admin-token-for-unix-tests");
    let sources = poll(
        "an audit event with the uid",
        Duration::from_secs(10),
        || {
            let resp = server.request(
                "GET",
                "/v1/audit/events?after=0&limit=1000",
                &[("Authorization", &admin)],
                "",
            );
            let sources: Vec<String> = resp.json()["events"]
                .as_array()?
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
