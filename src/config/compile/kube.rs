//! `routes[].kube`: the kube-apiserver rules and whom to impersonate.

use super::*;

pub(super) fn compile_kube(path: &str, raw: &RawKube, p: &mut Problems) -> KubePolicy {
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

pub(super) fn compile_kube_rule(path: &str, raw: &RawKubeRule, p: &mut Problems) -> KubeRule {
    if raw.verbs.is_empty() {
        p.add(
            format!("{path}.verbs"),
            "list at least one verb (`*` for any)",
        );
    }
    let target = match (raw.resources.is_empty(), raw.non_resource_paths.is_empty()) {
        (false, true) => {
            for (i, v) in raw.verbs.iter().enumerate() {
                if v != "*" && !RESOURCE_VERBS.contains(&v.as_str()) {
                    p.add(
                        format!("{path}.verbs[{i}]"),
                        format!(
                            "{v:?} is not a verb the apiserver uses ({}, or *)",
                            RESOURCE_VERBS.join(", ")
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
