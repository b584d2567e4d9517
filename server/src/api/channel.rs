//! App↔agent channels on a shard: `POST /v1/xaa/channel` (the app's token as the bearer, the
//! agent's in the body) issues two `xaa:callback` tokens bound to a new channel id once the
//! control plane has recorded it; `DELETE /v1/xaa/channel/{id}` (a token of that channel, or
//! the admin token) revokes both on every shard.

use std::borrow::Cow;

use serde::Deserialize;

use super::respond;
use super::ShardApp;
use crate::auth::{self, new_jti};
use crate::http::{Request, Status};
use crate::monitor::Op;
use crate::plane::ControlMsg;
use crate::shard::{Cx, Outcome};
use crate::xaa::{self, ChannelPolicy};

/// The path prefix of a channel's URL.
pub const CHANNEL_PATH: &str = "/v1/xaa/channel";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelBody<'a> {
    #[serde(borrow)]
    agent_token: Cow<'a, str>,
}

impl ShardApp {
    /// `POST /v1/xaa/channel`.
    pub(super) fn create_channel(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::Other);
        let Some(app_token) = req.bearer() else {
            let text = "the app's token is the bearer token";
            respond::error(out, Status::Unauthorized, "invalid_request", text, ka);
            return done;
        };
        let body: ChannelBody<'_> = match serde_json::from_slice(req.body) {
            Ok(body) => body,
            Err(_) => {
                let text = "body must be JSON {\"agent_token\": \"...\"}";
                respond::error(out, Status::BadRequest, "invalid_request", text, ka);
                return done;
            }
        };
        let app = match self.verified_or_answer(app_token, cx, out, ka) {
            Ok(app) => app,
            Err(answer) => return answer,
        };
        let agent = match self.verified_or_answer(body.agent_token.as_bytes(), cx, out, ka) {
            Ok(agent) => agent,
            Err(answer) => return answer,
        };
        // Two signatures: costly work within this pass's budget.
        if !self.pass_budget.take(cx.pass, 2) {
            return (Outcome::Later, Op::Other);
        }
        let config = self.config();
        let policy = ChannelPolicy {
            issuer: config.auth.issuer.clone(),
            audience: config
                .auth
                .audiences
                .first()
                .cloned()
                .unwrap_or_else(|| config.auth.issuer.clone()),
            max_ttl_s: config.auth.token_ttl_s,
        };
        let id = new_jti();
        let jtis = [new_jti(), new_jti()];
        let claims = match xaa::channel_tokens(
            &app.claims,
            &agent.claims,
            &id,
            &policy,
            cx.now_s,
            jtis.clone(),
        ) {
            Ok(claims) => claims,
            Err(e) => {
                let status = if e.status() == 503 {
                    Status::ServiceUnavailable
                } else {
                    Status::BadRequest
                };
                respond::error(out, status, e.code(), e.description(), ka);
                return done;
            }
        };
        let key = &self.keys.signing_key;
        let tokens = [
            auth::sign(key, &self.keys.kid, &claims.app),
            auth::sign(key, &self.keys.kid, &claims.agent),
        ];
        let expires_at_s = claims.app.exp.max(claims.agent.exp);
        self.send_to_control(cx, out, ka, Op::Other, |reply_to| {
            ControlMsg::CreateChannel {
                reply_to,
                id,
                jtis,
                expires_at_s,
                tokens,
            }
        })
    }

    /// `DELETE /v1/xaa/channel/{id}`: by a token of that channel or the admin.
    pub(super) fn delete_channel(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
        id: &str,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::Other);
        if xaa::validate_channel_id(id).is_err() {
            respond::error(
                out,
                Status::NotFound,
                "invalid_request",
                "no such channel",
                ka,
            );
            return done;
        }
        if !self.is_admin(req) {
            let Some(token) = req.bearer() else {
                let text = "a token of this channel (or the admin token) is required";
                respond::error(out, Status::Unauthorized, "invalid_request", text, ka);
                return done;
            };
            let holder = match self.verified_or_answer(token, cx, out, ka) {
                Ok(holder) => holder,
                Err(answer) => return answer,
            };
            if holder.claims.cid.as_deref() != Some(id) {
                let text = "only a token of this channel (or the admin token) may delete it";
                respond::error(out, Status::Forbidden, "insufficient_scope", text, ka);
                return done;
            }
        }
        self.send_to_control(cx, out, ka, Op::Other, |reply_to| {
            ControlMsg::DeleteChannel {
                reply_to,
                id: id.to_owned(),
            }
        })
    }
}
