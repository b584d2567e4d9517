//! End to end over loopback, two shards: RFC 8693 delegation (nested `act`, narrowed scopes,
//! accepted by `GET /v1/authenticate`, depth 4 refused), ID-JAG issuance for a configured
//! resource AS, an external ES256 issuer's ID-JAG redeemed once and its replay refused on every
//! shard, and the RFC 8414 metadata document.

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use common::{basic, bearer, form, issue, metric, poll, token_part, write_jwks, EcKey, Server};

const IDP: &str = "https://idp.test";
const PARTNER_AS: &str = "https://as.partner.test";
const SECRET: &str = "s3cret-s3cret";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// Writes the config (clients app and agent-a..d, the external IdP trusted for ID-JAGs, one
/// ID-JAG target) into `dir` and starts two shards on it.
fn start(dir: &Path, idp: &EcKey) -> Server {
    write_jwks(&dir.join("idp.json"), &[idp.jwk("idp-1")]);
    let mut config = format!(
        r#"
[[auth.trusted_issuers]]
issuer = "{IDP}"
jwks_file = "idp.json"
id_jag = true

[xaa]
max_ttl_s = 120

[[xaa.id_jag_targets]]
issuer = "{PARTNER_AS}"
resources = ["https://api.partner.test/"]
scopes = ["read"]
"#
    );
    for id in ["app", "agent-a", "agent-b", "agent-c", "agent-d"] {
        let _ = write!(
            config,
            "\n[[clients]]\nid = \"{id}\"\nsecret = \"{SECRET}\"\naudiences = [\"api\"]\nscopes = [\"read\", \"write\"]\n"
        );
    }
    let path = dir.join("subzero.toml");
    std::fs::write(&path, config).unwrap();
    let config = path.to_str().unwrap();
    Server::start(&dir.join("data"), &["--config", config, "--shards", "2"])
}

/// A client-credentials token of `client`.
fn client_token(server: &Server, client: &str) -> String {
    let resp = server.request(
        "POST",
        "/v1/token",
        &[("Authorization", &basic(client, SECRET))],
        "grant_type=client_credentials",
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()["access_token"].as_str().unwrap().to_owned()
}

/// `POST /v1/xaa/delegate` as `client` (HTTP Basic), form body.
fn delegate(server: &Server, client: &str, pairs: &[(&str, &str)]) -> common::Response {
    let mut all = vec![("grant_type", EXCHANGE)];
    all.extend_from_slice(pairs);
    server.request(
        "POST",
        "/v1/xaa/delegate",
        &[
            ("Authorization", &basic(client, SECRET)),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form(&all),
    )
}

/// `subject` delegated to the client-credentials token of `actor`, asked by `actor`.
fn delegate_to(server: &Server, subject: &str, actor: &str, scope: &str) -> common::Response {
    let actor_token = client_token(server, actor);
    delegate(
        server,
        actor,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("actor_token", &actor_token),
            ("actor_token_type", ACCESS_TOKEN),
            ("audience", "api"),
            ("scope", scope),
        ],
    )
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
fn delegation_nests_the_act_chain_narrows_scopes_and_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &EcKey::generate());
    let user = issue(
        &dir.path().join("data"),
        "alice",
        "api",
        &["read", "write", "admin"],
    );

    // agent-a acts for alice; it holds read and write, alice holds admin too: admin is dropped.
    let resp = delegate_to(&server, &user, "agent-a", "read admin");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let body = resp.json();
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "read");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!(
        (1..=120).contains(&expires_in),
        "capped by xaa.max_ttl_s: {expires_in}"
    );
    let first = body["access_token"].as_str().unwrap().to_owned();
    let claims = token_part(&first, 1);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"], serde_json::json!({ "sub": "agent-a" }));

    // agent-b acts for (alice via agent-a): JSON body, credentials in the body this time.
    let agent_b = client_token(&server, "agent-b");
    let json = serde_json::json!({
        "grant_type": EXCHANGE, "client_id": "agent-b", "client_secret": SECRET,
        "subject_token": first, "subject_token_type": ACCESS_TOKEN,
        "actor_token": agent_b, "actor_token_type": ACCESS_TOKEN,
        "audience": ["api"], "scope": "read write",
    });
    let resp = server.request(
        "POST",
        "/v1/xaa/delegate",
        &[("Content-Type", "application/json")],
        &json.to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        resp.json()["scope"],
        "read",
        "write was dropped at the first hop"
    );
    let second = resp.json()["access_token"].as_str().unwrap().to_owned();
    let claims = token_part(&second, 1);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["act"],
        serde_json::json!({ "sub": "agent-b", "act": { "sub": "agent-a" } })
    );

    for token in [&first, &second] {
        let auth = authenticate(&server, token);
        assert_eq!(auth.status, 200, "{}", auth.body);
        assert_eq!(auth.header("x-auth-subject"), Some("alice"));
        assert_eq!(auth.header("x-auth-scopes"), Some("read"));
    }

    // The token endpoint takes the same grant (what RFC 8414 metadata advertises).
    let agent_c = client_token(&server, "agent-c");
    let resp = server.request(
        "POST",
        "/v1/token",
        &[("Authorization", &basic("agent-c", SECRET))],
        &form(&[
            ("grant_type", EXCHANGE),
            ("subject_token", &user),
            ("subject_token_type", ACCESS_TOKEN),
            ("actor_token", &agent_c),
            ("actor_token_type", ACCESS_TOKEN),
        ]),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let claims = token_part(resp.json()["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["aud"], "api", "the client's default audience");
    assert_eq!(
        claims["scope"], "read write",
        "every scope all parties hold"
    );
    refusals_carry_the_rfc_codes(&server, &user);
}

/// Refusals carry the RFC 8693 codes.
fn refusals_carry_the_rfc_codes(server: &Server, user: &str) {
    let bad_client = server.request(
        "POST",
        "/v1/xaa/delegate",
        &[("Authorization", &basic("agent-a", "wrong-secret"))],
        &form(&[("grant_type", EXCHANGE), ("subject_token", user)]),
    );
    assert_eq!(bad_client.status, 401, "{}", bad_client.body);
    assert_eq!(bad_client.json()["error"], "invalid_client");
    let garbage = delegate(
        server,
        "agent-a",
        &[
            ("subject_token", "not.a.token"),
            ("subject_token_type", ACCESS_TOKEN),
        ],
    );
    assert_eq!(garbage.status, 400, "{}", garbage.body);
    assert_eq!(garbage.json()["error"], "invalid_request");
    assert!(
        garbage.error_description().contains("subject_token"),
        "{}",
        garbage.body
    );
    let target = delegate(
        server,
        "agent-a",
        &[
            ("subject_token", user),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "payroll"),
        ],
    );
    assert_eq!(target.status, 400, "{}", target.body);
    assert_eq!(target.json()["error"], "invalid_target");
}

#[test]
fn a_fourth_actor_is_refused_with_invalid_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &EcKey::generate());
    let mut token = issue(&dir.path().join("data"), "alice", "api", &["read"]);
    for actor in ["agent-a", "agent-b", "agent-c"] {
        let resp = delegate_to(&server, &token, actor, "read");
        assert_eq!(resp.status, 200, "{actor}: {}", resp.body);
        token = resp.json()["access_token"].as_str().unwrap().to_owned();
    }
    let chain = token_part(&token, 1)["act"].clone();
    assert_eq!(
        chain["act"]["act"]["sub"], "agent-a",
        "three actors: {chain}"
    );
    assert_eq!(authenticate(&server, &token).status, 200);

    let resp = delegate_to(&server, &token, "agent-d", "read");
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(resp.json()["error"], "invalid_request");
    assert!(
        resp.error_description().contains("4 actors"),
        "{}",
        resp.body
    );
}

#[test]
fn an_id_jag_is_issued_for_a_configured_resource_authorization_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &EcKey::generate());
    let user = issue(&dir.path().join("data"), "alice", "api", &["read", "write"]);
    let resp = delegate(
        &server,
        "app",
        &[
            ("subject_token", &user),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", ID_JAG),
            ("audience", PARTNER_AS),
            ("resource", "https://api.partner.test/"),
        ],
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let body = resp.json();
    assert_eq!(body["issued_token_type"], ID_JAG);
    assert_eq!(body["token_type"], "N_A");
    assert_eq!(body["scope"], "read", "the target allows read only");
    let jag = body["access_token"].as_str().unwrap();
    assert_eq!(token_part(jag, 0)["typ"], "oauth-id-jag+jwt");
    let claims = token_part(jag, 1);
    assert_eq!(claims["aud"], PARTNER_AS);
    assert_eq!(claims["client_id"], "app");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["resource"], "https://api.partner.test/");

    let unknown = delegate(
        &server,
        "app",
        &[
            ("subject_token", &user),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", ID_JAG),
            ("audience", "https://as.unknown.test"),
        ],
    );
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert_eq!(unknown.json()["error"], "invalid_target");
}

/// ID-JAG claims from the external IdP for client `app`.
fn id_jag_claims(jti: &str) -> serde_json::Value {
    let now = subzero::unix_now_s();
    serde_json::json!({
        "iss": IDP, "sub": "alice", "aud": "subzero", "client_id": "app",
        "jti": jti, "iat": now, "exp": now + 300, "scope": "read write admin",
    })
}

fn redeem(server: &Server, client: &str, assertion: &str) -> common::Response {
    server.request(
        "POST",
        "/v1/token",
        &[("Authorization", &basic(client, SECRET))],
        &form(&[("grant_type", JWT_BEARER), ("assertion", assertion)]),
    )
}

/// Replays seen by shard `idx`, per its published `/metrics` section.
fn replays_on(metrics: &str, idx: usize) -> u64 {
    let series = format!("subzero_xaa_id_jag_replays_total{{shard=\"{idx}\"}}");
    metric(metrics, &series).unwrap_or(0)
}

#[test]
fn an_external_id_jag_is_redeemed_once_and_its_replay_is_refused_on_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let idp = EcKey::generate();
    let server = start(dir.path(), &idp);
    let jti = subzero::auth::new_jti();
    let jag = idp.sign_typed("idp-1", "oauth-id-jag+jwt", &id_jag_claims(&jti));

    // Presented as a bearer token, an ID-JAG is refused: it is a grant, not an access token.
    let as_bearer = authenticate(&server, &jag);
    assert_eq!(as_bearer.status, 401, "{}", as_bearer.body);

    // Another client cannot redeem it; a plain JWT is not an ID-JAG. Neither uses the jti.
    let other = redeem(&server, "agent-a", &jag);
    assert_eq!(other.status, 400, "{}", other.body);
    assert_eq!(other.json()["error"], "invalid_grant");
    let plain = idp.sign("idp-1", &id_jag_claims(&subzero::auth::new_jti()));
    let plain = redeem(&server, "app", &plain);
    assert_eq!(plain.status, 400, "{}", plain.body);
    assert!(plain.error_description().contains("typ"), "{}", plain.body);

    let resp = redeem(&server, "app", &jag);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let body = resp.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "read write", "admin is not the client's");
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let access = body["access_token"].as_str().unwrap();
    let auth = authenticate(&server, access);
    assert_eq!(auth.status, 200, "{}", auth.body);
    assert_eq!(
        auth.header("x-auth-subject"),
        Some("https://idp.test#alice")
    );
    assert_eq!(auth.header("x-auth-scopes"), Some("read write"));

    // Replays on fresh connections (SO_REUSEPORT spreads them over both shards) until each
    // shard has refused at least one: the jti table is one per process, not one per shard.
    let mut n_replays = 0u64;
    poll(
        "a replay refused by each shard",
        Duration::from_secs(30),
        || {
            for _ in 0..8 {
                let replay = redeem(&server, "app", &jag);
                assert_eq!(replay.status, 400, "replay accepted: {}", replay.body);
                assert_eq!(replay.json()["error"], "invalid_grant");
                assert!(
                    replay.error_description().contains("already used"),
                    "{}",
                    replay.body
                );
                n_replays += 1;
            }
            let total = n_replays;
            let metrics = server.wait_metrics("every replay counted", |m| {
                replays_on(m, 0) + replays_on(m, 1) == total
            });
            (replays_on(&metrics, 0) > 0 && replays_on(&metrics, 1) > 0).then_some(())
        },
    );
    server.wait_metrics("one ID-JAG id remembered", |m| {
        metric(m, "subzero_id_jag_seen") == Some(1)
    });
    // Used for good: the use is durable, so a restart does not make the ID-JAG new again.
    server.kill9();
    let server = start(dir.path(), &idp);
    let replay = redeem(&server, "app", &jag);
    assert_eq!(
        replay.status, 400,
        "replayed after a restart: {}",
        replay.body
    );
    assert!(
        replay.error_description().contains("already used"),
        "{}",
        replay.body
    );
}

#[test]
fn the_metadata_document_advertises_the_endpoints_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &EcKey::generate());
    let resp = server.request("GET", "/.well-known/oauth-authorization-server", &[], "");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let doc = resp.json();
    // No public_url configured: built from the bound address.
    let base = format!("http://{}", server.addr);
    assert_eq!(doc["issuer"], "subzero");
    assert_eq!(doc["token_endpoint"], format!("{base}/v1/token"));
    assert_eq!(doc["jwks_uri"], format!("{base}/.well-known/jwks.json"));
    assert_eq!(doc["revocation_endpoint"], format!("{base}/v1/revoke"));
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!(["client_credentials", EXCHANGE, JWT_BEARER])
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        doc["identity_chaining_requested_token_types_supported"],
        serde_json::json!([ACCESS_TOKEN, ID_JAG])
    );
    // The JWKS URI it names serves our keys.
    let jwks = server.request("GET", "/.well-known/jwks.json", &[], "");
    assert!(!jwks.json()["keys"].as_array().unwrap().is_empty());

    let mut conn = server.connect();
    conn.send("HEAD", "/.well-known/oauth-authorization-server", &[], "");
    let head = conn.read_head_response();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(resp.body.len().to_string().as_str())
    );
    conn.send("GET", "/healthz", &[], "");
    let next = conn.read_response();
    assert_eq!(
        (next.status, next.body.as_str()),
        (200, "ok"),
        "HEAD sent no body"
    );
    let post = server.request("POST", "/.well-known/oauth-authorization-server", &[], "");
    assert_eq!(post.status, 405);
}
