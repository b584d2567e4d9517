//! Every record in plain in-memory form: what `snapshot()` returns and what a follower gets by
//! applying the feed to it.
//!
//! This is the reference form, not a request-path index: the permissions, vault and revocation
//! mirrors the control plane hands to shards are built from it (or from the same ops) in the
//! shape each lookup needs.

use std::collections::BTreeMap;

use super::{Channel, Op, RevocationKey, Tuple, VaultEntry, VaultKey};

/// All live records at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Relationships and their optional expiry.
    pub tuples: BTreeMap<Tuple, Option<u64>>,
    /// Sealed vault entries.
    pub vault: BTreeMap<VaultKey, VaultEntry>,
    /// Channels by id.
    pub channels: BTreeMap<String, Channel>,
    /// Revocations and until when they hold.
    pub revocations: BTreeMap<RevocationKey, u64>,
    /// The server's own small values.
    pub meta: BTreeMap<String, Vec<u8>>,
}

impl State {
    /// Applies the effective ops of one change, in order. Feed ops already took effect in the
    /// store, so each is applied as it says: no expiry or version rules here.
    pub fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            self.apply_one(op);
        }
    }

    fn apply_one(&mut self, op: &Op) {
        match op {
            Op::WriteTuple {
                tuple,
                expires_at_s,
            } => {
                self.tuples.insert(tuple.clone(), *expires_at_s);
            }
            Op::DeleteTuple { tuple } => {
                self.tuples.remove(tuple);
            }
            Op::PutVault { key, entry } => {
                self.vault.insert(key.clone(), entry.clone());
            }
            Op::DeleteVault { key } => {
                self.vault.remove(key);
            }
            Op::CreateChannel { id, channel } => {
                self.channels.insert(id.clone(), channel.clone());
            }
            Op::DeleteChannel { id } => {
                self.channels.remove(id);
            }
            Op::Revoke { key, exp_s } => {
                self.revocations.insert(key.clone(), *exp_s);
            }
            Op::ExpireRevocation { key } => {
                self.revocations.remove(key);
            }
            Op::PutMeta { key, value } => {
                self.meta.insert(key.clone(), value.clone());
            }
            Op::DeleteMeta { key } => {
                self.meta.remove(key);
            }
        }
    }

    /// Records held, all kinds together.
    pub fn n_records(&self) -> usize {
        self.tuples.len()
            + self.vault.len()
            + self.channels.len()
            + self.revocations.len()
            + self.meta.len()
    }
}
