//! The audit log on a shard: `POST /v1/audit/events` and `GET /v1/audit/events`, and the
//! shard's bounded buffer of its own decisions (denials, delegations) shipped to the control
//! plane at most once a second.
//!
//! The shard authenticates the caller (the admin token, or a bearer token with scope
//! `audit`), validates the body and defers the response to the control plane, which answers
//! only after the group commit's fdatasync. Nothing here writes to disk.
//!
//! Architecture Invariant: the denial buffer is bounded (`audit.max_buffered_denials`); a
//! full buffer or a full control queue drops events and counts them, never blocks a request.

use super::respond;
use super::ShardApp;
use crate::audit::{self, BodyError, Event, ReadRecord};
use crate::http::{self, Method, Request, Status};
use crate::monitor::Op;
use crate::plane::{ControlMsg, ControlReply};
use crate::shard::{Cx, Outcome};

/// The path of both audit endpoints.
pub(super) const AUDIT_PATH: &str = "/v1/audit/events";
/// The latest signed checkpoint.
pub(super) const CHECKPOINT_PATH: &str = "/v1/audit/checkpoint";
/// Scope a bearer token needs for the audit endpoints.
pub const AUDIT_SCOPE: &str = "audit";
/// Records returned when `limit` is not given.
const DEFAULT_READ_LIMIT: usize = 100;
/// Longest request path copied into a denial event.
const MAX_EVENT_PATH_BYTES: usize = 256;

/// A validated audit request.
enum AuditRequest {
    Write(Vec<Event>),
    Read { after: u64, limit: usize },
}

/// The shard's own audit events waiting to be shipped.
#[derive(Debug, Default)]
pub(super) struct AuditBuffer {
    events: Vec<Event>,
    max_events: usize,
    /// Events dropped (buffer full, or the control queue full at shipping).
    dropped: u64,
    /// Events handed to the control plane.
    shipped: u64,
}

impl AuditBuffer {
    pub(super) fn new(max_events: usize) -> AuditBuffer {
        AuditBuffer {
            events: Vec::new(),
            max_events,
            dropped: 0,
            shipped: 0,
        }
    }

    /// Whether there is room for one more (checked before building the event's strings).
    fn has_room(&mut self) -> bool {
        let room = self.events.len() < self.max_events;
        if !room {
            self.dropped += 1;
        }
        room
    }
}

impl ShardApp {
    /// Routes `/v1/audit/events`.
    pub(super) fn audit_events(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        // A deferred response cannot have its body stripped, so HEAD is not offered here.
        if !matches!(req.method, Method::Get | Method::Post) {
            respond::method_not_allowed(out, b"allow: GET, POST", ka);
            return (Outcome::Done, Op::Other);
        }
        if let Some(refused) = self.refuse_unless_scoped(req, cx, out, AUDIT_SCOPE) {
            return refused;
        }
        let parsed = if req.method == Method::Post {
            let limits = &self.config().audit;
            audit::parse_events(req.body, limits.max_batch_events, limits.max_field_bytes)
                .map(AuditRequest::Write)
        } else {
            read_params(req).map(|(after, limit)| AuditRequest::Read { after, limit })
        };
        match parsed {
            Ok(AuditRequest::Write(events)) => {
                self.send_to_control(cx, out, ka, Op::Audit, |reply_to| ControlMsg::AuditWrite {
                    reply_to,
                    events,
                })
            }
            Ok(AuditRequest::Read { after, limit }) => {
                self.send_to_control(cx, out, ka, Op::Audit, |reply_to| ControlMsg::AuditRead {
                    reply_to,
                    after,
                    limit,
                })
            }
            Err(e) => {
                let status = match e {
                    BodyError::TooMany { .. } => Status::PayloadTooLarge,
                    _ => Status::BadRequest,
                };
                respond::error(out, status, "invalid_request", &e.to_string(), ka);
                (Outcome::Done, Op::Audit)
            }
        }
    }

    /// `GET /v1/audit/checkpoint`: a signed checkpoint of the current head (same auth).
    pub(super) fn audit_checkpoint(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        if req.method != Method::Get {
            respond::method_not_allowed(out, b"allow: GET", ka);
            return (Outcome::Done, Op::Other);
        }
        if let Some(refused) = self.refuse_unless_scoped(req, cx, out, AUDIT_SCOPE) {
            return refused;
        }
        self.send_to_control(cx, out, ka, Op::Audit, |reply_to| {
            ControlMsg::AuditCheckpoint { reply_to }
        })
    }

    /// Buffers a denial (a 401, 403 or 429 this shard answered) for the audit log.
    pub(super) fn note_denial(&mut self, req: &Request<'_>, code: u16, cx: &Cx<'_>) {
        if !self.audit_buffer.has_room() {
            return;
        }
        let mut resource = String::with_capacity(req.path.len().min(MAX_EVENT_PATH_BYTES) + 8);
        resource.push_str(method_name(req.method));
        resource.push(' ');
        resource.push_str(&audit::clip(req.path, MAX_EVENT_PATH_BYTES));
        self.audit_buffer.events.push(Event {
            actor: "anonymous".into(),
            action: "deny".into(),
            resource,
            outcome: code.to_string(),
            source: source_of(cx),
        });
    }

    /// Buffers a decision this shard made and answered itself (a delegation).
    pub(super) fn note_decision(&mut self, action: &str, resource: &str, cx: &Cx<'_>) {
        if !self.audit_buffer.has_room() {
            return;
        }
        self.audit_buffer.events.push(Event {
            actor: "client".into(),
            action: action.to_owned(),
            resource: audit::clip(resource, MAX_EVENT_PATH_BYTES),
            outcome: "200".into(),
            source: source_of(cx),
        });
    }

    /// Ships the buffered events to the control plane (called once a second); a full
    /// control queue drops them, counted.
    pub(super) fn ship_audit_events(&mut self) {
        if self.audit_buffer.events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.audit_buffer.events);
        let n = events.len() as u64;
        match self.control.try_send(ControlMsg::AuditEvents { events }) {
            Ok(()) => self.audit_buffer.shipped += n,
            Err(_) => self.audit_buffer.dropped += n,
        }
    }

    /// The shard's audit lines for `/metrics`.
    pub(super) fn audit_metrics(&self) -> [(&'static str, u64); 3] {
        [
            ("subzero_audit_dropped_total", self.audit_buffer.dropped),
            ("subzero_audit_shipped_total", self.audit_buffer.shipped),
            (
                "subzero_audit_buffered",
                self.audit_buffer.events.len() as u64,
            ),
        ]
    }
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Other => "OTHER",
    }
}

/// `after` (default 0) and `limit` (default 100, at most `audit::MAX_READ_LIMIT`).
fn read_params(req: &Request<'_>) -> Result<(u64, usize), BodyError> {
    let number = |name: &'static str| -> Result<Option<u64>, BodyError> {
        req.query_param(name)
            .map(|text| {
                text.parse::<u64>().map_err(|_| BodyError::Field {
                    idx: 0,
                    field: name,
                    why: "must be a non-negative integer".into(),
                })
            })
            .transpose()
    };
    let after = number("after")?.unwrap_or(0);
    let limit = number("limit")?.map_or(DEFAULT_READ_LIMIT, |n| {
        usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(audit::MAX_READ_LIMIT)
    });
    if limit == 0 {
        return Err(BodyError::Field {
            idx: 0,
            field: "limit",
            why: "must be at least 1".into(),
        });
    }
    Ok((after, limit))
}

/// Renders the control plane's answer to an audit request.
pub(super) fn render_reply(out: &mut Vec<u8>, reply: &ControlReply, ka: bool) {
    match reply {
        ControlReply::AuditWritten {
            first_seq,
            last_seq,
        } => render_written(out, *first_seq, *last_seq, ka),
        ControlReply::AuditRecords(records) => render_records(out, records, ka),
        ControlReply::AuditCheckpoint {
            note: Some(note),
            vkey,
        } => {
            let body = serde_json::json!({ "checkpoint": note, "verifier_key": vkey });
            http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
        }
        ControlReply::AuditCheckpoint { note: None, .. } => {
            let text = "the audit log is empty: there is nothing to checkpoint yet";
            respond::error(out, Status::NotFound, "invalid_request", text, ka);
        }
        _ => render_failed(out, ka),
    }
}

/// `{"first_seq","last_seq"}`.
fn render_written(out: &mut Vec<u8>, first_seq: u64, last_seq: u64, ka: bool) {
    let body = serde_json::json!({ "first_seq": first_seq, "last_seq": last_seq });
    http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
}

/// `{"events":[...]}`.
fn render_records(out: &mut Vec<u8>, records: &[ReadRecord], ka: bool) {
    let body = serde_json::to_vec(&serde_json::json!({ "events": records })).unwrap_or_default();
    let headers: &[&[u8]] = &[b"cache-control: no-store"];
    http::write_response(
        out,
        Status::Ok,
        Some("application/json"),
        headers,
        &body,
        ka,
    );
}

/// `503` for a batch that could not be made durable.
fn render_failed(out: &mut Vec<u8>, ka: bool) {
    respond::error_with(
        out,
        Status::ServiceUnavailable,
        "temporarily_unavailable",
        "the audit log could not be written or read (disk full or an I/O error); nothing of this batch was stored, retry",
        &[b"retry-after: 1"],
        ka,
    );
}

/// An audit event's `source`: the peer IP, or `uid:N pid:M` for a Unix-socket peer.
pub(super) fn source_of(cx: &Cx<'_>) -> String {
    match (cx.peer_uid, cx.peer_pid) {
        (Some(uid), Some(pid)) => format!("uid:{uid} pid:{pid}"),
        (Some(uid), None) => format!("uid:{uid}"),
        _ => cx.peer.to_string(),
    }
}
