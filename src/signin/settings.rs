//! Browser sign-in as configured: the OIDC clients (one per issuer that has one) and the
//! session cookie's settings, checked by config compilation.

use super::seal::KeyRing;
use super::session::SessionTimes;
use crate::oidc::OidcClient;
use std::sync::Arc;

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
    pub clients: Vec<OidcClient>,
}
