//! Which kube-apiserver requests a user may make through a route, and as whom: rules on
//! verbs, API groups, resources and namespaces, in the manner of RBAC, including
//! namespaces owned by Gerrit groups (code ownership: group `team-x` may act in namespace
//! `team-x`).
//!
//! The request is classified by [`super::kube::parse`] exactly as the apiserver does; the
//! apiserver then authorizes the impersonated user once more with its own RBAC.

use super::kube::{KubeRequest, ResourceRequest};
use super::GroupRef;

/// The resource verbs the apiserver derives from a request (see [`super::kube`]), which
/// a rule's `verbs` may name.
pub const RESOURCE_VERBS: &[&str] = &[
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
use crate::identity::Membership;

/// A route's kube-apiserver policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubePolicy {
    /// Tried in order; the first that allows decides.
    pub rules: Vec<KubeRule>,
    /// Which group, if any, goes into `Impersonate-Group`.
    pub impersonate_group: ImpersonateGroup,
}

/// The group mesh-authz impersonates besides the user. Envoy can set one value per
/// header (appended values are comma-joined into one, which the apiserver reads as one
/// group name), so at most one group is passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImpersonateGroup {
    /// The group that granted the request (a namespace's owner group, or the rule's
    /// `groups_any_of` match); none when no group was involved.
    Granting,
    /// No group: the apiserver sees the user alone (plus `system:authenticated`).
    None,
    /// Always this group.
    Fixed(String),
}

/// One rule: the request's verb, group, resource and scope must all match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeRule {
    /// Verbs (`get`, `list`, ... for resources; `get`, `post`, ... for non-resource
    /// paths); `*` for any.
    pub verbs: Vec<String>,
    /// What the rule covers.
    pub target: KubeTarget,
    /// The user must also be in one of these groups; empty: no need.
    pub groups_any_of: Vec<GroupRef>,
}

/// What a [`KubeRule`] covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeTarget {
    /// API resources.
    Resources {
        /// API groups (`""` core, `apps`, ...); `*` for any.
        api_groups: Vec<String>,
        /// `pods`, `pods/log`, `*/scale`, `pods/*`, `*`, as in RBAC.
        resources: Vec<String>,
        /// Where the rule applies.
        scope: KubeScope,
    },
    /// Non-resource paths: exact, or a prefix ending in `*`, as RBAC's `nonResourceURLs`.
    NonResource {
        /// The paths.
        paths: Vec<String>,
    },
}

impl Default for KubeTarget {
    fn default() -> Self {
        KubeTarget::NonResource { paths: Vec::new() }
    }
}

/// Where a resource rule applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeScope {
    /// Namespaces named outright; `*` for any.
    pub namespaces: Vec<String>,
    /// The group that owns namespace N is this pattern with `{namespace}` replaced by N:
    /// a user in that group may act in N.
    pub namespace_group: Option<String>,
    /// Cluster-scoped requests (nodes, namespaces lists, cross-namespace lists) too.
    pub cluster: bool,
}

/// A request the policy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeGrant {
    /// The index of the rule that allowed.
    pub rule: usize,
    /// The group to impersonate, if any.
    pub group: Option<String>,
}

/// Why the policy does not allow a request (safe to show the developer: it only repeats
/// what they asked for).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeDenial {
    /// The request is not one the apiserver would authorize as it stands.
    #[error("not a request the apiserver would authorize")]
    Invalid,
    /// No rule allows it.
    #[error("no rule allows {0}")]
    NoRule(String),
}

impl KubePolicy {
    /// Whether deciding may need the user's groups.
    pub fn needs_groups(&self) -> bool {
        self.rules.iter().any(|r| {
            !r.groups_any_of.is_empty()
                || matches!(&r.target, KubeTarget::Resources { scope, .. } if scope.namespace_group.is_some())
        })
    }

    /// Decides `request` for a user in `groups` (`None` if unknown: rules that need
    /// groups then do not allow).
    pub fn decide(
        &self,
        request: &KubeRequest,
        groups: Option<&Membership>,
    ) -> Result<KubeGrant, KubeDenial> {
        let in_group = |g: &GroupRef| groups.is_some_and(|m| g.is_held_by(m));
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(mut granting) = rule.allows(request, &in_group) else {
                continue;
            };
            if let Some(g) = rule.groups_any_of.iter().find(|g| in_group(g)) {
                granting.get_or_insert_with(|| g.value().to_string());
            } else if !rule.groups_any_of.is_empty() {
                continue;
            }
            let group = match &self.impersonate_group {
                ImpersonateGroup::Granting => granting,
                ImpersonateGroup::None => None,
                ImpersonateGroup::Fixed(g) => Some(g.clone()),
            };
            return Ok(KubeGrant { rule: i, group });
        }
        Err(match request {
            KubeRequest::Invalid(_) => KubeDenial::Invalid,
            other => KubeDenial::NoRule(describe(other)),
        })
    }
}

impl KubeRule {
    /// `None` if the rule does not cover the request; else the namespace's owner group if
    /// that is what allowed it.
    fn allows(
        &self,
        request: &KubeRequest,
        in_group: &dyn Fn(&GroupRef) -> bool,
    ) -> Option<Option<String>> {
        match (request, &self.target) {
            (
                KubeRequest::Resource(r),
                KubeTarget::Resources {
                    api_groups,
                    resources,
                    scope,
                },
            ) => {
                if !any_or(&self.verbs, &r.verb)
                    || !any_or(api_groups, &r.api_group)
                    || !resources.iter().any(|rule| resource_matches(rule, r))
                {
                    return None;
                }
                match &r.namespace {
                    None => scope.cluster.then_some(None),
                    Some(ns) if scope.namespaces.iter().any(|n| n == "*" || n == ns) => Some(None),
                    Some(ns) => {
                        // A name pattern: owner groups are matched by name only.
                        let owner = scope.namespace_group.as_ref()?.replace("{namespace}", ns);
                        let group = GroupRef::Name(owner);
                        in_group(&group).then(|| Some(group.value().to_string()))
                    }
                }
            }
            (KubeRequest::NonResource { verb, path }, KubeTarget::NonResource { paths }) => {
                let path_ok = paths.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => p == path,
                });
                (any_or(&self.verbs, verb) && path_ok).then_some(None)
            }
            _ => None,
        }
    }
}

/// `*` or the value itself, as RBAC matches verbs and API groups.
fn any_or(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// RBAC's resource matching: `*`, `pods`, `pods/log`, `*/scale`, `pods/*`.
fn resource_matches(rule: &str, r: &ResourceRequest) -> bool {
    if rule == "*" {
        return true;
    }
    match &r.subresource {
        None => rule == r.resource,
        Some(sub) => match rule.split_once('/') {
            Some((res, rsub)) => (res == "*" || res == r.resource) && (rsub == "*" || rsub == sub),
            None => false,
        },
    }
}

/// `get pods in namespace team-a`, for denial reasons and `mesh-authz check`.
pub fn describe(request: &KubeRequest) -> String {
    match request {
        KubeRequest::Resource(r) => {
            let mut what = match &r.subresource {
                Some(sub) => format!("{} {}/{}", r.verb, r.resource, sub),
                None => format!("{} {}", r.verb, r.resource),
            };
            if !r.api_group.is_empty() {
                what.push_str(&format!(" ({})", r.api_group));
            }
            match &r.namespace {
                Some(ns) => what.push_str(&format!(" in namespace {ns}")),
                None => what.push_str(" cluster-wide"),
            }
            what
        }
        KubeRequest::NonResource { verb, path } => format!("{verb} {path}"),
        KubeRequest::Invalid(reason) => format!("an invalid request ({reason:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::kube::parse;
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn resources(verbs: &[&str], groups: &[&str], res: &[&str], scope: KubeScope) -> KubeRule {
        KubeRule {
            verbs: strings(verbs),
            target: KubeTarget::Resources {
                api_groups: strings(groups),
                resources: strings(res),
                scope,
            },
            groups_any_of: vec![],
        }
    }

    /// The policy of docs/configuration.md's example: read anything in namespaces your groups own,
    /// everything in `sandbox`, platform may list namespaces, everyone may discover APIs.
    fn policy() -> KubePolicy {
        KubePolicy {
            rules: vec![
                resources(
                    &["get", "list", "watch"],
                    &["*"],
                    &["*"],
                    KubeScope {
                        namespace_group: Some("{namespace}".into()),
                        ..KubeScope::default()
                    },
                ),
                resources(
                    &["*"],
                    &["*"],
                    &["*"],
                    KubeScope {
                        namespaces: strings(&["sandbox"]),
                        ..KubeScope::default()
                    },
                ),
                KubeRule {
                    groups_any_of: vec![GroupRef::Name("platform".into())],
                    ..resources(
                        &["get", "list", "watch"],
                        &[""],
                        &["namespaces", "nodes"],
                        KubeScope {
                            cluster: true,
                            ..KubeScope::default()
                        },
                    )
                },
                KubeRule {
                    verbs: strings(&["get"]),
                    target: KubeTarget::NonResource {
                        paths: strings(&["/api", "/api/*", "/apis", "/apis/*", "/version"]),
                    },
                    groups_any_of: vec![],
                },
            ],
            impersonate_group: ImpersonateGroup::Granting,
        }
    }

    fn member_of(names: &[&str]) -> Membership {
        Membership::of_names(names)
    }

    fn decide(
        groups: &[&str],
        method: &str,
        path: &str,
        query: &str,
    ) -> Result<KubeGrant, KubeDenial> {
        policy().decide(&parse(method, path, query), Some(&member_of(groups)))
    }

    #[test]
    fn a_group_acts_in_the_namespace_named_after_it_as_that_group() {
        let cases = [
            ("GET", "/api/v1/namespaces/team-a/pods", "", Some(0)),
            ("GET", "/api/v1/namespaces/team-a/pods/web/log", "", Some(0)),
            (
                "GET",
                "/apis/apps/v1/namespaces/team-a/deployments",
                "watch=1",
                Some(0),
            ),
            ("DELETE", "/api/v1/namespaces/team-a/pods/web", "", None),
            ("GET", "/api/v1/namespaces/team-b/pods", "", None),
            ("GET", "/api/v1/pods", "", None),
        ];
        for (method, path, query, rule) in cases {
            let got = decide(&["team-a"], method, path, query);
            assert_eq!(
                got.as_ref().ok().map(|g| g.rule),
                rule,
                "{method} {path}?{query}: {got:?}"
            );
            if rule.is_some() {
                assert_eq!(got.unwrap().group.as_deref(), Some("team-a"));
            }
        }
    }

    #[test]
    fn a_namespace_named_outright_allows_every_verb_without_a_group() {
        for (method, path) in [
            ("POST", "/api/v1/namespaces/sandbox/pods"),
            ("DELETE", "/api/v1/namespaces/sandbox/pods"),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/sandbox/deployments/web/scale",
            ),
        ] {
            let got = decide(&[], method, path, "").unwrap();
            assert_eq!((got.rule, got.group), (1, None), "{method} {path}");
        }
    }

    #[test]
    fn cluster_scoped_requests_need_a_cluster_rule_and_its_group() {
        assert_eq!(
            decide(&["platform"], "GET", "/api/v1/nodes", "").map(|g| g.group),
            Ok(Some("platform".into()))
        );
        assert!(decide(&["team-a"], "GET", "/api/v1/nodes", "").is_err());
        assert!(decide(&["platform"], "DELETE", "/api/v1/nodes/n1", "").is_err());
        assert!(
            decide(
                &["platform"],
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                ""
            )
            .is_err(),
            "another API group"
        );
    }

    #[test]
    fn non_resource_paths_match_exactly_or_by_prefix() {
        assert!(decide(&[], "GET", "/apis/apps/v1", "").is_ok());
        assert!(decide(&[], "GET", "/version", "").is_ok());
        assert!(decide(&[], "GET", "/versions", "").is_err());
        assert!(decide(&[], "POST", "/api", "").is_err());
        assert!(decide(&[], "GET", "/healthz", "").is_err());
    }

    #[test]
    fn denials_say_what_was_asked_and_invalid_requests_are_refused() {
        assert_eq!(
            decide(&["team-a"], "DELETE", "/api/v1/namespaces/team-b/pods", ""),
            Err(KubeDenial::NoRule(
                "deletecollection pods in namespace team-b".into()
            ))
        );
        assert_eq!(
            decide(&["platform"], "GET", "/apis/apps/v1/deployments", "")
                .unwrap_err()
                .to_string(),
            "no rule allows list deployments (apps) cluster-wide"
        );
        assert_eq!(
            decide(&["team-a"], "GET", "/api/v1/watch", ""),
            Err(KubeDenial::Invalid)
        );
    }

    #[test]
    fn rbac_resource_patterns() {
        let pod_log = ResourceRequest {
            verb: "get".into(),
            api_group: "".into(),
            api_version: "v1".into(),
            namespace: Some("x".into()),
            resource: "pods".into(),
            subresource: Some("log".into()),
            name: Some("p".into()),
        };
        let pods = ResourceRequest {
            subresource: None,
            ..pod_log.clone()
        };
        for (rule, on_log, on_pods) in [
            ("*", true, true),
            ("pods", false, true),
            ("pods/log", true, false),
            ("pods/*", true, false),
            ("*/log", true, false),
            ("*/exec", false, false),
            ("services/log", false, false),
        ] {
            assert_eq!(
                resource_matches(rule, &pod_log),
                on_log,
                "{rule} vs pods/log"
            );
            assert_eq!(resource_matches(rule, &pods), on_pods, "{rule} vs pods");
        }
    }

    #[test]
    fn impersonated_group_follows_the_setting() {
        let mut p = policy();
        let ns = parse("GET", "/api/v1/namespaces/team-a/pods", "");
        let m = member_of(&["team-a"]);
        p.impersonate_group = ImpersonateGroup::None;
        assert_eq!(p.decide(&ns, Some(&m)).unwrap().group, None);
        p.impersonate_group = ImpersonateGroup::Fixed("developers".into());
        assert_eq!(
            p.decide(&ns, Some(&m)).unwrap().group.as_deref(),
            Some("developers")
        );
        // Without the groups, a rule that needs them never allows.
        p.impersonate_group = ImpersonateGroup::Granting;
        assert!(p.decide(&ns, None).is_err());
    }
}
