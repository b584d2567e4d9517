//! The gather at the origin shard of a threat check or risk assessment whose keyed parts went
//! to other owners: ticket → what is known so far and how many parts are still out. The
//! answer is rendered when the last part is in, whatever order the parts arrive in.
//!
//! Bounds: a gather exists only for a ticket that `owned.rs` holds in flight (opened right
//! after its first remote part was sent, dropped with it), so there are at most
//! `MAX_OWNED_IN_FLIGHT` per shard, each with at most [`MAX_PARTS`] parts out. A part that
//! never returns leaves its ticket to the runtime's deferred timeout (`503`); `expire` then
//! forgets the gather the same second `owned.rs` forgets the ticket.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::plane::OwnedResult;
use crate::security::{Signal, SourceFacts, SubjectFacts};
use crate::shard::Ticket;

/// Most parts of one event (source, subject, e-mail domain).
pub const MAX_PARTS: usize = 3;

/// What a gather has collected.
#[derive(Debug, Clone, PartialEq)]
pub enum Gathered {
    /// A threat check: the signals so far (the stateless ones and the local parts' first).
    Threat {
        /// `event` index (for the metrics).
        event: usize,
        /// Signals collected.
        signals: Vec<Signal>,
        /// The address a `block` applies to.
        source: Option<IpAddr>,
    },
    /// A risk assessment: the owners' facts as they come in.
    Risk {
        /// The requested scopes.
        scopes: Vec<String>,
        /// The subject owner's facts, once in.
        subject: Option<SubjectFacts>,
        /// The source owner's facts, once in.
        source: Option<SourceFacts>,
    },
}

impl Gathered {
    /// Folds one owner's answer in; false when it does not belong to this kind of gather.
    pub fn absorb(&mut self, result: OwnedResult) -> bool {
        match (self, result) {
            (Gathered::Threat { signals, .. }, OwnedResult::Threat(more)) => {
                signals.extend(more);
                true
            }
            (Gathered::Risk { subject, .. }, OwnedResult::RiskSubject(facts)) => {
                *subject = Some(facts);
                true
            }
            (Gathered::Risk { source, .. }, OwnedResult::RiskSource(facts)) => {
                *source = Some(facts);
                true
            }
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Pending {
    outstanding: usize,
    since_s: u64,
    gathered: Gathered,
}

/// One shard's open gathers.
#[derive(Debug, Default)]
pub struct Gathers {
    pending: HashMap<Ticket, Pending>,
    /// Answers that matched no open gather of their kind (late, or a bug).
    pub n_stray: u64,
}

impl Gathers {
    /// Waits for `outstanding` (1 to [`MAX_PARTS`]) more parts under `ticket`.
    pub fn open(&mut self, ticket: Ticket, gathered: Gathered, outstanding: usize, now_s: u64) {
        debug_assert!((1..=MAX_PARTS).contains(&outstanding));
        let pending = Pending {
            outstanding,
            since_s: now_s,
            gathered,
        };
        let replaced = self.pending.insert(ticket, pending);
        debug_assert!(replaced.is_none(), "tickets are unique per shard");
    }

    /// One part of `ticket` is in: `Some(everything)` when it was the last.
    pub fn add(&mut self, ticket: Ticket, result: OwnedResult) -> Option<Gathered> {
        let Some(pending) = self.pending.get_mut(&ticket) else {
            self.n_stray += 1;
            return None;
        };
        if !pending.gathered.absorb(result) {
            self.n_stray += 1;
            return None;
        }
        pending.outstanding = pending.outstanding.saturating_sub(1);
        if pending.outstanding > 0 {
            return None;
        }
        self.pending.remove(&ticket).map(|p| p.gathered)
    }

    /// Forgets gathers older than `timeout_s`: the runtime answered them `503` already.
    pub fn expire(&mut self, now_s: u64, timeout_s: u64) {
        self.pending
            .retain(|_, p| p.since_s.saturating_add(timeout_s) >= now_s);
    }

    /// Open gathers.
    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::{Signal, SignalKind};

    fn signal(kind: SignalKind) -> Signal {
        Signal {
            kind,
            evidence: kind.name().to_owned(),
            weight: 0.5,
        }
    }

    fn kinds(g: &Gathered) -> Vec<SignalKind> {
        let Gathered::Threat { signals, .. } = g else {
            panic!("{g:?}")
        };
        let mut kinds: Vec<SignalKind> = signals.iter().map(|s| s.kind).collect();
        kinds.sort();
        kinds
    }

    /// A local part's signals are in at open; two remote parts complete it in either order,
    /// and only the last one does.
    #[test]
    fn a_local_part_and_two_remote_parts_complete_in_any_order() {
        let local = vec![signal(SignalKind::PromptInjection)];
        let remote = [
            OwnedResult::Threat(vec![signal(SignalKind::CredentialStuffing)]),
            OwnedResult::Threat(vec![signal(SignalKind::MfaPushBombing)]),
        ];
        for order in [[0, 1], [1, 0]] {
            let mut g = Gathers::default();
            let open = Gathered::Threat {
                event: 0,
                signals: local.clone(),
                source: None,
            };
            g.open(7, open, 2, 100);
            g.open(
                8,
                Gathered::Threat {
                    event: 0,
                    signals: Vec::new(),
                    source: None,
                },
                1,
                100,
            );
            assert_eq!(g.add(7, remote[order[0]].clone()), None, "one still out");
            let done = g.add(7, remote[order[1]].clone()).expect("complete");
            assert_eq!(
                kinds(&done),
                [
                    SignalKind::CredentialStuffing,
                    SignalKind::MfaPushBombing,
                    SignalKind::PromptInjection
                ]
            );
            assert_eq!(g.len(), 1, "the other ticket is untouched");
            assert_eq!(
                g.add(7, remote[0].clone()),
                None,
                "a late duplicate is stray"
            );
            assert_eq!(g.n_stray, 1);
        }
    }

    #[test]
    fn risk_facts_arrive_out_of_order_and_a_wrong_kind_is_stray() {
        let mut g = Gathers::default();
        let open = Gathered::Risk {
            scopes: vec!["admin".into()],
            subject: None,
            source: None,
        };
        g.open(1, open, 2, 0);
        let source = SourceFacts {
            failures: 3,
            threat_score: 0.5,
            blocks: 1,
        };
        assert_eq!(g.add(1, OwnedResult::Threat(Vec::new())), None);
        assert_eq!(
            g.n_stray, 1,
            "a threat answer does not count for a risk gather"
        );
        assert_eq!(g.add(1, OwnedResult::RiskSource(source)), None);
        let subject = SubjectFacts {
            failures: 2,
            ..SubjectFacts::default()
        };
        let done = g.add(1, OwnedResult::RiskSubject(subject)).unwrap();
        assert_eq!(
            done,
            Gathered::Risk {
                scopes: vec!["admin".into()],
                subject: Some(subject),
                source: Some(source),
            }
        );
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn expired_gathers_are_forgotten_and_their_late_parts_are_stray() {
        let mut g = Gathers::default();
        let open = || Gathered::Threat {
            event: 1,
            signals: Vec::new(),
            source: None,
        };
        g.open(1, open(), 1, 10);
        g.open(2, open(), 3, 20);
        g.expire(41, 30);
        assert_eq!(g.len(), 1, "20 + 30 ≥ 41: still waited for");
        assert_eq!(g.add(1, OwnedResult::Threat(Vec::new())), None);
        assert_eq!(g.n_stray, 1, "ticket 1 timed out");
        g.expire(51, 30);
        assert_eq!(g.len(), 0, "the runtime answered it 503 already");
    }
}
