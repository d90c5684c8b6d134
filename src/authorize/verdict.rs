//! What a decision comes to: the verdict, why, and the steps that led there.

use crate::authn::AuthnError;
use crate::identity::Identity;
use crate::identity::Membership;
use crate::policy::{HeaderChanges, RouteRule};
use crate::request::PathError;
use crate::signin::Answer;
use std::sync::Arc;

/// The outcome of one authorization, with the reasoning that led to it.
#[derive(Debug)]
pub struct Decision {
    /// The route that decided, if any matched.
    pub route: Option<Arc<RouteRule>>,
    /// Which rule of the route decided (`allow`, `allow[1]`), if one held.
    pub rule: Option<String>,
    /// Allow, deny or cannot decide, as evaluated (for a dry-run route, what would have
    /// happened).
    pub verdict: Verdict,
    /// Human-readable steps, in order: what matched and what was checked; empty unless
    /// asked for ([`Authorizer::explain`]).
    pub steps: Vec<String>,
    /// Who the caller turned out to be, if a token was verified or a workload rule named
    /// a user: also on denials, for the audit log.
    pub caller: Option<Arc<Identity>>,
    /// On a dry-run route whose verdict is not an allow: the header changes of the allow
    /// that is sent instead (identity headers removed, as on a public route).
    pub dry_run_headers: Option<HeaderChanges>,
}

impl Decision {
    /// Whether the route is in dry-run: the verdict is reported, the request allowed.
    pub fn dry_run(&self) -> bool {
        self.route.as_ref().is_some_and(|r| r.dry_run)
    }

    pub(super) fn unrouted(verdict: Verdict, steps: Trace) -> Self {
        Decision {
            route: None,
            rule: None,
            verdict,
            steps: steps.into_steps(),
            caller: None,
            dry_run_headers: None,
        }
    }
}

/// What to tell Envoy.
#[derive(Debug)]
pub enum Verdict {
    /// Let the request through with these header changes.
    Allow {
        /// The caller, if a token or a workload rule named one.
        identity: Option<Arc<Identity>>,
        /// The caller's groups, if the route needed them.
        membership: Option<Arc<Membership>>,
        /// Headers to set and remove upstream.
        headers: HeaderChanges,
        /// `Set-Cookie` values for the response the browser gets (a refreshed session).
        set_cookies: Vec<String>,
    },
    /// Reject the request.
    Deny(Denial),
    /// mesh-authz answers the browser itself: browser sign-in's redirects and pages.
    Answer(Answer),
    /// mesh-authz cannot decide (a dependency is down): let Envoy's failure mode decide.
    Unavailable(String),
}

/// Why a request was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No usable token where one is needed (HTTP 401).
    Unauthenticated(AuthnError),
    /// The path is one an upstream could resolve to another route's path (dot-segments,
    /// `//`, `\`, `;`, bad escapes; see [`crate::request::routing_path`]): refused before
    /// any route is matched (HTTP 400).
    UnsafePath(PathError),
    /// No route covers the request (HTTP 403).
    NoRoute,
    /// The calling workload is not one the route allows (HTTP 403).
    PrincipalNotAllowed,
    /// The caller is not in the required groups (HTTP 403); says which (for the audit
    /// log: "not a member of name:team-a").
    NotInGroup(String),
    /// A claim condition or a scope does not hold (HTTP 403); says which.
    ClaimUnmet(String),
    /// The identity cannot be expressed as an HTTP header value (HTTP 403).
    UnsafeHeaderValue,
    /// The user's groups do not fit into the groups header (HTTP 403).
    GroupsTooLarge,
    /// The kube policy does not allow this apiserver request (HTTP 403); says which
    /// request, as the developer sent it.
    KubeForbidden(String),
    /// The Gerrit change the request acts for is not as a rule requires (HTTP 403); says
    /// why ("change 1234 is not merged").
    ChangeUnmet(String),
    /// No active grant names the caller for this route and request (HTTP 403).
    NoGrant {
        /// The route.
        route: String,
        /// How to ask for a grant, as configured.
        how_to_ask: Option<String>,
    },
}

impl Denial {
    /// How close the caller came: when several rules fail, the denial of the one that
    /// got furthest is reported (a valid token that lacks a group says more than a
    /// missing token, which says more than a workload that is not allowed).
    pub(super) fn rank(&self) -> u8 {
        match self {
            Denial::PrincipalNotAllowed => 0,
            Denial::Unauthenticated(_) => 1,
            _ => 2,
        }
    }
}

impl Verdict {
    /// What the reason code leaves out, for the audit log: which group or claim was
    /// missing, which kube request or change failed, why a Check could not be decided.
    /// Names from the config and the request, never a token or header value.
    pub fn detail(&self) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match self {
            Verdict::Allow { .. } | Verdict::Answer(_) => None,
            Verdict::Deny(Denial::Unauthenticated(e)) => Some(Cow::Owned(e.to_string())),
            Verdict::Deny(Denial::UnsafePath(e)) => Some(Cow::Owned(e.to_string())),
            Verdict::Deny(
                Denial::NotInGroup(what)
                | Denial::ClaimUnmet(what)
                | Denial::KubeForbidden(what)
                | Denial::ChangeUnmet(what),
            ) => Some(Cow::Borrowed(what)),
            Verdict::Deny(Denial::NoGrant { route, .. }) => {
                Some(Cow::Owned(format!("no active grant for route {route:?}")))
            }
            Verdict::Deny(
                Denial::NoRoute
                | Denial::PrincipalNotAllowed
                | Denial::UnsafeHeaderValue
                | Denial::GroupsTooLarge,
            ) => None,
            Verdict::Unavailable(reason) => Some(Cow::Borrowed(reason)),
        }
    }

    /// A short stable reason label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Allow { .. } => "allowed",
            Verdict::Deny(Denial::Unauthenticated(e)) => e.code(),
            Verdict::Deny(Denial::UnsafePath(_)) => "unnormalized_path",
            Verdict::Deny(Denial::NoRoute) => "no_route",
            Verdict::Deny(Denial::PrincipalNotAllowed) => "principal_not_allowed",
            Verdict::Deny(Denial::NotInGroup(_)) => "not_in_group",
            Verdict::Deny(Denial::ClaimUnmet(_)) => "claim_unmet",
            Verdict::Deny(Denial::UnsafeHeaderValue) => "unsafe_header_value",
            Verdict::Deny(Denial::GroupsTooLarge) => "groups_too_large",
            Verdict::Deny(Denial::KubeForbidden(_)) => "kube_forbidden",
            Verdict::Deny(Denial::ChangeUnmet(_)) => "change_unmet",
            Verdict::Deny(Denial::NoGrant { .. }) => "no_grant",
            Verdict::Answer(answer) => answer.reason,
            Verdict::Unavailable(_) => "unavailable",
        }
    }

    /// `allow`, `deny`, `answer` (browser sign-in's own redirects and pages) or
    /// `unavailable`.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Allow { .. } => "allow",
            Verdict::Deny(_) => "deny",
            Verdict::Answer(_) => "answer",
            Verdict::Unavailable(_) => "unavailable",
        }
    }
}

/// The explanation of a decision, written only when asked for: the Check path does not
/// pay for the formatting.
pub struct Trace(Option<Vec<String>>);

impl Trace {
    /// Records nothing.
    pub fn off() -> Self {
        Trace(None)
    }

    /// Records every step.
    pub fn on() -> Self {
        Trace(Some(Vec::new()))
    }

    /// Whether steps are recorded.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Records the step `step` builds, if recording.
    pub fn note(&mut self, step: impl FnOnce() -> String) {
        if let Some(steps) = &mut self.0 {
            steps.push(step());
        }
    }

    pub(super) fn into_steps(self) -> Vec<String> {
        self.0.unwrap_or_default()
    }
}
