//! One sign-in in progress: what the redirect to the IdP carries (`state`, `nonce`, the
//! PKCE challenge) and what the browser keeps until the callback (the same values and the
//! page to return to, sealed in a cookie of its own).
//!
//! The `state` is bound to the browser: the callback is accepted only with the login
//! cookie whose sealed `state` equals the one in the callback's query, so a callback URL
//! sent to someone else (login CSRF) finds no cookie to match. Each sign-in has its own
//! cookie, named after its `state`, so two tabs signing in at once do not overwrite
//! each other.

use oauth2::CsrfToken;
use serde::{Deserialize, Serialize};

/// How long a sign-in may take from the redirect to the callback.
pub const LOGIN_TTL_SECS: u64 = 600;
/// Longest accepted page to return to.
pub const MAX_RETURN_BYTES: usize = 2048;

/// What the browser keeps, sealed, while the person signs in at the IdP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// The `state` sent to the IdP.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier whose S256 challenge was sent.
    pub verifier: String,
    /// The issuer signed in with.
    pub issuer: String,
    /// The same-host path (and query) to return to.
    pub return_to: String,
    /// When the sign-in started (Unix seconds).
    pub started: u64,
}

impl PendingLogin {
    /// A new sign-in with fresh random `state`, `nonce` and PKCE verifier (the redirect
    /// carries the verifier's S256 challenge: [`crate::oidc::Provider::authorization_url`]).
    pub fn start(issuer: &str, return_to: &str, now: u64) -> Self {
        PendingLogin {
            state: CsrfToken::new_random().secret().clone(),
            nonce: CsrfToken::new_random().secret().clone(),
            // 32 random bytes, base64url: the 43 characters RFC 7636 4.1 recommends.
            verifier: CsrfToken::new_random_len(32).secret().clone(),
            issuer: issuer.to_string(),
            return_to: return_to.to_string(),
            started: now,
        }
    }

    /// Whether the sign-in is too old to finish.
    pub fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.started) > LOGIN_TTL_SECS || self.started > now + 60
    }

    /// Whether the callback's `state` is this sign-in's, compared in constant time.
    pub fn matches_state(&self, state: &str) -> bool {
        state.len() == self.state.len()
            && aws_lc_rs::constant_time::verify_slices_are_equal(
                state.as_bytes(),
                self.state.as_bytes(),
            )
            .is_ok()
    }

    /// The login cookie's name for `state`: a short, cookie-safe part of it.
    pub fn cookie_name(prefix: &str, state: &str) -> Option<String> {
        let tag: String = state.chars().take(12).collect();
        (tag.len() == 12
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| format!("{prefix}-login-{tag}"))
    }
}

/// Why a page to return to was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum ReturnError {
    /// Not a path on this host: another host, a scheme, `//`, `\`, spaces or controls.
    #[error("only a path on this host can be returned to")]
    NotSameHost,
    /// Longer than [`MAX_RETURN_BYTES`].
    #[error("the page to return to is too long")]
    TooLong,
}

/// Checks that `target` is a path on the same host, as a browser would read it in a
/// `Location` header: it starts with one `/`, and holds only visible ASCII without `\`.
/// Browsers read `//evil.example` and `/\evil.example` as another host, and drop tabs
/// and newlines before reading, so `/<TAB>/evil.example` is another host too.
pub fn same_host_target(target: &str) -> Result<&str, ReturnError> {
    if target.len() > MAX_RETURN_BYTES {
        return Err(ReturnError::TooLong);
    }
    let bytes = target.as_bytes();
    let visible = bytes
        .iter()
        .all(|b| (0x21..0x7f).contains(b) && *b != b'\\');
    if !visible || bytes.first() != Some(&b'/') || bytes.get(1) == Some(&b'/') {
        return Err(ReturnError::NotSameHost);
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_has_fresh_random_values() {
        let a = PendingLogin::start("https://idp", "/q", 1000);
        let b = PendingLogin::start("https://idp", "/q", 1000);
        assert_ne!(a.state, b.state);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.verifier, b.verifier);
        assert_ne!(a.state, a.nonce);
        // RFC 7636 4.1: 43 to 128 characters.
        assert!((43..=128).contains(&a.verifier.len()));
        assert!(a.state.len() >= 22, "at least 128 bits");
    }

    #[test]
    fn only_the_same_state_matches() {
        let login = PendingLogin::start("https://idp", "/", 0);
        assert!(login.matches_state(&login.state.clone()));
        assert!(!login.matches_state(""));
        assert!(!login.matches_state(&login.state[1..]));
        let mut other = login.state.clone().into_bytes();
        other[0] = if other[0] == b'A' { b'B' } else { b'A' };
        assert!(!login.matches_state(std::str::from_utf8(&other).unwrap()));
    }

    #[test]
    fn a_sign_in_expires_after_ten_minutes() {
        let login = PendingLogin::start("https://idp", "/", 1000);
        assert!(!login.expired(1000 + LOGIN_TTL_SECS));
        assert!(login.expired(1001 + LOGIN_TTL_SECS));
        assert!(login.expired(0), "started in the future");
    }

    #[test]
    fn each_sign_in_has_a_cookie_named_after_its_state() {
        let a = PendingLogin::start("https://idp", "/", 0);
        let b = PendingLogin::start("https://idp", "/", 0);
        let name = PendingLogin::cookie_name("__Host-mesh-authz", &a.state).unwrap();
        assert!(name.starts_with("__Host-mesh-authz-login-"));
        assert_ne!(
            Some(name),
            PendingLogin::cookie_name("__Host-mesh-authz", &b.state)
        );
        assert_eq!(PendingLogin::cookie_name("p", "short"), None);
        assert_eq!(PendingLogin::cookie_name("p", "abc;def=ghijklm"), None);
    }

    #[test]
    fn only_paths_on_this_host_are_return_targets() {
        for good in [
            "/",
            "/q/status:open",
            "/c/team-a/+/1234?tab=files",
            "/a%2F/b",
        ] {
            assert_eq!(same_host_target(good), Ok(good));
        }
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /x",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/é",
        ] {
            assert_eq!(
                same_host_target(bad),
                Err(ReturnError::NotSameHost),
                "{bad:?}"
            );
        }
        let long = format!("/{}", "a".repeat(MAX_RETURN_BYTES));
        assert_eq!(same_host_target(&long), Err(ReturnError::TooLong));
    }
}
