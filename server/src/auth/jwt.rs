//! JWS compact tokens: `sign` (`EdDSA`) and `Verifier` (`EdDSA` for our keys; `EdDSA`, `ES256`
//! and `RS256` for trusted issuers), one token at a time or in Ed25519 batches.
//!
//! Architecture Invariant: no I/O on the verify path and `now_s` is an argument; the signature
//! is checked before any claim value is trusted (the unverified `iss` only selects keys).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand::RngCore as _;
use serde::Deserialize;

use super::b64;
use super::claims::{Claims, RawClaims};
use super::error::{KeyError, TokenError};
use super::jwk::{self, KeyEntry, PublicKey};
use super::keys::KeyRing;
use super::unique_keys;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// A trusted issuer's JWKS file is re-read at most this often.
pub const JWKS_RELOAD_MIN_INTERVAL_S: u64 = 10;
/// Most trusted external issuers.
pub const MAX_TRUSTED_ISSUERS: usize = 64;
/// Ed25519 signatures checked together by one `ed25519_dalek::verify_batch` call.
pub const BATCH_CHUNK: usize = 64;
/// Longest decoded header, in bytes.
const MAX_HEADER_BYTES: usize = 1024;
/// Longest decoded signature: an RSA-8192 signature.
const MAX_SIGNATURE_BYTES: usize = 1024;
/// Longest decoded payload a `MAX_TOKEN_BYTES` token can carry.
const MAX_PAYLOAD_BYTES: usize = MAX_TOKEN_BYTES / 4 * 3;

/// A fresh random 128-bit token id, unpadded base64url (22 characters).
pub fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    b64::encode(&bytes)
}

/// Sign `claims` as a JWS compact token with header `{"alg":"EdDSA","typ":"JWT","kid":kid}`.
pub fn sign(key: &SigningKey, kid: &str, claims: &Claims) -> String {
    sign_typed(key, kid, "JWT", claims)
}

/// Sign `claims` with header `{"alg":"EdDSA","typ":typ,"kid":kid}`: `typ` is `JWT` for our
/// access tokens and `oauth-id-jag+jwt` for an ID-JAG (`xaa::ID_JAG_TYP`).
pub fn sign_typed(key: &SigningKey, kid: &str, typ: &str, claims: &Claims) -> String {
    // Serializing strings, integers and a JSON value cannot fail: a failure is a logic bug.
    let kid_json = serde_json::to_string(kid).expect("a string serializes");
    let typ_json = serde_json::to_string(typ).expect("a string serializes");
    let header = format!(r#"{{"alg":"EdDSA","typ":{typ_json},"kid":{kid_json}}}"#);
    let payload = serde_json::to_vec(claims).expect("claims serialize");
    let mut out = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 96);
    b64::encode_into(header.as_bytes(), &mut out);
    out.push('.');
    b64::encode_into(&payload, &mut out);
    let signature = key.sign(out.as_bytes());
    out.push('.');
    b64::encode_into(&signature.to_bytes(), &mut out);
    out
}

/// The `typ` header parameter of a compact token, read without any check: call it only on a
/// token `Verifier::verify` accepted (the ID-JAG grant needs `typ: oauth-id-jag+jwt`).
pub fn header_typ(token: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct TypOnly {
        typ: Option<String>,
    }
    let header_b64 = token.split(|&b| b == b'.').next()?;
    let mut header_buf = [0u8; MAX_HEADER_BYTES];
    let header_json = b64::decode_into(header_b64, &mut header_buf)?;
    serde_json::from_slice::<TypOnly>(header_json).ok()?.typ
}

/// How `verify_batch` checks Ed25519 signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchMode {
    /// One `verify_strict` per token: every result equals what `verify` gives.
    #[default]
    Strict,
    /// `ed25519_dalek::verify_batch` over chunks of `BATCH_CHUNK` (about 2.5 times cheaper per
    /// signature), after refusing non-canonical `S` and undecodable, non-canonical or
    /// small-order `R`. It differs from `verify` only on a signature whose `R` carries a
    /// torsion component `T`: dalek's batch equation weighs each signature by a random 128-bit
    /// coefficient `z` and does not multiply by the cofactor, so such a signature passes when
    /// `z·T` vanishes (probability 1/order(T), e.g. 1/2 for order 2), where `verify_strict`
    /// always refuses it. Only the holder of the private key can make one. Ruling it out costs
    /// a scalar multiplication per signature, which makes the batch slower than `Strict`; the
    /// shards instead mark what a fast batch admitted, and single-token paths re-verify it.
    Fast,
}

/// An external issuer whose tokens we accept, with its keys in a JWKS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    /// The `iss` value its tokens carry.
    pub issuer: String,
    /// Its JWKS file (`EdDSA`, `ES256` and `RS256` keys are used).
    pub jwks_path: PathBuf,
    /// Accepted `aud` values for its tokens; empty means the verifier's own audiences.
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone)]
struct IssuerKeys {
    issuer: String,
    jwks_path: PathBuf,
    audiences: Vec<String>,
    keys: Vec<KeyEntry>,
    loaded_at_s: u64,
}

/// Verifies tokens against our keys and trusted issuers' keys. Each shard owns a clone; the
/// control plane builds a new one when keys rotate. No locks, no I/O in `verify`.
#[derive(Debug, Clone)]
pub struct Verifier {
    own_issuer: String,
    own_keys: Vec<KeyEntry>,
    audiences: Vec<String>,
    leeway_s: u64,
    issuers: Vec<IssuerKeys>,
    /// Set by `from_jwks_file`: keys for any issuer, no audience check.
    any_issuer: Option<Vec<KeyEntry>>,
    batch_mode: BatchMode,
    small_order_ys: SmallOrderYs,
}

const _: () = {
    const fn send_clone<T: Send + Sync + Clone>() {}
    send_clone::<Verifier>();
};

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

enum TokenSignature {
    Ed25519(Signature),
    Other(Vec<u8>),
}

/// A token parsed up to (not including) the signature check.
struct Prepared<'t, 'v> {
    message: &'t [u8],
    signature: TokenSignature,
    key: &'v PublicKey,
    /// `None`: no audience check (`from_jwks_file`).
    audiences: Option<&'v [String]>,
    claims: RawClaims,
}

impl Verifier {
    /// A verifier for tokens we issued: `iss == issuer`, `aud` among `audiences`.
    pub fn own(keyring: &KeyRing, issuer: &str, audiences: Vec<String>, leeway_s: u64) -> Verifier {
        Verifier {
            own_issuer: issuer.to_owned(),
            own_keys: own_entries(keyring),
            audiences,
            leeway_s,
            issuers: Vec::new(),
            any_issuer: None,
            batch_mode: BatchMode::Strict,
            small_order_ys: small_order_ys(),
        }
    }

    /// A verifier that accepts any issuer and audience whose key is in the JWKS file at `path`
    /// (still checking signature, `exp` and `nbf`): for `subzero token verify --jwks FILE`.
    pub fn from_jwks_file(path: &Path, leeway_s: u64) -> Result<Verifier, KeyError> {
        Ok(Verifier {
            own_issuer: String::new(),
            own_keys: Vec::new(),
            audiences: Vec::new(),
            leeway_s,
            issuers: Vec::new(),
            any_issuer: Some(jwk::read_jwks_file(path)?),
            batch_mode: BatchMode::Strict,
            small_order_ys: small_order_ys(),
        })
    }

    /// A verifier that accepts any issuer and audience signed by a key of `keyring` (still
    /// checking signature, `exp` and `nbf`): for `subzero token verify --data-dir DIR`.
    pub fn from_keyring(keyring: &KeyRing, leeway_s: u64) -> Verifier {
        Verifier {
            own_issuer: String::new(),
            own_keys: Vec::new(),
            audiences: Vec::new(),
            leeway_s,
            issuers: Vec::new(),
            any_issuer: Some(own_entries(keyring)),
            batch_mode: BatchMode::Strict,
            small_order_ys: small_order_ys(),
        }
    }

    /// Accept tokens of `trusted` too, reading its JWKS file now.
    pub fn add_trusted_issuer(
        &mut self,
        trusted: TrustedIssuer,
        now_s: u64,
    ) -> Result<(), KeyError> {
        if self.issuers.len() >= MAX_TRUSTED_ISSUERS {
            return Err(KeyError::TooManyIssuers {
                max_issuers: MAX_TRUSTED_ISSUERS,
            });
        }
        let keys = jwk::read_jwks_file(&trusted.jwks_path)?;
        self.issuers.retain(|i| i.issuer != trusted.issuer);
        self.issuers.push(IssuerKeys {
            issuer: trusted.issuer,
            jwks_path: trusted.jwks_path,
            audiences: trusted.audiences,
            keys,
            loaded_at_s: now_s,
        });
        Ok(())
    }

    /// Choose how `verify_batch` checks Ed25519 signatures (default `BatchMode::Strict`).
    pub fn set_batch_mode(&mut self, mode: BatchMode) {
        self.batch_mode = mode;
    }

    /// How `verify_batch` checks Ed25519 signatures.
    pub fn batch_mode(&self) -> BatchMode {
        self.batch_mode
    }

    /// Replace our own keys (after a rotation or retirement), keeping the trusted issuers.
    pub fn set_own_keys(&mut self, keyring: &KeyRing) {
        self.own_keys = own_entries(keyring);
    }

    /// Adds public keys that verify our own issuer's tokens besides the key ring's: the other
    /// nodes' keys in a fleet (each node signs with its own). A kid already held is skipped.
    pub fn add_own_keys(&mut self, keys: impl IntoIterator<Item = KeyEntry>) {
        for key in keys {
            if !self.own_keys.iter().any(|k| k.kid == key.kid) {
                self.own_keys.push(key);
            }
        }
    }

    /// Take `other`'s own keys, keeping this verifier's trusted-issuer keys: a shard adopts the
    /// control plane's new key set without losing JWKS files it reloaded since start.
    pub fn adopt_own_keys(&mut self, other: &Verifier) {
        self.own_keys.clone_from(&other.own_keys);
    }

    /// Re-read `issuer`'s JWKS file, unless it was read less than `JWKS_RELOAD_MIN_INTERVAL_S`
    /// ago (then `Ok(false)`). On a read error the old keys stay and the attempt still counts.
    pub fn reload_issuer(&mut self, issuer: &str, now_s: u64) -> Result<bool, KeyError> {
        let state = self
            .issuers
            .iter_mut()
            .find(|i| i.issuer == issuer)
            .ok_or_else(|| KeyError::UnknownIssuer {
                issuer: issuer.to_owned(),
            })?;
        if now_s < state.loaded_at_s.saturating_add(JWKS_RELOAD_MIN_INTERVAL_S) {
            return Ok(false);
        }
        state.loaded_at_s = now_s;
        state.keys = jwk::read_jwks_file(&state.jwks_path)?;
        Ok(true)
    }

    /// Verify one token: format, algorithm, key, signature, then `exp`, `nbf`, `iss`, `aud`.
    pub fn verify(&self, token: &[u8], now_s: u64) -> Result<Claims, TokenError> {
        let prepared = self.prepare(token)?;
        check_signature(&prepared)?;
        self.check_claims(prepared.claims, prepared.audiences, now_s)
    }

    /// Verify many tokens; the result for each is what `verify` gives (in `BatchMode::Fast`,
    /// see its one exception). In `Fast` mode Ed25519 signatures are checked in batches of
    /// `BATCH_CHUNK`; a failing batch falls back to one-by-one checks.
    pub fn verify_batch(&self, tokens: &[&[u8]], now_s: u64) -> Vec<Result<Claims, TokenError>> {
        if self.batch_mode == BatchMode::Strict {
            return tokens
                .iter()
                .map(|token| self.verify(token, now_s))
                .collect();
        }
        let mut results: Vec<Result<Claims, TokenError>> =
            vec![Err(TokenError::Malformed); tokens.len()];
        let mut pending: Vec<(usize, Prepared<'_, '_>)> =
            Vec::with_capacity(tokens.len().min(BATCH_CHUNK));
        for (token_idx, token) in tokens.iter().enumerate() {
            let prepared = match self.prepare(token) {
                Ok(prepared) => prepared,
                Err(e) => {
                    results[token_idx] = Err(e);
                    continue;
                }
            };
            match &prepared.signature {
                TokenSignature::Ed25519(signature)
                    if ed25519_signature_is_batchable(signature, &self.small_order_ys) =>
                {
                    pending.push((token_idx, prepared));
                    if pending.len() == BATCH_CHUNK {
                        self.flush_batch(&mut pending, &mut results, now_s);
                    }
                }
                _ => {
                    results[token_idx] = check_signature(&prepared).and_then(|()| {
                        self.check_claims(prepared.claims, prepared.audiences, now_s)
                    });
                }
            }
        }
        self.flush_batch(&mut pending, &mut results, now_s);
        results
    }

    fn flush_batch(
        &self,
        pending: &mut Vec<(usize, Prepared<'_, '_>)>,
        results: &mut [Result<Claims, TokenError>],
        now_s: u64,
    ) {
        let batch_ok = pending.len() > 1 && {
            let mut messages: Vec<&[u8]> = Vec::with_capacity(pending.len());
            let mut signatures: Vec<Signature> = Vec::with_capacity(pending.len());
            let mut keys: Vec<VerifyingKey> = Vec::with_capacity(pending.len());
            for (_, p) in pending.iter() {
                if let (PublicKey::Ed25519(key), TokenSignature::Ed25519(signature)) =
                    (p.key, &p.signature)
                {
                    messages.push(p.message);
                    signatures.push(*signature);
                    keys.push(*key);
                }
            }
            messages.len() == pending.len()
                && ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        };
        for (token_idx, p) in pending.drain(..) {
            let signature_ok = if batch_ok {
                Ok(())
            } else {
                check_signature(&p)
            };
            results[token_idx] =
                signature_ok.and_then(|()| self.check_claims(p.claims, p.audiences, now_s));
        }
    }

    /// Everything before the signature check: size, segments, header, algorithm, payload, key.
    fn prepare<'t>(&self, token: &'t [u8]) -> Result<Prepared<'t, '_>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let mut parts = token.splitn(4, |&b| b == b'.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let message = &token[..header_b64.len() + 1 + payload_b64.len()];

        let mut header_buf = [0u8; MAX_HEADER_BYTES];
        if b64::decoded_len(header_b64.len()).is_some_and(|n| n > MAX_HEADER_BYTES) {
            return Err(TokenError::BadHeader);
        }
        let header_json =
            b64::decode_into(header_b64, &mut header_buf).ok_or(TokenError::BadEncoding)?;
        if unique_keys::repeats_a_name(header_json) {
            return Err(TokenError::DuplicateKey);
        }
        let header: Header<'_> =
            serde_json::from_slice(header_json).map_err(|_| TokenError::BadHeader)?;
        let alg = classify_alg(&header.alg)?;
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        let kid = header.kid.ok_or(TokenError::MissingKid)?;

        let mut payload_buf = [0u8; MAX_PAYLOAD_BYTES];
        let payload_json =
            b64::decode_into(payload_b64, &mut payload_buf).ok_or(TokenError::BadEncoding)?;
        if unique_keys::repeats_a_name(payload_json) {
            return Err(TokenError::DuplicateKey);
        }
        let claims: RawClaims =
            serde_json::from_slice(payload_json).map_err(|_| TokenError::BadPayload)?;

        let (key, audiences) = self.resolve_key(claims.iss(), &kid)?;
        if key.alg() != alg {
            return Err(TokenError::AlgKeyMismatch);
        }
        let mut signature_buf = [0u8; MAX_SIGNATURE_BYTES];
        let signature_bytes =
            b64::decode_into(signature_b64, &mut signature_buf).ok_or(TokenError::BadEncoding)?;
        let signature = match key {
            PublicKey::Ed25519(_) => {
                let bytes: &[u8; 64] = signature_bytes
                    .try_into()
                    .map_err(|_| TokenError::BadSignature)?;
                TokenSignature::Ed25519(Signature::from_bytes(bytes))
            }
            PublicKey::Es256(_) | PublicKey::Rs256(_) => {
                TokenSignature::Other(signature_bytes.to_vec())
            }
        };
        Ok(Prepared {
            message,
            signature,
            key,
            audiences,
            claims,
        })
    }

    /// The key named by `kid` for issuer `iss` (unverified: it only selects keys), and the
    /// audiences to accept for that issuer.
    fn resolve_key(
        &self,
        iss: Option<&str>,
        kid: &str,
    ) -> Result<(&PublicKey, Option<&[String]>), TokenError> {
        if let Some(keys) = &self.any_issuer {
            let key = find_key(keys, kid).ok_or(TokenError::UnknownKid { issuer: None })?;
            return Ok((key, None));
        }
        let iss = iss.ok_or(TokenError::MissingClaim("iss"))?;
        if iss == self.own_issuer {
            let key =
                find_key(&self.own_keys, kid).ok_or(TokenError::UnknownKid { issuer: None })?;
            return Ok((key, Some(&self.audiences)));
        }
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or(TokenError::UnknownIssuer)?;
        let key = find_key(&issuer.keys, kid).ok_or_else(|| TokenError::UnknownKid {
            issuer: Some(iss.to_owned()),
        })?;
        let audiences = if issuer.audiences.is_empty() {
            &self.audiences
        } else {
            &issuer.audiences
        };
        Ok((key, Some(audiences)))
    }

    fn check_claims(
        &self,
        raw: RawClaims,
        audiences: Option<&[String]>,
        now_s: u64,
    ) -> Result<Claims, TokenError> {
        let claims = raw.into_claims()?;
        if now_s >= claims.exp.saturating_add(self.leeway_s) {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now_s.saturating_add(self.leeway_s))
        {
            return Err(TokenError::NotYetValid);
        }
        if let Some(accepted) = audiences {
            if claims.aud.is_empty() {
                return Err(TokenError::MissingClaim("aud"));
            }
            if !claims.aud.iter().any(|aud| accepted.contains(aud)) {
                return Err(TokenError::WrongAudience);
            }
        }
        Ok(claims)
    }
}

fn find_key<'k>(keys: &'k [KeyEntry], kid: &str) -> Option<&'k PublicKey> {
    keys.iter().find(|e| e.kid == kid).map(|e| &e.key)
}

fn own_entries(keyring: &KeyRing) -> Vec<KeyEntry> {
    keyring
        .verifying_keys()
        .map(|(kid, key)| KeyEntry {
            kid: kid.to_owned(),
            key: PublicKey::Ed25519(*key),
        })
        .collect()
}

/// The JWS algorithms we verify; everything else is refused with its own error.
fn classify_alg(alg: &str) -> Result<&'static str, TokenError> {
    match alg {
        "EdDSA" => Ok("EdDSA"),
        "ES256" => Ok("ES256"),
        "RS256" => Ok("RS256"),
        "HS256" | "HS384" | "HS512" => Err(TokenError::AlgHmac),
        _ if alg.eq_ignore_ascii_case("none") => Err(TokenError::AlgNone),
        _ => Err(TokenError::AlgUnsupported),
    }
}

fn check_signature(p: &Prepared<'_, '_>) -> Result<(), TokenError> {
    let ok = match (p.key, &p.signature) {
        (PublicKey::Ed25519(key), TokenSignature::Ed25519(signature)) => {
            key.verify_strict(p.message, signature).is_ok()
        }
        (PublicKey::Es256(key), TokenSignature::Other(signature)) => {
            key.verify(p.message, signature).is_ok()
        }
        (PublicKey::Rs256(key), TokenSignature::Other(signature)) => key
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                p.message,
                signature,
            )
            .is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(TokenError::BadSignature)
    }
}

/// The `y` coordinates (sign bit clear) of the eight points of small order.
type SmallOrderYs = [[u8; 32]; 8];

fn small_order_ys() -> SmallOrderYs {
    let mut ys = [[0u8; 32]; 8];
    for (y, point) in ys
        .iter_mut()
        .zip(curve25519_dalek::constants::EIGHT_TORSION.iter())
    {
        *y = point.compress().to_bytes();
        y[31] &= 0x7f;
    }
    ys
}

/// Whether a signature may go into a `BatchMode::Fast` batch. `verify_strict` refuses a
/// non-canonical `S`, and an `R` that is non-canonically encoded (`y >= p`, or `x = 0` with the
/// sign bit set, which only `y = ±1` allow) or of small order; the batch equation checks none
/// of these, so such signatures are kept out and checked one by one (and refused). Byte
/// compares only: no point decompression. An `R` off the curve makes its chunk fail, and the
/// fallback refuses it. A torsion component in `R` is not checked (see `BatchMode::Fast`).
fn ed25519_signature_is_batchable(signature: &Signature, small_order_ys: &SmallOrderYs) -> bool {
    if bool::from(Scalar::from_canonical_bytes(*signature.s_bytes()).is_none()) {
        return false;
    }
    let mut y = *signature.r_bytes();
    y[31] &= 0x7f;
    // p = 2^255 - 19, little-endian: ed ff .. ff 7f.
    let y_at_least_p = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed;
    !y_at_least_p && !small_order_ys.contains(&y)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_S: u64 = 1_700_000_000;

    fn fixture() -> (tempfile::TempDir, KeyRing, Verifier) {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::generate(dir.path(), NOW_S).unwrap();
        let verifier = Verifier::own(&ring, "subzero", vec!["api".into()], 60);
        (dir, ring, verifier)
    }

    fn claims() -> Claims {
        Claims::new_for(
            "subzero",
            "alice",
            vec!["api".into()],
            &["read"],
            300,
            NOW_S,
            new_jti(),
        )
    }

    fn forge(header: &str, payload: &str, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64::encode(header.as_bytes()),
            b64::encode(payload.as_bytes()),
            b64::encode(signature)
        )
    }

    #[test]
    fn typed_tokens_verify_and_expose_their_typ() {
        let (_dir, ring, verifier) = fixture();
        let c = claims();
        let plain = sign(ring.signing_key(), ring.current_kid(), &c);
        assert_eq!(header_typ(plain.as_bytes()).as_deref(), Some("JWT"));
        let jag = sign_typed(
            ring.signing_key(),
            ring.current_kid(),
            "oauth-id-jag+jwt",
            &c,
        );
        assert_eq!(verifier.verify(jag.as_bytes(), NOW_S), Ok(c));
        assert_eq!(
            header_typ(jag.as_bytes()).as_deref(),
            Some("oauth-id-jag+jwt")
        );
        assert_eq!(header_typ(b"not a token"), None);
    }

    #[test]
    fn round_trip_and_claim_checks() {
        let (_dir, ring, verifier) = fixture();
        let c = claims();
        let token = sign(ring.signing_key(), ring.current_kid(), &c);
        assert_eq!(verifier.verify(token.as_bytes(), NOW_S), Ok(c.clone()));
        assert_eq!(
            verifier.verify(token.as_bytes(), NOW_S + 359),
            Ok(c.clone())
        );
        assert_eq!(
            verifier.verify(token.as_bytes(), NOW_S + 360),
            Err(TokenError::Expired)
        );

        let mut early = c.clone();
        early.nbf = Some(NOW_S + 61);
        let token = sign(ring.signing_key(), ring.current_kid(), &early);
        assert_eq!(
            verifier.verify(token.as_bytes(), NOW_S),
            Err(TokenError::NotYetValid)
        );
        assert!(verifier.verify(token.as_bytes(), NOW_S + 1).is_ok());

        let mut other_aud = c.clone();
        other_aud.aud = vec!["billing".into(), "admin".into()];
        let token = sign(ring.signing_key(), ring.current_kid(), &other_aud);
        assert_eq!(
            verifier.verify(token.as_bytes(), NOW_S),
            Err(TokenError::WrongAudience)
        );

        let mut stranger = c.clone();
        stranger.iss = "evil".into();
        let token = sign(ring.signing_key(), ring.current_kid(), &stranger);
        assert_eq!(
            verifier.verify(token.as_bytes(), NOW_S),
            Err(TokenError::UnknownIssuer)
        );
    }

    #[test]
    fn refuses_none_hmac_unknown_kid_and_malformed() {
        let (_dir, ring, verifier) = fixture();
        let payload = serde_json::to_string(&claims()).unwrap();
        let kid = ring.current_kid();
        let none = forge(r#"{"alg":"none"}"#, &payload, b"");
        assert_eq!(
            verifier.verify(none.as_bytes(), NOW_S),
            Err(TokenError::AlgNone)
        );
        let hs = forge(
            &format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#),
            &payload,
            &[0; 32],
        );
        assert_eq!(
            verifier.verify(hs.as_bytes(), NOW_S),
            Err(TokenError::AlgHmac)
        );
        let ps = forge(r#"{"alg":"PS256","kid":"k"}"#, &payload, &[0; 32]);
        assert_eq!(
            verifier.verify(ps.as_bytes(), NOW_S),
            Err(TokenError::AlgUnsupported)
        );
        let es = forge(
            &format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#),
            &payload,
            &[0; 64],
        );
        assert_eq!(
            verifier.verify(es.as_bytes(), NOW_S),
            Err(TokenError::AlgKeyMismatch)
        );
        let crit = forge(
            &format!(r#"{{"alg":"EdDSA","kid":"{kid}","crit":["b64"]}}"#),
            &payload,
            &[0; 64],
        );
        assert_eq!(
            verifier.verify(crit.as_bytes(), NOW_S),
            Err(TokenError::CriticalHeader)
        );
        let no_kid = forge(r#"{"alg":"EdDSA"}"#, &payload, &[0; 64]);
        assert_eq!(
            verifier.verify(no_kid.as_bytes(), NOW_S),
            Err(TokenError::MissingKid)
        );
        let unknown = forge(r#"{"alg":"EdDSA","kid":"nope"}"#, &payload, &[0; 64]);
        assert_eq!(
            verifier.verify(unknown.as_bytes(), NOW_S),
            Err(TokenError::UnknownKid { issuer: None })
        );

        let token = sign(ring.signing_key(), kid, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let two = format!("{}.{}", parts[0], parts[1]);
        assert_eq!(
            verifier.verify(two.as_bytes(), NOW_S),
            Err(TokenError::Malformed)
        );
        let four = format!("{token}.x");
        assert_eq!(
            verifier.verify(four.as_bytes(), NOW_S),
            Err(TokenError::Malformed)
        );
        let bad_b64 = format!("{}.{}!.{}", parts[0], parts[1], parts[2]);
        assert_eq!(
            verifier.verify(bad_b64.as_bytes(), NOW_S),
            Err(TokenError::BadEncoding)
        );
        let bad_json = forge("{\"alg\":", &payload, &[0; 64]);
        assert_eq!(
            verifier.verify(bad_json.as_bytes(), NOW_S),
            Err(TokenError::BadHeader)
        );
        let bad_payload = format!("{}.{}.{}", parts[0], b64::encode(b"[1,2]"), parts[2]);
        assert_eq!(
            verifier.verify(bad_payload.as_bytes(), NOW_S),
            Err(TokenError::BadPayload)
        );
        let huge = vec![b'a'; MAX_TOKEN_BYTES + 1];
        assert_eq!(verifier.verify(&huge, NOW_S), Err(TokenError::TooLarge));
        let short_sig = format!("{}.{}.{}", parts[0], parts[1], b64::encode(&[1; 63]));
        assert_eq!(
            verifier.verify(short_sig.as_bytes(), NOW_S),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn descriptions_are_distinct() {
        let all = [
            TokenError::TooLarge,
            TokenError::Malformed,
            TokenError::BadEncoding,
            TokenError::BadHeader,
            TokenError::CriticalHeader,
            TokenError::BadPayload,
            TokenError::AlgNone,
            TokenError::AlgHmac,
            TokenError::AlgUnsupported,
            TokenError::AlgKeyMismatch,
            TokenError::MissingKid,
            TokenError::UnknownKid { issuer: None },
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::UnknownIssuer,
            TokenError::WrongAudience,
            TokenError::MissingClaim("sub"),
        ];
        let mut seen = std::collections::HashSet::new();
        for e in &all {
            assert!(
                seen.insert(e.description()),
                "duplicate description {}",
                e.description()
            );
        }
    }

    #[test]
    fn batch_prefilter_matches_strict_rules() {
        let (_dir, ring, _) = fixture();
        let ys = small_order_ys();
        let batchable =
            |bytes: &[u8; 64]| ed25519_signature_is_batchable(&Signature::from_bytes(bytes), &ys);
        let good = ring.signing_key().sign(b"m");
        assert!(batchable(&good.to_bytes()));
        // Every small-order point, under both sign bits, is kept out of batches.
        for point in &curve25519_dalek::constants::EIGHT_TORSION {
            for sign in [0, 0x80] {
                let mut bytes = good.to_bytes();
                bytes[..32].copy_from_slice(point.compress().as_bytes());
                bytes[31] = (bytes[31] & 0x7f) | sign;
                assert!(!batchable(&bytes), "{point:?}");
            }
        }
        // Every y >= p (a non-canonical encoding) is kept out; y = p - 2 is canonical and
        // not of small order, so it passes (whether it is on the curve is the batch's job).
        let mut bytes = good.to_bytes();
        bytes[..32].copy_from_slice(&[0xff; 32]);
        bytes[0] = 0xeb;
        bytes[31] = 0x7f;
        assert!(batchable(&bytes));
        for low in 0xedu8..=0xff {
            let mut bytes = good.to_bytes();
            bytes[..32].copy_from_slice(&[0xff; 32]);
            bytes[0] = low;
            bytes[31] = 0x7f;
            assert!(!batchable(&bytes), "y low byte {low:#x}");
        }
        let mut bytes = good.to_bytes();
        bytes[63] |= 0xf0; // S >= l
        assert!(!batchable(&bytes));
        let mut bytes = good.to_bytes();
        bytes[..32].copy_from_slice(&[0; 32]);
        bytes[0] = 1; // R = identity, small order
        assert!(!batchable(&bytes));
        let mut bytes = good.to_bytes();
        bytes[..32].copy_from_slice(&[0xff; 32]);
        bytes[0] = 0xee;
        bytes[31] = 0x7f; // y = p + 1: a non-canonical encoding of y = 1 (identity)
        assert!(!batchable(&bytes));
    }
}
