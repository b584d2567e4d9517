//! Splitting an event on the shard that received it: the stateless signals computed there
//! (prompt injection, disposable e-mail domain) and the keyed parts for the owners of its
//! source, subject and e-mail domain.

use super::body::{RiskRequest, ThreatEvent};
use super::email::DisposableDomains;
use super::prompt::{PatternError, PromptScanner};
use super::score::combine_score;
use super::{
    excerpt, DomainPart, Network, Signal, SignalKind, SourceObs, SourcePart, SubjectObs,
    SubjectPart, SubjectQuery,
};
use crate::config::ThreatConfig;

/// The read-only detectors of the stateless signals, built once and shared by every shard.
#[derive(Debug, Clone)]
pub struct Detectors {
    /// The prompt-injection phrase set.
    pub prompt: PromptScanner,
    /// The disposable e-mail domains.
    pub disposable: DisposableDomains,
}

impl Detectors {
    /// The shipped phrase set and domain list.
    pub fn embedded() -> Result<Detectors, PatternError> {
        Ok(Detectors {
            prompt: PromptScanner::embedded()?,
            disposable: DisposableDomains::embedded(),
        })
    }
}

/// An event split for evaluation: `signals` are final; each part goes to its key's owner,
/// whose `observe` returns more signals.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The stateless signals.
    pub signals: Vec<Signal>,
    /// For the owner of the source address.
    pub source: Option<SourcePart>,
    /// For the owner of the subject.
    pub subject: Option<SubjectPart>,
    /// For the owner of the e-mail domain.
    pub domain: Option<DomainPart>,
}

/// Splits `event`. Logins always send a source and a subject part, signups a domain part, MFA
/// pushes a subject part; besides, when a stateless signal fired, the event's source and
/// subject get a `Note` part so their owners remember the score for risk.
pub fn split(event: ThreatEvent, cfg: &ThreatConfig, detectors: &Detectors) -> Split {
    let mut signals = Vec::new();
    let source_ip = event.source_ip();
    let (mut source, mut subject, mut domain) = (None, None, None);
    let mut note_subject = None;
    match event {
        ThreatEvent::Login(l) => {
            source = Some(SourceObs::Login {
                username: l.subject.clone(),
                success: l.success,
            });
            subject = Some((
                l.subject,
                SubjectObs::Login {
                    success: l.success,
                    point: l.point,
                    device: l.device,
                    network: Network::of(l.source_ip),
                    mfa: l.mfa,
                },
            ));
        }
        ThreatEvent::Signup(s) => {
            if let Some(listed) = detectors.disposable.listed(&s.domain) {
                let evidence = if listed == s.domain {
                    format!(
                        "e-mail domain {:?} is a disposable domain",
                        excerpt(&s.domain)
                    )
                } else {
                    format!(
                        "e-mail domain {:?} is under the disposable domain {listed:?}",
                        excerpt(&s.domain)
                    )
                };
                signals.push(Signal::new(
                    SignalKind::DisposableEmail,
                    evidence,
                    &cfg.weights,
                ));
            }
            domain = Some(DomainPart { domain: s.domain });
            note_subject = s.subject;
        }
        ThreatEvent::MfaPush(m) => {
            subject = Some((
                m.subject,
                SubjectObs::MfaPush {
                    approved: m.approved,
                },
            ));
        }
        ThreatEvent::Prompt(p) => {
            signals.extend(detectors.prompt.signal(&p.text, &cfg.weights));
            note_subject = p.subject;
        }
    }
    let prior_score = combine_score(0.0, &signals);
    if !signals.is_empty() {
        source = source.or(Some(SourceObs::Note));
        if let Some(name) = note_subject {
            subject = subject.or(Some((name, SubjectObs::Note)));
        }
    }
    Split {
        source: source_ip.zip(source).map(|(ip, obs)| SourcePart {
            source: ip,
            obs,
            prior_score,
        }),
        subject: subject.map(|(name, obs)| SubjectPart {
            subject: name,
            obs,
            prior_score,
        }),
        domain,
        signals,
    }
}

/// The question for the subject's owner of a risk request (the source's owner is asked about
/// `req.source_ip`).
pub fn subject_query(req: &RiskRequest) -> SubjectQuery {
    SubjectQuery {
        subject: req.subject.clone(),
        device: req.device.clone(),
        network: Network::of(req.source_ip),
    }
}
