//! Signed checkpoints of the audit chain in the C2SP formats (c2sp.org/tlog-checkpoint inside
//! c2sp.org/signed-note), with an Ed25519 key; no I/O except loading or creating that key.
//!
//! ```text
//! <origin>\n
//! <tree size: records in the log, decimal>\n
//! <base64 of the chain head: the hash of record number tree size>\n
//! \n
//! — <key name> <base64(key ID ‖ Ed25519 signature over the three lines above)>\n
//! ```
//! The key ID is `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]`; the verifier key a third
//! party holds is `<name>+<hex key ID>+<base64(0x01 ‖ public key)>`.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::record::{Hash, HASH_LEN};

/// Signature type byte of Ed25519 in signed-note.
const ED25519_TYPE: u8 = 0x01;
/// The signature line's prefix: em dash, space.
const SIG_PREFIX: &str = "\u{2014} ";
/// Longest note accepted.
pub const MAX_NOTE_BYTES: usize = 8 * 1024;
/// Most signature lines read from one note.
const MAX_SIGNATURES: usize = 16;

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not a signed note or not a checkpoint.
    #[error("not a checkpoint: {0}")]
    Malformed(String),
    /// No signature by the expected key.
    #[error("no signature by key {0}")]
    NoSignature(String),
    /// The key's signature does not verify over the text.
    #[error("the signature by key {0} does not verify (the checkpoint was changed or forged)")]
    BadSignature(String),
    /// A verifier key string did not parse.
    #[error("bad verifier key: {0}")]
    BadVerifierKey(String),
}

/// A checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity.
    pub origin: String,
    /// Records in the log.
    pub size: u64,
    /// The hash of record `size`.
    pub head: Hash,
}

impl Checkpoint {
    /// The note text (what is signed).
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.head)
        )
    }
}

/// The signed-note key ID of an Ed25519 key named `name`.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519_TYPE]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Whether `name` is a usable key name (non-empty, no space or `+`, printable).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '+')
}

/// The checkpoint signer: a name and an Ed25519 key.
pub struct Signer {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a key's 32-byte seed.
    pub fn new(name: &str, seed: &[u8; 32]) -> Signer {
        debug_assert!(valid_name(name));
        Signer {
            name: name.to_owned(),
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The verifier for this signer's checkpoints.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The signed note of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let text = checkpoint.text();
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&key_id(&self.name, self.key.verifying_key().as_bytes()));
        blob.extend_from_slice(&sig.to_bytes());
        format!("{text}\n{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }
}

/// Verifies notes signed by one named Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<hex key ID>+<base64(0x01 ‖ public key)>`.
    pub fn parse(vkey: &str) -> Result<NoteVerifier, CheckpointError> {
        let bad = |why: &str| CheckpointError::BadVerifierKey(why.to_owned());
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected name+keyid+key"));
        };
        if !valid_name(name) {
            return Err(bad("the name is empty or holds a space or '+'"));
        }
        let blob = B64
            .decode(key_b64)
            .map_err(|_| bad("the key is not base64"))?;
        if blob.len() != 33 || blob[0] != ED25519_TYPE {
            return Err(bad("not an Ed25519 key (type 0x01 and 32 bytes)"));
        }
        let mut public = [0u8; 32];
        public.copy_from_slice(&blob[1..]);
        let key =
            VerifyingKey::from_bytes(&public).map_err(|_| bad("not a valid Ed25519 point"))?;
        if format!("{:08x}", u32::from_be_bytes(key_id(name, &public))) != id_hex {
            return Err(bad("the key ID does not match the name and key"));
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            key,
        })
    }

    /// The verifier key string (what `parse` reads).
    pub fn to_vkey(&self) -> String {
        let public = self.key.as_bytes();
        let mut blob = vec![ED25519_TYPE];
        blob.extend_from_slice(public);
        format!(
            "{}+{:08x}+{}",
            self.name,
            u32::from_be_bytes(key_id(&self.name, public)),
            B64.encode(blob)
        )
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The note text of `note` if this key signed it.
    pub fn open_note<'a>(&self, note: &'a str) -> Result<&'a str, CheckpointError> {
        let malformed = |why: &str| CheckpointError::Malformed(why.to_owned());
        if note.len() > MAX_NOTE_BYTES {
            return Err(malformed("longer than 8 KiB"));
        }
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(malformed("holds control characters"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| malformed("no blank line before the signatures"))?;
        let (text, sigs) = (&note[..=split], &note[split + 2..]);
        if !sigs.ends_with('\n') {
            return Err(malformed("the signatures do not end in a newline"));
        }
        let id = key_id(&self.name, self.key.as_bytes());
        for line in sigs.lines().take(MAX_SIGNATURES) {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| malformed("a signature line does not start with an em dash"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| malformed("a signature line has no signature"))?;
            let Ok(blob) = B64.decode(b64) else {
                return Err(malformed("a signature is not base64"));
            };
            if name != self.name || blob.len() < 4 || blob[..4] != id {
                continue; // Another key's signature: ignored, as signed-note requires.
            }
            let sig = Signature::from_slice(&blob[4..])
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
            return self
                .key
                .verify_strict(text.as_bytes(), &sig)
                .map(|()| text)
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()));
        }
        Err(CheckpointError::NoSignature(self.name.clone()))
    }

    /// The checkpoint in `note`, if this key signed it.
    pub fn open(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let text = self.open_note(note)?;
        parse_text(text)
    }
}

/// Parses a checkpoint's text (origin, size, head; extension lines are ignored).
fn parse_text(text: &str) -> Result<Checkpoint, CheckpointError> {
    let malformed = |why: &str| CheckpointError::Malformed(why.to_owned());
    let mut lines = text.lines();
    let origin = lines.next().filter(|o| !o.is_empty());
    let size = lines.next().and_then(|s| {
        let canonical = !s.starts_with('0') || s == "0";
        s.parse::<u64>().ok().filter(|_| canonical)
    });
    let head = lines.next().and_then(|h| B64.decode(h).ok());
    match (origin, size, head) {
        (Some(origin), Some(size), Some(head)) if head.len() == HASH_LEN => {
            let mut h = [0u8; HASH_LEN];
            h.copy_from_slice(&head);
            Ok(Checkpoint {
                origin: origin.to_owned(),
                size,
                head: h,
            })
        }
        _ => Err(malformed(
            "expected an origin line, a decimal tree size and a base64 32-byte hash",
        )),
    }
}

/// Loads the checkpoint signing key's seed from `path` (32 bytes, mode 0600), creating it
/// on first start.
pub fn load_or_create_seed(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => {
            let meta = file.metadata()?;
            if meta.mode() & 0o077 != 0 || meta.len() != 32 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the checkpoint key must be 32 bytes with mode 0600",
                ));
            }
            let mut seed = [0u8; 32];
            std::io::Read::read_exact(&mut &file, &mut seed)?;
            Ok(seed)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)?;
            file.write_all(&seed)?;
            file.sync_all()?;
            Ok(seed)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.com/audit".into(),
            size: 42,
            head: [7; 32],
        }
    }

    #[test]
    fn signs_in_the_c2sp_layout_and_verifies() {
        let signer = Signer::new("example.com/audit", &[3; 32]);
        let note = signer.sign(&checkpoint());
        let lines: Vec<&str> = note.split('\n').collect();
        assert_eq!(lines[0], "example.com/audit");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[2], B64.encode([7u8; 32]));
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} example.com/audit "));
        let sig = B64.decode(lines[4].rsplit(' ').next().unwrap()).unwrap();
        assert_eq!(sig.len(), 4 + 64);
        let verifier = NoteVerifier::parse(&signer.verifier().to_vkey()).unwrap();
        assert_eq!(verifier, signer.verifier());
        assert_eq!(verifier.open(&note).unwrap(), checkpoint());
    }

    #[test]
    fn changed_text_or_another_key_is_refused() {
        let signer = Signer::new("example.com/audit", &[3; 32]);
        let note = signer.sign(&checkpoint());
        let verifier = signer.verifier();
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            verifier.open(&forged),
            Err(CheckpointError::BadSignature(_))
        ));
        let other = Signer::new("example.com/audit", &[4; 32]).verifier();
        assert!(matches!(
            other.open(&note),
            Err(CheckpointError::NoSignature(_))
        ));
        assert!(matches!(
            verifier.open("example.com/audit\n1\n"),
            Err(CheckpointError::Malformed(_))
        ));
    }

    /// The verifier key and signed note of the golang.org/x/mod/sumdb/note documentation
    /// (key name PeterNeumann, key ID c74f20a3): an independent vector for the key ID rule,
    /// the verifier key format and the signature line.
    #[test]
    fn known_vector_from_the_go_note_package() {
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let verifier = NoteVerifier::parse(vkey).unwrap();
        assert_eq!(verifier.to_vkey(), vkey);
        let note = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n\
                    \n\
                    \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        assert_eq!(
            verifier.open_note(note).unwrap(),
            "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
        );
    }

    #[test]
    fn verifier_keys_with_a_wrong_id_are_refused() {
        let vkey = "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        assert!(NoteVerifier::parse(vkey).is_err());
        assert!(NoteVerifier::parse("no-plus").is_err());
    }
}
