//! App↔agent channels: the two `xaa:callback` tokens `POST /v1/xaa/channel` issues, bound to
//! one channel id in their `cid` claim so that revoking the id revokes both.

use super::error::ExchangeError;
use super::rules::{capped_ttl_s, check_presented, Role};
use super::SCOPE_CALLBACK;
use crate::auth::Claims;

/// Longest channel id, in bytes.
const MAX_CHANNEL_ID_BYTES: usize = 64;

/// What channels may issue; built once from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPolicy {
    /// Our `iss`; both parties' tokens must carry it too.
    pub issuer: String,
    /// `aud` of the channel tokens (one of `[auth] audiences`, so `/v1/authenticate` takes them).
    pub audience: String,
    /// Longest lifetime of a channel token, in seconds.
    pub max_ttl_s: u64,
}

/// The two claim sets of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTokens {
    /// The app's token (`sub` = the app): it calls the agent back with it.
    pub app: Claims,
    /// The agent's token (`sub` = the agent): it calls the app back with it.
    pub agent: Claims,
}

/// Checks a channel id: 1–64 characters of `[A-Za-z0-9_-]` (a `new_jti()` qualifies).
pub fn validate_channel_id(channel_id: &str) -> Result<(), ExchangeError> {
    let ok = !channel_id.is_empty()
        && channel_id.len() <= MAX_CHANNEL_ID_BYTES
        && channel_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ExchangeError::request(format!(
            "channel id must be 1 to {MAX_CHANNEL_ID_BYTES} characters of A-Z, a-z, 0-9, '_' and '-'"
        )))
    }
}

/// The claims of a channel's two tokens, from the verified tokens of the two parties: each keeps
/// its party's `sub`, carries only `xaa:callback`, names `channel_id` in `cid`, and lives
/// within `policy.max_ttl_s` and the earlier of the two parties' `exp` (both tokens share one
/// lifetime). Both parties must be ours, live, distinct and not already on a channel.
/// `jtis` are the app's and the agent's token ids.
pub fn channel_tokens(
    app: &Claims,
    agent: &Claims,
    channel_id: &str,
    policy: &ChannelPolicy,
    now_s: u64,
    jtis: [String; 2],
) -> Result<ChannelTokens, ExchangeError> {
    validate_channel_id(channel_id)?;
    check_presented(app, Role::App, Some(&policy.issuer), now_s)?;
    check_presented(agent, Role::Agent, Some(&policy.issuer), now_s)?;
    if app.sub == agent.sub {
        return Err(ExchangeError::request(
            "a channel needs two different parties (the app and the agent)",
        ));
    }
    let ttl_s = capped_ttl_s(&[app, agent], policy.max_ttl_s, now_s);
    if ttl_s == 0 {
        return Err(ExchangeError::request("the channel would have no lifetime"));
    }
    let [app_jti, agent_jti] = jtis;
    let token = |party: &Claims, jti: String| {
        let mut claims = Claims::new_for(
            &policy.issuer,
            &party.sub,
            vec![policy.audience.clone()],
            &[SCOPE_CALLBACK],
            ttl_s,
            now_s,
            jti,
        );
        claims.cid = Some(channel_id.to_owned());
        claims
    };
    Ok(ChannelTokens {
        app: token(app, app_jti),
        agent: token(agent, agent_jti),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 3_000_000;

    fn policy() -> ChannelPolicy {
        ChannelPolicy {
            issuer: "subzero".into(),
            audience: "subzero".into(),
            max_ttl_s: 3600,
        }
    }

    fn party(sub: &str, ttl_s: u64) -> Claims {
        Claims::new_for(
            "subzero",
            sub,
            vec!["api".into()],
            &["read"],
            ttl_s,
            NOW,
            "p".into(),
        )
    }

    fn open(app: &Claims, agent: &Claims, id: &str) -> Result<ChannelTokens, ExchangeError> {
        channel_tokens(
            app,
            agent,
            id,
            &policy(),
            NOW,
            ["j-app".into(), "j-agent".into()],
        )
    }

    #[test]
    fn two_callback_tokens_bound_to_the_channel() {
        let got = open(&party("app-1", 900), &party("agent-1", 600), "ch_01-x").unwrap();
        for (claims, sub, jti) in [
            (&got.app, "app-1", "j-app"),
            (&got.agent, "agent-1", "j-agent"),
        ] {
            assert_eq!(claims.sub, sub);
            assert_eq!(claims.iss, "subzero");
            assert_eq!(claims.aud, ["subzero"]);
            assert_eq!(claims.scope.as_deref(), Some(SCOPE_CALLBACK));
            assert_eq!(claims.cid.as_deref(), Some("ch_01-x"));
            assert_eq!(claims.jti.as_deref(), Some(jti));
            assert_eq!(claims.exp, NOW + 600, "the shorter party's lifetime");
            assert!(claims.act.is_none());
        }
        let long = open(&party("app-1", 90_000), &party("agent-1", 90_000), "c").unwrap();
        assert_eq!(long.app.exp, NOW + 3600, "policy cap");
        let json = serde_json::to_value(&long.app).unwrap();
        assert_eq!(json["cid"], "c");
    }

    #[test]
    fn refusals() {
        let app = party("app-1", 900);
        let agent = party("agent-1", 900);
        for bad_id in ["", "a/b", "a b", &"c".repeat(65)] {
            let err = open(&app, &agent, bad_id).unwrap_err();
            assert!(
                err.description().contains("channel id"),
                "{bad_id:?}: {err}"
            );
        }
        assert!(validate_channel_id(&"c".repeat(64)).is_ok());
        assert!(validate_channel_id(&crate::auth::new_jti()).is_ok());

        let err = open(&app, &app, "c").unwrap_err();
        assert!(err.description().contains("two different parties"), "{err}");

        let mut foreign = agent.clone();
        foreign.iss = "https://idp.example".into();
        let err = open(&app, &foreign, "c").unwrap_err();
        assert!(
            err.description().contains("agent token was not issued"),
            "{err}"
        );

        let mut bound = app.clone();
        bound.cid = Some("other".into());
        let err = open(&bound, &agent, "c").unwrap_err();
        assert!(err.description().contains("bound to a channel"), "{err}");

        let expired = party("agent-1", 0);
        let err = open(&app, &expired, "c").unwrap_err();
        assert!(
            err.description().contains("agent token has expired"),
            "{err}"
        );
    }
}
