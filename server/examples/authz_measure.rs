//! Builds a relationship graph shaped like the bench's (nested groups three deep, folders with
//! parents) and prints bytes per tuple, the cost of a one-tuple write and the time per uncached
//! check. Figures, not assertions.
//!
//! Run: `cargo run --release -p subzero --example authz_measure`.

use subzero::authz::{check, Change, Limits, Schema, Snapshot, TupleText};

const NOW: u64 = 1_000_000;

const SCHEMA: &str = r"
// Users and nested groups.
definition user {}

definition group {
    relation member: user | group#member
}

/* Folders inherit viewers from their parent. */
definition folder {
    relation parent: folder
    relation viewer: user | user:* | group#member
    permission view = viewer + parent->view
}

definition doc {
    relation parent: folder
    relation owner: user
    relation editor: user | group#member
    relation viewer: user | user:* | group#member
    relation banned: user
    relation reviewer: user
    permission edit = editor + owner - banned
    permission view = viewer + edit + parent->view
    permission review = reviewer & editor
    permission nothing = nil
}
";

fn touch(schema: &Schema, tuple: &str) -> Change {
    let t = TupleText::parse(tuple).expect("tuple text");
    Change::Touch(
        t.resolve(schema, &Limits::default())
            .expect("tuple resolves"),
    )
}

fn main() {
    let s = Schema::parse("schema.zed", SCHEMA).expect("schema parses");

    let l = Limits::default();
    let n_users = 100_000;
    let n_groups = 10_000;
    let n_docs = 50_000;
    let mut changes = Vec::new();
    let mut t = |text: String| {
        let t = TupleText::parse(&text).expect("text");
        changes.push(Change::Touch(t.resolve(&s, &l).expect("resolves")));
    };
    for u in 0..n_users {
        t(format!("group:g{}#member@user:u{u}", u % n_groups));
        t(format!(
            "group:g{}#member@user:u{u}",
            (u * 7 + 1) % n_groups
        ));
    }
    for g in 0..n_groups {
        // g is in g/10, which is in g/100: three levels of nesting.
        if g >= 10 {
            t(format!("group:g{}#member@group:g{g}#member", g / 10));
        }
    }
    for d in 0..n_docs {
        t(format!("doc:d{d}#parent@folder:f{}", d % 1000));
        t(format!("doc:d{d}#viewer@user:u{}", d % n_users));
        t(format!("doc:d{d}#editor@group:g{}#member", d % 100));
    }
    for f in 0..1000 {
        t(format!("folder:f{f}#viewer@group:g{}#member", f % 10));
    }
    let start = std::time::Instant::now();
    let snap = Snapshot::empty(&s, 3, 0)
        .apply(&s, &changes, &l)
        .expect("apply");
    let load = start.elapsed();
    let bytes = snap.heap_bytes();
    println!(
        "{} tuples loaded in {load:?}: {bytes} heap bytes, {:.1} bytes/tuple",
        snap.len(),
        bytes as f64 / snap.len() as f64
    );
    let one = snap
        .apply(&s, &[touch(&s, "doc:d1#viewer@user:new")], &l)
        .expect("apply");
    let start = std::time::Instant::now();
    let n = 200;
    for i in 0..n {
        let _ = snap.apply(&s, &[touch(&s, &format!("doc:x{i}#viewer@user:new"))], &l);
    }
    println!("single-tuple apply: {:?}", start.elapsed() / n);
    drop(one);
    let queries: Vec<(String, String)> = (0..2000)
        .map(|i| {
            (
                format!("user:u{}", (i * 7919) % n_users),
                format!("doc:d{}", (i * 104_729) % n_docs),
            )
        })
        .collect();
    for (what, perm) in [("view (groups 3 deep + parent)", "view"), ("edit", "edit")] {
        let start = std::time::Instant::now();
        let mut n_allowed = 0;
        for (subject, object) in &queries {
            let d = check(&s, &snap, subject, perm, object, NOW, &l).expect("check");
            n_allowed += usize::from(d.allowed);
        }
        let per = start.elapsed() / queries.len() as u32;
        println!(
            "check {what}: {per:?} per check ({n_allowed}/{} allowed)",
            queries.len()
        );
    }
    // The nested-group case alone: a user three levels below the group the doc names.
    let deep_user = (0..n_users).find(|u| u % n_groups >= 100).expect("user");
    let object = format!("doc:d{}", (deep_user % n_groups) / 100);
    let subject = format!("user:u{deep_user}");
    let d = check(&s, &snap, &subject, "edit", &object, NOW, &l).expect("check");
    let start = std::time::Instant::now();
    for _ in 0..2000 {
        let _ = check(&s, &snap, &subject, "edit", &object, NOW, &l);
    }
    println!(
        "check nested depth 3 ({}): {:?} per check, path {:?}",
        d.allowed,
        start.elapsed() / 2000,
        d.decision_path
    );
}
