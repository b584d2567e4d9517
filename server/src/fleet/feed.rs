//! The change feed on Redis: one Stream every node appends to and applies in order, with a
//! contiguous revision per entry, plus the snapshot a joining node starts from.
//!
//! Keys carry the hash tag `{sz}`, so on a Redis Cluster they all live in one slot and one
//! Lua script may touch them together (the feed is one master's work; rate-limit keys spread
//! over the others). An entry's fields: `r` its revision (`INCR` in the same script as the
//! `XADD`, so revisions are contiguous and a gap means the feed was trimmed past this node),
//! `n` the node that wrote it, `k` its kind, `b` its body (the store codec's batch bytes for
//! records; JSON for blocks and keys).

use redis::Value;
use serde::{Deserialize, Serialize};

use super::conn::Conn;
use crate::store::{self, Op, StoreError};

/// The Stream.
pub const FEED_KEY: &str = "sz:{sz}:feed";
/// The revision counter.
pub const REV_KEY: &str = "sz:{sz}:rev";
/// The newest snapshot: a hash of `rev`, `id` and `body`.
pub const SNAP_KEY: &str = "sz:{sz}:snap";
/// Published public keys: node → JWKS JSON.
pub const KEYS_KEY: &str = "sz:{sz}:keys";
/// Blocklist: CIDR → JSON `{until_unix_s, reason}`.
pub const BLOCKS_KEY: &str = "sz:{sz}:blocks";
/// Most entries one read returns.
pub const MAX_READ: usize = 512;

/// Appends one entry and returns its id, its revision and every entry after `after` up to
/// and including it (at most `max` of them), in one atomic step.
const APPEND: &str = r"
local rev = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[1], '*', 'r', rev, 'n', ARGV[1], 'k', ARGV[2], 'b', ARGV[3])
if ARGV[5] == 'hset' then
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
elseif ARGV[5] == 'hdel' then
  redis.call('HDEL', KEYS[3], ARGV[6])
end
local range = redis.call('XRANGE', KEYS[1], '(' .. ARGV[4], id, 'COUNT', tonumber(ARGV[8]))
return {id, rev, range}
";

/// Stores a snapshot unless a newer one is there, then trims the feed before it.
const PUT_SNAPSHOT: &str = r"
local have = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
if tonumber(ARGV[1]) <= have then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[1], 'id', ARGV[2], 'body', ARGV[3])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
return 1
";

/// What an entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Records: the store ops of one batch.
    Records(Vec<Op>),
    /// A source blocked in every node's kernel gate.
    Block(BlockEntry),
    /// A block lifted.
    Unblock {
        /// The CIDR.
        cidr: String,
    },
    /// A node's public keys (its whole current JWKS).
    Keys {
        /// The node.
        node: String,
        /// `{"keys":[...]}`.
        jwks: String,
    },
}

/// A fleet-wide block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    /// `a.b.c.d/len` or an IPv6 CIDR.
    pub cidr: String,
    /// Unix seconds it ends; `None`: until removed.
    pub until_unix_s: Option<u64>,
    /// `manual`, `rate`, `threat`.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct UnblockBody {
    cidr: String,
}

#[derive(Serialize, Deserialize)]
struct KeysBody {
    node: String,
    jwks: String,
}

impl Kind {
    fn tag(&self) -> &'static str {
        match self {
            Kind::Records(_) => "store",
            Kind::Block(_) => "block",
            Kind::Unblock { .. } => "unblock",
            Kind::Keys { .. } => "keys",
        }
    }

    fn body(&self) -> Vec<u8> {
        match self {
            Kind::Records(ops) => store::encode_ops(ops),
            Kind::Block(b) => serde_json::to_vec(b).unwrap_or_default(),
            Kind::Unblock { cidr } => {
                serde_json::to_vec(&UnblockBody { cidr: cidr.clone() }).unwrap_or_default()
            }
            Kind::Keys { node, jwks } => serde_json::to_vec(&KeysBody {
                node: node.clone(),
                jwks: jwks.clone(),
            })
            .unwrap_or_default(),
        }
    }

    fn parse(tag: &[u8], body: &[u8], rev: u64) -> Result<Kind, String> {
        let json = |e: serde_json::Error| e.to_string();
        match tag {
            b"store" => store::decode_ops(body, rev)
                .map(Kind::Records)
                .map_err(|e| e.to_string()),
            b"block" => serde_json::from_slice(body).map(Kind::Block).map_err(json),
            b"unblock" => serde_json::from_slice::<UnblockBody>(body)
                .map(|b| Kind::Unblock { cidr: b.cidr })
                .map_err(json),
            b"keys" => serde_json::from_slice::<KeysBody>(body)
                .map(|b| Kind::Keys {
                    node: b.node,
                    jwks: b.jwks,
                })
                .map_err(json),
            other => Err(format!("unknown kind {:?}", String::from_utf8_lossy(other))),
        }
    }

    /// The Redis hash the append also updates, for a joining node's start.
    fn side(&self) -> (&'static str, &'static str, String, Vec<u8>) {
        match self {
            Kind::Records(_) => (REV_KEY, "", String::new(), Vec::new()),
            Kind::Block(b) => (
                BLOCKS_KEY,
                "hset",
                b.cidr.clone(),
                serde_json::to_vec(b).unwrap_or_default(),
            ),
            Kind::Unblock { cidr } => (BLOCKS_KEY, "hdel", cidr.clone(), Vec::new()),
            Kind::Keys { node, jwks } => (KEYS_KEY, "hset", node.clone(), jwks.clone().into()),
        }
    }
}

/// A Stream id, `ms-seq`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl StreamId {
    /// Parses `ms-seq`.
    pub fn parse(text: &[u8]) -> Option<StreamId> {
        let text = std::str::from_utf8(text).ok()?;
        let (ms, seq) = text.split_once('-')?;
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One feed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its Stream id.
    pub id: StreamId,
    /// Its fleet revision.
    pub rev: u64,
    /// The node that wrote it.
    pub node: String,
    /// What it says.
    pub kind: Kind,
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("fleet feed: {what}"))
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

/// Parses one `[id, [field, value, ...]]` of an XRANGE/XREAD reply.
fn parse_entry(v: &Value) -> Result<Entry, StoreError> {
    let Value::Array(parts) = v else {
        return Err(corrupt("an entry is not an array"));
    };
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return Err(corrupt("an entry is not [id, fields]"));
    };
    let id = bytes(id)
        .and_then(StreamId::parse)
        .ok_or_else(|| corrupt("bad entry id"))?;
    let (mut rev, mut node, mut tag, mut body) = (None, None, None, None);
    for pair in fields.chunks(2) {
        let [name, value] = pair else {
            return Err(corrupt(format!("entry {id}: odd field list")));
        };
        match bytes(name) {
            Some(b"r") => rev = int(value),
            Some(b"n") => node = bytes(value).map(|b| String::from_utf8_lossy(b).into_owned()),
            Some(b"k") => tag = bytes(value),
            Some(b"b") => body = bytes(value),
            _ => {}
        }
    }
    let (Some(rev), Some(node), Some(tag), Some(body)) = (rev, node, tag, body) else {
        return Err(corrupt(format!("entry {id}: missing fields")));
    };
    let kind = Kind::parse(tag, body, rev).map_err(|e| corrupt(format!("entry {id}: {e}")))?;
    Ok(Entry {
        id,
        rev,
        node,
        kind,
    })
}

fn parse_entries(v: &Value) -> Result<Vec<Entry>, StoreError> {
    match v {
        Value::Array(items) => items.iter().map(parse_entry).collect(),
        Value::Nil => Ok(Vec::new()),
        _ => Err(corrupt("a range is not an array")),
    }
}

/// What an append returned.
#[derive(Debug)]
pub struct Appended {
    /// The new entry's id.
    pub id: StreamId,
    /// Its revision.
    pub rev: u64,
    /// Entries after `after` through the new one (the new one last unless capped at `max`).
    pub entries: Vec<Entry>,
}

/// Appends `kind` as `node` and reads back everything after `after` through it.
pub fn append(
    conn: &mut Conn,
    node: &str,
    kind: &Kind,
    after: StreamId,
) -> redis::RedisResult<Result<Appended, StoreError>> {
    let (side_key, side_op, field, value) = kind.side();
    let reply: Value = redis::Script::new(APPEND)
        .key(FEED_KEY)
        .key(REV_KEY)
        .key(side_key)
        .arg(node)
        .arg(kind.tag())
        .arg(kind.body())
        .arg(after.to_string())
        .arg(side_op)
        .arg(field)
        .arg(value)
        .arg(MAX_READ)
        .invoke(conn.like())?;
    Ok((|| {
        let Value::Array(parts) = &reply else {
            return Err(corrupt("append reply is not an array"));
        };
        let [id, rev, range] = parts.as_slice() else {
            return Err(corrupt("append reply is not [id, rev, range]"));
        };
        Ok(Appended {
            id: bytes(id)
                .and_then(StreamId::parse)
                .ok_or_else(|| corrupt("bad id"))?,
            rev: int(rev).ok_or_else(|| corrupt("bad revision"))?,
            entries: parse_entries(range)?,
        })
    })())
}

/// Entries after `after`, oldest first, at most `MAX_READ`.
pub fn range_after(
    conn: &mut Conn,
    after: StreamId,
) -> redis::RedisResult<Result<Vec<Entry>, StoreError>> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(FEED_KEY)
        .arg(format!("({after}"))
        .arg("+")
        .arg("COUNT")
        .arg(MAX_READ)
        .query(conn.like())?;
    Ok(parse_entries(&reply))
}

/// Waits up to `block_ms` for entries after `after`; returns the newest id seen (or `after`)
/// and how many arrived. The tailing thread uses it only as a wake-up: the control plane
/// reads and applies the entries itself, in order.
pub fn wait_after(conn: &mut Conn, after: StreamId, block_ms: u64) -> redis::RedisResult<StreamId> {
    let reply: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(MAX_READ)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(FEED_KEY)
        .arg(after.to_string())
        .query(conn.like())?;
    // [[key, [[id, fields], ...]]] (RESP2) or a map (RESP3); Nil on timeout.
    let mut newest = after;
    let mut visit = |entries: &Value| {
        if let Value::Array(items) = entries {
            for item in items {
                if let Value::Array(parts) = item {
                    if let Some(id) = parts.first().and_then(bytes).and_then(StreamId::parse) {
                        newest = newest.max(id);
                    }
                }
            }
        }
    };
    match &reply {
        Value::Array(streams) => {
            for s in streams {
                if let Value::Array(kv) = s {
                    if let Some(entries) = kv.get(1) {
                        visit(entries);
                    }
                }
            }
        }
        Value::Map(streams) => {
            for (_, entries) in streams {
                visit(entries);
            }
        }
        _ => {}
    }
    Ok(newest)
}

/// The fleet's newest revision (0 before the first write).
pub fn head_rev(conn: &mut Conn) -> redis::RedisResult<u64> {
    let v: Option<u64> = redis::cmd("GET").arg(REV_KEY).query(conn.like())?;
    Ok(v.unwrap_or(0))
}

/// A published snapshot.
pub struct Snapshot {
    /// The revision it is at.
    pub rev: u64,
    /// The id of the entry with that revision.
    pub id: StreamId,
    /// The store codec's batch that recreates every record.
    pub ops: Vec<Op>,
}

/// The newest snapshot, if any.
pub fn get_snapshot(conn: &mut Conn) -> redis::RedisResult<Result<Option<Snapshot>, StoreError>> {
    let (rev, id, body): (Option<u64>, Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
        .arg(SNAP_KEY)
        .arg("rev")
        .arg("id")
        .arg("body")
        .query(conn.like())?;
    let (Some(rev), Some(id), Some(body)) = (rev, id, body) else {
        return Ok(Ok(None));
    };
    Ok((|| {
        let id = StreamId::parse(&id).ok_or_else(|| corrupt("snapshot id"))?;
        let ops = store::decode_ops(&body, rev)?;
        Ok(Some(Snapshot { rev, id, ops }))
    })())
}

/// Publishes a snapshot at `rev`/`id` (ignored when a newer one is there) and trims the feed
/// before `id`. Returns whether it was stored.
pub fn put_snapshot(
    conn: &mut Conn,
    rev: u64,
    id: StreamId,
    ops: &[Op],
) -> redis::RedisResult<bool> {
    let stored: i64 = redis::Script::new(PUT_SNAPSHOT)
        .key(SNAP_KEY)
        .key(FEED_KEY)
        .arg(rev)
        .arg(id.to_string())
        .arg(store::encode_ops(ops))
        .invoke(conn.like())?;
    Ok(stored == 1)
}

/// Every node's published JWKS.
pub fn all_keys(conn: &mut Conn) -> redis::RedisResult<Vec<(String, String)>> {
    redis::cmd("HGETALL").arg(KEYS_KEY).query(conn.like())
}

/// Every fleet block.
pub fn all_blocks(conn: &mut Conn) -> redis::RedisResult<Vec<BlockEntry>> {
    let raw: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL").arg(BLOCKS_KEY).query(conn.like())?;
    Ok(raw
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{parse_entry, Kind, StreamId};
    use redis::Value;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn stream_ids_order_like_redis() {
        let a = StreamId::parse(b"1700-9").unwrap();
        let b = StreamId::parse(b"1700-10").unwrap();
        let c = StreamId::parse(b"1701-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700-10");
        assert!(StreamId::parse(b"1700").is_none());
        assert!(StreamId::parse(b"x-1").is_none());
    }

    /// An XRANGE entry `[id, [r, n, k, b]]`.
    fn entry(rev: &[u8], node: &[u8], kind: &[u8], body: Vec<u8>) -> Value {
        Value::Array(vec![
            bulk(b"5-1"),
            Value::Array(vec![
                bulk(b"r"),
                bulk(rev),
                bulk(b"n"),
                bulk(node),
                bulk(b"k"),
                bulk(kind),
                bulk(b"b"),
                Value::BulkString(body),
            ]),
        ])
    }

    #[test]
    fn entries_parse_and_damage_is_an_error() {
        let ops = vec![crate::store::Op::Revoke {
            key: crate::store::RevocationKey {
                iss: "subzero".into(),
                jti: "j1".into(),
            },
            exp_s: 99,
        }];
        let body = crate::store::encode_ops(&ops);
        let e = parse_entry(&entry(b"7", b"node-a", b"store", body.clone())).unwrap();
        assert_eq!((e.rev, e.node.as_str()), (7, "node-a"));
        assert_eq!(e.kind, Kind::Records(ops));
        let truncated = entry(b"7", b"a", b"store", body[..body.len() - 3].to_vec());
        assert!(parse_entry(&truncated).is_err());
        let unknown = entry(b"7", b"a", b"bogus", b"{}".to_vec());
        assert!(parse_entry(&unknown)
            .unwrap_err()
            .to_string()
            .contains("unknown kind"));
    }
}
