//! Relationship tuples as text (`doc:1#viewer@group:eng#member`) and as the SPEC's JSON bodies,
//! their validation against the schema and the limits, and the resolved form the store keeps.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::schema::{Allowed, Schema};
use super::Limits;

/// A bad tuple, subject, object or request body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TupleError {
    /// The text does not have the expected shape.
    #[error("{what} '{text}' is malformed: expected {expected}")]
    Malformed {
        /// Which part (object, subject, tuple).
        what: &'static str,
        /// The offending text (truncated).
        text: String,
        /// The shape expected.
        expected: &'static str,
    },
    /// An object or subject id with a character outside `[A-Za-z0-9/_|\-=+.]`.
    #[error("{what} id '{id}' may only contain letters, digits and / _ | - = + .")]
    BadId {
        /// Which id.
        what: &'static str,
        /// The id (truncated).
        id: String,
    },
    /// An id or name over its length limit.
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLong {
        /// Which part.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A type the schema does not define.
    #[error("unknown type '{0}'")]
    UnknownType(String),
    /// A relation or permission the type does not define.
    #[error("type '{ty}' has no relation or permission '{name}'")]
    UnknownRelation {
        /// The type.
        ty: String,
        /// The name asked for.
        name: String,
    },
    /// A tuple naming a permission: only relations are stored.
    #[error("'{ty}#{name}' is a permission; tuples can only be written for relations")]
    NotARelation {
        /// The type.
        ty: String,
        /// The permission.
        name: String,
    },
    /// A subject type the relation does not allow.
    #[error("relation '{relation}' does not allow subjects like '{subject}'")]
    SubjectNotAllowed {
        /// `type#relation` of the tuple.
        relation: String,
        /// The subject.
        subject: String,
    },
    /// An `expires_at` of zero or past the year 2106.
    #[error("expires_at {0} is out of range (unix seconds, 1 to 4294967295)")]
    BadExpiry(u64),
    /// A body that is not the expected JSON.
    #[error("invalid body: {0}")]
    Body(String),
    /// More tuples in one write than allowed.
    #[error("{n} tuples in one write, over the limit of {max}")]
    TooMany {
        /// Tuples sent.
        n: usize,
        /// The limit.
        max: usize,
    },
}

/// Cuts echoed input so an error message stays small.
pub(super) fn echo(text: &str) -> String {
    let mut end = text.len().min(80);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

/// `type:id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectRef<'a> {
    /// Type name.
    pub ty: &'a str,
    /// Object id.
    pub id: &'a str,
}

/// `type:id`, `type:id#relation` or `type:*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectRef<'a> {
    /// Type name.
    pub ty: &'a str,
    /// Subject id, `*` for a wildcard.
    pub id: &'a str,
    /// The relation of a userset subject.
    pub rel: Option<&'a str>,
}

fn id_ok(id: &str) -> bool {
    id.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'|' | b'-' | b'=' | b'+' | b'.')
    })
}

fn check_id(what: &'static str, id: &str, limits: &Limits) -> Result<(), TupleError> {
    if id.len() > limits.max_id_bytes {
        return Err(TupleError::TooLong {
            what,
            len: id.len(),
            max: limits.max_id_bytes,
        });
    }
    if id.is_empty() || !id_ok(id) {
        return Err(TupleError::BadId { what, id: echo(id) });
    }
    Ok(())
}

fn check_name(what: &'static str, name: &str) -> Result<(), TupleError> {
    if name.len() > super::parse::MAX_NAME_BYTES {
        return Err(TupleError::TooLong {
            what,
            len: name.len(),
            max: super::parse::MAX_NAME_BYTES,
        });
    }
    if super::parse::check_name(name).is_err() {
        return Err(TupleError::Malformed {
            what,
            text: echo(name),
            expected: "a lowercase name",
        });
    }
    Ok(())
}

/// Parses `type:id`.
pub fn parse_object<'a>(text: &'a str, limits: &Limits) -> Result<ObjectRef<'a>, TupleError> {
    let malformed = || TupleError::Malformed {
        what: "object",
        text: echo(text),
        expected: "type:id",
    };
    let (ty, id) = text.split_once(':').ok_or_else(malformed)?;
    check_name("object type", ty).map_err(|_| malformed())?;
    check_id("object", id, limits)?;
    Ok(ObjectRef { ty, id })
}

/// Parses `type:id`, `type:id#relation` or `type:*`.
pub fn parse_subject<'a>(text: &'a str, limits: &Limits) -> Result<SubjectRef<'a>, TupleError> {
    let malformed = || TupleError::Malformed {
        what: "subject",
        text: echo(text),
        expected: "type:id, type:id#relation or type:*",
    };
    let (ty, rest) = text.split_once(':').ok_or_else(malformed)?;
    check_name("subject type", ty).map_err(|_| malformed())?;
    let (id, rel) = match rest.split_once('#') {
        Some((id, rel)) => {
            check_name("subject relation", rel).map_err(|_| malformed())?;
            (id, Some(rel))
        }
        None => (rest, None),
    };
    if id == "*" {
        if rel.is_some() {
            return Err(malformed());
        }
    } else {
        check_id("subject", id, limits)?;
    }
    Ok(SubjectRef { ty, id, rel })
}

/// A relationship as text: the SPEC's body shape
/// `{"object":"doc:1","relation":"viewer","subject":"user:alice"}`, with an optional
/// `expires_at` in unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TupleText {
    /// `type:id`.
    pub object: String,
    /// A relation of the object's type.
    pub relation: String,
    /// `type:id`, `type:id#relation` or `type:*`.
    pub subject: String,
    /// Unix seconds after which the tuple no longer counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl fmt::Display for TupleText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}@{}", self.object, self.relation, self.subject)
    }
}

impl TupleText {
    /// Parses `object_type:object_id#relation@subject` (no expiry).
    pub fn parse(text: &str) -> Result<TupleText, TupleError> {
        let malformed = || TupleError::Malformed {
            what: "tuple",
            text: echo(text),
            expected: "type:id#relation@subject",
        };
        let (object_rel, subject) = text.split_once('@').ok_or_else(malformed)?;
        let (object, relation) = object_rel.split_once('#').ok_or_else(malformed)?;
        Ok(TupleText {
            object: object.to_owned(),
            relation: relation.to_owned(),
            subject: subject.to_owned(),
            expires_at: None,
        })
    }

    /// Validates the tuple against the schema and the limits and resolves its names.
    pub fn resolve(&self, schema: &Schema, limits: &Limits) -> Result<Relationship, TupleError> {
        let object = parse_object(&self.object, limits)?;
        let subject = parse_subject(&self.subject, limits)?;
        check_name("relation", &self.relation)?;
        let oty = schema
            .type_id(object.ty)
            .ok_or_else(|| TupleError::UnknownType(object.ty.to_owned()))?;
        let rel =
            schema
                .rel_id(oty, &self.relation)
                .ok_or_else(|| TupleError::UnknownRelation {
                    ty: object.ty.to_owned(),
                    name: self.relation.clone(),
                })?;
        let Some(super::schema::Body::Relation(allowed)) = schema.body(rel) else {
            return Err(TupleError::NotARelation {
                ty: object.ty.to_owned(),
                name: self.relation.clone(),
            });
        };
        let sty = schema
            .type_id(subject.ty)
            .ok_or_else(|| TupleError::UnknownType(subject.ty.to_owned()))?;
        let (scode, sid) = match (subject.id, subject.rel) {
            ("*", _) => (1, ""),
            (id, None) => (0, id),
            (id, Some(name)) => {
                let srel = schema
                    .rel_id(sty, name)
                    .ok_or_else(|| TupleError::UnknownRelation {
                        ty: subject.ty.to_owned(),
                        name: name.to_owned(),
                    })?;
                (srel + 2, id)
            }
        };
        let ok = allowed.iter().any(|a| match *a {
            Allowed::Type(t) => scode == 0 && t == sty,
            Allowed::Wildcard(t) => scode == 1 && t == sty,
            Allowed::Userset(t, r) => scode == r + 2 && t == sty,
        });
        if !ok {
            return Err(TupleError::SubjectNotAllowed {
                relation: format!("{}#{}", object.ty, self.relation),
                subject: echo(&self.subject),
            });
        }
        let expires_s = match self.expires_at {
            None => 0,
            Some(at) => match u32::try_from(at) {
                Ok(at) if at > 0 => at,
                _ => return Err(TupleError::BadExpiry(at)),
            },
        };
        Ok(Relationship {
            rel,
            obj: object.id.into(),
            stype: sty,
            scode,
            sid: sid.into(),
            expires_s,
        })
    }
}

/// A tuple resolved against one schema: what [`super::Snapshot::apply`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    /// Relation id (names the object type too).
    pub(super) rel: u16,
    pub(super) obj: Box<str>,
    pub(super) stype: u16,
    /// 0 plain subject, 1 wildcard, `rel + 2` userset.
    pub(super) scode: u16,
    /// Empty for a wildcard.
    pub(super) sid: Box<str>,
    /// 0: never expires.
    pub(super) expires_s: u32,
}

impl Relationship {
    /// Back to text, names from the schema it was resolved with.
    pub fn to_text(&self, schema: &Schema) -> TupleText {
        TupleText {
            object: format!(
                "{}:{}",
                schema.type_name(schema.rel_owner(self.rel)),
                self.obj
            ),
            relation: schema.rel_name(self.rel).to_owned(),
            subject: subject_text(schema, self.stype, self.scode, &self.sid),
            expires_at: (self.expires_s != 0).then_some(u64::from(self.expires_s)),
        }
    }
}

/// Renders a stored subject: `user:alice`, `user:*`, `group:eng#member`.
pub(super) fn subject_text(schema: &Schema, stype: u16, scode: u16, sid: &str) -> String {
    let ty = schema.type_name(stype);
    match scode {
        0 => format!("{ty}:{sid}"),
        1 => format!("{ty}:*"),
        code => format!("{ty}:{sid}#{}", schema.rel_name(code - 2)),
    }
}

/// One change in a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert, or update the expiry of an existing tuple (SpiceDB's TOUCH).
    Touch(Relationship),
    /// Remove the tuple if present (its expiry is ignored).
    Delete(Relationship),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBody {
    tuples: Option<Vec<TupleText>>,
    object: Option<String>,
    relation: Option<String>,
    subject: Option<String>,
    expires_at: Option<u64>,
}

/// Parses a relationships body: `{"tuples":[...]}` or one bare tuple object.
pub fn parse_tuples_body(body: &[u8], limits: &Limits) -> Result<Vec<TupleText>, TupleError> {
    let raw: RawBody = serde_json::from_slice(body).map_err(|e| TupleError::Body(e.to_string()))?;
    let tuples =
        match raw {
            RawBody {
                tuples: Some(tuples),
                object: None,
                relation: None,
                subject: None,
                expires_at: None,
            } => tuples,
            RawBody {
                tuples: None,
                object: Some(object),
                relation: Some(relation),
                subject: Some(subject),
                expires_at,
            } => vec![TupleText {
                object,
                relation,
                subject,
                expires_at,
            }],
            _ => return Err(TupleError::Body(
                "expected {\"tuples\":[...]} or one tuple {\"object\",\"relation\",\"subject\"}"
                    .into(),
            )),
        };
    if tuples.len() > limits.max_tuples_per_write {
        return Err(TupleError::TooMany {
            n: tuples.len(),
            max: limits.max_tuples_per_write,
        });
    }
    Ok(tuples)
}

/// A permission check body: `{"subject","permission","object"}` (`relation` is accepted for
/// `permission`), optional `at_least_revision`. Borrows from the body when it can.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest<'a> {
    /// `type:id` or `type:id#relation`.
    #[serde(borrow)]
    pub subject: Cow<'a, str>,
    /// A relation or permission of the object's type.
    #[serde(borrow, alias = "relation")]
    pub permission: Cow<'a, str>,
    /// `type:id`.
    #[serde(borrow)]
    pub object: Cow<'a, str>,
    /// Answer only from a snapshot at least this new (a revision a write returned).
    #[serde(default)]
    pub at_least_revision: Option<u64>,
}

/// Parses a permission check body.
pub fn parse_check_body(body: &[u8]) -> Result<CheckRequest<'_>, TupleError> {
    serde_json::from_slice(body).map_err(|e| TupleError::Body(e.to_string()))
}
