//! JWT claims (`Claims`): what we issue and what we accept; unknown claims are ignored.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::TokenError;

/// Most audiences a token may carry; more is refused as a bad payload.
pub const MAX_AUDIENCES: usize = 32;

/// Registered and subzero claims of a JWT. `aud` reads from a JSON string or array and is
/// written as a string when it has exactly one value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawClaims")]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audiences (empty only for tokens checked without an audience policy).
    #[serde(
        serialize_with = "serialize_aud",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aud: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Token id, the key for revocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Space-separated OAuth scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 8693 actor (delegation chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<serde_json::Value>,
    /// Channel id (app↔agent channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// The claims only delegation and ID-JAG read (`may_act`, `client_id`, `resource`); boxed
    /// so the common token, which has none of them, pays one pointer in every cache entry.
    #[serde(flatten)]
    pub extra: Option<Box<ExtraClaims>>,
}

/// RFC 8693 and ID-JAG claims that few tokens carry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ExtraClaims {
    /// RFC 8693 §4.4: who may act for the subject (a JSON object of claims the actor must match).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub may_act: Option<serde_json::Value>,
    /// RFC 8693 §4.3 / ID-JAG: the client the token was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// RFC 8707 resource indicators (ID-JAG `resource`); written as a string when there is one.
    #[serde(
        serialize_with = "serialize_aud",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resource: Vec<String>,
}

impl ExtraClaims {
    fn is_empty(&self) -> bool {
        self.may_act.is_none() && self.client_id.is_none() && self.resource.is_empty()
    }
}

impl Claims {
    /// Claims for a token we issue: `iat = nbf = now_s`, `exp = now_s + ttl_s`, the given `jti`.
    ///
    /// Deterministic: the caller supplies the token id (`auth::new_jti()` in production), so
    /// claims can be built and compared in tests.
    pub fn new_for(
        issuer: &str,
        sub: &str,
        aud: Vec<String>,
        scopes: &[&str],
        ttl_s: u64,
        now_s: u64,
        jti: String,
    ) -> Claims {
        let scope = if scopes.is_empty() {
            None
        } else {
            Some(scopes.join(" "))
        };
        Claims {
            iss: issuer.to_owned(),
            sub: sub.to_owned(),
            aud,
            exp: now_s.saturating_add(ttl_s),
            nbf: Some(now_s),
            iat: Some(now_s),
            jti: Some(jti),
            scope,
            act: None,
            cid: None,
            extra: None,
        }
    }

    /// The scopes, split on ASCII whitespace.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.as_deref().unwrap_or("").split_ascii_whitespace()
    }

    /// Whether `scope` is among the scopes.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// The `may_act` claim (RFC 8693 §4.4), when present.
    pub fn may_act(&self) -> Option<&serde_json::Value> {
        self.extra.as_deref().and_then(|e| e.may_act.as_ref())
    }

    /// The `client_id` claim (RFC 8693 §4.3), when present.
    pub fn client_id(&self) -> Option<&str> {
        self.extra.as_deref().and_then(|e| e.client_id.as_deref())
    }

    /// The `resource` claim's values (empty when absent).
    pub fn resource(&self) -> &[String] {
        self.extra.as_deref().map_or(&[], |e| e.resource.as_slice())
    }

    /// The extra claims, created empty on first use.
    pub fn extra_mut(&mut self) -> &mut ExtraClaims {
        self.extra.get_or_insert_with(Box::default)
    }
}

fn serialize_aud<S: Serializer>(aud: &[String], serializer: S) -> Result<S::Ok, S::Error> {
    if let [one] = aud {
        serializer.serialize_str(one)
    } else {
        aud.serialize(serializer)
    }
}

/// The payload as it arrives: every claim optional, so a missing one becomes
/// `TokenError::MissingClaim` rather than a parse error.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    #[serde(default, deserialize_with = "deserialize_aud")]
    aud: Option<Vec<String>>,
    #[serde(default, deserialize_with = "deserialize_numeric_date")]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "deserialize_numeric_date")]
    nbf: Option<u64>,
    #[serde(default, deserialize_with = "deserialize_numeric_date")]
    iat: Option<u64>,
    jti: Option<String>,
    scope: Option<String>,
    act: Option<serde_json::Value>,
    cid: Option<String>,
    may_act: Option<serde_json::Value>,
    client_id: Option<String>,
    #[serde(default, deserialize_with = "deserialize_aud")]
    resource: Option<Vec<String>>,
}

impl RawClaims {
    /// The unverified issuer, used only to pick the keys to verify with.
    pub(crate) fn iss(&self) -> Option<&str> {
        self.iss.as_deref()
    }

    /// Check presence of the required claims and build `Claims`.
    pub(crate) fn into_claims(self) -> Result<Claims, TokenError> {
        let extra = ExtraClaims {
            may_act: self.may_act,
            client_id: self.client_id,
            resource: self.resource.unwrap_or_default(),
        };
        Ok(Claims {
            iss: self.iss.ok_or(TokenError::MissingClaim("iss"))?,
            sub: self.sub.ok_or(TokenError::MissingClaim("sub"))?,
            aud: self.aud.unwrap_or_default(),
            exp: self.exp.ok_or(TokenError::MissingClaim("exp"))?,
            nbf: self.nbf,
            iat: self.iat,
            jti: self.jti,
            scope: self.scope,
            act: self.act,
            cid: self.cid,
            extra: (!extra.is_empty()).then(|| Box::new(extra)),
        })
    }
}

impl TryFrom<RawClaims> for Claims {
    type Error = &'static str;

    fn try_from(raw: RawClaims) -> Result<Claims, &'static str> {
        raw.into_claims().map_err(|e| e.description())
    }
}

fn deserialize_aud<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    match Option::<Aud>::deserialize(de)? {
        None => Ok(None),
        Some(Aud::One(one)) => Ok(Some(vec![one])),
        Some(Aud::Many(many)) if many.len() <= MAX_AUDIENCES => Ok(Some(many)),
        Some(Aud::Many(_)) => Err(serde::de::Error::custom("too many audiences")),
    }
}

/// RFC 7519 `NumericDate`: an integer or a non-negative number; fractions are truncated.
fn deserialize_numeric_date<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a non-negative NumericDate")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("negative NumericDate"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if (0.0..1.8e19).contains(&v) {
                Ok(Some(v as u64))
            } else {
                Err(E::custom("NumericDate out of range"))
            }
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    de.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aud_string_or_array_and_unknown_claims_ignored() {
        let one: Claims = serde_json::from_str(
            r#"{"iss":"i","sub":"s","aud":"api","exp":10,"foo":{"bar":1},"scope":"a  b c"}"#,
        )
        .unwrap();
        assert_eq!(one.aud, vec!["api".to_owned()]);
        assert_eq!(one.scopes().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(one.has_scope("b") && !one.has_scope("d"));
        let json = serde_json::to_string(&one).unwrap();
        assert!(json.contains(r#""aud":"api""#), "{json}");

        let many: Claims =
            serde_json::from_str(r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":10.9}"#).unwrap();
        assert_eq!(many.aud, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(many.exp, 10);
        let json = serde_json::to_string(&many).unwrap();
        assert!(json.contains(r#""aud":["a","b"]"#), "{json}");
        assert_eq!(serde_json::from_str::<Claims>(&json).unwrap(), many);
    }

    #[test]
    fn missing_and_mistyped_claims() {
        let raw: RawClaims = serde_json::from_str(r#"{"iss":"i","aud":"a","exp":1}"#).unwrap();
        assert_eq!(raw.into_claims(), Err(TokenError::MissingClaim("sub")));
        let raw: RawClaims = serde_json::from_str(r#"{"iss":"i","sub":"s"}"#).unwrap();
        assert_eq!(raw.into_claims(), Err(TokenError::MissingClaim("exp")));
        assert!(serde_json::from_str::<RawClaims>(r#"{"exp":-1}"#).is_err());
        assert!(serde_json::from_str::<RawClaims>(r#"{"exp":"soon"}"#).is_err());
        assert!(serde_json::from_str::<RawClaims>(r#"{"aud":5}"#).is_err());
    }

    #[test]
    fn extra_claims_round_trip_and_stay_absent_when_unused() {
        let plain: Claims =
            serde_json::from_str(r#"{"iss":"i","sub":"s","aud":"a","exp":10}"#).unwrap();
        assert!(plain.extra.is_none());
        assert!(!serde_json::to_string(&plain).unwrap().contains("resource"));

        let json = r#"{"iss":"i","sub":"s","exp":10,"may_act":{"sub":"agent"},"client_id":"c","resource":"https://rs"}"#;
        let with: Claims = serde_json::from_str(json).unwrap();
        assert_eq!(with.may_act(), Some(&serde_json::json!({"sub":"agent"})));
        assert_eq!(with.client_id(), Some("c"));
        assert_eq!(with.resource(), ["https://rs".to_owned()]);
        let back = serde_json::to_string(&with).unwrap();
        assert!(back.contains(r#""client_id":"c""#), "{back}");
        assert!(back.contains(r#""resource":"https://rs""#), "{back}");
        assert_eq!(serde_json::from_str::<Claims>(&back).unwrap(), with);
    }

    #[test]
    fn new_for_sets_times_and_jti() {
        let c = Claims::new_for(
            "me",
            "alice",
            vec!["api".into()],
            &["read", "write"],
            60,
            1000,
            "jti-1".to_owned(),
        );
        assert_eq!((c.exp, c.nbf, c.iat), (1060, Some(1000), Some(1000)));
        assert_eq!(c.scope.as_deref(), Some("read write"));
        assert_eq!(c.jti.as_deref(), Some("jti-1"));
    }
}
