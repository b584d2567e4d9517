//! End to end over loopback: what `/metrics` promises, and settings from a TOML file taking
//! effect in the running server (header, body, connection and request-time limits; the token
//! pool's `min_remaining_s` and `freshness_s`; `auth.strict_batch`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{b64, bearer, metric, poll, token_part, End, Server};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use subzero::auth::{self, Claims, KeyRing};

/// Writes `text` as `<dir>/<name>.toml` and starts a server on it with `shards` shards.
fn start(dir: &Path, name: &str, text: &str, shards: &str) -> Server {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let data = dir.join(format!("{name}-data"));
    let config = path.to_str().unwrap();
    Server::start(&data, &["--config", config, "--shards", shards])
}

const CLIENT: &str = r#"
[[clients]]
id = "svc-a"
secret = "s3cret-s3cret"
audiences = ["api"]
scopes = ["read"]
"#;

const GRANT: &str = "grant_type=client_credentials&client_id=svc-a&client_secret=s3cret-s3cret";

fn token_request(server: &Server) -> String {
    let resp = server.request(
        "POST",
        "/v1/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        GRANT,
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()["access_token"].as_str().unwrap().to_owned()
}

/// The metric family a sample, `# HELP` or `# TYPE` line belongs to (`_bucket`/`_count`/`_sum`
/// samples belong to their histogram or summary).
fn family_of(line: &str) -> &str {
    let name = match line
        .strip_prefix("# TYPE ")
        .or_else(|| line.strip_prefix("# HELP "))
    {
        Some(rest) => rest.split(' ').next().unwrap(),
        None => line.split(['{', ' ']).next().unwrap(),
    };
    subzero::monitor::families::family_of(name)
}

#[test]
fn metrics_has_every_family_the_readme_promises_for_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "metrics", CLIENT, "2");
    let token = token_request(&server);
    // Traffic on many connections, so SO_REUSEPORT gives both shards some; until each shard's
    // section shows responses by status.
    let responses = |text: &str, shard: usize| {
        text.lines().any(|l| {
            l.starts_with(&format!(
                "subzero_responses_total{{shard=\"{shard}\",code=\"200\"}}"
            ))
        })
    };
    let text = poll("both shards answering", Duration::from_secs(10), || {
        let auth = bearer(&token);
        for _ in 0..8 {
            let resp = server.request("GET", "/v1/authenticate", &[("Authorization", &auth)], "");
            assert_eq!(resp.status, 200, "{resp:?}");
        }
        let text = server.metrics();
        (responses(&text, 0) && responses(&text, 1)).then_some(text)
    });

    // README: per-shard latency quantiles per operation, cache and pool counters, responses
    // by status, mesh depths, gate mode.
    let per_shard = [
        "subzero_request_duration_seconds_bucket",
        "subzero_shard_cpu_utilization",
        "subzero_degraded",
        "subzero_perf_available",
        "subzero_cache_hits_total",
        "subzero_cache_misses_total",
        "subzero_cache_entries",
        "subzero_pool_hits_total",
        "subzero_pool_misses_total",
        "subzero_pool_tokens",
        "subzero_responses_total",
        "subzero_mesh_queue_depth",
    ];
    for family in per_shard {
        for shard in 0..2 {
            let prefix = format!("{family}{{shard=\"{shard}\"");
            assert!(
                text.lines().any(|l| l.starts_with(&prefix)),
                "no {family} sample for shard {shard}:\n{text}"
            );
        }
    }
    assert!(
        (0..2).any(|shard| text.lines().any(|l| l.starts_with(&format!(
            "subzero_request_duration_seconds_bucket{{shard=\"{shard}\",op=\"authenticate_cache_hit\",le=\"+Inf\"}}"
        )))),
        "no histogram of cache-hit authentication:\n{text}"
    );
    assert!(
        (0..2).any(|shard| text.lines().any(|l| l.starts_with(&format!(
            "subzero_request_latency_seconds{{shard=\"{shard}\",op=\"authenticate_cache_hit\",quantile=\"0.99\"}}"
        )))),
        "no exact p99 of cache-hit authentication:\n{text}"
    );
    assert_eq!(
        metric(&text, "subzero_gate_mode{mode=\"off\"}"),
        Some(1),
        "{text}"
    );
    // Families that declare a type keep it: the buckets are a histogram, the exact quantiles a
    // summary, the gate mode a gauge.
    for declared in [
        "# TYPE subzero_request_duration_seconds histogram",
        "# TYPE subzero_request_latency_seconds summary",
        "# TYPE subzero_gate_mode gauge",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE subzero_degraded gauge",
        "# TYPE subzero_perf_available gauge",
    ] {
        assert!(
            text.lines().any(|l| l == declared),
            "no {declared:?}:\n{text}"
        );
    }
    assert_help_and_type_once(&text);
}

/// Text format: each family's lines are contiguous and open with exactly one `# HELP` and one
/// `# TYPE`, and every family is in the registry (monitor/families.rs).
fn assert_help_and_type_once(text: &str) {
    let mut done: Vec<&str> = Vec::new();
    let mut current = "";
    let mut headers = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let family = family_of(line);
        if family != current {
            assert!(!done.contains(&family), "{family} is split:\n{text}");
            assert!(
                current.is_empty() || headers == 2,
                "{current}: no HELP+TYPE"
            );
            done.push(current);
            current = family;
            headers = 0;
            assert!(
                line.starts_with("# HELP "),
                "{family} does not open with # HELP:\n{text}"
            );
        }
        if line.starts_with('#') {
            headers += 1;
            assert!(headers <= 2, "{family}: HELP or TYPE twice:\n{text}");
            assert!(
                !line.contains(subzero::monitor::families::UNDOCUMENTED),
                "{family} is not in monitor/families.rs"
            );
        }
    }
    assert!(done.len() > 60, "{} families", done.len());
}

#[test]
fn header_body_and_request_time_limits_from_the_config_file_apply() {
    let dir = tempfile::tempdir().unwrap();
    // Defaults: 16 KiB of headers, 1 MiB of body, 10 s to send a request.
    let config =
        "[server]\nmax_header_bytes = 1024\nmax_body_bytes = 2048\nrequest_timeout_s = 1\n";
    let server = start(dir.path(), "limits", config, "1");
    let header = |n: usize| "x".repeat(n);
    let small = server.request("GET", "/healthz", &[("X-Pad", &header(300))], "");
    assert_eq!(small.status, 200, "{small:?}");
    let big = server.request("GET", "/healthz", &[("X-Pad", &header(1500))], "");
    assert_eq!(big.status, 431, "{big:?}");

    let body = |n: usize| format!("{{\"token\":\"{}\"}}", "x".repeat(n));
    let fits = server.request("POST", "/v1/authenticate", &[], &body(1000));
    assert_eq!(fits.status, 401, "{fits:?}");
    let too_big = server.request("POST", "/v1/authenticate", &[], &body(3000));
    assert_eq!(too_big.status, 413, "{too_big:?}");

    // Half a request: 408 after about a second (the default would take 10 s, past this
    // read's 5 s time-out), then the connection closes.
    let mut conn = server.connect();
    conn.raw(b"GET /healthz HTTP/1.1\r\nHost: test\r\n");
    conn.set_read_timeout(Duration::from_secs(5));
    let resp = conn
        .try_read_response()
        .unwrap_or_else(|end| panic!("no 408 for a stalled request: {end:?}"));
    assert_eq!(resp.status, 408, "{resp:?}");
    assert_eq!(conn.wait_closed(Duration::from_secs(5)), End::Closed);
}

#[test]
fn max_connections_per_shard_from_the_config_file_applies() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "conns",
        "[server]\nmax_connections_per_shard = 2\n",
        "1",
    );
    let mut held: Vec<common::Conn> = (0..2).map(|_| server.connect()).collect();
    for conn in &mut held {
        conn.send("GET", "/healthz", &[], "");
        assert_eq!(conn.read_response().status, 200, "admitted and served");
    }
    let mut third = server.connect();
    third.send("GET", "/healthz", &[], "");
    assert_eq!(
        third.try_read_response().map(|r| r.status),
        Err(End::Closed),
        "a third connection on a shard limited to 2"
    );
    // A slot frees when a connection closes.
    drop(held.pop());
    poll(
        "a new connection served after one closed",
        Duration::from_secs(5),
        || {
            let mut conn = server.connect();
            conn.send("GET", "/healthz", &[], "");
            conn.try_read_response()
                .ok()
                .map(|r| assert_eq!(r.status, 200))
        },
    );
    // Scraped over the connection still held: a new one could find the shard full.
    let conn = &mut held[0];
    poll(
        "the refused connection counted",
        Duration::from_secs(10),
        || {
            conn.send("GET", "/metrics", &[], "");
            let text = conn.read_response().body;
            let rejected = metric(&text, "subzero_connections_rejected_total{shard=\"0\"}");
            (rejected.unwrap_or(0) >= 1).then_some(())
        },
    );
}

#[test]
fn pool_settings_from_the_config_file_bound_what_it_hands_out() {
    let dir = tempfile::tempdir().unwrap();
    // Freshness binds first here (defaults: 120 s fresh, 600 s remaining, 900 s lifetime).
    let fresh = start(
        dir.path(),
        "fresh",
        &format!(
            "[auth]\ntoken_ttl_s = 60\n\n[pool]\nmin_remaining_s = 10\nfreshness_s = 2\n{CLIENT}"
        ),
        "1",
    );
    // The remaining lifetime binds first here: a token is too short-lived after 2 s.
    let remaining = start(
        dir.path(),
        "remaining",
        &format!(
            "[auth]\ntoken_ttl_s = 12\n\n[pool]\nmin_remaining_s = 10\nfreshness_s = 60\n{CLIENT}"
        ),
        "1",
    );
    let pooled = |text: &str| metric(text, "subzero_pool_tokens{shard=\"0\"}").unwrap_or(0);
    for server in [&fresh, &remaining] {
        token_request(server); // registers the client's key with the pool
        server.wait_metrics("a pre-signed token", |t| pooled(t) >= 1);
    }
    // Let the pooled tokens age past both bounds; the pools must drop and replace them.
    std::thread::sleep(Duration::from_secs(4));
    let hits = |text: &str| metric(text, "subzero_pool_hits_total{shard=\"0\"}").unwrap_or(0);
    let hits_before = [hits(&fresh.metrics()), hits(&remaining.metrics())];
    for _ in 0..3 {
        let now_s = subzero::unix_now_s();
        let claims = token_part(&token_request(&fresh), 1);
        let iat = claims["iat"].as_u64().unwrap();
        assert!(
            iat + 2 > now_s,
            "handed out a token {}s old with freshness_s = 2",
            now_s - iat
        );
        let now_s = subzero::unix_now_s();
        let claims = token_part(&token_request(&remaining), 1);
        let exp = claims["exp"].as_u64().unwrap();
        assert!(
            exp >= now_s + 10,
            "handed out a token with {}s left with min_remaining_s = 10",
            exp.saturating_sub(now_s)
        );
        // Past the next refill tick, so the next take can find a token signed earlier.
        std::thread::sleep(Duration::from_millis(1100));
    }
    // And the pools did serve pre-signed tokens in that time, not only fresh signatures.
    for (server, before) in [(&fresh, hits_before[0]), (&remaining, hits_before[1])] {
        server.wait_metrics("pool hits after the tokens aged", |t| hits(t) > before);
    }
}

/// An EdDSA token whose `R` carries a point of order 2: a valid signature under the
/// cofactored equation (which Ed25519 batch verification checks) that `verify_strict`
/// refuses. Only the key's holder can make one.
fn mixed_order_r_token(ring: &KeyRing, claims: &Claims, r_seed: u64) -> String {
    let header = format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, ring.current_kid());
    let input = format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(&serde_json::to_vec(claims).unwrap())
    );
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    let order_two = CompressedEdwardsY(minus_one).decompress().unwrap();
    let nonce = Scalar::from(r_seed) * Scalar::from(0x1234_5678_9abc_def1u64);
    let big_r = (EdwardsPoint::mul_base(&nonce) + order_two).compress();
    let secret = ring.signing_key().to_scalar();
    let public = ring.signing_key().verifying_key().to_bytes();
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA512);
    hasher.update(big_r.as_bytes());
    hasher.update(&public);
    hasher.update(input.as_bytes());
    let hram = Scalar::from_bytes_mod_order_wide(hasher.finish().as_ref().try_into().unwrap());
    let s = nonce + hram * secret;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(big_r.as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    format!("{input}.{}", b64(&sig))
}

#[test]
fn strict_batch_from_the_config_file_refuses_what_verify_strict_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "strict", "[auth]\nstrict_batch = true\n", "1");
    let now_s = subzero::unix_now_s();
    let ring = KeyRing::load(&dir.path().join("strict-data"), now_s).unwrap();
    let claims = |sub: &str| {
        let aud = vec!["subzero".to_owned()];
        Claims::new_for("subzero", sub, aud, &[], 600, now_s, auth::new_jti())
    };
    // Fast batch verification would accept about half of these (when its random coefficient
    // is even); strict must refuse all 16.
    for seed in 1..=16u64 {
        let mut tokens: Vec<String> = (0..7)
            .map(|i| {
                auth::sign(
                    ring.signing_key(),
                    ring.current_kid(),
                    &claims(&format!("u{i}")),
                )
            })
            .collect();
        let crafted = mixed_order_r_token(&ring, &claims("crafted"), seed);
        tokens.push(crafted.clone());
        let body = serde_json::json!({ "tokens": tokens }).to_string();
        let resp = server.request("POST", "/v1/authenticate/batch", &[], &body);
        assert_eq!(resp.status, 200, "{}", resp.body);
        let json = resp.json();
        for i in 0..7 {
            assert_eq!(json["results"][i]["valid"], true, "seed {seed} token {i}");
        }
        assert_eq!(
            json["results"][7]["valid"], false,
            "seed {seed}: strict_batch = true accepted a signature verify_strict refuses"
        );
        assert_eq!(
            json["results"][7]["error_description"],
            "token signature is invalid"
        );
        // The single-token path is always strict.
        let single = server.request(
            "GET",
            "/v1/authenticate",
            &[("Authorization", &bearer(&crafted))],
            "",
        );
        assert_eq!(single.status, 401, "seed {seed}");
    }
}
