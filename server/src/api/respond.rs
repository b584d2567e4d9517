//! Response helpers shared by the handlers: OAuth error bodies, RFC 6750 challenges,
//! constant-time comparison, header-safe values.

use super::Denial;
use crate::http::{self, Status};
use crate::plane::ControlReply;

/// An OAuth-shaped JSON error.
pub(super) fn error(out: &mut Vec<u8>, status: Status, code: &str, description: &str, ka: bool) {
    http::write_oauth_error(out, status, code, description, &[], ka);
}

/// An OAuth-shaped JSON error with extra header lines.
pub(super) fn error_with(
    out: &mut Vec<u8>,
    status: Status,
    code: &str,
    description: &str,
    headers: &[&[u8]],
    ka: bool,
) {
    http::write_oauth_error(out, status, code, description, headers, ka);
}

/// `401` with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3) and the reason.
pub(super) fn invalid_token(out: &mut Vec<u8>, denial: &Denial, ka: bool) {
    let description = denial.description();
    let challenge = format!(
        "www-authenticate: Bearer realm=\"subzero\", error=\"invalid_token\", error_description=\"{description}\""
    );
    http::write_oauth_error(
        out,
        Status::Unauthorized,
        "invalid_token",
        description,
        &[challenge.as_bytes()],
        ka,
    );
}

/// `reason` of a revocation the denylist already covered.
const REVOKED_ALREADY: &str = "the denylist already holds this jti at least as long (or its exp passed meanwhile); nothing new was stored";

/// `405` with the `allow` header line of the path's methods (RFC 9110 §15.5.6).
pub(super) fn method_not_allowed(out: &mut Vec<u8>, allow: &[u8], ka: bool) {
    error_with(
        out,
        Status::MethodNotAllowed,
        "invalid_request",
        "method not allowed on this path",
        &[allow],
        ka,
    );
}

/// `429` for a source over its budget of failed verifications (`policy` from the limiter).
pub(super) fn too_many_failures(
    out: &mut Vec<u8>,
    policy: (u64, u64),
    retry_after_s: u64,
    ka: bool,
) {
    over_budget(
        out,
        ("verify_failures", policy),
        retry_after_s,
        "too many invalid tokens from this address; retry later",
        ka,
    );
}

/// `429` from one of the shard's own budgets: `Retry-After`, and the IETF `RateLimit-Policy`
/// and `RateLimit` lines naming the budget (`quota` units per `window_s`; none left, the next
/// in `retry_after_s`).
pub(super) fn over_budget(
    out: &mut Vec<u8>,
    (name, (quota, window_s)): (&str, (u64, u64)),
    retry_after_s: u64,
    description: &str,
    ka: bool,
) {
    let lines = [
        format!("retry-after: {retry_after_s}"),
        format!("ratelimit-policy: \"{name}\";q={quota};w={window_s}"),
        format!("ratelimit: \"{name}\";r=0;t={retry_after_s}"),
    ];
    let lines: [&[u8]; 3] = [
        lines[0].as_bytes(),
        lines[1].as_bytes(),
        lines[2].as_bytes(),
    ];
    error_with(
        out,
        Status::TooManyRequests,
        "rate_limited",
        description,
        &lines,
        ka,
    );
}

/// Renders the control plane's answer to a deferred request.
pub(super) fn control_reply(out: &mut Vec<u8>, reply: &ControlReply, ka: bool) {
    match reply {
        ControlReply::Revoked { jti, stored: true } => {
            let body = serde_json::json!({ "revoked": true, "jti": jti, "stored": true });
            http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
        }
        ControlReply::Revoked { jti, stored: false } => {
            // The shard answers an expiry already past itself (token.rs), so here the jti is
            // on the denylist at least as long already (or its expiry passed while queued);
            // the token is refused either way.
            let body = serde_json::json!({
                "revoked": true,
                "jti": jti,
                "stored": false,
                "reason": REVOKED_ALREADY,
            });
            http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
        }
        ControlReply::RevokeFailed => error_with(
            out,
            Status::ServiceUnavailable,
            "temporarily_unavailable",
            "revocation could not be stored; retry",
            &[b"retry-after: 1"],
            ka,
        ),
        ControlReply::RevocationsFull { max_live } => error_with(
            out,
            Status::ServiceUnavailable,
            "temporarily_unavailable",
            &format!(
                "the revocation table is full ({max_live} live entries); entries free up as their tokens expire, retry later"
            ),
            &[b"retry-after: 60"],
            ka,
        ),
        ControlReply::IdJagRedeemed(token) => super::xaa::render_granted(out, token, ka),
        ControlReply::IdJagRefused(e) => super::xaa::render_redeem_refused(out, e, ka),
        ControlReply::Rotated { .. } => rotated(out, reply, ka),
        ControlReply::RelationshipsWritten { revision, n_tuples } => {
            let body = serde_json::json!({ "revision": revision, "written": n_tuples });
            http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
        }
        ControlReply::RelationshipsRefused { description } => {
            error(out, Status::BadRequest, "invalid_request", description, ka);
        }
        ControlReply::ChannelCreated {
            id,
            tokens,
            expires_at_s,
        } => {
            let body = serde_json::json!({
                "channel_id": id,
                "app_token": tokens[0],
                "agent_token": tokens[1],
                "token_type": "Bearer",
                "expires_at": expires_at_s,
            });
            http::write_response(
                out,
                Status::Ok,
                Some("application/json"),
                &[b"cache-control: no-store"],
                body.to_string().as_bytes(),
                ka,
            );
        }
        ControlReply::ChannelDeleted { id } => {
            let body = serde_json::json!({ "channel_id": id, "deleted": true });
            http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
        }
        ControlReply::ChannelUnknown => {
            error(out, Status::NotFound, "invalid_request", "no such channel", ka);
        }
        ControlReply::StoreFailed => error_with(
            out,
            Status::ServiceUnavailable,
            "temporarily_unavailable",
            "the write could not be made durable; retry",
            &[b"retry-after: 1"],
            ka,
        ),
        ControlReply::FleetUnavailable { description } => error_with(
            out,
            Status::ServiceUnavailable,
            "temporarily_unavailable",
            &format!("{description}; authentication still works, retry this write"),
            &[b"retry-after: 1"],
            ka,
        ),
        ControlReply::Vault(reply) => super::vault::render_reply(out, reply, ka),
        ControlReply::Block(reply) => super::block::render_reply(out, reply, ka),
        ControlReply::AuditWritten { .. }
        | ControlReply::AuditRecords(_)
        | ControlReply::AuditCheckpoint { .. }
        | ControlReply::AuditFailed => super::audit::render_reply(out, reply, ka),
        ControlReply::RotateFailed => error(
            out,
            Status::InternalServerError,
            "server_error",
            "key rotation failed; see the server log",
            ka,
        ),
    }
}

/// `{"kid","previous_kid","previous_retire_at"}` of a rotation.
fn rotated(out: &mut Vec<u8>, reply: &ControlReply, ka: bool) {
    if let ControlReply::Rotated {
        kid,
        previous_kid,
        previous_retire_at_s,
    } = reply
    {
        let body = serde_json::json!({
            "kid": kid,
            "previous_kid": previous_kid,
            "previous_retire_at": previous_retire_at_s,
        });
        http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
    }
}

/// Compares secrets without an early exit on the first difference.
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Appends `value` with control characters, `%` and non-ASCII percent-encoded, so untrusted
/// claim text can never end a header line.
pub(super) fn push_header_value(out: &mut Vec<u8>, value: &str) {
    for &b in value.as_bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// The status code of a whole response in `bytes` (`HTTP/1.1 NNN ...`).
pub(super) fn status_of(bytes: &[u8]) -> u16 {
    bytes
        .get(9..12)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Drops the body of the response starting at `start` (HEAD), keeping its headers.
pub(super) fn strip_body(out: &mut Vec<u8>, start: usize) {
    if let Some(end) = out[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        out.truncate(start + end + 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_cannot_inject() {
        let mut out = Vec::new();
        push_header_value(&mut out, "alice\r\nx-admin: yes%");
        assert_eq!(out, b"alice%0D%0Ax-admin: yes%25");
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secrets"));
    }

    #[test]
    fn control_replies_render_as_oauth_responses() {
        let cases = [
            (
                ControlReply::Revoked {
                    jti: "j1".into(),
                    stored: false,
                },
                200,
                r#"{"jti":"j1","reason":"the denylist already holds this jti at least as long (or its exp passed meanwhile); nothing new was stored","revoked":true,"stored":false}"#,
            ),
            (
                ControlReply::Revoked {
                    jti: "j1".into(),
                    stored: true,
                },
                200,
                r#"{"jti":"j1","revoked":true,"stored":true}"#,
            ),
            (
                ControlReply::RevokeFailed,
                503,
                "\"error\":\"temporarily_unavailable\"",
            ),
            (
                ControlReply::Rotated {
                    kid: "new".into(),
                    previous_kid: "old".into(),
                    previous_retire_at_s: 99,
                },
                200,
                r#"{"kid":"new","previous_kid":"old","previous_retire_at":99}"#,
            ),
            (
                ControlReply::RotateFailed,
                500,
                "\"error\":\"server_error\"",
            ),
        ];
        for (reply, code, body) in cases {
            let mut out = Vec::new();
            control_reply(&mut out, &reply, false);
            assert_eq!(status_of(&out), code, "{reply:?}");
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(body), "{reply:?}: {text}");
            assert!(text.contains("connection: close"), "{text}");
        }
    }

    #[test]
    fn status_and_head() {
        let mut out = Vec::new();
        http::write_response(&mut out, Status::Ok, None, &[], b"body", true);
        assert_eq!(status_of(&out), 200);
        strip_body(&mut out, 0);
        assert!(out.ends_with(b"content-length: 4\r\n\r\n"));
    }
}
