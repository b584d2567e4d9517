//! The audit log end to end, on two shards: batches from several connections, `kill -9` in
//! the middle, restart — every batch that got `200` is there (read back over HTTP and by
//! `subzero audit verify`) and the chain verifies; one flipped byte makes `audit verify` name
//! the record and the server refuse to start; a checkpoint saved before an earlier record was
//! rewritten (and the chain recomputed) fails verification; the endpoints' auth (401, 403)
//! and refusals (400, 413); a denial and a key rotation show up as events.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bearer, cli, issue, poll, Server};

const ADMIN: &str = "admin-token-for-audit-tests";
const EVENTS_PER_BATCH: usize = 20;

fn config(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("admin.token"), ADMIN).unwrap();
    let config = dir.join("subzero.toml");
    std::fs::write(
        &config,
        "[admin]\ntoken_file = \"admin.token\"\n[audit]\nmax_batch_events = 50\n",
    )
    .unwrap();
    config
}

fn start(dir: &Path) -> Server {
    let config = config(dir);
    Server::start(
        dir,
        &["--shards", "2", "--config", config.to_str().unwrap()],
    )
}

fn admin() -> String {
    bearer(ADMIN)
}

fn batch_body(tag: &str, n: usize) -> String {
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "actor": format!("writer-{tag}"),
                "action": "test.write",
                "resource": format!("{tag}-e{i}"),
                "outcome": "ok",
                "source": "192.0.2.44",
            })
        })
        .collect();
    serde_json::json!({ "events": events }).to_string()
}

/// Every record, paging with `after`.
fn read_all(server: &Server) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    loop {
        let after = out.last().map_or(0, |r| r["seq"].as_u64().unwrap());
        let path = format!("/v1/audit/events?after={after}&limit=1000");
        let resp = server.request("GET", &path, &[("Authorization", &admin())], "");
        assert_eq!(resp.status, 200, "{}", resp.body);
        let page = resp.json()["events"].as_array().unwrap().clone();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

fn verify(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["audit", "verify", "--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    cli(&args)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .collect();
    out.sort();
    out
}

/// Starts the server expecting it to refuse; its exit code and stderr.
fn start_refused(dir: &Path) -> (i32, String) {
    let config = config(dir);
    let mut child = Command::new(common::bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server kept running on a damaged audit log");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (code, err)
}

#[test]
fn acknowledged_batches_survive_kill_9_and_the_chain_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = start(dir);
    let acked: Arc<Mutex<Vec<(String, u64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|conn_idx| {
            let (acked, stop, addr) = (Arc::clone(&acked), Arc::clone(&stop), server.addr);
            std::thread::spawn(move || {
                let mut conn = common::Conn::new(addr);
                for batch_idx in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let tag = format!("c{conn_idx}-b{batch_idx}");
                    let body = batch_body(&tag, EVENTS_PER_BATCH);
                    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        conn.send(
                            "POST",
                            "/v1/audit/events",
                            &[("Authorization", &admin())],
                            &body,
                        );
                        conn.try_read_response()
                    }));
                    let Ok(Ok(resp)) = sent else { return };
                    if resp.status != 200 {
                        return;
                    }
                    let json = resp.json();
                    let (first, last) = (
                        json["first_seq"].as_u64().unwrap(),
                        json["last_seq"].as_u64().unwrap(),
                    );
                    assert_eq!(last + 1 - first, EVENTS_PER_BATCH as u64);
                    acked.lock().unwrap().push((tag, first, last));
                }
            })
        })
        .collect();
    poll("200 acknowledged batches", Duration::from_mins(1), || {
        (acked.lock().unwrap().len() >= 200).then_some(())
    });
    // Mid-stream: the writers are still sending.
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let acked = acked.lock().unwrap().clone();

    let server = start(dir);
    let records = read_all(&server);
    for (tag, first, last) in &acked {
        for (i, seq) in (*first..=*last).enumerate() {
            let r = records
                .iter()
                .find(|r| r["seq"].as_u64() == Some(seq))
                .unwrap_or_else(|| panic!("acknowledged record {seq} ({tag}) is missing"));
            assert_eq!(r["resource"], format!("{tag}-e{i}"), "record {seq}");
            assert_eq!(r["source"], "192.0.2.44", "opened for the reader");
            assert_eq!(r["hash"].as_str().unwrap().len(), 64);
        }
    }
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "no gaps");
    assert!(server.terminate(), "clean shutdown");
    let (code, out, err) = verify(dir, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{} records", records.len())), "{out}");
    assert!(
        out.contains("checkpoints: ") && !out.contains("checkpoints: 0 verified"),
        "{out}"
    );
    // Nothing personal in the clear on disk.
    for seg in segments(dir) {
        let text = std::fs::read_to_string(&seg).unwrap();
        assert!(
            !text.contains("192.0.2.44"),
            "{} holds a plaintext source",
            seg.display()
        );
    }
}

#[test]
fn a_flipped_byte_is_named_by_verify_and_stops_the_server_from_starting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = start(dir);
    let mut target = 0;
    for tag in ["first", "target", "last"] {
        let resp = server.request(
            "POST",
            "/v1/audit/events",
            &[("Authorization", &admin())],
            &batch_body(tag, 3),
        );
        assert_eq!(resp.status, 200, "{}", resp.body);
        if tag == "target" {
            target = resp.json()["first_seq"].as_u64().unwrap() + 1;
        }
    }
    assert!(server.terminate());
    assert_eq!(verify(dir, &[]).0, 0);
    let seg = segments(dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let at = text.find("target-e1").unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let seg_name = seg.file_name().unwrap().to_str().unwrap();

    let (code, out, err) = verify(dir, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(seg_name) && err.contains(&format!("seq {target}")),
        "{err}"
    );
    assert!(err.contains("byte offset"), "{err}");

    let (code, err) = start_refused(dir);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(seg_name) && err.contains(&format!("seq {target}")),
        "{err}"
    );
}

#[test]
fn a_checkpoint_saved_before_a_rewrite_fails_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = start(dir);
    for tag in ["one", "two"] {
        let resp = server.request(
            "POST",
            "/v1/audit/events",
            &[("Authorization", &admin())],
            &batch_body(tag, 5),
        );
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    // A third party takes a signed checkpoint of the head and the verifier key over HTTP.
    let resp = server.request(
        "GET",
        "/v1/audit/checkpoint",
        &[("Authorization", &admin())],
        "",
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let json = resp.json();
    let note = json["checkpoint"].as_str().unwrap().to_owned();
    let vkey = json["verifier_key"].as_str().unwrap().to_owned();
    assert!(server.terminate());
    let cp_dir = dir.join("audit/checkpoints");
    let saved = tmp.path().join("saved.note");
    std::fs::write(&saved, &note).unwrap();
    assert_eq!(note.lines().nth(1), Some("10"), "tree size: {note}");
    assert!(note.contains("\n\n\u{2014} subzero/audit "), "{note}");
    assert!(vkey.starts_with("subzero/audit+"), "{vkey}");
    let saved_arg = saved.to_str().unwrap();
    let with_key = ["--checkpoint", saved_arg, "--vkey", vkey.as_str()];
    assert_eq!(verify(dir, &with_key).0, 0);

    // Rewrite record 2 and recompute every later hash, then drop the stored checkpoints, as
    // someone covering their tracks would: the chain alone verifies again...
    let seg = segments(dir).pop().unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replace("one-e1", "one-eX");
    let header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let mut prev = [0u8; 32];
    let prev_hex = header["prev"].as_str().unwrap();
    for (i, b) in prev.iter_mut().enumerate() {
        *b = u8::from_str_radix(&prev_hex[2 * i..2 * i + 2], 16).unwrap();
    }
    for line in lines.iter_mut().skip(1) {
        let body = &line[..line.len() - (9 + 64 + 2)];
        let mut h = blake3::Hasher::new();
        h.update(&prev);
        h.update(body.as_bytes());
        prev = *h.finalize().as_bytes();
        *line = format!("{body},\"hash\":\"{}\"}}", h.finalize().to_hex());
    }
    std::fs::write(&seg, lines.join("\n") + "\n").unwrap();
    std::fs::remove_dir_all(&cp_dir).unwrap();
    let (code, out, err) = verify(dir, &[]);
    assert_eq!(code, 0, "the recomputed chain links: {out}{err}");
    // ...but not up to the head the saved checkpoint holds.
    let (code, out, err) = verify(dir, &with_key);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("saved.note") && err.contains("rewritten"),
        "{err}"
    );
}

#[test]
fn auth_refusals_and_denials_as_events() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = start(dir);
    let body = batch_body("auth", 1);
    let resp = server.request("POST", "/v1/audit/events", &[], &body);
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert!(resp.header("www-authenticate").is_some());
    let plain = issue(dir, "reader", "subzero", &["read"]);
    let resp = server.request(
        "GET",
        "/v1/audit/events",
        &[("Authorization", &bearer(&plain))],
        "",
    );
    assert_eq!(resp.status, 403, "{}", resp.body);
    assert!(resp.body.contains("insufficient_scope"), "{}", resp.body);
    let auditor = issue(dir, "auditor", "subzero", &["audit"]);
    let with = [("Authorization", bearer(&auditor))];
    let with: Vec<(&str, &str)> = with.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = server.request("POST", "/v1/audit/events", &with, &body);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["first_seq"], resp.json()["last_seq"]);
    let missing = r#"{"events":[{"actor":"a","action":"b","resource":"c","outcome":"d"}]}"#;
    let resp = server.request("POST", "/v1/audit/events", &with, missing);
    assert_eq!(resp.status, 400);
    assert!(
        resp.error_description().contains("events[0].source"),
        "{}",
        resp.body
    );
    let resp = server.request("POST", "/v1/audit/events", &with, &batch_body("big", 51));
    assert_eq!(resp.status, 413, "{}", resp.body);
    assert!(
        resp.error_description().contains("at most 50"),
        "{}",
        resp.body
    );
    let resp = server.request("GET", "/v1/audit/events?after=x", &with, "");
    assert_eq!(resp.status, 400, "{}", resp.body);

    // A denial on the hot path: buffered by its shard, shipped within a second or two.
    let resp = server.request(
        "GET",
        "/v1/authenticate",
        &[("Authorization", "Bearer not.a.token")],
        "",
    );
    assert_eq!(resp.status, 401);
    poll(
        "the denial as an audit event",
        Duration::from_secs(10),
        || {
            read_all(&server).into_iter().find(|r| {
                r["action"] == "deny"
                    && r["resource"] == "GET /v1/authenticate"
                    && r["outcome"] == "401"
                    && r["source"] == "127.0.0.1"
            })
        },
    );
    // A decision of the control plane, recorded by it in its own commit.
    let resp = server.request(
        "POST",
        "/v1/keys/rotate",
        &[("Authorization", &admin())],
        "",
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let kid = resp.json()["kid"].as_str().unwrap().to_owned();
    poll(
        "the key rotation as an audit event",
        Duration::from_secs(10),
        || {
            read_all(&server).into_iter().find(|r| {
                r["action"] == "keys.rotate" && r["actor"] == "admin" && r["resource"] == kid
            })
        },
    );
    let text = server.wait_metrics("audit counters", |t| {
        common::metric_sum(t, "subzero_audit_events_total") >= 2
    });
    assert!(text.contains("subzero_audit_fsyncs_total"), "{text}");
    assert!(text.contains("subzero_audit_dropped_total"), "{text}");
}
