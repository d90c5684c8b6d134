//! The IdP as an OAuth 2.0 / OpenID Connect client sees it, through the `oauth2` crate:
//! discovery, the token endpoint (codes, refresh tokens), and the device authorization
//! grant (RFC 8628). Browser sign-in (`signin`) and the developer's command line
//! (`credential`) both use it.

mod device;
mod provider;

pub use device::DeviceAuthorization;
pub use provider::{Endpoints, Provider, Tokens};

use std::time::Duration;

/// Why the IdP could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OidcError {
    /// The IdP could not be reached, or answered with a server error or garbage: cannot
    /// decide, try later.
    #[error("the IdP is unavailable: {0}")]
    Unavailable(String),
    /// The discovery document is not usable (wrong issuer, missing endpoints).
    #[error("the IdP's discovery document is not usable: {0}")]
    Discovery(String),
    /// The token endpoint refused (`invalid_grant`: a used, expired or revoked code or
    /// refresh token).
    #[error("the IdP refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// The OAuth error code.
        error: String,
        /// The IdP's description, if any.
        description: Option<String>,
    },
    /// The token endpoint answered without an ID token.
    #[error("the IdP's answer has no ID token")]
    NoIdToken,
    /// Discovery names no `device_authorization_endpoint`.
    #[error("the IdP does not offer sign-in by device code (its discovery document has no device_authorization_endpoint)")]
    NoDeviceFlow,
    /// The person denied the device at the IdP (`access_denied`).
    #[error("the sign-in was denied at the IdP")]
    DeviceDenied,
    /// The device code expired before it was approved (`expired_token`).
    #[error("the code expired before it was approved")]
    DeviceExpired,
}

/// How the client authenticates at the token endpoint (RFC 6749 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret.
    SecretBasic,
    /// `client_id` and `client_secret` in the form body.
    SecretPost,
    /// A public client: `client_id` in the body, no secret (PKCE protects the code).
    None,
}

/// A client secret; never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(pub String);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// mesh-authz as an OIDC client of one issuer: the gateway's browser sign-in, or the
/// developer's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClient {
    /// The issuer (its `iss`; discovery is `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    /// The registered client id.
    pub client_id: String,
    /// The secret, unless the client is public.
    pub secret: Option<ClientSecret>,
    /// How the secret is sent.
    pub auth: ClientAuth,
    /// Scopes asked for (with `openid`).
    pub scopes: Vec<String>,
    /// Timeout of one request to the IdP.
    pub timeout: Duration,
}
