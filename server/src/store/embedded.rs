//! The embedded engine: `Store` over one redb file, `<data_dir>/subzero.redb`.
//!
//! Durability: every commit uses `Durability::Immediate` (redb writes the new state and its
//! checksummed commit slot, then fsyncs), so `write` returns only once its batch is on disk; a
//! crash loses no acknowledged batch and never applies part of one. With `quick_repair` off
//! (the default) a commit is one fsync and the first open after a crash walks the file to
//! rebuild its allocator state; with it on, redb uses two-phase commit and saves that state on
//! every commit, so commits cost more and recovery is instant.
//!
//! The feed: `CHANGES` holds one record per revision. Past `retained_changes` records each
//! commit trims the oldest (a bounded number per commit), and `trim_changes` trims on demand;
//! a follower older than the floor gets `StoreError::Trimmed` and starts from a snapshot. The
//! file is created mode 0600: vault entries are sealed, but relationships and revocations are
//! not meant for other local users either.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction,
};

use super::tables::{
    Tables, CHANGES, CHANNELS, KEY_FLOOR, KEY_FORMAT, KEY_REVISION, META, REVOCATIONS, SYSTEM,
    TUPLES, VAULT,
};
use super::{
    check_batch, codec, Change, Channel, Committed, Op, Outcome, Purged, RevocationKey, Snapshot,
    State, Store, StoreError, Tuple, VaultEntry, VaultKey, MAX_BATCH_OPS,
};

/// The database file's name inside the data dir.
pub const STORE_FILE: &str = "subzero.redb";

/// The file format this code writes (the `SYSTEM` table's `format`).
const FORMAT: u64 = 1;

/// An encode buffer grown past this is released after its commit.
const KEEP_BUFFER_BYTES: usize = 1 << 20;

/// How the embedded engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Newest committed batches the feed keeps (at least 1). Shard mirrors are fed as each
    /// batch commits and never read it back; this bounds how far behind a restarting or
    /// remote follower may be before it needs a snapshot.
    pub retained_changes: u64,
    /// redb's page cache (its default is 1 GiB; the store is off the request path, so small).
    pub cache_bytes: usize,
    /// Two-phase commit with the allocator state saved each commit: instant recovery after a
    /// crash for a slower commit.
    pub quick_repair: bool,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            retained_changes: 100_000,
            cache_bytes: 64 << 20,
            quick_repair: false,
        }
    }
}

/// The redb engine; owned by the control plane thread.
pub struct RedbStore {
    /// `None` between a failed write (redb refuses all work after an I/O error, e.g. a full
    /// disk) and the next write, which reopens the file.
    db: Option<Database>,
    path: PathBuf,
    options: StoreOptions,
    /// Newest committed revision.
    revision: u64,
    /// Highest revision trimmed from the feed.
    floor: u64,
    /// Reused encode buffer for a batch's change record.
    buf: Vec<u8>,
    /// Commits are durable when they return (the default). Off when another engine holds
    /// the record (the fleet): then `flush` makes the commits so far durable.
    durable: bool,
}

impl RedbStore {
    /// Opens `<data_dir>/subzero.redb`, creating it (mode 0600) and its tables when missing.
    /// After a crash redb repairs the file first (the last durable commit wins).
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<RedbStore, StoreError> {
        let path = data_dir.join(STORE_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        let db = open_database(file, &options)?;
        let mut store = RedbStore {
            db: Some(db),
            path,
            options: StoreOptions {
                retained_changes: options.retained_changes.max(1),
                ..options
            },
            revision: 0,
            floor: 0,
            buf: Vec::new(),
            durable: true,
        };
        store.init()?;
        if !existed {
            // The new file's directory entry must be durable too.
            let sync_dir = File::open(data_dir).and_then(|dir| dir.sync_all());
            sync_dir.map_err(StoreError::io(data_dir))?;
        }
        Ok(store)
    }

    /// Creates the tables, checks the format, loads the revision and the feed floor.
    fn init(&mut self) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        let (revision, floor) = {
            let mut tables = Tables::open(&txn).map_err(StoreError::engine)?;
            let get = |tables: &Tables, key| {
                let value = tables.system.get(key).map_err(StoreError::engine)?;
                Ok::<_, StoreError>(value.map(|g| g.value()))
            };
            match get(&tables, KEY_FORMAT)? {
                None => {
                    tables
                        .system
                        .insert(KEY_FORMAT, FORMAT)
                        .map_err(StoreError::engine)?;
                }
                Some(FORMAT) => {}
                Some(found) => {
                    return Err(StoreError::Format {
                        found,
                        expected: FORMAT,
                    })
                }
            }
            let revision = get(&tables, KEY_REVISION)?.unwrap_or(0);
            let floor = get(&tables, KEY_FLOOR)?.unwrap_or(0);
            (revision, floor)
        };
        if floor > revision {
            return Err(StoreError::Corrupt(format!(
                "feed floor {floor} above revision {revision}"
            )));
        }
        txn.commit().map_err(StoreError::engine)?;
        self.revision = revision;
        self.floor = floor;
        Ok(())
    }

    /// Whether each commit is durable when it returns. When another engine holds the record
    /// (the fleet's Redis), commits may skip the sync and `flush` makes them durable later:
    /// a crash then loses only what the other engine can give back.
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// Makes every commit so far durable (one synced commit).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.reopen_if_closed()?;
        let result = (|| {
            let mut txn = self.db()?.begin_write().map_err(StoreError::engine)?;
            txn.set_durability(Durability::Immediate)
                .map_err(StoreError::engine)?;
            txn.commit().map_err(StoreError::engine)
        })();
        self.close_after(result)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest revision trimmed from the feed: `changes_since` works from here on.
    pub fn feed_floor(&self) -> u64 {
        self.floor
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or(StoreError::Closed)
    }

    /// After a failed write redb answers every later call with `PreviousIo` until the
    /// database is reopened: close it and open the file again (redb recovers to the last
    /// durable commit, and `init` reloads the revision), so writes resume once the cause (a
    /// full disk) is gone. While the reopen fails, the store stays closed and says so.
    fn reopen_if_closed(&mut self) -> Result<(), StoreError> {
        if self.db.is_some() {
            return Ok(());
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(StoreError::io(&self.path))?;
        self.db = Some(open_database(file, &self.options)?);
        if let Err(e) = self.init() {
            self.db = None;
            return Err(e);
        }
        tracing::info!(path = %self.path.display(), revision = self.revision, "store reopened after a failed write");
        Ok(())
    }

    /// Closes the engine after a failed write (see `reopen_if_closed`).
    fn close_after<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(result, Err(StoreError::Engine(_) | StoreError::Io { .. })) {
            self.db = None;
        }
        result
    }

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db()?.begin_write().map_err(StoreError::engine)?;
        let durability = if self.durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(StoreError::engine)?;
        txn.set_quick_repair(self.options.quick_repair);
        Ok(txn)
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.db()?.begin_read().map_err(StoreError::engine)
    }

    /// Commits `txn` when the batch changed anything (`n_applied > 0`, change record in
    /// `self.buf`), as the next revision; aborts it otherwise. Returns the revision.
    fn finish(&mut self, txn: WriteTransaction, n_applied: usize) -> Result<u64, StoreError> {
        if n_applied == 0 {
            txn.abort().map_err(StoreError::engine)?;
            return Ok(self.revision);
        }
        let revision = self.revision + 1;
        codec::finish(&mut self.buf, n_applied);
        let floor = {
            let mut tables = Tables::open(&txn).map_err(StoreError::engine)?;
            let retained = self.options.retained_changes;
            let appended = tables.append_change(revision, &self.buf, self.floor, retained);
            appended.map_err(StoreError::engine)?
        };
        txn.commit().map_err(StoreError::engine)?;
        self.revision = revision;
        self.floor = floor;
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = Vec::new();
        }
        Ok(revision)
    }
}

/// Opens the engine over `file`. Every page's checksum is verified at open: a file damaged
/// outside redb (disk, hand edit) then fails to open with `Corrupted`, naming the file, where
/// a plain open trusts it and a later read may panic (seen with a 16-byte overwrite in
/// e2e_faults). It reads the whole file once per open, which is small next to what the server
/// keeps in memory.
fn open_database(file: File, options: &StoreOptions) -> Result<Database, StoreError> {
    let backend = FileBackend::new(file).map_err(StoreError::engine)?;
    Database::builder()
        .set_cache_size(options.cache_bytes)
        .set_check_integrity_on_open(true)
        .create_with_backend(backend)
        .map_err(StoreError::engine)
}

impl Store for RedbStore {
    fn write(&mut self, ops: &[Op], now_s: u64) -> Result<Committed, StoreError> {
        check_batch(ops)?;
        self.reopen_if_closed()?;
        let result = self.write_open(ops, now_s);
        self.close_after(result)
    }

    fn revision(&self) -> u64 {
        self.revision
    }

    fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.changes_since_open(after, limit)
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        read_snapshot(&self.begin_read()?).map_err(StoreError::engine)
    }

    fn purge_expired(&mut self, now_s: u64, max_records: usize) -> Result<Purged, StoreError> {
        self.reopen_if_closed()?;
        let result = self.purge_expired_open(now_s, max_records);
        self.close_after(result)
    }

    fn trim_changes(&mut self, through: u64) -> Result<u64, StoreError> {
        self.reopen_if_closed()?;
        let result = self.trim_changes_open(through);
        self.close_after(result)
    }
}

impl RedbStore {
    fn write_open(&mut self, ops: &[Op], now_s: u64) -> Result<Committed, StoreError> {
        if ops.is_empty() {
            let revision = self.revision;
            return Ok(Committed {
                revision,
                outcomes: Vec::new(),
            });
        }
        let mut outcomes = Vec::with_capacity(ops.len());
        let txn = self.begin_write()?;
        codec::begin(&mut self.buf);
        {
            let mut tables = Tables::open(&txn).map_err(StoreError::engine)?;
            for op in ops {
                let outcome = tables.apply(op, now_s).map_err(StoreError::engine)?;
                if outcome == Outcome::Applied {
                    codec::encode(op, &mut self.buf);
                }
                outcomes.push(outcome);
            }
        }
        let n_applied = outcomes.iter().filter(|&&o| o == Outcome::Applied).count();
        let revision = self.finish(txn, n_applied)?;
        debug_assert_eq!(outcomes.len(), ops.len());
        Ok(Committed { revision, outcomes })
    }

    fn changes_since_open(&self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        if after > self.revision {
            return Err(StoreError::Ahead {
                after,
                current: self.revision,
            });
        }
        if after < self.floor {
            return Err(StoreError::Trimmed {
                after,
                oldest: self.floor,
            });
        }
        let txn = self.begin_read()?;
        let table = txn.open_table(CHANGES).map_err(StoreError::engine)?;
        let range = table.range((after + 1)..).map_err(StoreError::engine)?;
        let mut changes = Vec::new();
        for item in range.take(limit) {
            let (revision, record) = item.map_err(StoreError::engine)?;
            let revision = revision.value();
            // Revisions are contiguous: a gap means a lost change, never a skipped one.
            if revision != after + 1 + changes.len() as u64 {
                return Err(StoreError::Corrupt(format!(
                    "feed jumps to revision {revision} after {}",
                    after + changes.len() as u64
                )));
            }
            let ops = codec::decode(record.value(), revision)?;
            changes.push(Change { revision, ops });
        }
        Ok(changes)
    }

    fn purge_expired_open(&mut self, now_s: u64, max_records: usize) -> Result<Purged, StoreError> {
        let max_records = max_records.min(MAX_BATCH_OPS);
        let txn = self.begin_write()?;
        let mut ops = Vec::new();
        {
            let mut tables = Tables::open(&txn).map_err(StoreError::engine)?;
            tables
                .purge(now_s, max_records, &mut ops)
                .map_err(StoreError::engine)?;
        }
        codec::begin(&mut self.buf);
        for op in &ops {
            codec::encode(op, &mut self.buf);
        }
        let revision = self.finish(txn, ops.len())?;
        Ok(Purged {
            n_records: ops.len(),
            revision,
            more: max_records > 0 && ops.len() == max_records,
        })
    }

    fn trim_changes_open(&mut self, through: u64) -> Result<u64, StoreError> {
        let through = through.min(self.revision);
        if through <= self.floor {
            return Ok(self.floor);
        }
        let txn = self.begin_write()?;
        {
            let mut tables = Tables::open(&txn).map_err(StoreError::engine)?;
            tables
                .changes
                .retain_in(..=through, |_, _| false)
                .map_err(StoreError::engine)?;
            tables
                .system
                .insert(KEY_FLOOR, through)
                .map_err(StoreError::engine)?;
        }
        txn.commit().map_err(StoreError::engine)?;
        self.floor = through;
        Ok(through)
    }
}

/// Every record and the revision, from one read transaction (a consistent view).
fn read_snapshot(txn: &ReadTransaction) -> Result<Snapshot, redb::Error> {
    let revision = txn
        .open_table(SYSTEM)?
        .get(KEY_REVISION)?
        .map_or(0, |g| g.value());
    let mut state = State::default();
    for item in txn.open_table(TUPLES)?.iter()? {
        let (k, v) = item?;
        let (object, relation, subject) = k.value();
        let tuple = Tuple {
            object: object.to_owned(),
            relation: relation.to_owned(),
            subject: subject.to_owned(),
        };
        state.tuples.insert(tuple, v.value());
    }
    for item in txn.open_table(VAULT)?.iter()? {
        let (k, v) = item?;
        let ((namespace, name), (version, expires_at_s, sealed)) = (k.value(), v.value());
        let key = VaultKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let entry = VaultEntry {
            sealed: sealed.to_vec(),
            version,
            expires_at_s,
        };
        state.vault.insert(key, entry);
    }
    for item in txn.open_table(CHANNELS)?.iter()? {
        let (k, v) = item?;
        let (a, b, expires_at_s) = v.value();
        let channel = Channel {
            jtis: [a.to_owned(), b.to_owned()],
            expires_at_s,
        };
        state.channels.insert(k.value().to_owned(), channel);
    }
    for item in txn.open_table(REVOCATIONS)?.iter()? {
        let (k, v) = item?;
        let (iss, jti) = k.value();
        let key = RevocationKey {
            iss: iss.to_owned(),
            jti: jti.to_owned(),
        };
        state.revocations.insert(key, v.value());
    }
    for item in txn.open_table(META)?.iter()? {
        let (k, v) = item?;
        state.meta.insert(k.value().to_owned(), v.value().to_vec());
    }
    Ok(Snapshot { revision, state })
}
