//! The decision logic: path → route → rules → token → groups → verdict, with no gRPC in
//! sight. [`verdict`] holds what a decision comes to; `build` assembles an authorizer
//! from a config.

use crate::authn::{find_token, AuthnError, TokenVerifier};
use crate::gerrit::{GroupCache, GroupEvents};
use crate::identity::{GerritAccount, Identity, Membership};
use crate::policy::{
    kube, kube_access, upstream_changes, Impersonation, InjectError, Requirement, RouteRule,
    RouteTable, Unmet,
};
use crate::request::{routing_path, RequestView};
use crate::signin::login::same_host_target;
use crate::signin::navigation::is_browser_navigation;
use crate::signin::{BrowserSignIn, Reserved, SessionCheck};
use std::sync::Arc;

mod build;
mod change;
#[cfg(test)]
mod tests;
pub mod verdict;

pub use build::Shared;
use build::Sources;
pub use verdict::{Decision, Denial, Trace, Verdict};

/// The authorizer in force; a config reload replaces it atomically.
pub type CurrentAuthorizer = Arc<arc_swap::ArcSwap<Authorizer>>;

/// Everything needed to decide: the verifier, the group cache and the routes.
#[derive(Debug)]
pub struct Authorizer {
    verifier: Arc<TokenVerifier>,
    groups: Option<GroupCache>,
    group_events: Option<GroupEvents>,
    /// Gerrit changes, for change-gated rules (with `gerrit:` only).
    changes: Option<crate::gerrit::ChangeCache>,
    /// Grants approved as reviews, with what a denial says to do.
    grants: Option<(Arc<crate::gerrit::GrantStore>, Option<String>)>,
    routes: RouteTable,
    /// Browser sign-in, if configured.
    browser: Option<Arc<BrowserSignIn>>,
    /// The config parts the verifier and the group cache were built from, so a reload
    /// can tell what it may keep.
    sources: Sources,
}

/// How one of a rule's conditions that Gerrit answers (a change, a grant) came out.
enum Outcome {
    /// It holds; the text is added to the rule's label (and so to the audit line).
    Holds(String),
    /// It does not.
    Fails(Denial),
    /// Gerrit could not say: cannot decide.
    Undecided(String),
}

/// Keeps `d` as the denial to report if it says more than the one kept (see
/// [`Denial::rank`]).
fn keep_closest(d: Denial, denial: &mut Option<Denial>) {
    if denial.as_ref().is_none_or(|old| d.rank() >= old.rank()) {
        *denial = Some(d);
    }
}

/// Records a failed or undecided `outcome`; the label text of one that holds.
fn settle(
    outcome: Outcome,
    denial: &mut Option<Denial>,
    undecided: &mut Option<String>,
) -> Option<String> {
    match outcome {
        Outcome::Holds(by) => Some(by),
        Outcome::Fails(d) => {
            keep_closest(d, denial);
            None
        }
        Outcome::Undecided(reason) => {
            *undecided = Some(reason);
            None
        }
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
    /// `Set-Cookie` values for the answer: a refreshed session, or the deletion of one
    /// that was rejected.
    set_cookies: Vec<String>,
}

impl<'a> Facts<'a> {
    async fn identity(&mut self, steps: &mut Trace) -> Result<Arc<Identity>, AuthnError> {
        if let Some(known) = &self.identity {
            return known.clone();
        }
        let result = self
            .authorizer
            .authenticate(self.route, self.req, &mut self.set_cookies)
            .await;
        match &result {
            Ok(id) if id.credential == crate::identity::Credential::Session => steps.note(|| {
                format!(
                    "browser session: user {:?} from issuer {}",
                    id.user, id.issuer
                )
            }),
            Ok(id) => steps.note(|| {
                format!(
                    "token verified: user {:?} from issuer {}",
                    id.user, id.issuer
                )
            }),
            Err(AuthnError::KeysUnavailable) => {
                steps.note(|| "issuer signing keys have not been loaded yet: cannot decide".into())
            }
            Err(AuthnError::KeyFetchPending) => steps.note(|| {
                "the token's key is new and the IdP has not sent it within jwks.check_timeout: cannot decide".into()
            }),
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

    /// The grants store, if configured (refreshed by events and its own timer).
    pub fn grants(&self) -> Option<&Arc<crate::gerrit::GrantStore>> {
        self.grants.as_ref().map(|(store, _)| store)
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

    /// Browser sign-in, if configured.
    pub fn browser(&self) -> Option<&BrowserSignIn> {
        self.browser.as_deref()
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
        if let Some(browser) = &self.browser {
            if let Some(reserved) = browser.reserved(req.path) {
                let answer = self
                    .answer_reserved(browser, reserved, req, &mut steps)
                    .await;
                return Decision::unrouted(Verdict::Answer(answer), steps);
            }
        }
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
            set_cookies: Vec::new(),
        };
        let (rule, mut verdict) = self.decide_route(&mut facts, &mut steps).await;
        if let (Some(browser), Some(issuer)) = (&self.browser, &route.browser_sign_in) {
            let signs_in = !route.dry_run
                && matches!(verdict, Verdict::Deny(Denial::Unauthenticated(_)))
                && is_browser_navigation(req);
            if signs_in {
                steps.note(|| format!("a browser opening a page: sent to sign in with {issuer}"));
                let page = if req.query.is_empty() {
                    req.path.to_string()
                } else {
                    format!("{}?{}", req.path, req.query)
                };
                let back = same_host_target(&page).unwrap_or("/");
                let mut answer = browser.start(req, issuer, back).await;
                // A rejected session's cookies are deleted on the way.
                let mut cookies = std::mem::take(&mut facts.set_cookies);
                cookies.append(&mut answer.set_cookies);
                answer.set_cookies = cookies;
                verdict = Verdict::Answer(answer);
            }
        }
        if let Verdict::Allow {
            headers,
            set_cookies,
            ..
        } = &mut verdict
        {
            set_cookies.append(&mut facts.set_cookies);
            if route.dry_run {
                crate::policy::as_dry_run(route, headers);
            }
            self.strip_session_cookies(req, headers);
        }
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
                // Passed on as it came, but for the identity headers an upstream trusts
                // from mesh-authz alone: no identity reaches the upstream.
                dry_run_headers = upstream_changes(route, None, None, None, req.headers).ok();
                if let Some(headers) = &mut dry_run_headers {
                    crate::policy::as_dry_run(route, headers);
                    self.strip_session_cookies(req, headers);
                }
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
        let fail = keep_closest;
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
                let mut label = label;
                if let Some(condition) = &rule.change {
                    let outcome = change::check(
                        condition,
                        self.changes.as_ref(),
                        req,
                        None,
                        rule.as_user.as_deref(),
                        steps,
                    )
                    .await;
                    let Some(by) = settle(outcome, &mut denial, &mut undecided) else {
                        continue;
                    };
                    label.push_str(&by);
                }
                if rule.grant {
                    let caller = crate::policy::grants::Caller {
                        user: rule.as_user.as_deref(),
                        membership: None,
                        principal: req.principal,
                    };
                    let outcome = self.grant_for(route, req, &caller, steps);
                    let Some(by) = settle(outcome, &mut denial, &mut undecided) else {
                        continue;
                    };
                    label.push_str(&by);
                }
                let granted = rule.grant;
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
                    .finish(route, label, identity, None, granted, facts, steps)
                    .await;
            }
            let identity = match facts.identity(steps).await {
                Ok(identity) => identity,
                Err(AuthnError::KeysUnavailable) => {
                    undecided = Some("issuer signing keys not loaded".into());
                    continue;
                }
                Err(AuthnError::KeyFetchPending) => {
                    undecided = Some(
                        "the token's signing key is new and still being fetched from the IdP"
                            .into(),
                    );
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
            let (mut label, mut membership) = (label, membership);
            // Conditions Gerrit answers come last: only for a caller who passed the rest.
            if checked.is_ok() {
                if let Some(condition) = &rule.change {
                    let outcome = change::check(
                        condition,
                        self.changes.as_ref(),
                        req,
                        Some(&identity),
                        None,
                        steps,
                    )
                    .await;
                    let Some(by) = settle(outcome, &mut denial, &mut undecided) else {
                        continue;
                    };
                    label.push_str(&by);
                }
            }
            if checked.is_ok() && rule.grant {
                // Grants that name groups need the caller's.
                let names_groups = self
                    .grants
                    .as_ref()
                    .and_then(|(store, _)| store.current().ok())
                    .is_some_and(|set| set.names_groups(&route.name));
                if membership.is_none() && names_groups {
                    match facts.membership(&identity, steps).await {
                        Ok(m) => membership = Some(m),
                        Err(reason) => {
                            undecided = Some(reason);
                            continue;
                        }
                    }
                }
                let caller = crate::policy::grants::Caller {
                    user: Some(&identity.user),
                    membership: membership.as_deref(),
                    principal: req.principal,
                };
                let outcome = self.grant_for(route, req, &caller, steps);
                let Some(by) = settle(outcome, &mut denial, &mut undecided) else {
                    continue;
                };
                label.push_str(&by);
            }
            match checked {
                Ok(_) => {
                    steps.note(|| format!("{label}: holds"));
                    return self
                        .finish(
                            route,
                            label,
                            Some(identity),
                            membership,
                            rule.grant,
                            facts,
                            steps,
                        )
                        .await;
                }
                Err(unmet) => {
                    fail(
                        match &unmet {
                            Unmet::Groups(_) => Denial::NotInGroup(unmet.to_string()),
                            Unmet::Claim(_) | Unmet::Scope(_) => {
                                Denial::ClaimUnmet(unmet.to_string())
                            }
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
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        route: &RouteRule,
        mut rule: String,
        identity: Option<Arc<Identity>>,
        membership: Option<Arc<Membership>>,
        by_grant: bool,
        facts: &mut Facts<'_>,
        steps: &mut Trace,
    ) -> (Option<String>, Verdict) {
        if by_grant && route.kube.is_some() {
            // The grant's narrowing was the kube rule: the user alone is impersonated.
            let impersonation = Impersonation { group: None };
            let verdict = allow(
                route,
                facts.req,
                identity,
                membership,
                Some(impersonation),
                steps,
            );
            return (Some(rule), verdict);
        }
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

    /// Whether an active grant names `caller` for `route` (and, on a kube route, covers
    /// the apiserver request).
    fn grant_for(
        &self,
        route: &RouteRule,
        req: &RequestView<'_>,
        caller: &crate::policy::grants::Caller<'_>,
        steps: &mut Trace,
    ) -> Outcome {
        let Some((store, how_to_ask)) = &self.grants else {
            // Config compilation refuses this; stay closed if it ever happens.
            return Outcome::Undecided("no grants configured".into());
        };
        let set = match store.current() {
            Ok(set) => set,
            Err(reason) => {
                steps.note(|| format!("grants: {reason}: cannot decide"));
                return Outcome::Undecided(reason);
            }
        };
        let request = route
            .kube
            .as_ref()
            .map(|_| kube::parse(req.method, req.path, req.query));
        let now = crate::authn::unix_now();
        match set.find(&route.name, caller, request.as_ref(), now) {
            Some(g) => {
                let by = format!(
                    ", grant {} at {} ({})",
                    g.id,
                    &set.revision[..set.revision.len().min(12)],
                    g.reason
                );
                steps.note(|| {
                    format!(
                        "grant {:?} (until {}) allows it: {}",
                        g.id, g.until, g.reason
                    )
                });
                store.count_allow(&g.id);
                Outcome::Holds(by)
            }
            None => {
                steps.note(|| {
                    format!(
                        "no active grant at revision {} names this caller for route {:?}",
                        set.revision, &*route.name
                    )
                });
                Outcome::Fails(Denial::NoGrant {
                    route: route.name.to_string(),
                    how_to_ask: how_to_ask.clone(),
                })
            }
        }
    }

    /// Answers one of browser sign-in's own paths.
    async fn answer_reserved(
        &self,
        browser: &BrowserSignIn,
        reserved: Reserved,
        req: &RequestView<'_>,
        steps: &mut Trace,
    ) -> crate::signin::Answer {
        let answer = match reserved {
            Reserved::Callback => browser.callback(req, &self.verifier).await,
            Reserved::SignOut => browser.sign_out(req).await,
            Reserved::SignIn => match self.sign_in_issuer(browser, req) {
                Some(issuer) => browser.sign_in_path(req, &issuer).await,
                None => crate::signin::Answer::page(
                    404,
                    "Sign-in is not available here",
                    "No route on this host signs browsers in.",
                    Vec::new(),
                    "sign_in_no_route",
                ),
            },
        };
        steps.note(|| {
            format!(
                "browser sign-in's own path: {} ({})",
                answer.status, answer.reason
            )
        });
        answer
    }

    /// The issuer the sign-in path starts with: the only one with a browser client, or
    /// that of the first route with browser sign-in on this host.
    fn sign_in_issuer(&self, browser: &BrowserSignIn, req: &RequestView<'_>) -> Option<Arc<str>> {
        if let Some(issuer) = browser.only_issuer() {
            return Some(issuer.into());
        }
        self.routes
            .routes()
            .iter()
            .filter(|r| r.hosts.is_empty() || r.hosts.iter().any(|h| h.matches(req.host)))
            .find_map(|r| r.browser_sign_in.clone())
    }

    /// Takes mesh-authz's cookies out of the `Cookie` header the upstream gets.
    fn strip_session_cookies(
        &self,
        req: &RequestView<'_>,
        headers: &mut crate::policy::HeaderChanges,
    ) {
        let Some(browser) = &self.browser else {
            return;
        };
        let Some(cookie) = browser.upstream_cookie(req) else {
            return;
        };
        if headers.remove.iter().any(|h| h == "cookie") {
            return;
        }
        headers.set.retain(|(name, _)| name != "cookie");
        if cookie.is_empty() {
            headers.remove.push("cookie".into());
        } else {
            headers.set.push(("cookie".into(), cookie));
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

    /// The caller's identity: from a token in the request, or on a route with browser
    /// sign-in and no token, from the browser session (its cookies to set, or to delete
    /// when rejected, go to `set_cookies`).
    async fn authenticate(
        &self,
        route: &RouteRule,
        req: &RequestView<'_>,
        set_cookies: &mut Vec<String>,
    ) -> Result<Arc<Identity>, AuthnError> {
        let identity = match find_token(req, &route.token_sources) {
            Ok(token) => self.verifier.verify(&token).await?,
            Err(AuthnError::MissingToken) => {
                let (Some(issuer), Some(browser)) = (&route.browser_sign_in, &self.browser) else {
                    return Err(AuthnError::MissingToken);
                };
                match browser.session(req, issuer, &self.verifier).await {
                    SessionCheck::Valid {
                        identity,
                        set_cookies: cookies,
                    } => {
                        set_cookies.extend(cookies);
                        // Made by this route's own sign-in: its issuer, and an ID token
                        // for mesh-authz's client, not for an API audience.
                        return Ok(identity);
                    }
                    SessionCheck::Absent => return Err(AuthnError::MissingToken),
                    SessionCheck::Rejected {
                        error,
                        set_cookies: cookies,
                    } => {
                        set_cookies.extend(cookies);
                        return Err(error);
                    }
                }
            }
            Err(e) => return Err(e),
        };
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
            set_cookies: Vec::new(),
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
