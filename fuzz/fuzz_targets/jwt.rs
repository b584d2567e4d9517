//! Fuzz target: the JWT decoder and verifier (`subzero::auth::Verifier`) with our EdDSA key
//! ring and a trusted issuer whose fixed JWKS holds EdDSA, ES256 and RS256 keys. It must never
//! panic and never accept a token those keys did not sign as it stands.
//!
//! The first byte picks a mode: raw bytes as a token; a valid token of each algorithm edited
//! by the input (insert, overwrite, delete, truncate); or a header and payload from the input
//! that the harness signs, so claim checks are reached with any JSON behind a good signature.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use libfuzzer_sys::fuzz_target;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use rsa::signature::SignatureEncoding as _;
use rsa::traits::PublicKeyParts as _;
use subzero::auth::{BatchMode, KeyRing, TrustedIssuer, Verifier};

const NOW_S: u64 = 1_800_000_000;
const LEEWAY_S: u64 = 60;
const OWN_ISSUER: &str = "subzero";
const OWN_AUDIENCE: &str = "api";
const IDP: &str = "https://idp.example";
const IDP_AUDIENCE: &str = "gateway";

/// The keys, the verifiers and one valid token per key, built once per process.
struct World {
    verifier: Verifier,
    fast: Verifier,
    own: (ed25519_dalek::SigningKey, String),
    idp_ed: ed25519_dalek::SigningKey,
    idp_es: EcdsaKeyPair,
    /// Valid tokens: own EdDSA, the IdP's EdDSA, ES256 and RS256.
    valid: Vec<String>,
    _dir: tempfile::TempDir,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(header: &[u8], payload: &[u8]) -> String {
    format!("{}.{}", b64(header), b64(payload))
}

fn claims(iss: &str, aud: &str) -> String {
    format!(
        r#"{{"iss":"{iss}","sub":"alice","aud":"{aud}","exp":{},"iat":{NOW_S},"jti":"j1","scope":"read write"}}"#,
        NOW_S + 600
    )
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(build_world)
}

fn build_world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = KeyRing::generate(dir.path(), NOW_S).expect("key ring");
    let own = (ring.signing_key().clone(), ring.current_kid().to_owned());
    let rng = ring::rand::SystemRandom::new();
    let idp_ed = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let es_pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("p256");
    let idp_es =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, es_pkcs8.as_ref(), &rng)
            .expect("p256");
    let mut chacha = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(7);
    let rsa_key = rsa::RsaPrivateKey::new(&mut chacha, 2048).expect("rsa");
    let point = idp_es.public_key().as_ref();
    let jwks = serde_json::json!({"keys": [
        {"kty":"OKP","crv":"Ed25519","kid":"ed1","alg":"EdDSA","use":"sig",
         "x": b64(idp_ed.verifying_key().as_bytes())},
        {"kty":"EC","crv":"P-256","kid":"es1","alg":"ES256",
         "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        {"kty":"RSA","kid":"rs1","alg":"RS256",
         "n": b64(&rsa_key.n().to_bytes_be()), "e": b64(&rsa_key.e().to_bytes_be())},
    ]});
    let jwks_path = dir.path().join("idp.jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).expect("write jwks");
    let mut verifier = Verifier::own(&ring, OWN_ISSUER, vec![OWN_AUDIENCE.into()], LEEWAY_S);
    verifier
        .add_trusted_issuer(
            TrustedIssuer {
                issuer: IDP.into(),
                jwks_path,
                audiences: vec![IDP_AUDIENCE.into()],
            },
            NOW_S,
        )
        .expect("trusted issuer");
    let mut fast = verifier.clone();
    fast.set_batch_mode(BatchMode::Fast);

    let idp_claims = claims(IDP, IDP_AUDIENCE);
    let mut valid = Vec::new();
    let own_header = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, own.1);
    let msg = signing_input(
        own_header.as_bytes(),
        claims(OWN_ISSUER, OWN_AUDIENCE).as_bytes(),
    );
    valid.push(format!(
        "{msg}.{}",
        b64(&own.0.sign(msg.as_bytes()).to_bytes())
    ));
    let msg = signing_input(br#"{"alg":"EdDSA","kid":"ed1"}"#, idp_claims.as_bytes());
    valid.push(format!(
        "{msg}.{}",
        b64(&idp_ed.sign(msg.as_bytes()).to_bytes())
    ));
    let msg = signing_input(br#"{"alg":"ES256","kid":"es1"}"#, idp_claims.as_bytes());
    let sig = idp_es.sign(&rng, msg.as_bytes()).expect("es256");
    valid.push(format!("{msg}.{}", b64(sig.as_ref())));
    let msg = signing_input(br#"{"alg":"RS256","kid":"rs1"}"#, idp_claims.as_bytes());
    let rs = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(rsa_key);
    valid.push(format!("{msg}.{}", b64(&rs.sign(msg.as_bytes()).to_vec())));
    for token in &valid {
        assert!(verifier.verify(token.as_bytes(), NOW_S).is_ok(), "{token}");
    }
    World {
        verifier,
        fast,
        own,
        idp_ed,
        idp_es,
        valid,
        _dir: dir,
    }
}

/// Verifies `token` one by one and in a fast batch beside a valid token; they must agree, and
/// an accepted token must be one the harness signed.
fn check(w: &World, token: &[u8]) -> bool {
    let one = w.verifier.verify(token, NOW_S);
    let batch = w.fast.verify_batch(&[token, w.valid[0].as_bytes()], NOW_S);
    assert_eq!(
        one.is_ok(),
        batch[0].is_ok(),
        "verify and verify_batch disagree"
    );
    assert!(batch[1].is_ok());
    if one.is_ok() {
        assert!(
            w.valid.iter().any(|v| v.as_bytes() == token),
            "accepted a token nobody signed: {}",
            String::from_utf8_lossy(token)
        );
    }
    one.is_ok()
}

/// Applies the input's edits to a valid token: each edit is (op, position, byte).
fn edit(mut token: Vec<u8>, script: &[u8]) -> Vec<u8> {
    for e in script.chunks_exact(3) {
        let at = usize::from(e[1]) * token.len() / 256;
        match e[0] % 4 {
            0 => token.insert(at, e[2]),
            1 if at < token.len() => token[at] = e[2],
            2 if at < token.len() => {
                token.remove(at);
            }
            3 => token.truncate(at),
            _ => {}
        }
    }
    token
}

/// Signs the input's header and payload (split at the first NUL) with an EdDSA or ES256 key
/// and checks that whatever the verifier accepts holds our claim rules.
fn signed(w: &World, signer: u8, data: &[u8]) {
    let (header, payload) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"{}"[..]),
    };
    let msg = signing_input(header, payload);
    let sig = match signer % 3 {
        0 => w.own.0.sign(msg.as_bytes()).to_bytes().to_vec(),
        1 => w.idp_ed.sign(msg.as_bytes()).to_bytes().to_vec(),
        _ => {
            let rng = ring::rand::SystemRandom::new();
            w.idp_es
                .sign(&rng, msg.as_bytes())
                .expect("es256")
                .as_ref()
                .to_vec()
        }
    };
    let token = format!("{msg}.{}", b64(&sig));
    let Ok(claims) = w.verifier.verify(token.as_bytes(), NOW_S) else {
        return;
    };
    let (iss, aud) = if claims.iss == OWN_ISSUER {
        (OWN_ISSUER, OWN_AUDIENCE)
    } else {
        (IDP, IDP_AUDIENCE)
    };
    assert_eq!(claims.iss, iss);
    // Keys are chosen by the token's issuer: ours never vouch for the IdP, nor its for us.
    assert_eq!(
        signer % 3 == 0,
        iss == OWN_ISSUER,
        "a key accepted for another issuer"
    );
    assert!(
        claims.aud.iter().any(|a| a == aud),
        "audience {:?}",
        claims.aud
    );
    assert!(
        claims.exp.saturating_add(LEEWAY_S) > NOW_S,
        "expired token accepted"
    );
    assert!(
        claims.nbf.is_none_or(|nbf| nbf <= NOW_S + LEEWAY_S),
        "nbf in the future"
    );
    let header: serde_json::Value =
        serde_json::from_slice(header).expect("accepted header is JSON");
    let alg = header.get("alg").and_then(serde_json::Value::as_str);
    assert_eq!(alg, Some(if signer % 3 == 2 { "ES256" } else { "EdDSA" }));
    let typ = subzero::auth::header_typ(token.as_bytes());
    let _ = subzero::xaa::check_id_jag(typ.as_deref(), &claims, "client", OWN_ISSUER, NOW_S);
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            check(w, rest);
        }
        1 => {
            let Some((&pick, script)) = rest.split_first() else {
                return;
            };
            let base = w.valid[usize::from(pick) % w.valid.len()]
                .as_bytes()
                .to_vec();
            check(w, &edit(base, script));
        }
        _ => {
            let Some((&signer, rest)) = rest.split_first() else {
                return;
            };
            signed(w, signer, rest);
        }
    }
});
