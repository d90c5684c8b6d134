//! Turns a [`RawConfig`] into a [`Config`], collecting every problem with its path.

use super::schema::{
    RawAllow, RawConfig, RawGerrit, RawIssuer, RawKube, RawKubeRule, RawRoute, RawRule,
};
use super::{ConfigError, FileResolver, Problem};
use crate::authn::{IssuerSettings, JwksSource, JwksTiming, KeySet, TokenSource};
use crate::gerrit::CacheSettings;
use crate::identity::{AccountForm, Group};
use crate::policy::kube_access::{ImpersonateGroup, KubePolicy, KubeRule, KubeScope, KubeTarget};
use crate::policy::{
    header_name, ClaimCondition, ClaimRequirement, GroupRef, GroupsHeader, HostMatcher,
    IdentityHeaders, MethodSet, Overflow, PathMatcher, PrincipalMatcher, Requirement, RouteRule,
    RouteTable, Rule, MAX_INJECTED_BYTES,
};
use crate::telemetry::audit::AuditOutput;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use reqwest::header::{HeaderName, HeaderValue};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// A checked configuration, ready to build a server from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (file path or the built-in name).
    pub source: String,
    /// The config file, if it came from one (watched for changes).
    pub path: Option<PathBuf>,
    /// Files the config was compiled from besides itself (JWKS files, the Gerrit CA
    /// bundle): a change to one is a change to the config.
    pub files: Vec<PathBuf>,
    /// Listen addresses and shutdown timing.
    pub server: ServerSettings,
    /// Accepted token issuers.
    pub issuers: Vec<IssuerConfig>,
    /// Where group membership comes from, if any route needs groups.
    pub groups: Option<GroupsConfig>,
    /// The route table.
    pub routes: RouteTable,
    /// Capacity of the verified-token cache (0: off).
    pub token_cache_entries: u64,
    /// Longest accepted token.
    pub max_token_bytes: usize,
    /// Where the audit log goes, if anywhere.
    pub audit: Option<AuditOutput>,
}

/// Listen addresses and shutdown timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// gRPC address (Check, health, reflection).
    pub grpc_listen: SocketAddr,
    /// Admin HTTP address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// Time readiness is false before listeners close.
    pub drain_delay: Duration,
    /// Bound on waiting for in-flight checks.
    pub shutdown_timeout: Duration,
    /// Whether the config file is watched and reloaded when it changes.
    pub watch_config: bool,
    /// How often the config file is checked for changes besides file-system events.
    pub config_check_interval: Duration,
    /// `host:port` names resolving to every replica's admin address.
    pub peers: Vec<String>,
}

/// One issuer: verification settings plus where its keys come from.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Claims and algorithms.
    pub settings: IssuerSettings,
    /// The JWKS source.
    pub jwks: JwksSource,
    /// Refresh, refetch and staleness timing.
    pub timing: JwksTiming,
}

/// Where group membership comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupsConfig {
    /// Gerrit's REST API.
    Gerrit(Box<GerritConfig>),
    /// A fixed table.
    Static(Arc<HashMap<String, Vec<Group>>>),
}

/// The `gerrit:` section, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GerritConfig {
    /// Base URL.
    pub url: Url,
    /// Service account.
    pub username: String,
    /// File with the HTTP password, read at start and then every
    /// `password_reload_interval`; `None` when Gerrit trusts a header instead.
    pub password_file: Option<PathBuf>,
    /// How often the password file is re-read.
    pub password_reload_interval: Duration,
    /// Header that names the service account to a Gerrit that trusts it.
    pub trusted_user_header: Option<HeaderName>,
    /// PEM bundle of the CA certificates trusted for `https` instead of the built-in
    /// roots; read when the server starts.
    pub ca_file: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after transient failures.
    pub retries: u32,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// Concurrent requests to Gerrit.
    pub max_concurrent_requests: usize,
    /// Largest accepted response body.
    pub max_response_bytes: usize,
    /// The receiver of Gerrit events at `POST /gerrit/events`, if enabled.
    pub events: Option<GerritEventsConfig>,
    /// Group cache ageing.
    pub cache: CacheSettings,
}

/// `gerrit.events`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GerritEventsConfig {
    /// File with the token senders must present, re-read on every request.
    pub token_file: Option<PathBuf>,
    /// The project Gerrit keeps groups in.
    pub all_users_project: String,
}

/// Collects problems while compiling.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            reason: reason.into(),
        });
    }
}

pub(super) fn compile_str(
    name: &str,
    text: &str,
    files: &FileResolver,
) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        file: name.to_string(),
        problems,
    };
    let mut problems = Problems::default();
    let mut unknown = Vec::new();
    let de = serde_yaml::Deserializer::from_str(text);
    let raw: Result<RawConfig, _> =
        serde_ignored::deserialize(de, |path| unknown.push(yaml_path(&path)));
    for path in unknown {
        problems.add(path, "unknown field");
    }
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            problems.add("", e.to_string());
            return Err(invalid(problems.0));
        }
    };
    let config = compile(name, raw, files, &mut problems);
    if problems.0.is_empty() {
        Ok(config)
    } else {
        Err(invalid(problems.0))
    }
}

/// `serde_ignored` paths as `routes[0].match.bogus`.
fn yaml_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", yaml_path(parent)),
        P::Map { parent, key } => {
            let parent = yaml_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            yaml_path(parent)
        }
    }
}

fn compile(name: &str, raw: RawConfig, files: &FileResolver, p: &mut Problems) -> Config {
    let server = ServerSettings {
        grpc_listen: socket_addr(&raw.server.grpc_listen, "server.grpc_listen", p),
        admin_listen: socket_addr(&raw.server.admin_listen, "server.admin_listen", p),
        drain_delay: raw.server.drain_delay,
        shutdown_timeout: raw.server.shutdown_timeout,
        watch_config: raw.server.watch_config,
        config_check_interval: raw.server.config_check_interval,
        peers: raw.server.peers.clone(),
    };
    if raw.server.config_check_interval.is_zero() {
        p.add("server.config_check_interval", "must be greater than zero");
    }
    for (i, peer) in raw.server.peers.iter().enumerate() {
        let valid = peer.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            p.add(
                format!("server.peers[{i}]"),
                format!("{peer:?} is not host:port (e.g. mesh-authz-peers.mesh-authz.svc.cluster.local:9192)"),
            );
        }
    }

    let mut seen_issuers = HashSet::new();
    let issuers: Vec<IssuerConfig> = raw
        .issuers
        .iter()
        .enumerate()
        .filter_map(|(i, issuer)| {
            let path = format!("issuers[{i}]");
            if !seen_issuers.insert(issuer.issuer.as_str()) {
                p.add(
                    format!("{path}.issuer"),
                    format!("duplicate issuer {:?}", issuer.issuer),
                );
            }
            if raw.issuers.len() > 1 && issuer.user_prefix.is_none() {
                p.add(
                    format!("{path}.user_prefix"),
                    "several issuers are configured: say whether this issuer's users are the Gerrit accounts of the same name (`user_prefix: \"\"`, shared with every issuer that says so) or their own (a prefix such as `\"ci:\"`)",
                );
            }
            compile_issuer(&path, issuer, files, p)
        })
        .collect();

    let groups = match (&raw.gerrit, &raw.static_groups) {
        (Some(_), Some(_)) => {
            p.add("static_groups", "cannot be used together with `gerrit`");
            None
        }
        (Some(g), None) => compile_gerrit(g, files, p),
        (None, Some(table)) => Some(GroupsConfig::Static(Arc::new(
            table
                .iter()
                .map(|(user, names)| {
                    let groups = names
                        .iter()
                        .map(|n| Group {
                            uuid: n.clone(),
                            name: n.clone(),
                        })
                        .collect();
                    (user.clone(), groups)
                })
                .collect(),
        ))),
        (None, None) => None,
    };

    if raw.max_token_bytes < 256 {
        p.add(
            "max_token_bytes",
            "must be at least 256; real tokens are rarely under 500 bytes",
        );
    }
    if raw.routes.is_empty() {
        p.add(
            "routes",
            "at least one route is needed; without routes every request is denied",
        );
    }
    let mut seen_routes = HashSet::new();
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, route)| {
            let path = format!("routes[{i}]");
            if !seen_routes.insert(route.name.as_str()) {
                p.add(format!("{path}.name"), format!("duplicate route name {:?}", route.name));
            }
            // Cross-section checks on the raw route, so they are reported even when the
            // route has problems of its own.
            let rules = route.allow.rules();
            let needs_token = route.allow == RawAllow::Authenticated
                || rules.iter().any(raw_rule_needs_token);
            if needs_token && raw.issuers.is_empty() {
                p.add(format!("{path}.allow"), "needs a token, but no `issuers` are configured");
            }
            check_route_issuers(&path, route, needs_token, &raw.issuers, p);
            let no_group_source = raw.gerrit.is_none() && raw.static_groups.is_none();
            if no_group_source {
                for (i, rule) in rules.iter().enumerate() {
                    for (field, groups) in [
                        ("groups_any_of", &rule.groups_any_of),
                        ("groups_all_of", &rule.groups_all_of),
                    ] {
                        if !groups.is_empty() {
                            p.add(
                                format!("{path}.allow{}.{field}", rule_index(&route.allow, i)),
                                "needs group membership, but neither `gerrit` nor `static_groups` is configured",
                            );
                        }
                    }
                }
                for (i, rule) in route.kube.iter().flat_map(|k| k.rules.iter()).enumerate() {
                    if !rule.groups_any_of.is_empty() || rule.namespace_group.is_some() {
                        p.add(
                            format!("{path}.kube.rules[{i}]"),
                            "needs group membership, but neither `gerrit` nor `static_groups` is configured",
                        );
                    }
                }
                if route.inject.groups.is_some() {
                    p.add(
                        format!("{path}.inject.groups"),
                        "injects groups, but neither `gerrit` nor `static_groups` is configured",
                    );
                }
            }
            let rule = compile_route(&path, route, p)?;
            Some(rule)
        })
        .collect();

    let mut referenced: Vec<PathBuf> = raw
        .issuers
        .iter()
        .filter_map(|i| i.jwks.file.as_deref().map(|f| files.resolve(f)))
        .collect();
    referenced.extend(
        raw.gerrit
            .as_ref()
            .and_then(|g| g.ca_file.as_deref())
            .map(|f| files.resolve(f)),
    );
    Config {
        source: name.to_string(),
        path: None,
        files: referenced,
        server,
        issuers,
        groups,
        // Gerrit trusts the header mesh-authz signs in with: no client may send it.
        routes: RouteTable::trusting(
            routes,
            &raw.gerrit
                .as_ref()
                .and_then(|g| g.trusted_user_header.clone())
                .into_iter()
                .collect::<Vec<_>>(),
        ),
        token_cache_entries: raw.token_cache.max_entries,
        max_token_bytes: raw.max_token_bytes,
        audit: raw.audit.as_ref().and_then(|a| match a.output.as_str() {
            "" => {
                p.add("audit.output", "`stdout` or a file path");
                None
            }
            "stdout" => Some(AuditOutput::Stdout),
            path => Some(AuditOutput::File(files.resolve(std::path::Path::new(path)))),
        }),
    }
}

fn socket_addr(value: &str, path: &str, p: &mut Problems) -> SocketAddr {
    value.parse().unwrap_or_else(|_| {
        p.add(
            path,
            format!("{value:?} is not an address like 0.0.0.0:9191"),
        );
        SocketAddr::from(([0, 0, 0, 0], 0))
    })
}

fn http_url(value: &str, path: &str, p: &mut Problems) -> Option<Url> {
    match Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(_) => {
            p.add(path, format!("{value:?} is not an http(s) URL"));
            None
        }
        Err(e) => {
            p.add(path, format!("{value:?} is not a URL: {e}"));
            None
        }
    }
}

fn compile_issuer(
    path: &str,
    raw: &RawIssuer,
    files: &FileResolver,
    p: &mut Problems,
) -> Option<IssuerConfig> {
    let before = p.0.len();
    if raw.issuer.is_empty() {
        p.add(format!("{path}.issuer"), "must not be empty");
    }
    if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
        p.add(
            format!("{path}.audiences"),
            "list at least one non-empty audience",
        );
    }
    if raw.user_claim.is_empty() {
        p.add(format!("{path}.user_claim"), "must not be empty");
    }
    let gerrit_account_form = match raw.gerrit_account_form.as_deref() {
        None => AccountForm::default(),
        Some(name) => AccountForm::parse(name).unwrap_or_else(|| {
            p.add(
                format!("{path}.gerrit_account_form"),
                format!("{name} is not one of {}", AccountForm::NAMES.join(", ")),
            );
            AccountForm::default()
        }),
    };
    let user_prefix = raw.user_prefix.clone().unwrap_or_default();
    if user_prefix.chars().any(|c| c.is_control()) || user_prefix.starts_with(char::is_whitespace) {
        p.add(
            format!("{path}.user_prefix"),
            "must not start with whitespace or hold control characters: it goes into headers",
        );
    }
    if !user_prefix.is_empty() && gerrit_account_form == AccountForm::AccountId {
        p.add(
            format!("{path}.user_prefix"),
            "cannot prefix an account number (`gerrit_account_form: account_id`)",
        );
    }
    let mut algorithms = Vec::new();
    if raw.algorithms.is_empty() {
        p.add(format!("{path}.algorithms"), "list at least one algorithm");
    }
    for (i, name) in raw.algorithms.iter().enumerate() {
        match Algorithm::from_str(name) {
            Ok(alg) if alg.family() != AlgorithmFamily::Hmac => algorithms.push(alg),
            Ok(_) => p.add(
                format!("{path}.algorithms[{i}]"),
                format!("{name} is symmetric; only public-key algorithms can be verified with a JWKS"),
            ),
            Err(_) => p.add(
                format!("{path}.algorithms[{i}]"),
                format!("unknown algorithm {name:?} (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"),
            ),
        }
    }
    let jwks = match (&raw.jwks.url, &raw.jwks.file) {
        (None, None) if raw.jwks.discovery => http_url(&raw.issuer, &format!("{path}.issuer"), p)
            .map(|_| JwksSource::Discovery {
                issuer: raw.issuer.clone(),
                timeout: raw.jwks.timeout,
            }),
        (Some(_), None) | (None, Some(_)) if raw.jwks.discovery => {
            p.add(
                format!("{path}.jwks"),
                "set exactly one of `url`, `file` or `discovery: true`",
            );
            None
        }
        (Some(url), None) => {
            http_url(url, &format!("{path}.jwks.url"), p).map(|url| JwksSource::Url {
                url,
                timeout: raw.jwks.timeout,
            })
        }
        (None, Some(file)) => {
            let shown = files.display(file);
            match files.read(file) {
                Ok(document) => match KeySet::parse(&document) {
                    Ok(_) => Some(JwksSource::Static {
                        name: shown,
                        document: document.into(),
                    }),
                    Err(e) => {
                        p.add(format!("{path}.jwks.file"), format!("{shown}: {e}"));
                        None
                    }
                },
                Err(e) => {
                    p.add(
                        format!("{path}.jwks.file"),
                        format!("cannot read {shown}: {e}"),
                    );
                    None
                }
            }
        }
        _ => {
            p.add(
                format!("{path}.jwks"),
                "set exactly one of `url`, `file` or `discovery: true`",
            );
            None
        }
    };
    if raw.max_token_lifetime.is_some_and(|d| d.is_zero()) {
        p.add(
            format!("{path}.max_token_lifetime"),
            "must be greater than zero",
        );
    }
    for (i, claim) in raw.required_claims.iter().enumerate() {
        if claim.is_empty() {
            p.add(format!("{path}.required_claims[{i}]"), "must not be empty");
        }
    }
    let j = &raw.jwks;
    for (field, value) in [
        ("refresh_interval", j.refresh_interval),
        ("min_refresh_interval", j.min_refresh_interval),
        ("max_refresh_interval", j.max_refresh_interval),
        ("min_refetch_interval", j.min_refetch_interval),
        ("max_staleness", j.max_staleness),
        ("timeout", j.timeout),
    ] {
        if value.is_zero() {
            p.add(format!("{path}.jwks.{field}"), "must be greater than zero");
        }
    }
    if j.min_refresh_interval > j.max_refresh_interval {
        p.add(
            format!("{path}.jwks.min_refresh_interval"),
            "must not exceed max_refresh_interval",
        );
    }
    if p.0.len() != before {
        return None;
    }
    Some(IssuerConfig {
        settings: IssuerSettings {
            issuer: raw.issuer.clone(),
            audiences: raw.audiences.clone(),
            user_claim: raw.user_claim.clone(),
            email_claim: raw.email_claim.clone(),
            name_claim: raw.name_claim.clone(),
            gerrit_account_claim: raw.gerrit_account_claim.clone(),
            gerrit_account_form,
            user_prefix,
            algorithms,
            leeway: raw.leeway,
            max_token_lifetime: raw.max_token_lifetime,
            required_claims: raw.required_claims.clone(),
        },
        jwks: jwks?,
        timing: JwksTiming {
            refresh_interval: j.refresh_interval,
            min_refresh_interval: j.min_refresh_interval,
            max_refresh_interval: j.max_refresh_interval,
            min_refetch_interval: j.min_refetch_interval,
            max_staleness: j.max_staleness,
        },
    })
}

fn compile_gerrit(raw: &RawGerrit, files: &FileResolver, p: &mut Problems) -> Option<GroupsConfig> {
    let url = http_url(&raw.url, "gerrit.url", p);
    if raw.username.is_empty() {
        p.add("gerrit.username", "must not be empty");
    } else if HeaderValue::from_str(&raw.username).is_err() {
        p.add(
            "gerrit.username",
            "must be printable ASCII without control characters",
        );
    }
    match &raw.password_file {
        Some(f) if f.as_os_str().is_empty() => p.add("gerrit.password_file", "must not be empty"),
        None if raw.trusted_user_header.is_none() => p.add(
            "gerrit",
            "set `password_file` (HTTP Basic) or `trusted_user_header` (Gerrit with auth.trustContainerAuth), or both",
        ),
        _ => {}
    }
    let trusted_user_header = raw.trusted_user_header.as_deref().and_then(|h| {
        header_name(h)
            .map_err(|e| p.add("gerrit.trusted_user_header", e.to_string()))
            .ok()
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
    });
    if raw.ca_file.is_some() && url.as_ref().is_some_and(|u| u.scheme() != "https") {
        p.add("gerrit.ca_file", "only used with an https `url`");
    }
    if raw.timeout.is_zero() {
        p.add("gerrit.timeout", "must be greater than zero");
    }
    if raw.max_concurrent_requests == 0 {
        p.add("gerrit.max_concurrent_requests", "must be at least 1");
    }
    if raw.retries > 5 {
        p.add(
            "gerrit.retries",
            "at most 5: retries multiply the time a check can take",
        );
    }
    if raw.password_reload_interval.is_zero() {
        p.add(
            "gerrit.password_reload_interval",
            "must be greater than zero",
        );
    }
    if raw.max_response_bytes < 1024 {
        p.add(
            "gerrit.max_response_bytes",
            "must be at least 1024: a user in a few groups already needs that",
        );
    }
    if raw.cache_max_users == 0 {
        p.add("gerrit.cache_max_users", "must be greater than zero");
    }
    if let Some(events) = &raw.events {
        if events.all_users_project.is_empty() {
            p.add("gerrit.events.all_users_project", "must not be empty");
        }
    }
    Some(GroupsConfig::Gerrit(Box::new(GerritConfig {
        url: url?,
        username: raw.username.clone(),
        password_file: raw.password_file.as_deref().map(|f| files.resolve(f)),
        password_reload_interval: raw.password_reload_interval,
        trusted_user_header,
        ca_file: raw.ca_file.as_deref().map(|f| files.resolve(f)),
        timeout: raw.timeout,
        retries: raw.retries,
        retry_backoff: raw.retry_backoff,
        max_concurrent_requests: raw.max_concurrent_requests,
        max_response_bytes: raw.max_response_bytes,
        events: raw.events.as_ref().map(|e| GerritEventsConfig {
            token_file: e.token_file.as_deref().map(|f| files.resolve(f)),
            all_users_project: e.all_users_project.clone(),
        }),
        cache: CacheSettings {
            ttl: raw.cache_ttl,
            not_found_ttl: raw.not_found_ttl,
            max_users: raw.cache_max_users,
            max_staleness: raw.max_staleness,
        },
    })))
}

/// `[i]` for the i-th rule of a list, nothing for a single rule written as a map.
fn rule_index(allow: &RawAllow, i: usize) -> String {
    match allow {
        RawAllow::Rule(_) => String::new(),
        _ => format!("[{i}]"),
    }
}

fn raw_rule_needs_token(r: &RawRule) -> bool {
    r.authenticated
        || !r.groups_any_of.is_empty()
        || !r.groups_all_of.is_empty()
        || !r.claims.is_empty()
        || !r.scopes.is_empty()
}

fn compile_route(path: &str, raw: &RawRoute, p: &mut Problems) -> Option<RouteRule> {
    let before = p.0.len();
    if raw.name.is_empty() {
        p.add(format!("{path}.name"), "must not be empty");
    }
    let hosts: Vec<HostMatcher> = raw
        .matches
        .hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            HostMatcher::parse(h)
                .map_err(|e| p.add(format!("{path}.match.hosts[{i}]"), e.to_string()))
                .ok()
        })
        .collect();
    let path_matcher = match &raw.matches.path {
        None => Some(PathMatcher::Any),
        Some(m) => match (&m.segment_prefix, &m.prefix, &m.exact, &m.regex) {
            (Some(segments), None, None, None) => PathMatcher::segment_prefix(segments)
                .map_err(|e| p.add(format!("{path}.match.path.segment_prefix"), e.to_string()))
                .ok(),
            (None, Some(prefix), None, None) => PathMatcher::prefix(prefix)
                .map_err(|e| p.add(format!("{path}.match.path.prefix"), e.to_string()))
                .ok(),
            (None, None, Some(exact), None) => PathMatcher::exact(exact)
                .map_err(|e| p.add(format!("{path}.match.path.exact"), e.to_string()))
                .ok(),
            (None, None, None, Some(regex)) => PathMatcher::regex(regex)
                .map_err(|e| p.add(format!("{path}.match.path.regex"), e.to_string()))
                .ok(),
            _ => {
                p.add(
                    format!("{path}.match.path"),
                    "set exactly one of `segment_prefix`, `prefix`, `exact` or `regex`",
                );
                None
            }
        },
    };
    let methods = MethodSet::new(&raw.matches.methods)
        .map_err(|e| p.add(format!("{path}.match.methods"), e.to_string()))
        .ok();
    let principals = principals(
        &raw.matches.principals,
        &format!("{path}.match.principals"),
        p,
    );
    let context_extensions = raw
        .matches
        .context_extensions
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let requirement = match &raw.allow {
        RawAllow::Public => Requirement::Public,
        RawAllow::Authenticated => Requirement::authenticated(),
        RawAllow::Rule(_) | RawAllow::Rules(_) => {
            let rules = raw.allow.rules();
            if rules.is_empty() {
                p.add(format!("{path}.allow"), "list at least one rule");
            }
            Requirement::AnyOf(
                rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        compile_rule(&format!("{path}.allow{}", rule_index(&raw.allow, i)), r, p)
                    })
                    .collect(),
            )
        }
    };
    if raw.token_from.is_empty() {
        p.add(
            format!("{path}.token_from"),
            "list at least one token source",
        );
    }
    let token_sources: Vec<TokenSource> = raw
        .token_from
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| {
            TokenSource::parse(spec)
                .map_err(|e| p.add(format!("{path}.token_from[{i}]"), e))
                .ok()
        })
        .collect();
    let header = |value: Option<&str>, field: &str, p: &mut Problems| {
        value.and_then(|v| {
            header_name(v)
                .map_err(|e| p.add(format!("{path}.inject.{field}"), e.to_string()))
                .ok()
        })
    };
    let user = header(raw.inject.user.as_deref(), "user", p);
    let email = header(raw.inject.email.as_deref(), "email", p);
    let display_name = header(raw.inject.display_name.as_deref(), "display_name", p);
    let groups = raw.inject.groups.as_ref().and_then(|g| {
        let name = header(Some(&g.header), "groups.header", p)?;
        let on_overflow = match g.on_overflow.as_str() {
            "deny" => Overflow::Deny,
            "truncate" => Overflow::Truncate,
            other => {
                p.add(
                    format!("{path}.inject.groups.on_overflow"),
                    format!("{other:?}: use `deny` or `truncate`"),
                );
                Overflow::Deny
            }
        };
        if !(64..=MAX_INJECTED_BYTES / 2).contains(&g.max_bytes) {
            p.add(
                format!("{path}.inject.groups.max_bytes"),
                format!(
                    "must be between 64 and {}: upstreams refuse larger headers (431)",
                    MAX_INJECTED_BYTES / 2
                ),
            );
        }
        Some(GroupsHeader {
            name,
            only: group_refs(&g.only, &format!("{path}.inject.groups.only"), p),
            max_bytes: g.max_bytes,
            on_overflow,
        })
    });
    let inject = IdentityHeaders {
        user,
        email,
        display_name,
        groups,
    };
    let mut seen = HashSet::new();
    for name in inject.names() {
        if !seen.insert(name) {
            p.add(
                format!("{path}.inject"),
                format!("{name:?} is injected twice"),
            );
        }
    }
    let mut remove_headers = Vec::new();
    for (i, h) in raw.remove_headers.iter().enumerate() {
        match header_name(h) {
            Ok(h) if inject.names().any(|n| n == h) => p.add(
                format!("{path}.remove_headers[{i}]"),
                format!("{h:?} is also injected; Envoy applies removals last, so it would never reach the upstream"),
            ),
            Ok(h) => remove_headers.push(h),
            Err(e) => p.add(format!("{path}.remove_headers[{i}]"), e.to_string()),
        }
    }
    let kube = raw.kube.as_ref().map(|k| {
        if requirement == Requirement::Public {
            p.add(
                format!("{path}.kube"),
                "a public route has no user to impersonate: require a token",
            );
        }
        for (i, rule) in requirement.rules().iter().enumerate() {
            if !rule.token && rule.as_user.is_none() {
                p.add(
                    format!("{path}.allow{}", rule_index(&raw.allow, i)),
                    "on a kube route every rule needs a user to impersonate: a token, or `as_user`",
                );
            }
        }
        compile_kube(&format!("{path}.kube"), k, p)
    });
    if p.0.len() != before {
        return None;
    }
    Some(RouteRule {
        name: raw.name.as_str().into(),
        hosts,
        path: path_matcher?,
        methods: methods?,
        principals,
        context_extensions,
        requirement,
        dry_run: raw.dry_run,
        dynamic_metadata: raw.dynamic_metadata,
        token_sources,
        inject,
        remove_headers,
        kube,
        foreign_identity_headers: Vec::new(),
        issuers: raw.issuers.clone(),
        audiences: raw.audiences.clone(),
    })
}

/// A route's `issuers` and `audiences`: only for routes that take tokens, naming
/// configured issuers and audiences one of them accepts; and with several issuers, every
/// route that takes tokens must name the ones it trusts, since each could mint any user.
fn check_route_issuers(
    path: &str,
    route: &RawRoute,
    needs_token: bool,
    issuers: &[RawIssuer],
    p: &mut Problems,
) {
    if !needs_token {
        for (field, set) in [("issuers", &route.issuers), ("audiences", &route.audiences)] {
            if !set.is_empty() {
                p.add(
                    format!("{path}.{field}"),
                    "only for routes whose rules take a token",
                );
            }
        }
        return;
    }
    if issuers.len() > 1 && route.issuers.is_empty() {
        p.add(
            format!("{path}.issuers"),
            "several issuers are configured: name the ones this route trusts, since each could otherwise mint any user",
        );
    }
    let trusted: Vec<&RawIssuer> = issuers
        .iter()
        .filter(|i| route.issuers.is_empty() || route.issuers.contains(&i.issuer))
        .collect();
    for (i, issuer) in route.issuers.iter().enumerate() {
        if !issuers.iter().any(|c| &c.issuer == issuer) {
            p.add(
                format!("{path}.issuers[{i}]"),
                format!("{issuer:?} is not a configured issuer"),
            );
        }
    }
    for (i, audience) in route.audiences.iter().enumerate() {
        if !trusted.iter().any(|t| t.audiences.contains(audience)) {
            p.add(
                format!("{path}.audiences[{i}]"),
                format!("no issuer this route trusts accepts audience {audience:?}: no token could pass"),
            );
        }
    }
}

/// Resource verbs the apiserver derives (see `policy::kube`).
const KUBE_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
];

fn compile_kube(path: &str, raw: &RawKube, p: &mut Problems) -> KubePolicy {
    let impersonate_group = match raw.impersonate_group.as_str() {
        "granting" => ImpersonateGroup::Granting,
        "none" => ImpersonateGroup::None,
        other => match other.strip_prefix("fixed:") {
            Some(g) if !g.is_empty() && !g.contains(',') && !g.chars().any(char::is_control) => {
                ImpersonateGroup::Fixed(g.to_string())
            }
            _ => {
                p.add(
                    format!("{path}.impersonate_group"),
                    format!("{other:?}: use `granting`, `none` or `fixed:GROUP`"),
                );
                ImpersonateGroup::None
            }
        },
    };
    if raw.rules.is_empty() {
        p.add(
            format!("{path}.rules"),
            "list at least one rule; without rules every request is denied",
        );
    }
    let rules = raw
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| compile_kube_rule(&format!("{path}.rules[{i}]"), r, p))
        .collect();
    KubePolicy {
        rules,
        impersonate_group,
    }
}

fn compile_kube_rule(path: &str, raw: &RawKubeRule, p: &mut Problems) -> KubeRule {
    if raw.verbs.is_empty() {
        p.add(
            format!("{path}.verbs"),
            "list at least one verb (`*` for any)",
        );
    }
    let target = match (raw.resources.is_empty(), raw.non_resource_paths.is_empty()) {
        (false, true) => {
            for (i, v) in raw.verbs.iter().enumerate() {
                if v != "*" && !KUBE_VERBS.contains(&v.as_str()) {
                    p.add(
                        format!("{path}.verbs[{i}]"),
                        format!(
                            "{v:?} is not a verb the apiserver uses ({}, or *)",
                            KUBE_VERBS.join(", ")
                        ),
                    );
                }
            }
            for (i, r) in raw.resources.iter().enumerate() {
                let ok = match r.split_once('/') {
                    Some((res, sub)) => !res.is_empty() && !sub.is_empty() && !sub.contains('/'),
                    None => !r.is_empty(),
                };
                if !ok {
                    p.add(
                        format!("{path}.resources[{i}]"),
                        format!("{r:?}: use `resource`, `resource/subresource`, `*/sub`, `resource/*` or `*`"),
                    );
                }
            }
            if let Some(pattern) = &raw.namespace_group {
                if !pattern.contains("{namespace}") {
                    p.add(
                        format!("{path}.namespace_group"),
                        "must contain `{namespace}`, e.g. `{namespace}` or `k8s-{namespace}-admins`",
                    );
                }
                if pattern.starts_with("uuid:") || pattern.starts_with("name:") {
                    p.add(
                        format!("{path}.namespace_group"),
                        "a pattern of group names: write it without `uuid:` or `name:`",
                    );
                }
            }
            if raw.namespaces.is_empty() && raw.namespace_group.is_none() && !raw.cluster {
                p.add(
                    path.to_string(),
                    "applies nowhere: set `namespaces`, `namespace_group` or `cluster: true`",
                );
            }
            KubeTarget::Resources {
                api_groups: raw.api_groups.clone().unwrap_or_else(|| vec!["*".into()]),
                resources: raw.resources.clone(),
                scope: KubeScope {
                    namespaces: raw.namespaces.clone(),
                    namespace_group: raw.namespace_group.clone(),
                    cluster: raw.cluster,
                },
            }
        }
        (true, false) => {
            if !raw.namespaces.is_empty()
                || raw.namespace_group.is_some()
                || raw.cluster
                || raw.api_groups.is_some()
            {
                p.add(
                    path.to_string(),
                    "non_resource_paths take no namespaces, namespace_group, cluster or api_groups",
                );
            }
            for (i, path_pattern) in raw.non_resource_paths.iter().enumerate() {
                let body = path_pattern.strip_suffix('*').unwrap_or(path_pattern);
                if !body.starts_with('/') || body.contains('*') {
                    p.add(
                        format!("{path}.non_resource_paths[{i}]"),
                        format!(
                            "{path_pattern:?}: a path starting with `/`, optionally ending in `*`"
                        ),
                    );
                }
            }
            KubeTarget::NonResource {
                paths: raw.non_resource_paths.clone(),
            }
        }
        _ => {
            p.add(
                path.to_string(),
                "set exactly one of `resources` or `non_resource_paths`",
            );
            KubeTarget::default()
        }
    };
    KubeRule {
        verbs: raw.verbs.iter().map(|v| v.to_ascii_lowercase()).collect(),
        target,
        groups_any_of: group_refs(&raw.groups_any_of, &format!("{path}.groups_any_of"), p),
    }
}

/// Compiles group entries (`uuid:`, `name:` or a plain name), reporting each refused one.
fn group_refs(entries: &[String], path: &str, p: &mut Problems) -> Vec<GroupRef> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            GroupRef::parse(entry)
                .map_err(|e| p.add(format!("{path}[{i}]"), e.to_string()))
                .ok()
        })
        .collect()
}

fn principals(patterns: &[String], path: &str, p: &mut Problems) -> Vec<PrincipalMatcher> {
    patterns
        .iter()
        .enumerate()
        .filter_map(|(i, pattern)| {
            PrincipalMatcher::parse(pattern)
                .map_err(|e| p.add(format!("{path}[{i}]"), e.to_string()))
                .ok()
        })
        .collect()
}

fn compile_rule(path: &str, raw: &RawRule, p: &mut Problems) -> Rule {
    let token = raw_rule_needs_token(raw);
    if !token && raw.principals.is_empty() {
        p.add(
            path.to_string(),
            "an empty rule would allow everyone: use `allow: public`, or set `authenticated: true`, `principals`, groups, claims or scopes",
        );
    }
    let claims = raw
        .claims
        .iter()
        .filter_map(|(claim, c)| {
            let at = format!("{path}.claims.{claim}");
            if claim.is_empty() {
                p.add(at, "claim names must not be empty");
                return None;
            }
            let scalar = |v: &serde_json::Value| {
                matches!(
                    v,
                    serde_json::Value::String(_)
                        | serde_json::Value::Number(_)
                        | serde_json::Value::Bool(_)
                )
            };
            let condition = match (&c.equals, &c.one_of, &c.contains) {
                (Some(v), None, None) if scalar(v) => ClaimCondition::Equals(v.clone()),
                (None, Some(vs), None) if !vs.is_empty() && vs.iter().all(scalar) => {
                    ClaimCondition::OneOf(vs.clone())
                }
                (None, None, Some(v)) if scalar(v) => ClaimCondition::Contains(v.clone()),
                (None, None, None) | (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                    p.add(at, "set exactly one of `equals`, `one_of` or `contains`");
                    return None;
                }
                _ => {
                    p.add(at, "compare with strings, numbers or booleans (`one_of`: a non-empty list of them)");
                    return None;
                }
            };
            Some(ClaimRequirement {
                claim: claim.clone(),
                condition,
            })
        })
        .collect();
    if raw.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
        p.add(
            format!("{path}.scopes"),
            "scopes are single non-empty words",
        );
    }
    match &raw.as_user {
        Some(_) if token || raw.principals.is_empty() => p.add(
            format!("{path}.as_user"),
            "only for a rule on `principals` alone (a workload without a user token)",
        ),
        Some(u) if u.is_empty() || u.chars().any(char::is_control) => p.add(
            format!("{path}.as_user"),
            "must be a non-empty name without control characters",
        ),
        _ => {}
    }
    Rule {
        principals: principals(&raw.principals, &format!("{path}.principals"), p),
        token,
        groups_any_of: group_refs(&raw.groups_any_of, &format!("{path}.groups_any_of"), p),
        groups_all_of: group_refs(&raw.groups_all_of, &format!("{path}.groups_all_of"), p),
        claims,
        scopes: raw.scopes.clone(),
        as_user: raw.as_user.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        match compile_str("test.yaml", yaml, &FileResolver::Builtin) {
            Ok(_) => vec![],
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    const GOOD: &str = r#"
issuers:
  - issuer: https://idp.example.com
    audiences: [mesh]
    jwks: {file: jwks.json}
static_groups:
  alice: [team-a]
routes:
  - name: api
    match: {hosts: ["*.example.com"], path: {prefix: /a/}, methods: [GET]}
    allow: {groups_any_of: [team-a]}
    inject: {user: X-Forwarded-User}
    remove_headers: [Authorization]
  - name: open
    allow: public
"#;

    #[test]
    fn a_good_config_compiles() {
        let c = compile_str("test.yaml", GOOD, &FileResolver::Builtin).unwrap();
        assert_eq!(c.routes.routes().len(), 2);
        assert_eq!(c.issuers.len(), 1);
        assert_eq!(c.server.grpc_listen.port(), 9191);
        let api = &c.routes.routes()[0];
        assert_eq!(api.inject.user.as_deref(), Some("x-forwarded-user"));
        assert_eq!(api.remove_headers, vec!["authorization".to_string()]);
    }

    #[test]
    fn every_unknown_field_is_reported_with_its_path() {
        let yaml = GOOD.replace(
            "    allow: public",
            "    allow: public\n    alow: public\n    match: {hostz: [a]}",
        );
        let got = problems(&yaml);
        assert!(
            got.contains(&"routes[1].alow: unknown field".to_string()),
            "{got:?}"
        );
        assert!(
            got.contains(&"routes[1].match.hostz: unknown field".to_string()),
            "{got:?}"
        );
    }

    #[test]
    fn all_semantic_problems_are_reported_at_once() {
        let yaml = r#"
issuers:
  - issuer: https://idp.example.com
    audiences: []
    jwks: {url: "ftp://x"}
    algorithms: [HS256, RS257]
    gerrit_account_form: number
routes:
  - name: a
    match: {hosts: ["a.*.com"], path: {prefix: nope}}
    allow: {groups_any_of: [team-a]}
    inject: {user: "bad header"}
  - name: a
    allow: authenticated
    inject: {user: x-user}
    remove_headers: [X-User]
"#;
        let got = problems(yaml);
        let want = [
            "issuers[0].audiences: list at least one non-empty audience",
            "issuers[0].algorithms[0]: HS256 is symmetric",
            "issuers[0].algorithms[1]: unknown algorithm \"RS257\"",
            "issuers[0].jwks.url: \"ftp://x\" is not an http(s) URL",
            "issuers[0].gerrit_account_form: number is not one of username, email, account_id",
            "routes[0].match.hosts[0]: invalid host pattern",
            "routes[0].match.path.prefix: invalid path",
            "routes[0].inject.user: invalid header name",
            "routes[0].allow.groups_any_of: needs group membership",
            "routes[1].name: duplicate route name",
            "routes[1].remove_headers[0]: \"x-user\" is also injected",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
    }

    #[test]
    fn type_errors_name_the_field_and_line() {
        let got = problems("server: {drain_delay: soon}\nroutes: []\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("server.drain_delay"), "{got:?}");
        assert!(got[0].contains("line 1"), "{got:?}");
    }

    #[test]
    fn an_unreadable_jwks_file_is_a_config_problem() {
        let yaml = GOOD.replace("jwks.json", "missing.json");
        let got = problems(&yaml);
        assert!(
            got[0].starts_with("issuers[0].jwks.file: cannot read <built-in missing.json>"),
            "{got:?}"
        );
    }

    /// Problems of a config whose referenced files are `files`, in a temp dir.
    fn problems_with_files(yaml: &str, files: &[(&str, &str)]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let resolver = FileResolver::Disk(dir.path().to_path_buf());
        match compile_str("test.yaml", yaml, &resolver) {
            Ok(_) => vec![],
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    fn with_gerrit(section: &str) -> String {
        GOOD.replace("static_groups:\n  alice: [team-a]\n", section)
    }

    #[test]
    fn gerrit_sections_are_checked_field_by_field() {
        let jwks = (
            "jwks.json",
            include_str!("../../examples/quickstart/jwks.json"),
        );
        let cases = [
            (
                "gerrit:\n  url: https://review.example.com\n  username: svc\n",
                "gerrit: set `password_file` (HTTP Basic) or `trusted_user_header`",
            ),
            (
                "gerrit:\n  url: https://review.example.com\n  username: svc\n  trusted_user_header: \"X User\"\n",
                "gerrit.trusted_user_header: invalid header name",
            ),
            (
                "gerrit:\n  url: http://review.example.com\n  username: svc\n  password_file: pw\n  ca_file: jwks.json\n",
                "gerrit.ca_file: only used with an https `url`",
            ),
            (
                "gerrit:\n  url: https://review.example.com\n  username: svc\n  password_file: pw\n  max_response_bytes: 10\n",
                "gerrit.max_response_bytes: must be at least 1024",
            ),
        ];
        for (section, want) in cases {
            let got = problems_with_files(
                &with_gerrit(section),
                &[jwks, ("ca.pem", "not a certificate"), ("short", "abc\n")],
            );
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{section}: missing {want:?} in {got:#?}"
            );
        }
        // Trusting a header alone is enough.
        let header_only = "gerrit:\n  url: https://review.example.com\n  username: svc\n  trusted_user_header: X-Forwarded-User\n  events: {}\n";
        assert_eq!(
            problems_with_files(&with_gerrit(header_only), &[jwks]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn rules_and_kube_sections_compile_and_every_mistake_is_named() {
        let good = r#"
issuers:
  - issuer: https://idp.example.com
    audiences: [mesh]
    jwks: {file: jwks.json}
static_groups: {alice: [team-a]}
routes:
  - name: vote
    match:
      hosts: [gerrit.example.com]
      path: {regex: "/a/changes/[^/]+/revisions/[^/]+/review"}
      methods: [POST]
      principals: ["cluster.local/ns/ci/*"]
      context_extensions: {target: gerrit}
    allow:
      - principals: [cluster.local/ns/ci/sa/runner]
        as_user: ci-bot
      - groups_all_of: [team-a, reviewers]
        claims:
          email_verified: {equals: true}
          department: {one_of: [eng, ops]}
        scopes: [gerrit:write]
    dry_run: true
    inject:
      user: X-Forwarded-User
      display_name: X-Forwarded-Name
      groups: {header: X-Forwarded-Groups, only: [team-a], max_bytes: 512, on_overflow: truncate}
  - name: kube
    match: {hosts: [kube.example.com]}
    allow: authenticated
    kube:
      impersonate_group: "fixed:developers"
      rules:
        - {verbs: [get, list, watch], resources: ["*"], namespace_group: "team-{namespace}"}
        - {verbs: ["*"], api_groups: ["", apps], resources: [pods, "deployments/scale"], namespaces: [sandbox]}
        - {verbs: [get], non_resource_paths: [/version, "/apis/*"]}
"#;
        let c = compile_str("test.yaml", good, &FileResolver::Builtin)
            .unwrap_or_else(|e| panic!("{e}"));
        let vote = &c.routes.routes()[0];
        assert!(vote.dry_run);
        assert_eq!(vote.requirement.rules().len(), 2);
        assert!(
            !vote.requirement.rules()[0].token,
            "a workload rule needs no token"
        );
        assert!(vote.requirement.rules()[1].token && vote.requirement.rules()[1].needs_groups());
        let kube = c.routes.routes()[1].kube.as_ref().unwrap();
        assert_eq!(
            kube.impersonate_group,
            ImpersonateGroup::Fixed("developers".into())
        );
        assert_eq!(kube.rules.len(), 3);

        let bad = r#"
issuers:
  - issuer: https://idp.example.com
    audiences: [mesh]
    jwks: {file: jwks.json}
routes:
  - name: a
    match: {path: {regex: "(unclosed"}, principals: ["a*b"]}
    allow:
      - {}
      - {authenticated: true, as_user: bot}
      - {principals: ["*"], claims: {dept: {equals: eng, one_of: [ops]}, tier: {equals: [1]}}}
    inject: {groups: {header: x-g, on_overflow: explode, max_bytes: 1}}
  - name: k
    allow: public
    kube: {rules: []}
  - name: k2
    allow: [{principals: [cluster.local/ns/ci/sa/runner]}]
    kube:
      impersonate_group: team-a
      rules:
        - {verbs: [get], resources: [pods]}
        - {verbs: [fetch], resources: [pods], namespaces: ["*"]}
        - {verbs: [get], resources: [pods], namespace_group: team-a, groups_any_of: [x]}
        - {verbs: [get], non_resource_paths: [healthz], namespaces: [a]}
        - {verbs: [get]}
"#;
        let got = problems(bad);
        let want = [
            "routes[0].match.path.regex: invalid path regex \"(unclosed\"",
            "routes[0].match.principals[0]: invalid principal pattern \"a*b\"",
            "routes[0].allow[0]: an empty rule would allow everyone",
            "routes[0].allow[1].as_user: only for a rule on `principals` alone",
            "routes[0].allow[2].claims.dept: set exactly one of `equals`, `one_of` or `contains`",
            "routes[0].allow[2].claims.tier: compare with strings, numbers or booleans",
            "routes[0].inject.groups.on_overflow: \"explode\": use `deny` or `truncate`",
            "routes[0].inject.groups.max_bytes: must be between 64 and 16384",
            "routes[1].kube: a public route has no user to impersonate",
            "routes[1].kube.rules: list at least one rule",
            "routes[2].allow[0]: on a kube route every rule needs a user to impersonate",
            "routes[2].kube.impersonate_group: \"team-a\": use `granting`, `none` or `fixed:GROUP`",
            "routes[2].kube.rules[0]: applies nowhere",
            "routes[2].kube.rules[1].verbs[0]: \"fetch\" is not a verb the apiserver uses",
            "routes[2].kube.rules[2].namespace_group: must contain `{namespace}`",
            "routes[2].kube.rules[2]: needs group membership",
            "routes[0].inject.groups: injects groups, but neither",
            "routes[2].kube.rules[3]: non_resource_paths take no namespaces",
            "routes[2].kube.rules[3].non_resource_paths[0]: \"healthz\": a path starting with `/`",
            "routes[2].kube.rules[4]: set exactly one of `resources` or `non_resource_paths`",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    #[test]
    fn peers_must_be_host_and_port() {
        let yaml = format!(
            "server:\n  peers: [\"peers.mesh-authz.svc:9192\", \"no-port\", \":9192\", \"h:0\"]\n{GOOD}"
        );
        let got = problems(&yaml);
        assert_eq!(got.len(), 3, "{got:#?}");
        for (i, g) in got.iter().enumerate() {
            assert!(g.starts_with(&format!("server.peers[{}]: ", i + 1)), "{g}");
        }
    }

    #[test]
    fn the_builtin_quickstart_config_compiles() {
        let c = super::super::builtin().unwrap();
        assert!(!c.routes.routes().is_empty());
    }
}
