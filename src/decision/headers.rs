//! Upstream header changes on allow: set identity headers, remove the rest.

use crate::authn::{Identity, TokenSource};
use crate::gerrit::Membership;
use crate::policy::RouteRule;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::google::protobuf::BoolValue;

/// An identity value that cannot be sent as a header (control characters, CR/LF).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {field} value cannot be sent as an HTTP header")]
pub struct UnsafeHeaderValue {
    /// Which identity field was unsafe.
    pub field: &'static str,
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

impl HeaderChanges {
    /// The `set` list as Envoy header options that overwrite (`append: false`).
    ///
    /// `append` is deprecated in favour of `append_action`, but it is what Envoy's
    /// ext_authz reads for `OkHttpResponse.headers`; setting it explicitly leaves no room
    /// for a default that appends.
    #[allow(deprecated)]
    pub fn to_envoy(&self) -> Vec<HeaderValueOption> {
        self.set
            .iter()
            .map(|(key, value)| HeaderValueOption {
                header: Some(HeaderValue {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                }),
                // Explicitly false: an appended value would be comma-joined onto whatever
                // the client sent, letting it forge identity.
                append: Some(BoolValue { value: false }),
                ..Default::default()
            })
            .collect()
    }
}

/// Header changes for an allowed request on `route`.
///
/// Every identity header the route names is either set from the identity or removed, so
/// a client-sent value never reaches the upstream.
pub fn upstream_changes(
    route: &RouteRule,
    identity: Option<&Identity>,
    membership: Option<&Membership>,
) -> Result<HeaderChanges, UnsafeHeaderValue> {
    let mut changes = HeaderChanges::default();
    let mut put = |name: &Option<String>, value: Option<String>, field: &'static str| {
        let Some(name) = name else { return Ok(()) };
        match value {
            Some(v) if !is_safe(&v) => return Err(UnsafeHeaderValue { field }),
            Some(v) if !v.is_empty() => changes.set.push((name.clone(), v)),
            _ => changes.remove.push(name.clone()),
        }
        Ok(())
    };
    put(&route.inject.user, identity.map(|i| i.user.clone()), "user")?;
    put(
        &route.inject.email,
        identity.and_then(|i| i.email.clone()),
        "email",
    )?;
    let groups = membership.map(|m| {
        m.groups
            .iter()
            .map(|g| g.name.as_str())
            // A comma inside a name would split it into two groups upstream.
            .filter(|n| !n.contains(',') && is_safe(n))
            .collect::<Vec<_>>()
            .join(",")
    });
    put(&route.inject.groups, groups, "groups")?;
    changes.remove.extend(route.remove_headers.iter().cloned());
    changes
        .remove
        .extend(route.foreign_identity_headers.iter().cloned());
    // A token read from the URL must not travel on to the upstream (and its logs).
    changes
        .remove_query
        .extend(route.token_sources.iter().filter_map(|s| match s {
            TokenSource::Query(name) => Some(name.clone()),
            _ => None,
        }));
    Ok(changes)
}

/// No control characters (CR and LF above all), which would split or corrupt headers.
fn is_safe(value: &str) -> bool {
    !value.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gerrit::Group;
    use crate::policy::{IdentityHeaders, MethodSet, PathMatcher, Requirement};

    fn route() -> RouteRule {
        RouteRule {
            name: "r".into(),
            hosts: vec![],
            path: PathMatcher::Any,
            methods: MethodSet::default(),
            requirement: Requirement::Authenticated,
            token_sources: vec![
                TokenSource::Bearer,
                TokenSource::Query("access_token".into()),
            ],
            inject: IdentityHeaders {
                user: Some("x-forwarded-user".into()),
                email: Some("x-forwarded-email".into()),
                groups: Some("x-forwarded-groups".into()),
            },
            remove_headers: vec!["authorization".into()],
            foreign_identity_headers: vec![],
        }
    }

    fn alice(email: Option<&str>) -> Identity {
        Identity {
            issuer: "i".into(),
            user: "alice".into(),
            email: email.map(Into::into),
            gerrit_account: "alice".into(),
        }
    }

    #[test]
    fn identity_headers_are_set_and_missing_ones_removed() {
        let m = Membership {
            known_account: true,
            groups: vec![
                Group {
                    uuid: "u1".into(),
                    name: "team-a".into(),
                },
                Group {
                    uuid: "u2".into(),
                    name: "odd,name".into(),
                },
                Group {
                    uuid: "u3".into(),
                    name: "Registered Users".into(),
                },
            ],
        };
        let c = upstream_changes(&route(), Some(&alice(None)), Some(&m)).unwrap();
        assert_eq!(
            c.set,
            vec![
                ("x-forwarded-user".into(), "alice".into()),
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
        #[allow(deprecated)]
        let all_overwrite = c
            .to_envoy()
            .iter()
            .all(|o| o.append == Some(BoolValue { value: false }));
        assert!(all_overwrite);
    }

    #[test]
    fn anonymous_requests_get_every_identity_header_removed() {
        let c = upstream_changes(&route(), None, None).unwrap();
        assert!(c.set.is_empty());
        assert_eq!(c.remove.len(), 4);
    }

    #[test]
    fn a_claim_with_a_newline_is_refused_not_injected() {
        let mut who = alice(Some("a@example.com\r\nx-evil: 1"));
        assert_eq!(
            upstream_changes(&route(), Some(&who), None),
            Err(UnsafeHeaderValue { field: "email" })
        );
        who.email = None;
        who.user = "al\u{7}ice".into();
        assert!(upstream_changes(&route(), Some(&who), None).is_err());
    }
}
