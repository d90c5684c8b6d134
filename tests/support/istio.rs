//! CheckRequests shaped like the ones an Istio ingress gateway's Envoy sends: SPIFFE
//! principals on both peers, pseudo-headers, lower-case header names, the query inside
//! `path`. The one builder of the tests, the benches and the profiling example (they
//! include this file by path), so what is measured is what is tested.

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use std::collections::HashMap;

/// The gateway's workload identity, as the source peer of every request.
pub const GATEWAY_PRINCIPAL: &str =
    "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
/// Gerrit's workload identity, as the destination peer.
pub const GERRIT_PRINCIPAL: &str = "spiffe://cluster.local/ns/gerrit/sa/gerrit";
/// The `x-request-id` of every request (audit lines and denials echo it).
pub const REQUEST_ID: &str = "4b1a6c3e-1d7f-4a0e-9a51-2f7c0d0e9b21";

/// How much of a real gateway request to include.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// What the decisions read and no more: the tests' requests.
    Minimal,
    /// A gateway request at its real size (about 1.4 KB with a token): peer addresses and
    /// the headers the gateway adds (`accept*`, `x-forwarded-for`, `x-envoy-*`), as the
    /// benches and `benches/ghz/` send it.
    Gateway,
}

/// `method host path` with `headers` (names lower-cased), in `shape`.
pub fn check_request(
    shape: Shape,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> CheckRequest {
    let mut map: HashMap<String, String> = [
        (":authority", host),
        (":method", method),
        (":path", path),
        (":scheme", "https"),
        ("user-agent", "git/2.47.3"),
        ("x-request-id", REQUEST_ID),
        ("x-forwarded-proto", "https"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (source, destination) = match shape {
        Shape::Minimal => (
            Peer {
                address: Some(Address::default()),
                principal: GATEWAY_PRINCIPAL.into(),
                ..Default::default()
            },
            Peer {
                principal: GERRIT_PRINCIPAL.into(),
                ..Default::default()
            },
        ),
        Shape::Gateway => {
            for (k, v) in [
                ("accept", "application/json"),
                ("accept-encoding", "gzip, deflate, br"),
                ("x-forwarded-for", "10.0.0.12"),
                ("x-envoy-external-address", "10.0.0.12"),
                ("x-envoy-internal", "true"),
                ("x-envoy-attempt-count", "1"),
            ] {
                map.insert(k.into(), v.into());
            }
            (
                peer("10.0.0.12", 51234, GATEWAY_PRINCIPAL),
                peer("10.0.1.7", 8080, GERRIT_PRINCIPAL),
            )
        }
    };
    for (k, v) in headers {
        map.insert(k.to_ascii_lowercase(), v.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source),
            destination: Some(destination),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "1234567890".into(),
                    method: method.into(),
                    headers: map,
                    path: path.into(),
                    host: host.into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn peer(ip: &str, port: u32, principal: &str) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(AddressKind::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        principal: principal.into(),
        ..Default::default()
    }
}
