//! The change log's binary encoding of a batch of ops.
//!
//! `[version u8][n_ops u32][op]*`; an op is a tag byte and its fields: strings and byte strings
//! as a `u32` length and the bytes, `u64` little-endian, an optional `u64` as a 0/1 byte and
//! the value. Compact (a tuple write is its three strings plus 13 bytes) and engine-neutral:
//! a Redis Stream entry can carry the same bytes. Decoding checks every length against the
//! buffer and fails with `StoreError::Corrupt`, never a panic.

use super::{Channel, Op, RevocationKey, StoreError, Tuple, VaultEntry, VaultKey};

/// Version byte of an encoded batch.
const VERSION: u8 = 1;

const TAG_WRITE_TUPLE: u8 = 1;
const TAG_DELETE_TUPLE: u8 = 2;
const TAG_PUT_VAULT: u8 = 3;
const TAG_DELETE_VAULT: u8 = 4;
const TAG_CREATE_CHANNEL: u8 = 5;
const TAG_DELETE_CHANNEL: u8 = 6;
const TAG_REVOKE: u8 = 7;
const TAG_EXPIRE_REVOCATION: u8 = 8;
const TAG_PUT_META: u8 = 9;
const TAG_DELETE_META: u8 = 10;

/// Bytes of the batch header.
pub(super) const HEADER_BYTES: usize = 5;

/// Encoded size of one op (what `MAX_BATCH_BYTES` counts).
pub(super) fn encoded_len(op: &Op) -> usize {
    fn s(s: &str) -> usize {
        4 + s.len()
    }
    fn opt(v: Option<u64>) -> usize {
        if v.is_some() {
            9
        } else {
            1
        }
    }
    1 + match op {
        Op::WriteTuple {
            tuple,
            expires_at_s,
        } => tuple_len(tuple) + opt(*expires_at_s),
        Op::DeleteTuple { tuple } => tuple_len(tuple),
        Op::PutVault { key, entry } => {
            s(&key.namespace) + s(&key.name) + 4 + entry.sealed.len() + 8 + opt(entry.expires_at_s)
        }
        Op::DeleteVault { key } => s(&key.namespace) + s(&key.name),
        Op::CreateChannel { id, channel } => s(id) + s(&channel.jtis[0]) + s(&channel.jtis[1]) + 8,
        Op::DeleteChannel { id } | Op::DeleteMeta { key: id } => s(id),
        Op::Revoke { key, .. } => s(&key.iss) + s(&key.jti) + 8,
        Op::ExpireRevocation { key } => s(&key.iss) + s(&key.jti),
        Op::PutMeta { key, value } => s(key) + 4 + value.len(),
    }
}

fn tuple_len(tuple: &Tuple) -> usize {
    12 + tuple.object.len() + tuple.relation.len() + tuple.subject.len()
}

/// Starts a batch in `out` (cleared): the header, with a count `finish` sets.
pub(super) fn begin(out: &mut Vec<u8>) {
    out.clear();
    out.push(VERSION);
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// Sets the op count of a batch started with `begin`.
pub(super) fn finish(out: &mut [u8], n_ops: usize) {
    debug_assert!(out.len() >= HEADER_BYTES && out[0] == VERSION);
    let n_ops = u32::try_from(n_ops).unwrap_or(u32::MAX);
    out[1..HEADER_BYTES].copy_from_slice(&n_ops.to_le_bytes());
}

/// Appends one op.
pub(super) fn encode(op: &Op, out: &mut Vec<u8>) {
    let before = out.len();
    match op {
        Op::WriteTuple {
            tuple,
            expires_at_s,
        } => {
            out.push(TAG_WRITE_TUPLE);
            put_tuple(out, tuple);
            put_opt(out, *expires_at_s);
        }
        Op::DeleteTuple { tuple } => {
            out.push(TAG_DELETE_TUPLE);
            put_tuple(out, tuple);
        }
        Op::PutVault { key, entry } => {
            out.push(TAG_PUT_VAULT);
            put_str(out, &key.namespace);
            put_str(out, &key.name);
            put_bytes(out, &entry.sealed);
            out.extend_from_slice(&entry.version.to_le_bytes());
            put_opt(out, entry.expires_at_s);
        }
        Op::DeleteVault { key } => {
            out.push(TAG_DELETE_VAULT);
            put_str(out, &key.namespace);
            put_str(out, &key.name);
        }
        Op::CreateChannel { id, channel } => {
            out.push(TAG_CREATE_CHANNEL);
            put_str(out, id);
            put_str(out, &channel.jtis[0]);
            put_str(out, &channel.jtis[1]);
            out.extend_from_slice(&channel.expires_at_s.to_le_bytes());
        }
        Op::DeleteChannel { id } => {
            out.push(TAG_DELETE_CHANNEL);
            put_str(out, id);
        }
        Op::Revoke { key, exp_s } => {
            out.push(TAG_REVOKE);
            put_str(out, &key.iss);
            put_str(out, &key.jti);
            out.extend_from_slice(&exp_s.to_le_bytes());
        }
        Op::ExpireRevocation { key } => {
            out.push(TAG_EXPIRE_REVOCATION);
            put_str(out, &key.iss);
            put_str(out, &key.jti);
        }
        Op::PutMeta { key, value } => {
            out.push(TAG_PUT_META);
            put_str(out, key);
            put_bytes(out, value);
        }
        Op::DeleteMeta { key } => {
            out.push(TAG_DELETE_META);
            put_str(out, key);
        }
    }
    debug_assert_eq!(out.len() - before, encoded_len(op));
}

fn put_tuple(out: &mut Vec<u8>, tuple: &Tuple) {
    put_str(out, &tuple.object);
    put_str(out, &tuple.relation);
    put_str(out, &tuple.subject);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Fields are limited far below 4 GiB (`limits.rs`) before anything is encoded.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(0),
    }
}

/// Decodes a batch written by `begin`/`encode`/`finish`.
pub(super) fn decode(buf: &[u8], revision: u64) -> Result<Vec<Op>, StoreError> {
    let mut r = Reader { buf, pos: 0 };
    let corrupt = |what: &str| StoreError::Corrupt(format!("change {revision}: {what}"));
    if r.u8().map_err(|_| corrupt("empty"))? != VERSION {
        return Err(corrupt("unknown encoding version"));
    }
    let n_ops = r.u32().map_err(|_| corrupt("truncated header"))? as usize;
    // Each op takes at least 5 bytes, so a count the buffer cannot hold is corrupt, and the
    // allocation below stays bounded by the buffer.
    if n_ops > buf.len() / 5 {
        return Err(corrupt("op count larger than the record"));
    }
    let mut ops = Vec::with_capacity(n_ops);
    for _ in 0..n_ops {
        ops.push(r.op().map_err(|_| corrupt("truncated or unknown op"))?);
    }
    if r.pos != buf.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(ops)
}

/// A record that is cut short, or holds a tag, flag or string it cannot hold.
struct Malformed;

type Read<T> = Result<T, Malformed>;

/// A cursor over an encoded batch; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Read<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Malformed)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Malformed)?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Read<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Read<u32> {
        let bytes = self.take(4)?.try_into().map_err(|_| Malformed)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> Read<u64> {
        let bytes = self.take(8)?.try_into().map_err(|_| Malformed)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn bytes(&mut self) -> Read<Vec<u8>> {
        let len = self.u32()? as usize;
        self.take(len).map(<[u8]>::to_vec)
    }

    fn string(&mut self) -> Read<String> {
        String::from_utf8(self.bytes()?).map_err(|_| Malformed)
    }

    fn opt(&mut self) -> Read<Option<u64>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.u64().map(Some),
            _ => Err(Malformed),
        }
    }

    fn tuple(&mut self) -> Read<Tuple> {
        Ok(Tuple {
            object: self.string()?,
            relation: self.string()?,
            subject: self.string()?,
        })
    }

    fn vault_key(&mut self) -> Read<VaultKey> {
        Ok(VaultKey {
            namespace: self.string()?,
            name: self.string()?,
        })
    }

    fn revocation_key(&mut self) -> Read<RevocationKey> {
        Ok(RevocationKey {
            iss: self.string()?,
            jti: self.string()?,
        })
    }

    fn op(&mut self) -> Read<Op> {
        Ok(match self.u8()? {
            TAG_WRITE_TUPLE => Op::WriteTuple {
                tuple: self.tuple()?,
                expires_at_s: self.opt()?,
            },
            TAG_DELETE_TUPLE => Op::DeleteTuple {
                tuple: self.tuple()?,
            },
            TAG_PUT_VAULT => Op::PutVault {
                key: self.vault_key()?,
                entry: VaultEntry {
                    sealed: self.bytes()?,
                    version: self.u64()?,
                    expires_at_s: self.opt()?,
                },
            },
            TAG_DELETE_VAULT => Op::DeleteVault {
                key: self.vault_key()?,
            },
            TAG_CREATE_CHANNEL => Op::CreateChannel {
                id: self.string()?,
                channel: Channel {
                    jtis: [self.string()?, self.string()?],
                    expires_at_s: self.u64()?,
                },
            },
            TAG_DELETE_CHANNEL => Op::DeleteChannel { id: self.string()? },
            TAG_REVOKE => Op::Revoke {
                key: self.revocation_key()?,
                exp_s: self.u64()?,
            },
            TAG_EXPIRE_REVOCATION => Op::ExpireRevocation {
                key: self.revocation_key()?,
            },
            TAG_PUT_META => Op::PutMeta {
                key: self.string()?,
                value: self.bytes()?,
            },
            TAG_DELETE_META => Op::DeleteMeta {
                key: self.string()?,
            },
            _ => return Err(Malformed),
        })
    }
}
