//! The vault master key (`<data_dir>/vault.key`, 32 random bytes, mode 0600) and the
//! per-namespace keys derived from it with HKDF-SHA256. The only I/O of the vault module.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use rand::RngCore as _;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::seal::Namespace;
use super::VaultError;

/// File name of the master key inside the data dir.
pub const MASTER_KEY_FILE: &str = "vault.key";
/// Length of the master key and of every namespace key, in bytes.
pub const MASTER_KEY_LEN: usize = 32;
/// HKDF salt: separates vault keys from any other use of the same master key bytes.
const HKDF_SALT: &[u8] = b"subzero vault namespace key v1";
/// Permission bits a master key file may have (owner read and write, nothing else).
const ALLOWED_MODE: u32 = 0o600;

/// Why the master key could not be loaded or created. Each is fatal at start.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// A file-system operation failed (`action` says which).
    #[error("vault master key: could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The key file grants more than owner read/write.
    #[error(
        "vault master key {} has mode {mode:04o}; it must be 0600 or narrower (chmod 600 it)",
        path.display()
    )]
    InsecureMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold exactly `MASTER_KEY_LEN` bytes.
    #[error(
        "vault master key {} is {len} bytes, not {MASTER_KEY_LEN}; restore it from a backup \
         (a new key cannot open the values sealed with the old one)",
        path.display()
    )]
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// The key path exists but is not a regular file (a directory, device or FIFO).
    #[error("vault master key {} is not a regular file", path.display())]
    NotAFile {
        /// The key path.
        path: PathBuf,
    },
    /// The operating system's random source failed.
    #[error("vault master key: the system random source failed: {0}")]
    Random(String),
}

/// The master key. Zeroed on drop; `Debug` never shows it.
pub struct MasterKey {
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A master key from raw bytes (tests, or a key the caller loaded itself).
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> MasterKey {
        MasterKey {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// The namespace's key: HKDF-SHA256 with a fixed salt, the master key as input keying
    /// material and the namespace bytes (`iss NUL sub`) as `info`.
    pub fn namespace_key(&self, namespace: &Namespace) -> Result<NamespaceKey, VaultError> {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), self.bytes.as_slice());
        let mut okm = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        hkdf.expand(namespace.as_bytes(), okm.as_mut_slice())
            .map_err(|_| VaultError::KeyDerivation)?;
        Ok(NamespaceKey { bytes: okm })
    }

    /// A key for another purpose than the vault's namespaces, HKDF-SHA256 with `info` (which
    /// holds no NUL byte, so it never equals a namespace's `iss NUL sub`).
    pub fn purpose_key(&self, info: &str) -> Result<Zeroizing<[u8; MASTER_KEY_LEN]>, VaultError> {
        debug_assert!(
            !info.as_bytes().contains(&0),
            "a NUL would let info equal a namespace"
        );
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), self.bytes.as_slice());
        let mut okm = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        hkdf.expand(info.as_bytes(), okm.as_mut_slice())
            .map_err(|_| VaultError::KeyDerivation)?;
        Ok(okm)
    }
}

/// One namespace's sealing key. Zeroed on drop; `Debug` never shows it.
pub struct NamespaceKey {
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
}

impl std::fmt::Debug for NamespaceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NamespaceKey(..)")
    }
}

impl NamespaceKey {
    pub(super) fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.bytes
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MasterKeyError {
    let path = path.to_owned();
    move |source| MasterKeyError::Io {
        action,
        path,
        source,
    }
}

/// Loads `<data_dir>/vault.key`, creating it on first start (the data dir too, mode 0700).
///
/// Creation is atomic and never replaces a key: 32 bytes from the OS random source go to a
/// temporary file (mode 0600) that is fsynced and then published with `link(2)`, which fails
/// if the key already exists (a concurrent start that lost the race loads the winner's key),
/// then the directory is fsynced. A plain `rename` would silently replace a key another process
/// had just created and sealed values with. Loading refuses a symlink, a non-regular file, a
/// mode wider than 0600 and a length other than 32 bytes.
pub fn load_or_create_master_key(data_dir: &Path) -> Result<MasterKey, MasterKeyError> {
    let path = data_dir.join(MASTER_KEY_FILE);
    match open_no_follow(&path) {
        Ok(file) => read_key(file, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(data_dir, &path),
        Err(e) => Err(io_err("open (symlinks are refused)", &path)(e)),
    }
}

/// Loads a master key file that must already exist (`[fleet] vault_key_file`, the key every
/// node of a fleet shares), with the same checks as `load_or_create_master_key`.
pub fn load_master_key(path: &Path) -> Result<MasterKey, MasterKeyError> {
    let file = open_no_follow(path).map_err(io_err("open (symlinks are refused)", path))?;
    read_key(file, path)
}

fn open_no_follow(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn read_key(mut file: fs::File, path: &Path) -> Result<MasterKey, MasterKeyError> {
    // Checked on the open descriptor, so the file cannot be swapped between check and read.
    let meta = file.metadata().map_err(io_err("stat", path))?;
    if !meta.is_file() {
        return Err(MasterKeyError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & !ALLOWED_MODE != 0 {
        return Err(MasterKeyError::InsecureMode {
            path: path.to_owned(),
            mode,
        });
    }
    let bad_length = |len| MasterKeyError::BadLength {
        path: path.to_owned(),
        len,
    };
    if meta.len() != MASTER_KEY_LEN as u64 {
        return Err(bad_length(meta.len()));
    }
    // One byte more than a key, so a file that grew after the stat is still caught.
    let mut buf = Zeroizing::new([0u8; MASTER_KEY_LEN + 1]);
    let mut n_read = 0;
    loop {
        let n = file
            .read(&mut buf[n_read..])
            .map_err(io_err("read", path))?;
        if n == 0 || n_read + n == buf.len() {
            n_read += n;
            break;
        }
        n_read += n;
    }
    if n_read != MASTER_KEY_LEN {
        return Err(bad_length(n_read as u64));
    }
    let mut bytes = [0u8; MASTER_KEY_LEN];
    bytes.copy_from_slice(&buf[..MASTER_KEY_LEN]);
    let key = MasterKey::from_bytes(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    Ok(key)
}

fn create_key(data_dir: &Path, path: &Path) -> Result<MasterKey, MasterKeyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io_err("create the data directory", data_dir))?;
    let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    rand::rngs::OsRng
        .try_fill_bytes(bytes.as_mut_slice())
        .map_err(|e| MasterKeyError::Random(e.to_string()))?;

    // Unique per attempt (threads of one process race too); a leftover from a crash is never
    // read, since only `vault.key` itself is.
    let tmp = data_dir.join(format!(
        ".{MASTER_KEY_FILE}.tmp.{}.{:016x}",
        std::process::id(),
        rand::rngs::OsRng.next_u64()
    ));
    let written = write_synced(&tmp, bytes.as_slice());
    let published = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err("publish (link)", path)(e)),
    });
    let _ = fs::remove_file(&tmp);
    let published = published?;
    fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", data_dir))?;
    if !published {
        // Another process created the key between our open and our link: use theirs.
        let file = open_no_follow(path).map_err(io_err("open (symlinks are refused)", path))?;
        return read_key(file, path);
    }
    Ok(MasterKey::from_bytes(*bytes))
}

fn write_synced(tmp: &Path, bytes: &[u8]) -> Result<(), MasterKeyError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(ALLOWED_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)
        .map_err(io_err("create", tmp))?;
    file.write_all(bytes).map_err(io_err("write", tmp))?;
    file.sync_all().map_err(io_err("fsync", tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_once_with_mode_0600_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("var/subzero");
        let first = load_or_create_master_key(&data_dir).unwrap();
        let path = data_dir.join(MASTER_KEY_FILE);
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(mode_of(&data_dir) & 0o077, 0, "data dir is private");
        assert_eq!(fs::metadata(&path).unwrap().len(), 32);
        let names: Vec<_> = fs::read_dir(&data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [MASTER_KEY_FILE], "no temporary file is left behind");

        let second = load_or_create_master_key(&data_dir).unwrap();
        assert_eq!(*first.bytes, *second.bytes);
        assert_eq!(fs::read(&path).unwrap(), first.bytes.as_slice());
        assert_eq!(format!("{first:?}"), "MasterKey(..)");
    }

    #[test]
    fn a_stale_temporary_file_does_not_matter() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir
            .path()
            .join(format!(".{MASTER_KEY_FILE}.tmp.{}", std::process::id()));
        fs::write(&tmp, b"half-written").unwrap();
        let key = load_or_create_master_key(dir.path()).unwrap();
        assert_eq!(
            fs::read(&tmp).unwrap(),
            b"half-written",
            "left alone, never read"
        );
        let again = load_or_create_master_key(dir.path()).unwrap();
        assert_eq!(*key.bytes, *again.bytes);
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| *load_or_create_master_key(dir.path()).unwrap().bytes))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key wins");
            let on_disk = fs::read(dir.path().join(MASTER_KEY_FILE)).unwrap();
            assert_eq!(on_disk, keys[0]);
        }
    }

    #[test]
    fn refuses_wide_modes_wrong_lengths_symlinks_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create_master_key(dir.path()).unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);

        for mode in [0o644, 0o640, 0o604, 0o700, 0o610, 0o4600] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = load_or_create_master_key(dir.path()).unwrap_err();
            assert!(
                matches!(err, MasterKeyError::InsecureMode { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(
            load_or_create_master_key(dir.path()).is_ok(),
            "narrower is fine"
        );

        for len in [0usize, 31, 33, 64] {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            fs::write(&path, vec![7u8; len]).unwrap();
            let err = load_or_create_master_key(dir.path()).unwrap_err();
            assert!(
                matches!(err, MasterKeyError::BadLength { len: l, .. } if l == len as u64),
                "{len}: {err}"
            );
        }

        let other = tempfile::tempdir().unwrap();
        let target = other.path().join("elsewhere");
        fs::write(&target, [1u8; 32]).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let linked = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&target, linked.path().join(MASTER_KEY_FILE)).unwrap();
        assert!(matches!(
            load_or_create_master_key(linked.path()),
            Err(MasterKeyError::Io { .. })
        ));

        let as_dir = tempfile::tempdir().unwrap();
        fs::create_dir(as_dir.path().join(MASTER_KEY_FILE)).unwrap();
        assert!(matches!(
            load_or_create_master_key(as_dir.path()),
            Err(MasterKeyError::NotAFile { .. })
        ));
    }

    #[test]
    fn namespace_keys_differ_by_namespace_and_master() {
        let master = MasterKey::from_bytes([1; 32]);
        let alice = Namespace::new("https://idp", "alice").unwrap();
        let bob = Namespace::new("https://idp", "bob").unwrap();
        let k1 = master.namespace_key(&alice).unwrap();
        assert_eq!(k1.bytes(), master.namespace_key(&alice).unwrap().bytes());
        assert_ne!(k1.bytes(), master.namespace_key(&bob).unwrap().bytes());
        let other_master = MasterKey::from_bytes([2; 32]);
        assert_ne!(
            k1.bytes(),
            other_master.namespace_key(&alice).unwrap().bytes()
        );
        assert_ne!(k1.bytes(), &[1; 32]);
    }
}
