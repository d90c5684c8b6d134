//! Route rules and the first-match route table.

use super::kube_access::KubePolicy;
use super::{
    GroupRef, HostMatcher, MethodSet, PathMatcher, PolicyError, PrincipalMatcher, Requirement,
};
use crate::authn::TokenSource;
use crate::request::RequestView;
use std::sync::Arc;

/// Upstream header names for the identity; `None` means the field is not injected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// Header set to the username.
    pub user: Option<String>,
    /// Header set to the email address.
    pub email: Option<String>,
    /// Header set to the user's full name.
    pub display_name: Option<String>,
    /// Header set to the user's group names, comma-separated.
    pub groups: Option<GroupsHeader>,
}

impl IdentityHeaders {
    /// Every configured header name, lower-case.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        [&self.user, &self.email, &self.display_name]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(self.groups.as_ref().map(|g| g.name.as_str()))
    }
}

/// The groups header: which groups go into it and how large it may grow, so a user in
/// hundreds of groups never makes the upstream answer 431.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupsHeader {
    /// The header name, lower-case.
    pub name: String,
    /// Only these groups are passed on; empty: all of the user's groups.
    pub only: Vec<GroupRef>,
    /// Largest header value, in bytes.
    pub max_bytes: usize,
    /// What happens when the user's groups do not fit.
    pub on_overflow: Overflow,
}

/// Default bound on the groups header: well under any upstream's header limit (Envoy's
/// default for a whole header block is 60 KiB, many servers allow 8 KiB per header).
pub const DEFAULT_GROUPS_HEADER_BYTES: usize = 4096;

impl GroupsHeader {
    /// All of the user's groups in header `name`, up to the default size, else deny.
    pub fn named(name: &str) -> Self {
        GroupsHeader {
            name: name.to_ascii_lowercase(),
            only: Vec::new(),
            max_bytes: DEFAULT_GROUPS_HEADER_BYTES,
            on_overflow: Overflow::Deny,
        }
    }
}

/// What to do when a user's groups do not fit into the groups header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Deny the request (403), saying why.
    Deny,
    /// Pass on the groups that fit, whole names only, in Gerrit's order.
    Truncate,
}

/// A compiled route: matchers, requirement and header changes.
#[derive(Debug, Clone)]
pub struct RouteRule {
    /// Name from the config; appears in decisions, metrics and metadata.
    pub name: Arc<str>,
    /// Any of these hosts; empty means any host.
    pub hosts: Vec<HostMatcher>,
    /// The path matcher.
    pub path: PathMatcher,
    /// Accepted methods; empty means any.
    pub methods: MethodSet,
    /// The calling workload must match one of these; empty: any caller.
    pub principals: Vec<PrincipalMatcher>,
    /// Envoy `context_extensions` that must all be present with these values.
    pub context_extensions: Vec<(String, String)>,
    /// What the caller must prove.
    pub requirement: Requirement,
    /// Evaluate and report, but allow whatever the outcome.
    pub dry_run: bool,
    /// Whether allowed requests carry the identity to Envoy as `dynamic_metadata` (for its
    /// access log or later filters); off by default, since Envoy pays for parsing it on
    /// every request (about 5 % of its throughput, measured with one worker).
    pub dynamic_metadata: bool,
    /// Where the token is looked for, in order.
    pub token_sources: Vec<TokenSource>,
    /// Identity headers to inject on allow.
    pub inject: IdentityHeaders,
    /// Request headers to remove on allow (lower-case).
    pub remove_headers: Vec<String>,
    /// For a route to a kube-apiserver: which requests, impersonating whom.
    pub kube: Option<KubePolicy>,
    /// The issuers whose tokens this route accepts; empty: every configured issuer.
    pub issuers: Vec<String>,
    /// The token must carry one of these audiences (`aud`); empty: any its issuer
    /// accepts.
    pub audiences: Vec<String>,
    /// Identity headers other routes inject and this one does not, and headers an
    /// upstream trusts (Gerrit's `trusted_user_header`): removed too, so a client cannot
    /// forge on one route what the upstream trusts from another. Filled in by
    /// [`RouteTable::trusting`].
    pub foreign_identity_headers: Vec<String>,
    /// The issuer browsers sign in with on this route (`browser_sign_in: true`): its
    /// sessions are accepted when the request has no token, and a browser opening a page
    /// without either is sent there.
    pub browser_sign_in: Option<Arc<str>>,
}

impl RouteRule {
    /// Whether this rule covers the request.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(req.host)))
            && self.path.matches(req.path)
            && self.methods.matches(req.method)
            && (self.principals.is_empty()
                || self.principals.iter().any(|p| p.matches(req.principal)))
            && self
                .context_extensions
                .iter()
                .all(|(k, v)| req.context_extensions.get(k) == Some(v))
    }
}

/// Normalises a header name to lower case and checks it is an HTTP token.
pub fn header_name(name: &str) -> Result<String, PolicyError> {
    let ok = !name.is_empty()
        && !name.starts_with(':')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(PolicyError::InvalidHeaderName(name.to_string()))
    }
}

/// Routes in config order; the first that matches decides.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Arc<RouteRule>>,
}

impl RouteTable {
    /// A table of already-compiled rules.
    pub fn new(routes: Vec<RouteRule>) -> Self {
        Self::trusting(routes, &[])
    }

    /// A table of already-compiled rules, where upstreams also trust `trusted` headers
    /// (lower-case) that no route may let a client send: every route removes them unless
    /// it sets them itself, as it does the other routes' identity headers.
    pub fn trusting(mut routes: Vec<RouteRule>, trusted: &[String]) -> Self {
        let mut all: Vec<String> = routes
            .iter()
            .flat_map(|r| r.inject.names().map(str::to_string))
            .chain(trusted.iter().map(|h| h.to_ascii_lowercase()))
            .collect();
        all.sort();
        all.dedup();
        for route in &mut routes {
            route.foreign_identity_headers = all
                .iter()
                .filter(|h| {
                    !route.inject.names().any(|n| n == h.as_str())
                        && !route.remove_headers.contains(h)
                })
                .cloned()
                .collect();
        }
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// The first rule that covers the request, if any.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Arc<RouteRule>> {
        self.routes.iter().find(|r| r.matches(req))
    }

    /// All rules, in order.
    pub fn routes(&self) -> &[Arc<RouteRule>] {
        &self.routes
    }
}

#[cfg(test)]
impl RouteRule {
    /// A public route named `name` that matches every request and changes nothing: the
    /// base the policy tests build their routes on.
    pub(crate) fn test_base(name: &str) -> Self {
        Self {
            name: name.into(),
            hosts: vec![],
            path: PathMatcher::Any,
            methods: MethodSet::default(),
            principals: vec![],
            context_extensions: vec![],
            requirement: Requirement::Public,
            dry_run: false,
            dynamic_metadata: false,
            token_sources: vec![TokenSource::Bearer],
            inject: IdentityHeaders::default(),
            remove_headers: vec![],
            kube: None,
            foreign_identity_headers: vec![],
            browser_sign_in: None,
            issuers: vec![],
            audiences: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rule(name: &str, host: &str, prefix: &str, methods: &[&str]) -> RouteRule {
        RouteRule {
            hosts: vec![HostMatcher::parse(host).unwrap()],
            path: PathMatcher::prefix(prefix).unwrap(),
            methods: MethodSet::new(methods).unwrap(),
            ..RouteRule::test_base(name)
        }
    }

    fn req<'a>(
        h: &'a HashMap<String, String>,
        m: &'a str,
        host: &'a str,
        p: &'a str,
    ) -> RequestView<'a> {
        RequestView::http(m, host, p, h)
    }

    #[test]
    fn first_matching_route_wins() {
        let t = RouteTable::new(vec![
            rule("gerrit-api", "gerrit.example.com", "/a/", &[]),
            rule("gerrit-read", "gerrit.example.com", "/", &["GET"]),
            rule("builds", "*.builds.example.com", "/", &[]),
        ]);
        let h = HashMap::new();
        let name = |m, host, p| t.find(&req(&h, m, host, p)).map(|r| r.name.to_string());
        assert_eq!(
            name("POST", "gerrit.example.com", "/a/changes/"),
            Some("gerrit-api".into())
        );
        assert_eq!(
            name("GET", "gerrit.example.com", "/c/foo"),
            Some("gerrit-read".into())
        );
        assert_eq!(name("POST", "gerrit.example.com", "/c/foo"), None);
        assert_eq!(
            name("GET", "pod-1.builds.example.com", "/x"),
            Some("builds".into())
        );
        assert_eq!(name("GET", "other.example.com", "/"), None);
    }

    #[test]
    fn header_names_are_lower_cased_and_checked() {
        assert_eq!(header_name("X-Forwarded-User").unwrap(), "x-forwarded-user");
        assert!(header_name("bad header").is_err());
        assert!(header_name(":path").is_err());
        assert!(header_name("").is_err());
    }

    #[test]
    fn identity_headers_of_other_routes_are_stripped_too() {
        let mut a = rule("a", "gerrit.example.com", "/a/", &[]);
        a.inject.user = Some("x-forwarded-user".into());
        a.inject.groups = Some(GroupsHeader::named("x-forwarded-groups"));
        let mut b = rule("b", "builds.example.com", "/", &[]);
        b.inject.user = Some("x-forwarded-user".into());
        b.remove_headers = vec!["x-forwarded-groups".into()];
        let c = rule("c", "other.example.com", "/", &[]);
        let t = RouteTable::new(vec![a, b, c]);
        assert!(t.routes()[0].foreign_identity_headers.is_empty());
        assert!(
            t.routes()[1].foreign_identity_headers.is_empty(),
            "already removed"
        );
        assert_eq!(
            t.routes()[2].foreign_identity_headers,
            vec![
                "x-forwarded-groups".to_string(),
                "x-forwarded-user".to_string()
            ]
        );
    }
}
