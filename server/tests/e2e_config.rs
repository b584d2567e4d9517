//! End to end with a config file: client credentials and the token pool, admin key rotation,
//! and tokens from external ES256 and RS256 issuers (keys generated here).

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::{b64, bearer, metric_sum, token_part, EcKey, Server};

const ADMIN: &str = "admin-token-0123456789abcdef";

/// A JWKS with one fresh P-256 key, for tests that do not use the external issuer.
fn some_jwks() -> serde_json::Value {
    serde_json::json!({ "keys": [EcKey::generate().jwk("ec-0")] })
}

fn write_config(dir: &Path, jwks: &serde_json::Value) -> std::path::PathBuf {
    std::fs::write(dir.join("idp-jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(dir.join("admin.token"), format!("{ADMIN}\n")).unwrap();
    let config = r#"
[server]
shards = 2

[auth]
token_ttl_s = 900

[[auth.trusted_issuers]]
issuer = "https://idp.test"
jwks_file = "idp-jwks.json"
audiences = ["api"]

[[clients]]
id = "svc-a"
secret = "s3cret-s3cret"
audiences = ["api", "billing"]
scopes = ["read", "write"]

[admin]
token_file = "admin.token"
"#;
    let path = dir.join("subzero.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn start(dir: &Path, jwks: &serde_json::Value) -> Server {
    let config = write_config(dir, jwks);
    let data = dir.join("data");
    Server::start(&data, &["--config", config.to_str().unwrap()])
}

fn token_request(server: &Server, body: &str) -> common::Response {
    server.request(
        "POST",
        "/v1/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body,
    )
}

fn kid_of(token: &str) -> String {
    token_part(token, 0)["kid"].as_str().unwrap().to_owned()
}

#[test]
fn client_credentials_issue_tokens_that_authenticate_and_the_pool_serves_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &some_jwks());
    let ok = "grant_type=client_credentials&client_id=svc-a&client_secret=s3cret-s3cret&scope=read";
    let resp = token_request(&server, ok);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let json = resp.json();
    assert_eq!(json["token_type"], "Bearer");
    assert!(json["expires_in"].as_u64().unwrap() > 600);
    let token = json["access_token"].as_str().unwrap();
    // No audience asked for: the client's first one.
    assert_eq!(token_part(token, 1)["aud"], "api", "{token}");
    let auth = server.request(
        "GET",
        "/v1/authenticate",
        &[("Authorization", &bearer(token))],
        "",
    );
    assert_eq!(auth.status, 200);
    assert_eq!(auth.header("x-auth-subject"), Some("svc-a"));
    assert_eq!(auth.header("x-auth-scopes"), Some("read"));

    // HTTP Basic client authentication, JSON body, another allowed audience.
    let basic = base64::engine::general_purpose::STANDARD.encode("svc-a:s3cret-s3cret");
    let resp = server.request(
        "POST",
        "/v1/token",
        &[
            ("Authorization", &format!("Basic {basic}")),
            ("Content-Type", "application/json"),
        ],
        r#"{"grant_type":"client_credentials","audience":"billing"}"#,
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let billing = resp.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(token_part(&billing, 1)["aud"], "billing", "{billing}");
    let claims = server.request(
        "POST",
        "/v1/authenticate",
        &[],
        &serde_json::json!({ "token": billing }).to_string(),
    );
    assert_eq!(claims.status, 200, "{}", claims.body);
    assert_eq!(claims.json()["claims"]["aud"], "billing");

    let refusals = [
        ("grant_type=client_credentials&client_id=svc-a&client_secret=wrong-wrong", 401, "invalid_client"),
        ("grant_type=client_credentials&client_id=nobody&client_secret=s3cret-s3cret", 401, "invalid_client"),
        ("grant_type=password&client_id=svc-a&client_secret=s3cret-s3cret", 400, "unsupported_grant_type"),
        ("grant_type=client_credentials&client_id=svc-a&client_secret=s3cret-s3cret&scope=admin", 400, "invalid_scope"),
        ("grant_type=client_credentials&client_id=svc-a&client_secret=s3cret-s3cret&audience=other", 400, "invalid_target"),
    ];
    for (body, status, error) in refusals {
        let resp = token_request(&server, body);
        assert_eq!(
            (resp.status, resp.json()["error"].as_str().unwrap()),
            (status, error),
            "{body}"
        );
    }

    // Sustained demand on one connection: the background refill makes later requests pool hits.
    let mut conn = server.connect();
    let mut jtis = std::collections::HashSet::new();
    for _ in 0..40 {
        conn.send(
            "POST",
            "/v1/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            ok,
        );
        let resp = conn.read_response();
        assert_eq!(resp.status, 200);
        let t = resp.json()["access_token"].as_str().unwrap().to_owned();
        assert!(jtis.insert(t), "a pooled token was handed out twice");
        std::thread::sleep(Duration::from_millis(25));
    }
    server.wait_metrics("pool hits after sustained demand", |text| {
        metric_sum(text, "subzero_pool_hits_total") > 0
    });
}

#[test]
fn admin_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &some_jwks());
    let issue = |server: &Server| {
        let resp = token_request(
            server,
            "grant_type=client_credentials&client_id=svc-a&client_secret=s3cret-s3cret",
        );
        resp.json()["access_token"].as_str().unwrap().to_owned()
    };
    let old = issue(&server);
    let denied = server.request(
        "POST",
        "/v1/keys/rotate",
        &[("Authorization", "Bearer not-the-admin-token")],
        "",
    );
    assert_eq!(denied.status, 401);
    let resp = server.request(
        "POST",
        "/v1/keys/rotate",
        &[("Authorization", &bearer(ADMIN))],
        "",
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let new_kid = resp.json()["kid"].as_str().unwrap().to_owned();
    assert_eq!(resp.json()["previous_kid"].as_str().unwrap(), kid_of(&old));
    let jwks = server
        .request("GET", "/.well-known/jwks.json", &[], "")
        .json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(jwks["keys"][0]["kid"], new_kid.as_str());
    // Poll briefly: pooled tokens signed before the rotation drain first.
    let mut fresh = issue(&server);
    for _ in 0..300 {
        if kid_of(&fresh) == new_kid {
            break;
        }
        fresh = issue(&server);
    }
    assert_eq!(kid_of(&fresh), new_kid);
    for token in [&old, &fresh] {
        let auth = server.request(
            "GET",
            "/v1/authenticate",
            &[("Authorization", &bearer(token))],
            "",
        );
        assert_eq!(auth.status, 200, "{}", auth.body);
    }
}

#[test]
fn external_es256_and_rs256_issuers_are_accepted() {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;

    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = ec.public_key().as_ref();
    let rsa_key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let jwks = serde_json::json!({ "keys": [
        { "kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256", "use": "sig",
          "x": b64(&point[1..33]), "y": b64(&point[33..65]) },
        { "kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig",
          "n": b64(&rsa_key.n().to_bytes_be()), "e": b64(&rsa_key.e().to_bytes_be()) },
    ]});
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &jwks);

    let now = subzero::unix_now_s();
    let claims = serde_json::json!({
        "iss": "https://idp.test", "sub": "auth0|42", "aud": "api",
        "exp": now + 600, "iat": now, "scope": "openid profile",
    });
    let payload = b64(claims.to_string().as_bytes());
    let es_input = format!(
        "{}.{payload}",
        b64(br#"{"alg":"ES256","typ":"JWT","kid":"ec-1"}"#)
    );
    let es_sig = ec.sign(&rng, es_input.as_bytes()).unwrap();
    let es256 = format!("{es_input}.{}", b64(es_sig.as_ref()));

    let der = rsa_key.to_pkcs1_der().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let rs256 = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
    )
    .unwrap();

    for (name, token) in [("ES256", &es256), ("RS256", &rs256)] {
        let resp = server.request(
            "GET",
            "/v1/authenticate",
            &[("Authorization", &bearer(token))],
            "",
        );
        assert_eq!(resp.status, 200, "{name}: {}", resp.body);
        assert_eq!(
            resp.header("x-auth-issuer"),
            Some("https://idp.test"),
            "{name}"
        );
        assert_eq!(resp.header("x-auth-subject"), Some("auth0|42"), "{name}");
    }
    // The same ES256 signature presented as RS256 is an algorithm/key mismatch.
    let confused_input = format!(
        "{}.{payload}",
        b64(br#"{"alg":"RS256","typ":"JWT","kid":"ec-1"}"#)
    );
    let confused = format!("{confused_input}.{}", b64(es_sig.as_ref()));
    let resp = server.request(
        "GET",
        "/v1/authenticate",
        &[("Authorization", &bearer(&confused))],
        "",
    );
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.error_description(),
        "token algorithm does not match its key"
    );
}

#[test]
fn per_source_rate_limit_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limit.toml");
    std::fs::write(&config, "[ratelimit]\nper_ip_rps = 5\nper_ip_burst = 5\n").unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--shards", "1"],
    );
    let mut conn = server.connect();
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..12 {
        conn.send("GET", "/healthz", &[], "");
        let resp = conn.read_response();
        if resp.status == 429 {
            assert!(resp.header("retry-after").is_some());
            assert_eq!(resp.json()["error"], "rate_limited");
        }
        statuses.push(resp.status);
    }
    let n_ok = statuses.iter().filter(|&&s| s == 200).count();
    // The burst of 5, plus what 5/s refilled while the requests ran (a slow machine is slower).
    let refilled = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (5..=5 + refilled).contains(&n_ok),
        "burst of 5 plus {refilled} refilled expected: {statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    // 5/s refills a token within a second or so: poll rather than guess how long.
    common::poll(
        "a request admitted again after refill",
        Duration::from_secs(5),
        || (server.request("GET", "/healthz", &[], "").status == 200).then_some(()),
    );
}

#[test]
fn admin_revokes_by_jti_and_others_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &some_jwks());
    let resp = token_request(
        &server,
        "grant_type=client_credentials&client_id=svc-a&client_secret=s3cret-s3cret",
    );
    let token = resp.json()["access_token"].as_str().unwrap().to_owned();
    let claims = token_part(&token, 1);
    let jti = claims["jti"].as_str().unwrap();
    let body = serde_json::json!({ "jti": jti }).to_string();
    let denied = server.request(
        "POST",
        "/v1/revoke",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    let bad_jti = server.request(
        "POST",
        "/v1/revoke",
        &[("Authorization", &bearer(ADMIN))],
        r#"{"jti":"has space"}"#,
    );
    assert_eq!(bad_jti.status, 400);
    let ok = server.request(
        "POST",
        "/v1/revoke",
        &[
            ("Authorization", &bearer(ADMIN)),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let auth = server.request(
        "GET",
        "/v1/authenticate",
        &[("Authorization", &bearer(&token))],
        "",
    );
    assert_eq!(auth.status, 401);
    assert_eq!(auth.error_description(), "token has been revoked");
}
