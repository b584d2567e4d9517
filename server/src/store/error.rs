//! The store's typed errors: engine failures, refused batches, feed positions, migration.

use std::path::PathBuf;

/// Why one op was refused (before anything was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A field that must name something is empty.
    #[error("{field} is empty")]
    Empty {
        /// Which field.
        field: &'static str,
    },
    /// A field is longer than its maximum.
    #[error("{field} is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A `jti` is not 1 to 256 printable ASCII characters (the shards' own rule).
    #[error("{field} is not a valid jti")]
    InvalidJti {
        /// Which field.
        field: &'static str,
    },
    /// An op only the store itself writes (`ExpireRevocation`).
    #[error("this op is written by the store only")]
    Reserved,
}

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database engine failed (I/O, a corrupt page, a full disk, ...). The batch in
    /// progress, if any, was not applied.
    #[error("store engine: {0}")]
    Engine(Box<redb::Error>),
    /// A file next to the database (the data dir, the old revocation log) failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A batch holds more ops than `MAX_BATCH_OPS`.
    #[error("a batch of {n_ops} ops is more than the {max} allowed")]
    TooManyOps {
        /// Ops in the batch.
        n_ops: usize,
        /// The maximum.
        max: usize,
    },
    /// A batch's records add up to more than `MAX_BATCH_BYTES`.
    #[error("a batch of {bytes} bytes is more than the {max} allowed")]
    TooManyBytes {
        /// Encoded size of the batch.
        bytes: usize,
        /// The maximum.
        max: usize,
    },
    /// One op of the batch breaks a limit; nothing of the batch was applied.
    #[error("op {op_idx} of the batch: {source}")]
    Invalid {
        /// Its index in the batch.
        op_idx: usize,
        /// Which limit.
        source: LimitError,
    },
    /// The feed no longer holds every change after `after`: catch up from a snapshot.
    #[error("changes after revision {after} were trimmed; the feed starts after {oldest}: take a snapshot")]
    Trimmed {
        /// The revision asked for.
        after: u64,
        /// The lowest revision the feed can still be read after.
        oldest: u64,
    },
    /// A follower is ahead of the store (restored from an older backup?): rebuild it.
    #[error("revision {after} is ahead of the store's newest, {current}")]
    Ahead {
        /// The revision asked for.
        after: u64,
        /// The store's newest revision.
        current: u64,
    },
    /// The database holds something this code cannot have written.
    /// The engine was closed after a failed write and has not been reopened yet (the next
    /// write tries again).
    #[error("store engine closed after a failed write; the next write reopens it")]
    Closed,
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// The shared engine (the fleet's Redis) cannot be reached: a write that needs the fleet
    /// is refused, and the node keeps serving from what it has.
    #[error("the fleet store (Redis) is unreachable: {0}")]
    Unavailable(String),
    /// The database file was written by a different format of this store.
    #[error("store format {found} is not the supported format {expected}")]
    Format {
        /// The file's format.
        found: u64,
        /// This code's format.
        expected: u64,
    },
    /// A record of the old revocation log is damaged before its last line (a torn last line
    /// is a crash and is dropped). Importing stops rather than forget a revocation.
    #[error("{} line {line}: damaged revocation record; restore the file from a backup or remove the line after checking it", path.display())]
    DamagedLog {
        /// The log.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

impl StoreError {
    /// Wraps any redb error (they all convert into `redb::Error`).
    pub(crate) fn engine(e: impl Into<redb::Error>) -> StoreError {
        StoreError::Engine(Box::new(e.into()))
    }

    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
