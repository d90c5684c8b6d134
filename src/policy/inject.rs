//! Upstream header changes on allow: set identity headers, remove the rest. Pure: the
//! Envoy edge renders them.

use super::{GroupsHeader, Overflow, RouteRule};
use crate::authn::TokenSource;
use crate::identity::{Identity, Membership};
use crate::request::Pairs;

/// Why the identity cannot be passed upstream: the request is denied instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// A value has control characters (CR, LF, ...) that would split or corrupt headers.
    #[error("the {field} value cannot be sent as an HTTP header")]
    Unsafe {
        /// Which identity field was unsafe.
        field: &'static str,
    },
    /// All injected values together exceed [`MAX_INJECTED_BYTES`].
    #[error("the identity headers would take {0} bytes, more than {MAX_INJECTED_BYTES}")]
    TooLarge(usize),
    /// A kube route allowed a caller with no user name to impersonate.
    #[error("there is no user to impersonate")]
    NoUser,
    /// The groups do not fit into the groups header and the route says to deny.
    #[error(
        "the user's groups take {size} bytes, more than the {max} the groups header may carry"
    )]
    GroupsTooLarge {
        /// Bytes the groups would take.
        size: usize,
        /// The route's `max_bytes`.
        max: usize,
    },
}

/// Headers to overwrite and to remove upstream.
///
/// No name is in both lists: Envoy applies removals after sets, so a name in both would
/// end up removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderChanges {
    /// `(name, value)` pairs to set, replacing any value the client sent.
    pub set: Vec<(String, String)>,
    /// Header names to remove.
    pub remove: Vec<String>,
    /// Query parameters to remove (tokens taken from the query string).
    pub remove_query: Vec<String>,
}

/// Bound on everything injected into one request: common upstreams refuse a header block
/// much larger (431), and a request they refuse is worse than a clear denial here.
pub const MAX_INJECTED_BYTES: usize = 32 * 1024;

/// The `Impersonate-User` header: Kubernetes' impersonation of the allowed user.
pub const IMPERSONATE_USER: &str = "impersonate-user";
/// The `Impersonate-Group` header.
pub const IMPERSONATE_GROUP: &str = "impersonate-group";

/// Impersonation for a request a kube route allowed: the identity's user, and this group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Impersonation<'a> {
    /// The one group to impersonate besides the user, if any.
    pub group: Option<&'a str>,
}

/// Header changes for an allowed request on `route`.
///
/// Every identity header the route names is either set from the identity or removed, so
/// a client-sent value never reaches the upstream. On every route, every `Impersonate-*`
/// header the client sent is removed (`client_headers` are the request's): through the
/// gateway's own identity, which may impersonate, a client could otherwise act as anyone.
pub fn upstream_changes(
    route: &RouteRule,
    identity: Option<&Identity>,
    membership: Option<&Membership>,
    impersonation: Option<Impersonation<'_>>,
    client_headers: Pairs<'_>,
) -> Result<HeaderChanges, InjectError> {
    let mut changes = HeaderChanges::default();
    let mut put = |name: Option<&String>, value: Option<&str>, field: &'static str| {
        let Some(name) = name else { return Ok(()) };
        match value {
            Some(v) if !is_safe(v) => return Err(InjectError::Unsafe { field }),
            Some(v) if !v.is_empty() => changes.set.push((name.clone(), v.to_string())),
            _ => changes.remove.push(name.clone()),
        }
        Ok(())
    };
    put(
        route.inject.user.as_ref(),
        identity.map(|i| i.user.as_str()),
        "user",
    )?;
    put(
        route.inject.email.as_ref(),
        identity.and_then(|i| i.email.as_deref()),
        "email",
    )?;
    put(
        route.inject.display_name.as_ref(),
        identity.and_then(|i| i.display_name.as_deref()),
        "display name",
    )?;
    if let Some(header) = &route.inject.groups {
        let value = membership.map(|m| groups_value(header, m)).transpose()?;
        put(Some(&header.name), value.as_deref(), "groups")?;
    }
    if let Some(imp) = impersonation {
        let user = identity
            .map(|i| i.user.as_str())
            .ok_or(InjectError::NoUser)?;
        if !is_safe(user) {
            return Err(InjectError::Unsafe { field: "user" });
        }
        changes
            .set
            .push((IMPERSONATE_USER.into(), user.to_string()));
        match imp.group {
            // One value only: the apiserver reads each header line as one group.
            Some(g) if !is_safe(g) || g.contains(',') => {
                return Err(InjectError::Unsafe { field: "group" })
            }
            Some(g) => changes.set.push((IMPERSONATE_GROUP.into(), g.to_string())),
            None => changes.remove.push(IMPERSONATE_GROUP.into()),
        }
    }
    changes.remove.extend(route.remove_headers.iter().cloned());
    changes
        .remove
        .extend(route.foreign_identity_headers.iter().cloned());
    let injected: usize = changes.set.iter().map(|(k, v)| k.len() + v.len()).sum();
    if injected > MAX_INJECTED_BYTES {
        return Err(InjectError::TooLarge(injected));
    }
    let mut forged: Vec<&str> = client_headers
        .names()
        .filter(|k| k.starts_with("impersonate-"))
        .filter(|k| {
            !changes.set.iter().any(|(s, _)| s == k) && !changes.remove.iter().any(|r| r == k)
        })
        .collect();
    forged.sort_unstable();
    forged.dedup();
    changes.remove.extend(forged.into_iter().map(String::from));
    // Basic credentials must not reach an upstream that checks them itself (Gerrit's
    // own HTTP passwords): the user name in them was never verified.
    if route.token_sources.contains(&TokenSource::Basic)
        && !changes.remove.iter().any(|h| h == "authorization")
    {
        changes.remove.push("authorization".into());
    }
    // A token read from the URL must not travel on to the upstream (and its logs).
    changes
        .remove_query
        .extend(route.token_sources.iter().filter_map(|s| match s {
            TokenSource::Query(name) => Some(name.clone()),
            _ => None,
        }));
    Ok(changes)
}

/// A dry-run route's changes: of what `changes` removes, only the headers an upstream
/// trusts from mesh-authz alone (this route's identity headers, those other routes
/// inject or Gerrit trusts, `Impersonate-*`) are still removed. The caller's own headers,
/// `Authorization` among them, reach the upstream as they would without mesh-authz; the
/// route's `remove_headers` wait until it enforces. Query tokens are still removed.
pub fn as_dry_run(route: &RouteRule, changes: &mut HeaderChanges) {
    changes.remove.retain(|h| {
        route.inject.names().any(|n| n.eq_ignore_ascii_case(h))
            || route
                .foreign_identity_headers
                .iter()
                .any(|f| f.eq_ignore_ascii_case(h))
            || h.to_ascii_lowercase().starts_with("impersonate-")
    });
}

/// The groups header value: the user's group names the route passes on, comma-separated,
/// within the route's size bound.
fn groups_value(header: &GroupsHeader, m: &Membership) -> Result<String, InjectError> {
    let wanted: Vec<&str> = m
        .groups
        .iter()
        .filter(|g| header.only.is_empty() || header.only.iter().any(|o| o.names(g)))
        .map(|g| g.name.as_str())
        // A comma inside a name would split it into two groups upstream.
        .filter(|n| !n.contains(',') && is_safe(n))
        .collect();
    let size = wanted.iter().map(|n| n.len()).sum::<usize>() + wanted.len().saturating_sub(1);
    if size <= header.max_bytes {
        return Ok(wanted.join(","));
    }
    match header.on_overflow {
        Overflow::Deny => Err(InjectError::GroupsTooLarge {
            size,
            max: header.max_bytes,
        }),
        Overflow::Truncate => {
            let mut value = String::new();
            for name in wanted {
                let grown = value.len() + usize::from(!value.is_empty()) + name.len();
                if grown <= header.max_bytes {
                    if !value.is_empty() {
                        value.push(',');
                    }
                    value.push_str(name);
                }
            }
            Ok(value)
        }
    }
}

/// A value the upstream reads back exactly: no control characters (CR and LF above all,
/// which would split or corrupt headers), and no whitespace at either end, which an
/// RFC 9110 parser (Jetty under Gerrit, Go under the apiserver) trims: `alice ` would
/// reach Gerrit as alice. Unicode spaces are refused there too, for parsers that trim
/// more than spaces and tabs.
fn is_safe(value: &str) -> bool {
    !value.chars().any(|c| c.is_control())
        && !value.starts_with(char::is_whitespace)
        && !value.ends_with(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{GroupRef, IdentityHeaders, Requirement};
    use std::collections::HashMap;

    fn route() -> RouteRule {
        RouteRule {
            requirement: Requirement::authenticated(),
            token_sources: vec![
                TokenSource::Bearer,
                TokenSource::Query("access_token".into()),
            ],
            inject: IdentityHeaders {
                user: Some("x-forwarded-user".into()),
                email: Some("x-forwarded-email".into()),
                display_name: Some("x-forwarded-name".into()),
                groups: Some(GroupsHeader::named("x-forwarded-groups")),
            },
            remove_headers: vec!["authorization".into()],
            ..RouteRule::test_base("r")
        }
    }

    fn alice(email: Option<&str>) -> Identity {
        Identity {
            issuer: "i".into(),
            user: "alice".into(),
            email: email.map(Into::into),
            gerrit_account: "alice".into(),
            display_name: Some("Alice Liddell".into()),
            claims: std::sync::Arc::default(),
            credential: Default::default(),
        }
    }

    fn member_of(names: &[&str]) -> Membership {
        Membership::of_names(names)
    }

    /// The changes for a caller whose user, email and display name are `value`, in groups
    /// `groups`.
    fn changes_for(value: &str, groups: &[&str]) -> Result<HeaderChanges, InjectError> {
        let who = Identity {
            user: value.into(),
            email: Some(value.into()),
            display_name: Some(value.into()),
            ..alice(None)
        };
        upstream_changes(
            &route(),
            Some(&who),
            Some(&member_of(groups)),
            None,
            Pairs::EMPTY,
        )
    }

    #[test]
    fn values_with_spaces_an_http_parser_would_trim_are_denied_not_injected() {
        // Jetty (under Gerrit) trims spaces around header values: `alice ` is alice.
        for user in [
            "alice ",
            " alice",
            "alice\t",
            "\talice",
            "alice\u{a0}",
            "\u{3000}alice",
        ] {
            assert!(
                matches!(changes_for(user, &[]), Err(InjectError::Unsafe { .. })),
                "{user:?}"
            );
        }
        // Inside a value, spaces are part of it.
        assert!(changes_for("Alice Liddell", &[]).is_ok());
        // A group that would be read back as another is left out of the groups header.
        let c = changes_for("alice", &[" team-a", "team-b ", "team-c"]).unwrap();
        let groups = c
            .set
            .iter()
            .find(|(k, _)| k == "x-forwarded-groups")
            .unwrap();
        assert_eq!(groups.1, "team-c");
    }

    /// Reads `value` back the way an upstream HTTP/1.1 server does (httparse, hyper's
    /// parser): sent as `x-forwarded-user: VALUE` in a request head.
    fn read_back(name: &str, value: &str) -> Option<String> {
        let head = format!("GET / HTTP/1.1\r\nhost: h\r\n{name}: {value}\r\n\r\n");
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head.as_bytes()) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return None,
        }
        let mut found = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name));
        let first = found.next()?;
        if found.next().is_some() {
            return None;
        }
        // RFC 9110 §5.5: leading and trailing whitespace is not part of the value.
        let value = std::str::from_utf8(first.value).ok()?;
        Some(value.trim_matches([' ', '\t']).to_string())
    }

    proptest::proptest! {
        /// Whatever a claim holds, the value the upstream reads back is the identity
        /// policy decided on, or the request is denied.
        #[test]
        fn injected_values_read_back_as_the_identity_or_are_denied(
            value in "(\\PC|[ \t\r\n\u{0}\u{7f}\u{85}\u{a0},:])*",
            group in "(\\PC|[ \t\r\n,])*",
        ) {
            if let Ok(c) = changes_for(&value, &[&group, "plain"]) {
                for (name, sent) in &c.set {
                    let wanted = if name == "x-forwarded-groups" { sent.as_str() } else { value.as_str() };
                    let read = read_back(name, sent);
                    proptest::prop_assert_eq!(read.as_deref(), Some(wanted), "{}: {:?}", name, sent);
                }
                if let Some((_, groups)) = c.set.iter().find(|(k, _)| k == "x-forwarded-groups") {
                    // Each group the upstream splits off is one of the user's, as named.
                    for g in groups.split(',') {
                        proptest::prop_assert!(g == "plain" || g == group, "{:?} from {:?}", g, groups);
                    }
                }
            }
        }
    }

    #[test]
    fn identity_headers_are_set_and_missing_ones_removed() {
        let m = member_of(&["team-a", "odd,name", "Registered Users"]);
        let c =
            upstream_changes(&route(), Some(&alice(None)), Some(&m), None, Pairs::EMPTY).unwrap();
        assert_eq!(
            c.set,
            vec![
                ("x-forwarded-user".into(), "alice".into()),
                ("x-forwarded-name".into(), "Alice Liddell".into()),
                (
                    "x-forwarded-groups".into(),
                    "team-a,Registered Users".into()
                ),
            ]
        );
        assert_eq!(
            c.remove,
            vec!["x-forwarded-email".to_string(), "authorization".into()]
        );
        assert_eq!(c.remove_query, vec!["access_token".to_string()]);
    }

    #[test]
    fn a_route_taking_basic_always_removes_authorization_upstream() {
        // Basic credentials name a user nobody verified; Gerrit would check them itself.
        let basic = RouteRule {
            token_sources: vec![TokenSource::Basic],
            remove_headers: Vec::new(),
            ..route()
        };
        for who in [Some(alice(None)), None] {
            let c = upstream_changes(&basic, who.as_ref(), None, None, Pairs::EMPTY).unwrap();
            assert_eq!(
                c.remove.iter().filter(|h| *h == "authorization").count(),
                1,
                "{:?}",
                c.remove
            );
        }
        // Listed in remove_headers too: still once.
        let both = RouteRule {
            remove_headers: vec!["authorization".into()],
            ..basic
        };
        let c = upstream_changes(&both, None, None, None, Pairs::EMPTY).unwrap();
        assert_eq!(c.remove.iter().filter(|h| *h == "authorization").count(), 1);
    }

    #[test]
    fn anonymous_requests_get_every_identity_header_removed() {
        let c = upstream_changes(&route(), None, None, None, Pairs::EMPTY).unwrap();
        assert!(c.set.is_empty());
        assert_eq!(c.remove.len(), 5);
    }

    #[test]
    fn a_claim_with_a_newline_is_refused_not_injected() {
        let mut who = alice(Some("a@example.com\r\nx-evil: 1"));
        assert_eq!(
            upstream_changes(&route(), Some(&who), None, None, Pairs::EMPTY),
            Err(InjectError::Unsafe { field: "email" })
        );
        who.email = None;
        who.user = "al\u{7}ice".into();
        assert!(upstream_changes(&route(), Some(&who), None, None, Pairs::EMPTY).is_err());
        who.user = "alice".into();
        who.display_name = Some("Alice\nLiddell".into());
        assert_eq!(
            upstream_changes(&route(), Some(&who), None, None, Pairs::EMPTY),
            Err(InjectError::Unsafe {
                field: "display name"
            })
        );
    }

    /// A user in 300 groups of 22 characters each: 6.9 KB of names and commas.
    fn many_groups() -> Membership {
        let names: Vec<String> = (0..300)
            .map(|i| format!("project-{i:03}-committers"))
            .collect();
        member_of(&names.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn groups_header(c: &HeaderChanges) -> Option<&str> {
        c.set
            .iter()
            .find(|(k, _)| k == "x-forwarded-groups")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_user_in_hundreds_of_groups_is_denied_by_default_not_passed_on() {
        let m = many_groups();
        assert_eq!(
            upstream_changes(&route(), Some(&alice(None)), Some(&m), None, Pairs::EMPTY),
            Err(InjectError::GroupsTooLarge {
                size: 300 * 23 - 1,
                max: 4096
            })
        );
    }

    #[test]
    fn only_the_groups_a_route_names_are_passed_on() {
        let mut r = route();
        let header = r.inject.groups.as_mut().unwrap();
        header.only = vec![
            GroupRef::Name("project-007-committers".into()),
            GroupRef::Uuid("uuid-project-299-committers".into()),
        ];
        let c = upstream_changes(
            &r,
            Some(&alice(None)),
            Some(&many_groups()),
            None,
            Pairs::EMPTY,
        )
        .unwrap();
        assert_eq!(
            groups_header(&c),
            Some("project-007-committers,project-299-committers")
        );
    }

    fn forged() -> HashMap<String, String> {
        [
            ("impersonate-user", "admin"),
            ("impersonate-group", "system:masters"),
            ("impersonate-uid", "0"),
            ("impersonate-extra-scopes", "all"),
            ("x-unrelated", "kept"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn impersonation_overwrites_user_and_group_and_strips_the_rest() {
        let imp = Impersonation {
            group: Some("team-a"),
        };
        let c = upstream_changes(
            &route(),
            Some(&alice(None)),
            None,
            Some(imp),
            (&forged()).into(),
        )
        .unwrap();
        let set: Vec<(&str, &str)> = c
            .set
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(set.contains(&("impersonate-user", "alice")), "{set:?}");
        assert!(set.contains(&("impersonate-group", "team-a")), "{set:?}");
        assert!(c.remove.contains(&"impersonate-uid".to_string()));
        assert!(c.remove.contains(&"impersonate-extra-scopes".to_string()));
        assert!(
            !c.remove
                .iter()
                .any(|r| r == "impersonate-user" || r == "impersonate-group"),
            "never both set and removed: Envoy removes last"
        );
        assert!(!c.remove.contains(&"x-unrelated".to_string()));
        // No group to impersonate: the client's is removed, not kept.
        let none = upstream_changes(
            &route(),
            Some(&alice(None)),
            None,
            Some(Impersonation { group: None }),
            (&forged()).into(),
        )
        .unwrap();
        assert!(none.remove.contains(&"impersonate-group".to_string()));
        assert!(!none.set.iter().any(|(k, _)| k == "impersonate-group"));
    }

    #[test]
    fn client_impersonation_headers_are_removed_on_every_route() {
        let c =
            upstream_changes(&route(), Some(&alice(None)), None, None, (&forged()).into()).unwrap();
        for h in [
            "impersonate-user",
            "impersonate-group",
            "impersonate-uid",
            "impersonate-extra-scopes",
        ] {
            assert!(c.remove.contains(&h.to_string()), "{h}: {:?}", c.remove);
        }
        let anonymous = upstream_changes(&route(), None, None, None, (&forged()).into()).unwrap();
        assert!(anonymous.remove.contains(&"impersonate-user".to_string()));
    }

    #[test]
    fn an_impersonated_group_with_a_comma_is_refused() {
        let imp = Impersonation {
            group: Some("a,system:masters"),
        };
        assert_eq!(
            upstream_changes(&route(), Some(&alice(None)), None, Some(imp), Pairs::EMPTY),
            Err(InjectError::Unsafe { field: "group" })
        );
        assert_eq!(
            upstream_changes(
                &route(),
                None,
                None,
                Some(Impersonation { group: None }),
                Pairs::EMPTY
            ),
            Err(InjectError::NoUser)
        );
    }

    #[test]
    fn identity_headers_past_the_total_bound_are_refused() {
        let mut who = alice(None);
        who.display_name = Some("x".repeat(MAX_INJECTED_BYTES));
        assert!(matches!(
            upstream_changes(&route(), Some(&who), None, None, Pairs::EMPTY),
            Err(InjectError::TooLarge(n)) if n > MAX_INJECTED_BYTES
        ));
    }

    #[test]
    fn truncation_keeps_whole_names_within_the_bound() {
        let mut r = route();
        let header = r.inject.groups.as_mut().unwrap();
        header.max_bytes = 100;
        header.on_overflow = Overflow::Truncate;
        let c = upstream_changes(
            &r,
            Some(&alice(None)),
            Some(&many_groups()),
            None,
            Pairs::EMPTY,
        )
        .unwrap();
        let value = groups_header(&c).unwrap();
        assert!(value.len() <= 100, "{}", value.len());
        assert_eq!(value.split(',').count(), 4, "{value}");
        assert!(value.split(',').all(|g| g.ends_with("-committers")));
    }
}
