//! End to end over loopback: which key may sign for which issuer, the JWKS re-read on an
//! unknown `kid` in the running server (kept across our own key rotation), and the cache
//! honouring `exp` and key retirement.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{bearer, issue_ttl, metric, poll, token_part, write_jwks, EcKey, Server};

const ADMIN: &str = "admin-token-0123456789abcdef";
const IDP: &str = "https://idp.test";
const OTHER: &str = "https://other.test";

/// Writes `config` (TOML, after an `[admin]` section) into `dir` and starts one server on it.
fn start(dir: &Path, config: &str, shards: &str) -> Server {
    std::fs::write(dir.join("admin.token"), format!("{ADMIN}\n")).unwrap();
    let path = dir.join("subzero.toml");
    let text = format!("[admin]\ntoken_file = \"admin.token\"\n\n{config}");
    std::fs::write(&path, text).unwrap();
    let config = path.to_str().unwrap();
    Server::start(&dir.join("data"), &["--config", config, "--shards", shards])
}

fn authenticate(server: &Server, token: &str) -> common::Response {
    server.request(
        "GET",
        "/v1/authenticate",
        &[("Authorization", &bearer(token))],
        "",
    )
}

/// Claims an external issuer would sign, with a fresh `jti` (so no two tokens share a cache
/// entry).
fn claims(iss: &str, aud: &str) -> serde_json::Value {
    let now = subzero::unix_now_s();
    serde_json::json!({
        "iss": iss, "sub": "auth0|42", "aud": aud, "exp": now + 600, "iat": now,
        "jti": subzero::auth::new_jti(),
    })
}

fn rotate(server: &Server) -> serde_json::Value {
    let resp = server.request(
        "POST",
        "/v1/keys/rotate",
        &[("Authorization", &bearer(ADMIN))],
        "",
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()
}

fn n_jwks_keys(server: &Server) -> usize {
    let jwks = server.request("GET", "/.well-known/jwks.json", &[], "");
    jwks.json()["keys"].as_array().unwrap().len()
}

#[test]
fn a_trusted_issuers_key_cannot_sign_for_our_issuer_or_another_trusted_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let idp = EcKey::generate();
    let other = EcKey::generate();
    write_jwks(&dir.path().join("idp.json"), &[idp.jwk("ec-1")]);
    write_jwks(&dir.path().join("other.json"), &[other.jwk("ec-9")]);
    let config = format!(
        r#"
[auth]
audiences = ["subzero", "api"]

[[auth.trusted_issuers]]
issuer = "{IDP}"
jwks_file = "idp.json"
audiences = ["api"]

[[auth.trusted_issuers]]
issuer = "{OTHER}"
jwks_file = "other.json"
audiences = ["api"]
"#
    );
    let server = start(dir.path(), &config, "1");
    let jwks = server
        .request("GET", "/.well-known/jwks.json", &[], "")
        .json();
    let our_kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();

    // The key signs for its own issuer: the refusals below are about `iss`, nothing else.
    let own = authenticate(&server, &idp.sign("ec-1", &claims(IDP, "api")));
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.header("x-auth-issuer"), Some(IDP));

    let forgeries = [
        (
            "our issuer, its kid",
            idp.sign("ec-1", &claims("subzero", "subzero")),
        ),
        (
            "our issuer, our kid",
            idp.sign(&our_kid, &claims("subzero", "subzero")),
        ),
        (
            "another issuer, its kid",
            idp.sign("ec-1", &claims(OTHER, "api")),
        ),
        (
            "another issuer, that issuer's kid",
            idp.sign("ec-9", &claims(OTHER, "api")),
        ),
    ];
    let mut accepted = Vec::new();
    for (name, token) in &forgeries {
        let resp = authenticate(&server, token);
        if resp.status != 401 || resp.json()["error"] != "invalid_token" {
            accepted.push(format!(
                "{name}: {} {:?}",
                resp.status,
                resp.header("x-auth-issuer")
            ));
        }
    }
    assert!(accepted.is_empty(), "forgeries not refused: {accepted:#?}");
    // The same through the batch endpoint (its own verification path).
    let tokens: Vec<&String> = forgeries.iter().map(|(_, t)| t).collect();
    let body = serde_json::json!({ "tokens": tokens }).to_string();
    let batch = server.request("POST", "/v1/authenticate/batch", &[], &body);
    assert_eq!(batch.json()["valid"], 0, "{}", batch.body);
}

#[test]
fn unknown_kid_rereads_the_jwks_file_and_a_rotation_keeps_the_reloaded_key() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("idp.json");
    let old = EcKey::generate();
    let new = EcKey::generate();
    write_jwks(&jwks_path, &[old.jwk("ec-1")]);
    let config = format!(
        "[[auth.trusted_issuers]]\nissuer = \"{IDP}\"\njwks_file = \"idp.json\"\naudiences = [\"api\"]\n"
    );
    // One shard: the reload and the counters below are that shard's.
    let server = start(dir.path(), &config, "1");
    let before = authenticate(&server, &new.sign("ec-2", &claims(IDP, "api")));
    assert_eq!(before.status, 401);
    assert_eq!(before.error_description(), "token key id is unknown");

    // The IdP publishes its new key. The server re-reads the file on an unknown kid at most
    // once per 10 s per issuer, counted from when it last read it: poll, well past that.
    write_jwks(&jwks_path, &[old.jwk("ec-1"), new.jwk("ec-2")]);
    let token = new.sign("ec-2", &claims(IDP, "api"));
    poll(
        "a token of the key added to the JWKS file authenticates",
        Duration::from_secs(30),
        || {
            let resp = authenticate(&server, &token);
            assert!(resp.status == 200 || resp.status == 401, "{resp:?}");
            (resp.status == 200).then_some(())
        },
    );
    let allowed = |text: &str| metric(text, "subzero_auth_allowed_total{shard=\"0\"}");
    let reloads = |text: &str| metric(text, "subzero_jwks_reloads_total{shard=\"0\"}");
    let text = server.wait_metrics("the first allowed token", |t| allowed(t) == Some(1));
    assert_eq!(
        reloads(&text),
        Some(1),
        "one re-read found the key:\n{text}"
    );

    // Our own key rotates: the shard takes the new own keys and must keep the issuer key it
    // reloaded (regression: it used to take the control plane's start-time JWKS, and had to
    // re-read the file, or refuse while the re-read was rate-limited).
    rotate(&server);
    let fresh = new.sign("ec-2", &claims(IDP, "api")); // not cached: it must verify
    let resp = authenticate(&server, &fresh);
    assert_eq!(resp.status, 200, "{}", resp.body);
    let text = server.wait_metrics("the second allowed token", |t| allowed(t) == Some(2));
    assert_eq!(
        reloads(&text),
        Some(1),
        "the rotation made the shard forget the reloaded key:\n{text}"
    );
}

#[test]
fn a_cached_token_stops_authenticating_at_its_exp() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "[auth]\nleeway_s = 0\n", "1");
    let token = issue_ttl(&dir.path().join("data"), "alice", "subzero", 5);
    let exp_s = token_part(&token, 1)["exp"].as_u64().unwrap();
    assert_eq!(authenticate(&server, &token).status, 200, "verified");
    assert_eq!(authenticate(&server, &token).status, 200, "cached");
    server.wait_metrics("a cache hit", |t| {
        metric(t, "subzero_cache_hits_total{shard=\"0\"}").unwrap_or(0) >= 1
    });
    // With no leeway the token is refused from `exp` on: poll until then, plus a margin for
    // the one-second clock.
    let wait = Duration::from_secs((exp_s + 3).saturating_sub(subzero::unix_now_s()));
    let refused = poll("the cached token refused after its exp", wait, || {
        let resp = authenticate(&server, &token);
        (resp.status != 200).then_some(resp)
    });
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.error_description(), "token has expired");
    assert!(subzero::unix_now_s() >= exp_s, "refused before its exp");
}

#[test]
fn key_retirement_empties_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    // The previous key retires token_ttl_s + leeway_s = 10 s after a rotation.
    let config = "[auth]\ntoken_ttl_s = 10\nleeway_s = 0\n\n[pool]\nmin_remaining_s = 5\n";
    let server = start(dir.path(), config, "1");
    // Signed offline with the first key, valid for an hour: longer than that key lives.
    let token = issue_ttl(&dir.path().join("data"), "alice", "subzero", 3600);
    assert_eq!(authenticate(&server, &token).status, 200, "verified");
    assert_eq!(authenticate(&server, &token).status, 200, "cached");
    let rotated = rotate(&server);
    assert_eq!(rotated["previous_kid"], token_part(&token, 0)["kid"]);
    assert_eq!(n_jwks_keys(&server), 2);
    assert_eq!(
        authenticate(&server, &token).status,
        200,
        "previous key still verifies"
    );
    server.wait_metrics("a cache hit", |t| {
        metric(t, "subzero_cache_hits_total{shard=\"0\"}").unwrap_or(0) >= 2
    });
    // The one shard serves the JWKS from the key snapshot it applies with the cache purge.
    poll("the previous key retired", Duration::from_secs(30), || {
        (n_jwks_keys(&server) == 1).then_some(())
    });
    let resp = authenticate(&server, &token);
    assert_eq!(
        resp.status, 401,
        "a cached token of a retired key: {resp:?}"
    );
    assert_eq!(resp.error_description(), "token key id is unknown");
    let current = issue_ttl(&dir.path().join("data"), "bob", "subzero", 600);
    assert_eq!(authenticate(&server, &current).status, 200);
}

#[test]
fn another_issuers_token_with_our_jti_cannot_revoke_ours() {
    let dir = tempfile::tempdir().unwrap();
    let idp = EcKey::generate();
    write_jwks(&dir.path().join("idp.json"), &[idp.jwk("ec-1")]);
    let server = start(
        dir.path(),
        &format!(
            "[[auth.trusted_issuers]]\nissuer = \"{IDP}\"\njwks_file = \"idp.json\"\naudiences = [\"api\"]\n"
        ),
        "2",
    );
    let ours = issue_ttl(&dir.path().join("data"), "alice", "subzero", 600);
    let jti = token_part(&ours, 1)["jti"].as_str().unwrap().to_owned();
    // The IdP's token carries the very same jti.
    let mut theirs_claims = claims(IDP, "api");
    theirs_claims["jti"] = jti.clone().into();
    let theirs = idp.sign("ec-1", &theirs_claims);
    let body = serde_json::json!({ "token": theirs }).to_string();
    let resp = server.request("POST", "/v1/revoke", &[], &body);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        authenticate(&server, &theirs).status,
        401,
        "the revoked token"
    );
    assert_eq!(
        authenticate(&server, &ours).status,
        200,
        "ours, same jti, other issuer"
    );
    // An admin revocation by jti alone is of our token; with the IdP's `iss`, of theirs.
    let by_jti = serde_json::json!({ "jti": jti }).to_string();
    let resp = server.request(
        "POST",
        "/v1/revoke",
        &[("Authorization", &bearer(ADMIN))],
        &by_jti,
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(authenticate(&server, &ours).status, 401);
    // Both survive a restart (the store keys them by issuer and jti).
    server.kill9();
    let server = start(
        dir.path(),
        &format!(
            "[[auth.trusted_issuers]]\nissuer = \"{IDP}\"\njwks_file = \"idp.json\"\naudiences = [\"api\"]\n"
        ),
        "2",
    );
    assert_eq!(authenticate(&server, &ours).status, 401);
    assert_eq!(authenticate(&server, &theirs).status, 401);
}
