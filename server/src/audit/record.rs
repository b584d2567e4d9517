//! One audit record as a line of JSON: encoding, the BLAKE3 chain link, and sealing of the
//! personal fields. No I/O; the clock and the random source are arguments.
//!
//! A record line is `{"seq":N,"ts_ms":T,"actor":..,"action":..,"resource":..,"outcome":..,
//! "source":..,"hash":"<64 hex>"}` followed by `\n`. The hash is
//! `BLAKE3(previous record's hash ‖ the line's bytes before ,"hash":")`, so the chain covers
//! the exact stored bytes (ciphertexts included) and verifying needs no key and no
//! canonical re-encoding. A line without its `\n` is a torn write.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::{CryptoRng, RngCore};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::Event;

/// Length of a chain hash.
pub const HASH_LEN: usize = 32;
/// A chain hash.
pub type Hash = [u8; HASH_LEN];
/// The hash the first record of a fresh log chains to.
pub const GENESIS: Hash = [0; HASH_LEN];

/// What precedes the hex hash at the end of every record line.
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// `,"hash":"` + 64 hex digits + `"}`: the fixed-length end of every record line.
pub const HASH_SUFFIX_LEN: usize = HASH_KEY.len() + 2 * HASH_LEN + 2;
/// Nonce length of XChaCha20-Poly1305.
const NONCE_LEN: usize = 24;
/// Additional data prefix: binds a ciphertext to its field and record.
const AAD_PREFIX: &[u8] = b"subzero audit pii v1\0";

/// The key personal fields are sealed with (XChaCha20-Poly1305). Zeroed on drop.
pub struct PiiKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for PiiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiiKey(..)")
    }
}

impl PiiKey {
    /// A key from 32 bytes (derived by the caller, e.g. with HKDF from the vault master key).
    pub fn new(bytes: &Zeroizing<[u8; 32]>) -> PiiKey {
        PiiKey {
            cipher: XChaCha20Poly1305::new(&(**bytes).into()),
        }
    }

    fn aad(field: &str, seq: u64) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_PREFIX.len() + field.len() + 9);
        aad.extend_from_slice(AAD_PREFIX);
        aad.extend_from_slice(field.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&seq.to_be_bytes());
        aad
    }

    /// `base64(nonce ‖ ciphertext ‖ tag)` of `plain` for `field` of record `seq`.
    pub fn seal(
        &self,
        field: &str,
        seq: u64,
        plain: &str,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let aad = Self::aad(field, seq);
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: &aad,
        };
        // Encryption fails only for messages beyond the cipher's limit (256 GiB); fields are
        // bounded by `max_field_bytes`.
        let ct = self
            .cipher
            .encrypt(&XNonce::from(nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        B64.encode(out)
    }

    /// The plaintext of a sealed `field` of record `seq`, or `None` (wrong key, damaged).
    pub fn open(&self, field: &str, seq: u64, sealed: &str) -> Option<String> {
        let bytes = B64.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let aad = Self::aad(field, seq);
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: &aad })
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

/// Whether `actor` is personal data (an email address): then it is sealed like `source`.
pub fn actor_is_personal(actor: &str) -> bool {
    actor.contains('@')
}

/// A field as stored: plain, or sealed (`{"enc":"..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Stored {
    /// Stored as given.
    Plain(String),
    /// Sealed with the data dir's audit key.
    Sealed {
        /// `base64(nonce ‖ ciphertext ‖ tag)`.
        enc: String,
    },
}

impl Stored {
    /// The plaintext: opened with `key` when sealed (`None` without the key or when it fails).
    pub fn reveal(&self, key: Option<&PiiKey>, field: &str, seq: u64) -> Option<String> {
        match self {
            Stored::Plain(text) => Some(text.clone()),
            Stored::Sealed { enc } => key.and_then(|k| k.open(field, seq, enc)),
        }
    }
}

/// A record parsed back from its line (fields still sealed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Parsed {
    /// Sequence number (1 for the first record ever written).
    pub seq: u64,
    /// When it was appended, unix milliseconds.
    pub ts_ms: u64,
    /// Who.
    pub actor: Stored,
    /// Did what.
    pub action: String,
    /// To what.
    pub resource: String,
    /// With what result.
    pub outcome: String,
    /// From where (always sealed).
    pub source: Stored,
    /// Hex of the chain hash.
    pub hash: String,
}

/// Why a record line does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a record line (bad JSON, a missing field, the wrong shape).
    #[error("not a well-formed record ({0})")]
    Malformed(String),
    /// The sequence number is not the one that must follow.
    #[error("sequence number {found} where {expected} must follow")]
    Sequence {
        /// The number that must follow the previous record.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// The stored hash is not BLAKE3(previous hash ‖ record bytes).
    #[error(
        "hash does not chain to the previous record (the record or one before it was changed)"
    )]
    Chain,
}

/// Appends `text` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn push_field(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(b',');
    push_json_str(out, key);
    out.push(b':');
    push_json_str(out, value);
}

fn push_sealed(out: &mut Vec<u8>, key: &str, enc: &str) {
    out.push(b',');
    push_json_str(out, key);
    out.extend_from_slice(b":{\"enc\":");
    push_json_str(out, enc);
    out.push(b'}');
}

/// Appends the line of `event` as record `seq` chained to `prev` to `out`, and returns its
/// hash. `source` (and an actor that is an email address) are sealed with `key`.
pub fn encode(
    out: &mut Vec<u8>,
    prev: &Hash,
    seq: u64,
    ts_ms: u64,
    event: &Event,
    key: &PiiKey,
    rng: &mut (impl RngCore + CryptoRng),
) -> Hash {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"ts_ms\":");
    out.extend_from_slice(ts_ms.to_string().as_bytes());
    if actor_is_personal(&event.actor) {
        push_sealed(out, "actor", &key.seal("actor", seq, &event.actor, rng));
    } else {
        push_field(out, "actor", &event.actor);
    }
    push_field(out, "action", &event.action);
    push_field(out, "resource", &event.resource);
    push_field(out, "outcome", &event.outcome);
    push_sealed(out, "source", &key.seal("source", seq, &event.source, rng));
    let hash = link(prev, &out[start..]);
    out.extend_from_slice(HASH_KEY);
    push_hex(out, &hash);
    out.extend_from_slice(b"\"}\n");
    debug_assert!(out.len() - start > HASH_SUFFIX_LEN);
    hash
}

/// One chain link: `BLAKE3(prev ‖ body)`.
pub fn link(prev: &Hash, body: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prev);
    hasher.update(body);
    *hasher.finalize().as_bytes()
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// The hash whose lower-case hex is `text`.
pub fn parse_hex(text: &str) -> Option<Hash> {
    if text.len() != 2 * HASH_LEN {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; HASH_LEN];
    for (idx, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        out[idx] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Checks the line of record `expected_seq` (without its `\n`) against `prev`: its shape, its
/// sequence number and its hash. Returns it parsed with its hash.
pub fn verify_line(
    line: &[u8],
    prev: &Hash,
    expected_seq: u64,
) -> Result<(Parsed, Hash), LineError> {
    let parsed: Parsed =
        serde_json::from_slice(line).map_err(|e| LineError::Malformed(e.to_string()))?;
    if line.len() <= HASH_SUFFIX_LEN || !line[line.len() - HASH_SUFFIX_LEN..].starts_with(HASH_KEY)
    {
        return Err(LineError::Malformed(
            "the hash is not the last field".into(),
        ));
    }
    if parsed.seq != expected_seq {
        return Err(LineError::Sequence {
            expected: expected_seq,
            found: parsed.seq,
        });
    }
    let stored = parse_hex(&parsed.hash)
        .ok_or_else(|| LineError::Malformed("the hash is not 64 lower-case hex digits".into()))?;
    let body = &line[..line.len() - HASH_SUFFIX_LEN];
    if link(prev, body) != stored {
        return Err(LineError::Chain);
    }
    Ok((parsed, stored))
}

/// The sequence number at the start of a record line (`{"seq":N,`), without parsing the rest:
/// reads skip records by it.
pub fn peek_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|&b| b == b',')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn key(byte: u8) -> PiiKey {
        PiiKey::new(&Zeroizing::new([byte; 32]))
    }

    fn event(n: u32) -> Event {
        Event {
            actor: format!("svc-{n}"),
            action: "vault.put".into(),
            resource: format!("vault:k{n}"),
            outcome: "200".into(),
            source: "203.0.113.9".into(),
        }
    }

    fn chain(n: u32, k: &PiiKey) -> (Vec<u8>, Vec<Hash>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut out = Vec::new();
        let mut prev = GENESIS;
        let mut hashes = Vec::new();
        for i in 1..=n {
            prev = encode(
                &mut out,
                &prev,
                u64::from(i),
                1000 + u64::from(i),
                &event(i),
                k,
                &mut rng,
            );
            hashes.push(prev);
        }
        (out, hashes)
    }

    fn lines(bytes: &[u8]) -> Vec<&[u8]> {
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn a_chain_verifies_record_by_record() {
        let k = key(1);
        let (bytes, hashes) = chain(5, &k);
        let mut prev = GENESIS;
        for (idx, line) in lines(&bytes).into_iter().enumerate() {
            let (parsed, hash) = verify_line(line, &prev, idx as u64 + 1).unwrap();
            assert_eq!(hash, hashes[idx]);
            assert_eq!(parsed.seq, idx as u64 + 1);
            assert_eq!(peek_seq(line), Some(parsed.seq));
            prev = hash;
        }
    }

    #[test]
    fn any_changed_byte_breaks_the_record_or_the_next_link() {
        let k = key(1);
        let (bytes, _) = chain(3, &k);
        let first_len = lines(&bytes)[0].len();
        // Every byte of the first record except its newline.
        for pos in 0..first_len {
            let mut damaged = bytes.clone();
            damaged[pos] ^= 0x01;
            let ls = lines(&damaged);
            let first = verify_line(ls[0], &GENESIS, 1);
            let broken = match first {
                Err(_) => true,
                // A flip inside the hex hash may still parse: then the next link breaks.
                Ok((_, h)) => verify_line(ls[1], &h, 2).is_err(),
            };
            assert!(broken, "a flip at byte {pos} went unnoticed");
        }
    }

    #[test]
    fn a_rechained_rewrite_changes_every_later_hash() {
        let k = key(1);
        let (bytes, hashes) = chain(3, &k);
        let text = String::from_utf8(bytes).unwrap();
        let rewritten = text.replacen("vault:k1", "vault:kX", 1);
        // Re-chain from the rewritten first record on: each line verifies against its new
        // predecessor, but the head differs from the one a checkpoint holds.
        let mut prev = GENESIS;
        let mut out = Vec::new();
        for line in lines(rewritten.as_bytes()) {
            let body = &line[..line.len() - HASH_SUFFIX_LEN];
            prev = link(&prev, body);
            out.push(prev);
        }
        assert_ne!(out[2], hashes[2]);
        assert_ne!(out[0], hashes[0]);
    }

    #[test]
    fn wrong_sequence_is_named() {
        let k = key(1);
        let (bytes, _) = chain(2, &k);
        let ls = lines(&bytes);
        assert_eq!(
            verify_line(ls[1], &GENESIS, 1).unwrap_err(),
            LineError::Sequence {
                expected: 1,
                found: 2
            }
        );
    }

    #[test]
    fn personal_fields_are_sealed_and_open_only_with_the_key_for_their_record() {
        let k = key(1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut out = Vec::new();
        let mut e = event(1);
        e.actor = "alice@example.com".into();
        encode(&mut out, &GENESIS, 9, 5, &e, &k, &mut rng);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains("203.0.113.9"), "{text}");
        assert!(!text.contains("alice@example.com"), "{text}");
        assert!(text.contains("\"resource\":\"vault:k1\""), "{text}");
        let (parsed, _) = verify_line(lines(&out)[0], &GENESIS, 9).unwrap();
        assert_eq!(
            parsed.source.reveal(Some(&k), "source", 9).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            parsed.actor.reveal(Some(&k), "actor", 9).as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            parsed.source.reveal(Some(&key(2)), "source", 9),
            None,
            "wrong key"
        );
        assert_eq!(
            parsed.source.reveal(Some(&k), "source", 10),
            None,
            "moved to another record"
        );
        assert_eq!(
            parsed.source.reveal(Some(&k), "actor", 9),
            None,
            "moved to another field"
        );
        assert_eq!(parsed.source.reveal(None, "source", 9), None);
    }

    #[test]
    fn hostile_text_stays_one_line() {
        let k = key(1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut e = event(1);
        e.resource = "a\n{\"seq\":2}\"\\".into();
        let mut out = Vec::new();
        let h = encode(&mut out, &GENESIS, 1, 5, &e, &k, &mut rng);
        assert_eq!(out.iter().position(|&b| b == b'\n'), Some(out.len() - 1));
        let (parsed, got) = verify_line(&out[..out.len() - 1], &GENESIS, 1).unwrap();
        assert_eq!(parsed.resource, e.resource);
        assert_eq!(got, h);
    }

    #[test]
    fn hex_round_trip() {
        let h: Hash = core::array::from_fn(|i| i as u8 * 7);
        assert_eq!(parse_hex(&hex(&h)), Some(h));
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(parse_hex(&hex(&h).to_uppercase()), None);
    }
}
