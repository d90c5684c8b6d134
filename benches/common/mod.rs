//! What the benches and the profiling harness share: the quickstart authorizer and the
//! Istio-like CheckRequest they send (built by `tests/support/istio.rs`, the tests' own
//! builder, in its gateway shape).

#![allow(dead_code)] // each user takes what it needs

#[path = "../../tests/support/istio.rs"]
pub mod istio;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use mesh_authz::authorize::Authorizer;
use std::collections::HashMap;

/// Host of every request: Gerrit behind the gateway.
pub const HOST: &str = "gerrit.example.com";
/// Path of every request: the team-a route (group `team-a` required), with a query as
/// Gerrit's UI sends it.
pub const PATH: &str = "/a/projects/team-a/branches?n=25";

/// The quickstart config, with the verified-token cache on (its default) or off.
pub fn quickstart(token_cache: bool) -> Authorizer {
    let mut config = mesh_authz::config::builtin().expect("built-in config compiles");
    if !token_cache {
        config.token_cache_entries = 0;
    }
    Authorizer::from_config(&config, reqwest::Client::new()).expect("authorizer builds")
}

/// `GET HOST PATH` as an Istio ingress gateway sends it (1.35–1.45 KB with an RS256
/// token), with `authorization: Bearer <token>` when there is a token.
pub fn istio_check_request(token: Option<&str>) -> CheckRequest {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    istio::check_request(istio::Shape::Gateway, "GET", HOST, PATH, &headers)
}

/// The headers of [`istio_check_request`].
pub fn headers(token: Option<&str>) -> HashMap<String, String> {
    istio_check_request(token)
        .attributes
        .and_then(|a| a.request)
        .and_then(|r| r.http)
        .map(|h| h.headers)
        .unwrap_or_default()
}
