//! Entry points for the `fuzz/` crate (cargo fuzz) into the change-log codec, which is
//! private to the store: decode what the feed would read, encode what a commit would write.
//! Not an API.

use super::{codec, migrate, Op};

/// Decodes one change-log record as the feed reads it (`None`: refused as corrupt).
pub fn decode_change(buf: &[u8]) -> Option<Vec<Op>> {
    codec::decode(buf, 1).ok()
}

/// Encodes `ops` as one change-log record, as a commit writes it.
pub fn encode_change(ops: &[Op]) -> Vec<u8> {
    let mut buf = Vec::new();
    codec::begin(&mut buf);
    for op in ops {
        codec::encode(op, &mut buf);
    }
    codec::finish(&mut buf, ops.len());
    buf
}

/// Parses one line of the old `revocations.log` as the one-time import does: `(jti, exp_s)`.
pub fn revocation_record(line: &[u8]) -> Option<(String, u64)> {
    migrate::parse_record(line).map(|(jti, exp_s)| (jti.to_owned(), exp_s))
}
