//! Gerrit misbehaving or slow: error pages, garbage, huge bodies, stalls, retries,
//! bounded concurrency, outages (stale groups and their bound), TTL expiry under load,
//! TLS with a private CA, and a Gerrit that trusts a header instead of passwords.

mod support;

use std::time::Duration;
use support::clock::{manual_clock, until};
use support::gerrit::{FakeGerrit, Fault, USERNAME};
use support::server::{
    check_request, check_team_a, config, gerrit_section, start_error, start_with_gerrit,
    TestServer, HOST,
};
use support::tokens;

/// A server asking `gerrit`, with `extra` lines added to its `gerrit:` section.
async fn start(gerrit: &FakeGerrit, extra: &str) -> TestServer {
    start_with_gerrit(
        &gerrit.url(),
        |y| y.replace("gerrit:\n", &format!("gerrit:\n{extra}")),
        &[],
    )
    .await
}

async fn check_code(s: &TestServer, user: &str) -> Result<i32, tonic::Code> {
    check_team_a(s, user).await.map_err(|e| e.code())
}

#[tokio::test]
async fn transient_5xx_error_pages_are_retried_with_backoff() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit, "  retries: 2\n  retry_backoff: 10ms\n").await;
    gerrit.fail_next(2, Fault::ErrorPage(502));
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
    gerrit.fail_next(100, Fault::ErrorPage(503));
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
    assert_eq!(
        gerrit.total_requests(),
        24,
        "each user resolved, then listed"
    );
    assert!(
        gerrit.max_in_flight() <= 3,
        "in flight: {}",
        gerrit.max_in_flight()
    );
    assert!(gerrit.max_in_flight() >= 2, "the limit, not serial calls");
}

/// A check on a team-a path with a token for alice whose `claim` is `value`, by a server
/// whose issuer reads the Gerrit account from `claim` in `form`.
async fn check_with_account_claim(
    gerrit: &FakeGerrit,
    claim: &str,
    form: &str,
    value: serde_json::Value,
) -> Result<i32, tonic::Code> {
    let s = start_with_gerrit(
        &gerrit.url(),
        |y| {
            y.replace(
                "user_claim: preferred_username",
                &format!(
                    "user_claim: preferred_username\n    gerrit_account_claim: {claim}\n    gerrit_account_form: {form}"
                ),
            )
        },
        &[],
    )
    .await;
    let mut claims = tokens::claims("alice");
    claims[claim] = value;
    let token = tokens::bearer(&tokens::sign("rsa-a", &claims));
    let req = check_request(
        "GET",
        HOST,
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
async fn the_gerrit_account_can_be_named_by_email_or_a_declared_account_id() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let number = gerrit.account_id("alice");
    for (round, (claim, form, value)) in [
        ("email", "email", serde_json::json!("alice@example.com")),
        ("email", "email", serde_json::json!("Alice@Example.COM")),
        ("gerrit_id", "account_id", serde_json::json!(number)),
        (
            "gerrit_id",
            "account_id",
            serde_json::json!(number.to_string()),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            check_with_account_claim(&gerrit, claim, form, value.clone()).await,
            Ok(0),
            "{form} {value}"
        );
        assert_eq!(gerrit.group_lists_for("alice"), round + 1, "{form} {value}");
    }
    // Emails are queried (and checked), then every round lists groups by number; the
    // declared numbers went straight to the group list.
    assert_eq!(gerrit.requests_for("alice@example.com"), 1);
    assert_eq!(gerrit.requests_for("Alice@Example.COM"), 1);
    assert_eq!(gerrit.requests_for(&number.to_string()), 4);
    assert_eq!(gerrit.total_requests(), 6);
}

#[tokio::test]
async fn a_claim_declared_as_an_account_id_must_be_all_digits() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let number = gerrit.account_id("alice");
    for value in [
        serde_json::json!("alice"),
        serde_json::json!(format!("+{number}")),
        serde_json::json!(format!("{number} ")),
        serde_json::json!(-1),
    ] {
        assert_eq!(
            check_with_account_claim(&gerrit, "gerrit_id", "account_id", value.clone()).await,
            Ok(16),
            "{value}: the token lacks a usable account claim (UNAUTHENTICATED)"
        );
    }
    assert_eq!(gerrit.total_requests(), 0, "nothing was sent to Gerrit");
}

#[tokio::test]
async fn a_numeric_claim_not_declared_as_an_account_id_is_a_username() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let number = gerrit.account_id("alice");
    // The default form is username, whether the JSON carries a string or a number.
    for value in [
        serde_json::json!(number),
        serde_json::json!(number.to_string()),
    ] {
        assert_eq!(
            check_with_account_claim(&gerrit, "employee_number", "username", value.clone()).await,
            Ok(7),
            "{value}: no user is called {number}: PERMISSION_DENIED"
        );
    }
    assert_eq!(
        gerrit.group_lists_for("alice"),
        0,
        "alice's groups never asked for"
    );
}

#[tokio::test]
async fn gerrit_requests_and_cache_results_are_in_the_metrics() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit, "").await;
    assert_eq!(check_code(&s, "alice").await, Ok(0));
    assert_eq!(check_code(&s, "alice").await, Ok(0));
    assert_eq!(check_code(&s, "nobody").await, Ok(7));
    let text = s.metrics().await;
    for line in [
        // alice: her account queried, then her groups listed; nobody: queried, no match.
        r#"mesh_authz_gerrit_requests_total{outcome="ok"} 3"#,
        r#"mesh_authz_group_cache_lookups_total{result="miss"} 2"#,
        r#"mesh_authz_group_cache_lookups_total{result="hit"} 1"#,
        "mesh_authz_gerrit_request_duration_seconds_count 3",
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
    assert!(s
        .metrics()
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

/// Gerrit answers that are not a group list, and Gerrits that stall, each end as "cannot
/// decide" within the request timeout (retried only when transient), are counted by
/// outcome, and leave nothing behind: once Gerrit behaves, the same check is allowed.
/// `/readyz`: status and body.
async fn readiness(s: &TestServer) -> (u16, String) {
    let ready = reqwest::get(format!("{}/readyz", s.admin_url()))
        .await
        .unwrap();
    (ready.status().as_u16(), ready.text().await.unwrap())
}

const URL_WRONG: &str = "mesh_authz_gerrit_url_wrong";

#[tokio::test]
async fn a_gerrit_url_with_a_wrong_path_prefix_shows_in_readiness_and_metrics() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    // Gerrit serves at the root; `/gerrit/a/...` is 404 for every path, alice included.
    let wrong = start_with_gerrit(&format!("{}/gerrit", gerrit.url()), |y| y, &[]).await;
    until("the self-check to flag the URL", || async {
        wrong.metric(URL_WRONG).await == 1.0
    })
    .await;
    let (status, body) = readiness(&wrong).await;
    assert_eq!(status, 200, "public and token-only routes still work");
    assert!(body.starts_with("ready, degraded: "), "{body}");
    assert!(body.contains("gerrit.url"), "{body}");
    // Group routes say they cannot decide, not "alice has no groups".
    assert_eq!(
        check_code(&wrong, "alice").await,
        Err(tonic::Code::Unavailable)
    );
    assert_eq!(gerrit.total_requests(), 0, "nothing reached Gerrit's API");

    let right = start(&gerrit, "").await;
    assert!(
        gerrit.self_requests() >= 1,
        "the service account was looked up"
    );
    assert_eq!(right.metric(URL_WRONG).await, 0.0);
    assert_eq!(readiness(&right).await, (200, "ready\n".to_string()));
    assert_eq!(check_code(&right, "alice").await, Ok(0));
}

#[tokio::test(start_paused = true)]
async fn a_gerrit_url_that_starts_answering_404_is_reported_within_a_minute_and_recovers() {
    let _clock = manual_clock();
    let gerrit = FakeGerrit::start().await;
    let s = start(&gerrit, NO_RETRIES).await;
    let checked = gerrit.self_requests();
    assert_eq!(s.metric(URL_WRONG).await, 0.0);

    // A proxy in front of Gerrit loses its route: every path is 404.
    gerrit.fail_next(usize::MAX, Fault::NoSuchPath);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(gerrit.self_requests(), checked, "not yet");
    tokio::time::advance(Duration::from_secs(1)).await;
    until("the periodic self-check to flag the URL", || async {
        s.metric(URL_WRONG).await == 1.0
    })
    .await;
    assert!(readiness(&s).await.1.contains("gerrit.url"));

    gerrit.fail_next(0, Fault::NoSuchPath);
    tokio::time::advance(Duration::from_secs(60)).await;
    until("the next self-check to clear it", || async {
        s.metric(URL_WRONG).await == 0.0
    })
    .await;
    assert_eq!(readiness(&s).await, (200, "ready\n".to_string()));
}

#[tokio::test]
async fn rejected_service_credentials_show_in_readiness_before_any_check() {
    let gerrit = FakeGerrit::start().await;
    gerrit.set_password("not-what-mesh-authz-has");
    let s = start(&gerrit, "").await;
    until("the self-check to see the 401", || async {
        s.metric("mesh_authz_gerrit_credentials_rejected").await == 1.0
    })
    .await;
    let (status, body) = readiness(&s).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("Gerrit rejects the service account"),
        "{body}"
    );
    assert_eq!(s.metric(URL_WRONG).await, 0.0, "the URL is right");
}

#[tokio::test]
async fn gerrit_answers_that_are_not_a_group_list_mean_cannot_decide_without_hanging() {
    let cases = [
        (Fault::ErrorPage(500), 2, "status"),
        (Fault::HtmlOk, 1, "bad_response"),
        (Fault::TruncatedJson, 1, "bad_response"),
        (Fault::WrongShape, 1, "bad_response"),
        (Fault::Huge { declared: true }, 1, "bad_response"),
        (Fault::Huge { declared: false }, 1, "bad_response"),
        (Fault::Stall, 2, "unreachable"),
        (Fault::StallMidBody, 2, "unreachable"),
    ];
    for (fault, attempts, outcome) in cases {
        let gerrit = FakeGerrit::start().await;
        gerrit.add_account("alice", &["team-a"]);
        // Stalls last until the request timeout; everything else must end on its own
        // merits however slow this machine is, so it gets a generous one.
        let stalls = matches!(fault, Fault::Stall | Fault::StallMidBody);
        let timeout = if stalls { "300ms" } else { "10s" };
        let s = start_with_gerrit(
            &gerrit.url(),
            |y| {
                y.replace("timeout: 2s", &format!("timeout: {timeout}"))
                    .replace(
                        "gerrit:\n",
                        "gerrit:\n  retries: 1\n  retry_backoff: 10ms\n",
                    )
            },
            &[],
        )
        .await;
        gerrit.fail_next(attempts, fault);
        // A guard against a hang, far above the 2 × 300 ms a stalled check may take.
        let answer = tokio::time::timeout(Duration::from_secs(60), check_code(&s, "alice"))
            .await
            .unwrap_or_else(|_| panic!("{fault:?}: the check hung"));
        assert_eq!(answer, Err(tonic::Code::Unavailable), "{fault:?}");
        assert_eq!(gerrit.requests_for("alice"), attempts, "{fault:?}");
        let sample = format!("mesh_authz_gerrit_requests_total{{outcome=\"{outcome}\"}}");
        assert_eq!(s.metric(&sample).await, attempts as f64, "{fault:?}");
        assert_eq!(
            check_code(&s, "alice").await,
            Ok(0),
            "{fault:?}: then allowed"
        );
    }
}

/// The `gerrit:` lines for tests on tokio's manual clock: no retries, since a retry
/// backoff would wait for a clock only the test moves.
const NO_RETRIES: &str = "  retries: 0\n";

#[tokio::test(start_paused = true)]
async fn while_gerrit_fails_the_last_known_groups_serve_up_to_max_staleness_then_cannot_decide() {
    let _clock = manual_clock();
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    // cache_ttl 60 s (test config); max_staleness 5 m.
    let s = start(&gerrit, &format!("{NO_RETRIES}  max_staleness: 5m\n")).await;
    assert_eq!(check_code(&s, "alice").await, Ok(0));

    gerrit.fail_next(usize::MAX, Fault::ErrorPage(503));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        check_code(&s, "alice").await,
        Ok(0),
        "expired, Gerrit down: stale"
    );
    tokio::time::advance(Duration::from_secs(297)).await;
    assert_eq!(check_code(&s, "alice").await, Ok(0), "358 s < 60 s + 5 m");
    let stale = r#"mesh_authz_group_cache_lookups_total{result="stale"}"#;
    assert_eq!(s.metric(stale).await, 2.0);
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(
        check_code(&s, "alice").await,
        Err(tonic::Code::Unavailable),
        "361 s: past the bound, cannot decide"
    );
    // A user never seen before gets no stale grace at all.
    gerrit.add_account("bob", &["team-a"]);
    assert_eq!(check_code(&s, "bob").await, Err(tonic::Code::Unavailable));

    gerrit.fail_next(0, Fault::ErrorPage(503));
    assert_eq!(check_code(&s, "alice").await, Ok(0), "Gerrit back: fresh");
}

#[tokio::test(start_paused = true)]
async fn under_steady_load_ttl_expiry_causes_no_misses_only_background_refreshes() {
    let _clock = manual_clock();
    let gerrit = FakeGerrit::start().await;
    let users = ["alice", "bob", "carol", "dave", "erin"];
    for user in users {
        gerrit.add_account(user, &["team-a"]);
    }
    // cache_ttl 60 s: an entry used after 48 s is refreshed in the background.
    let s = start(&gerrit, NO_RETRIES).await;
    let refreshes = r#"mesh_authz_group_cache_lookups_total{result="refresh"}"#;
    let misses = r#"mesh_authz_group_cache_lookups_total{result="miss"}"#;
    // Each user makes a check every second for five TTLs.
    for second in 0..300 {
        let round = futures::future::join_all(users.iter().map(|u| check_code(&s, u))).await;
        assert!(
            round.iter().all(|r| *r == Ok(0)),
            "at {second} s: {round:?}"
        );
        // Let background refreshes finish (in real time) before the clock moves on.
        until("background refreshes", || async {
            let lists: usize = users.iter().map(|u| gerrit.group_lists_for(u)).sum();
            gerrit.in_flight() == 0
                && s.metric(misses).await + s.metric(refreshes).await == lists as f64
        })
        .await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(
        s.metric(misses).await,
        5.0,
        "only the first check of each user missed"
    );
    for user in users {
        // Loaded at 0 s, then refreshed at 48, 96, 144, 192, 240 and 288 s.
        assert_eq!(gerrit.group_lists_for(user), 7, "{user}");
    }
    assert_eq!(s.metric(refreshes).await, 30.0);
}

#[tokio::test]
async fn gerrit_over_tls_is_trusted_through_the_configured_ca_bundle_only() {
    let gerrit = FakeGerrit::start_tls().await;
    gerrit.add_account("alice", &["team-a"]);
    let ca = gerrit.ca_pem.clone().unwrap();

    // The built-in roots do not know the private CA: no request gets past the handshake.
    let untrusted = start(&gerrit, NO_RETRIES).await;
    assert_eq!(
        check_code(&untrusted, "alice").await,
        Err(tonic::Code::Unavailable)
    );
    assert_eq!(gerrit.total_requests(), 0);

    let trusted = start_with_gerrit(
        &gerrit.url(),
        |y| y.replace("gerrit:\n", "gerrit:\n  ca_file: gerrit-ca.pem\n"),
        &[("gerrit-ca.pem", &ca)],
    )
    .await;
    assert_eq!(check_code(&trusted, "alice").await, Ok(0));
    assert_eq!(gerrit.requests_for("alice"), 1);
}

#[tokio::test]
async fn a_ca_file_without_certificates_stops_the_server_naming_the_field() {
    let yaml = config(
        "file: jwks.json",
        &gerrit_section("https://127.0.0.1:1").replace("gerrit:\n", "gerrit:\n  ca_file: ca.pem\n"),
    );
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    for (pem, reason) in [
        ("just text\n", "ca.pem: no PEM certificates in it"),
        (
            "-----BEGIN CERTIFICATE-----\nnot base64\n",
            "ca.pem: not a PEM certificate bundle",
        ),
    ] {
        let files = [
            ("jwks.json", jwks.as_str()),
            ("gerrit-password", support::gerrit::PASSWORD),
            ("ca.pem", pem),
        ];
        let err = start_error(&yaml, &files).await;
        assert!(err.contains("gerrit.ca_file: "), "{err}");
        assert!(err.ends_with(reason), "{err}");
    }
}

/// The `gerrit:` section for a Gerrit with `auth.trustContainerAuth`: no password, the
/// service account named in the header Gerrit trusts.
fn trusted_header_section(y: String) -> String {
    y.replace(
        "  password_file: gerrit-password\n",
        "  trusted_user_header: X-Forwarded-User\n",
    )
}

#[tokio::test]
async fn a_gerrit_trusting_a_header_is_asked_as_the_service_account_named_in_it() {
    let gerrit = FakeGerrit::start().await;
    gerrit.trust_header("X-Forwarded-User");
    gerrit.add_account("alice", &["team-a"]);
    let s = start_with_gerrit(&gerrit.url(), trusted_header_section, &[]).await;
    assert_eq!(check_code(&s, "alice").await, Ok(0));
    assert_eq!(
        gerrit.callers(),
        [USERNAME, USERNAME],
        "resolving alice, listing her groups"
    );
}

#[tokio::test]
async fn a_gerrit_trusting_a_header_without_the_service_account_is_a_credentials_problem() {
    let gerrit = FakeGerrit::start().await;
    gerrit.trust_header("X-Forwarded-User");
    gerrit.delete_account(USERNAME);
    gerrit.add_account("alice", &["team-a"]);
    let s = start_with_gerrit(&gerrit.url(), trusted_header_section, &[]).await;
    assert_eq!(check_code(&s, "alice").await, Err(tonic::Code::Unavailable));
    assert_eq!(
        s.metric("mesh_authz_gerrit_credentials_rejected").await,
        1.0
    );
    // The Basic-only client is refused the same way (403: no trusted header at all).
    let basic = start_with_gerrit(&gerrit.url(), |y| y, &[]).await;
    assert_eq!(
        check_code(&basic, "alice").await,
        Err(tonic::Code::Unavailable)
    );
    assert_eq!(
        basic
            .metric(r#"mesh_authz_gerrit_requests_total{outcome="credentials"}"#)
            .await,
        1.0
    );
}
