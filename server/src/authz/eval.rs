//! The check evaluator: does a subject have a permission on an object in one snapshot, at one
//! instant, and which tuples and rules granted it.
//!
//! Semantics (the reference evaluator in the tests defines the same independently):
//! - A node is (relation or permission, object id). A relation node holds when a live tuple
//!   names the subject directly, names the wildcard of the subject's type (plain subjects only),
//!   or names a userset (`group:eng#member`) whose node holds. A permission node holds when its
//!   expression does; `a->b` holds when `b` holds on some live subject object of relation `a`.
//! - A node already on the current path (a cycle in the data, such as two groups that contain
//!   each other) does not hold along that path; other paths are still explored.
//! - Entering a node beyond `max_depth` is an error, not a denial. Errors combine like an
//!   unknown in three-valued logic: a union with a granting branch grants, an intersection with
//!   a denying branch denies, an exclusion whose subtrahend grants denies; otherwise the error
//!   is returned. So the answer never depends on the order branches are evaluated in.
//! - More than `max_work` nodes visited in one check is an error too (hostile fan-out).
//!
//! The hot path allocates nothing on a denial and one string per step of the granting path on
//! an allow; the path stack is a fixed array.

use serde::Serialize;

use super::schema::{Body, Expr, Schema};
use super::store::{Snapshot, SubjRec};
use super::tuple::{echo, parse_object, parse_subject, subject_text, TupleError};
use super::Limits;

/// The deepest `max_depth` honoured (the size of the evaluator's fixed path stack).
pub const DEPTH_CAP: usize = 64;

/// The answer to a check: `{allowed, decision_path, revision}` in the SPEC's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the subject has the permission.
    pub allowed: bool,
    /// When allowed: the rules and tuples that granted it, from the permission asked about
    /// down to the subject, e.g. `["doc:1#view", "doc:1#viewer@group:eng#member",
    /// "group:eng#member@user:alice"]`. Empty when denied.
    pub decision_path: Vec<String>,
    /// The snapshot revision the answer was computed at.
    pub revision: u64,
}

/// A check that could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The subject, object or permission is malformed or unknown to the schema (a 400).
    #[error(transparent)]
    Input(#[from] TupleError),
    /// A wildcard subject (`user:*`) was asked about; wildcards only grant.
    #[error("a wildcard subject ({0}) cannot be checked; check a concrete subject")]
    WildcardSubject(String),
    /// The evaluation went deeper than `max_depth` nodes along one path.
    #[error("the check went deeper than {0} levels of nested groups or parents")]
    DepthExceeded(u32),
    /// The evaluation visited more than `max_work` nodes.
    #[error("the check visited more than {0} nodes")]
    WorkExceeded(u32),
    /// The snapshot was built for another schema.
    #[error("the relationships were built for another schema")]
    SchemaMismatch,
}

impl CheckError {
    /// Whether a limit (depth, work) stopped the check, rather than bad input.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            CheckError::DepthExceeded(_) | CheckError::WorkExceeded(_)
        )
    }
}

/// Does `subject` (`user:alice`, or a userset `group:eng#member`) have `permission` (a
/// permission or relation of the object's type) on `object` (`doc:1`) in `snapshot` at
/// `now_s` (unix seconds; tuples expire at their `expires_at` second)?
pub fn check(
    schema: &Schema,
    snapshot: &Snapshot,
    subject: &str,
    permission: &str,
    object: &str,
    now_s: u64,
    limits: &Limits,
) -> Result<Decision, CheckError> {
    if snapshot.schema_fingerprint() != schema.fingerprint() {
        return Err(CheckError::SchemaMismatch);
    }
    let s = parse_subject(subject, limits)?;
    if s.id == "*" {
        return Err(CheckError::WildcardSubject(s.ty.to_owned()));
    }
    let o = parse_object(object, limits)?;
    let subj_ty = schema
        .type_id(s.ty)
        .ok_or_else(|| TupleError::UnknownType(s.ty.to_owned()))?;
    let subj_code = match s.rel {
        None => 0,
        Some(name) => {
            schema
                .rel_id(subj_ty, name)
                .ok_or_else(|| unknown_rel(s.ty, name))?
                + 2
        }
    };
    let obj_ty = schema
        .type_id(o.ty)
        .ok_or_else(|| TupleError::UnknownType(o.ty.to_owned()))?;
    let perm = schema
        .rel_id(obj_ty, permission)
        .ok_or_else(|| unknown_rel(o.ty, permission))?;
    let mut eval = Eval {
        schema,
        snapshot,
        now_s,
        max_depth: (limits.max_depth as usize).min(DEPTH_CAP),
        max_work: limits.max_work,
        work: 0,
        subj_ty,
        subj_code,
        subj_id: s.id,
        stack: [(0, ""); DEPTH_CAP],
        depth: 0,
        path: Vec::new(),
    };
    let allowed = eval.node(perm, o.id)?;
    let mut decision_path = eval.path;
    if allowed && decision_path.is_empty() {
        // The subject is the very userset asked about (`group:eng#member` on `group:eng`).
        decision_path.push(format!("{object}#{permission}"));
    }
    decision_path.reverse();
    Ok(Decision {
        allowed,
        decision_path,
        revision: snapshot.revision(),
    })
}

fn unknown_rel(ty: &str, name: &str) -> TupleError {
    TupleError::UnknownRelation {
        ty: ty.to_owned(),
        name: echo(name),
    }
}

struct Eval<'a> {
    schema: &'a Schema,
    snapshot: &'a Snapshot,
    now_s: u64,
    max_depth: usize,
    max_work: u32,
    work: u32,
    subj_ty: u16,
    subj_code: u16,
    subj_id: &'a str,
    /// The nodes on the current path, `stack[..depth]`.
    stack: [(u16, &'a str); DEPTH_CAP],
    depth: usize,
    /// Granting steps, pushed as the recursion unwinds (so child before parent).
    path: Vec<String>,
}

type Answer = Result<bool, CheckError>;

/// Keeps the first error of a combinator, so it can still be overridden by a decisive branch.
fn keep(first: &mut Option<CheckError>, e: CheckError) {
    if first.is_none() {
        *first = Some(e);
    }
}

impl<'a> Eval<'a> {
    fn node(&mut self, rel: u16, obj: &'a str) -> Answer {
        self.work += 1;
        if self.work > self.max_work {
            return Err(CheckError::WorkExceeded(self.max_work));
        }
        if self.subj_code == rel + 2 && self.subj_id == obj {
            return Ok(true);
        }
        let on_path = &self.stack[..self.depth];
        if on_path.iter().any(|&(r, o)| r == rel && o == obj) {
            return Ok(false);
        }
        if self.depth >= self.max_depth {
            return Err(CheckError::DepthExceeded(self.max_depth as u32));
        }
        self.stack[self.depth] = (rel, obj);
        self.depth += 1;
        let mark = self.path.len();
        let schema = self.schema;
        let (answer, is_permission) = match schema.body(rel) {
            Some(Body::Relation(_)) => (self.relation(rel, obj), false),
            Some(Body::Permission(expr)) => (self.expr(expr, obj), true),
            None => (Ok(false), false),
        };
        self.depth -= 1;
        match answer {
            Ok(true) if is_permission => {
                let ty = schema.type_name(schema.rel_owner(rel));
                self.path
                    .push(format!("{ty}:{obj}#{}", schema.rel_name(rel)));
            }
            Ok(true) => {}
            _ => self.path.truncate(mark),
        }
        answer
    }

    fn push_tuple(&mut self, rel: u16, obj: &str, rec: &SubjRec, sid: &str) {
        let schema = self.schema;
        let ty = schema.type_name(schema.rel_owner(rel));
        let subject = subject_text(schema, rec.stype, rec.code, sid);
        self.path
            .push(format!("{ty}:{obj}#{}@{subject}", schema.rel_name(rel)));
    }

    fn relation(&mut self, rel: u16, obj: &'a str) -> Answer {
        let snapshot = self.snapshot;
        let subjects = snapshot.subjects(rel, obj);
        if subjects.all().is_empty() {
            return Ok(false);
        }
        let direct = subjects.find(self.subj_code, self.subj_ty, self.subj_id);
        let wildcard = if self.subj_code == 0 {
            subjects.find(1, self.subj_ty, "")
        } else {
            None
        };
        for rec in [direct, wildcard].into_iter().flatten() {
            if rec.live(self.now_s) {
                self.push_tuple(rel, obj, rec, subjects.id(rec));
                return Ok(true);
            }
        }
        let mut first_err = None;
        for rec in subjects.usersets() {
            if !rec.live(self.now_s) {
                continue;
            }
            let sid = subjects.id(rec);
            match self.node(rec.code - 2, sid) {
                Ok(true) => {
                    self.push_tuple(rel, obj, rec, sid);
                    return Ok(true);
                }
                Ok(false) => {}
                Err(e) => keep(&mut first_err, e),
            }
        }
        first_err.map_or(Ok(false), Err)
    }

    fn expr(&mut self, expr: &'a Expr, obj: &'a str) -> Answer {
        match expr {
            Expr::Nil => Ok(false),
            Expr::Computed(rel) => self.node(*rel, obj),
            Expr::Arrow { tupleset, targets } => self.arrow(*tupleset, targets, obj),
            Expr::Union(branches) => {
                let mut first_err = None;
                for branch in branches {
                    match self.expr(branch, obj) {
                        Ok(true) => return Ok(true),
                        Ok(false) => {}
                        Err(e) => keep(&mut first_err, e),
                    }
                }
                first_err.map_or(Ok(false), Err)
            }
            Expr::Intersect(branches) => {
                let mark = self.path.len();
                let mut first_err = None;
                for branch in branches {
                    match self.expr(branch, obj) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.path.truncate(mark);
                            return Ok(false);
                        }
                        Err(e) => keep(&mut first_err, e),
                    }
                }
                match first_err {
                    Some(e) => {
                        self.path.truncate(mark);
                        Err(e)
                    }
                    None => Ok(true),
                }
            }
            Expr::Exclude(base, minus) => {
                let mark = self.path.len();
                let base = self.expr(base, obj);
                if base == Ok(false) {
                    return Ok(false);
                }
                let minus_mark = self.path.len();
                let minus = self.expr(minus, obj);
                self.path.truncate(minus_mark);
                let answer = match (base, minus) {
                    (_, Ok(true)) => Ok(false),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    (Ok(base), Ok(false)) => Ok(base),
                };
                if answer != Ok(true) {
                    self.path.truncate(mark);
                }
                answer
            }
        }
    }

    fn arrow(&mut self, tupleset: u16, targets: &[(u16, u16)], obj: &'a str) -> Answer {
        let snapshot = self.snapshot;
        let subjects = snapshot.subjects(tupleset, obj);
        let mut first_err = None;
        for rec in subjects.all() {
            if rec.code == 1 || !rec.live(self.now_s) {
                continue;
            }
            let Some(&(_, target)) = targets.iter().find(|&&(ty, _)| ty == rec.stype) else {
                continue;
            };
            let sid = subjects.id(rec);
            match self.node(target, sid) {
                Ok(true) => {
                    self.push_tuple(tupleset, obj, rec, sid);
                    return Ok(true);
                }
                Ok(false) => {}
                Err(e) => keep(&mut first_err, e),
            }
        }
        first_err.map_or(Ok(false), Err)
    }
}
