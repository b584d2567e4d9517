//! The control plane in a fleet: applies what other nodes changed (pulled by the store from
//! the Redis feed) to its mirrors and the shards, publishes this node's public keys and
//! blocks, and merges every node's keys into the key snapshot.
//!
//! Single node (no `[fleet]`), `self.store.shared()` is `None` and none of this runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{ControlPlane, MAX_REVOCATIONS};
use crate::auth::jwk;
use crate::authz;
use crate::gate::{boot_ns, parse_block_reason, BlockReason, Cidr};
use crate::plane::ShardMsg;
use crate::store::{Applied, FeedEvent, Op};

/// Other nodes' published keys: node → its JWKS JSON.
pub type FleetKeys = BTreeMap<String, String>;

/// The relationships in `tuples` as a snapshot at `revision`; a tuple this node's schema does
/// not accept (another node runs another schema) is skipped with a warning, never fatal.
pub fn relationships_from(
    schema: &authz::Schema,
    tuples: &BTreeMap<crate::store::Tuple, Option<u64>>,
    revision: u64,
) -> authz::Snapshot {
    let limits = authz::Limits::default();
    let changes: Vec<authz::Change> = tuples
        .iter()
        .filter_map(|(t, &expires_at)| {
            let text = authz::TupleText {
                object: t.object.clone(),
                relation: t.relation.clone(),
                subject: t.subject.clone(),
                expires_at,
            };
            match text.resolve(schema, &limits) {
                Ok(r) => Some(authz::Change::Touch(r)),
                Err(e) => {
                    tracing::warn!(tuple = %text, error = %e, "fleet: relationship skipped: it does not fit this node's schema");
                    None
                }
            }
        })
        .collect();
    let empty = authz::Snapshot::empty(schema, rand::random(), 0);
    match empty.apply(schema, &changes, &limits) {
        Ok(snapshot) => snapshot.at_revision(revision),
        Err(e) => {
            tracing::error!(error = %e, "fleet: relationships over a limit; keeping none");
            authz::Snapshot::empty(schema, rand::random(), revision)
        }
    }
}

impl ControlPlane {
    /// Whether this node is in a fleet.
    pub(super) fn in_fleet(&mut self) -> bool {
        self.store.shared().is_some()
    }

    /// Pulls what other nodes wrote and applies it (the tailing thread's wake-up, and once a
    /// second as a safety net).
    pub(super) fn fleet_pull(&mut self, now_s: u64) {
        let Some(shared) = self.store.shared() else {
            return;
        };
        if let Err(e) = shared.pull(now_s) {
            tracing::debug!(error = %e, "fleet: pull failed");
        }
        self.apply_fleet(now_s);
    }

    /// Applies to the mirrors and the shards what the store applied from the feed since the
    /// last call. Called after every store write and pull.
    pub(super) fn apply_fleet(&mut self, now_s: u64) {
        let Some(shared) = self.store.shared() else {
            return;
        };
        let applied = shared.take_applied();
        if applied.is_empty() {
            return;
        }
        let mut rebuild = false;
        let mut tuple_ops = Vec::new();
        let mut keys_changed = false;
        for item in applied {
            match item {
                Applied::Records {
                    change,
                    interleaved,
                } => {
                    rebuild |= interleaved;
                    for op in change.ops {
                        self.apply_fleet_op(op, &mut tuple_ops);
                    }
                }
                Applied::Event(event) => keys_changed |= self.apply_fleet_event(event, now_s),
            }
        }
        if rebuild {
            self.rebuild_from_store();
        } else if !tuple_ops.is_empty() {
            self.apply_fleet_tuples(&tuple_ops);
        }
        if keys_changed {
            let snapshot = self.key_snapshot();
            self.broadcast(|| ShardMsg::Keys(Arc::clone(&snapshot)));
        }
    }

    fn apply_fleet_op(&mut self, op: Op, tuple_ops: &mut Vec<Op>) {
        match op {
            Op::Revoke { key, exp_s } => {
                if self.revocations.len() >= MAX_REVOCATIONS {
                    tracing::error!(
                        "fleet: revocation table full; a fleet revocation is not mirrored"
                    );
                    return;
                }
                self.revocations
                    .insert(key.iss.clone(), key.jti.clone(), exp_s);
                let (iss, jti) = (key.iss, key.jti);
                self.broadcast(|| ShardMsg::Revoked {
                    iss: iss.clone(),
                    jti: jti.clone(),
                    exp_s,
                });
            }
            op @ (Op::WriteTuple { .. } | Op::DeleteTuple { .. }) => tuple_ops.push(op),
            op @ (Op::PutVault { .. } | Op::DeleteVault { .. }) => {
                self.vault.apply_feed_op(op);
            }
            Op::CreateChannel { id, channel } => {
                self.channels.insert(id, channel);
            }
            Op::DeleteChannel { id } => {
                self.channels.remove(&id);
            }
            Op::ExpireRevocation { .. } | Op::PutMeta { .. } | Op::DeleteMeta { .. } => {}
        }
    }

    /// Applies other nodes' relationship changes, in order, to the shards' snapshot.
    fn apply_fleet_tuples(&mut self, ops: &[Op]) {
        let (Some(schema), Some(current)) =
            (self.config.permissions.clone(), self.relationships.clone())
        else {
            return;
        };
        let limits = authz::Limits::default();
        let mut next: Option<authz::Snapshot> = None;
        for op in ops {
            let (tuple, expires_at, delete) = match op {
                Op::WriteTuple {
                    tuple,
                    expires_at_s,
                } => (tuple, *expires_at_s, false),
                Op::DeleteTuple { tuple } => (tuple, None, true),
                _ => continue,
            };
            let text = authz::TupleText {
                object: tuple.object.clone(),
                relation: tuple.relation.clone(),
                subject: tuple.subject.clone(),
                expires_at,
            };
            let base = next.as_ref().unwrap_or(&current);
            match super::apply_tuples(&schema, base, &[text], delete, &limits) {
                Ok(applied) => next = Some(applied),
                Err(e) => tracing::warn!(error = %e, "fleet: relationship change skipped"),
            }
        }
        let Some(next) = next else {
            return;
        };
        let revision = self.store.revision();
        let snapshot = Arc::new(next.at_revision(revision));
        self.relationships = Some(Arc::clone(&snapshot));
        self.broadcast(|| ShardMsg::Relationships(Arc::clone(&snapshot)));
    }

    /// Rebuilds the relationship and vault mirrors from the store: another node's change was
    /// applied between this node's mirror update and its write, or a snapshot was loaded, so
    /// only the store has them in feed order.
    fn rebuild_from_store(&mut self) {
        let stored = match self.store.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "fleet: cannot read the store to rebuild mirrors");
                return;
            }
        };
        if let Some(schema) = self.config.permissions.clone() {
            let snapshot = Arc::new(relationships_from(
                &schema,
                &stored.state.tuples,
                stored.revision,
            ));
            self.relationships = Some(Arc::clone(&snapshot));
            self.broadcast(|| ShardMsg::Relationships(Arc::clone(&snapshot)));
        }
        self.vault.replace_entries(stored.state.vault);
        self.channels = stored.state.channels.into_iter().collect();
        let now_s = (self.now_s)();
        for (key, exp_s) in stored.state.revocations {
            if exp_s > now_s && !self.revocations.contains(&key.iss, &key.jti) {
                self.apply_fleet_op(Op::Revoke { key, exp_s }, &mut Vec::new());
            }
        }
    }

    /// Applies a block, an unblock or another node's keys; true when the keys changed.
    fn apply_fleet_event(&mut self, event: FeedEvent, now_s: u64) -> bool {
        match event {
            FeedEvent::Block {
                cidr,
                until_unix_s,
                reason,
            } => {
                let Ok(parsed) = cidr.parse::<Cidr>() else {
                    tracing::warn!(%cidr, "fleet: block with a bad CIDR skipped");
                    return false;
                };
                let ttl_s = match until_unix_s {
                    None => 0, // forever
                    Some(until) if until > now_s => until - now_s,
                    Some(_) => return false, // over already
                };
                let reason = parse_block_reason(&reason).unwrap_or(BlockReason::Other);
                match self.gate.block(parsed, Some(ttl_s), reason, boot_ns()) {
                    Ok(()) => {
                        tracing::info!(%cidr, ttl_s, "fleet: source blocked in the kernel gate");
                    }
                    Err(e) => tracing::debug!(%cidr, error = %e, "fleet: cannot block"),
                }
                false
            }
            FeedEvent::Unblock { cidr } => {
                if let Ok(parsed) = cidr.parse::<Cidr>() {
                    let _ = self.gate.unblock(parsed);
                }
                false
            }
            FeedEvent::Keys { node, jwks } => {
                if Some(&node) == self.node_id.as_ref() {
                    return false;
                }
                if self.fleet_keys.get(&node) == Some(&jwks) {
                    return false;
                }
                self.fleet_keys.insert(node, jwks);
                true
            }
        }
    }

    /// Publishes this node's whole JWKS to the fleet (at start, after a rotation or a
    /// retirement), so every node verifies its tokens and serves the same key set.
    pub(super) fn publish_keys(&mut self, now_s: u64) {
        let Some(node) = self.node_id.clone() else {
            return;
        };
        let jwks = self.keyring.jwks_json();
        if self.published_jwks.as_deref() == Some(jwks.as_str()) {
            return;
        }
        let Some(shared) = self.store.shared() else {
            return;
        };
        match shared.publish(
            FeedEvent::Keys {
                node,
                jwks: jwks.clone(),
            },
            now_s,
        ) {
            Ok(()) => {
                self.published_jwks = Some(jwks);
                tracing::info!("fleet: public keys published");
            }
            Err(e) => tracing::warn!(error = %e, "fleet: cannot publish public keys yet"),
        }
        self.apply_fleet(now_s);
    }

    /// Blocks `cidr` on every node (through the feed); when Redis is unreachable, here only.
    /// Returns false when the fleet could not take it.
    pub(super) fn fleet_block(
        &mut self,
        cidr: Cidr,
        ttl_s: u64,
        reason: BlockReason,
        now_s: u64,
    ) -> bool {
        let event = FeedEvent::Block {
            cidr: cidr.to_string(),
            until_unix_s: (ttl_s > 0).then_some(now_s + ttl_s),
            reason: reason.as_str().to_owned(),
        };
        match self.fleet_publish(event, now_s) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%cidr, error = %e, "fleet: block kept on this node only");
                false
            }
        }
    }

    /// Appends an event to the fleet's feed and applies what came with it (the event
    /// included, on this node too). Outside a fleet: `Unavailable`.
    pub(super) fn fleet_publish(
        &mut self,
        event: FeedEvent,
        now_s: u64,
    ) -> Result<(), crate::store::StoreError> {
        let Some(shared) = self.store.shared() else {
            return Err(crate::store::StoreError::Unavailable(
                "not in a fleet".into(),
            ));
        };
        let published = shared.publish(event, now_s);
        self.apply_fleet(now_s);
        published
    }

    /// Other nodes' keys for the verifier and the merged JWKS (every node serves the same
    /// set, sorted by kid). Empty outside a fleet.
    pub(super) fn fleet_key_entries(&self) -> (Vec<jwk::KeyEntry>, Vec<(String, String)>) {
        let mut entries = Vec::new();
        let mut objects = Vec::new();
        for (node, jwks) in &self.fleet_keys {
            match jwk::parse_jwks(jwks.as_bytes(), Path::new(node)) {
                Ok(keys) => entries.extend(keys),
                Err(e) => {
                    tracing::warn!(%node, error = %e, "fleet: a node's published keys do not parse");
                    continue;
                }
            }
            if let Ok(serde_json::Value::Object(mut doc)) = serde_json::from_str(jwks) {
                if let Some(serde_json::Value::Array(keys)) = doc.remove("keys") {
                    for key in keys {
                        let kid = key
                            .get("kid")
                            .and_then(|k| k.as_str())
                            .unwrap_or("")
                            .to_owned();
                        objects.push((kid, key.to_string()));
                    }
                }
            }
        }
        (entries, objects)
    }
}
