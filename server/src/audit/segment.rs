//! Segment files: naming, the header line, creating one durably, and scanning one to verify
//! its chain (shared by recovery at start and `subzero audit verify`).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::record::{self, Hash};
use super::{io_err, AuditError};

/// A segment file name: `seg-<first seq, 20 digits>.log`.
pub fn file_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

/// The first sequence number in a segment file name.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The segments in `dir`, by first sequence number.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(first_seq) = entry.file_name().to_str().and_then(parse_name) {
            out.push((first_seq, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(first_seq, _)| *first_seq);
    Ok(out)
}

/// Creates `dir` (mode 0700) if missing.
pub fn create_dir(dir: &Path) -> Result<(), AuditError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create the directory", dir))
}

/// fsyncs a directory, so a created, renamed or removed entry is durable.
pub fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync the directory", dir))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderLine {
    v: u32,
    first_seq: u64,
    prev: String,
    created_ms: u64,
}

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Sequence number of its first record.
    pub first_seq: u64,
    /// Hash of the record before it (the previous segment's last), or the genesis hash.
    pub prev: Hash,
    /// When it was created, unix milliseconds.
    pub created_ms: u64,
}

impl Header {
    fn line(&self) -> String {
        format!(
            "{{\"v\":1,\"first_seq\":{},\"prev\":\"{}\",\"created_ms\":{}}}\n",
            self.first_seq,
            record::hex(&self.prev),
            self.created_ms
        )
    }
}

/// Creates segment `header.first_seq` in `dir` with its header, durably (written to a
/// temporary file, fsynced, renamed, directory fsynced), and opens it for appending.
pub fn create(dir: &Path, header: &Header) -> Result<(PathBuf, fs::File, u64), AuditError> {
    let path = dir.join(file_name(header.first_seq));
    let tmp = dir.join(format!(".{}.tmp", file_name(header.first_seq)));
    let line = header.line();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
    sync_dir(dir)?;
    let file = open_append(&path)?;
    Ok((path, file, line.len() as u64))
}

/// Opens a segment for appending.
pub fn open_append(path: &Path) -> Result<fs::File, AuditError> {
    fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("open for appending", path))
}

/// What scanning a segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Its header.
    pub header: Header,
    /// Records that verify.
    pub n_records: u64,
    /// Hash of its last record (the header's `prev` if it has none).
    pub head: Hash,
    /// Bytes up to the end of the last complete line.
    pub valid_len: u64,
    /// Bytes after it: an unterminated (torn) last line.
    pub torn_bytes: u64,
    /// Hashes of the records `want` asked for that are in this segment.
    pub wanted: Vec<(u64, Hash)>,
}

/// Verifies every record line of the segment `bytes` read from `path`, chaining from its
/// header's `prev`, and notes the hashes of the records numbered in `want` (sorted). Any complete line that does not verify is an error naming its sequence
/// number and byte offset; an unterminated last line is reported as torn, not an error.
pub fn scan(path: &Path, bytes: &[u8], want: &[u64]) -> Result<Scan, AuditError> {
    let header_err = |why: &str| AuditError::Header {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let header_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| header_err("no complete header line"))?;
    let raw: HeaderLine = serde_json::from_slice(&bytes[..header_end])
        .map_err(|e| header_err(&format!("not a header ({e})")))?;
    let prev = record::parse_hex(&raw.prev).ok_or_else(|| header_err("prev is not a hash"))?;
    if raw.v != 1 || raw.first_seq == 0 {
        return Err(header_err("unknown version or sequence number 0"));
    }
    let header = Header {
        first_seq: raw.first_seq,
        prev,
        created_ms: raw.created_ms,
    };
    let mut head = prev;
    let mut offset = header_end + 1;
    let mut n_records = 0u64;
    let mut wanted = Vec::new();
    while offset < bytes.len() {
        let Some(len) = bytes[offset..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let seq = header.first_seq + n_records;
        let line = &bytes[offset..offset + len];
        let (_, hash) = record::verify_line(line, &head, seq).map_err(|e| AuditError::Corrupt {
            path: path.to_owned(),
            seq,
            offset: offset as u64,
            why: e.to_string(),
        })?;
        if want.binary_search(&seq).is_ok() {
            wanted.push((seq, hash));
        }
        head = hash;
        n_records += 1;
        offset += len + 1;
    }
    Ok(Scan {
        header,
        n_records,
        head,
        valid_len: offset as u64,
        torn_bytes: (bytes.len() - offset) as u64,
        wanted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(file_name(7), "seg-00000000000000000007.log");
        assert_eq!(parse_name(&file_name(123_456)), Some(123_456));
        assert_eq!(parse_name("seg-1.log"), None);
        assert_eq!(parse_name(".seg-00000000000000000007.log.tmp"), None);
    }
}
