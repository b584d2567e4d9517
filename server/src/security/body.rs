//! The request bodies of `POST /v1/threat/check` and `POST /v1/risk/assess` (SPEC §2), parsed
//! and validated into typed events, and the response bodies rendered with serde_json.
//!
//! Threat events, by `event`:
//! - `login`: `subject`, `source_ip`, `outcome` (`success` | `failure`) required; `lat`+`lon`
//!   (both or neither), `device`, `mfa` (bool: the login included a second factor) optional.
//! - `signup`: `email`, `source_ip` required; `subject` optional.
//! - `mfa_push`: `subject` required; the answer as `outcome` (`success` = approved, `failure` =
//!   denied or timed out, as for logins) or as `approved` (bool), one of the two; `source_ip`
//!   (of the login that triggered the push) optional.
//! - `prompt`: `text` (at most `threat.max_text_bytes`) required; `subject`, `source_ip`
//!   optional.
//!
//! A field that belongs to another event is ignored (the SPEC's example body lists every field
//! at once); a field no event knows, a repeated field, a wrong type or an out-of-range value
//! is a [`BodyError`] naming the field.

use std::fmt;
use std::net::IpAddr;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Action, Assessment, Signal, MAX_EMAIL_BYTES, MAX_NAME_BYTES, MAX_SCOPES, MAX_SCOPE_BYTES,
};

/// Every field a threat body may carry.
const THREAT_FIELDS: [&str; 11] = [
    "event",
    "subject",
    "source_ip",
    "outcome",
    "approved",
    "email",
    "lat",
    "lon",
    "device",
    "mfa",
    "text",
];
/// Every field a risk body may carry.
const RISK_FIELDS: [&str; 4] = ["subject", "source_ip", "scopes", "device"];

/// Why a body was refused (a `400`); the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    /// Not a JSON object (or not JSON at all).
    #[error("the body must be a JSON object: {0}")]
    NotAnObject(String),
    /// A field no event knows.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// A field given twice.
    #[error("field {0:?} appears twice")]
    Repeated(String),
    /// A required field is absent.
    #[error("field {0:?} is required for this request")]
    Missing(&'static str),
    /// A field has the wrong type or value.
    #[error("field {field:?}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },
}

impl BodyError {
    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            BodyError::NotAnObject(_) => None,
            BodyError::UnknownField(f) | BodyError::Repeated(f) => Some(f),
            BodyError::Missing(f) | BodyError::Invalid { field: f, .. } => Some(f),
        }
    }

    fn invalid(field: &'static str, reason: impl Into<String>) -> BodyError {
        BodyError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// A point on Earth in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    /// Latitude in [-90, 90].
    pub lat: f64,
    /// Longitude in [-180, 180].
    pub lon: f64,
}

/// A login attempt and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Login {
    /// The username tried.
    pub subject: String,
    /// Where from.
    pub source_ip: IpAddr,
    /// `outcome: "success"`.
    pub success: bool,
    /// Caller-supplied location.
    pub point: Option<GeoPoint>,
    /// Caller-supplied device identifier.
    pub device: Option<String>,
    /// The login included a second factor (a strong authentication when it succeeded).
    pub mfa: bool,
}

/// A signup.
#[derive(Debug, Clone, PartialEq)]
pub struct Signup {
    /// The account created, when the caller names it.
    pub subject: Option<String>,
    /// Where from.
    pub source_ip: IpAddr,
    /// The address, as given.
    pub email: String,
    /// Its domain, lowercase.
    pub domain: String,
}

/// An MFA push and its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct MfaPush {
    /// Whose push.
    pub subject: String,
    /// The source of the login that triggered it.
    pub source_ip: Option<IpAddr>,
    /// Approved (`true`) or denied / timed out.
    pub approved: bool,
}

/// A prompt bound for an LLM.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Who sent it.
    pub subject: Option<String>,
    /// From where.
    pub source_ip: Option<IpAddr>,
    /// The text.
    pub text: String,
}

/// A parsed threat-check body.
#[derive(Debug, Clone, PartialEq)]
pub enum ThreatEvent {
    /// `login`.
    Login(Login),
    /// `signup`.
    Signup(Signup),
    /// `mfa_push`.
    MfaPush(MfaPush),
    /// `prompt`.
    Prompt(Prompt),
}

impl ThreatEvent {
    /// The source address, where the event has one (the address a `block` applies to).
    pub fn source_ip(&self) -> Option<IpAddr> {
        match self {
            ThreatEvent::Login(l) => Some(l.source_ip),
            ThreatEvent::Signup(s) => Some(s.source_ip),
            ThreatEvent::MfaPush(m) => m.source_ip,
            ThreatEvent::Prompt(p) => p.source_ip,
        }
    }
}

/// A parsed risk-assessment body.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskRequest {
    /// Whose access.
    pub subject: String,
    /// From where.
    pub source_ip: IpAddr,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Caller-supplied device identifier.
    pub device: Option<String>,
}

/// The body's fields in order, refusing repeats (serde_json's map would keep the last).
struct Fields(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields: Vec<(String, Value)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!(
                            "field {key:?} appears twice"
                        )));
                    }
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl Fields {
    fn parse(body: &[u8], known: &[&str]) -> Result<Fields, BodyError> {
        let fields: Fields = serde_json::from_slice(body).map_err(|e| {
            let text = e.to_string();
            match text.split('"').nth(1) {
                Some(key) if text.starts_with("field ") && text.contains("appears twice") => {
                    BodyError::Repeated(key.to_owned())
                }
                _ => BodyError::NotAnObject(text),
            }
        })?;
        if let Some((key, _)) = fields.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            return Err(BodyError::UnknownField(key.clone()));
        }
        Ok(fields)
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, v)| k == field && !v.is_null())
            .map(|(_, v)| v)
    }

    fn str(&self, field: &'static str, max: usize) -> Result<Option<&str>, BodyError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => {
                Err(BodyError::invalid(field, "must not be empty"))
            }
            Some(Value::String(s)) if s.len() > max => Err(BodyError::invalid(
                field,
                format!("is {} bytes, at most {max} are accepted", s.len()),
            )),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(BodyError::invalid(field, "must be a string")),
        }
    }

    fn required_str(&self, field: &'static str, max: usize) -> Result<&str, BodyError> {
        self.str(field, max)?.ok_or(BodyError::Missing(field))
    }

    fn bool(&self, field: &'static str) -> Result<Option<bool>, BodyError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(BodyError::invalid(field, "must be true or false")),
        }
    }

    fn number(&self, field: &'static str, limit: f64) -> Result<Option<f64>, BodyError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if (-limit..=limit).contains(&x) => Ok(Some(x)),
                _ => Err(BodyError::invalid(
                    field,
                    format!("must be between -{limit} and {limit} degrees"),
                )),
            },
            Some(_) => Err(BodyError::invalid(field, "must be a number")),
        }
    }

    fn ip(&self, field: &'static str) -> Result<Option<IpAddr>, BodyError> {
        let Some(text) = self.str(field, 64)? else {
            return Ok(None);
        };
        let ip: IpAddr = text.parse().map_err(|_| {
            BodyError::invalid(field, "must be an IPv4 or IPv6 address (no port, no CIDR)")
        })?;
        Ok(Some(ip.to_canonical()))
    }

    fn outcome(&self) -> Result<Option<bool>, BodyError> {
        match self.str("outcome", 16)? {
            None => Ok(None),
            Some("success") => Ok(Some(true)),
            Some("failure") => Ok(Some(false)),
            Some(_) => Err(BodyError::invalid(
                "outcome",
                "must be \"success\" or \"failure\"",
            )),
        }
    }
}

/// Parses a `POST /v1/threat/check` body; `max_text_bytes` is `threat.max_text_bytes`.
pub fn parse_threat(body: &[u8], max_text_bytes: usize) -> Result<ThreatEvent, BodyError> {
    let f = Fields::parse(body, &THREAT_FIELDS)?;
    let event = f.required_str("event", 16)?;
    match event {
        "login" => {
            let lat = f.number("lat", 90.0)?;
            let lon = f.number("lon", 180.0)?;
            let point = match (lat, lon) {
                (Some(lat), Some(lon)) => Some(GeoPoint { lat, lon }),
                (None, None) => None,
                (Some(_), None) => return Err(BodyError::Missing("lon")),
                (None, Some(_)) => return Err(BodyError::Missing("lat")),
            };
            Ok(ThreatEvent::Login(Login {
                subject: f.required_str("subject", MAX_NAME_BYTES)?.to_owned(),
                source_ip: f.ip("source_ip")?.ok_or(BodyError::Missing("source_ip"))?,
                success: f.outcome()?.ok_or(BodyError::Missing("outcome"))?,
                point,
                device: f.str("device", MAX_NAME_BYTES)?.map(str::to_owned),
                mfa: f.bool("mfa")?.unwrap_or(false),
            }))
        }
        "signup" => {
            let email = f.required_str("email", MAX_EMAIL_BYTES)?;
            Ok(ThreatEvent::Signup(Signup {
                subject: f.str("subject", MAX_NAME_BYTES)?.map(str::to_owned),
                source_ip: f.ip("source_ip")?.ok_or(BodyError::Missing("source_ip"))?,
                domain: email_domain(email)?,
                email: email.to_owned(),
            }))
        }
        "mfa_push" => {
            let approved = match (f.outcome()?, f.bool("approved")?) {
                (Some(a), Some(b)) if a != b => {
                    return Err(BodyError::invalid(
                        "approved",
                        "contradicts \"outcome\" (give one of the two)",
                    ))
                }
                (Some(a), _) | (None, Some(a)) => a,
                (None, None) => return Err(BodyError::Missing("outcome")),
            };
            Ok(ThreatEvent::MfaPush(MfaPush {
                subject: f.required_str("subject", MAX_NAME_BYTES)?.to_owned(),
                source_ip: f.ip("source_ip")?,
                approved,
            }))
        }
        "prompt" => {
            let text = match f.get("text") {
                Some(Value::String(s)) if s.len() > max_text_bytes => {
                    return Err(BodyError::invalid(
                        "text",
                        format!(
                            "is {} bytes, at most {max_text_bytes} are scanned \
                             (threat.max_text_bytes)",
                            s.len()
                        ),
                    ))
                }
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(BodyError::invalid("text", "must be a string")),
                None => return Err(BodyError::Missing("text")),
            };
            Ok(ThreatEvent::Prompt(Prompt {
                subject: f.str("subject", MAX_NAME_BYTES)?.map(str::to_owned),
                source_ip: f.ip("source_ip")?,
                text,
            }))
        }
        other => Err(BodyError::invalid(
            "event",
            format!(
                "{:?} is not an event; expected \"login\", \"signup\", \"mfa_push\" or \"prompt\"",
                super::excerpt(other)
            ),
        )),
    }
}

/// The lowercase domain of an address `local@domain`: one `@`, a non-empty local part, and a
/// domain of dot-separated labels of letters, digits and hyphens (1–63 bytes, no leading or
/// trailing hyphen), at least two labels.
fn email_domain(email: &str) -> Result<String, BodyError> {
    let bad = |why: &str| BodyError::invalid("email", why.to_owned());
    let (local, domain) = email
        .rsplit_once('@')
        .ok_or_else(|| bad("must be an address local@domain"))?;
    if local.is_empty() || (local.contains('@') && !local.starts_with('"')) {
        return Err(bad("must have exactly one @ and a non-empty local part"));
    }
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !labels_ok || !domain.contains('.') {
        return Err(bad(
            "the domain must be dot-separated labels of letters, digits and hyphens \
             (internationalized domains in their xn-- form)",
        ));
    }
    Ok(domain)
}

/// Parses a `POST /v1/risk/assess` body.
pub fn parse_risk(body: &[u8]) -> Result<RiskRequest, BodyError> {
    let f = Fields::parse(body, &RISK_FIELDS)?;
    let scopes = match f.get("scopes") {
        None => Vec::new(),
        Some(Value::Array(items)) if items.len() > MAX_SCOPES => {
            return Err(BodyError::invalid(
                "scopes",
                format!("lists {} scopes, at most {MAX_SCOPES}", items.len()),
            ))
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) if !s.is_empty() && s.len() <= MAX_SCOPE_BYTES => Ok(s.clone()),
                _ => Err(BodyError::invalid(
                    "scopes",
                    format!("each scope must be a string of 1 to {MAX_SCOPE_BYTES} bytes"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(BodyError::invalid("scopes", "must be an array of strings")),
    };
    Ok(RiskRequest {
        subject: f.required_str("subject", MAX_NAME_BYTES)?.to_owned(),
        source_ip: f.ip("source_ip")?.ok_or(BodyError::Missing("source_ip"))?,
        scopes,
        device: f.str("device", MAX_NAME_BYTES)?.map(str::to_owned),
    })
}

/// A score as rendered: four decimals, so sums like 0.9500000000000001 read as 0.95.
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The `POST /v1/threat/check` response body.
pub fn render_threat(score: f64, action: Action, signals: &[Signal]) -> Vec<u8> {
    let signals: Vec<Value> = signals
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.kind.name(),
                "evidence": s.evidence,
                "weight": round4(s.weight),
            })
        })
        .collect();
    let body = serde_json::json!({
        "score": round4(score),
        "signals": signals,
        "action": action.as_str(),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The `POST /v1/risk/assess` response body.
pub fn render_risk(a: &Assessment) -> Vec<u8> {
    let factors: Vec<Value> = a
        .factors
        .iter()
        .map(|f| serde_json::json!({"name": f.name, "contribution": round4(f.contribution)}))
        .collect();
    let body = serde_json::json!({
        "score": round4(a.score),
        "factors": factors,
        "decision": a.decision.as_str(),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{parse_risk, parse_threat, BodyError, ThreatEvent};

    fn field_of(body: &str) -> String {
        let err = parse_threat(body.as_bytes(), 100).unwrap_err();
        let field = err.field().map(str::to_owned).unwrap_or_default();
        assert!(err.to_string().contains(&field), "{err} names {field}");
        field
    }

    #[test]
    fn each_event_parses_with_its_fields() {
        let e = parse_threat(
            br#"{"event":"login","subject":"alice","source_ip":"::ffff:203.0.113.9",
                "outcome":"failure","lat":48.1,"lon":11.6,"device":"d1","mfa":true,"text":"x"}"#,
            100,
        )
        .unwrap();
        let ThreatEvent::Login(l) = e else { panic!() };
        assert_eq!(
            l.source_ip.to_string(),
            "203.0.113.9",
            "v4-mapped is canonical"
        );
        assert!(!l.success && l.mfa);
        assert_eq!(l.point.map(|p| (p.lat, p.lon)), Some((48.1, 11.6)));
        let e = parse_threat(
            br#"{"event":"signup","email":"Bob@Mail.Mailinator.COM.","source_ip":"2001:db8::1"}"#,
            100,
        )
        .unwrap();
        let ThreatEvent::Signup(s) = e else { panic!() };
        assert_eq!(s.domain, "mail.mailinator.com");
        for (body, approved) in [
            (
                r#"{"event":"mfa_push","subject":"a","outcome":"success"}"#,
                true,
            ),
            (
                r#"{"event":"mfa_push","subject":"a","approved":false}"#,
                false,
            ),
            (
                r#"{"event":"mfa_push","subject":"a","approved":true,"outcome":"success"}"#,
                true,
            ),
        ] {
            let ThreatEvent::MfaPush(m) = parse_threat(body.as_bytes(), 100).unwrap() else {
                panic!()
            };
            assert_eq!(m.approved, approved, "{body}");
        }
        let e = parse_threat(br#"{"event":"prompt","text":""}"#, 100).unwrap();
        assert!(matches!(e, ThreatEvent::Prompt(p) if p.text.is_empty()));
    }

    #[test]
    fn parse_errors_name_the_field() {
        for (body, field) in [
            (r#"{"event":"logout","subject":"a"}"#, "event"),
            (r#"{"subject":"a"}"#, "event"),
            (
                r#"{"event":"login","subject":"a","source_ip":"1.2.3.4"}"#,
                "outcome",
            ),
            (
                r#"{"event":"login","subject":"a","source_ip":"1.2.3.4/24","outcome":"failure"}"#,
                "source_ip",
            ),
            (
                r#"{"event":"login","subject":"a","source_ip":"1.2.3.4","outcome":"maybe"}"#,
                "outcome",
            ),
            (
                r#"{"event":"login","subject":"","source_ip":"1.2.3.4","outcome":"failure"}"#,
                "subject",
            ),
            (
                r#"{"event":"login","subject":"a","source_ip":"1.2.3.4","outcome":"failure","lat":91,"lon":0}"#,
                "lat",
            ),
            (
                r#"{"event":"login","subject":"a","source_ip":"1.2.3.4","outcome":"failure","lat":1}"#,
                "lon",
            ),
            (
                r#"{"event":"login","subject":"a","source_ip":"1.2.3.4","outcome":"failure","lon":"x","lat":1}"#,
                "lon",
            ),
            (
                r#"{"event":"login","subject":"a","source_ip":"1.2.3.4","outcome":"success","mfa":"yes"}"#,
                "mfa",
            ),
            (r#"{"event":"login","subjet":"a"}"#, "subjet"),
            (r#"{"event":"login","event":"login"}"#, "event"),
            (
                r#"{"event":"signup","email":"nobody","source_ip":"1.2.3.4"}"#,
                "email",
            ),
            (
                r#"{"event":"signup","email":"a@localhost","source_ip":"1.2.3.4"}"#,
                "email",
            ),
            (
                r#"{"event":"signup","email":"a@b_c.com","source_ip":"1.2.3.4"}"#,
                "email",
            ),
            (r#"{"event":"signup","email":"a@b.com"}"#, "source_ip"),
            (r#"{"event":"mfa_push","subject":"a"}"#, "outcome"),
            (
                r#"{"event":"mfa_push","subject":"a","approved":false,"outcome":"success"}"#,
                "approved",
            ),
            (r#"{"event":"prompt"}"#, "text"),
            (r#"{"event":"prompt","text":7}"#, "text"),
        ] {
            assert_eq!(field_of(body), field, "{body}");
        }
        let long = format!(r#"{{"event":"prompt","text":"{}"}}"#, "a".repeat(101));
        assert_eq!(field_of(&long), "text");
        let long = format!(
            r#"{{"event":"login","subject":"{}","source_ip":"1.2.3.4","outcome":"failure"}}"#,
            "a".repeat(257)
        );
        assert_eq!(field_of(&long), "subject");
        for body in ["[]", "nope", "{\"event\":"] {
            let err = parse_threat(body.as_bytes(), 100).unwrap_err();
            assert!(matches!(err, BodyError::NotAnObject(_)), "{body}: {err}");
        }
    }

    #[test]
    fn risk_bodies_parse_and_errors_name_the_field() {
        let r = parse_risk(br#"{"subject":"a","source_ip":"10.0.0.1","scopes":["read","admin"]}"#)
            .unwrap();
        assert_eq!(r.scopes, ["read", "admin"]);
        assert!(r.device.is_none());
        let many = format!(
            r#"{{"subject":"a","source_ip":"10.0.0.1","scopes":[{}]}}"#,
            vec!["\"s\""; 65].join(",")
        );
        for (body, field) in [
            (r#"{"source_ip":"10.0.0.1"}"#, "subject"),
            (r#"{"subject":"a"}"#, "source_ip"),
            (
                r#"{"subject":"a","source_ip":"10.0.0.1","scopes":"read"}"#,
                "scopes",
            ),
            (
                r#"{"subject":"a","source_ip":"10.0.0.1","scopes":[""]}"#,
                "scopes",
            ),
            (
                r#"{"subject":"a","source_ip":"10.0.0.1","scope":["x"]}"#,
                "scope",
            ),
            (many.as_str(), "scopes"),
        ] {
            let err = parse_risk(body.as_bytes()).unwrap_err();
            assert_eq!(err.field(), Some(field), "{body}: {err}");
        }
    }
}
