//! What a route demands of the caller: `public`, or rules tried in order, each a set of
//! conditions that must all hold (like the `rules` of an Istio `AuthorizationPolicy`).
//!
//! The conditions are checked here as pure functions of what is known about the caller;
//! The engine (`authorize`) finds those facts (the token, the groups) only when a rule needs
//! them.

use super::{GroupRef, PrincipalMatcher};
use crate::identity::{Identity, Membership};
use serde_json::Value;
use std::fmt;

/// What a route demands of the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    /// Nobody needs to authenticate; identity headers are removed.
    Public,
    /// The first of these rules that holds allows; none: denied.
    AnyOf(Vec<Rule>),
}

impl Requirement {
    /// A valid token from any configured issuer (`allow: authenticated`).
    pub fn authenticated() -> Self {
        Requirement::AnyOf(vec![Rule {
            token: true,
            ..Rule::default()
        }])
    }

    /// The rules, none for a public route.
    pub fn rules(&self) -> &[Rule] {
        match self {
            Requirement::Public => &[],
            Requirement::AnyOf(rules) => rules,
        }
    }

    /// Whether some rule may need the user's groups.
    pub fn needs_groups(&self) -> bool {
        self.rules().iter().any(Rule::needs_groups)
    }

    /// Whether some rule needs a token.
    pub fn needs_token(&self) -> bool {
        self.rules().iter().any(|r| r.token)
    }
}

/// One alternative of a route's `allow`: every condition must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    /// The calling workload must match one of these; empty: any caller.
    pub principals: Vec<PrincipalMatcher>,
    /// A valid token is needed (implied by every condition on the token).
    pub token: bool,
    /// The user must be in at least one of these groups.
    pub groups_any_of: Vec<GroupRef>,
    /// The user must be in all of these groups.
    pub groups_all_of: Vec<GroupRef>,
    /// Conditions on the token's claims.
    pub claims: Vec<ClaimRequirement>,
    /// OAuth scopes the token must carry, all of them (`scope`, space-separated, or `scp`).
    pub scopes: Vec<String>,
    /// For a rule on workloads only: the user the workload acts as upstream (e.g. the
    /// Gerrit account of the CI runner).
    pub as_user: Option<String>,
    /// The request must act for a Gerrit change in a given state.
    pub change: Option<super::ChangeCondition>,
    /// An active grant must name the caller and the route.
    pub grant: bool,
}

impl Rule {
    /// Whether checking this rule needs the user's groups.
    pub fn needs_groups(&self) -> bool {
        !self.groups_any_of.is_empty() || !self.groups_all_of.is_empty()
    }

    /// Whether the calling workload may use this rule.
    pub fn admits_principal(&self, principal: &str) -> bool {
        self.principals.is_empty() || self.principals.iter().any(|p| p.matches(principal))
    }

    /// Checks the conditions on the verified caller; `membership` must be given when
    /// [`Rule::needs_groups`]. Stops at the first condition that fails. `Err` says which,
    /// without claim values.
    pub fn check_identity(
        &self,
        identity: &Identity,
        membership: Option<&Membership>,
    ) -> Result<Satisfied, Unmet> {
        self.checked(identity, membership, None)
    }

    /// [`Rule::check_identity`], telling `note` about each condition checked and its
    /// result (for `mesh-authz check`).
    pub fn explain_identity(
        &self,
        identity: &Identity,
        membership: Option<&Membership>,
        note: &mut dyn FnMut(String),
    ) -> Result<Satisfied, Unmet> {
        self.checked(identity, membership, Some(note))
    }

    /// The checks; notes are formatted only when someone listens.
    fn checked(
        &self,
        identity: &Identity,
        membership: Option<&Membership>,
        mut listener: Option<&mut dyn FnMut(String)>,
    ) -> Result<Satisfied, Unmet> {
        let mut note = |f: &dyn Fn() -> String| {
            if let Some(l) = listener.as_mut() {
                l(f())
            }
        };
        let mut satisfied = Satisfied::default();
        if self.needs_groups() && membership.is_none() {
            note(&|| "groups unknown".into());
            return Err(Unmet::Groups(self.groups_any_of.clone()));
        }
        if let (false, Some(m)) = (self.groups_any_of.is_empty(), membership) {
            let any = &self.groups_any_of;
            match any.iter().find(|g| g.is_held_by(m)) {
                Some(g) => {
                    note(&|| format!("groups any of [{}]: member of {g}", list(any)));
                    satisfied.group = Some(g.clone());
                }
                None => {
                    note(&|| format!("groups any of [{}]: not a member", list(any)));
                    return Err(Unmet::Groups(any.clone()));
                }
            }
        }
        if let (false, Some(m)) = (self.groups_all_of.is_empty(), membership) {
            let all = &self.groups_all_of;
            if let Some(missing) = all.iter().find(|g| !g.is_held_by(m)) {
                note(&|| format!("groups all of [{}]: not a member of {missing}", list(all)));
                return Err(Unmet::Groups(vec![missing.clone()]));
            }
            note(&|| format!("groups all of [{}]: member of each", list(all)));
        }
        for c in &self.claims {
            if !c.condition.holds(claim(&identity.claims, &c.claim)) {
                note(&|| format!("claim {:?} {}: does not hold", c.claim, c.condition));
                return Err(Unmet::Claim(c.claim.clone()));
            }
            note(&|| format!("claim {:?} {}: holds", c.claim, c.condition));
        }
        if !self.scopes.is_empty() {
            if let Some(missing) = self.scopes.iter().find(|s| !has_scope(&identity.claims, s)) {
                note(&|| format!("scopes {:?}: {missing:?} missing", self.scopes));
                return Err(Unmet::Scope(missing.clone()));
            }
            note(&|| format!("scopes {:?}: present", self.scopes));
        }
        Ok(satisfied)
    }
}

/// What a satisfied rule tells about how it was satisfied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Satisfied {
    /// The group of `groups_any_of` the user is in.
    pub group: Option<GroupRef>,
}

/// The condition of a rule that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmet {
    /// Not in the group(s).
    Groups(Vec<GroupRef>),
    /// The claim does not satisfy its condition (or is missing).
    Claim(String),
    /// The scope is missing.
    Scope(String),
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmet::Groups(g) if g.len() == 1 => write!(f, "not a member of {}", g[0]),
            Unmet::Groups(g) => write!(f, "not a member of any of [{}]", list(g)),
            Unmet::Claim(c) => write!(f, "claim {c:?} does not satisfy the route"),
            Unmet::Scope(s) => write!(f, "scope {s:?} missing"),
        }
    }
}

/// `name:a, uuid:b` for notes and denials.
fn list(groups: &[GroupRef]) -> String {
    groups
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A condition on one claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequirement {
    /// The claim: a top-level name, else a dotted path into nested objects
    /// (`realm_access.roles`).
    pub claim: String,
    /// What its value must satisfy.
    pub condition: ClaimCondition,
}

/// What a claim's value must satisfy. A missing claim satisfies nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimCondition {
    /// Equal to this JSON value (a string, number or boolean).
    Equals(Value),
    /// Equal to one of these.
    OneOf(Vec<Value>),
    /// A list containing this value, or a string of space-separated words containing it.
    Contains(Value),
}

impl fmt::Display for ClaimCondition {
    // The condition as configured; never the token's value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimCondition::Equals(v) => write!(f, "equals {v}"),
            ClaimCondition::OneOf(vs) => {
                let vs: Vec<String> = vs.iter().map(ToString::to_string).collect();
                write!(f, "one of [{}]", vs.join(", "))
            }
            ClaimCondition::Contains(v) => write!(f, "contains {v}"),
        }
    }
}

impl ClaimCondition {
    /// Whether `value` (the claim, if present) satisfies the condition.
    pub fn holds(&self, value: Option<&Value>) -> bool {
        let Some(value) = value else {
            return false;
        };
        match self {
            ClaimCondition::Equals(want) => value == want,
            ClaimCondition::OneOf(wants) => wants.contains(value),
            ClaimCondition::Contains(want) => match value {
                Value::Array(items) => items.contains(want),
                Value::String(words) => want
                    .as_str()
                    .is_some_and(|w| words.split_ascii_whitespace().any(|x| x == w)),
                _ => false,
            },
        }
    }
}

/// A claim by name, else by dotted path (`a.b.c`) through nested objects.
fn claim<'a>(claims: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// Whether the token grants `scope`: OAuth's space-separated `scope` string (RFC 8693),
/// or `scp` as a list or a string (Azure AD, Okta).
fn has_scope(claims: &serde_json::Map<String, Value>, scope: &str) -> bool {
    let words = |v: &Value| match v {
        Value::String(s) => s.split_ascii_whitespace().any(|w| w == scope),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(scope)),
        _ => false,
    };
    claims.get("scope").is_some_and(words) || claims.get("scp").is_some_and(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn identity(claims: Value) -> Identity {
        Identity {
            issuer: "https://idp.example.com".into(),
            user: "alice".into(),
            email: None,
            display_name: None,
            gerrit_account: "alice".into(),
            claims: Arc::new(claims.as_object().unwrap().clone()),
            credential: Default::default(),
        }
    }

    fn member_of(names: &[&str]) -> Membership {
        Membership::of_names(names)
    }

    fn name(n: &str) -> GroupRef {
        GroupRef::Name(n.into())
    }

    fn rule() -> Rule {
        Rule {
            token: true,
            ..Rule::default()
        }
    }

    #[test]
    fn groups_any_of_names_the_group_that_matched_and_all_of_needs_each() {
        let any = Rule {
            groups_any_of: vec![name("team-b"), GroupRef::Uuid("uuid-team-a".into())],
            ..rule()
        };
        let who = identity(json!({}));
        let got = any.check_identity(&who, Some(&member_of(&["team-a"])));
        assert_eq!(
            got.unwrap().group,
            Some(GroupRef::Uuid("uuid-team-a".into()))
        );
        assert!(any
            .check_identity(&who, Some(&member_of(&["team-c"])))
            .is_err());
        let all = Rule {
            groups_all_of: vec![name("team-a"), name("reviewers")],
            ..rule()
        };
        assert!(all
            .check_identity(&who, Some(&member_of(&["reviewers", "team-a"])))
            .is_ok());
        assert_eq!(
            all.check_identity(&who, Some(&member_of(&["team-a"]))),
            Err(Unmet::Groups(vec![name("reviewers")]))
        );
        assert!(
            all.check_identity(&who, None).is_err(),
            "no groups, no allow"
        );
    }

    #[test]
    fn claim_conditions_equal_one_of_and_contain() {
        let who = identity(json!({
            "email_verified": true,
            "department": "eng",
            "roles": ["dev", "release"],
            "amr": "pwd mfa",
            "realm_access": {"roles": ["kube-admin"]},
            "https://example.com/tier": 2,
        }));
        let holds = |claim: &str, condition: ClaimCondition| {
            Rule {
                claims: vec![ClaimRequirement {
                    claim: claim.into(),
                    condition,
                }],
                ..rule()
            }
            .check_identity(&who, None)
            .is_ok()
        };
        use ClaimCondition::*;
        assert!(holds("email_verified", Equals(json!(true))));
        assert!(
            !holds("email_verified", Equals(json!("true"))),
            "types matter"
        );
        assert!(holds("department", OneOf(vec![json!("ops"), json!("eng")])));
        assert!(!holds("department", OneOf(vec![json!("ops")])));
        assert!(holds("roles", Contains(json!("release"))));
        assert!(!holds("roles", Contains(json!("rel"))));
        assert!(
            holds("amr", Contains(json!("mfa"))),
            "space-separated words"
        );
        assert!(!holds("amr", Contains(json!("mf"))));
        assert!(holds("realm_access.roles", Contains(json!("kube-admin"))));
        assert!(
            holds("https://example.com/tier", Equals(json!(2))),
            "dots in a name"
        );
        assert!(!holds("missing", Equals(json!(null))), "absent is not null");
        assert!(!holds(
            "realm_access.roles.x",
            Contains(json!("kube-admin"))
        ));
    }

    #[test]
    fn scopes_come_from_scope_or_scp_and_all_are_needed() {
        let needs = |scopes: &[&str], claims: Value| {
            Rule {
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..rule()
            }
            .check_identity(&identity(claims), None)
        };
        assert!(needs(&["gerrit:read"], json!({"scope": "openid gerrit:read"})).is_ok());
        assert!(needs(&["gerrit:read"], json!({"scp": ["gerrit:read"]})).is_ok());
        assert!(needs(&["gerrit:read"], json!({"scp": "gerrit:read gerrit:write"})).is_ok());
        assert_eq!(
            needs(
                &["gerrit:read", "gerrit:write"],
                json!({"scope": "gerrit:read"})
            ),
            Err(Unmet::Scope("gerrit:write".into()))
        );
        assert!(needs(&["gerrit:read"], json!({"scope": "gerrit:readonly"})).is_err());
    }

    #[test]
    fn principals_limit_which_workloads_may_use_a_rule() {
        let runner = Rule {
            principals: vec![PrincipalMatcher::parse("cluster.local/ns/ci/sa/runner").unwrap()],
            as_user: Some("ci-bot".into()),
            ..Rule::default()
        };
        assert!(runner.admits_principal("spiffe://cluster.local/ns/ci/sa/runner"));
        assert!(!runner.admits_principal("spiffe://cluster.local/ns/ci/sa/other"));
        assert!(!runner.admits_principal(""), "no mTLS identity");
        assert!(
            rule().admits_principal(""),
            "no principal condition: anyone"
        );
    }
}
