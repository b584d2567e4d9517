//! `[audit]`: the audit log's segment, retention, checkpoint and batch limits, parsed from the
//! file and validated once at start.

use serde::Deserialize;

use super::{check_range, ConfigError};

/// `[audit]` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_max_bytes: u64,
    /// The oldest closed segments are deleted while all segments hold more than this.
    pub retention_max_bytes: u64,
    /// Closed segments whose last write is older than this are deleted (0: no age limit).
    pub retention_max_age_s: u64,
    /// A signed checkpoint is written after this many new records...
    pub checkpoint_every_records: u64,
    /// ...or this many seconds after the last one when records were added (and at shutdown).
    pub checkpoint_interval_s: u64,
    /// Most events in one `POST /v1/audit/events`.
    pub max_batch_events: usize,
    /// Longest field of an event, in bytes.
    pub max_field_bytes: usize,
    /// Most bytes one group commit writes; a pass with more commits in several writes.
    pub max_pending_bytes: usize,
    /// Most denial events a shard buffers between shipments; beyond, they are counted as
    /// dropped (`subzero_audit_dropped_total`).
    pub max_buffered_denials: usize,
    /// The log's name: origin line of its checkpoints and name of their signing key.
    pub origin: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            segment_max_bytes: 64 << 20,
            retention_max_bytes: 4 << 30,
            retention_max_age_s: 400 * 86_400,
            checkpoint_every_records: 100_000,
            checkpoint_interval_s: 60,
            max_batch_events: 1000,
            max_field_bytes: 1024,
            max_pending_bytes: 16 << 20,
            max_buffered_denials: 4096,
            origin: "subzero/audit".into(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAudit {
    segment_max_bytes: Option<u64>,
    retention_max_bytes: Option<u64>,
    retention_max_age_s: Option<u64>,
    checkpoint_every_records: Option<u64>,
    checkpoint_interval_s: Option<u64>,
    max_batch_events: Option<usize>,
    max_field_bytes: Option<usize>,
    max_pending_bytes: Option<usize>,
    max_buffered_denials: Option<usize>,
    origin: Option<String>,
}

impl AuditConfig {
    /// The file's `[audit]` over the defaults.
    pub(super) fn from_file(file: FileAudit) -> AuditConfig {
        let d = AuditConfig::default();
        AuditConfig {
            segment_max_bytes: file.segment_max_bytes.unwrap_or(d.segment_max_bytes),
            retention_max_bytes: file.retention_max_bytes.unwrap_or(d.retention_max_bytes),
            retention_max_age_s: file.retention_max_age_s.unwrap_or(d.retention_max_age_s),
            checkpoint_every_records: file
                .checkpoint_every_records
                .unwrap_or(d.checkpoint_every_records),
            checkpoint_interval_s: file
                .checkpoint_interval_s
                .unwrap_or(d.checkpoint_interval_s),
            max_batch_events: file.max_batch_events.unwrap_or(d.max_batch_events),
            max_field_bytes: file.max_field_bytes.unwrap_or(d.max_field_bytes),
            max_pending_bytes: file.max_pending_bytes.unwrap_or(d.max_pending_bytes),
            max_buffered_denials: file.max_buffered_denials.unwrap_or(d.max_buffered_denials),
            origin: file.origin.unwrap_or(d.origin),
        }
    }

    /// Ranges, and that a batch always fits one group commit.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "audit.segment_max_bytes",
            self.segment_max_bytes as usize,
            4096,
            1 << 30,
        )?;
        check_range(
            "audit.retention_max_bytes",
            self.retention_max_bytes as usize,
            self.segment_max_bytes as usize,
            1 << 50,
        )?;
        check_range(
            "audit.checkpoint_every_records",
            self.checkpoint_every_records as usize,
            1,
            1 << 40,
        )?;
        check_range(
            "audit.checkpoint_interval_s",
            self.checkpoint_interval_s as usize,
            1,
            86_400,
        )?;
        check_range("audit.max_batch_events", self.max_batch_events, 1, 100_000)?;
        check_range("audit.max_field_bytes", self.max_field_bytes, 16, 64 * 1024)?;
        // A single batch larger than this is still written whole, as one commit of its own.
        check_range(
            "audit.max_pending_bytes",
            self.max_pending_bytes,
            64 * 1024,
            1 << 30,
        )?;
        check_range(
            "audit.max_buffered_denials",
            self.max_buffered_denials,
            16,
            1 << 20,
        )?;
        let name_ok = |c: char| !c.is_whitespace() && !c.is_control() && c != '+';
        if self.origin.is_empty() || self.origin.len() > 256 || !self.origin.chars().all(name_ok) {
            return Err(ConfigError::Invalid(
                "audit.origin must be 1 to 256 characters without spaces or '+'".into(),
            ));
        }
        Ok(())
    }
}
