//! The revocation log: an append-only file of `jti exp_s` lines, fdatasync'd before a
//! revocation is acknowledged, compacted (expired entries dropped) at every start.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Most live revocations held; beyond this new revocations are refused (503).
pub const MAX_REVOCATIONS: usize = 1 << 20;
/// Longest accepted `jti`.
pub const MAX_JTI_BYTES: usize = 256;

/// Live revocations, mirrored in `<data_dir>/revocations.log`.
pub struct RevocationLog {
    path: PathBuf,
    file: File,
    live: HashMap<String, u64>,
}

impl RevocationLog {
    /// Opens (creating) the log, keeps entries that have not expired, and rewrites the file
    /// with only those.
    pub fn open(data_dir: &Path, now_s: u64) -> io::Result<RevocationLog> {
        let path = data_dir.join("revocations.log");
        let mut live = HashMap::new();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                let mut parts = line.split_ascii_whitespace();
                let (Some(jti), Some(exp)) = (parts.next(), parts.next()) else {
                    continue; // a torn last line from a crash: it was never acknowledged
                };
                if let Ok(exp_s) = exp.parse::<u64>() {
                    if exp_s > now_s && live.len() < MAX_REVOCATIONS {
                        live.insert(jti.to_owned(), exp_s);
                    }
                }
            }
        }
        let tmp = data_dir.join("revocations.log.tmp");
        {
            let mut out = File::create(&tmp)?;
            let mut text = String::new();
            for (jti, exp_s) in &live {
                let _ = writeln!(text, "{jti} {exp_s}");
            }
            out.write_all(text.as_bytes())?;
            out.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        File::open(data_dir)?.sync_all()?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(RevocationLog { path, file, live })
    }

    /// Whether `jti` is an acceptable revocation key.
    pub fn valid_jti(jti: &str) -> bool {
        !jti.is_empty() && jti.len() <= MAX_JTI_BYTES && jti.bytes().all(|b| b.is_ascii_graphic())
    }

    /// Appends and syncs one revocation. Returns the entry's new expiry when the denylist
    /// changed, `None` when the token had already expired or was already revoked as long.
    pub fn append(&mut self, jti: &str, exp_s: u64, now_s: u64) -> io::Result<Option<u64>> {
        if !RevocationLog::valid_jti(jti) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid jti"));
        }
        if exp_s <= now_s || self.live.get(jti).is_some_and(|&e| e >= exp_s) {
            return Ok(None);
        }
        if self.live.len() >= MAX_REVOCATIONS {
            return Err(io::Error::other(format!(
                "revocation list is full ({MAX_REVOCATIONS} live entries) in {}",
                self.path.display()
            )));
        }
        self.file.write_all(format!("{jti} {exp_s}\n").as_bytes())?;
        self.file.sync_data()?;
        self.live.insert(jti.to_owned(), exp_s);
        Ok(Some(exp_s))
    }

    /// Live entries, for seeding shards at start.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64)> {
        self.live.iter().map(|(jti, &exp_s)| (jti.as_str(), exp_s))
    }

    /// Drops entries whose tokens have expired (the file is compacted at next start).
    pub fn forget_expired(&mut self, now_s: u64) {
        self.live.retain(|_, &mut exp_s| exp_s > now_s);
    }

    /// `/metrics` lines.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(out, "subzero_revocations_live {}", self.live.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_compacts_expired() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RevocationLog::open(dir.path(), 100).unwrap();
        assert_eq!(log.append("a", 200, 100).unwrap(), Some(200));
        assert_eq!(log.append("b", 150, 100).unwrap(), Some(150));
        assert_eq!(log.append("a", 180, 100).unwrap(), None, "never shortened");
        assert_eq!(log.append("c", 90, 100).unwrap(), None, "already expired");
        assert!(log.append("bad jti", 300, 100).is_err());
        drop(log);
        let log = RevocationLog::open(dir.path(), 160).unwrap();
        let entries: Vec<_> = log.entries().collect();
        assert_eq!(entries, vec![("a", 200)]);
        let text = std::fs::read_to_string(dir.path().join("revocations.log")).unwrap();
        assert_eq!(text, "a 200\n");
    }

    #[test]
    fn torn_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("revocations.log"), "a 200\nb").unwrap();
        let log = RevocationLog::open(dir.path(), 100).unwrap();
        assert_eq!(log.entries().count(), 1);
    }
}
