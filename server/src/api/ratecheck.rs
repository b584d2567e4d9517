//! `POST /v1/ratelimit/check` `{"key", "cost"}`: the key's owner shard decides (at once when
//! that is this shard, else over the mesh through `owned.rs`), so N shards never allow N× a
//! rule. Also the IETF `RateLimit-Policy`/`RateLimit` headers every 429 carries.
//!
//! In a fleet (`[fleet]` with key rules) a check of a key a rule matches is decided on the
//! shard that received it, from this shard's lease of the fleet-wide GCRA in Redis
//! (`leased.rs`): at once while the lease covers it, else deferred until the lease thread's
//! grant arrives (`ShardMsg::Lease`). Redis unreachable or the lease queue full: the
//! configured fail mode (`open` allows, `closed` answers 429 with `Retry-After: 1`).
//!
//! Who may call: the admin token, or a bearer token (ours or a trusted issuer's) with scope
//! `ratelimit`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;

use super::leased::{Answer, Check, Leased, Waiter};
use super::owned::{self, Route};
use super::{authn, respond, ShardApp};
use crate::config::{Config, FailMode};
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::plane::{LeaseAnswer, LeaseRequest, OwnedResult, OwnedWork};
use crate::ratelimit::{rules, CostError, Decision, KeyRule, KeyVerdict, MAX_KEY_BYTES};
use crate::shard::{Cx, Outcome, Ready};

/// A shard's global rate limits in a fleet: its leases, its waiting checks, the way to the
/// lease thread and the fail mode.
pub(super) struct Global {
    tx: std::sync::mpsc::SyncSender<LeaseRequest>,
    leased: Leased,
    fail_mode: FailMode,
}

impl Global {
    /// `Some` in fleet mode with key rules.
    pub(super) fn new(
        config: &Config,
        tx: std::sync::mpsc::SyncSender<LeaseRequest>,
    ) -> Option<Global> {
        let fleet = config.fleet.as_ref()?;
        let rules = &config.ratelimit.key_rules;
        if rules.is_empty() {
            return None;
        }
        let bursts: Vec<u32> = rules.iter().map(|r| r.burst).collect();
        Some(Global {
            tx,
            leased: Leased::new(&bursts, fleet.lease_ms, config.ratelimit.max_tracked_keys),
            fail_mode: fleet.fail_mode,
        })
    }

    /// Forgets checks the runtime answered `503` already.
    pub(super) fn expire(&mut self, deferred_timeout_s: u64) {
        self.leased.expire(
            crate::unix_now_ms(),
            deferred_timeout_s.saturating_mul(1000),
        );
    }

    /// Hands an ask to the lease thread; false when its queue is full (or it is gone).
    fn send(&self, shard_idx: usize, rule_idx: usize, key: &str, ask: super::leased::Ask) -> bool {
        let req = LeaseRequest {
            shard_idx,
            ask_id: ask.ask_id,
            rule_idx,
            key: Box::from(key),
            want: ask.want,
        };
        self.tx.try_send(req).is_ok()
    }
}

/// The decision a global check's answer stands for, under `rule` and the fail mode.
fn global_decision(rule: &KeyRule, answer: Answer, fail_mode: FailMode) -> Decision {
    let refill_s = |units: u32| (f64::from(units) / rule.rate_per_s).ceil().max(1.0) as u64;
    match answer {
        Answer::Allowed { remaining } => Decision {
            allowed: true,
            remaining,
            retry_after_s: 0,
            reset_after_s: refill_s(rule.burst.saturating_sub(remaining)),
        },
        Answer::Denied { retry_after_ms } => Decision {
            allowed: false,
            remaining: 0,
            retry_after_s: retry_after_ms.div_ceil(1000).max(1),
            reset_after_s: refill_s(rule.burst),
        },
        Answer::Unavailable => Decision {
            allowed: fail_mode == FailMode::Open,
            remaining: 0,
            retry_after_s: u64::from(fail_mode == FailMode::Closed),
            reset_after_s: 1,
        },
    }
}

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
        if let Some(answer) = self.global_check(&key, cost, cx, out, ka) {
            return answer;
        }
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

    /// Fleet mode: a check of a key a rule matches, from this shard's lease or deferred until
    /// the lease thread's grant. `None` (not in a fleet, or no rule matches): as without one.
    fn global_check(
        &mut self,
        key: &str,
        cost: u32,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
        ka: bool,
    ) -> Option<(Outcome, Op)> {
        let global = self.global.as_mut()?;
        let rule_idx = rules::match_key(self.key_limiter.rules(), key)?;
        let done = Some((Outcome::Done, Op::RateLimitCheck));
        let burst = self.key_limiter.rules()[rule_idx].burst;
        if cost > burst {
            self.write_rate_verdict(out, &Err(CostError::OverBurst { cost, burst }), ka);
            return done;
        }
        let ticket = cx.defer();
        let waiter = Waiter {
            ticket,
            keep_alive: ka,
            cost,
        };
        let answer = match global
            .leased
            .check(rule_idx, key, waiter, crate::unix_now_ms())
        {
            Check::Now(answer) => answer,
            Check::Wait { ask: None } => {
                return Some((Outcome::Deferred(ticket), Op::RateLimitCheck));
            }
            Check::Wait { ask: Some(ask) } => {
                if global.send(self.idx, rule_idx, key, ask) {
                    return Some((Outcome::Deferred(ticket), Op::RateLimitCheck));
                }
                // The queue is full: an ask from a check is waited on by that check alone.
                let failed = global.leased.ask_failed(rule_idx, key);
                debug_assert_eq!(failed, [waiter]);
                Answer::Unavailable
            }
        };
        let verdict = self.global_verdict(rule_idx, answer);
        self.write_rate_verdict(out, &Ok(verdict), ka);
        done
    }

    /// The lease thread answered: completes the checks that waited on it, and asks again for
    /// those the grant did not cover.
    pub(super) fn on_lease_answer(&mut self, answer: LeaseAnswer, ready: &mut Ready) {
        let Some(global) = self.global.as_mut() else {
            return;
        };
        let LeaseAnswer {
            ask_id,
            rule_idx,
            key,
            grant,
        } = answer;
        let now_ms = crate::unix_now_ms();
        let (mut done, next) = global
            .leased
            .answered(rule_idx, &key, ask_id, grant, now_ms);
        if let Some(ask) = next {
            if !global.send(self.idx, rule_idx, &key, ask) {
                let failed = global.leased.ask_failed(rule_idx, &key);
                done.extend(failed.into_iter().map(|w| (w, Answer::Unavailable)));
            }
        }
        for (waiter, answer) in done {
            let verdict = self.global_verdict(rule_idx, answer);
            let mut response = Vec::new();
            self.write_rate_verdict(&mut response, &Ok(verdict), waiter.keep_alive);
            self.counters.count_status(respond::status_of(&response));
            ready.push((waiter.ticket, response));
        }
    }

    /// A global check's verdict, counted under its rule (a shadow rule never denies).
    fn global_verdict(&mut self, rule_idx: usize, answer: Answer) -> KeyVerdict {
        let fail_mode = self
            .global
            .as_ref()
            .map_or(crate::config::FailMode::Open, |g| g.fail_mode);
        let decision = global_decision(&self.key_limiter.rules()[rule_idx], answer, fail_mode);
        self.key_limiter.settle(rule_idx, decision)
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
        if let Some(g) = &self.global {
            let mode = match g.fail_mode {
                FailMode::Open => "open",
                FailMode::Closed => "closed",
            };
            let c = g.leased.counts;
            let _ = writeln!(
                text,
                "subzero_fleet_ratelimit_unavailable_total{{shard=\"{shard}\",mode=\"{mode}\"}} {}\n\
                 subzero_fleet_lease_requests_total{{shard=\"{shard}\"}} {}\n\
                 subzero_fleet_lease_units_total{{shard=\"{shard}\"}} {}\n\
                 subzero_fleet_lease_late_total{{shard=\"{shard}\"}} {}\n\
                 subzero_fleet_lease_waiting{{shard=\"{shard}\"}} {}\n\
                 subzero_fleet_leased_keys{{shard=\"{shard}\"}} {}",
                c.unavailable,
                c.requests,
                c.units,
                c.late,
                g.leased.n_waiters(),
                g.leased.n_leased_keys(),
            );
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
    fn a_global_answer_becomes_the_usual_decision_and_the_fail_mode_decides_without_redis() {
        let rule = KeyRule {
            key_prefix: "login:".into(),
            rate_per_s: 20.0,
            burst: 10,
            shadow: false,
        };
        let allowed = global_decision(&rule, Answer::Allowed { remaining: 6 }, FailMode::Closed);
        assert_eq!(
            (allowed.allowed, allowed.remaining, allowed.retry_after_s),
            (true, 6, 0)
        );
        assert_eq!(allowed.reset_after_s, 1, "4 units back at 20/s");
        let denied = global_decision(
            &rule,
            Answer::Denied {
                retry_after_ms: 1_200,
            },
            FailMode::Open,
        );
        assert_eq!((denied.allowed, denied.retry_after_s), (false, 2));
        // Redis did not say (a partial grant): still at least a second.
        let partial = global_decision(&rule, Answer::Denied { retry_after_ms: 0 }, FailMode::Open);
        assert_eq!(partial.retry_after_s, 1);
        let open = global_decision(&rule, Answer::Unavailable, FailMode::Open);
        assert_eq!((open.allowed, open.retry_after_s), (true, 0));
        let closed = global_decision(&rule, Answer::Unavailable, FailMode::Closed);
        assert_eq!((closed.allowed, closed.retry_after_s), (false, 1));
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
