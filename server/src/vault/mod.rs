//! Token vault decisions: entry names, value and expiry rules, per-namespace keys and the
//! sealed-value envelope (XChaCha20-Poly1305). Storage and endpoints live elsewhere.
//!
//! A caller's namespace is its authenticated `iss` and `sub` ([`Namespace`]). Each namespace has
//! its own key, derived with HKDF-SHA256 from the master key in `<data_dir>/vault.key`
//! ([`load_or_create_master_key`], the only function here that does I/O) with the namespace
//! bytes as HKDF `info`. A value is sealed under that key with a fresh random 24-byte nonce and
//! the namespace, entry name and entry version as associated data, so a sealed value copied to
//! another name, namespace or version, or stored under another key, fails to open.
//!
//! # Envelope (format 1)
//!
//! ```text
//! offset  size  field
//! 0       1     format = 0x01 (XChaCha20-Poly1305, AAD below)
//! 1       24    nonce, random per seal
//! 25      n+16  ciphertext of the n-byte value, then the 16-byte Poly1305 tag
//! ```
//!
//! The associated data is not stored; `open` rebuilds it from what the caller asks for:
//!
//! ```text
//! format (1) | namespace length (u32 BE) | namespace | name length (u8) | name | version (u64 BE)
//! ```
//!
//! Lengths make the encoding unambiguous (no two (namespace, name, version) triples share
//! associated data), and the format byte is authenticated too, so a future format cannot be
//! downgraded by rewriting byte 0. A new format gets a new first byte; `open` refuses unknown
//! ones with [`VaultError::UnknownFormat`].
//!
//! Architecture Invariant: no I/O and no clock outside `master_key.rs`; `now_s` is an argument.
//! Architecture Invariant: the plaintext never leaves `open`'s caller in any error or log text.

mod entry;
mod master_key;
mod seal;

pub use entry::{
    is_visible, validate_expiry, validate_name, validate_value, PutRequest, MAX_NAME_LEN,
    MAX_VALUE_BYTES,
};
pub use master_key::{
    load_master_key, load_or_create_master_key, MasterKey, MasterKeyError, NamespaceKey,
    MASTER_KEY_FILE, MASTER_KEY_LEN,
};
pub use seal::{open, seal, Namespace, ENVELOPE_OVERHEAD, FORMAT_V1, NONCE_LEN, TAG_LEN};

/// A vault request or sealed value that cannot be accepted. Every variant but the last four is
/// the caller's fault (a `400`); those four mean the stored bytes or the key are wrong (a `500`
/// and an alarm, never a `404` that would hide corruption).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The entry name is not 1–128 characters of `[A-Za-z0-9._-]` (the reason says which).
    #[error("vault entry name {0}")]
    BadName(&'static str),
    /// The value to store is empty.
    #[error("the token to store is empty")]
    EmptyValue,
    /// The value to store is longer than the limit.
    #[error("the token to store is {len} bytes; at most {max} are accepted")]
    ValueTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit, `MAX_VALUE_BYTES`.
        max: usize,
    },
    /// `expires_at` is not after the current time.
    #[error("expires_at {expires_at_s} is not in the future (now {now_s})")]
    ExpiryNotInFuture {
        /// The requested expiry, unix seconds.
        expires_at_s: u64,
        /// The time of the request, unix seconds.
        now_s: u64,
    },
    /// The request body is not the expected JSON object (the reason says what is wrong).
    #[error("vault request body: {0}")]
    BadBody(&'static str),
    /// The caller's issuer contains a NUL byte, so `iss NUL sub` would be ambiguous.
    #[error("the token's issuer contains a NUL character; it cannot own a vault namespace")]
    BadNamespace,
    /// HKDF refused to derive a namespace key (it cannot for a 32-byte output; kept as an
    /// error rather than a panic on the request path).
    #[error("could not derive the namespace key")]
    KeyDerivation,
    /// The sealed bytes are shorter than an envelope with an empty value.
    #[error("sealed value is truncated ({len} bytes)")]
    Truncated {
        /// Its length in bytes.
        len: usize,
    },
    /// The sealed bytes start with a format byte this build does not know.
    #[error("sealed value has unknown format {0:#04x}")]
    UnknownFormat(u8),
    /// Authentication failed: the bytes were altered, or they were sealed under another key,
    /// namespace, name or version (AEAD cannot tell which).
    #[error("sealed value does not authenticate for this namespace, name and version")]
    Unauthentic,
}

impl VaultError {
    /// Whether the request was at fault (`400 invalid_request`) rather than the stored data or
    /// key (`500`).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            VaultError::KeyDerivation
                | VaultError::Truncated { .. }
                | VaultError::UnknownFormat(_)
                | VaultError::Unauthentic
        )
    }
}
