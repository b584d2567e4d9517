//! authenticate: `GET /v1/authenticate` (the hot path), `POST /v1/authenticate` and the batch.

use std::rc::Rc;

use serde::Deserialize;

use super::respond;
use super::{is_revoked, Cached, Denial, ShardApp};
use crate::auth::{Claims, TokenError};
use crate::http::{self, Request, Status};
use crate::monitor::Op;

/// RFC 6750 challenge for a request without credentials.
const CHALLENGE_NONE: &[u8] = b"www-authenticate: Bearer realm=\"subzero\"";

#[derive(Deserialize)]
struct TokenBody<'a> {
    #[serde(borrow)]
    token: std::borrow::Cow<'a, str>,
}

impl ShardApp {
    /// Looks `token` up in the cache, else verifies it (reloading an external issuer's JWKS
    /// once on an unknown kid), checks revocation and caches the result.
    pub(super) fn check_token(
        &mut self,
        token: &[u8],
        now_s: u64,
    ) -> (Result<Rc<Cached>, Denial>, Op) {
        if let Some(cached) = self.cache.get(token, now_s) {
            if is_revoked(&self.revoked, &cached.claims) {
                return (Err(Denial::Revoked), Op::AuthenticateHit);
            }
            if cached.strict {
                return (Ok(Rc::clone(cached)), Op::AuthenticateHit);
            }
            // Admitted by a fast batch: single-token paths accept only what verify_strict
            // accepts, so verify again (and replace the entry with a strict one).
        }
        self.counters.verifications += 1;
        let claims = match self.verifier.verify(token, now_s) {
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
        };
        (
            self.admit(token, claims, true, now_s),
            Op::AuthenticateVerify,
        )
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
        now_s: u64,
        out: &mut Vec<u8>,
    ) -> Op {
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
            return Op::Other;
        };
        let (result, op) = self.check_token(token, now_s);
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
        op
    }

    pub(super) fn authenticate_post(
        &mut self,
        req: &Request<'_>,
        now_s: u64,
        out: &mut Vec<u8>,
    ) -> Op {
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
                return Op::Other;
            }
        };
        let (result, op) = self.check_token(body.token.as_bytes(), now_s);
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
        op
    }
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
