//! App↔agent channels on the control plane: a channel is recorded durably before its tokens are
//! handed out, and deleting it revokes both tokens (the revocation log, broadcast to every shard
//! before the reply) and forgets the record, so the tokens stay refused after a restart.

use std::collections::HashMap;

use super::ControlPlane;
use crate::plane::{ControlReply, ReplyTo};
use crate::store::{self, Outcome};

/// Channels by id, as the store holds them.
pub type Channels = HashMap<String, store::Channel>;

impl ControlPlane {
    /// Records a channel; the reply carries the tokens the shard signed.
    pub(super) fn create_channel(
        &mut self,
        id: String,
        channel: store::Channel,
        tokens: [String; 2],
        now_s: u64,
    ) -> ControlReply {
        let expires_at_s = channel.expires_at_s;
        let op = store::Op::CreateChannel {
            id: id.clone(),
            channel: channel.clone(),
        };
        match self.store.write(&[op], now_s) {
            Ok(committed) if committed.outcomes.first() == Some(&Outcome::Applied) => {
                self.channels.insert(id.clone(), channel);
                ControlReply::ChannelCreated {
                    id,
                    tokens,
                    expires_at_s,
                }
            }
            Ok(committed) => {
                tracing::warn!(%id, outcome = ?committed.outcomes, "channel not recorded");
                ControlReply::StoreFailed
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot persist a channel");
                super::failed_write(&e)
            }
        }
    }

    /// Revokes both tokens of channel `id`, then forgets it.
    pub(super) fn delete_channel(
        &mut self,
        reply_to: ReplyTo,
        id: &str,
        now_s: u64,
    ) -> ControlReply {
        let Some(channel) = self.channels.get(id).cloned() else {
            return ControlReply::ChannelUnknown;
        };
        // Until the tokens' expiry plus the leeway verifiers allow.
        let exp_s = channel.expires_at_s + self.config.auth.leeway_s;
        let revokes = channel
            .jtis
            .iter()
            .map(|jti| {
                (
                    reply_to,
                    self.config.auth.issuer.clone(),
                    jti.clone(),
                    exp_s,
                )
            })
            .collect();
        let failed = self
            .revoke_batch(revokes, now_s)
            .into_iter()
            .find(|(_, reply)| !matches!(reply, ControlReply::Revoked { .. }));
        if let Some((_, reply)) = failed {
            return match reply {
                fleet @ ControlReply::FleetUnavailable { .. } => fleet,
                _ => ControlReply::StoreFailed,
            };
        }
        let op = store::Op::DeleteChannel { id: id.to_owned() };
        if let Err(e) = self.store.write(&[op], now_s) {
            // The tokens are revoked already; only the record lingers until it expires.
            tracing::error!(error = %e, %id, "cannot delete a channel record");
        }
        self.channels.remove(id);
        ControlReply::ChannelDeleted { id: id.to_owned() }
    }
}
