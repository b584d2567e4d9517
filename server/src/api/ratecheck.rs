//! `POST /v1/ratelimit/check` `{"key", "cost"}`: the key's owner shard decides (at once when
//! that is this shard, else over the mesh through `owned.rs`), so N shards never allow N× a
//! rule. Also the IETF `RateLimit-Policy`/`RateLimit` headers every 429 carries.
//!
//! Who may call: the admin token, or a bearer token (ours or a trusted issuer's) with scope
//! `ratelimit`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;

use super::owned::{self, Route};
use super::{authn, respond, ShardApp};
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::plane::{OwnedResult, OwnedWork};
use crate::ratelimit::{CostError, Decision, KeyVerdict, MAX_KEY_BYTES};
use crate::shard::{Cx, Outcome};

/// The path.
pub(super) const RATELIMIT_CHECK_PATH: &str = "/v1/ratelimit/check";
/// The scope a bearer token needs.
const RATELIMIT_SCOPE: &str = "ratelimit";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    cost: Option<u32>,
}

/// Parses and bounds the body: `(key, cost)`.
pub(super) fn parse_body(body: &[u8]) -> Result<(Cow<'_, str>, u32), String> {
    let body: CheckBody<'_> = serde_json::from_slice(body).map_err(|e| {
        format!("body must be JSON {{\"key\": \"...\", \"cost\": 1}} (cost optional): {e}")
    })?;
    if body.key.is_empty() || body.key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
            body.key.len()
        ));
    }
    let cost = body.cost.unwrap_or(1);
    if cost == 0 {
        return Err(CostError::Zero.to_string());
    }
    Ok((body.key, cost))
}

/// The `RateLimit-Policy` and `RateLimit` header lines
/// (draft-ietf-httpapi-ratelimit-headers-11): the policy `name` allows `quota` units per
/// `window_s` seconds; `r` units are available now and `t` seconds is the effective window
/// (until the next unit when refused, so `Retry-After` never points earlier; until the whole
/// quota is back when allowed). `name` is printable ASCII without quotes or backslashes
/// (checked at start), so it is a valid sf-string as it is.
pub(super) fn rate_limit_headers(
    name: &str,
    quota: u32,
    window_s: u64,
    d: &Decision,
) -> [String; 2] {
    [
        rate_limit_policy(name, quota, window_s),
        rate_limit_state(name, d),
    ]
}

/// The `RateLimit-Policy` line (fixed per rule, so rendered once at start for key rules).
pub(super) fn rate_limit_policy(name: &str, quota: u32, window_s: u64) -> String {
    format!("ratelimit-policy: \"{name}\";q={quota};w={window_s}")
}

/// The `RateLimit` line for one decision.
fn rate_limit_state(name: &str, d: &Decision) -> String {
    let t = if d.allowed {
        d.reset_after_s
    } else {
        d.retry_after_s
    };
    format!("ratelimit: \"{name}\";r={};t={t}", d.remaining)
}

impl ShardApp {
    pub(super) fn ratelimit_check(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::RateLimitCheck);
        if let Some(answer) = self.refuse_unless_scoped(req, cx, out, RATELIMIT_SCOPE) {
            return answer;
        }
        let (key, cost) = match parse_body(req.body) {
            Ok(parsed) => parsed,
            Err(text) => {
                respond::error(out, Status::BadRequest, "invalid_request", &text, ka);
                return done;
            }
        };
        let n_shards = self.outbox.n_shards();
        match owned::route(key.as_bytes(), self.idx, n_shards) {
            Route::Local => {
                let verdict = self.key_limiter.check(&key, cost, crate::unix_now_ms());
                self.write_rate_verdict(out, &verdict, ka);
                done
            }
            Route::Remote { owner } => {
                let ticket = cx.defer();
                let work = OwnedWork::Rate {
                    key: key.into_owned(),
                    cost,
                };
                let sent = self
                    .owned
                    .send(&mut self.outbox, owner, ticket, ka, cx.now_s, work);
                if sent.is_err() {
                    respond::error_with(
                        out,
                        Status::ServiceUnavailable,
                        "temporarily_unavailable",
                        "the shard that owns this key is busy; retry",
                        &[b"retry-after: 1"],
                        ka,
                    );
                    return done;
                }
                (Outcome::Deferred(ticket), Op::RateLimitCheck)
            }
        }
    }

    /// `Some(answer)` unless `req` carries the admin token or a valid token with `scope`
    /// (`ratelimit`, `threat`, `risk`): `401` with a challenge without a bearer token, the
    /// token's own `401` when it is not valid, `403 insufficient_scope` without the scope.
    pub(super) fn refuse_unless_scoped(
        &mut self,
        req: &Request<'_>,
        cx: &Cx<'_>,
        out: &mut Vec<u8>,
        scope: &str,
    ) -> Option<(Outcome, Op)> {
        let ka = req.keep_alive;
        if self.is_admin(req) {
            return None;
        }
        let Some(token) = req.bearer() else {
            let text =
                format!("a bearer token with scope {scope} (or the admin token) is required");
            respond::error_with(
                out,
                Status::Unauthorized,
                "invalid_request",
                &text,
                &[authn::CHALLENGE_NONE],
                ka,
            );
            return Some((Outcome::Done, Op::Other));
        };
        let caller = match self.verified_or_answer(token, cx, out, ka) {
            Ok(caller) => caller,
            Err(answer) => return Some(answer),
        };
        if caller.claims.has_scope(scope) {
            return None;
        }
        let text = format!("this token lacks scope {scope}");
        let challenge = format!(
            "www-authenticate: Bearer realm=\"subzero\", error=\"insufficient_scope\", scope=\"{scope}\""
        );
        respond::error_with(
            out,
            Status::Forbidden,
            "insufficient_scope",
            &text,
            &[challenge.as_bytes()],
            ka,
        );
        Some((Outcome::Done, Op::Other))
    }

    /// Owner side: the work another shard sent.
    pub(super) fn do_owned(&mut self, work: OwnedWork) -> OwnedResult {
        let now_ms = crate::unix_now_ms();
        match work {
            OwnedWork::Rate { key, cost } => {
                OwnedResult::Rate(self.key_limiter.check(&key, cost, now_ms))
            }
            OwnedWork::Threat(part) => OwnedResult::Threat(self.observe_part(&part, now_ms, true)),
            OwnedWork::RiskSubject(q) => {
                OwnedResult::RiskSubject(self.subject_facts(&q, now_ms, true))
            }
            OwnedWork::RiskSource(ip) => {
                OwnedResult::RiskSource(self.source_facts(ip, now_ms, true))
            }
        }
    }

    /// Renders a rate owner's answer for the origin's deferred response.
    pub(super) fn render_owned(
        &self,
        out: &mut Vec<u8>,
        verdict: &Result<KeyVerdict, CostError>,
        ka: bool,
    ) {
        self.write_rate_verdict(out, verdict, ka);
    }

    /// `200` or `429` with the verdict as JSON (and the RateLimit headers when a rule
    /// matched), or `400` for a cost no rule can grant. Written without a JSON tree: every
    /// value is a number, a bool, or a prefix checked at start to need no escaping.
    fn write_rate_verdict(
        &self,
        out: &mut Vec<u8>,
        verdict: &Result<KeyVerdict, CostError>,
        ka: bool,
    ) {
        let v = match verdict {
            Ok(v) => v,
            Err(e) => {
                let text = e.to_string();
                respond::error(out, Status::BadRequest, "invalid_request", &text, ka);
                return;
            }
        };
        let d = &v.decision;
        let rule = v
            .rule_idx
            .and_then(|i| Some((self.key_limiter.rules().get(i)?, self.rate_policies.get(i)?)));
        let mut body = String::with_capacity(160);
        let _ = write!(
            body,
            "{{\"allowed\":{},\"remaining\":{},\"retry_after_s\":{},\"reset_after_s\":{},\"rule\":",
            d.allowed, d.remaining, d.retry_after_s, d.reset_after_s
        );
        match rule {
            Some((r, _)) => {
                let _ = write!(body, "\"{}\"", r.key_prefix);
            }
            None => body.push_str("null"),
        }
        let _ = write!(body, ",\"shadow\":{}", v.shadow);
        if v.shadow {
            let _ = write!(body, ",\"shadow_denied\":{}", v.shadow_denied);
        }
        body.push('}');
        // Declared here, set where needed: the header lines borrow them.
        let (state, retry): (String, String);
        let mut lines: [&[u8]; 3] = [&[]; 3];
        let mut n_lines = 0;
        if let Some((r, policy)) = rule {
            state = rate_limit_state(&r.key_prefix, d);
            lines[0] = policy.as_bytes();
            lines[1] = state.as_bytes();
            n_lines = 2;
        }
        let status = if d.allowed {
            Status::Ok
        } else {
            retry = format!("retry-after: {}", d.retry_after_s);
            lines[n_lines] = retry.as_bytes();
            n_lines += 1;
            Status::TooManyRequests
        };
        http::write_response(
            out,
            status,
            Some("application/json"),
            &lines[..n_lines],
            body.as_bytes(),
            ka,
        );
    }

    /// The rate-limit lines of this shard's `/metrics` section.
    pub(super) fn render_rate_metrics(&self, text: &mut String) {
        let shard = self.idx;
        let l = &self.key_limiter;
        for (rule, c) in l.rules().iter().zip(&l.counts) {
            let p = &rule.key_prefix;
            let _ = writeln!(
                text,
                "subzero_ratelimit_checks_total{{shard=\"{shard}\",rule=\"{p}\",result=\"allowed\"}} {}\n\
                 subzero_ratelimit_checks_total{{shard=\"{shard}\",rule=\"{p}\",result=\"denied\"}} {}\n\
                 subzero_ratelimit_shadow_denied_total{{shard=\"{shard}\",rule=\"{p}\"}} {}",
                c.allowed, c.denied, c.shadow_denied
            );
        }
        let o = &self.owned;
        let lines = [
            ("subzero_ratelimit_unmatched_total", l.unmatched),
            ("subzero_ratelimit_untracked_keys_total", l.untracked()),
            ("subzero_ratelimit_tracked_keys", l.len() as u64),
            ("subzero_owned_hops_sent_total", o.n_sent),
            ("subzero_owned_hops_served_total", o.n_served),
            ("subzero_owned_busy_total", o.n_busy),
            ("subzero_owned_replies_lost_total", o.n_lost),
            ("subzero_owned_in_flight", o.n_in_flight() as u64),
            ("subzero_owned_replies_held", o.n_backlog() as u64),
        ];
        for (name, value) in lines {
            let _ = writeln!(text, "{name}{{shard=\"{shard}\"}} {value}");
        }
        for (route, limited, shadow_denied, untracked) in self.source_limiter.counts() {
            let _ = writeln!(
                text,
                "subzero_ratelimit_source_limited_total{{shard=\"{shard}\",route=\"{route}\"}} {limited}\n\
                 subzero_ratelimit_shadow_denied_total{{shard=\"{shard}\",route=\"{route}\"}} {shadow_denied}\n\
                 subzero_ratelimit_untracked_sources_total{{shard=\"{shard}\",route=\"{route}\"}} {untracked}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_bounded_and_cost_defaults_to_one() {
        assert_eq!(
            parse_body(br#"{"key":"login:a"}"#).unwrap(),
            ("login:a".into(), 1)
        );
        assert_eq!(parse_body(br#"{"key":"k","cost":5}"#).unwrap().1, 5);
        let long = format!(r#"{{"key":"{}"}}"#, "x".repeat(257));
        let bad: [&[u8]; 7] = [
            b"",
            b"{",
            br#"{"key":""}"#,
            br#"{"key":"k","cost":0}"#,
            br#"{"key":"k","cost":-1}"#,
            br#"{"key":"k","extra":1}"#,
            long.as_bytes(),
        ];
        for body in bad {
            assert!(
                parse_body(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(parse_body(format!(r#"{{"key":"{}"}}"#, "x".repeat(256)).as_bytes()).is_ok());
    }

    #[test]
    fn headers_follow_the_draft_syntax() {
        let refused = Decision {
            allowed: false,
            remaining: 0,
            retry_after_s: 3,
            reset_after_s: 9,
        };
        assert_eq!(
            rate_limit_headers("default", 100, 1, &refused),
            [
                "ratelimit-policy: \"default\";q=100;w=1".to_owned(),
                "ratelimit: \"default\";r=0;t=3".to_owned()
            ]
        );
        let allowed = Decision {
            allowed: true,
            remaining: 7,
            retry_after_s: 0,
            reset_after_s: 2,
        };
        assert_eq!(
            rate_limit_headers("login:", 20, 2, &allowed)[1],
            "ratelimit: \"login:\";r=7;t=2"
        );
    }
}
