//! Grants approved as reviews, read from a file in the fake Gerrit: a grant opens its
//! route when its change merges (the branch's ref-updated event), narrowed to its kube
//! verbs, resources and namespaces, and only between `from` and `until`; an over-long or
//! broken entry never widens access; a broken file keeps the previous set; Gerrit down
//! keeps the last good set for `max_staleness`, then the route cannot decide.

mod support;

use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use std::time::Duration;
use support::clock::{manual_clock, until};
use support::gerrit::FakeGerrit;
use support::responses::{allowed, denied, header_options};

use support::server::{check_request, post_gerrit_events, start_with_gerrit_routes, TestServer};
use support::tokens;

const ROUTES: &str = r#"
grants:
  project: access-grants
  max_duration: 8h
  refresh_interval: 60s
  max_staleness: 300s
  how_to_ask: https://gerrit.example.com/q/project:access-grants
routes:
  - name: kube
    match: {hosts: [kube.example.com]}
    allow: {authenticated: true, grant: true}
    remove_headers: [authorization]
    kube:
      rules:
        - {verbs: [get], resources: [namespaces], cluster: true}
"#;

async fn server(gerrit: &FakeGerrit) -> TestServer {
    start_with_gerrit_routes(&gerrit.url(), ROUTES).await
}

/// `user` deletes a pod in `namespace` through the kube route.
async fn delete_pod(
    s: &TestServer,
    user: &str,
    namespace: &str,
) -> Result<CheckResponse, tonic::Status> {
    let token = tokens::bearer(&tokens::token_for(user));
    let req = check_request(
        "DELETE",
        "kube.example.com",
        &format!("/api/v1/namespaces/{namespace}/pods/payments-7f9c"),
        &[("authorization", &token)],
    );
    s.client.clone().check(req).await.map(|r| r.into_inner())
}

fn rfc3339(unix: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(unix as i64, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A grants file: agent-7 may delete pods in payments from `from` to `until`.
fn grants_file(from: u64, until: u64) -> String {
    format!(
        r#"grants:
  - id: INC-4711
    who: {{users: [agent-7]}}
    routes: [kube]
    kube: {{verbs: [delete], resources: [pods], namespaces: [payments]}}
    from: {}
    until: {}
    reason: "INC-4711: restart the stuck payment pods"
"#,
        rfc3339(from),
        rfc3339(until)
    )
}

fn is_allowed(r: &Result<CheckResponse, tonic::Status>) -> bool {
    matches!(r, Ok(resp) if resp.status.as_ref().is_some_and(|s| s.code == 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_opens_its_route_when_it_merges_narrowed_to_its_kube_rule() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("agent-7", &[]);
    gerrit.add_account("bob", &[]);
    gerrit.merge_file("access-grants", "main", "grants.yaml", "grants: []\n");
    let s = server(&gerrit).await;
    until("the grants read at start", || async {
        gerrit.branch_requests() > 0
    })
    .await;
    until("no grant yet", || async {
        delete_pod(&s, "agent-7", "payments").await.is_ok()
    })
    .await;

    // Before the grant: 403, saying how to ask.
    let d = denied(&delete_pod(&s, "agent-7", "payments").await.unwrap());
    assert_eq!(d.http_status, 403);
    // A kube route answers a Kubernetes Status: kubectl prints its message.
    assert_eq!(d.json["reason"], "Forbidden");
    assert_eq!(
        d.json["message"],
        "no active grant lets you do this on route \"kube\"; to ask for one: https://gerrit.example.com/q/project:access-grants"
    );

    // The grant change merges; the branch's event reads it at once.
    let now = tokens::now();
    let revision = gerrit.merge_file(
        "access-grants",
        "main",
        "grants.yaml",
        &grants_file(now - 60, now + 3600),
    );
    assert_eq!(
        post_gerrit_events(
            &s,
            &gerrit.branch_ref_updated_event("access-grants", "main")
        )
        .await,
        200
    );
    until("the grant in force", || async {
        is_allowed(&delete_pod(&s, "agent-7", "payments").await)
    })
    .await;
    let ok = delete_pod(&s, "agent-7", "payments").await.unwrap();
    let set = header_options(&allowed(&ok).headers);
    assert_eq!(set["impersonate-user"].value, "agent-7");
    assert!(!set.contains_key("impersonate-group"), "the user alone");
    assert!(!revision.is_empty());
    assert!(
        s.metric("mesh_authz_grant_allows_total{grant=\"INC-4711\"}")
            .await
            >= 2.0
    );
    assert_eq!(s.metric("mesh_authz_grants_active").await, 1.0);
    assert!(
        s.metric("mesh_authz_grant_reads_total{result=\"read\"}")
            .await
            >= 2.0
    );

    // Narrowed: another namespace, another verb, another user.
    assert!(!is_allowed(&delete_pod(&s, "agent-7", "kube-system").await));
    assert!(!is_allowed(&delete_pod(&s, "bob", "payments").await));
    let token = tokens::bearer(&tokens::token_for("agent-7"));
    let get = check_request(
        "GET",
        "kube.example.com",
        "/api/v1/namespaces/payments/secrets",
        &[("authorization", &token)],
    );
    assert!(denied(&s.client.clone().check(get).await.unwrap().into_inner()).http_status == 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_over_long_grant_allows_nothing_and_a_broken_file_keeps_the_old_set() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("agent-7", &[]);
    let now = tokens::now();
    // Ended an hour ago.
    gerrit.merge_file(
        "access-grants",
        "main",
        "grants.yaml",
        &grants_file(now - 7200, now - 3600),
    );
    let s = server(&gerrit).await;
    until("the grants read at start", || async {
        gerrit.branch_requests() > 0
    })
    .await;
    until("a decision", || async {
        delete_pod(&s, "agent-7", "payments").await.is_ok()
    })
    .await;
    assert!(!is_allowed(&delete_pod(&s, "agent-7", "payments").await));

    // Nine hours: longer than max_duration, skipped.
    gerrit.merge_file(
        "access-grants",
        "main",
        "grants.yaml",
        &grants_file(now - 60, now + 9 * 3600),
    );
    post_gerrit_events(
        &s,
        &gerrit.branch_ref_updated_event("access-grants", "main"),
    )
    .await;
    until("the new revision read", || async {
        gerrit.branch_requests() > 1
    })
    .await;
    until("the entry reported skipped", || async {
        s.metric("mesh_authz_grants_skipped{grant=\"INC-4711\"}")
            .await
            == 1.0
    })
    .await;
    assert!(!is_allowed(&delete_pod(&s, "agent-7", "payments").await));
    assert_eq!(s.metric("mesh_authz_grants_active").await, 0.0);

    // A good grant, then a file that does not parse: the good one stays.
    gerrit.merge_file(
        "access-grants",
        "main",
        "grants.yaml",
        &grants_file(now - 60, now + 3600),
    );
    post_gerrit_events(
        &s,
        &gerrit.branch_ref_updated_event("access-grants", "main"),
    )
    .await;
    until("the grant in force", || async {
        is_allowed(&delete_pod(&s, "agent-7", "payments").await)
    })
    .await;
    let reads = gerrit.branch_requests();
    gerrit.merge_file(
        "access-grants",
        "main",
        "grants.yaml",
        "grants: {this is: [not a list\n",
    );
    post_gerrit_events(
        &s,
        &gerrit.branch_ref_updated_event("access-grants", "main"),
    )
    .await;
    until("the broken revision read", || async {
        gerrit.branch_requests() > reads
    })
    .await;
    until("the broken file refused", || async {
        s.metric("mesh_authz_grant_reads_total{result=\"refused\"}")
            .await
            == 1.0
    })
    .await;
    assert!(is_allowed(&delete_pod(&s, "agent-7", "payments").await));
}

#[tokio::test(start_paused = true)]
async fn gerrit_down_keeps_the_last_good_grants_for_max_staleness_then_cannot_decide() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("agent-7", &[]);
    let now = tokens::now();
    gerrit.merge_file(
        "access-grants",
        "main",
        "grants.yaml",
        &grants_file(now - 60, now + 7 * 3600),
    );
    let _clock = manual_clock();
    let s = server(&gerrit).await;
    until("the grant in force", || async {
        is_allowed(&delete_pod(&s, "agent-7", "payments").await)
    })
    .await;
    gerrit.stop();
    // Within max_staleness (300 s): the last good set decides.
    tokio::time::advance(Duration::from_secs(200)).await;
    assert!(is_allowed(&delete_pod(&s, "agent-7", "payments").await));
    // Past it: cannot decide, never allow.
    tokio::time::advance(Duration::from_secs(150)).await;
    let status = delete_pod(&s, "agent-7", "payments").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("could not be read from Gerrit"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shows_which_grant_allowed_and_why_none_did() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("agent-7", &[]);
    let now = tokens::now();
    gerrit.merge_file(
        "access-grants",
        "main",
        "grants.yaml",
        &grants_file(now - 60, now + 3600),
    );
    let s = server(&gerrit).await;
    let token = s.dir.path().join("agent.jwt");
    std::fs::write(&token, tokens::token_for("agent-7")).unwrap();
    let run = |namespace: &str| {
        let path = format!("/api/v1/namespaces/{namespace}/pods/p-1");
        let config = s.dir.path().join("config.yaml");
        let token = token.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_mesh-authz"))
                    .args(["check", "--method", "DELETE", "--host", "kube.example.com"])
                    .args(["--path", &path, "--config"])
                    .arg(&config)
                    .arg("--token-file")
                    .arg(&token)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run("payments").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("grant \"INC-4711\""), "{stdout}");
    assert!(
        stdout.contains("INC-4711: restart the stuck payment pods"),
        "{stdout}"
    );
    let out = run("kube-system").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("no active grant"), "{stdout}");
}
