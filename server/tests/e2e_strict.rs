//! One strictness on every path: a token whose signature only the batch equation can accept (its `R` carries an order-2 torsion component) is refused by the single-token paths
//! before and after a batch admitted it into the cache, and by a strict batch.

mod common;

use base64::Engine as _;
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity as _;

use common::{bearer, issue, Server};
use subzero::auth::KeyRing;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Re-signs `token`'s header and payload with the data dir's key so that `R = rB + T`, where
/// `T` is the point of order 2: `[8]SB = [8]R + [8]kA` holds (cofactored), `SB = R + kA` does
/// not (strict).
fn torsion_r_token(data_dir: &std::path::Path, token: &str) -> String {
    let ring = KeyRing::load(data_dir, subzero::unix_now_s()).expect("key ring");
    let key = ring.signing_key();
    let signing_input = token.rsplit_once('.').expect("three segments").0;
    // (0, -1): y = p - 1, x = 0.
    let mut order_two = [0xff_u8; 32];
    order_two[0] = 0xec;
    order_two[31] = 0x7f;
    let t = CompressedEdwardsY(order_two)
        .decompress()
        .expect("order-2 point");
    assert!(t.is_small_order() && !t.is_identity());
    let mut wide = [0u8; 64];
    wide[..32].copy_from_slice(&rand::random::<[u8; 32]>());
    wide[32..].copy_from_slice(&rand::random::<[u8; 32]>());
    let r = Scalar::from_bytes_mod_order_wide(&wide);
    let big_r = (r * ED25519_BASEPOINT_POINT + t).compress();
    let a = key.verifying_key().to_bytes();
    let mut h = ring::digest::Context::new(&ring::digest::SHA512);
    h.update(big_r.as_bytes());
    h.update(&a);
    h.update(signing_input.as_bytes());
    let k_wide: [u8; 64] = h.finish().as_ref().try_into().expect("64 bytes");
    let k = Scalar::from_bytes_mod_order_wide(&k_wide);
    let s = r + k * key.to_scalar();
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(big_r.as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    format!("{signing_input}.{}", b64url(&sig))
}

fn get_status(server: &Server, token: &str) -> (u16, String) {
    let resp = server.request(
        "GET",
        "/v1/authenticate",
        &[("Authorization", &bearer(token))],
        "",
    );
    let why = if resp.status == 200 {
        String::new()
    } else {
        resp.error_description()
    };
    (resp.status, why)
}

fn post_status(server: &Server, token: &str) -> u16 {
    let body = serde_json::json!({ "token": token }).to_string();
    server
        .request("POST", "/v1/authenticate", &[], &body)
        .status
}

/// Batch validity of each token.
fn batch_valid(server: &Server, tokens: &[&str]) -> Vec<bool> {
    let body = serde_json::json!({ "tokens": tokens }).to_string();
    let resp = server.request("POST", "/v1/authenticate/batch", &[], &body);
    assert_eq!(resp.status, 200);
    resp.json()["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["valid"].as_bool().expect("valid"))
        .collect()
}

fn assert_single_paths_refuse(server: &Server, torsion: &str, when: &str) {
    let (status, why) = get_status(server, torsion);
    assert_eq!(status, 401, "GET {when}");
    assert!(why.contains("signature"), "GET {when}: {why}");
    assert_eq!(post_status(server, torsion), 401, "POST {when}");
}

#[test]
fn a_fast_batch_never_widens_what_single_token_paths_accept() {
    let dir = tempfile::tempdir().unwrap();
    // One shard: the batch and the later requests share one cache.
    let server = Server::start(dir.path(), &["--shards", "1"]);
    let good = issue(dir.path(), "alice", "subzero", &["read"]);
    let mallory = issue(dir.path(), "mallory", "subzero", &[]);
    assert_eq!(get_status(&server, &good).0, 200);
    assert_single_paths_refuse(
        &server,
        &torsion_r_token(dir.path(), &mallory),
        "before any batch",
    );
    // The fast batch's equation (random 128-bit coefficients, no cofactor) lets an order-2
    // torsion component through when the token's coefficient is even: half the time. Try fresh
    // torsion tokens (a refused one is remembered as invalid by its bytes) until one is
    // accepted: it then sits in the cache, admitted by the batch, for what follows.
    let mut n_batches = 0;
    let torsion = loop {
        let candidate = torsion_r_token(dir.path(), &mallory);
        let fresh = issue(dir.path(), "alice", "subzero", &["read"]);
        let valid = batch_valid(&server, &[&fresh, &candidate]);
        assert!(valid[0]);
        n_batches += 1;
        if valid[1] {
            break candidate;
        }
        assert!(
            n_batches < 64,
            "the fast batch never accepted a torsion token"
        );
    };
    for round in 0..3 {
        assert_single_paths_refuse(
            &server,
            &torsion,
            &format!("after the batch, round {round}"),
        );
    }
    assert_eq!(get_status(&server, &good).0, 200);
}

#[test]
fn a_strict_batch_refuses_it_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("subzero.toml");
    std::fs::write(&config, "[auth]\nstrict_batch = true\n").unwrap();
    let config = config.to_str().unwrap();
    let server = Server::start(dir.path(), &["--shards", "1", "--config", config]);
    let good = issue(dir.path(), "alice", "subzero", &["read"]);
    let torsion = torsion_r_token(dir.path(), &issue(dir.path(), "mallory", "subzero", &[]));
    assert_eq!(batch_valid(&server, &[&good, &torsion]), [true, false]);
    assert_single_paths_refuse(&server, &torsion, "after a strict batch");
}
