//! The decision logic: route → token → groups → verdict, with no gRPC in sight.

use crate::authn::{find_token, AuthnError, Identity, JwksStore, TokenVerifier};
use crate::config::{Config, ConfigError, GerritConfig, GroupsConfig, IssuerConfig, Problem};
use crate::gerrit::{
    CacheSettings, GerritAccount, GerritAuth, GerritClient, GerritMetrics, GerritSettings,
    GroupCache, GroupEvents, GroupSource, Membership, Secret,
};
use crate::policy::{
    kube, kube_access, upstream_changes, HeaderChanges, Impersonation, InjectError, Requirement,
    RouteRule, RouteTable, Unmet,
};
use crate::request::{routing_path, PathError, RequestView};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The authorizer in force; a config reload replaces it atomically.
pub type CurrentAuthorizer = Arc<arc_swap::ArcSwap<Authorizer>>;

/// Everything needed to decide: the verifier, the group cache and the routes.
#[derive(Debug)]
pub struct Authorizer {
    verifier: Arc<TokenVerifier>,
    groups: Option<GroupCache>,
    group_events: Option<GroupEvents>,
    routes: RouteTable,
    /// The config parts the verifier and the group cache were built from, so a reload
    /// can tell what it may keep.
    sources: Sources,
}

/// The config parts behind an authorizer's stateful pieces.
#[derive(Debug, Clone, Default)]
struct Sources {
    issuers: Vec<IssuerConfig>,
    token_cache_entries: u64,
    max_token_bytes: usize,
    /// The claims the routes' rules look at: what a verified identity keeps.
    claims: BTreeSet<String>,
    groups: Option<GroupsConfig>,
}

impl Sources {
    fn of(config: &Config) -> Self {
        Sources {
            issuers: config.issuers.clone(),
            token_cache_entries: config.token_cache_entries,
            max_token_bytes: config.max_token_bytes,
            claims: claims_used(&config.routes),
            groups: config.groups.clone(),
        }
    }

    /// Whether a verifier built from `self` verifies exactly as one built from `other`.
    fn same_verification(&self, other: &Sources) -> bool {
        self.token_cache_entries == other.token_cache_entries
            && self.max_token_bytes == other.max_token_bytes
            // Cached identities hold only the claims that were used when they were made.
            && self.claims == other.claims
            && self.issuers.len() == other.issuers.len()
            && self.issuers.iter().zip(&other.issuers).all(|(a, b)| {
                a.settings == b.settings && a.timing == b.timing && a.jwks.same_as(&b.jwks)
            })
    }
}

/// What authorizers built from successive configs share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The HTTP client for JWKS fetches.
    pub http: reqwest::Client,
    /// The Gerrit metrics, registered once for `/metrics`.
    pub gerrit_metrics: GerritMetrics,
}

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

    fn unrouted(verdict: Verdict, steps: Trace) -> Self {
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
    },
    /// Reject the request.
    Deny(Denial),
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
    /// The caller is not in the required groups (HTTP 403).
    NotInGroup,
    /// A claim condition or a scope does not hold (HTTP 403).
    ClaimUnmet,
    /// The identity cannot be expressed as an HTTP header value (HTTP 403).
    UnsafeHeaderValue,
    /// The user's groups do not fit into the groups header (HTTP 403).
    GroupsTooLarge,
    /// The kube policy does not allow this apiserver request (HTTP 403); says which
    /// request, as the developer sent it.
    KubeForbidden(String),
}

impl Denial {
    /// How close the caller came: when several rules fail, the denial of the one that
    /// got furthest is reported (a valid token that lacks a group says more than a
    /// missing token, which says more than a workload that is not allowed).
    fn rank(&self) -> u8 {
        match self {
            Denial::PrincipalNotAllowed => 0,
            Denial::Unauthenticated(_) => 1,
            _ => 2,
        }
    }
}

impl Verdict {
    /// A short stable reason label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Allow { .. } => "allowed",
            Verdict::Deny(Denial::Unauthenticated(e)) => e.code(),
            Verdict::Deny(Denial::UnsafePath(_)) => "unnormalized_path",
            Verdict::Deny(Denial::NoRoute) => "no_route",
            Verdict::Deny(Denial::PrincipalNotAllowed) => "principal_not_allowed",
            Verdict::Deny(Denial::NotInGroup) => "not_in_group",
            Verdict::Deny(Denial::ClaimUnmet) => "claim_unmet",
            Verdict::Deny(Denial::UnsafeHeaderValue) => "unsafe_header_value",
            Verdict::Deny(Denial::GroupsTooLarge) => "groups_too_large",
            Verdict::Deny(Denial::KubeForbidden(_)) => "kube_forbidden",
            Verdict::Unavailable(_) => "unavailable",
        }
    }

    /// `allow`, `deny` or `unavailable`.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Allow { .. } => "allow",
            Verdict::Deny(_) => "deny",
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

    fn into_steps(self) -> Vec<String> {
        self.0.unwrap_or_default()
    }
}

/// What is known about the caller, found at most once per request and only when a rule
/// needs it.
struct Facts<'a> {
    authorizer: &'a Authorizer,
    route: &'a RouteRule,
    req: &'a RequestView<'a>,
    identity: Option<Result<Arc<Identity>, AuthnError>>,
    membership: Option<Result<Arc<Membership>, String>>,
}

impl<'a> Facts<'a> {
    async fn identity(&mut self, steps: &mut Trace) -> Result<Arc<Identity>, AuthnError> {
        if let Some(known) = &self.identity {
            return known.clone();
        }
        let result = self.authorizer.authenticate(self.route, self.req).await;
        match &result {
            Ok(id) => steps.note(|| {
                format!(
                    "token verified: user {:?} from issuer {}",
                    id.user, id.issuer
                )
            }),
            Err(AuthnError::KeysUnavailable) => {
                steps.note(|| "issuer signing keys have not been loaded yet: cannot decide".into())
            }
            Err(e) => steps.note(|| format!("token rejected: {e}")),
        }
        self.identity = Some(result.clone());
        result
    }

    async fn membership(
        &mut self,
        identity: &Identity,
        steps: &mut Trace,
    ) -> Result<Arc<Membership>, String> {
        if let Some(known) = &self.membership {
            return known.clone();
        }
        let result = self
            .authorizer
            .membership(&identity.gerrit_account, steps)
            .await;
        self.membership = Some(result.clone());
        result
    }
}

impl Authorizer {
    /// An authorizer over compiled parts.
    pub fn new(verifier: TokenVerifier, groups: Option<GroupCache>, routes: RouteTable) -> Self {
        Self {
            verifier: Arc::new(verifier),
            groups,
            group_events: None,
            routes,
            sources: Sources::default(),
        }
    }

    /// Starts what keeps the authorizer's state fresh: JWKS refreshers, the Gerrit
    /// password reloader and the Gerrit self-check, once for each piece (pieces kept by a reload keep theirs). The
    /// tasks end when their piece is dropped.
    pub fn start_background(&self) {
        for store in self.verifier.stores() {
            store.spawn_refresher();
        }
        if let Some(gerrit) = self.groups.as_ref().and_then(|g| g.gerrit()) {
            gerrit.spawn_password_reloader();
            gerrit.spawn_self_check();
        }
    }

    /// The receiver of Gerrit group events, if enabled.
    pub fn group_events(&self) -> Option<&GroupEvents> {
        self.group_events.as_ref()
    }

    /// The token verifier (readiness, key refreshers).
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// The group cache, if a group source is configured (invalidation).
    pub fn groups(&self) -> Option<&GroupCache> {
        self.groups.as_ref()
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Decides one request.
    pub async fn decide(&self, req: &RequestView<'_>) -> Decision {
        self.decide_traced(req, Trace::off()).await
    }

    /// Decides one request and says how, step by step (for `mesh-authz check`).
    pub async fn explain(&self, req: &RequestView<'_>) -> Decision {
        self.decide_traced(req, Trace::on()).await
    }

    async fn decide_traced(&self, req: &RequestView<'_>, mut steps: Trace) -> Decision {
        let routing = match routing_path(req.path) {
            Ok(path) => path,
            Err(e) => {
                steps.note(|| format!("path {:?}: {e}: refused before matching", req.path));
                return Decision::unrouted(Verdict::Deny(Denial::UnsafePath(e)), steps);
            }
        };
        if routing != req.path {
            steps.note(|| format!("path decoded for matching: {routing}"));
        }
        // Routes see the decoded path; everything else (the kube request, the audit) the
        // request as sent.
        let routed = RequestView {
            path: &routing,
            ..*req
        };
        let Some(route) = self.routes.find(&routed) else {
            steps.note(|| {
                format!(
                    "no route matches {} {}{}: denied by default",
                    req.method, req.host, req.path
                )
            });
            return Decision::unrouted(Verdict::Deny(Denial::NoRoute), steps);
        };
        steps.note(|| format!("route {:?} matched", &*route.name));
        let mut facts = Facts {
            authorizer: self,
            route,
            req,
            identity: None,
            membership: None,
        };
        let (rule, verdict) = self.decide_route(&mut facts, &mut steps).await;
        let caller = match &verdict {
            Verdict::Allow { identity, .. } => identity.clone(),
            _ => facts.identity.and_then(Result::ok),
        };
        let mut dry_run_headers = None;
        if route.dry_run {
            steps.note(|| {
                format!(
                    "route is in dry-run: {} would be the answer; the request is allowed",
                    verdict.kind()
                )
            });
            if !matches!(verdict, Verdict::Allow { .. }) {
                // Allowed as if public: no identity reaches the upstream.
                dry_run_headers = upstream_changes(route, None, None, None, req.headers).ok();
            }
        }
        Decision {
            route: Some(route.clone()),
            rule,
            verdict,
            steps: steps.into_steps(),
            caller,
            dry_run_headers,
        }
    }

    /// The rule that decided (if one held) and the verdict.
    async fn decide_route(
        &self,
        facts: &mut Facts<'_>,
        steps: &mut Trace,
    ) -> (Option<String>, Verdict) {
        let (route, req) = (facts.route, facts.req);
        let rules = match &route.requirement {
            Requirement::Public => {
                steps.note(|| {
                    "route is public: no token needed, identity headers are removed".into()
                });
                return (None, allow(route, req, None, None, None, steps));
            }
            Requirement::AnyOf(rules) => rules,
        };
        let mut denial: Option<Denial> = None;
        let mut undecided: Option<String> = None;
        let fail = |d: Denial, denial: &mut Option<Denial>| {
            if denial.as_ref().is_none_or(|old| d.rank() >= old.rank()) {
                *denial = Some(d);
            }
        };
        for (i, rule) in rules.iter().enumerate() {
            let label = if rules.len() == 1 {
                "allow".to_string()
            } else {
                format!("allow[{i}]")
            };
            if !rule.admits_principal(req.principal) {
                let who = if req.principal.is_empty() {
                    "(no workload identity)"
                } else {
                    req.principal
                };
                steps.note(|| format!("{label}: calling workload {who} is not one it names"));
                fail(Denial::PrincipalNotAllowed, &mut denial);
                continue;
            }
            if !rule.token {
                steps.note(|| {
                    format!(
                        "{label}: calling workload {} is allowed{}",
                        req.principal,
                        rule.as_user
                            .as_ref()
                            .map(|u| format!(", acting as {u:?}"))
                            .unwrap_or_default()
                    )
                });
                let identity = rule
                    .as_user
                    .as_ref()
                    .map(|user| Arc::new(Identity::workload(req.principal, user)));
                return self
                    .finish(route, label, identity, None, facts, steps)
                    .await;
            }
            let identity = match facts.identity(steps).await {
                Ok(identity) => identity,
                Err(AuthnError::KeysUnavailable) => {
                    undecided = Some("issuer signing keys not loaded".into());
                    continue;
                }
                Err(e) => {
                    fail(Denial::Unauthenticated(e), &mut denial);
                    continue;
                }
            };
            let membership = if rule.needs_groups() {
                match facts.membership(&identity, steps).await {
                    Ok(m) => Some(m),
                    Err(reason) => {
                        steps.note(|| format!("{label}: cannot be checked without groups"));
                        undecided = Some(reason);
                        continue;
                    }
                }
            } else {
                None
            };
            let checked = if steps.is_on() {
                rule.explain_identity(&identity, membership.as_deref(), &mut |c| {
                    steps.note(|| format!("{label}: {c}"))
                })
            } else {
                rule.check_identity(&identity, membership.as_deref())
            };
            match checked {
                Ok(_) => {
                    steps.note(|| format!("{label}: holds"));
                    return self
                        .finish(route, label, Some(identity), membership, facts, steps)
                        .await;
                }
                Err(unmet) => {
                    fail(
                        match unmet {
                            Unmet::Groups(_) => Denial::NotInGroup,
                            Unmet::Claim(_) | Unmet::Scope(_) => Denial::ClaimUnmet,
                        },
                        &mut denial,
                    );
                }
            }
        }
        // A rule that could not be checked might have allowed: not a denial.
        if let Some(reason) = undecided {
            steps.note(|| "no rule holds, and one could not be checked: cannot decide".into());
            return (None, Verdict::Unavailable(reason));
        }
        let denial = denial.unwrap_or(Denial::NoRoute);
        (None, Verdict::Deny(denial))
    }

    /// Allows by `rule`: on a kube route if the kube policy allows the apiserver request
    /// too; fetching the groups first if the route injects them or the policy needs them.
    async fn finish(
        &self,
        route: &RouteRule,
        mut rule: String,
        identity: Option<Arc<Identity>>,
        membership: Option<Arc<Membership>>,
        facts: &mut Facts<'_>,
        steps: &mut Trace,
    ) -> (Option<String>, Verdict) {
        let wants_groups =
            route.inject.groups.is_some() || route.kube.as_ref().is_some_and(|k| k.needs_groups());
        let membership = match (&membership, &identity, wants_groups) {
            (None, Some(identity), true) => match facts.membership(identity, steps).await {
                Ok(m) => Some(m),
                Err(reason) => return (Some(rule), Verdict::Unavailable(reason)),
            },
            _ => membership,
        };
        let Some(kube) = &route.kube else {
            return (
                Some(rule),
                allow(route, facts.req, identity, membership, None, steps),
            );
        };
        let request = kube::parse(facts.req.method, facts.req.path, facts.req.query);
        match kube.decide(&request, membership.as_deref()) {
            Ok(grant) => {
                steps.note(|| {
                    format!(
                        "kube.rules[{}] allows {}{}",
                        grant.rule,
                        kube_access::describe(&request),
                        grant
                            .group
                            .as_ref()
                            .map(|g| format!(", impersonating group {g:?}"))
                            .unwrap_or_default()
                    )
                });
                rule.push_str(&format!(", kube.rules[{}]", grant.rule));
                let impersonation = Impersonation {
                    group: grant.group.as_deref(),
                };
                let verdict = allow(
                    route,
                    facts.req,
                    identity,
                    membership,
                    Some(impersonation),
                    steps,
                );
                (Some(rule), verdict)
            }
            Err(denial) => {
                steps.note(|| format!("kube: {denial}"));
                (
                    None,
                    Verdict::Deny(Denial::KubeForbidden(denial.to_string())),
                )
            }
        }
    }

    async fn membership(
        &self,
        user: &GerritAccount,
        steps: &mut Trace,
    ) -> Result<Arc<Membership>, String> {
        let Some(cache) = &self.groups else {
            // Config compilation refuses this; stay closed if it ever happens.
            steps.note(|| "no group source configured: cannot decide".into());
            return Err("no group source configured".into());
        };
        let membership = cache.membership(user).await.map_err(|e| {
            steps.note(|| format!("group lookup failed: {e}: cannot decide"));
            format!("group lookup failed: {e}")
        })?;
        if membership.known_account {
            let names: Vec<&str> = membership.groups.iter().map(|g| g.name.as_str()).collect();
            steps.note(|| format!("groups of {user}: {}", names.join(", ")));
        } else {
            steps.note(|| format!("Gerrit has no account with {user}: no groups"));
        }
        Ok(membership)
    }

    async fn authenticate(
        &self,
        route: &RouteRule,
        req: &RequestView<'_>,
    ) -> Result<Arc<Identity>, AuthnError> {
        let token = find_token(req, &route.token_sources)?;
        let identity = self.verifier.verify(&token).await?;
        // The route's own trust: another IdP in the config, or a token minted for
        // another service, does not pass here.
        if !route.issuers.is_empty() && !route.issuers.contains(&identity.issuer) {
            return Err(AuthnError::UnknownIssuer);
        }
        if !route.audiences.is_empty() && !has_audience(&identity, &route.audiences) {
            return Err(AuthnError::Audience);
        }
        Ok(identity)
    }
}

fn allow(
    route: &RouteRule,
    req: &RequestView<'_>,
    identity: Option<Arc<Identity>>,
    membership: Option<Arc<Membership>>,
    impersonation: Option<Impersonation<'_>>,
    steps: &mut Trace,
) -> Verdict {
    let changes = upstream_changes(
        route,
        identity.as_deref(),
        membership.as_deref(),
        impersonation,
        req.headers,
    );
    match changes {
        Ok(headers) => Verdict::Allow {
            identity,
            membership,
            headers,
        },
        Err(e) => {
            steps.note(|| format!("{e}: denied rather than injected"));
            Verdict::Deny(match e {
                InjectError::Unsafe { .. } | InjectError::NoUser | InjectError::TooLarge(_) => {
                    Denial::UnsafeHeaderValue
                }
                InjectError::GroupsTooLarge { .. } => Denial::GroupsTooLarge,
            })
        }
    }
}

impl Authorizer {
    /// Builds the runtime parts from a checked config: key stores, the verifier, the
    /// group cache (reading Gerrit's password file now) and the routes.
    pub fn from_config(config: &Config, http: reqwest::Client) -> Result<Self, ConfigError> {
        let shared = Shared {
            http,
            gerrit_metrics: GerritMetrics::default(),
        };
        Self::build(config, &shared, None)
    }

    /// Builds from a checked config, keeping what `previous` (the authorizer in force
    /// before a reload) has for parts that did not change: the verifier with its token
    /// cache when no issuer changed, else each unchanged issuer's key store (keys
    /// loaded); the group cache when the group source did not change.
    pub fn build(
        config: &Config,
        shared: &Shared,
        previous: Option<&Authorizer>,
    ) -> Result<Self, ConfigError> {
        let problem = |path: &str, reason: String| ConfigError::Invalid {
            file: config.source.clone(),
            problems: vec![Problem {
                path: path.to_string(),
                reason,
            }],
        };
        let sources = Sources::of(config);
        let verifier = match previous.filter(|p| p.sources.same_verification(&sources)) {
            Some(previous) => previous.verifier.clone(),
            None => {
                let mut issuers = Vec::with_capacity(config.issuers.len());
                for (i, issuer) in config.issuers.iter().enumerate() {
                    let kept = previous.and_then(|p| {
                        p.verifier.stores().find(|s| {
                            s.serves(&issuer.settings.issuer, &issuer.jwks, &issuer.timing)
                        })
                    });
                    let store = match kept {
                        Some(store) => store.clone(),
                        None => Arc::new(
                            JwksStore::new(
                                issuer.settings.issuer.clone(),
                                issuer.jwks.clone(),
                                shared.http.clone(),
                                issuer.timing,
                            )
                            .map_err(|e| problem(&format!("issuers[{i}].jwks"), e.to_string()))?,
                        ),
                    };
                    issuers.push((issuer.settings.clone(), store));
                }
                Arc::new(
                    TokenVerifier::new(issuers, config.token_cache_entries, config.max_token_bytes)
                        .keeping_claims(sources.claims.clone()),
                )
            }
        };
        let kept_groups = previous
            .filter(|p| p.sources.groups.is_some() && p.sources.groups == sources.groups)
            .and_then(|p| p.groups.clone());
        let groups = match (&config.groups, kept_groups) {
            (_, Some(kept)) => Some(kept),
            (None, None) => None,
            (Some(GroupsConfig::Static(table)), None) => Some(GroupCache::new(
                GroupSource::Static(table.clone()),
                CacheSettings {
                    ttl: STATIC_TTL,
                    not_found_ttl: STATIC_TTL,
                    max_users: table.len() as u64 + 1,
                    max_staleness: Duration::ZERO,
                },
            )),
            (Some(GroupsConfig::Gerrit(gerrit)), None) => {
                let client = gerrit_client(gerrit, shared.gerrit_metrics.clone())
                    .map_err(|(path, reason)| problem(path, reason))?;
                Some(GroupCache::new(GroupSource::Gerrit(client), gerrit.cache))
            }
        };
        let group_events = match (&config.groups, &groups) {
            (Some(GroupsConfig::Gerrit(gerrit)), Some(cache)) => match &gerrit.events {
                Some(e) => {
                    if let Some(file) = &e.token_file {
                        check_token_file(file)
                            .map_err(|reason| problem("gerrit.events.token_file", reason))?;
                    }
                    Some(GroupEvents::new(
                        cache.clone(),
                        e.all_users_project.clone(),
                        e.token_file.clone(),
                    ))
                }
                None => None,
            },
            _ => None,
        };
        Ok(Self {
            verifier,
            groups,
            group_events,
            routes: config.routes.clone(),
            sources,
        })
    }
}

/// The Gerrit client for a checked `gerrit:` section, reading the password file now.
/// Errors name the config field.
fn gerrit_client(
    gerrit: &GerritConfig,
    metrics: GerritMetrics,
) -> Result<GerritClient, (&'static str, String)> {
    let password = match &gerrit.password_file {
        None => None,
        Some(file) => {
            let password = std::fs::read_to_string(file)
                .map(Secret::new)
                .map_err(|e| {
                    (
                        "gerrit.password_file",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
            if password.expose().is_empty() {
                return Err((
                    "gerrit.password_file",
                    format!("{} is empty", file.display()),
                ));
            }
            Some(password)
        }
    };
    GerritClient::new(
        GerritSettings {
            base: gerrit.url.clone(),
            auth: GerritAuth {
                username: gerrit.username.clone(),
                password,
                password_file: gerrit.password_file.clone(),
                password_reload_interval: gerrit.password_reload_interval,
                trusted_user_header: gerrit.trusted_user_header.clone(),
            },
            ca_certificates: gerrit
                .ca_file
                .as_deref()
                .map(read_ca_bundle)
                .transpose()
                .map_err(|reason| ("gerrit.ca_file", reason))?
                .unwrap_or_default(),
            retries: gerrit.retries,
            retry_backoff: gerrit.retry_backoff,
            max_concurrent_requests: gerrit.max_concurrent_requests,
            timeout: gerrit.timeout,
            max_response_bytes: gerrit.max_response_bytes,
            max_accounts: gerrit.cache.max_users,
        },
        metrics,
    )
    .map_err(|e| ("gerrit", format!("cannot build the HTTP client: {e}")))
}

/// The events token file must hold a token that cannot be guessed.
fn check_token_file(file: &std::path::Path) -> Result<(), String> {
    let shown = file.display();
    let token = std::fs::read_to_string(file).map_err(|e| format!("cannot read {shown}: {e}"))?;
    match token.trim().len() {
        0 => Err(format!("{shown} is empty")),
        n if n < 16 => Err(format!(
            "{shown}: a token of {n} characters is guessable; use at least 16"
        )),
        _ => Ok(()),
    }
}

/// The certificates of a PEM bundle; at least one.
fn read_ca_bundle(file: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let shown = file.display();
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {shown}: {e}"))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!("{shown}: no PEM certificates in it")),
        // reqwest says only "builder error" here.
        Err(_) => Err(format!("{shown}: not a PEM certificate bundle")),
    }
}

/// Whether the token's `aud` (a string or a list) holds one of `wanted`.
fn has_audience(identity: &Identity, wanted: &[String]) -> bool {
    match identity.claims.get("aud") {
        Some(serde_json::Value::String(aud)) => wanted.contains(aud),
        Some(serde_json::Value::Array(auds)) => auds
            .iter()
            .any(|a| a.as_str().is_some_and(|a| wanted.iter().any(|w| w == a))),
        _ => false,
    }
}

/// The top-level claims some rule's conditions read: claim names (and, for dotted paths,
/// the object they start in), and `scope` and `scp` for scope conditions.
fn claims_used(routes: &RouteTable) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    if routes.routes().iter().any(|r| !r.audiences.is_empty()) {
        names.insert("aud".to_string());
    }
    for rule in routes.routes().iter().flat_map(|r| r.requirement.rules()) {
        for c in &rule.claims {
            names.insert(c.claim.clone());
            if let Some((first, _)) = c.claim.split_once('.') {
                names.insert(first.to_string());
            }
        }
        if !rule.scopes.is_empty() {
            names.extend(["scope".to_string(), "scp".to_string()]);
        }
    }
    names
}

/// Static tables never change, so their entries stay for an hour (the cache needs a TTL).
const STATIC_TTL: Duration = Duration::from_secs(3600);
