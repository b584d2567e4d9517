//! End to end over loopback: the HTTP details a strict client, proxy or load balancer sees
//! on the wire. Client credentials in two places, HTTP/1.1 without `Host`, repeated
//! security-relevant headers, `HEAD` on every GET route, HTTP/1.0 keep-alive echoed, a
//! `max_batch_tokens` no body could reach refused at start, and an admin revocation of an
//! expired token saying that nothing was stored.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{bearer, cli_within, issue, End, Server};

const ADMIN: &str = "admin-token-0123456789abcdef";
const CLIENT_ID: &str = "svc-a";
const CLIENT_SECRET: &str = "s3cret-s3cret";

fn now_s() -> u64 {
    subzero::unix_now_s()
}

/// One shard, a client and the admin token; the data dir is `dir/data`.
fn start(dir: &Path) -> Server {
    std::fs::write(dir.join("admin.token"), format!("{ADMIN}\n")).unwrap();
    let config = format!(
        "[[clients]]\nid = \"{CLIENT_ID}\"\nsecret = \"{CLIENT_SECRET}\"\naudiences = [\"api\"]\n\
         scopes = [\"read\"]\n\n[admin]\ntoken_file = \"admin.token\"\n"
    );
    let path = dir.join("subzero.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap();
    Server::start(&dir.join("data"), &["--config", path, "--shards", "1"])
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let pair = format!("{id}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// RFC 6749 §2.3.1: a client uses one authentication method. Broken once by making
/// `client_credentials` take the header when both are given: the 400 became a 200.
#[test]
fn client_credentials_in_both_the_header_and_the_body_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let grant = "grant_type=client_credentials";
    let in_body = format!("{grant}&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}");
    let header = basic(CLIENT_ID, CLIENT_SECRET);

    // Each method alone works...
    let body_only = server.request("POST", "/v1/token", &form, &in_body);
    assert_eq!(body_only.status, 200, "{body_only:?}");
    let header_only = server.request(
        "POST",
        "/v1/token",
        &[form[0], ("Authorization", &header)],
        grant,
    );
    assert_eq!(header_only.status, 200, "{header_only:?}");

    // ...both together are refused, even when they agree.
    let both = server.request(
        "POST",
        "/v1/token",
        &[form[0], ("Authorization", &header)],
        &in_body,
    );
    assert_eq!(both.status, 400, "{both:?}");
    assert_eq!(both.json()["error"], "invalid_request");
    assert_eq!(
        both.error_description(),
        "client credentials given both in the Authorization header and in the body; use one"
    );
}

/// RFC 9112 §3.2. Broken once by dropping the `MissingHost` check in `http::parse`: the
/// HTTP/1.1 request without Host got 200.
#[test]
fn http11_without_host_is_400_and_http10_without_host_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut conn = server.connect();
    conn.raw(b"GET /healthz HTTP/1.1\r\n\r\n");
    let refused = conn.read_response();
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.json()["error"], "invalid_request");
    assert_eq!(
        refused.error_description(),
        "HTTP/1.1 request has no Host header"
    );
    // The framing was sound, so the connection goes on with the next request.
    conn.raw(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    let served = conn.read_response();
    assert_eq!((served.status, served.body.as_str()), (200, "ok"));

    for (bytes, description) in [
        (
            &b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
            "the Host header appears more than once",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: a/b\r\n\r\n",
            "Host header is not a valid host[:port]",
        ),
    ] {
        let mut conn = server.connect();
        conn.raw(bytes);
        let resp = conn.read_response();
        assert_eq!(resp.status, 400, "{resp:?}");
        assert_eq!(resp.error_description(), description);
    }

    let mut old = server.connect();
    old.raw(b"GET /healthz HTTP/1.0\r\n\r\n");
    let resp = old.read_response();
    assert_eq!((resp.status, resp.body.as_str()), (200, "ok"));
}

/// A proxy may read the first of two `Authorization` headers and we the last (or the
/// reverse): refuse. Broken once by letting a repeated Authorization overwrite the first
/// (as before): the request authenticated with 200.
#[test]
fn repeated_authorization_content_type_and_content_length_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = issue(&dir.path().join("data"), "alice", "subzero", &[]);
    let auth = bearer(&token);

    let once = server.request("GET", "/v1/authenticate", &[("Authorization", &auth)], "");
    assert_eq!(once.status, 200, "{once:?}");
    for second in [auth.as_str(), "Bearer not-a-token"] {
        let twice = server.request(
            "GET",
            "/v1/authenticate",
            &[("Authorization", &auth), ("authorization", second)],
            "",
        );
        assert_eq!(twice.status, 400, "{twice:?}");
        assert_eq!(twice.json()["error"], "invalid_request");
        assert_eq!(
            twice.error_description(),
            "the Authorization header appears more than once"
        );
        assert_eq!(twice.header("x-auth-subject"), None);
    }

    // Content-Type picks the body parser of POST /v1/token: one value only.
    let types = server.request(
        "POST",
        "/v1/token",
        &[
            ("Content-Type", "application/json"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "grant_type=client_credentials",
    );
    assert_eq!(types.status, 400, "{types:?}");
    assert_eq!(
        types.error_description(),
        "the Content-Type header appears more than once"
    );

    // Content-Length frames the body: even an identical repeat is refused and the
    // connection closed, since a proxy in front may have framed it another way.
    let mut conn = server.connect();
    conn.raw(b"POST /v1/authenticate HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}");
    let resp = conn.read_response();
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(
        resp.error_description(),
        "the Content-Length header appears more than once"
    );
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(conn.wait_closed(Duration::from_secs(5)), End::Closed);
}

/// RFC 9110 §15.5.6: a 405 names the methods the path has in `Allow`.
#[test]
fn method_not_allowed_names_the_allowed_methods() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let cases = [
        ("DELETE", "/v1/token", "POST"),
        ("PUT", "/healthz", "GET, HEAD"),
        ("PATCH", "/v1/relationships", "GET, HEAD, POST, DELETE"),
        ("PUT", "/v1/audit/events", "GET, POST"),
        ("POST", "/v1/audit/checkpoint", "GET"),
    ];
    for (method, path, allow) in cases {
        let resp = server.request(method, path, &[], "");
        assert_eq!(resp.status, 405, "{method} {path}: {}", resp.body);
        assert_eq!(resp.header("allow"), Some(allow), "{method} {path}");
    }
}

/// RFC 9110 §9.3.2: HEAD wherever GET is, same status and headers, no body. Broken once by
/// routing HEAD only to `/v1/authenticate` (as before): `/healthz` answered 405.
#[test]
fn head_answers_every_get_route_like_get_without_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token = issue(&dir.path().join("data"), "alice", "subzero", &[]);
    let auth = bearer(&token);
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("/healthz", &[]),
        ("/metrics", &[]),
        ("/.well-known/jwks.json", &[]),
        ("/v1/authenticate", &[("Authorization", auth.as_str())]),
        ("/v1/authenticate", &[]),
    ];
    for (path, headers) in cases {
        let get = server.request("GET", path, headers, "");
        let mut conn = server.connect();
        // HEAD, then a GET on the same connection: a body sent after HEAD's head would be
        // read as the start of the second response.
        conn.send("HEAD", path, headers, "");
        conn.send("GET", "/healthz", &[], "");
        let head = conn.read_head_response();
        let after = conn.peek(9);
        assert_eq!(
            String::from_utf8_lossy(&after),
            "HTTP/1.1 ",
            "HEAD {path} sent a body"
        );
        let next = conn.read_response();
        assert_eq!(
            (next.status, next.body.as_str()),
            (200, "ok"),
            "HEAD {path} sent a body"
        );
        assert_eq!(head.status, get.status, "HEAD {path}: {head:?}");
        assert_ne!(head.status, 405, "HEAD {path}");
        let length = |r: &common::Response| r.header("content-length").map(str::to_owned);
        if path == "/metrics" {
            // The text changes between scrapes; it is never empty.
            let n: usize = length(&head).unwrap().parse().unwrap();
            assert!(n > 0, "HEAD /metrics: {head:?}");
        } else {
            assert_eq!(length(&head), length(&get), "HEAD {path}: {head:?}");
        }
        assert_eq!(head.header("content-type"), get.header("content-type"));
        assert_eq!(head.header("x-auth-subject"), get.header("x-auth-subject"));
    }
}

/// An HTTP/1.0 client closes after a response unless it says `Connection: keep-alive`.
/// Broken once by skipping `echo_keep_alive` in `ShardApp::handle`: the first assertion
/// failed (no header); skipping `echo_deferred` failed the revocation's.
#[test]
fn http10_keep_alive_is_echoed_and_honoured_and_http10_without_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut conn = server.connect();
    for _ in 0..2 {
        conn.raw(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let resp = conn.read_response();
        assert_eq!((resp.status, resp.body.as_str()), (200, "ok"));
        assert_eq!(resp.header("connection"), Some("keep-alive"), "{resp:?}");
    }
    // A deferred response (the control plane answers it) carries it too.
    let body = serde_json::json!({ "jti": "j-http10", "exp": now_s() + 600 }).to_string();
    let revoke = format!(
        "POST /v1/revoke HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.raw(revoke.as_bytes());
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["stored"], true, "{resp:?}");
    assert_eq!(resp.header("connection"), Some("keep-alive"), "{resp:?}");
    // An error answer too, and a HEAD.
    conn.raw(b"GET /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let resp = conn.read_response();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("connection"), Some("keep-alive"), "{resp:?}");
    conn.raw(b"HEAD /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let resp = conn.read_head_response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("keep-alive"), "{resp:?}");

    // Without it: `connection: close`, and the server closes.
    conn.raw(b"GET /healthz HTTP/1.0\r\n\r\n");
    let resp = conn.read_response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    assert_eq!(conn.wait_closed(Duration::from_secs(5)), End::Closed);

    // HTTP/1.1 keeps the connection by default and needs no header.
    let resp = server.request("GET", "/healthz", &[], "");
    assert_eq!(resp.header("connection"), None, "{resp:?}");
}

/// The body limit is checked first (413), so a batch limit no body could reach is refused at
/// start with both ways out. Broken once by dropping `check_batch_fits` from
/// `Config::validate`: the server started (and was killed at the time-out).
#[test]
fn a_max_batch_tokens_that_cannot_fit_in_max_body_bytes_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subzero.toml");
    std::fs::write(&path, "[auth]\nmax_batch_tokens = 4096\n").unwrap();
    let data = dir.path().join("data");
    let args = [
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let (code, err) = cli_within(&args, Duration::from_secs(10))
        .expect("the server started with a max_batch_tokens no body can reach");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("auth.max_batch_tokens = 4096 cannot be reached")
            && err.contains("server.max_body_bytes = 1048576")
            && err.contains("at most 3021"),
        "{err}"
    );
    // With room in the body, the same value is fine.
    std::fs::write(
        &path,
        "[server]\nmax_body_bytes = 2097152\n[auth]\nmax_batch_tokens = 4096\n",
    )
    .unwrap();
    let server = Server::start(&data, &["--config", path.to_str().unwrap()]);
    assert_eq!(server.request("GET", "/healthz", &[], "").status, 200);
}

fn admin_revoke(server: &Server, jti: &str, exp: u64) -> serde_json::Value {
    let body = serde_json::json!({ "jti": jti, "exp": exp }).to_string();
    let resp = server.request(
        "POST",
        "/v1/revoke",
        &[
            ("Authorization", &bearer(ADMIN)),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.json()
}

/// An `exp` already past (with the leeway) revokes nothing and says so, without the control
/// plane. Broken once by sending it to the control plane again: the answer was
/// `"revoked": true, "stored": false` with no reason.
#[test]
fn an_admin_revocation_with_an_exp_in_the_past_says_nothing_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let now = now_s();
    // Default leeway_s = 60: an exp an hour ago is past it.
    let past = admin_revoke(&server, "j-past", now - 3600);
    assert_eq!(
        past,
        serde_json::json!({
            "revoked": false,
            "stored": false,
            "jti": "j-past",
            "reason": "token already expired: exp plus the leeway is in the past, so nothing was stored",
        })
    );
    // Past its exp but within the leeway, verifiers still accept the token: stored.
    let leeway = admin_revoke(&server, "j-leeway", now - 10);
    assert_eq!(
        (&leeway["revoked"], &leeway["stored"]),
        (&true.into(), &true.into())
    );
    // A future exp is stored once; again, it is already covered, and says so.
    let first = admin_revoke(&server, "j-future", now + 600);
    assert_eq!(first["stored"], true, "{first}");
    let again = admin_revoke(&server, "j-future", now + 600);
    assert_eq!(
        (&again["revoked"], &again["stored"]),
        (&true.into(), &false.into())
    );
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .contains("already holds this jti"),
        "{again}"
    );
    // Stored: j-leeway and j-future, not j-past.
    server.wait_metrics("two live revocations", |t| {
        common::metric_sum(t, "subzero_revocations_live") == 2
    });
}
