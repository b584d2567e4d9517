//! The thread-per-core runtime: one pinned io_uring loop per shard; the only module that drives sockets.
