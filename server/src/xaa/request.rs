//! The RFC 8693 token-exchange request (§2.1), from an `application/x-www-form-urlencoded` or
//! JSON body, checked into an `ExchangeRequest`.

use serde::Deserialize;

use super::error::ExchangeError;
use super::GRANT_TOKEN_EXCHANGE;
use crate::auth::MAX_TOKEN_BYTES;

/// Most `audience` plus `resource` values in one request.
pub const MAX_TARGETS: usize = 8;
/// Most scopes in one request.
pub const MAX_SCOPES: usize = 64;
/// Longest `audience` or `resource` value, in bytes.
const MAX_TARGET_BYTES: usize = 512;
/// Longest `scope` parameter, in bytes.
const MAX_SCOPE_BYTES: usize = 2048;

/// RFC 8693 §3 token type identifiers, plus the ID-JAG draft's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// `urn:ietf:params:oauth:token-type:access_token`
    AccessToken,
    /// `urn:ietf:params:oauth:token-type:refresh_token`
    RefreshToken,
    /// `urn:ietf:params:oauth:token-type:id_token`
    IdToken,
    /// `urn:ietf:params:oauth:token-type:jwt`
    Jwt,
    /// `urn:ietf:params:oauth:token-type:id-jag`
    IdJag,
    /// `urn:ietf:params:oauth:token-type:saml1`
    Saml1,
    /// `urn:ietf:params:oauth:token-type:saml2`
    Saml2,
}

impl TokenType {
    const ALL: [TokenType; 7] = [
        TokenType::AccessToken,
        TokenType::RefreshToken,
        TokenType::IdToken,
        TokenType::Jwt,
        TokenType::IdJag,
        TokenType::Saml1,
        TokenType::Saml2,
    ];

    /// The URN.
    pub fn urn(self) -> &'static str {
        match self {
            TokenType::AccessToken => "urn:ietf:params:oauth:token-type:access_token",
            TokenType::RefreshToken => "urn:ietf:params:oauth:token-type:refresh_token",
            TokenType::IdToken => "urn:ietf:params:oauth:token-type:id_token",
            TokenType::Jwt => "urn:ietf:params:oauth:token-type:jwt",
            TokenType::IdJag => "urn:ietf:params:oauth:token-type:id-jag",
            TokenType::Saml1 => "urn:ietf:params:oauth:token-type:saml1",
            TokenType::Saml2 => "urn:ietf:params:oauth:token-type:saml2",
        }
    }

    /// The type a URN names, if it is one of the registered ones.
    pub fn from_urn(urn: &str) -> Option<TokenType> {
        TokenType::ALL.into_iter().find(|t| t.urn() == urn)
    }

    /// Whether a presented (subject or actor) token of this type is one we can verify: a JWT.
    fn is_presentable(self) -> bool {
        matches!(
            self,
            TokenType::AccessToken | TokenType::Jwt | TokenType::IdToken
        )
    }

    /// Whether we issue tokens of this type.
    fn is_issuable(self) -> bool {
        matches!(
            self,
            TokenType::AccessToken | TokenType::Jwt | TokenType::IdJag
        )
    }
}

/// The actor's token (RFC 8693 §2.1 `actor_token` and `actor_token_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorToken {
    /// The token text, still to be verified.
    pub token: String,
    /// Its declared type.
    pub token_type: TokenType,
}

/// A checked token-exchange request. The tokens are not verified yet: that is the caller's
/// `Verifier`, before `delegate` or `build_id_jag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRequest {
    /// The token of the party on whose behalf the new token is requested.
    pub subject_token: String,
    /// Its declared type (access token, JWT or ID token).
    pub subject_token_type: TokenType,
    /// The acting party's token, for delegation.
    pub actor: Option<ActorToken>,
    /// `audience` values (logical names), in request order.
    pub audience: Vec<String>,
    /// `resource` values (absolute URIs), in request order.
    pub resource: Vec<String>,
    /// Requested scopes; `None` when the request named none.
    pub scope: Option<Vec<String>>,
    /// The type to issue (`access_token` when the request named none).
    pub requested_token_type: TokenType,
}

/// The parameters as they arrive, before any check.
#[derive(Debug, Default, Deserialize)]
struct RawParams {
    grant_type: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    actor_token: Option<String>,
    actor_token_type: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    audience: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    resource: Vec<String>,
    scope: Option<String>,
    requested_token_type: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match Option::<OneOrMany>::deserialize(de)? {
        None => Ok(Vec::new()),
        Some(OneOrMany::One(one)) => Ok(vec![one]),
        Some(OneOrMany::Many(many)) if many.len() <= MAX_TARGETS => Ok(many),
        Some(OneOrMany::Many(_)) => Err(serde::de::Error::custom("too many values")),
    }
}

impl ExchangeRequest {
    /// Parses a JSON body (`is_json`, or a body starting with `{`) or a form body, then checks
    /// it (`grant_type`, required and paired parameters, token types, targets, scopes).
    pub fn parse(body: &[u8], is_json: bool) -> Result<ExchangeRequest, ExchangeError> {
        let raw = if is_json || body.first() == Some(&b'{') {
            serde_json::from_slice::<RawParams>(body).map_err(|_| {
                ExchangeError::request(
                    "body is not a JSON object of token-exchange parameters (strings; \
                     audience and resource may be arrays; no key twice)",
                )
            })?
        } else {
            parse_form(body)?
        };
        ExchangeRequest::check(raw)
    }

    fn check(raw: RawParams) -> Result<ExchangeRequest, ExchangeError> {
        match raw.grant_type.as_deref() {
            None | Some("") => return Err(ExchangeError::request("grant_type is missing")),
            Some(GRANT_TOKEN_EXCHANGE) => {}
            Some(_) => {
                return Err(ExchangeError::UnsupportedGrantType(
                    "grant_type must be urn:ietf:params:oauth:grant-type:token-exchange".into(),
                ))
            }
        }
        let subject_token = presented_token(raw.subject_token, "subject_token")?
            .ok_or(ExchangeError::request("subject_token is missing"))?;
        let subject_token_type =
            presented_type(raw.subject_token_type.as_deref(), "subject_token_type")?
                .ok_or(ExchangeError::request("subject_token_type is missing"))?;
        let actor_token = presented_token(raw.actor_token, "actor_token")?;
        let actor_token_type = presented_type(raw.actor_token_type.as_deref(), "actor_token_type")?;
        let actor = match (actor_token, actor_token_type) {
            (None, None) => None,
            (Some(token), Some(token_type)) => Some(ActorToken { token, token_type }),
            (Some(_), None) => {
                return Err(ExchangeError::request(
                    "actor_token_type is required with actor_token",
                ))
            }
            (None, Some(_)) => {
                return Err(ExchangeError::request(
                    "actor_token_type must not be sent without actor_token",
                ))
            }
        };
        check_targets(&raw.audience, &raw.resource)?;
        let scope = check_scope(raw.scope.as_deref())?;
        let requested_token_type =
            match raw.requested_token_type.as_deref() {
                None | Some("") => TokenType::AccessToken,
                Some(urn) => match TokenType::from_urn(urn) {
                    Some(t) if t.is_issuable() => t,
                    _ => return Err(ExchangeError::token_type(
                        "requested_token_type must be the access_token, jwt or id-jag token type",
                    )),
                },
            };
        Ok(ExchangeRequest {
            subject_token,
            subject_token_type,
            actor,
            audience: raw.audience,
            resource: raw.resource,
            scope,
            requested_token_type,
        })
    }

    /// `audience` then `resource` values: every target the new token is requested for.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.audience
            .iter()
            .chain(&self.resource)
            .map(String::as_str)
    }
}

fn presented_token(
    token: Option<String>,
    name: &'static str,
) -> Result<Option<String>, ExchangeError> {
    match token {
        None => Ok(None),
        Some(t) if t.is_empty() => Err(ExchangeError::request(format!("{name} is empty"))),
        Some(t) if t.len() > MAX_TOKEN_BYTES => Err(ExchangeError::request(format!(
            "{name} is longer than {MAX_TOKEN_BYTES} bytes"
        ))),
        Some(t) => Ok(Some(t)),
    }
}

fn presented_type(
    urn: Option<&str>,
    name: &'static str,
) -> Result<Option<TokenType>, ExchangeError> {
    match urn {
        None => Ok(None),
        Some("") => Err(ExchangeError::request(format!("{name} is empty"))),
        Some(urn) => match TokenType::from_urn(urn) {
            Some(t) if t.is_presentable() => Ok(Some(t)),
            _ => Err(ExchangeError::token_type(format!(
                "{name} must be the access_token, jwt or id_token token type"
            ))),
        },
    }
}

fn check_targets(audience: &[String], resource: &[String]) -> Result<(), ExchangeError> {
    if audience.len() + resource.len() > MAX_TARGETS {
        return Err(ExchangeError::target(format!(
            "at most {MAX_TARGETS} audience and resource values are accepted"
        )));
    }
    for value in audience.iter().chain(resource) {
        if value.is_empty() || value.len() > MAX_TARGET_BYTES {
            return Err(ExchangeError::target(format!(
                "audience and resource values must be 1 to {MAX_TARGET_BYTES} bytes"
            )));
        }
    }
    if !resource.iter().all(|r| is_absolute_uri_without_fragment(r)) {
        return Err(ExchangeError::target(
            "resource must be an absolute URI without a fragment (RFC 8707)",
        ));
    }
    Ok(())
}

/// RFC 3986 absolute URI shape: `scheme ":" rest`, scheme = ALPHA *( ALPHA / DIGIT / "+" / "-"
/// / "." ), something after the colon, no `#`, no whitespace or control characters.
fn is_absolute_uri_without_fragment(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let mut scheme_bytes = scheme.bytes();
    let scheme_ok = scheme_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    scheme_ok && !rest.is_empty() && !uri.contains('#') && uri.bytes().all(|b| b.is_ascii_graphic())
}

/// RFC 6749 §3.3: space-separated scope tokens of `%x21 / %x23-5B / %x5D-7E`.
fn check_scope(scope: Option<&str>) -> Result<Option<Vec<String>>, ExchangeError> {
    let Some(scope) = scope else {
        return Ok(None);
    };
    if scope.len() > MAX_SCOPE_BYTES {
        return Err(ExchangeError::scope(format!(
            "scope is longer than {MAX_SCOPE_BYTES} bytes"
        )));
    }
    let mut scopes: Vec<String> = Vec::new();
    for token in scope.split(' ').filter(|s| !s.is_empty()) {
        let valid = token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if !valid {
            return Err(ExchangeError::scope(
                "scope values may only contain printable ASCII other than '\"' and '\\'",
            ));
        }
        if !scopes.iter().any(|s| s == token) {
            scopes.push(token.to_owned());
        }
    }
    if scopes.len() > MAX_SCOPES {
        return Err(ExchangeError::scope(format!(
            "at most {MAX_SCOPES} scopes may be requested"
        )));
    }
    Ok((!scopes.is_empty()).then_some(scopes))
}

fn parse_form(body: &[u8]) -> Result<RawParams, ExchangeError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ExchangeError::request("form body is not UTF-8"))?;
    let mut raw = RawParams::default();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)
            .ok_or(ExchangeError::request("form body has a bad percent-escape"))?;
        let value = percent_decode(value)
            .ok_or(ExchangeError::request("form body has a bad percent-escape"))?;
        let (slot, name) = match key.as_str() {
            "audience" | "resource" => {
                let list = if key == "audience" {
                    &mut raw.audience
                } else {
                    &mut raw.resource
                };
                if list.len() == MAX_TARGETS {
                    return Err(ExchangeError::target(format!(
                        "at most {MAX_TARGETS} audience and resource values are accepted"
                    )));
                }
                list.push(value);
                continue;
            }
            "grant_type" => (&mut raw.grant_type, "grant_type"),
            "subject_token" => (&mut raw.subject_token, "subject_token"),
            "subject_token_type" => (&mut raw.subject_token_type, "subject_token_type"),
            "actor_token" => (&mut raw.actor_token, "actor_token"),
            "actor_token_type" => (&mut raw.actor_token_type, "actor_token_type"),
            "scope" => (&mut raw.scope, "scope"),
            "requested_token_type" => (&mut raw.requested_token_type, "requested_token_type"),
            _ => continue,
        };
        if slot.is_some() {
            // RFC 6749 §3.2: parameters MUST NOT be included more than once.
            return Err(ExchangeError::request(format!("{name} is repeated")));
        }
        *slot = Some(value);
    }
    Ok(raw)
}

/// Decodes `+` and `%XX` (both halves of a pair); `None` on a bad escape or non-UTF-8 result.
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains(['%', '+']) {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        match bytes[idx] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(idx + 1..idx + 3)?).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                idx += 2;
            }
            b => out.push(b),
        }
        idx += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
    const GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";

    fn form(extra: &str) -> Result<ExchangeRequest, ExchangeError> {
        let body = format!(
            "grant_type={GRANT}&subject_token=s.t.x&subject_token_type={AT}&audience=api{extra}"
        );
        ExchangeRequest::parse(body.as_bytes(), false)
    }

    #[test]
    fn form_and_json_give_the_same_request() {
        let from_form = form(
            "&actor_token=a.b.c&actor_token_type=urn:ietf:params:oauth:token-type:jwt\
             &resource=https%3A%2F%2Frs.example%2Fapi&audience=api2&scope=read+write%20read\
             &client_id=ignored",
        )
        .unwrap();
        let json = format!(
            r#"{{"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token":"s.t.x","subject_token_type":"{AT}",
                "actor_token":"a.b.c","actor_token_type":"urn:ietf:params:oauth:token-type:jwt",
                "audience":["api","api2"],"resource":"https://rs.example/api",
                "scope":"read write read","client_id":"ignored"}}"#
        );
        let from_json = ExchangeRequest::parse(json.as_bytes(), true).unwrap();
        assert_eq!(from_form, from_json);
        assert_eq!(from_form.subject_token, "s.t.x");
        assert_eq!(from_form.subject_token_type, TokenType::AccessToken);
        assert_eq!(
            from_form.actor,
            Some(ActorToken {
                token: "a.b.c".into(),
                token_type: TokenType::Jwt
            })
        );
        assert_eq!(from_form.audience, ["api", "api2"]);
        assert_eq!(from_form.resource, ["https://rs.example/api"]);
        assert_eq!(
            from_form.targets().collect::<Vec<_>>(),
            ["api", "api2", "https://rs.example/api"]
        );
        assert_eq!(from_form.scope, Some(vec!["read".into(), "write".into()]));
        assert_eq!(from_form.requested_token_type, TokenType::AccessToken);
    }

    #[test]
    fn requested_token_types() {
        let jag = form("&requested_token_type=urn:ietf:params:oauth:token-type:id-jag").unwrap();
        assert_eq!(jag.requested_token_type, TokenType::IdJag);
        let jwt = form("&requested_token_type=urn:ietf:params:oauth:token-type:jwt").unwrap();
        assert_eq!(jwt.requested_token_type, TokenType::Jwt);
        for bad in ["refresh_token", "saml2", "id_token", "nonsense"] {
            let err = form(&format!(
                "&requested_token_type=urn:ietf:params:oauth:token-type:{bad}"
            ))
            .unwrap_err();
            assert_eq!(err.code(), "unsupported_token_type", "{bad}");
        }
        for t in TokenType::ALL {
            assert_eq!(TokenType::from_urn(t.urn()), Some(t));
        }
    }

    #[test]
    fn refusals_have_the_rfc_code_and_a_specific_description() {
        let body = |s: &str| ExchangeRequest::parse(s.as_bytes(), false).unwrap_err();
        let cases: Vec<(ExchangeError, &str, &str)> = vec![
            (
                body("subject_token=x"),
                "invalid_request",
                "grant_type is missing",
            ),
            (
                body("grant_type=client_credentials"),
                "unsupported_grant_type",
                "token-exchange",
            ),
            (
                body(&format!("grant_type={GRANT}&subject_token_type={AT}")),
                "invalid_request",
                "subject_token is missing",
            ),
            (
                body(&format!("grant_type={GRANT}&subject_token=x")),
                "invalid_request",
                "subject_token_type is missing",
            ),
            (
                body(&format!(
                    "grant_type={GRANT}&subject_token=&subject_token_type={AT}"
                )),
                "invalid_request",
                "subject_token is empty",
            ),
            (
                form("&subject_token=again").unwrap_err(),
                "invalid_request",
                "subject_token is repeated",
            ),
            (
                form("&actor_token=a").unwrap_err(),
                "invalid_request",
                "actor_token_type is required",
            ),
            (
                form(&format!("&actor_token_type={AT}")).unwrap_err(),
                "invalid_request",
                "without actor_token",
            ),
            (
                body(&format!(
                    "grant_type={GRANT}&subject_token=x&subject_token_type=\
                     urn:ietf:params:oauth:token-type:refresh_token"
                )),
                "unsupported_token_type",
                "subject_token_type",
            ),
            (
                form("&actor_token=a&actor_token_type=urn:x:saml").unwrap_err(),
                "unsupported_token_type",
                "actor_token_type",
            ),
        ];
        assert_codes(cases);
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        let err = body(&format!(
            "grant_type={GRANT}&subject_token={long}&subject_token_type={AT}"
        ));
        assert!(err.description().contains("longer than 8192"), "{err}");
    }

    #[test]
    fn target_scope_and_body_refusals() {
        let cases: Vec<(ExchangeError, &str, &str)> = vec![
            (
                form("&resource=not-a-uri").unwrap_err(),
                "invalid_target",
                "absolute URI",
            ),
            (
                form("&resource=https://rs.example/%23frag").unwrap_err(),
                "invalid_target",
                "fragment",
            ),
            (
                form(&"&audience=a".repeat(MAX_TARGETS)).unwrap_err(),
                "invalid_target",
                "at most 8",
            ),
            (
                form("&audience=").unwrap_err(),
                "invalid_target",
                "1 to 512",
            ),
            (
                form("&scope=read%22").unwrap_err(),
                "invalid_scope",
                "printable ASCII",
            ),
            (
                form("&scope=a%zz").unwrap_err(),
                "invalid_request",
                "percent-escape",
            ),
            (
                ExchangeRequest::parse(br#"{"grant_type":1}"#, true).unwrap_err(),
                "invalid_request",
                "JSON object",
            ),
            (
                ExchangeRequest::parse(br#"{"scope":"a","scope":"b"}"#, true).unwrap_err(),
                "invalid_request",
                "no key twice",
            ),
        ];
        assert_codes(cases);
    }

    fn assert_codes(cases: Vec<(ExchangeError, &str, &str)>) {
        for (err, code, needle) in cases {
            assert_eq!(err.code(), code, "{err}");
            assert!(err.description().contains(needle), "{err} lacks {needle:?}");
        }
    }

    #[test]
    fn empty_scope_means_none_requested() {
        assert_eq!(form("&scope=").unwrap().scope, None);
        assert_eq!(form("&scope=+++").unwrap().scope, None);
        assert_eq!(form("").unwrap().scope, None);
    }

    #[test]
    fn uris_and_percent_decoding() {
        for ok in ["https://rs.example/api", "urn:example:rs", "a+b.c-d:x"] {
            assert!(is_absolute_uri_without_fragment(ok), "{ok}");
        }
        for bad in [
            "rs.example",
            "https://a#b",
            "1http://a",
            ":x",
            "https:",
            "https://a b",
        ] {
            assert!(!is_absolute_uri_without_fragment(bad), "{bad}");
        }
        assert_eq!(percent_decode("a+b%20c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%2b").as_deref(), Some("+"));
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("cut%2"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }
}
