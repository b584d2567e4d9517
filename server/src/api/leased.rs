//! Global rate limits on a shard (fleet mode): which checks are answered from this shard's
//! leases, which wait for the lease thread, and what each waiting check gets when the grant
//! arrives. Decision code: no I/O, `now_ms` injected; `ratecheck.rs` sends the asks and
//! renders the answers.
//!
//! A check of a key with no ask in flight is answered from the key's lease (`LeaseTable::take`)
//! or becomes the first waiter of one ask for the lease's next size. Further checks of that
//! key wait behind it (at most [`MAX_LEASE_WAITERS_PER_KEY`] per key and [`MAX_LEASE_WAITERS`]
//! per shard; beyond, they are answered `Unavailable`, i.e. by the fail mode). When the grant
//! arrives the first waiter takes its cost from it, then every other waiter in order from the
//! lease, until one needs another ask. With `lease_ms = 0` there is no lease: every check is
//! its own ask of exactly its cost, and answers come back in ask order.

use std::collections::{HashMap, VecDeque};

use crate::fleet::lease::{Granted, LeaseTable, Take};
use crate::plane::LeaseGrant;
use crate::shard::Ticket;

/// Checks of one key waiting for a grant on one shard.
pub const MAX_LEASE_WAITERS_PER_KEY: usize = 256;
/// Checks waiting for grants on one shard, over every key.
pub const MAX_LEASE_WAITERS: usize = 4096;

/// A deferred check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    /// Its deferred response.
    pub ticket: Ticket,
    /// Keep the connection open after it.
    pub keep_alive: bool,
    /// Units it asks for.
    pub cost: u32,
}

/// What a check gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Admitted; `remaining` units are known to be left (this lease, plus the shared budget
    /// when the answer came from Redis just now).
    Allowed {
        /// Units known left.
        remaining: u32,
    },
    /// Refused: the shared budget cannot cover the cost now.
    Denied {
        /// Milliseconds until a unit is back (0 when Redis did not say).
        retry_after_ms: u64,
    },
    /// Redis unreachable, the lease queue full, a bound reached, or a grant too late: the
    /// caller answers by the fail mode.
    Unavailable,
}

/// An ask to send to the lease thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Its id, handed back in the answer.
    pub ask_id: u64,
    /// Units to ask for.
    pub want: u32,
}

/// What a new check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Answer it now.
    Now(Answer),
    /// Defer it; send `ask` when there is one (else it waits on an ask in flight).
    Wait {
        /// The ask to send.
        ask: Option<Ask>,
    },
}

/// A waiter and the ask that answers it (`lease_ms = 0`: its own; else the key's).
#[derive(Debug, Clone, Copy)]
struct Queued {
    waiter: Waiter,
    ask_id: u64,
    since_ms: u64,
}

/// One key's ask in flight and the checks waiting on it.
#[derive(Debug)]
struct Pending {
    /// The newest ask sent for this key.
    ask_id: u64,
    /// When it was sent: its grant is spendable until `asked_at_ms + lease_ms`.
    asked_at_ms: u64,
    /// The newest ask was sent again because a grant came back too late.
    retried_late: bool,
    waiters: VecDeque<Queued>,
}

/// Counters of one shard's global limits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LeasedCounts {
    /// Asks handed to the lease thread.
    pub requests: u64,
    /// Units Redis granted to this shard.
    pub units: u64,
    /// Checks answered by the fail mode.
    pub unavailable: u64,
    /// Grants that came back later than `lease_ms` after their ask (admitted nothing).
    pub late: u64,
}

/// One shard's global rate limits: its leases and the checks waiting for grants.
pub struct Leased {
    /// `None` with `lease_ms = 0` (one ask per check).
    table: Option<LeaseTable>,
    /// Per rule index: key → ask in flight.
    pending: Vec<HashMap<Box<str>, Pending>>,
    n_waiters: usize,
    next_ask_id: u64,
    /// Counters.
    pub counts: LeasedCounts,
}

impl Leased {
    /// For key rules with these `bursts` (by rule index); leases valid `lease_ms` (0: none),
    /// at most `max_keys` leased keys.
    pub fn new(bursts: &[u32], lease_ms: u64, max_keys: usize) -> Leased {
        let max_keys = max_keys.clamp(1, crate::fleet::lease::MAX_LEASED_KEYS);
        Leased {
            table: (lease_ms > 0).then(|| LeaseTable::new(bursts, lease_ms, max_keys)),
            pending: bursts.iter().map(|_| HashMap::new()).collect(),
            n_waiters: 0,
            next_ask_id: 0,
            counts: LeasedCounts::default(),
        }
    }

    /// Checks waiting now.
    pub fn n_waiters(&self) -> usize {
        self.n_waiters
    }

    /// Leased keys held now.
    pub fn n_leased_keys(&self) -> usize {
        self.table.as_ref().map_or(0, LeaseTable::len)
    }

    fn new_ask(&mut self, want: u32) -> Ask {
        self.next_ask_id += 1;
        self.counts.requests += 1;
        Ask {
            ask_id: self.next_ask_id,
            want,
        }
    }

    fn unavailable(&mut self) -> Check {
        self.counts.unavailable += 1;
        Check::Now(Answer::Unavailable)
    }

    /// A check of `waiter.cost` (≥ 1, ≤ the rule's burst) units of `key` under rule `rule`.
    pub fn check(&mut self, rule: usize, key: &str, waiter: Waiter, now_ms: u64) -> Check {
        debug_assert!(waiter.cost >= 1);
        let per_rtt = self.table.is_none();
        if let Some(n_waiting) = self.pending[rule].get(key).map(|p| p.waiters.len()) {
            if n_waiting >= MAX_LEASE_WAITERS_PER_KEY || self.n_waiters >= MAX_LEASE_WAITERS {
                return self.unavailable();
            }
            let ask = per_rtt.then(|| self.new_ask(waiter.cost));
            let Some(p) = self.pending[rule].get_mut(key) else {
                return self.unavailable();
            };
            let ask_id = ask.map_or(p.ask_id, |a| a.ask_id);
            p.ask_id = ask_id;
            p.waiters.push_back(Queued {
                waiter,
                ask_id,
                since_ms: now_ms,
            });
            self.n_waiters += 1;
            return Check::Wait { ask };
        }
        let want = match &mut self.table {
            Some(table) => match table.take(rule, key, waiter.cost, now_ms) {
                Take::Allowed { remaining } => return Check::Now(Answer::Allowed { remaining }),
                Take::NeedLease { want } => want,
            },
            None => waiter.cost,
        };
        if self.n_waiters >= MAX_LEASE_WAITERS {
            return self.unavailable();
        }
        let ask = self.new_ask(want);
        let mut waiters = VecDeque::with_capacity(1);
        waiters.push_back(Queued {
            waiter,
            ask_id: ask.ask_id,
            since_ms: now_ms,
        });
        self.pending[rule].insert(
            Box::from(key),
            Pending {
                ask_id: ask.ask_id,
                asked_at_ms: now_ms,
                retried_late: false,
                waiters,
            },
        );
        self.n_waiters += 1;
        Check::Wait { ask: Some(ask) }
    }

    /// The ask just returned by `check` or `answered` for `key` could not be sent (the lease
    /// queue is full): the checks that waited on it, to be answered by the fail mode.
    pub fn ask_failed(&mut self, rule: usize, key: &str) -> Vec<Waiter> {
        let failed: Vec<Waiter> = match self.pending[rule].get_mut(key) {
            None => Vec::new(),
            Some(p) if self.table.is_none() => {
                // One ask per check: only the newest check waited on it.
                p.waiters.pop_back().into_iter().map(|q| q.waiter).collect()
            }
            Some(p) => p.waiters.drain(..).map(|q| q.waiter).collect(),
        };
        self.forget_if_empty(rule, key);
        self.n_waiters -= failed.len();
        self.counts.unavailable += failed.len() as u64;
        if !failed.is_empty() {
            self.counts.requests -= 1; // it never reached the lease thread
        }
        failed
    }

    fn forget_if_empty(&mut self, rule: usize, key: &str) {
        if self.pending[rule]
            .get(key)
            .is_some_and(|p| p.waiters.is_empty())
        {
            self.pending[rule].remove(key);
        }
    }

    /// The lease thread answered ask `ask_id` for `key` (`grant: None`: Redis unreachable).
    /// Returns the checks answered now, in order, and the next ask to send for the checks
    /// still waiting (if any).
    pub fn answered(
        &mut self,
        rule: usize,
        key: &str,
        ask_id: u64,
        grant: Option<LeaseGrant>,
        now_ms: u64,
    ) -> (Vec<(Waiter, Answer)>, Option<Ask>) {
        if let Some(g) = grant {
            self.counts.units += u64::from(g.granted);
        }
        let Some(p) = self.pending.get_mut(rule).and_then(|m| m.get_mut(key)) else {
            return (Vec::new(), None); // its checks timed out; the units expire unused
        };
        let (done, next) = match &mut self.table {
            None => (answer_in_order(p, ask_id, grant), None),
            Some(_) if p.ask_id != ask_id => (Vec::new(), None), // stale: a newer ask is out
            Some(table) => {
                let mut asks = Asks {
                    next_ask_id: &mut self.next_ask_id,
                    counts: &mut self.counts,
                };
                answer_from_lease(table, p, (rule, key), grant, now_ms, &mut asks)
            }
        };
        self.n_waiters -= done.len();
        self.counts.unavailable += done
            .iter()
            .filter(|(_, a)| *a == Answer::Unavailable)
            .count() as u64;
        self.forget_if_empty(rule, key);
        (done, next)
    }

    /// Forgets checks deferred before `now_ms - timeout_ms`: the runtime answered them `503`.
    pub fn expire(&mut self, now_ms: u64, timeout_ms: u64) {
        let mut n_dropped = 0;
        for map in &mut self.pending {
            map.retain(|_, p| {
                let before = p.waiters.len();
                p.waiters
                    .retain(|q| q.since_ms.saturating_add(timeout_ms) >= now_ms);
                n_dropped += before - p.waiters.len();
                !p.waiters.is_empty()
            });
        }
        self.n_waiters -= n_dropped;
    }
}

/// Hands out ask ids (and counts the asks).
struct Asks<'a> {
    next_ask_id: &'a mut u64,
    counts: &'a mut LeasedCounts,
}

impl Asks<'_> {
    fn ask(&mut self, want: u32) -> Ask {
        *self.next_ask_id += 1;
        self.counts.requests += 1;
        Ask {
            ask_id: *self.next_ask_id,
            want,
        }
    }
}

/// `lease_ms = 0`: one ask per check, answered in ask order; older asks without an answer
/// (none, unless the thread lost one) go by the fail mode.
fn answer_in_order(
    p: &mut Pending,
    ask_id: u64,
    grant: Option<LeaseGrant>,
) -> Vec<(Waiter, Answer)> {
    let mut done = Vec::new();
    while let Some(q) = p.waiters.front().copied() {
        if q.ask_id > ask_id {
            break;
        }
        p.waiters.pop_front();
        let answer = match grant {
            Some(g) if q.ask_id == ask_id => exact(g, q.waiter.cost),
            _ => Answer::Unavailable,
        };
        done.push((q.waiter, answer));
    }
    done
}

/// Lease mode: the answer to the key's ask in flight. The first waiter takes its cost from
/// the grant, the others from the lease in order, until one needs another ask.
fn answer_from_lease(
    table: &mut LeaseTable,
    p: &mut Pending,
    (rule, key): (usize, &str),
    grant: Option<LeaseGrant>,
    now_ms: u64,
    asks: &mut Asks<'_>,
) -> (Vec<(Waiter, Answer)>, Option<Ask>) {
    let asked_at_ms = p.asked_at_ms;
    let Some(first) = p.waiters.pop_front() else {
        return (Vec::new(), None);
    };
    let late = grant.is_some() && table.is_late(asked_at_ms, now_ms);
    if late {
        asks.counts.late += 1;
    }
    if late && !p.retried_late {
        // Redis was slower than a lease once: its units expired unused (they only
        // under-admit); ask once more before the fail mode decides.
        p.waiters.push_front(first);
        p.retried_late = true;
        let ask = asks.ask(first.waiter.cost);
        p.ask_id = ask.ask_id;
        p.asked_at_ms = now_ms;
        return (Vec::new(), Some(ask));
    }
    p.retried_late = false;
    let first_answer = match grant {
        None => Answer::Unavailable,
        Some(g) => {
            match table.grant(rule, key, first.waiter.cost, g.granted, asked_at_ms, now_ms) {
                Granted::Allowed { remaining } => Answer::Allowed {
                    remaining: remaining.saturating_add(g.remaining),
                },
                Granted::Denied => Answer::Denied {
                    retry_after_ms: g.retry_after_ms,
                },
                Granted::Late => Answer::Unavailable,
            }
        }
    };
    let mut done = vec![(first.waiter, first_answer)];
    // Nothing granted (or no answer in time): the others would get the same now.
    let same_for_all = match first_answer {
        Answer::Unavailable => true,
        Answer::Denied { .. } => grant.is_some_and(|g| g.granted == 0),
        Answer::Allowed { .. } => false,
    };
    while let Some(q) = p.waiters.front().copied() {
        let answer = if same_for_all {
            first_answer
        } else {
            match table.take(rule, key, q.waiter.cost, now_ms) {
                Take::Allowed { remaining } => Answer::Allowed { remaining },
                Take::NeedLease { want } => {
                    let ask = asks.ask(want);
                    p.ask_id = ask.ask_id;
                    p.asked_at_ms = now_ms;
                    return (done, Some(ask));
                }
            }
        };
        p.waiters.pop_front();
        done.push((q.waiter, answer));
    }
    (done, None)
}

/// A grant of exactly one check's cost (`lease_ms = 0`).
fn exact(g: LeaseGrant, cost: u32) -> Answer {
    if g.granted >= cost {
        Answer::Allowed {
            remaining: g.remaining,
        }
    } else {
        // A partial grant's units are lost: they only ever under-admit.
        Answer::Denied {
            retry_after_ms: g.retry_after_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The bookkeeping driven by an injected clock and hand-made grants.

    use super::*;

    const RULE: usize = 0;

    fn w(ticket: Ticket, cost: u32) -> Waiter {
        Waiter {
            ticket,
            keep_alive: true,
            cost,
        }
    }

    #[allow(
        clippy::unnecessary_wraps,
        reason = "answers carry an Option; None is Redis down"
    )]
    fn grant(granted: u32) -> Option<LeaseGrant> {
        Some(LeaseGrant {
            granted,
            retry_after_ms: if granted == 0 { 700 } else { 0 },
            remaining: 5,
        })
    }

    fn ask_of(c: Check) -> Ask {
        match c {
            Check::Wait { ask: Some(ask) } => ask,
            other => panic!("expected an ask, got {other:?}"),
        }
    }

    #[test]
    fn checks_wait_on_one_ask_per_key_then_spend_the_grant_in_order() {
        let mut l = Leased::new(&[100], 50, 16);
        let a = ask_of(l.check(RULE, "k", w(1, 1), 0));
        assert_eq!(a.want, 1);
        // While it is in flight, checks of the same key wait without asking again.
        assert_eq!(l.check(RULE, "k", w(2, 1), 1), Check::Wait { ask: None });
        assert_eq!(l.check(RULE, "k", w(3, 2), 1), Check::Wait { ask: None });
        // Another key asks for itself.
        let other = ask_of(l.check(RULE, "j", w(4, 1), 1));
        assert_ne!(other.ask_id, a.ask_id);
        assert_eq!(l.n_waiters(), 4);
        // Four units: the first takes 1, the second 1, the third 2.
        let (done, next) = l.answered(RULE, "k", a.ask_id, grant(4), 2);
        let tickets: Vec<Ticket> = done.iter().map(|(w, _)| w.ticket).collect();
        assert_eq!(tickets, [1, 2, 3]);
        assert_eq!(done[0].1, Answer::Allowed { remaining: 3 + 5 });
        assert!(done
            .iter()
            .all(|(_, a)| matches!(a, Answer::Allowed { .. })));
        assert_eq!(next, None);
        assert_eq!(l.n_waiters(), 1);
        // The lease is used up: the next check asks again (for a larger lease).
        let again = ask_of(l.check(RULE, "k", w(5, 1), 3));
        assert_eq!(again.want, 2, "the lease size doubled");
        assert_eq!(l.counts.requests, 3);
        assert_eq!(l.counts.units, 4);
    }

    #[test]
    fn waiters_beyond_the_grant_ask_again_and_a_stale_answer_is_ignored() {
        let mut l = Leased::new(&[100], 50, 16);
        let a = ask_of(l.check(RULE, "k", w(1, 1), 0));
        l.check(RULE, "k", w(2, 3), 0);
        let (done, next) = l.answered(RULE, "k", a.ask_id, grant(2), 1);
        assert_eq!(done.len(), 1, "the second check needs 3, one unit is left");
        let next = next.expect("another ask for the second check");
        assert!(next.want >= 2);
        // An answer to the old ask again (a duplicate) changes nothing.
        let (done, _) = l.answered(RULE, "k", a.ask_id, grant(9), 2);
        assert!(done.is_empty());
        let (done, _) = l.answered(RULE, "k", next.ask_id, grant(next.want), 3);
        assert_eq!(
            done,
            [(
                w(2, 3),
                Answer::Allowed {
                    remaining: next.want - 2 + 5
                }
            )]
        );
        assert_eq!(l.n_waiters(), 0);
    }

    #[test]
    fn an_empty_budget_denies_every_waiter_and_redis_down_answers_all_by_the_fail_mode() {
        let mut l = Leased::new(&[100], 50, 16);
        let a = ask_of(l.check(RULE, "k", w(1, 1), 0));
        l.check(RULE, "k", w(2, 1), 0);
        let (done, next) = l.answered(RULE, "k", a.ask_id, grant(0), 1);
        assert_eq!(next, None);
        assert_eq!(
            done.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
            [Answer::Denied {
                retry_after_ms: 700
            }; 2]
        );
        let b = ask_of(l.check(RULE, "k", w(3, 1), 2));
        l.check(RULE, "k", w(4, 1), 2);
        let (done, _) = l.answered(RULE, "k", b.ask_id, None, 3);
        assert_eq!(
            done.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
            [Answer::Unavailable; 2]
        );
        assert_eq!(l.counts.unavailable, 2);
        // A grant that arrives after its lease would have expired admits nothing: the check
        // asks once more, and a second late grant leaves it to the fail mode.
        let c = ask_of(l.check(RULE, "k", w(5, 1), 100));
        let (done, again) = l.answered(RULE, "k", c.ask_id, grant(3), 150);
        assert!(done.is_empty());
        let again = again.expect("asked again");
        let (done, next) = l.answered(RULE, "k", again.ask_id, grant(3), 200);
        assert_eq!((done, next), (vec![(w(5, 1), Answer::Unavailable)], None));
        assert_eq!(l.counts.late, 2);
        // A retry in time admits.
        let d = ask_of(l.check(RULE, "k", w(6, 1), 300));
        let (_, again) = l.answered(RULE, "k", d.ask_id, grant(3), 360);
        let again = again.expect("asked again");
        let (done, _) = l.answered(RULE, "k", again.ask_id, grant(3), 370);
        assert!(
            matches!(done[..], [(_, Answer::Allowed { .. })]),
            "{done:?}"
        );
    }

    #[test]
    fn the_waits_are_bounded_and_a_full_queue_fails_every_waiter_of_that_ask() {
        let mut l = Leased::new(&[100], 50, 16);
        let a = ask_of(l.check(RULE, "k", w(0, 1), 0));
        for t in 1..MAX_LEASE_WAITERS_PER_KEY as u64 {
            assert_eq!(l.check(RULE, "k", w(t, 1), 0), Check::Wait { ask: None });
        }
        assert_eq!(
            l.check(RULE, "k", w(9999, 1), 0),
            Check::Now(Answer::Unavailable)
        );
        assert_eq!(l.counts.unavailable, 1);
        // The ask could not be queued: every check waiting on it goes by the fail mode.
        let failed = l.ask_failed(RULE, "k");
        assert_eq!(failed.len(), MAX_LEASE_WAITERS_PER_KEY);
        assert_eq!(l.n_waiters(), 0);
        let (done, _) = l.answered(RULE, "k", a.ask_id, grant(5), 1);
        assert!(done.is_empty(), "nobody waits any more");
        // Checks waiting longer than the timeout are forgotten.
        ask_of(l.check(RULE, "x", w(1, 1), 1_000));
        l.expire(30_000, 30_000);
        assert_eq!(l.n_waiters(), 1);
        l.expire(31_001, 30_000);
        assert_eq!(l.n_waiters(), 0);
    }

    #[test]
    fn without_leases_every_check_is_one_ask_for_exactly_its_cost() {
        let mut l = Leased::new(&[100], 0, 16);
        let a = ask_of(l.check(RULE, "k", w(1, 2), 0));
        let b = ask_of(l.check(RULE, "k", w(2, 3), 0));
        assert_eq!((a.want, b.want), (2, 3));
        let (done, next) = l.answered(RULE, "k", a.ask_id, grant(2), 1);
        assert_eq!(done, [(w(1, 2), Answer::Allowed { remaining: 5 })]);
        assert_eq!(next, None);
        // A partial grant denies (its units are lost, never admitted).
        let (done, _) = l.answered(RULE, "k", b.ask_id, grant(1), 1);
        assert_eq!(done, [(w(2, 3), Answer::Denied { retry_after_ms: 0 })]);
        // Nothing is kept between checks.
        let c = ask_of(l.check(RULE, "k", w(3, 1), 2));
        assert_eq!(c.want, 1);
        assert_eq!(l.n_leased_keys(), 0);
        // A full queue fails only the check whose ask it was.
        l.check(RULE, "k", w(4, 1), 2);
        assert_eq!(l.ask_failed(RULE, "k"), [w(4, 1)]);
        let (done, _) = l.answered(RULE, "k", c.ask_id, grant(1), 3);
        assert_eq!(done.len(), 1);
    }
}
