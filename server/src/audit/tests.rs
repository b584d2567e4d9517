//! The log on a temporary directory: group commit, reads, torn-tail recovery, refusal of a
//! damaged log, rotation and retention, checkpoints that catch a rewrite.

use std::fs;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::*;
use crate::config::AuditConfig;

fn key() -> PiiKey {
    PiiKey::new(&Zeroizing::new([9; 32]))
}

fn event(n: u64) -> Event {
    Event {
        actor: format!("svc-{n}"),
        action: "test.write".into(),
        resource: format!("thing:{n}"),
        outcome: "ok".into(),
        source: format!("198.51.100.{}", n % 250),
    }
}

fn events(from: u64, n: u64) -> Vec<Event> {
    (from..from + n).map(event).collect()
}

fn open(dir: &Path, config: &AuditConfig) -> Result<AuditLog, AuditError> {
    AuditLog::open(dir, config, key(), 1_000)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    segment::list(&dir.join(AUDIT_DIR))
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn a_group_commit_places_batches_in_order_and_reads_them_back_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path(), &AuditConfig::default()).unwrap();
    let (a, b) = (events(1, 3), events(4, 2));
    let placed = log.commit(&[&a, &b], 5_000);
    assert_eq!(
        placed,
        vec![
            Some(Committed {
                first_seq: 1,
                last_seq: 3
            }),
            Some(Committed {
                first_seq: 4,
                last_seq: 5
            })
        ]
    );
    assert_eq!(log.stats().fsyncs, 1, "two batches, one fdatasync");
    assert_eq!(log.stats().batches, 2);
    let read = log.read(2, 10).unwrap();
    assert_eq!(
        read.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(read[0].source.as_deref(), Some("198.51.100.3"));
    assert_eq!(read[0].resource, "thing:3");
    assert_eq!(log.read(0, 2).unwrap().len(), 2);
    let on_disk = fs::read_to_string(&segments(tmp.path())[0]).unwrap();
    assert!(!on_disk.contains("198.51.100."), "source is sealed at rest");
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(&segments(tmp.path())[0]), 0o600);
    assert_eq!(mode(&tmp.path().join(AUDIT_DIR)), 0o700);
    assert_eq!(
        mode(&tmp.path().join(AUDIT_DIR).join(CHECKPOINT_KEY_FILE)),
        0o600
    );
}

#[test]
fn reopening_continues_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let config = AuditConfig::default();
    let mut log = open(tmp.path(), &config).unwrap();
    log.commit(&[&events(1, 4)], 5_000);
    let head = log.head();
    drop(log);
    let mut log = open(tmp.path(), &config).unwrap();
    assert_eq!((log.last_seq(), log.head()), (4, head));
    assert_eq!(
        log.commit(&[&events(5, 1)], 6_000),
        vec![Some(Committed {
            first_seq: 5,
            last_seq: 5
        })]
    );
    let report = verify_dir(tmp.path(), &[], None).unwrap();
    assert_eq!((report.n_records, report.last_seq), (5, 5));
}

#[test]
fn a_torn_tail_is_cut_at_start_and_never_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let config = AuditConfig::default();
    let mut log = open(tmp.path(), &config).unwrap();
    log.commit(&[&events(1, 3)], 5_000);
    drop(log);
    let seg = &segments(tmp.path())[0];
    let whole = fs::read(seg).unwrap();
    // Half of another record, as an interrupted write leaves it.
    let mut torn = whole.clone();
    let half = br#"{"seq":4,"ts_ms":5000,"actor":"svc-4","act"#;
    torn.extend_from_slice(half);
    fs::write(seg, &torn).unwrap();
    assert_eq!(
        verify_dir(tmp.path(), &[], None).unwrap().torn_bytes,
        half.len() as u64
    );
    let mut log = open(tmp.path(), &config).unwrap();
    assert_eq!(
        fs::read(seg).unwrap(),
        whole,
        "cut back to the last whole record"
    );
    assert_eq!(log.last_seq(), 3);
    assert_eq!(log.commit(&[&events(4, 1)], 6_000)[0].unwrap().first_seq, 4);
    assert_eq!(verify_dir(tmp.path(), &[], None).unwrap().torn_bytes, 0);
}

#[test]
fn a_zero_filled_tail_after_a_crash_is_cut_unless_a_checkpoint_covers_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = AuditConfig::default();
    let mut log = open(tmp.path(), &config).unwrap();
    log.commit(&[&events(1, 3)], 5_000);
    drop(log);
    let seg = &segments(tmp.path())[0];
    let whole = fs::read(seg).unwrap();
    // A crash after the file grew but before its pages were written: zeros, then a record
    // line that did reach the disk (neither was acknowledged: no fdatasync completed).
    let mut crashed = whole.clone();
    crashed.extend_from_slice(&[0; 300]);
    crashed.extend_from_slice(b"\n{\"seq\":5}\n");
    fs::write(seg, &crashed).unwrap();
    let mut log = open(tmp.path(), &config).unwrap();
    assert_eq!(
        fs::read(seg).unwrap(),
        whole,
        "cut back to the last whole record"
    );
    assert_eq!(log.last_seq(), 3);
    assert_eq!(log.commit(&[&events(4, 1)], 6_000)[0].unwrap().first_seq, 4);
    drop(log);

    // The same damage over a record a checkpoint covers: that record was acknowledged.
    let mut log = open(tmp.path(), &config).unwrap();
    log.checkpoint_now(7_000).unwrap();
    drop(log);
    let bytes = fs::read(seg).unwrap();
    let last_line = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let mut zeroed = bytes.clone();
    zeroed[last_line..bytes.len() - 1].fill(0);
    fs::write(seg, &zeroed).unwrap();
    let Err(err) = open(tmp.path(), &config) else {
        panic!("a checkpointed record that reads as zeros must refuse the start")
    };
    assert!(matches!(err, AuditError::Corrupt { seq: 4, .. }), "{err}");
}

#[test]
fn a_flipped_byte_is_refused_at_start_and_by_verify_naming_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let config = AuditConfig::default();
    let mut log = open(tmp.path(), &config).unwrap();
    log.commit(&[&events(1, 5)], 5_000);
    drop(log);
    let seg = segments(tmp.path())[0].clone();
    let mut bytes = fs::read(&seg).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let at = text.find("thing:3").unwrap();
    let line_start = text[..at].rfind('\n').unwrap() + 1;
    bytes[at] ^= 0x20;
    fs::write(&seg, &bytes).unwrap();
    for err in [
        open(tmp.path(), &config).unwrap_err(),
        verify_dir(tmp.path(), &[], None).unwrap_err(),
    ] {
        match err {
            AuditError::Corrupt {
                path, seq, offset, ..
            } => {
                assert_eq!(path, seg);
                assert_eq!(seq, 3);
                assert_eq!(offset, line_start as u64);
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[test]
fn rotation_links_segments_and_retention_keeps_the_chain_verifiable() {
    let tmp = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        segment_max_bytes: 4096,
        retention_max_bytes: 3 * 4096,
        ..AuditConfig::default()
    };
    let mut log = open(tmp.path(), &config).unwrap();
    for n in 0..40 {
        assert!(log.commit(&[&events(n * 5 + 1, 5)], 5_000 + n)[0].is_some());
    }
    assert!(segments(tmp.path()).len() > 4, "rotated by size");
    let report = verify_dir(tmp.path(), &[], None).unwrap();
    assert_eq!((report.first_seq, report.last_seq), (1, 200));
    log.enforce_retention(10_000).unwrap();
    let kept = segments(tmp.path());
    let total: u64 = kept.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(total <= 3 * 4096 + 4096, "{total}");
    let report = verify_dir(tmp.path(), &[], None).unwrap();
    assert!(report.first_seq > 1, "the oldest segments are gone");
    assert_eq!(report.last_seq, 200);
    assert_eq!(log.read(0, 1).unwrap()[0].seq, report.first_seq);
    // Age: everything closed is older than a zero-age bound would allow.
    let aged = AuditConfig {
        retention_max_age_s: 1,
        ..config.clone()
    };
    drop(log);
    let mut log = open(tmp.path(), &aged).unwrap();
    log.enforce_retention(crate::unix_now_ms() + 10_000)
        .unwrap();
    assert_eq!(
        segments(tmp.path()).len(),
        1,
        "only the active segment stays"
    );
    assert!(verify_dir(tmp.path(), &[], None).is_ok());
}

#[test]
fn a_checkpoint_from_before_a_rewrite_fails_verification_and_start() {
    let tmp = tempfile::tempdir().unwrap();
    let config = AuditConfig::default();
    let mut log = open(tmp.path(), &config).unwrap();
    log.commit(&[&events(1, 6)], 5_000);
    assert!(log.maybe_checkpoint(5_000, true).unwrap());
    assert!(!log.maybe_checkpoint(5_000, true).unwrap(), "nothing new");
    let note = log.checkpoint_now(5_000).unwrap().unwrap();
    assert_eq!(log.verifier().open(&note).unwrap().size, 6);
    let vkey = log.verifier().to_vkey();
    drop(log);
    let report = verify_dir(tmp.path(), &[], Some(&vkey)).unwrap();
    assert_eq!(report.n_checkpoints, 1);
    // Rewrite record 2 and re-chain everything after it: every link verifies again.
    let seg = segments(tmp.path())[0].clone();
    let text = fs::read_to_string(&seg).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replace("thing:2", "thing:X");
    let mut prev = record::GENESIS;
    for line in lines.iter_mut().skip(1) {
        let body = &line.as_bytes()[..line.len() - record::HASH_SUFFIX_LEN];
        prev = record::link(&prev, body);
        let new = format!(
            "{}{}\"}}",
            String::from_utf8_lossy(body),
            format_args!(",\"hash\":\"{}", record::hex(&prev))
        );
        *line = new;
    }
    fs::write(&seg, lines.join("\n") + "\n").unwrap();
    let err = verify_dir(tmp.path(), &[], Some(&vkey)).unwrap_err();
    assert!(matches!(err, AuditError::Checkpoint { .. }), "{err}");
    assert!(err.to_string().contains("rewritten"), "{err}");
    let err = open(tmp.path(), &config).unwrap_err();
    assert!(err.to_string().contains("rewritten"), "{err}");
}

#[test]
fn a_forged_checkpoint_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let config = AuditConfig::default();
    let mut log = open(tmp.path(), &config).unwrap();
    log.commit(&[&events(1, 2)], 5_000);
    log.maybe_checkpoint(5_000, true).unwrap();
    drop(log);
    let cps = log::list_checkpoints(&tmp.path().join(AUDIT_DIR).join(CHECKPOINTS_DIR)).unwrap();
    let text = fs::read_to_string(&cps[0])
        .unwrap()
        .replacen("\n2\n", "\n1\n", 1);
    fs::write(&cps[0], text).unwrap();
    let err = open(tmp.path(), &config).unwrap_err();
    assert!(
        matches!(err, AuditError::Checkpoint { ref path, .. } if *path == cps[0]),
        "{err}"
    );
}

#[test]
fn checkpoints_come_every_n_records() {
    let tmp = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        checkpoint_every_records: 10,
        checkpoint_interval_s: 3600,
        ..AuditConfig::default()
    };
    let mut log = open(tmp.path(), &config).unwrap();
    log.commit(&[&events(1, 9)], 5_000);
    assert!(!log.maybe_checkpoint(5_000, false).unwrap());
    log.commit(&[&events(10, 1)], 5_000);
    assert!(log.maybe_checkpoint(5_000, false).unwrap());
    log.commit(&[&events(11, 1)], 5_000);
    assert!(
        log.maybe_checkpoint(5_000 + 3_600_000, false).unwrap(),
        "by time"
    );
}

#[test]
fn bodies_are_validated_naming_the_field() {
    let ok =
        br#"{"events":[{"actor":"a","action":"b","resource":"c","outcome":"d","source":"e"}]}"#;
    assert_eq!(parse_events(ok, 10, 16).unwrap().len(), 1);
    let missing = br#"{"events":[{"actor":"a","action":"b","resource":"c","outcome":"d"}]}"#;
    assert_eq!(
        parse_events(missing, 10, 16).unwrap_err().to_string(),
        "events[0].source is missing"
    );
    let long = br#"{"events":[{"actor":"aaaaaaaaaaaaaaaaaaaa","action":"b","resource":"c","outcome":"d","source":"e"}]}"#;
    assert!(parse_events(long, 10, 16)
        .unwrap_err()
        .to_string()
        .contains("events[0].actor is longer"));
    assert!(matches!(
        parse_events(ok, 0, 16),
        Err(BodyError::TooMany { n: 1, max: 0 })
    ));
    assert_eq!(
        parse_events(br#"{"events":[]}"#, 10, 16),
        Err(BodyError::Empty)
    );
    assert!(matches!(
        parse_events(b"[]", 10, 16),
        Err(BodyError::Json(_))
    ));
    assert_eq!(clip("héllo", 2), "h");
}

#[test]
fn a_failed_commit_acknowledges_nothing_and_the_log_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path(), &AuditConfig::default()).unwrap();
    log.commit(&[&events(1, 2)], 5_000);
    let head = log.head();
    log.set_writable_for_test(false);
    let failed = log.commit(&[&events(3, 2), &events(5, 1)], 6_000);
    assert_eq!(
        failed,
        vec![None, None],
        "nothing of a failed commit is acknowledged"
    );
    assert_eq!((log.last_seq(), log.head()), (2, head), "state rolled back");
    assert_eq!(log.stats().failed_commits, 1);
    log.set_writable_for_test(true);
    let placed = log.commit(&[&events(3, 2)], 7_000);
    assert_eq!(
        placed,
        vec![Some(Committed {
            first_seq: 3,
            last_seq: 4
        })]
    );
    drop(log);
    let report = verify_dir(tmp.path(), &[], None).unwrap();
    assert_eq!((report.last_seq, report.torn_bytes), (4, 0));
}
