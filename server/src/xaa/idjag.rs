//! ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant): checking one presented to us as
//! the resource's authorization server, issuing one for our own users, and the bounded table
//! that makes each `jti` single use.

use std::collections::{BTreeSet, HashMap};

use super::error::ExchangeError;
use super::request::{ExchangeRequest, TokenType};
use super::rules::{capped_ttl_s, check_presented, granted_scopes, Role};
use super::ID_JAG_TYP;
use crate::auth::Claims;

/// Longest `jti` (and issuer) the replay table stores, in bytes.
pub const MAX_JTI_BYTES: usize = 256;

/// Checks an ID-JAG whose signature, issuer trust and time claims the `Verifier` already
/// checked, as `POST /v1/token` with `grant_type=…:jwt-bearer` receives it: header `typ` is
/// `oauth-id-jag+jwt` (case-insensitive, `application/` prefix allowed, RFC 7515 §4.1.9), `aud`
/// is exactly our issuer, `client_id` is the authenticated client, `jti` and `iat` are present,
/// and `exp` is after `now_s`. Single use of the `jti` is the caller's [`SeenJtis`].
pub fn check_id_jag(
    header_typ: Option<&str>,
    claims: &Claims,
    authenticated_client_id: &str,
    our_issuer: &str,
    now_s: u64,
) -> Result<(), ExchangeError> {
    let typ_ok = header_typ.is_some_and(|typ| {
        let typ = match typ.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
            _ => typ,
        };
        typ.eq_ignore_ascii_case(ID_JAG_TYP)
    });
    if !typ_ok {
        return Err(ExchangeError::grant(
            "the assertion is not an ID-JAG: its typ header must be oauth-id-jag+jwt",
        ));
    }
    match claims.aud.as_slice() {
        [one] if one == our_issuer => {}
        many if many.iter().any(|a| a == our_issuer) => {
            return Err(ExchangeError::grant(
                "the ID-JAG must have exactly one audience, this server's issuer",
            ))
        }
        _ => {
            return Err(ExchangeError::grant(
                "the ID-JAG's aud is not this server's issuer",
            ))
        }
    }
    match claims.client_id() {
        None => return Err(ExchangeError::grant("the ID-JAG has no client_id claim")),
        Some(id) if id != authenticated_client_id => {
            return Err(ExchangeError::grant(
                "the ID-JAG was issued to another client than the one authenticated",
            ))
        }
        Some(_) => {}
    }
    match claims.jti.as_deref() {
        None | Some("") => return Err(ExchangeError::grant("the ID-JAG has no jti claim")),
        Some(jti) if jti.len() > MAX_JTI_BYTES => {
            return Err(ExchangeError::grant(format!(
                "the ID-JAG's jti is longer than {MAX_JTI_BYTES} bytes"
            )))
        }
        Some(_) => {}
    }
    if claims.iat.is_none() {
        return Err(ExchangeError::grant("the ID-JAG has no iat claim"));
    }
    if claims.exp <= now_s {
        return Err(ExchangeError::grant("the ID-JAG has expired"));
    }
    Ok(())
}

/// A resource authorization server we issue ID-JAGs for (configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdJagTarget {
    /// Its issuer identifier: the request's `audience` and the ID-JAG's `aud`.
    pub issuer: String,
    /// Resource servers behind it that a request may name in `resource`.
    pub resources: Vec<String>,
    /// Scopes an ID-JAG for it may carry; empty means any scope the subject holds.
    pub scopes: Vec<String>,
    /// Longest lifetime of an ID-JAG for it, in seconds (the draft's examples use 300).
    pub max_ttl_s: u64,
}

/// The claims of an ID-JAG for `req` (`requested_token_type=…:id-jag`), issued by us
/// (`our_issuer`) for our own user `subject` to redeem at the resource authorization server the
/// request's single `audience` names: `aud` = that server, `client_id` = the client that will
/// redeem it there (resolved by the caller), `resource` = the request's resources (each
/// configured for that server), scopes = requested ∩ subject's ∩ the target's, lifetime within
/// the target's cap and the subject's `exp`; the subject's `act` chain is carried. Sign with
/// `auth::sign_typed(…, ID_JAG_TYP, …)`.
pub fn build_id_jag(
    subject: &Claims,
    req: &ExchangeRequest,
    targets: &[IdJagTarget],
    our_issuer: &str,
    client_id: &str,
    now_s: u64,
    jti: String,
) -> Result<Claims, ExchangeError> {
    if req.requested_token_type != TokenType::IdJag {
        return Err(ExchangeError::token_type(
            "an ID-JAG is issued only for requested_token_type id-jag",
        ));
    }
    if req.actor.is_some() {
        return Err(ExchangeError::request(
            "actor_token is not accepted when requesting an ID-JAG",
        ));
    }
    check_presented(subject, Role::Subject, Some(our_issuer), now_s)?;
    let target = match req.audience.as_slice() {
        [] => {
            return Err(ExchangeError::request(
                "audience is required: the issuer of the resource authorization server",
            ))
        }
        [one] => targets
            .iter()
            .find(|t| &t.issuer == one)
            .ok_or(ExchangeError::target(
                "audience is not a resource authorization server this server issues ID-JAGs for",
            ))?,
        _ => {
            return Err(ExchangeError::target(
                "an ID-JAG is issued for exactly one authorization server (one audience)",
            ))
        }
    };
    if !req
        .resource
        .iter()
        .all(|r| target.resources.iter().any(|t| t == r))
    {
        return Err(ExchangeError::target(
            "a resource is not configured for that authorization server",
        ));
    }
    let allowed = (!target.scopes.is_empty()).then_some(target.scopes.as_slice());
    let scopes = granted_scopes(req.scope.as_deref(), &[subject], allowed)?;
    let ttl_s = capped_ttl_s(&[subject], target.max_ttl_s, now_s);
    if ttl_s == 0 {
        return Err(ExchangeError::request("the ID-JAG would have no lifetime"));
    }
    let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let mut claims = Claims::new_for(
        our_issuer,
        &subject.sub,
        vec![target.issuer.clone()],
        &scope_refs,
        ttl_s,
        now_s,
        jti,
    );
    claims.act.clone_from(&subject.act);
    let extra = claims.extra_mut();
    extra.client_id = Some(client_id.to_owned());
    extra.resource.clone_from(&req.resource);
    Ok(claims)
}

/// `(iss, jti)` pairs already redeemed, each kept until its assertion can no longer verify,
/// bounded: when full of live entries a new one is refused (`temporarily_unavailable`) rather
/// than forgetting one, which would reopen a replay. `jti` is unique per issuer, hence the
/// pair. Every operation is O(log n); expired entries leave in expiry order.
#[derive(Debug)]
pub struct SeenJtis {
    keep_until_s: HashMap<(String, String), u64>,
    by_expiry: BTreeSet<(u64, String, String)>,
    max_entries: usize,
}

impl SeenJtis {
    /// An empty table holding at most `max_entries` live pairs.
    pub fn new(max_entries: usize) -> SeenJtis {
        SeenJtis {
            keep_until_s: HashMap::new(),
            by_expiry: BTreeSet::new(),
            max_entries,
        }
    }

    /// Records `(iss, jti)` as used until `keep_until_s` (the assertion's `exp` plus the
    /// verifier's leeway: after that it fails verification on its own). Refuses a pair already
    /// recorded (`invalid_grant`), and a new pair when the table is full of unexpired ones.
    pub fn check_and_insert(
        &mut self,
        iss: &str,
        jti: &str,
        keep_until_s: u64,
        now_s: u64,
    ) -> Result<(), ExchangeError> {
        if jti.is_empty() || jti.len() > MAX_JTI_BYTES || iss.len() > MAX_JTI_BYTES {
            return Err(ExchangeError::grant(format!(
                "the assertion's jti and iss must be 1 to {MAX_JTI_BYTES} bytes"
            )));
        }
        self.expire(now_s);
        let key = (iss.to_owned(), jti.to_owned());
        if self.keep_until_s.contains_key(&key) {
            return Err(ExchangeError::grant(
                "the ID-JAG was already used (jti replay)",
            ));
        }
        if keep_until_s <= now_s {
            return Err(ExchangeError::grant("the ID-JAG has expired"));
        }
        if self.keep_until_s.len() >= self.max_entries {
            return Err(ExchangeError::TemporarilyUnavailable(
                format!(
                    "the table of used ID-JAG ids is full ({} live entries); retry later",
                    self.max_entries
                )
                .into(),
            ));
        }
        self.by_expiry
            .insert((keep_until_s, key.0.clone(), key.1.clone()));
        self.keep_until_s.insert(key, keep_until_s);
        debug_assert_eq!(self.by_expiry.len(), self.keep_until_s.len());
        Ok(())
    }

    /// Drops every pair whose `keep_until_s` is at or before `now_s`; returns how many.
    pub fn expire(&mut self, now_s: u64) -> usize {
        let mut n_dropped = 0;
        while let Some(first) = self.by_expiry.first() {
            if first.0 > now_s {
                break;
            }
            if let Some((_, iss, jti)) = self.by_expiry.pop_first() {
                self.keep_until_s.remove(&(iss, jti));
                n_dropped += 1;
            }
        }
        n_dropped
    }

    /// Live pairs held.
    pub fn len(&self) -> usize {
        self.keep_until_s.len()
    }

    /// Whether no pair is held.
    pub fn is_empty(&self) -> bool {
        self.keep_until_s.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xaa::ActorToken;
    use serde_json::json;

    const NOW: u64 = 2_000_000;
    const US: &str = "https://as.subzero.example";

    fn jag() -> Claims {
        let mut c = Claims::new_for(
            "https://idp.example",
            "alice",
            vec![US.into()],
            &["read"],
            300,
            NOW - 5,
            "jag-1".into(),
        );
        c.extra_mut().client_id = Some("svc-a".into());
        c
    }

    fn check(typ: Option<&str>, c: &Claims) -> Result<(), ExchangeError> {
        check_id_jag(typ, c, "svc-a", US, NOW)
    }

    #[test]
    fn accepts_a_good_id_jag() {
        assert_eq!(check(Some("oauth-id-jag+jwt"), &jag()), Ok(()));
        assert_eq!(check(Some("OAuth-ID-JAG+JWT"), &jag()), Ok(()));
        assert_eq!(check(Some("application/oauth-id-jag+jwt"), &jag()), Ok(()));
    }

    #[test]
    fn every_refusal_is_invalid_grant_with_its_reason() {
        let typ = Some(ID_JAG_TYP);
        let with = |f: &dyn Fn(&mut Claims)| {
            let mut c = jag();
            f(&mut c);
            c
        };
        let cases: Vec<(Option<&str>, Claims, &str)> = vec![
            (None, jag(), "typ header"),
            (Some("JWT"), jag(), "typ header"),
            (Some("application/jwt"), jag(), "typ header"),
            (Some("oauth-id-jag+jwt+x"), jag(), "typ header"),
            (
                typ,
                with(&|c| c.aud = vec!["https://other".into()]),
                "aud is not",
            ),
            (typ, with(&|c| c.aud = vec![]), "aud is not"),
            (
                typ,
                with(&|c| c.aud = vec![US.into(), "https://other".into()]),
                "exactly one audience",
            ),
            (
                typ,
                with(&|c| c.extra_mut().client_id = None),
                "no client_id",
            ),
            (
                typ,
                with(&|c| c.extra_mut().client_id = Some("svc-b".into())),
                "another client",
            ),
            (typ, with(&|c| c.jti = None), "no jti"),
            (typ, with(&|c| c.jti = Some(String::new())), "no jti"),
            (
                typ,
                with(&|c| c.jti = Some("j".repeat(257))),
                "longer than 256",
            ),
            (typ, with(&|c| c.iat = None), "no iat"),
            (typ, with(&|c| c.exp = NOW), "expired"),
        ];
        for (typ, claims, needle) in cases {
            let err = check(typ, &claims).unwrap_err();
            assert_eq!(err.code(), "invalid_grant", "{err}");
            assert!(err.description().contains(needle), "{err} lacks {needle:?}");
        }
    }

    fn targets() -> Vec<IdJagTarget> {
        vec![IdJagTarget {
            issuer: "https://as.partner.example".into(),
            resources: vec!["https://api.partner.example/".into()],
            scopes: vec!["read".into(), "write".into()],
            max_ttl_s: 300,
        }]
    }

    fn jag_request() -> ExchangeRequest {
        ExchangeRequest {
            subject_token: "s".into(),
            subject_token_type: TokenType::IdToken,
            actor: None,
            audience: vec!["https://as.partner.example".into()],
            resource: vec!["https://api.partner.example/".into()],
            scope: Some(vec!["read".into(), "admin".into()]),
            requested_token_type: TokenType::IdJag,
        }
    }

    fn user() -> Claims {
        let mut c = Claims::new_for(
            "subzero",
            "alice",
            vec!["subzero".into()],
            &["read", "write", "admin"],
            900,
            NOW,
            "u".into(),
        );
        c.act = Some(json!({"sub":"agent-A"}));
        c
    }

    fn build(req: &ExchangeRequest) -> Result<Claims, ExchangeError> {
        build_id_jag(
            &user(),
            req,
            &targets(),
            "subzero",
            "svc-a",
            NOW,
            "jag-jti".into(),
        )
    }

    #[test]
    fn builds_an_id_jag_that_the_resource_as_would_accept() {
        let c = build(&jag_request()).unwrap();
        assert_eq!(c.iss, "subzero");
        assert_eq!(c.sub, "alice");
        assert_eq!(c.aud, ["https://as.partner.example"]);
        assert_eq!(c.client_id(), Some("svc-a"));
        assert_eq!(c.resource(), ["https://api.partner.example/"]);
        assert_eq!(c.scope.as_deref(), Some("read"));
        assert_eq!(c.jti.as_deref(), Some("jag-jti"));
        assert_eq!((c.iat, c.exp), (Some(NOW), NOW + 300));
        assert_eq!(c.act, Some(json!({"sub":"agent-A"})));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["client_id"], "svc-a");
        assert_eq!(json["resource"], "https://api.partner.example/");
        // The partner, as resource AS, checks it with the same rules.
        let at_partner = check_id_jag(
            Some(ID_JAG_TYP),
            &c,
            "svc-a",
            "https://as.partner.example",
            NOW,
        );
        assert_eq!(at_partner, Ok(()));
    }

    #[test]
    fn id_jag_request_refusals() {
        let mut req = jag_request();
        req.requested_token_type = TokenType::AccessToken;
        assert_eq!(build(&req).unwrap_err().code(), "unsupported_token_type");

        let mut req = jag_request();
        req.audience = vec![];
        assert_eq!(build(&req).unwrap_err().code(), "invalid_request");
        req.audience = vec!["https://unknown.example".into()];
        assert_eq!(build(&req).unwrap_err().code(), "invalid_target");
        req.audience = vec![
            "https://as.partner.example".into(),
            "https://as.partner.example".into(),
        ];
        assert_eq!(build(&req).unwrap_err().code(), "invalid_target");

        let mut req = jag_request();
        req.resource = vec!["https://api.other.example/".into()];
        assert_eq!(build(&req).unwrap_err().code(), "invalid_target");

        let mut req = jag_request();
        req.scope = Some(vec!["admin".into()]);
        assert_eq!(build(&req).unwrap_err().code(), "invalid_scope");

        let mut req = jag_request();
        req.actor = Some(ActorToken {
            token: "a".into(),
            token_type: TokenType::AccessToken,
        });
        assert_eq!(build(&req).unwrap_err().code(), "invalid_request");

        let mut foreign = user();
        foreign.iss = "https://idp.example".into();
        let err = build_id_jag(
            &foreign,
            &jag_request(),
            &targets(),
            "subzero",
            "svc-a",
            NOW,
            "j".into(),
        )
        .unwrap_err();
        assert!(
            err.description().contains("not issued by this server"),
            "{err}"
        );

        let mut short = user();
        short.exp = NOW + 20;
        let c = build_id_jag(
            &short,
            &jag_request(),
            &targets(),
            "subzero",
            "svc-a",
            NOW,
            "j".into(),
        )
        .unwrap();
        assert_eq!(c.exp, NOW + 20, "never outlives the subject token");
    }

    #[test]
    fn seen_jtis_single_use_expiry_and_bound() {
        let mut seen = SeenJtis::new(2);
        assert!(seen.is_empty());
        assert_eq!(seen.check_and_insert("idp", "a", 110, 100), Ok(()));
        let replay = seen.check_and_insert("idp", "a", 110, 105).unwrap_err();
        assert_eq!(replay.code(), "invalid_grant");
        assert!(replay.description().contains("already used"));
        // The same jti from another issuer is another assertion.
        assert_eq!(seen.check_and_insert("idp-2", "a", 120, 100), Ok(()));
        assert_eq!(seen.len(), 2);
        let full = seen.check_and_insert("idp", "b", 130, 100).unwrap_err();
        assert_eq!(full.code(), "temporarily_unavailable");
        assert_eq!(full.status(), 503);
        // At 110 the first pair expires and makes room.
        assert_eq!(seen.check_and_insert("idp", "b", 130, 110), Ok(()));
        assert_eq!(seen.len(), 2);
        assert_eq!(seen.expire(119), 0);
        assert_eq!(seen.expire(120), 1);
        assert_eq!(seen.expire(1000), 1);
        assert!(seen.is_empty());
        // Already past its keep-until time, or a bad jti.
        assert_eq!(
            seen.check_and_insert("idp", "c", 100, 100)
                .unwrap_err()
                .code(),
            "invalid_grant"
        );
        assert!(seen.check_and_insert("idp", "", 200, 100).is_err());
        assert!(seen
            .check_and_insert("idp", &"j".repeat(257), 200, 100)
            .is_err());
        assert!(seen.is_empty());
    }
}
