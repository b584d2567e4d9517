//! End-to-end tests of `subzero::auth`: key ring on disk, own tokens, trusted ES256/RS256/EdDSA
//! issuers with JWKS reload, attacks (alg none, HS256 key confusion, small-order R), batches.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::b64;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::Signer as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use subzero::auth::{
    sign, BatchMode, Claims, KeyError, KeyRing, TokenError, TrustedIssuer, Verifier,
    JWKS_RELOAD_MIN_INTERVAL_S,
};

const NOW_S: u64 = 1_700_000_000;
const IDP: &str = "https://idp.example";

fn claims_for(iss: &str, aud: &str) -> Claims {
    Claims::new_for(
        iss,
        "alice",
        vec![aud.to_owned()],
        &["read", "write"],
        600,
        NOW_S,
        subzero::auth::new_jti(),
    )
}

/// `header.payload` for a JSON header and claims; the caller appends the signature.
fn signing_input(header: &str, claims: &Claims) -> String {
    format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(&serde_json::to_vec(claims).unwrap())
    )
}

struct Es256 {
    pair: EcdsaKeyPair,
}

impl Es256 {
    fn generate() -> Es256 {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Es256 { pair }
    }
    fn jwk(&self, kid: &str) -> serde_json::Value {
        let point = self.pair.public_key().as_ref();
        serde_json::json!({"kty":"EC","crv":"P-256","x":b64(&point[1..33]),"y":b64(&point[33..65]),"kid":kid,"use":"sig","alg":"ES256"})
    }
    fn token(&self, kid: &str, claims: &Claims) -> String {
        let input = signing_input(
            &format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{kid}"}}"#),
            claims,
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

struct Rs256 {
    pair: RsaKeyPair,
    n: Vec<u8>,
    e: Vec<u8>,
}

/// One RSA-2048 key per test binary: generating it is slow in debug builds.
fn rs256() -> &'static Rs256 {
    static KEY: OnceLock<Rs256> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey as _;
        use rsa::traits::PublicKeyParts as _;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let pair = RsaKeyPair::from_pkcs8(der.as_bytes()).unwrap();
        Rs256 {
            pair,
            n: key.n().to_bytes_be(),
            e: key.e().to_bytes_be(),
        }
    })
}

impl Rs256 {
    fn jwk(&self, kid: &str) -> serde_json::Value {
        serde_json::json!({"kty":"RSA","n":b64(&self.n),"e":b64(&self.e),"kid":kid,"alg":"RS256"})
    }
    fn token_with_header(&self, header: &str, claims: &Claims) -> String {
        let input = signing_input(header, claims);
        let mut sig = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", b64(&sig))
    }
    fn token(&self, kid: &str, claims: &Claims) -> String {
        self.token_with_header(
            &format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#),
            claims,
        )
    }
}

fn write_jwks(path: &Path, keys: &[serde_json::Value]) {
    std::fs::write(path, serde_json::json!({ "keys": keys }).to_string()).unwrap();
}

struct World {
    _dir: tempfile::TempDir,
    ring: KeyRing,
    jwks_path: PathBuf,
    es: Es256,
    verifier: Verifier,
}

/// Our ring (issuer "subzero", audience "api") plus one trusted IdP with an ES256 key "es1"
/// and an RS256 key "rs1", accepting audience "idp-api".
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::generate(dir.path(), NOW_S).unwrap();
    let es = Es256::generate();
    let jwks_path = dir.path().join("idp-jwks.json");
    write_jwks(&jwks_path, &[es.jwk("es1"), rs256().jwk("rs1")]);
    let mut verifier = Verifier::own(&ring, "subzero", vec!["api".into()], 60);
    verifier
        .add_trusted_issuer(
            TrustedIssuer {
                issuer: IDP.into(),
                jwks_path: jwks_path.clone(),
                audiences: vec!["idp-api".into()],
            },
            NOW_S,
        )
        .unwrap();
    World {
        _dir: dir,
        ring,
        jwks_path,
        es,
        verifier,
    }
}

fn own_token(w: &World, claims: &Claims) -> String {
    sign(w.ring.signing_key(), w.ring.current_kid(), claims)
}

#[test]
fn own_tokens_round_trip_and_tampering_is_caught() {
    let w = world();
    let c = claims_for("subzero", "api");
    let token = own_token(&w, &c);
    assert_eq!(w.verifier.verify(token.as_bytes(), NOW_S), Ok(c.clone()));

    let parts: Vec<&str> = token.split('.').collect();
    let mut evil = c.clone();
    evil.sub = "mallory".into();
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_vec(&evil).unwrap()),
        parts[2]
    );
    assert_eq!(
        w.verifier.verify(tampered_payload.as_bytes(), NOW_S),
        Err(TokenError::BadSignature)
    );

    let mut sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[2])
            .unwrap();
    sig[10] ^= 1;
    let tampered_sig = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
    assert_eq!(
        w.verifier.verify(tampered_sig.as_bytes(), NOW_S),
        Err(TokenError::BadSignature)
    );

    assert_eq!(
        w.verifier.verify(token.as_bytes(), c.exp + 60),
        Err(TokenError::Expired)
    );
    let wrong_aud = own_token(&w, &claims_for("subzero", "billing"));
    assert_eq!(
        w.verifier.verify(wrong_aud.as_bytes(), NOW_S),
        Err(TokenError::WrongAudience)
    );
    let wrong_iss = own_token(&w, &claims_for("someone-else", "api"));
    assert_eq!(
        w.verifier.verify(wrong_iss.as_bytes(), NOW_S),
        Err(TokenError::UnknownIssuer)
    );
}

#[test]
fn alg_none_and_hs256_key_confusion_are_refused() {
    let w = world();
    let c = claims_for("subzero", "api");
    let kid = w.ring.current_kid();
    let none = format!("{}.", signing_input(r#"{"alg":"none","typ":"JWT"}"#, &c));
    assert_eq!(
        w.verifier.verify(none.as_bytes(), NOW_S),
        Err(TokenError::AlgNone)
    );

    // The classic confusion attack: HMAC-SHA256 keyed with the public key bytes (raw and as
    // published JWK text), hoping the verifier feeds its "key" to HMAC.
    let public = w.ring.signing_key().verifying_key().to_bytes();
    for secret in [public.to_vec(), w.ring.jwks_json().into_bytes()] {
        let input = signing_input(
            &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
            &c,
        );
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        let token = format!("{input}.{}", b64(tag.as_ref()));
        let err = w.verifier.verify(token.as_bytes(), NOW_S).unwrap_err();
        assert_eq!(err, TokenError::AlgHmac);
        assert_eq!(err.description(), "HMAC algorithms are not accepted");
    }
}

#[test]
fn es256_and_rs256_issuers_verify_and_mismatches_are_refused() {
    let w = world();
    let c = claims_for(IDP, "idp-api");
    let es_token = w.es.token("es1", &c);
    assert_eq!(w.verifier.verify(es_token.as_bytes(), NOW_S), Ok(c.clone()));
    let rs_token = rs256().token("rs1", &c);
    assert_eq!(w.verifier.verify(rs_token.as_bytes(), NOW_S), Ok(c.clone()));

    // The IdP's audiences apply to its tokens, not ours.
    let ours_aud = w.es.token("es1", &claims_for(IDP, "api"));
    assert_eq!(
        w.verifier.verify(ours_aud.as_bytes(), NOW_S),
        Err(TokenError::WrongAudience)
    );

    // RS256 header naming the EC key, ES256 header naming the RSA key, EdDSA naming either.
    let rs_on_ec = rs256().token_with_header(r#"{"alg":"RS256","kid":"es1"}"#, &c);
    assert_eq!(
        w.verifier.verify(rs_on_ec.as_bytes(), NOW_S),
        Err(TokenError::AlgKeyMismatch)
    );
    let es_on_rsa = w.es.token("rs1", &c);
    assert_eq!(
        w.verifier.verify(es_on_rsa.as_bytes(), NOW_S),
        Err(TokenError::AlgKeyMismatch)
    );
    let input = signing_input(r#"{"alg":"EdDSA","kid":"es1"}"#, &c);
    let ed_on_ec = format!(
        "{input}.{}",
        b64(&w.ring.signing_key().sign(input.as_bytes()).to_bytes())
    );
    assert_eq!(
        w.verifier.verify(ed_on_ec.as_bytes(), NOW_S),
        Err(TokenError::AlgKeyMismatch)
    );

    // A signature by another P-256 key under the right kid.
    let impostor = Es256::generate().token("es1", &c);
    assert_eq!(
        w.verifier.verify(impostor.as_bytes(), NOW_S),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn unknown_kid_reloads_the_jwks_file_at_most_every_interval() {
    let mut w = world();
    let c = claims_for(IDP, "idp-api");
    let new_key = Es256::generate();
    let token = new_key.token("es2", &c);
    assert_eq!(
        w.verifier.verify(token.as_bytes(), NOW_S),
        Err(TokenError::UnknownKid {
            issuer: Some(IDP.to_owned())
        })
    );
    write_jwks(&w.jwks_path, &[w.es.jwk("es1"), new_key.jwk("es2")]);
    // Loaded at NOW_S: a reload inside the interval is skipped.
    assert!(!w
        .verifier
        .reload_issuer(IDP, NOW_S + JWKS_RELOAD_MIN_INTERVAL_S - 1)
        .unwrap());
    assert!(matches!(
        w.verifier.verify(token.as_bytes(), NOW_S),
        Err(TokenError::UnknownKid { .. })
    ));
    let t1 = NOW_S + JWKS_RELOAD_MIN_INTERVAL_S;
    assert!(w.verifier.reload_issuer(IDP, t1).unwrap());
    assert_eq!(w.verifier.verify(token.as_bytes(), t1), Ok(c.clone()));
    assert!(!w.verifier.reload_issuer(IDP, t1 + 1).unwrap());

    // A broken file keeps the old keys and still counts as an attempt.
    std::fs::write(&w.jwks_path, b"{not json").unwrap();
    let t2 = t1 + JWKS_RELOAD_MIN_INTERVAL_S;
    assert!(matches!(
        w.verifier.reload_issuer(IDP, t2),
        Err(KeyError::BadJwks { .. })
    ));
    assert_eq!(w.verifier.verify(token.as_bytes(), t2), Ok(c));
    assert!(!w.verifier.reload_issuer(IDP, t2 + 1).unwrap());
    assert!(matches!(
        w.verifier.reload_issuer("nobody", t2),
        Err(KeyError::UnknownIssuer { .. })
    ));
}

#[test]
fn jwks_file_verifier_accepts_any_issuer_and_audience_in_the_file() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.json");
    std::fs::write(&path, w.ring.jwks_json()).unwrap();
    let verifier = Verifier::from_jwks_file(&path, 0).unwrap();
    let c = claims_for("whoever", "anything");
    let token = own_token(&w, &c);
    assert_eq!(verifier.verify(token.as_bytes(), NOW_S), Ok(c.clone()));
    assert_eq!(
        verifier.verify(token.as_bytes(), c.exp),
        Err(TokenError::Expired)
    );
    let es = w.es.token("es1", &c);
    assert_eq!(
        verifier.verify(es.as_bytes(), NOW_S),
        Err(TokenError::UnknownKid { issuer: None })
    );

    let from_ring = Verifier::from_keyring(&w.ring, 0);
    assert_eq!(from_ring.verify(token.as_bytes(), NOW_S), Ok(c.clone()));
    assert_eq!(
        from_ring.verify(token.as_bytes(), c.exp),
        Err(TokenError::Expired)
    );
    assert_eq!(
        from_ring.verify(es.as_bytes(), NOW_S),
        Err(TokenError::UnknownKid { issuer: None })
    );
}

/// RFC 7638 thumbprint computed here from the published JWK, independently of the library.
fn thumbprint_from_jwk(jwk: &serde_json::Value) -> String {
    let canonical = format!(
        r#"{{"crv":"{}","kty":"{}","x":"{}"}}"#,
        jwk["crv"].as_str().unwrap(),
        jwk["kty"].as_str().unwrap(),
        jwk["x"].as_str().unwrap()
    );
    b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
}

#[test]
fn key_ring_files_thumbprints_rotation_and_retirement() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (mut ring, created) = KeyRing::load_or_generate(dir.path(), NOW_S).unwrap();
    assert!(created);
    let first = ring.current_kid().to_owned();
    let keys_dir = dir.path().join("keys");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&keys_dir), 0o700);
    assert_eq!(mode(&keys_dir.join(format!("{first}.pem"))), 0o600);
    let pem = std::fs::read_to_string(keys_dir.join(format!("{first}.pem"))).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let jwk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(keys_dir.join(format!("{first}.jwk.json"))).unwrap())
            .unwrap();
    assert_eq!(jwk["kid"], first.as_str());
    assert_eq!(thumbprint_from_jwk(&jwk), first);
    let err = KeyRing::generate(dir.path(), NOW_S).err().unwrap();
    assert!(err.to_string().contains("ring.json"), "{err}");

    let old_token = sign(
        ring.signing_key(),
        ring.current_kid(),
        &claims_for("subzero", "api"),
    );
    ring.rotate(dir.path(), NOW_S + 10, 600).unwrap();
    let second = ring.current_kid().to_owned();
    let new_token = sign(
        ring.signing_key(),
        ring.current_kid(),
        &claims_for("subzero", "api"),
    );
    let jwks: serde_json::Value = serde_json::from_str(&ring.jwks_json()).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [second.as_str(), first.as_str()]);
    for k in jwks["keys"].as_array().unwrap() {
        assert_eq!(
            (k["alg"].as_str(), k["use"].as_str()),
            (Some("EdDSA"), Some("sig"))
        );
        assert_eq!(thumbprint_from_jwk(k), k["kid"].as_str().unwrap());
    }

    let verifier = Verifier::own(&ring, "subzero", vec!["api".into()], 0);
    assert!(verifier.verify(old_token.as_bytes(), NOW_S + 20).is_ok());
    assert!(verifier.verify(new_token.as_bytes(), NOW_S + 20).is_ok());

    // A restart before the retire time restores both keys; after it, only the new one.
    let reloaded = KeyRing::load(dir.path(), NOW_S + 609).unwrap();
    assert_eq!(reloaded.current_kid(), second);
    let verifier = Verifier::own(&reloaded, "subzero", vec!["api".into()], 0);
    assert!(verifier.verify(old_token.as_bytes(), NOW_S + 20).is_ok());

    assert_eq!(
        ring.retire_expired(NOW_S + 610),
        std::slice::from_ref(&first)
    );
    let mut verifier = verifier;
    verifier.set_own_keys(&ring);
    assert_eq!(
        verifier.verify(old_token.as_bytes(), NOW_S + 20),
        Err(TokenError::UnknownKid { issuer: None })
    );
    assert!(verifier.verify(new_token.as_bytes(), NOW_S + 20).is_ok());
    let after = KeyRing::load(dir.path(), NOW_S + 610).unwrap();
    assert_eq!(after.verifying_keys().count(), 1);
}

/// An EdDSA token whose signature has the given R bytes and S scalar.
fn ed_token_with(w: &World, claims: &Claims, r: [u8; 32], s: Scalar) -> String {
    let input = signing_input(
        &format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, w.ring.current_kid()),
        claims,
    );
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r);
    sig[32..].copy_from_slice(s.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// A signature that satisfies the Ed25519 equation only up to a point of order 2 in R:
/// R = [r]B + T, S = r + H(R || A || M)·a. `verify_strict` refuses it; an unguarded batch
/// equation accepts it whenever its random coefficient is even.
fn mixed_order_r_token(w: &World, claims: &Claims, r_seed: u64) -> String {
    let input = signing_input(
        &format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, w.ring.current_kid()),
        claims,
    );
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    let order_two = CompressedEdwardsY(minus_one).decompress().unwrap();
    assert!(order_two.is_small_order());
    let nonce = Scalar::from(r_seed) * Scalar::from(0x1234_5678_9abc_def1u64);
    let big_r = (EdwardsPoint::mul_base(&nonce) + order_two).compress();
    let secret = w.ring.signing_key().to_scalar();
    let public = w.ring.signing_key().verifying_key().to_bytes();
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA512);
    hasher.update(big_r.as_bytes());
    hasher.update(&public);
    hasher.update(input.as_bytes());
    let hram = Scalar::from_bytes_mod_order_wide(hasher.finish().as_ref().try_into().unwrap());
    ed_token_with(w, claims, big_r.to_bytes(), nonce + hram * secret)
}

#[test]
fn batch_gives_the_same_result_as_one_by_one() {
    for mode in [BatchMode::Strict, BatchMode::Fast] {
        batch_matches_single(mode);
    }
}

fn batch_matches_single(mode: BatchMode) {
    let mut w = world();
    w.verifier.set_batch_mode(mode);
    let good = claims_for("subzero", "api");
    let mut tokens: Vec<String> = Vec::new();
    for i in 0..150 {
        let mut c = good.clone();
        c.sub = format!("user-{i}");
        tokens.push(own_token(&w, &c));
    }
    // Sprinkle failures across chunks so some chunks fail and fall back.
    tokens[3] = own_token(&w, &claims_for("subzero", "billing"));
    tokens[70] = {
        let t = own_token(&w, &good);
        let (head, sig) = t.rsplit_once('.').unwrap();
        let mut sig =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        sig[5] ^= 0x40;
        format!("{head}.{}", b64(&sig))
    };
    tokens[71] = "not.a.token".into();
    tokens[72] = w.es.token("es1", &claims_for(IDP, "idp-api"));
    tokens[73] = rs256().token("rs1", &claims_for(IDP, "idp-api"));
    let mut identity = [0u8; 32];
    identity[0] = 1;
    tokens[74] = ed_token_with(&w, &good, identity, Scalar::ZERO);
    // Crafted mixed-order R: Strict must match `verify` on them. Fast mode may accept them
    // (see `BatchMode::Fast` and `mixed_order_r_alone_with_valid_tokens`), so they stay out.
    let n_mixed = if mode == BatchMode::Strict { 10 } else { 0 };
    for (i, seed) in (100..100 + n_mixed).zip(1u64..) {
        tokens[i] = mixed_order_r_token(&w, &good, seed);
    }
    let mut expired = good.clone();
    expired.exp = NOW_S - 100;
    tokens[140] = own_token(&w, &expired);

    let refs: Vec<&[u8]> = tokens.iter().map(String::as_bytes).collect();
    let batch = w.verifier.verify_batch(&refs, NOW_S);
    let single: Vec<_> = refs.iter().map(|t| w.verifier.verify(t, NOW_S)).collect();
    assert_eq!(batch, single, "{mode:?}");
    assert_eq!(single[3], Err(TokenError::WrongAudience));
    assert_eq!(single[70], Err(TokenError::BadSignature));
    assert_eq!(single[71], Err(TokenError::BadEncoding));
    assert!(single[72].is_ok() && single[73].is_ok());
    assert_eq!(
        single[74],
        Err(TokenError::BadSignature),
        "small-order R forgery"
    );
    for (i, result) in single.iter().enumerate().take(100 + n_mixed).skip(100) {
        assert_eq!(
            result,
            &Err(TokenError::BadSignature),
            "mixed-order R at {i}"
        );
    }
    assert_eq!(single[140], Err(TokenError::Expired));
    assert_eq!(
        batch.iter().filter(|r| r.is_ok()).count(),
        150 - 5 - n_mixed
    );

    // All-valid batches pass in full (the fast path).
    let all_good: Vec<String> = (0..70).map(|_| own_token(&w, &good)).collect();
    let refs: Vec<&[u8]> = all_good.iter().map(String::as_bytes).collect();
    assert!(w
        .verifier
        .verify_batch(&refs, NOW_S)
        .iter()
        .all(Result::is_ok));
    assert!(w.verifier.verify_batch(&[], NOW_S).is_empty());
}

#[test]
fn mixed_order_r_alone_with_valid_tokens() {
    // Each batch holds one crafted signature among valid ones. Strict mode (the default) must
    // refuse it; Fast mode may accept it (documented on `BatchMode::Fast`), never anything else.
    let mut w = world();
    assert_eq!(w.verifier.batch_mode(), BatchMode::Strict);
    let good = claims_for("subzero", "api");
    let mut n_fast_accepted = 0;
    for seed in 1..=16u64 {
        let mut tokens: Vec<String> = (0..7).map(|_| own_token(&w, &good)).collect();
        tokens.push(mixed_order_r_token(&w, &good, seed));
        let refs: Vec<&[u8]> = tokens.iter().map(String::as_bytes).collect();
        w.verifier.set_batch_mode(BatchMode::Strict);
        let batch = w.verifier.verify_batch(&refs, NOW_S);
        assert_eq!(batch[7], Err(TokenError::BadSignature), "seed {seed}");
        assert!(batch[..7].iter().all(Result::is_ok));
        w.verifier.set_batch_mode(BatchMode::Fast);
        let batch = w.verifier.verify_batch(&refs, NOW_S);
        assert!(batch[..7].iter().all(Result::is_ok));
        match &batch[7] {
            Ok(_) => n_fast_accepted += 1,
            Err(e) => assert_eq!(e, &TokenError::BadSignature),
        }
    }
    println!("Fast batch mode accepted {n_fast_accepted}/16 crafted mixed-order-R signatures");
}
