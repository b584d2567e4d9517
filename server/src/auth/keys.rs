//! `KeyRing`: our Ed25519 signing keys under `<data_dir>/keys/` (PKCS#8 PEM, mode 0600, a public
//! JWK beside each), the current key plus previous ones still verifying until their retire time.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{
    spki::der::pem::LineEnding, DecodePrivateKey as _, EncodePrivateKey as _,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::error::KeyError;
use super::jwk;

/// Most keys (current plus retiring) a ring holds.
pub const MAX_RING_KEYS: usize = 16;
/// Largest `ring.json` or PEM file we read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// One key of the ring.
#[derive(Clone)]
struct RingKey {
    kid: String,
    signing: SigningKey,
    verifying: VerifyingKey,
    created_at_s: u64,
    /// `None` for the current key; a previous key stops verifying at this time.
    retire_at_s: Option<u64>,
}

/// Our signing keys: the current one first, then previous keys until their retire time.
pub struct KeyRing {
    /// Invariant: not empty; `keys[0]` is current and has `retire_at_s == None`.
    keys: Vec<RingKey>,
}

impl std::fmt::Debug for KeyRing {
    /// Key ids and retire times only: never the secret keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, k.retire_at_s)))
            .finish()
    }
}

/// `keys/ring.json`: which keys exist and when each retires.
#[derive(Serialize, Deserialize)]
struct RingIndex {
    current: String,
    keys: Vec<RingIndexEntry>,
}

#[derive(Serialize, Deserialize)]
struct RingIndexEntry {
    kid: String,
    created_at_s: u64,
    #[serde(default)]
    retire_at_s: Option<u64>,
}

impl KeyRing {
    /// Create the first key in `<data_dir>/keys/`; refuses if a ring already exists there.
    pub fn generate(data_dir: &Path, now_s: u64) -> Result<KeyRing, KeyError> {
        let dir = create_keys_dir(data_dir)?;
        let index_path = dir.join("ring.json");
        if index_path.exists() {
            return Err(KeyError::AlreadyExists { path: index_path });
        }
        let ring = KeyRing {
            keys: vec![new_key(now_s)],
        };
        KeyRing::write_key_files(&dir, &ring.keys[0])?;
        ring.write_index(&dir)?;
        Ok(ring)
    }

    /// Load the ring from `<data_dir>/keys/`, leaving out previous keys retired by `now_s`.
    pub fn load(data_dir: &Path, now_s: u64) -> Result<KeyRing, KeyError> {
        let dir = data_dir.join("keys");
        let index_path = dir.join("ring.json");
        if !index_path.exists() {
            return Err(KeyError::NoKeys { path: index_path });
        }
        let bad = |reason: String| KeyError::BadRing {
            path: index_path.clone(),
            reason,
        };
        let text = read_small(&index_path, "read key ring index")?;
        let index: RingIndex = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if index.keys.len() > MAX_RING_KEYS {
            return Err(KeyError::TooManyKeys {
                path: index_path,
                max_keys: MAX_RING_KEYS,
            });
        }
        let mut keys = Vec::with_capacity(index.keys.len());
        for entry in &index.keys {
            let is_current = entry.kid == index.current;
            if is_current && entry.retire_at_s.is_some() {
                return Err(bad(format!("current key {} has a retire time", entry.kid)));
            }
            if !is_current && entry.retire_at_s.is_none() {
                return Err(bad(format!(
                    "previous key {} has no retire time",
                    entry.kid
                )));
            }
            if entry.retire_at_s.is_some_and(|t| t <= now_s) {
                continue;
            }
            if !is_valid_kid(&entry.kid) {
                return Err(bad(format!(
                    "kid {:?} is not a base64url thumbprint",
                    entry.kid
                )));
            }
            let (signing, verifying) = read_private_key(&dir, &entry.kid)?;
            let key = RingKey {
                kid: entry.kid.clone(),
                signing,
                verifying,
                created_at_s: entry.created_at_s,
                retire_at_s: entry.retire_at_s,
            };
            if is_current {
                keys.insert(0, key);
            } else {
                keys.push(key);
            }
        }
        if keys.first().is_none_or(|k| k.kid != index.current) {
            return Err(bad(format!(
                "current key {:?} is not listed",
                index.current
            )));
        }
        keys[1..].sort_by_key(|k| std::cmp::Reverse(k.created_at_s));
        Ok(KeyRing { keys })
    }

    /// Load the ring, or generate one when none exists; `true` when it was created.
    pub fn load_or_generate(data_dir: &Path, now_s: u64) -> Result<(KeyRing, bool), KeyError> {
        match KeyRing::load(data_dir, now_s) {
            Ok(ring) => Ok((ring, false)),
            Err(KeyError::NoKeys { .. }) => Ok((KeyRing::generate(data_dir, now_s)?, true)),
            Err(e) => Err(e),
        }
    }

    /// Make a new key current; the previous current key keeps verifying until
    /// `now_s + retire_after_s`. Key files are written before the index, so a crash leaves the
    /// old ring intact.
    pub fn rotate(
        &mut self,
        data_dir: &Path,
        now_s: u64,
        retire_after_s: u64,
    ) -> Result<(), KeyError> {
        let dir = create_keys_dir(data_dir)?;
        self.retire_expired(now_s);
        if self.keys.len() >= MAX_RING_KEYS {
            return Err(KeyError::TooManyKeys {
                path: dir.join("ring.json"),
                max_keys: MAX_RING_KEYS,
            });
        }
        let key = new_key(now_s);
        KeyRing::write_key_files(&dir, &key)?;
        let mut next = self.keys.clone();
        next[0].retire_at_s = Some(now_s.saturating_add(retire_after_s));
        next.insert(0, key);
        let next = KeyRing { keys: next };
        next.write_index(&dir)?;
        *self = next;
        Ok(())
    }

    /// Drop previous keys whose retire time has come; returns their kids.
    pub fn retire_expired(&mut self, now_s: u64) -> Vec<String> {
        let mut retired = Vec::new();
        self.keys.retain(|k| {
            let keep = k.retire_at_s.is_none_or(|t| t > now_s);
            if !keep {
                retired.push(k.kid.clone());
            }
            keep
        });
        assert!(
            self.keys[0].retire_at_s.is_none(),
            "the current key never retires"
        );
        retired
    }

    /// The id of the current signing key.
    pub fn current_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// The current signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.keys[0].signing
    }

    /// Every key that still verifies, current first.
    pub fn verifying_keys(&self) -> impl Iterator<Item = (&str, &VerifyingKey)> {
        self.keys.iter().map(|k| (k.kid.as_str(), &k.verifying))
    }

    /// When a previous key retires (`None` for the current key or an unknown kid).
    pub fn retire_at_s(&self, kid: &str) -> Option<u64> {
        self.keys
            .iter()
            .find(|k| k.kid == kid)
            .and_then(|k| k.retire_at_s)
    }

    /// `{"keys":[...]}` with every verifying key, current first.
    pub fn jwks_json(&self) -> String {
        let mut out = String::from(r#"{"keys":["#);
        for (i, (kid, key)) in self.verifying_keys().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&jwk::ed25519_jwk_json(kid, key.as_bytes()));
        }
        out.push_str("]}");
        out
    }

    fn write_key_files(dir: &Path, key: &RingKey) -> Result<(), KeyError> {
        let pem_path = dir.join(format!("{}.pem", key.kid));
        let pem = key
            .signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::BadPem {
                path: pem_path.clone(),
                reason: e.to_string(),
            })?;
        write_atomic(&pem_path, pem.as_bytes(), 0o600)?;
        let jwk_path = dir.join(format!("{}.jwk.json", key.kid));
        let jwk = jwk::ed25519_jwk_json(&key.kid, key.verifying.as_bytes());
        write_atomic(&jwk_path, jwk.as_bytes(), 0o644)
    }

    fn write_index(&self, dir: &Path) -> Result<(), KeyError> {
        let index = RingIndex {
            current: self.keys[0].kid.clone(),
            keys: self
                .keys
                .iter()
                .map(|k| RingIndexEntry {
                    kid: k.kid.clone(),
                    created_at_s: k.created_at_s,
                    retire_at_s: k.retire_at_s,
                })
                .collect(),
        };
        let path = dir.join("ring.json");
        let mut text = serde_json::to_vec_pretty(&index).map_err(|e| KeyError::BadRing {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        write_atomic(&path, &text, 0o644)
    }
}

fn new_key(now_s: u64) -> RingKey {
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let verifying = signing.verifying_key();
    RingKey {
        kid: jwk::ed25519_thumbprint(verifying.as_bytes()),
        signing,
        verifying,
        created_at_s: now_s,
        retire_at_s: None,
    }
}

/// A kid we file under is a SHA-256 thumbprint: 43 base64url characters (so it is a safe file name).
fn is_valid_kid(kid: &str) -> bool {
    kid.len() == 43
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn create_keys_dir(data_dir: &Path) -> Result<PathBuf, KeyError> {
    let dir = data_dir.join("keys");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| KeyError::Io {
            action: "create key directory",
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

fn read_small(path: &Path, action: &'static str) -> Result<Vec<u8>, KeyError> {
    let io_err = |source| KeyError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(io_err)?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyError::Io {
            action,
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "file is too large"),
        });
    }
    fs::read(path).map_err(io_err)
}

fn read_private_key(dir: &Path, kid: &str) -> Result<(SigningKey, VerifyingKey), KeyError> {
    let path = dir.join(format!("{kid}.pem"));
    let meta = fs::metadata(&path).map_err(|source| KeyError::Io {
        action: "read private key",
        path: path.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions { path, mode });
    }
    let text = read_small(&path, "read private key")?;
    let text = std::str::from_utf8(&text).map_err(|e| KeyError::BadPem {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let signing = SigningKey::from_pkcs8_pem(text).map_err(|e| KeyError::BadPem {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let verifying = signing.verifying_key();
    let actual = jwk::ed25519_thumbprint(verifying.as_bytes());
    if actual != kid {
        return Err(KeyError::KidMismatch {
            path,
            expected: kid.to_owned(),
            actual,
        });
    }
    Ok((signing, verifying))
}

/// Write `bytes` to `path` atomically: temp file with `mode`, fsync, rename, fsync directory.
fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyError {
    let path = path.to_owned();
    move |source| KeyError::Io {
        action,
        path,
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    file.write_all(bytes).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_rotate_retire() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = KeyRing::generate(tmp.path(), 100).unwrap();
        let first = ring.current_kid().to_owned();
        assert!(matches!(
            KeyRing::generate(tmp.path(), 100),
            Err(KeyError::AlreadyExists { .. })
        ));

        let pem = tmp.path().join("keys").join(format!("{first}.pem"));
        assert_eq!(
            fs::metadata(&pem).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let dir_mode = fs::metadata(tmp.path().join("keys"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        let (mut ring, created) = KeyRing::load_or_generate(tmp.path(), 200).unwrap();
        assert!(!created);
        assert_eq!(ring.current_kid(), first);
        ring.rotate(tmp.path(), 300, 50).unwrap();
        let second = ring.current_kid().to_owned();
        assert_ne!(first, second);
        let kids: Vec<_> = ring.verifying_keys().map(|(k, _)| k.to_owned()).collect();
        assert_eq!(kids, [second.clone(), first.clone()]);
        assert_eq!(ring.retire_at_s(&first), Some(350));

        let reloaded = KeyRing::load(tmp.path(), 349).unwrap();
        assert_eq!(reloaded.current_kid(), second);
        assert_eq!(reloaded.verifying_keys().count(), 2);
        let after = KeyRing::load(tmp.path(), 350).unwrap();
        assert_eq!(after.verifying_keys().count(), 1);

        assert!(ring.retire_expired(349).is_empty());
        assert_eq!(ring.retire_expired(350), [first]);
        assert_eq!(ring.verifying_keys().count(), 1);
        let jwks: serde_json::Value = serde_json::from_str(&ring.jwks_json()).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], second.as_str());
    }

    #[test]
    fn load_refuses_missing_insecure_and_swapped_keys() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            KeyRing::load(tmp.path(), 0),
            Err(KeyError::NoKeys { .. })
        ));
        let ring = KeyRing::generate(tmp.path(), 0).unwrap();
        let pem = tmp
            .path()
            .join("keys")
            .join(format!("{}.pem", ring.current_kid()));
        fs::set_permissions(&pem, fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyRing::load(tmp.path(), 0).err().unwrap();
        assert!(matches!(err, KeyError::InsecurePermissions { .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&pem, fs::Permissions::from_mode(0o600)).unwrap();

        let other = SigningKey::generate(&mut rand::rngs::OsRng);
        let other_pem = other.to_pkcs8_pem(LineEnding::LF).unwrap();
        write_atomic(&pem, other_pem.as_bytes(), 0o600).unwrap();
        assert!(matches!(
            KeyRing::load(tmp.path(), 0),
            Err(KeyError::KidMismatch { .. })
        ));
    }
}
