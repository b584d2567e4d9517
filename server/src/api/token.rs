//! Token lifecycle: `POST /v1/token` (client credentials, pool first), `POST /v1/revoke`,
//! `POST /v1/keys/rotate`, and the pool's background refill.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;

use super::respond;
use super::ShardApp;
use crate::auth::{self, Claims};
use crate::config::ClientConfig;
use crate::control::{ControlMsg, RevocationLog};
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::pool::{PoolKey, PooledToken};
use crate::shard::{Cx, Outcome};

/// The fields of a token or revocation request, from a form or JSON body.
#[derive(Deserialize, Default)]
struct TokenParams<'a> {
    #[serde(borrow, default)]
    grant_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client_secret: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    scope: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    audience: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    jti: Option<Cow<'a, str>>,
    #[serde(default)]
    exp: Option<u64>,
}

/// Parses a JSON object or an `application/x-www-form-urlencoded` body.
fn parse_params<'a>(req: &Request<'a>) -> Result<TokenParams<'a>, &'static str> {
    let is_json = req
        .content_type
        .is_some_and(|ct| ct.starts_with(b"application/json"));
    if is_json || req.body.first() == Some(&b'{') {
        return serde_json::from_slice(req.body).map_err(|_| "body is not a valid JSON object");
    }
    let text = std::str::from_utf8(req.body).map_err(|_| "form body is not UTF-8")?;
    let mut params = TokenParams::default();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or("form body has a bad percent-escape")?;
        let slot = match key {
            "grant_type" => &mut params.grant_type,
            "client_id" => &mut params.client_id,
            "client_secret" => &mut params.client_secret,
            "scope" => &mut params.scope,
            "audience" => &mut params.audience,
            "token" => &mut params.token,
            "jti" => &mut params.jti,
            _ => continue,
        };
        *slot = Some(value);
    }
    Ok(params)
}

/// Decodes `+` and `%XX`; borrows when there is nothing to decode.
fn percent_decode(text: &str) -> Option<Cow<'_, str>> {
    if !text.contains(['%', '+']) {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// `Authorization: Basic base64(id:secret)` (RFC 6749 §2.3.1).
fn basic_credentials(req: &Request<'_>) -> Option<(String, String)> {
    let value = req.authorization?;
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value[6..].trim_ascii())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Finds the client and checks its secret in constant time.
fn authenticate_client<'c>(
    clients: &'c [ClientConfig],
    id: &str,
    secret: &str,
) -> Option<(usize, &'c ClientConfig)> {
    let (idx, client) = clients.iter().enumerate().find(|(_, c)| c.id == id)?;
    respond::ct_eq(client.secret.as_bytes(), secret.as_bytes()).then_some((idx, client))
}

/// A refused grant: status, OAuth error code, description.
type GrantError = (Status, &'static str, String);

/// An authenticated client: its index, its config, and a non-default (audience, scope) if asked.
type Grant<'c> = (usize, &'c ClientConfig, Option<(String, String)>);

/// Authenticates the client and checks the audience and scope it asks for. `None` for the
/// audience/scope pair means the client's defaults (its precomputed pool key).
fn resolve_grant<'c>(
    config: &'c crate::config::Config,
    id: &str,
    secret: &str,
    params: &TokenParams<'_>,
) -> Result<Grant<'c>, GrantError> {
    let Some((client_idx, client)) = authenticate_client(&config.clients, id, secret) else {
        return Err((
            Status::Unauthorized,
            "invalid_client",
            "client authentication failed".into(),
        ));
    };
    if params.audience.is_none() && params.scope.is_none() {
        return Ok((client_idx, client, None));
    }
    let audience = match params.audience.as_deref() {
        Some(aud) if client.audiences.iter().any(|a| a == aud) => aud.to_owned(),
        Some(_) => {
            return Err((
                Status::BadRequest,
                "invalid_target",
                "audience is not allowed for this client".into(),
            ));
        }
        None => default_audience(config, client),
    };
    let scope = match params.scope.as_deref() {
        Some(requested) => {
            if let Some(bad) = requested
                .split_ascii_whitespace()
                .find(|s| !client.scopes.iter().any(|c| c == s))
            {
                return Err((
                    Status::BadRequest,
                    "invalid_scope",
                    format!("scope {bad:?} is not allowed for this client"),
                ));
            }
            requested.to_owned()
        }
        None => client.scopes.join(" "),
    };
    Ok((client_idx, client, Some((audience, scope))))
}

fn default_audience(config: &crate::config::Config, client: &ClientConfig) -> String {
    client
        .audiences
        .first()
        .cloned()
        .unwrap_or_else(|| config.auth.issuer.clone())
}

/// The pool key of each client's default grant (first audience, all scopes), by client index.
pub(super) fn default_pool_keys(config: &crate::config::Config) -> Vec<PoolKey> {
    config
        .clients
        .iter()
        .enumerate()
        .map(|(idx, client)| {
            PoolKey::new(
                idx as u32,
                &default_audience(config, client),
                &client.scopes.join(" "),
            )
        })
        .collect()
}

fn sign_for(
    key: &PoolKey,
    client: &ClientConfig,
    issuer: &str,
    ttl_s: u64,
    signing: &ed25519_dalek::SigningKey,
    kid: &str,
    now_s: u64,
) -> PooledToken {
    let scopes: Vec<&str> = key.scopes.split_ascii_whitespace().collect();
    let claims = Claims::new_for(
        issuer,
        &client.id,
        vec![key.audience.clone()],
        &scopes,
        ttl_s,
        now_s,
        crate::auth::new_jti(),
    );
    PooledToken {
        token: auth::sign(signing, kid, &claims),
        expires_at_s: claims.exp,
    }
}

impl ShardApp {
    pub(super) fn issue_token(&mut self, req: &Request<'_>, now_s: u64, out: &mut Vec<u8>) -> Op {
        let ka = req.keep_alive;
        let params = match parse_params(req) {
            Ok(p) => p,
            Err(why) => {
                respond::error(out, Status::BadRequest, "invalid_request", why, ka);
                return Op::Other;
            }
        };
        if params.grant_type.as_deref() != Some("client_credentials") {
            respond::error(
                out,
                Status::BadRequest,
                "unsupported_grant_type",
                "grant_type must be client_credentials",
                ka,
            );
            return Op::Other;
        }
        let basic = basic_credentials(req);
        let (id, secret): (&str, &str) = match (&basic, &params.client_id, &params.client_secret) {
            (Some((id, secret)), _, _) => (id, secret),
            (None, Some(id), Some(secret)) => (id, secret),
            _ => {
                respond::error(
                    out,
                    Status::Unauthorized,
                    "invalid_client",
                    "client credentials are missing",
                    ka,
                );
                return Op::Other;
            }
        };
        let config = std::sync::Arc::clone(&self.shared.config);
        let (client_idx, client, custom) = match resolve_grant(&config, id, secret, &params) {
            Ok(grant) => grant,
            Err((status, code, text)) => {
                respond::error(out, status, code, &text, ka);
                return Op::Other;
            }
        };
        let custom_key;
        let key = match custom {
            None => &self.default_keys[client_idx],
            Some((audience, scope)) => {
                custom_key = PoolKey::new(client_idx as u32, &audience, &scope);
                &custom_key
            }
        };
        self.pool_refill_due = true;
        let (token, op) = match self.pool.take(key, now_s) {
            Some(pooled) => (pooled, Op::TokenPoolHit),
            None => {
                let ttl_s = config.auth.token_ttl_s;
                let t = sign_for(
                    key,
                    client,
                    &config.auth.issuer,
                    ttl_s,
                    &self.keys.signing_key,
                    &self.keys.kid,
                    now_s,
                );
                (t, Op::TokenSign)
            }
        };
        // The token is base64url and dots, so it needs no escaping; the scope string may.
        let mut body = Vec::with_capacity(token.token.len() + 128);
        body.extend_from_slice(b"{\"access_token\":\"");
        body.extend_from_slice(token.token.as_bytes());
        body.extend_from_slice(b"\",\"token_type\":\"Bearer\",\"expires_in\":");
        http::push_decimal(&mut body, token.expires_at_s.saturating_sub(now_s) as usize);
        body.extend_from_slice(b",\"scope\":");
        let _ = serde_json::to_writer(&mut body, &key.scopes);
        body.push(b'}');
        http::write_response(
            out,
            Status::Ok,
            Some("application/json"),
            &[b"cache-control: no-store"],
            &body,
            ka,
        );
        op
    }

    pub(super) fn revoke(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::Revoke);
        let params = match parse_params(req) {
            Ok(p) => p,
            Err(why) => {
                respond::error(out, Status::BadRequest, "invalid_request", why, ka);
                return done;
            }
        };
        let admin = self.is_admin(req);
        let (jti, exp_s) = if let Some(token) = params.token.as_deref() {
            // Holder revocation (RFC 7009): the token proves itself.
            match self.verifier.verify(token.as_bytes(), cx.now_s) {
                Ok(claims) => match claims.jti {
                    Some(jti) => (jti, claims.exp.saturating_add(self.config().auth.leeway_s)),
                    None => {
                        respond::error(
                            out,
                            Status::BadRequest,
                            "invalid_request",
                            "token has no jti, so it cannot be revoked",
                            ka,
                        );
                        return done;
                    }
                },
                Err(auth::TokenError::Expired) => {
                    let body =
                        serde_json::json!({ "revoked": false, "reason": "token already expired" })
                            .to_string();
                    http::write_json(out, Status::Ok, body.as_bytes(), ka);
                    return done;
                }
                Err(e) => {
                    respond::error(
                        out,
                        Status::BadRequest,
                        "invalid_token",
                        e.description(),
                        ka,
                    );
                    return done;
                }
            }
        } else if admin {
            let Some(jti) = params.jti.as_deref() else {
                respond::error(
                    out,
                    Status::BadRequest,
                    "invalid_request",
                    "give a token, or (admin) a jti and exp",
                    ka,
                );
                return done;
            };
            let max_exp = cx.now_s + self.config().auth.token_ttl_s + self.config().auth.leeway_s;
            (jti.to_owned(), params.exp.unwrap_or(max_exp))
        } else {
            let (status, code, text) = if params.jti.is_some() {
                (
                    Status::Forbidden,
                    "insufficient_scope",
                    "revoking by jti needs the admin token",
                )
            } else {
                (
                    Status::BadRequest,
                    "invalid_request",
                    "give the token to revoke",
                )
            };
            respond::error(out, status, code, text, ka);
            return done;
        };
        if !RevocationLog::valid_jti(&jti) {
            respond::error(
                out,
                Status::BadRequest,
                "invalid_request",
                "jti must be 1-256 printable ASCII characters",
                ka,
            );
            return done;
        }
        let ticket = cx.defer();
        let msg = ControlMsg::Revoke {
            shard_idx: self.idx,
            ticket,
            jti,
            exp_s,
            keep_alive: ka,
        };
        self.send_to_control(msg, ticket, out, ka, Op::Revoke)
    }

    pub(super) fn rotate_keys(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        if self.config().admin_token.is_none() {
            respond::error(
                out,
                Status::NotFound,
                "invalid_request",
                "admin endpoints are off (no [admin] token_file configured)",
                ka,
            );
            return (Outcome::Done, Op::Other);
        }
        if !self.is_admin(req) {
            respond::error_with(
                out,
                Status::Unauthorized,
                "invalid_token",
                "admin token required",
                &[b"www-authenticate: Bearer realm=\"subzero-admin\""],
                ka,
            );
            return (Outcome::Done, Op::Other);
        }
        let ticket = cx.defer();
        let msg = ControlMsg::RotateKeys {
            shard_idx: self.idx,
            ticket,
            keep_alive: ka,
        };
        self.send_to_control(msg, ticket, out, ka, Op::Other)
    }

    /// Hands `msg` to the control plane and defers the response; 503 when its queue is full.
    fn send_to_control(
        &mut self,
        msg: ControlMsg,
        ticket: crate::shard::Ticket,
        out: &mut Vec<u8>,
        ka: bool,
        op: Op,
    ) -> (Outcome, Op) {
        match self.control.try_send(msg) {
            Ok(()) => (Outcome::Deferred(ticket), op),
            Err(_) => {
                self.counters.control_busy += 1;
                respond::error_with(
                    out,
                    Status::ServiceUnavailable,
                    "temporarily_unavailable",
                    "control plane is busy; retry",
                    &[b"retry-after: 1"],
                    ka,
                );
                (Outcome::Done, op)
            }
        }
    }

    /// Background: signs pool tokens within `budget`; true when more refill is pending.
    pub(super) fn refill_pool(&mut self, now_s: u64, budget: usize) -> bool {
        let config = &self.shared.config;
        let keys = &self.keys;
        let budget = budget.min(config.pool.refill_budget);
        let mut sign = |key: &PoolKey, now_s: u64| {
            let client = config.clients.get(key.client_idx as usize)?;
            Some(sign_for(
                key,
                client,
                &config.auth.issuer,
                config.auth.token_ttl_s,
                &keys.signing_key,
                &keys.kid,
                now_s,
            ))
        };
        self.pool.refill(now_s, budget, &mut sign) == budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a+b%20c").unwrap(), "a b c");
        assert_eq!(percent_decode("plain").unwrap(), "plain");
        assert!(percent_decode("bad%zz").is_none());
        assert!(percent_decode("cut%2").is_none());
    }
}
