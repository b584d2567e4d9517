//! Batch hashing (xxh3, BLAKE3, `BLAKE2b`, SHA-256, SHA-512) for cache keys, audit chaining and
//! fingerprints.
//!
//! One entry point per shape: [`hash_one`] for a single input and [`hash_batch`] for many. Each
//! algorithm uses the fastest single-thread path available to it here: xxh3 and BLAKE3 pick
//! their SIMD kernels at run time (BLAKE3 hashes the 1 KiB chunks of one large input in
//! parallel lanes), SHA-256/512 go through `ring` (SHA-NI / AVX2 assembly), `BLAKE2b` through
//! the `blake2` crate. None of these libraries offers a multi-buffer API for many small inputs,
//! so a batch is a tight loop that reuses the caller's output vector.
//!
//! Architecture Invariant: no threads, no I/O, no allocation beyond growing the caller's `out`.
//! Batches larger than [`BATCH_SPLIT_INPUTS`] inputs or [`BATCH_SPLIT_BYTES`] bytes take long
//! enough to delay a shard's requests: the caller may split them across shards (each shard
//! hashing its slice and sending digests back over the mesh) instead of hashing in one go.

use std::fmt;

use blake2::Digest as _;
use ring::digest;
use xxhash_rust::xxh3::xxh3_64;

/// Largest digest any algorithm produces (`BLAKE2b`-512, SHA-512).
pub const MAX_DIGEST_BYTES: usize = 64;

/// Batches with more inputs than this are worth splitting across shards (see module docs).
pub const BATCH_SPLIT_INPUTS: usize = 1024;

/// Batches with more input bytes than this are worth splitting across shards (~100 µs of
/// SHA-256 on one core).
pub const BATCH_SPLIT_BYTES: usize = 256 * 1024;

/// A hash algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// XXH3-64 with seed 0; 8-byte digest, big-endian (the canonical xxHash byte order). Not
    /// cryptographic: for hash tables and fingerprints only.
    Xxh3,
    /// BLAKE3 in hash mode; 32-byte digest.
    Blake3,
    /// `BLAKE2b` unkeyed with a 64-byte digest (RFC 7693).
    Blake2b,
    /// SHA-256 (FIPS 180-4); 32-byte digest.
    Sha256,
    /// SHA-512 (FIPS 180-4); 64-byte digest.
    Sha512,
}

impl HashAlg {
    /// Every algorithm, for iteration in tests and benches.
    pub const ALL: [HashAlg; 5] = [
        HashAlg::Xxh3,
        HashAlg::Blake3,
        HashAlg::Blake2b,
        HashAlg::Sha256,
        HashAlg::Sha512,
    ];

    /// Digest length in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            HashAlg::Xxh3 => 8,
            HashAlg::Blake3 | HashAlg::Sha256 => 32,
            HashAlg::Blake2b | HashAlg::Sha512 => 64,
        }
    }

    /// Lowercase name, as used in metrics labels and bench ids.
    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Xxh3 => "xxh3",
            HashAlg::Blake3 => "blake3",
            HashAlg::Blake2b => "blake2b",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha512 => "sha512",
        }
    }
}

/// A digest of up to [`MAX_DIGEST_BYTES`] bytes, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    bytes: [u8; MAX_DIGEST_BYTES],
    len: u8,
}

impl Digest {
    fn from_slice(bytes: &[u8]) -> Digest {
        debug_assert!(bytes.len() <= MAX_DIGEST_BYTES);
        let mut digest = Digest {
            bytes: [0; MAX_DIGEST_BYTES],
            len: bytes.len() as u8,
        };
        digest.bytes[..bytes.len()].copy_from_slice(bytes);
        digest
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Digest length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the digest is empty (never, for digests from this module).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(self, f)
    }
}

impl fmt::LowerHex for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The digest of one input.
pub fn hash_one(alg: HashAlg, input: &[u8]) -> Digest {
    match alg {
        HashAlg::Xxh3 => Digest::from_slice(&xxh3_64(input).to_be_bytes()),
        HashAlg::Blake3 => Digest::from_slice(blake3::hash(input).as_bytes()),
        HashAlg::Blake2b => Digest::from_slice(&blake2::Blake2b512::digest(input)),
        HashAlg::Sha256 => Digest::from_slice(digest::digest(&digest::SHA256, input).as_ref()),
        HashAlg::Sha512 => Digest::from_slice(digest::digest(&digest::SHA512, input).as_ref()),
    }
}

/// Replaces the contents of `out` with the digests of `inputs`, in order.
///
/// Reuse `out` across calls: once it has grown to the batch size, hashing allocates nothing.
/// The algorithm is chosen once per batch, not per input.
pub fn hash_batch(alg: HashAlg, inputs: &[&[u8]], out: &mut Vec<Digest>) {
    out.clear();
    out.reserve(inputs.len());
    match alg {
        HashAlg::Xxh3 => out.extend(
            inputs
                .iter()
                .map(|input| Digest::from_slice(&xxh3_64(input).to_be_bytes())),
        ),
        HashAlg::Blake3 => out.extend(
            inputs
                .iter()
                .map(|input| Digest::from_slice(blake3::hash(input).as_bytes())),
        ),
        HashAlg::Blake2b => {
            let mut hasher = blake2::Blake2b512::new();
            for input in inputs {
                hasher.update(input);
                out.push(Digest::from_slice(&hasher.finalize_reset()));
            }
        }
        HashAlg::Sha256 => batch_ring(&digest::SHA256, inputs, out),
        HashAlg::Sha512 => batch_ring(&digest::SHA512, inputs, out),
    }
}

fn batch_ring(algorithm: &'static digest::Algorithm, inputs: &[&[u8]], out: &mut Vec<Digest>) {
    out.extend(
        inputs
            .iter()
            .map(|input| Digest::from_slice(digest::digest(algorithm, input).as_ref())),
    );
}

#[cfg(test)]
mod tests;
