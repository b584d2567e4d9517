//! Fuzz target: the record decoders recovery trusts — audit lines (`record::verify_line`,
//! `peek_seq`) and whole segments (`scan_segment`), the store's change-log codec and the old
//! revocation log's lines. Corrupt bytes must be refused with an error, never a panic; the
//! codec must give back exactly what it decoded.
//!
//! Audit input is re-chained by the harness (each line gets the hash its bytes and the line
//! before it give), so the fuzzer reaches the parsing behind the hash check.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use subzero::audit::record;

const HASH_KEY: &[u8] = b",\"hash\":\"";

/// `body` + `,"hash":"<link(prev, body)>"}`.
fn chained(prev: &record::Hash, body: &[u8]) -> (Vec<u8>, record::Hash) {
    let hash = record::link(prev, body);
    let mut line = body.to_vec();
    line.extend_from_slice(HASH_KEY);
    line.extend_from_slice(record::hex(&hash).as_bytes());
    line.extend_from_slice(b"\"}");
    (line, hash)
}

fn audit_segment(data: &[u8], rechain: bool) {
    let mut lines = data.split(|&b| b == b'\n');
    let header = lines.next().unwrap_or_default();
    let path = Path::new("seg-00000000000000000001.log");
    let mut segment = header.to_vec();
    segment.push(b'\n');
    let prev = serde_json::from_slice::<serde_json::Value>(header)
        .ok()
        .and_then(|h| h.get("prev")?.as_str().and_then(record::parse_hex))
        .unwrap_or([0; 32]);
    let mut head = prev;
    for body in lines {
        if rechain {
            let (line, hash) = chained(&head, body);
            segment.extend_from_slice(&line);
            head = hash;
        } else {
            segment.extend_from_slice(body);
        }
        segment.push(b'\n');
    }
    if let Ok(scan) = subzero::audit::scan_segment(path, &segment, &[1, 2, 3]) {
        assert!(scan.valid_len + scan.torn_bytes == segment.len() as u64);
        assert!(scan.wanted.len() as u64 <= scan.n_records.min(3));
    }
    for line in segment.split(|&b| b == b'\n') {
        let _ = record::peek_seq(line);
        let _ = record::verify_line(line, &prev, 1);
    }
}

fn store_change(data: &[u8]) {
    if let Some(ops) = subzero::store::fuzzing::decode_change(data) {
        let encoded = subzero::store::fuzzing::encode_change(&ops);
        assert_eq!(encoded, data, "decode then encode changed the record");
    }
}

fn revocation_line(data: &[u8]) {
    if let Some((jti, _exp_s)) = subzero::store::fuzzing::revocation_record(data) {
        assert!(!jti.is_empty() && !jti.contains(' '));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => audit_segment(rest, true),
        1 => audit_segment(rest, false),
        2 => store_change(rest),
        _ => revocation_line(rest),
    }
});
