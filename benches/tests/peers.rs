//! End-to-end checks of the bench peers over loopback: each server answers pipelined requests
//! and exits cleanly on SIGTERM; the gateway peer verifies, caches and rejects tokens; `loadgen`
//! sends every request its schedule holds and accounts for each in one JSON line. Rates and
//! durations are measured by `cargo xtask bench`, never asserted here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use subzero_benches::{parse_response, ResponseParse};

/// A peer server process; killed on drop if a test fails before stopping it.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(bin: &str, extra_args: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg(&listen)
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{bin} never printed `listening on`"));
        assert_eq!(addr, listen, "{bin} must listen where it was told");
        Server { child, addr }
    }

    /// Sends SIGTERM and asserts a clean exit.
    fn stop(mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "server exited with {status} on SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Writes all `requests` in one write (pipelined) and reads exactly that many responses.
fn pipelined(addr: &str, requests: &[Vec<u8>]) -> Vec<Response> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&requests.concat()).unwrap();
    let mut buf = Vec::new();
    let mut responses = Vec::new();
    let mut chunk = [0_u8; 4096];
    while responses.len() < requests.len() {
        match parse_response(&buf).unwrap() {
            ResponseParse::Complete { status, n_bytes } => {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut parsed = httparse::Response::new(&mut headers);
                let httparse::Status::Complete(head_len) = parsed.parse(&buf).unwrap() else {
                    unreachable!()
                };
                responses.push(Response {
                    status,
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: String::from_utf8_lossy(&buf[head_len..n_bytes]).into_owned(),
                });
                buf.drain(..n_bytes);
            }
            ResponseParse::Partial => {
                let n = stream.read(&mut chunk).unwrap();
                assert!(
                    n > 0,
                    "server closed after {} of {} responses",
                    responses.len(),
                    requests.len()
                );
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    assert!(buf.is_empty(), "extra bytes after the responses: {buf:?}");
    responses
}

fn get(path: &str, authorization: Option<&str>) -> Vec<u8> {
    let auth = authorization
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nhost: test\r\n{auth}\r\n").into_bytes()
}

fn check_hello(bin: &str) {
    let server = Server::start(bin, &[]);
    let requests = vec![
        get("/", None),
        get("/a/b", None),
        get("/?q=1", None),
        get("/", None),
    ];
    let responses = pipelined(&server.addr, &requests);
    for response in &responses {
        assert_eq!(response.status, 200, "{bin}: {response:?}");
        assert_eq!(response.body, "ok", "{bin}");
    }
    // A second connection, requests split at an awkward byte, still works (keep-alive).
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = get("/", None);
    stream.write_all(&request[..7]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(&request[7..]).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 1024];
    while !matches!(
        parse_response(&buf),
        Ok(ResponseParse::Complete { status: 200, .. })
    ) {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "{bin} closed a split request's connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    server.stop();
}

#[test]
fn hyper_hello_answers_pipelined_requests() {
    check_hello(env!("CARGO_BIN_EXE_peer-hyper-hello"));
}

#[test]
fn glommio_hello_answers_pipelined_requests() {
    check_hello(env!("CARGO_BIN_EXE_peer-glommio-hello"));
}

#[test]
fn uring_hello_answers_pipelined_requests() {
    check_hello(env!("CARGO_BIN_EXE_peer-uring-hello"));
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn mint(key: &SigningKey, kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

fn claims(sub: &str, aud: &str, exp_in_s: i64) -> serde_json::Value {
    let now = now_s();
    serde_json::json!({
        "iss": "subzero", "sub": sub, "aud": aud, "exp": now + exp_in_s,
        "nbf": now - 10, "iat": now - 10, "jti": sub, "scope": "read write",
    })
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("subzero-benches-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn gateway_verifies_caches_and_rejects() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let other_key = SigningKey::from_bytes(&[9; 32]);
    let jwk = serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "kid": "k1",
        "x": b64(key.verifying_key().as_bytes()),
    });
    let dir = temp_dir("gateway");
    let jwks_path = dir.join("jwks.json");
    std::fs::write(&jwks_path, serde_json::json!({"keys": [jwk]}).to_string()).unwrap();

    let valid = mint(&key, "k1", &claims("alice", "subzero", 600));
    let expired = mint(&key, "k1", &claims("bob", "subzero", -3600));
    let wrong_audience = mint(&key, "k1", &claims("carol", "elsewhere", 600));
    let forged = mint(&other_key, "k1", &claims("mallory", "subzero", 600));
    let unknown_kid = mint(&key, "k2", &claims("dave", "subzero", 600));

    let server = Server::start(
        env!("CARGO_BIN_EXE_peer-hyper-gateway"),
        &["--jwks", jwks_path.to_str().unwrap()],
    );
    let bearer = |token: &str| format!("Bearer {token}");
    let requests = vec![
        get("/v1/authenticate", Some(&bearer(&valid))),
        get("/v1/authenticate", Some(&bearer(&valid))), // cache hit
        get("/v1/authenticate", Some(&bearer(&expired))),
        get("/v1/authenticate", Some(&bearer(&wrong_audience))),
        get("/v1/authenticate", Some(&bearer(&forged))),
        get("/v1/authenticate", Some(&bearer(&unknown_kid))),
        get("/v1/authenticate", None),
        get("/v1/authenticate", Some("Basic YTpi")),
    ];
    let responses = pipelined(&server.addr, &requests);
    for response in &responses[..2] {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.header("x-auth-subject"), Some("alice"));
        assert_eq!(response.header("x-auth-scopes"), Some("read write"));
        assert_eq!(response.header("x-auth-issuer"), Some("subzero"));
    }
    for (idx, response) in responses[2..].iter().enumerate() {
        assert_eq!(response.status, 401, "request {}: {response:?}", idx + 2);
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
        assert!(response.header("x-auth-subject").is_none());
    }

    let body = serde_json::json!({"tokens": [valid, forged, "not-a-jwt", expired]}).to_string();
    let batch = format!(
        "POST /v1/authenticate/batch HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let responses = pipelined(&server.addr, &[batch, get("/healthz", None)]);
    assert_eq!(responses[0].status, 200, "{responses:?}");
    let results: serde_json::Value = serde_json::from_str(&responses[0].body).unwrap();
    let valid_flags: Vec<bool> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["valid"].as_bool().unwrap())
        .collect();
    assert_eq!(valid_flags, [true, false, false, false]);
    assert_eq!(results["results"][0]["sub"], "alice");
    assert_eq!(responses[1].status, 200);
    server.stop();

    // The same key read from a subzero-style data dir.
    let data_dir = temp_dir("gateway-data");
    std::fs::create_dir_all(data_dir.join("keys")).unwrap();
    std::fs::write(data_dir.join("keys/k1.jwk.json"), jwk.to_string()).unwrap();
    let server = Server::start(
        env!("CARGO_BIN_EXE_peer-hyper-gateway"),
        &["--jwks", data_dir.to_str().unwrap()],
    );
    let responses = pipelined(
        &server.addr,
        &[
            get("/v1/authenticate", Some(&bearer(&valid))),
            get("/v1/authenticate", Some(&bearer(&forged))),
        ],
    );
    assert_eq!(responses[0].status, 200);
    assert_eq!(responses[1].status, 401);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&data_dir);
}

fn loadgen(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "loadgen must print one line: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn loadgen_offers_the_fixed_rate() {
    let server = Server::start(env!("CARGO_BIN_EXE_peer-hyper-hello"), &[]);
    let url = format!("http://{}/", server.addr);
    let report = loadgen(&[
        "--url",
        &url,
        "--rate",
        "2000",
        "--duration-s",
        "1",
        "--connections",
        "8",
    ]);
    for key in [
        "requests",
        "responses",
        "errors",
        "non_2xx",
        "duration_s",
        "achieved_rps",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
    ] {
        assert!(
            report.get(key).is_some_and(serde_json::Value::is_number),
            "missing {key}: {report}"
        );
    }
    // Every scheduled request is sent and answered; how fast is the bench report's business.
    assert_eq!(report["requests"].as_u64(), Some(2000), "{report}");
    assert_eq!(report["responses"].as_u64(), Some(2000), "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert_eq!(report["non_2xx"].as_u64(), Some(0), "{report}");
    assert!(report["achieved_rps"].as_f64().unwrap() > 0.0, "{report}");
    let p50 = report["p50_us"].as_u64().unwrap();
    let p99 = report["p99_us"].as_u64().unwrap();
    let max = report["max_us"].as_u64().unwrap();
    assert!(p50 >= 1 && p50 <= p99 && p99 <= max, "{report}");

    // Pipelined and with --addr/--path: the same accounting holds.
    let report = loadgen(&[
        "--addr",
        &server.addr,
        "--path",
        "/x",
        "--rate",
        "1000",
        "--duration-s",
        "1",
        "--connections",
        "2",
        "--pipeline",
        "4",
    ]);
    assert_eq!(report["responses"].as_u64(), Some(1000), "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    server.stop();
}

#[test]
fn loadgen_counts_non_2xx_and_sends_headers() {
    let key = SigningKey::from_bytes(&[3; 32]);
    let dir = temp_dir("loadgen-gateway");
    let jwks_path = dir.join("jwks.json");
    let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": b64(key.verifying_key().as_bytes())});
    std::fs::write(&jwks_path, serde_json::json!({"keys": [jwk]}).to_string()).unwrap();
    let server = Server::start(
        env!("CARGO_BIN_EXE_peer-hyper-gateway"),
        &["--jwks", jwks_path.to_str().unwrap()],
    );
    let url = format!("http://{}/v1/authenticate", server.addr);
    let token = mint(&key, "k1", &claims("erin", "subzero", 600));
    let good = format!("Authorization: Bearer {token}");
    let report = loadgen(&[
        "--url",
        &url,
        "--rate",
        "500",
        "--duration-s",
        "1",
        "--connections",
        "4",
        "--header",
        &good,
    ]);
    assert_eq!(report["responses"].as_u64(), Some(500), "{report}");
    assert_eq!(report["non_2xx"].as_u64(), Some(0), "{report}");
    let report = loadgen(&[
        "--url",
        &url,
        "--rate",
        "500",
        "--duration-s",
        "1",
        "--connections",
        "4",
        "--header",
        "Authorization: Bearer nope",
    ]);
    assert_eq!(report["responses"].as_u64(), Some(500), "{report}");
    assert_eq!(report["non_2xx"].as_u64(), Some(500), "{report}");
    assert_eq!(report["status"]["401"].as_u64(), Some(500), "{report}");
    // --bearer-file: request i carries token i mod n; one token of three is bad.
    let bearer_file = dir.join("tokens.txt");
    let other = mint(&key, "k1", &claims("frank", "subzero", 600));
    std::fs::write(&bearer_file, format!("{token}\n{other}\nnot-a-token\n")).unwrap();
    let report = loadgen(&[
        "--url",
        &url,
        "--rate",
        "300",
        "--duration-s",
        "1",
        "--connections",
        "3",
        "--bearer-file",
        bearer_file.to_str().unwrap(),
    ]);
    assert_eq!(report["responses"].as_u64(), Some(300), "{report}");
    assert_eq!(report["status"]["200"].as_u64(), Some(200), "{report}");
    assert_eq!(report["status"]["401"].as_u64(), Some(100), "{report}");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn loadgen_reports_errors_when_nothing_answers() {
    // A listener that accepts (the kernel does it) but never answers: every request is an error
    // after the drain, and loadgen still stops and prints its line.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let report = loadgen(&[
        "--addr",
        &addr,
        "--rate",
        "100",
        "--duration-s",
        "1",
        "--connections",
        "2",
        "--drain-s",
        "1",
    ]);
    assert_eq!(report["requests"].as_u64(), Some(100), "{report}");
    assert_eq!(report["responses"].as_u64(), Some(0), "{report}");
    assert_eq!(report["errors"].as_u64(), Some(100), "{report}");
    drop(listener);
}

#[test]
fn crypto_ceiling_prints_one_json_line() {
    for mode in ["sign", "verify", "verify-strict", "verify-batch"] {
        let output = Command::new(env!("CARGO_BIN_EXE_crypto-ceiling"))
            .args(["--mode", mode, "--batch", "8", "--seconds", "1"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(line["mode"], mode);
        let ops_per_s = line["ops_per_s"].as_f64().unwrap();
        let us_per_op = line["us_per_op"].as_f64().unwrap();
        assert!(ops_per_s > 0.0);
        assert!((ops_per_s * us_per_op / 1e6 - 1.0).abs() < 1e-6, "{line}");
    }
}
