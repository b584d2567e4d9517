//! `/v1/block`: the admin edits and listing of the kernel blocklist, applied to the running
//! gate by the control plane (the thread that owns it), each edit noted in the audit log.

use super::{audit, ControlPlane};
use crate::gate::{boot_ns, BlockItem, GateError};
use crate::plane::{BlockEntry, BlockOp, BlockReply, ControlReply};
use crate::store::FeedEvent;

/// Unix time at which an entry that ends at `until_ns` (`CLOCK_BOOTTIME`; 0: never) expires,
/// given the two clocks read together now.
pub(super) fn until_unix_s(until_ns: u64, now_ns: u64, now_s: u64) -> Option<u64> {
    (until_ns != 0).then(|| now_s + until_ns.saturating_sub(now_ns).div_ceil(1_000_000_000))
}

fn entry_of(item: &BlockItem, now_ns: u64, now_s: u64) -> BlockEntry {
    BlockEntry {
        cidr: item.cidr.to_string(),
        until_unix_s: until_unix_s(item.until_ns, now_ns, now_s),
        reason: item.reason.as_str().to_owned(),
    }
}

fn failed(e: &GateError) -> BlockReply {
    match e {
        GateError::Off => BlockReply::GateOff,
        other => BlockReply::Failed {
            description: other.to_string(),
        },
    }
}

impl ControlPlane {
    /// Applies one `BlockOp` to the gate; adds and deletes are noted in the audit log. In a
    /// fleet an add or delete goes through the feed, so every node's gate applies it (this
    /// one's too); Redis unreachable is a `503`, never a block on this node only.
    pub(super) fn admin_block(&mut self, op: BlockOp, now_s: u64) -> ControlReply {
        let now_ns = boot_ns();
        if self.in_fleet() && !matches!(op, BlockOp::List) {
            return self.fleet_admin_block(op, now_s);
        }
        let (reply, action, cidr) = match op {
            BlockOp::Add {
                cidr,
                ttl_s,
                reason,
            } => {
                let reply = match self.gate.block(cidr, Some(ttl_s), reason, now_ns) {
                    Ok(()) => {
                        tracing::warn!(%cidr, ?reason, ttl_s, "admin blocked a network in the kernel gate");
                        BlockReply::Added(BlockEntry {
                            cidr: cidr.to_string(),
                            until_unix_s: (ttl_s != 0).then(|| now_s + ttl_s),
                            reason: reason.as_str().to_owned(),
                        })
                    }
                    Err(e) => failed(&e),
                };
                (reply, "gate.block.add", cidr)
            }
            BlockOp::Del { cidr } => {
                let reply = match self.gate.unblock(cidr) {
                    Ok(true) => BlockReply::Deleted {
                        cidr: cidr.to_string(),
                    },
                    Ok(false) => BlockReply::NotBlocked {
                        cidr: cidr.to_string(),
                    },
                    Err(e) => failed(&e),
                };
                (reply, "gate.block.del", cidr)
            }
            BlockOp::List => {
                let reply = match self.gate.blocklist() {
                    Ok(mut items) => {
                        items.sort_by_key(|b| b.cidr);
                        let entries = items.iter().map(|b| entry_of(b, now_ns, now_s));
                        BlockReply::Entries(entries.collect())
                    }
                    Err(e) => failed(&e),
                };
                return ControlReply::Block(reply);
            }
        };
        let reply = ControlReply::Block(reply);
        let outcome = audit::outcome_of(&reply);
        self.audit
            .note("admin", action, &cidr.to_string(), outcome, "-");
        reply
    }
}

impl ControlPlane {
    /// `admin_block`'s add or delete in a fleet.
    fn fleet_admin_block(&mut self, op: BlockOp, now_s: u64) -> ControlReply {
        let (event, action, cidr, done) = match op {
            BlockOp::Add {
                cidr,
                ttl_s,
                reason,
            } => {
                let until_unix_s = (ttl_s != 0).then(|| now_s + ttl_s);
                let event = FeedEvent::Block {
                    cidr: cidr.to_string(),
                    until_unix_s,
                    reason: reason.as_str().to_owned(),
                };
                let done = BlockReply::Added(BlockEntry {
                    cidr: cidr.to_string(),
                    until_unix_s,
                    reason: reason.as_str().to_owned(),
                });
                (event, "gate.block.add", cidr, done)
            }
            BlockOp::Del { cidr } => {
                let event = FeedEvent::Unblock {
                    cidr: cidr.to_string(),
                };
                let done = BlockReply::Deleted {
                    cidr: cidr.to_string(),
                };
                (event, "gate.block.del", cidr, done)
            }
            BlockOp::List => return self.admin_block(BlockOp::List, now_s),
        };
        let reply = match self.fleet_publish(event, now_s) {
            Ok(()) => {
                tracing::warn!(%cidr, action, "admin block edit sent to every node of the fleet");
                ControlReply::Block(done)
            }
            Err(e) => super::failed_write(&e),
        };
        let outcome = audit::outcome_of(&reply);
        self.audit
            .note("admin", action, &cidr.to_string(), outcome, "-");
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_expiries_map_to_unix_seconds() {
        assert_eq!(until_unix_s(0, 5, 1_000), None, "0 is forever");
        assert_eq!(
            until_unix_s(15_000_000_000, 5_000_000_000, 1_000),
            Some(1_010)
        );
        // A part-second left rounds up: the entry still blocks during it.
        assert_eq!(
            until_unix_s(5_500_000_000, 5_000_000_000, 1_000),
            Some(1_001)
        );
        // Already past: now.
        assert_eq!(
            until_unix_s(4_000_000_000, 5_000_000_000, 1_000),
            Some(1_000)
        );
    }
}
