//! Import of the flat revocation log (`control/revocations.rs`) into the store, once, at start.
//!
//! The log's lines are `jti exp_s check` (`check`: the low 32 bits of the xxh3 of `jti exp_s`,
//! 8 lowercase hex digits) or, from before the check existed, `jti exp_s`. The rules are the
//! log's own: a bad last line is a torn write (never acknowledged) and is dropped; a bad line
//! before it is corruption, and the import stops rather than forget a revocation. Live entries
//! become revocations keyed by (the configured issuer, jti) — every jti in that log was ours —
//! committed in batches; only then is the file renamed to `revocations.log.imported`.
//!
//! A crash between the commits and the rename imports the file again at the next start, which
//! changes nothing: a revocation is only ever lengthened, so re-importing is idempotent.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use super::{Op, RevocationKey, Store, StoreError, MAX_BATCH_OPS};
use crate::plane::valid_jti;

/// The old log's file name in the data dir.
pub const REVOCATION_LOG: &str = "revocations.log";

/// Appended to the old log's name once imported.
pub const IMPORTED_SUFFIX: &str = ".imported";

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Intact records read (a torn last line is not counted).
    pub n_records: usize,
    /// Distinct live revocations submitted (expired ones are skipped).
    pub n_live: usize,
    /// The store's revision after the import.
    pub revision: u64,
}

/// The check field of a record: 8 lowercase hex digits.
fn check_of(jti: &str, exp_s: u64) -> String {
    let check = xxhash_rust::xxh3::xxh3_64(format!("{jti} {exp_s}").as_bytes()) as u32;
    format!("{check:08x}")
}

/// Parses one line; `None` when it is not a whole, intact record.
pub(super) fn parse_record(line: &[u8]) -> Option<(&str, u64)> {
    let line = std::str::from_utf8(line).ok()?;
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

/// Imports `<data_dir>/revocations.log` into `store` as revocations by `issuer`, then renames
/// it to `revocations.log.imported`. `Ok(None)` when there is no log (nothing to do). The
/// server calls this once at start, after opening the store and before building mirrors.
pub fn import_revocation_log(
    store: &mut dyn Store,
    data_dir: &Path,
    issuer: &str,
    now_s: u64,
) -> Result<Option<Imported>, StoreError> {
    let path = data_dir.join(REVOCATION_LOG);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path)(e)),
    };
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|last| last.is_empty()) {
        lines.pop(); // the newline ending the last record
    }
    let mut live: HashMap<&str, u64> = HashMap::new();
    let mut n_records = 0;
    for (line_idx, line) in lines.iter().enumerate() {
        let Some((jti, exp_s)) = parse_record(line) else {
            if line_idx + 1 == lines.len() {
                continue; // a torn last line from a crash: it was never acknowledged
            }
            return Err(StoreError::DamagedLog {
                path,
                line: line_idx + 1,
            });
        };
        n_records += 1;
        if exp_s > now_s {
            let held = live.entry(jti).or_insert(exp_s);
            *held = (*held).max(exp_s);
        }
    }
    let mut entries: Vec<(&str, u64)> = live.into_iter().collect();
    entries.sort_unstable();
    let mut revision = store.revision();
    for chunk in entries.chunks(MAX_BATCH_OPS) {
        let ops: Vec<Op> = chunk
            .iter()
            .map(|&(jti, exp_s)| Op::Revoke {
                key: RevocationKey {
                    iss: issuer.to_owned(),
                    jti: jti.to_owned(),
                },
                exp_s,
            })
            .collect();
        revision = store.write(&ops, now_s)?.revision;
    }
    let imported = data_dir.join(format!("{REVOCATION_LOG}{IMPORTED_SUFFIX}"));
    std::fs::rename(&path, &imported).map_err(StoreError::io(&path))?;
    let sync_dir = File::open(data_dir).and_then(|dir| dir.sync_all());
    sync_dir.map_err(StoreError::io(data_dir))?;
    Ok(Some(Imported {
        n_records,
        n_live: entries.len(),
        revision,
    }))
}
