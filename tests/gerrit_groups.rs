//! Group decisions with groups from a fake Gerrit over HTTP: allow and deny by group name
//! or UUID, one Gerrit call for many concurrent checks, unknown accounts, Gerrit down or
//! rejecting our credentials, and account ids Gerrit would resolve to someone else
//! (numeric usernames, `self`, display forms, name searches).

mod support;

use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use serde_json::json;
use std::time::Duration;
use support::gerrit::{group_uuid, FakeGerrit, PASSWORD, USERNAME};
use support::responses::{allowed, denied, header_options, metadata_strings};
use support::server::{
    check_request, invalidate, start_with_events_token, start_with_gerrit, TestServer,
    EVENTS_TOKEN, HOST, PUBLIC, REQUEST_ID, SIGNED_IN, TEAM_A,
};
use support::tokens::{self, bearer};

/// A server asking `gerrit` for groups, with `password` in its password file and `edit`
/// applied to the standard test config.
async fn start_with(
    gerrit: &FakeGerrit,
    password: &str,
    edit: impl FnOnce(String) -> String,
) -> TestServer {
    start_with_gerrit(&gerrit.url(), edit, &[("gerrit-password", password)]).await
}

async fn start(gerrit: &FakeGerrit) -> TestServer {
    start_with(gerrit, PASSWORD, |y| y).await
}

/// A check for `user` (with a fresh token) on `path`.
async fn check_as(s: &TestServer, user: &str, path: &str) -> Result<CheckResponse, tonic::Status> {
    let token = bearer(&tokens::token_for(user));
    let mut client = s.client.clone();
    client
        .check(check_request(
            "GET",
            HOST,
            path,
            &[("authorization", &token)],
        ))
        .await
        .map(|r| r.into_inner())
}

/// A check that must be answered (allow or deny), not fail.
async fn answered(s: &TestServer, user: &str, path: &str) -> CheckResponse {
    check_as(s, user, path)
        .await
        .unwrap_or_else(|e| panic!("{user} {path}: gRPC error {e:?}"))
}

/// A check that must be refused as "cannot decide" (gRPC UNAVAILABLE).
async fn unavailable(s: &TestServer, user: &str, path: &str) -> tonic::Status {
    match check_as(s, user, path).await {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            status
        }
        Ok(resp) => panic!("{user} {path}: expected UNAVAILABLE, got {resp:?}"),
    }
}

/// The `x-forwarded-groups` an allowed check injects.
fn injected_groups(resp: &CheckResponse) -> String {
    header_options(&allowed(resp).headers)["x-forwarded-groups"]
        .value
        .clone()
}

/// Asks the fake Gerrit directly, as the service account, which groups `account_id`
/// resolves to (to show what mesh-authz would get if it sent that id).
async fn groups_gerrit_reports(gerrit: &FakeGerrit, account_id: &str) -> Vec<String> {
    let mut url = reqwest::Url::parse(&gerrit.url()).unwrap();
    url.path_segments_mut()
        .unwrap()
        .extend(["a", "accounts", account_id, "groups", ""]);
    let body = reqwest::Client::new()
        .get(url)
        .basic_auth(USERNAME, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let json = body.strip_prefix(")]}'").unwrap_or(&body);
    let infos: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    infos
        .iter()
        .filter_map(|g| g["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn gerrit_member_of_the_required_group_is_allowed_with_its_groups_injected() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a", "reviewers"]);
    let s = start(&gerrit).await;

    // A route that needs no groups does not ask Gerrit.
    allowed(&answered(&s, "alice", SIGNED_IN).await);
    assert_eq!(gerrit.total_requests(), 0);

    let resp = answered(&s, "alice", TEAM_A).await;
    assert_eq!(
        injected_groups(&resp),
        "Registered Users,team-a,reviewers",
        "effective groups as Gerrit lists them, system group included"
    );
    let meta = resp.dynamic_metadata.as_ref().expect("dynamic metadata");
    assert_eq!(
        metadata_strings(meta, "groups"),
        Some(vec![
            "Registered Users".to_string(),
            "team-a".into(),
            "reviewers".into()
        ])
    );
    // Cached for the TTL: a second check does not ask again.
    allowed(&answered(&s, "alice", TEAM_A).await);
    assert_eq!(gerrit.requests_for("alice"), 1);
}

#[tokio::test]
async fn gerrit_account_outside_the_required_group_is_denied_403() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("bob", &["team-b"]);
    let s = start(&gerrit).await;
    let d = denied(&answered(&s, "bob", TEAM_A).await);
    assert_eq!(d.http_status, 403);
    assert_eq!(d.header("www-authenticate"), None);
    assert_eq!(d.json["error"], "access_denied");
    assert!(
        !d.visible_text().contains("team-b"),
        "the denial does not list the caller's groups: {d:?}"
    );
    assert_eq!(gerrit.requests_for("bob"), 1);
    // Bob is still signed in where no group is needed.
    allowed(&answered(&s, "bob", SIGNED_IN).await);
}

#[tokio::test]
async fn a_gerrit_membership_change_takes_effect_once_the_admin_drops_the_cached_groups() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("bob", &["team-b"]);
    let s = start_with_events_token(&gerrit.url(), |y| y).await;
    assert_eq!(denied(&answered(&s, "bob", TEAM_A).await).http_status, 403);

    gerrit.set_groups("bob", &["team-b", "team-a"]);
    assert_eq!(
        denied(&answered(&s, "bob", TEAM_A).await).http_status,
        403,
        "cached until the TTL"
    );
    let (status, body) = invalidate(&s, "?user=bob", Some(EVENTS_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        injected_groups(&answered(&s, "bob", TEAM_A).await),
        "Registered Users,team-b,team-a"
    );
    assert_eq!(gerrit.requests_for("bob"), 2);
}

#[tokio::test]
async fn a_required_group_may_be_named_by_the_uuid_gerrit_reports() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    gerrit.add_account("bob", &["team-b"]);
    let uuid = group_uuid("team-a");
    let s = start_with(&gerrit, PASSWORD, |y| {
        y.replace(
            "groups_any_of: [team-a]",
            &format!("groups_any_of: [\"uuid:{uuid}\"]"),
        )
    })
    .await;
    allowed(&answered(&s, "alice", TEAM_A).await);
    assert_eq!(denied(&answered(&s, "bob", TEAM_A).await).http_status, 403);
}

#[tokio::test]
async fn a_group_named_like_another_groups_uuid_does_not_satisfy_a_rule_on_that_uuid() {
    // Group owners choose their groups' names: mallory owns a group she named after
    // team-a's UUID. Only team-a itself may satisfy a rule on that UUID.
    let gerrit = FakeGerrit::start().await;
    let uuid = group_uuid("team-a");
    gerrit.add_account("alice", &["team-a"]);
    gerrit.add_account("mallory", &[&uuid]);
    let s = start_with(&gerrit, PASSWORD, |y| {
        y.replace(
            "groups_any_of: [team-a]",
            &format!("groups_any_of: [\"uuid:{uuid}\"]"),
        )
    })
    .await;
    allowed(&answered(&s, "alice", TEAM_A).await);
    assert_eq!(
        denied(&answered(&s, "mallory", TEAM_A).await).http_status,
        403
    );
}

#[tokio::test]
async fn a_group_whose_uuid_is_written_as_a_name_does_not_satisfy_a_rule_on_that_name() {
    // `name:` compares names only: team-a's UUID written as a name matches no group.
    let gerrit = FakeGerrit::start().await;
    let uuid = group_uuid("team-a");
    gerrit.add_account("alice", &["team-a"]);
    let s = start_with(&gerrit, PASSWORD, |y| {
        y.replace(
            "groups_any_of: [team-a]",
            &format!("groups_any_of: [\"name:{uuid}\"]"),
        )
    })
    .await;
    assert_eq!(
        denied(&answered(&s, "alice", TEAM_A).await).http_status,
        403
    );
}

#[tokio::test]
async fn every_known_gerrit_account_is_in_registered_users_whether_or_not_gerrit_shows_it() {
    // Gerrit shows system groups only to administrators; policy may name the group by its
    // UUID (sent URL-encoded, `global%3ARegistered-Users`) or its name either way.
    for admin in [false, true] {
        for required in ["uuid:global:Registered-Users", "Registered Users"] {
            let gerrit = FakeGerrit::start().await;
            gerrit.add_account("bob", &[]);
            if admin {
                gerrit.make_service_account_admin();
            }
            let s = start_with(&gerrit, PASSWORD, |y| {
                y.replace(
                    "groups_any_of: [team-a]",
                    &format!("groups_any_of: [\"{required}\"]"),
                )
            })
            .await;
            let resp = answered(&s, "bob", TEAM_A).await;
            assert_eq!(injected_groups(&resp), "Registered Users", "admin: {admin}");
            assert_eq!(
                denied(&answered(&s, "carol", TEAM_A).await).http_status,
                403,
                "carol has no account (admin: {admin})"
            );
        }
    }
}

#[tokio::test]
async fn two_hundred_concurrent_checks_for_a_cold_user_make_exactly_one_gerrit_lookup() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    // Slow enough that all the checks arrive while the first lookup is under way.
    gerrit.set_delay(Duration::from_millis(200));
    let s = start(&gerrit).await;
    let token = bearer(&tokens::token_for("alice"));
    let checks = (0..200).map(|_| {
        let req = check_request("GET", HOST, TEAM_A, &[("authorization", &token)]);
        let mut client = s.client.clone();
        async move { client.check(req).await.map(|r| r.into_inner()) }
    });
    for resp in futures::future::join_all(checks).await {
        let resp = resp.expect("every check answered");
        assert_eq!(injected_groups(&resp), "Registered Users,team-a");
    }
    // One lookup: which account "alice" names, then its groups.
    assert_eq!(gerrit.requests_for("alice"), 1);
    assert_eq!(gerrit.group_lists_for("alice"), 1);
    assert_eq!(gerrit.total_requests(), 2);
    assert_eq!(
        s.metric(r#"mesh_authz_group_cache_lookups_total{result="miss"}"#)
            .await
            + s.metric(r#"mesh_authz_group_cache_lookups_total{result="hit"}"#)
                .await,
        200.0,
        "every check went through the cache"
    );
}

#[tokio::test]
async fn membership_through_an_included_group_counts() {
    let gerrit = FakeGerrit::start().await;
    // team-a includes team-a-devs; dave is only in the subgroup.
    gerrit.include_group("team-a", "team-a-devs");
    gerrit.add_account("dave", &["team-a-devs"]);
    let s = start(&gerrit).await;
    assert_eq!(
        injected_groups(&answered(&s, "dave", TEAM_A).await),
        "Registered Users,team-a-devs,team-a"
    );
}

#[tokio::test]
async fn a_group_the_service_account_cannot_see_does_not_count_so_the_route_denies() {
    let gerrit = FakeGerrit::start().await;
    // team-a is not visible to all and the service account does not own it: Gerrit leaves
    // it out of alice's groups, so mesh-authz cannot know and must not allow.
    gerrit.hide_group("team-a");
    gerrit.add_account("alice", &["team-a"]);
    let s = start_with_events_token(&gerrit.url(), |y| y).await;
    assert_eq!(
        denied(&answered(&s, "alice", TEAM_A).await).http_status,
        403
    );
    // Once the service account may see it (here: Administrate Server), alice is allowed.
    gerrit.make_service_account_admin();
    let (status, body) = invalidate(&s, "", Some(EVENTS_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    allowed(&answered(&s, "alice", TEAM_A).await);
}

#[tokio::test]
async fn when_gerrit_is_down_group_routes_are_unavailable_and_signed_in_routes_still_allow() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    gerrit.stop();
    let s = start(&gerrit).await;

    let status = unavailable(&s, "alice", TEAM_A).await;
    assert!(status.message().contains("Gerrit"), "{status:?}");
    // Failures are not cached as "no groups": still cannot decide, never a 403.
    unavailable(&s, "alice", TEAM_A).await;

    let resp = answered(&s, "alice", SIGNED_IN).await;
    assert_eq!(
        header_options(&allowed(&resp).headers)["x-forwarded-user"].value,
        "alice"
    );
    allowed(
        &s.client
            .clone()
            .check(check_request("GET", HOST, PUBLIC, &[]))
            .await
            .unwrap()
            .into_inner(),
    );
}

#[tokio::test]
async fn unknown_gerrit_account_gets_403_and_is_not_looked_up_again_within_not_found_ttl() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit).await;

    let d = denied(&answered(&s, "carol", TEAM_A).await);
    assert_eq!(d.http_status, 403);
    assert_eq!(d.header("www-authenticate"), None);
    assert_eq!(
        d.json,
        json!({
            "error": "access_denied",
            "reason": "not a member of any group allowed on this route",
            "request_id": REQUEST_ID,
        })
    );
    assert_eq!(gerrit.requests_for("carol"), 1);

    // The test config's not_found_ttl is 5 s: a second check right away is answered
    // from the cache.
    assert_eq!(
        denied(&answered(&s, "carol", TEAM_A).await).http_status,
        403
    );
    assert_eq!(gerrit.requests_for("carol"), 1);
}

#[tokio::test]
async fn wrong_gerrit_password_makes_group_routes_unavailable_never_allowed() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let wrong = "not-the-http-password";
    let s = start_with(&gerrit, wrong, |y| y).await;

    for user in ["alice", "carol"] {
        let status = unavailable(&s, user, TEAM_A).await;
        assert!(
            status.message().contains("credentials"),
            "the operator is told what to fix: {status:?}"
        );
        assert!(
            !status.message().contains(wrong) && !status.message().contains(PASSWORD),
            "the password leaked: {status:?}"
        );
    }
    assert!(gerrit.requests_for("alice") >= 1, "Gerrit was asked");
    // Not cached: the next check asks again rather than serving a remembered failure.
    let before = gerrit.requests_for("alice");
    unavailable(&s, "alice", TEAM_A).await;
    assert!(gerrit.requests_for("alice") > before);
    // Routes without groups do not depend on Gerrit.
    allowed(&answered(&s, "alice", SIGNED_IN).await);
}

#[tokio::test]
async fn concurrent_checks_share_one_failed_gerrit_lookup() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    // Slow enough that every check arrives while the one lookup is under way (a failure
    // is not cached, so a late arrival would ask again).
    gerrit.set_delay(Duration::from_millis(300));
    let s = start_with(&gerrit, "not-the-http-password", |y| y).await;
    let token = bearer(&tokens::token_for("alice"));
    let checks = (0..50).map(|_| {
        let req = check_request("GET", HOST, TEAM_A, &[("authorization", &token)]);
        let mut client = s.client.clone();
        async move { client.check(req).await.map(|r| r.into_inner()) }
    });
    for resp in futures::future::join_all(checks).await {
        let err = resp.expect_err("a rejected service account must never allow");
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }
    assert_eq!(
        gerrit.requests_for("alice"),
        1,
        "a credentials error is not retried and is shared"
    );
}

#[tokio::test]
async fn fixing_the_gerrit_password_file_restores_group_routes_without_a_restart() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start_with(&gerrit, "stale-password", |y| {
        y.replace("gerrit:\n", "gerrit:\n  password_reload_interval: 100ms\n")
    })
    .await;
    unavailable(&s, "alice", TEAM_A).await;

    std::fs::write(s.file("gerrit-password"), format!("{PASSWORD}\n")).unwrap();
    // Bounded wait for the reloader (every 100 ms) to pick the new password up.
    for _ in 0..100 {
        if let Ok(resp) = check_as(&s, "alice", TEAM_A).await {
            assert_eq!(injected_groups(&resp), "Registered Users,team-a");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the corrected password file was never used");
}

#[tokio::test]
async fn an_account_name_with_path_characters_reaches_gerrit_only_as_a_query_value() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit).await;
    // In a path, `/a/accounts/../accounts/alice/groups/` would be alice's groups.
    let sneaky = "../accounts/alice";
    assert_eq!(denied(&answered(&s, sneaky, TEAM_A).await).http_status, 403);
    assert_eq!(gerrit.requests_for(sneaky), 1, "queried as a username");
    assert_eq!(gerrit.requests_for("alice"), 0);
    assert_eq!(gerrit.group_lists_for("alice"), 0);
}

#[tokio::test]
async fn token_users_named_self_or_me_do_not_get_the_service_accounts_groups() {
    let gerrit = FakeGerrit::start().await;
    // The service account mesh-authz logs in as is in powerful groups.
    gerrit.set_groups(USERNAME, &["team-a", "Administrators"]);
    let s = start(&gerrit).await;
    for id in ["self", "me"] {
        // Gerrit resolves these ids to the caller: the service account.
        assert!(
            groups_gerrit_reports(&gerrit, id)
                .await
                .contains(&"team-a".to_string()),
            "the fake must resolve {id:?} like Gerrit does"
        );
        let d = denied(&answered(&s, id, TEAM_A).await);
        assert_eq!(d.http_status, 403, "{id}");
    }
}

#[tokio::test]
async fn token_users_in_gerrit_display_forms_do_not_get_another_accounts_groups() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start(&gerrit).await;
    // Gerrit reads `Name (1000000)` as account 1000000 and `Name <email>` as that email's
    // account; neither is a username, an email or a numeric id as a token would carry it.
    let id = gerrit.account_id("alice");
    for user in [
        format!("Mallory ({id})"),
        "Mallory <alice@example.com>".to_string(),
    ] {
        assert!(
            groups_gerrit_reports(&gerrit, &user)
                .await
                .contains(&"team-a".to_string()),
            "the fake must resolve {user:?} like Gerrit does"
        );
        let d = denied(&answered(&s, &user, TEAM_A).await);
        assert_eq!(d.http_status, 403, "{user}");
    }
}

#[tokio::test]
async fn a_token_user_gerrit_finds_only_by_a_name_search_gets_no_groups() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account_named("jsmith", "John Smith", &["team-a"]);
    let s = start(&gerrit).await;
    // A new IdP user "smith" has no Gerrit account; Gerrit's resolver falls back to a
    // search and finds the unique "John Smith" (and so it does for the full name).
    for id in ["smith", "John Smith"] {
        assert!(
            groups_gerrit_reports(&gerrit, id)
                .await
                .contains(&"team-a".to_string()),
            "the fake must resolve {id:?} like Gerrit does"
        );
        let asked = gerrit.group_lists_for("jsmith");
        let d = denied(&answered(&s, id, TEAM_A).await);
        assert_eq!(d.http_status, 403, "{id}");
        assert_eq!(
            gerrit.group_lists_for("jsmith"),
            asked,
            "{id}: John Smith's groups never asked for"
        );
    }
    allowed(&answered(&s, "jsmith", TEAM_A).await);
}

#[tokio::test]
async fn a_numeric_username_gets_its_own_groups_not_those_of_the_account_with_that_number() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    // Employee numbers as usernames: one of them is also alice's account number.
    let colliding = gerrit.account_id("alice").to_string();
    gerrit.add_account(&colliding, &["reviewers"]);
    let in_team_a = "4711";
    gerrit.add_account(in_team_a, &["team-a"]);
    let s = start(&gerrit).await;
    // Gerrit reads a string of digits as an account number: alice.
    assert!(
        groups_gerrit_reports(&gerrit, &colliding)
            .await
            .contains(&"team-a".to_string()),
        "the fake must resolve {colliding:?} like Gerrit does"
    );

    let asked = gerrit.group_lists_for("alice");
    let d = denied(&answered(&s, &colliding, TEAM_A).await);
    assert_eq!(d.http_status, 403, "user {colliding} is not in team-a");
    assert_eq!(
        gerrit.group_lists_for("alice"),
        asked,
        "alice's groups never asked for"
    );
    assert_eq!(gerrit.group_lists_for(&colliding), 1, "its own were");
    // Its own groups, on a route that shows them.
    let resp = answered(&s, in_team_a, TEAM_A).await;
    assert_eq!(injected_groups(&resp), "Registered Users,team-a");
    assert_eq!(gerrit.group_lists_for(in_team_a), 1);
}
