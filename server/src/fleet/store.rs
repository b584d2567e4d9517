//! `FleetStore`: the `Store` of a node in a fleet. Redis's Stream is the record; the local
//! redb file is this node's copy of it, with the position it has applied.
//!
//! A write appends one entry (one Lua script: revision, `XADD`, and every entry between this
//! node's position and the new one), then applies those entries in feed order to the local
//! copy and answers from its own. So every node applies the same entries in the same order,
//! and a write is acknowledged only once Redis accepted it and this node applied it.
//!
//! Architecture Invariant: the local copy changes only by applying feed entries in revision
//! order, each exactly once (its revision and Stream id commit with its records); a gap in the
//! revisions means the feed was trimmed past this node, which then loads the snapshot.
//! Architecture Invariant: local commits skip the sync (Redis holds the record); `tick`
//! syncs once a second. A crash loses at most the local tail, which the feed gives back.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::conn::Link;
use super::feed::{self, Entry, Kind, StreamId};
use super::FleetGauges;
use crate::config::FleetConfig;
use crate::store::{
    Applied, Change, Committed, FeedEvent, Op, Outcome, Purged, RedbStore, Shared, Snapshot, State,
    Store, StoreError,
};

/// Meta keys of the local copy: the Stream id and revision last applied.
pub const META_STREAM_ID: &str = "fleet.stream_id";
/// See [`META_STREAM_ID`].
pub const META_REV: &str = "fleet.rev";

/// Ops per local commit when a snapshot is loaded.
const SNAPSHOT_SLICE_OPS: usize = 512;

/// Most feed reads one `pull` makes before it lets the control plane do other work.
const MAX_READS_PER_PULL: usize = 16;

/// The position applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    rev: u64,
    id: StreamId,
}

/// A node's store in a fleet.
pub struct FleetStore {
    local: RedbStore,
    link: Link,
    node: String,
    at: Cursor,
    applied: Vec<Applied>,
    gauges: Arc<FleetGauges>,
    snapshot_every: u64,
    /// Newest snapshot revision this node published or saw.
    snapshot_rev: u64,
    /// Local commits since the last sync.
    dirty: bool,
    /// The initial load (snapshot, keys, blocks) is done.
    joined: bool,
}

fn unavailable(link: &Link) -> StoreError {
    StoreError::Unavailable(
        link.last_error
            .clone()
            .unwrap_or_else(|| "not connected".into()),
    )
}

fn redis_failed(e: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl FleetStore {
    /// Wraps this node's local copy; reads its position from it. Does not touch Redis: the
    /// first `pull` (at start, before the shards run) joins the fleet.
    pub fn new(
        mut local: RedbStore,
        config: &FleetConfig,
        node: String,
        gauges: Arc<FleetGauges>,
    ) -> Result<FleetStore, StoreError> {
        local.set_durable(false);
        let meta = local.snapshot()?.state.meta;
        let at = Cursor {
            rev: meta
                .get(META_REV)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0),
            id: meta
                .get(META_STREAM_ID)
                .and_then(|v| StreamId::parse(v))
                .unwrap_or_default(),
        };
        gauges.applied_rev.store(at.rev, Ordering::Relaxed);
        Ok(FleetStore {
            local,
            link: Link::new(config, None),
            node,
            at,
            applied: Vec::new(),
            gauges,
            snapshot_every: config.snapshot_every,
            snapshot_rev: 0,
            dirty: false,
            joined: false,
        })
    }

    /// Drops the queued record changes, keeping events (keys, blocks): at start the mirrors
    /// are built from the store after the first pull, so only the events remain to apply.
    pub fn keep_events_only(&mut self) {
        self.applied.retain(|a| matches!(a, Applied::Event(_)));
    }

    /// The Stream id last applied (where the tailing thread starts).
    pub fn stream_id(&self) -> StreamId {
        self.at.id
    }

    /// Applies one entry to the local copy and moves the cursor; returns the outcomes of its
    /// records (empty for an event).
    fn apply(&mut self, entry: &Entry, now_s: u64) -> Result<Vec<Outcome>, StoreError> {
        let mut ops = match &entry.kind {
            Kind::Records(ops) => ops.clone(),
            _ => Vec::new(),
        };
        let n_records = ops.len();
        let cursor = [
            Op::PutMeta {
                key: META_STREAM_ID.into(),
                value: entry.id.to_string().into_bytes(),
            },
            Op::PutMeta {
                key: META_REV.into(),
                value: entry.rev.to_string().into_bytes(),
            },
        ];
        let mut committed = if n_records + cursor.len() <= crate::store::MAX_BATCH_OPS {
            ops.extend(cursor);
            self.local.write(&ops, now_s)?
        } else {
            // A full batch: records, then the cursor. A crash between the two replays the
            // entry, whose ops are idempotent (a rewrite is `Unchanged`, a put `Stale`).
            let committed = self.local.write(&ops, now_s)?;
            self.local.write(&cursor, now_s)?;
            committed
        };
        committed.outcomes.truncate(n_records);
        self.at = Cursor {
            rev: entry.rev,
            id: entry.id,
        };
        self.dirty = true;
        self.gauges.applied_rev.store(entry.rev, Ordering::Relaxed);
        Ok(committed.outcomes)
    }

    /// Applies `entries` (oldest first) past the cursor. `own` is the id of the entry this
    /// node is writing in this step: its outcomes are returned, everything else is queued for
    /// the control plane. A gap loads the snapshot first.
    fn apply_all(
        &mut self,
        entries: &[Entry],
        own: Option<StreamId>,
        now_s: u64,
    ) -> Result<Option<Vec<Outcome>>, StoreError> {
        let mut own_outcomes = None;
        for entry in entries {
            if entry.rev <= self.at.rev {
                continue; // applied already (a write's range, then the tail's wake-up)
            }
            if entry.rev > self.at.rev + 1 {
                self.load_snapshot(entry.rev, now_s)?;
                if entry.rev <= self.at.rev {
                    continue;
                }
            }
            let outcomes = self.apply(entry, now_s)?;
            if Some(entry.id) == own {
                own_outcomes = Some(outcomes);
                continue;
            }
            match &entry.kind {
                Kind::Records(ops) => {
                    let effective = ops
                        .iter()
                        .zip(&outcomes)
                        .filter(|(_, o)| **o == Outcome::Applied)
                        .map(|(op, _)| op.clone())
                        .collect::<Vec<_>>();
                    if !effective.is_empty() {
                        self.applied.push(Applied::Records {
                            change: Change {
                                revision: entry.rev,
                                ops: effective,
                            },
                            interleaved: own.is_some(),
                        });
                    }
                }
                Kind::Block(b) => self.applied.push(Applied::Event(FeedEvent::Block {
                    cidr: b.cidr.clone(),
                    until_unix_s: b.until_unix_s,
                    reason: b.reason.clone(),
                })),
                Kind::Unblock { cidr } => self
                    .applied
                    .push(Applied::Event(FeedEvent::Unblock { cidr: cidr.clone() })),
                Kind::Keys { node, jwks } => self.applied.push(Applied::Event(FeedEvent::Keys {
                    node: node.clone(),
                    jwks: jwks.clone(),
                })),
            }
        }
        Ok(own_outcomes)
    }

    /// Replaces the local records with the fleet's snapshot (the feed was trimmed past this
    /// node, or it joins late). Needs a snapshot at least at `before_rev - 1`.
    fn load_snapshot(&mut self, before_rev: u64, now_s: u64) -> Result<(), StoreError> {
        let Some(reply) = self.link.call(feed::get_snapshot) else {
            return Err(unavailable(&self.link));
        };
        let snap = reply.map_err(|e| redis_failed(&e))??;
        let Some(snap) = snap.filter(|s| s.rev + 1 >= before_rev) else {
            return Err(StoreError::Corrupt(format!(
                "fleet feed: revisions {}..{before_rev} are gone and no snapshot covers them",
                self.at.rev + 1
            )));
        };
        let mut target = State::default();
        target.apply(&snap.ops);
        let current = self.local.snapshot()?.state;
        let mut ops = diff(&current, &target);
        let n_records = ops.len();
        ops.push(Op::PutMeta {
            key: META_STREAM_ID.into(),
            value: snap.id.to_string().into_bytes(),
        });
        ops.push(Op::PutMeta {
            key: META_REV.into(),
            value: snap.rev.to_string().into_bytes(),
        });
        // A snapshot can be larger than one batch may be: applied in slices small enough for
        // the batch limits even of the largest vault entries (512 × 17 KiB < 32 MiB), the
        // cursor last.
        let metas = ops.split_off(n_records);
        for slice in ops.chunks(SNAPSHOT_SLICE_OPS) {
            self.local.write(slice, now_s)?;
        }
        self.local.write(&metas, now_s)?;
        tracing::info!(
            from = self.at.rev,
            to = snap.rev,
            n_changed = n_records,
            "fleet: loaded the snapshot"
        );
        self.at = Cursor {
            rev: snap.rev,
            id: snap.id,
        };
        self.snapshot_rev = self.snapshot_rev.max(snap.rev);
        self.dirty = true;
        self.gauges.applied_rev.store(snap.rev, Ordering::Relaxed);
        self.gauges.snapshots_loaded.fetch_add(1, Ordering::Relaxed);
        self.applied.push(Applied::Records {
            change: Change {
                revision: snap.rev,
                ops: Vec::new(),
            },
            interleaved: true,
        });
        Ok(())
    }

    /// First contact: every node's keys and the fleet's blocks (these live in hashes, so a
    /// node that loads the snapshot or joins after a trim still gets them).
    fn join(&mut self) -> Result<(), StoreError> {
        let Some(keys) = self.link.call(feed::all_keys) else {
            return Err(unavailable(&self.link));
        };
        let keys = keys.map_err(|e| redis_failed(&e))?;
        let Some(blocks) = self.link.call(feed::all_blocks) else {
            return Err(unavailable(&self.link));
        };
        let blocks = blocks.map_err(|e| redis_failed(&e))?;
        for (node, jwks) in keys {
            self.applied
                .push(Applied::Event(FeedEvent::Keys { node, jwks }));
        }
        for b in blocks {
            self.applied.push(Applied::Event(FeedEvent::Block {
                cidr: b.cidr,
                until_unix_s: b.until_unix_s,
                reason: b.reason,
            }));
        }
        self.joined = true;
        Ok(())
    }

    /// Appends `kind` and applies everything up to it; returns its revision and outcomes.
    fn append(&mut self, kind: &Kind, now_s: u64) -> Result<(u64, Vec<Outcome>), StoreError> {
        if !self.joined {
            self.pull(now_s)?;
        }
        let (node, after) = (self.node.clone(), self.at.id);
        let Some(reply) = self
            .link
            .call(|conn| feed::append(conn, &node, kind, after))
        else {
            self.gauges.writes_refused.fetch_add(1, Ordering::Relaxed);
            return Err(unavailable(&self.link));
        };
        let appended = match reply {
            Ok(appended) => appended?,
            Err(e) => {
                self.gauges.writes_refused.fetch_add(1, Ordering::Relaxed);
                return Err(redis_failed(&e));
            }
        };
        let mut entries = appended.entries;
        let mut outcomes = self.apply_all(&entries, Some(appended.id), now_s)?;
        // The range is capped: read on until this node's own entry is applied.
        while outcomes.is_none() {
            let after = self.at.id;
            if after >= appended.id || entries.is_empty() {
                break;
            }
            let Some(reply) = self.link.call(|conn| feed::range_after(conn, after)) else {
                return Err(unavailable(&self.link));
            };
            entries = reply.map_err(|e| redis_failed(&e))??;
            outcomes = self.apply_all(&entries, Some(appended.id), now_s)?;
        }
        let outcomes = outcomes.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "fleet feed: this node's entry {} was not read back",
                appended.id
            ))
        })?;
        Ok((appended.rev, outcomes))
    }
}

/// The ops that turn `current`'s records into `target`'s. Revocations are only added or
/// lengthened: one the target lacks has expired, and the purge drops it here too.
fn diff(current: &State, target: &State) -> Vec<Op> {
    let mut ops = Vec::new();
    for tuple in current.tuples.keys() {
        if !target.tuples.contains_key(tuple) {
            ops.push(Op::DeleteTuple {
                tuple: tuple.clone(),
            });
        }
    }
    for (tuple, &expires_at_s) in &target.tuples {
        if current.tuples.get(tuple) != Some(&expires_at_s) {
            ops.push(Op::WriteTuple {
                tuple: tuple.clone(),
                expires_at_s,
            });
        }
    }
    for key in current.vault.keys() {
        if !target.vault.contains_key(key) {
            ops.push(Op::DeleteVault { key: key.clone() });
        }
    }
    for (key, entry) in &target.vault {
        if current.vault.get(key) != Some(entry) {
            // A put must carry a version above the stored one: delete first when it does not.
            if current
                .vault
                .get(key)
                .is_some_and(|c| c.version >= entry.version)
            {
                ops.push(Op::DeleteVault { key: key.clone() });
            }
            ops.push(Op::PutVault {
                key: key.clone(),
                entry: entry.clone(),
            });
        }
    }
    for id in current.channels.keys() {
        if !target.channels.contains_key(id) {
            ops.push(Op::DeleteChannel { id: id.clone() });
        }
    }
    for (id, channel) in &target.channels {
        if current.channels.get(id) != Some(channel) {
            ops.push(Op::CreateChannel {
                id: id.clone(),
                channel: channel.clone(),
            });
        }
    }
    for (key, &exp_s) in &target.revocations {
        if current.revocations.get(key).is_none_or(|&c| c < exp_s) {
            ops.push(Op::Revoke {
                key: key.clone(),
                exp_s,
            });
        }
    }
    ops
}

/// The records of `state` as ops that recreate them (a snapshot's body).
fn state_ops(state: &State) -> Vec<Op> {
    let mut ops = Vec::with_capacity(state.n_records());
    ops.extend(state.tuples.iter().map(|(t, &e)| Op::WriteTuple {
        tuple: t.clone(),
        expires_at_s: e,
    }));
    ops.extend(state.vault.iter().map(|(k, e)| Op::PutVault {
        key: k.clone(),
        entry: e.clone(),
    }));
    ops.extend(state.channels.iter().map(|(id, c)| Op::CreateChannel {
        id: id.clone(),
        channel: c.clone(),
    }));
    ops.extend(state.revocations.iter().map(|(k, &exp_s)| Op::Revoke {
        key: k.clone(),
        exp_s,
    }));
    ops
}

impl Store for FleetStore {
    fn write(&mut self, ops: &[Op], now_s: u64) -> Result<Committed, StoreError> {
        crate::store::check_batch(ops)?;
        let (revision, outcomes) = self.append(&Kind::Records(ops.to_vec()), now_s)?;
        Ok(Committed { revision, outcomes })
    }

    fn revision(&self) -> u64 {
        self.at.rev
    }

    fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.local.changes_since(after, limit)
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut snapshot = self.local.snapshot()?;
        snapshot.revision = self.at.rev;
        Ok(snapshot)
    }

    fn purge_expired(&mut self, now_s: u64, max_records: usize) -> Result<Purged, StoreError> {
        // Every node drops expired records by the same rule; nothing of this enters the feed.
        let mut purged = self.local.purge_expired(now_s, max_records)?;
        purged.revision = self.at.rev;
        Ok(purged)
    }

    fn trim_changes(&mut self, through: u64) -> Result<u64, StoreError> {
        self.local.trim_changes(through)
    }

    fn shared(&mut self) -> Option<&mut dyn Shared> {
        Some(self)
    }
}

impl Shared for FleetStore {
    fn pull(&mut self, now_s: u64) -> Result<(), StoreError> {
        if !self.joined {
            self.join()?;
        }
        for _ in 0..MAX_READS_PER_PULL {
            let after = self.at.id;
            let Some(reply) = self.link.call(|conn| feed::range_after(conn, after)) else {
                return Err(unavailable(&self.link));
            };
            let entries = reply.map_err(|e| redis_failed(&e))??;
            if entries.is_empty() {
                break;
            }
            let n = entries.len();
            self.apply_all(&entries, None, now_s)?;
            if n < feed::MAX_READ {
                break;
            }
        }
        Ok(())
    }

    fn publish(&mut self, event: FeedEvent, now_s: u64) -> Result<(), StoreError> {
        let kind = match event {
            FeedEvent::Block {
                cidr,
                until_unix_s,
                reason,
            } => Kind::Block(feed::BlockEntry {
                cidr,
                until_unix_s,
                reason,
            }),
            FeedEvent::Unblock { cidr } => Kind::Unblock { cidr },
            FeedEvent::Keys { node, jwks } => Kind::Keys { node, jwks },
        };
        let event = match &kind {
            Kind::Block(b) => FeedEvent::Block {
                cidr: b.cidr.clone(),
                until_unix_s: b.until_unix_s,
                reason: b.reason.clone(),
            },
            Kind::Unblock { cidr } => FeedEvent::Unblock { cidr: cidr.clone() },
            Kind::Keys { node, jwks } => FeedEvent::Keys {
                node: node.clone(),
                jwks: jwks.clone(),
            },
            Kind::Records(_) => unreachable!("events only"),
        };
        self.append(&kind, now_s)?;
        // The own entry's outcomes are returned, not queued: queue the event in its place.
        self.applied.push(Applied::Event(event));
        Ok(())
    }

    fn take_applied(&mut self) -> Vec<Applied> {
        std::mem::take(&mut self.applied)
    }

    fn tick(&mut self, _now_s: u64) {
        self.gauges
            .connected
            .store(self.link.is_up(), Ordering::Relaxed);
        if self.dirty {
            match self.local.flush() {
                Ok(()) => self.dirty = false,
                Err(e) => tracing::warn!(error = %e, "fleet: cannot sync the local copy"),
            }
        }
        if self.at.rev >= self.snapshot_rev + self.snapshot_every {
            let state = match self.local.snapshot() {
                Ok(s) => s.state,
                Err(e) => {
                    tracing::warn!(error = %e, "fleet: cannot read the local copy for a snapshot");
                    return;
                }
            };
            let ops = state_ops(&state);
            let (rev, id) = (self.at.rev, self.at.id);
            if let Some(Ok(stored)) = self
                .link
                .call(|conn| feed::put_snapshot(conn, rev, id, &ops))
            {
                self.snapshot_rev = rev;
                if stored {
                    self.gauges
                        .snapshots_published
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        rev,
                        n_records = ops.len(),
                        "fleet: snapshot published, feed trimmed before it"
                    );
                }
            }
        }
    }

    fn render_metrics(&self, out: &mut String) {
        self.gauges.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::{diff, state_ops};
    use crate::store::{Op, RevocationKey, State, Tuple, VaultEntry, VaultKey};

    fn tuple(o: &str) -> Tuple {
        Tuple {
            object: o.into(),
            relation: "viewer".into(),
            subject: "user:a".into(),
        }
    }

    #[test]
    fn a_diff_applied_to_the_current_state_gives_the_target() {
        let mut current = State::default();
        current.apply(&[
            Op::WriteTuple {
                tuple: tuple("doc:1"),
                expires_at_s: None,
            },
            Op::WriteTuple {
                tuple: tuple("doc:2"),
                expires_at_s: None,
            },
            Op::PutVault {
                key: VaultKey {
                    namespace: "n".into(),
                    name: "x".into(),
                },
                entry: VaultEntry {
                    sealed: vec![1],
                    version: 5,
                    expires_at_s: None,
                },
            },
        ]);
        let mut target = State::default();
        target.apply(&[
            Op::WriteTuple {
                tuple: tuple("doc:2"),
                expires_at_s: Some(9),
            },
            Op::PutVault {
                key: VaultKey {
                    namespace: "n".into(),
                    name: "x".into(),
                },
                entry: VaultEntry {
                    sealed: vec![2],
                    version: 3,
                    expires_at_s: None,
                },
            },
            Op::Revoke {
                key: RevocationKey {
                    iss: "i".into(),
                    jti: "j".into(),
                },
                exp_s: 7,
            },
        ]);
        let mut got = current.clone();
        got.apply(&diff(&current, &target));
        assert_eq!(got, target);
        let mut rebuilt = State::default();
        rebuilt.apply(&state_ops(&target));
        assert_eq!(rebuilt, target);
    }
}
