//! The bounded channel mesh: one SPSC queue per (sender, receiver) pair among shards, plus one
//! from the control plane to each shard, each receiver woken through its eventfd.

use std::sync::Arc;

use super::spsc::{Spsc, Waker};

/// Queue depth of every mesh edge; a full edge makes `send` fail (the caller degrades, never
/// blocks a shard).
pub const MESH_QUEUE_DEPTH: usize = 4096;

/// All queues and wakers of an `n_shards` mesh. Sender index `n_shards` is the control plane.
pub struct Mesh<M> {
    n_shards: usize,
    queues: Vec<Spsc<M>>,
    wakers: Vec<Arc<Waker>>,
}

impl<M: Send> Mesh<M> {
    /// Builds the mesh and one eventfd per shard.
    pub fn new(n_shards: usize) -> std::io::Result<Arc<Mesh<M>>> {
        let n_senders = n_shards + 1;
        let queues = (0..n_senders * n_shards)
            .map(|_| Spsc::new(MESH_QUEUE_DEPTH))
            .collect();
        let wakers = (0..n_shards)
            .map(|_| Waker::new())
            .collect::<std::io::Result<_>>()?;
        Ok(Arc::new(Mesh {
            n_shards,
            queues,
            wakers,
        }))
    }

    /// Number of shards.
    pub fn n_shards(&self) -> usize {
        self.n_shards
    }

    /// The control plane's sender index.
    pub fn control_idx(&self) -> usize {
        self.n_shards
    }

    /// Sends from `from_idx` (a shard, or `control_idx()`) to shard `to_idx`.
    ///
    /// Only the thread that owns `from_idx` may call this (single producer per edge).
    pub fn send(&self, from_idx: usize, to_idx: usize, msg: M) -> Result<(), M> {
        assert!(from_idx <= self.n_shards && to_idx < self.n_shards);
        self.queues[from_idx * self.n_shards + to_idx].push(msg)?;
        self.wakers[to_idx].wake();
        Ok(())
    }

    /// Receives the next message for shard `to_idx`.
    ///
    /// Only shard `to_idx`'s thread may call this (single consumer per edge).
    ///
    /// The control plane's edge is drained first: a revocation or key change it queued before
    /// a shard's request is applied before that request is served here.
    pub fn recv(&self, to_idx: usize) -> Option<M> {
        let n = self.n_shards;
        self.queues[n * n + to_idx]
            .pop()
            .or_else(|| (0..n).find_map(|from_idx| self.queues[from_idx * n + to_idx].pop()))
    }

    /// Messages waiting for shard `to_idx`.
    pub fn depth(&self, to_idx: usize) -> usize {
        (0..=self.n_shards)
            .map(|from_idx| self.queues[from_idx * self.n_shards + to_idx].len())
            .sum()
    }

    /// The waker of shard `idx`.
    pub fn waker(&self, idx: usize) -> &Arc<Waker> {
        &self.wakers[idx]
    }

    /// Wakes every shard unconditionally (shutdown).
    pub fn wake_all(&self) {
        for w in &self.wakers {
            w.wake_always();
        }
    }
}
