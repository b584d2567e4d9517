//! Interop with the `jsonwebtoken` crate: our EdDSA tokens verify there, its EdDSA tokens
//! (signed with our PKCS#8 PEM key file) verify here.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use subzero::auth::{sign, Claims, KeyRing, TokenError, Verifier};

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&["api"]);
    v.set_issuer(&["subzero"]);
    v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    v
}

#[test]
fn our_tokens_verify_in_jsonwebtoken() {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::generate(dir.path(), now_s()).unwrap();
    let claims = Claims::new_for(
        "subzero",
        "alice",
        vec!["api".into()],
        &["read"],
        300,
        now_s(),
        subzero::auth::new_jti(),
    );
    let token = sign(ring.signing_key(), ring.current_kid(), &claims);

    // Key from the raw public key bytes.
    let raw = DecodingKey::from_ed_der(ring.signing_key().verifying_key().as_bytes());
    let data = decode::<Claims>(&token, &raw, &validation()).unwrap();
    assert_eq!(data.claims, claims);
    assert_eq!(data.header.kid.as_deref(), Some(ring.current_kid()));

    // Key from our published JWKS.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&ring.jwks_json()).unwrap();
    let jwk = set.find(ring.current_kid()).unwrap();
    let from_jwk = DecodingKey::from_jwk(jwk).unwrap();
    assert_eq!(
        decode::<Claims>(&token, &from_jwk, &validation())
            .unwrap()
            .claims,
        claims
    );

    // And jsonwebtoken refuses it under another key.
    let other = tempfile::tempdir().unwrap();
    let other_ring = KeyRing::generate(other.path(), now_s()).unwrap();
    let wrong = DecodingKey::from_ed_der(other_ring.signing_key().verifying_key().as_bytes());
    assert!(decode::<Claims>(&token, &wrong, &validation()).is_err());
}

#[test]
fn jsonwebtoken_tokens_verify_in_ours() {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::generate(dir.path(), now_s()).unwrap();
    let pem_path = dir
        .path()
        .join("keys")
        .join(format!("{}.pem", ring.current_kid()));
    let key = EncodingKey::from_ed_pem(&std::fs::read(pem_path).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(ring.current_kid().to_owned());

    let verifier = Verifier::own(&ring, "subzero", vec!["api".into()], 60);
    // Single and multiple audiences (jsonwebtoken writes what serde gives it).
    for aud in [
        vec!["api".to_owned()],
        vec!["other".to_owned(), "api".to_owned()],
    ] {
        let claims = Claims::new_for(
            "subzero",
            "bob",
            aud,
            &["read", "write"],
            300,
            now_s(),
            subzero::auth::new_jti(),
        );
        let token = encode(&header, &claims, &key).unwrap();
        assert_eq!(verifier.verify(token.as_bytes(), now_s()), Ok(claims));
    }

    // A plain JSON payload with extra claims and an array audience written by hand.
    let payload = serde_json::json!({
        "iss": "subzero", "sub": "carol", "aud": ["api"], "exp": now_s() + 60,
        "email": "carol@example.com", "roles": ["x"],
    });
    let token = encode(&header, &payload, &key).unwrap();
    let claims = verifier.verify(token.as_bytes(), now_s()).unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.aud.as_slice()),
        ("carol", &["api".to_owned()][..])
    );

    // jsonwebtoken's HS256 over our public key bytes is refused.
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(ring.current_kid().to_owned());
    let hs_key = EncodingKey::from_secret(ring.signing_key().verifying_key().as_bytes());
    let token = encode(&hs_header, &payload, &hs_key).unwrap();
    assert_eq!(
        verifier.verify(token.as_bytes(), now_s()),
        Err(TokenError::AlgHmac)
    );
}
