//! Change-gated rules against the fake Gerrit's changes API: a deploy pipeline's workload
//! may act only for a merged change of `infra/*` on `main`, at its merged commit; a
//! developer's call needs a submittable change approved by someone else. Denials say
//! why; Gerrit down is "cannot decide"; a change event drops the cached change.

mod support;

use support::gerrit::changes::FakeChange;
use support::gerrit::FakeGerrit;
use support::responses::denied;

use support::server::{check_request, post_gerrit_events, start_with_gerrit_routes, TestServer};
use support::tokens;

type CheckResponse = envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;

const DEPLOYER: &str = "spiffe://cluster.local/ns/ci/sa/deployer";

const ROUTES: &str = r#"
routes:
  - name: deploy
    match: {hosts: [deploy.example.com]}
    allow:
      principals: [spiffe://cluster.local/ns/ci/sa/deployer]
      as_user: deployer
      change:
        header: x-gerrit-change
        projects: ["infra/*"]
        branches: [main]
        state: merged
        revision_header: x-gerrit-revision
    inject: {user: x-forwarded-user}
  - name: pipeline
    match: {hosts: [pipeline.example.com]}
    allow:
      authenticated: true
      change: {claim: gerrit_change, state: merged}
  - name: apply
    match: {hosts: [apply.example.com]}
    allow:
      authenticated: true
      change:
        header: x-gerrit-change
        state: submittable
        approval: {label: Code-Review, not_by: [owner, caller]}
    inject: {user: x-forwarded-user}
"#;

async fn server(gerrit: &FakeGerrit) -> TestServer {
    start_with_gerrit_routes(&gerrit.url(), ROUTES).await
}

async fn gerrit_with_people() -> FakeGerrit {
    let gerrit = FakeGerrit::start().await;
    for user in ["olivia", "rita", "alice", "ci", "deployer"] {
        gerrit.add_account(user, &[]);
    }
    gerrit
}

/// A Check from the deployer workload naming `change` (and `revision`).
async fn deploy(s: &TestServer, change: &str, revision: Option<&str>) -> CheckResponse {
    let mut headers = vec![("x-gerrit-change", change)];
    if let Some(r) = revision {
        headers.push(("x-gerrit-revision", r));
    }
    let mut req = check_request("POST", "deploy.example.com", "/apply", &headers);
    req.attributes.as_mut().unwrap().source = Some(Peer {
        principal: DEPLOYER.into(),
        ..Default::default()
    });
    s.client.clone().check(req).await.unwrap().into_inner()
}

/// A Check by `user`'s token on the apply route naming `change`.
async fn apply(s: &TestServer, user: &str, change: &str) -> CheckResponse {
    let token = tokens::bearer(&tokens::token_for(user));
    let req = check_request(
        "POST",
        "apply.example.com",
        "/run",
        &[("authorization", &token), ("x-gerrit-change", change)],
    );
    s.client.clone().check(req).await.unwrap().into_inner()
}

fn allowed(resp: &CheckResponse) -> bool {
    resp.status.as_ref().is_some_and(|s| s.code == 0)
}

#[tokio::test]
async fn a_pipeline_may_act_for_a_merged_change_at_its_merged_commit_only() {
    let gerrit = gerrit_with_people().await;
    let change = FakeChange::new(1234, "infra/deploy", "olivia").approved_by("rita");
    let revision = change.revision.clone();
    gerrit.put_change(change.clone());
    let s = server(&gerrit).await;

    // Open: not yet.
    let d = denied(&deploy(&s, "1234", Some(&revision)).await);
    assert_eq!(d.http_status, 403);
    assert_eq!(d.json["reason"], "change 1234 is not merged");

    gerrit.put_change(change.clone().merged());
    // The open state was cached for seconds; a change event drops it at once.
    let event = gerrit.change_ref_updated_event(1234);
    assert_eq!(post_gerrit_events(&s, &event).await, 200);
    assert!(allowed(&deploy(&s, "1234", Some(&revision)).await));
    assert!(allowed(
        &deploy(&s, "infra/deploy~1234", Some(&revision)).await
    ));

    // Another revision: refused, and why.
    let d = denied(&deploy(&s, "1234", Some("0123456789abcdef")).await);
    assert_eq!(
        d.json["reason"],
        "revision 0123456789 is not change 1234's merged commit"
    );
    // No change, a broken one, a foreign project.
    let none = check_request("POST", "deploy.example.com", "/apply", &[]);
    let mut none = none;
    none.attributes.as_mut().unwrap().source = Some(Peer {
        principal: DEPLOYER.into(),
        ..Default::default()
    });
    let d = denied(&s.client.clone().check(none).await.unwrap().into_inner());
    assert_eq!(
        d.json["reason"],
        "the request names no Gerrit change (header x-gerrit-change)"
    );
    let d = denied(&deploy(&s, "1234/../../accounts", Some(&revision)).await);
    assert!(
        d.json["reason"]
            .as_str()
            .unwrap()
            .contains("is not a change"),
        "{}",
        d.json
    );
    gerrit.put_change(FakeChange::new(77, "apps/web", "olivia").merged());
    let d = denied(
        &deploy(
            &s,
            "77",
            Some(&FakeChange::new(77, "apps/web", "olivia").revision),
        )
        .await,
    );
    assert_eq!(
        d.json["reason"],
        "change 77 is in project apps/web, which this route does not serve"
    );
    let d = denied(&deploy(&s, "4040", None).await);
    assert_eq!(d.json["reason"], "change 4040 was not found in Gerrit");
}

#[tokio::test]
async fn a_merged_change_is_asked_of_gerrit_once_for_many_requests() {
    let gerrit = gerrit_with_people().await;
    let change = FakeChange::new(1234, "infra/deploy", "olivia")
        .approved_by("rita")
        .merged();
    let revision = change.revision.clone();
    gerrit.put_change(change);
    let s = server(&gerrit).await;
    for _ in 0..5 {
        assert!(allowed(&deploy(&s, "1234", Some(&revision)).await));
    }
    assert_eq!(gerrit.change_requests(1234), 1);
}

#[tokio::test]
async fn a_developer_needs_a_submittable_change_approved_by_someone_else() {
    let gerrit = gerrit_with_people().await;
    let s = server(&gerrit).await;
    // Verified missing.
    gerrit.put_change(FakeChange::new(10, "apps/web", "alice").vote("Code-Review", "rita", 2));
    let d = denied(&apply(&s, "alice", "10").await);
    assert_eq!(
        d.json["reason"],
        "change 10 cannot be submitted: Verified is missing"
    );
    // Approved by its owner alone: submittable in Gerrit, but not an approval here.
    gerrit.put_change(FakeChange::new(11, "apps/web", "alice").approved_by("alice"));
    let d = denied(&apply(&s, "alice", "11").await);
    assert_eq!(
        d.json["reason"],
        "change 11 has no Code-Review approval by someone other than its owner and you"
    );
    // Approved by rita: alice may apply it; rita herself may not act on her own approval.
    gerrit.put_change(FakeChange::new(12, "apps/web", "olivia").approved_by("rita"));
    assert!(allowed(&apply(&s, "alice", "12").await));
    let d = denied(&apply(&s, "rita", "12").await);
    assert!(d.json["reason"]
        .as_str()
        .unwrap()
        .contains("has no Code-Review approval"));
}

#[tokio::test]
async fn gerrit_down_is_cannot_decide_never_allow() {
    let gerrit = gerrit_with_people().await;
    let change = FakeChange::new(1234, "infra/deploy", "olivia")
        .approved_by("rita")
        .merged();
    let revision = change.revision.clone();
    gerrit.put_change(change);
    let s = server(&gerrit).await;
    gerrit.fail_next(100, support::gerrit::Fault::ErrorPage(503));
    let mut headers = vec![("x-gerrit-change", "1234")];
    headers.push(("x-gerrit-revision", revision.as_str()));
    let mut req = check_request("POST", "deploy.example.com", "/apply", &headers);
    req.attributes.as_mut().unwrap().source = Some(Peer {
        principal: DEPLOYER.into(),
        ..Default::default()
    });
    let status = s.client.clone().check(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("change lookup failed"),
        "{status:?}"
    );
}

#[tokio::test]
async fn the_change_can_come_from_a_claim_of_the_callers_token() {
    let gerrit = gerrit_with_people().await;
    gerrit.put_change(
        FakeChange::new(55, "infra/deploy", "olivia")
            .approved_by("rita")
            .merged(),
    );
    gerrit.put_change(FakeChange::new(56, "infra/deploy", "olivia"));
    let s = server(&gerrit).await;
    let call = |change: serde_json::Value| {
        let mut claims = tokens::claims("ci");
        claims["gerrit_change"] = change;
        let token = tokens::bearer(&tokens::sign("rsa-a", &claims));
        let req = check_request(
            "POST",
            "pipeline.example.com",
            "/promote",
            &[("authorization", &token)],
        );
        let client = s.client.clone();
        async move { client.clone().check(req).await.unwrap().into_inner() }
    };
    assert!(allowed(&call(serde_json::json!("infra/deploy~55")).await));
    assert!(allowed(&call(serde_json::json!(55)).await));
    let d = denied(&call(serde_json::json!(56)).await);
    assert_eq!(d.json["reason"], "change 56 is not merged");
    // A header naming another change does not count: the claim is the source.
    let mut claims = tokens::claims("ci");
    claims["gerrit_change"] = serde_json::json!(56);
    let token = tokens::bearer(&tokens::sign("rsa-a", &claims));
    let req = check_request(
        "POST",
        "pipeline.example.com",
        "/promote",
        &[("authorization", &token), ("x-gerrit-change", "55")],
    );
    assert!(!allowed(
        &s.client.clone().check(req).await.unwrap().into_inner()
    ));
    let no_claim = tokens::bearer(&tokens::token_for("ci"));
    let req = check_request(
        "POST",
        "pipeline.example.com",
        "/promote",
        &[("authorization", &no_claim)],
    );
    let d = denied(&s.client.clone().check(req).await.unwrap().into_inner());
    assert_eq!(
        d.json["reason"],
        "the request names no Gerrit change (claim gerrit_change)"
    );
}
