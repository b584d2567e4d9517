//! The lease thread (`sz-lease`): takes units of global rate limits from Redis for the shards.
//!
//! Shards `try_send` a [`LeaseRequest`] on a bounded `sync_channel` ([`MAX_LEASE_QUEUE`]; a
//! full queue is answered on the shard by the fail mode) and keep serving; this thread runs
//! the GCRA script on its own connection in arrival order, and sends each [`LeaseAnswer`] back
//! over its own mesh edge to the asking shard. Requests queued together (up to
//! [`MAX_LEASE_PIPELINE`]) go to a single Redis as one pipeline (`lease::acquire_many`): one
//! round trip and, with `appendfsync always`, one AOF fsync for all of them rather than one
//! per request (measured: per-request fsyncs held the thread to about 300 requests a second).
//! On a Cluster the keys live on several nodes, so each request is its own call there. Like
//! the control plane it may wait for room on that edge, never drop an answer: a shard has a
//! deferred response waiting on it. Redis unreachable (the link is in its back-off, or the call
//! failed) is an answer too (`grant: None`), so a dead Redis costs a check one queue hop, not a
//! timeout per check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use super::conn::{Conn, Link};
use super::lease;
use crate::config::FleetConfig;
use crate::plane::{LeaseAnswer, LeaseGrant, LeaseRequest, ShardMsg};
use crate::ratelimit::KeyRule;
use crate::shard::mesh::Outbox;

/// Lease requests queued from all shards to the lease thread; beyond it a check is answered
/// by the fail mode (counted).
pub const MAX_LEASE_QUEUE: usize = 4096;

/// Requests sent to Redis in one pipeline.
pub const MAX_LEASE_PIPELINE: usize = 128;

/// How often an idle thread looks at the shutdown flag.
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// Starts the lease thread for the key `rules` (by index, as the shards number them).
pub fn spawn_lease_thread(
    config: &FleetConfig,
    rules: &[KeyRule],
    requests: Receiver<LeaseRequest>,
    mut outbox: Outbox<ShardMsg>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut link = Link::new(config, None);
    let rules = rules.to_vec();
    std::thread::Builder::new()
        .name("sz-lease".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                let first = match requests.recv_timeout(IDLE_WAIT) {
                    Ok(req) => req,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let mut batch = vec![first];
                while batch.len() < MAX_LEASE_PIPELINE {
                    match requests.try_recv() {
                        Ok(req) => batch.push(req),
                        Err(_) => break,
                    }
                }
                let grants = take_all(&mut link, &rules, &batch);
                for (req, grant) in batch.into_iter().zip(grants) {
                    let answer = ShardMsg::Lease(LeaseAnswer {
                        ask_id: req.ask_id,
                        rule_idx: req.rule_idx,
                        key: req.key,
                        grant,
                    });
                    send_waiting(&mut outbox, req.shard_idx, answer, &shutdown);
                }
            }
        })
}

/// The grants of `batch`, in order: one pipeline on a single Redis, one call per request on
/// a Cluster; `None` for a request whose rule is unknown, or for all when Redis is
/// unreachable or the pipeline failed.
fn take_all(link: &mut Link, rules: &[KeyRule], batch: &[LeaseRequest]) -> Vec<Option<LeaseGrant>> {
    let single = matches!(link.get(), Some(Conn::Single(_)));
    if batch.len() == 1 || !single {
        return batch
            .iter()
            .map(|req| {
                rules
                    .get(req.rule_idx)
                    .and_then(|rule| take(link, rule, req))
            })
            .collect();
    }
    // Requests of unknown rules (none: the shards number the same rules) are left out.
    let known: Vec<(usize, lease::AcquireAsk<'_>)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, req)| {
            let rule = rules.get(req.rule_idx)?;
            Some((
                i,
                lease::AcquireAsk {
                    rule: &rule.key_prefix,
                    key: &req.key,
                    rate_per_s: rule.rate_per_s,
                    burst: rule.burst,
                    want: req.want,
                },
            ))
        })
        .collect();
    let asks: Vec<lease::AcquireAsk<'_>> = known.iter().map(|(_, a)| *a).collect();
    let mut grants = vec![None; batch.len()];
    match link.call(|conn| lease::acquire_many(conn.like(), &asks)) {
        Some(Ok(got)) if got.len() == asks.len() => {
            for ((i, ask), g) in known.iter().zip(got) {
                grants[*i] = Some(LeaseGrant {
                    granted: g.granted.min(ask.want),
                    retry_after_ms: g.retry_after_ms,
                    remaining: g.remaining,
                });
            }
        }
        Some(Err(e)) => tracing::debug!(error = %e, "fleet: lease pipeline failed"),
        _ => {}
    }
    grants
}

/// One run of the script; `None` when Redis is unreachable or the call failed.
fn take(link: &mut Link, rule: &KeyRule, req: &LeaseRequest) -> Option<LeaseGrant> {
    let result = link.call(|conn| {
        lease::acquire(
            conn.like(),
            &rule.key_prefix,
            &req.key,
            rule.rate_per_s,
            rule.burst,
            req.want,
        )
    })?;
    match result {
        Ok(g) => Some(LeaseGrant {
            granted: g.granted.min(req.want),
            retry_after_ms: g.retry_after_ms,
            remaining: g.remaining,
        }),
        Err(e) => {
            tracing::debug!(error = %e, "fleet: lease script failed");
            None
        }
    }
}

/// Sends to shard `to_idx`, waiting for room (the shard drains its edges every loop pass);
/// only shutdown ends the wait.
fn send_waiting(
    outbox: &mut Outbox<ShardMsg>,
    to_idx: usize,
    mut msg: ShardMsg,
    stop: &AtomicBool,
) {
    let mut waited_ms = 0u64;
    loop {
        match outbox.send(to_idx, msg) {
            Ok(()) => return,
            Err(back) => {
                msg = back;
                if stop.load(Ordering::Relaxed) || to_idx >= outbox.n_shards() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
                waited_ms += 1;
                if waited_ms.is_multiple_of(1000) {
                    tracing::warn!(to_idx, waited_ms, "shard inbox full; lease thread waiting");
                }
            }
        }
    }
}
