//! The fleet end to end: a real `redis-server` (and a real three-master Redis Cluster) on
//! loopback and three `subzero` processes sharing it. A token issued by one node verifies on
//! the others, a revocation on A fails the token on B and C (propagation measured over 200),
//! a relationship written on A is visible on C with `at_least_revision`, a vault entry stored
//! on B is read by its owner on C, Redis stopped under traffic leaves authentication working
//! and writes 503 until it is back, and a node that missed 1,000 changes catches up. A global
//! rate limit holds across three nodes within the lease overshoot (on one Redis and on a
//! Cluster), fails open or closed as configured while Redis is down, and `lease_ms = 0` is
//! one Redis round trip per check.

mod common;
mod redis_support;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{bearer, issue, metric, metric_sum, poll, Conn, Server};
use redis_support::{Redis, RedisCluster};

const ADMIN: &str = "admin-token-for-fleet-tests";

const SCHEMA: &str = "
definition user {}

definition doc {
    relation viewer: user
    permission view = viewer
}
";

/// A temp dir with the shared vault key, a fresh Redis and its URL as a TOML string; `None`
/// (skip) without redis-server outside CI.
fn fleet_setup(what: &str) -> Option<(tempfile::TempDir, Redis, String)> {
    if !redis_support::available(what) {
        return None;
    }
    let root = tempfile::tempdir().unwrap();
    shared_vault_key(root.path());
    let redis = Redis::start();
    let url = format!("\"{}\"", redis.url());
    Some((root, redis, url))
}

/// Writes one node's config and starts it.
fn start_node(root: &Path, name: &str, redis: &str, extra: &str) -> Server {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("schema.zed"), SCHEMA).unwrap();
    std::fs::write(dir.join("admin.token"), ADMIN).unwrap();
    let config = dir.join("subzero.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\ntoken_file = \"admin.token\"\n\
             [permissions]\nschema_file = \"schema.zed\"\n\
             [ratelimit]\nrevocations_per_s = 0\nrevocations_per_subject_per_s = 0\n\
             [fleet]\nredis = {redis}\nnode_id = \"{name}\"\nvault_key_file = \"../fleet-vault.key\"\n{extra}"
        ),
    )
    .unwrap();
    Server::start(
        &dir,
        &["--shards", "2", "--config", config.to_str().unwrap()],
    )
}

fn shared_vault_key(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join("fleet-vault.key");
    std::fs::write(&path, rand::random::<[u8; 32]>()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn authenticate(conn: &mut Conn, token: &str) -> u16 {
    conn.send(
        "GET",
        "/v1/authenticate",
        &[("Authorization", &bearer(token))],
        "",
    );
    conn.read_response().status
}

fn revoke(conn: &mut Conn, token: &str) -> common::Response {
    let body = serde_json::json!({ "token": token }).to_string();
    conn.send("POST", "/v1/revoke", &[], &body);
    conn.read_response()
}

/// Polls `conn` until `token` is refused; the time it took.
fn until_refused(conn: &mut Conn, token: &str, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(5);
    loop {
        if authenticate(conn, token) == 401 {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the revocation did not arrive within 5 s"
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn applied_revision(server: &Server) -> u64 {
    metric(&server.metrics(), "subzero_fleet_applied_revision").unwrap_or(0)
}

/// Every node has applied the same revision, at least `min` (`/metrics` is refreshed once a
/// second, so this polls).
fn converged(nodes: &[&Server], min: u64) -> u64 {
    poll(
        "every node at the same revision",
        Duration::from_secs(10),
        || {
            let revs: Vec<u64> = nodes.iter().map(|n| applied_revision(n)).collect();
            (revs.iter().all(|&r| r == revs[0] && r >= min.max(1))).then_some(revs[0])
        },
    )
}

/// Revocations: issued on A, cached on B and C, revoked on A, refused on B and C; prints the
/// propagation time from A's acknowledgement to the refusal on both.
fn revocations_propagate(a: &Server, b: &Server, c: &Server, n_revocations: usize) {
    let tokens: Vec<String> = (0..n_revocations)
        .map(|i| issue(&a.data_dir, &format!("user-{i}"), "subzero", &[]))
        .collect();
    let (mut on_a, mut on_b, mut on_c) = (a.connect(), b.connect(), c.connect());
    let mut took = Vec::with_capacity(tokens.len());
    for token in &tokens {
        assert_eq!(authenticate(&mut on_b, token), 200);
        assert_eq!(authenticate(&mut on_c, token), 200);
        let resp = revoke(&mut on_a, token);
        assert_eq!(resp.status, 200, "{resp:?}");
        let acked = Instant::now();
        let b_took = until_refused(&mut on_b, token, acked);
        let c_took = until_refused(&mut on_c, token, acked);
        took.push(b_took.max(c_took));
    }
    took.sort();
    eprintln!(
        "fleet revocation propagation over {} revocations (ack on A → refused on B and C): p50 {:?}, p99 {:?}, max {:?}",
        took.len(),
        percentile(&took, 0.50),
        percentile(&took, 0.99),
        took.last().unwrap()
    );
    let unrevoked = issue(&a.data_dir, "unrevoked", "subzero", &[]);
    for conn in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(
            authenticate(conn, &unrevoked),
            200,
            "an unrevoked token still passes"
        );
    }
}

/// The core: keys, revocations (with propagation timing), relationships, vault.
fn core(root: &Path, redis: &str, n_revocations: usize) {
    shared_vault_key(root);
    let a = start_node(root, "a", redis, "");
    let b = start_node(root, "b", redis, "");
    let c = start_node(root, "c", redis, "");

    // A token signed by A's key verifies on B and C: A published its key to the fleet.
    let from_a = issue(&a.data_dir, "alice", "subzero", &[]);
    for node in [&b, &c] {
        let mut conn = node.connect();
        poll(
            "A's key on the other nodes",
            Duration::from_secs(10),
            || (authenticate(&mut conn, &from_a) == 200).then_some(()),
        );
    }
    // The JWKS is the same everywhere.
    let jwks: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|n| n.request("GET", "/.well-known/jwks.json", &[], "").body)
        .collect();
    poll("one JWKS on every node", Duration::from_secs(10), || {
        let now: Vec<String> = [&a, &b, &c]
            .iter()
            .map(|n| n.request("GET", "/.well-known/jwks.json", &[], "").body)
            .collect();
        (now[0] == now[1] && now[1] == now[2]).then_some(())
    });
    let keys: serde_json::Value = serde_json::from_str(&jwks[0]).unwrap();
    assert_eq!(
        keys["keys"].as_array().unwrap().len(),
        3,
        "one key per node: {jwks:?}"
    );
    revocations_propagate(&a, &b, &c, n_revocations);

    // A relationship written on A, read on C with at_least_revision.
    let body = serde_json::json!({"object":"doc:1","relation":"viewer","subject":"user:alice"});
    let resp = a.request(
        "POST",
        "/v1/relationships",
        &[("Authorization", &bearer(ADMIN))],
        &body.to_string(),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let revision = resp.json()["revision"].as_u64().unwrap();
    let check = serde_json::json!({"subject":"user:alice","permission":"view","object":"doc:1","at_least_revision": revision}).to_string();
    let resp = poll("the relationship on C", Duration::from_secs(5), || {
        let resp = c.request(
            "POST",
            "/v1/permissions/check",
            &[("Authorization", &bearer(ADMIN))],
            &check,
        );
        (resp.status != 409).then_some(resp)
    });
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["allowed"], true, "{resp:?}");
    assert!(resp.json()["revision"].as_u64().unwrap() >= revision);

    // A vault entry stored on B is read by its owner on C, and by nobody else.
    let owner = issue(&a.data_dir, "vault-owner", "subzero", &[]);
    let other = issue(&a.data_dir, "someone-else", "subzero", &[]);
    let resp = b.request(
        "PUT",
        "/v1/vault/github",
        &[("Authorization", &bearer(&owner))],
        r#"{"token":"gho_fleet_secret"}"#,
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let got = poll("the vault entry on C", Duration::from_secs(5), || {
        let resp = c.request(
            "GET",
            "/v1/vault/github",
            &[("Authorization", &bearer(&owner))],
            "",
        );
        (resp.status == 200).then_some(resp)
    });
    assert_eq!(got.json()["token"], "gho_fleet_secret");
    let resp = c.request(
        "GET",
        "/v1/vault/github",
        &[("Authorization", &bearer(&other))],
        "",
    );
    assert_eq!(resp.status, 404);

    // Keys of three nodes, the revocations, one relationship, one vault entry.
    converged(&[&a, &b, &c], n_revocations as u64 + 5);
}

#[test]
fn three_nodes_share_keys_revocations_relationships_and_vault_through_redis() {
    if !redis_support::available("fleet e2e") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    core(root.path(), &format!("\"{}\"", redis.url()), 200);
}

#[test]
fn the_same_holds_on_a_three_master_redis_cluster() {
    if !redis_support::available("fleet e2e") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(3);
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    core(root.path(), &format!("[{}]", seeds.join(", ")), 20);
}

#[test]
fn redis_down_keeps_authentication_refuses_writes_then_catches_up() {
    let Some((root, mut redis, url)) = fleet_setup("fleet e2e") else {
        return;
    };
    let a = start_node(root.path(), "a", &url, "");
    let b = start_node(root.path(), "b", &url, "");
    let token = issue(&a.data_dir, "carol", "subzero", &[]);
    let victim = issue(&a.data_dir, "mallory", "subzero", &[]);
    let mut on_b = b.connect();
    poll("A's key on B", Duration::from_secs(10), || {
        (authenticate(&mut on_b, &token) == 200).then_some(())
    });
    redis.stop();
    // Under traffic for 5 s: authentication answers from local state, error-free; a write
    // that needs the fleet says why it cannot be done.
    let (mut on_a, mut on_b) = (a.connect(), b.connect());
    let until = Instant::now() + Duration::from_secs(5);
    let mut n_auth = 0;
    let mut n_refused_writes = 0;
    while Instant::now() < until {
        assert_eq!(authenticate(&mut on_a, &token), 200);
        assert_eq!(authenticate(&mut on_b, &token), 200);
        n_auth += 2;
        if n_auth % 200 == 0 {
            let resp = revoke(&mut on_a, &victim);
            assert_eq!(resp.status, 503, "{resp:?}");
            assert!(resp.error_description().contains("Redis"), "{resp:?}");
            n_refused_writes += 1;
        }
    }
    assert!(n_refused_writes > 0);
    a.wait_metrics("subzero_fleet_connected 0", |t| {
        metric(t, "subzero_fleet_connected") == Some(0)
    });
    // Back: every node reconnects; the refused revocation was never applied, a new one is.
    redis.restart();
    for node in [&a, &b] {
        node.wait_metrics("subzero_fleet_connected 1", |t| {
            metric(t, "subzero_fleet_connected") == Some(1)
        });
    }
    assert_eq!(authenticate(&mut b.connect(), &victim), 200);
    let resp = poll(
        "a revocation after Redis is back",
        Duration::from_secs(5),
        || {
            let resp = revoke(&mut a.connect(), &victim);
            (resp.status == 200).then_some(resp)
        },
    );
    assert_eq!(resp.json()["revoked"], true);
    let mut on_b = b.connect();
    until_refused(&mut on_b, &victim, Instant::now());
    converged(&[&a, &b], 3);
}

/// C stops, A makes 1,000 changes (999 relationships and one revocation), C restarts and
/// catches up: from the feed when A's `snapshot_every` is above 1,000, from A's snapshot (the
/// feed trimmed behind it, past C's position) when it is 100.
fn missed_changes(snapshot_every: u64) {
    let Some((root, _redis, url)) = fleet_setup("fleet e2e") else {
        return;
    };
    let a = start_node(
        root.path(),
        "a",
        &url,
        &format!("snapshot_every = {snapshot_every}\n"),
    );
    let c = start_node(root.path(), "c", &url, "");
    let first = issue(&a.data_dir, "first", "subzero", &[]);
    converged(&[&a, &c], 2);
    assert!(c.terminate(), "C stops cleanly");
    let mut conn = a.connect();
    for i in 0..999 {
        let body = serde_json::json!({"object": format!("doc:{i}"),"relation":"viewer","subject":"user:bob"});
        conn.send(
            "POST",
            "/v1/relationships",
            &[("Authorization", &bearer(ADMIN))],
            &body.to_string(),
        );
        assert_eq!(conn.read_response().status, 200);
    }
    assert_eq!(revoke(&mut conn, &first).status, 200);
    let trimmed = snapshot_every < 1000;
    if trimmed {
        a.wait_metrics("a snapshot", |t| {
            metric(t, "subzero_fleet_snapshots_published_total").unwrap_or(0) >= 1
        });
    }
    let c = start_node(root.path(), "c", &url, "");
    converged(&[&a, &c], 1002);
    let loaded = metric(&c.metrics(), "subzero_fleet_snapshots_loaded_total").unwrap_or(0);
    if trimmed {
        assert!(
            loaded >= 1,
            "C loaded the snapshot (the feed was trimmed past it)"
        );
    } else {
        assert_eq!(loaded, 0, "C caught up from the feed alone");
    }
    assert_eq!(authenticate(&mut c.connect(), &first), 401);
    for object in ["doc:0", "doc:500", "doc:998"] {
        let check = serde_json::json!({"subject":"user:bob","permission":"view","object": object})
            .to_string();
        let resp = c.request(
            "POST",
            "/v1/permissions/check",
            &[("Authorization", &bearer(ADMIN))],
            &check,
        );
        assert_eq!(resp.json()["allowed"], true, "{object}: {resp:?}");
    }
}

#[test]
fn a_node_that_missed_a_thousand_changes_catches_up_from_the_feed() {
    missed_changes(10_000);
}

#[test]
fn a_node_that_missed_a_thousand_changes_catches_up_from_a_snapshot_past_a_trimmed_feed() {
    missed_changes(100);
}

/// The global rate-limit rule of the lease tests: 20 units/s, a burst of 10.
const LOGIN_RULE: &str =
    "[[ratelimit.rules]]\nkey_prefix = \"login:\"\nrate_per_s = 20.0\nburst = 10\n";
const LOGIN_RATE: f64 = 20.0;
const LOGIN_BURST: u64 = 10;
/// The default `[fleet] lease_ms`.
const LEASE_MS: u64 = 50;

/// One check of `key` on `conn`: `(status, allowed)`.
fn check_key(conn: &mut Conn, key: &str) -> (u16, bool) {
    let body = serde_json::json!({ "key": key }).to_string();
    conn.send(
        "POST",
        "/v1/ratelimit/check",
        &[("Authorization", &bearer(ADMIN))],
        &body,
    );
    let resp = conn.read_response();
    let allowed = resp.json()["allowed"] == true;
    assert_eq!(
        resp.status == 200,
        allowed,
        "status and verdict agree: {resp:?}"
    );
    if resp.status == 429 {
        assert!(resp.header("retry-after").is_some(), "{resp:?}");
        assert!(resp.header("ratelimit-policy").is_some(), "{resp:?}");
    }
    (resp.status, allowed)
}

fn unavailable(server: &Server) -> u64 {
    metric_sum(
        &server.metrics(),
        "subzero_fleet_ratelimit_unavailable_total",
    )
}

/// Two clients per node check `key` back to back until `until`; per client (two per node, in
/// node order): `(allowed, denied)`.
fn hammer(nodes: &[&Server], key: &str, until: Instant) -> Vec<(u64, u64)> {
    std::thread::scope(|scope| {
        let clients: Vec<_> = nodes
            .iter()
            .flat_map(|node| [node, node])
            .map(|node| {
                let mut conn = node.connect();
                scope.spawn(move || {
                    let (mut allowed, mut denied) = (0u64, 0u64);
                    while Instant::now() < until {
                        match check_key(&mut conn, key) {
                            (_, true) => allowed += 1,
                            (_, false) => denied += 1,
                        }
                    }
                    (allowed, denied)
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    })
}

/// Three nodes hammer one key of a global rule for 3 s: the fleet admits at least the burst
/// and never more than `burst + rate · (elapsed + lease_ms)` (+1 for rounding). Then Redis
/// stops: a fail-open node allows and counts it, a fail-closed node answers 429; Redis back,
/// grants resume.
#[test]
fn a_global_limit_holds_across_three_nodes_within_the_lease_overshoot_and_fails_as_configured() {
    let Some((root, mut redis, url)) = fleet_setup("fleet global rate limits") else {
        return;
    };
    let a = start_node(root.path(), "a", &url, LOGIN_RULE);
    let b = start_node(root.path(), "b", &url, LOGIN_RULE);
    let closed = format!("fail_mode = \"closed\"\n{LOGIN_RULE}");
    let c = start_node(root.path(), "c", &url, &closed);
    let nodes = [&a, &b, &c];

    let started = Instant::now();
    let until = started + Duration::from_secs(3);
    let per_client = hammer(&nodes, "login:alice", until);
    let allowed: u64 = per_client.iter().map(|c| c.0).sum();
    let denied: u64 = per_client.iter().map(|c| c.1).sum();
    let elapsed_s = started.elapsed().as_secs_f64();
    let bound = LOGIN_BURST as f64 + LOGIN_RATE * (elapsed_s + LEASE_MS as f64 / 1000.0) + 1.0;
    eprintln!(
        "global limit over {elapsed_s:.2} s on three nodes: {allowed} allowed, {denied} denied, bound {bound:.1}"
    );
    assert!(
        allowed as f64 <= bound,
        "the fleet admitted {allowed} > {bound:.1}"
    );
    assert!(allowed >= LOGIN_BURST, "the fleet admits: {allowed}");
    assert!(denied > 0, "the clients went over the limit");
    for (node_idx, node) in nodes.iter().enumerate() {
        // Once the node's metrics count every check it answered, none went by the fail mode.
        let n_checks: u64 = per_client[2 * node_idx..2 * node_idx + 2]
            .iter()
            .map(|(a, d)| a + d)
            .sum();
        node.wait_metrics("every check counted", |t| {
            metric_sum(t, "subzero_ratelimit_checks_total") == n_checks
        });
        let late = metric_sum(&node.metrics(), "subzero_fleet_lease_late_total");
        assert_eq!(
            unavailable(node),
            0,
            "Redis was up the whole time ({late} grants late)"
        );
    }
    let asked = metric_sum(&a.metrics(), "subzero_fleet_lease_requests_total");
    assert!(asked > 0, "A asked the lease thread");

    redis_down_then_back(&mut redis, &a, &b, &c);
}

/// Redis stops: the fail-open node `a` allows and counts it, the fail-closed node `c` answers
/// 429 with `Retry-After: 1`; Redis back: grants resume and `b` enforces the limit again.
fn redis_down_then_back(redis: &mut Redis, a: &Server, b: &Server, c: &Server) {
    redis.stop();
    let mut on_a = a.connect();
    for _ in 0..(3 * LOGIN_BURST) {
        assert_eq!(check_key(&mut on_a, "login:redis-down"), (200, true));
    }
    a.wait_metrics("fail-open checks counted", |t| {
        metric_sum(t, "subzero_fleet_ratelimit_unavailable_total") >= 3 * LOGIN_BURST
    });
    assert!(a
        .metrics()
        .contains("subzero_fleet_ratelimit_unavailable_total{shard=\"0\",mode=\"open\"}"));
    let resp = c.request(
        "POST",
        "/v1/ratelimit/check",
        &[("Authorization", &bearer(ADMIN))],
        r#"{"key":"login:redis-down"}"#,
    );
    assert_eq!(resp.status, 429, "{resp:?}");
    assert_eq!(resp.header("retry-after"), Some("1"), "{resp:?}");
    c.wait_metrics("fail-closed checks counted", |t| {
        metric_sum(t, "subzero_fleet_ratelimit_unavailable_total") >= 1
    });
    // A key no rule matches is answered as always.
    let resp = c.request(
        "POST",
        "/v1/ratelimit/check",
        &[("Authorization", &bearer(ADMIN))],
        r#"{"key":"other:x"}"#,
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["rule"], serde_json::Value::Null);

    // Redis back: the closed node admits again and grants resume.
    redis.restart();
    let units_before = metric_sum(&c.metrics(), "subzero_fleet_lease_units_total");
    let mut on_c = c.connect();
    poll(
        "the closed node admits again",
        Duration::from_secs(10),
        || (check_key(&mut on_c, "login:redis-back") == (200, true)).then_some(()),
    );
    c.wait_metrics("units granted after Redis came back", |t| {
        metric_sum(t, "subzero_fleet_lease_units_total") > units_before
    });
    // And the limit holds again: a fresh key's burst runs out on B too (B's first checks may
    // still be answered open while its connection comes back).
    let mut on_b = b.connect();
    poll(
        "B enforces the limit again",
        Duration::from_secs(10),
        || {
            (0..3 * LOGIN_BURST)
                .any(|_| check_key(&mut on_b, "login:after") == (429, false))
                .then_some(())
        },
    );
}

/// `lease_ms = 0`: no leases, each check is one Redis round trip for exactly its cost, so a
/// fresh key admits its burst (plus what refilled meanwhile) and every check was one ask.
#[test]
fn without_leases_every_check_is_one_redis_round_trip() {
    let Some((root, _redis, url)) = fleet_setup("fleet global rate limits") else {
        return;
    };
    let a = start_node(
        root.path(),
        "a",
        &url,
        &format!("lease_ms = 0\n{LOGIN_RULE}"),
    );
    let n_checks = 2 * LOGIN_BURST;
    let mut conn = a.connect();
    let started = Instant::now();
    let n_allowed = (0..n_checks)
        .filter(|_| check_key(&mut conn, "login:rtt").1)
        .count() as u64;
    let refilled = (LOGIN_RATE * started.elapsed().as_secs_f64()).ceil() as u64;
    assert!(
        (LOGIN_BURST..=LOGIN_BURST + refilled).contains(&n_allowed),
        "{n_allowed} of {n_checks} allowed"
    );
    a.wait_metrics("one ask per check", |t| {
        metric_sum(t, "subzero_fleet_lease_requests_total") == n_checks
            && metric_sum(t, "subzero_fleet_leased_keys") == 0
    });
}

/// The same bound on a three-master Redis Cluster (where the lease thread makes one call per
/// ask instead of a pipeline): three nodes, two clients each, 2 s on one key.
#[test]
fn a_global_limit_holds_on_a_redis_cluster() {
    if !redis_support::available("fleet global rate limits, cluster") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    shared_vault_key(root.path());
    let cluster = RedisCluster::start(3);
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let redis = format!("[{}]", seeds.join(", "));
    let nodes: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|name| start_node(root.path(), name, &redis, LOGIN_RULE))
        .collect();
    let nodes: Vec<&Server> = nodes.iter().collect();
    let started = Instant::now();
    let per_client = hammer(&nodes, "login:cluster", started + Duration::from_secs(2));
    let elapsed_s = started.elapsed().as_secs_f64();
    let allowed: u64 = per_client.iter().map(|c| c.0).sum();
    let bound = LOGIN_BURST as f64 + LOGIN_RATE * (elapsed_s + LEASE_MS as f64 / 1000.0) + 1.0;
    assert!(
        allowed as f64 <= bound,
        "the fleet admitted {allowed} > {bound:.1}"
    );
    assert!(allowed >= LOGIN_BURST, "the fleet admits: {allowed}");
    let units: u64 = nodes
        .iter()
        .map(|n| metric_sum(&n.metrics(), "subzero_fleet_lease_units_total"))
        .sum();
    assert!(units > 0, "units came from the cluster");
}
