//! JWK and JWKS: RFC 7638 thumbprints, our public JWKs, and parsing trusted issuers' JWKS files
//! into ready-to-use verification keys (Ed25519, P-256, RSA).

use std::path::Path;

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::VerifyingKey;
use ring::signature::{RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde::Deserialize;

use super::b64;
use super::error::KeyError;

/// Most keys one JWKS file may hold.
pub const MAX_JWKS_KEYS: usize = 64;
/// Largest JWKS file we read.
pub const MAX_JWKS_BYTES: u64 = 1 << 20;
/// Smallest RSA modulus accepted, in bits.
pub const RSA_MODULUS_BITS_MIN: usize = 2048;
/// Largest RSA modulus accepted, in bits.
pub const MAX_RSA_MODULUS_BITS: usize = 8192;

/// A parsed public key, ready to verify with: no per-request decoding.
#[derive(Clone)]
pub enum PublicKey {
    /// Ed25519 (`kty: OKP, crv: Ed25519`), for `alg: EdDSA`.
    Ed25519(VerifyingKey),
    /// P-256 (`kty: EC, crv: P-256`), uncompressed SEC1 point, for `alg: ES256`.
    Es256(UnparsedPublicKey<Vec<u8>>),
    /// RSA (`kty: RSA`), for `alg: RS256`.
    Rs256(RsaPublicKeyComponents<Vec<u8>>),
}

impl PublicKey {
    /// The JWS `alg` this key verifies.
    pub fn alg(&self) -> &'static str {
        match self {
            PublicKey::Ed25519(_) => "EdDSA",
            PublicKey::Es256(_) => "ES256",
            PublicKey::Rs256(_) => "RS256",
        }
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.alg())
    }
}

/// A key and its id.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// The JWK `kid` (or, when the JWK had none, its RFC 7638 thumbprint).
    pub kid: String,
    /// The key.
    pub key: PublicKey,
}

/// RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256 of the canonical JWK).
pub fn ed25519_thumbprint(public: &[u8; 32]) -> String {
    let x = b64::encode(public);
    thumbprint_of(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#))
}

fn thumbprint_of(canonical_json: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical_json.as_bytes());
    b64::encode(digest.as_ref())
}

/// The public JWK of an Ed25519 key, as we publish it.
pub fn ed25519_jwk_json(kid: &str, public: &[u8; 32]) -> String {
    let x = b64::encode(public);
    format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"{kid}","alg":"EdDSA","use":"sig"}}"#)
}

/// Whether an Ed25519 public key is fit for strict verification: not of small order and
/// without a torsion component (so strict and batch verification agree on it).
pub fn ed25519_key_is_strong(key: &VerifyingKey) -> bool {
    match CompressedEdwardsY(key.to_bytes()).decompress() {
        Some(point) => !point.is_small_order() && point.is_torsion_free(),
        None => false,
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// Read a JWKS file and parse its signing keys. Keys of other types (`oct`, `enc` use, other
/// curves) are skipped; a malformed key of a supported type is an error.
pub fn read_jwks_file(path: &Path) -> Result<Vec<KeyEntry>, KeyError> {
    let io_err = |source| KeyError::Io {
        action: "read JWKS file",
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.len() > MAX_JWKS_BYTES {
        return Err(KeyError::BadJwks {
            path: path.to_owned(),
            reason: format!("file is larger than {MAX_JWKS_BYTES} bytes"),
        });
    }
    let text = std::fs::read(path).map_err(io_err)?;
    parse_jwks(&text, path)
}

/// Parse JWKS JSON (`path` only names the source in errors).
pub fn parse_jwks(text: &[u8], path: &Path) -> Result<Vec<KeyEntry>, KeyError> {
    let bad = |reason: String| KeyError::BadJwks {
        path: path.to_owned(),
        reason,
    };
    let raw: RawJwks = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    if raw.keys.len() > MAX_JWKS_KEYS {
        return Err(KeyError::TooManyKeys {
            path: path.to_owned(),
            max_keys: MAX_JWKS_KEYS,
        });
    }
    let mut entries = Vec::with_capacity(raw.keys.len());
    for jwk in raw.keys {
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let parsed = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => parse_okp(&jwk, path)?,
            ("EC", Some("P-256")) => parse_ec(&jwk).map_err(bad)?,
            ("RSA", _) => parse_rsa(&jwk).map_err(bad)?,
            _ => continue,
        };
        let (key, thumbprint) = parsed;
        if jwk.alg.as_deref().is_some_and(|alg| alg != key.alg()) {
            // The JWK pins another algorithm (e.g. RSA-PSS): not one we verify with this key.
            continue;
        }
        let kid = jwk.kid.unwrap_or(thumbprint);
        if entries.iter().any(|e: &KeyEntry| e.kid == kid) {
            return Err(bad(format!("kid {kid:?} appears twice")));
        }
        entries.push(KeyEntry { kid, key });
    }
    if entries.is_empty() {
        return Err(KeyError::NoUsableKeys {
            path: path.to_owned(),
        });
    }
    Ok(entries)
}

fn member(value: Option<&String>, name: &str, kid: Option<&String>) -> Result<Vec<u8>, String> {
    let text = value.ok_or_else(|| format!("key {kid:?} has no {name:?} member"))?;
    b64::decode(text.as_bytes())
        .ok_or_else(|| format!("key {kid:?} member {name:?} is not base64url"))
}

fn parse_okp(jwk: &RawJwk, path: &Path) -> Result<(PublicKey, String), KeyError> {
    let bad = |reason: String| KeyError::BadJwks {
        path: path.to_owned(),
        reason,
    };
    let x = member(jwk.x.as_ref(), "x", jwk.kid.as_ref()).map_err(bad)?;
    let x: [u8; 32] = x
        .try_into()
        .map_err(|_| bad(format!("key {:?} x is not 32 bytes", jwk.kid)))?;
    let key = VerifyingKey::from_bytes(&x)
        .map_err(|_| bad(format!("key {:?} x is not an Ed25519 point", jwk.kid)))?;
    let thumbprint = ed25519_thumbprint(&x);
    if !ed25519_key_is_strong(&key) {
        return Err(KeyError::WeakKey {
            path: path.to_owned(),
            kid: jwk.kid.clone().unwrap_or(thumbprint),
        });
    }
    Ok((PublicKey::Ed25519(key), thumbprint))
}

fn parse_ec(jwk: &RawJwk) -> Result<(PublicKey, String), String> {
    let x = member(jwk.x.as_ref(), "x", jwk.kid.as_ref())?;
    let y = member(jwk.y.as_ref(), "y", jwk.kid.as_ref())?;
    if x.len() != 32 || y.len() != 32 {
        return Err(format!(
            "key {:?} x and y must be 32 bytes each for P-256",
            jwk.kid
        ));
    }
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let thumbprint = thumbprint_of(&format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        b64::encode(&x),
        b64::encode(&y)
    ));
    Ok((
        PublicKey::Es256(UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)),
        thumbprint,
    ))
}

fn parse_rsa(jwk: &RawJwk) -> Result<(PublicKey, String), String> {
    let n = member(jwk.n.as_ref(), "n", jwk.kid.as_ref())?;
    let e = member(jwk.e.as_ref(), "e", jwk.kid.as_ref())?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let n_bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if !(RSA_MODULUS_BITS_MIN..=MAX_RSA_MODULUS_BITS).contains(&n_bits) {
        return Err(format!(
            "key {:?} RSA modulus has {n_bits} bits, outside {RSA_MODULUS_BITS_MIN}..={MAX_RSA_MODULUS_BITS}",
            jwk.kid
        ));
    }
    if e.is_empty() || e.len() > 4 {
        return Err(format!("key {:?} RSA exponent is out of range", jwk.kid));
    }
    let thumbprint = thumbprint_of(&format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        b64::encode(e),
        b64::encode(n)
    ));
    Ok((
        PublicKey::Rs256(RsaPublicKeyComponents {
            n: n.to_vec(),
            e: e.to_vec(),
        }),
        thumbprint,
    ))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8037_thumbprint_vector() {
        // RFC 8037 appendix A.3: the thumbprint of the A.2 public key.
        let x = b64::decode(b"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let x: [u8; 32] = x.try_into().unwrap();
        assert_eq!(
            ed25519_thumbprint(&x),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn parses_mixed_jwks_and_skips_foreign_keys() {
        let text = br#"{"keys":[
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"},
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"OKP","crv":"X25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"x"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"enc","kid":"enc"}
        ]}"#;
        let keys = parse_jwks(text, Path::new("t.json")).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid, "ed");
        assert_eq!(keys[0].key.alg(), "EdDSA");
    }

    #[test]
    fn refuses_bad_and_weak_keys() {
        let p = Path::new("t.json");
        assert!(matches!(parse_jwks(b"{", p), Err(KeyError::BadJwks { .. })));
        assert!(matches!(
            parse_jwks(br#"{"keys":[]}"#, p),
            Err(KeyError::NoUsableKeys { .. })
        ));
        let short = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}"#;
        assert!(matches!(
            parse_jwks(short, p),
            Err(KeyError::BadJwks { .. })
        ));
        // The identity point (y = 1) has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{}"}}]}}"#,
            b64::encode(&identity)
        );
        assert!(matches!(
            parse_jwks(weak.as_bytes(), p),
            Err(KeyError::WeakKey { .. })
        ));
        let small_rsa = br#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#;
        assert!(matches!(
            parse_jwks(small_rsa, p),
            Err(KeyError::BadJwks { .. })
        ));
    }
}
