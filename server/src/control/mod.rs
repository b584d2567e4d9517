//! Control plane: key ring, revocations and other read-mostly state replicated to every shard.
//!
//! One thread owns everything that writes to disk or changes global state. Shards ask it through
//! a bounded channel (`ControlMsg`); it persists first, then broadcasts the change to every shard
//! over the mesh, then answers the asking shard's deferred request. Shards never wait on it:
//! they defer the one response and keep serving.
//!
//! Architecture Invariant: a `200` for a revocation or key rotation is sent only after the change
//! is on disk (fdatasync) and queued to every shard ahead of the acknowledgement.

mod audit;
mod block;
mod channel;
mod fleet;
mod vault;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

pub use audit::{AuditState, MAX_OWN_EVENTS_PER_PASS};
pub use channel::Channels;
pub use fleet::relationships_from;
/// Most live revocations held; beyond this new revocations are refused (503).
pub const MAX_REVOCATIONS: usize = 1 << 20;
pub use vault::{Vault, MAX_ENTRIES_PER_NAMESPACE, MAX_SEALED_BYTES_HELD};

use crate::auth::{KeyRing, Verifier};
use crate::authz;
use crate::config::Config;
use crate::gate::{boot_ns, Cidr, Gate};
use crate::monitor::Board;
use crate::plane::{ControlMsg, ControlReply, Denylist, KeySnapshot, ReplyTo, ShardMsg};
use crate::shard::mesh::Outbox;
use crate::store::{self, Store};
use crate::xaa::SeenJtis;

/// The snapshot after writing (or deleting) `tuples`, or why not.
fn apply_tuples(
    schema: &authz::Schema,
    base: &authz::Snapshot,
    tuples: &[authz::TupleText],
    delete: bool,
    limits: &authz::Limits,
) -> Result<authz::Snapshot, String> {
    let changes = tuples
        .iter()
        .map(|t| {
            let r = t.resolve(schema, limits).map_err(|e| format!("{t}: {e}"))?;
            Ok(if delete {
                authz::Change::Delete(r)
            } else {
                authz::Change::Touch(r)
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    base.apply(schema, &changes, limits)
        .map_err(|e| e.to_string())
}

/// The answer to a write the store refused: the fleet's Redis being unreachable says so,
/// anything else is a failed durable write.
fn failed_write(e: &store::StoreError) -> ControlReply {
    match e {
        store::StoreError::Unavailable(_) => ControlReply::FleetUnavailable {
            description: e.to_string(),
        },
        _ => ControlReply::StoreFailed,
    }
}

/// The store's record of a relationship write or delete.
fn store_op(t: &authz::TupleText, delete: bool) -> store::Op {
    let tuple = store::Tuple {
        object: t.object.clone(),
        relation: t.relation.clone(),
        subject: t.subject.clone(),
    };
    if delete {
        store::Op::DeleteTuple { tuple }
    } else {
        store::Op::WriteTuple {
            tuple,
            expires_at_s: t.expires_at,
        }
    }
}

/// Most requests the control plane takes from its queue for one group commit.
pub const MAX_CONTROL_BATCH: usize = 1024;

/// Most expired records (every kind) the store purges per one-second tick.
pub const MAX_PURGED_PER_TICK: usize = 4096;

/// Bound of the shard → control channel; a full channel makes shards answer 503.
pub const CONTROL_QUEUE_DEPTH: usize = 4096;

/// Most ID-JAG `(iss, jti)` pairs remembered at once (each until its assertion expires, a few
/// minutes): about 870 redemptions a second with 300 s assertions. Beyond it a new ID-JAG is
/// refused with `503`, never let through unrecorded.
pub const MAX_SEEN_ID_JAGS: usize = 1 << 18;

/// The control plane's state, owned by its thread.
pub struct ControlPlane {
    config: Arc<Config>,
    data_dir: PathBuf,
    keyring: KeyRing,
    base_verifier: Verifier,
    /// Live revocations, mirrored from the store (for the bound and the metrics).
    revocations: Denylist,
    /// The durable store (relationships today; vault, channels and revocations to follow).
    store: Box<dyn Store>,
    /// The relationships every shard reads (`None` without a schema).
    relationships: Option<Arc<authz::Snapshot>>,
    /// App↔agent channels, as stored.
    channels: Channels,
    /// The master key and every sealed vault entry.
    vault: Vault,
    outbox: Outbox<ShardMsg>,
    board: Arc<Board>,
    gate: Gate,
    shutdown: Arc<AtomicBool>,
    now_s: fn() -> u64,
    /// Used ID-JAGs: one table for the whole process, so a replay on any shard is seen.
    seen_id_jags: SeenJtis,
    /// The audit log and this pass's pending events.
    audit: AuditState,
    /// Messages taken from the control queue since start, and the most taken at once since
    /// the last tick (what was waiting: the queue's high-water mark over that second).
    n_received: u64,
    batch_high_water: usize,
    /// This node's name in a fleet; `None` alone.
    node_id: Option<String>,
    /// Other nodes' published keys.
    fleet_keys: fleet::FleetKeys,
    /// The JWKS this node last published to the fleet.
    published_jwks: Option<String>,
    /// The fleet's gauges for `/metrics`.
    fleet_gauges: Option<Arc<crate::fleet::FleetGauges>>,
}

/// What the control plane owns, loaded at start.
pub struct ControlState {
    /// Signing keys.
    pub keyring: KeyRing,
    /// Verifier with the trusted issuers; own keys are set from `keyring`.
    pub base_verifier: Verifier,
    /// Live revocations, as loaded from the store.
    pub revocations: Denylist,
    /// The durable store.
    pub store: Box<dyn Store>,
    /// The relationships loaded from it (`None` without a schema).
    pub relationships: Option<Arc<authz::Snapshot>>,
    /// The channels loaded from it.
    pub channels: Channels,
    /// The vault loaded from it, with the master key.
    pub vault: Vault,
    /// The eBPF gate (possibly off).
    pub gate: Gate,
    /// The audit log, recovered.
    pub audit: crate::audit::AuditLog,
    /// In a fleet: this node's name and the fleet's gauges.
    pub fleet: Option<(String, Arc<crate::fleet::FleetGauges>)>,
}

/// How the control plane reaches the shards.
pub struct ControlLinks {
    /// The control plane's end of the mesh (an edge to every shard).
    pub outbox: Outbox<ShardMsg>,
    /// Where `/metrics` sections are published.
    pub board: Arc<Board>,
    /// Set on SIGINT/SIGTERM.
    pub shutdown: Arc<AtomicBool>,
}

impl ControlPlane {
    /// Takes over the state loaded at start and the links to the shards.
    pub fn new(config: Arc<Config>, state: ControlState, links: ControlLinks) -> ControlPlane {
        let ControlState {
            keyring,
            base_verifier,
            revocations,
            store,
            relationships,
            channels,
            vault,
            gate,
            audit,
            fleet,
        } = state;
        let (node_id, fleet_gauges) = fleet.unzip();
        let ControlLinks {
            outbox,
            board,
            shutdown,
        } = links;
        let control = ControlPlane {
            data_dir: config.server.data_dir.clone(),
            config,
            keyring,
            base_verifier,
            revocations,
            store,
            relationships,
            channels,
            vault,
            outbox,
            board,
            gate,
            shutdown,
            now_s: crate::unix_now_s,
            seen_id_jags: SeenJtis::new(MAX_SEEN_ID_JAGS),
            audit: AuditState::new(audit),
            n_received: 0,
            batch_high_water: 0,
            node_id,
            fleet_keys: fleet::FleetKeys::new(),
            published_jwks: None,
            fleet_gauges,
        };
        control.publish_metrics();
        control
    }

    /// In a fleet: joins it before the shards start (pulls what the fleet holds, publishes
    /// this node's keys), so the first request already sees the fleet's state. Redis being
    /// unreachable does not stop the start: the node serves what it has and catches up.
    pub fn join_fleet(&mut self) {
        if !self.in_fleet() {
            return;
        }
        let now_s = (self.now_s)();
        self.fleet_pull(now_s);
        self.publish_keys(now_s);
    }

    /// The key material every shard starts from (and gets again after each change).
    pub fn key_snapshot(&self) -> Arc<KeySnapshot> {
        let mut verifier = self.base_verifier.clone();
        verifier.set_own_keys(&self.keyring);
        let mut kids: Vec<String> = self
            .keyring
            .verifying_keys()
            .map(|(kid, _)| kid.to_owned())
            .collect();
        let mut jwks_json = self.keyring.jwks_json();
        if !self.fleet_keys.is_empty() {
            // Every node serves the same set: its own keys and the others', sorted by kid.
            let (entries, mut objects) = self.fleet_key_entries();
            kids.extend(entries.iter().map(|k| k.kid.clone()));
            verifier.add_own_keys(entries);
            // Rendered the way the other nodes' keys are (serde_json, sorted members), so the
            // body is byte-identical on every node.
            objects.extend(self.keyring.verifying_keys().map(|(kid, key)| {
                let jwk = crate::auth::jwk::ed25519_jwk_json(kid, key.as_bytes());
                let canonical =
                    serde_json::from_str::<serde_json::Value>(&jwk).map_or(jwk, |v| v.to_string());
                (kid.to_owned(), canonical)
            }));
            objects.sort();
            objects.dedup_by(|a, b| a.0 == b.0);
            let body: Vec<String> = objects.into_iter().map(|(_, json)| json).collect();
            jwks_json = format!(r#"{{"keys":[{}]}}"#, body.join(","));
        }
        Arc::new(KeySnapshot {
            signing_key: self.keyring.signing_key().clone(),
            kid: self.keyring.current_kid().to_owned(),
            jwks_json,
            verifier,
            kids,
        })
    }

    /// The relationships every shard starts from.
    pub fn relationships(&self) -> Option<Arc<authz::Snapshot>> {
        self.relationships.clone()
    }

    /// Runs until `shutdown` is set.
    pub fn run(mut self, inbox: &Receiver<ControlMsg>) {
        let mut last_tick_s = 0;
        let mut batch = Vec::with_capacity(MAX_CONTROL_BATCH);
        while !self.shutdown.load(Ordering::Relaxed) {
            match inbox.recv_timeout(Duration::from_millis(250)) {
                Ok(msg) => {
                    // Group commit: everything already queued shares one fdatasync.
                    batch.push(msg);
                    batch.extend(inbox.try_iter().take(MAX_CONTROL_BATCH - 1));
                    self.n_received += batch.len() as u64;
                    self.batch_high_water = self.batch_high_water.max(batch.len());
                    self.handle_batch(&mut batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.shutdown.load(Ordering::Relaxed) {
                break; // No housekeeping on the way out: its syncs would only delay the exit.
            }
            let now_s = (self.now_s)();
            if now_s != last_tick_s {
                last_tick_s = now_s;
                self.tick(now_s);
            }
        }
        self.audit.shutdown(crate::unix_now_ms());
    }

    /// Handles a batch of requests, draining it: revocations first as one group commit, then
    /// the rest in arrival order.
    fn handle_batch(&mut self, batch: &mut Vec<ControlMsg>) {
        let now_s = (self.now_s)();
        let mut revokes = Vec::new();
        let mut tuple_writes = Vec::new();
        let mut vault_requests = Vec::new();
        let mut audit_writes = Vec::new();
        let mut audit_reads = Vec::new();
        let mut audit_checkpoints = Vec::new();
        let mut others = Vec::new();
        for msg in batch.drain(..) {
            match msg {
                ControlMsg::Revoke {
                    reply_to,
                    iss,
                    jti,
                    exp_s,
                } => revokes.push((reply_to, iss, jti, exp_s)),
                ControlMsg::WriteRelationships {
                    reply_to,
                    delete,
                    tuples,
                } => tuple_writes.push((reply_to, delete, tuples)),
                ControlMsg::Vault {
                    reply_to,
                    namespace,
                    op,
                } => vault_requests.push((reply_to, namespace, op)),
                ControlMsg::AuditWrite { reply_to, events } => {
                    audit_writes.push((reply_to, events));
                }
                ControlMsg::AuditRead {
                    reply_to,
                    after,
                    limit,
                } => audit_reads.push((reply_to, after, limit)),
                ControlMsg::AuditEvents { events } => self.audit.take_shard_events(events),
                ControlMsg::AuditCheckpoint { reply_to } => audit_checkpoints.push(reply_to),
                other => others.push(other),
            }
        }
        // In a fleet, each write may bring other nodes' changes along: they are mirrored
        // before the next kind of write stages against the mirrors.
        if !revokes.is_empty() {
            for (reply_to, reply) in self.revoke_batch(revokes, now_s) {
                self.reply(reply_to, reply);
            }
            self.apply_fleet(now_s);
        }
        if !tuple_writes.is_empty() {
            self.relationships_batch(tuple_writes, now_s);
            self.apply_fleet(now_s);
        }
        if !vault_requests.is_empty() {
            self.vault_batch(vault_requests, now_s);
            self.apply_fleet(now_s);
        }
        for msg in others {
            self.handle(msg, now_s);
        }
        // Last: the pass's one audit commit holds the events of everything above.
        for (reply_to, reply) in self.audit.commit_pass(&audit_writes, crate::unix_now_ms()) {
            self.reply(reply_to, reply);
        }
        for (reply_to, after, limit) in audit_reads {
            let reply = self.audit.read(after, limit);
            self.reply(reply_to, reply);
        }
        for reply_to in audit_checkpoints {
            let reply = self.audit.checkpoint(crate::unix_now_ms());
            self.reply(reply_to, reply);
        }
        self.audit.after_pass(crate::unix_now_ms());
        self.apply_fleet(now_s);
    }

    /// An audit message outside a batch: its own commit.
    fn handle_audit(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::AuditWrite { reply_to, events } => {
                let now_ms = crate::unix_now_ms();
                for (reply_to, reply) in self.audit.commit_pass(&[(reply_to, events)], now_ms) {
                    self.reply(reply_to, reply);
                }
            }
            ControlMsg::AuditRead {
                reply_to,
                after,
                limit,
            } => {
                let reply = self.audit.read(after, limit);
                self.reply(reply_to, reply);
            }
            ControlMsg::AuditCheckpoint { reply_to } => {
                let reply = self.audit.checkpoint(crate::unix_now_ms());
                self.reply(reply_to, reply);
            }
            ControlMsg::AuditEvents { events } => {
                self.audit.take_shard_events(events);
                let _ = self.audit.commit_pass(&[], crate::unix_now_ms());
            }
            other => debug_assert!(false, "not an audit message: {other:?}"),
        }
    }

    /// Relationship writes with one store commit, each noted in the audit log.
    fn relationships_batch(
        &mut self,
        writes: Vec<(ReplyTo, bool, Vec<authz::TupleText>)>,
        now_s: u64,
    ) {
        let fields: Vec<(ReplyTo, &'static str, String)> = writes
            .iter()
            .map(|(to, delete, tuples)| {
                let action = if *delete {
                    "relationships.delete"
                } else {
                    "relationships.write"
                };
                let resource = match (tuples.first(), tuples.len()) {
                    (Some(t), 1) => t.to_string(),
                    (Some(t), n) => format!("{t} (+{} more)", n - 1),
                    (None, _) => String::new(),
                };
                (*to, action, resource)
            })
            .collect();
        for (reply_to, reply) in self.write_relationships(writes, now_s) {
            if let Some((_, action, resource)) = fields.iter().find(|(to, ..)| *to == reply_to) {
                let outcome = audit::outcome_of(&reply);
                self.audit.note("admin", action, resource, outcome, "-");
            }
            self.reply(reply_to, reply);
        }
    }

    /// Vault requests with one store commit, each noted in the audit log.
    fn vault_batch(&mut self, requests: Vec<vault::VaultRequest>, now_s: u64) {
        let fields: Vec<[String; 3]> = requests
            .iter()
            .map(|(_, ns, op)| audit::vault_event_fields(ns, op))
            .collect();
        let replies = self.vault.handle_batch(&mut *self.store, requests, now_s);
        debug_assert_eq!(replies.len(), fields.len());
        for ((reply_to, reply), [actor, action, resource]) in replies.into_iter().zip(fields) {
            let outcome = audit::outcome_of(&reply);
            self.audit.note(&actor, &action, &resource, outcome, "-");
            self.reply(reply_to, reply);
        }
    }

    fn handle(&mut self, msg: ControlMsg, now_s: u64) {
        match msg {
            ControlMsg::Revoke {
                reply_to,
                iss,
                jti,
                exp_s,
            } => {
                let mut replies = self.revoke_batch(vec![(reply_to, iss, jti, exp_s)], now_s);
                if let Some((reply_to, reply)) = replies.pop() {
                    self.reply(reply_to, reply);
                }
            }
            ControlMsg::RedeemIdJag {
                reply_to,
                iss,
                jti,
                keep_until_s,
                token,
            } => {
                let resource = format!("id-jag:{jti}");
                let actor = iss.clone();
                let reply = self.redeem_id_jag(reply_to, iss, jti, keep_until_s, token, now_s);
                let outcome = audit::outcome_of(&reply);
                self.audit
                    .note(&actor, "xaa.id_jag.redeem", &resource, outcome, "-");
                self.reply(reply_to, reply);
            }
            ControlMsg::FleetWake => self.fleet_pull(now_s),
            ControlMsg::Block { ip, reason, ttl_s } => self.block_source(ip, reason, ttl_s, now_s),
            msg @ (ControlMsg::AuditWrite { .. }
            | ControlMsg::AuditRead { .. }
            | ControlMsg::AuditCheckpoint { .. }
            | ControlMsg::AuditEvents { .. }) => self.handle_audit(msg),
            ControlMsg::WriteRelationships {
                reply_to,
                delete,
                tuples,
            } => self.relationships_batch(vec![(reply_to, delete, tuples)], now_s),
            ControlMsg::CreateChannel {
                reply_to,
                id,
                jtis,
                expires_at_s,
                tokens,
            } => {
                let channel = store::Channel { jtis, expires_at_s };
                let resource = format!("channel:{id}");
                let reply = self.create_channel(id, channel, tokens, now_s);
                let outcome = audit::outcome_of(&reply);
                self.audit
                    .note("gateway", "xaa.channel.create", &resource, outcome, "-");
                self.reply(reply_to, reply);
            }
            ControlMsg::DeleteChannel { reply_to, id } => {
                let reply = self.delete_channel(reply_to, &id, now_s);
                let outcome = audit::outcome_of(&reply);
                self.audit.note(
                    "gateway",
                    "xaa.channel.delete",
                    &format!("channel:{id}"),
                    outcome,
                    "-",
                );
                self.reply(reply_to, reply);
            }
            ControlMsg::Vault {
                reply_to,
                namespace,
                op,
            } => self.vault_batch(vec![(reply_to, namespace, op)], now_s),
            ControlMsg::AdminBlock { reply_to, op } => {
                let reply = self.admin_block(op, now_s);
                self.reply(reply_to, reply);
            }
            ControlMsg::RotateKeys { reply_to } => {
                let reply = self.rotate(now_s);
                let kid = match &reply {
                    ControlReply::Rotated { kid, .. } => kid.clone(),
                    _ => String::new(),
                };
                let outcome = audit::outcome_of(&reply);
                self.audit.note("admin", "keys.rotate", &kid, outcome, "-");
                self.reply(reply_to, reply);
            }
        }
    }

    /// Blocks an offending source in the kernel gate: on every node through the feed in a
    /// fleet (here only when Redis is unreachable), else here.
    fn block_source(
        &mut self,
        ip: std::net::IpAddr,
        reason: crate::gate::BlockReason,
        ttl_s: Option<u64>,
        now_s: u64,
    ) {
        let fleet_ttl_s = ttl_s.unwrap_or(self.config.gate.block_ttl_s);
        let outcome =
            if self.in_fleet() && self.fleet_block(Cidr::host(ip), fleet_ttl_s, reason, now_s) {
                "ok"
            } else {
                match self.gate.block(Cidr::host(ip), ttl_s, reason, boot_ns()) {
                    Ok(()) => {
                        tracing::warn!(%ip, ?reason, "source blocked in the kernel gate");
                        "ok"
                    }
                    Err(e) => {
                        tracing::debug!(%ip, error = %e, "cannot block source");
                        "failed"
                    }
                }
            };
        let reason = format!("{reason:?}");
        self.audit
            .note("gateway", "gate.block", &reason, outcome, &ip.to_string());
    }

    /// Makes revocations durable in the store with one commit (group commit), keyed by
    /// `(iss, jti)`, then queues each change to every shard ahead of the replies.
    pub(super) fn revoke_batch(
        &mut self,
        revokes: Vec<(ReplyTo, String, String, u64)>,
        now_s: u64,
    ) -> Vec<(ReplyTo, ControlReply)> {
        let mut replies = Vec::with_capacity(revokes.len());
        let mut pending = Vec::with_capacity(revokes.len());
        let mut ops = Vec::with_capacity(revokes.len());
        let mut n_new = 0;
        for (reply_to, iss, jti, exp_s) in revokes {
            let new = !self.revocations.contains(&iss, &jti);
            if new && self.revocations.len() + n_new >= MAX_REVOCATIONS {
                let reply = ControlReply::RevocationsFull {
                    max_live: MAX_REVOCATIONS,
                };
                replies.push((reply_to, reply));
                continue;
            }
            n_new += usize::from(new);
            let key = store::RevocationKey {
                iss: iss.clone(),
                jti: jti.clone(),
            };
            ops.push(store::Op::Revoke { key, exp_s });
            pending.push((reply_to, iss, jti, exp_s));
        }
        if ops.is_empty() {
            return replies;
        }
        let committed = match self.store.write(&ops, now_s) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::error!(error = %e, n = ops.len(), "cannot persist revocations");
                for (_, iss, jti, _) in &pending {
                    let resource = format!("token:{iss} {jti}");
                    self.audit
                        .note("gateway", "token.revoke", &resource, "failed", "-");
                }
                let failed = pending.into_iter().map(|(to, ..)| {
                    let reply = match failed_write(&e) {
                        ControlReply::StoreFailed => ControlReply::RevokeFailed,
                        fleet => fleet,
                    };
                    (to, reply)
                });
                replies.extend(failed);
                return replies;
            }
        };
        debug_assert_eq!(committed.outcomes.len(), pending.len());
        for ((reply_to, iss, jti, exp_s), outcome) in pending.into_iter().zip(committed.outcomes) {
            let stored = outcome == store::Outcome::Applied;
            let resource = format!("token:{iss} {jti}");
            let word = if stored { "ok" } else { "unchanged" };
            self.audit
                .note("gateway", "token.revoke", &resource, word, "-");
            if stored {
                self.revocations.insert(iss.clone(), jti.clone(), exp_s);
                self.broadcast(|| ShardMsg::Revoked {
                    iss: iss.clone(),
                    jti: jti.clone(),
                    exp_s,
                });
            }
            replies.push((reply_to, ControlReply::Revoked { jti, stored }));
        }
        replies
    }

    /// Applies relationship writes to the snapshot, makes them durable with one commit (group
    /// commit), then queues the new snapshot to every shard ahead of the replies. A write that
    /// does not fit the schema or a limit is refused alone; the others go ahead.
    fn write_relationships(
        &mut self,
        writes: Vec<(ReplyTo, bool, Vec<authz::TupleText>)>,
        now_s: u64,
    ) -> Vec<(ReplyTo, ControlReply)> {
        let (Some(schema), Some(current)) =
            (self.config.permissions.clone(), self.relationships.clone())
        else {
            let off = || ControlReply::RelationshipsRefused {
                description: "permissions are off: no [permissions] schema_file".into(),
            };
            return writes.into_iter().map(|(to, _, _)| (to, off())).collect();
        };
        let limits = authz::Limits::default();
        let mut replies = Vec::with_capacity(writes.len());
        let mut accepted = Vec::new();
        let mut ops = Vec::new();
        let mut next: Option<authz::Snapshot> = None;
        for (reply_to, delete, tuples) in writes {
            let base = next.as_ref().unwrap_or(&current);
            match apply_tuples(&schema, base, &tuples, delete, &limits) {
                Ok(snapshot) => {
                    next = Some(snapshot);
                    ops.extend(tuples.iter().map(|t| store_op(t, delete)));
                    accepted.push((reply_to, tuples.len()));
                }
                Err(description) => {
                    replies.push((reply_to, ControlReply::RelationshipsRefused { description }));
                }
            }
        }
        let Some(next) = next else {
            return replies;
        };
        match self.store.write(&ops, now_s) {
            Ok(committed) => {
                let snapshot = Arc::new(next.at_revision(committed.revision));
                self.relationships = Some(Arc::clone(&snapshot));
                self.broadcast(|| ShardMsg::Relationships(Arc::clone(&snapshot)));
                replies.extend(accepted.into_iter().map(|(to, n_tuples)| {
                    let revision = committed.revision;
                    (
                        to,
                        ControlReply::RelationshipsWritten { revision, n_tuples },
                    )
                }));
            }
            Err(e) => {
                tracing::error!(error = %e, n = ops.len(), "cannot persist relationships");
                replies.extend(accepted.into_iter().map(|(to, _)| (to, failed_write(&e))));
            }
        }
        replies
    }

    /// Records an ID-JAG's `(iss, jti)` as used, once per process and durably: this thread sees
    /// every shard's redemptions in order (`SeenJtis`), and a used one is also a revocation of
    /// `(iss, jti)` in the store until it expires, so it stays used across restarts.
    fn redeem_id_jag(
        &mut self,
        reply_to: ReplyTo,
        iss: String,
        jti: String,
        keep_until_s: u64,
        token: crate::plane::GrantedToken,
        now_s: u64,
    ) -> ControlReply {
        let used = || {
            let why = "the ID-JAG was already used (jti replay)";
            ControlReply::IdJagRefused(crate::xaa::ExchangeError::InvalidGrant(why.into()))
        };
        if self.revocations.contains(&iss, &jti) {
            return used();
        }
        if !crate::plane::valid_jti(&jti) {
            let why = "the ID-JAG's jti must be 1 to 256 printable ASCII characters";
            return ControlReply::IdJagRefused(crate::xaa::ExchangeError::InvalidGrant(why.into()));
        }
        if let Err(e) = self
            .seen_id_jags
            .check_and_insert(&iss, &jti, keep_until_s, now_s)
        {
            return ControlReply::IdJagRefused(e);
        }
        let recorded = self.revoke_batch(vec![(reply_to, iss, jti, keep_until_s)], now_s);
        if let Some((_, fleet @ ControlReply::FleetUnavailable { .. })) = recorded.first() {
            return fleet.clone();
        }
        if recorded
            .iter()
            .all(|(_, r)| matches!(r, ControlReply::Revoked { .. }))
        {
            ControlReply::IdJagRedeemed(token)
        } else {
            ControlReply::StoreFailed
        }
    }

    /// Rotates the signing key; the previous one verifies until every token it signed expired.
    fn rotate(&mut self, now_s: u64) -> ControlReply {
        let previous_kid = self.keyring.current_kid().to_owned();
        let retire_after_s = self.config.auth.token_ttl_s + self.config.auth.leeway_s;
        match self.keyring.rotate(&self.data_dir, now_s, retire_after_s) {
            Ok(()) => {
                // In a fleet the new public key goes out before any token signed with it.
                self.publish_keys(now_s);
                let snapshot = self.key_snapshot();
                self.broadcast(|| ShardMsg::Keys(Arc::clone(&snapshot)));
                tracing::info!(kid = %snapshot.kid, previous = %previous_kid, "signing key rotated");
                ControlReply::Rotated {
                    kid: snapshot.kid.clone(),
                    previous_kid,
                    previous_retire_at_s: now_s + retire_after_s,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "key rotation failed");
                ControlReply::RotateFailed
            }
        }
    }

    fn tick(&mut self, now_s: u64) {
        let retired = self.keyring.retire_expired(now_s);
        if !retired.is_empty() {
            tracing::info!(?retired, "previous signing keys retired");
            let snapshot = self.key_snapshot();
            self.broadcast(|| ShardMsg::Keys(Arc::clone(&snapshot)));
        }
        if let Some(shared) = self.store.shared() {
            shared.tick(now_s);
            // The tail's wake-ups are the fast path; this catches whatever they missed.
            self.fleet_pull(now_s);
            self.publish_keys(now_s);
        }
        self.revocations.retain_live(now_s);
        self.seen_id_jags.expire(now_s);
        self.audit.tick(crate::unix_now_ms());
        self.gate.expire();
        match self.store.purge_expired(now_s, MAX_PURGED_PER_TICK) {
            Ok(purged) => self.vault.after_purge(&purged, now_s),
            Err(e) => tracing::warn!(error = %e, "cannot purge expired records"),
        }
        self.publish_metrics();
        self.batch_high_water = 0;
    }

    /// Renders the control plane's `/metrics` section (gate, revocations, keys).
    fn publish_metrics(&self) {
        let mut text = String::new();
        self.gate.snapshot().write_prometheus(&mut text);
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!("subzero_revocations_live {}\n", self.revocations.len()),
        );
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!("subzero_id_jag_seen {}\n", self.seen_id_jags.len()),
        );
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!(
                "subzero_signing_keys {}\n",
                self.keyring.verifying_keys().count()
            ),
        );
        self.audit.render_metrics(&mut text);
        if let Some(gauges) = &self.fleet_gauges {
            gauges.render(&mut text);
        }
        crate::monitor::process::render(&mut text);
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!(
                "subzero_control_messages_total {}\nsubzero_control_queue_high_water {}\nsubzero_control_queue_capacity {CONTROL_QUEUE_DEPTH}\n",
                self.n_received, self.batch_high_water
            ),
        );
        self.board.publish_control(text);
    }

    /// Queues a message to every shard. The control plane may wait for room; shards never do.
    fn broadcast(&mut self, make: impl Fn() -> ShardMsg) {
        for shard_idx in 0..self.outbox.n_shards() {
            self.send(shard_idx, make());
        }
    }

    fn reply(&mut self, to: ReplyTo, reply: ControlReply) {
        self.send(to.shard_idx, ShardMsg::Reply { to, reply });
    }

    fn send(&mut self, shard_idx: usize, mut msg: ShardMsg) {
        // Blocks until there is room: a broadcast must not be dropped while its change is
        // acknowledged. Only shutdown ends the wait.
        let mut waited_ms = 0u64;
        loop {
            match self.outbox.send(shard_idx, msg) {
                Ok(()) => return,
                Err(back) => {
                    msg = back;
                    if self.shutdown.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    waited_ms += 1;
                    if waited_ms.is_multiple_of(1000) {
                        tracing::warn!(
                            shard_idx,
                            waited_ms,
                            "shard inbox full; control plane waiting"
                        );
                    }
                }
            }
        }
    }
}
