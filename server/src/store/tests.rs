//! Tests of the store over a temporary directory: durability across reopen and crash images,
//! revisions, the change feed, snapshots, expiry, limits, the revocation-log import, and a
//! throughput measurement (ignored by default; run it with `--ignored --nocapture`).

use std::path::Path;

use super::*;

const NOW: u64 = 1_000;
const OURS: &str = "subzero";

fn open(dir: &Path) -> RedbStore {
    RedbStore::open(dir, StoreOptions::default()).unwrap()
}

fn tuple(object: &str, relation: &str, subject: &str) -> Tuple {
    Tuple {
        object: object.to_owned(),
        relation: relation.to_owned(),
        subject: subject.to_owned(),
    }
}

fn write_tuple(object: &str, subject: &str, expires_at_s: Option<u64>) -> Op {
    Op::WriteTuple {
        tuple: tuple(object, "viewer", subject),
        expires_at_s,
    }
}

fn revoke(iss: &str, jti: &str, exp_s: u64) -> Op {
    Op::Revoke {
        key: RevocationKey {
            iss: iss.to_owned(),
            jti: jti.to_owned(),
        },
        exp_s,
    }
}

fn vault_key(name: &str) -> VaultKey {
    VaultKey {
        namespace: "subzero|alice".to_owned(),
        name: name.to_owned(),
    }
}

fn put_vault(name: &str, version: u64, expires_at_s: Option<u64>) -> Op {
    Op::PutVault {
        key: vault_key(name),
        entry: VaultEntry {
            sealed: vec![0xA5; 40 + name.len()],
            version,
            expires_at_s,
        },
    }
}

fn channel(id: &str, expires_at_s: u64) -> Op {
    Op::CreateChannel {
        id: id.to_owned(),
        channel: Channel {
            jtis: [format!("{id}-app"), format!("{id}-agent")],
            expires_at_s,
        },
    }
}

fn meta(key: &str, value: &[u8]) -> Op {
    Op::PutMeta {
        key: key.to_owned(),
        value: value.to_vec(),
    }
}

/// One batch with every kind of record.
fn every_kind() -> Vec<Op> {
    vec![
        write_tuple("doc:1", "user:alice", None),
        write_tuple("doc:2", "group:eng#member", Some(NOW + 500)),
        put_vault("google", 1, None),
        put_vault("github", 1, Some(NOW + 60)),
        channel("ch1", NOW + 300),
        revoke(OURS, "jti-1", NOW + 900),
        meta("fleet.stream_id", b"1700000000000-0"),
    ]
}

fn applied(n: usize) -> Vec<Outcome> {
    vec![Outcome::Applied; n]
}

#[test]
fn every_kind_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ops = every_kind();
    let mut expected = State::default();
    expected.apply(&ops);
    {
        let mut store = open(dir.path());
        let committed = store.write(&ops, NOW).unwrap();
        assert_eq!(committed.revision, 1);
        assert_eq!(committed.outcomes, applied(ops.len()));
        // Dropped without any close or flush call: the commit alone made it durable.
    }
    let mut store = open(dir.path());
    assert_eq!(store.revision(), 1);
    let snapshot = store.snapshot().unwrap();
    assert_eq!(snapshot.revision, 1);
    assert_eq!(snapshot.state, expected);
    assert_eq!(snapshot.state.n_records(), ops.len());
    let next = store.write(&[write_tuple("doc:3", "user:bob", None)], NOW);
    assert_eq!(
        next.unwrap().revision,
        2,
        "revisions continue after a reopen"
    );
    let mode = std::fs::metadata(store.path()).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

#[test]
fn a_crash_image_taken_after_commit_holds_every_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.write(&every_kind(), NOW).unwrap();
    let second = [write_tuple("doc:9", "user:carol", None)];
    assert_eq!(store.write(&second, NOW).unwrap().revision, 2);
    // The file as the disk holds it right after the acknowledgement, with the database still
    // open: no clean shutdown was recorded, so opening the copy is recovering from a crash.
    std::fs::copy(store.path(), crashed.path().join(STORE_FILE)).unwrap();
    let expected = store.snapshot().unwrap();
    drop(store);
    let recovered = open(crashed.path());
    assert_eq!(recovered.revision(), 2);
    assert_eq!(recovered.snapshot().unwrap(), expected);
}

#[test]
fn revisions_increase_by_one_per_batch_that_changes_something() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    for batch_idx in 1..=20u64 {
        let ops: Vec<Op> = (0..batch_idx)
            .map(|i| write_tuple(&format!("doc:{batch_idx}"), &format!("user:{i}"), None))
            .collect();
        let committed = store.write(&ops, NOW).unwrap();
        assert_eq!(committed.revision, batch_idx);
        assert_eq!(store.revision(), batch_idx);
    }
    // Nothing to change: no commit, no revision, nothing in the feed.
    let again = store
        .write(&[write_tuple("doc:1", "user:0", None)], NOW)
        .unwrap();
    assert_eq!(again.revision, 20);
    assert_eq!(again.outcomes, [Outcome::Unchanged]);
    assert_eq!(store.write(&[], NOW).unwrap().revision, 20);
    assert!(store.changes_since(20, 10).unwrap().is_empty());
    assert_eq!(store.changes_since(19, 10).unwrap().len(), 1);
}

/// Writes 30 mixed batches; returns the changes they made, as the feed should hold them.
fn mixed_history(store: &mut dyn Store) -> Vec<Change> {
    let start = store.revision();
    let mut history = Vec::new();
    for i in 0..30u64 {
        let doc = format!("doc:{}", i % 7);
        let ops = vec![
            write_tuple(&doc, &format!("user:{i}"), (i % 3 == 0).then_some(NOW + i)),
            Op::DeleteTuple {
                tuple: tuple(&format!("doc:{}", (i + 3) % 7), "viewer", "user:1"),
            },
            revoke(OURS, &format!("j{}", i % 5), NOW + 10 * i),
            put_vault("google", i + 1, None),
            meta("counter", &i.to_le_bytes()),
        ];
        let committed = store.write(&ops, NOW).unwrap();
        let effective: Vec<Op> = ops
            .into_iter()
            .zip(&committed.outcomes)
            .filter(|(_, &o)| o == Outcome::Applied)
            .map(|(op, _)| op)
            .collect();
        if !effective.is_empty() {
            history.push(Change {
                revision: start + history.len() as u64 + 1,
                ops: effective,
            });
        }
        assert_eq!(committed.revision, start + history.len() as u64);
    }
    history
}

#[test]
fn the_feed_from_any_revision_is_exactly_the_later_changes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let history = mixed_history(&mut store);
    assert_eq!(history.len(), 30, "every batch changes something");
    for after in 0..=30u64 {
        let changes = store.changes_since(after, usize::MAX).unwrap();
        let expected: Vec<Change> = history
            .iter()
            .filter(|c| c.revision > after)
            .cloned()
            .collect();
        assert_eq!(changes, expected, "after {after}");
        let limited = store.changes_since(after, 3).unwrap();
        assert_eq!(limited[..], expected[..expected.len().min(3)]);
    }
    let ahead = store.changes_since(31, 1).unwrap_err();
    assert!(
        matches!(
            ahead,
            StoreError::Ahead {
                after: 31,
                current: 30
            }
        ),
        "{ahead}"
    );
}

#[test]
fn a_snapshot_plus_the_feed_after_it_reproduces_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.write(&every_kind(), NOW).unwrap();
    mixed_history(&mut store);
    let snapshot = store.snapshot().unwrap();
    assert_eq!(snapshot.revision, store.revision());
    mixed_history(&mut store);
    store
        .write(&[Op::DeleteChannel { id: "ch1".into() }], NOW)
        .unwrap();
    store.purge_expired(NOW + 20, 1000).unwrap();

    let mut follower = snapshot.state;
    for change in store.changes_since(snapshot.revision, usize::MAX).unwrap() {
        follower.apply(&change.ops);
    }
    let now = store.snapshot().unwrap();
    assert_eq!(follower, now.state);
    // And from nothing: the whole feed replayed onto an empty state.
    let mut replayed = State::default();
    for change in store.changes_since(0, usize::MAX).unwrap() {
        replayed.apply(&change.ops);
    }
    assert_eq!(replayed, now.state);
}

#[test]
fn revocations_by_another_issuer_never_collide_with_ours() {
    use Outcome::{Applied, Expired, Unchanged};
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let other = "https://idp.example";
    let ops = [
        revoke(OURS, "shared-jti", NOW + 100),
        revoke(other, "shared-jti", NOW + 500),
        revoke(other, "shared-jti", NOW + 300),
        revoke(OURS, "shared-jti", NOW + 200),
        revoke(OURS, "old", NOW),
    ];
    let committed = store.write(&ops, NOW).unwrap();
    assert_eq!(
        committed.outcomes,
        [Applied, Applied, Unchanged, Applied, Expired]
    );
    let revocations = store.snapshot().unwrap().state.revocations;
    let key = |iss: &str| RevocationKey {
        iss: iss.to_owned(),
        jti: "shared-jti".to_owned(),
    };
    assert_eq!(revocations.len(), 2);
    assert_eq!(revocations[&key(OURS)], NOW + 200);
    assert_eq!(revocations[&key(other)], NOW + 500);
    // Nobody submits an un-revocation.
    let expire = Op::ExpireRevocation { key: key(OURS) };
    let refused = store.write(&[expire], NOW).unwrap_err();
    assert!(matches!(
        refused,
        StoreError::Invalid {
            op_idx: 0,
            source: LimitError::Reserved
        }
    ));
    assert_eq!(store.snapshot().unwrap().state.revocations.len(), 2);
}

#[test]
fn outcomes_say_what_each_op_did() {
    use Outcome::{Applied, Expired, Stale, Unchanged};
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.write(&every_kind(), NOW).unwrap();
    let ops = [
        write_tuple("doc:1", "user:alice", None),
        write_tuple("doc:1", "user:alice", Some(NOW + 5)),
        write_tuple("doc:7", "user:alice", Some(NOW)),
        Op::DeleteTuple {
            tuple: tuple("doc:404", "viewer", "user:x"),
        },
        put_vault("google", 1, None),
        put_vault("google", 2, None),
        channel("ch1", NOW + 999),
        channel("ch2", NOW - 1),
        meta("fleet.stream_id", b"1700000000000-0"),
        Op::DeleteMeta { key: "nope".into() },
        Op::DeleteVault {
            key: vault_key("github"),
        },
    ];
    let committed = store.write(&ops, NOW).unwrap();
    let expected = [
        Unchanged, Applied, Expired, Unchanged, Stale, Applied, Unchanged, Expired, Unchanged,
        Unchanged, Applied,
    ];
    assert_eq!(committed.outcomes, expected);
    assert_eq!(committed.revision, 2);
    assert_eq!(store.changes_since(1, 9).unwrap()[0].ops.len(), 3);
}

#[test]
fn purge_drops_expired_records_oldest_first_and_feeds_the_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let ops = [
        write_tuple("doc:1", "user:a", Some(NOW + 100)),
        write_tuple("doc:2", "user:b", Some(NOW + 200)),
        write_tuple("doc:3", "user:c", None),
        write_tuple("doc:4", "user:d", Some(NOW + 100)),
        put_vault("google", 1, Some(NOW + 100)),
        channel("ch1", NOW + 150),
        revoke(OURS, "j1", NOW + 100),
        revoke(OURS, "j2", NOW + 300),
    ];
    store.write(&ops, NOW).unwrap();
    // doc:4 no longer expires: its index entry must go with the old expiry.
    store
        .write(&[write_tuple("doc:4", "user:d", None)], NOW)
        .unwrap();
    assert_eq!(store.revision(), 2);

    let nothing = store.purge_expired(NOW + 99, 100).unwrap();
    assert_eq!(
        (nothing.n_records, nothing.revision, nothing.more),
        (0, 2, false)
    );
    let first = store.purge_expired(NOW + 150, 2).unwrap();
    assert_eq!((first.n_records, first.revision, first.more), (2, 3, true));
    let rest = store.purge_expired(NOW + 150, 100).unwrap();
    assert_eq!((rest.n_records, rest.revision, rest.more), (2, 4, false));

    let state = store.snapshot().unwrap().state;
    let objects: Vec<&str> = state.tuples.keys().map(|t| t.object.as_str()).collect();
    assert_eq!(objects, ["doc:2", "doc:3", "doc:4"]);
    assert!(state.vault.is_empty() && state.channels.is_empty());
    assert_eq!(state.revocations.len(), 1);
    let fed: Vec<Op> = store
        .changes_since(2, 9)
        .unwrap()
        .into_iter()
        .flat_map(|c| c.ops)
        .collect();
    assert_eq!(fed.len(), 4);
    assert!(fed.contains(&Op::DeleteChannel { id: "ch1".into() }));
    assert!(fed.contains(&Op::ExpireRevocation {
        key: RevocationKey {
            iss: OURS.into(),
            jti: "j1".into()
        }
    }));
}

#[test]
fn limits_are_typed_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let too_many = vec![write_tuple("doc:1", "user:a", None); MAX_BATCH_OPS + 1];
    let err = store.write(&too_many, NOW).unwrap_err();
    assert!(matches!(err, StoreError::TooManyOps { n_ops, .. } if n_ops == MAX_BATCH_OPS + 1));

    let long = "x".repeat(MAX_FIELD_BYTES + 1);
    let cases: [(Op, LimitError); 5] = [
        (
            write_tuple(&long, "user:a", None),
            LimitError::TooLong {
                field: "object",
                len: MAX_FIELD_BYTES + 1,
                max: MAX_FIELD_BYTES,
            },
        ),
        (
            write_tuple("doc:1", "", None),
            LimitError::Empty { field: "subject" },
        ),
        (
            Op::PutVault {
                key: vault_key("big"),
                entry: VaultEntry {
                    sealed: vec![0; MAX_SEALED_BYTES + 1],
                    version: 1,
                    expires_at_s: None,
                },
            },
            LimitError::TooLong {
                field: "sealed",
                len: MAX_SEALED_BYTES + 1,
                max: MAX_SEALED_BYTES,
            },
        ),
        (
            revoke(OURS, "has space", NOW + 1),
            LimitError::InvalidJti { field: "jti" },
        ),
        (
            meta("k", &vec![0; MAX_META_VALUE_BYTES + 1]),
            LimitError::TooLong {
                field: "meta value",
                len: MAX_META_VALUE_BYTES + 1,
                max: MAX_META_VALUE_BYTES,
            },
        ),
    ];
    for (op, expected) in cases {
        let batch = [write_tuple("doc:ok", "user:a", None), op];
        match store.write(&batch, NOW).unwrap_err() {
            StoreError::Invalid { op_idx, source } => {
                assert_eq!((op_idx, source), (1, expected));
            }
            other => panic!("{other}"),
        }
    }
    let sealed = |i: usize| put_vault(&format!("n{i}"), 1, None);
    let mut huge: Vec<Op> = (0..600).map(sealed).collect();
    for op in &mut huge {
        if let Op::PutVault { entry, .. } = op {
            entry.sealed = vec![7; MAX_SEALED_BYTES];
        }
    }
    let err = store.write(&huge, NOW).unwrap_err();
    assert!(matches!(err, StoreError::TooManyBytes { .. }), "{err}");
    assert_eq!(store.revision(), 0);
    assert_eq!(store.snapshot().unwrap().state, State::default());
}

#[test]
fn the_feed_is_trimmed_past_its_retention_and_followers_resnapshot() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        retained_changes: 5,
        ..StoreOptions::default()
    };
    let mut store = RedbStore::open(dir.path(), options).unwrap();
    for i in 0..20 {
        store
            .write(&[write_tuple(&format!("doc:{i}"), "user:a", None)], NOW)
            .unwrap();
    }
    assert_eq!(store.feed_floor(), 15);
    let err = store.changes_since(14, 100).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Trimmed {
                after: 14,
                oldest: 15
            }
        ),
        "{err}"
    );
    assert_eq!(store.changes_since(15, 100).unwrap().len(), 5);
    assert_eq!(store.trim_changes(18).unwrap(), 18);
    assert!(store.changes_since(17, 1).is_err());
    drop(store);
    let store = RedbStore::open(dir.path(), options).unwrap();
    assert_eq!((store.feed_floor(), store.revision()), (18, 20));
    assert_eq!(store.changes_since(18, 100).unwrap().len(), 2);
    assert_eq!(store.snapshot().unwrap().state.tuples.len(), 20);
}

#[test]
fn the_codec_round_trips_every_op_and_refuses_damage() {
    let mut ops = every_kind();
    ops.extend([
        Op::DeleteTuple {
            tuple: tuple("a", "b", "c"),
        },
        Op::DeleteVault {
            key: vault_key("x"),
        },
        Op::DeleteChannel { id: "ch".into() },
        Op::ExpireRevocation {
            key: RevocationKey {
                iss: "i".into(),
                jti: "j".into(),
            },
        },
        Op::DeleteMeta { key: "k".into() },
    ]);
    let mut buf = Vec::new();
    codec::begin(&mut buf);
    for op in &ops {
        codec::encode(op, &mut buf);
    }
    codec::finish(&mut buf, ops.len());
    assert_eq!(codec::decode(&buf, 1).unwrap(), ops);
    for cut in [0, 1, 4, 5, buf.len() / 2, buf.len() - 1] {
        let err = codec::decode(&buf[..cut], 1).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "cut at {cut}: {err}");
    }
    let mut longer = buf.clone();
    longer.push(0);
    assert!(codec::decode(&longer, 1).is_err(), "trailing bytes");
    let mut unknown = buf;
    unknown[0] = 9;
    assert!(codec::decode(&unknown, 1).is_err(), "unknown version");
}

mod migration;
