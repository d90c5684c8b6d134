//! Gerrit misbehaving: 5xx error pages, retries, bounded concurrency.

mod support;

use std::time::Duration;
use support::gerrit::{FakeGerrit, PASSWORD};
use support::server::{check_request, config, gerrit_section, TestServer};
use support::tokens;

async fn start(gerrit: &FakeGerrit, extra: &str) -> TestServer {
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let section = gerrit_section(&gerrit.url()).replace("gerrit:\n", &format!("gerrit:\n{extra}"));
    let yaml = config("file: jwks.json", &section);
    TestServer::start(
        &yaml,
        &[("jwks.json", &jwks), ("gerrit-password", PASSWORD)],
    )
    .await
}

async fn check_code(s: &TestServer, user: &str) -> Result<i32, tonic::Code> {
    let token = format!("Bearer {}", tokens::token_for(user));
    let req = check_request(
        "GET",
        "gerrit.example.com",
        "/a/projects/team-a/x",
        &[("authorization", &token)],
    );
    let mut client = s.client.clone();
    client
        .check(req)
        .await
        .map(|r| r.into_inner().status.unwrap().code)
        .map_err(|e| e.code())
}

#[tokio::test]
async fn transient_5xx_error_pages_are_retried_with_backoff() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit, "  retries: 2\n  retry_backoff: 10ms\n").await;
    gerrit.fail_next(2, 502);
    assert_eq!(check_code(&s, "alice").await, Ok(0));
    assert_eq!(
        gerrit.requests_for("alice"),
        3,
        "two failures, then the answer"
    );
}

#[tokio::test]
async fn a_gerrit_that_keeps_failing_means_cannot_decide_after_the_retries() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit, "  retries: 2\n  retry_backoff: 10ms\n").await;
    gerrit.fail_next(100, 503);
    assert_eq!(check_code(&s, "alice").await, Err(tonic::Code::Unavailable));
    assert_eq!(
        gerrit.requests_for("alice"),
        3,
        "bounded: one try and two retries"
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit, "  retries: 3\n  retry_backoff: 10ms\n").await;
    gerrit.set_password("rotated");
    assert_eq!(check_code(&s, "alice").await, Err(tonic::Code::Unavailable));
    assert_eq!(
        gerrit.requests_for("alice"),
        1,
        "401 is a configuration problem"
    );
}

#[tokio::test]
async fn requests_to_gerrit_are_bounded_in_flight() {
    let gerrit = FakeGerrit::start().await;
    let users: Vec<String> = (0..12).map(|i| format!("user{i}")).collect();
    for u in &users {
        gerrit.add_account(u, &["team-a"]);
    }
    gerrit.set_delay(Duration::from_millis(100));
    let s = start(&gerrit, "  max_concurrent_requests: 3\n").await;
    let all = futures::future::join_all(users.iter().map(|u| check_code(&s, u))).await;
    assert!(all.iter().all(|r| *r == Ok(0)), "{all:?}");
    assert_eq!(gerrit.total_requests(), 12);
    assert!(
        gerrit.max_in_flight() <= 3,
        "in flight: {}",
        gerrit.max_in_flight()
    );
    assert!(gerrit.max_in_flight() >= 2, "the limit, not serial calls");
}

#[tokio::test]
async fn the_gerrit_account_can_be_named_by_email_or_numeric_id() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    for (claim, value, expected_path_id) in [
        (
            "email",
            serde_json::json!("alice@example.com"),
            "alice@example.com".to_string(),
        ),
        (
            "gerrit_id",
            serde_json::json!(gerrit.account_id("alice")),
            gerrit.account_id("alice").to_string(),
        ),
    ] {
        let yaml = config("file: jwks.json", &gerrit_section(&gerrit.url())).replace(
            "user_claim: preferred_username",
            &format!("user_claim: preferred_username\n    gerrit_account_claim: {claim}"),
        );
        let s = TestServer::start(
            &yaml,
            &[("jwks.json", &jwks), ("gerrit-password", PASSWORD)],
        )
        .await;
        let mut claims = tokens::claims("alice");
        claims[claim] = value;
        let token = format!("Bearer {}", tokens::sign("rsa-a", &claims));
        let req = check_request(
            "GET",
            "gerrit.example.com",
            "/a/projects/team-a/x",
            &[("authorization", &token)],
        );
        let resp = s.client.clone().check(req).await.unwrap().into_inner();
        assert_eq!(resp.status.unwrap().code, 0, "{claim}");
        assert_eq!(gerrit.requests_for(&expected_path_id), 1, "{claim}");
    }
}

async fn metrics(s: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", s.admin_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn gerrit_requests_and_cache_results_are_in_the_metrics() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit, "").await;
    assert_eq!(check_code(&s, "alice").await, Ok(0));
    assert_eq!(check_code(&s, "alice").await, Ok(0));
    assert_eq!(check_code(&s, "nobody").await, Ok(7));
    let text = metrics(&s).await;
    for line in [
        r#"mesh_authz_gerrit_requests_total{outcome="ok"} 1"#,
        r#"mesh_authz_gerrit_requests_total{outcome="not_found"} 1"#,
        r#"mesh_authz_group_cache_lookups_total{result="miss"} 2"#,
        r#"mesh_authz_group_cache_lookups_total{result="hit"} 1"#,
        "mesh_authz_gerrit_request_duration_seconds_count 2",
        "mesh_authz_gerrit_credentials_rejected 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn rejected_service_credentials_show_in_readiness_and_metrics() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    gerrit.set_password("not-what-mesh-authz-has");
    let s = start(&gerrit, "").await;
    assert_eq!(check_code(&s, "alice").await, Err(tonic::Code::Unavailable));
    assert!(metrics(&s)
        .await
        .contains("mesh_authz_gerrit_credentials_rejected 1"));
    let ready = reqwest::get(format!("{}/readyz", s.admin_url()))
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "public and token-only routes still work"
    );
    let body = ready.text().await.unwrap();
    assert!(
        body.contains("Gerrit rejects the service account"),
        "{body}"
    );
}
