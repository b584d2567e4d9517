//! The messages between shards and the control plane: what crosses the mesh and the control
//! channel, and nothing else.
//!
//! `api/` (the shards' application) and `control/` (the control plane) both depend on this
//! module and not on each other. The control plane answers with typed [`ControlReply`] values;
//! only `api/` turns them into HTTP.

use std::sync::Arc;

use ed25519_dalek::SigningKey;

use crate::auth::{Claims, TokenError, Verifier};
use crate::gate::BlockReason;
use crate::shard::Ticket;

/// Key material a shard needs; rebuilt by the control plane on rotation and retirement.
pub struct KeySnapshot {
    /// Current signing key.
    pub signing_key: SigningKey,
    /// Its kid.
    pub kid: String,
    /// `GET /.well-known/jwks.json` body.
    pub jwks_json: String,
    /// Verifier over every live key plus trusted issuers.
    pub verifier: Verifier,
    /// Kids that still verify.
    pub kids: Vec<String>,
}

impl std::fmt::Debug for KeySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySnapshot")
            .field("kid", &self.kid)
            .field("kids", &self.kids)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused: the verifier's reason, or a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Format, signature or claims.
    Token(TokenError),
    /// The `jti` is on the denylist.
    Revoked,
}

impl Denial {
    /// OAuth `error_description`.
    pub fn description(&self) -> &'static str {
        match self {
            Denial::Token(e) => e.description(),
            Denial::Revoked => "token has been revoked",
        }
    }
}

/// One token's verdict as it crosses the mesh.
pub type Verdict = Result<Claims, Denial>;

/// The revoked tokens a shard (and the control plane) mirrors: by `jti`, then issuer, until
/// when. A lookup borrows the token's claims; nothing is allocated on the request path.
#[derive(Debug, Default, Clone)]
pub struct Denylist {
    by_jti: std::collections::HashMap<String, Vec<(String, u64)>>,
    n_entries: usize,
}

impl Denylist {
    /// Whether `(iss, jti)` is revoked.
    pub fn contains(&self, iss: &str, jti: &str) -> bool {
        self.by_jti
            .get(jti)
            .is_some_and(|issuers| issuers.iter().any(|(i, _)| i == iss))
    }

    /// Revokes `(iss, jti)` until `exp_s`; a held entry is only ever lengthened.
    pub fn insert(&mut self, iss: String, jti: String, exp_s: u64) {
        let issuers = self.by_jti.entry(jti).or_default();
        match issuers.iter_mut().find(|(i, _)| *i == iss) {
            Some((_, held)) => *held = (*held).max(exp_s),
            None => {
                issuers.push((iss, exp_s));
                self.n_entries += 1;
            }
        }
    }

    /// Drops entries whose tokens have expired.
    pub fn retain_live(&mut self, now_s: u64) {
        let mut n_entries = 0;
        self.by_jti.retain(|_, issuers| {
            issuers.retain(|&(_, exp_s)| exp_s > now_s);
            n_entries += issuers.len();
            !issuers.is_empty()
        });
        self.n_entries = n_entries;
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.n_entries
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.n_entries == 0
    }
}

/// Longest accepted `jti`.
pub const MAX_JTI_BYTES: usize = 256;

/// Whether `jti` is an acceptable revocation key: 1 to `MAX_JTI_BYTES` printable ASCII
/// characters (no spaces, so it fits one field of a log record).
pub fn valid_jti(jti: &str) -> bool {
    !jti.is_empty() && jti.len() <= MAX_JTI_BYTES && jti.bytes().all(|b| b.is_ascii_graphic())
}

/// Where the control plane's answer goes: a deferred response on one shard. Opaque to the
/// control plane, which hands it back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// Asking shard.
    pub shard_idx: usize,
    /// Its deferred response.
    pub ticket: Ticket,
    /// Keep the connection open after the response.
    pub keep_alive: bool,
}

/// An access token issued for an ID-JAG, held back until its `jti` is known to be unused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedToken {
    /// The signed token.
    pub access_token: String,
    /// Seconds until its `exp`, as of signing.
    pub expires_in: u64,
    /// Its scopes, space-separated.
    pub scope: Option<String>,
}

/// Requests from shards to the control plane.
#[derive(Debug)]
pub enum ControlMsg {
    /// Persist and broadcast a revocation, then reply.
    Revoke {
        /// Where the answer goes.
        reply_to: ReplyTo,
        /// Issuer of the revoked token: the denylist is keyed by `(iss, jti)`, so another
        /// issuer's token can never revoke ours.
        iss: String,
        /// Token id.
        jti: String,
        /// Token expiry: the denylist entry lives until then.
        exp_s: u64,
    },
    /// Record an ID-JAG's `(iss, jti)` as used in the one process-wide replay table, then hand
    /// `token` back (first use) or refuse (replay, table full).
    RedeemIdJag {
        /// Where the answer goes.
        reply_to: ReplyTo,
        /// The assertion's issuer.
        iss: String,
        /// Its `jti`.
        jti: String,
        /// Until when the pair must be remembered (its `exp` plus the verifier's leeway).
        keep_until_s: u64,
        /// The access token the shard signed for it, released only on first use.
        token: GrantedToken,
    },
    /// Block a source in the kernel: one that exceeded its request rate repeatedly (for the
    /// gate's TTL), or one a threat check scored over `threat.block_threshold` (for
    /// `threat.block_ttl_s`).
    Block {
        /// The offender.
        ip: std::net::IpAddr,
        /// Why.
        reason: BlockReason,
        /// How long; `None` is the gate's `block_ttl_s`.
        ttl_s: Option<u64>,
    },
    /// The fleet's tailing thread saw new entries (or reconnected): pull and apply them.
    FleetWake,
    /// An admin edit or listing of the kernel blocklist (`/v1/block`), then reply.
    AdminBlock {
        /// Where the answer goes.
        reply_to: ReplyTo,
        /// What to do.
        op: BlockOp,
    },
    /// Rotate the signing key, then reply.
    RotateKeys {
        /// Where the answer goes.
        reply_to: ReplyTo,
    },
    /// Record a new app↔agent channel durably, then reply with its (already signed) tokens.
    CreateChannel {
        /// Where the answer goes.
        reply_to: ReplyTo,
        /// The channel id (random).
        id: String,
        /// `jti`s of the app's and the agent's channel token.
        jtis: [String; 2],
        /// When both tokens expire.
        expires_at_s: u64,
        /// The two signed tokens, handed back in the reply (opaque to the control plane).
        tokens: [String; 2],
    },
    /// Revoke both tokens of a channel (durable, broadcast) and forget the channel.
    DeleteChannel {
        /// Where the answer goes.
        reply_to: ReplyTo,
        /// The channel id.
        id: String,
    },
    /// Write (or delete) relationship tuples durably, then broadcast the new snapshot and reply
    /// with its revision. The shard checked them against the schema already.
    WriteRelationships {
        /// Where the answer goes.
        reply_to: ReplyTo,
        /// Delete these tuples instead of writing them.
        delete: bool,
        /// The tuples.
        tuples: Vec<crate::authz::TupleText>,
    },
    /// Append a batch of audit events; the reply (`AuditWritten`) goes only after the group
    /// commit that holds them is durable (fdatasync).
    AuditWrite {
        /// Where the answer goes.
        reply_to: ReplyTo,
        /// The validated events (1 to `audit.max_batch_events`).
        events: Vec<crate::audit::Event>,
    },
    /// Read up to `limit` audit records after sequence number `after`.
    AuditRead {
        /// Where the answer goes.
        reply_to: ReplyTo,
        /// Records with a greater sequence number are returned.
        after: u64,
        /// At most this many (≤ `audit::MAX_READ_LIMIT`).
        limit: usize,
    },
    /// A signed checkpoint of the audit log's current head.
    AuditCheckpoint {
        /// Where the answer goes.
        reply_to: ReplyTo,
    },
    /// A shard's own decisions (denials, delegations), buffered and shipped at most once a
    /// second; never acknowledged, so best effort.
    AuditEvents {
        /// The events.
        events: Vec<crate::audit::Event>,
    },
    /// A vault operation in the caller's namespace (its verified `iss` and `sub`); the
    /// control plane seals, stores, opens and answers with `ControlReply::Vault`.
    Vault {
        /// Where the answer goes.
        reply_to: ReplyTo,
        /// The caller's namespace.
        namespace: crate::vault::Namespace,
        /// What to do there.
        op: VaultOp,
    },
}

/// What the control plane did with a request that waits for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlReply {
    /// The revocation is durable and queued to every shard.
    Revoked {
        /// Token id.
        jti: String,
        /// Whether the denylist changed: `false` when the `jti` was already revoked at least
        /// as long, or its expiry has passed (an expired token needs no entry).
        stored: bool,
    },
    /// The revocation could not be made durable; nothing was acknowledged.
    RevokeFailed,
    /// The live revocation table is full; nothing was stored.
    RevocationsFull {
        /// The table's bound.
        max_live: usize,
    },
    /// The ID-JAG's `jti` was unused and is now recorded: answer with this token.
    IdJagRedeemed(GrantedToken),
    /// The ID-JAG was refused (a replay, or the replay table is full).
    IdJagRefused(crate::xaa::ExchangeError),
    /// A new signing key is durable and queued to every shard.
    Rotated {
        /// New current kid.
        kid: String,
        /// The kid it replaced, which verifies until `previous_retire_at_s`.
        previous_kid: String,
        /// Unix time the previous key stops verifying.
        previous_retire_at_s: u64,
    },
    /// Rotation failed; the old key stays current.
    RotateFailed,
    /// The relationships are durable, and every shard has the snapshot at `revision` queued.
    RelationshipsWritten {
        /// Revision of the snapshot that has the write (a read-your-writes token).
        revision: u64,
        /// Tuples written or deleted.
        n_tuples: usize,
    },
    /// The write was refused as a whole (a limit, or it does not fit the schema).
    RelationshipsRefused {
        /// Why, for `error_description`.
        description: String,
    },
    /// The store could not make a write durable; nothing was acknowledged.
    StoreFailed,
    /// The write needs the fleet's Redis, which is unreachable; nothing was acknowledged.
    FleetUnavailable {
        /// What failed, for `error_description`.
        description: String,
    },
    /// The channel is durable; here are its tokens.
    ChannelCreated {
        /// The channel id.
        id: String,
        /// The app's and the agent's token.
        tokens: [String; 2],
        /// When they expire.
        expires_at_s: u64,
    },
    /// Both channel tokens are revoked on every shard (durably) and the channel is gone.
    ChannelDeleted {
        /// The channel id.
        id: String,
    },
    /// No such channel (never created, deleted, or expired).
    ChannelUnknown,
    /// The answer to a `ControlMsg::Vault`.
    Vault(VaultReply),
    /// The audit batch is durable.
    AuditWritten {
        /// Sequence number of its first event.
        first_seq: u64,
        /// Of its last.
        last_seq: u64,
    },
    /// The audit batch could not be made durable (disk full, I/O error); nothing of it was
    /// acknowledged, and the log was cut back to its last durable record.
    AuditFailed,
    /// Records read back (personal fields opened).
    AuditRecords(Vec<crate::audit::ReadRecord>),
    /// The latest checkpoint (`None` while the log is empty) and its verifier key.
    AuditCheckpoint {
        /// The signed note.
        note: Option<String>,
        /// `name+keyid+key`.
        vkey: String,
    },
    /// The answer to a `ControlMsg::AdminBlock`.
    Block(BlockReply),
}

/// An admin operation on the kernel blocklist; the shard has validated the CIDR, the TTL and
/// the reason already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOp {
    /// Block `cidr` for `ttl_s` seconds (0: until removed).
    Add {
        /// The network.
        cidr: crate::gate::Cidr,
        /// Seconds; 0 blocks until removed (≤ `MAX_ADMIN_BLOCK_TTL_S`).
        ttl_s: u64,
        /// Why.
        reason: BlockReason,
    },
    /// Remove the exact entry for `cidr`.
    Del {
        /// The network.
        cidr: crate::gate::Cidr,
    },
    /// The current entries.
    List,
}

/// Longest TTL `POST /v1/block` accepts: a year, as `gate.block_ttl_s`.
pub const MAX_ADMIN_BLOCK_TTL_S: u64 = 86_400 * 365;

/// One blocklist entry as the admin endpoints show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    /// The network, normalised (`203.0.113.0/24`).
    pub cidr: String,
    /// Unix time it expires; `None`: until removed.
    pub until_unix_s: Option<u64>,
    /// Why (`manual`, `threat`, `ratelimit`, `other`).
    pub reason: String,
}

/// What the control plane did with a `BlockOp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockReply {
    /// The entry is in the kernel blocklist (and the persisted list).
    Added(BlockEntry),
    /// The entry was removed.
    Deleted {
        /// The network.
        cidr: String,
    },
    /// `Del` of a network that is not on the list.
    NotBlocked {
        /// The network.
        cidr: String,
    },
    /// The entries, sorted by network.
    Entries(Vec<BlockEntry>),
    /// The gate is off: nothing to change or list.
    GateOff,
    /// The gate refused (the trie is full, a map operation failed); for `error_description`.
    Failed {
        /// Why.
        description: String,
    },
}

/// Messages to a shard over the mesh.
#[derive(Debug)]
pub enum ShardMsg {
    /// New key material.
    Keys(Arc<KeySnapshot>),
    /// The relationships at a new revision (one snapshot shared by every shard).
    Relationships(Arc<crate::authz::Snapshot>),
    /// `(iss, jti)` is revoked until `exp_s`.
    Revoked {
        /// Issuer.
        iss: String,
        /// Token id.
        jti: String,
        /// Until when.
        exp_s: u64,
    },
    /// Part of a split batch to verify on this shard.
    BatchPart {
        /// Shard that owns the request.
        origin: usize,
        /// Its batch id.
        batch_id: u64,
        /// Index of the first token in the whole batch.
        offset: usize,
        /// The tokens.
        tokens: Vec<String>,
    },
    /// Verdicts for a part, back to the origin.
    BatchDone {
        /// Batch id at the origin.
        batch_id: u64,
        /// Index of the first token.
        offset: usize,
        /// One per token.
        verdicts: Vec<Verdict>,
    },
    /// Work on state this shard owns (the owner of a key), for a request that arrived on
    /// shard `origin`; answered with `OwnedDone` to `origin`.
    Owned {
        /// Shard that holds the deferred response.
        origin: usize,
        /// The deferred response at the origin.
        ticket: Ticket,
        /// What to do.
        work: OwnedWork,
    },
    /// The owner's answer to `Owned`, back at the origin.
    OwnedDone {
        /// The deferred response it completes.
        ticket: Ticket,
        /// What the owner decided.
        result: OwnedResult,
    },
    /// A threat check blocked `source`, whose owner is this shard: remember the block for risk
    /// (fire and forget; the owner's table counts two blocks within a second once).
    ThreatBlocked {
        /// The blocked source.
        source: std::net::IpAddr,
    },
    /// The control plane's answer to a deferred request.
    Reply {
        /// The deferred response it completes.
        to: ReplyTo,
        /// What happened.
        reply: ControlReply,
    },
    /// The fleet's lease thread answers a [`LeaseRequest`] of this shard.
    Lease(LeaseAnswer),
}

/// A shard asks the fleet's lease thread for units of a global rate limit (fleet mode only).
/// Sent over a bounded `sync_channel` that shards only `try_send` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The asking shard (the answer goes back over the mesh).
    pub shard_idx: usize,
    /// The shard's id of this ask, handed back in the answer.
    pub ask_id: u64,
    /// Index of the key rule in `[[ratelimit.rules]]`.
    pub rule_idx: usize,
    /// The limited key (1 to `ratelimit::MAX_KEY_BYTES` bytes).
    pub key: Box<str>,
    /// Units to take from the shared budget (at least 1).
    pub want: u32,
}

/// What Redis's GCRA script granted (`fleet::lease::Grant`, as it crosses the mesh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Units taken from the shared budget (0 to `want`).
    pub granted: u32,
    /// When `granted` is 0: milliseconds until one unit is available (at least 1).
    pub retry_after_ms: u64,
    /// Whole units left in the shared budget after this grant.
    pub remaining: u32,
}

/// The lease thread's answer to a [`LeaseRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAnswer {
    /// The request's `ask_id`.
    pub ask_id: u64,
    /// The request's rule.
    pub rule_idx: usize,
    /// The request's key.
    pub key: Box<str>,
    /// What Redis granted; `None` when Redis was unreachable (or the script failed).
    pub grant: Option<LeaseGrant>,
}

/// Work a key's owner shard does on state only it holds. The shard that received the
/// request validated it (and its caller) already.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedWork {
    /// `POST /v1/ratelimit/check`: take `cost` units for `key`.
    Rate {
        /// The key (1 to `ratelimit::MAX_KEY_BYTES` bytes).
        key: String,
        /// Units to take (at least 1).
        cost: u32,
    },
    /// `POST /v1/threat/check`: observe one keyed part of an event in the owner's table.
    Threat(ThreatPart),
    /// `POST /v1/risk/assess`: what the subject's owner knows about it.
    RiskSubject(crate::security::SubjectQuery),
    /// `POST /v1/risk/assess`: what the source's owner knows about it.
    RiskSource(std::net::IpAddr),
}

/// One keyed part of a threat event, for the owner of its key.
#[derive(Debug, Clone, PartialEq)]
pub enum ThreatPart {
    /// Keyed by the source address.
    Source(crate::security::SourcePart),
    /// Keyed by the subject.
    Subject(crate::security::SubjectPart),
    /// Keyed by the e-mail domain.
    Domain(crate::security::DomainPart),
}

/// What the owner decided for an [`OwnedWork`].
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedResult {
    /// The rate check's verdict, or why the cost can never be granted.
    Rate(Result<crate::ratelimit::KeyVerdict, crate::ratelimit::CostError>),
    /// The signals a threat part fired in its owner's table.
    Threat(Vec<crate::security::Signal>),
    /// The subject's facts for risk.
    RiskSubject(crate::security::SubjectFacts),
    /// The source's facts for risk.
    RiskSource(crate::security::SourceFacts),
}

/// A vault operation; the shard has authenticated the caller and validated the name, the
/// value and the expiry already.
#[derive(Debug)]
pub enum VaultOp {
    /// Seal `token` as the next version of `name` and make it durable.
    Put {
        /// Entry name.
        name: String,
        /// The plaintext (redacted in `Debug`, zeroed on drop).
        token: zeroize::Zeroizing<String>,
        /// Optional expiry, unix seconds.
        expires_at_s: Option<u64>,
    },
    /// Open the entry `name`.
    Get {
        /// Entry name.
        name: String,
    },
    /// Remove the entry `name`.
    Delete {
        /// Entry name.
        name: String,
    },
    /// The names in the namespace.
    List,
}

/// What the control plane did with a `VaultOp`. A missing entry and another caller's entry
/// are the same `NotFound`: the control plane only ever looks inside the caller's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultReply {
    /// The put is durable.
    Stored {
        /// Entry name.
        name: String,
        /// Its new version.
        version: u64,
    },
    /// The opened entry.
    Entry {
        /// Entry name.
        name: String,
        /// The plaintext (redacted in `Debug`, zeroed on drop).
        token: zeroize::Zeroizing<String>,
        /// Its version.
        version: u64,
        /// Its expiry, unix seconds.
        expires_at_s: Option<u64>,
    },
    /// The delete is durable.
    Deleted {
        /// Entry name.
        name: String,
    },
    /// The namespace's live entry names, sorted.
    Names(Vec<String>),
    /// No live entry of that name in the caller's namespace.
    NotFound,
    /// The request cannot be stored (a limit); for `error_description`.
    Refused {
        /// Why.
        description: String,
    },
    /// The namespace holds `max` entries already.
    Full {
        /// The per-namespace bound.
        max: usize,
    },
    /// The vault holds `max_bytes` of sealed values already: retry once entries are deleted
    /// or expire.
    OutOfSpace {
        /// The bound, `MAX_SEALED_BYTES_HELD`.
        max_bytes: usize,
    },
    /// A stored entry did not open (wrong key or damaged bytes): a server fault.
    Unreadable,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_denylist_is_keyed_by_issuer_and_jti_and_only_lengthens() {
        let mut d = Denylist::default();
        d.insert("subzero".into(), "j1".into(), 100);
        assert!(d.contains("subzero", "j1"));
        assert!(
            !d.contains("https://idp", "j1"),
            "another issuer's jti is another token"
        );
        d.insert("subzero".into(), "j1".into(), 50);
        d.insert("https://idp".into(), "j1".into(), 70);
        assert_eq!(d.len(), 2);
        d.retain_live(60);
        assert!(
            d.contains("subzero", "j1"),
            "kept until 100, not shortened to 50"
        );
        assert!(d.contains("https://idp", "j1"));
        d.retain_live(80);
        assert!(!d.contains("https://idp", "j1"));
        assert_eq!(d.len(), 1);
        d.retain_live(100);
        assert!(d.is_empty());
    }
}
