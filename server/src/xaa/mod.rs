//! Cross-app access decisions: RFC 8693 token exchange (delegation with a nested `act` chain),
//! ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant) checks and issuance, and app↔agent
//! channel claims. Pure functions over already-verified `Claims`; signing, storage and the
//! endpoints belong to the caller.
//!
//! How the server uses it:
//! - `POST /v1/xaa/delegate`: [`ExchangeRequest::parse`] the body; verify `subject_token` (and
//!   `actor_token`) with the `Verifier`; then [`delegate`] (our access token, sign with
//!   `auth::sign`) or, for `requested_token_type=…:id-jag`, [`build_id_jag`] (sign with
//!   `auth::sign_typed(…, ID_JAG_TYP, …)`); answer [`ExchangeResponse`] as JSON with
//!   `Cache-Control: no-store`, or [`ExchangeError::code`] / [`ExchangeError::description`].
//! - `POST /v1/token` with `grant_type=…:jwt-bearer`: verify the assertion (its issuer must be
//!   a trusted issuer with `id_jag = true`), [`check_id_jag`] with `auth::header_typ`, then
//!   [`SeenJtis::check_and_insert`] (the caller holds one `SeenJtis`; single use is state).
//! - `POST /v1/xaa/channel`: [`channel_tokens`] for the two verified callers, then sign both;
//!   revoking the channel id revokes both tokens (their `cid`).
//!
//! Architecture Invariant: no I/O and no clock; `now_s` and every `jti` are arguments.
//! Architecture Invariant: a presented token that is invalid or unacceptable by policy is
//! `invalid_request` (RFC 8693 §2.2.2 says MUST); a refused target is `invalid_target`; a bad
//! ID-JAG assertion is `invalid_grant` (RFC 7523 §3.1).

mod channel;
mod delegate;
mod error;
mod idjag;
mod request;
mod rules;

pub use channel::{channel_tokens, validate_channel_id, ChannelPolicy, ChannelTokens};
pub use delegate::{delegate, DelegationPolicy, ExchangeResponse};
pub use error::ExchangeError;
pub use idjag::{build_id_jag, check_id_jag, IdJagTarget, SeenJtis, MAX_JTI_BYTES};
pub use request::{ActorToken, ExchangeRequest, TokenType, MAX_SCOPES, MAX_TARGETS};
pub use rules::{act_chain, act_depth};

/// `grant_type` of an RFC 8693 token exchange.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `grant_type` of an RFC 7523 JWT bearer assertion (how an ID-JAG is redeemed).
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// JWS `typ` header of an ID-JAG.
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// Scope of both channel tokens.
pub const SCOPE_CALLBACK: &str = "xaa:callback";
/// Most actors in a delegation chain (nested `act` claims); one more is refused.
pub const MAX_ACT_DEPTH: usize = 3;
