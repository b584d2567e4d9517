//! Cross-app access endpoints: `POST /v1/xaa/delegate` (RFC 8693 token exchange; also taken
//! by `POST /v1/token` for that grant), the ID-JAG `jwt-bearer` grant of `POST /v1/token`, and
//! `GET /.well-known/oauth-authorization-server` (RFC 8414).
//!
//! The decisions are `crate::xaa`'s; this module authenticates the client, verifies the
//! presented tokens through the shard's cache and budgets, signs, and renders. An ID-JAG's
//! `jti` is single use for the whole process: the shard signs the access token, then asks the
//! control plane, which owns the one replay table, and defers the response until it answers.

use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;

use serde::Deserialize;

use super::authn::Check;
use super::token::{self, Refusal};
use super::{respond, Cached, ShardApp};
use crate::auth::{self, Claims, MAX_TOKEN_BYTES};
use crate::config::{ClientConfig, Config};
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::plane::{ControlMsg, ControlReply, GrantedToken};
use crate::shard::{Cx, Outcome};
use crate::xaa::{
    build_id_jag, check_id_jag, delegate, DelegationPolicy, ExchangeError, ExchangeRequest,
    ExchangeResponse, TokenType, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE, ID_JAG_TYP,
};

/// Headers of every token response (RFC 6749 §5.1).
const NO_STORE: &[&[u8]] = &[b"cache-control: no-store", b"pragma: no-cache"];

/// Cross-app access state of one shard, built once from the configuration.
pub(super) struct XaaState {
    /// Delegation policy by client index (the targets it may delegate to).
    policies: Vec<DelegationPolicy>,
    /// Issuers whose ID-JAGs we redeem (`id_jag = true`).
    id_jag_issuers: Vec<String>,
    /// The RFC 8414 document.
    metadata_json: Vec<u8>,
    counters: XaaCounters,
}

#[derive(Debug, Default)]
struct XaaCounters {
    /// Delegated access tokens issued.
    delegated: u64,
    /// ID-JAGs issued for our users.
    id_jags_issued: u64,
    /// Token exchanges refused.
    exchanges_refused: u64,
    /// ID-JAGs redeemed for an access token.
    id_jags_redeemed: u64,
    /// ID-JAGs refused by this shard's checks (signature, issuer, type, audience, client).
    id_jags_refused: u64,
    /// ID-JAGs refused by the control plane: their `jti` was already used (or the table full).
    id_jag_replays: u64,
}

impl XaaState {
    /// The policies and the metadata document for `config`.
    pub(super) fn new(config: &Config) -> XaaState {
        let policies = config
            .clients
            .iter()
            .map(|client| DelegationPolicy {
                issuer: config.auth.issuer.clone(),
                targets: match &config.xaa.audiences {
                    Some(audiences) => audiences.clone(),
                    None => client_audiences(config, client),
                },
                max_ttl_s: config.xaa.max_ttl_s,
            })
            .collect();
        let id_jag_issuers = config
            .auth
            .trusted_issuers
            .iter()
            .filter(|i| i.id_jag)
            .map(|i| i.issuer.clone())
            .collect();
        XaaState {
            policies,
            id_jag_issuers,
            metadata_json: metadata_json(config).into_bytes(),
            counters: XaaCounters::default(),
        }
    }

    /// Counts the control plane's answer to a redemption.
    pub(super) fn note_reply(&mut self, reply: &ControlReply) {
        match reply {
            ControlReply::IdJagRedeemed(_) => self.counters.id_jags_redeemed += 1,
            ControlReply::IdJagRefused(_) => self.counters.id_jag_replays += 1,
            _ => {}
        }
    }

    /// This shard's cross-app access counters, one sample each.
    pub(super) fn render_metrics(&self, shard: usize, text: &mut String) {
        let c = &self.counters;
        for (name, value) in [
            ("subzero_xaa_delegated_total", c.delegated),
            ("subzero_xaa_id_jags_issued_total", c.id_jags_issued),
            ("subzero_xaa_exchanges_refused_total", c.exchanges_refused),
            ("subzero_xaa_id_jags_redeemed_total", c.id_jags_redeemed),
            ("subzero_xaa_id_jags_refused_total", c.id_jags_refused),
            ("subzero_xaa_id_jag_replays_total", c.id_jag_replays),
        ] {
            let _ = writeln!(text, "{name}{{shard=\"{shard}\"}} {value}");
        }
    }
}

/// What delegation may target for `client` by default: its audiences, else our issuer.
fn client_audiences(config: &Config, client: &ClientConfig) -> Vec<String> {
    if client.audiences.is_empty() {
        vec![config.auth.issuer.clone()]
    } else {
        client.audiences.clone()
    }
}

/// The RFC 8414 metadata, absolute URLs under `server.public_url`.
fn metadata_json(config: &Config) -> String {
    let base = config.public_url();
    serde_json::json!({
        "issuer": config.auth.issuer,
        "token_endpoint": format!("{base}/v1/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{base}/v1/revoke"),
        "response_types_supported": [],
        "grant_types_supported": ["client_credentials", GRANT_TOKEN_EXCHANGE, GRANT_JWT_BEARER],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "identity_chaining_requested_token_types_supported":
            [TokenType::AccessToken.urn(), TokenType::IdJag.urn()],
    })
    .to_string()
}

/// `client_id` and `client_secret` from a form or JSON body; other parameters are left for
/// the grant's own parser.
#[derive(Deserialize, Default)]
struct ClientFields {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

fn client_fields(req: &Request<'_>) -> Result<ClientFields, ExchangeError> {
    if is_json(req) || req.body.first() == Some(&b'{') {
        // Shape errors are the exchange parser's to describe; here only the two strings count.
        return Ok(serde_json::from_slice(req.body).unwrap_or_default());
    }
    let text = std::str::from_utf8(req.body)
        .map_err(|_| ExchangeError::InvalidRequest("form body is not UTF-8".into()))?;
    let mut fields = ClientFields::default();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "client_id" => &mut fields.client_id,
            "client_secret" => &mut fields.client_secret,
            _ => continue,
        };
        if slot.is_some() {
            return Err(ExchangeError::InvalidRequest(
                format!("{key} is repeated").into(),
            ));
        }
        let value = token::percent_decode(value).ok_or(ExchangeError::InvalidRequest(
            "form body has a bad percent-escape".into(),
        ))?;
        *slot = Some(value.into_owned());
    }
    Ok(fields)
}

fn is_json(req: &Request<'_>) -> bool {
    req.content_type
        .is_some_and(|ct| ct.starts_with(b"application/json"))
}

/// Why a presented token did not come back verified.
enum Stop {
    /// Its verification must wait for the next pass.
    Later,
    /// Its source failed too many verifications: `429`.
    Limited(u64),
    /// It is invalid or revoked.
    Refused(ExchangeError),
}

fn exchange_status(e: &ExchangeError) -> Status {
    if e.status() == 503 {
        Status::ServiceUnavailable
    } else {
        Status::BadRequest
    }
}

fn render_exchange_error(out: &mut Vec<u8>, e: &ExchangeError, ka: bool) {
    let retry: &[&[u8]] = if e.status() == 503 {
        &[b"retry-after: 60"]
    } else {
        &[]
    };
    respond::error_with(
        out,
        exchange_status(e),
        e.code(),
        e.description(),
        retry,
        ka,
    );
}

/// The `200` body of a redeemed ID-JAG (RFC 6749 §5.1; no refresh token).
pub(super) fn render_granted(out: &mut Vec<u8>, token: &GrantedToken, ka: bool) {
    let mut body = serde_json::json!({
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
    });
    if let (Some(scope), Some(fields)) = (&token.scope, body.as_object_mut()) {
        fields.insert("scope".to_owned(), serde_json::Value::String(scope.clone()));
    }
    http::write_response(
        out,
        Status::Ok,
        Some("application/json"),
        NO_STORE,
        body.to_string().as_bytes(),
        ka,
    );
}

/// A refused redemption, as the control plane answered it.
pub(super) fn render_redeem_refused(out: &mut Vec<u8>, e: &ExchangeError, ka: bool) {
    render_exchange_error(out, e, ka);
}

/// The claims of the access token an ID-JAG is redeemed for. Its `sub` is the assertion's
/// `iss` and `sub` joined by `#` (an issuer identifier has no fragment, so the split is
/// unambiguous): a foreign issuer's users can never name one of our own principals. `aud` is
/// the assertion's `resource` values, each one the client may ask for, else the client's
/// default audience; scopes are the assertion's that the client may hold.
fn id_jag_access_claims(
    jag: &Claims,
    client: &ClientConfig,
    config: &Config,
    now_s: u64,
) -> Result<Claims, ExchangeError> {
    let audience: Vec<String> = if jag.resource().is_empty() {
        vec![client
            .audiences
            .first()
            .cloned()
            .unwrap_or_else(|| config.auth.issuer.clone())]
    } else if jag.resource().iter().all(|r| client.audiences.contains(r)) {
        jag.resource().to_vec()
    } else {
        return Err(ExchangeError::InvalidTarget(
            "a resource of the ID-JAG is not an audience this client may receive tokens for".into(),
        ));
    };
    let scopes: Vec<&str> = jag
        .scopes()
        .filter(|s| client.scopes.iter().any(|c| c == s))
        .collect();
    if scopes.is_empty() && jag.scope.is_some() {
        return Err(ExchangeError::InvalidScope(
            "none of the ID-JAG's scopes is allowed for this client".into(),
        ));
    }
    let sub = format!("{}#{}", jag.iss, jag.sub);
    let mut claims = Claims::new_for(
        &config.auth.issuer,
        &sub,
        audience,
        &scopes,
        config.auth.token_ttl_s,
        now_s,
        auth::new_jti(),
    );
    claims.extra_mut().client_id = Some(client.id.clone());
    Ok(claims)
}

impl ShardApp {
    /// `GET /.well-known/oauth-authorization-server`.
    pub(super) fn authorization_server_metadata(
        &self,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        http::write_response(
            out,
            Status::Ok,
            Some("application/json"),
            &[b"cache-control: max-age=60"],
            &self.xaa.metadata_json,
            req.keep_alive,
        );
        (Outcome::Done, Op::Other)
    }

    /// The calling client, authenticated from HTTP Basic or the body (RFC 8693 §2.1 and RFC
    /// 7523 §3.1 both rest on RFC 6749 client authentication).
    fn exchange_client(
        req: &Request<'_>,
        config: &Arc<Config>,
    ) -> Result<usize, Result<Refusal, ExchangeError>> {
        let fields = client_fields(req).map_err(Err)?;
        token::authenticated_client(
            config,
            req,
            fields.client_id.as_deref(),
            fields.client_secret.as_deref(),
        )
        .map_err(Ok)
    }

    /// A presented token verified through the shard's cache, budgets and denylist.
    fn presented(&mut self, token: &str, name: &str, cx: &Cx<'_>) -> Result<Rc<Cached>, Stop> {
        match self.check_token(token.as_bytes(), cx) {
            Check::Done(Ok(cached), _) => Ok(cached),
            Check::Done(Err(denial), _) => Err(Stop::Refused(ExchangeError::InvalidRequest(
                format!("{name} is not acceptable: {}", denial.description()).into(),
            ))),
            Check::Later => Err(Stop::Later),
            Check::Limited { retry_after_s } => Err(Stop::Limited(retry_after_s)),
        }
    }

    /// `POST /v1/xaa/delegate`, and `POST /v1/token` with the token-exchange grant.
    pub(super) fn xaa_delegate(
        &mut self,
        req: &Request<'_>,
        cx: &Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let config = Arc::clone(&self.shared.config);
        let client_idx = match Self::exchange_client(req, &config) {
            Ok(idx) => idx,
            Err(Ok(refusal)) => {
                refusal.render(out, ka);
                return (Outcome::Done, Op::Other);
            }
            Err(Err(e)) => return self.exchange_refused(&e, out, ka),
        };
        let mut request = match ExchangeRequest::parse(req.body, is_json(req)) {
            Ok(request) => request,
            Err(e) => return self.exchange_refused(&e, out, ka),
        };
        let subject = match self.presented(&request.subject_token, "subject_token", cx) {
            Ok(subject) => subject,
            Err(stop) => return self.stopped(stop, out, ka),
        };
        let actor = match request.actor.as_ref().map(|a| a.token.clone()) {
            None => None,
            Some(token) => match self.presented(&token, "actor_token", cx) {
                Ok(actor) => Some(actor),
                Err(stop) => return self.stopped(stop, out, ka),
            },
        };
        // Signing is costly work: within this pass's budget, or at the next turn (the
        // presented tokens are cached by then).
        if !self.pass_budget.take(cx.pass, 1) {
            return (Outcome::Later, Op::Other);
        }
        let now_s = cx.now_s;
        let (Some(client), Some(policy)) = (
            config.clients.get(client_idx),
            self.xaa.policies.get(client_idx).cloned(),
        ) else {
            return self.exchange_refused(&ExchangeError::request("unknown client"), out, ka);
        };
        let issued = if request.requested_token_type == TokenType::IdJag {
            build_id_jag(
                &subject.claims,
                &request,
                &config.xaa.id_jag_targets,
                &config.auth.issuer,
                &client.id,
                now_s,
                auth::new_jti(),
            )
            .map(|claims| (claims, ID_JAG_TYP))
        } else {
            if request.audience.is_empty() && request.resource.is_empty() {
                // RFC 8693 §2.1: without a target the server picks one: the client's default.
                request.audience.extend(policy.targets.first().cloned());
            }
            let actor_claims = actor.as_ref().map(|a| &a.claims);
            delegate(
                &subject.claims,
                actor_claims,
                &request,
                &policy,
                now_s,
                auth::new_jti(),
            )
            .map(|claims| (claims, "JWT"))
        };
        let (claims, typ) = match issued {
            Ok(issued) => issued,
            Err(e) => return self.exchange_refused(&e, out, ka),
        };
        let token = auth::sign_typed(&self.keys.signing_key, &self.keys.kid, typ, &claims);
        if typ == ID_JAG_TYP {
            self.xaa.counters.id_jags_issued += 1;
        } else {
            self.xaa.counters.delegated += 1;
        }
        let response = ExchangeResponse::new(token, &claims, request.requested_token_type, now_s);
        match serde_json::to_vec(&response) {
            Ok(body) => http::write_response(
                out,
                Status::Ok,
                Some("application/json"),
                NO_STORE,
                &body,
                ka,
            ),
            Err(_) => respond::error(
                out,
                Status::InternalServerError,
                "server_error",
                "the token-exchange response could not be rendered",
                ka,
            ),
        }
        (Outcome::Done, Op::TokenSign)
    }

    fn exchange_refused(
        &mut self,
        e: &ExchangeError,
        out: &mut Vec<u8>,
        ka: bool,
    ) -> (Outcome, Op) {
        self.xaa.counters.exchanges_refused += 1;
        render_exchange_error(out, e, ka);
        (Outcome::Done, Op::Other)
    }

    fn stopped(&mut self, stop: Stop, out: &mut Vec<u8>, ka: bool) -> (Outcome, Op) {
        match stop {
            Stop::Later => (Outcome::Later, Op::Other),
            Stop::Limited(retry_after_s) => {
                respond::too_many_failures(out, self.failures.policy(), retry_after_s, ka);
                (Outcome::Done, Op::Other)
            }
            Stop::Refused(e) => self.exchange_refused(&e, out, ka),
        }
    }

    /// `POST /v1/token` with `grant_type=…:jwt-bearer`: an ID-JAG from an `id_jag = true`
    /// issuer, for the client it names, redeemed once for an access token (no refresh token).
    pub(super) fn redeem_id_jag(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
        body_client: (Option<&str>, Option<&str>),
        assertion: Option<&str>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let config = Arc::clone(&self.shared.config);
        let client_idx =
            match token::authenticated_client(&config, req, body_client.0, body_client.1) {
                Ok(idx) => idx,
                Err(refusal) => {
                    refusal.render(out, ka);
                    return (Outcome::Done, Op::Other);
                }
            };
        let assertion = match assertion {
            None | Some("") => {
                return self.grant_refused(&ExchangeError::request("assertion is missing"), out, ka)
            }
            Some(a) if a.len() > MAX_TOKEN_BYTES => {
                let e = ExchangeError::grant(format!(
                    "assertion is longer than {MAX_TOKEN_BYTES} bytes"
                ));
                return self.grant_refused(&e, out, ka);
            }
            Some(a) => a,
        };
        if let Some(retry_after_s) = self.over_failure_budget(cx) {
            respond::too_many_failures(out, self.failures.policy(), retry_after_s, ka);
            return (Outcome::Done, Op::Other);
        }
        // One verification and one signature. Never cached: an assertion is single use.
        if !self.pass_budget.take(cx.pass, 2) {
            return (Outcome::Later, Op::Other);
        }
        let now_s = cx.now_s;
        let jag = match self.verify_now(assertion.as_bytes(), now_s) {
            Ok(claims) => claims,
            Err(e) => {
                self.note_failure(assertion.as_bytes(), &e, cx);
                let e =
                    ExchangeError::grant(format!("the assertion is invalid: {}", e.description()));
                return self.grant_refused(&e, out, ka);
            }
        };
        let Some(client) = config.clients.get(client_idx) else {
            return self.grant_refused(&ExchangeError::grant("unknown client"), out, ka);
        };
        let checked = if self.xaa.id_jag_issuers.contains(&jag.iss) {
            let typ = auth::header_typ(assertion.as_bytes());
            check_id_jag(typ.as_deref(), &jag, &client.id, &config.auth.issuer, now_s)
                .and_then(|()| id_jag_access_claims(&jag, client, &config, now_s))
        } else {
            Err(ExchangeError::grant(
                "the assertion's issuer is not trusted for ID-JAGs (id_jag = true in \
                 [[auth.trusted_issuers]])",
            ))
        };
        let access = match checked {
            Ok(access) => access,
            Err(e) => return self.grant_refused(&e, out, ka),
        };
        let (Some(jti), Some(keep_until_s)) =
            (jag.jti.clone(), jag.exp.checked_add(config.auth.leeway_s))
        else {
            return self.grant_refused(
                &ExchangeError::grant("the ID-JAG has no jti claim"),
                out,
                ka,
            );
        };
        let granted = GrantedToken {
            access_token: auth::sign(&self.keys.signing_key, &self.keys.kid, &access),
            expires_in: access.exp.saturating_sub(now_s),
            scope: access.scope.clone(),
        };
        self.send_to_control(cx, out, ka, Op::TokenSign, |reply_to| {
            ControlMsg::RedeemIdJag {
                reply_to,
                iss: jag.iss,
                jti,
                keep_until_s,
                token: granted,
            }
        })
    }

    fn grant_refused(&mut self, e: &ExchangeError, out: &mut Vec<u8>, ka: bool) -> (Outcome, Op) {
        self.xaa.counters.id_jags_refused += 1;
        render_exchange_error(out, e, ka);
        (Outcome::Done, Op::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_client() -> Config {
        let text = r#"
[server]
public_url = "https://auth.example"

[[clients]]
id = "svc"
secret = "s3cret-s3cret"
audiences = ["api", "billing"]
scopes = ["read", "write"]
"#;
        let c = Config::from_toml(text, std::path::Path::new(".")).unwrap();
        c.validate().unwrap();
        c
    }

    fn jag(resource: &[&str], scope: Option<&str>) -> Claims {
        let mut claims = Claims::new_for(
            "https://idp.example",
            "alice",
            vec!["subzero".to_owned()],
            &[],
            300,
            1000,
            "j1".to_owned(),
        );
        claims.scope = scope.map(str::to_owned);
        claims.extra_mut().resource = resource.iter().map(|r| (*r).to_owned()).collect();
        claims
    }

    #[test]
    fn metadata_has_absolute_urls_and_the_grants() {
        let config = config_with_client();
        let doc: serde_json::Value = serde_json::from_str(&metadata_json(&config)).unwrap();
        assert_eq!(doc["issuer"], "subzero");
        assert_eq!(doc["token_endpoint"], "https://auth.example/v1/token");
        assert_eq!(
            doc["jwks_uri"],
            "https://auth.example/.well-known/jwks.json"
        );
        assert_eq!(doc["revocation_endpoint"], "https://auth.example/v1/revoke");
        let grants = doc["grant_types_supported"].as_array().unwrap();
        assert_eq!(grants.len(), 3);
        assert!(grants.contains(&GRANT_JWT_BEARER.into()));
        let chained = &doc["identity_chaining_requested_token_types_supported"];
        assert!(chained
            .as_array()
            .unwrap()
            .contains(&"urn:ietf:params:oauth:token-type:id-jag".into()));
    }

    #[test]
    fn redeemed_access_tokens_namespace_the_subject_and_narrow_to_the_client() {
        let config = config_with_client();
        let client = &config.clients[0];
        let claims =
            id_jag_access_claims(&jag(&[], Some("read admin")), client, &config, 1000).unwrap();
        assert_eq!(claims.sub, "https://idp.example#alice");
        assert_eq!(claims.iss, "subzero");
        assert_eq!(claims.aud, vec!["api".to_owned()]);
        assert_eq!(claims.scope.as_deref(), Some("read"));
        assert_eq!(claims.client_id(), Some("svc"));
        assert_eq!(claims.exp, 1000 + config.auth.token_ttl_s);

        let billing = id_jag_access_claims(&jag(&["billing"], None), client, &config, 1000);
        assert_eq!(billing.unwrap().aud, vec!["billing".to_owned()]);
        let other = id_jag_access_claims(&jag(&["payroll"], None), client, &config, 1000);
        assert_eq!(other.unwrap_err().code(), "invalid_target");
        let admin = id_jag_access_claims(&jag(&[], Some("admin")), client, &config, 1000);
        assert_eq!(admin.unwrap_err().code(), "invalid_scope");
    }

    #[test]
    fn delegation_targets_default_to_the_clients_audiences() {
        let mut config = config_with_client();
        let state = XaaState::new(&config);
        assert_eq!(state.policies[0].targets, vec!["api", "billing"]);
        config.xaa.audiences = Some(vec!["partner".to_owned()]);
        let state = XaaState::new(&config);
        assert_eq!(state.policies[0].targets, vec!["partner"]);
        assert_eq!(state.policies[0].max_ttl_s, 300);
    }
}
