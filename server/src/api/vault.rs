//! The token vault on a shard: `PUT`/`GET`/`DELETE /v1/vault/{name}` and `GET /v1/vault`.
//!
//! The shard authenticates the bearer caller (its verified `iss` and `sub` are the namespace),
//! validates the name, the body and the expiry, and hands the operation to the control plane,
//! which holds the master key and the sealed entries; the response is deferred until it
//! answers (after the commit, for writes). Nothing here seals, opens or stores.
//!
//! Architecture Invariant: the namespace comes only from the verified token, never from the
//! request path, body or a header, so a caller cannot name another caller's entries.
//! Architecture Invariant: a missing entry and another caller's entry answer the same `404`.

use zeroize::Zeroizing;

use super::authn::{Check, CHALLENGE_NONE};
use super::respond;
use super::ShardApp;
use crate::http::{self, Method, Request, Status};
use crate::monitor::Op;
use crate::plane::{ControlMsg, VaultOp, VaultReply};
use crate::shard::{Cx, Outcome};
use crate::vault::{self, Namespace, PutRequest};

/// The list path; entries are below it.
pub(super) const VAULT_PATH: &str = "/v1/vault";

/// Whether `path` is the vault's (the list or an entry).
pub(super) fn is_vault_path(path: &str) -> bool {
    path.strip_prefix(VAULT_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl ShardApp {
    /// Routes a request whose path `is_vault_path`.
    pub(super) fn vault(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::Other);
        let name = req
            .path
            .strip_prefix(VAULT_PATH)
            .and_then(|rest| rest.strip_prefix('/'));
        let allowed: &[u8] = if name.is_some() {
            b"allow: GET, PUT, DELETE"
        } else {
            b"allow: GET"
        };
        // A deferred response cannot have its body stripped, so HEAD is not offered here.
        let method_ok = matches!(
            (req.method, name),
            (Method::Get, _) | (Method::Put | Method::Delete, Some(_))
        );
        if !method_ok {
            respond::method_not_allowed(out, allowed, ka);
            return done;
        }
        let namespace = match self.vault_caller(req, cx, out) {
            Ok(namespace) => namespace,
            Err(early) => return early,
        };
        let op = match vault_op(req, name, cx.now_s) {
            Ok(op) => op,
            Err(e) => {
                let text = e.to_string();
                respond::error(out, Status::BadRequest, "invalid_request", &text, ka);
                return done;
            }
        };
        self.send_to_control(cx, out, ka, Op::Vault, |reply_to| ControlMsg::Vault {
            reply_to,
            namespace,
            op,
        })
    }

    /// The namespace of the bearer caller, or the response that refuses it (401 with the RFC
    /// 6750 challenge, 429, 400 for an unusable issuer, or `Later` over this pass's budget).
    fn vault_caller(
        &mut self,
        req: &Request<'_>,
        cx: &Cx<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Namespace, (Outcome, Op)> {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::Other);
        let Some(token) = req.bearer() else {
            let text = "missing bearer token";
            respond::error_with(
                out,
                Status::Unauthorized,
                "invalid_request",
                text,
                &[CHALLENGE_NONE],
                ka,
            );
            return Err(done);
        };
        let cached = match self.check_token(token, cx) {
            Check::Done(Ok(cached), _) => cached,
            Check::Done(Err(denial), _) => {
                respond::invalid_token(out, &denial, ka);
                return Err(done);
            }
            Check::Later => return Err((Outcome::Later, Op::Other)),
            Check::Limited { retry_after_s } => {
                respond::too_many_failures(out, self.failures.policy(), retry_after_s, ka);
                return Err(done);
            }
        };
        Namespace::of(&cached.claims).map_err(|e| {
            let text = e.to_string();
            respond::error(out, Status::BadRequest, "invalid_request", &text, ka);
            done
        })
    }
}

/// The operation a vault request asks for, validated: the method was checked already.
fn vault_op(
    req: &Request<'_>,
    name: Option<&str>,
    now_s: u64,
) -> Result<VaultOp, vault::VaultError> {
    let Some(name) = name else {
        return Ok(VaultOp::List);
    };
    vault::validate_name(name)?;
    let name = name.to_owned();
    Ok(match req.method {
        Method::Put => {
            let body = PutRequest::parse(req.body, now_s)?;
            VaultOp::Put {
                name,
                token: Zeroizing::new(body.token),
                expires_at_s: body.expires_at_s,
            }
        }
        Method::Delete => VaultOp::Delete { name },
        _ => VaultOp::Get { name },
    })
}

/// Renders the control plane's answer to a vault request.
pub(super) fn render_reply(out: &mut Vec<u8>, reply: &VaultReply, ka: bool) {
    match reply {
        VaultReply::Stored { name, version } => {
            let body = serde_json::json!({ "name": name, "version": version });
            http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
        }
        VaultReply::Entry {
            name,
            token,
            version,
            expires_at_s,
        } => {
            let body = serde_json::json!({
                "name": name,
                "token": token.as_str(),
                "version": version,
                "expires_at": expires_at_s,
            });
            let body = Zeroizing::new(body.to_string());
            let headers: &[&[u8]] = &[b"cache-control: no-store", b"pragma: no-cache"];
            let json = Some("application/json");
            http::write_response(out, Status::Ok, json, headers, body.as_bytes(), ka);
        }
        VaultReply::Deleted { name } => {
            let body = serde_json::json!({ "name": name, "deleted": true });
            http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
        }
        VaultReply::Names(names) => {
            let body = serde_json::json!({ "names": names });
            http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
        }
        VaultReply::NotFound => respond::error(
            out,
            Status::NotFound,
            "invalid_request",
            "no vault entry of that name",
            ka,
        ),
        VaultReply::Refused { description } => {
            respond::error(out, Status::BadRequest, "invalid_request", description, ka);
        }
        VaultReply::Full { max } => {
            let text = format!(
                "this namespace holds {max} vault entries, the most allowed; delete one first"
            );
            respond::error(out, Status::Conflict, "limit_exceeded", &text, ka);
        }
        VaultReply::OutOfSpace { max_bytes } => {
            let text = format!(
                "the vault holds {max_bytes} bytes of sealed values, the most allowed; retry later"
            );
            respond::error_with(
                out,
                Status::ServiceUnavailable,
                "temporarily_unavailable",
                &text,
                &[b"retry-after: 60"],
                ka,
            );
        }
        VaultReply::Unreadable => respond::error(
            out,
            Status::InternalServerError,
            "server_error",
            "the stored vault entry cannot be opened; see the server log",
            ka,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(reply: &VaultReply) -> (u16, String) {
        let mut out = Vec::new();
        render_reply(&mut out, reply, true);
        let code = respond::status_of(&out);
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn vault_paths() {
        assert!(is_vault_path("/v1/vault"));
        assert!(is_vault_path("/v1/vault/google"));
        assert!(is_vault_path("/v1/vault/"));
        assert!(!is_vault_path("/v1/vaults"));
        assert!(!is_vault_path("/v1/vaul"));
    }

    #[test]
    fn vault_replies_render_in_the_spec_shapes() {
        let (code, text) = render(&VaultReply::Stored {
            name: "g".into(),
            version: 3,
        });
        assert_eq!(code, 200);
        assert!(text.ends_with(r#"{"name":"g","version":3}"#), "{text}");
        let (code, text) = render(&VaultReply::Entry {
            name: "g".into(),
            token: Zeroizing::new("rt-1".into()),
            version: 2,
            expires_at_s: None,
        });
        assert_eq!(code, 200);
        assert!(text.contains("cache-control: no-store"), "{text}");
        assert!(
            text.ends_with(r#"{"expires_at":null,"name":"g","token":"rt-1","version":2}"#),
            "{text}"
        );
        let (code, text) = render(&VaultReply::Names(vec!["a".into(), "b".into()]));
        assert_eq!(code, 200);
        assert!(text.ends_with(r#"{"names":["a","b"]}"#), "{text}");
        for (reply, want) in [
            (VaultReply::NotFound, 404),
            (
                VaultReply::Refused {
                    description: "x".into(),
                },
                400,
            ),
            (VaultReply::Full { max: 1 }, 409),
            (VaultReply::OutOfSpace { max_bytes: 1 }, 503),
            (VaultReply::Unreadable, 500),
        ] {
            let (code, text) = render(&reply);
            assert_eq!(code, want, "{reply:?}");
            assert!(text.contains("\"error\":"), "{text}");
        }
    }

    #[test]
    fn plaintext_is_redacted_in_debug() {
        let reply = VaultReply::Entry {
            name: "g".into(),
            token: Zeroizing::new("secret-refresh-token".into()),
            version: 1,
            expires_at_s: None,
        };
        assert!(!format!("{reply:?}").contains("secret-refresh-token"));
        let op = VaultOp::Put {
            name: "g".into(),
            token: Zeroizing::new("secret-refresh-token".into()),
            expires_at_s: None,
        };
        assert!(!format!("{op:?}").contains("secret-refresh-token"));
    }
}
