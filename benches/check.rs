//! In-process costs of the Check path with the quickstart config: route matching,
//! whole decisions (allowed with alice's RS256 token, verified every time or served from
//! the verified-token cache, groups from the warm static table; denied without a token),
//! and a full Check as the gRPC service runs it: a 1.45 KB Istio-like request (the one `benches/ghz/` sends) read,
//! decided, the response rendered and encoded, metrics recorded.
//!
//! `cargo bench --bench check` (about half a minute). Each decision is checked once
//! before it is measured, so a bench cannot quietly time the wrong path. Load tests
//! against a running server: `benches/ghz/`.

mod common;

use common::{headers, istio_check_request, quickstart};
use criterion::{criterion_group, criterion_main, Criterion};
use mesh_authz::authorize::{Denial, Verdict};
use mesh_authz::ext_authz::{CheckCall, CheckService};
use mesh_authz::request::RequestView;
use mesh_authz::telemetry::Metrics;
use prost::Message;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn view<'a>(host: &'a str, path: &'a str, headers: &'a HashMap<String, String>) -> RequestView<'a> {
    RequestView::http("GET", host, path, headers)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = mesh_authz::config::builtin().unwrap();
    let cached = quickstart(true);
    let uncached = quickstart(false);
    let token = include_str!("../examples/quickstart/alice.jwt").trim();
    let anonymous = headers(None);
    let signed = headers(Some(token));

    // Route matching: the second rule (team-a), and a miss that scans the whole table.
    let team_a = view(
        "gerrit.example.com",
        "/a/projects/team-a/branches",
        &anonymous,
    );
    let miss = view("other.example.com", "/", &anonymous);
    assert_eq!(
        config.routes.find(&team_a).map(|r| &*r.name),
        Some("gerrit-team-a")
    );
    assert!(config.routes.find(&miss).is_none());
    c.bench_function("route_match_team_a", |b| {
        b.iter(|| black_box(config.routes.find(black_box(&team_a)).is_some()))
    });
    c.bench_function("route_match_no_route", |b| {
        b.iter(|| black_box(config.routes.find(black_box(&miss)).is_some()))
    });

    // Allowed: RS256 verification plus the group check against the warm static table.
    let allowed = view("gerrit.example.com", "/a/projects/team-a/branches", &signed);
    for authorizer in [&cached, &uncached] {
        let verdict = rt.block_on(authorizer.decide(&allowed)).verdict;
        assert!(matches!(verdict, Verdict::Allow { .. }), "{verdict:?}");
    }
    c.bench_function("decide_allow_rs256_verify_every_time", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(uncached.decide(black_box(&allowed)).await) })
    });
    c.bench_function("decide_allow_rs256_verified_token_cache", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cached.decide(black_box(&allowed)).await) })
    });

    // Denied: no token on a route that needs one (401).
    let denied = view(
        "gerrit.example.com",
        "/a/projects/team-a/branches",
        &anonymous,
    );
    let verdict = rt.block_on(cached.decide(&denied)).verdict;
    assert!(
        matches!(verdict, Verdict::Deny(Denial::Unauthenticated(_))),
        "{verdict:?}"
    );
    c.bench_function("decide_deny_no_token", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cached.decide(black_box(&denied)).await) })
    });

    // The whole Check as the gRPC service runs it, from request bytes to response bytes.
    let bytes = bytes::Bytes::from(istio_check_request(Some(token)).encode_to_vec());
    let service = CheckService::new(
        Arc::new(arc_swap::ArcSwap::from_pointee(quickstart(true))),
        Arc::new(Metrics::default()),
        None,
    );
    let full_check = || async {
        let request = CheckCall(black_box(bytes.clone()));
        let response = service
            .check(tonic::Request::new(request))
            .await
            .expect("answered")
            .into_inner();
        black_box(response.encode_to_vec())
    };
    let first = rt.block_on(full_check());
    let response = envoy_types::pb::envoy::service::auth::v3::CheckResponse::decode(&first[..])
        .expect("a CheckResponse");
    assert_eq!(
        response.status.map(|s| s.code),
        Some(0),
        "the warm path allows"
    );
    println!(
        "full_check: request {} bytes, response {} bytes",
        bytes.len(),
        first.len()
    );
    c.bench_function("full_check_allow_warm", |b| {
        b.to_async(&rt).iter(full_check)
    });

    // A browser session against a bearer token, on one route with browser sign-in.
    let (_dir, browser) = browser_sign_in();
    let session = session_cookie(&browser, token);
    let by_session: HashMap<String, String> = [(
        "cookie".to_string(),
        format!("__Host-mesh-authz={session}; theme=dark"),
    )]
    .into();
    let by_session = view("gerrit.example.com", "/c/42", &by_session);
    let by_token = view("gerrit.example.com", "/c/42", &signed);
    for (how, req) in [("session", &by_session), ("token", &by_token)] {
        let decision = rt.block_on(browser.decide(req));
        match &decision.verdict {
            Verdict::Allow { identity, .. } => {
                assert_eq!(
                    identity.as_ref().map(|i| i.user.as_str()),
                    Some("alice"),
                    "{how}"
                )
            }
            other => panic!("{how}: {other:?}"),
        }
    }
    println!("session cookie: {} bytes", session.len());
    c.bench_function("decide_allow_browser_session", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(browser.decide(black_box(&by_session)).await) })
    });
    c.bench_function("decide_allow_bearer_same_route", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(browser.decide(black_box(&by_token)).await) })
    });

    // The same two as whole Checks, from request bytes to response bytes.
    let service = CheckService::new(
        Arc::new(arc_swap::ArcSwap::from_pointee(browser)),
        Arc::new(Metrics::default()),
        None,
    );
    let cookie_header = format!("__Host-mesh-authz={session}");
    let bearer_header = format!("Bearer {token}");
    for (name, header) in [
        (
            "full_check_browser_session",
            ("cookie", cookie_header.as_str()),
        ),
        (
            "full_check_bearer_same_route",
            ("authorization", bearer_header.as_str()),
        ),
    ] {
        let request = common::istio::check_request(
            common::istio::Shape::Gateway,
            "GET",
            "gerrit.example.com",
            "/c/42",
            &[header],
        );
        let bytes = bytes::Bytes::from(request.encode_to_vec());
        let check = || async {
            let response = service
                .check(tonic::Request::new(CheckCall(black_box(bytes.clone()))))
                .await
                .expect("answered")
                .into_inner();
            black_box(response.encode_to_vec())
        };
        let first = rt.block_on(check());
        let response =
            envoy_types::pb::envoy::service::auth::v3::CheckResponse::decode(&first[..]).unwrap();
        assert_eq!(response.status.map(|s| s.code), Some(0), "{name} allows");
        c.bench_function(name, |b| b.to_async(&rt).iter(check));
    }
}

/// The quickstart's issuer with browser sign-in (a public client; no IdP is asked, as
/// sessions are read from their cookie), on one route for gerrit.example.com.
fn browser_sign_in() -> (tempfile::TempDir, mesh_authz::authorize::Authorizer) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = include_str!("../examples/quickstart/jwks.json");
    std::fs::write(dir.path().join("jwks.json"), jwks).unwrap();
    std::fs::write(
        dir.path().join("key"),
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
    )
    .unwrap();
    let yaml = r#"
issuers:
  - issuer: https://idp.demo.mesh-authz.invalid
    audiences: [mesh-authz-demo]
    jwks: {file: jwks.json}
    user_claim: preferred_username
    browser_client: {client_id: gerrit-web, client_auth: none}
browser_sessions: {key_files: [key]}
static_groups: {alice: [team-a]}
routes:
  - name: gerrit
    match: {hosts: [gerrit.example.com]}
    browser_sign_in: true
    allow: authenticated
    inject: {user: x-forwarded-user}
"#;
    let path = dir.path().join("config.yaml");
    let config = mesh_authz::config::from_file_text(&path, yaml).unwrap();
    let authorizer =
        mesh_authz::authorize::Authorizer::from_config(&config, reqwest::Client::new()).unwrap();
    (dir, authorizer)
}

/// A sealed session for alice as the callback would leave it: her claims, an hour to go,
/// a refresh token (her ID token, which the demo token stands in for, goes into the
/// sign-out cookie, not this one).
fn session_cookie(authorizer: &mesh_authz::authorize::Authorizer, id_token: &str) -> String {
    use mesh_authz::signin::session::{Session, SESSION_PURPOSE};
    let now = mesh_authz::authn::unix_now();
    let claims = serde_json::json!({
        "preferred_username": "alice", "email": "alice@example.com", "name": "Alice"
    });
    let session = Session {
        iss: "https://idp.demo.mesh-authz.invalid".into(),
        claims: claims.as_object().unwrap().clone(),
        exp: now + 3600,
        started: now,
        seen: now,
        refresh_token: Some("r".repeat(43)),
        id_token: Some(id_token.to_string()),
    };
    let json = serde_json::to_vec(&session).unwrap();
    let settings = authorizer.browser().expect("browser sign-in").settings();
    settings.keys.seal(SESSION_PURPOSE, &json).unwrap()
}

criterion_group! {
    name = check;
    // Short runs: these are microsecond operations, and CI only builds the bench.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(check);
