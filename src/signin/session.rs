//! A browser session: what the sealed cookie holds, and how long it is good for.
//!
//! The cookie holds only what rules read (the issuer and the claims an identity keeps,
//! like the verified-token cache), the ID token's expiry, the times that bound the
//! session, and the refresh token and ID token needed to renew it and to sign out at the
//! IdP. Nothing is stored server-side, so any replica serves any session.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// The sealed cookie's purpose (the AEAD's associated data).
pub const SESSION_PURPOSE: &str = "mesh-authz session v1";
/// The login cookie's purpose.
pub const LOGIN_PURPOSE: &str = "mesh-authz login v1";
/// The sign-out hint cookie's purpose (the sealed ID token).
pub const HINT_PURPOSE: &str = "mesh-authz id_token_hint v1";

/// One signed-in browser.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The issuer signed in with.
    pub iss: String,
    /// The ID token's claims that rules and identity headers read.
    pub claims: Map<String, Value>,
    /// The ID token's `exp`: past it, the session needs a refresh.
    pub exp: u64,
    /// When the person signed in (Unix seconds): bounds the session's whole life.
    pub started: u64,
    /// The last time the cookie was rewritten for activity: bounds idleness.
    pub seen: u64,
    /// The refresh token, if the IdP gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The ID token, for the IdP's `end_session_endpoint` (`id_token_hint`). Not in the
    /// session cookie: it travels in a cookie of its own that the browser sends only to
    /// the sign-out path, so the cookie every request carries stays small.
    #[serde(skip)]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens never reach a log line.
        f.debug_struct("Session")
            .field("iss", &self.iss)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field("exp", &self.exp)
            .field("started", &self.started)
            .field("seen", &self.seen)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<set>"),
            )
            .field("id_token", &self.id_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    /// From sign-in, whatever the activity.
    pub lifetime: Duration,
    /// Without a request.
    pub idle_timeout: Duration,
    /// How long before the ID token's expiry a refresh starts.
    pub refresh_before: Duration,
}

/// What a session is good for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Good; rewrite the cookie if `touch` (to move the idle deadline).
    Valid {
        /// The idle deadline should move: set the cookie again.
        touch: bool,
    },
    /// Good, and its ID token is close to expiry: refresh now, keep it if that fails.
    RefreshSoon,
    /// The ID token has expired: good only if a refresh succeeds.
    RefreshNeeded,
    /// Over: sign in again.
    Ended(Ending),
}

/// Why a session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ending {
    /// Past its lifetime since sign-in.
    #[error("the session reached its lifetime")]
    Lifetime,
    /// No request for longer than the idle timeout.
    #[error("the session was idle too long")]
    Idle,
    /// Its ID token expired and there is no refresh token.
    #[error("the session's ID token expired")]
    Expired,
    /// Times that cannot be: started in the future.
    #[error("the session's times are not valid")]
    Invalid,
}

/// The times that decide a session's standing, apart from its tokens (what the cache of
/// opened sessions keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClock {
    /// The ID token's `exp`.
    pub exp: u64,
    /// Sign-in.
    pub started: u64,
    /// Last activity written to the cookie.
    pub seen: u64,
    /// Whether a refresh token is there.
    pub refreshable: bool,
}

impl Session {
    /// The session's times.
    pub fn clock(&self) -> SessionClock {
        SessionClock {
            exp: self.exp,
            started: self.started,
            seen: self.seen,
            refreshable: self.refresh_token.is_some(),
        }
    }
}

impl SessionTimes {
    /// The session's standing at `now` (Unix seconds).
    pub fn standing(&self, s: &Session, now: u64) -> Standing {
        self.standing_of(&s.clock(), now)
    }

    /// The standing of a session with these times at `now`.
    pub fn standing_of(&self, s: &SessionClock, now: u64) -> Standing {
        // A minute of clock difference between replicas is tolerated.
        if s.started > now + 60 || s.seen > now + 60 || s.seen < s.started {
            return Standing::Ended(Ending::Invalid);
        }
        if now >= s.started.saturating_add(self.lifetime.as_secs()) {
            return Standing::Ended(Ending::Lifetime);
        }
        if now >= s.seen.saturating_add(self.idle_timeout.as_secs()) {
            return Standing::Ended(Ending::Idle);
        }
        if now >= s.exp {
            return match s.refreshable {
                true => Standing::RefreshNeeded,
                false => Standing::Ended(Ending::Expired),
            };
        }
        if s.refreshable && now + self.refresh_before.as_secs() >= s.exp {
            return Standing::RefreshSoon;
        }
        // Rewriting the cookie on every request would cost a Set-Cookie each time; a
        // tenth of the idle timeout (at least a minute) is precise enough.
        let step = (self.idle_timeout.as_secs() / 10).max(60);
        Standing::Valid {
            touch: now >= s.seen + step,
        }
    }

    /// The cookie's `Max-Age` at `now`: what is left of the session's lifetime.
    pub fn max_age(&self, s: &Session, now: u64) -> u64 {
        s.started
            .saturating_add(self.lifetime.as_secs())
            .saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: SessionTimes = SessionTimes {
        lifetime: Duration::from_secs(12 * 3600),
        idle_timeout: Duration::from_secs(3600),
        refresh_before: Duration::from_secs(120),
    };

    fn session(refresh: bool) -> Session {
        Session {
            iss: "https://idp".into(),
            claims: Map::new(),
            exp: 10_000 + 3600,
            started: 10_000,
            seen: 10_000,
            refresh_token: refresh.then(|| "rt".into()),
            id_token: Some("idt".into()),
        }
    }

    #[test]
    fn a_fresh_session_is_valid_and_its_cookie_lasts_the_rest_of_its_lifetime() {
        let s = session(true);
        assert_eq!(TIMES.standing(&s, 10_010), Standing::Valid { touch: false });
        assert_eq!(TIMES.max_age(&s, 10_010), 12 * 3600 - 10);
    }

    #[test]
    fn activity_moves_the_idle_deadline_by_rewriting_the_cookie_now_and_then() {
        let s = session(true);
        assert_eq!(
            TIMES.standing(&s, 10_000 + 359),
            Standing::Valid { touch: false }
        );
        assert_eq!(
            TIMES.standing(&s, 10_000 + 360),
            Standing::Valid { touch: true }
        );
    }

    #[test]
    fn an_idle_session_ends() {
        let mut s = session(true);
        s.exp = 10_000 + 7200;
        assert_eq!(
            TIMES.standing(&s, 10_000 + 3600),
            Standing::Ended(Ending::Idle)
        );
    }

    #[test]
    fn a_session_ends_at_its_lifetime_however_active() {
        let mut s = session(true);
        s.seen = 10_000 + 12 * 3600 - 1;
        s.exp = u64::MAX;
        assert_eq!(
            TIMES.standing(&s, 10_000 + 12 * 3600),
            Standing::Ended(Ending::Lifetime)
        );
        assert_eq!(TIMES.max_age(&s, 10_000 + 13 * 3600), 0);
    }

    #[test]
    fn near_expiry_a_session_refreshes_and_past_it_needs_a_refresh() {
        let mut s = session(true);
        s.seen = s.exp - 200;
        assert_eq!(
            TIMES.standing(&s, s.exp - 121),
            Standing::Valid { touch: false }
        );
        assert_eq!(TIMES.standing(&s, s.exp - 120), Standing::RefreshSoon);
        assert_eq!(TIMES.standing(&s, s.exp), Standing::RefreshNeeded);
        let mut s = session(false);
        s.seen = s.exp - 200;
        assert_eq!(
            TIMES.standing(&s, s.exp - 60),
            Standing::Valid { touch: false }
        );
        assert_eq!(TIMES.standing(&s, s.exp), Standing::Ended(Ending::Expired));
    }

    #[test]
    fn times_from_the_future_end_a_session() {
        let s = session(true);
        assert_eq!(TIMES.standing(&s, 9_000), Standing::Ended(Ending::Invalid));
        let mut s = session(true);
        s.seen = s.started - 1;
        assert_eq!(TIMES.standing(&s, 10_000), Standing::Ended(Ending::Invalid));
    }

    #[test]
    fn debug_output_hides_the_tokens() {
        let shown = format!("{:?}", session(true));
        assert!(!shown.contains("\"rt\"") && !shown.contains("idt\""));
        assert!(shown.contains("<set>"));
    }
}
