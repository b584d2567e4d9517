//! Permissions on a shard: `POST /v1/permissions/check` against the process's relationship
//! snapshot (with a shard-local decision cache valid for one revision), and the admin
//! relationship endpoints, whose writes go through the control plane.

use std::sync::Arc;

use super::respond;
use super::ShardApp;
use crate::authz::{self, Decision};
use crate::http::{self, Request, Status};
use crate::monitor::Op;
use crate::plane::ControlMsg;
use crate::shard::{Cx, Outcome};

/// Decisions cached per shard.
pub const DECISION_CACHE_ENTRIES: usize = 65_536;

const PERMISSIONS_OFF: &str = "permissions are off (no [permissions] schema_file configured)";

impl ShardApp {
    /// The schema and the relationships, or a `404` saying permissions are off.
    fn permissions_on(
        &self,
        out: &mut Vec<u8>,
        ka: bool,
    ) -> Option<(Arc<authz::Schema>, Arc<authz::Snapshot>)> {
        let on = self
            .config()
            .permissions
            .clone()
            .zip(self.relationships.clone());
        if on.is_none() {
            respond::error(
                out,
                Status::NotFound,
                "invalid_request",
                PERMISSIONS_OFF,
                ka,
            );
        }
        on
    }

    /// `POST /v1/permissions/check`: `{subject, permission, object}` → `{allowed,
    /// decision_path, revision}`. The caller authenticates with a bearer token (ours or a
    /// trusted issuer's) or the admin token.
    pub(super) fn permission_check(
        &mut self,
        req: &Request<'_>,
        cx: &Cx<'_>,
        out: &mut Vec<u8>,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::Other);
        let Some((schema, snapshot)) = self.permissions_on(out, ka) else {
            return done;
        };
        if let Some(early) = self.authenticate_caller(req, cx, out) {
            return early;
        }
        let body = match authz::parse_check_body(req.body) {
            Ok(body) => body,
            Err(e) => {
                respond::error(
                    out,
                    Status::BadRequest,
                    "invalid_request",
                    &e.to_string(),
                    ka,
                );
                return done;
            }
        };
        let revision = snapshot.revision();
        if let Some(wanted) = body.at_least_revision.filter(|&r| r > revision) {
            let text = format!(
                "at_least_revision {wanted} is ahead of this server's relationships (revision {revision})"
            );
            respond::error(out, Status::Conflict, "revision_unavailable", &text, ka);
            return done;
        }
        let (subject, permission, object) = (&*body.subject, &*body.permission, &*body.object);
        if let Some(decision) = self.decisions.get(subject, permission, object, revision) {
            write_decision(out, decision, ka);
            return (Outcome::Done, Op::PermissionHit);
        }
        // An uncached check may walk thousands of nodes (a denial over a wide group tree took
        // 2.4 ms on the 1M-tuple bench graph): it takes a whole pass's budget, so a pass runs
        // at most one of them and other connections still get their turn.
        if !self
            .pass_budget
            .take(cx.pass, super::budget::VERIFY_UNITS_PER_PASS)
        {
            return (Outcome::Later, Op::Other);
        }
        let limits = authz::Limits::default();
        match authz::check(
            &schema, &snapshot, subject, permission, object, cx.now_s, &limits,
        ) {
            Ok(decision) => {
                write_decision(out, &decision, ka);
                self.decisions
                    .insert(subject, permission, object, revision, decision);
                (Outcome::Done, Op::PermissionCheck)
            }
            Err(e) if e.is_limit() => {
                respond::error(out, Status::Conflict, "limit_exceeded", &e.to_string(), ka);
                done
            }
            Err(e) => {
                respond::error(
                    out,
                    Status::BadRequest,
                    "invalid_request",
                    &e.to_string(),
                    ka,
                );
                done
            }
        }
    }

    /// The admin token, or a valid bearer token; otherwise the response (401, 429, or
    /// `Later` when verifying is over this pass's budget).
    fn authenticate_caller(
        &mut self,
        req: &Request<'_>,
        cx: &Cx<'_>,
        out: &mut Vec<u8>,
    ) -> Option<(Outcome, Op)> {
        let ka = req.keep_alive;
        if self.is_admin(req) {
            return None;
        }
        let Some(token) = req.bearer() else {
            let text = "a bearer token is required";
            respond::error(out, Status::Unauthorized, "invalid_request", text, ka);
            return Some((Outcome::Done, Op::Other));
        };
        self.verified_or_answer(token, cx, out, ka).err()
    }

    /// `POST` (write) or `DELETE /v1/relationships` (admin): the tuples are checked against
    /// the schema here, then made durable by the control plane, which answers with the
    /// revision that has them.
    pub(super) fn write_relationships(
        &mut self,
        req: &Request<'_>,
        cx: &mut Cx<'_>,
        out: &mut Vec<u8>,
        delete: bool,
    ) -> (Outcome, Op) {
        let ka = req.keep_alive;
        let done = (Outcome::Done, Op::Other);
        let Some(schema) = self.config().permissions.clone() else {
            respond::error(
                out,
                Status::NotFound,
                "invalid_request",
                PERMISSIONS_OFF,
                ka,
            );
            return done;
        };
        if let Some(refused) = self.refuse_non_admin(req, out) {
            return refused;
        }
        let limits = authz::Limits::default();
        let tuples = match authz::parse_tuples_body(req.body, &limits) {
            Ok(tuples) if !tuples.is_empty() => tuples,
            Ok(_) => {
                respond::error(out, Status::BadRequest, "invalid_request", "no tuples", ka);
                return done;
            }
            Err(e) => {
                respond::error(
                    out,
                    Status::BadRequest,
                    "invalid_request",
                    &e.to_string(),
                    ka,
                );
                return done;
            }
        };
        if let Some((t, e)) = tuples
            .iter()
            .find_map(|t| t.resolve(&schema, &limits).err().map(|e| (t, e)))
        {
            let text = format!("{t}: {e}");
            respond::error(out, Status::BadRequest, "invalid_request", &text, ka);
            return done;
        }
        self.send_to_control(cx, out, ka, Op::Other, |reply_to| {
            ControlMsg::WriteRelationships {
                reply_to,
                delete,
                tuples,
            }
        })
    }

    /// `GET /v1/relationships?object=type:id` (admin): the object's tuples.
    pub(super) fn list_relationships(&mut self, req: &Request<'_>, out: &mut Vec<u8>) -> Op {
        let ka = req.keep_alive;
        let Some((schema, snapshot)) = self.permissions_on(out, ka) else {
            return Op::Other;
        };
        if self.refuse_non_admin(req, out).is_some() {
            return Op::Other;
        }
        let limits = authz::Limits::default();
        let listed = req
            .query_param("object")
            .ok_or_else(|| "give ?object=type:id".to_owned())
            .and_then(|text| authz::parse_object(text, &limits).map_err(|e| e.to_string()))
            .and_then(|object| {
                let ty = schema
                    .type_id(object.ty)
                    .ok_or_else(|| format!("unknown type {:?}", object.ty))?;
                Ok(snapshot.relationships_of(&schema, ty, object.id))
            });
        match listed {
            Ok(relationships) => {
                let tuples: Vec<authz::TupleText> =
                    relationships.iter().map(|r| r.to_text(&schema)).collect();
                let body = serde_json::json!({ "tuples": tuples, "revision": snapshot.revision() });
                http::write_json(out, Status::Ok, body.to_string().as_bytes(), ka);
            }
            Err(text) => respond::error(out, Status::BadRequest, "invalid_request", &text, ka),
        }
        Op::Other
    }

    /// `Some(answer)` unless `req` carries the admin token (404 when admin is off, 401 else).
    pub(super) fn refuse_non_admin(
        &self,
        req: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Option<(Outcome, Op)> {
        let ka = req.keep_alive;
        if self.config().admin_token.is_none() && !self.is_admin(req) {
            let text = "admin endpoints are off (no [admin] token_file configured)";
            respond::error(out, Status::NotFound, "invalid_request", text, ka);
            return Some((Outcome::Done, Op::Other));
        }
        if !self.is_admin(req) {
            respond::error_with(
                out,
                Status::Unauthorized,
                "invalid_token",
                "admin token required",
                &[b"www-authenticate: Bearer realm=\"subzero-admin\""],
                ka,
            );
            return Some((Outcome::Done, Op::Other));
        }
        None
    }
}

/// `{allowed, decision_path, revision}`.
fn write_decision(out: &mut Vec<u8>, decision: &Decision, ka: bool) {
    let body = serde_json::to_vec(decision).unwrap_or_default();
    http::write_json(out, Status::Ok, &body, ka);
}
