//! The storage seam: one `Store` trait for every durable record, and its embedded engine.
//!
//! The control plane owns the store (and is its only user). It submits batches of `Op`s; each
//! batch is applied atomically with ONE durable commit (group commit: many requests, one
//! fsync) and, when it changed anything, gets the next revision. Every committed batch is also
//! appended to an ordered change feed, so a follower — the in-memory mirrors the control plane
//! builds for the shards today, another node through a shared engine later — catches up with
//! `snapshot()` and then `changes_since(snapshot.revision)`.
//!
//! Architecture Invariant: the store is never read on a shard's request path. Shards read
//! mirrors the control plane builds from the snapshot and the feed.
//! Architecture Invariant: only changes that took effect enter the feed (an idempotent rewrite,
//! a shorter revocation or an already expired record does not), so a follower applies the
//! feed blindly (`State::apply`) and reaches exactly the store's state.
//!
//! `embedded.rs` is the redb engine (`<data_dir>/subzero.redb`) and `tables.rs` its tables and
//! how each op changes them; `codec.rs` the change log's binary encoding; `state.rs` the plain
//! in-memory form of all records; `limits.rs` the size rules; `migrate.rs` the import of the
//! old flat `revocations.log`.

mod codec;
mod embedded;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod migrate;
mod state;
mod tables;
#[cfg(test)]
mod tests;

pub use embedded::{RedbStore, StoreOptions, STORE_FILE};
pub use error::{LimitError, StoreError};
pub use limits::{
    check_batch, MAX_BATCH_BYTES, MAX_BATCH_OPS, MAX_FIELD_BYTES, MAX_META_VALUE_BYTES,
    MAX_SEALED_BYTES,
};
pub use migrate::{import_revocation_log, Imported, IMPORTED_SUFFIX, REVOCATION_LOG};
pub use state::State;

/// Encodes a batch of ops in the change log's engine-neutral form (what a fleet feed entry
/// carries).
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(codec::HEADER_BYTES + ops.iter().map(codec::encoded_len).sum::<usize>());
    codec::begin(&mut out);
    for op in ops {
        codec::encode(op, &mut out);
    }
    codec::finish(&mut out, ops.len());
    out
}

/// Decodes what `encode_ops` wrote; `revision` only names the batch in errors.
pub fn decode_ops(bytes: &[u8], revision: u64) -> Result<Vec<Op>, StoreError> {
    codec::decode(bytes, revision)
}

/// A Zanzibar relationship `object#relation@subject` (`doc:1#viewer@group:eng#member`). The
/// store keeps the three parts as given; their syntax belongs to the permissions module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    /// `type:id` of the resource.
    pub object: String,
    /// Relation name on the object.
    pub relation: String,
    /// `type:id`, `type:*` or a userset `type:id#relation`.
    pub subject: String,
}

/// Where a vault entry lives: the caller's namespace (its authenticated `iss` and `sub`, as
/// the vault module encodes them) and the entry's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VaultKey {
    /// The owner's namespace.
    pub namespace: String,
    /// The entry's name inside it.
    pub name: String,
}

/// A vault entry as stored: already sealed (encrypted) by the vault module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultEntry {
    /// Nonce, ciphertext and tag; never plaintext.
    pub sealed: Vec<u8>,
    /// Chosen by the writer; a put must carry a version above the stored one.
    pub version: u64,
    /// Unix seconds after which the entry is gone; `None` keeps it until deleted.
    pub expires_at_s: Option<u64>,
}

/// A cross-app channel: the two tokens bound to it and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// `jti`s of the app's and the agent's token.
    pub jtis: [String; 2],
    /// Unix seconds; the channel is purged after it.
    pub expires_at_s: u64,
}

/// A revocation's key. Keyed by issuer too, so a token of another issuer that happens to carry
/// the same `jti` can never revoke (or un-revoke) one of ours.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevocationKey {
    /// `iss` of the revoked token.
    pub iss: String,
    /// `jti` of the revoked token.
    pub jti: String,
}

/// One change, as submitted in a batch and as replayed from the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Creates or replaces a relationship (a new expiry replaces the old one).
    WriteTuple {
        /// The relationship.
        tuple: Tuple,
        /// Unix seconds after which it no longer holds; `None`: until deleted.
        expires_at_s: Option<u64>,
    },
    /// Removes a relationship.
    DeleteTuple {
        /// The relationship.
        tuple: Tuple,
    },
    /// Creates or replaces a vault entry.
    PutVault {
        /// Owner and name.
        key: VaultKey,
        /// Sealed bytes, version, expiry.
        entry: VaultEntry,
    },
    /// Removes a vault entry.
    DeleteVault {
        /// Owner and name.
        key: VaultKey,
    },
    /// Creates a channel; an id already in use is left as it is (`Unchanged`).
    CreateChannel {
        /// The channel id (random, chosen by the caller).
        id: String,
        /// Its tokens and expiry.
        channel: Channel,
    },
    /// Removes a channel. Its tokens fail only once revoked: put the two `Revoke`s in the
    /// same batch, so the deletion and the revocations commit together.
    DeleteChannel {
        /// The channel id.
        id: String,
    },
    /// Revokes a token until `exp_s`; a held revocation is only ever lengthened.
    Revoke {
        /// Issuer and `jti`.
        key: RevocationKey,
        /// Until when (the token's `exp` plus the leeway).
        exp_s: u64,
    },
    /// A revocation dropped because its token expired. Written by `purge_expired` only: a
    /// batch carrying it is refused (`LimitError::Reserved`), so nothing un-revokes a token.
    ExpireRevocation {
        /// Issuer and `jti`.
        key: RevocationKey,
    },
    /// Sets a small key/value of the server's own (the last applied fleet stream id, ...).
    PutMeta {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Removes a meta key.
    DeleteMeta {
        /// Key.
        key: String,
    },
}

/// What one op of a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Took effect; it is in the feed under the batch's revision.
    Applied,
    /// Nothing to do: the record already says this (or the deleted record is absent, a
    /// revocation is held at least as long, a channel id is taken).
    Unchanged,
    /// Not stored: its expiry is not after the batch's `now_s`.
    Expired,
    /// Not stored: a vault put whose version is not above the stored entry's.
    Stale,
}

/// The result of one batch: its revision and what each op did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The batch's revision when it changed anything; otherwise the current revision (no new
    /// revision, no commit). Either way, state at this revision includes the whole batch.
    pub revision: u64,
    /// One per submitted op.
    pub outcomes: Vec<Outcome>,
}

/// One committed batch of the change feed: every op that took effect, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The batch's revision.
    pub revision: u64,
    /// Its effective ops.
    pub ops: Vec<Op>,
}

/// Every live record at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The revision the state is at.
    pub revision: u64,
    /// The records.
    pub state: State,
}

/// What one `purge_expired` call removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Records removed (each is a delete op in the feed).
    pub n_records: usize,
    /// The purge batch's revision (the current one when nothing was removed).
    pub revision: u64,
    /// More expired records remain: call again (the control plane does so on its next tick).
    pub more: bool,
}

/// Durable state behind one seam. The control plane owns one `Box<dyn Store>` and is its only
/// caller; the engine is chosen at start (embedded redb today; a shared Redis/Valkey engine
/// later, where the feed is a Redis Stream and the revision its sequence).
///
/// Object-safe on purpose: the engine is a start-up choice from the config, and a virtual call
/// per batch is nothing next to the fsync it stands for, while a generic control plane would be
/// compiled once per engine and leak the choice into its type.
pub trait Store: Send {
    /// Applies `ops` in order, atomically, with one durable commit; returns only once the
    /// commit is durable (or with an error, in which case nothing of the batch was applied).
    /// `now_s` decides which records are already expired. A batch that changes nothing is not
    /// committed and gets no new revision. Limits: `check_batch`.
    fn write(&mut self, ops: &[Op], now_s: u64) -> Result<Committed, StoreError>;

    /// The newest committed revision (0 for an empty store).
    fn revision(&self) -> u64;

    /// Committed batches with a revision above `after`, oldest first, at most `limit`.
    /// `StoreError::Trimmed` when some of them were already trimmed from the feed (take a
    /// snapshot instead); `StoreError::Ahead` when `after` is beyond the newest revision.
    fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError>;

    /// Every live record and the revision they are at, read consistently.
    fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Removes up to `max_records` records whose expiry is at or before `now_s`, oldest expiry
    /// first, as one batch (one revision, one commit) of delete ops in the feed.
    fn purge_expired(&mut self, now_s: u64, max_records: usize) -> Result<Purged, StoreError>;

    /// Drops feed batches up to and including `through` (every follower has applied them).
    /// Returns the new oldest start a follower may catch up from. The engine also trims on its
    /// own past its configured retention.
    fn trim_changes(&mut self, through: u64) -> Result<u64, StoreError>;

    /// The engine's shared side when other nodes write to the same records (the fleet's
    /// Redis engine); `None` for an engine this node owns alone.
    fn shared(&mut self) -> Option<&mut dyn Shared> {
        None
    }
}

/// What a store shared with other nodes adds: the control plane pulls their changes, learns
/// which ones were applied (to update its mirrors and the shards), and publishes events that
/// are not records (blocks, public keys).
pub trait Shared {
    /// Reads and applies, in feed order, what other nodes committed since this node last
    /// applied. Fails when the shared engine is unreachable (the node keeps its state).
    fn pull(&mut self, now_s: u64) -> Result<(), StoreError>;

    /// Appends an event that is not a record; applied here like any other entry (so it shows
    /// up in `take_applied`, in feed order).
    fn publish(&mut self, event: FeedEvent, now_s: u64) -> Result<(), StoreError>;

    /// What was applied since the last call, in feed order: other nodes' record changes and
    /// every node's events (this node's own record changes are the caller's to mirror).
    fn take_applied(&mut self) -> Vec<Applied>;

    /// Once a second: durability of the local copy, snapshots, gauges.
    fn tick(&mut self, now_s: u64);

    /// Renders the engine's `/metrics` lines.
    fn render_metrics(&self, out: &mut String);
}

/// An event of the shared feed that is not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// Block a CIDR in every node's kernel gate until `until_unix_s` (`None`: until removed).
    Block {
        /// The CIDR.
        cidr: String,
        /// Unix seconds.
        until_unix_s: Option<u64>,
        /// `manual`, `rate`, `threat`.
        reason: String,
    },
    /// Lift a block everywhere.
    Unblock {
        /// The CIDR.
        cidr: String,
    },
    /// A node's whole public JWKS (`{"keys":[...]}`).
    Keys {
        /// The node.
        node: String,
        /// The JWKS JSON.
        jwks: String,
    },
}

/// One applied entry of the shared feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Another node's records that took effect here, under the fleet revision.
    Records {
        /// The change (effective ops only).
        change: Change,
        /// This node wrote in the same step, after this change: mirrors updated by that
        /// write were computed without it, and must be rebuilt from the store.
        interleaved: bool,
    },
    /// An event (from any node, this one included).
    Event(FeedEvent),
}
