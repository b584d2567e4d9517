//! `POST /v1/authenticate/batch`: cache hits first, the rest through Ed25519 batch
//! verification; batches of at least `SPLIT_MIN_TOKENS` are split across every shard over the
//! mesh and answered when the last part returns.

use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::respond;
use super::{is_revoked, ShardApp};
use crate::auth::Claims;
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::plane::{Denial, ShardMsg, Verdict};
use crate::shard::{Cx, Outcome, Ready, Ticket};

/// Batches this large are split across shards; below it the mesh round trip is not worth it.
pub const SPLIT_MIN_TOKENS: usize = 256;
/// Split batches in flight per shard; more are verified locally.
pub const MAX_PENDING_BATCHES: usize = 64;

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    tokens: Vec<std::borrow::Cow<'a, str>>,
}

/// A split batch waiting for its parts.
pub struct PendingBatch {
    ticket: Ticket,
    keep_alive: bool,
    verdicts: Vec<Option<Verdict>>,
    parts_left: usize,
}

/// The split batches of one shard.
#[derive(Default)]
pub struct Batches {
    pending: HashMap<u64, PendingBatch>,
    next_id: u64,
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
        let tokens: Vec<&[u8]> = body.tokens.iter().map(|t| t.as_bytes()).collect();
        let n_shards = self.outbox.n_shards();
        let split_allowed = self.batches.pending.len() < MAX_PENDING_BATCHES;
        let parts = plan_split(tokens.len(), n_shards, self.idx, split_allowed);
        if parts.len() == 1 {
            let verdicts = self.verify_many(&tokens, cx.now_s);
            write_batch(out, verdicts.into_iter().map(Some), ka);
            return done;
        }
        let id = self.batches.next_id;
        self.batches.next_id += 1;
        let mut verdicts: Vec<Option<Verdict>> = vec![None; tokens.len()];
        let mut parts_left = 0;
        let mut local: Vec<Part> = Vec::new();
        for part in parts {
            if part.to_idx == self.idx {
                local.push(part);
                continue;
            }
            let msg = ShardMsg::BatchPart {
                origin: self.idx,
                batch_id: id,
                offset: part.offset,
                tokens: tokens[part.offset..part.offset + part.len]
                    .iter()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect(),
            };
            match self.outbox.send(part.to_idx, msg) {
                Ok(()) => parts_left += 1,
                Err(_) => local.push(part), // that edge is full: do the part here
            }
        }
        for part in local {
            let range = part.offset..part.offset + part.len;
            let part_verdicts = self.verify_many(&tokens[range.clone()], cx.now_s);
            for (slot, v) in verdicts[range].iter_mut().zip(part_verdicts) {
                *slot = Some(v);
            }
        }
        if parts_left == 0 {
            write_batch(out, verdicts.into_iter(), ka);
            return done;
        }
        let ticket = cx.defer();
        self.batches.pending.insert(
            id,
            PendingBatch {
                ticket,
                keep_alive: ka,
                verdicts,
                parts_left,
            },
        );
        (Outcome::Deferred(ticket), Op::AuthenticateBatch)
    }

    /// Verdicts for `tokens`: cache hits, then one batch verification of the misses.
    pub(super) fn verify_many(&mut self, tokens: &[&[u8]], now_s: u64) -> Vec<Verdict> {
        let mut verdicts: Vec<Option<Verdict>> = tokens
            .iter()
            .map(|t| {
                let cached = self.cache.get(t, now_s)?;
                Some(if is_revoked(&self.revoked, &cached.claims) {
                    Err(Denial::Revoked)
                } else {
                    Ok(cached.claims.clone())
                })
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

    /// Another shard's part: verify here, send the verdicts back.
    pub(super) fn on_batch_part(
        &mut self,
        origin: usize,
        batch_id: u64,
        offset: usize,
        tokens: &[String],
        now_s: u64,
    ) {
        self.counters.batch_parts_served += 1;
        let refs: Vec<&[u8]> = tokens.iter().map(String::as_bytes).collect();
        let verdicts = self.verify_many(&refs, now_s);
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
