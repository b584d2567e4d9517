//! Permission checks end to end, on two shards: relationships written through the admin
//! endpoints are durable, a check follows nested groups and parent folders, a delete is seen by
//! every shard at once (decision caches included, and with `at_least_revision`), and the
//! relationships survive `kill -9`.

mod common;

use common::{bearer, issue, Conn, Server};

const ADMIN: &str = "admin-token-for-permission-tests";

const SCHEMA: &str = "
definition user {}

definition group {
    relation member: user | group#member
}

definition folder {
    relation parent: folder
    relation viewer: user | group#member
    permission view = viewer + parent->view
}

definition doc {
    relation parent: folder
    relation viewer: user | user:* | group#member
    relation banned: user
    permission view = viewer + parent->view - banned
}
";

fn start(dir: &std::path::Path) -> Server {
    std::fs::write(dir.join("schema.zed"), SCHEMA).unwrap();
    std::fs::write(dir.join("admin.token"), ADMIN).unwrap();
    let config = dir.join("subzero.toml");
    std::fs::write(
        &config,
        "[admin]\ntoken_file = \"admin.token\"\n[permissions]\nschema_file = \"schema.zed\"\n",
    )
    .unwrap();
    Server::start(
        dir,
        &["--shards", "2", "--config", config.to_str().unwrap()],
    )
}

fn admin() -> String {
    bearer(ADMIN)
}

/// Writes (or deletes) tuples; returns the revision that has them.
fn write(server: &Server, method: &str, tuples: &[&str]) -> u64 {
    let tuples: Vec<serde_json::Value> = tuples
        .iter()
        .map(|t| {
            let (object_rel, subject) = t.split_once('@').unwrap();
            let (object, relation) = object_rel.split_once('#').unwrap();
            serde_json::json!({ "object": object, "relation": relation, "subject": subject })
        })
        .collect();
    let body = serde_json::json!({ "tuples": tuples }).to_string();
    let resp = server.request(
        method,
        "/v1/relationships",
        &[("Authorization", &admin())],
        &body,
    );
    assert_eq!(resp.status, 200, "{method} {tuples:?}: {}", resp.body);
    resp.json()["revision"].as_u64().expect("revision")
}

/// One check on `conn`: `(allowed, decision_path)`.
fn check(
    conn: &mut Conn,
    token: &str,
    subject: &str,
    object: &str,
    at_least: Option<u64>,
) -> (bool, Vec<String>) {
    let mut body =
        serde_json::json!({ "subject": subject, "permission": "view", "object": object });
    if let Some(revision) = at_least {
        body["at_least_revision"] = revision.into();
    }
    conn.send(
        "POST",
        "/v1/permissions/check",
        &[("Authorization", &bearer(token))],
        &body.to_string(),
    );
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{}", resp.body);
    let json = resp.json();
    let path = json["decision_path"]
        .as_array()
        .expect("decision_path")
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    (json["allowed"].as_bool().expect("allowed"), path)
}

#[test]
fn writes_checks_deletes_and_restarts_agree_on_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = issue(dir.path(), "svc", "subzero", &[]);
    let r1 = write(
        &server,
        "POST",
        &[
            "group:eng#member@user:alice",
            "group:staff#member@group:eng#member",
            "doc:1#viewer@group:staff#member",
            "folder:f#viewer@user:bob",
            "doc:2#parent@folder:f",
            "doc:3#viewer@user:*",
            "doc:3#banned@user:mallory",
        ],
    );
    assert!(r1 > 0);
    // Sixteen connections: both shards serve checks (SO_REUSEPORT spreads them).
    let mut conns: Vec<Conn> = (0..16).map(|_| server.connect()).collect();
    for conn in &mut conns {
        let (allowed, path) = check(conn, &token, "user:alice", "doc:1", Some(r1));
        assert!(allowed, "nested groups");
        assert_eq!(
            path.last().map(String::as_str),
            Some("group:eng#member@user:alice"),
            "{path:?}"
        );
        assert!(
            check(conn, &token, "user:bob", "doc:2", None).0,
            "parent folder"
        );
        assert!(!check(conn, &token, "user:carol", "doc:1", None).0);
        assert!(
            check(conn, &token, "user:carol", "doc:3", None).0,
            "wildcard"
        );
        assert!(
            !check(conn, &token, "user:mallory", "doc:3", None).0,
            "exclusion"
        );
    }
    let text = server.wait_metrics("both shards served checks", |t| {
        t.contains("shard=\"0\",op=\"permission_") && t.contains("shard=\"1\",op=\"permission_")
    });
    assert!(
        text.contains("op=\"permission_cache_hit\""),
        "repeat checks hit the cache"
    );
    // A delete is seen at once on every connection: no shard answers from an older snapshot
    // or from a decision cached before it.
    let r2 = write(&server, "DELETE", &["group:eng#member@user:alice"]);
    assert!(r2 > r1);
    for conn in &mut conns {
        assert!(
            !check(conn, &token, "user:alice", "doc:1", None).0,
            "stale allow"
        );
        assert!(!check(conn, &token, "user:alice", "doc:1", Some(r2)).0);
        assert!(check(conn, &token, "user:bob", "doc:2", Some(r2)).0);
    }
    // A revision this server has not reached is refused, not answered from older state.
    let ahead = serde_json::json!({
        "subject": "user:bob", "permission": "view", "object": "doc:2",
        "at_least_revision": r2 + 1000,
    });
    let resp = server.request(
        "POST",
        "/v1/permissions/check",
        &[("Authorization", &bearer(&token))],
        &ahead.to_string(),
    );
    assert_eq!(resp.status, 409, "{}", resp.body);
    // Durable: kill -9, restart, same answers.
    drop(conns);
    server.kill9();
    let server = start(dir.path());
    let mut conn = server.connect();
    assert!(check(&mut conn, &token, "user:bob", "doc:2", Some(r2)).0);
    assert!(!check(&mut conn, &token, "user:alice", "doc:1", Some(r2)).0);
    let listed = server.request(
        "GET",
        "/v1/relationships?object=doc:3",
        &[("Authorization", &admin())],
        "",
    );
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.json()["tuples"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_writes_and_callers_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = issue(dir.path(), "svc", "subzero", &[]);
    let body = r#"{"object":"doc:1","relation":"editor","subject":"user:alice"}"#;
    let resp = server.request(
        "POST",
        "/v1/relationships",
        &[("Authorization", &admin())],
        body,
    );
    assert_eq!(resp.status, 400);
    assert!(resp.error_description().contains("editor"), "{}", resp.body);
    let body = r#"{"object":"doc:1","relation":"viewer","subject":"folder:f"}"#;
    let resp = server.request(
        "POST",
        "/v1/relationships",
        &[("Authorization", &admin())],
        body,
    );
    assert_eq!(
        resp.status, 400,
        "a subject type the relation does not allow"
    );
    let body = r#"{"object":"doc:1","relation":"viewer","subject":"user:alice"}"#;
    let resp = server.request(
        "POST",
        "/v1/relationships",
        &[("Authorization", &bearer(&token))],
        body,
    );
    assert_eq!(resp.status, 401, "writes need the admin token");
    let check = r#"{"subject":"user:alice","permission":"view","object":"doc:1"}"#;
    let resp = server.request("POST", "/v1/permissions/check", &[], check);
    assert_eq!(resp.status, 401, "checks need a caller identity");
    let resp = server.request(
        "POST",
        "/v1/permissions/check",
        &[("Authorization", &bearer(&token))],
        r#"{"subject":"user:alice","permission":"edit","object":"doc:1"}"#,
    );
    assert_eq!(resp.status, 400);
    assert!(resp.error_description().contains("edit"), "{}", resp.body);
}

#[test]
fn without_a_schema_the_permission_endpoints_say_they_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "1"]);
    let token = issue(dir.path(), "svc", "subzero", &[]);
    let resp = server.request(
        "POST",
        "/v1/permissions/check",
        &[("Authorization", &bearer(&token))],
        r#"{"subject":"user:a","permission":"view","object":"doc:1"}"#,
    );
    assert_eq!(resp.status, 404);
    assert!(resp.error_description().contains("schema_file"));
}
