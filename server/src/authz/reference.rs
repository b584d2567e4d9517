//! A naive reference evaluator and a generator of small random worlds (schemas and tuple
//! graphs with cycles, wildcards, usersets, expiries and deletes), to check the evaluator
//! against: the property test (`proptests.rs`) draws worlds from a seed, the `fuzz/` authz
//! target from the fuzzer's bytes. Not an API.
//!
//! The reference is written independently of the engine: it works on the generator's own
//! description of the schema (names, not ids) and on a plain map of tuples, and follows the
//! semantics stated in `eval.rs` literally — recursion with the current path as the visited
//! set, depth bounded, three-valued logic where `None` is "depth exceeded".

use std::collections::BTreeMap;

use super::{check, Change, CheckError, Limits, Schema, Snapshot, TupleText};

const NOW: u64 = 5_000;
const DEPTH: u32 = 6;
const TYPES: [&str; 2] = ["ta", "tb"];
const IDS: [&str; 3] = ["a", "b", "c"];
const USERS: [&str; 3] = ["u1", "u2", "u3"];
/// Every non-user type has the same items, so arrows and usersets always resolve.
const RELS: [&str; 2] = ["r0", "r1"];
const PERMS: [&str; 2] = ["p0", "p1"];

/// A small deterministic generator: the given bytes first (one per draw, so a fuzzer's edit
/// changes one choice), then splitmix64 from the seed, so one proptest seed makes one world.
struct Rng<'b> {
    state: u64,
    bytes: &'b [u8],
}

impl Rng<'_> {
    fn next(&mut self) -> u64 {
        if let Some((&first, rest)) = self.bytes.split_first() {
            self.bytes = rest;
            return u64::from(first);
        }
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn pick_copy<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Subj {
    User,
    Wild,
    Obj(usize),
    Userset(usize, &'static str),
}

#[derive(Debug, Clone)]
enum GExpr {
    Nil,
    Name(&'static str),
    Arrow(&'static str),
    Union(Box<GExpr>, Box<GExpr>),
    Inter(Box<GExpr>, Box<GExpr>),
    Excl(Box<GExpr>, Box<GExpr>),
}

struct World {
    /// `[type][relation]` allowed subjects.
    allowed: Vec<Vec<Vec<Subj>>>,
    /// `[type][permission]`.
    perms: Vec<Vec<GExpr>>,
    /// (object type, object id, relation, subject) → expiry.
    tuples: BTreeMap<(usize, &'static str, &'static str, String), Option<u64>>,
}

fn gen_expr(rng: &mut Rng<'_>, depth: u32) -> GExpr {
    let leaf = depth == 0 || rng.below(3) == 0;
    if leaf {
        return match rng.below(6) {
            0 => GExpr::Nil,
            1..=3 => GExpr::Name(rng.pick_copy(&["r0", "r1", "p0", "p1"])),
            _ => GExpr::Arrow(rng.pick_copy(&["r0", "r1", "p0", "p1"])),
        };
    }
    let a = Box::new(gen_expr(rng, depth - 1));
    let b = Box::new(gen_expr(rng, depth - 1));
    match rng.below(3) {
        0 => GExpr::Union(a, b),
        1 => GExpr::Inter(a, b),
        _ => GExpr::Excl(a, b),
    }
}

fn render_expr(e: &GExpr) -> String {
    match e {
        GExpr::Nil => "nil".into(),
        GExpr::Name(n) => (*n).into(),
        GExpr::Arrow(target) => format!("r0->{target}"),
        GExpr::Union(a, b) => format!("({} + {})", render_expr(a), render_expr(b)),
        GExpr::Inter(a, b) => format!("({} & {})", render_expr(a), render_expr(b)),
        GExpr::Excl(a, b) => format!("({} - {})", render_expr(a), render_expr(b)),
    }
}

fn subject_text(s: &Subj, rng: &mut Rng<'_>) -> String {
    match s {
        Subj::User => format!("user:{}", rng.pick(&USERS)),
        Subj::Wild => "user:*".into(),
        Subj::Obj(t) => format!("{}:{}", TYPES[*t], rng.pick(&IDS)),
        Subj::Userset(t, r) => format!("{}:{}#{r}", TYPES[*t], rng.pick(&IDS)),
    }
}

fn gen_world(rng: &mut Rng<'_>) -> World {
    let mut allowed = Vec::new();
    let mut perms = Vec::new();
    for _ in TYPES {
        // r0 is the arrows' tupleset: no wildcard, always both object types.
        let mut r0 = vec![Subj::Obj(0), Subj::Obj(1)];
        let mut r1 = vec![Subj::User];
        for (list, wild_ok) in [(&mut r0, false), (&mut r1, true)] {
            let extra = [
                Subj::User,
                Subj::Wild,
                Subj::Obj(0),
                Subj::Obj(1),
                Subj::Userset(0, "r0"),
                Subj::Userset(1, "r1"),
                Subj::Userset(0, "p0"),
                Subj::Userset(1, "p1"),
            ];
            for s in extra {
                if rng.below(2) == 0 && !list.contains(&s) && (wild_ok || s != Subj::Wild) {
                    list.push(s);
                }
            }
        }
        allowed.push(vec![r0, r1]);
        perms.push(vec![gen_expr(rng, 3), gen_expr(rng, 3)]);
    }
    World {
        allowed,
        perms,
        tuples: BTreeMap::new(),
    }
}

fn schema_text(w: &World) -> String {
    let mut lines = vec!["definition user {}".to_owned()];
    for (t, name) in TYPES.iter().enumerate() {
        lines.push(format!("definition {name} {{"));
        for (r, rel) in RELS.iter().enumerate() {
            let subjects: Vec<String> = w.allowed[t][r]
                .iter()
                .map(|s| match s {
                    Subj::User => "user".into(),
                    Subj::Wild => "user:*".into(),
                    Subj::Obj(o) => TYPES[*o].into(),
                    Subj::Userset(o, rel) => format!("{}#{rel}", TYPES[*o]),
                })
                .collect();
            lines.push(format!("  relation {rel}: {}", subjects.join(" | ")));
        }
        for (p, perm) in PERMS.iter().enumerate() {
            lines.push(format!(
                "  permission {perm} = {}",
                render_expr(&w.perms[t][p])
            ));
        }
        lines.push("}".to_owned());
    }
    lines.join("\n")
}

/// Splits `type:id` / `type:id#rel` / `type:*`.
fn split(subject: &str) -> (&str, &str, Option<&str>) {
    let (ty, rest) = subject.split_once(':').unwrap_or((subject, ""));
    match rest.split_once('#') {
        Some((id, rel)) => (ty, id, Some(rel)),
        None => (ty, rest, None),
    }
}

/// The generator's own copy of a relation or permission name.
fn static_name(name: &str) -> &'static str {
    RELS.iter()
        .chain(PERMS.iter())
        .find(|n| **n == name)
        .copied()
        .unwrap_or("missing")
}

fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (None, _) | (_, None) => None,
        _ => Some(false),
    }
}

fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (None, _) | (_, None) => None,
        _ => Some(true),
    }
}

struct Reference<'w> {
    w: &'w World,
    subject: (&'w str, &'w str, Option<&'w str>),
    path: Vec<(usize, &'w str, &'static str)>,
}

impl<'w> Reference<'w> {
    /// The live tuples of (type, id, relation), as subject strings.
    fn live(&self, t: usize, id: &str, rel: &str) -> Vec<&'w String> {
        self.w
            .tuples
            .iter()
            .filter(|((tt, oid, r, _), exp)| {
                *tt == t && *oid == id && *r == rel && exp.is_none_or(|e| e > NOW)
            })
            .map(|((_, _, _, s), _)| s)
            .collect()
    }

    fn node(&mut self, t: usize, id: &'w str, name: &'static str) -> Option<bool> {
        let (sty, sid, srel) = self.subject;
        if srel == Some(name) && sty == TYPES[t] && sid == id {
            return Some(true);
        }
        if self.path.contains(&(t, id, name)) {
            return Some(false);
        }
        if self.path.len() >= DEPTH as usize {
            return None;
        }
        self.path.push((t, id, name));
        let w = self.w;
        let answer = match PERMS.iter().position(|p| *p == name) {
            Some(p) => self.expr(t, id, &w.perms[t][p]),
            None => self.relation(t, id, name),
        };
        self.path.pop();
        answer
    }

    fn relation(&mut self, t: usize, id: &'w str, rel: &'static str) -> Option<bool> {
        let mut answer = Some(false);
        for s in self.live(t, id, rel) {
            let (ty, sid, srel) = split(s);
            let hit = if (ty, sid, srel) == self.subject {
                Some(true)
            } else if sid == "*" {
                Some(self.subject.0 == ty && self.subject.2.is_none())
            } else if let Some(srel) = srel {
                let Some(st) = TYPES.iter().position(|x| *x == ty) else {
                    continue;
                };
                self.node(st, sid, static_name(srel))
            } else {
                Some(false)
            };
            answer = or(answer, hit);
        }
        answer
    }

    fn expr(&mut self, t: usize, id: &'w str, e: &GExpr) -> Option<bool> {
        match e {
            GExpr::Nil => Some(false),
            GExpr::Name(n) => self.node(t, id, n),
            GExpr::Arrow(target) => {
                let mut answer = Some(false);
                for s in self.live(t, id, "r0") {
                    let (ty, sid, _) = split(s);
                    if let Some(st) = TYPES.iter().position(|x| *x == ty) {
                        answer = or(answer, self.node(st, sid, target));
                    }
                }
                answer
            }
            GExpr::Union(a, b) => {
                let a = self.expr(t, id, a);
                or(a, self.expr(t, id, b))
            }
            GExpr::Inter(a, b) => {
                let a = self.expr(t, id, a);
                and(a, self.expr(t, id, b))
            }
            GExpr::Excl(a, b) => {
                let a = self.expr(t, id, a);
                let b = self.expr(t, id, b);
                and(a, b.map(|b| !b))
            }
        }
    }
}

/// Writes three random batches (touches with random expiries, deletes of earlier writes) to
/// both the store and the reference's tuple map.
fn write_tuples(
    world: &mut World,
    schema: &Schema,
    rng: &mut Rng<'_>,
    seed: u64,
) -> Result<Snapshot, String> {
    let limits = Limits::default();
    let mut snap = Snapshot::empty(schema, seed, 0);
    let mut written: Vec<TupleText> = Vec::new();
    for _batch in 0..3 {
        let mut changes = Vec::new();
        for _ in 0..rng.below(24) {
            if !written.is_empty() && rng.below(4) == 0 {
                let victim = written.swap_remove(rng.below(written.len()));
                let (t, oid) = victim.object.split_once(':').unwrap_or_default();
                let t = TYPES.iter().position(|x| *x == t).unwrap_or_default();
                let oid = *IDS.iter().find(|i| **i == oid).unwrap_or(&"a");
                let rel = *RELS
                    .iter()
                    .find(|r| **r == victim.relation)
                    .unwrap_or(&"r0");
                world.tuples.remove(&(t, oid, rel, victim.subject.clone()));
                changes.push(Change::Delete(
                    victim.resolve(schema, &limits).map_err(|e| e.to_string())?,
                ));
                continue;
            }
            let t = rng.below(TYPES.len());
            let r = rng.below(RELS.len());
            let oid = *rng.pick(&IDS);
            let kind = rng.pick(&world.allowed[t][r]).clone();
            let subject = subject_text(&kind, rng);
            let expires_at = match rng.below(5) {
                0 => Some(NOW),
                1 => Some(NOW + 1),
                2 => Some(NOW - 1),
                _ => None,
            };
            let tuple = TupleText {
                object: format!("{}:{oid}", TYPES[t]),
                relation: RELS[r].into(),
                subject: subject.clone(),
                expires_at,
            };
            world.tuples.insert((t, oid, RELS[r], subject), expires_at);
            changes.push(Change::Touch(
                tuple.resolve(schema, &limits).map_err(|e| e.to_string())?,
            ));
            written.push(tuple);
        }
        snap = snap
            .apply(schema, &changes, &limits)
            .map_err(|e| e.to_string())?;
    }
    Ok(snap)
}

/// Runs every check of one random world (drawn from `bytes`, then `seed`) against the
/// reference; returns how many checks were allowed, denied and stopped by the depth limit, or
/// the first disagreement.
pub fn run_world(seed: u64, bytes: &[u8]) -> Result<[usize; 3], String> {
    let mut rng = Rng { state: seed, bytes };
    let mut world = gen_world(&mut rng);
    let text = schema_text(&world);
    let schema = Schema::parse("gen.zed", &text).map_err(|e| format!("{e}\n{text}"))?;
    let limits = Limits {
        max_depth: DEPTH,
        max_work: 2_000_000,
        ..Limits::default()
    };
    let snap = write_tuples(&mut world, &schema, &mut rng, seed)?;
    if snap.len() != world.tuples.len() {
        return Err(format!(
            "snapshot holds {} tuples, the reference {}",
            snap.len(),
            world.tuples.len()
        ));
    }

    let mut outcomes = [0; 3];
    let mut subjects: Vec<String> = USERS.iter().map(|u| format!("user:{u}")).collect();
    for t in TYPES {
        for id in IDS {
            subjects.push(format!("{t}:{id}#r0"));
            subjects.push(format!("{t}:{id}#p1"));
        }
    }
    for subject in &subjects {
        for (t, ty) in TYPES.iter().enumerate() {
            for id in IDS {
                for name in RELS.iter().chain(PERMS.iter()) {
                    let object = format!("{ty}:{id}");
                    let fast = check(&schema, &snap, subject, name, &object, NOW, &limits);
                    if matches!(fast, Err(CheckError::WorkExceeded(_))) {
                        continue;
                    }
                    let mut reference = Reference {
                        w: &world,
                        subject: split(subject),
                        path: Vec::new(),
                    };
                    let want = reference.node(t, id, name);
                    let got = match &fast {
                        Ok(d) => Some(d.allowed),
                        Err(CheckError::DepthExceeded(_)) => None,
                        Err(e) => return Err(e.to_string()),
                    };
                    if got != want {
                        return Err(format!(
                            "{subject} {name} {object} at {NOW}: got {got:?}, want {want:?} \
                             in\n{text}\ntuples {:?}",
                            world.tuples
                        ));
                    }
                    if let Ok(d) = fast {
                        if d.allowed == d.decision_path.is_empty() {
                            return Err(format!(
                                "{subject} {name} {object}: allowed {} with a path of {} steps",
                                d.allowed,
                                d.decision_path.len()
                            ));
                        }
                    }
                    outcomes[match want {
                        Some(true) => 0,
                        Some(false) => 1,
                        None => 2,
                    }] += 1;
                }
            }
        }
    }
    Ok(outcomes)
}
