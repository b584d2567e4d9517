//! Sealing and opening vault values: XChaCha20-Poly1305 under a namespace key, with the
//! namespace, entry name and version as associated data (envelope format in `vault/mod.rs`).

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::entry::{validate_name, validate_value, MAX_NAME_LEN, MAX_VALUE_BYTES};
use super::master_key::NamespaceKey;
use super::VaultError;
use crate::auth::Claims;

/// First byte of a format-1 envelope.
pub const FORMAT_V1: u8 = 0x01;
/// XChaCha20 nonce length, in bytes.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length, in bytes.
pub const TAG_LEN: usize = 16;
/// Bytes an envelope adds to the value: format byte, nonce, tag.
pub const ENVELOPE_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// A caller's vault namespace: its token's `iss`, a NUL byte, its `sub`. The issuer may not
/// contain NUL, so the first NUL splits the two unambiguously (`sub` may contain anything).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    bytes: Vec<u8>,
}

impl Namespace {
    /// The namespace of `iss` and `sub`.
    pub fn new(iss: &str, sub: &str) -> Result<Namespace, VaultError> {
        if iss.as_bytes().contains(&0) {
            return Err(VaultError::BadNamespace);
        }
        let mut bytes = Vec::with_capacity(iss.len() + 1 + sub.len());
        bytes.extend_from_slice(iss.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(sub.as_bytes());
        Ok(Namespace { bytes })
    }

    /// The namespace of an authenticated caller.
    pub fn of(claims: &Claims) -> Result<Namespace, VaultError> {
        Namespace::new(&claims.iss, &claims.sub)
    }

    /// `iss NUL sub`: the HKDF info and, with the name, a natural storage key prefix.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The associated data of format 1 (see the module docs). Names are at most 128 bytes and
/// namespaces come from tokens of at most 8 KiB, so both length prefixes fit.
fn associated_data(namespace: &Namespace, name: &str, version: u64) -> Vec<u8> {
    let ns = namespace.as_bytes();
    let mut aad = Vec::with_capacity(1 + 4 + ns.len() + 1 + name.len() + 8);
    aad.push(FORMAT_V1);
    aad.extend_from_slice(&(ns.len() as u32).to_be_bytes());
    aad.extend_from_slice(ns);
    aad.push(name.len() as u8);
    aad.extend_from_slice(name.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Seals `plaintext` as entry `name`, `version` of `namespace`, with a fresh random nonce from
/// `rng`. The name and value are validated first (`validate_name`, `validate_value`).
pub fn seal(
    key: &NamespaceKey,
    namespace: &Namespace,
    name: &str,
    version: u64,
    plaintext: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, VaultError> {
    validate_name(name)?;
    validate_value(plaintext)?;
    let namespace_len_fits = u32::try_from(namespace.as_bytes().len()).is_ok();
    if !namespace_len_fits {
        return Err(VaultError::BadNamespace);
    }
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let aad = associated_data(namespace, name, version);
    let cipher = XChaCha20Poly1305::new(&(*key.bytes()).into());
    let payload = Payload {
        msg: plaintext,
        aad: &aad,
    };
    // The AEAD refuses only messages near 2^38 bytes; ours are at most MAX_VALUE_BYTES.
    let ciphertext =
        cipher
            .encrypt(&XNonce::from(nonce), payload)
            .map_err(|_| VaultError::ValueTooLarge {
                len: plaintext.len(),
                max: MAX_VALUE_BYTES,
            })?;
    let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    sealed.push(FORMAT_V1);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    debug_assert_eq!(sealed.len(), plaintext.len() + ENVELOPE_OVERHEAD);
    Ok(sealed)
}

/// Opens what `seal` produced for the same key, namespace, name and version. Any difference,
/// and any change to the bytes, is an error; the plaintext is zeroed when dropped.
pub fn open(
    key: &NamespaceKey,
    namespace: &Namespace,
    name: &str,
    version: u64,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if name.len() > MAX_NAME_LEN {
        // Never sealed (seal validates names), and the AAD could not encode it.
        return Err(VaultError::Unauthentic);
    }
    if sealed.len() < ENVELOPE_OVERHEAD {
        return Err(VaultError::Truncated { len: sealed.len() });
    }
    let (format, rest) = sealed.split_at(1);
    if format[0] != FORMAT_V1 {
        return Err(VaultError::UnknownFormat(format[0]));
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let mut nonce_bytes = [0u8; NONCE_LEN];
    nonce_bytes.copy_from_slice(nonce);
    let aad = associated_data(namespace, name, version);
    let cipher = XChaCha20Poly1305::new(&(*key.bytes()).into());
    let payload = Payload {
        msg: ciphertext,
        aad: &aad,
    };
    cipher
        .decrypt(&XNonce::from(nonce_bytes), payload)
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Unauthentic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::MasterKey;

    const SECRET: &[u8] = b"1//0gRefreshToken-do-not-leak-ABCDEFGHIJKLMNOPQRSTUVWXYZ";

    struct Fixture {
        master: MasterKey,
        ns: Namespace,
        key: NamespaceKey,
    }

    fn fixture() -> Fixture {
        let master = MasterKey::from_bytes([42; 32]);
        let ns = Namespace::new("https://idp.example", "alice").unwrap();
        let key = master.namespace_key(&ns).unwrap();
        Fixture { master, ns, key }
    }

    fn rng() -> rand::rngs::ThreadRng {
        rand::thread_rng()
    }

    #[test]
    fn round_trip_and_envelope_layout() {
        let f = fixture();
        let sealed = seal(&f.key, &f.ns, "google", 3, SECRET, &mut rng()).unwrap();
        assert_eq!(sealed.len(), SECRET.len() + ENVELOPE_OVERHEAD);
        assert_eq!(sealed[0], FORMAT_V1);
        let opened = open(&f.key, &f.ns, "google", 3, &sealed).unwrap();
        assert_eq!(opened.as_slice(), SECRET);
        let max = vec![b'v'; MAX_VALUE_BYTES];
        let sealed = seal(&f.key, &f.ns, "big", 1, &max, &mut rng()).unwrap();
        assert_eq!(
            open(&f.key, &f.ns, "big", 1, &sealed).unwrap().as_slice(),
            max
        );
    }

    #[test]
    fn every_mismatch_fails_to_open() {
        let f = fixture();
        let sealed = seal(&f.key, &f.ns, "google", 3, SECRET, &mut rng()).unwrap();

        // Another name, version, or namespace (with this key, and with its own key).
        assert_eq!(
            open(&f.key, &f.ns, "github", 3, &sealed),
            Err(VaultError::Unauthentic)
        );
        assert_eq!(
            open(&f.key, &f.ns, "google", 2, &sealed),
            Err(VaultError::Unauthentic)
        );
        assert_eq!(
            open(&f.key, &f.ns, "google", 4, &sealed),
            Err(VaultError::Unauthentic)
        );
        let bob = Namespace::new("https://idp.example", "bob").unwrap();
        assert_eq!(
            open(&f.key, &bob, "google", 3, &sealed),
            Err(VaultError::Unauthentic)
        );
        let bob_key = f.master.namespace_key(&bob).unwrap();
        assert_eq!(
            open(&bob_key, &bob, "google", 3, &sealed),
            Err(VaultError::Unauthentic)
        );
        let other_issuer = Namespace::new("https://evil.example", "alice").unwrap();
        let other_key = f.master.namespace_key(&other_issuer).unwrap();
        assert_eq!(
            open(&other_key, &other_issuer, "google", 3, &sealed),
            Err(VaultError::Unauthentic)
        );

        // Another master key.
        let wrong_master = MasterKey::from_bytes([43; 32]);
        let wrong_key = wrong_master.namespace_key(&f.ns).unwrap();
        assert_eq!(
            open(&wrong_key, &f.ns, "google", 3, &sealed),
            Err(VaultError::Unauthentic)
        );

        // Any flipped bit: format byte, nonce, ciphertext, tag.
        for idx in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[idx] ^= 0x01;
            let err = open(&f.key, &f.ns, "google", 3, &tampered).unwrap_err();
            if idx == 0 {
                assert_eq!(err, VaultError::UnknownFormat(FORMAT_V1 ^ 0x01));
            } else {
                assert_eq!(err, VaultError::Unauthentic, "byte {idx}");
            }
        }

        // Truncated, extended, empty.
        for len in [0, 1, ENVELOPE_OVERHEAD - 1] {
            assert_eq!(
                open(&f.key, &f.ns, "google", 3, &sealed[..len]),
                Err(VaultError::Truncated { len })
            );
        }
        let shortened = &sealed[..sealed.len() - 1];
        assert_eq!(
            open(&f.key, &f.ns, "google", 3, shortened),
            Err(VaultError::Unauthentic)
        );
        let mut extended = sealed.clone();
        extended.push(0);
        assert_eq!(
            open(&f.key, &f.ns, "google", 3, &extended),
            Err(VaultError::Unauthentic)
        );
        assert!(!VaultError::Unauthentic.is_client_error());
    }

    #[test]
    fn nonces_are_fresh_and_the_plaintext_never_shows() {
        let f = fixture();
        let a = seal(&f.key, &f.ns, "google", 1, SECRET, &mut rng()).unwrap();
        let b = seal(&f.key, &f.ns, "google", 1, SECRET, &mut rng()).unwrap();
        assert_ne!(a, b);
        assert_ne!(
            a[1..=NONCE_LEN],
            b[1..=NONCE_LEN],
            "a fresh nonce each time"
        );
        for sealed in [&a, &b] {
            for window in SECRET.windows(8) {
                assert!(
                    !sealed.windows(8).any(|w| w == window),
                    "8 plaintext bytes appear in the sealed value"
                );
            }
        }
        assert_eq!(
            open(&f.key, &f.ns, "google", 1, &b).unwrap().as_slice(),
            SECRET
        );
    }

    #[test]
    fn seal_validates_name_and_value() {
        let f = fixture();
        assert!(matches!(
            seal(&f.key, &f.ns, "a/b", 1, SECRET, &mut rng()),
            Err(VaultError::BadName(_))
        ));
        assert_eq!(
            seal(&f.key, &f.ns, "a", 1, b"", &mut rng()),
            Err(VaultError::EmptyValue)
        );
        let too_big = vec![0u8; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            seal(&f.key, &f.ns, "a", 1, &too_big, &mut rng()),
            Err(VaultError::ValueTooLarge { .. })
        ));
        assert_eq!(
            open(&f.key, &f.ns, &"a".repeat(300), 1, &[0; 64]),
            Err(VaultError::Unauthentic)
        );
    }

    #[test]
    fn namespaces_are_unambiguous() {
        assert_eq!(Namespace::new("i\0x", "s"), Err(VaultError::BadNamespace));
        let a = Namespace::new("ab", "c").unwrap();
        let b = Namespace::new("a", "bc").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes(), b"ab\0c");
        // A NUL in the subject is fine: the issuer has none, so the first NUL splits.
        let with_nul = Namespace::new("a", "b\0c").unwrap();
        assert_eq!(with_nul.as_bytes(), b"a\0b\0c");
        let claims = Claims::new_for("iss", "sub", vec![], &[], 60, 0, "j".into());
        assert_eq!(Namespace::of(&claims).unwrap().as_bytes(), b"iss\0sub");
    }

    #[test]
    fn associated_data_encodes_every_field_with_lengths() {
        let ns = Namespace::new("i", "s").unwrap();
        let aad = associated_data(&ns, "n", 0x0102);
        assert_eq!(
            aad,
            [
                &[FORMAT_V1][..],
                &3u32.to_be_bytes(),
                b"i\0s",
                &[1],
                b"n",
                &0x0102u64.to_be_bytes()
            ]
            .concat()
        );
    }
}
