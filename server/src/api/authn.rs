//! authenticate: `GET /v1/authenticate` (the hot path), `POST /v1/authenticate` and the batch.

use std::rc::Rc;

use serde::Deserialize;

use super::respond;
use super::{is_revoked, Cached, Denial, ShardApp};
use crate::auth::{Claims, TokenError};
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::shard::{Cx, Outcome};

/// RFC 6750 challenge for a request without credentials.
pub(super) const CHALLENGE_NONE: &[u8] = b"www-authenticate: Bearer realm=\"subzero\"";

#[derive(Deserialize)]
struct TokenBody<'a> {
    #[serde(borrow)]
    token: std::borrow::Cow<'a, str>,
}

/// How long an invalid token is remembered by its exact bytes, so a replay costs a lookup.
pub const REJECTED_TTL_S: u64 = 60;
/// Invalid tokens remembered per shard.
pub const REJECTED_ENTRIES: usize = 4096;

/// What checking one token came to.
pub(super) enum Check {
    /// Answered: the cached claims, or why not.
    Done(Result<Rc<Cached>, Denial>, Op),
    /// It needs a verification and this pass's budget is spent: offer it again next turn.
    Later,
    /// Its source failed too many verifications lately: `429` for `retry_after_s`.
    Limited {
        /// Seconds until the source's failure budget has a token again.
        retry_after_s: u64,
    },
}

/// Whether a failed verification may be remembered by the token's bytes: not when the same
/// bytes can become valid later (not yet valid; a key id a JWKS reload or rotation may bring).
pub(super) fn rejection_is_stable(e: &TokenError) -> bool {
    !matches!(e, TokenError::NotYetValid | TokenError::UnknownKid { .. })
}

impl ShardApp {
    /// Looks `token` up in the cache (and the invalid-token cache), else verifies it within
    /// this pass's budget and its source's failure budget (reloading an external issuer's JWKS
    /// once on an unknown kid), checks revocation and caches the result.
    pub(super) fn check_token(&mut self, token: &[u8], cx: &Cx<'_>) -> Check {
        let now_s = cx.now_s;
        if let Some(cached) = self.cache.get(token, now_s) {
            if is_revoked(&self.revoked, &cached.claims) {
                return Check::Done(Err(Denial::Revoked), Op::AuthenticateHit);
            }
            if cached.strict {
                return Check::Done(Ok(Rc::clone(cached)), Op::AuthenticateHit);
            }
            // Admitted by a fast batch: single-token paths accept only what verify_strict
            // accepts, so verify again (and replace the entry with a strict one).
        }
        if let Some(e) = self.rejected.get(token, now_s) {
            self.counters.rejected_hits += 1;
            return Check::Done(Err(Denial::Token(e.clone())), Op::AuthenticateHit);
        }
        if let Some(retry_after_s) = self.over_failure_budget(cx) {
            return Check::Limited { retry_after_s };
        }
        if !self.pass_budget.take(cx.pass, 1) {
            self.counters.verify_deferred += 1;
            return Check::Later;
        }
        let claims = self.verify_now(token, now_s);
        if let Err(e) = &claims {
            self.note_failure(token, e, cx);
        }
        Check::Done(
            self.admit(token, claims, true, now_s),
            Op::AuthenticateVerify,
        )
    }

    /// Verifies `token` now (the caller took the budget), reloading an external issuer's JWKS
    /// once on an unknown kid (rate-limited in the verifier). Neither cached nor remembered.
    pub(super) fn verify_now(&mut self, token: &[u8], now_s: u64) -> Result<Claims, TokenError> {
        self.counters.verifications += 1;
        match self.verifier.verify(token, now_s) {
            Err(TokenError::UnknownKid {
                issuer: Some(issuer),
            }) => match self.verifier.reload_issuer(&issuer, now_s) {
                Ok(true) => {
                    self.counters.jwks_reloads += 1;
                    self.verifier.verify(token, now_s)
                }
                _ => Err(TokenError::UnknownKid {
                    issuer: Some(issuer),
                }),
            },
            other => other,
        }
    }

    /// Verifies a presented token: its cached claims, or the whole answer when it is refused,
    /// its source is over its failure budget (429), or verifying must wait for the next turn.
    pub(super) fn verified_or_answer(
        &mut self,
        token: &[u8],
        cx: &Cx<'_>,
        out: &mut Vec<u8>,
        ka: bool,
    ) -> Result<Rc<Cached>, (Outcome, Op)> {
        match self.check_token(token, cx) {
            Check::Done(Ok(cached), _) => Ok(cached),
            Check::Done(Err(denial), _) => {
                respond::invalid_token(out, &denial, ka);
                Err((Outcome::Done, Op::Other))
            }
            Check::Later => Err((Outcome::Later, Op::Other)),
            Check::Limited { retry_after_s } => {
                respond::too_many_failures(out, self.failures.policy(), retry_after_s, ka);
                Err((Outcome::Done, Op::Other))
            }
        }
    }

    /// `Some(retry_after_s)` when `cx.peer` has spent its budget of failed verifications; a
    /// source that keeps trying is reported for the kernel blocklist.
    pub(super) fn over_failure_budget(&mut self, cx: &Cx<'_>) -> Option<u64> {
        let now_ms = crate::unix_now_ms();
        if !self.failures.exhausted(cx.peer, now_ms) {
            return None;
        }
        self.counters.verify_limited += 1;
        // `None` if it refilled in between.
        let verdict = self.failures.check(cx.peer, now_ms);
        self.refusal(verdict, cx.peer)
    }

    /// A verification failed: charge the source's failure budget and remember the bytes.
    pub(super) fn note_failure(&mut self, token: &[u8], e: &TokenError, cx: &Cx<'_>) {
        let _ = self.failures.check(cx.peer, crate::unix_now_ms());
        if rejection_is_stable(e) {
            let until_s = cx.now_s + REJECTED_TTL_S;
            self.rejected.insert(token, e.clone(), until_s, cx.now_s);
        }
    }

    /// Revocation check and cache insert for a freshly verified token; `strict` says whether
    /// `verify_strict` (rather than a cofactored batch) accepted its signature.
    pub(super) fn admit(
        &mut self,
        token: &[u8],
        claims: Result<Claims, TokenError>,
        strict: bool,
        now_s: u64,
    ) -> Result<Rc<Cached>, Denial> {
        let claims = claims.map_err(Denial::Token)?;
        if is_revoked(&self.revoked, &claims) {
            return Err(Denial::Revoked);
        }
        if is_id_jag(token, &claims) {
            return Err(Denial::Token(TokenError::NotAnAccessToken));
        }
        let cached = Rc::new(Cached {
            headers: auth_headers(&claims),
            claims,
            strict,
        });
        let exp_s = cached.claims.exp;
        self.cache.insert(token, Rc::clone(&cached), exp_s, now_s);
        Ok(cached)
    }

    pub(super) fn authenticate_get(
        &mut self,
        req: &Request<'_>,
        cx: &Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let Some(token) = req.bearer() else {
            self.counters.auth_denied += 1;
            respond::error_with(
                out,
                Status::Unauthorized,
                "invalid_request",
                "missing bearer token",
                &[CHALLENGE_NONE],
                ka,
            );
            return (Outcome::Done, Op::Other);
        };
        let (result, op) = match self.check_token(token, cx) {
            Check::Done(result, op) => (result, op),
            Check::Later => return (Outcome::Later, Op::Other),
            Check::Limited { retry_after_s } => {
                respond::too_many_failures(out, self.failures.policy(), retry_after_s, ka);
                return (Outcome::Done, Op::Other);
            }
        };
        match result {
            Ok(cached) => {
                self.counters.auth_ok += 1;
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
                out.extend_from_slice(&cached.headers);
                if !ka {
                    out.extend_from_slice(b"connection: close\r\n");
                }
                out.extend_from_slice(b"content-length: 0\r\n\r\n");
            }
            Err(e) => {
                self.counters.auth_denied += 1;
                respond::invalid_token(out, &e, ka);
            }
        }
        (Outcome::Done, op)
    }

    pub(super) fn authenticate_post(
        &mut self,
        req: &Request<'_>,
        cx: &Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let body: TokenBody<'_> = match serde_json::from_slice(req.body) {
            Ok(body) => body,
            Err(_) => {
                respond::error(
                    out,
                    Status::BadRequest,
                    "invalid_request",
                    "body must be JSON {\"token\": \"...\"}",
                    ka,
                );
                return (Outcome::Done, Op::Other);
            }
        };
        let (result, op) = match self.check_token(body.token.as_bytes(), cx) {
            Check::Done(result, op) => (result, op),
            Check::Later => return (Outcome::Later, Op::Other),
            Check::Limited { retry_after_s } => {
                respond::too_many_failures(out, self.failures.policy(), retry_after_s, ka);
                return (Outcome::Done, Op::Other);
            }
        };
        match result {
            Ok(cached) => {
                self.counters.auth_ok += 1;
                let text =
                    serde_json::json!({ "active": true, "claims": cached.claims }).to_string();
                http::write_json(out, Status::Ok, text.as_bytes(), ka);
            }
            Err(e) => {
                self.counters.auth_denied += 1;
                respond::invalid_token(out, &e, ka);
            }
        }
        (Outcome::Done, op)
    }
}

/// Whether a verified token is an ID-JAG. Only tokens with a `client_id` claim (every ID-JAG
/// has one; a plain access token of ours does not) pay for reading the header.
fn is_id_jag(token: &[u8], claims: &Claims) -> bool {
    claims.client_id().is_some()
        && crate::auth::header_typ(token).is_some_and(|typ| {
            let typ = typ.to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            typ == crate::xaa::ID_JAG_TYP
        })
}

/// `x-auth-subject`, `x-auth-scopes`, `x-auth-issuer` header lines, each ending in CRLF. Values
/// from external issuers are untrusted text: control characters are percent-encoded so they
/// can never split a header.
fn auth_headers(claims: &Claims) -> Box<[u8]> {
    let mut out = Vec::with_capacity(96);
    for (name, value) in [
        (&b"x-auth-subject: "[..], claims.sub.as_str()),
        (b"x-auth-scopes: ", claims.scope.as_deref().unwrap_or("")),
        (b"x-auth-issuer: ", claims.iss.as_str()),
    ] {
        out.extend_from_slice(name);
        respond::push_header_value(&mut out, value);
        out.extend_from_slice(b"\r\n");
    }
    out.into_boxed_slice()
}
