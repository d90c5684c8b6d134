//! What the in-process benches and the profiling harness share: the quickstart
//! authorizer and an Istio-like CheckRequest.

#![allow(dead_code)] // each user takes what it needs

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use mesh_authz::authorize::Authorizer;
use std::collections::HashMap;

/// The quickstart config, with the verified-token cache on (its default) or off.
pub fn quickstart(token_cache: bool) -> Authorizer {
    let mut config = mesh_authz::config::builtin().expect("built-in config compiles");
    if !token_cache {
        config.token_cache_entries = 0;
    }
    Authorizer::from_config(&config, reqwest::Client::new()).expect("authorizer builds")
}

/// Headers shaped like an Istio gateway's, with or without a bearer token.
pub fn headers(token: Option<&str>) -> HashMap<String, String> {
    let mut h: HashMap<String, String> = [
        (":authority", "gerrit.example.com"),
        (":method", "GET"),
        (":path", "/a/projects/team-a/branches"),
        (":scheme", "https"),
        ("user-agent", "git/2.47.3"),
        ("accept", "application/json"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "10.0.0.12"),
        ("x-request-id", "4b1a6c3e-1d7f-4a0e-9a51-2f7c0d0e9b21"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(t) = token {
        h.insert("authorization".into(), format!("Bearer {t}"));
    }
    h
}

/// A CheckRequest as an Istio ingress gateway sends it, about 1.3 KB with alice's token.
pub fn istio_check_request(token: &str) -> CheckRequest {
    let mut h = headers(Some(token));
    for (k, v) in [
        ("accept-encoding", "gzip, deflate, br"),
        ("x-envoy-attempt-count", "1"),
        ("x-envoy-internal", "true"),
        (
            "x-forwarded-client-cert",
            "By=spiffe://cluster.local/ns/gerrit/sa/gerrit;Hash=3f1a9c0b2e8d47f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2;Subject=\"\";URI=spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        ),
    ] {
        h.insert(k.into(), v.into());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal:
                    "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
                        .into(),
                ..Default::default()
            }),
            destination: Some(Peer {
                principal: "spiffe://cluster.local/ns/gerrit/sa/gerrit".into(),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "12398746193847619283".into(),
                    method: "GET".into(),
                    headers: h,
                    path: "/a/projects/team-a/branches".into(),
                    host: "gerrit.example.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/2".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
