//! The compiled schema: types and relations interned to small integers, permission expressions
//! resolved to relation ids, every reference validated once at load.
//!
//! A relation id (`u16`) names one relation or permission of one type, so it also says the
//! object type. Subject codes in the store use `0` for a plain subject, `1` for a wildcard and
//! `rel + 2` for a userset, so relation ids stay below [`MAX_RELS`].

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

use super::parse::{self, DefAst, ExprAst, ItemBody, Name, Pos, SchemaError, SubjectKind};

/// Most relations and permissions a schema may define in all (ids and codes fit in `u16`).
pub const MAX_RELS: usize = 16_384;

/// Most definitions a schema may hold.
pub const MAX_TYPES: usize = 4096;

/// A subject type a relation allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Allowed {
    /// `user`: a plain subject of this type.
    Type(u16),
    /// `user:*`: every subject of this type.
    Wildcard(u16),
    /// `group#member`: the subjects of that relation (id) of an object of the type.
    Userset(u16, u16),
}

/// A resolved permission expression.
#[derive(Debug, Clone)]
pub(super) enum Expr {
    /// Never grants.
    Nil,
    /// Another relation or permission of the same object.
    Computed(u16),
    /// `tupleset->name`: for each subject object of the relation, `name` on that object.
    /// `targets` maps the subject type to its relation id for `name` (types lacking it are
    /// skipped).
    Arrow {
        tupleset: u16,
        targets: Vec<(u16, u16)>,
    },
    /// Any branch grants.
    Union(Vec<Expr>),
    /// Every branch grants.
    Intersect(Vec<Expr>),
    /// The first grants and the second does not.
    Exclude(Box<Expr>, Box<Expr>),
}

/// What a relation id stands for.
#[derive(Debug, Clone)]
pub(super) enum Body {
    /// Stored tuples with the allowed subject types.
    Relation(Vec<Allowed>),
    /// Computed from the expression.
    Permission(Expr),
}

#[derive(Debug)]
pub(super) struct RelInfo {
    pub name: Box<str>,
    pub owner: u16,
    pub body: Body,
}

#[derive(Debug)]
struct TypeInfo {
    name: Box<str>,
    rels: Vec<u16>,
}

/// A loaded schema. Build with [`Schema::parse`]; share behind an `Arc`.
#[derive(Debug)]
pub struct Schema {
    types: Vec<TypeInfo>,
    type_index: HashMap<Box<str>, u16>,
    rels: Vec<RelInfo>,
    fingerprint: u64,
}

impl Schema {
    /// Parses and validates schema text; `source_name` (usually the file name) prefixes errors:
    /// `schema.zed:3:18: expected a relation or permission name after '->', found '}'`.
    pub fn parse(source_name: &str, text: &str) -> Result<Schema, SchemaError> {
        let fail = |(pos, message): (Pos, String)| SchemaError {
            source_name: source_name.to_owned(),
            pos,
            message,
        };
        let defs = parse::parse(text).map_err(fail)?;
        compile(&defs, xxh3_64(text.as_bytes())).map_err(fail)
    }

    /// Identifies the schema text; a snapshot remembers the schema it was built for.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The type id of a definition name.
    pub fn type_id(&self, name: &str) -> Option<u16> {
        self.type_index.get(name).copied()
    }

    /// The name of a type id.
    pub fn type_name(&self, ty: u16) -> &str {
        self.types.get(usize::from(ty)).map_or("", |t| &t.name)
    }

    /// The relation id of a relation or permission of a type.
    pub fn rel_id(&self, ty: u16, name: &str) -> Option<u16> {
        let info = self.types.get(usize::from(ty))?;
        info.rels
            .iter()
            .copied()
            .find(|&r| self.rel_name(r) == name)
    }

    /// The name of a relation id.
    pub fn rel_name(&self, rel: u16) -> &str {
        self.rels.get(usize::from(rel)).map_or("", |r| &r.name)
    }

    /// The type a relation id belongs to.
    pub fn rel_owner(&self, rel: u16) -> u16 {
        self.rels.get(usize::from(rel)).map_or(0, |r| r.owner)
    }

    /// Whether the relation id is a stored relation (not a permission).
    pub fn is_relation(&self, rel: u16) -> bool {
        matches!(self.body(rel), Some(Body::Relation(_)))
    }

    pub(super) fn body(&self, rel: u16) -> Option<&Body> {
        self.rels.get(usize::from(rel)).map(|r| &r.body)
    }

    /// Number of relations and permissions over all types.
    pub fn n_rels(&self) -> usize {
        self.rels.len()
    }

    /// Names of every definition, in schema order.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(|t| &*t.name)
    }

    /// Relation ids of one type, in schema order.
    pub fn rels_of(&self, ty: u16) -> &[u16] {
        self.types.get(usize::from(ty)).map_or(&[], |t| &t.rels)
    }
}

type Compiled<T> = Result<T, (Pos, String)>;

fn compile(defs: &[DefAst], fingerprint: u64) -> Compiled<Schema> {
    let mut schema = Schema {
        types: Vec::new(),
        type_index: HashMap::new(),
        rels: Vec::new(),
        fingerprint,
    };
    // Pass 1: types, then every relation and permission name, so references may point forward.
    for def in defs {
        if schema.type_index.contains_key(def.name.text.as_str()) {
            return Err((
                def.name.pos,
                format!("definition '{}' is defined twice", def.name.text),
            ));
        }
        if schema.types.len() >= MAX_TYPES {
            return Err((def.name.pos, format!("more than {MAX_TYPES} definitions")));
        }
        let ty = schema.types.len() as u16;
        schema.type_index.insert(def.name.text.as_str().into(), ty);
        schema.types.push(TypeInfo {
            name: def.name.text.as_str().into(),
            rels: Vec::new(),
        });
    }
    for (ty, def) in defs.iter().enumerate() {
        let ty = ty as u16;
        for item in &def.items {
            let name = &item.name;
            if matches!(
                name.text.as_str(),
                "nil" | "definition" | "relation" | "permission"
            ) {
                return Err((name.pos, format!("'{}' is a reserved word", name.text)));
            }
            if schema.rel_id(ty, &name.text).is_some() {
                return Err((
                    name.pos,
                    format!(
                        "'{}' is defined twice in definition '{}'",
                        name.text, def.name.text
                    ),
                ));
            }
            if schema.rels.len() >= MAX_RELS {
                return Err((
                    name.pos,
                    format!("more than {MAX_RELS} relations and permissions"),
                ));
            }
            let rel = schema.rels.len() as u16;
            schema.rels.push(RelInfo {
                name: name.text.as_str().into(),
                owner: ty,
                body: Body::Permission(Expr::Nil),
            });
            schema.types[usize::from(ty)].rels.push(rel);
        }
    }
    // Pass 2: resolve subject types, then expressions (arrows need the subject types).
    for (ty, def) in defs.iter().enumerate() {
        for item in &def.items {
            if let ItemBody::Relation(subjects) = &item.body {
                let allowed = resolve_subjects(&schema, subjects)?;
                let rel = schema
                    .rel_id(ty as u16, &item.name.text)
                    .unwrap_or_default();
                schema.rels[usize::from(rel)].body = Body::Relation(allowed);
            }
        }
    }
    for (ty, def) in defs.iter().enumerate() {
        for item in &def.items {
            if let ItemBody::Permission(expr) = &item.body {
                let resolved = resolve_expr(&schema, ty as u16, &def.name.text, expr)?;
                let rel = schema
                    .rel_id(ty as u16, &item.name.text)
                    .unwrap_or_default();
                schema.rels[usize::from(rel)].body = Body::Permission(resolved);
            }
        }
    }
    Ok(schema)
}

fn known_type(schema: &Schema, name: &Name) -> Compiled<u16> {
    schema
        .type_id(&name.text)
        .ok_or_else(|| (name.pos, format!("unknown type '{}'", name.text)))
}

fn resolve_subjects(schema: &Schema, subjects: &[parse::SubjectAst]) -> Compiled<Vec<Allowed>> {
    let mut out: Vec<Allowed> = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let ty = known_type(schema, &subject.ty)?;
        let allowed = match &subject.kind {
            SubjectKind::Plain => Allowed::Type(ty),
            SubjectKind::Wildcard => Allowed::Wildcard(ty),
            SubjectKind::Userset(rel) => {
                let id = schema.rel_id(ty, &rel.text).ok_or_else(|| {
                    (
                        rel.pos,
                        format!(
                            "type '{}' has no relation or permission '{}'",
                            subject.ty.text, rel.text
                        ),
                    )
                })?;
                Allowed::Userset(ty, id)
            }
        };
        if out.contains(&allowed) {
            return Err((subject.ty.pos, "subject type listed twice".to_owned()));
        }
        out.push(allowed);
    }
    Ok(out)
}

fn resolve_expr(schema: &Schema, ty: u16, def: &str, expr: &ExprAst) -> Compiled<Expr> {
    let local = |name: &Name| {
        schema.rel_id(ty, &name.text).ok_or_else(|| {
            (
                name.pos,
                format!(
                    "unknown relation or permission '{}' in definition '{def}'",
                    name.text
                ),
            )
        })
    };
    Ok(match expr {
        ExprAst::Nil => Expr::Nil,
        ExprAst::Ident(name) => Expr::Computed(local(name)?),
        ExprAst::Arrow(left, right) => {
            let tupleset = local(left)?;
            let Some(Body::Relation(allowed)) = schema.body(tupleset) else {
                return Err((
                    left.pos,
                    format!(
                        "'{}' is a permission; the left side of '->' must be a relation",
                        left.text
                    ),
                ));
            };
            let mut targets = Vec::new();
            for a in allowed {
                let subject_ty = match *a {
                    Allowed::Type(t) | Allowed::Userset(t, _) => t,
                    Allowed::Wildcard(t) => {
                        return Err((
                            left.pos,
                            format!(
                                "relation '{}' allows the wildcard '{}:*' and cannot be used on the left of '->'",
                                left.text,
                                schema.type_name(t)
                            ),
                        ))
                    }
                };
                if let Some(target) = schema.rel_id(subject_ty, &right.text) {
                    if !targets.iter().any(|&(t, _)| t == subject_ty) {
                        targets.push((subject_ty, target));
                    }
                }
            }
            if targets.is_empty() {
                return Err((
                    right.pos,
                    format!(
                        "no subject type of relation '{}' has a relation or permission '{}'",
                        left.text, right.text
                    ),
                ));
            }
            Expr::Arrow { tupleset, targets }
        }
        ExprAst::Union(a, b) => flatten(
            resolve_expr(schema, ty, def, a)?,
            resolve_expr(schema, ty, def, b)?,
            true,
        ),
        ExprAst::Intersect(a, b) => flatten(
            resolve_expr(schema, ty, def, a)?,
            resolve_expr(schema, ty, def, b)?,
            false,
        ),
        ExprAst::Exclude(a, b) => Expr::Exclude(
            Box::new(resolve_expr(schema, ty, def, a)?),
            Box::new(resolve_expr(schema, ty, def, b)?),
        ),
    })
}

/// Joins two branches into one n-ary union (or intersection), merging nested ones.
fn flatten(a: Expr, b: Expr, union: bool) -> Expr {
    let mut parts = Vec::new();
    for e in [a, b] {
        match (e, union) {
            (Expr::Union(xs), true) | (Expr::Intersect(xs), false) => parts.extend(xs),
            (e, _) => parts.push(e),
        }
    }
    if union {
        Expr::Union(parts)
    } else {
        Expr::Intersect(parts)
    }
}
