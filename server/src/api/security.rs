//! `POST /v1/threat/check` and `POST /v1/risk/assess` over owned work: every keyed state lives
//! on the shard that owns its key, so one user's events arriving on different shards are
//! counted together.
//!
//! Threat: the receiving shard parses the event, computes the stateless signals
//! (`security::split`), and hands each keyed part (source address, subject, e-mail domain) to
//! its owner, `owner_of(key)`: observed at once when that is this shard, else sent as
//! `OwnedWork::Threat` under one deferred ticket; the gather (`gather.rs`) collects the
//! owners' signals, then `combine` scores them, a `block` puts the source on the kernel
//! blocklist (`ControlMsg::Block`, reason `threat`, `threat.block_ttl_s`) and tells the
//! source's owner (`note_block`), and the response is rendered. Risk asks the subject's owner
//! and the source's owner for their facts the same way, then `assess`es them.
//!
//! The address blocked is the body's `source_ip`: the end user's address the caller reports
//! (the caller is usually a login service, whose own address must not be blocked).
//!
//! Who may call: the admin token, or a bearer token (ours or a trusted issuer's) with scope
//! `threat` (threat checks) or `risk` (risk assessments), as for `/v1/ratelimit/check`.
//!
//! A `503` (an owner's edge full, or `MAX_OWNED_IN_FLIGHT` tickets waiting) may leave parts
//! already sent observed by their owners: the event counts, its answer is lost, as when a
//! caller's connection drops.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::gather::{Gathered, Gathers, MAX_PARTS};
use super::owned::{self, Route};
use super::{respond, ShardApp};
use crate::config::Config;
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::plane::{ControlMsg, OwnedResult, OwnedWork, ShardMsg, ThreatPart};
use crate::security::{
    self, Decision, DomainTable, Signal, SignalKind, SourceFacts, SourceTable, SubjectFacts,
    SubjectQuery, SubjectTable, ThreatEvent,
};
use crate::shard::{Cx, Outcome, Ready, Ticket};

/// The threat-check path.
pub(super) const THREAT_CHECK_PATH: &str = "/v1/threat/check";
/// The risk-assessment path.
pub(super) const RISK_ASSESS_PATH: &str = "/v1/risk/assess";
/// The scope a bearer token needs for threat checks.
const THREAT_SCOPE: &str = "threat";
/// The scope a bearer token needs for risk assessments.
const RISK_SCOPE: &str = "risk";

/// Event names, by the index `event_index` gives (metrics labels).
const EVENTS: [&str; 4] = ["login", "signup", "mfa_push", "prompt"];
/// Every signal, in metrics order.
const SIGNALS: [SignalKind; 9] = [
    SignalKind::CredentialStuffing,
    SignalKind::BruteForce,
    SignalKind::FailureBurst,
    SignalKind::MfaPushBombing,
    SignalKind::MfaSuccessAfterDenials,
    SignalKind::ImpossibleTravel,
    SignalKind::DisposableEmail,
    SignalKind::SignupBurst,
    SignalKind::PromptInjection,
];
/// Actions, by index (metrics labels).
const ACTIONS: [security::Action; 3] = [
    security::Action::None,
    security::Action::Flag,
    security::Action::Block,
];
/// Decisions, by index (metrics labels).
const DECISIONS: [Decision; 3] = [Decision::Allow, Decision::StepUp, Decision::Deny];

fn event_index(e: &ThreatEvent) -> usize {
    match e {
        ThreatEvent::Login(_) => 0,
        ThreatEvent::Signup(_) => 1,
        ThreatEvent::MfaPush(_) => 2,
        ThreatEvent::Prompt(_) => 3,
    }
}

/// Where the state of `ip` lives.
fn source_route(ip: IpAddr, idx: usize, n_shards: usize) -> Route {
    match ip {
        IpAddr::V4(a) => owned::route(&a.octets(), idx, n_shards),
        IpAddr::V6(a) => owned::route(&a.octets(), idx, n_shards),
    }
}

/// Where the state of `part`'s key lives.
fn part_route(part: &ThreatPart, idx: usize, n_shards: usize) -> Route {
    match part {
        ThreatPart::Source(p) => source_route(p.source, idx, n_shards),
        ThreatPart::Subject(p) => owned::route(p.subject.as_bytes(), idx, n_shards),
        ThreatPart::Domain(p) => owned::route(p.domain.as_bytes(), idx, n_shards),
    }
}

/// Sources this shard blocked recently, remembered at most [`MAX_RECENT_BLOCKS`].
const MAX_RECENT_BLOCKS: usize = 4096;

/// The sources this shard sent to the blocklist and until when it will not send them again
/// (half the block's TTL, so a source that keeps attacking is re-blocked before its entry
/// expires, and the control plane, which persists the blocklist on every change, sees one block
/// per source per half-TTL per shard instead of one per check). Bounded by
/// [`MAX_RECENT_BLOCKS`]: when full of live entries, a new source is blocked without being
/// remembered.
#[derive(Debug, Default)]
struct RecentBlocks {
    until_ms: std::collections::HashMap<IpAddr, u64>,
}

impl RecentBlocks {
    /// Whether to send a block for `ip` now (and remember it until `now_ms + quiet_ms`).
    fn should_send(&mut self, ip: IpAddr, now_ms: u64, quiet_ms: u64) -> bool {
        if self.until_ms.get(&ip).is_some_and(|&until| until > now_ms) {
            return false;
        }
        if self.until_ms.len() >= MAX_RECENT_BLOCKS {
            self.until_ms.retain(|_, until| *until > now_ms);
        }
        if self.until_ms.len() < MAX_RECENT_BLOCKS || self.until_ms.contains_key(&ip) {
            self.until_ms.insert(ip, now_ms.saturating_add(quiet_ms));
        }
        true
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct SecCounters {
    /// Checks by event and action.
    checks: [[u64; 3]; 4],
    /// Signals fired, by `SIGNALS` index.
    signals: [u64; 9],
    /// Assessments by decision.
    assessments: [u64; 3],
    /// Keyed parts observed here for requests received here.
    parts_local: u64,
    /// Keyed parts (and risk queries) sent to other owners.
    parts_sent: u64,
    /// Keyed parts (and risk queries) served here for other shards.
    parts_served: u64,
    /// Blocks handed to the control plane.
    blocks: u64,
    /// Blocks dropped because the control queue was full (the next block check reports again).
    blocks_dropped: u64,
    /// Blocking checks whose source this shard had blocked within the last half-TTL.
    blocks_repeated: u64,
    /// Block notes to a source's owner dropped because its edge was full.
    notes_dropped: u64,
}

/// One shard's threat and risk state: the tables of the keys it owns (each at most its
/// `threat.max_*`), its open gathers and its counters.
pub(super) struct SecurityState {
    sources: SourceTable,
    subjects: SubjectTable,
    domains: DomainTable,
    gathers: Gathers,
    recent_blocks: RecentBlocks,
    counters: SecCounters,
}

impl SecurityState {
    pub(super) fn new(config: &Config, seed: u64) -> SecurityState {
        SecurityState {
            sources: SourceTable::new(&config.threat, seed.rotate_left(7) ^ 0x7e4a),
            subjects: SubjectTable::new(&config.threat, seed.rotate_left(13) ^ 0x5b1e),
            domains: DomainTable::new(&config.threat),
            gathers: Gathers::default(),
            recent_blocks: RecentBlocks::default(),
            counters: SecCounters::default(),
        }
    }

    /// Forgets gathers the runtime answered `503` already.
    pub(super) fn expire(&mut self, now_s: u64, timeout_s: u64) {
        self.gathers.expire(now_s, timeout_s);
    }
}

/// `400` naming the field.
fn bad_body(out: &mut Vec<u8>, e: &security::BodyError, ka: bool) {
    respond::error(
        out,
        Status::BadRequest,
        "invalid_request",
        &e.to_string(),
        ka,
    );
}

/// `503` when a part could not be handed to its owner.
fn busy(out: &mut Vec<u8>, ka: bool) {
    respond::error_with(
        out,
        Status::ServiceUnavailable,
        "temporarily_unavailable",
        "the shard that owns part of this request is busy; retry",
        &[b"retry-after: 1"],
        ka,
    );
}

impl ShardApp {
    pub(super) fn threat_check(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::ThreatCheck);
        if let Some(answer) = self.refuse_unless_scoped(req, cx, out, THREAT_SCOPE) {
            return answer;
        }
        let shared = std::sync::Arc::clone(&self.shared);
        let cfg = &shared.config.threat;
        let event = match security::parse_threat(req.body, cfg.max_text_bytes) {
            Ok(event) => event,
            Err(e) => {
                bad_body(out, &e, ka);
                return done;
            }
        };
        let event_idx = event_index(&event);
        let source = event.source_ip();
        let split = security::split(event, cfg, &shared.detectors);
        let parts = [
            split.source.map(ThreatPart::Source),
            split.subject.map(ThreatPart::Subject),
            split.domain.map(ThreatPart::Domain),
        ];
        let n_shards = self.outbox.n_shards();
        let (mut local, mut remote) = (Vec::with_capacity(MAX_PARTS), Vec::new());
        for part in parts.into_iter().flatten() {
            match part_route(&part, self.idx, n_shards) {
                Route::Local => local.push(part),
                Route::Remote { owner } => remote.push((owner, OwnedWork::Threat(part))),
            }
        }
        // Remote parts first: a 503 then leaves nothing observed here.
        let Ok(deferred) = self.send_parts(remote, cx, ka) else {
            busy(out, ka);
            return done;
        };
        let now_ms = crate::unix_now_ms();
        let mut signals = split.signals;
        for part in &local {
            signals.extend(self.observe_part(part, now_ms, false));
        }
        match deferred {
            None => {
                self.finish_threat(out, event_idx, signals, source, now_ms, ka);
                done
            }
            Some((ticket, n_parts)) => {
                let gathered = Gathered::Threat {
                    event: event_idx,
                    signals,
                    source,
                };
                self.sec.gathers.open(ticket, gathered, n_parts, cx.now_s);
                (Outcome::Deferred(ticket), Op::ThreatCheck)
            }
        }
    }

    pub(super) fn risk_assess(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::RiskAssess);
        if let Some(answer) = self.refuse_unless_scoped(req, cx, out, RISK_SCOPE) {
            return answer;
        }
        let request = match security::parse_risk(req.body) {
            Ok(r) => r,
            Err(e) => {
                bad_body(out, &e, ka);
                return done;
            }
        };
        let query = security::subject_query(&request);
        let n_shards = self.outbox.n_shards();
        let subject_route = owned::route(query.subject.as_bytes(), self.idx, n_shards);
        let source_route = source_route(request.source_ip, self.idx, n_shards);
        let mut remote = Vec::new();
        let mut local_query = None;
        match subject_route {
            Route::Local => local_query = Some(query),
            Route::Remote { owner } => remote.push((owner, OwnedWork::RiskSubject(query))),
        }
        if let Route::Remote { owner } = source_route {
            remote.push((owner, OwnedWork::RiskSource(request.source_ip)));
        }
        let Ok(deferred) = self.send_parts(remote, cx, ka) else {
            busy(out, ka);
            return done;
        };
        let now_ms = crate::unix_now_ms();
        let subject = local_query.map(|q| self.subject_facts(&q, now_ms, false));
        let source = (source_route == Route::Local)
            .then(|| self.source_facts(request.source_ip, now_ms, false));
        match deferred {
            None => {
                let (subject, source) = (subject.unwrap_or_default(), source.unwrap_or_default());
                self.finish_risk(out, &request.scopes, &subject, &source, now_ms, ka);
                done
            }
            Some((ticket, n_parts)) => {
                let gathered = Gathered::Risk {
                    scopes: request.scopes,
                    subject,
                    source,
                };
                self.sec.gathers.open(ticket, gathered, n_parts, cx.now_s);
                (Outcome::Deferred(ticket), Op::RiskAssess)
            }
        }
    }

    /// Sends each `(owner, work)` under one new deferred ticket: `Ok(None)` when there is
    /// nothing to send, `Ok(Some((ticket, n_parts)))` when all went, `Err` (answer `503`) when
    /// one could not go (the ticket is then forgotten: late answers are dropped).
    fn send_parts(
        &mut self,
        remote: Vec<(usize, OwnedWork)>,
        cx: &mut Cx<'_>,
        ka: bool,
    ) -> Result<Option<(Ticket, usize)>, ()> {
        if remote.is_empty() {
            return Ok(None);
        }
        let n_parts = remote.len();
        let ticket = cx.defer();
        for (i, (owner, work)) in remote.into_iter().enumerate() {
            let sent = if i == 0 {
                self.owned
                    .send(&mut self.outbox, owner, ticket, ka, cx.now_s, work)
            } else {
                self.owned.send_also(&mut self.outbox, owner, ticket, work)
            };
            if sent.is_err() {
                self.owned.complete(ticket);
                return Err(());
            }
            self.sec.counters.parts_sent += 1;
        }
        Ok(Some((ticket, n_parts)))
    }

    /// Owner side (or local): observes one keyed part in this shard's table.
    pub(super) fn observe_part(
        &mut self,
        part: &ThreatPart,
        now_ms: u64,
        for_other: bool,
    ) -> Vec<Signal> {
        self.count_part(for_other);
        match part {
            ThreatPart::Source(p) => self.sec.sources.observe(p, now_ms),
            ThreatPart::Subject(p) => self.sec.subjects.observe(p, now_ms),
            ThreatPart::Domain(p) => self.sec.domains.observe(p, now_ms),
        }
    }

    fn count_part(&mut self, for_other: bool) {
        let c = &mut self.sec.counters;
        if for_other {
            c.parts_served += 1;
        } else {
            c.parts_local += 1;
        }
    }

    /// Owner side (or local): the subject's facts for risk.
    pub(super) fn subject_facts(
        &mut self,
        q: &SubjectQuery,
        now_ms: u64,
        for_other: bool,
    ) -> SubjectFacts {
        self.count_part(for_other);
        self.sec
            .subjects
            .risk_facts(q, &self.shared.config.risk, now_ms)
    }

    /// Owner side (or local): the source's facts for risk.
    pub(super) fn source_facts(&mut self, ip: IpAddr, now_ms: u64, for_other: bool) -> SourceFacts {
        self.count_part(for_other);
        self.sec
            .sources
            .risk_facts(ip, &self.shared.config.risk, now_ms)
    }

    /// Origin side: one owner answered part of `ticket`; the response is ready once the last
    /// part is in.
    pub(super) fn security_part_done(
        &mut self,
        ticket: Ticket,
        result: OwnedResult,
        ready: &mut Ready,
    ) {
        let Some(gathered) = self.sec.gathers.add(ticket, result) else {
            return; // more parts out, or answered 503 by the deferred timeout already
        };
        let Some(ka) = self.owned.complete(ticket) else {
            return;
        };
        let now_ms = crate::unix_now_ms();
        let mut response = Vec::new();
        match gathered {
            Gathered::Threat {
                event,
                signals,
                source,
            } => self.finish_threat(&mut response, event, signals, source, now_ms, ka),
            Gathered::Risk {
                scopes,
                subject,
                source,
            } => {
                let (subject, source) = (subject.unwrap_or_default(), source.unwrap_or_default());
                self.finish_risk(&mut response, &scopes, &subject, &source, now_ms, ka);
            }
        }
        self.counters.count_status(respond::status_of(&response));
        ready.push((ticket, response));
    }

    /// Scores the signals, blocks the source when the action is `block`, renders.
    fn finish_threat(
        &mut self,
        out: &mut Vec<u8>,
        event: usize,
        mut signals: Vec<Signal>,
        source: Option<IpAddr>,
        now_ms: u64,
        ka: bool,
    ) {
        // One order whichever owner answered first.
        signals.sort_by_key(|s| s.kind);
        let (score, action) = security::combine(&self.shared.config.threat, &signals);
        let c = &mut self.sec.counters;
        if let Some(i) = ACTIONS.iter().position(|a| *a == action) {
            c.checks[event][i] += 1;
        }
        for s in &signals {
            if let Some(i) = SIGNALS.iter().position(|k| *k == s.kind) {
                c.signals[i] += 1;
            }
        }
        if action == security::Action::Block {
            if let Some(ip) = source {
                self.block_threat(ip, now_ms);
            }
        }
        let body = security::render_threat(score, action, &signals);
        http::write_response(out, Status::Ok, Some("application/json"), &[], &body, ka);
    }

    /// Puts `ip` on the kernel blocklist for `threat.block_ttl_s` (best effort: a full control
    /// queue drops it, and the source's next blocking check reports again) and tells its owner;
    /// at most once per half-TTL per source from this shard (`RecentBlocks`).
    fn block_threat(&mut self, ip: IpAddr, now_ms: u64) {
        let ttl_s = self.shared.config.threat.block_ttl_s;
        let quiet_ms = ttl_s.saturating_mul(500);
        if !self.sec.recent_blocks.should_send(ip, now_ms, quiet_ms) {
            self.sec.counters.blocks_repeated += 1;
            return;
        }
        let msg = ControlMsg::Block {
            ip,
            reason: crate::gate::BlockReason::Threat,
            ttl_s: Some(ttl_s),
        };
        match self.control.try_send(msg) {
            Ok(()) => self.sec.counters.blocks += 1,
            Err(_) => {
                self.sec.counters.blocks_dropped += 1;
                self.sec.recent_blocks.until_ms.remove(&ip); // the next check tries again
            }
        }
        match source_route(ip, self.idx, self.outbox.n_shards()) {
            Route::Local => self.sec.sources.note_block(ip, now_ms),
            Route::Remote { owner } => {
                let note = ShardMsg::ThreatBlocked { source: ip };
                if self.outbox.send(owner, note).is_err() {
                    self.sec.counters.notes_dropped += 1;
                }
            }
        }
    }

    /// Owner side: another shard blocked `source`.
    pub(super) fn note_threat_block(&mut self, source: IpAddr) {
        self.sec.sources.note_block(source, crate::unix_now_ms());
    }

    fn finish_risk(
        &mut self,
        out: &mut Vec<u8>,
        scopes: &[String],
        subject: &SubjectFacts,
        source: &SourceFacts,
        now_ms: u64,
        ka: bool,
    ) {
        let a = security::assess(&self.shared.config.risk, subject, source, scopes, now_ms);
        if let Some(i) = DECISIONS.iter().position(|d| *d == a.decision) {
            self.sec.counters.assessments[i] += 1;
        }
        let body = security::render_risk(&a);
        http::write_response(out, Status::Ok, Some("application/json"), &[], &body, ka);
    }

    /// The threat and risk lines of this shard's `/metrics` section.
    pub(super) fn render_security_metrics(&self, text: &mut String) {
        let shard = self.idx;
        let s = &self.sec;
        let c = &s.counters;
        let families = [
            ("subzero_threat_checks_total", "counter", "Threat checks answered, by event and action."),
            ("subzero_threat_signals_total", "counter", "Threat signals fired, by name."),
            ("subzero_threat_table_keys", "gauge", "Keys held in this shard's threat tables."),
            ("subzero_threat_table_evictions_total", "counter", "Keys evicted from full threat tables."),
            ("subzero_threat_parts_total", "counter", "Keyed parts of threat checks and risk queries: observed locally, sent to their owner shard, or served for another shard."),
            ("subzero_threat_blocks_total", "counter", "Blocking threat checks: block sent to the control plane, dropped (control queue full), repeated (sent by this shard within the last half-TTL), or the owner's note dropped."),
            ("subzero_security_gather_stray_total", "counter", "Owner answers that matched no open gather (their ticket had timed out)."),
            ("subzero_risk_assessments_total", "counter", "Risk assessments answered, by decision."),
            ("subzero_security_gathers_open", "gauge", "Threat checks and risk assessments waiting for owner shards."),
        ];
        for (name, kind, help) in families {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        for (event, per_action) in EVENTS.iter().zip(&c.checks) {
            for (action, n) in ACTIONS.iter().zip(per_action) {
                let _ = writeln!(
                    text,
                    "subzero_threat_checks_total{{shard=\"{shard}\",event=\"{event}\",action=\"{}\"}} {n}",
                    action.as_str()
                );
            }
        }
        for (kind, n) in SIGNALS.iter().zip(&c.signals) {
            let _ = writeln!(
                text,
                "subzero_threat_signals_total{{shard=\"{shard}\",signal=\"{}\"}} {n}",
                kind.name()
            );
        }
        let tables = [
            ("source", s.sources.len(), s.sources.n_evictions()),
            ("subject", s.subjects.len(), s.subjects.n_evictions()),
            ("domain", s.domains.len(), s.domains.n_evictions()),
        ];
        for (table, len, evicted) in tables {
            let _ = writeln!(
                text,
                "subzero_threat_table_keys{{shard=\"{shard}\",table=\"{table}\"}} {len}\n\
                 subzero_threat_table_evictions_total{{shard=\"{shard}\",table=\"{table}\"}} {evicted}"
            );
        }
        for (place, n) in [
            ("local", c.parts_local),
            ("sent", c.parts_sent),
            ("served", c.parts_served),
        ] {
            let _ = writeln!(
                text,
                "subzero_threat_parts_total{{shard=\"{shard}\",where=\"{place}\"}} {n}"
            );
        }
        let _ = writeln!(
            text,
            "subzero_threat_blocks_total{{shard=\"{shard}\",result=\"sent\"}} {}\n\
             subzero_threat_blocks_total{{shard=\"{shard}\",result=\"dropped\"}} {}\n\
             subzero_threat_blocks_total{{shard=\"{shard}\",result=\"repeated\"}} {}\n\
             subzero_threat_blocks_total{{shard=\"{shard}\",result=\"note_dropped\"}} {}\n\
             subzero_security_gather_stray_total{{shard=\"{shard}\"}} {}",
            c.blocks, c.blocks_dropped, c.blocks_repeated, c.notes_dropped, s.gathers.n_stray
        );
        for (d, n) in DECISIONS.iter().zip(&c.assessments) {
            let _ = writeln!(
                text,
                "subzero_risk_assessments_total{{shard=\"{shard}\",decision=\"{}\"}} {n}",
                d.as_str()
            );
        }
        let _ = writeln!(
            text,
            "subzero_security_gathers_open{{shard=\"{shard}\"}} {}",
            s.gathers.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_blocked_once_per_half_ttl_and_the_memory_is_bounded() {
        let mut r = RecentBlocks::default();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(r.should_send(ip, 0, 1000));
        assert!(!r.should_send(ip, 999, 1000), "within the quiet time");
        assert!(
            r.should_send(ip, 1000, 1000),
            "re-blocked before the TTL ends"
        );
        let mut r = RecentBlocks::default();
        for i in 0..MAX_RECENT_BLOCKS as u32 {
            assert!(r.should_send(IpAddr::from(i.to_be_bytes()), 0, 1000));
        }
        let extra: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(r.should_send(extra, 10, 1000), "full: sent, not remembered");
        assert!(r.should_send(extra, 11, 1000));
        assert_eq!(r.until_ms.len(), MAX_RECENT_BLOCKS);
        assert!(
            r.should_send(extra, 2000, 1000),
            "expired entries make room"
        );
        assert_eq!(r.until_ms.len(), 1);
        assert!(!r.should_send(extra, 2001, 1000));
    }
}
