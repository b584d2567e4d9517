//! Peer servers and criterion micro-benchmarks for `cargo xtask bench`.
