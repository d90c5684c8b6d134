//! Overload: checks in flight are bounded (`server.max_concurrent_checks`); the ones
//! beyond fail at once with UNAVAILABLE and a metric, instead of waiting in a queue that
//! grows with the load until Envoy's timeout has long passed (and memory with it).

mod support;

use std::time::Duration;
use support::clock::until;
use support::gerrit::FakeGerrit;
use support::server::{
    check_request, check_team_a, raw_check, start_with_gerrit, TestServer, HOST,
};
use support::tokens;

fn shed_count(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("mesh_authz_checks_shed_total "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn checks_beyond_max_concurrent_checks_fail_at_once_with_unavailable_and_are_counted() {
    let gerrit = FakeGerrit::start().await;
    for user in ["alice", "carol", "dave"] {
        gerrit.add_account(user, &["team-a"]);
    }
    // Slow Gerrit: the first two checks stay in flight while the third arrives.
    gerrit.set_delay(Duration::from_millis(800));
    let s = start_with_gerrit(
        &gerrit.url(),
        |y| y.replace("server:\n", "server:\n  max_concurrent_checks: 2\n"),
        &[],
    )
    .await;
    let slow = async { tokio::join!(check_team_a(&s, "alice"), check_team_a(&s, "carol")) };
    let third = async {
        let gerrit = &gerrit;
        until("both slow checks reached Gerrit", || async move {
            gerrit.in_flight() >= 2
        })
        .await;
        let result = check_team_a(&s, "dave").await;
        // Read as the answer arrives: were the slow checks still waiting on Gerrit?
        (result, gerrit.in_flight())
    };
    let ((alice, carol), (dave, slow_in_flight)) = tokio::join!(slow, third);

    let status = dave.expect_err("the third check is shed");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("max_concurrent_checks"),
        "the operator can tell why: {:?}",
        status.message()
    );
    assert_eq!(
        slow_in_flight, 2,
        "shed at once, while the slow checks were still in flight, not after them"
    );
    assert_eq!(gerrit.requests_for("dave"), 0, "shed before any work");
    assert_eq!(alice.expect("alice decided"), 0);
    assert_eq!(carol.expect("carol decided"), 0);
    assert_eq!(shed_count(&s.metrics().await), Some(1));

    // With room again, checks are decided as before.
    gerrit.set_delay(Duration::ZERO);
    assert_eq!(check_team_a(&s, "dave").await.expect("decided"), 0);
    assert_eq!(shed_count(&s.metrics().await), Some(1));
}

/// A Check call for team-a with `token`, as Envoy makes it, `grpc-timeout` included.
async fn raw_check_team_a(s: &TestServer, token: &str, timeout: &str) -> (String, String) {
    use prost::Message;
    let request = check_request(
        "GET",
        HOST,
        "/a/projects/team-a/x",
        &[("authorization", token)],
    );
    raw_check(s, &request.encode_to_vec(), Some(timeout)).await
}

#[tokio::test]
async fn a_check_past_its_grpc_timeout_is_answered_deadline_exceeded_without_a_decision() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start_with_gerrit(&gerrit.url(), |y| y, &[]).await;
    let token = tokens::bearer(&tokens::token_for("alice"));
    // One nanosecond has passed by the time any check could be decided.
    let (status, message) = raw_check_team_a(&s, &token, "1n").await;
    assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
    assert!(message.contains("grpc-timeout"), "{message}");
    assert_eq!(gerrit.requests_for("alice"), 0, "not decided: no lookup");
    let expired = s.metrics().await.lines().find_map(|l| {
        l.strip_prefix("mesh_authz_checks_expired_total ")
            .map(str::to_owned)
    });
    assert_eq!(expired.as_deref(), Some("1"));

    // Envoy's real deadline leaves room: decided as always.
    assert_eq!(check_team_a(&s, "alice").await.expect("decided"), 0);
}
