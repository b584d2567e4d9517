//! Unit tests of the permission engine: schema parsing and validation, tuples and bodies, the
//! store's writes and limits, each evaluation rule, and the decision cache.

use super::*;

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

const NOW: u64 = 1_000_000;

fn schema() -> Schema {
    Schema::parse("schema.zed", SCHEMA).expect("test schema parses")
}

fn touch(schema: &Schema, tuple: &str) -> Change {
    let t = TupleText::parse(tuple).expect("tuple text");
    Change::Touch(
        t.resolve(schema, &Limits::default())
            .expect("tuple resolves"),
    )
}

fn delete(schema: &Schema, tuple: &str) -> Change {
    let t = TupleText::parse(tuple).expect("tuple text");
    Change::Delete(
        t.resolve(schema, &Limits::default())
            .expect("tuple resolves"),
    )
}

fn store(schema: &Schema, tuples: &[&str]) -> Snapshot {
    let changes: Vec<Change> = tuples.iter().map(|t| touch(schema, t)).collect();
    Snapshot::empty(schema, 7, 0)
        .apply(schema, &changes, &Limits::default())
        .expect("apply")
}

fn decide(schema: &Schema, snap: &Snapshot, subject: &str, perm: &str, object: &str) -> Decision {
    check(schema, snap, subject, perm, object, NOW, &Limits::default()).expect("check")
}

fn allowed(schema: &Schema, snap: &Snapshot, subject: &str, perm: &str, object: &str) -> bool {
    decide(schema, snap, subject, perm, object).allowed
}

#[test]
fn direct_tuple_grants_with_its_path() {
    let s = schema();
    let snap = store(&s, &["doc:1#viewer@user:alice"]);
    let d = decide(&s, &snap, "user:alice", "view", "doc:1");
    assert!(d.allowed);
    assert_eq!(d.decision_path, ["doc:1#view", "doc:1#viewer@user:alice"]);
    assert_eq!(d.revision, 1);
    let d = decide(&s, &snap, "user:bob", "view", "doc:1");
    assert!(!d.allowed);
    assert!(d.decision_path.is_empty());
    assert!(!allowed(&s, &snap, "user:alice", "view", "doc:2"));
    // A relation can be checked as well as a permission.
    assert!(allowed(&s, &snap, "user:alice", "viewer", "doc:1"));
    assert!(!allowed(&s, &snap, "user:alice", "nothing", "doc:1"));
}

#[test]
fn nested_groups_three_deep() {
    let s = schema();
    let snap = store(
        &s,
        &[
            "doc:1#viewer@group:eng#member",
            "group:eng#member@group:backend#member",
            "group:backend#member@group:storage#member",
            "group:storage#member@user:alice",
        ],
    );
    let d = decide(&s, &snap, "user:alice", "view", "doc:1");
    assert!(d.allowed);
    assert_eq!(
        d.decision_path,
        [
            "doc:1#view",
            "doc:1#viewer@group:eng#member",
            "group:eng#member@group:backend#member",
            "group:backend#member@group:storage#member",
            "group:storage#member@user:alice",
        ]
    );
    assert!(!allowed(&s, &snap, "user:bob", "view", "doc:1"));
    // A userset can be the subject of a check.
    assert!(allowed(&s, &snap, "group:backend#member", "view", "doc:1"));
    assert!(allowed(&s, &snap, "group:eng#member", "view", "doc:1"));
}

#[test]
fn inherited_from_parent_through_arrow() {
    let s = schema();
    let snap = store(
        &s,
        &[
            "doc:1#parent@folder:team",
            "folder:team#parent@folder:root",
            "folder:root#viewer@user:alice",
        ],
    );
    let d = decide(&s, &snap, "user:alice", "view", "doc:1");
    assert!(d.allowed);
    assert_eq!(
        d.decision_path,
        [
            "doc:1#view",
            "doc:1#parent@folder:team",
            "folder:team#view",
            "folder:team#parent@folder:root",
            "folder:root#view",
            "folder:root#viewer@user:alice",
        ]
    );
    assert!(!allowed(&s, &snap, "user:alice", "edit", "doc:1"));
}

#[test]
fn intersection_needs_both() {
    let s = schema();
    let snap = store(
        &s,
        &[
            "doc:1#reviewer@user:alice",
            "doc:1#reviewer@user:bob",
            "doc:1#editor@user:bob",
        ],
    );
    assert!(!allowed(&s, &snap, "user:alice", "review", "doc:1"));
    let d = decide(&s, &snap, "user:bob", "review", "doc:1");
    assert!(d.allowed);
    assert_eq!(d.decision_path.len(), 3, "{:?}", d.decision_path);
}

#[test]
fn exclusion_removes_banned() {
    let s = schema();
    let snap = store(
        &s,
        &[
            "doc:1#editor@group:eng#member",
            "group:eng#member@user:alice",
            "group:eng#member@user:bob",
            "doc:1#banned@user:bob",
        ],
    );
    let d = decide(&s, &snap, "user:alice", "edit", "doc:1");
    assert!(d.allowed);
    assert_eq!(
        d.decision_path,
        [
            "doc:1#edit",
            "doc:1#editor@group:eng#member",
            "group:eng#member@user:alice"
        ]
    );
    assert!(!allowed(&s, &snap, "user:bob", "edit", "doc:1"));
    assert!(!allowed(&s, &snap, "user:bob", "view", "doc:1"));
}

#[test]
fn precedence_follows_spicedb() {
    // `-` binds loosest, then `&`, then `+`: a - b + c is a - (b + c).
    let s = Schema::parse(
        "p.zed",
        "definition user {} definition doc { relation a: user relation b: user relation c: user
         permission p = a - b + c  permission q = a + b & c }",
    )
    .expect("parses");
    let snap = store(&s, &["doc:1#a@user:x", "doc:1#c@user:x", "doc:1#c@user:y"]);
    assert!(!allowed(&s, &snap, "user:x", "p", "doc:1"));
    // q = (a + b) & c
    assert!(allowed(&s, &snap, "user:x", "q", "doc:1"));
    assert!(!allowed(&s, &snap, "user:y", "q", "doc:1"));
}

#[test]
fn wildcard_grants_every_subject_of_its_type() {
    let s = schema();
    let snap = store(&s, &["folder:pub#viewer@user:*", "doc:1#parent@folder:pub"]);
    let d = decide(&s, &snap, "user:anyone", "view", "doc:1");
    assert!(d.allowed);
    assert!(d
        .decision_path
        .contains(&"folder:pub#viewer@user:*".to_owned()));
    // Usersets are not users.
    assert!(!allowed(&s, &snap, "group:eng#member", "view", "doc:1"));
    let err = check(
        &s,
        &snap,
        "user:*",
        "view",
        "doc:1",
        NOW,
        &Limits::default(),
    );
    assert!(matches!(err, Err(CheckError::WildcardSubject(_))));
}

#[test]
fn expired_tuples_do_not_count() {
    let s = schema();
    let mut t = TupleText::parse("doc:1#viewer@user:alice").expect("text");
    t.expires_at = Some(NOW + 10);
    let r = t.resolve(&s, &Limits::default()).expect("resolves");
    let snap = Snapshot::empty(&s, 1, 0)
        .apply(&s, &[Change::Touch(r.clone())], &Limits::default())
        .expect("apply");
    let at = |now| {
        check(
            &s,
            &snap,
            "user:alice",
            "view",
            "doc:1",
            now,
            &Limits::default(),
        )
        .expect("check")
        .allowed
    };
    assert!(at(NOW + 9));
    assert!(!at(NOW + 10));
    assert!(!at(NOW + 11));
    assert_eq!(snap.expired(NOW + 10, 10), vec![Change::Delete(r.clone())]);
    // Touching again without an expiry makes it permanent.
    let snap = snap
        .apply(
            &s,
            &[touch(&s, "doc:1#viewer@user:alice")],
            &Limits::default(),
        )
        .expect("apply");
    assert_eq!(snap.len(), 1);
    assert!(allowed(&s, &snap, "user:alice", "view", "doc:1"));
    assert!(snap.expired(u64::MAX, 10).is_empty());
}

#[test]
fn group_cycle_terminates() {
    let s = schema();
    let snap = store(
        &s,
        &[
            "doc:1#viewer@group:a#member",
            "group:a#member@group:b#member",
            "group:b#member@group:a#member",
        ],
    );
    assert!(!allowed(&s, &snap, "user:alice", "view", "doc:1"));
    let snap = snap
        .apply(
            &s,
            &[touch(&s, "group:b#member@user:alice")],
            &Limits::default(),
        )
        .expect("apply");
    assert!(allowed(&s, &snap, "user:alice", "view", "doc:1"));
    // A self-referential parent chain too.
    let snap = store(
        &s,
        &["folder:x#parent@folder:y", "folder:y#parent@folder:x"],
    );
    assert!(!allowed(&s, &snap, "user:alice", "view", "folder:x"));
}

fn chain(s: &Schema, n: usize) -> Snapshot {
    let mut tuples = vec!["doc:1#viewer@group:g0#member".to_owned()];
    for i in 0..n {
        tuples.push(format!("group:g{i}#member@group:g{}#member", i + 1));
    }
    tuples.push(format!("group:g{n}#member@user:alice"));
    let refs: Vec<&str> = tuples.iter().map(String::as_str).collect();
    store(s, &refs)
}

#[test]
fn depth_limit_is_an_error_not_a_denial() {
    let s = schema();
    let snap = chain(&s, 40);
    let err = check(
        &s,
        &snap,
        "user:alice",
        "view",
        "doc:1",
        NOW,
        &Limits::default(),
    );
    assert_eq!(err, Err(CheckError::DepthExceeded(32)));
    assert!(err.unwrap_err().is_limit());
    let deep = Limits {
        max_depth: 64,
        ..Limits::default()
    };
    let d = check(&s, &snap, "user:alice", "view", "doc:1", NOW, &deep).expect("check");
    assert!(d.allowed);
    // A grant on another branch wins over a branch that ran out of depth.
    let snap = snap
        .apply(
            &s,
            &[touch(&s, "doc:1#viewer@user:alice")],
            &Limits::default(),
        )
        .expect("apply");
    assert!(allowed(&s, &snap, "user:alice", "view", "doc:1"));
}

#[test]
fn work_limit_is_an_error() {
    let s = schema();
    let mut tuples: Vec<String> = (0..50)
        .map(|i| format!("doc:1#viewer@group:g{i}#member"))
        .collect();
    tuples.push("group:g49#member@user:alice".to_owned());
    let refs: Vec<&str> = tuples.iter().map(String::as_str).collect();
    let snap = store(&s, &refs);
    let small = Limits {
        max_work: 10,
        ..Limits::default()
    };
    let err = check(&s, &snap, "user:bob", "view", "doc:1", NOW, &small);
    assert_eq!(err, Err(CheckError::WorkExceeded(10)));
    assert!(allowed(&s, &snap, "user:alice", "view", "doc:1"));
}

#[test]
fn delete_makes_a_new_revision_and_leaves_the_old_snapshot_alone() {
    let s = schema();
    let old = store(&s, &["doc:1#viewer@user:alice", "doc:1#viewer@user:bob"]);
    let new = old
        .apply(
            &s,
            &[delete(&s, "doc:1#viewer@user:alice")],
            &Limits::default(),
        )
        .expect("apply");
    assert_eq!((old.revision(), new.revision()), (1, 2));
    assert_eq!((old.len(), new.len()), (2, 1));
    assert!(allowed(&s, &old, "user:alice", "view", "doc:1"));
    assert!(!allowed(&s, &new, "user:alice", "view", "doc:1"));
    assert!(allowed(&s, &new, "user:bob", "view", "doc:1"));
    // Deleting what is not there is a no-op that still makes a revision.
    let again = new
        .apply(
            &s,
            &[delete(&s, "doc:1#viewer@user:alice")],
            &Limits::default(),
        )
        .expect("apply");
    assert_eq!((again.revision(), again.len()), (3, 1));
}

#[test]
fn fan_out_and_total_limits_refuse_the_whole_write() {
    let s = schema();
    let limits = Limits {
        max_fanout: 2,
        max_tuples: 3,
        ..Limits::default()
    };
    let snap = Snapshot::empty(&s, 1, 0);
    let two = [
        touch(&s, "doc:1#viewer@user:a"),
        touch(&s, "doc:1#viewer@user:b"),
    ];
    let snap = snap.apply(&s, &two, &limits).expect("two fit");
    let err = snap.apply(&s, &[touch(&s, "doc:1#viewer@user:c")], &limits);
    assert!(
        matches!(err, Err(StoreError::FanOut { max: 2, .. })),
        "{err:?}"
    );
    let err = snap.apply(
        &s,
        &[
            touch(&s, "doc:2#viewer@user:a"),
            touch(&s, "doc:3#viewer@user:a"),
        ],
        &limits,
    );
    assert!(
        matches!(err, Err(StoreError::TooManyTuples { n: 4, max: 3 })),
        "{err:?}"
    );
    assert_eq!((snap.len(), snap.revision()), (2, 1));
}

#[test]
fn snapshot_lists_and_round_trips_tuples() {
    let s = schema();
    let texts = [
        "doc:1#viewer@group:eng#member",
        "doc:1#viewer@user:*",
        "doc:1#owner@user:alice",
    ];
    let snap = store(&s, &texts);
    let ty = s.type_id("doc").expect("doc");
    let mut listed: Vec<String> = snap
        .relationships_of(&s, ty, "1")
        .iter()
        .map(|r| r.to_text(&s).to_string())
        .collect();
    listed.sort();
    let mut want: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(snap.relationships().count(), 3);
}

#[test]
fn tuples_are_validated_against_the_schema() {
    let s = schema();
    let l = Limits::default();
    let bad = |text: &str| {
        TupleText::parse(text)
            .and_then(|t| t.resolve(&s, &l))
            .unwrap_err()
    };
    assert_eq!(
        bad("nope:1#viewer@user:a"),
        TupleError::UnknownType("nope".into())
    );
    assert!(matches!(
        bad("doc:1#view@user:a"),
        TupleError::NotARelation { .. }
    ));
    assert!(matches!(
        bad("doc:1#vewer@user:a"),
        TupleError::UnknownRelation { .. }
    ));
    assert!(matches!(
        bad("doc:1#owner@group:eng#member"),
        TupleError::SubjectNotAllowed { .. }
    ));
    assert!(matches!(
        bad("doc:1#owner@user:*"),
        TupleError::SubjectNotAllowed { .. }
    ));
    assert!(matches!(
        bad("doc:1#viewer@user:a b"),
        TupleError::BadId { .. }
    ));
    assert!(matches!(
        bad("doc:#viewer@user:a"),
        TupleError::BadId { .. }
    ));
    assert!(matches!(
        bad("doc1#viewer@user:a"),
        TupleError::Malformed { .. }
    ));
    assert!(matches!(
        bad("doc:1viewer@user:a"),
        TupleError::Malformed { .. }
    ));
    let long = format!("doc:{}#viewer@user:a", "x".repeat(300));
    assert!(matches!(
        bad(&long),
        TupleError::TooLong {
            len: 300,
            max: 256,
            ..
        }
    ));
    let mut t = TupleText::parse("doc:1#viewer@user:a").expect("text");
    t.expires_at = Some(1 << 40);
    assert_eq!(t.resolve(&s, &l), Err(TupleError::BadExpiry(1 << 40)));
    let snap = store(&s, &[]);
    let err = check(&s, &snap, "user:a", "vew", "doc:1", NOW, &l).unwrap_err();
    assert_eq!(
        err.to_string(),
        "type 'doc' has no relation or permission 'vew'"
    );
    let err = check(&s, &snap, "alice", "view", "doc:1", NOW, &l).unwrap_err();
    assert!(matches!(
        err,
        CheckError::Input(TupleError::Malformed { .. })
    ));
}

#[test]
fn bodies_parse_in_both_shapes() {
    let l = Limits::default();
    let many = br#"{"tuples":[{"object":"doc:1","relation":"viewer","subject":"user:alice"},
        {"object":"doc:1","relation":"viewer","subject":"group:eng#member","expires_at":1767225600}]}"#;
    let tuples = parse_tuples_body(many, &l).expect("many");
    assert_eq!(tuples.len(), 2);
    assert_eq!(tuples[1].to_string(), "doc:1#viewer@group:eng#member");
    assert_eq!(tuples[1].expires_at, Some(1_767_225_600));
    let one = br#"{"object":"doc:1","relation":"viewer","subject":"user:*"}"#;
    assert_eq!(parse_tuples_body(one, &l).expect("one").len(), 1);
    assert!(parse_tuples_body(br#"{"object":"doc:1","relation":"viewer"}"#, &l).is_err());
    assert!(parse_tuples_body(br#"{"tuples":[],"object":"doc:1"}"#, &l).is_err());
    assert!(parse_tuples_body(
        br#"{"tuples":[{"object":"doc:1","relation":"viewer","subject":"user:a","extra":1}]}"#,
        &l
    )
    .is_err());
    let few = Limits {
        max_tuples_per_write: 1,
        ..l
    };
    assert!(matches!(
        parse_tuples_body(many, &few),
        Err(TupleError::TooMany { n: 2, max: 1 })
    ));

    let req = parse_check_body(
        br#"{"subject":"user:alice","relation":"view","object":"doc:1","at_least_revision":7}"#,
    )
    .expect("check body");
    assert_eq!(
        (&*req.subject, &*req.permission, &*req.object),
        ("user:alice", "view", "doc:1")
    );
    assert_eq!(req.at_least_revision, Some(7));
    assert!(matches!(req.subject, std::borrow::Cow::Borrowed(_)));
    assert!(parse_check_body(br#"{"subject":"user:alice","object":"doc:1"}"#).is_err());
    let d = Decision {
        allowed: true,
        decision_path: vec!["doc:1#view".into()],
        revision: 3,
    };
    assert_eq!(
        serde_json::to_string(&d).expect("json"),
        r#"{"allowed":true,"decision_path":["doc:1#view"],"revision":3}"#
    );
}

fn schema_err(text: &str) -> String {
    Schema::parse("schema.zed", text)
        .expect_err("schema must not parse")
        .to_string()
}

#[test]
fn schema_errors_name_line_column_and_what_was_expected() {
    assert_eq!(
        schema_err("definition user {}\ndefinition doc {\n  relation parent: doc\n  permission view = parent->\n}"),
        "schema.zed:5:1: expected a relation or permission name after '->', found '}'"
    );
    assert_eq!(
        schema_err("definition doc {\n  relation viewer: usr\n}"),
        "schema.zed:2:20: unknown type 'usr'"
    );
    assert_eq!(
        schema_err("definition user {}\ndefinition doc {\n  relation viewer: user\n  permission view = viewr + viewer\n}"),
        "schema.zed:4:21: unknown relation or permission 'viewr' in definition 'doc'"
    );
    assert_eq!(
        schema_err("definition user {}\ndefinition user {}"),
        "schema.zed:2:12: definition 'user' is defined twice"
    );
    assert_eq!(
        schema_err(
            "definition user {}\ndefinition doc {\n  relation a: user\n  permission a = a\n}"
        ),
        "schema.zed:4:14: 'a' is defined twice in definition 'doc'"
    );
    assert_eq!(
        schema_err("definition user {}\ndefinition doc {\n  relation a: user\n  permission p = a\n  permission q = p->a\n}"),
        "schema.zed:5:18: 'p' is a permission; the left side of '->' must be a relation"
    );
    assert_eq!(
        schema_err("definition user {}\ndefinition doc {\n  relation a: user\n  permission q = a->missing\n}"),
        "schema.zed:4:21: no subject type of relation 'a' has a relation or permission 'missing'"
    );
    assert_eq!(
        schema_err("definition user {}\ndefinition doc {\n  relation a: user | user:*\n  permission q = a->a\n}"),
        "schema.zed:4:18: relation 'a' allows the wildcard 'user:*' and cannot be used on the left of '->'"
    );
    assert_eq!(
        schema_err("definition user {}\ndefinition group { relation member: user | group#membr }"),
        "schema.zed:2:50: type 'group' has no relation or permission 'membr'"
    );
    assert_eq!(
        schema_err("definition user {} /* never closed\n"),
        "schema.zed:1:20: comment opened here is never closed with '*/'"
    );
    assert_eq!(
        schema_err("definition user {}\ndefinition doc {\n  relation a: user\n  relation b: user\n  permission p = a & !b\n}"),
        "schema.zed:5:22: '!' is not an operator here; write exclusion as 'a - b'"
    );
    assert_eq!(
        schema_err("definition doc {\n  relation a user\n}"),
        "schema.zed:2:14: expected ':' after 'relation a', found 'user'"
    );
    assert_eq!(
        schema_err("definition Doc {}"),
        "schema.zed:1:12: 'Doc' is not a valid name (lowercase letters, digits and '_', starting with a letter)"
    );
    assert_eq!(
        schema_err(
            "definition user {}\ndefinition doc {\n  relation a: user\n  permission p = (a + a\n}"
        ),
        "schema.zed:5:1: expected ')' to close '(', found '}'"
    );
}

#[test]
fn schema_accepts_comments_semicolons_nil_and_forward_references() {
    let s = Schema::parse(
        "ok.zed",
        "/* header */ definition doc { permission view = viewer + nil; relation viewer: user // trailing\n }\n definition user {}",
    )
    .expect("parses");
    assert_eq!(s.type_names().collect::<Vec<_>>(), ["doc", "user"]);
    let doc = s.type_id("doc").expect("doc");
    assert!(s.is_relation(s.rel_id(doc, "viewer").expect("viewer")));
    assert!(!s.is_relation(s.rel_id(doc, "view").expect("view")));
}

#[test]
fn snapshot_for_another_schema_is_refused() {
    let s = schema();
    let other = Schema::parse("o.zed", "definition user {}").expect("parses");
    let snap = Snapshot::empty(&other, 1, 0);
    let err = check(
        &s,
        &snap,
        "user:a",
        "view",
        "doc:1",
        NOW,
        &Limits::default(),
    );
    assert_eq!(err, Err(CheckError::SchemaMismatch));
    assert_eq!(
        snap.apply(&s, &[touch(&s, "doc:1#viewer@user:a")], &Limits::default())
            .unwrap_err(),
        StoreError::SchemaMismatch
    );
}

#[test]
fn cache_serves_only_the_revision_it_was_computed_at() {
    let s = schema();
    let r1 = store(&s, &["doc:1#viewer@user:alice"]);
    let mut cache: DecisionCache = DecisionCache::new(64, 9);
    assert!(cache
        .get("user:alice", "view", "doc:1", r1.revision())
        .is_none());
    let d = decide(&s, &r1, "user:alice", "view", "doc:1");
    cache.insert("user:alice", "view", "doc:1", d.revision, d.clone());
    assert_eq!(
        cache.get("user:alice", "view", "doc:1", r1.revision()),
        Some(&d)
    );
    // Same strings split differently are another key.
    assert!(cache
        .get("user:alicev", "iew", "doc:1", r1.revision())
        .is_none());
    // After the delete at revision 2 the old allow is never served.
    let r2 = r1
        .apply(
            &s,
            &[delete(&s, "doc:1#viewer@user:alice")],
            &Limits::default(),
        )
        .expect("apply");
    assert!(cache
        .get("user:alice", "view", "doc:1", r2.revision())
        .is_none());
    let d2 = decide(&s, &r2, "user:alice", "view", "doc:1");
    assert!(!d2.allowed);
    cache.insert("user:alice", "view", "doc:1", d2.revision, d2.clone());
    assert_eq!(
        cache.get("user:alice", "view", "doc:1", r2.revision()),
        Some(&d2)
    );
    assert_eq!((cache.hits(), cache.misses()), (2, 3));
}

#[test]
fn cache_stays_bounded() {
    let mut cache: DecisionCache<u32> = DecisionCache::new(8, 1);
    assert_eq!(cache.capacity(), 8);
    for i in 0..1000u32 {
        cache.insert(&format!("user:{i}"), "view", "doc:1", 1, i);
    }
    let live = (0..1000u32)
        .filter(|i| {
            cache
                .get(&format!("user:{i}"), "view", "doc:1", 1)
                .is_some()
        })
        .count();
    assert!(live <= 8, "{live}");
    // The newest entry is always there.
    assert_eq!(cache.get("user:999", "view", "doc:1", 1), Some(&999));
    cache.clear();
    assert!(cache.get("user:999", "view", "doc:1", 1).is_none());
}
