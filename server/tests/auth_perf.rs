//! Prints the per-call cost of sign, verify and batch verify (run with `--release` for real
//! figures). Asserts only that every call succeeded; timings are reported, not asserted.

use std::hint::black_box;
use std::time::Instant;

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, Signer as _};
use subzero::auth::{sign, BatchMode, Claims, KeyRing, Verifier};

const NOW_S: u64 = 1_700_000_000;

fn per_call_us(n: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

#[test]
fn report_sign_and_verify_costs() {
    let n = if cfg!(debug_assertions) { 20 } else { 2000 };
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::generate(dir.path(), NOW_S).unwrap();
    let mut verifier = Verifier::own(&ring, "subzero", vec!["api".into()], 60);
    let claims = Claims::new_for(
        "subzero",
        "alice",
        vec!["api".into()],
        &["read", "write"],
        600,
        NOW_S,
        subzero::auth::new_jti(),
    );

    let sign_us = per_call_us(n, || {
        black_box(sign(
            ring.signing_key(),
            ring.current_kid(),
            black_box(&claims),
        ));
    });
    let token = sign(ring.signing_key(), ring.current_kid(), &claims);
    let verify_us = per_call_us(n, || {
        assert!(verifier.verify(black_box(token.as_bytes()), NOW_S).is_ok());
    });

    let (input, sig_b64) = token.rsplit_once('.').unwrap();
    let sig_bytes: [u8; 64] =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig_b64)
            .unwrap()
            .try_into()
            .unwrap();
    let signature = Signature::from_bytes(&sig_bytes);
    let key = ring.signing_key().verifying_key();
    let strict_us = per_call_us(n, || {
        assert!(key
            .verify_strict(black_box(input.as_bytes()), &signature)
            .is_ok());
    });
    let r = CompressedEdwardsY(*signature.r_bytes())
        .decompress()
        .unwrap();
    let torsion_us = per_call_us(n, || assert!(black_box(r).is_torsion_free()));

    let tokens: Vec<String> = (0..64)
        .map(|i| {
            let mut c = claims.clone();
            c.sub = format!("user-{i}");
            sign(ring.signing_key(), ring.current_kid(), &c)
        })
        .collect();
    let refs: Vec<&[u8]> = tokens.iter().map(String::as_bytes).collect();
    let rounds = (n / 64).max(2);
    let batch_strict_us = per_call_us(rounds, || {
        assert!(verifier
            .verify_batch(black_box(&refs), NOW_S)
            .iter()
            .all(Result::is_ok));
    }) / 64.0;
    verifier.set_batch_mode(BatchMode::Fast);
    let batch_us = per_call_us(rounds, || {
        assert!(verifier
            .verify_batch(black_box(&refs), NOW_S)
            .iter()
            .all(Result::is_ok));
    }) / 64.0;
    let messages: Vec<&[u8]> = tokens
        .iter()
        .map(|t| t.rsplit_once('.').unwrap().0.as_bytes())
        .collect();
    let signatures: Vec<Signature> = tokens
        .iter()
        .map(|t| {
            let b = base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                t.rsplit_once('.').unwrap().1,
            )
            .unwrap();
            Signature::from_bytes(&b.try_into().unwrap())
        })
        .collect();
    let keys = vec![key; 64];
    let raw_batch_us = per_call_us(rounds, || {
        assert!(ed25519_dalek::verify_batch(black_box(&messages), &signatures, &keys).is_ok());
    }) / 64.0;
    let raw_sign_us = per_call_us(n, || {
        black_box(ring.signing_key().sign(black_box(input.as_bytes())));
    });

    println!(
        "auth costs ({} build, {n} calls): sign {sign_us:.1} µs (raw ed25519 sign {raw_sign_us:.1}); \
         verify own token {verify_us:.1} µs (raw verify_strict {strict_us:.1}); \
         verify_batch(64) Strict {batch_strict_us:.1} / Fast {batch_us:.1} µs/token \
         (raw ed25519 verify_batch {raw_batch_us:.1}; an R torsion check would add {torsion_us:.1})",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
}
