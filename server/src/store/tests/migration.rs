//! The import of the flat `revocations.log`: both record formats, a torn last line, damage
//! before the end, the rename, and idempotence after a crash before the rename.

use super::*;

fn record(jti: &str, exp_s: u64) -> String {
    let check = xxhash_rust::xxh3::xxh3_64(format!("{jti} {exp_s}").as_bytes()) as u32;
    format!("{jti} {exp_s} {check:08x}\n")
}

fn ours(jti: &str) -> RevocationKey {
    RevocationKey {
        iss: OURS.to_owned(),
        jti: jti.to_owned(),
    }
}

#[test]
fn imports_both_formats_drops_a_torn_last_line_and_renames_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join(REVOCATION_LOG);
    let text = [
        record("a", NOW + 100),
        "legacy 1500\n".to_owned(), // written before records had a check
        record("a", NOW + 300),     // the longer of two wins
        record("gone", NOW - 1),    // expired: read, not imported
        record("b", NOW + 50),
        record("torn", NOW + 900)[..12].to_owned(), // a crash mid-append: half a check
    ];
    std::fs::write(&log, text.concat()).unwrap();
    let mut store = open(dir.path());
    let imported = import_revocation_log(&mut store, dir.path(), OURS, NOW).unwrap();
    let imported = imported.unwrap();
    assert_eq!((imported.n_records, imported.n_live), (5, 3));
    assert_eq!(imported.revision, 1, "one batch");
    let revocations = store.snapshot().unwrap().state.revocations;
    let expected = [
        (ours("a"), NOW + 300),
        (ours("b"), NOW + 50),
        (ours("legacy"), 1500),
    ];
    assert_eq!(revocations.into_iter().collect::<Vec<_>>(), expected);
    assert!(!log.exists());
    let renamed = dir
        .path()
        .join(format!("{REVOCATION_LOG}{IMPORTED_SUFFIX}"));
    assert_eq!(std::fs::read_to_string(renamed).unwrap(), text.concat());
    // Nothing left to import.
    let again = import_revocation_log(&mut store, dir.path(), OURS, NOW).unwrap();
    assert_eq!(again, None);
}

#[test]
fn a_damaged_last_line_is_a_torn_write_and_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let good = record("keep", NOW + 10);
    let torn = &record("lost", NOW + 999)[..12];
    std::fs::write(dir.path().join(REVOCATION_LOG), format!("{good}{torn}")).unwrap();
    let mut store = open(dir.path());
    let imported = import_revocation_log(&mut store, dir.path(), OURS, NOW).unwrap();
    assert_eq!(imported.map(|i| (i.n_records, i.n_live)), Some((1, 1)));
    let revocations = store.snapshot().unwrap().state.revocations;
    assert_eq!(revocations.keys().collect::<Vec<_>>(), [&ours("keep")]);
}

#[test]
fn damage_before_the_last_line_stops_the_import_and_keeps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join(REVOCATION_LOG);
    let flipped = record("a", NOW + 100).replace(&(NOW + 100).to_string(), "9999");
    std::fs::write(
        &log,
        format!("{}{flipped}{}", record("z", NOW + 5), record("b", NOW + 7)),
    )
    .unwrap();
    let mut store = open(dir.path());
    let err = import_revocation_log(&mut store, dir.path(), OURS, NOW).unwrap_err();
    assert!(
        matches!(err, StoreError::DamagedLog { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(log.exists(), "the log stays for the operator");
    assert_eq!(store.revision(), 0, "nothing imported");
}

#[test]
fn importing_again_after_a_crash_before_the_rename_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join(REVOCATION_LOG);
    let text = format!("{}{}", record("a", NOW + 100), record("b", NOW + 200));
    std::fs::write(&log, &text).unwrap();
    let mut store = open(dir.path());
    import_revocation_log(&mut store, dir.path(), OURS, NOW).unwrap();
    let before = store.snapshot().unwrap();
    // The rename never happened: the same log is there at the next start.
    std::fs::write(&log, &text).unwrap();
    drop(store);
    let mut store = open(dir.path());
    let boxed: &mut dyn Store = &mut store;
    let again = import_revocation_log(boxed, dir.path(), OURS, NOW).unwrap();
    assert_eq!(
        again.map(|i| i.revision),
        Some(before.revision),
        "no new revision"
    );
    assert_eq!(store.snapshot().unwrap(), before);
    assert!(!log.exists());
}

#[test]
fn no_log_means_nothing_to_import() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let imported = import_revocation_log(&mut store, dir.path(), OURS, NOW).unwrap();
    assert_eq!(imported, None);
}
