//! Error types of the auth module: `KeyError` (control plane: files, key rings, JWKS) and
//! `TokenError` (data plane: one variant per reason a token is refused).

use std::path::PathBuf;

/// A failure to create, read, write or parse key material. Messages say what failed, where,
/// and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A filesystem operation on key material failed.
    #[error(
        "cannot {action} {path}: {source}; check that the path exists and is writable by this user"
    )]
    Io {
        /// What we were doing, e.g. "write" or "read".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `generate` was asked to create a key ring where one already exists.
    #[error("a key ring already exists at {path}; keep it, or rotate keys instead of generating a new ring")]
    AlreadyExists {
        /// The existing `ring.json`.
        path: PathBuf,
    },
    /// `load` found no key ring in the data directory.
    #[error("no key ring at {path}; create one with `subzero keygen --data-dir DIR`")]
    NoKeys {
        /// The missing `ring.json`.
        path: PathBuf,
    },
    /// A private key file is readable by group or others.
    #[error(
        "private key {path} has mode {mode:o}, readable by other users; run `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A private key file is not a valid PKCS#8 PEM Ed25519 key.
    #[error("private key {path} is not a PKCS#8 PEM Ed25519 key ({reason}); restore it from backup or rotate")]
    BadPem {
        /// The key file.
        path: PathBuf,
        /// What the parser reported.
        reason: String,
    },
    /// `ring.json` is not valid or names keys inconsistently.
    #[error(
        "key ring index {path} is invalid: {reason}; restore it from backup or regenerate the ring"
    )]
    BadRing {
        /// The `ring.json` file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file's content does not hash to the key id it is filed under.
    #[error("key {path} has thumbprint {actual}, but the ring lists it as {expected}; the file was replaced or corrupted")]
    KidMismatch {
        /// The key file.
        path: PathBuf,
        /// The kid in `ring.json`.
        expected: String,
        /// The RFC 7638 thumbprint of the key in the file.
        actual: String,
    },
    /// A JWKS file is not valid JSON or holds a malformed key.
    #[error(
        "JWKS file {path} is invalid: {reason}; fix the file or fetch it again from the issuer"
    )]
    BadJwks {
        /// The JWKS file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A JWKS file parsed but holds no `EdDSA`, `ES256` or `RS256` signing key.
    #[error("JWKS file {path} holds no usable signing key (EdDSA/Ed25519, ES256/P-256 or RS256); check the file")]
    NoUsableKeys {
        /// The JWKS file.
        path: PathBuf,
    },
    /// A JWKS file or key ring holds more keys than we accept.
    #[error("{path} holds more than {max_keys} keys; remove retired keys from it")]
    TooManyKeys {
        /// The file.
        path: PathBuf,
        /// The limit.
        max_keys: usize,
    },
    /// An Ed25519 public key is of small order or has a torsion component: it cannot be
    /// verified strictly and is refused.
    #[error("Ed25519 key {kid} in {path} is weak (small order or not in the prime-order subgroup); remove it")]
    WeakKey {
        /// The file holding the key.
        path: PathBuf,
        /// The key's id.
        kid: String,
    },
    /// `reload_issuer` or a trusted-issuer list named an issuer we do not know, or too many.
    #[error("issuer {issuer:?} is not configured as a trusted issuer; add it under [[auth.trusted_issuers]]")]
    UnknownIssuer {
        /// The issuer asked for.
        issuer: String,
    },
    /// More trusted issuers than `MAX_TRUSTED_ISSUERS` were configured.
    #[error("more than {max_issuers} trusted issuers configured; remove some from [[auth.trusted_issuers]]")]
    TooManyIssuers {
        /// The limit.
        max_issuers: usize,
    },
}

/// Why a token was refused. Each variant has its own `description`, fit for an OAuth
/// `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is longer than `MAX_TOKEN_BYTES`.
    #[error("token is too large")]
    TooLarge,
    /// The token is not three dot-separated segments.
    #[error("token is not a JWS compact serialization")]
    Malformed,
    /// A segment is not unpadded base64url.
    #[error("token segment is not valid base64url")]
    BadEncoding,
    /// The header is not a JSON object with a string `alg`.
    #[error("token header is not valid")]
    BadHeader,
    /// The header lists `crit` extensions, none of which we implement.
    #[error("token header has critical extensions")]
    CriticalHeader,
    /// The header or the payload repeats a member name in one object.
    #[error("token repeats a JSON member name")]
    DuplicateKey,
    /// The payload is not a JSON object of well-typed claims.
    #[error("token payload is not valid")]
    BadPayload,
    /// `alg: none`.
    #[error("alg none is not accepted")]
    AlgNone,
    /// `alg: HS256/HS384/HS512`: refused so a public key can never serve as an HMAC secret.
    #[error("HMAC algorithms are not accepted")]
    AlgHmac,
    /// Any other algorithm than `EdDSA`, `ES256`, `RS256`.
    #[error("token algorithm is not supported")]
    AlgUnsupported,
    /// The header's `alg` does not fit the type of the key its `kid` names.
    #[error("token algorithm does not match its key")]
    AlgKeyMismatch,
    /// The header has no `kid`.
    #[error("token has no key id")]
    MissingKid,
    /// No key of the issuer has this `kid`. `issuer` is the unverified `iss`, for a JWKS reload.
    #[error("token key id is unknown")]
    UnknownKid {
        /// The (unverified) `iss` of the token when it names a trusted external issuer.
        issuer: Option<String>,
    },
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not yet valid")]
    NotYetValid,
    /// `iss` is neither ours nor a trusted issuer.
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    /// No `aud` value is accepted.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A required claim (`iss`, `sub`, `exp` or `aud`) is absent.
    #[error("token is missing the {0} claim")]
    MissingClaim(&'static str),
    /// A verified ID-JAG (`typ: oauth-id-jag+jwt`) presented as an access token: it is an
    /// authorization grant, redeemable only at a token endpoint.
    #[error("token is an ID-JAG, an authorization grant, not an access token")]
    NotAnAccessToken,
}

impl TokenError {
    /// A fixed sentence for OAuth `error_description`; distinct per variant.
    pub fn description(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "token is too large",
            TokenError::Malformed => "token is not a JWS compact serialization",
            TokenError::BadEncoding => "token segment is not valid base64url",
            TokenError::BadHeader => "token header is not valid",
            TokenError::CriticalHeader => "token header has critical extensions",
            TokenError::BadPayload => "token payload is not valid",
            TokenError::DuplicateKey => "token repeats a JSON member name",
            TokenError::AlgNone => "alg none is not accepted",
            TokenError::AlgHmac => "HMAC algorithms are not accepted",
            TokenError::AlgUnsupported => "token algorithm is not supported",
            TokenError::AlgKeyMismatch => "token algorithm does not match its key",
            TokenError::MissingKid => "token has no key id",
            TokenError::UnknownKid { .. } => "token key id is unknown",
            TokenError::BadSignature => "token signature is invalid",
            TokenError::Expired => "token has expired",
            TokenError::NotYetValid => "token is not yet valid",
            TokenError::UnknownIssuer => "token issuer is not trusted",
            TokenError::WrongAudience => "token audience is not accepted",
            TokenError::MissingClaim(_) => "token is missing a required claim",
            TokenError::NotAnAccessToken => {
                "token is an ID-JAG, an authorization grant, not an access token"
            }
        }
    }
}
