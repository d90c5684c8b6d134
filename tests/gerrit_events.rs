//! Gerrit group changes announced as `ref-updated` events (webhooks plugin, or a relay of
//! `gerrit stream-events`) at `POST /gerrit/events` on the admin port: removals and
//! additions take effect at the event instead of after the cache TTL.

mod support;

use std::time::Duration;
use support::clock::{manual_clock, real_sleep, until};
use support::gerrit::FakeGerrit;
use support::pausable::PausableProxy;
use support::server::{
    check_request, config, gerrit_section, invalidate, start_error, start_with_events_token,
    start_with_gerrit, with_events_token, TestServer, EVENTS_TOKEN, EVENTS_TOKEN_FILE, HOST,
    TEAM_A,
};
use support::tokens;

/// The `gerrit.events` section the tests enable (cache_ttl stays 60 s).
const EVENTS: &str = "gerrit:\n  events: {}\n";

async fn start(gerrit: &FakeGerrit) -> TestServer {
    start_with_gerrit(&gerrit.url(), |y| y.replace("gerrit:\n", EVENTS), &[]).await
}

/// The gRPC status code of a team-a check by `user`.
async fn team_a(s: &TestServer, user: &str) -> i32 {
    let token = tokens::bearer(&tokens::token_for(user));
    let req = check_request("GET", HOST, TEAM_A, &[("authorization", &token)]);
    let resp = s.client.clone().check(req).await.unwrap().into_inner();
    resp.status.unwrap().code
}

const ALLOWED: i32 = 0;
const DENIED: i32 = 7;

/// POSTs `body` to the events endpoint: status and body.
async fn post_event(s: &TestServer, body: &str, token: Option<&str>) -> (u16, String) {
    post_to(
        format!("{}/gerrit/events", s.admin_url()),
        body.to_string(),
        token.map(str::to_string),
    )
    .await
}

/// POSTs `body` (JSON) to `url` with a bearer token, if given: status and body.
async fn post_to(url: String, body: String, token: Option<String>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The token in the tests' `gerrit.events.token_file`.
const TOKEN: &str = EVENTS_TOKEN;

async fn start_with_token(gerrit: &FakeGerrit) -> TestServer {
    start_with_events_token(&gerrit.url(), |y| y).await
}

/// Runs `fut` and waits for it in real time (at most ten seconds, whatever the clock).
async fn within_real_time<T: Send + 'static>(
    what: &str,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let task = tokio::spawn(fut);
    until(what, || {
        let done = task.is_finished();
        async move { done }
    })
    .await;
    task.await.unwrap()
}

/// Waits until `n` group changes have been applied wholly: holders dropped, then (in the
/// background) the groups' members listed and new members dropped.
async fn events_done(s: &TestServer, n: usize) {
    let changed = r#"mesh_authz_gerrit_events_total{result="group_changed"}"#;
    until("the member lists of the changed groups", || async {
        s.metric(changed).await == n as f64
    })
    .await;
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn a_removal_from_a_group_takes_effect_at_its_ref_updated_event() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit).await;
    assert_eq!(team_a(&s, "alice").await, ALLOWED);

    gerrit.set_groups("alice", &[]);
    assert_eq!(team_a(&s, "alice").await, ALLOWED, "cached: no event yet");
    let (status, body) = post_event(&s, &gerrit.ref_updated_event("team-a"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body),
        serde_json::json!({"events": 1, "groups_changed": 1, "entries_dropped": 1, "additions_pending": 1, "changes_dropped": 0})
    );
    assert_eq!(team_a(&s, "alice").await, DENIED);
    assert_eq!(gerrit.group_lists_for("alice"), 2);
}

#[tokio::test]
async fn an_addition_to_a_group_takes_effect_at_its_event_and_other_users_stay_cached() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("bob", &["team-b"]);
    gerrit.add_account("carol", &["team-b"]);
    let s = start(&gerrit).await;
    assert_eq!(team_a(&s, "bob").await, DENIED);
    assert_eq!(team_a(&s, "carol").await, DENIED);

    gerrit.set_groups("bob", &["team-b", "team-a"]);
    let (status, body) = post_event(&s, &gerrit.ref_updated_event("team-a"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body)["entries_dropped"],
        0,
        "nobody cached holds team-a"
    );
    assert_eq!(json(&body)["additions_pending"], 1);
    events_done(&s, 1).await;
    assert_eq!(gerrit.member_requests_for("team-a"), 1);
    let dropped = r#"mesh_authz_group_cache_dropped_total{trigger="event"}"#;
    assert_eq!(s.metric(dropped).await, 1.0, "bob, a new member");
    assert_eq!(team_a(&s, "bob").await, ALLOWED);
    assert_eq!(team_a(&s, "carol").await, DENIED);
    assert_eq!(gerrit.group_lists_for("carol"), 1, "carol was not dropped");
}

#[tokio::test]
async fn a_change_to_an_included_group_reaches_the_groups_that_include_it() {
    let gerrit = FakeGerrit::start().await;
    // team-a includes team-a-devs; only the subgroup's ref changes when its members do.
    gerrit.include_group("team-a", "team-a-devs");
    gerrit.add_account("dave", &["team-a-devs"]);
    gerrit.add_account("erin", &[]);
    let s = start(&gerrit).await;
    assert_eq!(team_a(&s, "dave").await, ALLOWED);
    assert_eq!(team_a(&s, "erin").await, DENIED);

    gerrit.set_groups("dave", &[]);
    gerrit.set_groups("erin", &["team-a-devs"]);
    let (status, body) = post_event(&s, &gerrit.ref_updated_event("team-a-devs"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["entries_dropped"], 1, "dave held it");
    events_done(&s, 1).await;
    assert_eq!(team_a(&s, "dave").await, DENIED);
    assert_eq!(team_a(&s, "erin").await, ALLOWED);
}

#[tokio::test]
async fn removals_apply_even_when_gerrit_hides_the_changed_groups_members() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit).await;
    assert_eq!(team_a(&s, "alice").await, ALLOWED);
    // The group becomes invisible to the service account (and alice leaves it): the
    // member list is refused, but alice's cached entry holds the group and is dropped.
    gerrit.set_groups("alice", &[]);
    gerrit.hide_group("team-a");
    let (status, body) = post_event(&s, &gerrit.ref_updated_event("team-a"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["entries_dropped"], 1);
    assert_eq!(team_a(&s, "alice").await, DENIED);
}

#[tokio::test]
async fn events_relayed_from_stream_events_one_per_line_are_all_applied() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    gerrit.add_account("bob", &["team-b"]);
    let s = start(&gerrit).await;
    assert_eq!(team_a(&s, "alice").await, ALLOWED);
    assert_eq!(team_a(&s, "bob").await, DENIED);
    gerrit.set_groups("alice", &["team-b"]);
    gerrit.set_groups("bob", &["team-a"]);
    let comment = r#"{"type":"comment-added","change":{"project":"team-a/service"},"eventCreatedOn":1764000000}"#;
    let lines = [
        gerrit.ref_updated_event("team-a"),
        comment.to_string(),
        gerrit.ref_updated_event("team-b"),
    ]
    .join("\n");
    let (status, body) = post_event(&s, &lines, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body),
        serde_json::json!({"events": 3, "groups_changed": 2, "entries_dropped": 2, "additions_pending": 2, "changes_dropped": 0})
    );
    events_done(&s, 2).await;
    assert_eq!(team_a(&s, "alice").await, DENIED);
    assert_eq!(team_a(&s, "bob").await, ALLOWED);
    let ignored = r#"mesh_authz_gerrit_events_total{result="ignored"}"#;
    assert_eq!(s.metric(ignored).await, 1.0);
    let changed = r#"mesh_authz_gerrit_events_total{result="group_changed"}"#;
    assert_eq!(s.metric(changed).await, 2.0);
    let dropped = r#"mesh_authz_group_cache_dropped_total{trigger="event"}"#;
    assert_eq!(s.metric(dropped).await, 2.0);
}

#[tokio::test]
async fn events_that_change_no_group_cost_gerrit_nothing() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit).await;
    assert_eq!(team_a(&s, "alice").await, ALLOWED);
    let branch = gerrit
        .ref_updated_event("team-a")
        .replace("All-Users", "team-a/service");
    let (status, body) = post_event(&s, &branch, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["groups_changed"], 0);
    assert_eq!(team_a(&s, "alice").await, ALLOWED);
    assert_eq!(
        gerrit.total_requests(),
        2,
        "alice resolved and her groups listed once; no members, no groups asked again"
    );
}

#[tokio::test]
async fn a_body_that_is_not_gerrit_events_is_refused_400_and_changes_nothing() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit).await;
    assert_eq!(team_a(&s, "alice").await, ALLOWED);
    let (status, body) = post_event(&s, "<html>502 Bad Gateway</html>", None).await;
    assert_eq!(status, 400);
    assert!(body.starts_with("line 1: not a Gerrit event"), "{body}");
    assert_eq!(gerrit.requests_for("alice"), 1);
    let invalid = r#"mesh_authz_gerrit_events_total{result="invalid"}"#;
    assert_eq!(s.metric(invalid).await, 1.0);
}

#[tokio::test]
async fn with_a_token_file_events_need_that_bearer_token() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let token = "6f1c2d0e9a8b7c6d5e4f3a2b1c0d9e8f";
    let s = start_with_gerrit(
        &gerrit.url(),
        |y| {
            y.replace(
                "gerrit:\n",
                "gerrit:\n  events: {token_file: events-token}\n",
            )
        },
        &[("events-token", &format!("{token}\n"))],
    )
    .await;
    assert_eq!(team_a(&s, "alice").await, ALLOWED);
    gerrit.set_groups("alice", &[]);
    let event = gerrit.ref_updated_event("team-a");
    for wrong in [None, Some("not-the-token"), Some(&token[..31])] {
        let (status, _) = post_event(&s, &event, wrong).await;
        assert_eq!(status, 401, "{wrong:?}");
    }
    assert_eq!(
        team_a(&s, "alice").await,
        ALLOWED,
        "refused events change nothing"
    );
    let (status, body) = post_event(&s, &event, Some(token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(team_a(&s, "alice").await, DENIED);
    let refused = r#"mesh_authz_gerrit_events_total{result="unauthorized"}"#;
    assert_eq!(s.metric(refused).await, 3.0);
}

#[tokio::test]
async fn a_guessable_or_missing_events_token_stops_the_server_naming_the_field() {
    let yaml = config(
        "file: jwks.json",
        &gerrit_section("http://127.0.0.1:1").replace(
            "gerrit:\n",
            "gerrit:\n  events: {token_file: events-token}\n",
        ),
    );
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let files = [
        ("jwks.json", jwks.as_str()),
        ("gerrit-password", support::gerrit::PASSWORD),
    ];
    let missing = start_error(&yaml, &files).await;
    assert!(
        missing.contains("gerrit.events.token_file: cannot read "),
        "{missing}"
    );
    let mut short = files.to_vec();
    short.push(("events-token", "hunter2\n"));
    let short = start_error(&yaml, &short).await;
    assert!(
        short.contains("gerrit.events.token_file: ")
            && short.ends_with("a token of 7 characters is guessable; use at least 16"),
        "{short}"
    );
    assert!(!short.contains("hunter2"), "the token is never shown");
}

#[tokio::test]
async fn without_gerrit_events_configured_the_endpoint_is_404() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start_with_gerrit(&gerrit.url(), |y| y, &[]).await;
    assert_eq!(team_a(&s, "alice").await, ALLOWED);
    gerrit.set_groups("alice", &[]);
    let (status, body) = post_event(&s, &gerrit.ref_updated_event("team-a"), None).await;
    assert_eq!(status, 404);
    assert!(body.contains("gerrit.events"), "{body}");
    assert_eq!(team_a(&s, "alice").await, ALLOWED);
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The config edit for a replica whose admin port is `port` and whose `server.peers` are
/// the loopback `peers` ports, with Gerrit events and their token on.
fn replica(port: u16, peers: &[u16]) -> impl FnOnce(String) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let peers = peers.join(", ");
    move |y: String| {
        with_events_token(y).replace(
            "admin_listen: 127.0.0.1:0\n",
            &format!("admin_listen: 127.0.0.1:{port}\n  peers: [{peers}]\n"),
        )
    }
}

/// Replicas at the admin ports `ports`, each with all of them as peers.
async fn start_replicas(gerrit: &FakeGerrit, ports: &[u16]) -> Vec<TestServer> {
    let mut replicas = Vec::new();
    for port in ports {
        replicas.push(
            start_with_gerrit(&gerrit.url(), replica(*port, ports), &[EVENTS_TOKEN_FILE]).await,
        );
    }
    replicas
}

#[tokio::test]
async fn an_invalidation_received_by_one_replica_reaches_every_replica() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    gerrit.add_account("bob", &["team-a"]);
    // Two replicas and an address where a third used to be (a pod gone).
    let (a, b, gone) = (free_port(), free_port(), free_port());
    let ra = start_with_gerrit(
        &gerrit.url(),
        replica(a, &[a, b, gone]),
        &[EVENTS_TOKEN_FILE],
    )
    .await;
    let rb = start_with_gerrit(
        &gerrit.url(),
        replica(b, &[a, b, gone]),
        &[EVENTS_TOKEN_FILE],
    )
    .await;
    for r in [&ra, &rb] {
        assert_eq!(team_a(r, "alice").await, ALLOWED);
        assert_eq!(team_a(r, "bob").await, ALLOWED);
    }

    // Gerrit's webhook reaches replica a only (a Service picks one pod).
    gerrit.set_groups("alice", &[]);
    let (status, body) = post_event(&ra, &gerrit.ref_updated_event("team-a"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body)["other_replicas"],
        serde_json::json!({"ok": 1, "failed": 1, "retrying": 1})
    );
    for r in [&ra, &rb] {
        assert_eq!(team_a(r, "alice").await, DENIED);
        // bob holds team-a too, so the event dropped him as well; cache him again.
        assert_eq!(team_a(r, "bob").await, ALLOWED);
    }
    until("each replica asked Gerrit for the members once", || async {
        gerrit.member_requests_for("team-a") == 2
    })
    .await;

    // The admin endpoint too, with the same token.
    gerrit.set_groups("bob", &[]);
    let (status, answer) = invalidate(&rb, "?user=bob", Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        "dropped bob; other replicas: 1 done, 1 failed (retried in the background)\n"
    );
    for r in [&ra, &rb] {
        assert_eq!(team_a(r, "bob").await, DENIED);
    }
    let forwards = r#"mesh_authz_peer_forwards_total{result="ok"}"#;
    assert_eq!(ra.metric(forwards).await, 1.0);
    assert_eq!(rb.metric(forwards).await, 1.0);
}

#[tokio::test]
async fn cache_invalidation_needs_the_events_token_and_a_refused_one_drops_nothing() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start_with_token(&gerrit).await;
    assert_eq!(team_a(&s, "alice").await, ALLOWED);
    gerrit.set_groups("alice", &[]);
    for query in ["?user=alice", ""] {
        for wrong in [None, Some("not-the-token"), Some(&TOKEN[..31])] {
            let (status, body) = invalidate(&s, query, wrong).await;
            assert_eq!(status, 401, "{query} {wrong:?}: {body}");
        }
    }
    assert_eq!(
        team_a(&s, "alice").await,
        ALLOWED,
        "refused invalidations drop nothing"
    );
    assert_eq!(gerrit.group_lists_for("alice"), 1);
    let (status, body) = invalidate(&s, "?user=alice", Some(TOKEN)).await;
    assert_eq!((status, body.as_str()), (200, "dropped alice\n"));
    assert_eq!(team_a(&s, "alice").await, DENIED);
}

#[tokio::test]
async fn without_an_events_token_cache_invalidation_is_refused() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    // Events without a token, and no events at all: nothing authenticates an operator.
    let open_events = start(&gerrit).await;
    let no_events = start_with_gerrit(&gerrit.url(), |y| y, &[]).await;
    for s in [&open_events, &no_events] {
        assert_eq!(team_a(s, "alice").await, ALLOWED);
    }
    gerrit.set_groups("alice", &[]);
    for s in [&open_events, &no_events] {
        for (query, token) in [("?user=alice", None), ("", None), ("", Some(TOKEN))] {
            let (status, body) = invalidate(s, query, token).await;
            assert_eq!(status, 403, "{query}: {body}");
            assert!(body.contains("gerrit.events.token_file"), "{body}");
        }
        assert_eq!(team_a(s, "alice").await, ALLOWED, "nothing was dropped");
    }
}

#[tokio::test(start_paused = true)]
async fn a_removal_reaches_every_replica_and_gerrit_is_answered_while_gerrit_stalls_listing_members(
) {
    let _clock = manual_clock();
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let ports = [free_port(), free_port(), free_port()];
    let replicas = start_replicas(&gerrit, &ports).await;
    for r in &replicas {
        assert_eq!(team_a(r, "alice").await, ALLOWED);
    }

    // alice leaves team-a, and Gerrit hangs listing the group's members. The clock stands
    // still, so Gerrit's timeout never fires: an answer or a forward that waited for the
    // member list would never come.
    gerrit.set_groups("alice", &[]);
    gerrit.stall_member_lists();
    let url = format!("{}/gerrit/events", replicas[0].admin_url());
    let event = gerrit.ref_updated_event("team-a");
    let (status, body) = within_real_time(
        "the answer to Gerrit",
        post_to(url, event, Some(TOKEN.into())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body = json(&body);
    assert_eq!(body["entries_dropped"], 1, "{body}");
    assert_eq!(
        body["other_replicas"],
        serde_json::json!({"ok": 2, "failed": 0, "retrying": 0}),
        "both peers applied it and said so"
    );
    for r in &replicas {
        assert_eq!(team_a(r, "alice").await, DENIED);
    }
    until("every replica asked for the members", || async {
        gerrit.member_requests_for("team-a") == 3
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_removal_forwarded_to_a_paused_replica_arrives_once_it_resumes() {
    let _clock = manual_clock();
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    // Replica b's admin port sits behind a proxy that can stop answering, like b under
    // SIGSTOP; replica a knows b by the proxy's address.
    let b = start_with_token(&gerrit).await;
    let b_admin = PausableProxy::start(b.running().admin_addr).await;
    let a_port = free_port();
    let a = start_with_gerrit(
        &gerrit.url(),
        replica(a_port, &[a_port, b_admin.addr.port()]),
        &[EVENTS_TOKEN_FILE],
    )
    .await;
    for r in [&a, &b] {
        assert_eq!(team_a(r, "alice").await, ALLOWED);
    }

    gerrit.set_groups("alice", &[]);
    b_admin.pause();
    let url = format!("{}/gerrit/events", a.admin_url());
    let posted = tokio::spawn(post_to(
        url,
        gerrit.ref_updated_event("team-a"),
        Some(TOKEN.into()),
    ));
    until("the forward reached paused b", || async {
        b_admin.held() == 1
    })
    .await;
    let waited = advance_until("the answer to Gerrit", || {
        let done = posted.is_finished();
        async move { done }
    })
    .await;
    assert!(
        waited <= Duration::from_secs(2),
        "{waited:?}: the answer waits for the forward's timeout at most"
    );
    let (status, body) = posted.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body)["other_replicas"],
        serde_json::json!({"ok": 0, "failed": 1, "retrying": 1})
    );
    assert_eq!(team_a(&a, "alice").await, DENIED);
    assert_eq!(team_a(&b, "alice").await, ALLOWED, "b has not heard yet");

    // b stays paused through a retry, then resumes.
    advance_until("a retry while b is paused", || async {
        b_admin.held() == 2
    })
    .await;
    b_admin.resume();
    let advanced = advance_until("the removal reached b", || async {
        team_a(&b, "alice").await == DENIED
    })
    .await;
    assert!(
        advanced < Duration::from_secs(60),
        "{advanced:?}: well before cache_ttl (60 s)"
    );
    let ok = r#"mesh_authz_peer_forwards_total{result="ok"}"#;
    let failed = r#"mesh_authz_peer_forwards_total{result="failed"}"#;
    assert_eq!(a.metric(ok).await, 1.0);
    assert_eq!(a.metric(failed).await, 2.0);
}

/// Moves the paused clock on a second at a time (letting real I/O run in between) until
/// `done`; returns how far it moved in this call. At most 120 virtual seconds.
async fn advance_until<F, Fut>(what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    for _ in 0..120 {
        // Timers that fired start real I/O (connects, requests): let it happen.
        for _ in 0..20 {
            if done().await {
                return start.elapsed();
            }
            real_sleep(Duration::from_millis(5)).await;
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    panic!("{what}: not within 120 s of virtual time");
}
