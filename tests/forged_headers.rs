//! A header some upstream trusts is removed from every allowed request, on every route,
//! whether or not that route injects it: a client cannot forge it anywhere. The decision
//! engine is driven directly, without sockets.

mod support;

use mesh_authz::authorize::Verdict;
use mesh_authz::request::RequestView;
use std::collections::HashMap;
use support::{engine, tokens};

/// Gerrit trusts `X-Gerrit-Trusted` (mesh-authz signs in to it with that header); no
/// route injects it. Only the signed-in route injects a user.
const CONFIG: &str = r#"
issuers:
  - issuer: https://idp.test.invalid
    audiences: [mesh-authz-test]
    jwks: {file: jwks.json}
    user_claim: preferred_username
gerrit:
  url: http://127.0.0.1:9
  username: mesh-authz
  trusted_user_header: X-Gerrit-Trusted
routes:
  - name: landing
    match: {hosts: [gerrit.example.com], path: {exact: /}}
    allow: public
  - name: signed-in
    match: {hosts: [gerrit.example.com]}
    allow: authenticated
    inject: {user: x-forwarded-user}
  - name: builds
    match: {hosts: [builds.example.com]}
    allow: authenticated
"#;

#[tokio::test]
async fn headers_an_upstream_trusts_are_removed_on_every_route_even_where_nothing_is_injected() {
    let authorizer = engine::authorizer(CONFIG, &[("jwks.json", engine::rsa_a_jwks())])
        .unwrap_or_else(|e| panic!("{e}"));

    let token = tokens::bearer(&tokens::token_for("bob"));
    let forged = HashMap::from([
        ("authorization".to_string(), token),
        ("x-gerrit-trusted".to_string(), "admin".to_string()),
        ("x-forwarded-user".to_string(), "admin".to_string()),
    ]);
    for (host, path) in [
        ("gerrit.example.com", "/"),
        ("gerrit.example.com", "/a/projects/x"),
        ("builds.example.com", "/"),
    ] {
        let req = RequestView::http("GET", host, path, &forged);
        let decision = authorizer.decide(&req).await;
        let Verdict::Allow { headers, .. } = &decision.verdict else {
            panic!(
                "{host}{path}: expected an allow, got {:?}",
                decision.verdict
            );
        };
        for name in ["x-gerrit-trusted", "x-forwarded-user"] {
            let set = headers.set.iter().find(|(k, _)| k == name);
            assert!(
                headers.remove.iter().any(|h| h == name) || set.is_some_and(|(_, v)| v == "bob"),
                "{host}{path}: a client-sent {name} would reach the upstream: {headers:?}"
            );
        }
    }
}
