//! Route policy: which rule covers a request and what it requires.
//!
//! Rules are compiled from the config once (the matchers' constructors reject anything
//! invalid), then evaluated with pure functions on every Check.

pub mod change_gate;
pub mod grants;
mod group_ref;
mod inject;
pub mod kube;
pub mod kube_access;
mod matcher;
pub mod overlap;
mod requirement;
mod route;

pub use change_gate::{ChangeCondition, ChangeFacts};
pub use group_ref::GroupRef;
pub use inject::{
    as_dry_run, upstream_changes, HeaderChanges, Impersonation, InjectError, IMPERSONATE_GROUP,
    IMPERSONATE_USER, MAX_INJECTED_BYTES,
};
pub use matcher::{HostMatcher, MethodSet, PathMatcher, PrincipalMatcher};
pub use requirement::{ClaimCondition, ClaimRequirement, Requirement, Rule, Satisfied, Unmet};
pub use route::{
    header_name, GroupsHeader, IdentityHeaders, Overflow, RouteRule, RouteTable,
    DEFAULT_GROUPS_HEADER_BYTES,
};

/// A policy value that cannot be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A host pattern is empty, has a misplaced wildcard or invalid characters.
    #[error("invalid host pattern {0:?}: use an exact host or `*.suffix`")]
    InvalidHost(String),
    /// A path does not start with `/`, or has a query, a fragment or a `%` escape.
    #[error("invalid path {0:?}: must start with `/`, without `?` or `#`")]
    InvalidPath(String),
    /// An HTTP method name is not a token.
    #[error("invalid HTTP method {0:?}")]
    InvalidMethod(String),
    /// A header name is not a valid lower-case-able HTTP token.
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    /// A path regex does not compile or is too large.
    #[error("invalid path regex {pattern:?}: {reason}")]
    InvalidRegex {
        /// The pattern as written.
        pattern: String,
        /// Why it was refused.
        reason: String,
    },
    /// A principal pattern is empty or has a misplaced wildcard.
    #[error("invalid principal pattern {0:?}: use an exact identity, `prefix*`, `*suffix` or `*`")]
    InvalidPrincipal(String),
    /// A plain group entry is shaped like a Gerrit group UUID, and would otherwise be
    /// matched against names too.
    #[error("group {0:?} looks like a group UUID: write `uuid:{0}` to match the group with that UUID, or `name:{0}` for a group with that name")]
    AmbiguousGroup(String),
    /// A route path that every request matching it would be refused for.
    #[error("invalid path {0:?}: {1}, which requests are refused for")]
    UnsafePath(String, crate::request::PathError),
    /// A group entry is empty or has control characters.
    #[error("invalid group {0:?}: write a group name, `name:NAME` or `uuid:UUID`")]
    InvalidGroup(String),
}
