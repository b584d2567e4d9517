//! Token lifecycle: `POST /v1/token` (client credentials, pool first), `POST /v1/revoke`,
//! `POST /v1/keys/rotate`, and the pool's background refill.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;

use super::respond;
use super::ShardApp;
use crate::auth::{self, Claims};
use crate::config::ClientConfig;
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::plane::{valid_jti, ControlMsg, ReplyTo};
use crate::pool::{PoolKey, PooledToken};
use crate::shard::{Cx, Outcome};

/// A refused request: status, OAuth error code, description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    status: Status,
    code: &'static str,
    description: Cow<'static, str>,
}

impl Refusal {
    fn new(
        status: Status,
        code: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Refusal {
        Refusal {
            status,
            code,
            description: description.into(),
        }
    }

    fn bad_request(description: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(Status::BadRequest, "invalid_request", description)
    }

    pub(super) fn render(&self, out: &mut Vec<u8>, ka: bool) {
        respond::error(out, self.status, self.code, &self.description, ka);
    }
}

/// The fields of a token or revocation request, from a form or JSON body.
#[derive(Deserialize, Default)]
pub(super) struct TokenParams<'a> {
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
    /// Admin revocation: the issuer of the `jti` (default: ours).
    #[serde(borrow, default)]
    iss: Option<Cow<'a, str>>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(borrow, default)]
    assertion: Option<Cow<'a, str>>,
}

/// Parses a JSON object or an `application/x-www-form-urlencoded` body.
pub(super) fn parse_params<'a>(req: &Request<'a>) -> Result<TokenParams<'a>, &'static str> {
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
            "iss" => &mut params.iss,
            "assertion" => &mut params.assertion,
            _ => continue,
        };
        *slot = Some(value);
    }
    Ok(params)
}

/// Whether a JSON body's `grant_type` is token exchange (read alone, ignoring the rest).
fn is_token_exchange(req: &Request<'_>) -> bool {
    #[derive(Deserialize)]
    struct GrantOnly<'a> {
        #[serde(borrow, default)]
        grant_type: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<GrantOnly<'_>>(req.body)
        .is_ok_and(|g| g.grant_type.as_deref() == Some(crate::xaa::GRANT_TOKEN_EXCHANGE))
}

/// Decodes `+` and `%XX` (two hex digits, RFC 3986 §2.1); borrows when there is nothing to
/// decode. `None` on any other escape or a result that is not UTF-8.
pub(super) fn percent_decode(text: &str) -> Option<Cow<'_, str>> {
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
                // Not `u8::from_str_radix` alone: it takes a sign, so `%+e` would decode.
                let hi = char::from(*bytes.get(i + 1)?).to_digit(16)?;
                let lo = char::from(*bytes.get(i + 2)?).to_digit(16)?;
                out.push((hi << 4 | lo) as u8);
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

/// The client's credentials, from exactly one place (RFC 6749 §2.3.1: HTTP Basic, or
/// `client_id` + `client_secret` in the body; a client must not use both).
fn client_credentials<'a>(
    basic: Option<&'a (String, String)>,
    params: &'a TokenParams<'_>,
) -> Result<(&'a str, &'a str), Refusal> {
    match (
        basic,
        params.client_id.as_deref(),
        params.client_secret.as_deref(),
    ) {
        (Some(_), _, Some(_)) => Err(Refusal::bad_request(
            "client credentials given both in the Authorization header and in the body; use one",
        )),
        (Some((id, secret)), body_id, None) => match body_id {
            Some(body_id) if body_id != id => Err(Refusal::bad_request(
                "client_id in the body differs from the Authorization header",
            )),
            _ => Ok((id, secret)),
        },
        (None, Some(id), Some(secret)) => Ok((id, secret)),
        _ => Err(Refusal::new(
            Status::Unauthorized,
            "invalid_client",
            "client credentials are missing",
        )),
    }
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

/// The calling client of a grant other than client credentials (token exchange, jwt-bearer),
/// authenticated from HTTP Basic or the body's `client_id` + `client_secret`, exactly as for
/// client credentials. Returns its index in the configuration.
pub(super) fn authenticated_client(
    config: &crate::config::Config,
    req: &Request<'_>,
    body_id: Option<&str>,
    body_secret: Option<&str>,
) -> Result<usize, Refusal> {
    let basic = basic_credentials(req);
    let params = TokenParams {
        client_id: body_id.map(Cow::Borrowed),
        client_secret: body_secret.map(Cow::Borrowed),
        ..TokenParams::default()
    };
    let (id, secret) = client_credentials(basic.as_ref(), &params)?;
    match authenticate_client(&config.clients, id, secret) {
        Some((client_idx, _)) => Ok(client_idx),
        None => Err(Refusal::new(
            Status::Unauthorized,
            "invalid_client",
            "client authentication failed",
        )),
    }
}

/// An authenticated client: its index, its config, and a non-default (audience, scope) if asked.
type Grant<'c> = (usize, &'c ClientConfig, Option<(String, String)>);

/// Authenticates the client and checks the audience and scope it asks for. `None` for the
/// audience/scope pair means the client's defaults (its precomputed pool key).
fn resolve_grant<'c>(
    config: &'c crate::config::Config,
    id: &str,
    secret: &str,
    params: &TokenParams<'_>,
) -> Result<Grant<'c>, Refusal> {
    let Some((client_idx, client)) = authenticate_client(&config.clients, id, secret) else {
        return Err(Refusal::new(
            Status::Unauthorized,
            "invalid_client",
            "client authentication failed",
        ));
    };
    if params.audience.is_none() && params.scope.is_none() {
        return Ok((client_idx, client, None));
    }
    let audience = match params.audience.as_deref() {
        Some(aud) if client.audiences.iter().any(|a| a == aud) => aud.to_owned(),
        Some(_) => {
            return Err(Refusal::new(
                Status::BadRequest,
                "invalid_target",
                "audience is not allowed for this client",
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
                return Err(Refusal::new(
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

/// What a revocation request may revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RevokeTarget {
    /// Deny this `jti` until `exp_s`.
    Jti {
        /// Issuer of the token.
        iss: String,
        /// Token id.
        jti: String,
        /// The denylist entry's expiry.
        exp_s: u64,
    },
    /// The token has expired already (beyond the leeway, so no verifier accepts it): nothing
    /// to revoke, nothing stored, and the control plane is not asked.
    AlreadyExpired {
        /// Why, for the answer's `reason`.
        reason: &'static str,
        /// The `jti` when the request named one (admin).
        jti: Option<String>,
    },
}

/// `reason` of a holder's revocation of a token that has expired.
const HOLDER_TOKEN_EXPIRED: &str = "token already expired";
/// `reason` of an admin revocation whose `exp` (plus the leeway) has passed.
const ADMIN_EXP_PASSED: &str =
    "token already expired: exp plus the leeway is in the past, so nothing was stored";

/// The facts a revocation decision needs besides the request.
struct RevokeRules {
    admin: bool,
    /// Our issuer: an admin revocation without `iss` is of one of our tokens.
    issuer: String,
    now_s: u64,
    token_ttl_s: u64,
    leeway_s: u64,
}

fn bad_jti() -> Refusal {
    Refusal::bad_request("jti must be 1-256 printable ASCII characters")
}

/// Who may revoke what (RFC 7009 for holders; by `jti` for the admin). `verify` checks a
/// holder's token; the decision does no other work.
fn revoke_target(
    params: &TokenParams<'_>,
    rules: &RevokeRules,
    verify: impl FnOnce(&[u8]) -> Result<Claims, auth::TokenError>,
) -> Result<RevokeTarget, Refusal> {
    let target = if let Some(token) = params.token.as_deref() {
        // Holder revocation (RFC 7009): the token proves itself.
        match verify(token.as_bytes()) {
            Ok(Claims {
                iss,
                jti: Some(jti),
                exp,
                ..
            }) => RevokeTarget::Jti {
                iss,
                jti,
                exp_s: exp.saturating_add(rules.leeway_s),
            },
            Ok(_) => {
                return Err(Refusal::bad_request(
                    "token has no jti, so it cannot be revoked",
                ))
            }
            Err(auth::TokenError::Expired) => {
                return Ok(RevokeTarget::AlreadyExpired {
                    reason: HOLDER_TOKEN_EXPIRED,
                    jti: None,
                })
            }
            Err(e) => {
                return Err(Refusal::new(
                    Status::BadRequest,
                    "invalid_token",
                    e.description(),
                ))
            }
        }
    } else if rules.admin {
        let Some(jti) = params.jti.as_deref() else {
            return Err(Refusal::bad_request(
                "give a token, or (admin) a jti and exp",
            ));
        };
        // The entry lives as long as a verifier accepts the token: its `exp` plus the leeway,
        // like a holder's. Without an `exp`, it outlives any token we could have issued.
        let exp_s = match params.exp {
            Some(exp) => exp.saturating_add(rules.leeway_s),
            None => rules.now_s + rules.token_ttl_s + rules.leeway_s,
        };
        if !valid_jti(jti) {
            return Err(bad_jti());
        }
        if exp_s <= rules.now_s {
            // Answered here, without the control plane: there is nothing to persist.
            return Ok(RevokeTarget::AlreadyExpired {
                reason: ADMIN_EXP_PASSED,
                jti: Some(jti.to_owned()),
            });
        }
        RevokeTarget::Jti {
            iss: params.iss.as_deref().unwrap_or(&rules.issuer).to_owned(),
            jti: jti.to_owned(),
            exp_s,
        }
    } else if params.jti.is_some() {
        return Err(Refusal::new(
            Status::Forbidden,
            "insufficient_scope",
            "revoking by jti needs the admin token",
        ));
    } else {
        return Err(Refusal::bad_request("give the token to revoke"));
    };
    match &target {
        RevokeTarget::Jti { jti, .. } if !valid_jti(jti) => Err(bad_jti()),
        _ => Ok(target),
    }
}

impl ShardApp {
    pub(super) fn issue_token(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let now_s = cx.now_s;
        let ka = req.keep_alive;
        let params = match parse_params(req) {
            Ok(p) => p,
            // A token exchange may carry JSON arrays (audience, resource): its own parser.
            Err(_) if is_token_exchange(req) => return self.xaa_delegate(req, cx, out),
            Err(why) => {
                respond::error(out, Status::BadRequest, "invalid_request", why, ka);
                return (Outcome::Done, Op::Other);
            }
        };
        match params.grant_type.as_deref() {
            Some("client_credentials") => {}
            Some(crate::xaa::GRANT_JWT_BEARER) => {
                let body_client = (params.client_id.as_deref(), params.client_secret.as_deref());
                let assertion = params.assertion.as_deref();
                return self.redeem_id_jag(req, cx, out, body_client, assertion);
            }
            Some(crate::xaa::GRANT_TOKEN_EXCHANGE) => return self.xaa_delegate(req, cx, out),
            _ => {
                respond::error(
                    out,
                    Status::BadRequest,
                    "unsupported_grant_type",
                    "grant_type must be client_credentials, \
                     urn:ietf:params:oauth:grant-type:token-exchange or \
                     urn:ietf:params:oauth:grant-type:jwt-bearer",
                    ka,
                );
                return (Outcome::Done, Op::Other);
            }
        }
        let basic = basic_credentials(req);
        let config = std::sync::Arc::clone(&self.shared.config);
        let grant = client_credentials(basic.as_ref(), &params)
            .and_then(|(id, secret)| resolve_grant(&config, id, secret, &params));
        let (client_idx, client, custom) = match grant {
            Ok(grant) => grant,
            Err(refusal) => {
                refusal.render(out, ka);
                return (Outcome::Done, Op::Other);
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
            // Signing is costly work: within this pass's budget, or at the next turn.
            None if !self.pass_budget.take(cx.pass, 1) => return (Outcome::Later, Op::Other),
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
        (Outcome::Done, op)
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
        let rules = RevokeRules {
            admin: self.is_admin(req),
            issuer: self.config().auth.issuer.clone(),
            now_s: cx.now_s,
            token_ttl_s: self.config().auth.token_ttl_s,
            leeway_s: self.config().auth.leeway_s,
        };
        if let Some(retry_after_s) = self.over_revocation_budget(cx) {
            respond::over_budget(
                out,
                ("revocations", self.revocation_limiter.policy()),
                retry_after_s,
                "too many revocations from this address; retry later",
                ka,
            );
            return done;
        }
        if params.token.is_some() {
            // A holder's token is verified: costly work, and a failure counts.
            if let Some(retry_after_s) = self.over_failure_budget(cx) {
                respond::too_many_failures(out, self.failures.policy(), retry_after_s, ka);
                return done;
            }
            if !self.pass_budget.take(cx.pass, 1) {
                return (Outcome::Later, Op::Revoke);
            }
        }
        let verifier = &self.verifier;
        let mut failure = None;
        let mut subject = None;
        let target = revoke_target(&params, &rules, |token| {
            let result = verifier.verify(token, cx.now_s);
            failure.clone_from(&result.as_ref().err().cloned());
            subject = result.as_ref().ok().map(|c| (c.iss.clone(), c.sub.clone()));
            result
        });
        if let (Some((iss, sub)), Ok(RevokeTarget::Jti { .. })) = (&subject, &target) {
            // Holders revoke within their subject's (their client's) rate too: one client
            // cannot fill the live table however many addresses it uses.
            if let Some(retry_after_s) = self.over_subject_revocation_budget(iss, sub) {
                respond::over_budget(
                    out,
                    ("subject_revocations", self.subject_revocations.policy()),
                    retry_after_s,
                    "too many revocations for this token's subject; retry later",
                    ka,
                );
                return done;
            }
        }
        if let (Some(e), Some(token)) = (&failure, params.token.as_deref()) {
            if *e != auth::TokenError::Expired {
                self.note_failure(token.as_bytes(), e, cx);
            }
        }
        let (iss, jti, exp_s) = match target {
            Ok(RevokeTarget::Jti { iss, jti, exp_s }) => (iss, jti, exp_s),
            Ok(RevokeTarget::AlreadyExpired { reason, jti }) => {
                // RFC 7009 §2.2: 200 either way; say plainly that nothing was revoked.
                let mut body = serde_json::json!({
                    "revoked": false,
                    "stored": false,
                    "reason": reason,
                });
                if let (Some(jti), Some(fields)) = (jti, body.as_object_mut()) {
                    fields.insert("jti".to_owned(), serde_json::Value::String(jti));
                }
                http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
                return done;
            }
            Err(refusal) => {
                refusal.render(out, ka);
                return done;
            }
        };
        self.send_to_control(cx, out, ka, Op::Revoke, |reply_to| ControlMsg::Revoke {
            reply_to,
            iss,
            jti,
            exp_s,
        })
    }

    pub(super) fn rotate_keys(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        if let Some(refused) = self.refuse_non_admin(req, out) {
            return refused;
        }
        self.send_to_control(cx, out, ka, Op::Other, |reply_to| ControlMsg::RotateKeys {
            reply_to,
        })
    }

    /// `Some(retry_after_s)` when `cx.peer` is over its revocation rate.
    fn over_revocation_budget(&mut self, cx: &Cx<'_>) -> Option<u64> {
        let verdict = self.revocation_limiter.check(cx.peer, crate::unix_now_ms());
        self.refusal(verdict, cx.peer)
    }

    /// `Some(retry_after_s)` when the subject `(iss, sub)` is over its revocation rate.
    fn over_subject_revocation_budget(&mut self, iss: &str, sub: &str) -> Option<u64> {
        let key = xxhash_rust::xxh3::xxh3_64_with_seed(
            format!("{iss}\0{sub}").as_bytes(),
            self.subject_seed,
        );
        match self.subject_revocations.check(key, crate::unix_now_ms()) {
            super::ratelimit::Verdict::Allow => None,
            super::ratelimit::Verdict::Limit { retry_after_s, .. } => Some(retry_after_s),
        }
    }

    /// Defers the response and hands the control plane the message `make` builds for it; 503
    /// when the control queue is full.
    pub(super) fn send_to_control(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
        ka: bool,
        op: Op,
        make: impl FnOnce(ReplyTo) -> ControlMsg,
    ) -> (Outcome, Op) {
        let ticket = cx.defer();
        let msg = make(ReplyTo {
            shard_idx: self.idx,
            ticket,
            keep_alive: ka,
        });
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

    fn params<'a>(pairs: &[(&str, &'a str)]) -> TokenParams<'a> {
        let mut p = TokenParams::default();
        for &(key, value) in pairs {
            let value = Some(Cow::Borrowed(value));
            match key {
                "client_id" => p.client_id = value,
                "client_secret" => p.client_secret = value,
                "token" => p.token = value,
                "jti" => p.jti = value,
                "scope" => p.scope = value,
                "audience" => p.audience = value,
                _ => unreachable!("{key}"),
            }
        }
        p
    }

    fn rules(admin: bool) -> RevokeRules {
        RevokeRules {
            admin,
            issuer: "subzero".into(),
            now_s: 1000,
            token_ttl_s: 900,
            leeway_s: 60,
        }
    }

    fn claims_with(jti: Option<&str>) -> Claims {
        let mut claims = Claims::new_for("subzero", "alice", vec![], &[], 300, 1000, "j".into());
        claims.jti = jti.map(str::to_owned);
        claims
    }

    fn never_verify(_: &[u8]) -> Result<Claims, auth::TokenError> {
        panic!("no token was given, so nothing may be verified")
    }

    #[test]
    fn holders_revoke_their_own_token_until_exp_plus_leeway() {
        let p = params(&[("token", "t")]);
        let got = revoke_target(&p, &rules(false), |t| {
            assert_eq!(t, b"t");
            Ok(claims_with(Some("j1")))
        });
        let jti = "j1".to_owned();
        let iss = "subzero".to_owned();
        assert_eq!(
            got,
            Ok(RevokeTarget::Jti {
                iss,
                jti,
                exp_s: 1360
            })
        );
        let expired = revoke_target(&p, &rules(false), |_| Err(auth::TokenError::Expired));
        let reason = HOLDER_TOKEN_EXPIRED;
        assert_eq!(
            expired,
            Ok(RevokeTarget::AlreadyExpired { reason, jti: None })
        );
        let forged = revoke_target(&p, &rules(true), |_| Err(auth::TokenError::BadSignature));
        assert_eq!(forged.unwrap_err().code, "invalid_token");
        let no_jti = revoke_target(&p, &rules(false), |_| Ok(claims_with(None)));
        assert_eq!(no_jti.unwrap_err().status, Status::BadRequest);
        let bad_jti = revoke_target(&p, &rules(false), |_| Ok(claims_with(Some("a b"))));
        assert_eq!(bad_jti.unwrap_err().code, "invalid_request");
    }

    #[test]
    fn only_the_admin_revokes_by_jti() {
        let p = params(&[("jti", "j2")]);
        let refused = revoke_target(&p, &rules(false), never_verify).unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (Status::Forbidden, "insufficient_scope")
        );
        let jti = "j2".to_owned();
        // No `exp`: the entry outlives any token issued until now (ttl + leeway).
        let admin = revoke_target(&p, &rules(true), never_verify);
        assert_eq!(
            admin,
            Ok(RevokeTarget::Jti {
                iss: "subzero".into(),
                jti: jti.clone(),
                exp_s: 1960
            })
        );
        let mut with_exp = params(&[("jti", "j2")]);
        with_exp.exp = Some(1234);
        let admin = revoke_target(&with_exp, &rules(true), never_verify);
        // Until `exp` + leeway, as long as a verifier accepts the token.
        let iss = "subzero".to_owned();
        assert_eq!(
            admin,
            Ok(RevokeTarget::Jti {
                iss,
                jti,
                exp_s: 1294
            })
        );
        let too_long = "x".repeat(257);
        let p = params(&[("jti", &too_long)]);
        assert_eq!(
            revoke_target(&p, &rules(true), never_verify)
                .unwrap_err()
                .code,
            "invalid_request"
        );
        let nothing = revoke_target(&params(&[]), &rules(true), never_verify).unwrap_err();
        assert_eq!(nothing.status, Status::BadRequest);
    }

    #[test]
    fn an_admin_exp_in_the_past_is_answered_here_and_stores_nothing() {
        let with_exp = |exp: u64, jti: &'static str| {
            let mut p = params(&[("jti", jti)]);
            p.exp = Some(exp);
            revoke_target(&p, &rules(true), never_verify)
        };
        // now = 1000, leeway = 60: a token with exp = 940 is refused from 1000 on.
        let expired = RevokeTarget::AlreadyExpired {
            reason: ADMIN_EXP_PASSED,
            jti: Some("j3".to_owned()),
        };
        assert_eq!(with_exp(940, "j3"), Ok(expired.clone()));
        assert_eq!(with_exp(0, "j3"), Ok(expired));
        // exp has passed but the leeway has not: verifiers still accept it, so store it.
        let jti = "j3".to_owned();
        assert_eq!(
            with_exp(941, "j3"),
            Ok(RevokeTarget::Jti {
                iss: "subzero".into(),
                jti,
                exp_s: 1001
            })
        );
        // A bad jti is refused whatever its exp.
        assert_eq!(with_exp(0, "a b").unwrap_err().code, "invalid_request");
        assert_eq!(
            with_exp(u64::MAX, "a b").unwrap_err().code,
            "invalid_request"
        );
    }

    #[test]
    fn client_credentials_come_from_exactly_one_place() {
        let basic = ("svc".to_owned(), "s3cret".to_owned());
        let body = params(&[("client_id", "svc"), ("client_secret", "s3cret")]);
        assert_eq!(client_credentials(None, &body), Ok(("svc", "s3cret")));
        assert_eq!(
            client_credentials(Some(&basic), &params(&[])),
            Ok(("svc", "s3cret"))
        );
        let same_id = params(&[("client_id", "svc")]);
        assert_eq!(
            client_credentials(Some(&basic), &same_id),
            Ok(("svc", "s3cret"))
        );
        let both = client_credentials(Some(&basic), &body).unwrap_err();
        assert_eq!(
            (both.status, both.code),
            (Status::BadRequest, "invalid_request")
        );
        let other_id = params(&[("client_id", "other")]);
        assert_eq!(
            client_credentials(Some(&basic), &other_id)
                .unwrap_err()
                .code,
            "invalid_request"
        );
        let missing = client_credentials(None, &params(&[("client_id", "svc")])).unwrap_err();
        assert_eq!(
            (missing.status, missing.code),
            (Status::Unauthorized, "invalid_client")
        );
    }

    #[test]
    fn grants_check_secret_audience_and_scope() {
        let toml = r#"
[[clients]]
id = "svc"
secret = "s3cret-s3cret-s3cret"
audiences = ["api", "billing"]
scopes = ["read", "write"]
"#;
        let config = crate::config::Config::from_toml(toml, std::path::Path::new(".")).unwrap();
        let none = params(&[]);
        let (idx, client, custom) =
            resolve_grant(&config, "svc", "s3cret-s3cret-s3cret", &none).unwrap();
        assert_eq!((idx, client.id.as_str(), custom), (0, "svc", None));
        let wrong = resolve_grant(&config, "svc", "s3cret-s3cret-s3creT", &none).unwrap_err();
        assert_eq!(
            (wrong.status, wrong.code),
            (Status::Unauthorized, "invalid_client")
        );
        let unknown = resolve_grant(&config, "nobody", "s3cret-s3cret-s3cret", &none).unwrap_err();
        assert_eq!(unknown.code, "invalid_client");
        let narrow = params(&[("audience", "billing"), ("scope", "read")]);
        let (_, _, custom) =
            resolve_grant(&config, "svc", "s3cret-s3cret-s3cret", &narrow).unwrap();
        assert_eq!(custom, Some(("billing".to_owned(), "read".to_owned())));
        let scope_only = params(&[("scope", "write")]);
        let (_, _, custom) =
            resolve_grant(&config, "svc", "s3cret-s3cret-s3cret", &scope_only).unwrap();
        assert_eq!(custom, Some(("api".to_owned(), "write".to_owned())));
        let bad_aud = params(&[("audience", "payroll")]);
        let refused = resolve_grant(&config, "svc", "s3cret-s3cret-s3cret", &bad_aud).unwrap_err();
        assert_eq!(refused.code, "invalid_target");
        let bad_scope = params(&[("scope", "read admin")]);
        let refused =
            resolve_grant(&config, "svc", "s3cret-s3cret-s3cret", &bad_scope).unwrap_err();
        assert_eq!(refused.code, "invalid_scope");
        assert!(refused.description.contains("admin"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a+b%20c").unwrap(), "a b c");
        assert_eq!(percent_decode("plain").unwrap(), "plain");
        assert!(percent_decode("bad%zz").is_none());
        assert!(percent_decode("cut%2").is_none());
        assert_eq!(percent_decode("%2B%2b").unwrap(), "++");
    }

    /// Found by the `bodies` fuzz target (fuzz/corpus/bodies/regress_percent_sign): a signed
    /// "hex" pair such as `%+e` decoded to U+000E, so two spellings of a form value differed.
    #[test]
    fn percent_escape_is_two_hex_digits_without_a_sign() {
        assert!(percent_decode("%+e").is_none());
        assert!(percent_decode("a%+1b").is_none());
        assert!(percent_decode("%-1").is_none());
        assert!(percent_decode("% e").is_none());
    }
}
