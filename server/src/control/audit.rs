//! The control plane's side of the audit log: one group commit per control-plane pass for
//! every batch that arrived in it (API writes, the shards' own events, and the events the
//! control plane emits for its own decisions), then the replies; reads; the tick's
//! checkpoints and retention; and the `/metrics` lines.
//!
//! Architecture Invariant: `AuditWritten` is sent only after the fdatasync of the commit that
//! holds the batch; a failed commit answers `AuditFailed` (503) and acknowledges nothing.

use std::fmt::Write as _;

use crate::audit::{self, AuditLog, Event};
use crate::plane::{BlockReply, ControlReply, ReplyTo, VaultOp, VaultReply};

/// Most events the control plane emits itself, or takes from shards, in one pass; beyond it
/// they are counted as dropped (a pass normally holds a few).
pub const MAX_OWN_EVENTS_PER_PASS: usize = 1 << 16;

/// The audit log and what waits for this pass's commit.
pub struct AuditState {
    log: AuditLog,
    /// Events without a waiting requester (the control plane's own, the shards').
    unacknowledged: Vec<Event>,
    /// Unacknowledged events dropped over `MAX_OWN_EVENTS_PER_PASS` or by a failed commit.
    dropped: u64,
}

impl AuditState {
    /// Takes over the opened log.
    pub fn new(log: AuditLog) -> AuditState {
        AuditState {
            log,
            unacknowledged: Vec::new(),
            dropped: 0,
        }
    }

    /// Records a decision of the gateway with this pass's commit. Fields are clipped to the
    /// configured bound; an empty one becomes `-`.
    pub fn note(&mut self, actor: &str, action: &str, resource: &str, outcome: &str, source: &str) {
        if self.unacknowledged.len() >= MAX_OWN_EVENTS_PER_PASS {
            self.dropped += 1;
            return;
        }
        let max = self.log.config().max_field_bytes;
        let field = |text: &str| {
            if text.is_empty() {
                "-".to_owned()
            } else {
                audit::clip(text, max)
            }
        };
        self.unacknowledged.push(Event {
            actor: field(actor),
            action: field(action),
            resource: field(resource),
            outcome: field(outcome),
            source: field(source),
        });
    }

    /// Takes a shard's shipment of its own events.
    pub fn take_shard_events(&mut self, events: Vec<Event>) {
        let room = MAX_OWN_EVENTS_PER_PASS.saturating_sub(self.unacknowledged.len());
        let n_taken = events.len().min(room);
        self.dropped += (events.len() - n_taken) as u64;
        self.unacknowledged.extend(events.into_iter().take(n_taken));
    }

    /// Commits the pass: the API batches in arrival order, then the unacknowledged events,
    /// with one write and one fdatasync (several only past `max_pending_bytes`). Returns the
    /// replies to the API batches.
    pub fn commit_pass(
        &mut self,
        writes: &[(ReplyTo, Vec<Event>)],
        now_ms: u64,
    ) -> Vec<(ReplyTo, ControlReply)> {
        if writes.is_empty() && self.unacknowledged.is_empty() {
            return Vec::new();
        }
        let own = std::mem::take(&mut self.unacknowledged);
        let mut batches: Vec<&[Event]> = writes.iter().map(|(_, e)| e.as_slice()).collect();
        if !own.is_empty() {
            batches.push(&own);
        }
        let placed = self.log.commit(&batches, now_ms);
        debug_assert_eq!(placed.len(), batches.len());
        if !own.is_empty() && placed.last().is_some_and(Option::is_none) {
            self.dropped += own.len() as u64;
        }
        let replies = writes
            .iter()
            .zip(&placed)
            .map(|((to, _), placed)| {
                let reply = match placed {
                    Some(c) => ControlReply::AuditWritten {
                        first_seq: c.first_seq,
                        last_seq: c.last_seq,
                    },
                    None => ControlReply::AuditFailed,
                };
                (*to, reply)
            })
            .collect();
        replies
    }

    /// After the pass's replies are sent: a checkpoint when one is due (its syncs never
    /// delay an acknowledgement).
    pub fn after_pass(&mut self, now_ms: u64) {
        if let Err(e) = self.log.maybe_checkpoint(now_ms, false) {
            tracing::error!(error = %e, "cannot write an audit checkpoint");
        }
    }

    /// Records after `after`.
    pub fn read(&self, after: u64, limit: usize) -> ControlReply {
        match self.log.read(after, limit) {
            Ok(records) => ControlReply::AuditRecords(records),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the audit log");
                ControlReply::AuditFailed
            }
        }
    }

    /// A checkpoint of the current head, for `GET /v1/audit/checkpoint`.
    pub fn checkpoint(&mut self, now_ms: u64) -> ControlReply {
        match self.log.checkpoint_now(now_ms) {
            Ok(note) => ControlReply::AuditCheckpoint {
                note,
                vkey: self.log.verifier().to_vkey(),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot write an audit checkpoint");
                ControlReply::AuditFailed
            }
        }
    }

    /// Once a second: a checkpoint when due, retention.
    pub fn tick(&mut self, now_ms: u64) {
        if let Err(e) = self.log.maybe_checkpoint(now_ms, false) {
            tracing::error!(error = %e, "cannot write an audit checkpoint");
        }
        if let Err(e) = self.log.enforce_retention(now_ms) {
            tracing::error!(error = %e, "cannot apply audit retention");
        }
    }

    /// At shutdown: commit what is pending and write a final checkpoint.
    pub fn shutdown(&mut self, now_ms: u64) {
        let _ = self.commit_pass(&[], now_ms);
        match self.log.maybe_checkpoint(now_ms, true) {
            Ok(_) => tracing::info!(
                last_seq = self.log.last_seq(),
                head = %audit::record::hex(&self.log.head()),
                "audit log closed"
            ),
            Err(e) => tracing::error!(error = %e, "cannot write the final audit checkpoint"),
        }
    }

    /// The `/metrics` lines.
    pub fn render_metrics(&self, text: &mut String) {
        let s = self.log.stats();
        let lines = [
            ("subzero_audit_events_total", s.events),
            ("subzero_audit_batches_total", s.batches),
            ("subzero_audit_fsyncs_total", s.fsyncs),
            ("subzero_audit_bytes_total", s.bytes),
            ("subzero_audit_failed_commits_total", s.failed_commits),
            ("subzero_audit_checkpoints_total", s.checkpoints),
            ("subzero_audit_segments_deleted_total", s.segments_deleted),
            ("subzero_audit_last_seq", self.log.last_seq()),
            ("subzero_audit_backlog", self.unacknowledged.len() as u64),
            (
                "subzero_audit_dropped_total{shard=\"control\"}",
                self.dropped,
            ),
        ];
        for (name, value) in lines {
            let _ = writeln!(text, "{name} {value}");
        }
    }
}

/// `actor`, `action`, `resource` of a vault request, for its event.
pub fn vault_event_fields(namespace: &crate::vault::Namespace, op: &VaultOp) -> [String; 3] {
    let ns = String::from_utf8_lossy(namespace.as_bytes());
    let (iss, sub) = ns.split_once('\0').unwrap_or(("", &ns));
    // `sub@iss` contains '@', so the log seals it like an email address: a subject is personal.
    let actor = format!("{sub}@{iss}");
    let (action, name) = match op {
        VaultOp::Put { name, .. } => ("vault.put", name.as_str()),
        VaultOp::Get { name } => ("vault.get", name.as_str()),
        VaultOp::Delete { name } => ("vault.delete", name.as_str()),
        VaultOp::List => ("vault.list", ""),
    };
    [actor, action.to_owned(), format!("vault:{name}")]
}

/// The outcome word of a control reply, for its event.
pub fn outcome_of(reply: &ControlReply) -> &'static str {
    match reply {
        ControlReply::Vault(VaultReply::NotFound)
        | ControlReply::ChannelUnknown
        | ControlReply::Block(BlockReply::NotBlocked { .. }) => "not_found",
        ControlReply::Vault(
            VaultReply::Refused { .. } | VaultReply::Full { .. } | VaultReply::OutOfSpace { .. },
        )
        | ControlReply::RelationshipsRefused { .. }
        | ControlReply::RevocationsFull { .. }
        | ControlReply::IdJagRefused(_) => "refused",
        ControlReply::StoreFailed
        | ControlReply::FleetUnavailable { .. }
        | ControlReply::RevokeFailed
        | ControlReply::RotateFailed
        | ControlReply::AuditFailed
        | ControlReply::Vault(VaultReply::Unreadable)
        | ControlReply::Block(BlockReply::GateOff | BlockReply::Failed { .. }) => "failed",
        _ => "ok",
    }
}
