//! The fleet: several gateways acting as one through Redis (one instance or a Redis Cluster).
//!
//! Absent `[fleet]`, nothing here runs. With it, the node's store is a [`FleetStore`]: every
//! shared change (revocations, relationships, vault entries, channels, blocks, public keys)
//! is an entry of one Redis Stream that every node applies in order (`feed.rs`, `store.rs`),
//! and a tailing thread (`tail.rs`) wakes the control plane when other nodes wrote. Redis is
//! reached with the `redis` crate's blocking client from the control-plane, fleet and lease
//! threads only (`conn.rs`); the shards never wait on it. Global rate limits: each shard
//! answers checks from its own leases (`lease.rs`), refilled by the lease thread
//! (`lease_thread.rs`) from a GCRA in Redis.

mod conn;
mod feed;
pub mod lease;
mod lease_thread;
mod store;
mod tail;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use conn::{Conn, Link};
pub use feed::{StreamId, BLOCKS_KEY, FEED_KEY, KEYS_KEY, REV_KEY, SNAP_KEY};
pub use lease_thread::{spawn_lease_thread, MAX_LEASE_QUEUE};
pub use store::{FleetStore, META_REV, META_STREAM_ID};
pub use tail::spawn_tail;

/// File in the data dir that keeps a node's generated fleet name.
pub const NODE_ID_FILE: &str = "fleet-node-id";

/// What `/metrics` shows of the fleet; written by the control-plane and fleet threads.
#[derive(Debug, Default)]
pub struct FleetGauges {
    /// The control plane's connection is up (its last call succeeded).
    pub connected: AtomicBool,
    /// The tailing thread's connection is up.
    pub tail_connected: AtomicBool,
    /// The fleet's newest revision, as the tailing thread last read it.
    pub head_rev: AtomicU64,
    /// The revision this node has applied.
    pub applied_rev: AtomicU64,
    /// Writes refused because Redis was unreachable.
    pub writes_refused: AtomicU64,
    /// Snapshots loaded (the feed was trimmed past this node, or it joined late).
    pub snapshots_loaded: AtomicU64,
    /// Snapshots this node published.
    pub snapshots_published: AtomicU64,
}

impl FleetGauges {
    /// Renders the `subzero_fleet_*` families.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let connected =
            self.connected.load(Ordering::Relaxed) && self.tail_connected.load(Ordering::Relaxed);
        let head = self.head_rev.load(Ordering::Relaxed);
        let applied = self.applied_rev.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "subzero_fleet_connected {}\n\
             subzero_fleet_applied_revision {applied}\n\
             subzero_fleet_head_revision {head}\n\
             subzero_fleet_lag_changes {}\n\
             subzero_fleet_writes_refused_total {}\n\
             subzero_fleet_snapshots_loaded_total {}\n\
             subzero_fleet_snapshots_published_total {}\n",
            u8::from(connected),
            head.saturating_sub(applied),
            self.writes_refused.load(Ordering::Relaxed),
            self.snapshots_loaded.load(Ordering::Relaxed),
            self.snapshots_published.load(Ordering::Relaxed),
        );
    }
}

/// This node's fleet name: configured, or generated once and kept in the data dir.
pub fn node_id(configured: Option<&str>, data_dir: &Path) -> std::io::Result<String> {
    if let Some(id) = configured {
        return Ok(id.to_owned());
    }
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        Ok(_) | Err(_) => {
            let id = format!("node-{:016x}", rand::random::<u64>());
            std::fs::write(&path, format!("{id}\n"))?;
            Ok(id)
        }
    }
}
