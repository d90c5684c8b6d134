//! Turns a [`RawConfig`] into a [`Config`], collecting every problem with its path: this
//! file the top level and the server, one file per section beside it.

mod browser;
mod gerrit;
mod issuer;
mod kube;
mod route;
pub mod structure;
#[cfg(test)]
mod tests;

use browser::compile_browser;
use gerrit::compile_gerrit;
use issuer::compile_issuer;
use kube::compile_kube;
use route::{check_route_issuers, compile_route, group_refs, raw_rule_needs_token, rule_index};

use super::model::{
    AuditOutput, Config, GerritConfig, GerritEventsConfig, GrantsConfig, GroupsConfig,
    IssuerConfig, OtlpProtocol, ServerSettings, TracesSettings,
};
use super::schema::{
    RawAllow, RawConfig, RawGerrit, RawIssuer, RawKube, RawKubeRule, RawRoute, RawRule, RawTraces,
};
use super::{ConfigError, FileResolver, Problem};
use crate::authn::{IssuerSettings, JwksSource, JwksTiming, KeySet, TokenSource};
use crate::gerrit::{CacheSettings, GerritSettings};
use crate::identity::{AccountForm, Group};
use crate::policy::kube_access::{
    ImpersonateGroup, KubePolicy, KubeRule, KubeScope, KubeTarget, RESOURCE_VERBS,
};
use crate::policy::{
    header_name, ClaimCondition, ClaimRequirement, GroupRef, GroupsHeader, HostMatcher,
    IdentityHeaders, MethodSet, Overflow, PathMatcher, PrincipalMatcher, Requirement, RouteRule,
    RouteTable, Rule, MAX_INJECTED_BYTES,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use reqwest::header::{HeaderName, HeaderValue};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use url::Url;

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
            // serde stopped at the first error: read each piece on its own for the rest,
            // then check what the pieces that read say, all in this one run.
            let mut all = Problems::default();
            let first = e.to_string();
            let reading = structure::read(text);
            if reading.problems.is_empty() {
                all.add("", structure::with_hint(&first));
            }
            // The piecewise read has no line numbers; the first error has one.
            let located = first
                .split_once(": ")
                .filter(|(path, _)| !path.contains(' '));
            for (path, reason) in &reading.problems {
                let reason = match located {
                    Some((at, whole)) if at == path => structure::with_hint(whole),
                    _ => reason.clone(),
                };
                all.add(path.clone(), reason);
            }
            let rest = reading
                .salvaged
                .clone()
                .and_then(|v| serde_yaml::from_value::<RawConfig>(v).ok());
            if let Some(raw) = rest {
                let mut meaning = Problems::default();
                let _ = compile(name, raw, files, &mut meaning);
                for problem in meaning.0 {
                    all.add(reading.original_path(&problem.path), problem.reason);
                }
            }
            return Err(invalid(all.0));
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
        max_concurrent_checks: raw.server.max_concurrent_checks,
        max_concurrent_streams: raw.server.max_concurrent_streams,
        envoy_timeout: raw.server.envoy_timeout,
    };
    if raw.server.max_concurrent_checks == 0 {
        p.add("server.max_concurrent_checks", "must be at least 1");
    }
    if raw.server.max_concurrent_streams == 0 {
        p.add("server.max_concurrent_streams", "must be at least 1");
    }
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
            if raw.grants.is_none() {
                for (i, rule) in rules.iter().enumerate() {
                    if rule.grant {
                        p.add(
                            format!("{path}.allow{}.grant", rule_index(&route.allow, i)),
                            "needs the `grants:` section: where the grants file is",
                        );
                    }
                }
            }
            if raw.gerrit.is_none() {
                for (i, rule) in rules.iter().enumerate() {
                    if rule.change.is_some() {
                        p.add(
                            format!("{path}.allow{}.change", rule_index(&route.allow, i)),
                            "reads the change from Gerrit, but `gerrit` is not configured",
                        );
                    }
                }
            }
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
            let mut rule = compile_route(&path, route, p)?;
            if route.browser_sign_in {
                rule.browser_sign_in = browser_issuer(&path, route, needs_token, &raw.issuers, p);
            }
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
    let browser = compile_browser(&raw, files, &mut referenced, p);
    let grants = raw.grants.as_ref().and_then(|g| {
        if raw.gerrit.is_none() {
            p.add(
                "grants",
                "grants are read from Gerrit, but `gerrit` is not configured",
            );
        }
        let mut ok = true;
        for (field, value) in [
            ("project", &g.project),
            ("branch", &g.branch),
            ("file", &g.file),
        ] {
            if value.is_empty() || value.starts_with('/') || value.split('/').any(|s| s == "..") {
                p.add(
                    format!("grants.{field}"),
                    format!("{value:?} is not a {field} name"),
                );
                ok = false;
            }
        }
        for (field, d) in [
            ("max_duration", g.max_duration),
            ("refresh_interval", g.refresh_interval),
            ("max_staleness", g.max_staleness),
        ] {
            if d.is_zero() {
                p.add(format!("grants.{field}"), "must be greater than zero");
                ok = false;
            }
        }
        if g.max_staleness < g.refresh_interval {
            p.add(
                "grants.max_staleness",
                "shorter than refresh_interval: the grants would go stale between two reads",
            );
            ok = false;
        }
        (ok && raw.gerrit.is_some()).then(|| GrantsConfig {
            settings: crate::gerrit::GrantsSettings {
                project: g.project.clone(),
                branch: g.branch.trim_start_matches("refs/heads/").to_string(),
                file: g.file.clone(),
                max_duration: g.max_duration,
                refresh_interval: g.refresh_interval,
                max_staleness: g.max_staleness,
            },
            how_to_ask: g.how_to_ask.clone(),
        })
    });
    Config {
        source: name.to_string(),
        path: None,
        files: referenced,
        browser,
        grants,
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
        traces: compile_traces(raw.telemetry.traces.as_ref(), p),
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

/// `telemetry.traces`: each field checked here, so a typo does not silently fall back to
/// the `OTEL_*` variables.
fn compile_traces(raw: Option<&RawTraces>, p: &mut Problems) -> TracesSettings {
    let Some(raw) = raw else {
        return TracesSettings::default();
    };
    let endpoint = raw
        .endpoint
        .as_deref()
        .and_then(|e| match url::Url::parse(e) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            _ => {
                p.add(
                    "telemetry.traces.endpoint",
                    format!("{e:?} is not an http:// or https:// URL"),
                );
                None
            }
        });
    let protocol = raw.protocol.as_deref().and_then(|name| {
        let protocol = OtlpProtocol::parse(name);
        if protocol.is_none() {
            p.add(
                "telemetry.traces.protocol",
                format!("{name:?}: `grpc` or `http/protobuf`"),
            );
        }
        protocol
    });
    if let Some(ratio) = raw.sample_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            p.add(
                "telemetry.traces.sample_ratio",
                format!("{ratio} is not between 0 and 1"),
            );
        }
    }
    if raw.max_queue_size == Some(0) {
        p.add("telemetry.traces.max_queue_size", "must be at least 1");
    }
    if raw.export_timeout.is_some_and(|t| t.is_zero()) {
        p.add(
            "telemetry.traces.export_timeout",
            "must be greater than zero",
        );
    }
    if raw.service_name.as_deref() == Some("") {
        p.add("telemetry.traces.service_name", "must not be empty");
    }
    TracesSettings {
        enabled: raw.enabled,
        endpoint,
        protocol,
        service_name: raw.service_name.clone(),
        sample_ratio: raw.sample_ratio,
        include_user: raw.include_user,
        max_queue_size: raw.max_queue_size,
        export_timeout: raw.export_timeout,
    }
}

/// The issuer a route with `browser_sign_in` signs browsers in with: the one issuer it
/// trusts that has a `browser_client`.
fn browser_issuer(
    path: &str,
    route: &RawRoute,
    needs_token: bool,
    issuers: &[RawIssuer],
    p: &mut Problems,
) -> Option<Arc<str>> {
    if !needs_token {
        p.add(
            format!("{path}.browser_sign_in"),
            "only for routes whose rules take a token",
        );
        return None;
    }
    let candidates: Vec<&RawIssuer> = issuers
        .iter()
        .filter(|i| route.issuers.is_empty() || route.issuers.contains(&i.issuer))
        .filter(|i| i.browser_client.is_some())
        .collect();
    match candidates.as_slice() {
        [one] => Some(one.issuer.as_str().into()),
        [] => {
            p.add(
                format!("{path}.browser_sign_in"),
                "no issuer this route trusts has a `browser_client`",
            );
            None
        }
        _ => {
            p.add(
                format!("{path}.browser_sign_in"),
                "several issuers this route trusts have a `browser_client`: name one in `issuers`",
            );
            None
        }
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
