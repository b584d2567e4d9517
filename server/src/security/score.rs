//! Scores: the threat score and action from the signals that fired, and the risk assessment
//! from the facts the owners of the subject and the source return.
//!
//! Both combine independent evidence as a noisy-or, `1 - Π(1 - wᵢ)`: one signal of weight `w`
//! scores `w`, more evidence only raises the score, it never exceeds 1, and the order of the
//! signals (which depends on which shard answered first) does not matter.

use super::{ms, Signal, SourceFacts, SubjectFacts};
use crate::config::{RiskConfig, ThreatConfig};

/// What the gateway does about a threat check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Below `flag_threshold`.
    None,
    /// At or above `flag_threshold`: reported, not enforced.
    Flag,
    /// At or above `block_threshold`: the source goes on the kernel blocklist for
    /// `block_ttl_s` with reason `threat`.
    Block,
}

impl Action {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Flag => "flag",
            Action::Block => "block",
        }
    }
}

/// `1 - (1 - prior) Π(1 - wᵢ)`, clamped to [0, 1].
pub(crate) fn combine_score(prior: f64, signals: &[Signal]) -> f64 {
    let keep = signals.iter().fold(1.0 - prior.clamp(0.0, 1.0), |keep, s| {
        keep * (1.0 - s.weight.clamp(0.0, 1.0))
    });
    (1.0 - keep).clamp(0.0, 1.0)
}

/// The score of the signals and the action it calls for.
pub fn combine(cfg: &ThreatConfig, signals: &[Signal]) -> (f64, Action) {
    let score = combine_score(0.0, signals);
    let action = if score >= cfg.block_threshold {
        Action::Block
    } else if score >= cfg.flag_threshold {
        Action::Flag
    } else {
        Action::None
    };
    (score, action)
}

/// A risk decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Below `step_up_threshold`.
    Allow,
    /// Ask for a stronger authentication.
    StepUp,
    /// At or above `deny_threshold`.
    Deny,
}

impl Decision {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::StepUp => "step_up",
            Decision::Deny => "deny",
        }
    }
}

/// One risk factor and what it added (its weight times its strength in [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factor {
    /// The wire name.
    pub name: &'static str,
    /// In [0, weight].
    pub contribution: f64,
}

/// A risk assessment: every factor (zero ones included, so the caller sees what was weighed),
/// the score and the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// `1 - Π(1 - contribution)`, in [0, 1].
    pub score: f64,
    /// Every factor, in a fixed order.
    pub factors: Vec<Factor>,
    /// By `step_up_threshold` / `deny_threshold`.
    pub decision: Decision,
}

/// Weighs the facts into a score and a decision. Factor strengths: failures and blocks are
/// counts over their saturation count; threat scores as they are; new device and network 1
/// or 0 (no device given: 0); the most sensitive requested scope (`scope_sensitivity`,
/// `default_scope_sensitivity` for the rest; no scopes: 0); the age of the last strong
/// authentication over `strong_auth_max_age_s` (none remembered: 1).
pub fn assess(
    cfg: &RiskConfig,
    subject: &SubjectFacts,
    source: &SourceFacts,
    scopes: &[String],
    now_ms: u64,
) -> Assessment {
    let w = &cfg.weights;
    let ratio = |n: usize, of: usize| (n as f64 / of.max(1) as f64).min(1.0);
    let sensitivity = scopes
        .iter()
        .map(|s| {
            cfg.scope_sensitivity
                .get(s)
                .copied()
                .unwrap_or(cfg.default_scope_sensitivity)
        })
        .fold(0.0, f64::max);
    let staleness = subject.last_strong_auth_ms.map_or(1.0, |at| {
        (now_ms.saturating_sub(at) as f64 / ms(cfg.strong_auth_max_age_s) as f64).min(1.0)
    });
    let strengths = [
        (
            "recent_failures",
            w.recent_failures,
            ratio(subject.failures, cfg.failures_saturate),
        ),
        ("subject_threat", w.subject_threat, subject.threat_score),
        ("source_threat", w.source_threat, source.threat_score),
        (
            "source_blocks",
            w.source_blocks,
            ratio(source.blocks, cfg.blocks_saturate),
        ),
        (
            "new_device",
            w.new_device,
            f64::from(u8::from(subject.new_device == Some(true))),
        ),
        (
            "new_network",
            w.new_network,
            f64::from(u8::from(subject.new_network)),
        ),
        ("scope_sensitivity", w.scope_sensitivity, sensitivity),
        ("stale_strong_auth", w.stale_strong_auth, staleness),
    ];
    let factors: Vec<Factor> = strengths
        .iter()
        .map(|&(name, weight, strength)| Factor {
            name,
            contribution: (weight * strength.clamp(0.0, 1.0)).clamp(0.0, 1.0),
        })
        .collect();
    let keep = factors.iter().fold(1.0, |k, f| k * (1.0 - f.contribution));
    let score = (1.0 - keep).clamp(0.0, 1.0);
    let decision = if score >= cfg.deny_threshold {
        Decision::Deny
    } else if score >= cfg.step_up_threshold {
        Decision::StepUp
    } else {
        Decision::Allow
    };
    debug_assert!((0.0..=1.0).contains(&score));
    Assessment {
        score,
        factors,
        decision,
    }
}
