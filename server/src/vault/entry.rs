//! What a vault request may name and store: entry names, value sizes, expiries, the `PUT` body.

use serde::Deserialize;

use super::VaultError;

/// Longest entry name, in characters (all ASCII, so also bytes).
pub const MAX_NAME_LEN: usize = 128;
/// Largest value (the stored token), in bytes: room for any refresh token or JWT we know of.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

const _: () = assert!(
    MAX_NAME_LEN <= 255,
    "the AAD stores the name length in a u8"
);

/// Checks a `/v1/vault/{name}` name: 1–128 characters of `[A-Za-z0-9._-]`, not `.` or `..`
/// (which proxies and URL normalisers treat as path segments).
pub fn validate_name(name: &str) -> Result<(), VaultError> {
    if name.is_empty() {
        return Err(VaultError::BadName("is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(VaultError::BadName("is longer than 128 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(VaultError::BadName(
            "may only contain letters, digits, '.', '_' and '-'",
        ));
    }
    if name == "." || name == ".." {
        return Err(VaultError::BadName("may not be '.' or '..'"));
    }
    Ok(())
}

/// Checks the value to store: not empty, at most `MAX_VALUE_BYTES`.
pub fn validate_value(value: &[u8]) -> Result<(), VaultError> {
    if value.is_empty() {
        return Err(VaultError::EmptyValue);
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(VaultError::ValueTooLarge {
            len: value.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// Checks an optional expiry: when present it must be after `now_s`.
pub fn validate_expiry(expires_at_s: Option<u64>, now_s: u64) -> Result<(), VaultError> {
    match expires_at_s {
        Some(expires_at_s) if expires_at_s <= now_s => Err(VaultError::ExpiryNotInFuture {
            expires_at_s,
            now_s,
        }),
        _ => Ok(()),
    }
}

/// Whether an entry with this expiry may still be returned at `now_s` (an expired entry reads
/// as missing, a `404`, until it is swept).
pub fn is_visible(expires_at_s: Option<u64>, now_s: u64) -> bool {
    expires_at_s.is_none_or(|exp| now_s < exp)
}

/// A validated `PUT /v1/vault/{name}` body: `{"token":"...","expires_at":1767225600}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRequest {
    /// The value to seal (never logged).
    pub token: String,
    /// Optional expiry, unix seconds, after `now_s` at the time of the request.
    pub expires_at_s: Option<u64>,
}

#[derive(Deserialize)]
struct RawPut {
    token: Option<String>,
    #[serde(default)]
    expires_at: Option<u64>,
}

impl PutRequest {
    /// Parses and validates a `PUT` body at `now_s`. Unknown fields are ignored.
    pub fn parse(body: &[u8], now_s: u64) -> Result<PutRequest, VaultError> {
        let raw: RawPut = serde_json::from_slice(body).map_err(|_| {
            VaultError::BadBody(
                "expected a JSON object {\"token\": string, \"expires_at\": unix seconds}",
            )
        })?;
        let token = raw
            .token
            .ok_or(VaultError::BadBody("\"token\" is missing"))?;
        validate_value(token.as_bytes())?;
        validate_expiry(raw.expires_at, now_s)?;
        Ok(PutRequest {
            token,
            expires_at_s: raw.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_table() {
        let long_ok = "a".repeat(128);
        let too_long = "a".repeat(129);
        let cases: &[(&str, bool)] = &[
            ("google", true),
            ("google.refresh_token-2", true),
            ("A", true),
            ("0", true),
            ("...x", true),
            (&long_ok, true),
            ("", false),
            (&too_long, false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("a b", false),
            ("a%2Fb", false),
            ("a\0b", false),
            ("é", false),
            ("a?b", false),
            ("a:b", false),
        ];
        for &(name, ok) in cases {
            assert_eq!(validate_name(name).is_ok(), ok, "{name:?}");
        }
        assert_eq!(validate_name(""), Err(VaultError::BadName("is empty")));
    }

    #[test]
    fn value_limits() {
        assert_eq!(validate_value(b""), Err(VaultError::EmptyValue));
        assert!(validate_value(&vec![b'x'; MAX_VALUE_BYTES]).is_ok());
        assert_eq!(
            validate_value(&vec![b'x'; MAX_VALUE_BYTES + 1]),
            Err(VaultError::ValueTooLarge {
                len: MAX_VALUE_BYTES + 1,
                max: MAX_VALUE_BYTES
            })
        );
    }

    #[test]
    fn expiry_must_be_in_the_future_and_hides_the_entry_once_reached() {
        assert!(validate_expiry(None, 100).is_ok());
        assert!(validate_expiry(Some(101), 100).is_ok());
        assert_eq!(
            validate_expiry(Some(100), 100),
            Err(VaultError::ExpiryNotInFuture {
                expires_at_s: 100,
                now_s: 100
            })
        );
        assert!(is_visible(None, u64::MAX));
        assert!(is_visible(Some(101), 100));
        assert!(!is_visible(Some(100), 100));
    }

    #[test]
    fn put_body() {
        let ok = PutRequest::parse(br#"{"token":"rt-1","expires_at":200,"x":1}"#, 100).unwrap();
        assert_eq!(
            ok,
            PutRequest {
                token: "rt-1".into(),
                expires_at_s: Some(200)
            }
        );
        let no_exp = PutRequest::parse(br#"{"token":"rt-1"}"#, 100).unwrap();
        assert_eq!(no_exp.expires_at_s, None);
        assert!(matches!(
            PutRequest::parse(br#"{"expires_at":200}"#, 100),
            Err(VaultError::BadBody(_))
        ));
        assert!(matches!(
            PutRequest::parse(br#"{"token":5}"#, 100),
            Err(VaultError::BadBody(_))
        ));
        assert!(matches!(
            PutRequest::parse(b"token=x", 100),
            Err(VaultError::BadBody(_))
        ));
        assert_eq!(
            PutRequest::parse(br#"{"token":""}"#, 100),
            Err(VaultError::EmptyValue)
        );
        assert!(matches!(
            PutRequest::parse(br#"{"token":"t","expires_at":50}"#, 100),
            Err(VaultError::ExpiryNotInFuture { .. })
        ));
        assert!(matches!(
            PutRequest::parse(br#"{"token":"t","expires_at":-5}"#, 100),
            Err(VaultError::BadBody(_))
        ));
    }
}
