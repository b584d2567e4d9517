//! RFC 8693 delegation: the claims of the token `POST /v1/xaa/delegate` issues, and the
//! response body (§2.2.1).

use serde::Serialize;

use super::error::ExchangeError;
use super::request::{ExchangeRequest, TokenType};
use super::rules::{
    capped_ttl_s, check_may_act, check_presented, granted_scopes, nested_act, Role,
};
use crate::auth::Claims;

/// What delegation may issue; built once from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationPolicy {
    /// Our `iss`; presented tokens must carry it too.
    pub issuer: String,
    /// The `audience` / `resource` values we issue delegated tokens for (`[auth] audiences`).
    pub targets: Vec<String>,
    /// Longest lifetime of a delegated token, in seconds.
    pub max_ttl_s: u64,
}

/// The claims of a delegated access token for `req`, made from verified `subject` (and
/// `actor`) claims. `sub` stays the subject's; `act` nests the chain with the actor outermost;
/// `aud` is every requested target (each must be in `policy.targets`); scopes are the
/// requested ones held by every presented token; the lifetime ends at the earliest input `exp`
/// and within `policy.max_ttl_s`.
pub fn delegate(
    subject: &Claims,
    actor: Option<&Claims>,
    req: &ExchangeRequest,
    policy: &DelegationPolicy,
    now_s: u64,
    jti: String,
) -> Result<Claims, ExchangeError> {
    if !matches!(
        req.requested_token_type,
        TokenType::AccessToken | TokenType::Jwt
    ) {
        return Err(ExchangeError::token_type(
            "delegation issues access tokens; an id-jag is issued for a configured resource \
             authorization server",
        ));
    }
    if req.actor.is_some() != actor.is_some() {
        return Err(ExchangeError::request(
            "actor claims must be given exactly when the request has an actor_token",
        ));
    }
    check_presented(subject, Role::Subject, Some(&policy.issuer), now_s)?;
    if let Some(actor) = actor {
        check_presented(actor, Role::Actor, None, now_s)?;
        if actor.act.is_some() {
            return Err(ExchangeError::request(
                "actor_token is itself a delegated token; present the acting party's own token",
            ));
        }
        if actor.sub == subject.sub && actor.iss == subject.iss {
            return Err(ExchangeError::request(
                "actor_token and subject_token name the same party",
            ));
        }
    }
    check_may_act(subject, actor)?;
    let act = nested_act(subject, actor, &policy.issuer)?;

    let mut audience: Vec<String> = Vec::new();
    for target in req.targets() {
        if !policy.targets.iter().any(|t| t == target) {
            return Err(ExchangeError::target(
                "an audience or resource is not one this server issues delegated tokens for",
            ));
        }
        if !audience.iter().any(|a| a == target) {
            audience.push(target.to_owned());
        }
    }
    if audience.is_empty() {
        return Err(ExchangeError::request(
            "audience or resource is required: name the service the new token is for",
        ));
    }

    let mut holders = vec![subject];
    holders.extend(actor);
    let scopes = granted_scopes(req.scope.as_deref(), &holders, None)?;
    let ttl_s = capped_ttl_s(&holders, policy.max_ttl_s, now_s);
    if ttl_s == 0 {
        return Err(ExchangeError::request(
            "the new token would have no lifetime",
        ));
    }
    let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let mut claims = Claims::new_for(
        &policy.issuer,
        &subject.sub,
        audience,
        &scope_refs,
        ttl_s,
        now_s,
        jti,
    );
    claims.act = act;
    Ok(claims)
}

/// The RFC 8693 §2.2.1 success body. Send it with `Cache-Control: no-store`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExchangeResponse {
    /// The issued token (an ID-JAG too: RFC 8693 names the field `access_token` regardless).
    pub access_token: String,
    /// URN of what was issued.
    pub issued_token_type: &'static str,
    /// `Bearer` for access tokens; `N_A` for an ID-JAG, which is not an access token.
    pub token_type: &'static str,
    /// Seconds until `exp`.
    pub expires_in: u64,
    /// The granted scopes (RFC 6749 §5.1: present because they may differ from the request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl ExchangeResponse {
    /// The body for `token`, signed from `claims`, of type `issued` (the request's
    /// `requested_token_type`).
    pub fn new(token: String, claims: &Claims, issued: TokenType, now_s: u64) -> ExchangeResponse {
        ExchangeResponse {
            access_token: token,
            issued_token_type: issued.urn(),
            token_type: if issued == TokenType::IdJag {
                "N_A"
            } else {
                "Bearer"
            },
            expires_in: claims.exp.saturating_sub(now_s),
            scope: claims.scope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xaa::ActorToken;
    use serde_json::json;

    const NOW: u64 = 1_000_000;
    const US: &str = "subzero";

    fn policy() -> DelegationPolicy {
        DelegationPolicy {
            issuer: US.into(),
            targets: vec!["api".into(), "https://rs.example/".into()],
            max_ttl_s: 600,
        }
    }

    fn token(sub: &str, scope: &str, ttl_s: u64) -> Claims {
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        Claims::new_for(
            US,
            sub,
            vec!["subzero".into()],
            &scopes,
            ttl_s,
            NOW - 10,
            "in".into(),
        )
    }

    fn request(actor: bool, scope: Option<&str>) -> ExchangeRequest {
        ExchangeRequest {
            subject_token: "s".into(),
            subject_token_type: TokenType::AccessToken,
            actor: actor.then(|| ActorToken {
                token: "a".into(),
                token_type: TokenType::AccessToken,
            }),
            audience: vec!["api".into()],
            resource: vec![],
            scope: scope.map(|s| s.split(' ').map(str::to_owned).collect()),
            requested_token_type: TokenType::AccessToken,
        }
    }

    fn run(
        subject: &Claims,
        actor: Option<&Claims>,
        req: &ExchangeRequest,
    ) -> Result<Claims, ExchangeError> {
        delegate(subject, actor, req, &policy(), NOW, "new-jti".into())
    }

    #[test]
    fn nests_the_chain_with_the_actor_outermost() {
        let mut user = token("user", "read write", 900);
        user.act = Some(json!({"sub":"agent-A"}));
        let agent_b = token("agent-B", "read write", 900);
        let got = run(&user, Some(&agent_b), &request(true, None)).unwrap();
        assert_eq!(got.sub, "user");
        assert_eq!(got.iss, US);
        assert_eq!(got.aud, ["api"]);
        assert_eq!(got.jti.as_deref(), Some("new-jti"));
        assert_eq!((got.iat, got.nbf), (Some(NOW), Some(NOW)));
        let json = serde_json::to_value(&got).unwrap();
        assert_eq!(
            json["act"],
            json!({"sub":"agent-B","act":{"sub":"agent-A"}}),
            "{json}"
        );
        assert_eq!(
            serde_json::to_string(&json!({"sub": got.sub, "act": got.act})).unwrap(),
            r#"{"act":{"act":{"sub":"agent-A"},"sub":"agent-B"},"sub":"user"}"#
        );
    }

    #[test]
    fn subject_must_be_ours_and_a_foreign_actor_is_recorded_with_its_issuer() {
        let user = token("user", "read", 900);
        let mut agent = token("agent", "read", 900);
        agent.iss = "https://idp.example".into();
        let got = run(&user, Some(&agent), &request(true, None)).unwrap();
        assert_eq!(
            got.act,
            Some(json!({"sub":"agent","iss":"https://idp.example"}))
        );
        let err = run(&agent, None, &request(false, None)).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert!(
            err.description().contains("subject_token was not issued"),
            "{err}"
        );
    }

    #[test]
    fn depth_three_is_allowed_and_four_is_refused_with_invalid_request() {
        let agent = token("agent-C", "read", 900);
        let mut user = token("user", "read", 900);
        user.act = Some(json!({"sub":"agent-B","act":{"sub":"agent-A"}}));
        let three = run(&user, Some(&agent), &request(true, None)).unwrap();
        assert_eq!(crate::xaa::act_depth(three.act.as_ref()), Ok(3));
        assert_eq!(
            crate::xaa::act_chain(&three),
            ["agent-C", "agent-B", "agent-A"]
        );

        // Delegating the depth-3 token once more would make 4 actors.
        let mut deeper = three.clone();
        deeper.exp = NOW + 100;
        let agent_d = token("agent-D", "read", 900);
        let err = run(&deeper, Some(&agent_d), &request(true, None)).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert!(err.description().contains("4 actors; at most 3"), "{err}");

        // A chain that is already too deep is refused even without a new actor.
        let mut too_deep = token("user", "read", 900);
        too_deep.act =
            Some(json!({"sub":"d","act":{"sub":"c","act":{"sub":"b","act":{"sub":"a"}}}}));
        let err = run(&too_deep, None, &request(false, None)).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert!(err.description().contains("more than 3 actors"), "{err}");
        let err = run(&too_deep, Some(&agent_d), &request(true, None)).unwrap_err();
        assert!(err.description().contains("more than 4 actors"), "{err}");
    }

    #[test]
    fn scopes_are_the_intersection() {
        let user = token("user", "read write admin", 900);
        let agent = token("agent", "read write deploy", 900);
        let got = run(
            &user,
            Some(&agent),
            &request(true, Some("admin write read deploy")),
        )
        .unwrap();
        assert_eq!(got.scope.as_deref(), Some("write read"));
        let none_requested = run(&user, Some(&agent), &request(true, None)).unwrap();
        assert_eq!(none_requested.scope.as_deref(), Some("read write"));
        let err = run(&user, Some(&agent), &request(true, Some("admin deploy"))).unwrap_err();
        assert_eq!(err.code(), "invalid_scope");
        let alone = run(&user, None, &request(false, Some("admin"))).unwrap();
        assert_eq!(alone.scope.as_deref(), Some("admin"));
    }

    #[test]
    fn may_act_is_honoured_and_violations_refused() {
        let mut user = token("user", "read", 900);
        user.extra_mut().may_act = Some(json!({"sub":"agent-ok"}));
        let ok = token("agent-ok", "read", 900);
        let other = token("agent-other", "read", 900);
        assert!(run(&user, Some(&ok), &request(true, None)).is_ok());
        let err = run(&user, Some(&other), &request(true, None)).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert!(err.description().contains("may_act"), "{err}");
        let err = run(&user, None, &request(false, None)).unwrap_err();
        assert!(
            err.description().contains("actor_token is required"),
            "{err}"
        );
    }

    #[test]
    fn lifetime_is_capped_by_inputs_and_policy() {
        let user = token("user", "read", 900); // exp = NOW + 890
        let short_agent = token("agent", "read", 100); // exp = NOW + 90
        let got = run(&user, Some(&short_agent), &request(true, None)).unwrap();
        assert_eq!(got.exp, NOW + 90);
        let got = run(&user, None, &request(false, None)).unwrap();
        assert_eq!(got.exp, NOW + 600, "policy cap");
        let short_user = token("user", "read", 40);
        let got = run(&short_user, None, &request(false, None)).unwrap();
        assert_eq!(got.exp, NOW + 30);
        let expired = token("user", "read", 10);
        let err = run(&expired, None, &request(false, None)).unwrap_err();
        assert!(
            err.description().contains("subject_token has expired"),
            "{err}"
        );
    }

    #[test]
    fn audience_and_resource_handling() {
        let user = token("user", "read", 900);
        let mut req = request(false, None);
        req.resource = vec!["https://rs.example/".into()];
        req.audience = vec!["api".into(), "api".into()];
        let got = run(&user, None, &req).unwrap();
        assert_eq!(got.aud, ["api", "https://rs.example/"]);

        req.audience = vec![];
        let got = run(&user, None, &req).unwrap();
        assert_eq!(got.aud, ["https://rs.example/"]);

        req.resource = vec!["https://elsewhere.example/".into()];
        let err = run(&user, None, &req).unwrap_err();
        assert_eq!(err.code(), "invalid_target");

        req.resource = vec![];
        let err = run(&user, None, &req).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert!(err
            .description()
            .contains("audience or resource is required"));

        req.audience = vec!["api".into(), "billing".into()];
        assert_eq!(run(&user, None, &req).unwrap_err().code(), "invalid_target");
    }

    #[test]
    fn refuses_mismatched_inputs() {
        let user = token("user", "read", 900);
        let agent = token("agent", "read", 900);
        // Actor claims without an actor_token in the request, and the reverse.
        assert!(run(&user, Some(&agent), &request(false, None)).is_err());
        assert!(run(&user, None, &request(true, None)).is_err());
        // A delegated actor token, the same party twice, a channel-bound subject.
        let mut delegated_agent = agent.clone();
        delegated_agent.act = Some(json!({"sub":"x"}));
        let err = run(&user, Some(&delegated_agent), &request(true, None)).unwrap_err();
        assert!(
            err.description().contains("itself a delegated token"),
            "{err}"
        );
        let err = run(&user, Some(&user), &request(true, None)).unwrap_err();
        assert!(err.description().contains("same party"), "{err}");
        let mut bound = user.clone();
        bound.cid = Some("ch-1".into());
        assert!(run(&bound, None, &request(false, None)).is_err());
        // An ID-JAG is not issued here.
        let mut jag = request(false, None);
        jag.requested_token_type = TokenType::IdJag;
        assert_eq!(
            run(&user, None, &jag).unwrap_err().code(),
            "unsupported_token_type"
        );
    }

    #[test]
    fn response_body() {
        let user = token("user", "read write", 900);
        let claims = run(&user, None, &request(false, Some("read"))).unwrap();
        let body = ExchangeResponse::new("tok".into(), &claims, TokenType::AccessToken, NOW);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "access_token": "tok",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 600,
                "scope": "read"
            })
        );
        let jag = ExchangeResponse::new("jag".into(), &claims, TokenType::IdJag, NOW);
        assert_eq!(jag.token_type, "N_A");
        assert_eq!(
            jag.issued_token_type,
            "urn:ietf:params:oauth:token-type:id-jag"
        );
    }
}
