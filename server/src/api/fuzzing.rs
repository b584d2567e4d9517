//! Entry points for the `fuzz/` crate (cargo fuzz) into the request-body parsers that are
//! private to `api/`: each runs the parser the handler runs on the same bytes. Not an API.

use super::{batch, ratecheck, token};
use crate::http::{Method, Request};

/// `POST /v1/token` and `/v1/token/revoke`: the form or JSON body parser, with `content_type`
/// as sent. Returns whether the body was accepted.
pub fn token_params(body: &[u8], content_type: Option<&[u8]>) -> bool {
    let req = Request {
        method: Method::Post,
        path: "/v1/token",
        query: "",
        authorization: None,
        content_type,
        forwarded_for: None,
        keep_alive: true,
        minor_version: 1,
        header_error: None,
        body,
    };
    token::parse_params(&req).is_ok()
}

/// The form decoder of token bodies: `+` and `%XX`, `None` on a bad escape or non-UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    token::percent_decode(text).map(std::borrow::Cow::into_owned)
}

/// `POST /v1/authenticate/batch`: the number of tokens when the body parses.
pub fn batch_tokens(body: &[u8]) -> Option<usize> {
    serde_json::from_slice::<batch::BatchBody<'_>>(body)
        .ok()
        .map(|b| b.tokens.len())
}

/// `POST /v1/ratelimit/check`: `(key, cost)` when the body is accepted.
pub fn ratelimit_check(body: &[u8]) -> Option<(String, u32)> {
    ratecheck::parse_body(body)
        .ok()
        .map(|(key, cost)| (key.into_owned(), cost))
}
