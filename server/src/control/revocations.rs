//! The revocation log: an append-only file of `jti exp_s check` lines, fdatasync'd before a
//! revocation is acknowledged, compacted (expired entries dropped) at every start.
//!
//! `check` is the low 32 bits of the xxh3 of `jti exp_s`, in hex: a record is checked when it
//! is written and when it is read back. A bad last line is a torn write from a crash (never
//! acknowledged) and is dropped; a bad line before the end is corruption, and opening fails
//! rather than silently forgetting a revocation. Lines of two fields (written before the check
//! existed) are read as they are and rewritten with a check by the compaction.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::plane::valid_jti;

/// Most live revocations held; beyond this new revocations are refused (503).
pub const MAX_REVOCATIONS: usize = 1 << 20;

/// What one revocation of a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written, synced and live until this time.
    Stored(u64),
    /// Already revoked at least as long, or already expired: nothing to store.
    Unchanged,
    /// The live table holds `MAX_REVOCATIONS` entries: refused.
    Full,
}

/// The check field of a record: 8 lowercase hex digits.
fn check_of(jti: &str, exp_s: u64) -> String {
    let check = xxhash_rust::xxh3::xxh3_64(format!("{jti} {exp_s}").as_bytes()) as u32;
    format!("{check:08x}")
}

/// One record's line, with its check and the newline.
fn record(jti: &str, exp_s: u64) -> String {
    assert!(valid_jti(jti), "revocation records hold valid jtis only");
    format!("{jti} {exp_s} {}\n", check_of(jti, exp_s))
}

/// Parses one line; `None` when it is not a whole, intact record.
fn parse_record(line: &str) -> Option<(&str, u64)> {
    let mut parts = line.split(' ');
    let (jti, exp) = (parts.next()?, parts.next()?);
    let exp_s: u64 = exp.parse().ok()?;
    if !valid_jti(jti) {
        return None;
    }
    match (parts.next(), parts.next()) {
        (None, None) => Some((jti, exp_s)),
        (Some(check), None) if check == check_of(jti, exp_s) => Some((jti, exp_s)),
        _ => None,
    }
}

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
            let lines: Vec<String> = BufReader::new(file).lines().collect::<io::Result<_>>()?;
            for (line_idx, line) in lines.iter().enumerate() {
                let Some((jti, exp_s)) = parse_record(line) else {
                    if line_idx + 1 == lines.len() {
                        continue; // a torn last line from a crash: it was never acknowledged
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} line {}: damaged revocation record; restore the file from a backup or remove the line after checking it",
                            path.display(),
                            line_idx + 1
                        ),
                    ));
                };
                if exp_s > now_s && live.len() < MAX_REVOCATIONS {
                    let entry = live.entry(jti.to_owned()).or_insert(exp_s);
                    *entry = (*entry).max(exp_s);
                }
            }
        }
        let tmp = data_dir.join("revocations.log.tmp");
        {
            let mut out = File::create(&tmp)?;
            let mut text = String::new();
            for (jti, &exp_s) in &live {
                text.push_str(&record(jti, exp_s));
            }
            out.write_all(text.as_bytes())?;
            out.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        File::open(data_dir)?.sync_all()?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(RevocationLog { path, file, live })
    }

    /// Appends and syncs one revocation. Returns the entry's new expiry when the denylist
    /// changed, `None` when the token had already expired or was already revoked as long.
    pub fn append(&mut self, jti: &str, exp_s: u64, now_s: u64) -> io::Result<Option<u64>> {
        match self.append_batch(&[(jti, exp_s)], now_s)?[0] {
            Appended::Stored(exp_s) => Ok(Some(exp_s)),
            Appended::Unchanged => Ok(None),
            Appended::Full => Err(io::Error::other(format!(
                "revocation list is full ({MAX_REVOCATIONS} live entries) in {}",
                self.path.display()
            ))),
        }
    }

    /// Appends many revocations with one write and one fdatasync (group commit): what each
    /// one did, in order. Nothing is in the live table unless the sync succeeded.
    pub fn append_batch(&mut self, items: &[(&str, u64)], now_s: u64) -> io::Result<Vec<Appended>> {
        let mut text = String::new();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut added: HashMap<&str, u64> = HashMap::new();
        for &(jti, exp_s) in items {
            if !valid_jti(jti) {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid jti"));
            }
            let held = added.get(jti).or(self.live.get(jti)).copied();
            let outcome = if exp_s <= now_s || held.is_some_and(|e| e >= exp_s) {
                Appended::Unchanged
            } else if held.is_none() && self.live.len() + added.len() >= MAX_REVOCATIONS {
                Appended::Full
            } else {
                text.push_str(&record(jti, exp_s));
                added.insert(jti, exp_s);
                Appended::Stored(exp_s)
            };
            outcomes.push(outcome);
        }
        if !text.is_empty() {
            self.file.write_all(text.as_bytes())?;
            self.file.sync_data()?;
        }
        for (jti, exp_s) in added {
            self.live.insert(jti.to_owned(), exp_s);
        }
        debug_assert!(self.live.len() <= MAX_REVOCATIONS);
        Ok(outcomes)
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
        assert_eq!(text, record("a", 200));
        assert_eq!(parse_record(text.trim_end()), Some(("a", 200)));
    }

    #[test]
    fn damaged_records_are_refused_and_legacy_lines_read() {
        let good = record("a", 200);
        assert_eq!(parse_record(good.trim_end()), Some(("a", 200)));
        assert_eq!(
            parse_record("a 200"),
            Some(("a", 200)),
            "legacy two-field line"
        );
        let flipped = good.replace("200", "900");
        assert_eq!(
            parse_record(flipped.trim_end()),
            None,
            "exp changed after writing"
        );
        assert_eq!(parse_record("a 200 0000000g"), None);
        assert_eq!(parse_record("a 200 12"), None);
        assert_eq!(parse_record("a 200 00000000 extra"), None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.log");
        std::fs::write(&path, format!("{flipped}{good}")).unwrap();
        let err = RevocationLog::open(dir.path(), 100).err().unwrap();
        assert!(err.to_string().contains("line 1"), "{err}");
        // The same damage on the last line is a torn write: dropped, the rest kept.
        std::fs::write(&path, format!("{}{}", record("b", 300), flipped.trim_end())).unwrap();
        let log = RevocationLog::open(dir.path(), 100).unwrap();
        assert_eq!(log.entries().collect::<Vec<_>>(), vec![("b", 300)]);
    }

    #[test]
    fn a_batch_is_one_write_and_keeps_the_longest_expiry() {
        use Appended::{Stored, Unchanged};
        let dir = tempfile::tempdir().unwrap();
        let mut log = RevocationLog::open(dir.path(), 100).unwrap();
        let got = log
            .append_batch(
                &[("a", 200), ("a", 300), ("b", 90), ("a", 250), ("c", 400)],
                100,
            )
            .unwrap();
        assert_eq!(
            got,
            [Stored(200), Stored(300), Unchanged, Unchanged, Stored(400)]
        );
        drop(log);
        let log = RevocationLog::open(dir.path(), 100).unwrap();
        let mut entries: Vec<_> = log.entries().collect();
        entries.sort_unstable();
        assert_eq!(entries, vec![("a", 300), ("c", 400)]);
    }

    #[test]
    fn torn_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("revocations.log"), "a 200\nb 3").unwrap();
        let log = RevocationLog::open(dir.path(), 100).unwrap();
        assert_eq!(log.entries().count(), 1);
    }
}
