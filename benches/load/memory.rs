//! The memory part: mesh-authz with every cache at its default bound (verified tokens
//! 100,000; Gerrit groups 10,000 users), fed a million distinct EdDSA tokens from
//! 100,000 users whose groups come from a fake Gerrit in this process. The server's RSS
//! is read from /proc as it goes.

use super::driver::{self, Expect};
use super::report::{human, Stats};
use super::requests::{self, Signer, ED_ISSUER};
use super::servers::{self, ServerProcess};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codegen::Bytes;

/// How much the part sends.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Distinct tokens sent after the warm-up.
    pub tokens: usize,
    /// Distinct users they belong to (each user's tokens are sent one after another).
    pub users: usize,
    /// Tokens signed and sent per step; RSS is read after each.
    pub step: usize,
    /// Tokens (from other users) sent before the measured ones.
    pub warmup_tokens: usize,
}

/// The service account the fake Gerrit expects.
const GERRIT_USER: &str = "mesh-authz";

/// Account numbers start here, as in Gerrit.
const FIRST_ACCOUNT: u64 = 1_000_000;

/// A fake Gerrit answering account queries and group lookups for users `user-N`:
/// account 1000000+N, groups team-a and Registered Users. Counts the requests it answers.
/// It also serves `/jwks.json` (the `rsa-a` test key), standing in for the IdP.
pub struct FakeGerrit {
    /// Its base URL.
    pub url: String,
    requests: Arc<AtomicU64>,
}

/// Gerrit's JSON answer: the `)]}'` line, then the body.
fn gerrit_json(body: serde_json::Value) -> Response {
    (
        [("content-type", "application/json; charset=UTF-8")],
        format!(")]}}'\n{body}"),
    )
        .into_response()
}

/// The AccountInfo (with details) of `user-N`, if `username` is one.
fn account_info(username: &str) -> Option<serde_json::Value> {
    let number = username.strip_prefix("user-")?.parse::<u64>().ok()?;
    Some(json!({
        "_account_id": FIRST_ACCOUNT + number,
        "name": format!("User {number}"),
        "username": username,
        "email": format!("{username}@example.com"),
    }))
}

/// `GET /a/accounts/?q=username:"user-N"&o=DETAILS`: that account, or `[]`.
async fn query(State(n): State<Arc<AtomicU64>>, RawQuery(query): RawQuery) -> Response {
    n.fetch_add(1, Ordering::Relaxed);
    let q = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let username = q
        .strip_prefix("username:")
        .map(|v| v.trim_matches('"'))
        .unwrap_or_default();
    gerrit_json(json!(account_info(username)
        .into_iter()
        .collect::<Vec<_>>()))
}

/// `GET /a/accounts/self`: the service account (mesh-authz checks it exists).
async fn account(State(n): State<Arc<AtomicU64>>, UrlPath(id): UrlPath<String>) -> Response {
    n.fetch_add(1, Ordering::Relaxed);
    if id == "self" {
        return gerrit_json(json!({"_account_id": FIRST_ACCOUNT - 1, "username": GERRIT_USER}));
    }
    (StatusCode::NOT_FOUND, format!("Not found: {id}")).into_response()
}

/// `GET /a/accounts/{number}/groups/`: team-a and Registered Users.
async fn groups(State(n): State<Arc<AtomicU64>>, UrlPath(id): UrlPath<String>) -> Response {
    n.fetch_add(1, Ordering::Relaxed);
    if id.parse::<u64>().map_or(true, |n| n < FIRST_ACCOUNT) {
        return (StatusCode::NOT_FOUND, format!("Not found: {id}")).into_response();
    }
    gerrit_json(json!([
        {"id": "7465616d2d617465616d2d617465616d2d617465", "name": "team-a",
         "url": "#/admin/groups/uuid-7465616d2d617465616d2d617465616d2d617465",
         "options": {}, "group_id": 3, "owner": "Administrators"},
        {"id": "global%3ARegistered-Users", "name": "Registered Users",
         "url": "#/admin/groups/uuid-global%3ARegistered-Users", "options": {}},
    ]))
}

impl FakeGerrit {
    /// Serves on an ephemeral loopback port in this process's runtime.
    pub async fn start() -> Self {
        let requests = Arc::new(AtomicU64::new(0));
        let jwks = requests::rsa_a_jwks().to_string();
        let app = axum::Router::new()
            .route(
                "/jwks.json",
                get(move || {
                    let jwks = jwks.clone();
                    async move { ([("content-type", "application/json")], jwks) }
                }),
            )
            .route("/a/accounts/", get(query))
            .route("/a/accounts/{account}", get(account))
            .route("/a/accounts/{account}/groups/", get(groups))
            .with_state(requests.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake Gerrit");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, requests }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

use super::servers::metric;

/// Serialized CheckRequests carrying `tokens`.
fn bodies(tokens: &[String]) -> Arc<Vec<Bytes>> {
    Arc::new(
        tokens
            .iter()
            .map(|t| requests::encode(&requests::check_request(Some(t))))
            .collect(),
    )
}

/// Where the run stands: one row of the memory table.
async fn checkpoint(
    out: &mut String,
    label: &str,
    server: &ServerProcess,
    gerrit: &FakeGerrit,
    started: Instant,
) -> u64 {
    let (rss, hwm) = server.memory_kib();
    let entries = metric(server, "mesh_authz_group_cache_entries").await;
    let _ = writeln!(
        out,
        "| {label} | {:.1} MiB | {:.1} MiB | {entries} | {} | {} |",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        gerrit.requests(),
        human(started.elapsed()),
    );
    eprintln!("memory: {label}: VmRSS {rss} KiB, VmHWM {hwm} KiB, group cache {entries}");
    rss
}

/// Runs the part in `dir`; returns the report section and the final RSS (KiB).
pub async fn run(scale: Scale, load: driver::Settings, dir: &Path) -> (String, u64) {
    let started = Instant::now();
    let (signer, jwks) = Signer::ed25519();
    let gerrit = FakeGerrit::start().await;
    let write = |name: &str, content: &str| {
        std::fs::write(dir.join(name), content)
            .unwrap_or_else(|e| panic!("writing {name} into {}: {e}", dir.display()))
    };
    write("jwks.json", &jwks.to_string());
    write("gerrit-password", "bench-http-password");
    write(
        "config.yaml",
        &servers::gerrit_config(&gerrit.url, GERRIT_USER),
    );
    let server = servers::start_mesh_authz(
        "mesh-authz",
        &dir.join("config.yaml"),
        &dir.join("mesh-authz.log"),
        None,
    );

    let probe = signer.sign(&requests::claims(ED_ISSUER, "user-999999999", 0));
    let answer = driver::assert_decision(
        server.grpc,
        &requests::check_request(Some(&probe)),
        Expect::Allow,
    )
    .await;

    let mut out = String::new();
    let _ = writeln!(out, "decision checked first: {answer}");
    let _ = writeln!(
        out,
        "\n| after | VmRSS | VmHWM (peak) | mesh_authz_group_cache_entries | Gerrit requests | elapsed |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    checkpoint(&mut out, "start (one check)", &server, &gerrit, started).await;

    // Warm-up: users outside the measured range, ten tokens each.
    let warm_users = scale.warmup_tokens.div_ceil(10);
    let warm = signer.sign_many(scale.warmup_tokens, |i| {
        let user = format!("user-{}", scale.users + i % warm_users);
        requests::claims(ED_ISSUER, &user, (scale.tokens + i) as u64)
    });
    let stats = driver::run(load, server.grpc, bodies(&warm), warm.len()).await;
    assert_all_allowed(&stats, "memory warm-up");
    let label = format!("warm-up ({} tokens, {warm_users} users)", warm.len());
    checkpoint(&mut out, &label, &server, &gerrit, started).await;

    let per_user = scale.tokens / scale.users;
    let (mut signing, mut sending) = (Duration::ZERO, Duration::ZERO);
    let mut sent = 0;
    let mut last = 0;
    while sent < scale.tokens {
        let n = scale.step.min(scale.tokens - sent);
        let t = Instant::now();
        let tokens = signer.sign_many(n, |i| {
            let i = sent + i;
            let user = format!("user-{}", i / per_user);
            requests::claims(ED_ISSUER, &user, i as u64)
        });
        let batch = bodies(&tokens);
        drop(tokens);
        signing += t.elapsed();
        let t = Instant::now();
        let stats = driver::run(load, server.grpc, batch, n).await;
        sending += t.elapsed();
        assert_all_allowed(&stats, "memory");
        sent += n;
        let label = format!("{sent} tokens, {} users", sent.div_ceil(per_user));
        last = checkpoint(&mut out, &label, &server, &gerrit, started).await;
    }
    let misses = metric(
        &server,
        "mesh_authz_group_cache_lookups_total{result=\"miss\"}",
    )
    .await;
    let _ = writeln!(
        out,
        "\n{sent} distinct tokens from {} users ({per_user} consecutive tokens per user), \
         after {} warm-up tokens. Signing (EdDSA, all cores, between steps): {}; sending \
         ({:.0} checks/s while sending): {}; group cache misses: {misses}; the part took {}.",
        scale.users,
        scale.warmup_tokens,
        human(signing),
        sent as f64 / sending.as_secs_f64(),
        human(sending),
        human(started.elapsed()),
    );
    (out, last)
}

/// Panics unless every answer was an allow (a denial would skip the caches measured).
/// Panics unless every check of the run was allowed.
pub fn assert_all_allowed(stats: &Stats, part: &str) {
    let allowed = stats
        .statuses
        .get("[OK / decision Ok]")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        allowed, stats.count,
        "{part}: not every check was allowed: {:?}",
        stats.statuses
    );
}
