//! Unpadded base64url (RFC 4648 §5), strict: no padding, no trailing bits, no whitespace.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Encode `bytes` as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Append the unpadded base64url encoding of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(bytes, out);
}

/// Decode unpadded base64url into a new vector; `None` when not canonical base64url.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// The exact decoded length of `n_chars` unpadded base64url characters, or `None` for a length
/// no valid encoding has (a lone trailing character).
pub fn decoded_len(n_chars: usize) -> Option<usize> {
    match n_chars % 4 {
        1 => None,
        rem => Some(n_chars / 4 * 3 + rem.saturating_sub(1)),
    }
}

/// Decode into `buf` (no allocation) and return the decoded prefix; `None` when not canonical
/// base64url or when `buf` is too small.
pub fn decode_into<'b>(text: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let n = decoded_len(text.len())?;
    if n > buf.len() {
        return None;
    }
    let written = URL_SAFE_NO_PAD.decode_slice(text, &mut buf[..n]).ok()?;
    Some(&buf[..written])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        for len in 0..40usize {
            let data: Vec<u8> = (0..len as u8).collect();
            let text = encode(&data);
            assert_eq!(decoded_len(text.len()), Some(len));
            let mut buf = [0u8; 64];
            assert_eq!(decode_into(text.as_bytes(), &mut buf), Some(&data[..]));
            assert_eq!(decode(text.as_bytes()).as_deref(), Some(&data[..]));
        }
        let mut buf = [0u8; 8];
        assert_eq!(decode_into(b"AAE=", &mut buf), None, "padding is refused");
        assert_eq!(
            decode_into(b"AB", &mut buf),
            None,
            "non-zero trailing bits are refused"
        );
        assert_eq!(
            decode_into(b"a+b/", &mut buf),
            None,
            "standard alphabet is refused"
        );
        assert_eq!(
            decode_into(b"AAAAAAAAAAAAAAAA", &mut buf),
            None,
            "buffer too small"
        );
        assert_eq!(decode_into(b"A", &mut buf), None);
    }
}
