//! `POST /v1/authenticate/batch`: cache hits first, the rest through Ed25519 batch
//! verification. Small batches are verified at once within the pass's budget; larger ones
//! become jobs that background work verifies a chunk per pass, so one batch cannot hold the
//! shard; batches of at least `SPLIT_MIN_TOKENS` are split across every shard over the mesh
//! (each part a job there) and answered when the last part returns.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::budget::VERIFY_UNITS_PER_PASS;
use super::respond;
use super::{is_revoked, ShardApp};
use crate::auth::{BatchMode, Claims};
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::plane::{Denial, ShardMsg, Verdict};
use crate::shard::{Cx, Outcome, Ready, Ticket};

/// Batches this large are split across shards; below it the mesh round trip is not worth it.
pub const SPLIT_MIN_TOKENS: usize = 256;
/// Split or queued batches in flight per shard; beyond it a batch waits for the next turn.
pub const MAX_PENDING_BATCHES: usize = 64;
/// Tokens a job verifies per loop pass (about `VERIFY_UNITS_PER_PASS` strict verifications'
/// worth in the fast mode).
pub const JOB_TOKENS_PER_PASS: usize = 32;

#[derive(Deserialize)]
pub(super) struct BatchBody<'a> {
    #[serde(borrow)]
    pub(super) tokens: Vec<std::borrow::Cow<'a, str>>,
}

/// A batch waiting for its parts (jobs here or on other shards).
pub struct PendingBatch {
    ticket: Ticket,
    keep_alive: bool,
    /// Whose failed verifications count against whose budget.
    peer: IpAddr,
    verdicts: Vec<Option<Verdict>>,
    parts_left: usize,
}

/// Where a finished job's verdicts go.
#[derive(Debug, Clone, Copy)]
enum JobFor {
    /// A part of a batch this shard answers.
    Local { batch_id: u64 },
    /// A part another shard sent; its verdicts go back there.
    Remote { origin: usize, batch_id: u64 },
}

/// Tokens to verify in the background, a chunk per pass.
struct Job {
    target: JobFor,
    /// Index of the first token in the whole batch.
    offset: usize,
    tokens: Vec<String>,
    verdicts: Vec<Verdict>,
}

/// The batches of one shard in flight.
#[derive(Default)]
pub struct Batches {
    pending: HashMap<u64, PendingBatch>,
    jobs: VecDeque<Job>,
    next_id: u64,
}

/// Verification cost of `n_misses` signatures in units of one strict verification.
fn units_for(n_misses: usize, mode: BatchMode) -> u32 {
    let units = match mode {
        BatchMode::Strict => n_misses,
        BatchMode::Fast => n_misses.div_ceil(2), // a batched signature costs under half
    };
    u32::try_from(units).unwrap_or(u32::MAX)
}

impl ShardApp {
    pub(super) fn authenticate_batch(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::AuthenticateBatch);
        let body: BatchBody<'_> = match serde_json::from_slice(req.body) {
            Ok(body) => body,
            Err(_) => {
                let text = "body must be JSON {\"tokens\": [\"...\", ...]}";
                respond::error(out, Status::BadRequest, "invalid_request", text, ka);
                return done;
            }
        };
        let max = self.config().auth.max_batch_tokens;
        if body.tokens.is_empty() || body.tokens.len() > max {
            let text = format!("a batch holds 1 to {max} tokens, got {}", body.tokens.len());
            respond::error(out, Status::BadRequest, "invalid_request", &text, ka);
            return done;
        }
        if let Some(retry_after_s) = self.over_failure_budget(cx) {
            respond::too_many_failures(out, self.failures.policy(), retry_after_s, ka);
            return done;
        }
        let tokens: Vec<&[u8]> = body.tokens.iter().map(|t| t.as_bytes()).collect();
        let n_misses = tokens
            .iter()
            .filter(|t| !self.cache.contains(t, cx.now_s) && !self.rejected.contains(t, cx.now_s))
            .count();
        let units = units_for(n_misses, self.verifier.batch_mode());
        let n_shards = self.outbox.n_shards();
        let parts = plan_split(tokens.len(), n_shards, self.idx, true);
        let queue_full = self.batches.pending.len() >= MAX_PENDING_BATCHES;
        if parts.len() == 1 && units <= VERIFY_UNITS_PER_PASS {
            // Small: at once, if this pass can still afford it.
            if !self.pass_budget.take(cx.pass, units) {
                return (Outcome::Later, Op::AuthenticateBatch);
            }
            let verdicts = self.verify_many(&tokens, cx.now_s);
            self.charge_failures(cx.peer, &verdicts);
            write_batch(out, verdicts.into_iter().map(Some), ka);
            return done;
        }
        if queue_full {
            return (Outcome::Later, Op::AuthenticateBatch);
        }
        let ticket = cx.defer();
        let batch_id = self.batches.next_id;
        self.batches.next_id += 1;
        let mut parts_left = 0;
        for part in parts {
            let owned = || {
                tokens[part.offset..part.offset + part.len]
                    .iter()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect::<Vec<String>>()
            };
            if part.to_idx != self.idx {
                let msg = ShardMsg::BatchPart {
                    origin: self.idx,
                    batch_id,
                    offset: part.offset,
                    tokens: owned(),
                };
                if self.outbox.send(part.to_idx, msg).is_ok() {
                    parts_left += 1;
                    continue;
                }
                // That edge is full: do the part here.
            }
            self.batches.jobs.push_back(Job {
                target: JobFor::Local { batch_id },
                offset: part.offset,
                tokens: owned(),
                verdicts: Vec::with_capacity(part.len),
            });
            parts_left += 1;
        }
        self.batches.pending.insert(
            batch_id,
            PendingBatch {
                ticket,
                keep_alive: ka,
                peer: cx.peer,
                verdicts: vec![None; tokens.len()],
                parts_left,
            },
        );
        (Outcome::Deferred(ticket), Op::AuthenticateBatch)
    }

    /// Charges `peer`'s failure budget for each token the batch found invalid.
    fn charge_failures(&mut self, peer: IpAddr, verdicts: &[Verdict]) {
        let now_ms = crate::unix_now_ms();
        for v in verdicts {
            if matches!(v, Err(Denial::Token(_))) {
                let _ = self.failures.check(peer, now_ms);
            }
        }
    }

    /// Background: verifies the next chunk of the oldest jobs; true while jobs remain.
    pub(super) fn run_jobs(&mut self, now_s: u64, ready: &mut Ready) -> bool {
        let mut n_left = JOB_TOKENS_PER_PASS;
        while n_left > 0 {
            let Some(job) = self.batches.jobs.front_mut() else {
                break;
            };
            let from = job.verdicts.len();
            let to = (from + n_left).min(job.tokens.len());
            let chunk: Vec<String> = job.tokens[from..to].to_vec();
            n_left -= to - from;
            let refs: Vec<&[u8]> = chunk.iter().map(String::as_bytes).collect();
            let verdicts = self.verify_many(&refs, now_s);
            let Some(job) = self.batches.jobs.front_mut() else {
                break;
            };
            job.verdicts.extend(verdicts);
            if job.verdicts.len() < job.tokens.len() {
                continue;
            }
            let Some(job) = self.batches.jobs.pop_front() else {
                break;
            };
            match job.target {
                JobFor::Local { batch_id } => {
                    self.on_batch_done(batch_id, job.offset, job.verdicts, ready);
                }
                JobFor::Remote { origin, batch_id } => {
                    self.counters.batch_parts_served += 1;
                    self.return_part(origin, batch_id, job.offset, job.verdicts);
                }
            }
        }
        !self.batches.jobs.is_empty()
    }

    /// Verdicts for `tokens`: cache hits and remembered invalid tokens, then one batch
    /// verification of the misses.
    pub(super) fn verify_many(&mut self, tokens: &[&[u8]], now_s: u64) -> Vec<Verdict> {
        let mut verdicts: Vec<Option<Verdict>> = tokens
            .iter()
            .map(|t| {
                if let Some(cached) = self.cache.get(t, now_s) {
                    return Some(if is_revoked(&self.revoked, &cached.claims) {
                        Err(Denial::Revoked)
                    } else {
                        Ok(cached.claims.clone())
                    });
                }
                let e = self.rejected.get(t, now_s)?;
                self.counters.rejected_hits += 1;
                Some(Err(Denial::Token(e.clone())))
            })
            .collect();
        // Identical misses share one verification (first occurrence), like concurrent misses.
        let mut first_of: HashMap<&[u8], usize> = HashMap::new();
        let mut unique_idx: Vec<usize> = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            if verdicts[i].is_none() && !first_of.contains_key(token) {
                first_of.insert(token, i);
                unique_idx.push(i);
            }
        }
        let unique: Vec<&[u8]> = unique_idx.iter().map(|&i| tokens[i]).collect();
        self.counters.verifications += unique.len() as u64;
        let verified = self.verifier.verify_batch(&unique, now_s);
        let strict = self.verifier.batch_mode() == crate::auth::BatchMode::Strict;
        for (&i, claims) in unique_idx.iter().zip(verified) {
            if let Err(e) = &claims {
                if super::authn::rejection_is_stable(e) {
                    let until_s = now_s + super::authn::REJECTED_TTL_S;
                    self.rejected.insert(tokens[i], e.clone(), until_s, now_s);
                }
            }
            let admitted = self.admit(tokens[i], claims, strict, now_s);
            verdicts[i] = Some(admitted.map(|cached: Rc<super::Cached>| cached.claims.clone()));
        }
        for (i, token) in tokens.iter().enumerate() {
            if verdicts[i].is_none() {
                verdicts[i] = first_of.get(token).and_then(|&j| verdicts[j].clone());
            }
        }
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or(Err(Denial::Token(crate::auth::TokenError::Malformed))))
            .collect()
    }

    /// Another shard's part: queue it as a job here.
    pub(super) fn on_batch_part(
        &mut self,
        origin: usize,
        batch_id: u64,
        offset: usize,
        tokens: Vec<String>,
    ) {
        let n_tokens = tokens.len();
        self.batches.jobs.push_back(Job {
            target: JobFor::Remote { origin, batch_id },
            offset,
            tokens,
            verdicts: Vec::with_capacity(n_tokens),
        });
    }

    /// A finished part goes back to its origin shard.
    fn return_part(&mut self, origin: usize, batch_id: u64, offset: usize, verdicts: Vec<Verdict>) {
        let mut msg = ShardMsg::BatchDone {
            batch_id,
            offset,
            verdicts,
        };
        // The origin is waiting on this; retry briefly if its inbox is full.
        for _ in 0..1000 {
            match self.outbox.send(origin, msg) {
                Ok(()) => return,
                Err(back) => {
                    msg = back;
                    std::thread::yield_now();
                }
            }
        }
        tracing::error!(
            origin,
            batch_id,
            "could not return a batch part; the origin answers 503 when its deadline passes"
        );
    }

    /// A part came back; answer the batch when it is the last.
    pub(super) fn on_batch_done(
        &mut self,
        batch_id: u64,
        offset: usize,
        verdicts: Vec<Verdict>,
        ready: &mut Ready,
    ) {
        let Some(pending) = self.batches.pending.get_mut(&batch_id) else {
            return;
        };
        for (i, v) in verdicts.into_iter().enumerate() {
            // Check revocation here too: the origin's denylist is the one the client relies on.
            let v = match v {
                Ok(claims) if is_revoked(&self.revoked, &claims) => Err(Denial::Revoked),
                other => other,
            };
            if let Some(slot) = pending.verdicts.get_mut(offset + i) {
                *slot = Some(v);
            }
        }
        pending.parts_left -= 1;
        if pending.parts_left == 0 {
            if let Some(done) = self.batches.pending.remove(&batch_id) {
                let failed: Vec<Verdict> = done
                    .verdicts
                    .iter()
                    .flatten()
                    .filter(|v| matches!(v, Err(Denial::Token(_))))
                    .cloned()
                    .collect();
                self.charge_failures(done.peer, &failed);
                let mut out = Vec::new();
                write_batch(&mut out, done.verdicts.into_iter(), done.keep_alive);
                ready.push((done.ticket, out));
            }
        }
    }
}

/// One part of a split batch: tokens `offset..offset + len`, verified on shard `to_idx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Index of the part's first token in the batch.
    pub offset: usize,
    /// Tokens in the part (at least one).
    pub len: usize,
    /// Shard that verifies it.
    pub to_idx: usize,
}

/// How a batch of `n_tokens` arriving on shard `origin_idx` is verified: one part on the
/// origin when the batch is small, the mesh has one shard, or `split_allowed` is false (too
/// many split batches pending); otherwise contiguous parts of equal size (the last may be
/// shorter), one per shard, starting with the origin. The parts cover the batch exactly once,
/// in order.
pub fn plan_split(
    n_tokens: usize,
    n_shards: usize,
    origin_idx: usize,
    split_allowed: bool,
) -> Vec<Part> {
    assert!(
        origin_idx < n_shards,
        "origin {origin_idx} of {n_shards} shards"
    );
    if n_tokens < SPLIT_MIN_TOKENS || n_shards == 1 || !split_allowed {
        return vec![Part {
            offset: 0,
            len: n_tokens,
            to_idx: origin_idx,
        }];
    }
    let part_len = n_tokens.div_ceil(n_shards);
    let parts: Vec<Part> = (0..n_tokens)
        .step_by(part_len)
        .enumerate()
        .map(|(part_idx, offset)| Part {
            offset,
            len: part_len.min(n_tokens - offset),
            to_idx: (origin_idx + part_idx) % n_shards,
        })
        .collect();
    debug_assert!(parts.len() <= n_shards);
    debug_assert_eq!(parts.iter().map(|p| p.len).sum::<usize>(), n_tokens);
    parts
}

/// One entry of the batch response.
#[derive(Serialize)]
struct Item<'a> {
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<&'a Claims>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<&'static str>,
}

#[derive(Serialize)]
struct BatchResponse<'a> {
    results: Vec<Item<'a>>,
    valid: usize,
}

fn write_batch(out: &mut Vec<u8>, verdicts: impl Iterator<Item = Option<Verdict>>, ka: bool) {
    let verdicts: Vec<Option<Verdict>> = verdicts.collect();
    let results: Vec<Item<'_>> = verdicts
        .iter()
        .map(|v| match v {
            Some(Ok(claims)) => Item {
                valid: true,
                claims: Some(claims),
                error: None,
                error_description: None,
            },
            Some(Err(denial)) => Item {
                valid: false,
                claims: None,
                error: Some("invalid_token"),
                error_description: Some(denial.description()),
            },
            None => Item {
                valid: false,
                claims: None,
                error: Some("server_error"),
                error_description: Some("this part of the batch was not verified"),
            },
        })
        .collect();
    let valid = results.iter().filter(|item| item.valid).count();
    let body = serde_json::to_vec(&BatchResponse { results, valid }).unwrap_or_default();
    http::write_json(out, Status::Ok, &body, ka);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_batches_and_single_shards_stay_whole_on_the_origin() {
        let whole = |n, to_idx| {
            vec![Part {
                offset: 0,
                len: n,
                to_idx,
            }]
        };
        assert_eq!(plan_split(SPLIT_MIN_TOKENS - 1, 4, 2, true), whole(255, 2));
        assert_eq!(plan_split(5000, 1, 0, true), whole(5000, 0));
        assert_eq!(plan_split(5000, 4, 3, false), whole(5000, 3));
    }

    #[test]
    fn large_batches_split_into_contiguous_parts_one_per_shard_from_the_origin() {
        let parts = plan_split(1000, 3, 1, true);
        let expected = [(0, 334, 1), (334, 334, 2), (668, 332, 0)];
        let got: Vec<_> = parts.iter().map(|p| (p.offset, p.len, p.to_idx)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn parts_cover_every_token_once_for_any_shape() {
        for n_shards in 1..=9 {
            for n_tokens in [SPLIT_MIN_TOKENS, 257, 1000, 4096, 4097] {
                for origin_idx in 0..n_shards {
                    let parts = plan_split(n_tokens, n_shards, origin_idx, true);
                    let mut next = 0;
                    let mut shards_used = std::collections::HashSet::new();
                    for p in &parts {
                        assert_eq!(p.offset, next);
                        assert!(p.len > 0 && p.to_idx < n_shards);
                        assert!(shards_used.insert(p.to_idx), "a shard got two parts");
                        next += p.len;
                    }
                    assert_eq!(next, n_tokens);
                    assert_eq!(parts[0].to_idx, origin_idx);
                }
            }
        }
    }
}
