//! Time-bounded grants approved as reviews: a file in a Gerrit project, merged only after
//! the project's submit requirements (the review) are met, lists who may use which
//! routes, from when until when, and why.
//!
//! ```yaml
//! grants:
//!   - id: INC-4711
//!     who: {users: [agent-7], groups: [oncall], principals: [cluster.local/ns/ops/sa/agent]}
//!     routes: [kube]
//!     kube: {verbs: [delete], resources: [pods], namespaces: [payments]}
//!     from: 2026-12-06T10:00:00Z
//!     until: 2026-12-06T14:00:00Z
//!     reason: "INC-4711: restart the stuck payment pods"
//! ```
//!
//! The file parses into plain structs, then each entry compiles into a [`Grant`] or is
//! skipped with the reason: an invalid entry never widens access. A grant is active from
//! `from` (inclusive) to `until` (exclusive), judged against the clock of every request.

use super::kube::KubeRequest;
use super::kube_access::{KubeRule, KubeScope, KubeTarget, RESOURCE_VERBS};
use super::{GroupRef, PrincipalMatcher};
use crate::identity::Membership;
use serde::Deserialize;
use std::time::Duration;

/// Largest grants file read.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrantsFile {
    #[serde(default)]
    grants: Vec<serde_yaml::Value>,
}

/// One entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    /// A name for audit lines and messages (default: its position).
    id: Option<String>,
    who: RawWho,
    routes: Vec<String>,
    kube: Option<RawGrantKube>,
    from: String,
    until: String,
    reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWho {
    users: Vec<String>,
    groups: Vec<String>,
    principals: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrantKube {
    verbs: Vec<String>,
    resources: Vec<String>,
    #[serde(default)]
    api_groups: Vec<String>,
    namespaces: Vec<String>,
}

/// One active-or-not grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Its name.
    pub id: String,
    /// Users it names (the caller's user name).
    pub users: Vec<String>,
    /// Groups it names.
    pub groups: Vec<GroupRef>,
    /// Workloads it names.
    pub principals: Vec<PrincipalMatcher>,
    /// Routes it opens, by name.
    pub routes: Vec<String>,
    /// On a kube route: the requests it allows (its kube rule).
    pub kube: Option<KubeRule>,
    /// Seconds since the epoch; active from here.
    pub from: u64,
    /// Seconds since the epoch; inactive from here.
    pub until: u64,
    /// Why it was granted.
    pub reason: String,
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The user (a token's, or a workload's `as_user`).
    pub user: Option<&'a str>,
    /// Their groups, if known.
    pub membership: Option<&'a Membership>,
    /// The calling workload (`source.principal`), maybe empty.
    pub principal: &'a str,
}

impl Grant {
    /// Whether it is in force at `now`.
    pub fn is_active(&self, now: u64) -> bool {
        self.from <= now && now < self.until
    }

    /// Whether it names `caller`.
    pub fn names(&self, caller: &Caller<'_>) -> bool {
        caller
            .user
            .is_some_and(|u| self.users.iter().any(|x| x == u))
            || caller
                .membership
                .is_some_and(|m| self.groups.iter().any(|g| g.is_held_by(m)))
            || (!caller.principal.is_empty()
                && self.principals.iter().any(|p| p.matches(caller.principal)))
    }

    /// Whether it allows `request` (a kube request on a kube route; other routes: any).
    pub fn covers(&self, request: Option<&KubeRequest>) -> bool {
        match (request, &self.kube) {
            (None, _) => true,
            // A kube route's request needs the grant's narrowing: no narrowing, no request.
            (Some(_), None) => false,
            (Some(request), Some(rule)) => super::kube_access::KubePolicy {
                rules: vec![rule.clone()],
                impersonate_group: super::kube_access::ImpersonateGroup::None,
            }
            .decide(request, None)
            .is_ok(),
        }
    }
}

/// An entry that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its id, or `grants[i]`.
    pub entry: String,
    /// Why.
    pub reason: String,
}

/// The grants of one revision of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSet {
    /// The branch revision it was read at.
    pub revision: String,
    /// The valid entries.
    pub grants: Vec<Grant>,
}

/// Why the file as a whole was not read: the previous set stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the grants file is not valid: {0}")]
pub struct GrantsFileError(pub String);

impl GrantSet {
    /// Reads the file at `revision`; entries longer than `max_duration` or otherwise
    /// invalid are skipped and returned.
    pub fn parse(
        text: &str,
        revision: &str,
        max_duration: Duration,
    ) -> Result<(GrantSet, Vec<Skipped>), GrantsFileError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(GrantsFileError("larger than 1 MiB".into()));
        }
        let raw: RawGrantsFile =
            serde_yaml::from_str(text).map_err(|e| GrantsFileError(e.to_string()))?;
        let mut grants = Vec::new();
        let mut skipped = Vec::new();
        for (i, value) in raw.grants.into_iter().enumerate() {
            let fallback = format!("grants[{i}]");
            let id_of = |v: &serde_yaml::Value| {
                v.get("id")
                    .and_then(|id| id.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| fallback.clone())
            };
            let entry = id_of(&value);
            let compiled = serde_yaml::from_value::<RawGrant>(value)
                .map_err(|e| e.to_string())
                .and_then(|raw| compile(raw, &fallback, max_duration));
            match compiled {
                Ok(grant) if grants.iter().any(|g: &Grant| g.id == grant.id) => {
                    skipped.push(Skipped {
                        entry,
                        reason: "another entry has the same id".into(),
                    })
                }
                Ok(grant) => grants.push(grant),
                Err(reason) => skipped.push(Skipped { entry, reason }),
            }
        }
        Ok((
            GrantSet {
                revision: revision.to_string(),
                grants,
            },
            skipped,
        ))
    }

    /// The first grant active at `now` that names `caller`, opens `route` and covers
    /// `request`.
    pub fn find(
        &self,
        route: &str,
        caller: &Caller<'_>,
        request: Option<&KubeRequest>,
        now: u64,
    ) -> Option<&Grant> {
        self.grants.iter().find(|g| {
            g.is_active(now)
                && g.routes.iter().any(|r| r == route)
                && g.names(caller)
                && g.covers(request)
        })
    }

    /// Whether some grant for `route` names groups (only then are the caller's groups
    /// needed to decide).
    pub fn names_groups(&self, route: &str) -> bool {
        self.grants
            .iter()
            .any(|g| !g.groups.is_empty() && g.routes.iter().any(|r| r == route))
    }

    /// How many grants are active at `now`.
    pub fn active(&self, now: u64) -> usize {
        self.grants.iter().filter(|g| g.is_active(now)).count()
    }
}

fn compile(raw: RawGrant, fallback: &str, max_duration: Duration) -> Result<Grant, String> {
    let time = |field: &str, text: &str| -> Result<u64, String> {
        let t = chrono::DateTime::parse_from_rfc3339(text.trim())
            .map_err(|e| format!("`{field}` {text:?} is not an RFC 3339 time: {e}"))?;
        u64::try_from(t.timestamp()).map_err(|_| format!("`{field}` is before 1970"))
    };
    let from = time("from", &raw.from)?;
    let until = time("until", &raw.until)?;
    if until <= from {
        return Err("`until` is not after `from`".into());
    }
    let length = Duration::from_secs(until - from);
    if length > max_duration {
        return Err(format!(
            "lasts {}, longer than the {} grants may last",
            humantime::format_duration(length),
            humantime::format_duration(max_duration)
        ));
    }
    if raw.reason.trim().is_empty() {
        return Err("`reason` is empty: say why (an incident, a change)".into());
    }
    if raw.routes.is_empty() || raw.routes.iter().any(|r| r.is_empty()) {
        return Err("`routes` names no route".into());
    }
    let who = raw.who;
    if who.users.is_empty() && who.groups.is_empty() && who.principals.is_empty() {
        return Err("`who` names nobody".into());
    }
    if who.users.iter().any(|u| u.is_empty() || u == "*") {
        return Err("`who.users` must name users, not patterns".into());
    }
    let groups = who
        .groups
        .iter()
        .map(|g| GroupRef::parse(g).map_err(|e| format!("`who.groups`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let principals = who
        .principals
        .iter()
        .map(|p| {
            let m = PrincipalMatcher::parse(p).map_err(|e| format!("`who.principals`: {e}"))?;
            // A grant names workloads, not everyone.
            if m == PrincipalMatcher::Any {
                return Err("`who.principals` may not be `*`".to_string());
            }
            Ok(m)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let kube = raw.kube.map(kube_rule).transpose()?;
    Ok(Grant {
        id: raw.id.unwrap_or_else(|| fallback.to_string()),
        users: who.users,
        groups,
        principals,
        routes: raw.routes,
        kube,
        from,
        until,
        reason: raw.reason.trim().to_string(),
    })
}

/// A grant's kube narrowing as a kube rule: named verbs, resources and namespaces only
/// (no wildcard namespace, no cluster scope: a grant is least privilege).
fn kube_rule(raw: RawGrantKube) -> Result<KubeRule, String> {
    if raw.verbs.is_empty() || raw.resources.is_empty() || raw.namespaces.is_empty() {
        return Err("`kube` needs `verbs`, `resources` and `namespaces`".into());
    }
    if let Some(v) = raw
        .verbs
        .iter()
        .find(|v| v.as_str() != "*" && !RESOURCE_VERBS.contains(&v.as_str()))
    {
        return Err(format!("`kube.verbs`: {v:?} is not a resource verb"));
    }
    if raw.namespaces.iter().any(|n| n.is_empty() || n == "*") {
        return Err("`kube.namespaces` must name namespaces, not `*`".into());
    }
    let api_groups = if raw.api_groups.is_empty() {
        vec!["*".to_string()]
    } else {
        raw.api_groups
    };
    Ok(KubeRule {
        verbs: raw.verbs,
        target: KubeTarget::Resources {
            api_groups,
            resources: raw.resources,
            scope: KubeScope {
                namespaces: raw.namespaces,
                namespace_group: None,
                cluster: false,
            },
        },
        groups_any_of: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
