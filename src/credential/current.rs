//! The token to send now: the stored one while it has a minute left, else a refreshed
//! one. Refreshes take the store's lock and look again first, so processes that ask at
//! once (git runs several) share one refresh, and a rotating refresh token is spent once.

use super::config::{Gateway, TokenKind};
use super::store::{Stored, TokenStore};
use super::CredentialError;
use crate::oidc::{OidcError, Provider, Tokens};
use std::time::Duration;

/// A token with less left than this is refreshed first: git and kubectl may take a
/// while between asking and sending.
pub const MIN_REMAINING: Duration = Duration::from_secs(60);

/// A token to hand out, hidden from `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct CurrentToken {
    /// The token.
    pub token: String,
    /// When it expires, seconds since the epoch.
    pub expires: u64,
    /// Who it names (for git's user name and messages).
    pub user: Option<String>,
}

impl std::fmt::Debug for CurrentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentToken")
            .field("expires", &self.expires)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The token for `gateway`, refreshing it at the IdP when it is about to expire.
pub async fn current_token(
    gateway: &Gateway,
    store: &TokenStore,
    provider: &Provider,
    now: u64,
) -> Result<CurrentToken, CredentialError> {
    let (issuer, client_id) = (&gateway.client.issuer, &gateway.client.client_id);
    if let Some(token) = usable(store.load(issuer, client_id)?.as_ref(), now) {
        return Ok(token);
    }
    let _lock = store.lock(issuer, client_id)?;
    // Another process may have refreshed while this one waited for the lock.
    let Some(stored) = store.load(issuer, client_id)? else {
        return Err(not_signed_in(gateway));
    };
    if let Some(token) = usable(Some(&stored), now) {
        return Ok(token);
    }
    let Some(refresh_token) = stored.refresh_token.as_deref() else {
        return Err(ended(gateway, "no refresh token was issued".into()));
    };
    let tokens = match provider.refresh(refresh_token).await {
        Ok(tokens) => tokens,
        Err(OidcError::Refused { error, description }) => {
            // The refresh token is done for: forget it, so the next attempt says so at once.
            store.save(&Stored {
                refresh_token: None,
                token: None,
                expires: None,
                ..stored
            })?;
            let reason = match description {
                Some(d) => format!("{error}: {d}"),
                None => error,
            };
            return Err(ended(gateway, reason));
        }
        Err(error) => {
            return Err(CredentialError::Idp {
                issuer: issuer.clone(),
                error,
            })
        }
    };
    let fresh = stored_from(gateway, &tokens, Some(stored), now)?;
    store.save(&fresh)?;
    // Just issued: handed out even if the IdP makes tokens shorter than the margin.
    match (fresh.token, fresh.expires) {
        (Some(token), Some(expires)) => Ok(CurrentToken {
            token,
            expires,
            user: fresh.user,
        }),
        _ => Err(CredentialError::NoToken(gateway.token.name())),
    }
}

/// The stored token, if it has [`MIN_REMAINING`] left.
fn usable(stored: Option<&Stored>, now: u64) -> Option<CurrentToken> {
    let stored = stored?;
    let token = stored.token.clone()?;
    let expires = stored.expires?;
    (expires >= now + MIN_REMAINING.as_secs()).then(|| CurrentToken {
        token,
        expires,
        user: stored.user.clone(),
    })
}

/// What to store from a token answer: the token of the gateway's kind, its expiry, the
/// refresh token (the new one with rotation, else the old one), who signed in.
pub fn stored_from(
    gateway: &Gateway,
    tokens: &Tokens,
    previous: Option<Stored>,
    now: u64,
) -> Result<Stored, CredentialError> {
    let token = match gateway.token {
        TokenKind::IdToken => tokens.id_token.clone(),
        TokenKind::AccessToken => Some(tokens.access_token.clone()),
    }
    .filter(|t| !t.is_empty())
    .ok_or(CredentialError::NoToken(gateway.token.name()))?;
    let claims = unverified_claims(&token);
    // The token's own `exp` if it is a JWT, else the answer's `expires_in`.
    let expires = claims
        .as_ref()
        .and_then(|c| c.get("exp"))
        .and_then(serde_json::Value::as_u64)
        .or_else(|| tokens.expires_in.map(|d| now + d.as_secs()))
        .unwrap_or(now);
    let user = tokens
        .id_token
        .as_deref()
        .and_then(unverified_claims)
        .and_then(|c| {
            ["preferred_username", "email", "sub"]
                .iter()
                .find_map(|k| c.get(*k).and_then(|v| v.as_str()).map(str::to_string))
        });
    let previous = previous.unwrap_or_default();
    Ok(Stored {
        issuer: gateway.client.issuer.clone(),
        client_id: gateway.client.client_id.clone(),
        user: user.or(previous.user),
        refresh_token: tokens.refresh_token.clone().or(previous.refresh_token),
        token: Some(token),
        expires: Some(expires),
    })
}

/// A JWT's claims, read without verification: only to know when to refresh and whom to
/// name. The gateway verifies the token.
fn unverified_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn not_signed_in(gateway: &Gateway) -> CredentialError {
    CredentialError::NotSignedIn {
        issuer: gateway.client.issuer.clone(),
        host: gateway.host().to_string(),
    }
}

fn ended(gateway: &Gateway, reason: String) -> CredentialError {
    CredentialError::SignInEnded {
        issuer: gateway.client.issuer.clone(),
        host: gateway.host().to_string(),
        reason,
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    crate::authn::unix_now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::config::ClientConfig;
    use base64::Engine;

    fn gateway(kind: &str) -> Gateway {
        let text = format!(
            "gateways:\n  - hosts: [g.example.com]\n    issuer: https://idp.example.com\n    client_id: cli\n    token: {kind}\n"
        );
        ClientConfig::parse(std::path::Path::new("c.yaml"), &text)
            .unwrap()
            .choose(None)
            .unwrap()
            .clone()
    }

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.sig",
            b64(&serde_json::json!({"alg": "RS256"})),
            b64(&claims)
        )
    }

    fn tokens(id_token: Option<String>, refresh: Option<&str>) -> Tokens {
        Tokens {
            id_token,
            access_token: "opaque-access".into(),
            expires_in: Some(Duration::from_secs(300)),
            refresh_token: refresh.map(str::to_string),
        }
    }

    #[test]
    fn an_id_token_is_kept_with_its_own_expiry_and_its_user() {
        let id = jwt(serde_json::json!({"exp": 2_000, "preferred_username": "alice"}));
        let stored = stored_from(
            &gateway("id_token"),
            &tokens(Some(id.clone()), Some("r1")),
            None,
            1_000,
        )
        .unwrap();
        assert_eq!(stored.token.as_deref(), Some(id.as_str()));
        assert_eq!(stored.expires, Some(2_000));
        assert_eq!(stored.user.as_deref(), Some("alice"));
        assert_eq!(stored.refresh_token.as_deref(), Some("r1"));
    }

    #[test]
    fn an_opaque_access_token_expires_by_expires_in_and_the_old_refresh_token_stays() {
        let previous = Stored {
            refresh_token: Some("r0".into()),
            user: Some("alice".into()),
            ..Stored::default()
        };
        let stored = stored_from(
            &gateway("access_token"),
            &tokens(None, None),
            Some(previous),
            1_000,
        )
        .unwrap();
        assert_eq!(stored.token.as_deref(), Some("opaque-access"));
        assert_eq!(stored.expires, Some(1_300));
        assert_eq!(stored.refresh_token.as_deref(), Some("r0"));
        assert_eq!(stored.user.as_deref(), Some("alice"));
    }

    #[test]
    fn an_answer_without_the_configured_token_is_an_error_saying_which() {
        let e = stored_from(&gateway("id_token"), &tokens(None, Some("r")), None, 0).unwrap_err();
        assert!(e.to_string().contains("no id_token"), "{e}");
    }

    #[test]
    fn a_token_is_used_until_a_minute_before_it_expires() {
        let stored = Stored {
            token: Some("t".into()),
            expires: Some(1_000),
            ..Stored::default()
        };
        assert!(usable(Some(&stored), 900).is_some());
        assert!(usable(Some(&stored), 940).is_some());
        assert!(usable(Some(&stored), 941).is_none());
        assert!(usable(None, 0).is_none());
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let t = CurrentToken {
            token: "secret-token".into(),
            expires: 1,
            user: None,
        };
        assert!(!format!("{t:?}").contains("secret-token"));
    }
}
