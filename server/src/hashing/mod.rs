//! Batch hashing (xxh3, BLAKE3, BLAKE2b, SHA-256, SHA-512) for cache keys, audit chaining and fingerprints.
