//! The hostile-input table (issue 12): one real server on two shards, a good client that
//! authenticates (and writes to the vault now and then) throughout and must see no error, and
//! a table of hostile requests, each with the status and OAuth error code it must get:
//! duplicate JSON names in JWT headers and payloads, `crit`, `jku`/`x5u`/`jwk` headers,
//! odd `exp`/`nbf` numbers, 2/4/5 segments, non-canonical base64url, JSON nesting bombs and
//! huge numbers in every body, and the batch at and over its limit. The whole table is printed.
//! The attacks of issue 8 stay in e2e_attack.rs and e2e_http.rs as they are.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};

use common::{basic, bearer, issue, Conn, Server};
use subzero::auth::KeyRing;

const ADMIN: &str = "admin-token-for-hostile-tests";
const CLIENT_SECRET: &str = "svc-a-secret-0123456789abcdef";
const MAX_BATCH: usize = 8;
const SCHEMA: &str = "definition user {}\ndefinition doc {\n  relation viewer: user\n  permission view = viewer\n}\n";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_s() -> u64 {
    subzero::unix_now_s()
}

/// Signs whatever header and payload text it is given (already encoded), so the signature is
/// valid over exactly the bytes sent: a refusal is then about the text, never the signature.
fn sign_text(key: &SigningKey, header_b64: &str, payload_b64: &str) -> String {
    let input = format!("{header_b64}.{payload_b64}");
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64url(&signature.to_bytes()))
}

/// Our key and `kid`, and builders of tokens signed with it.
struct Forge {
    key: SigningKey,
    kid: String,
}

impl Forge {
    fn new(data_dir: &std::path::Path) -> Forge {
        let ring = KeyRing::load(data_dir, now_s()).expect("key ring");
        Forge {
            key: ring.signing_key().clone(),
            kid: ring.current_kid().to_owned(),
        }
    }

    fn header(&self) -> String {
        format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, self.kid)
    }

    /// A payload our verifier accepts, with `extra` members spliced in (`,"k":v` form).
    fn payload(extra: &str) -> String {
        let now = now_s();
        format!(
            r#"{{"iss":"subzero","sub":"mallory","aud":"subzero","iat":{now},"jti":"j{now}"{extra},"exp":{}}}"#,
            now + 600
        )
    }

    fn token(&self, header: &str, payload: &str) -> String {
        sign_text(
            &self.key,
            &b64url(header.as_bytes()),
            &b64url(payload.as_bytes()),
        )
    }

    /// A payload with the given `exp` and `nbf` JSON texts (no other time claims).
    fn timed(&self, exp: &str, nbf: &str) -> String {
        let payload = format!(
            r#"{{"iss":"subzero","sub":"mallory","aud":"subzero","exp":{exp},"nbf":{nbf}}}"#
        );
        self.token(&self.header(), &payload)
    }
}

/// What a row sends.
enum Send {
    /// `GET /v1/authenticate` with this bearer token.
    Authenticate(String),
    /// A `POST` head declaring a body of this many bytes, sent without the body (the answer
    /// must come from the head alone).
    Head(&'static str, usize),
    /// Any request: method, path, `Authorization` value (if any), body.
    Request(&'static str, String, Option<String>, String),
}

struct Row {
    case: String,
    send: Send,
    status: u16,
    /// The OAuth `error` code expected (`""`: none, for a 200).
    error: &'static str,
}

fn row(case: impl Into<String>, send: Send, status: u16, error: &'static str) -> Row {
    Row {
        case: case.into(),
        send,
        status,
        error,
    }
}

fn post(path: &str, auth: Option<String>, body: impl Into<String>) -> Send {
    Send::Request("POST", path.to_owned(), auth, body.into())
}

/// The JWT rows: each token is signed with our key unless said otherwise.
#[expect(clippy::too_many_lines, reason = "one table, read top to bottom")]
fn token_rows(forge: &Forge) -> Vec<Row> {
    let kid = &forge.kid;
    let good_payload = Forge::payload("");
    let refuse =
        |case: &str, token: String| row(case, Send::Authenticate(token), 401, "invalid_token");
    let mut rows = vec![row(
        "control: a token the test signs",
        Send::Authenticate(forge.token(&forge.header(), &good_payload)),
        200,
        "",
    )];
    // Duplicate names, in the header and the payload, known to the verifier or not.
    for (case, header) in [
        (
            "header: kid twice",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","kid":"{kid}"}}"#),
        ),
        (
            "header: alg twice (EdDSA, none)",
            format!(r#"{{"alg":"EdDSA","alg":"none","kid":"{kid}"}}"#),
        ),
        (
            "header: typ twice (JWT, oauth-id-jag+jwt)",
            format!(r#"{{"alg":"EdDSA","typ":"JWT","typ":"oauth-id-jag+jwt","kid":"{kid}"}}"#),
        ),
        (
            "header: an escaped repeat (\"\\u006bid\")",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","\u006bid":"{kid}"}}"#),
        ),
    ] {
        rows.push(refuse(case, forge.token(&header, &good_payload)));
    }
    for (case, extra) in [
        ("payload: sub twice", r#","sub":"admin""#),
        (
            "payload: an unknown claim twice (role)",
            r#","role":"user","role":"admin""#,
        ),
        ("payload: act.sub twice", r#","act":{"sub":"a","sub":"b"}"#),
        ("payload: scope twice", r#","scope":"read","scope":"admin""#),
    ] {
        rows.push(refuse(
            case,
            forge.token(&forge.header(), &Forge::payload(extra)),
        ));
    }
    // crit: we implement no extension, so any crit is refused (even an empty list).
    for (case, crit) in [
        ("header: crit [\"exp\"]", r#"["exp"]"#),
        (
            "header: crit [\"b64\"] with b64 false",
            r#"["b64"],"b64":false"#,
        ),
        ("header: crit []", "[]"),
    ] {
        let header = format!(r#"{{"alg":"EdDSA","kid":"{kid}","crit":{crit}}}"#);
        rows.push(refuse(case, forge.token(&header, &good_payload)));
    }
    // jwk/jku/x5u: never used. The attacker's key in `jwk` (with its own kid, or ours) and a
    // jku/x5u URL do not select a key; a token of ours carrying them is still ours.
    let attacker = SigningKey::generate(&mut rand::rngs::OsRng);
    let attacker_x = b64url(attacker.verifying_key().as_bytes());
    let attacker_jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{attacker_x}"}}"#);
    for (case, header) in [
        (
            "header: attacker's jwk, attacker's kid, attacker-signed",
            format!(r#"{{"alg":"EdDSA","kid":"attacker","jwk":{attacker_jwk}}}"#),
        ),
        (
            "header: attacker's jwk, our kid, attacker-signed",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","jwk":{attacker_jwk}}}"#),
        ),
        (
            "header: jku to the attacker, attacker-signed",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","jku":"https://evil.example/jwks.json"}}"#),
        ),
        (
            "header: x5u to the attacker, attacker-signed",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","x5u":"https://evil.example/cert.pem"}}"#),
        ),
        (
            "header: no kid, attacker's jwk, attacker-signed",
            format!(r#"{{"alg":"EdDSA","jwk":{attacker_jwk}}}"#),
        ),
    ] {
        let token = sign_text(
            &attacker,
            &b64url(header.as_bytes()),
            &b64url(good_payload.as_bytes()),
        );
        rows.push(refuse(case, token));
    }
    let ignored = format!(
        r#"{{"alg":"EdDSA","kid":"{kid}","jku":"https://evil.example/j","x5u":"https://evil.example/c","jwk":{attacker_jwk}}}"#
    );
    rows.push(row(
        "header: jku+x5u+jwk on a token we signed (ignored, never fetched)",
        Send::Authenticate(forge.token(&ignored, &good_payload)),
        200,
        "",
    ));
    // exp and nbf: strings, floats, 1e30, negatives, a 31-digit integer.
    let now = now_s();
    let (exp, nbf) = (now + 600, now - 10);
    for (case, exp_text, nbf_text, status) in [
        (
            "exp as a string",
            format!("\"{exp}\""),
            nbf.to_string(),
            401,
        ),
        (
            "exp as a float (RFC 7519 NumericDate; truncated)",
            format!("{exp}.5"),
            nbf.to_string(),
            200,
        ),
        ("exp 1e30", "1e30".to_owned(), nbf.to_string(), 401),
        (
            "exp 10^30 as an integer",
            format!("1{}", "0".repeat(30)),
            nbf.to_string(),
            401,
        ),
        ("exp negative", "-1".to_owned(), nbf.to_string(), 401),
        ("exp -1e30", "-1e30".to_owned(), nbf.to_string(), 401),
        (
            "exp 1e400 (not an f64)",
            "1e400".to_owned(),
            nbf.to_string(),
            401,
        ),
        (
            "nbf as a string",
            exp.to_string(),
            format!("\"{nbf}\""),
            401,
        ),
        ("nbf as a float", exp.to_string(), format!("{nbf}.5"), 200),
        ("nbf 1e30", exp.to_string(), "1e30".to_owned(), 401),
        ("nbf negative", exp.to_string(), "-5".to_owned(), 401),
        ("exp null", "null".to_owned(), nbf.to_string(), 401),
    ] {
        let error = if status == 200 { "" } else { "invalid_token" };
        rows.push(row(
            case,
            Send::Authenticate(forge.timed(&exp_text, &nbf_text)),
            status,
            error,
        ));
    }
    // Segments.
    let good = forge.token(&forge.header(), &good_payload);
    let (head, rest) = good.split_once('.').unwrap();
    let (body, sig) = rest.split_once('.').unwrap();
    for (case, token) in [
        ("2 segments", format!("{head}.{body}")),
        ("4 segments", format!("{good}.{sig}")),
        (
            "5 segments (JWE shape)",
            format!("{head}.{body}.{sig}.{sig}.{sig}"),
        ),
        ("3 segments, empty signature", format!("{head}.{body}.")),
    ] {
        rows.push(refuse(case, token));
    }
    rows.extend(base64_rows(forge, &good_payload));
    rows
}

/// Non-canonical base64url, each signed over exactly the text sent.
fn base64_rows(forge: &Forge, good_payload: &str) -> Vec<Row> {
    let header = forge.header();
    let std = base64::engine::general_purpose::STANDARD;
    let std_no_pad = base64::engine::general_purpose::STANDARD_NO_PAD;
    // A claim whose bytes encode to '-' and '_' in base64url ('+' and '/' in standard).
    let payload = Forge::payload(r#","note":"??>>??>>~~~""#);
    assert!(b64url(payload.as_bytes()).contains(['-', '_']));
    let header_b64 = b64url(header.as_bytes());
    let mut trailing = b64url(header.as_bytes());
    assert!(
        !trailing.len().is_multiple_of(4),
        "the header needs trailing bits"
    );
    // The last character carries unused low bits; set one.
    let last = trailing.pop().unwrap();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.iter().position(|&c| c == last as u8).unwrap();
    trailing.push(alphabet[idx | 1] as char);
    let cases = [
        (
            "base64: padded header ('=')",
            std.encode(header.as_bytes()).replace(['+', '/'], "-"),
            b64url(good_payload.as_bytes()),
        ),
        (
            "base64: standard alphabet payload ('+' '/')",
            header_b64.clone(),
            std_no_pad.encode(payload.as_bytes()),
        ),
        (
            "base64: trailing bits set in the header",
            trailing,
            b64url(good_payload.as_bytes()),
        ),
        (
            "base64: whitespace inside the payload",
            header_b64.clone(),
            {
                let mut p = b64url(good_payload.as_bytes());
                p.insert(8, ' ');
                p
            },
        ),
    ];
    let mut rows = Vec::new();
    for (case, h, p) in cases {
        assert!(
            case.contains("trailing") || h.contains('=') || p.contains(['+', '/', ' ']),
            "{case}"
        );
        rows.push(row(
            case,
            Send::Authenticate(sign_text(&forge.key, &h, &p)),
            401,
            "invalid_token",
        ));
    }
    rows
}

/// An endpoint of the body table: name, path, who calls (`None`, `"user"`, `"client"` or the
/// admin token), and the body around a hostile value.
type Endpoint = (
    &'static str,
    &'static str,
    Option<&'static str>,
    fn(&str) -> String,
);

/// `[[[...]]]` `depth` deep.
fn nest(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// `{"a":{"a":...}}` `depth` deep.
fn nest_objects(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

/// Nesting bombs and huge numbers in every JSON body, and the batch at and over its limit.
#[expect(clippy::too_many_lines, reason = "one table, read top to bottom")]
fn body_rows(user: &str, valid: &str) -> Vec<Row> {
    const DEPTH: usize = 20_000;
    const HUGE_INT: &str = "123456789012345678901234567890123456789012345678901234567890";
    let bomb = nest(DEPTH);
    let obj_bomb = nest_objects(DEPTH);
    let endpoints: [Endpoint; 12] = [
        ("batch", "/v1/authenticate/batch", None, |v| {
            format!(r#"{{"tokens":{v}}}"#)
        }),
        ("authenticate (POST)", "/v1/authenticate", None, |v| {
            format!(r#"{{"token":{v}}}"#)
        }),
        ("token (client credentials, JSON)", "/v1/token", None, |v| {
            format!(
                r#"{{"grant_type":"client_credentials","client_id":"svc-a","client_secret":"{CLIENT_SECRET}","scope":{v}}}"#
            )
        }),
        ("ID-JAG grant (JSON)", "/v1/token", None, |v| {
            format!(
                r#"{{"grant_type":"urn:ietf:params:oauth:grant-type:jwt-bearer","assertion":{v}}}"#
            )
        }),
        (
            "token exchange (JSON)",
            "/v1/xaa/delegate",
            Some("client"),
            |v| {
                format!(
                    r#"{{"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange","subject_token":{v}}}"#
                )
            },
        ),
        ("relationships", "/v1/relationships", Some(ADMIN), |v| {
            format!(r#"{{"tuples":{v}}}"#)
        }),
        (
            "permission check",
            "/v1/permissions/check",
            Some(ADMIN),
            |v| {
                format!(
                    r#"{{"subject":"user:alice","permission":"view","object":"doc:1","at_least_revision":{v}}}"#
                )
            },
        ),
        ("threat check", "/v1/threat/check", Some(ADMIN), |v| {
            format!(
                r#"{{"event":"login","subject":"zed","source_ip":"198.51.100.7","outcome":"success","lat":{v},"lon":1.0}}"#
            )
        }),
        ("risk assess", "/v1/risk/assess", Some(ADMIN), |v| {
            format!(r#"{{"subject":"zed","source_ip":"198.51.100.7","scopes":{v}}}"#)
        }),
        ("ratelimit check", "/v1/ratelimit/check", Some(ADMIN), |v| {
            format!(r#"{{"key":"login:zed","cost":{v}}}"#)
        }),
        ("audit batch", "/v1/audit/events", Some(ADMIN), |v| {
            format!(
                r#"{{"events":[{{"actor":"a","action":"b","resource":"c","outcome":"ok","source":{v}}}]}}"#
            )
        }),
        ("channel", "/v1/xaa/channel", Some("user"), |v| {
            format!(r#"{{"agent_token":{v}}}"#)
        }),
    ];
    let mut rows = Vec::new();
    for (name, path, who, shape) in endpoints {
        let auth = match who {
            Some("user") => Some(bearer(user)),
            Some("client") => Some(basic("svc-a", CLIENT_SECRET)),
            Some(admin) => Some(bearer(admin)),
            None => None,
        };
        for (what, value) in [
            (format!("array nesting {DEPTH} deep"), bomb.as_str()),
            (format!("object nesting {DEPTH} deep"), obj_bomb.as_str()),
            ("number 1e999999".to_owned(), "1e999999"),
            ("60-digit integer".to_owned(), HUGE_INT),
            ("number -1e400".to_owned(), "-1e400"),
        ] {
            rows.push(row(
                format!("{name}: {what}"),
                post(path, auth.clone(), shape(value)),
                400,
                "invalid_request",
            ));
        }
    }
    // The vault value and expiry (PUT).
    // An unknown member is skipped, however deep: serde_json skips an ignored value with a
    // heap stack bounded by the body, never by recursion, so this is no stack risk.
    rows.push(row(
        "vault put: unknown member nested 20000 deep (ignored)",
        Send::Request(
            "PUT",
            "/v1/vault/hostile".to_owned(),
            Some(bearer(user)),
            format!(r#"{{"token":"t","x":{bomb}}}"#),
        ),
        200,
        "",
    ));
    for (what, body) in [
        (
            "expires_at 1e999999",
            r#"{"token":"t","expires_at":1e999999}"#.to_owned(),
        ),
        (
            "expires_at 60 digits",
            format!(r#"{{"token":"t","expires_at":{HUGE_INT}}}"#),
        ),
        (
            "expires_at -1",
            r#"{"token":"t","expires_at":-1}"#.to_owned(),
        ),
        (
            "token as a nested object",
            format!(r#"{{"token":{obj_bomb}}}"#),
        ),
    ] {
        rows.push(row(
            format!("vault put: {what}"),
            Send::Request(
                "PUT",
                "/v1/vault/hostile".to_owned(),
                Some(bearer(user)),
                body,
            ),
            400,
            "invalid_request",
        ));
    }
    // The batch at and over its limit.
    let batch = |n: usize| format!(r#"{{"tokens":{}}}"#, serde_json::json!(vec![valid; n]));
    rows.push(row(
        format!("batch: {MAX_BATCH} tokens (the limit)"),
        post("/v1/authenticate/batch", None, batch(MAX_BATCH)),
        200,
        "",
    ));
    rows.push(row(
        format!("batch: {} tokens (over)", MAX_BATCH + 1),
        post("/v1/authenticate/batch", None, batch(MAX_BATCH + 1)),
        400,
        "invalid_request",
    ));
    rows.push(row(
        "batch: 0 tokens",
        post("/v1/authenticate/batch", None, batch(0)),
        400,
        "invalid_request",
    ));
    rows.push(row(
        "batch: a 2 MB body (over the 1 MiB body limit), head only",
        Send::Head("/v1/authenticate/batch", 2_000_000),
        413,
        "invalid_request",
    ));
    rows.push(row(
        "batch: tokens is an object",
        post("/v1/authenticate/batch", None, r#"{"tokens":{"a":"b"}}"#),
        400,
        "invalid_request",
    ));
    rows
}

/// The good client: authenticates on one keep-alive connection and writes to the vault every
/// tenth request, until told to stop; its count of answers and every failure.
struct Good {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(usize, usize, Vec<String>)>,
}

fn good_client(addr: SocketAddr, token: String) -> Good {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut conn = Conn::new(addr);
        let auth = bearer(&token);
        let (mut n_auth, mut n_writes, mut failures) = (0, 0, Vec::new());
        let mut n = 0u64;
        while !flag.load(Ordering::Relaxed) || n_auth < 20 {
            n += 1;
            if n.is_multiple_of(10) {
                let body = format!(r#"{{"token":"good-{n}"}}"#);
                conn.send(
                    "PUT",
                    &format!("/v1/vault/good-{}", n % 7),
                    &[("Authorization", &auth)],
                    &body,
                );
            } else {
                conn.send("GET", "/v1/authenticate", &[("Authorization", &auth)], "");
            }
            match conn.try_read_response() {
                Ok(resp) if resp.status == 200 => {
                    if n.is_multiple_of(10) {
                        n_writes += 1;
                    } else {
                        n_auth += 1;
                    }
                }
                Ok(resp) => {
                    failures.push(format!("request {n}: status {} {}", resp.status, resp.body));
                }
                Err(end) => {
                    failures.push(format!("request {n}: {end:?}"));
                    conn = Conn::new(addr);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (n_auth, n_writes, failures)
    });
    Good { stop, thread }
}

fn run_row(server: &Server, row: &Row) -> (u16, String, String) {
    let resp = match &row.send {
        Send::Authenticate(token) => server.request(
            "GET",
            "/v1/authenticate",
            &[("Authorization", &bearer(token))],
            "",
        ),
        Send::Head(path, content_length) => {
            let mut conn = server.connect();
            conn.raw(
                format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n")
                    .as_bytes(),
            );
            conn.read_response()
        }
        Send::Request(method, path, auth, body) => {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|h| ("Authorization", h.as_str())).collect();
            let mut conn = server.connect();
            conn.send(method, path, &headers, body);
            conn.read_response()
        }
    };
    let (error, description) = if resp.status == 200 {
        (String::new(), String::new())
    } else {
        let json: serde_json::Value = serde_json::from_str(&resp.body).unwrap_or_default();
        (
            json["error"].as_str().unwrap_or("").to_owned(),
            json["error_description"]
                .as_str()
                .unwrap_or(&resp.body)
                .to_owned(),
        )
    };
    (resp.status, error, description)
}

#[test]
fn every_hostile_case_gets_its_answer_while_a_good_client_sees_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("admin.token"), ADMIN).unwrap();
    std::fs::write(d.join("schema.zed"), SCHEMA).unwrap();
    let config = d.join("subzero.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\ntoken_file = \"admin.token\"\n[auth]\nmax_batch_tokens = {MAX_BATCH}\n\
             [permissions]\nschema_file = \"schema.zed\"\n\
             [[clients]]\nid = \"svc-a\"\nsecret = \"{CLIENT_SECRET}\"\naudiences = [\"api\"]\nscopes = [\"read\"]\n\
             [[ratelimit.rules]]\nkey_prefix = \"login:\"\nrate_per_s = 10.0\nburst = 20\n"
        ),
    )
    .unwrap();
    let server = Server::start(d, &["--shards", "2", "--config", config.to_str().unwrap()]);
    let forge = Forge::new(d);
    let good_token = issue(d, "good", "subzero", &["read"]);
    let user = issue(d, "hostile-user", "subzero", &["read", "xaa:callback"]);
    let good = good_client(server.addr, good_token.clone());

    let mut rows = token_rows(&forge);
    rows.extend(body_rows(&user, &good_token));
    let mut wrong = Vec::new();
    println!(
        "{:<70} | {:>6} | {:<18} | description",
        "case", "status", "error"
    );
    for row in &rows {
        let (status, error, description) = run_row(&server, row);
        let ok = status == row.status && error == row.error;
        let mut short = description.replace('\n', " ");
        short.truncate(90);
        println!(
            "{:<70} | {:>6} | {:<18} | {short}{}",
            row.case,
            status,
            error,
            if ok { "" } else { "   <-- WRONG" }
        );
        if !ok {
            wrong.push(format!(
                "{}: got {status} {error:?} ({description}), want {} {:?}",
                row.case, row.status, row.error
            ));
        }
    }

    // The server is whole: still answering, on every shard.
    for _ in 0..8 {
        assert_eq!(server.request("GET", "/healthz", &[], "").status, 200);
    }
    good.stop.store(true, Ordering::Relaxed);
    let (n_auth, n_writes, failures) = good.thread.join().unwrap();
    println!(
        "{} cases; good client: {n_auth} authentications and {n_writes} vault writes, {} errors",
        rows.len(),
        failures.len()
    );
    assert!(
        wrong.is_empty(),
        "{} cases answered wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        failures.is_empty(),
        "the good client saw errors: {failures:?}"
    );
    assert!(
        n_auth >= 20 && n_writes >= 2,
        "the good client ran throughout"
    );
}
