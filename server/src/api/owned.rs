//! Work on state owned by one shard, for requests that arrive on any shard: the shard that
//! owns a key (a rate-limit key today; a source address, a subject or an email domain next)
//! is `owner_of(key)`. A request on the owner is answered at once; elsewhere its response is
//! deferred (a ticket), the work goes to the owner's inbox as `ShardMsg::Owned`, and the
//! owner pushes `ShardMsg::OwnedDone` back, which completes the ticket. A request whose work
//! has several keys (a threat check: source, subject, e-mail domain) sends one part per
//! remote owner under the same ticket and gathers the answers (`gather.rs`).
//!
//! Bounds: at most `MAX_OWNED_IN_FLIGHT` deferred tickets per shard wait for owners (beyond
//! it, and when the owner's edge is full, the request is answered `503` at once); an owner
//! whose reply edge is full keeps at most `MAX_OWNED_BACKLOG` replies and sends them from
//! background work, never blocking its loop. A reply lost beyond that bound leaves the
//! origin's ticket to the runtime's deferred timeout (`503`).

use std::collections::{HashMap, VecDeque};

use crate::plane::{OwnedResult, OwnedWork, ShardMsg};
use crate::shard::mesh::Outbox;
use crate::shard::Ticket;

/// Deferred tickets per shard waiting for an owner's answer.
pub const MAX_OWNED_IN_FLIGHT: usize = 4096;
/// Replies per shard held back because the origin's edge was full.
pub const MAX_OWNED_BACKLOG: usize = 4096;

/// Where a keyed request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This shard owns the key: answer at once.
    Local,
    /// Shard `owner` does: send it the work.
    Remote {
        /// The owner's index.
        owner: usize,
    },
}

/// Where work on `key` is done when it arrives on shard `idx` of `n_shards`.
pub fn route(key: &[u8], idx: usize, n_shards: usize) -> Route {
    let owner = crate::ratelimit::owner_of(key, n_shards);
    if owner == idx {
        Route::Local
    } else {
        Route::Remote { owner }
    }
}

/// The work could not be handed to its owner (too many in flight, or the edge is full):
/// answer `503` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A ticket waiting for its owner's answer.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    keep_alive: bool,
    since_s: u64,
}

/// One shard's side of owned work: tickets it waits on, replies it owes.
#[derive(Default)]
pub struct Owned {
    in_flight: HashMap<Ticket, InFlight>,
    backlog: VecDeque<(usize, ShardMsg)>,
    /// Work sent to another shard's owner.
    pub n_sent: u64,
    /// Work done here for another shard.
    pub n_served: u64,
    /// Requests answered 503 because the work could not be sent.
    pub n_busy: u64,
    /// Replies dropped because the backlog was full (their origins time out).
    pub n_lost: u64,
}

impl Owned {
    /// Origin side: hands `work` to shard `owner` under `ticket` (already deferred).
    pub fn send(
        &mut self,
        outbox: &mut Outbox<ShardMsg>,
        owner: usize,
        ticket: Ticket,
        keep_alive: bool,
        now_s: u64,
        work: OwnedWork,
    ) -> Result<(), Busy> {
        let crate::shard::mesh::Sender::Shard(origin) = outbox.sender() else {
            return Err(Busy); // only a shard's outbox has responses to defer
        };
        debug_assert_ne!(origin, owner, "local work is answered at once");
        if self.in_flight.len() >= MAX_OWNED_IN_FLIGHT {
            self.n_busy += 1;
            return Err(Busy);
        }
        let msg = ShardMsg::Owned {
            origin,
            ticket,
            work,
        };
        if outbox.send(owner, msg).is_err() {
            self.n_busy += 1;
            return Err(Busy);
        }
        self.n_sent += 1;
        let waiting = InFlight {
            keep_alive,
            since_s: now_s,
        };
        let replaced = self.in_flight.insert(ticket, waiting);
        debug_assert!(replaced.is_none(), "tickets are unique per shard");
        Ok(())
    }

    /// Origin side: hands one more part of `ticket`'s work to shard `owner`, after a first
    /// part went through [`Owned::send`] (the ticket counts once against the in-flight bound;
    /// a threat check has at most three parts).
    pub fn send_also(
        &mut self,
        outbox: &mut Outbox<ShardMsg>,
        owner: usize,
        ticket: Ticket,
        work: OwnedWork,
    ) -> Result<(), Busy> {
        let crate::shard::mesh::Sender::Shard(origin) = outbox.sender() else {
            return Err(Busy);
        };
        debug_assert!(self.in_flight.contains_key(&ticket), "send first");
        let msg = ShardMsg::Owned {
            origin,
            ticket,
            work,
        };
        if outbox.send(owner, msg).is_err() {
            self.n_busy += 1;
            return Err(Busy);
        }
        self.n_sent += 1;
        Ok(())
    }

    /// Origin side: the owner answered `ticket`; `Some(keep_alive)` unless it is not (or no
    /// longer) waited for.
    pub fn complete(&mut self, ticket: Ticket) -> Option<bool> {
        self.in_flight.remove(&ticket).map(|w| w.keep_alive)
    }

    /// Owner side: sends `result` back to `origin`, or keeps it for `flush` when that edge is
    /// full.
    pub fn reply(
        &mut self,
        outbox: &mut Outbox<ShardMsg>,
        origin: usize,
        ticket: Ticket,
        result: OwnedResult,
    ) {
        self.n_served += 1;
        let msg = ShardMsg::OwnedDone { ticket, result };
        if !self.backlog.is_empty() {
            self.hold(origin, msg); // keep the order of replies to one origin
            return;
        }
        if let Err(msg) = outbox.send(origin, msg) {
            self.hold(origin, msg);
        }
    }

    fn hold(&mut self, origin: usize, msg: ShardMsg) {
        if self.backlog.len() >= MAX_OWNED_BACKLOG {
            self.n_lost += 1;
            return;
        }
        self.backlog.push_back((origin, msg));
    }

    /// Background: sends held replies while their edges have room; true while some remain.
    pub fn flush(&mut self, outbox: &mut Outbox<ShardMsg>) -> bool {
        while let Some((origin, msg)) = self.backlog.pop_front() {
            if let Err(msg) = outbox.send(origin, msg) {
                self.backlog.push_front((origin, msg));
                return true;
            }
        }
        false
    }

    /// Forgets tickets older than `timeout_s`: the runtime answered them `503` already.
    pub fn expire(&mut self, now_s: u64, timeout_s: u64) {
        self.in_flight
            .retain(|_, w| w.since_s.saturating_add(timeout_s) >= now_s);
    }

    /// Tickets waiting for owners.
    pub fn n_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Replies held for full edges.
    pub fn n_backlog(&self) -> usize {
        self.backlog.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{KeyLimiter, KeyRule};
    use crate::shard::mesh::{Inbox, Mesh};

    /// One in-process shard: its end of the mesh, its owned-work state and its key limiter.
    struct Shard {
        idx: usize,
        outbox: Outbox<ShardMsg>,
        inbox: Inbox<ShardMsg>,
        owned: Owned,
        limiter: KeyLimiter,
        next_ticket: Ticket,
        /// Answers that came back: ticket → allowed.
        answered: Vec<(Ticket, bool)>,
    }

    impl Shard {
        /// What `ShardApp` does with a check: at once when local, else to the owner.
        fn check(&mut self, key: &str, now_ms: u64) -> Option<bool> {
            let n_shards = self.outbox.n_shards();
            match route(key.as_bytes(), self.idx, n_shards) {
                Route::Local => Some(self.limiter.check(key, 1, now_ms).unwrap().decision.allowed),
                Route::Remote { owner } => {
                    self.next_ticket += 1;
                    let work = OwnedWork::Rate {
                        key: key.to_owned(),
                        cost: 1,
                    };
                    let sent = self.owned.send(
                        &mut self.outbox,
                        owner,
                        self.next_ticket,
                        true,
                        now_ms / 1000,
                        work,
                    );
                    assert_eq!(sent, Ok(()));
                    None
                }
            }
        }

        /// What `ShardApp::on_message` does with owned work and answers.
        fn pump(&mut self, now_ms: u64) {
            while let Some(msg) = self.inbox.recv() {
                match msg {
                    ShardMsg::Owned {
                        origin,
                        ticket,
                        work: OwnedWork::Rate { key, cost },
                    } => {
                        let result = OwnedResult::Rate(self.limiter.check(&key, cost, now_ms));
                        self.owned.reply(&mut self.outbox, origin, ticket, result);
                    }
                    ShardMsg::OwnedDone {
                        ticket,
                        result: OwnedResult::Rate(verdict),
                    } => {
                        assert_eq!(self.owned.complete(ticket), Some(true));
                        self.answered
                            .push((ticket, verdict.unwrap().decision.allowed));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(!self.owned.flush(&mut self.outbox));
        }
    }

    fn shards(n_shards: usize, rules: &[KeyRule]) -> Vec<Shard> {
        let mesh = Mesh::<ShardMsg>::build(n_shards).unwrap();
        mesh.shards
            .into_iter()
            .enumerate()
            .map(|(idx, (outbox, inbox))| Shard {
                idx,
                outbox,
                inbox,
                owned: Owned::default(),
                limiter: KeyLimiter::new(rules, 64),
                next_ticket: 0,
                answered: Vec::new(),
            })
            .collect()
    }

    /// Checks of one key arriving on every shard of a real mesh, the owner deciding: never
    /// more than `burst + rate·t` allowed in total, for 2 and 4 shards.
    #[test]
    fn n_shards_over_the_mesh_never_allow_more_than_the_limit() {
        let rules = [KeyRule {
            key_prefix: "login:".into(),
            rate_per_s: 10.0,
            burst: 20,
            shadow: false,
        }];
        for n_shards in [2usize, 4] {
            let mut shards = shards(n_shards, &rules);
            let (mut n_allowed, mut n_answered, mut n_asked) = (0u64, 0usize, 0usize);
            for now_ms in (0..2_000u64).step_by(10) {
                for i in 0..n_shards * 2 {
                    let shard = &mut shards[(i + now_ms as usize) % n_shards];
                    n_asked += 1;
                    if let Some(allowed) = shard.check("login:alice", now_ms) {
                        n_answered += 1;
                        n_allowed += u64::from(allowed);
                    }
                }
                // Owners then origins drain their inboxes within the same millisecond.
                for _ in 0..2 {
                    for shard in &mut shards {
                        shard.pump(now_ms);
                    }
                }
                for shard in &mut shards {
                    n_answered += shard.answered.len();
                    n_allowed += shard.answered.drain(..).filter(|&(_, a)| a).count() as u64;
                }
                let bound = 20 + (10 * now_ms) / 1000;
                assert!(
                    n_allowed <= bound,
                    "{n_shards} shards: {n_allowed} > {bound}"
                );
            }
            assert_eq!(n_answered, n_asked, "every check answered");
            assert!(n_allowed >= 20 + 19, "and the rate is granted: {n_allowed}");
            let hops: u64 = shards.iter().map(|s| s.owned.n_sent).sum();
            assert!(hops > 0, "some checks crossed the mesh");
            assert!(shards.iter().all(|s| s.owned.n_in_flight() == 0));
        }
    }

    #[test]
    fn a_full_edge_holds_replies_in_order_and_in_flight_is_bounded() {
        let mut shards = shards(2, &[]);
        let (a, b) = shards.split_at_mut(1);
        let (s0, s1) = (&mut a[0], &mut b[0]);
        // Fill shard 1 → shard 0's edge.
        let mut n_filled = 0;
        while s1
            .outbox
            .send(
                0,
                ShardMsg::OwnedDone {
                    ticket: 0,
                    result: OwnedResult::Rate(Err(crate::ratelimit::CostError::Zero)),
                },
            )
            .is_ok()
        {
            n_filled += 1;
        }
        for ticket in 1..=3 {
            let result = OwnedResult::Rate(Err(crate::ratelimit::CostError::Zero));
            s1.owned.reply(&mut s1.outbox, 0, ticket, result);
        }
        assert_eq!(s1.owned.n_backlog(), 3);
        assert!(s1.owned.flush(&mut s1.outbox), "still full");
        for _ in 0..n_filled {
            s0.inbox.recv().unwrap();
        }
        assert!(!s1.owned.flush(&mut s1.outbox), "sent once there is room");
        let tickets: Vec<Ticket> = std::iter::from_fn(|| s0.inbox.recv())
            .map(|m| match m {
                ShardMsg::OwnedDone { ticket, .. } => ticket,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(tickets, [1, 2, 3]);

        let mut owned = Owned::default();
        for ticket in 0..MAX_OWNED_IN_FLIGHT as u64 {
            owned.in_flight.insert(
                ticket,
                InFlight {
                    keep_alive: false,
                    since_s: 0,
                },
            );
        }
        let work = OwnedWork::Rate {
            key: "k".into(),
            cost: 1,
        };
        assert_eq!(
            owned.send(&mut s0.outbox, 1, 9999, false, 0, work),
            Err(Busy)
        );
        owned.expire(100, 30);
        assert_eq!(
            owned.n_in_flight(),
            0,
            "the runtime answered those long ago"
        );
    }
}
