//! Authentication: find the bearer token, verify it against the issuer's keys, and turn
//! its claims into an [`Identity`].

mod jwks;
mod token;
mod token_cache;
mod verify;

pub use crate::identity::Identity;
pub use jwks::{Fetched, JwksError, JwksSource, JwksStore, JwksTiming, KeyFetch, KeySet};
pub use token::{find_token, TokenSource, DEFAULT_MAX_TOKEN_BYTES};
pub use token_cache::{token_key, unix_now, VerifiedTokenCache};
pub use verify::{IssuerSettings, TokenVerifier, VerifiedIdToken};

/// Why a request could not be authenticated.
///
/// Every variant but [`AuthnError::KeysUnavailable`] and [`AuthnError::KeyFetchPending`]
/// is the caller's problem (HTTP 401); those mean mesh-authz cannot decide.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthnError {
    /// No `Authorization` header.
    #[error("no token in the request")]
    MissingToken,
    /// An `Authorization` header with another scheme or no credentials.
    #[error("Authorization header is not a Bearer token")]
    NotBearer,
    /// On a route that also takes Basic: an `Authorization` header with another scheme.
    #[error("Authorization header is neither a Bearer token nor Basic credentials")]
    NotBearerOrBasic,
    /// Basic credentials that are not base64 of `user:password` with a password.
    #[error("Basic credentials are not base64 of user:token")]
    BadBasic,
    /// The token is longer than the configured limit (default
    /// [`DEFAULT_MAX_TOKEN_BYTES`]).
    #[error("token too large")]
    TooLarge,
    /// Not a compact JWS with a JSON header and payload.
    #[error("malformed token")]
    Malformed,
    /// The token's cookie or query parameter was sent more than once.
    #[error("the token was sent more than once")]
    RepeatedToken,
    /// The protected header has `crit` (RFC 7515 §4.1.11): it names extensions the
    /// recipient must understand, and mesh-authz understands none (`b64: false` of
    /// RFC 7797, say, would change what the signature covers). Any value is refused, an
    /// empty or non-list one too, which the RFC does not allow.
    #[error("token has critical header parameters that are not supported")]
    UnsupportedCriticalHeader,
    /// `alg` is unknown, `none`, symmetric, or not accepted for this issuer.
    #[error("token algorithm not accepted")]
    AlgorithmNotAccepted,
    /// `iss` is missing or not a configured issuer.
    #[error("issuer not accepted")]
    UnknownIssuer,
    /// No key in the issuer's key set has the token's `kid` (after a refetch, if allowed).
    #[error("unknown key id")]
    UnknownKeyId,
    /// The key named by `kid` cannot verify this algorithm.
    #[error("key does not fit the token algorithm")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp - iat` exceeds the issuer's `max_token_lifetime`.
    #[error("token lifetime exceeds the maximum")]
    LifetimeTooLong,
    /// No `aud` value is accepted.
    #[error("audience not accepted")]
    Audience,
    /// A claim the token must carry is missing or has the wrong type.
    #[error("missing or invalid claim `{0}`")]
    Claim(String),
    /// The issuer's keys have never been loaded: cannot decide.
    #[error("signing keys for the issuer are not available")]
    KeysUnavailable,
    /// The token names a key the issuer's set lacks, and the refetch for it did not
    /// finish within `jwks.check_timeout`: cannot decide (it goes on for later checks).
    #[error("the token's signing key is still being fetched from the IdP")]
    KeyFetchPending,
    /// An ID token's `nonce` is not the one its sign-in sent.
    #[error("ID token nonce does not match the sign-in")]
    Nonce,
    /// An ID token's `azp` is not this client, or is missing where the token has
    /// several audiences (OIDC Core 3.1.3.7).
    #[error("ID token was issued to another client")]
    AuthorizedParty,
    /// The session cookie does not open: tampered with, truncated, or sealed by a key
    /// this server does not have.
    #[error("session cookie is not valid: sign in again")]
    SessionInvalid,
    /// The session is over (lifetime, idle timeout, or expired without a refresh).
    #[error("session has ended: sign in again")]
    SessionEnded,
}

impl AuthnError {
    /// A short stable label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            AuthnError::MissingToken => "missing_token",
            AuthnError::NotBearer => "not_bearer",
            AuthnError::NotBearerOrBasic => "not_bearer_or_basic",
            AuthnError::BadBasic => "bad_basic",
            AuthnError::TooLarge => "token_too_large",
            AuthnError::Malformed => "malformed_token",
            AuthnError::RepeatedToken => "repeated_token",
            AuthnError::UnsupportedCriticalHeader => "unsupported_critical_header",
            AuthnError::AlgorithmNotAccepted => "algorithm_not_accepted",
            AuthnError::UnknownIssuer => "unknown_issuer",
            AuthnError::UnknownKeyId => "unknown_kid",
            AuthnError::KeyMismatch => "key_mismatch",
            AuthnError::BadSignature => "bad_signature",
            AuthnError::Expired => "expired",
            AuthnError::NotYetValid => "not_yet_valid",
            AuthnError::IssuedInFuture => "issued_in_future",
            AuthnError::LifetimeTooLong => "lifetime_too_long",
            AuthnError::Audience => "audience",
            AuthnError::Claim(_) => "claim",
            AuthnError::KeysUnavailable => "keys_unavailable",
            AuthnError::KeyFetchPending => "key_fetch_pending",
            AuthnError::Nonce => "nonce",
            AuthnError::AuthorizedParty => "authorized_party",
            AuthnError::SessionInvalid => "session_invalid",
            AuthnError::SessionEnded => "session_ended",
        }
    }

    /// The RFC 6750 error code for `WWW-Authenticate`, or `None` when the request carried
    /// no credentials at all (RFC 6750 §3.1: then no error code is sent).
    pub fn rfc6750_error(&self) -> Option<&'static str> {
        match self {
            AuthnError::MissingToken => None,
            // RFC 6750 §3.1: a repeated parameter is a malformed request.
            AuthnError::NotBearer
            | AuthnError::NotBearerOrBasic
            | AuthnError::BadBasic
            | AuthnError::RepeatedToken => Some("invalid_request"),
            _ => Some("invalid_token"),
        }
    }
}
