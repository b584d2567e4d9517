//! Fuzz target: the HTTP/1.1 request parser (`subzero::http::parse`) over pipelined bytes, as
//! the shard feeds it, with the invariants the runtime relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use subzero::http::{self, Parsed};

/// The server's defaults (`server.max_header_bytes`, a small body limit so bodies complete).
const MAX_HEADER_BYTES: usize = 8192;
const MAX_BODY_BYTES: usize = 4096;
/// Requests parsed from one input at most (the runtime's per-pass dispatch limit).
const MAX_REQUESTS: usize = 32;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    for _ in 0..MAX_REQUESTS {
        match http::parse(rest, MAX_HEADER_BYTES, MAX_BODY_BYTES) {
            Ok(Parsed::Complete(req, used)) => {
                assert!(
                    used > 0 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                assert!(req.body.len() <= MAX_BODY_BYTES);
                let head_len = used - req.body.len();
                assert!(head_len <= MAX_HEADER_BYTES);
                assert_eq!(req.body, &rest[head_len..used]);
                assert!(req.minor_version <= 1);
                // A complete request does not depend on the bytes after it.
                match http::parse(&rest[..used], MAX_HEADER_BYTES, MAX_BODY_BYTES) {
                    Ok(Parsed::Complete(again, used_again)) => {
                        assert_eq!(used_again, used);
                        assert_eq!(again.path, req.path);
                        assert_eq!(again.body, req.body);
                    }
                    other => panic!("prefix of a complete request parsed as {other:?}"),
                }
                let _ = req.bearer();
                let _ = req.query_param("a");
                let mut out = Vec::new();
                if let Some(err) = req.header_error {
                    http::write_http_error(&mut out, err);
                    assert!(out.starts_with(b"HTTP/1.1 4"));
                }
                rest = &rest[used..];
                if rest.is_empty() {
                    return;
                }
            }
            Ok(Parsed::Partial | Parsed::BodyExpected) => return,
            Err(err) => {
                let mut out = Vec::new();
                http::write_http_error(&mut out, err);
                assert!(out.starts_with(b"HTTP/1.1 4") || out.starts_with(b"HTTP/1.1 5"));
                return;
            }
        }
    }
});
