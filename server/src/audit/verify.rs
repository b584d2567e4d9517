//! `subzero audit verify`: every chain link across all segments, every segment header's link
//! to the segment before it, and every stored checkpoint (signature, and that the record at
//! its tree size has its head hash). Reads only; needs no key but the verifier key.

use std::fs;
use std::path::{Path, PathBuf};

use super::checkpoint::{Checkpoint, NoteVerifier};
use super::record::{self, Hash};
use super::{io_err, segment, AuditError};

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records that verify.
    pub n_records: u64,
    /// Segments read.
    pub n_segments: usize,
    /// First retained sequence number (1 unless retention deleted older segments).
    pub first_seq: u64,
    /// Last sequence number (0 when empty).
    pub last_seq: u64,
    /// Hash of the last record.
    pub head: Hash,
    /// Checkpoints whose head was found in the log.
    pub n_checkpoints: usize,
    /// Checkpoints older than the first retained record (retention deleted theirs).
    pub n_checkpoints_skipped: usize,
    /// Bytes of an unterminated last record (the server cuts them at its next start).
    pub torn_bytes: u64,
    /// The verifier key the checkpoints were checked with.
    pub vkey: Option<String>,
}

/// Verifies the log in `<data_dir>/audit`, plus `extra` checkpoint files, with `vkey` (or
/// the log's own `checkpoint.vkey`). The first fault is the error, naming the file and the
/// record.
pub fn verify_dir(
    data_dir: &Path,
    extra: &[PathBuf],
    vkey: Option<&str>,
) -> Result<VerifyReport, AuditError> {
    let dir = data_dir.join(super::AUDIT_DIR);
    let segments = segment::list(&dir)?;
    if segments.is_empty() {
        return Err(AuditError::Header {
            path: dir,
            why: "no audit segments here".into(),
        });
    }
    let verifier = load_verifier(&dir, vkey)?;
    let mut paths = super::log::list_checkpoints(&dir.join(super::CHECKPOINTS_DIR))?;
    paths.extend(extra.iter().cloned());
    let checkpoints = open_checkpoints(&paths, verifier.as_ref())?;
    let mut want: Vec<u64> = checkpoints.iter().map(|(_, cp)| cp.size).collect();
    want.sort_unstable();
    want.dedup();

    let mut found: Vec<(u64, Hash, PathBuf)> = Vec::new();
    let mut link: Option<(u64, Hash)> = None;
    let mut torn_bytes = 0;
    let n_segments = segments.len();
    for (idx, (name_seq, path)) in segments.iter().enumerate() {
        let bytes = fs::read(path).map_err(io_err("read", path))?;
        let scan = segment::scan(path, &bytes, &want)?;
        let header_err = |why: String| AuditError::Header {
            path: path.clone(),
            why,
        };
        if scan.header.first_seq != *name_seq {
            return Err(header_err(format!(
                "it starts at seq {} but its name says {name_seq}",
                scan.header.first_seq
            )));
        }
        if let Some((next_seq, head)) = link {
            if scan.header.first_seq != next_seq || scan.header.prev != head {
                return Err(header_err(format!(
                    "it does not continue the segment before it (expected seq {next_seq} after hash {})",
                    record::hex(&head)
                )));
            }
        }
        if scan.torn_bytes > 0 {
            if idx + 1 < n_segments {
                return Err(AuditError::Corrupt {
                    path: path.clone(),
                    seq: scan.header.first_seq + scan.n_records,
                    offset: scan.valid_len,
                    why: "an unterminated record in a closed segment".into(),
                });
            }
            torn_bytes = scan.torn_bytes;
        }
        found.extend(scan.wanted.iter().map(|&(seq, h)| (seq, h, path.clone())));
        link = Some((scan.header.first_seq + scan.n_records, scan.head));
    }
    let first_seq = segments[0].0;
    let (next_seq, head) = link.unwrap_or((first_seq, record::GENESIS));
    let last_seq = next_seq - 1;
    let mut n_checkpoints = 0;
    let mut n_checkpoints_skipped = 0;
    for (cp_path, cp) in &checkpoints {
        let fail = |why: String| AuditError::Checkpoint {
            path: cp_path.clone(),
            why,
        };
        if cp.size > last_seq {
            return Err(fail(format!(
                "it covers {} records but the log ends at seq {last_seq}: records were removed",
                cp.size
            )));
        }
        if cp.size < first_seq {
            n_checkpoints_skipped += 1;
            continue;
        }
        match found.iter().find(|(seq, ..)| *seq == cp.size) {
            Some((_, hash, _)) if *hash == cp.head => n_checkpoints += 1,
            Some((seq, _, seg)) => {
                return Err(fail(format!(
                    "record seq {seq} in {} does not have the checkpointed head hash: the log was rewritten after this checkpoint",
                    seg.display()
                )))
            }
            None => return Err(fail(format!("record seq {} was not found", cp.size))),
        }
    }
    Ok(VerifyReport {
        n_records: last_seq + 1 - first_seq,
        n_segments,
        first_seq,
        last_seq,
        head,
        n_checkpoints,
        n_checkpoints_skipped,
        torn_bytes,
        vkey: verifier.map(|v| v.to_vkey()),
    })
}

/// The verifier: the one given, else the log's `checkpoint.vkey` (`None` if neither).
fn load_verifier(dir: &Path, vkey: Option<&str>) -> Result<Option<NoteVerifier>, AuditError> {
    let path = dir.join(super::CHECKPOINT_VKEY_FILE);
    let text = match vkey {
        Some(v) => v.to_owned(),
        None => match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        },
    };
    NoteVerifier::parse(&text)
        .map(Some)
        .map_err(|e| AuditError::Checkpoint {
            path,
            why: e.to_string(),
        })
}

fn open_checkpoints(
    paths: &[PathBuf],
    verifier: Option<&NoteVerifier>,
) -> Result<Vec<(PathBuf, Checkpoint)>, AuditError> {
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let fail = |why: String| AuditError::Checkpoint {
            path: path.clone(),
            why,
        };
        let Some(verifier) = verifier else {
            return Err(fail(
                "no verifier key (checkpoint.vkey is missing; pass --vkey)".into(),
            ));
        };
        let note = fs::read_to_string(path).map_err(io_err("read", path))?;
        let cp = verifier.open(&note).map_err(|e| fail(e.to_string()))?;
        out.push((path.clone(), cp));
    }
    Ok(out)
}
