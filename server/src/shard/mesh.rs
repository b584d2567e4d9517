//! The bounded channel mesh: one SPSC queue per (sender, receiver) pair among shards, plus one
//! from the control plane and one from the fleet's lease thread to each shard, each receiver
//! woken through its eventfd.
//!
//! [`Mesh::build`] hands out ports that own exactly their ends: each shard gets an [`Outbox`]
//! (its producers to every other shard) and an [`Inbox`] (its consumers from every peer, from
//! the control plane and from the lease thread), and the control plane and the lease thread
//! get their own `Outbox`. Ports are moved into their
//! threads; since `Producer` and `Consumer` are neither `Clone` nor `Sync`, no other thread can
//! push to an edge it does not own or pop from another shard's inbox.

use std::sync::Arc;

use super::spsc::{self, Consumer, Gauge, Producer, Waker};

/// Queue depth of every mesh edge; a full edge makes `send` fail (the caller degrades, never
/// blocks a shard).
pub const MESH_QUEUE_DEPTH: usize = 4096;

const _: () = assert!(MESH_QUEUE_DEPTH.is_power_of_two());

/// Largest mesh: the edges grow with the square of the shard count.
pub const MAX_MESH_SHARDS: usize = 1024;

/// Who sends on an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A shard, by index.
    Shard(usize),
    /// The control plane.
    Control,
    /// The fleet's lease thread (global rate-limit grants).
    Fleet,
}

/// One sender's producers, one per receiving shard (none to itself).
pub struct Outbox<M> {
    from: Sender,
    to: Vec<Option<Producer<M>>>,
    wakers: Wakers,
}

impl<M> Outbox<M> {
    /// Sends to shard `to_idx`; gives the message back when that edge is full, or when `to_idx`
    /// is the sender itself or out of range.
    pub fn send(&mut self, to_idx: usize, msg: M) -> Result<(), M> {
        let Some(Some(producer)) = self.to.get_mut(to_idx) else {
            return Err(msg);
        };
        producer.push(msg)?;
        self.wakers.0[to_idx].wake();
        Ok(())
    }

    /// Number of shards in the mesh.
    pub fn n_shards(&self) -> usize {
        self.to.len()
    }

    /// Who this outbox sends for.
    pub fn sender(&self) -> Sender {
        self.from
    }
}

/// One shard's consumers: the control plane's edge, the lease thread's edge and one edge from
/// every other shard.
pub struct Inbox<M> {
    idx: usize,
    from_control: Consumer<M>,
    from_fleet: Consumer<M>,
    from_shards: Vec<Option<Consumer<M>>>,
    waker: Arc<Waker>,
    /// Shard edge to look at first next time, so one busy peer cannot starve the others.
    next_peer_idx: usize,
}

impl<M> Inbox<M> {
    /// Receives the next message.
    ///
    /// The control plane's edge is drained first: a revocation or key change it queued before a
    /// shard's request is applied before that request is served here. The lease thread's edge
    /// comes next (its grants answer checks waiting on this shard), then peer edges in rotation.
    pub fn recv(&mut self) -> Option<M> {
        if let Some(msg) = self.from_control.pop() {
            return Some(msg);
        }
        if let Some(msg) = self.from_fleet.pop() {
            return Some(msg);
        }
        let n = self.from_shards.len();
        for step in 0..n {
            let from_idx = (self.next_peer_idx + step) % n;
            if let Some(msg) = self.from_shards[from_idx].as_mut().and_then(Consumer::pop) {
                self.next_peer_idx = (from_idx + 1) % n;
                return Some(msg);
            }
        }
        None
    }

    /// Messages waiting here now.
    pub fn depth(&self) -> usize {
        let peers: usize = self.from_shards.iter().flatten().map(Consumer::len).sum();
        self.from_control.len() + self.from_fleet.len() + peers
    }

    /// This shard's waker (its eventfd is armed on the shard's ring).
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// The receiving shard's index.
    pub fn idx(&self) -> usize {
        self.idx
    }
}

/// Every shard's waker; cloneable, for shutdown.
#[derive(Clone)]
pub struct Wakers(Arc<[Arc<Waker>]>);

impl Wakers {
    /// Wakes every shard unconditionally (shutdown).
    pub fn wake_all(&self) {
        for w in self.0.iter() {
            w.wake_always();
        }
    }
}

/// Read-only depths of every shard's inbox, for `/metrics` on any thread.
pub struct MeshGauges<M> {
    /// `per_shard[to_idx]`: gauges of every edge into shard `to_idx`.
    per_shard: Vec<Vec<Gauge<M>>>,
}

impl<M> MeshGauges<M> {
    /// Messages waiting for shard `to_idx`.
    pub fn depth(&self, to_idx: usize) -> usize {
        self.per_shard
            .get(to_idx)
            .map_or(0, |edges| edges.iter().map(Gauge::len).sum())
    }

    /// Number of shards.
    pub fn n_shards(&self) -> usize {
        self.per_shard.len()
    }
}

/// The built mesh: give each shard its ports, the control plane its outbox.
pub struct Mesh<M> {
    /// `(outbox, inbox)` of shard `idx`, at index `idx`.
    pub shards: Vec<(Outbox<M>, Inbox<M>)>,
    /// The control plane's outbox.
    pub control: Outbox<M>,
    /// The lease thread's outbox (unused without a fleet).
    pub fleet: Outbox<M>,
    /// Inbox depths for `/metrics`.
    pub gauges: MeshGauges<M>,
    /// For waking every shard at shutdown.
    pub wakers: Wakers,
}

impl<M: Send> Mesh<M> {
    /// Builds the queues of an `n_shards` mesh and one eventfd per shard.
    pub fn build(n_shards: usize) -> std::io::Result<Mesh<M>> {
        assert!((1..=MAX_MESH_SHARDS).contains(&n_shards));
        let wakers: Arc<[Arc<Waker>]> = (0..n_shards)
            .map(|_| Waker::new())
            .collect::<std::io::Result<Vec<_>>>()?
            .into();
        let wakers = Wakers(wakers);
        // producers[from][to] and consumers[to][from], `None` on the diagonal.
        let mut producers: Vec<Vec<Option<Producer<M>>>> = Vec::with_capacity(n_shards);
        let mut consumers: Vec<Vec<Option<Consumer<M>>>> = (0..n_shards)
            .map(|_| (0..n_shards).map(|_| None).collect())
            .collect();
        let mut gauges: Vec<Vec<Gauge<M>>> = (0..n_shards).map(|_| Vec::new()).collect();
        for from_idx in 0..n_shards {
            let mut row = Vec::with_capacity(n_shards);
            for (to_idx, inbox) in consumers.iter_mut().enumerate() {
                if from_idx == to_idx {
                    row.push(None);
                    continue;
                }
                let (tx, rx) = spsc::channel(MESH_QUEUE_DEPTH);
                gauges[to_idx].push(rx.gauge());
                inbox[from_idx] = Some(rx);
                row.push(Some(tx));
            }
            producers.push(row);
        }
        let mut control_to = Vec::with_capacity(n_shards);
        let mut from_control = Vec::with_capacity(n_shards);
        let mut fleet_to = Vec::with_capacity(n_shards);
        let mut from_fleet = Vec::with_capacity(n_shards);
        for edges in &mut gauges {
            let (tx, rx) = spsc::channel(MESH_QUEUE_DEPTH);
            edges.push(rx.gauge());
            control_to.push(Some(tx));
            from_control.push(rx);
            let (tx, rx) = spsc::channel(MESH_QUEUE_DEPTH);
            edges.push(rx.gauge());
            fleet_to.push(Some(tx));
            from_fleet.push(rx);
        }
        let shards = producers
            .into_iter()
            .zip(consumers)
            .zip(from_control.into_iter().zip(from_fleet))
            .enumerate()
            .map(|(idx, ((to, from_shards), (from_control, from_fleet)))| {
                let outbox = Outbox {
                    from: Sender::Shard(idx),
                    to,
                    wakers: wakers.clone(),
                };
                let inbox = Inbox {
                    idx,
                    from_control,
                    from_fleet,
                    from_shards,
                    waker: Arc::clone(&wakers.0[idx]),
                    next_peer_idx: 0,
                };
                (outbox, inbox)
            })
            .collect();
        Ok(Mesh {
            shards,
            control: Outbox {
                from: Sender::Control,
                to: control_to,
                wakers: wakers.clone(),
            },
            fleet: Outbox {
                from: Sender::Fleet,
                to: fleet_to,
                wakers: wakers.clone(),
            },
            gauges: MeshGauges { per_shard: gauges },
            wakers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edge_delivers_to_its_receiver_only() {
        let Mesh {
            shards,
            mut control,
            mut fleet,
            gauges,
            ..
        } = Mesh::<(Sender, usize)>::build(3).unwrap();
        let (mut outboxes, mut inboxes): (Vec<_>, Vec<_>) = shards.into_iter().unzip();
        for outbox in &mut outboxes {
            for to_idx in 0..3 {
                let sent = outbox.send(to_idx, (outbox.sender(), to_idx));
                assert_eq!(sent.is_ok(), outbox.sender() != Sender::Shard(to_idx));
            }
        }
        for to_idx in 0..3 {
            fleet.send(to_idx, (Sender::Fleet, to_idx)).unwrap();
            control.send(to_idx, (Sender::Control, to_idx)).unwrap();
        }
        for (to_idx, inbox) in inboxes.iter_mut().enumerate() {
            assert_eq!((inbox.depth(), gauges.depth(to_idx)), (4, 4));
            // The control edge comes first, then the lease thread's, whatever the send order.
            assert_eq!(inbox.recv(), Some((Sender::Control, to_idx)));
            assert_eq!(inbox.recv(), Some((Sender::Fleet, to_idx)));
            let mut from: Vec<Sender> = std::iter::from_fn(|| inbox.recv())
                .map(|(from, to)| {
                    assert_eq!(to, to_idx);
                    from
                })
                .collect();
            from.sort_by_key(|s| match s {
                Sender::Shard(i) => *i,
                Sender::Control | Sender::Fleet => usize::MAX,
            });
            let expected: Vec<Sender> =
                (0..3).filter(|&i| i != to_idx).map(Sender::Shard).collect();
            assert_eq!(from, expected);
            assert_eq!(gauges.depth(to_idx), 0);
        }
    }

    #[test]
    fn a_full_edge_gives_the_message_back_and_others_still_flow() {
        let Mesh { shards, .. } = Mesh::<u32>::build(3).unwrap();
        let (mut outboxes, mut inboxes): (Vec<_>, Vec<_>) = shards.into_iter().unzip();
        let mut n_sent = 0;
        while outboxes[0].send(1, 7).is_ok() {
            n_sent += 1;
            assert!(n_sent <= MESH_QUEUE_DEPTH);
        }
        assert_eq!(n_sent, MESH_QUEUE_DEPTH);
        assert_eq!(outboxes[0].send(1, 8), Err(8));
        outboxes[2].send(1, 9).unwrap();
        // Peers are taken in rotation: shard 2's message is not stuck behind shard 0's 4096.
        let first_two = [inboxes[1].recv(), inboxes[1].recv()];
        assert!(first_two.contains(&Some(9)), "{first_two:?}");
    }
}
