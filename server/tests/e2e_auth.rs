//! End to end over loopback with the real binary: issue, authenticate, every rejection reason,
//! revocation on every shard and across a crash, external ES256/RS256 issuers, pipelining.

mod common;

use common::{b64, bearer, issue, metric, metric_sum, Server};
use subzero::auth::{self, Claims, KeyRing};

fn now_s() -> u64 {
    subzero::unix_now_s()
}

fn authenticate(server: &Server, token: &str) -> common::Response {
    server.request(
        "GET",
        "/v1/authenticate",
        &[("Authorization", &bearer(token))],
        "",
    )
}

#[test]
fn issued_token_authenticates_with_identity_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "2"]);
    let token = issue(dir.path(), "alice", "subzero", &["read", "write"]);
    let resp = authenticate(&server, &token);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-auth-subject"), Some("alice"));
    assert_eq!(resp.header("x-auth-scopes"), Some("read write"));
    assert_eq!(resp.header("x-auth-issuer"), Some("subzero"));
    // The cached path answers the same.
    let again = authenticate(&server, &token);
    assert_eq!(again.header("x-auth-subject"), Some("alice"));
    // POST returns the claims.
    let body = format!("{{\"token\":\"{token}\"}}");
    let post = server.request("POST", "/v1/authenticate", &[], &body);
    assert_eq!(post.status, 200);
    assert_eq!(post.json()["claims"]["sub"], "alice");
    // No credentials: 401 with a bare challenge.
    let none = server.request("GET", "/v1/authenticate", &[], "");
    assert_eq!(none.status, 401);
    assert!(none
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    assert!(server.terminate(), "graceful shutdown exits 0");
}

/// Envoy's ext_authz in HTTP mode sends the original method and path under the prefix.
#[test]
fn ext_authz_answers_any_method_and_path_under_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "2"]);
    let token = issue(dir.path(), "alice", "subzero", &["read"]);
    let auth = bearer(&token);
    let paths = ["/v1/ext-authz/api/x?y=1", "/v1/ext-authz/", "/v1/ext-authz"];
    // HEAD is below: its answers have a content-length but no body.
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    for path in paths {
        for method in methods {
            let ok = server.request(method, path, &[("Authorization", &auth)], "");
            assert_eq!(ok.status, 200, "{method} {path}: {ok:?}");
            assert_eq!(
                ok.header("x-auth-subject"),
                Some("alice"),
                "{method} {path}"
            );
            assert_eq!(ok.header("x-auth-scopes"), Some("read"), "{method} {path}");
            let none = server.request(method, path, &[], "");
            assert_eq!(none.status, 401, "{method} {path}");
            assert!(none
                .header("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer")));
            let bad = server.request(method, path, &[("Authorization", "Bearer x.y.z")], "");
            assert_eq!(bad.status, 401, "{method} {path}");
        }
    }
    let mut conn = server.connect();
    conn.send(
        "HEAD",
        "/v1/ext-authz/api/x",
        &[("Authorization", &auth)],
        "",
    );
    let head = conn.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("x-auth-subject"), Some("alice"));
    conn.send("HEAD", "/v1/ext-authz/api/x", &[], "");
    assert_eq!(conn.read_head_response().status, 401);
    // A sibling path is not the prefix.
    let other = server.request("GET", "/v1/ext-authzx", &[("Authorization", &auth)], "");
    assert_eq!(other.status, 404);
}

#[test]
fn every_bad_token_is_refused_with_its_own_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "1"]);
    let good = issue(dir.path(), "alice", "subzero", &[]);
    let ring = KeyRing::load(dir.path(), now_s()).unwrap();
    let kid = ring.current_kid().to_owned();
    let parts: Vec<&str> = good.split('.').collect();

    // Tampered payload: same header and signature, different claims.
    let evil_claims = Claims::new_for(
        "subzero",
        "mallory",
        vec!["subzero".into()],
        &[],
        600,
        now_s(),
        subzero::auth::new_jti(),
    );
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_vec(&evil_claims).unwrap()),
        parts[2]
    );

    // Expired, signed with our real key.
    let mut old = Claims::new_for(
        "subzero",
        "alice",
        vec!["subzero".into()],
        &[],
        60,
        now_s() - 3600,
        subzero::auth::new_jti(),
    );
    old.exp = now_s() - 600;
    let expired = auth::sign(ring.signing_key(), &kid, &old);

    let wrong_aud = issue(dir.path(), "alice", "someone-else", &[]);

    let payload = b64(&serde_json::to_vec(&Claims::new_for(
        "subzero",
        "alice",
        vec!["subzero".into()],
        &[],
        600,
        now_s(),
        subzero::auth::new_jti(),
    ))
    .unwrap());
    let alg_none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));

    // HS256 keyed with our public key: the classic algorithm-confusion forgery.
    let header = b64(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#).as_bytes());
    let public = ring.verifying_keys().next().unwrap().1.to_bytes();
    let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public);
    let signing_input = format!("{header}.{payload}");
    let mac = ring::hmac::sign(&mac_key, signing_input.as_bytes());
    let hs256 = format!("{signing_input}.{}", b64(mac.as_ref()));

    // A well-formed EdDSA token under a key we never had.
    let stranger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let unknown_kid = auth::sign(
        &stranger,
        "no-such-kid",
        &Claims::new_for(
            "subzero",
            "alice",
            vec!["subzero".into()],
            &[],
            600,
            now_s(),
            subzero::auth::new_jti(),
        ),
    );

    let cases = [
        ("tampered", tampered),
        ("expired", expired),
        ("wrong audience", wrong_aud),
        ("alg none", alg_none),
        ("HS256 with public key", hs256),
        ("unknown kid", unknown_kid),
    ];
    let mut reasons = Vec::new();
    for (name, token) in &cases {
        let resp = authenticate(&server, token);
        assert_eq!(resp.status, 401, "{name}: {resp:?}");
        let challenge = resp.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert_eq!(resp.json()["error"], "invalid_token", "{name}");
        reasons.push(resp.error_description());
    }
    assert_eq!(reasons[0], "token signature is invalid");
    assert_eq!(reasons[1], "token has expired");
    assert_eq!(reasons[2], "token audience is not accepted");
    assert_eq!(reasons[3], "alg none is not accepted");
    assert_eq!(reasons[4], "HMAC algorithms are not accepted");
    assert_eq!(reasons[5], "token key id is unknown");
    let mut distinct = reasons.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        reasons.len(),
        "descriptions must differ: {reasons:?}"
    );
    // The good token still works after all that.
    assert_eq!(authenticate(&server, &good).status, 200);
}

#[test]
fn revocation_reaches_every_shard_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "2"]);
    let token = issue(dir.path(), "bob", "subzero", &[]);
    let other = issue(dir.path(), "carol", "subzero", &[]);
    // Warm both shards' caches through many connections (SO_REUSEPORT spreads them).
    for _ in 0..16 {
        assert_eq!(authenticate(&server, &token).status, 200);
    }
    let body = format!("{{\"token\":\"{token}\"}}");
    let resp = server.request(
        "POST",
        "/v1/revoke",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["revoked"], true);
    for _ in 0..32 {
        let resp = authenticate(&server, &token);
        assert_eq!(resp.status, 401);
        assert_eq!(resp.error_description(), "token has been revoked");
        assert_eq!(authenticate(&server, &other).status, 200);
    }
    // Every shard refused it (each publishes its /metrics section once a second).
    let denied = |text: &str, shard: usize| {
        metric(
            text,
            &format!("subzero_auth_denied_total{{shard=\"{shard}\"}}"),
        )
        .unwrap_or(0)
    };
    let metrics = server.wait_metrics("a denial on each of the 2 shards", |text| {
        (0..2).all(|shard| denied(text, shard) > 0)
    });
    // The runtime's own counters are exported per shard too.
    assert!(
        metrics.contains("subzero_connections_accepted_total{shard=\"0\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("subzero_http_requests_total{shard=\"1\"}"),
        "{metrics}"
    );
    // The acknowledged revocation survives a crash.
    server.kill9();
    let server = Server::start(dir.path(), &["--shards", "2"]);
    assert_eq!(authenticate(&server, &token).status, 401);
    assert_eq!(authenticate(&server, &other).status, 200);
}

#[test]
fn pipelined_burst_of_100_answers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "1"]);
    let tokens: Vec<String> = (0..4)
        .map(|i| issue(dir.path(), &format!("user{i}"), "subzero", &[]))
        .collect();
    let mut burst = Vec::new();
    for i in 0..100 {
        let token = if i % 10 == 9 {
            "garbage".to_owned()
        } else {
            tokens[i % 4].clone()
        };
        burst.extend(common::request_bytes(
            "GET",
            "/v1/authenticate",
            &[("Authorization", &bearer(&token))],
            "",
        ));
    }
    let mut conn = server.connect();
    conn.raw(&burst);
    for i in 0..100 {
        let resp = conn.read_response();
        if i % 10 == 9 {
            assert_eq!(resp.status, 401, "response {i}");
        } else {
            assert_eq!(resp.status, 200, "response {i}");
            assert_eq!(
                resp.header("x-auth-subject"),
                Some(format!("user{}", i % 4).as_str()),
                "response {i}"
            );
        }
    }
}

#[test]
fn hostile_requests_get_specific_errors_and_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "1"]);
    let token = issue(dir.path(), "alice", "subzero", &[]);
    let huge_header = "x".repeat(20_000);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"BLAH\x01 / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        (
            format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {huge_header}\r\n\r\n").into_bytes(),
            431,
        ),
        (
            b"POST /v1/authenticate HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n".to_vec(),
            413,
        ),
        (
            b"POST /v1/authenticate HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            411,
        ),
        (
            b"POST /v1/authenticate HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n{bad}".to_vec(),
            400,
        ),
        (b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 404),
        (b"DELETE /v1/token HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 405),
        (
            b"POST /v1/authenticate/batch HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\n\r\n{\"tokens\":[]}"
                .to_vec(),
            400,
        ),
    ];
    for (bytes, want) in cases {
        let mut conn = server.connect();
        conn.raw(&bytes);
        let resp = conn.read_response();
        assert_eq!(
            resp.status,
            want,
            "{}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
        );
        assert!(
            resp.json()["error"].is_string(),
            "OAuth error shape: {}",
            resp.body
        );
    }
    assert_eq!(authenticate(&server, &token).status, 200);
}

#[test]
fn batch_verifies_many_and_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "1"]);
    let mut tokens: Vec<String> = (0..50)
        .map(|i| issue_fast(dir.path(), &format!("u{i}")))
        .collect();
    tokens[7] = "not.a.token".into();
    let body = serde_json::json!({ "tokens": tokens }).to_string();
    let resp = server.request("POST", "/v1/authenticate/batch", &[], &body);
    assert_eq!(resp.status, 200, "{}", resp.body);
    let json = resp.json();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 50);
    assert_eq!(json["valid"], 49);
    assert_eq!(results[7]["valid"], false);
    assert_eq!(results[8]["claims"]["sub"], "u8");
}

#[test]
fn large_batch_is_split_across_shards_and_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "2"]);
    let mut tokens: Vec<String> = (0..600)
        .map(|i| issue_fast(dir.path(), &format!("u{i}")))
        .collect();
    for i in [0, 299, 300, 599] {
        tokens[i] = format!("{}x", tokens[i]); // corrupt the signature
    }
    let body = serde_json::json!({ "tokens": tokens }).to_string();
    let resp = server.request("POST", "/v1/authenticate/batch", &[], &body);
    assert_eq!(
        resp.status,
        200,
        "{}",
        &resp.body[..resp.body.len().min(300)]
    );
    let json = resp.json();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 600);
    assert_eq!(json["valid"], 596);
    for (i, r) in results.iter().enumerate() {
        if [0, 299, 300, 599].contains(&i) {
            assert_eq!(r["valid"], false, "token {i}");
        } else {
            assert_eq!(
                r["claims"]["sub"],
                format!("u{i}"),
                "token {i} out of order"
            );
        }
    }
    // The other shard verified a part (counted when served, published once a second).
    server.wait_metrics("a batch part served by another shard", |text| {
        metric_sum(text, "subzero_batch_parts_served_total") >= 1
    });
}

#[test]
fn identical_misses_share_one_verification() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "1"]);
    let token = issue_fast(dir.path(), "same");
    let body = serde_json::json!({ "tokens": vec![token.clone(); 64] }).to_string();
    let resp = server.request("POST", "/v1/authenticate/batch", &[], &body);
    assert_eq!(resp.json()["valid"], 64);
    // And a pipelined burst of the same uncached token on one connection.
    let other = issue_fast(dir.path(), "other");
    let mut conn = server.connect();
    let mut burst = Vec::new();
    for _ in 0..32 {
        burst.extend(common::request_bytes(
            "GET",
            "/v1/authenticate",
            &[("Authorization", &bearer(&other))],
            "",
        ));
    }
    conn.raw(&burst);
    for _ in 0..32 {
        assert_eq!(conn.read_response().status, 200);
    }
    // A section published after the 32 GETs were served also counts every verification
    // before them (the batch came first on this one shard).
    let metrics = server.wait_metrics("the 32 pipelined authentications", |text| {
        metric(text, "subzero_auth_allowed_total{shard=\"0\"}") == Some(32)
    });
    assert_eq!(
        metric(&metrics, "subzero_verifications_total{shard=\"0\"}"),
        Some(2),
        "96 requests for 2 tokens must verify twice:\n{metrics}"
    );
}

/// Signs in-process (the CLI would cost a process start per token).
fn issue_fast(data_dir: &std::path::Path, sub: &str) -> String {
    let ring = KeyRing::load(data_dir, now_s()).unwrap();
    let claims = Claims::new_for(
        "subzero",
        sub,
        vec!["subzero".into()],
        &[],
        600,
        now_s(),
        subzero::auth::new_jti(),
    );
    auth::sign(ring.signing_key(), ring.current_kid(), &claims)
}

/// Revokes `token` as its holder; the answer is a `200` with `revoked: true`.
fn revoke(server: &Server, token: &str) {
    let body = serde_json::json!({ "token": token }).to_string();
    let resp = server.request(
        "POST",
        "/v1/revoke",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["revoked"], true, "{}", resp.body);
}

#[test]
fn revoked_token_is_refused_inside_a_local_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "1"]);
    let tokens: Vec<String> = (0..3)
        .map(|i| issue_fast(dir.path(), &format!("u{i}")))
        .collect();
    let batch = serde_json::json!({ "tokens": [&tokens[0], &tokens[1], &tokens[2], &tokens[1]] })
        .to_string();
    // Valid, and now cached, before the revocation.
    let before = server.request("POST", "/v1/authenticate/batch", &[], &batch);
    assert_eq!(before.json()["valid"], 4, "{}", before.body);
    revoke(&server, &tokens[1]);
    let after = server.request("POST", "/v1/authenticate/batch", &[], &batch);
    assert_eq!(after.status, 200, "{}", after.body);
    let json = after.json();
    assert_eq!(json["valid"], 2, "{}", after.body);
    for i in [1, 3] {
        assert_eq!(
            json["results"][i]["valid"], false,
            "token {i}: {}",
            after.body
        );
        assert_eq!(
            json["results"][i]["error_description"], "token has been revoked",
            "token {i}"
        );
    }
    assert_eq!(json["results"][0]["claims"]["sub"], "u0");
    assert_eq!(json["results"][2]["claims"]["sub"], "u2");
}

#[test]
fn revoked_tokens_are_refused_inside_a_batch_split_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "2"]);
    let tokens: Vec<String> = (0..600)
        .map(|i| issue_fast(dir.path(), &format!("u{i}")))
        .collect();
    // 600 tokens split in two parts of 300: index 5 is verified by the shard that took the
    // connection, index 450 by the other one.
    let revoked = [5, 450];
    let body = serde_json::json!({ "tokens": tokens }).to_string();
    let mut conn = server.connect();
    conn.send("POST", "/v1/authenticate/batch", &[], &body);
    let warm = conn.read_response();
    assert_eq!(
        warm.json()["valid"],
        600,
        "every token valid and cached first"
    );
    for i in revoked {
        revoke(&server, &tokens[i]);
    }
    conn.send("POST", "/v1/authenticate/batch", &[], &body);
    let resp = conn.read_response();
    assert_eq!(resp.status, 200);
    let json = resp.json();
    assert_eq!(json["valid"], 598);
    let results = json["results"].as_array().unwrap();
    for (i, r) in results.iter().enumerate() {
        if revoked.contains(&i) {
            assert_eq!(r["valid"], false, "revoked token {i} accepted");
            assert_eq!(
                r["error_description"], "token has been revoked",
                "token {i}"
            );
        } else {
            assert_eq!(r["claims"]["sub"], format!("u{i}"), "token {i}");
        }
    }
    server.wait_metrics("batch parts served by another shard", |text| {
        metric_sum(text, "subzero_batch_parts_served_total") >= 2
    });
}
