//! `POST /v1/authenticate/batch`: cache hits first, the rest through Ed25519 batch
//! verification; batches of at least `SPLIT_MIN_TOKENS` are split across every shard over the
//! mesh and answered when the last part returns.

use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::respond;
use super::{Denial, ShardApp, ShardMsg};
use crate::auth::Claims;
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::shard::{Cx, Outcome, Ready, Ticket};

/// Batches this large are split across shards; below it the mesh round trip is not worth it.
pub const SPLIT_MIN_TOKENS: usize = 256;
/// Split batches in flight per shard; more are verified locally.
pub const MAX_PENDING_BATCHES: usize = 64;

/// One token's verdict as it crosses the mesh.
pub type Verdict = Result<Claims, Denial>;

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
        let n_shards = self.shared.mesh.n_shards();
        if tokens.len() < SPLIT_MIN_TOKENS
            || n_shards == 1
            || self.batches.pending.len() >= MAX_PENDING_BATCHES
        {
            let verdicts = self.verify_many(&tokens, cx.now_s);
            write_batch(out, verdicts.into_iter().map(Some), ka);
            return done;
        }
        let id = self.batches.next_id;
        self.batches.next_id += 1;
        let part_len = tokens.len().div_ceil(n_shards);
        let mut verdicts: Vec<Option<Verdict>> = vec![None; tokens.len()];
        let mut parts_left = 0;
        let mut local: Vec<usize> = Vec::new();
        for (part_idx, chunk) in tokens.chunks(part_len).enumerate() {
            let offset = part_idx * part_len;
            let to_idx = (self.idx + part_idx) % n_shards;
            if to_idx == self.idx {
                local.push(part_idx);
                continue;
            }
            let msg = ShardMsg::BatchPart {
                origin: self.idx,
                batch_id: id,
                offset,
                tokens: chunk
                    .iter()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect(),
            };
            match self.shared.mesh.send(self.idx, to_idx, msg) {
                Ok(()) => parts_left += 1,
                Err(_) => local.push(part_idx), // that edge is full: do the part here
            }
        }
        for part_idx in local {
            let offset = part_idx * part_len;
            let end = (offset + part_len).min(tokens.len());
            for (i, v) in self
                .verify_many(&tokens[offset..end], cx.now_s)
                .into_iter()
                .enumerate()
            {
                verdicts[offset + i] = Some(v);
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
            .map(|t| self.cache.get(t, now_s).map(|c| Ok(c.claims.clone())))
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
        for (&i, claims) in unique_idx.iter().zip(verified) {
            let admitted = self.admit(tokens[i], claims, now_s);
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
            match self.shared.mesh.send(self.idx, origin, msg) {
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
                Ok(claims)
                    if claims
                        .jti
                        .as_deref()
                        .is_some_and(|jti| self.revoked.contains_key(jti)) =>
                {
                    Err(Denial::Revoked)
                }
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
