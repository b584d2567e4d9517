//! Ed25519 and the JWT layer: sign, verify, verify_strict, batch verification by batch size,
//! and subzero's own `sign`/`Verifier::verify` on a real token (what the auth layer adds).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use subzero::auth::{self, BatchMode, Claims, KeyRing, Verifier};

const MESSAGE: &[u8] =
    b"eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCIsImF1ZCI6InN1Ynplcm8ifQ";

fn keys(n: usize) -> Vec<(SigningKey, VerifyingKey)> {
    (0..n)
        .map(|_| {
            let sk = SigningKey::generate(&mut rand::rngs::OsRng);
            let vk = sk.verifying_key();
            (sk, vk)
        })
        .collect()
}

fn raw(c: &mut Criterion) {
    let (sk, vk) = keys(1).remove(0);
    let sig = sk.sign(MESSAGE);
    let mut group = c.benchmark_group("ed25519");
    group.bench_function("sign", |b| b.iter(|| sk.sign(black_box(MESSAGE))));
    group.bench_function("verify", |b| {
        b.iter(|| ed25519_dalek::Verifier::verify(&vk, black_box(MESSAGE), &sig).is_ok());
    });
    group.bench_function("verify_strict", |b| {
        b.iter(|| vk.verify_strict(black_box(MESSAGE), &sig).is_ok());
    });
    group.finish();

    let mut group = c.benchmark_group("ed25519/verify_batch");
    for n in [1usize, 8, 64, 256] {
        let pairs = keys(n);
        let messages: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("{i}.{}", "x".repeat(200)).into_bytes())
            .collect();
        let sigs: Vec<Signature> = pairs
            .iter()
            .zip(&messages)
            .map(|((sk, _), m)| sk.sign(m))
            .collect();
        let vks: Vec<VerifyingKey> = pairs.iter().map(|(_, vk)| *vk).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| ed25519_dalek::verify_batch(&refs, &sigs, &vks).is_ok());
        });
    }
    group.finish();
}

fn jwt(c: &mut Criterion) {
    let dir = tempfile_dir();
    let ring = KeyRing::generate(&dir, 1_000).expect("key ring");
    let now_s = 2_000;
    let claims = Claims::new_for(
        "subzero",
        "bench",
        vec!["subzero".into()],
        &["read"],
        3600,
        now_s,
        "jti-bench".into(),
    );
    let token = auth::sign(ring.signing_key(), ring.current_kid(), &claims);
    let strict = Verifier::own(&ring, "subzero", vec!["subzero".into()], 60);
    let mut fast = strict.clone();
    fast.set_batch_mode(BatchMode::Fast);

    let mut group = c.benchmark_group("jwt");
    group.bench_function("sign", |b| {
        b.iter(|| auth::sign(ring.signing_key(), ring.current_kid(), black_box(&claims)));
    });
    group.bench_function("verify", |b| {
        b.iter(|| strict.verify(black_box(token.as_bytes()), now_s).is_ok());
    });
    group.finish();

    let mut group = c.benchmark_group("jwt/verify_batch");
    for n in [8usize, 64, 1000] {
        let tokens: Vec<String> = (0..n)
            .map(|i| {
                let claims = Claims::new_for(
                    "subzero",
                    &format!("u{i}"),
                    vec!["subzero".into()],
                    &[],
                    3600,
                    now_s,
                    format!("jti-{i}"),
                );
                auth::sign(ring.signing_key(), ring.current_kid(), &claims)
            })
            .collect();
        let refs: Vec<&[u8]> = tokens.iter().map(String::as_bytes).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("strict", n), &n, |b, _| {
            b.iter(|| strict.verify_batch(&refs, now_s).len());
        });
        group.bench_with_input(BenchmarkId::new("fast", n), &n, |b, _| {
            b.iter(|| fast.verify_batch(&refs, now_s).len());
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("subzero-bench-crypto-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

criterion_group!(benches, raw, jwt);
criterion_main!(benches);
