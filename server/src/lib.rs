//! subzero: a zero-trust authentication gateway on thread-per-core io_uring shards.

pub mod api;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod cache;
pub mod cli;
pub mod config;
pub mod control;
pub mod fleet;
pub mod gate;
pub mod hashing;
pub mod http;
pub mod monitor;
pub mod plane;
pub mod pool;
pub mod ratelimit;
pub mod security;
pub mod serve;
pub mod shard;
pub mod store;
pub mod vault;
pub mod xaa;

/// Wall clock in unix seconds (the `now_s` every decision function takes).
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Wall clock in unix milliseconds.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
