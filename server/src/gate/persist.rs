//! `<data_dir>/blocklist.json`: the blocklist in wall-clock terms, so it survives reboots (pins do not).

use std::hash::{Hash, Hasher};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::maps::BlockItem;
use super::{parse_block_reason, until_ns, BlockReason, Cidr, GateError};
use crate::unix_now_s;

/// Entries read from a file at most (the two tries' sizes).
const MAX_FILE_ENTRIES: usize = 2 * 65_536;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    entries: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    cidr: String,
    reason: String,
    /// Unix seconds when the entry stops blocking; absent = forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_unix_s: Option<u64>,
}

/// A cheap digest of what would be written, to skip rewriting an unchanged file.
pub(crate) fn fingerprint(entries: &[BlockItem]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut keyed: Vec<(Cidr, u64, u32)> = entries
        .iter()
        .map(|b| (b.cidr, b.until_ns, b.reason as u32))
        .collect();
    keyed.sort_unstable();
    keyed.hash(&mut h);
    h.finish()
}

/// Writes the file atomically (temp file + rename).
pub(crate) fn save(path: &Path, entries: &[BlockItem], now_ns: u64) -> Result<(), GateError> {
    let now_s = unix_now_s();
    let file = File {
        version: 1,
        entries: entries
            .iter()
            .map(|b| FileEntry {
                cidr: b.cidr.to_string(),
                reason: b.reason.as_str().to_owned(),
                expires_unix_s: (b.until_ns != 0)
                    .then(|| now_s + b.until_ns.saturating_sub(now_ns).div_ceil(1_000_000_000)),
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| GateError::BadBlocklistFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| GateError::Io {
            what: "could not create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|source| GateError::Io {
        what: "could not write",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| GateError::Io {
        what: "could not replace",
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the file; a missing file is an empty blocklist. Expired entries are skipped.
pub(crate) fn load(path: &Path, now_ns: u64) -> Result<Vec<BlockItem>, GateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(GateError::Io {
                what: "could not read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let bad = |message: String| GateError::BadBlocklistFile {
        path: path.to_path_buf(),
        message,
    };
    let file: File = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if file.version != 1 {
        return Err(bad(format!("unsupported version {}", file.version)));
    }
    let now_s = unix_now_s();
    let mut out = Vec::new();
    for e in file.entries.into_iter().take(MAX_FILE_ENTRIES) {
        let cidr: Cidr = e
            .cidr
            .parse()
            .map_err(|err: super::CidrError| bad(err.to_string()))?;
        let reason = parse_block_reason(&e.reason).unwrap_or(BlockReason::Other);
        let until = match e.expires_unix_s {
            None => 0,
            Some(t) if t <= now_s => continue,
            Some(t) => until_ns(now_ns, t - now_s),
        };
        out.push(BlockItem {
            cidr,
            reason,
            until_ns: until,
            drops: 0,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_live_entries_and_drops_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocklist.json");
        let now_ns = 1_000 * 1_000_000_000;
        let entries = vec![
            BlockItem {
                cidr: "10.0.0.0/8".parse().unwrap(),
                reason: BlockReason::Manual,
                until_ns: 0,
                drops: 7,
            },
            BlockItem {
                cidr: "2001:db8::/32".parse().unwrap(),
                reason: BlockReason::Threat,
                until_ns: now_ns + 60_000_000_000,
                drops: 0,
            },
        ];
        save(&path, &entries, now_ns).unwrap();
        let back = load(&path, now_ns).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].cidr, entries[0].cidr);
        assert_eq!(back[0].until_ns, 0);
        assert_eq!(back[1].reason, BlockReason::Threat);
        let ttl_s = (back[1].until_ns - now_ns) / 1_000_000_000;
        assert!((59..=61).contains(&ttl_s), "{ttl_s}");
        assert_ne!(fingerprint(&entries), fingerprint(&entries[..1]));
        // An entry whose wall-clock expiry has passed is not restored.
        let text = r#"{"version":1,"entries":[{"cidr":"10.0.0.0/8","reason":"manual"},
            {"cidr":"192.0.2.1","reason":"threat","expires_unix_s":1}]}"#;
        std::fs::write(&path, text).unwrap();
        let back = load(&path, now_ns).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].cidr.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn missing_file_is_empty_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("none.json"), 0).unwrap().is_empty());
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{").unwrap();
        assert!(load(&path, 0).unwrap_err().to_string().contains("bad.json"));
    }
}
