//! Keys, JWK/JWKS, JWT signing and verification (`EdDSA` own tokens; `EdDSA`/`ES256`/`RS256` trusted issuers).
//!
//! Control plane: `KeyRing` (files under `<data_dir>/keys/`), `Verifier` construction and
//! `Verifier::reload_issuer` (JWKS files). Data plane: `sign`, `Verifier::verify`,
//! `Verifier::verify_batch` — no I/O, `now_s` passed in.

mod b64;
pub mod claims;
pub mod error;
pub mod jwk;
pub mod jwt;
pub mod keys;
mod unique_keys;

pub use claims::{Claims, ExtraClaims};
pub use error::{KeyError, TokenError};
pub use jwt::{
    header_typ, new_jti, sign, sign_typed, BatchMode, TrustedIssuer, Verifier, BATCH_CHUNK,
    JWKS_RELOAD_MIN_INTERVAL_S, MAX_TOKEN_BYTES, MAX_TRUSTED_ISSUERS,
};
pub use keys::KeyRing;
