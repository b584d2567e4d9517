//! End to end over loopback: connection and process lifecycle. The idle keep-alive timeout
//! closes idle connections; SIGTERM finishes requests in flight and exits 0; a revocation's
//! `200` means it is written and synced (kill -9 right after it loses nothing, and a failed
//! fdatasync, injected with strace, gives `503`, never `200`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{bearer, issue, metric, poll, End, Server};

fn authenticate(server: &Server, token: &str) -> common::Response {
    server.request(
        "GET",
        "/v1/authenticate",
        &[("Authorization", &bearer(token))],
        "",
    )
}

fn revoke_body(token: &str) -> String {
    serde_json::json!({ "token": token }).to_string()
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("subzero.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `strace` arguments that follow every thread, trace only fdatasync (seccomp-filtered, so
/// the rest runs at full speed) and apply `inject` to it; the trace goes to `log`.
fn strace_args<'a>(strace: &'a str, log: &'a str, inject: &'a str) -> Vec<&'a str> {
    vec![
        strace,
        "-f",
        "--seccomp-bpf",
        "-qq",
        "-y",
        "-e",
        "signal=none",
        "-e",
        "trace=fdatasync",
        "-e",
        inject,
        "-o",
        log,
        "--",
    ]
}

#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout_s() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nidle_timeout_s = 2\n");
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", &config, "--shards", "1"],
    );
    let mut conn = server.connect();
    conn.send("GET", "/healthz", &[], "");
    assert_eq!(conn.read_response().status, 200);
    conn.send("GET", "/healthz", &[], "");
    assert_eq!(conn.read_response().status, 200, "kept alive");
    // The default (60 s) would keep it open past this read's 10 s time-out.
    assert_eq!(
        conn.wait_closed(Duration::from_secs(10)),
        End::Closed,
        "an idle connection was still open 10 s after idle_timeout_s = 2"
    );
    server.wait_metrics("the idle connection counted as a timeout", |t| {
        metric(t, "subzero_connection_timeouts_total{shard=\"0\"}") == Some(1)
    });
}

#[test]
fn sigterm_finishes_requests_in_flight_and_exits_0() {
    let Some(strace) = common::strace() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Start once without strace to create the keys, so the tokens can be issued.
    drop(Server::start(&data, &["--shards", "1"]));
    let token = issue(&data, "alice", "subzero", &[]);
    let other = issue(&data, "bob", "subzero", &[]);
    let log = dir.path().join("strace.log");
    let log_str = log.to_str().unwrap();
    // The control plane's fdatasync returns after 3 s (less than the 5 s shutdown grace):
    // the revocation is certainly in flight when SIGTERM arrives.
    let wrapper = strace_args(strace, log_str, "inject=fdatasync:delay_exit=3000000");
    let mut server = Server::start_wrapped(&wrapper, &data, &["--shards", "1"]);
    // Starting syncs the store too: count those syncs, so the wait below sees the revocation's.
    let store_syncs = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("subzero.redb>"))
            .count()
    };
    let n_start_syncs = store_syncs();

    // One connection: the revocation (deferred to the control plane), then a pipelined burst
    // that must wait behind it to keep responses in request order.
    let mut burst = common::request_bytes(
        "POST",
        "/v1/revoke",
        &[("Content-Type", "application/json")],
        &revoke_body(&token),
    );
    for _ in 0..20 {
        burst.extend(common::request_bytes(
            "GET",
            "/v1/authenticate",
            &[("Authorization", &bearer(&other))],
            "",
        ));
    }
    burst.extend(common::request_bytes("GET", "/healthz", &[], ""));
    let mut conn = server.connect();
    conn.raw(&burst);
    // strace writes the line when the sync returns, then holds the thread for 3 s.
    poll(
        "the revocation's fdatasync",
        Duration::from_secs(10),
        || (store_syncs() > n_start_syncs).then_some(()),
    );
    server.sigterm();

    let first = conn.read_response();
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.json()["revoked"], true);
    for i in 0..20 {
        let resp = conn.read_response();
        assert_eq!(resp.status, 200, "authenticate {i}: {resp:?}");
        assert_eq!(resp.header("x-auth-subject"), Some("bob"));
    }
    assert_eq!(conn.read_response().body, "ok");
    // Every fdatasync takes 3 s here: the revocation's, the audit log's commit of that pass
    // (its `token.revoke` event), then the store's own syncs as it closes (four, 12 s).
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)),
        Some(0),
        "the server must exit 0 after SIGTERM"
    );
    drop(server);
    let server = Server::start(&data, &["--shards", "1"]);
    assert_eq!(authenticate(&server, &token).status, 401, "revocation kept");
}

#[test]
fn kill_9_right_after_a_revocations_200_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "2"]);
    let token = issue(dir.path(), "bob", "subzero", &[]);
    let other = issue(dir.path(), "carol", "subzero", &[]);
    assert_eq!(authenticate(&server, &token).status, 200);
    let resp = server.request(
        "POST",
        "/v1/revoke",
        &[("Content-Type", "application/json")],
        &revoke_body(&token),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    // No wait: whatever the 200 promised must already be in the kernel's hands.
    server.kill9();
    let server = Server::start(dir.path(), &["--shards", "2"]);
    for _ in 0..8 {
        let resp = authenticate(&server, &token);
        assert_eq!(resp.status, 401, "revocation lost by kill -9: {resp:?}");
        assert_eq!(resp.error_description(), "token has been revoked");
    }
    assert_eq!(authenticate(&server, &other).status, 200);
}

#[test]
fn a_failed_fdatasync_makes_the_revocation_503_never_200() {
    let Some(strace) = common::strace() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--shards", "1"]);
    let token = issue(&data, "alice", "subzero", &[]);
    // Starting opens and syncs the store, so strace attaches to the running server (every
    // thread) and fails each fdatasync from then on: the revocation's is the first.
    let log = dir.path().join("strace.log");
    let pid = server.child.id().to_string();
    let mut tracer = std::process::Command::new(strace)
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "signal=none",
            "-e",
            "trace=fdatasync",
        ])
        .args(["-e", "inject=fdatasync:error=EIO", "-o"])
        .arg(&log)
        .args(["-p", &pid])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start strace");
    let tasks = format!("/proc/{pid}/task");
    common::poll(
        "strace attached to every thread",
        Duration::from_secs(10),
        || {
            let all_traced = std::fs::read_dir(&tasks).ok()?.all(|task| {
                let status = task
                    .ok()
                    .and_then(|t| std::fs::read_to_string(t.path().join("status")).ok())
                    .unwrap_or_default();
                status.lines().any(|l| {
                    l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0")
                })
            });
            all_traced.then_some(())
        },
    );
    assert_eq!(authenticate(&server, &token).status, 200);
    let resp = server.request(
        "POST",
        "/v1/revoke",
        &[("Content-Type", "application/json")],
        &revoke_body(&token),
    );
    // The answer depends on the sync's result, so it cannot have been sent before it.
    assert_eq!(
        resp.status, 503,
        "a revocation that was not synced: {resp:?}"
    );
    assert_eq!(resp.json()["error"], "temporarily_unavailable");
    let trace = std::fs::read_to_string(&log).unwrap();
    assert!(
        trace.lines().any(|l| l.contains("fdatasync(")
            && l.contains("subzero.redb>")
            && l.contains("= -1 EIO")
            && l.contains("(INJECTED)")),
        "no failed fdatasync of the store in the trace:\n{trace}"
    );
    // Not acknowledged, so not applied either.
    assert_eq!(authenticate(&server, &token).status, 200);
    let _ = tracer.kill();
    let _ = tracer.wait();
}
