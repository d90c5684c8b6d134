//! Who the caller is, whatever the source: the verified identity, the Gerrit account it
//! names, and the groups it is in. Policy reads these; authn and gerrit produce them.

mod account;
mod membership;

pub use account::{AccountForm, GerritAccount};
pub use membership::{Group, Membership};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Who the caller is, taken from a verified token.
///
/// `Debug` leaves the claims out: they are the token's content.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The issuer that signed the token.
    pub issuer: String,
    /// The user name (the configured user claim), injected upstream.
    pub user: String,
    /// The email claim, when present and a string.
    pub email: Option<String>,
    /// The Gerrit account to look groups up for: the issuer's `gerrit_account_claim` (by
    /// default the user name) in its declared `gerrit_account_form`.
    pub gerrit_account: GerritAccount,
    /// The user's full name (the issuer's name claim), when present and a string.
    pub display_name: Option<String>,
    /// Every claim of the token, for the rules' claim conditions; shared, since verified
    /// tokens are cached.
    pub claims: Arc<Map<String, Value>>,
    /// What the caller proved it with.
    pub credential: Credential,
}

/// What a caller proved its identity with (the audit log's `credential`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Credential {
    /// A token in the request (bearer, header, cookie or query).
    #[default]
    Token,
    /// A browser session cookie left by browser sign-in.
    Session,
    /// The calling workload's mesh identity (a rule's `as_user`).
    Workload,
}

impl Credential {
    /// `token`, `session` or `workload`.
    pub fn as_str(self) -> &'static str {
        match self {
            Credential::Token => "token",
            Credential::Session => "session",
            Credential::Workload => "workload",
        }
    }
}

impl Identity {
    /// A workload allowed by its mesh identity (`principal`) that acts upstream as
    /// `user` (a rule's `as_user`); it has no token, so no claims.
    pub fn workload(principal: &str, user: &str) -> Self {
        Identity {
            issuer: principal.to_string(),
            user: user.to_string(),
            email: None,
            gerrit_account: GerritAccount::Username(user.to_string()),
            display_name: None,
            claims: Arc::default(),
            credential: Credential::Workload,
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("issuer", &self.issuer)
            .field("user", &self.user)
            .field("gerrit_account", &self.gerrit_account)
            .finish_non_exhaustive()
    }
}
