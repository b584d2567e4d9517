//! Zanzibar-style permissions: a schema in SpiceDB's schema language (a subset), an immutable
//! relationship snapshot shared by every shard, a check evaluator and a shard-local decision
//! cache. Pure decision code: no I/O, no clocks (`now_s` is an argument), no locks.
//!
//! How the server uses it:
//! - At start: [`Schema::parse`] the `[permissions] schema_file` text (errors read
//!   `schema.zed:3:18: expected ...`), then [`Snapshot::empty`] and one [`Snapshot::apply`] of
//!   the stored tuples; hold the result as `Arc<Snapshot>`.
//! - Writes (control plane): [`parse_tuples_body`] → [`TupleText::resolve`] each →
//!   [`Change::Touch`] / [`Change::Delete`] → [`Snapshot::apply`] (atomic, next revision) →
//!   persist → broadcast the new `Arc<Snapshot>`; each shard swaps its pointer.
//! - Checks (shard): [`parse_check_body`]; if `at_least_revision` is newer than the shard's
//!   snapshot, wait for the broadcast; else [`DecisionCache::get`] at the snapshot's revision,
//!   or [`check`] and [`DecisionCache::insert`].

mod cache;
mod eval;
mod parse;
#[doc(hidden)]
pub mod reference;
mod schema;
mod store;
mod tuple;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use cache::{DecisionCache, MAX_CACHE_ENTRIES};
pub use eval::{check, CheckError, Decision, DEPTH_CAP};
pub use parse::{Pos, SchemaError, MAX_NAME_BYTES, MAX_SCHEMA_BYTES};
pub use schema::{Schema, MAX_RELS, MAX_TYPES};
pub use store::{Snapshot, StoreError};
pub use tuple::{
    parse_check_body, parse_object, parse_subject, parse_tuples_body, Change, CheckRequest,
    ObjectRef, Relationship, SubjectRef, TupleError, TupleText,
};

/// Every bound of the permission engine; the config fills it, [`Limits::default`] is sane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest object or subject id, in bytes (at most 65,535).
    pub max_id_bytes: usize,
    /// Most tuples for one object and relation (members of one group, viewers of one doc).
    pub max_fanout: usize,
    /// Most tuples in the store.
    pub max_tuples: usize,
    /// Most tuples in one write request body.
    pub max_tuples_per_write: usize,
    /// Deepest path of nodes one check may follow (at most [`DEPTH_CAP`]).
    pub max_depth: u32,
    /// Most nodes one check may visit.
    pub max_work: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_id_bytes: 256,
            max_fanout: 100_000,
            max_tuples: 16 * 1024 * 1024,
            max_tuples_per_write: 1000,
            max_depth: 32,
            max_work: 20_000,
        }
    }
}
