//! The relationship store: an immutable snapshot of every tuple, indexed by (relation, object)
//! for checks, shared by all shards behind one `Arc` and replaced, never mutated, on write.
//!
//! Layout: a fixed two-level radix tree (256 × 256 `Arc`s) over a seeded xxh3 of
//! (relation, object id) with 65,536 leaves. A leaf packs its keys and subjects into three flat
//! vectors (keys sorted by hash, each key's subjects sorted by (code, type, id), ids in one
//! string), so a tuple costs a 16-byte subject record plus its id bytes plus its share of the
//! key record. [`Snapshot::apply`] copies the root (2 KiB), each touched middle node (2 KiB)
//! and rebuilds each touched leaf; everything else is shared with the previous snapshot.
//! A write to a key with a large fan-out rebuilds that key's whole leaf, so writes to a group
//! with 100k members cost milliseconds; batch them (group commit does).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::schema::Schema;
use super::tuple::{Change, Relationship};
use super::Limits;

const RADIX: usize = 256;

/// A write the store refused; the snapshot it was applied to is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The changes were resolved against another schema than the snapshot's.
    #[error("the relationships were resolved against another schema than the store's")]
    SchemaMismatch,
    /// One object+relation would hold more tuples than `limits.max_fanout`.
    #[error("{object}#{relation} would hold more than {max} tuples")]
    FanOut {
        /// `type:id` of the object.
        object: String,
        /// The relation.
        relation: String,
        /// The limit.
        max: usize,
    },
    /// The store would hold more than `limits.max_tuples` tuples.
    #[error("the store would hold {n} tuples, over the limit of {max}")]
    TooManyTuples {
        /// Tuples after the write.
        n: usize,
        /// The limit.
        max: usize,
    },
    /// An id longer than the store's record can hold (65,535 bytes).
    #[error("an id of {0} bytes is too long to store")]
    IdTooLong(usize),
    /// One leaf's text would pass 4 GiB.
    #[error("a store leaf is full")]
    LeafFull,
}

#[derive(Debug, Clone, Copy)]
struct KeyRec {
    hash: u64,
    obj_off: u32,
    subj_start: u32,
    n_subj: u32,
    obj_len: u16,
    rel: u16,
}

/// One stored subject of one (relation, object).
#[derive(Debug, Clone, Copy)]
pub(super) struct SubjRec {
    id_off: u32,
    /// 0: never expires.
    pub expires_s: u32,
    id_len: u16,
    /// 0 plain subject, 1 wildcard, `rel + 2` userset.
    pub code: u16,
    pub stype: u16,
}

impl SubjRec {
    /// Whether the tuple counts at `now_s` (it expires at its `expires_s` second).
    pub fn live(&self, now_s: u64) -> bool {
        self.expires_s == 0 || u64::from(self.expires_s) > now_s
    }
}

#[derive(Debug, Default)]
struct Leaf {
    keys: Vec<KeyRec>,
    subjects: Vec<SubjRec>,
    text: String,
}

impl Leaf {
    fn str_at(&self, off: u32, len: u16) -> &str {
        let start = off as usize;
        self.text
            .get(start..start + usize::from(len))
            .unwrap_or_default()
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Leaf>()
            + self.keys.capacity() * std::mem::size_of::<KeyRec>()
            + self.subjects.capacity() * std::mem::size_of::<SubjRec>()
            + self.text.capacity()
    }
}

/// The subjects of one (relation, object), sorted by (code, type, id).
#[derive(Debug, Clone, Copy)]
pub(super) struct Subjects<'a> {
    leaf: &'a Leaf,
    recs: &'a [SubjRec],
}

impl<'a> Subjects<'a> {
    pub fn all(&self) -> &'a [SubjRec] {
        self.recs
    }

    pub fn id(&self, rec: &SubjRec) -> &'a str {
        self.leaf.str_at(rec.id_off, rec.id_len)
    }

    /// The record of exactly this subject, if stored (live or not).
    pub fn find(&self, code: u16, stype: u16, id: &str) -> Option<&'a SubjRec> {
        let recs = self.recs;
        recs.binary_search_by(|r| (r.code, r.stype, self.id(r)).cmp(&(code, stype, id)))
            .ok()
            .and_then(|i| recs.get(i))
    }

    /// The userset subjects (`group:eng#member`), which need expanding.
    pub fn usersets(&self) -> &'a [SubjRec] {
        let first = self.recs.partition_point(|r| r.code < 2);
        self.recs.get(first..).unwrap_or_default()
    }
}

type Mid = [Arc<Leaf>];

/// An immutable set of relationships at one revision. Cheap to clone (one `Arc`); hold one per
/// process as `Arc<Snapshot>`, read it from every shard without locks, and replace it with the
/// result of [`Snapshot::apply`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    revision: u64,
    seed: u64,
    schema_fp: u64,
    n_tuples: usize,
    root: Arc<[Arc<Mid>]>,
}

/// Editable form of one leaf while a write is applied: (hash, rel, object) → sorted subjects.
type EditLeaf = BTreeMap<(u64, u16, Box<str>), Vec<((u16, u16, Box<str>), u32)>>;

impl Snapshot {
    /// An empty store for `schema` at `revision` (0 for a new store, or the durable revision
    /// when reloading). `seed` keys the index hash (pick it at random per process).
    pub fn empty(schema: &Schema, seed: u64, revision: u64) -> Snapshot {
        let leaf = Arc::new(Leaf::default());
        let mid: Arc<Mid> = (0..RADIX).map(|_| Arc::clone(&leaf)).collect();
        Snapshot {
            revision,
            seed,
            schema_fp: schema.fingerprint(),
            n_tuples: 0,
            root: (0..RADIX).map(|_| Arc::clone(&mid)).collect(),
        }
    }

    /// The revision: each [`Snapshot::apply`] returns the next one.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Number of tuples held (expired ones included until deleted).
    pub fn len(&self) -> usize {
        self.n_tuples
    }

    /// Whether no tuple is held.
    pub fn is_empty(&self) -> bool {
        self.n_tuples == 0
    }

    /// The fingerprint of the schema this snapshot was built for.
    pub fn schema_fingerprint(&self) -> u64 {
        self.schema_fp
    }

    fn hash(&self, rel: u16, obj: &str) -> u64 {
        let rel_seed = (u64::from(rel) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        xxh3_64_with_seed(obj.as_bytes(), self.seed ^ rel_seed)
    }

    fn leaf(&self, hash: u64) -> &Leaf {
        let (top, mid) = radix(hash);
        &self.root[top][mid]
    }

    /// The subjects stored for (relation, object); empty when none.
    pub(super) fn subjects(&self, rel: u16, obj: &str) -> Subjects<'_> {
        let hash = self.hash(rel, obj);
        let leaf = self.leaf(hash);
        let first = leaf.keys.partition_point(|k| k.hash < hash);
        let found = leaf
            .keys
            .iter()
            .skip(first)
            .take_while(|k| k.hash == hash)
            .find(|k| k.rel == rel && leaf.str_at(k.obj_off, k.obj_len) == obj);
        let recs = found.and_then(|k| {
            let start = k.subj_start as usize;
            leaf.subjects.get(start..start + k.n_subj as usize)
        });
        Subjects {
            leaf,
            recs: recs.unwrap_or_default(),
        }
    }

    /// Applies a write atomically and returns the snapshot at the next revision; `self` is
    /// untouched whether it succeeds or not.
    pub fn apply(
        &self,
        schema: &Schema,
        changes: &[Change],
        limits: &Limits,
    ) -> Result<Snapshot, StoreError> {
        if schema.fingerprint() != self.schema_fp {
            return Err(StoreError::SchemaMismatch);
        }
        let mut by_leaf: BTreeMap<(usize, usize), Vec<(u64, &Change)>> = BTreeMap::new();
        for change in changes {
            let (Change::Touch(r) | Change::Delete(r)) = change;
            for id in [&r.obj, &r.sid] {
                if u16::try_from(id.len()).is_err() {
                    return Err(StoreError::IdTooLong(id.len()));
                }
            }
            let hash = self.hash(r.rel, &r.obj);
            by_leaf.entry(radix(hash)).or_default().push((hash, change));
        }
        let mut root: Vec<Arc<Mid>> = self.root.to_vec();
        let mut n_tuples = self.n_tuples;
        let mut mid: Option<(usize, Vec<Arc<Leaf>>)> = None;
        for ((top, m), leaf_changes) in by_leaf {
            if mid.as_ref().is_some_and(|(t, _)| *t != top) {
                if let Some((t, leaves)) = mid.take() {
                    root[t] = Arc::from(leaves);
                }
            }
            let (_, leaves) = mid.get_or_insert_with(|| (top, root[top].to_vec()));
            let mut edit = decode(&leaves[m]);
            for (hash, change) in leaf_changes {
                edit_one(&mut edit, hash, change, &mut n_tuples, schema, limits)?;
            }
            leaves[m] = Arc::new(encode(&edit)?);
        }
        if let Some((t, leaves)) = mid {
            root[t] = Arc::from(leaves);
        }
        if n_tuples > limits.max_tuples && n_tuples > self.n_tuples {
            return Err(StoreError::TooManyTuples {
                n: n_tuples,
                max: limits.max_tuples,
            });
        }
        Ok(Snapshot {
            revision: self.revision + 1,
            seed: self.seed,
            schema_fp: self.schema_fp,
            n_tuples,
            root: Arc::from(root),
        })
    }

    /// The same relationships, labelled with `revision`: the store's durable revision, which
    /// survives restarts (so a client's `at_least_revision` stays meaningful) and also counts
    /// other kinds of writes. Revisions only grow.
    #[must_use]
    pub fn at_revision(mut self, revision: u64) -> Snapshot {
        self.revision = revision;
        self
    }

    /// Every tuple, in index order (not sorted by name).
    pub fn relationships(&self) -> impl Iterator<Item = Relationship> + '_ {
        self.root
            .iter()
            .flat_map(|mid| mid.iter())
            .flat_map(|leaf| leaf_relationships(leaf))
    }

    /// The tuples of one object (every relation of its type), for listing.
    pub fn relationships_of(&self, schema: &Schema, ty: u16, obj: &str) -> Vec<Relationship> {
        let mut out = Vec::new();
        for &rel in schema.rels_of(ty) {
            let subjects = self.subjects(rel, obj);
            for rec in subjects.all() {
                out.push(Relationship {
                    rel,
                    obj: obj.into(),
                    stype: rec.stype,
                    scode: rec.code,
                    sid: subjects.id(rec).into(),
                    expires_s: rec.expires_s,
                });
            }
        }
        out
    }

    /// Deletes for up to `max` tuples expired at `now_s`, for the control plane to apply in
    /// the background (expired tuples never count in checks either way).
    pub fn expired(&self, now_s: u64, max: usize) -> Vec<Change> {
        self.relationships()
            .filter(|r| r.expires_s != 0 && u64::from(r.expires_s) <= now_s)
            .take(max)
            .map(Change::Delete)
            .collect()
    }

    /// Heap bytes held by this snapshot's index (shared parts counted once).
    pub fn heap_bytes(&self) -> usize {
        let mut seen = HashSet::new();
        let mut bytes = RADIX * std::mem::size_of::<Arc<Mid>>();
        for mid in self.root.iter() {
            if seen.insert(Arc::as_ptr(mid).cast::<u8>()) {
                bytes += RADIX * std::mem::size_of::<Arc<Leaf>>();
                for leaf in mid.iter() {
                    if seen.insert(Arc::as_ptr(leaf).cast::<u8>()) {
                        bytes += leaf.heap_bytes();
                    }
                }
            }
        }
        bytes
    }
}

fn radix(hash: u64) -> (usize, usize) {
    ((hash >> 56) as usize, ((hash >> 48) & 0xff) as usize)
}

fn leaf_relationships(leaf: &Leaf) -> impl Iterator<Item = Relationship> + '_ {
    leaf.keys.iter().flat_map(move |k| {
        let start = k.subj_start as usize;
        let recs = leaf
            .subjects
            .get(start..start + k.n_subj as usize)
            .unwrap_or_default();
        recs.iter().map(move |rec| Relationship {
            rel: k.rel,
            obj: leaf.str_at(k.obj_off, k.obj_len).into(),
            stype: rec.stype,
            scode: rec.code,
            sid: leaf.str_at(rec.id_off, rec.id_len).into(),
            expires_s: rec.expires_s,
        })
    })
}

fn decode(leaf: &Leaf) -> EditLeaf {
    let mut edit = EditLeaf::new();
    for k in &leaf.keys {
        let start = k.subj_start as usize;
        let recs = leaf
            .subjects
            .get(start..start + k.n_subj as usize)
            .unwrap_or_default();
        let subjects = recs
            .iter()
            .map(|r| {
                (
                    (r.code, r.stype, leaf.str_at(r.id_off, r.id_len).into()),
                    r.expires_s,
                )
            })
            .collect();
        edit.insert(
            (k.hash, k.rel, leaf.str_at(k.obj_off, k.obj_len).into()),
            subjects,
        );
    }
    edit
}

fn edit_one(
    edit: &mut EditLeaf,
    hash: u64,
    change: &Change,
    n_tuples: &mut usize,
    schema: &Schema,
    limits: &Limits,
) -> Result<(), StoreError> {
    let (Change::Touch(r) | Change::Delete(r)) = change;
    let key = (hash, r.rel, r.obj.clone());
    let subject = (r.scode, r.stype, r.sid.clone());
    match change {
        Change::Touch(_) => {
            let subjects = edit.entry(key).or_default();
            match subjects.binary_search_by(|(s, _)| s.cmp(&subject)) {
                Ok(i) => subjects[i].1 = r.expires_s,
                Err(i) => {
                    if subjects.len() >= limits.max_fanout {
                        return Err(StoreError::FanOut {
                            object: format!(
                                "{}:{}",
                                schema.type_name(schema.rel_owner(r.rel)),
                                r.obj
                            ),
                            relation: schema.rel_name(r.rel).to_owned(),
                            max: limits.max_fanout,
                        });
                    }
                    subjects.insert(i, (subject, r.expires_s));
                    *n_tuples += 1;
                }
            }
        }
        Change::Delete(_) => {
            if let Some(subjects) = edit.get_mut(&key) {
                if let Ok(i) = subjects.binary_search_by(|(s, _)| s.cmp(&subject)) {
                    subjects.remove(i);
                    *n_tuples -= 1;
                    if subjects.is_empty() {
                        edit.remove(&key);
                    }
                }
            }
        }
    }
    Ok(())
}

fn encode(edit: &EditLeaf) -> Result<Leaf, StoreError> {
    let n_subjects = edit.values().map(Vec::len).sum();
    let n_text = edit
        .iter()
        .map(|((_, _, obj), subjects)| {
            obj.len()
                + subjects
                    .iter()
                    .map(|((_, _, id), _)| id.len())
                    .sum::<usize>()
        })
        .sum();
    let mut leaf = Leaf {
        keys: Vec::with_capacity(edit.len()),
        subjects: Vec::with_capacity(n_subjects),
        text: String::with_capacity(n_text),
    };
    let offset = |text: &String| u32::try_from(text.len()).map_err(|_| StoreError::LeafFull);
    for ((hash, rel, obj), subjects) in edit {
        let obj_off = offset(&leaf.text)?;
        leaf.text.push_str(obj);
        leaf.keys.push(KeyRec {
            hash: *hash,
            obj_off,
            subj_start: u32::try_from(leaf.subjects.len()).map_err(|_| StoreError::LeafFull)?,
            n_subj: subjects.len() as u32,
            obj_len: obj.len() as u16,
            rel: *rel,
        });
        for ((code, stype, id), expires_s) in subjects {
            let id_off = offset(&leaf.text)?;
            leaf.text.push_str(id);
            leaf.subjects.push(SubjRec {
                id_off,
                expires_s: *expires_s,
                id_len: id.len() as u16,
                code: *code,
                stype: *stype,
            });
        }
    }
    offset(&leaf.text)?;
    Ok(leaf)
}
