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

/// The session key of the browser sign-in configs below (`session-key` beside the config).
pub const SESSION_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
/// The quickstart's issuer.
pub const ISSUER: &str = "https://idp.demo.mesh-authz.invalid";

/// A quickstart config text with browser sign-in added: its issuer as a public OIDC
/// client, the session key file `session-key` beside the config, and `browser_sign_in` on
/// the routes that take tokens. Bench-only: the quickstart has no IdP to sign in at, but
/// reading a session cookie needs none.
pub fn with_browser_sign_in(quickstart: &str) -> String {
    let issuer_line = "    email_claim: email\n";
    assert!(
        quickstart.contains(issuer_line),
        "the quickstart's issuer changed; update the bench"
    );
    let mut config = quickstart.replacen(
        issuer_line,
        &format!("{issuer_line}    browser_client: {{client_id: gerrit-web, client_auth: none}}\n"),
        1,
    );
    for route in ["  - name: gerrit-team-a\n", "  - name: gerrit-signed-in\n"] {
        assert!(
            config.contains(route),
            "the quickstart's routes changed; update the bench"
        );
        config = config.replacen(route, &format!("{route}    browser_sign_in: true\n"), 1);
    }
    config.push_str("\nbrowser_sessions:\n  key_files: [session-key]\n");
    config
}

/// The built-in quickstart (audit as shipped) with browser sign-in, compiled from files
/// written into `dir`.
pub fn quickstart_with_browser_sign_in(dir: &std::path::Path) -> Authorizer {
    let shipped = include_str!("../../examples/quickstart/config.yaml");
    let jwks = include_str!("../../examples/quickstart/jwks.json");
    std::fs::write(dir.join("jwks.json"), jwks).expect("writing jwks.json");
    std::fs::write(dir.join("session-key"), SESSION_KEY).expect("writing session-key");
    let path = dir.join("config.yaml");
    let config = mesh_authz::config::from_file_text(&path, &with_browser_sign_in(shipped))
        .expect("the quickstart with browser sign-in compiles");
    Authorizer::from_config(&config, reqwest::Client::new()).expect("authorizer builds")
}

/// A sealed session cookie value for `user` of the quickstart's issuer, as the callback
/// leaves it: the claims rules read, an hour to go, a refresh token.
pub fn sealed_session(user: &str) -> String {
    use mesh_authz::signin::seal::KeyRing;
    use mesh_authz::signin::session::{Session, SESSION_PURPOSE};
    let ring = KeyRing::from_base64(&[SESSION_KEY]).expect("the bench key");
    let now = mesh_authz::authn::unix_now();
    let claims =
        serde_json::json!({"preferred_username": user, "email": format!("{user}@example.com")});
    let session = Session {
        iss: ISSUER.into(),
        claims: claims.as_object().expect("an object").clone(),
        exp: now + 3600,
        started: now,
        seen: now,
        refresh_token: Some("r".repeat(43)),
        id_token: None,
    };
    let json = serde_json::to_vec(&session).expect("serialises");
    ring.seal(SESSION_PURPOSE, &json).expect("sealed")
}
