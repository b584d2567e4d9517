//! Size limits of records and batches, checked before anything is written.
//!
//! The control plane calls `Op::check` on each request's ops before it joins a batch, so one
//! bad request is answered alone (400/413) and never fails its neighbours' group commit; the
//! store checks the whole batch again with `check_batch` (both ends of the interface).

use super::codec;
use super::{LimitError, Op, StoreError};
use crate::plane::valid_jti;

/// Most ops in one batch (one commit). Above the control plane's `MAX_CONTROL_BATCH` (1024
/// requests) times a few ops each, and large enough for a bulk relationship import.
pub const MAX_BATCH_OPS: usize = 16_384;

/// Most encoded bytes in one batch: bounds a commit's size, the change record it leaves in the
/// feed and the memory a follower needs to read one change.
pub const MAX_BATCH_BYTES: usize = 32 << 20;

/// Longest name-like field: tuple parts, vault namespace and name, channel id, issuer, meta key.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Largest sealed vault entry (nonce, ciphertext and tag). The vault's own plaintext limit is
/// smaller; this is the store's backstop.
pub const MAX_SEALED_BYTES: usize = 64 << 10;

/// Largest meta value.
pub const MAX_META_VALUE_BYTES: usize = 64 << 10;

const _: () = assert!(MAX_BATCH_BYTES >= 4 * MAX_SEALED_BYTES + codec::HEADER_BYTES);
const _: () = assert!(MAX_BATCH_OPS <= u32::MAX as usize);

fn field(name: &'static str, value: &str) -> Result<(), LimitError> {
    bytes_field(name, value.as_bytes(), MAX_FIELD_BYTES)?;
    if value.is_empty() {
        return Err(LimitError::Empty { field: name });
    }
    Ok(())
}

fn bytes_field(name: &'static str, value: &[u8], max: usize) -> Result<(), LimitError> {
    if value.len() > max {
        return Err(LimitError::TooLong {
            field: name,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn jti(name: &'static str, value: &str) -> Result<(), LimitError> {
    if valid_jti(value) {
        Ok(())
    } else {
        Err(LimitError::InvalidJti { field: name })
    }
}

impl Op {
    /// Whether this op may be submitted: every field within its limit.
    pub fn check(&self) -> Result<(), LimitError> {
        match self {
            Op::WriteTuple { tuple, .. } | Op::DeleteTuple { tuple } => {
                field("object", &tuple.object)?;
                field("relation", &tuple.relation)?;
                field("subject", &tuple.subject)
            }
            Op::PutVault { key, entry } => {
                field("namespace", &key.namespace)?;
                field("name", &key.name)?;
                bytes_field("sealed", &entry.sealed, MAX_SEALED_BYTES)
            }
            Op::DeleteVault { key } => {
                field("namespace", &key.namespace)?;
                field("name", &key.name)
            }
            Op::CreateChannel { id, channel } => {
                field("channel id", id)?;
                jti("channel jti", &channel.jtis[0])?;
                jti("channel jti", &channel.jtis[1])
            }
            Op::DeleteChannel { id } => field("channel id", id),
            Op::Revoke { key, .. } => {
                field("iss", &key.iss)?;
                jti("jti", &key.jti)
            }
            Op::ExpireRevocation { .. } => Err(LimitError::Reserved),
            Op::PutMeta { key, value } => {
                field("meta key", key)?;
                bytes_field("meta value", value, MAX_META_VALUE_BYTES)
            }
            Op::DeleteMeta { key } => field("meta key", key),
        }
    }
}

/// Checks a whole batch: op count, every op, encoded size. Returns the encoded size.
pub fn check_batch(ops: &[Op]) -> Result<usize, StoreError> {
    if ops.len() > MAX_BATCH_OPS {
        return Err(StoreError::TooManyOps {
            n_ops: ops.len(),
            max: MAX_BATCH_OPS,
        });
    }
    let mut bytes = codec::HEADER_BYTES;
    for (op_idx, op) in ops.iter().enumerate() {
        op.check()
            .map_err(|source| StoreError::Invalid { op_idx, source })?;
        bytes += codec::encoded_len(op);
    }
    if bytes > MAX_BATCH_BYTES {
        return Err(StoreError::TooManyBytes {
            bytes,
            max: MAX_BATCH_BYTES,
        });
    }
    Ok(bytes)
}
