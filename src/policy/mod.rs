//! Route policy: which rule covers a request and what it requires.
//!
//! Rules are compiled from the config once ([`RouteRule::new`] and friends reject anything
//! invalid), then evaluated with pure functions on every Check.

pub mod kube;
mod matcher;
mod route;

pub use matcher::{HostMatcher, MethodSet, PathMatcher};
pub use route::{header_name, IdentityHeaders, Requirement, RouteRule, RouteTable};

/// A policy value that cannot be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A host pattern is empty, has a misplaced wildcard or invalid characters.
    #[error("invalid host pattern {0:?}: use an exact host or `*.suffix`")]
    InvalidHost(String),
    /// A path does not start with `/`.
    #[error("invalid path {0:?}: must start with `/`")]
    InvalidPath(String),
    /// An HTTP method name is not a token.
    #[error("invalid HTTP method {0:?}")]
    InvalidMethod(String),
    /// A header name is not a valid lower-case-able HTTP token.
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
}
