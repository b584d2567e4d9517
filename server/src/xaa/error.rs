//! `ExchangeError`: every refusal of a token exchange, ID-JAG or channel request, as the OAuth
//! error code and description the response carries.

use std::borrow::Cow;

/// A refused request. The variant is the OAuth `error` code; the text is the
/// `error_description` (printable ASCII, never a token or secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// `invalid_request` (RFC 6749 §5.2, RFC 8693 §2.2.2): a parameter is missing, repeated or
    /// malformed, or a presented token is invalid or unacceptable by policy (expired, from
    /// another issuer, `may_act` not satisfied, a chain too deep).
    #[error("invalid_request: {0}")]
    InvalidRequest(Cow<'static, str>),
    /// `invalid_grant` (RFC 7523 §3.1): an ID-JAG assertion is not acceptable (type, audience,
    /// client, `jti`, expiry, replay).
    #[error("invalid_grant: {0}")]
    InvalidGrant(Cow<'static, str>),
    /// `invalid_target` (RFC 8693 §2.2.2, RFC 8707 §2): an `audience` or `resource` is
    /// malformed or not one this server issues tokens for.
    #[error("invalid_target: {0}")]
    InvalidTarget(Cow<'static, str>),
    /// `invalid_scope` (RFC 6749 §5.2): a scope is malformed, or no requested scope survives
    /// the intersection with the presented tokens' scopes.
    #[error("invalid_scope: {0}")]
    InvalidScope(Cow<'static, str>),
    /// `unsupported_token_type`: a `subject_token_type`, `actor_token_type` or
    /// `requested_token_type` this server does not handle. RFC 8693 registers no code of its
    /// own for this; the code is RFC 7009's, used as §2.2.2's "other error codes may also be
    /// used", so a client can tell "try another type" from "your token is bad".
    #[error("unsupported_token_type: {0}")]
    UnsupportedTokenType(Cow<'static, str>),
    /// `unsupported_grant_type` (RFC 6749 §5.2): `grant_type` is not token exchange.
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(Cow<'static, str>),
    /// `temporarily_unavailable`: the replay table is full of unexpired `jti`s (a `503`).
    #[error("temporarily_unavailable: {0}")]
    TemporarilyUnavailable(Cow<'static, str>),
}

impl ExchangeError {
    /// The OAuth `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            ExchangeError::InvalidRequest(_) => "invalid_request",
            ExchangeError::InvalidGrant(_) => "invalid_grant",
            ExchangeError::InvalidTarget(_) => "invalid_target",
            ExchangeError::InvalidScope(_) => "invalid_scope",
            ExchangeError::UnsupportedTokenType(_) => "unsupported_token_type",
            ExchangeError::UnsupportedGrantType(_) => "unsupported_grant_type",
            ExchangeError::TemporarilyUnavailable(_) => "temporarily_unavailable",
        }
    }

    /// The `error_description`.
    pub fn description(&self) -> &str {
        match self {
            ExchangeError::InvalidRequest(d)
            | ExchangeError::InvalidGrant(d)
            | ExchangeError::InvalidTarget(d)
            | ExchangeError::InvalidScope(d)
            | ExchangeError::UnsupportedTokenType(d)
            | ExchangeError::UnsupportedGrantType(d)
            | ExchangeError::TemporarilyUnavailable(d) => d,
        }
    }

    /// The HTTP status: `503` for `temporarily_unavailable`, `400` for the rest (RFC 6749 §5.2;
    /// client authentication failures are the caller's `401 invalid_client`).
    pub fn status(&self) -> u16 {
        match self {
            ExchangeError::TemporarilyUnavailable(_) => 503,
            _ => 400,
        }
    }

    pub(crate) fn request(description: impl Into<Cow<'static, str>>) -> ExchangeError {
        ExchangeError::InvalidRequest(description.into())
    }

    pub(crate) fn grant(description: impl Into<Cow<'static, str>>) -> ExchangeError {
        ExchangeError::InvalidGrant(description.into())
    }

    pub(crate) fn target(description: impl Into<Cow<'static, str>>) -> ExchangeError {
        ExchangeError::InvalidTarget(description.into())
    }

    pub(crate) fn scope(description: impl Into<Cow<'static, str>>) -> ExchangeError {
        ExchangeError::InvalidScope(description.into())
    }

    pub(crate) fn token_type(description: impl Into<Cow<'static, str>>) -> ExchangeError {
        ExchangeError::UnsupportedTokenType(description.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_descriptions_and_statuses() {
        let cases = [
            (ExchangeError::request("a"), "invalid_request", 400),
            (ExchangeError::grant("b"), "invalid_grant", 400),
            (ExchangeError::target("c"), "invalid_target", 400),
            (ExchangeError::scope("d"), "invalid_scope", 400),
            (
                ExchangeError::token_type("e"),
                "unsupported_token_type",
                400,
            ),
            (
                ExchangeError::UnsupportedGrantType("f".into()),
                "unsupported_grant_type",
                400,
            ),
            (
                ExchangeError::TemporarilyUnavailable("g".into()),
                "temporarily_unavailable",
                503,
            ),
        ];
        for (err, code, status) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.status(), status);
            assert_eq!(err.description().len(), 1);
            assert!(err.to_string().starts_with(code));
        }
    }
}
