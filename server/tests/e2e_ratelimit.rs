//! `POST /v1/ratelimit/check` end to end on two shards: remaining counts down, the 429 carries
//! `Retry-After` and the RateLimit headers, the key is allowed again after the reset, a shadow
//! rule never denies but counts in `/metrics`, an unmatched key is allowed with `rule: null`,
//! bad bodies and callers are refused, and one key checked from many connections spread over
//! both shards is never allowed more than its burst in total. Also the per-source route limit:
//! its 429s carry the same headers and the shards together allow the configured burst.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{bearer, issue, metric_sum, poll, Conn, Server};

const ADMIN: &str = "admin-token-for-ratelimit-tests";

/// Rules slow enough that nothing refills while a test runs, except where it waits.
const RULES: &str = "\
[admin]\ntoken_file = \"admin.token\"\n\
[[ratelimit.rules]]\nkey_prefix = \"login:\"\nrate_per_s = 1.0\nburst = 5\nshadow = false\n\
[[ratelimit.rules]]\nkey_prefix = \"shadow:\"\nrate_per_s = 0.01\nburst = 2\nshadow = true\n\
[[ratelimit.rules]]\nkey_prefix = \"global:\"\nrate_per_s = 0.01\nburst = 10\n";

fn start(dir: &Path, config: &str) -> Server {
    std::fs::write(dir.join("admin.token"), ADMIN).unwrap();
    let path = dir.join("subzero.toml");
    std::fs::write(&path, config).unwrap();
    Server::start(dir, &["--shards", "2", "--config", path.to_str().unwrap()])
}

fn check_on(conn: &mut Conn, token: &str, body: &str) -> common::Response {
    let auth = bearer(token);
    conn.send(
        "POST",
        "/v1/ratelimit/check",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    conn.read_response()
}

fn check(server: &Server, key: &str) -> common::Response {
    let body = serde_json::json!({ "key": key }).to_string();
    check_on(&mut server.connect(), ADMIN, &body)
}

#[test]
fn counts_down_refuses_with_headers_and_allows_again_after_the_reset() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RULES);
    for want_remaining in (0..5).rev() {
        let resp = check(&server, "login:alice");
        assert_eq!(resp.status, 200, "{}", resp.body);
        let body = resp.json();
        assert_eq!(body["allowed"], true);
        assert_eq!(body["remaining"], want_remaining, "{body}");
        assert_eq!(body["retry_after_s"], 0);
        assert_eq!(body["rule"], "login:");
        assert_eq!(body["shadow"], false);
        assert_eq!(
            resp.header("ratelimit-policy"),
            Some("\"login:\";q=5;w=5"),
            "{resp:?}"
        );
    }
    let refused = check(&server, "login:alice");
    assert_eq!(refused.status, 429, "{}", refused.body);
    let body = refused.json();
    assert_eq!(body["allowed"], false);
    assert_eq!(body["remaining"], 0);
    assert_eq!(
        body["retry_after_s"], 1,
        "one unit back within a second at 1/s"
    );
    assert!(
        body["reset_after_s"]
            .as_u64()
            .is_some_and(|s| (4..=5).contains(&s)),
        "{body}"
    );
    assert_eq!(body["rule"], "login:");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"login:\";q=5;w=5")
    );
    assert_eq!(refused.header("ratelimit"), Some("\"login:\";r=0;t=1"));
    assert_eq!(
        check(&server, "login:bob").status,
        200,
        "keys are independent"
    );

    // After the Retry-After the key is allowed again.
    poll("login:alice allowed again", Duration::from_secs(5), || {
        (check(&server, "login:alice").status == 200).then_some(())
    });
    let counted = |t: &str, result: &str| {
        let labels = format!("rule=\"login:\",result=\"{result}\"");
        metric_sum_matching(t, "subzero_ratelimit_checks_total", &labels)
    };
    // 5 + bob + the one after the reset allowed (more if a poll landed after it), 1+ denied.
    server.wait_metrics("the checks of login: counted", |t| {
        counted(t, "allowed") >= 7 && counted(t, "denied") >= 1
    });
}

/// Sum of the samples of `name` whose labels contain `labels`.
fn metric_sum_matching(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn shadow_rules_never_deny_and_unmatched_keys_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RULES);
    for i in 0..5 {
        let resp = check(&server, "shadow:carol");
        assert_eq!(resp.status, 200, "{}", resp.body);
        let body = resp.json();
        assert_eq!(body["allowed"], true);
        assert_eq!(body["shadow"], true);
        assert_eq!(body["shadow_denied"], i >= 2, "{body}");
        assert_eq!(body["rule"], "shadow:");
    }
    let text = server.wait_metrics("three shadow denials", |t| {
        metric_sum_matching(
            t,
            "subzero_ratelimit_shadow_denied_total",
            "rule=\"shadow:\"",
        ) == 3
    });
    assert_eq!(
        metric_sum_matching(&text, "subzero_ratelimit_checks_total", "result=\"denied\""),
        0
    );

    for _ in 0..3 {
        let resp = check(&server, "nobody:knows");
        assert_eq!(resp.status, 200, "{}", resp.body);
        let body = resp.json();
        assert_eq!(body["allowed"], true);
        assert_eq!(body["rule"], serde_json::Value::Null);
        assert!(resp.header("ratelimit").is_none(), "no policy to advertise");
    }
    server.wait_metrics("unmatched checks", |t| {
        metric_sum(t, "subzero_ratelimit_unmatched_total") == 3
    });
}

#[test]
fn bad_bodies_and_callers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RULES);
    let long_key = serde_json::json!({ "key": "x".repeat(257) }).to_string();
    for body in [
        "",
        "{",
        "{\"key\":\"\"}",
        "{\"cost\":1}",
        "{\"key\":\"login:a\",\"cost\":0}",
        "{\"key\":\"login:a\",\"cost\":-1}",
        "{\"key\":\"login:a\",\"extra\":true}",
        "{\"key\":\"login:a\",\"cost\":6}",
        &long_key,
    ] {
        let resp = check_on(&mut server.connect(), ADMIN, body);
        assert_eq!(resp.status, 400, "{body:?}: {}", resp.body);
        assert_eq!(resp.json()["error"], "invalid_request", "{body:?}");
    }
    let over = check_on(
        &mut server.connect(),
        ADMIN,
        "{\"key\":\"login:a\",\"cost\":6}",
    );
    assert!(
        over.error_description().contains("burst of 5"),
        "{}",
        over.body
    );

    let body = "{\"key\":\"login:dave\"}";
    let mut conn = server.connect();
    conn.send("POST", "/v1/ratelimit/check", &[], body);
    let anonymous = conn.read_response();
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").is_some());
    let unscoped = issue(dir.path(), "svc", "subzero", &["read"]);
    let resp = check_on(&mut server.connect(), &unscoped, body);
    assert_eq!(resp.status, 403, "{}", resp.body);
    assert_eq!(resp.json()["error"], "insufficient_scope");
    let scoped = issue(dir.path(), "svc", "subzero", &["ratelimit"]);
    let resp = check_on(&mut server.connect(), &scoped, body);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["remaining"], 4);
}

/// 40 connections (spread over both shards by the kernel) check the same key: exactly the
/// burst is allowed in total, because only the key's owner shard decides.
#[test]
fn one_key_from_many_connections_on_both_shards_never_gets_more_than_its_burst() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RULES);
    let body = "{\"key\":\"global:shared\"}";
    let mut conns: Vec<Conn> = (0..40).map(|_| server.connect()).collect();
    let mut statuses = Vec::new();
    for _round in 0..3 {
        for conn in &mut conns {
            statuses.push(check_on(conn, ADMIN, body).status);
        }
    }
    let n_allowed = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(
        n_allowed, 10,
        "the burst, once, for the whole server: {statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 110);
    // Both shards received checks (the connections did land on both) and checks crossed the
    // mesh. Each shard publishes its section once a second on its own, so this waits until
    // both sections show it; a shard that got no request fails the wait.
    let per_shard = |t: &str| -> Vec<u64> {
        (0..2)
            .map(|shard| {
                common::metric(
                    t,
                    &format!("subzero_http_requests_total{{shard=\"{shard}\"}}"),
                )
                .unwrap_or(0)
            })
            .collect()
    };
    server.wait_metrics("checks on both shards that crossed the mesh", |t| {
        metric_sum(t, "subzero_owned_hops_sent_total") > 0
            && metric_sum(t, "subzero_owned_hops_served_total") > 0
            && per_shard(t).iter().all(|&n| n > 0)
    });
}

/// The per-source limit on every request: `route = "authenticate"` at burst 3 for the whole
/// server; connections on both shards get 3 answers in total, then 429s with the headers.
#[test]
fn per_source_route_limits_hold_across_shards_and_carry_the_headers() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[[ratelimit.rules]]\nroute = \"authenticate\"\nrate_per_s = 0.01\nburst = 3\n";
    let server = start(dir.path(), config);
    let mut conns: Vec<Conn> = (0..20).map(|_| server.connect()).collect();
    let mut refused = None;
    let mut statuses = Vec::new();
    for conn in &mut conns {
        conn.send("GET", "/v1/authenticate", &[], "");
        let resp = conn.read_response();
        statuses.push(resp.status);
        if resp.status == 429 {
            refused = Some(resp);
        }
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 401).count(),
        3,
        "the burst over both shards: {statuses:?}"
    );
    let refused = refused.expect("some refused");
    assert_eq!(refused.json()["error"], "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"authenticate\";q=3;w=300")
    );
    assert_eq!(
        refused.header("ratelimit"),
        Some(format!("\"authenticate\";r=0;t={retry}").as_str())
    );
    // Other routes have no rule: still served.
    assert_eq!(server.request("GET", "/healthz", &[], "").status, 200);
}
