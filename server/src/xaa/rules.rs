//! The rules every exchange shares: which presented tokens are acceptable, the `act` chain
//! (RFC 8693 §4.1), `may_act` (§4.4), scope intersection and lifetime capping.

use serde_json::{Map, Value};

use super::error::ExchangeError;
use super::MAX_ACT_DEPTH;
use crate::auth::Claims;

/// Which presented token a rule is about (for descriptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Subject,
    Actor,
    App,
    Agent,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Subject => "subject_token",
            Role::Actor => "actor_token",
            Role::App => "app token",
            Role::Agent => "agent token",
        }
    }
}

/// A presented token we may build on: not expired, not bound to a channel (channel tokens are
/// revoked as a unit; a token derived from one would escape that), and, when `must_be_ours`
/// names our issuer, issued by us. Whoever becomes the `sub` of a token we issue must be ours:
/// another issuer's `sub` would land in our namespace, where it could name one of our own
/// principals. An actor only appears inside `act`, with its `iss`, so it may be foreign.
pub(super) fn check_presented(
    claims: &Claims,
    role: Role,
    must_be_ours: Option<&str>,
    now_s: u64,
) -> Result<(), ExchangeError> {
    let name = role.name();
    if must_be_ours.is_some_and(|ours| claims.iss != ours) {
        return Err(ExchangeError::request(format!(
            "{name} was not issued by this server"
        )));
    }
    if claims.exp <= now_s {
        return Err(ExchangeError::request(format!("{name} has expired")));
    }
    if claims.cid.is_some() {
        return Err(ExchangeError::request(format!(
            "{name} is bound to a channel and cannot be exchanged"
        )));
    }
    Ok(())
}

/// Number of actors in an `act` chain (0 for none), after checking its shape: each level is an
/// object with a string `sub`, nested through `act`. Stops counting past `MAX_ACT_DEPTH + 1`.
pub fn act_depth(act: Option<&Value>) -> Result<usize, ExchangeError> {
    let mut depth = 0;
    let mut level = act;
    while let Some(value) = level {
        let object = value
            .as_object()
            .filter(|o| o.get("sub").is_some_and(Value::is_string))
            .ok_or(ExchangeError::request(
                "the act claim is malformed: each actor must be an object with a string sub",
            ))?;
        depth += 1;
        if depth > MAX_ACT_DEPTH {
            break;
        }
        level = object.get("act");
    }
    Ok(depth)
}

/// The actors' subjects, outermost (the current actor) first; empty when there is no chain.
/// For headers and audit records; stops at `MAX_ACT_DEPTH + 1` entries.
pub fn act_chain(claims: &Claims) -> Vec<&str> {
    let mut subs = Vec::new();
    let mut level = claims.act.as_ref();
    while let Some(sub) = level.and_then(|v| v.get("sub")).and_then(Value::as_str) {
        subs.push(sub);
        if subs.len() > MAX_ACT_DEPTH {
            break;
        }
        level = level.and_then(|v| v.get("act"));
    }
    subs
}

/// The `act` claim of the new token: the actor outermost, the subject token's chain nested
/// inside it (RFC 8693 §4.1), refused past `MAX_ACT_DEPTH` actors. Without an actor, the
/// subject's chain is kept as it is. The actor's `iss` is recorded when it is not ours.
pub(super) fn nested_act(
    subject: &Claims,
    actor: Option<&Claims>,
    our_issuer: &str,
) -> Result<Option<Value>, ExchangeError> {
    let prior = act_depth(subject.act.as_ref())?;
    let Some(actor) = actor else {
        if prior > MAX_ACT_DEPTH {
            return Err(ExchangeError::request(format!(
                "the subject_token's delegation chain has more than {MAX_ACT_DEPTH} actors"
            )));
        }
        return Ok(subject.act.clone());
    };
    if prior + 1 > MAX_ACT_DEPTH {
        // `prior` is exact up to MAX_ACT_DEPTH + 1, so this names 4 or says "more than 4".
        let depth = if prior > MAX_ACT_DEPTH {
            format!("more than {}", MAX_ACT_DEPTH + 1)
        } else {
            (prior + 1).to_string()
        };
        return Err(ExchangeError::request(format!(
            "the delegation chain would have {depth} actors; at most {MAX_ACT_DEPTH} are allowed"
        )));
    }
    let mut entry = Map::new();
    entry.insert("sub".into(), Value::String(actor.sub.clone()));
    if actor.iss != our_issuer {
        entry.insert("iss".into(), Value::String(actor.iss.clone()));
    }
    if let Some(inner) = &subject.act {
        entry.insert("act".into(), inner.clone());
    }
    Ok(Some(Value::Object(entry)))
}

/// RFC 8693 §4.4: when the subject token carries `may_act`, an actor is required and must
/// match every claim it names. Recognised claims: `sub`, `iss`, `client_id`; any other one
/// cannot be checked and refuses (fail closed). Without `iss` in `may_act`, the actor must come
/// from the subject token's issuer, since a `sub` means something only within its issuer.
pub(super) fn check_may_act(subject: &Claims, actor: Option<&Claims>) -> Result<(), ExchangeError> {
    let Some(may_act) = subject.may_act() else {
        return Ok(());
    };
    let rules = may_act
        .as_object()
        .filter(|o| !o.is_empty())
        .ok_or(ExchangeError::request(
            "the subject_token's may_act claim is malformed (it must be a non-empty object)",
        ))?;
    let actor = actor.ok_or(ExchangeError::request(
        "the subject_token names who may act for it (may_act), so an actor_token is required",
    ))?;
    let denied = || {
        ExchangeError::request(
            "the actor_token's party is not allowed by the subject_token's may_act",
        )
    };
    for (claim, wanted) in rules {
        let wanted = wanted.as_str().ok_or(ExchangeError::request(
            "the subject_token's may_act claim is malformed (its values must be strings)",
        ))?;
        let actual = match claim.as_str() {
            "sub" => Some(actor.sub.as_str()),
            "iss" => Some(actor.iss.as_str()),
            "client_id" => actor.client_id(),
            _ => {
                return Err(ExchangeError::request(
                    "the subject_token's may_act names a claim this server does not check",
                ))
            }
        };
        if actual != Some(wanted) {
            return Err(denied());
        }
    }
    if !rules.contains_key("iss") && actor.iss != subject.iss {
        return Err(denied());
    }
    Ok(())
}

/// Scopes of the new token: the requested ones (all of the subject's when none were
/// requested), kept only when every presented token holds them and `allowed` (when given)
/// lists them; in request order, without repeats. Empty is `invalid_scope`.
pub(super) fn granted_scopes(
    requested: Option<&[String]>,
    holders: &[&Claims],
    allowed: Option<&[String]>,
) -> Result<Vec<String>, ExchangeError> {
    let wanted: Vec<&str> = match (requested, holders.first()) {
        (Some(requested), _) => requested.iter().map(String::as_str).collect(),
        (None, Some(subject)) => subject.scopes().collect(),
        (None, None) => Vec::new(),
    };
    let mut granted: Vec<String> = Vec::new();
    for scope in wanted {
        let held = holders.iter().all(|c| c.has_scope(scope));
        let permitted = allowed.is_none_or(|a| a.iter().any(|s| s == scope));
        if held && permitted && !granted.iter().any(|s| s == scope) {
            granted.push(scope.to_owned());
        }
    }
    if granted.is_empty() {
        return Err(ExchangeError::scope(
            "no requested scope is held by every presented token (and allowed for the target)",
        ));
    }
    Ok(granted)
}

/// Seconds the new token may live: up to `max_ttl_s`, and never past any input's `exp`.
pub(super) fn capped_ttl_s(inputs: &[&Claims], max_ttl_s: u64, now_s: u64) -> u64 {
    inputs
        .iter()
        .map(|c| c.exp.saturating_sub(now_s))
        .fold(max_ttl_s, u64::min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(iss: &str, sub: &str, scope: &str, exp: u64) -> Claims {
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        Claims::new_for(iss, sub, vec!["api".into()], &scopes, exp, 0, "j".into())
    }

    #[test]
    fn act_depth_counts_and_checks_shape() {
        assert_eq!(act_depth(None), Ok(0));
        assert_eq!(act_depth(Some(&json!({"sub":"a"}))), Ok(1));
        assert_eq!(
            act_depth(Some(&json!({"sub":"b","act":{"sub":"a"}}))),
            Ok(2)
        );
        let deep = json!({"sub":"d","act":{"sub":"c","act":{"sub":"b","act":{"sub":"a","act":{"sub":"z"}}}}});
        assert_eq!(
            act_depth(Some(&deep)),
            Ok(MAX_ACT_DEPTH + 1),
            "stops counting"
        );
        for bad in [
            json!("a"),
            json!({"iss":"x"}),
            json!({"sub":1}),
            json!({"sub":"a","act":[1]}),
        ] {
            assert_eq!(act_depth(Some(&bad)).unwrap_err().code(), "invalid_request");
        }
    }

    #[test]
    fn act_chain_lists_outermost_first() {
        let mut c = claims("us", "user", "", 10);
        assert!(act_chain(&c).is_empty());
        c.act = Some(json!({"sub":"agent-B","act":{"sub":"agent-A"}}));
        assert_eq!(act_chain(&c), ["agent-B", "agent-A"]);
    }

    #[test]
    fn may_act_shapes() {
        let agent = claims("us", "agent", "", 10);
        let mut user = claims("us", "user", "", 10);
        assert!(check_may_act(&user, None).is_ok(), "no may_act: no rule");
        user.extra_mut().may_act = Some(json!({"sub":"agent"}));
        assert!(check_may_act(&user, Some(&agent)).is_ok());
        let err = check_may_act(&user, None).unwrap_err();
        assert!(
            err.description().contains("actor_token is required"),
            "{err}"
        );
        let foreign = claims("them", "agent", "", 10);
        let err = check_may_act(&user, Some(&foreign)).unwrap_err();
        assert!(err.description().contains("not allowed"), "{err}");

        user.extra_mut().may_act = Some(json!({"sub":"agent","iss":"them"}));
        assert!(check_may_act(&user, Some(&foreign)).is_ok());
        assert!(check_may_act(&user, Some(&agent)).is_err());

        let mut with_client = claims("us", "agent", "", 10);
        with_client.extra_mut().client_id = Some("svc".into());
        user.extra_mut().may_act = Some(json!({"client_id":"svc"}));
        assert!(check_may_act(&user, Some(&with_client)).is_ok());
        assert!(check_may_act(&user, Some(&agent)).is_err(), "no client_id");

        for bad in [
            json!("agent"),
            json!({}),
            json!({"sub":1}),
            json!({"email":"a@b"}),
        ] {
            user.extra_mut().may_act = Some(bad.clone());
            let err = check_may_act(&user, Some(&agent)).unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{bad}");
        }
    }

    #[test]
    fn scope_intersection() {
        let subject = claims("us", "user", "read write admin", 10);
        let actor = claims("us", "agent", "read write", 10);
        let req = |s: &[&str]| s.iter().map(|&x| x.to_owned()).collect::<Vec<_>>();
        let both = [&subject, &actor];
        assert_eq!(
            granted_scopes(
                Some(&req(&["admin", "write", "read", "write"])),
                &both,
                None
            ),
            Ok(vec!["write".to_owned(), "read".to_owned()])
        );
        assert_eq!(
            granted_scopes(None, &both, None),
            Ok(vec!["read".to_owned(), "write".to_owned()])
        );
        assert_eq!(
            granted_scopes(None, &[&subject], None),
            Ok(vec![
                "read".to_owned(),
                "write".to_owned(),
                "admin".to_owned()
            ])
        );
        let allowed = req(&["write"]);
        assert_eq!(
            granted_scopes(None, &both, Some(&allowed)),
            Ok(vec!["write".to_owned()])
        );
        let err = granted_scopes(Some(&req(&["admin"])), &both, None).unwrap_err();
        assert_eq!(err.code(), "invalid_scope");
        let unscoped = claims("us", "user", "", 10);
        assert!(granted_scopes(None, &[&unscoped], None).is_err());
    }

    #[test]
    fn lifetime_is_the_shortest_of_inputs_and_cap() {
        let a = claims("us", "a", "", 500);
        let b = claims("us", "b", "", 200);
        assert_eq!(capped_ttl_s(&[&a, &b], 900, 100), 100);
        assert_eq!(capped_ttl_s(&[&a], 900, 100), 400);
        assert_eq!(capped_ttl_s(&[&a], 60, 100), 60);
        assert_eq!(capped_ttl_s(&[&a], 900, 600), 0);
    }

    #[test]
    fn presented_tokens_must_be_ours_live_and_unbound() {
        let ok = claims("us", "user", "", 10);
        assert!(check_presented(&ok, Role::Subject, Some("us"), 5).is_ok());
        let foreign = claims("them", "agent", "", 10);
        assert!(check_presented(&foreign, Role::Actor, None, 5).is_ok());
        let cases = [
            (
                claims("them", "user", "", 10),
                5,
                "not issued by this server",
            ),
            (ok.clone(), 10, "has expired"),
        ];
        for (c, now, needle) in cases {
            let err = check_presented(&c, Role::Actor, Some("us"), now).unwrap_err();
            assert!(err.description().starts_with("actor_token"), "{err}");
            assert!(err.description().contains(needle), "{err}");
        }
        let mut bound = ok;
        bound.cid = Some("ch".into());
        let err = check_presented(&bound, Role::Subject, None, 5).unwrap_err();
        assert!(err.description().contains("channel"), "{err}");
    }
}
