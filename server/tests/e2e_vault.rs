//! The token vault end to end, on two shards: an owner reads back what it stored from every
//! shard, another subject can neither read, overwrite nor delete it (404, never 403), entries
//! survive `kill -9`, no file under the data dir (nor the log) ever holds the plaintext,
//! versions increase, listing shows the caller's names only, expiry is enforced, and every
//! refusal says why.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{bearer, issue, poll, Conn, Server};

/// Large enough for the vault's 16 KiB value limit to be reachable, small enough to test 413.
const CONFIG: &str = "[server]\nmax_body_bytes = 32768\n";

fn start(dir: &Path) -> Server {
    let config = dir.join("subzero.toml");
    std::fs::write(&config, CONFIG).unwrap();
    Server::start(
        dir,
        &["--shards", "2", "--config", config.to_str().unwrap()],
    )
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A value nobody else writes, so finding it anywhere means it leaked.
fn secret(tag: &str) -> String {
    let nonce: u64 = rand::random();
    format!("1//0g-{tag}-refresh-{nonce:016x}")
}

fn put_body(token: &str, expires_at: Option<u64>) -> String {
    let mut body = serde_json::json!({ "token": token });
    if let Some(exp) = expires_at {
        body["expires_at"] = exp.into();
    }
    body.to_string()
}

fn send(conn: &mut Conn, method: &str, path: &str, token: &str, body: &str) -> common::Response {
    conn.send(method, path, &[("Authorization", &bearer(token))], body);
    conn.read_response()
}

/// `PUT /v1/vault/{name}`; returns the new version.
fn put(server: &Server, token: &str, name: &str, value: &str) -> u64 {
    let resp = send(
        &mut server.connect(),
        "PUT",
        &format!("/v1/vault/{name}"),
        token,
        &put_body(value, None),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let json = resp.json();
    assert_eq!(json["name"], name);
    json["version"].as_u64().expect("version")
}

/// `GET /v1/vault/{name}` on `conn`: `(status, json)`.
fn get(conn: &mut Conn, token: &str, name: &str) -> (u16, serde_json::Value) {
    let resp = send(conn, "GET", &format!("/v1/vault/{name}"), token, "");
    let json = resp.json();
    (resp.status, json)
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut n_files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if meta.is_file() {
            n_files += 1;
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(path.display().to_string());
            }
        }
    }
    assert!(
        n_files >= 3,
        "scanned only {n_files} files under {}",
        dir.display()
    );
    found
}

#[test]
fn owner_reads_others_get_404_and_entries_survive_kill9_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let alice = issue(dir.path(), "alice", "subzero", &[]);
    let mallory = issue(dir.path(), "mallory", "subzero", &[]);
    let first = secret("alice-v1");
    assert_eq!(put(&server, &alice, "google", &first), 1);

    // Sixteen connections: both shards answer (SO_REUSEPORT spreads them).
    let mut conns: Vec<Conn> = (0..16).map(|_| server.connect()).collect();
    for conn in &mut conns {
        let (status, json) = get(conn, &alice, "google");
        assert_eq!(status, 200, "{json}");
        assert_eq!(json["token"], first.as_str());
        assert_eq!(json["version"], 1);
        assert_eq!(json["expires_at"], serde_json::Value::Null);
        let (status, json) = get(conn, &mallory, "google");
        assert_eq!(status, 404, "another subject must not see it: {json}");
    }
    server.wait_metrics("both shards served vault requests", |t| {
        t.contains("shard=\"0\",op=\"vault\"") && t.contains("shard=\"1\",op=\"vault\"")
    });

    // Mallory can neither delete nor overwrite alice's entry: its put lands in its own
    // namespace.
    let conn = &mut conns[0];
    let resp = send(conn, "DELETE", "/v1/vault/google", &mallory, "");
    assert_eq!(resp.status, 404, "{}", resp.body);
    let theirs = secret("mallory");
    assert_eq!(put(&server, &mallory, "google", &theirs), 1);
    let (_, json) = get(conn, &alice, "google");
    assert_eq!(
        json["token"],
        first.as_str(),
        "overwritten by another subject"
    );
    assert_eq!(json["version"], 1);
    let (_, json) = get(conn, &mallory, "google");
    assert_eq!(json["token"], theirs.as_str());

    // An overwrite by the owner is the next version.
    let second = secret("alice-v2");
    assert_eq!(put(&server, &alice, "google", &second), 2);
    let (status, json) = get(conn, &alice, "google");
    assert_eq!((status, &json["token"]), (200, &second.as_str().into()));
    assert_eq!(json["version"], 2);

    // Durable: kill -9 right after the acknowledgements, restart, read back.
    drop(conns);
    let log = server.drain_log().join("\n");
    server.kill9();
    let server = start(dir.path());
    let mut conn = server.connect();
    let (status, json) = get(&mut conn, &alice, "google");
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["token"], second.as_str());
    assert_eq!(json["version"], 2);
    assert_eq!(put(&server, &alice, "google", &second), 3, "versions go on");
    let (_, json) = get(&mut conn, &mallory, "google");
    assert_eq!(json["token"], theirs.as_str());

    // Sealed at rest: no file under the data dir holds any of the values, nor does the log.
    let log = log + &server.drain_log().join("\n");
    for value in [&first, &second, &theirs] {
        let found = files_containing(dir.path(), value);
        assert!(found.is_empty(), "plaintext on disk in {found:?}");
        assert!(!log.contains(value.as_str()), "plaintext in the log");
    }
    let key = dir.path().join("vault.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn listing_deleting_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let alice = issue(dir.path(), "alice", "subzero", &[]);
    let bob = issue(dir.path(), "bob", "subzero", &[]);
    put(&server, &alice, "google", "a1");
    put(&server, &alice, "github.token", "a2");
    put(&server, &bob, "slack", "b1");
    let mut conn = server.connect();

    let list = |conn: &mut Conn, token: &str| {
        let resp = send(conn, "GET", "/v1/vault", token, "");
        assert_eq!(resp.status, 200, "{}", resp.body);
        resp.json()["names"].clone()
    };
    assert_eq!(
        list(&mut conn, &alice),
        serde_json::json!(["github.token", "google"])
    );
    assert_eq!(list(&mut conn, &bob), serde_json::json!(["slack"]));

    // Delete, then the entry is gone (and a second delete is a 404).
    let resp = send(&mut conn, "DELETE", "/v1/vault/google", &alice, "");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["deleted"], true);
    assert_eq!(get(&mut conn, &alice, "google").0, 404);
    let resp = send(&mut conn, "DELETE", "/v1/vault/google", &alice, "");
    assert_eq!(resp.status, 404, "{}", resp.body);
    assert_eq!(list(&mut conn, &alice), serde_json::json!(["github.token"]));

    // No token: 401 with the RFC 6750 challenge; a bad one: invalid_token.
    conn.send("GET", "/v1/vault/github.token", &[], "");
    let resp = conn.read_response();
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert_eq!(
        resp.header("www-authenticate"),
        Some("Bearer realm=\"subzero\"")
    );
    let resp = send(&mut conn, "GET", "/v1/vault", "not-a-token", "");
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert!(resp
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));

    // Refusals name the problem.
    let bad = |conn: &mut Conn, method: &str, path: &str, body: &str| {
        let resp = send(conn, method, path, &alice, body);
        (resp.status, resp.error_description())
    };
    let (status, text) = bad(&mut conn, "PUT", "/v1/vault/a%2Fb", &put_body("x", None));
    assert_eq!(status, 400);
    assert!(text.contains("may only contain"), "{text}");
    let long = "n".repeat(129);
    let (status, text) = bad(&mut conn, "GET", &format!("/v1/vault/{long}"), "");
    assert_eq!(status, 400);
    assert!(text.contains("longer than 128"), "{text}");
    let (status, text) = bad(&mut conn, "PUT", "/v1/vault/x", r#"{"expires_at":5}"#);
    assert_eq!(status, 400);
    assert!(text.contains("\"token\" is missing"), "{text}");
    let (status, text) = bad(
        &mut conn,
        "PUT",
        "/v1/vault/x",
        &put_body(&"v".repeat(16 * 1024 + 1), None),
    );
    assert_eq!(status, 400);
    assert!(text.contains("at most 16384"), "{text}");
    assert_eq!(put(&server, &alice, "max", &"v".repeat(16 * 1024)), 1);
    let (status, _) = bad(
        &mut conn,
        "PUT",
        "/v1/vault/x",
        &put_body(&"v".repeat(40_000), None),
    );
    assert_eq!(status, 413);
    let mut conn = server.connect();
    let (status, _) = bad(&mut conn, "POST", "/v1/vault/x", "");
    assert_eq!(status, 405);
    let (status, _) = bad(&mut conn, "PUT", "/v1/vault", &put_body("x", None));
    assert_eq!(status, 405);
}

#[test]
fn expiry_in_the_past_is_refused_and_a_passed_expiry_hides_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let alice = issue(dir.path(), "alice", "subzero", &[]);
    let mut conn = server.connect();
    let path = "/v1/vault/short";
    let resp = send(
        &mut conn,
        "PUT",
        path,
        &alice,
        &put_body("gone", Some(now_s() - 1)),
    );
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(
        resp.error_description().contains("not in the future"),
        "{}",
        resp.body
    );
    assert_eq!(
        get(&mut conn, &alice, "short").0,
        404,
        "a refused put stores nothing"
    );

    let expires_at = now_s() + 2;
    let resp = send(
        &mut conn,
        "PUT",
        path,
        &alice,
        &put_body("soon", Some(expires_at)),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let (status, json) = get(&mut conn, &alice, "short");
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["expires_at"], expires_at);
    poll(
        "the expired entry to read as missing",
        Duration::from_secs(6),
        || (get(&mut conn, &alice, "short").0 == 404).then_some(()),
    );
    assert!(now_s() >= expires_at, "hidden before its expiry");
    let resp = send(&mut conn, "GET", "/v1/vault", &alice, "");
    assert_eq!(resp.json()["names"], serde_json::json!([]));
}
