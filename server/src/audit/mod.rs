//! The durable, tamper-evident audit log: append-only segment files of JSON-line records, each
//! chained to the one before by BLAKE3, group-committed (one write and one fdatasync per
//! batch of batches), with Ed25519-signed C2SP checkpoints of the chain head.
//!
//! Layout under `<data_dir>/audit/` (directory 0700, files 0600):
//! `seg-<first seq, 20 digits>.log` (a header line carrying the previous segment's last hash,
//! then one record per line, see [`record`]), `checkpoints/<tree size, 20 digits>.note`,
//! `checkpoint.key` (the signing key's seed) and `checkpoint.vkey` (its verifier key).
//!
//! Architecture Invariant: only the control plane writes the log, and only through
//! [`AuditLog`]; shards never do I/O here (they validate events and buffer denials).
//! Architecture Invariant: a batch is acknowledged only after the fdatasync that covers it.
//! Architecture Invariant: personal fields (`source`, an email-address `actor`) are stored
//! sealed; the chain covers the stored bytes, so verifying needs no key.

pub mod checkpoint;
mod log;
pub mod record;
mod segment;
mod verify;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::Deserialize;

pub use checkpoint::{Checkpoint, CheckpointError, NoteVerifier, Signer};
pub use log::{AuditLog, Committed, LogStats};
pub use record::{Hash, PiiKey};
/// For the `fuzz/` records target: the segment scan recovery and `audit verify` run.
#[doc(hidden)]
pub use segment::{scan as scan_segment, Scan};
pub use verify::{verify_dir, VerifyReport};

/// The audit log's directory inside the data dir.
pub const AUDIT_DIR: &str = "audit";
/// Checkpoint signing key's seed inside the audit directory.
pub const CHECKPOINT_KEY_FILE: &str = "checkpoint.key";
/// Its verifier key (public) inside the audit directory.
pub const CHECKPOINT_VKEY_FILE: &str = "checkpoint.vkey";
/// Stored checkpoints' directory inside the audit directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Most checkpoints kept; older ones are deleted as new ones are written.
pub const MAX_CHECKPOINTS_KEPT: usize = 256;
/// Most records one read returns.
pub const MAX_READ_LIMIT: usize = 1000;
/// HKDF `info` of the key that seals personal fields (from the vault master key).
pub const PII_KEY_INFO: &str = "subzero audit pii v1";

/// One event to record, as the API accepts it (and as the gateway emits its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Who acted (a subject, a client id, `admin`, `anonymous`).
    pub actor: String,
    /// What they did (`vault.put`, `revoke`, `deny`, ...).
    pub action: String,
    /// What it was done to.
    pub resource: String,
    /// The result (`ok`, a status code, ...).
    pub outcome: String,
    /// Where from (an address); personal, so stored sealed.
    pub source: String,
}

impl Event {
    /// Stored bytes of the event's fields, for the pending-bytes bound.
    pub fn n_bytes(&self) -> usize {
        self.actor.len()
            + self.action.len()
            + self.resource.len()
            + self.outcome.len()
            + self.source.len()
    }
}

/// A record read back, personal fields opened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadRecord {
    /// Sequence number.
    pub seq: u64,
    /// Append time, unix milliseconds.
    pub ts_ms: u64,
    /// Who (`null` if it could not be opened).
    pub actor: Option<String>,
    /// What.
    pub action: String,
    /// To what.
    pub resource: String,
    /// Result.
    pub outcome: String,
    /// From where (`null` if it could not be opened).
    pub source: Option<String>,
    /// Hex of the record's chain hash.
    pub hash: String,
}

/// Why an audit request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not the expected JSON.
    #[error("the body must be {{\"events\":[{{\"actor\",\"action\",\"resource\",\"outcome\",\"source\"}}]}}: {0}")]
    Json(String),
    /// A field is missing, empty, too long or holds a NUL.
    #[error("events[{idx}].{field} {why}")]
    Field {
        /// Index of the event.
        idx: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// No events.
    #[error("events must hold at least one event")]
    Empty,
    /// More events than `audit.max_batch_events`.
    #[error("a batch holds at most {max} events, this one has {n}; split it")]
    TooMany {
        /// Events given.
        n: usize,
        /// The bound.
        max: usize,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBody {
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    actor: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    outcome: Option<String>,
    source: Option<String>,
}

/// Parses and validates a `POST /v1/audit/events` body.
pub fn parse_events(
    body: &[u8],
    max_events: usize,
    max_field_bytes: usize,
) -> Result<Vec<Event>, BodyError> {
    let raw: RawBody = serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))?;
    if raw.events.is_empty() {
        return Err(BodyError::Empty);
    }
    if raw.events.len() > max_events {
        return Err(BodyError::TooMany {
            n: raw.events.len(),
            max: max_events,
        });
    }
    let mut events = Vec::with_capacity(raw.events.len());
    for (idx, e) in raw.events.into_iter().enumerate() {
        let field = |name: &'static str, value: Option<String>| {
            let value = value.ok_or_else(|| BodyError::Field {
                idx,
                field: name,
                why: "is missing".into(),
            })?;
            check_field(&value, max_field_bytes).map_err(|why| BodyError::Field {
                idx,
                field: name,
                why,
            })?;
            Ok(value)
        };
        events.push(Event {
            actor: field("actor", e.actor)?,
            action: field("action", e.action)?,
            resource: field("resource", e.resource)?,
            outcome: field("outcome", e.outcome)?,
            source: field("source", e.source)?,
        });
    }
    Ok(events)
}

/// Why a field value is refused, if it is.
fn check_field(value: &str, max_bytes: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value.len() > max_bytes {
        return Err(format!("is longer than {max_bytes} bytes"));
    }
    if value.contains('\0') {
        return Err("holds a NUL character".into());
    }
    Ok(())
}

/// Cuts `text` to at most `max_bytes` (on a character boundary): the gateway's own events
/// carry request text (paths) and must fit the same bound as the API's.
pub fn clip(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Whether `origin` can name the log and its key (signed-note key name rules).
pub fn valid_origin(origin: &str) -> bool {
    checkpoint::valid_name(origin)
}

/// Why the audit log could not be opened, written or verified. Every message names the file
/// (and the record, where one is at fault).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file-system operation failed.
    #[error("audit log: could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A record does not verify.
    #[error(
        "audit log {} is damaged at record seq {seq} (byte offset {offset}): {why}; \
         the log was changed or the disk corrupted it; keep a copy and investigate \
         (`subzero audit verify` checks the whole log)",
        path.display()
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// The record's expected sequence number.
        seq: u64,
        /// Byte offset of the record's line in the file.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// A segment's header is missing or does not link to the segment before it.
    #[error("audit segment {} has a bad header: {why}", path.display())]
    Header {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A stored checkpoint is refused.
    #[error("audit checkpoint {}: {why}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// Shorthand for an `AuditError::Io` builder.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> AuditError {
    let path = path.into();
    move |source| AuditError::Io {
        action,
        path,
        source,
    }
}
