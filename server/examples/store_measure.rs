//! Durable tuple writes by batch size, snapshot and feed reads, and recovery after a crash,
//! on the embedded store. Figures, not assertions.
//!
//! Run: `cargo run --release -p subzero --example store_measure` (and without `--release`).

use std::time::Instant;

use subzero::store::{Op, RedbStore, Store, StoreOptions, Tuple, STORE_FILE};

const NOW: u64 = 1_000;

fn write_tuple(object: &str, subject: &str, expires_at_s: Option<u64>) -> Op {
    Op::WriteTuple {
        tuple: Tuple {
            object: object.to_owned(),
            relation: "viewer".to_owned(),
            subject: subject.to_owned(),
        },
        expires_at_s,
    }
}

fn batch_of(n_tuples: usize, next_idx: &mut u64) -> Vec<Op> {
    (0..n_tuples)
        .map(|_| {
            *next_idx += 1;
            let subject = format!("group:g{}#member", *next_idx % 1000);
            write_tuple(&format!("doc:{next_idx}"), &subject, None)
        })
        .collect()
}

fn main() {
    for quick_repair in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            quick_repair,
            ..StoreOptions::default()
        };
        let mut store = RedbStore::open(dir.path(), options).unwrap();
        let mut next_idx = 0;
        for (n_tuples, n_batches) in [(1usize, 200usize), (100, 100), (10_000, 10)] {
            let batches: Vec<Vec<Op>> = (0..n_batches)
                .map(|_| batch_of(n_tuples, &mut next_idx))
                .collect();
            let started = Instant::now();
            for ops in &batches {
                store.write(ops, NOW).unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "quick_repair={quick_repair} batch={n_tuples:>6}: {:>7.0} commits/s {:>9.0} tuples/s ({:.2} ms/commit)",
                n_batches as f64 / secs,
                (n_batches * n_tuples) as f64 / secs,
                secs * 1e3 / n_batches as f64
            );
        }
        let started = Instant::now();
        let snapshot = store.snapshot().unwrap();
        let snapshot_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        let n_changes = store.changes_since(0, usize::MAX).unwrap().len();
        let feed_ms = started.elapsed().as_secs_f64() * 1e3;
        let file_bytes = std::fs::metadata(store.path()).unwrap().len();
        let crashed = tempfile::tempdir().unwrap();
        std::fs::copy(store.path(), crashed.path().join(STORE_FILE)).unwrap();
        let started = Instant::now();
        let recovered = RedbStore::open(crashed.path(), options).unwrap();
        let recover_ms = started.elapsed().as_secs_f64() * 1e3;
        assert_eq!(recovered.revision(), store.revision());
        eprintln!(
            "quick_repair={quick_repair}: {} tuples, file {:.1} MiB; snapshot {snapshot_ms:.0} ms; \
             feed of {n_changes} changes {feed_ms:.0} ms; open after crash {recover_ms:.0} ms",
            snapshot.state.tuples.len(),
            file_bytes as f64 / f64::from(1 << 20),
        );
    }
}
