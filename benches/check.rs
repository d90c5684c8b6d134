//! In-process costs of the Check path: route matching, and whole decisions with the
//! quickstart config (allow with RS256 verified every time or served from the
//! verified-token cache, groups cached; deny without a token).
//!
//! `cargo bench --bench check`. Load tests against a running server: `benches/ghz/`.

use criterion::{criterion_group, criterion_main, Criterion};
use mesh_authz::authorize::Authorizer;
use mesh_authz::request::RequestView;
use std::collections::HashMap;
use std::hint::black_box;

/// The quickstart config, with the verified-token cache on (its default) or off.
fn quickstart(token_cache: bool) -> Authorizer {
    let mut config = mesh_authz::config::builtin().expect("built-in config compiles");
    if !token_cache {
        config.token_cache_entries = 0;
    }
    Authorizer::from_config(&config, reqwest::Client::new()).expect("authorizer builds")
}

fn headers(token: Option<&str>) -> HashMap<String, String> {
    let mut h = HashMap::new();
    h.insert(":authority".into(), "gerrit.example.com".into());
    h.insert("user-agent".into(), "git/2.47.3".into());
    h.insert(
        "x-request-id".into(),
        "4b1a6c3e-1d7f-4a0e-9a51-2f7c0d0e9b21".into(),
    );
    if let Some(t) = token {
        h.insert("authorization".into(), format!("Bearer {t}"));
    }
    h
}

fn view<'a>(headers: &'a HashMap<String, String>) -> RequestView<'a> {
    RequestView {
        method: "GET",
        host: "gerrit.example.com",
        path: "/a/projects/team-a/branches",
        query: "",
        headers,
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = mesh_authz::config::builtin().unwrap();
    let authorizer = quickstart(true);
    let uncached = quickstart(false);
    let token = include_str!("../examples/quickstart/alice.jwt").trim();

    let anonymous = headers(None);
    c.bench_function("route_match", |b| {
        b.iter(|| black_box(config.routes.find(&view(&anonymous)).is_some()))
    });

    let signed = headers(Some(token));
    c.bench_function("decide_allow_rs256_verify_every_time", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(uncached.decide(&view(&signed)).await) })
    });
    c.bench_function("decide_allow_rs256_verified_token_cache", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(authorizer.decide(&view(&signed)).await) })
    });

    c.bench_function("decide_deny_no_token", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(authorizer.decide(&view(&anonymous)).await) })
    });
}

criterion_group!(check, benches);
criterion_main!(check);
