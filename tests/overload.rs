//! Overload: checks in flight are bounded (`server.max_concurrent_checks`); the ones
//! beyond fail at once with UNAVAILABLE and a metric, instead of waiting in a queue that
//! grows with the load until Envoy's timeout has long passed (and memory with it).

mod support;

use std::time::{Duration, Instant};
use support::clock::until;
use support::gerrit::FakeGerrit;
use support::server::{check_request, start_with_gerrit, TestServer, HOST};
use support::tokens;

async fn check(s: &TestServer, user: &str) -> Result<i32, tonic::Status> {
    let token = tokens::bearer(&tokens::token_for(user));
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
}

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
    let slow = async { tokio::join!(check(&s, "alice"), check(&s, "carol")) };
    let third = async {
        let gerrit = &gerrit;
        until("both slow checks reached Gerrit", || async move {
            gerrit.in_flight() >= 2
        })
        .await;
        let started = Instant::now();
        let result = check(&s, "dave").await;
        (result, started.elapsed())
    };
    let ((alice, carol), (dave, waited)) = tokio::join!(slow, third);

    let status = dave.expect_err("the third check is shed");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("max_concurrent_checks"),
        "the operator can tell why: {:?}",
        status.message()
    );
    assert!(
        waited < Duration::from_millis(400),
        "shed at once, not after the slow checks ({waited:?})"
    );
    assert_eq!(alice.expect("alice decided"), 0);
    assert_eq!(carol.expect("carol decided"), 0);
    assert_eq!(shed_count(&s.metrics().await), Some(1));

    // With room again, checks are decided as before.
    gerrit.set_delay(Duration::ZERO);
    assert_eq!(check(&s, "dave").await.expect("decided"), 0);
    assert_eq!(shed_count(&s.metrics().await), Some(1));
}
