//! Gerrit as mesh-authz reads it: group membership (the REST client, the per-user group
//! cache, and the events that invalidate it) and changes under review.

mod cache;
mod change;
mod client;
mod events;
mod grants;
mod metrics;
mod secret;

pub use crate::identity::{AccountForm, GerritAccount, Group, Membership};
pub use cache::{CacheSettings, GroupCache, GroupSource, StaticGroups};
pub use change::{
    ChangeAccount, ChangeCache, ChangeId, ChangeIdError, ChangeInfo, ChangeStatus, LabelInfo,
    SubmitRequirement, Vote,
};
pub use client::{
    GerritClient, GerritCredentials, GerritSettings, Member, DEFAULT_MAX_RESPONSE_BYTES,
};
pub use events::{group_changes, Applied, EventError, GroupChanges, GroupEvents};
pub use grants::{GrantStore, GrantsSettings, Refreshed};
pub use metrics::GerritMetrics;
pub use secret::Secret;

/// Why group membership could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GerritError {
    /// Gerrit could not be reached or did not answer in time.
    #[error("Gerrit unreachable: {0}")]
    Unreachable(String),
    /// Gerrit rejected the service account (HTTP 401/403): a configuration problem.
    #[error("Gerrit rejected the service account credentials (HTTP {0})")]
    Credentials(u16),
    /// Gerrit answered with an unexpected status.
    #[error("Gerrit answered HTTP {0}")]
    Status(u16),
    /// 404 where Gerrit's REST API never answers it: `gerrit.url` (or its path prefix)
    /// does not lead to Gerrit.
    #[error("no Gerrit REST API at gerrit.url (HTTP 404 for an account query): check the URL and its path prefix")]
    WrongUrl,
    /// The body was not the documented JSON.
    #[error("unexpected Gerrit response: {0}")]
    Response(String),
}

impl GerritError {
    /// Worth retrying: timeouts, connection failures and 5xx answers.
    pub fn is_transient(&self) -> bool {
        match self {
            GerritError::Unreachable(_) => true,
            GerritError::Status(s) => *s >= 500,
            GerritError::Credentials(_) | GerritError::Response(_) | GerritError::WrongUrl => false,
        }
    }

    /// A short stable label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            GerritError::Unreachable(_) => "unreachable",
            GerritError::Credentials(_) => "credentials",
            GerritError::Status(_) => "status",
            GerritError::Response(_) => "bad_response",
            GerritError::WrongUrl => "wrong_url",
        }
    }
}
