//! `dynamic_metadata` for Envoy's access log (namespace `envoy.filters.http.ext_authz`).

use crate::identity::{Identity, Membership};
use crate::policy::RouteRule;
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// `{route, user, issuer, groups}`, each present only when known.
pub fn identity(
    route: Option<&RouteRule>,
    identity: Option<&Identity>,
    membership: Option<&Membership>,
) -> Struct {
    let mut fields = std::collections::HashMap::with_capacity(4);
    if let Some(route) = route {
        fields.insert("route".to_string(), string(&route.name));
    }
    if let Some(identity) = identity {
        fields.insert("user".to_string(), string(&identity.user));
        fields.insert("issuer".to_string(), string(&identity.issuer));
    }
    if let Some(m) = membership {
        let values = m.groups.iter().map(|g| string(&g.name)).collect();
        fields.insert(
            "groups".to_string(),
            Value {
                kind: Some(Kind::ListValue(ListValue { values })),
            },
        );
    }
    Struct { fields }
}
