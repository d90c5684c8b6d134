//! `routes[]`: matchers, rules, token sources, injected headers, and the issuers and
//! audiences a route trusts.

use super::*;

/// `[i]` for the i-th rule of a list, nothing for a single rule written as a map.
pub(super) fn rule_index(allow: &RawAllow, i: usize) -> String {
    match allow {
        RawAllow::Rule(_) => String::new(),
        _ => format!("[{i}]"),
    }
}

pub(super) fn raw_rule_needs_token(r: &RawRule) -> bool {
    r.authenticated
        || !r.groups_any_of.is_empty()
        || !r.groups_all_of.is_empty()
        || !r.claims.is_empty()
        || !r.scopes.is_empty()
        || r.change.as_ref().is_some_and(|c| c.claim.is_some())
}

pub(super) fn compile_route(path: &str, raw: &RawRoute, p: &mut Problems) -> Option<RouteRule> {
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
        browser_sign_in: None,
        issuers: raw.issuers.clone(),
        audiences: raw.audiences.clone(),
    })
}

/// A route's `issuers` and `audiences`: only for routes that take tokens, naming
/// configured issuers and audiences one of them accepts; and with several issuers, every
/// route that takes tokens must name the ones it trusts, since each could mint any user.
pub(super) fn check_route_issuers(
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

/// Compiles group entries (`uuid:`, `name:` or a plain name), reporting each refused one.
pub(super) fn group_refs(entries: &[String], path: &str, p: &mut Problems) -> Vec<GroupRef> {
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

pub(super) fn principals(
    patterns: &[String],
    path: &str,
    p: &mut Problems,
) -> Vec<PrincipalMatcher> {
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

pub(super) fn compile_rule(path: &str, raw: &RawRule, p: &mut Problems) -> Rule {
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
        change: raw
            .change
            .as_ref()
            .and_then(|c| compile_change(&format!("{path}.change"), c, p)),
        grant: raw.grant,
    }
}

/// `allow[].change`.
fn compile_change(
    path: &str,
    raw: &crate::config::schema::RawChangeCondition,
    p: &mut Problems,
) -> Option<crate::policy::ChangeCondition> {
    use crate::policy::change_gate::{Approval, ChangeSource, NamePattern, NotBy, RequiredState};
    let before = p.0.len();
    let from = match (&raw.header, &raw.claim) {
        (Some(h), None) => match header_name(h) {
            Ok(h) => Some(ChangeSource::Header(h)),
            Err(e) => {
                p.add(format!("{path}.header"), e.to_string());
                None
            }
        },
        (None, Some(c)) if !c.is_empty() => Some(ChangeSource::Claim(c.clone())),
        _ => {
            p.add(
                path.to_string(),
                "set exactly one of `header` and `claim`: where the request names its change",
            );
            None
        }
    };
    let patterns = |list: &[String], field: &str, p: &mut Problems| -> Vec<NamePattern> {
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| {
                NamePattern::parse(s)
                    .map_err(|e| p.add(format!("{path}.{field}[{i}]"), e))
                    .ok()
            })
            .collect()
    };
    let projects = patterns(&raw.projects, "projects", p);
    let branches = patterns(&raw.branches, "branches", p);
    let state = match raw.state.as_str() {
        "merged" => Some(RequiredState::Merged),
        "submittable" => Some(RequiredState::Submittable),
        other => {
            p.add(
                format!("{path}.state"),
                format!("{other:?} is not `merged` or `submittable`"),
            );
            None
        }
    };
    let revision_header = raw.revision_header.as_ref().and_then(|h| {
        header_name(h)
            .map_err(|e| p.add(format!("{path}.revision_header"), e.to_string()))
            .ok()
    });
    let approval = raw.approval.as_ref().map(|a| Approval {
        label: a.label.clone(),
        not_by: a
            .not_by
            .iter()
            .enumerate()
            .filter_map(|(i, who)| match who.as_str() {
                "owner" => Some(NotBy::Owner),
                "caller" => Some(NotBy::Caller),
                other => {
                    p.add(
                        format!("{path}.approval.not_by[{i}]"),
                        format!("{other:?} is not `owner` or `caller`"),
                    );
                    None
                }
            })
            .collect(),
    });
    if p.0.len() > before {
        return None;
    }
    Some(crate::policy::ChangeCondition {
        from: from?,
        projects,
        branches,
        state: state?,
        revision_header,
        approval,
    })
}
