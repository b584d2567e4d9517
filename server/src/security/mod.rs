//! Threat checks (`POST /v1/threat/check`) and risk assessment (`POST /v1/risk/assess`) as pure
//! decision code: no I/O, no mesh, no locks, time injected as `now_ms`, every table bounded.
//!
//! # Shape: split, observe on the owner, combine
//!
//! An event is parsed ([`parse_threat`]) and [`split`] on the shard that received it into
//! *stateless signals* (prompt injection, disposable e-mail domain) computed there, and up to
//! three *keyed parts*, plain `Send` data for the shard that owns each key:
//!
//! | part | key | table | signals |
//! |---|---|---|---|
//! | [`SourcePart`] | source IP | [`SourceTable`] | `credential_stuffing`, `brute_force`, `failure_burst` |
//! | [`SubjectPart`] | subject | [`SubjectTable`] | `mfa_push_bombing`, `mfa_success_after_denials`, `impossible_travel` |
//! | [`DomainPart`] | e-mail domain | [`DomainTable`] | `signup_burst` |
//!
//! The owner runs `table.observe(part, now_ms)` and sends the signals back; the receiving
//! shard concatenates them with its own and calls [`combine`] (score `1 - Π(1 - wᵢ)`, action by
//! `[threat] flag_threshold` / `block_threshold`) and renders ([`render_threat`]). Every keyed
//! state lives in exactly one table, so splitting a stream over N owners gives the same signals
//! as one table (tested in `tests.rs`). A part carries the score of the signals already known
//! when it was sent (`prior_score`), so each table remembers a recent score for its key.
//! When the action is `block`, the wiring puts the source on the kernel blocklist for
//! `threat.block_ttl_s` with reason `threat` and tells the source's owner
//! ([`SourceTable::note_block`]); the source table also records the blocks its own signals
//! cause, and two blocks within a second count once.
//!
//! Risk ([`parse_risk`]) asks the subject's owner for [`SubjectFacts`]
//! ([`subject_query`], then [`SubjectTable::risk_facts`]: recent failures, threat score, new device or network, last
//! strong authentication) and the source's owner for [`SourceFacts`] (recent failures, threat
//! score, blocks), then [`assess`] weighs them with the scope sensitivity into a score and an
//! `allow` / `step_up` / `deny` decision, listing every factor ([`render_risk`]).
//!
//! # Bounds (worst case per shard, defaults)
//!
//! Each table holds at most `max_*` keys (least recently *observed* evicted, counted in
//! `n_evictions`); each key's state is a fixed set of rings whose capacity follows the
//! thresholds; hashes (xxh3, per-table seed) stand for usernames and devices. With the defaults
//! a source costs at most 1,253 bytes (32 failures × 16, 16 username counters × 24, 8 blocks ×
//! 8, its slot, and up to 5 map buckets under churn), a subject 1,181 (a 256-byte key, 32
//! failures × 8, 5 denials × 8, 8 devices and 8 networks × 16, slot and buckets), a domain 618
//! (a 253-byte key, 20 signups × 8, slot and buckets). So 16,384 sources ≈ 19.6 MiB, 32,768
//! subjects ≈ 36.9 MiB and 16,384 domains ≈ 9.7 MiB: about 66 MiB per shard at most, computed
//! from the configuration by [`worst_case_bytes`] and checked against a flood of distinct keys
//! in the tests. The shared read-only [`Detectors`] (a 760 KiB automaton and the 8,335
//! disposable domains, about 1 MiB together) are built once per process.

mod body;
mod domain;
mod email;
mod lru;
mod prompt;
mod score;
mod source;
mod split;
mod subject;
#[cfg(test)]
mod tests;

pub use body::{
    parse_risk, parse_threat, render_risk, render_threat, BodyError, GeoPoint, Login, MfaPush,
    Prompt, RiskRequest, Signup, ThreatEvent,
};
pub use domain::{DomainPart, DomainTable};
pub use email::DisposableDomains;
pub use prompt::{PatternError, PromptMatch, PromptScanner};
pub use score::{assess, combine, Action, Assessment, Decision, Factor};
pub use source::{SourceFacts, SourceObs, SourcePart, SourceTable};
pub use split::{split, subject_query, Detectors, Split};
pub use subject::{Network, SubjectFacts, SubjectObs, SubjectPart, SubjectQuery, SubjectTable};

use crate::config::{SignalWeights, ThreatConfig};

/// Failures remembered per subject for risk (`risk.failures_saturate` is at most this).
pub const MAX_RECENT_FAILURES: usize = 32;
/// Blocks remembered per source (`risk.blocks_saturate` is at most this).
pub const MAX_BLOCKS_REMEMBERED: usize = 8;
/// Longest subject, device or username accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest e-mail address accepted, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Most scopes in one risk request.
pub const MAX_SCOPES: usize = 64;
/// Longest scope in a risk request, in bytes.
pub const MAX_SCOPE_BYTES: usize = 128;
/// Longest evidence excerpt of user-supplied text, in characters.
const MAX_EXCERPT_CHARS: usize = 64;

/// What a signal is; its name is the wire `name` and its weight comes from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    /// Many usernames failing from one source.
    CredentialStuffing,
    /// Consecutive failures for one username from one source.
    BruteForce,
    /// Many failures from one source within a short window.
    FailureBurst,
    /// Many denied MFA pushes for one subject.
    MfaPushBombing,
    /// An approved push right after a run of denials (critical).
    MfaSuccessAfterDenials,
    /// Consecutive successful logins too far apart for the time between them.
    ImpossibleTravel,
    /// A signup with a disposable e-mail domain.
    DisposableEmail,
    /// Many signups with one e-mail domain within an hour.
    SignupBurst,
    /// Prompt-injection phrases in a prompt.
    PromptInjection,
}

impl SignalKind {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::CredentialStuffing => "credential_stuffing",
            SignalKind::BruteForce => "brute_force",
            SignalKind::FailureBurst => "failure_burst",
            SignalKind::MfaPushBombing => "mfa_push_bombing",
            SignalKind::MfaSuccessAfterDenials => "mfa_success_after_denials",
            SignalKind::ImpossibleTravel => "impossible_travel",
            SignalKind::DisposableEmail => "disposable_email",
            SignalKind::SignupBurst => "signup_burst",
            SignalKind::PromptInjection => "prompt_injection",
        }
    }

    /// The configured weight.
    pub fn weight(self, w: &SignalWeights) -> f64 {
        match self {
            SignalKind::CredentialStuffing => w.credential_stuffing,
            SignalKind::BruteForce => w.brute_force,
            SignalKind::FailureBurst => w.failure_burst,
            SignalKind::MfaPushBombing => w.mfa_push_bombing,
            SignalKind::MfaSuccessAfterDenials => w.mfa_success_after_denials,
            SignalKind::ImpossibleTravel => w.impossible_travel,
            SignalKind::DisposableEmail => w.disposable_email,
            SignalKind::SignupBurst => w.signup_burst,
            SignalKind::PromptInjection => w.prompt_injection,
        }
    }
}

/// One signal that fired: name, evidence (a sentence with the numbers) and weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// What fired.
    pub kind: SignalKind,
    /// Why, with the figures that crossed the threshold.
    pub evidence: String,
    /// Its weight in [0, 1].
    pub weight: f64,
}

impl Signal {
    fn new(kind: SignalKind, evidence: String, weights: &SignalWeights) -> Signal {
        let weight = kind.weight(weights);
        debug_assert!((0.0..=1.0).contains(&weight));
        Signal {
            kind,
            evidence,
            weight,
        }
    }
}

/// The most heap one shard's three tables can hold under this configuration, in bytes (the
/// figure stated in the module doc).
pub fn worst_case_bytes(cfg: &ThreatConfig) -> usize {
    cfg.max_sources * SourceTable::worst_case_key_bytes(cfg)
        + cfg.max_subjects * SubjectTable::worst_case_key_bytes(cfg)
        + cfg.max_domains * DomainTable::worst_case_key_bytes(cfg)
}

/// Seconds to milliseconds, saturating.
fn ms(s: u64) -> u64 {
    s.saturating_mul(1000)
}

/// `text`, cut to [`MAX_EXCERPT_CHARS`] characters with `…` when cut.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_EXCERPT_CHARS) {
        Some((idx, _)) => format!("{}…", &text[..idx]),
        None => text.to_owned(),
    }
}

/// A recent threat score of one key: the highest within the longest memory and the latest,
/// so a query over any window up to `risk.threat_memory_s` finds a score if one was noted.
#[derive(Debug, Clone, Copy, Default)]
struct RecentScore {
    peak: f64,
    peak_ms: u64,
    last: f64,
    last_ms: u64,
}

impl RecentScore {
    fn note(&mut self, score: f64, now_ms: u64, memory_ms: u64) {
        if score <= 0.0 {
            return;
        }
        self.last = score;
        self.last_ms = now_ms;
        if score >= self.peak || now_ms.saturating_sub(self.peak_ms) > memory_ms {
            self.peak = score;
            self.peak_ms = now_ms;
        }
    }

    fn within(&self, window_ms: u64, now_ms: u64) -> f64 {
        let fresh = |at: u64, score: f64| {
            (score > 0.0 && now_ms.saturating_sub(at) <= window_ms).then_some(score)
        };
        fresh(self.peak_ms, self.peak)
            .or_else(|| fresh(self.last_ms, self.last))
            .unwrap_or(0.0)
    }
}

/// The peak score is kept this long at most (the largest `risk.threat_memory_s`).
const SCORE_MEMORY_MS: u64 = 7 * 86_400 * 1000;
