//! Browser sign-in as configured: the OIDC clients (one per issuer that has one) and the
//! session cookie's settings, checked by config compilation.

use super::seal::KeyRing;
use super::session::SessionTimes;
use std::sync::Arc;
use std::time::Duration;

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

/// mesh-authz as an OIDC client of one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserClient {
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

/// The session cookie and the paths mesh-authz answers itself.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The session cookie's name; its chunks and login cookies start with it.
    pub cookie_name: String,
    /// The cookie holding the ID token for sign-out
    /// ([`SessionSettings::hint_cookie_name_of`] the session cookie's name).
    pub hint_cookie_name: String,
    /// The keys cookies are sealed with.
    pub keys: Arc<KeyRing>,
    /// Lifetime, idle timeout, refresh margin.
    pub times: SessionTimes,
    /// Where the IdP redirects back to.
    pub callback_path: String,
    /// Starts a sign-in (`?rd=` the page to return to).
    pub sign_in_path: String,
    /// Ends the session.
    pub sign_out_path: String,
    /// Where the IdP returns after signing out.
    pub after_sign_out: String,
    /// Opened sessions kept per replica (0: none).
    pub cache_max_entries: u64,
    /// Code exchanges at the IdP at once, per replica.
    pub max_concurrent_sign_ins: usize,
}

impl SessionSettings {
    /// Whether cookie `name` is one of mesh-authz's (the session, its chunks, sign-ins in
    /// progress): never sent upstream.
    pub fn is_ours(&self, name: &str) -> bool {
        name == self.hint_cookie_name
            || name
                .strip_prefix(self.cookie_name.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
    }

    /// The name of the cookie holding the ID token for sign-out, sent by the browser to
    /// the sign-out path only. Its path is not `/`, which a `__Host-` name requires, so it
    /// is a `__Secure-` one.
    pub fn hint_cookie_name_of(cookie_name: &str) -> String {
        let base = cookie_name.trim_start_matches("__Host-");
        let base = base.trim_start_matches("__Secure-");
        format!("__Secure-{base}-hint")
    }
}

/// Browser sign-in as configured.
#[derive(Debug, Clone)]
pub struct BrowserSignInConfig {
    /// The session cookie.
    pub sessions: SessionSettings,
    /// One client per issuer with a `browser_client`.
    pub clients: Vec<BrowserClient>,
}
