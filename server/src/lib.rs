//! subzero: a zero-trust authentication gateway on thread-per-core io_uring shards.

pub mod api;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod control;
pub mod gate;
pub mod hashing;
pub mod http;
pub mod monitor;
pub mod pool;
pub mod shard;
