//! `/v1/block` on a shard: the admin endpoints of the kernel blocklist. The shard checks the
//! caller (admin token, or an `[admin] unix_uids` uid over the Unix socket) and the body, then
//! hands a `BlockOp` to the control plane, which owns the gate.

use serde::Deserialize;

use super::respond;
use super::ShardApp;
use crate::gate::{parse_block_reason, BlockReason, Cidr};
use crate::http::{self, Method, Request, Status};
use crate::monitor::Op;
use crate::plane::{BlockEntry, BlockOp, BlockReply, ControlMsg, MAX_ADMIN_BLOCK_TTL_S};
use crate::shard::{Cx, Outcome};

/// The route.
pub(super) const BLOCK_PATH: &str = "/v1/block";

/// `POST /v1/block`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    cidr: String,
    /// Seconds; absent or 0 blocks until removed.
    #[serde(default)]
    ttl_s: u64,
    /// Absent: `manual`.
    #[serde(default)]
    reason: Option<String>,
}

/// `DELETE /v1/block`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelBody {
    cidr: String,
}

/// The operation a request asks for, or why it is malformed (for a `400`).
pub(super) fn parse_block_op(method: Method, body: &[u8]) -> Result<BlockOp, String> {
    let json_err = |e: serde_json::Error| {
        format!("body must be JSON like {{\"cidr\":\"203.0.113.0/24\",...}}: {e}")
    };
    match method {
        Method::Post => {
            let b: AddBody = serde_json::from_slice(body).map_err(json_err)?;
            let cidr: Cidr = b
                .cidr
                .parse()
                .map_err(|e: crate::gate::CidrError| e.to_string())?;
            if b.ttl_s > MAX_ADMIN_BLOCK_TTL_S {
                return Err(format!(
                    "ttl_s must be 0 (until removed) to {MAX_ADMIN_BLOCK_TTL_S} (a year), got {}",
                    b.ttl_s
                ));
            }
            let reason = match b.reason.as_deref() {
                None | Some("") => BlockReason::Manual,
                Some(text) => parse_block_reason(text).ok_or_else(|| {
                    format!("unknown reason {text:?}: use manual, threat, ratelimit or other")
                })?,
            };
            Ok(BlockOp::Add {
                cidr,
                ttl_s: b.ttl_s,
                reason,
            })
        }
        Method::Delete => {
            let b: DelBody = serde_json::from_slice(body).map_err(json_err)?;
            let cidr: Cidr = b
                .cidr
                .parse()
                .map_err(|e: crate::gate::CidrError| e.to_string())?;
            Ok(BlockOp::Del { cidr })
        }
        _ => Ok(BlockOp::List),
    }
}

impl ShardApp {
    /// `GET|POST|DELETE /v1/block` (the router sends only these methods here).
    pub(super) fn admin_block(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        if let Some(refused) = self.refuse_non_admin(req, out) {
            return refused;
        }
        let op = match parse_block_op(req.method, req.body) {
            Ok(op) => op,
            Err(text) => {
                respond::error(out, Status::BadRequest, "invalid_request", &text, ka);
                return (Outcome::Done, Op::Other);
            }
        };
        self.send_to_control(cx, out, ka, Op::Other, |reply_to| ControlMsg::AdminBlock {
            reply_to,
            op,
        })
    }
}

fn entry_json(e: &BlockEntry) -> serde_json::Value {
    serde_json::json!({ "cidr": e.cidr, "until_unix_s": e.until_unix_s, "reason": e.reason })
}

/// Renders the control plane's answer to a `/v1/block` request.
pub(super) fn render_reply(out: &mut Vec<u8>, reply: &BlockReply, ka: bool) {
    match reply {
        BlockReply::Added(entry) => {
            http::write_json(out, Status::Ok, entry_json(entry).to_string().as_bytes(), ka);
        }
        BlockReply::Deleted { cidr } => {
            let body = serde_json::json!({ "cidr": cidr, "deleted": true });
            http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
        }
        BlockReply::NotBlocked { cidr } => respond::error(
            out,
            Status::NotFound,
            "invalid_request",
            &format!("{cidr} is not on the blocklist"),
            ka,
        ),
        BlockReply::Entries(entries) => {
            let list: Vec<_> = entries.iter().map(entry_json).collect();
            let body = serde_json::json!({ "entries": list });
            http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
        }
        BlockReply::GateOff => respond::error(
            out,
            Status::ServiceUnavailable,
            "temporarily_unavailable",
            "the eBPF gate is off: it needs an XDP interface (--xdp IFACE or [gate] xdp), root or CAP_BPF, and a successful load (see the start log); there is no blocklist to change",
            ka,
        ),
        BlockReply::Failed { description } => respond::error(
            out,
            Status::InternalServerError,
            "server_error",
            description,
            ka,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_to_operations_or_a_reason_for_400() {
        let add = parse_block_op(
            Method::Post,
            br#"{"cidr":"203.0.113.9/24","ttl_s":600,"reason":"threat"}"#,
        )
        .unwrap();
        assert_eq!(
            add,
            BlockOp::Add {
                cidr: "203.0.113.0/24".parse().unwrap(),
                ttl_s: 600,
                reason: BlockReason::Threat,
            }
        );
        let bare = parse_block_op(Method::Post, br#"{"cidr":"2001:db8::1"}"#).unwrap();
        assert!(
            matches!(
                bare,
                BlockOp::Add {
                    ttl_s: 0,
                    reason: BlockReason::Manual,
                    ..
                }
            ),
            "{bare:?}"
        );
        let del = parse_block_op(Method::Delete, br#"{"cidr":"10.0.0.0/8"}"#).unwrap();
        assert_eq!(
            del,
            BlockOp::Del {
                cidr: "10.0.0.0/8".parse().unwrap()
            }
        );
        assert_eq!(parse_block_op(Method::Get, b"").unwrap(), BlockOp::List);
        for (method, bad) in [
            (Method::Post, &br#"{"cidr":"10.0.0.0/33"}"#[..]),
            (Method::Post, br#"{"cidr":"nope"}"#),
            (Method::Post, br#"{"cidr":"10.0.0.0/8","ttl_s":-1}"#),
            (
                Method::Post,
                br#"{"cidr":"10.0.0.0/8","ttl_s":99999999999}"#,
            ),
            (Method::Post, br#"{"cidr":"10.0.0.0/8","reason":"because"}"#),
            (Method::Post, br#"{"cidr":"10.0.0.0/8","extra":1}"#),
            (Method::Post, b""),
            (Method::Delete, br"{}"),
        ] {
            assert!(
                parse_block_op(method, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
