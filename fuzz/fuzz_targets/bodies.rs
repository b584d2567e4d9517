//! Fuzz target: every JSON and form request body parser, on the bytes a client sends. The
//! first byte picks the parser; each must answer with a value or a typed error, never panic,
//! and what it accepts must hold the bounds its handler relies on.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use subzero::authz::{self, Limits, Schema};

const NOW_S: u64 = 1_800_000_000;
/// `threat.max_text_bytes` default.
const MAX_TEXT_BYTES: usize = 16_384;
/// `audit.max_batch_events` and `max_field_bytes` defaults.
const MAX_EVENTS: usize = 1000;
const MAX_FIELD_BYTES: usize = 1024;

const SCHEMA: &str = "definition user {}
definition group { relation member: user | group#member }
definition doc {
  relation owner: user
  relation viewer: user | user:* | group#member
  permission view = viewer + owner
}";

fn schema() -> &'static Schema {
    static SCHEMA_ONCE: OnceLock<Schema> = OnceLock::new();
    SCHEMA_ONCE.get_or_init(|| Schema::parse("fuzz.zed", SCHEMA).expect("schema"))
}

fn relationships(body: &[u8]) {
    let limits = Limits::default();
    let Ok(tuples) = authz::parse_tuples_body(body, &limits) else {
        return;
    };
    // An empty list parses; the handler answers it `400 no tuples`.
    assert!(tuples.len() <= limits.max_tuples_per_write);
    for tuple in &tuples {
        if let Ok(resolved) = tuple.resolve(schema(), &limits) {
            // A resolved tuple prints back to a tuple that resolves to the same relationship.
            let text = resolved.to_text(schema());
            assert_eq!(text.resolve(schema(), &limits).ok(), Some(resolved));
        }
    }
}

fn permission_check(body: &[u8]) {
    let Ok(req) = authz::parse_check_body(body) else {
        return;
    };
    let limits = Limits::default();
    let snapshot = authz::Snapshot::empty(schema(), 1, 0);
    let _ = authz::check(
        schema(),
        &snapshot,
        &req.subject,
        &req.permission,
        &req.object,
        NOW_S,
        &limits,
    );
}

fn ratelimit(body: &[u8]) {
    if let Some((key, cost)) = subzero::api::fuzzing::ratelimit_check(body) {
        assert!(!key.is_empty() && key.len() <= subzero::ratelimit::MAX_KEY_BYTES);
        assert!(cost > 0);
    }
}

fn audit_events(body: &[u8]) {
    if let Ok(events) = subzero::audit::parse_events(body, MAX_EVENTS, MAX_FIELD_BYTES) {
        assert!(!events.is_empty() && events.len() <= MAX_EVENTS);
    }
}

/// `application/x-www-form-urlencoded` values as RFC 3986 spells an escape: `%` and exactly two
/// hex digits; `+` is a space. Anything else after `%`, or a result that is not UTF-8, is
/// refused.
fn reference_percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut idx = 0;
    while idx < bytes.len() {
        match bytes[idx] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = char::from(*bytes.get(idx + 1)?).to_digit(16)?;
                let lo = char::from(*bytes.get(idx + 2)?).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                idx += 2;
            }
            b => out.push(b),
        }
        idx += 1;
    }
    String::from_utf8(out).ok()
}

fn token_form(body: &[u8], json: bool) {
    let ct: Option<&[u8]> = if json {
        Some(b"application/json")
    } else {
        Some(b"application/x-www-form-urlencoded")
    };
    let _ = subzero::api::fuzzing::token_params(body, ct);
    if let Ok(text) = std::str::from_utf8(body) {
        let decoded = subzero::api::fuzzing::percent_decode(text);
        assert_eq!(
            decoded,
            reference_percent_decode(text),
            "form decoding of {text:?}"
        );
    }
}

fn detectors() -> &'static subzero::security::Detectors {
    static DETECTORS: OnceLock<subzero::security::Detectors> = OnceLock::new();
    DETECTORS.get_or_init(|| subzero::security::Detectors::embedded().expect("detectors"))
}

/// `POST /v1/threat/check`: the body, then the split on the receiving shard (prompt scan,
/// disposable domains); every prompt match is a span of the original text.
fn threat(body: &[u8]) {
    if let Some(text) = body
        .strip_prefix(b"P:")
        .and_then(|t| std::str::from_utf8(t).ok())
    {
        let scanner = &detectors().prompt;
        for m in scanner.scan(text) {
            assert!(
                m.start < m.end && m.end <= text.len(),
                "{m:?} in {} bytes",
                text.len()
            );
            assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
        }
        return;
    }
    if let Ok(event) = subzero::security::parse_threat(body, MAX_TEXT_BYTES) {
        let cfg = subzero::config::ThreatConfig::default();
        let _ = subzero::security::split(event, &cfg, detectors());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 12 {
        0 => {
            let _ = subzero::api::fuzzing::batch_tokens(body);
        }
        1 => token_form(body, false),
        2 => token_form(body, true),
        3 => {
            let _ = subzero::xaa::ExchangeRequest::parse(body, false);
        }
        4 => {
            let _ = subzero::xaa::ExchangeRequest::parse(body, true);
        }
        5 => relationships(body),
        6 => permission_check(body),
        7 => {
            if let Ok(put) = subzero::vault::PutRequest::parse(body, NOW_S) {
                assert!(put.expires_at_s.is_none_or(|e| e > NOW_S));
            }
        }
        8 => threat(body),
        9 => {
            let _ = subzero::security::parse_risk(body);
        }
        10 => ratelimit(body),
        _ => audit_events(body),
    }
});
