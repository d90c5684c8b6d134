//! Check over gRPC against the real server: allow, 401, 403, groups from a fake Gerrit,
//! forged headers, coalesced Gerrit calls, Gerrit down, key rotation.

mod support;

use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use support::gerrit::{FakeGerrit, PASSWORD};
use support::idp::FakeIdp;
use support::server::{check_request, config, gerrit_section, TestServer};
use support::tokens;

const GERRIT: &str = "gerrit.example.com";

async fn with_static_groups() -> TestServer {
    let jwks = tokens::jwks(&["rsa-a", "ec-a"]).to_string();
    let yaml = config(
        "file: jwks.json",
        "static_groups: {alice: [team-a], bob: [team-b]}",
    );
    TestServer::start(&yaml, &[("jwks.json", &jwks)]).await
}

async fn with_gerrit(gerrit: &FakeGerrit, password: &str) -> TestServer {
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let yaml = config("file: jwks.json", &gerrit_section(&gerrit.url()));
    TestServer::start(
        &yaml,
        &[("jwks.json", &jwks), ("gerrit-password", password)],
    )
    .await
}

async fn check(
    s: &mut TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<CheckResponse, tonic::Status> {
    s.client
        .check(check_request("GET", GERRIT, path, headers))
        .await
        .map(|r| r.into_inner())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn ok(resp: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(
        resp.status.as_ref().map(|s| s.code),
        Some(0),
        "status must be set to OK"
    );
    match &resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("expected ok_response, got {other:?}"),
    }
}

fn denied(resp: &CheckResponse) -> (u16, HashMap<String, String>, Value, String) {
    assert_ne!(resp.status.as_ref().map(|s| s.code), Some(0));
    let Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
        status,
        headers,
        body,
    })) = &resp.http_response
    else {
        panic!("expected denied_response, got {:?}", resp.http_response);
    };
    let headers = headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    let json = serde_json::from_str(body).expect("denial body is JSON");
    (
        status.as_ref().map_or(0, |s| s.code as u16),
        headers,
        json,
        body.clone(),
    )
}

/// Header name → (value, append) as the response sets it.
fn set_headers(ok: &OkHttpResponse) -> HashMap<String, (String, Option<bool>)> {
    #[allow(deprecated)]
    ok.headers
        .iter()
        .map(|o| {
            let h = o.header.as_ref().unwrap();
            (
                h.key.clone(),
                (h.value.clone(), o.append.as_ref().map(|a| a.value)),
            )
        })
        .collect()
}

#[tokio::test]
async fn allowed_request_sets_identity_headers_removes_authorization_and_fills_metadata() {
    let mut s = with_static_groups().await;
    let token = bearer(&tokens::token_for("alice"));
    let resp = check(
        &mut s,
        "/a/projects/team-a/branches?n=1",
        &[("authorization", &token)],
    )
    .await
    .unwrap();
    let ok = ok(&resp);
    let set = set_headers(ok);
    assert_eq!(set["x-forwarded-user"], ("alice".to_string(), Some(false)));
    assert_eq!(
        set["x-forwarded-email"],
        ("alice@example.com".to_string(), Some(false))
    );
    assert_eq!(
        set["x-forwarded-groups"],
        ("team-a".to_string(), Some(false))
    );
    assert_eq!(ok.headers_to_remove, vec!["authorization".to_string()]);
    let meta = resp.dynamic_metadata.expect("dynamic metadata");
    let field = |k: &str| format!("{:?}", meta.fields[k].kind);
    assert!(field("user").contains("alice"));
    assert!(field("route").contains("gerrit-team-a"));
    assert!(field("groups").contains("team-a"));
}

#[tokio::test]
async fn es256_tokens_are_accepted_too() {
    let mut s = with_static_groups().await;
    let token = bearer(&tokens::sign("ec-a", &tokens::claims("alice")));
    let resp = check(&mut s, "/a/projects/team-a/x", &[("authorization", &token)])
        .await
        .unwrap();
    ok(&resp);
}

#[tokio::test]
async fn client_sent_identity_header_is_overwritten_and_stripped_on_public_routes() {
    let mut s = with_static_groups().await;
    let token = bearer(&tokens::token_for("alice"));
    let resp = check(
        &mut s,
        "/c/x",
        &[("authorization", &token), ("x-forwarded-user", "admin")],
    )
    .await
    .unwrap();
    assert_eq!(
        set_headers(ok(&resp))["x-forwarded-user"],
        ("alice".to_string(), Some(false))
    );

    let resp = check(&mut s, "/", &[("x-forwarded-user", "admin")])
        .await
        .unwrap();
    let ok = ok(&resp);
    assert!(ok.headers.is_empty());
    // Every identity header any route injects is removed, not just this route's own.
    assert_eq!(
        ok.headers_to_remove,
        vec![
            "x-forwarded-user".to_string(),
            "x-forwarded-email".into(),
            "x-forwarded-groups".into()
        ]
    );
}

#[tokio::test]
async fn missing_token_is_401_with_a_bare_bearer_challenge() {
    let mut s = with_static_groups().await;
    let resp = check(&mut s, "/a/projects/team-a/x", &[]).await.unwrap();
    let (status, headers, body, _) = denied(&resp);
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"mesh-authz\"");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["reason"], "no token in the request");
    assert_eq!(body["request_id"], "4b1a6c3e-1d7f-4a0e-9a51-2f7c0d0e9b21");
}

#[tokio::test]
async fn bad_tokens_get_401_invalid_token_with_the_reason_and_no_token_contents() {
    let mut s = with_static_groups().await;
    let mut expired = tokens::claims("alice");
    expired["exp"] = (tokens::now() - 3600).into();
    let mut future = tokens::claims("alice");
    future["nbf"] = (tokens::now() + 3600).into();
    let mut wrong_aud = tokens::claims("alice");
    wrong_aud["aud"] = "someone-else".into();
    let mut wrong_iss = tokens::claims("alice");
    wrong_iss["iss"] = "https://evil.example.com".into();
    let good = tokens::token_for("alice");
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_payload = {
        use base64::Engine;
        let mut claims = tokens::claims("admin");
        claims["exp"] = (tokens::now() + 7200).into();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
    };
    parts[1] = &forged_payload;
    let tampered = parts.join(".");
    // Signed with key B but claiming to be key A.
    let other_key = tokens::sign("rsa-b", &tokens::claims("alice")).replacen(
        &jwt_header("rsa-b"),
        &jwt_header("rsa-a"),
        1,
    );

    let cases = [
        (tokens::sign("rsa-a", &expired), "token expired"),
        (tokens::sign("rsa-a", &future), "token not yet valid"),
        (tokens::sign("rsa-a", &wrong_aud), "audience not accepted"),
        (tokens::sign("rsa-a", &wrong_iss), "issuer not accepted"),
        (tampered, "invalid signature"),
        (other_key, "invalid signature"),
        ("not.a.jwt".to_string(), "malformed token"),
        ("x".repeat(9000), "token too large"),
    ];
    for (token, reason) in cases {
        let resp = check(
            &mut s,
            "/a/projects/team-a/x",
            &[("authorization", &bearer(&token))],
        )
        .await
        .unwrap();
        let (status, headers, body, raw) = denied(&resp);
        assert_eq!(status, 401, "{reason}");
        assert_eq!(body["error"], "invalid_token", "{reason}");
        assert_eq!(body["reason"], reason);
        assert_eq!(
            headers["www-authenticate"],
            format!("Bearer realm=\"mesh-authz\", error=\"invalid_token\", error_description=\"{reason}\"")
        );
        assert!(
            !raw.contains("alice") && !raw.contains("admin"),
            "claims leaked: {raw}"
        );
        assert!(
            !raw.contains(&token[..token.len().min(20)]),
            "token leaked: {raw}"
        );
    }
}

/// The base64url header of a fixture-signed token, to swap `kid`s.
fn jwt_header(kid: &str) -> String {
    tokens::sign(kid, &tokens::claims("x"))
        .split('.')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn valid_token_outside_the_group_is_403_and_unmatched_host_is_403() {
    let mut s = with_static_groups().await;
    let token = bearer(&tokens::token_for("bob"));
    let resp = check(&mut s, "/a/projects/team-a/x", &[("authorization", &token)])
        .await
        .unwrap();
    let (status, headers, body, raw) = denied(&resp);
    assert_eq!(status, 403);
    assert!(!headers.contains_key("www-authenticate"));
    assert_eq!(body["error"], "access_denied");
    assert!(!raw.contains("bob"));

    let resp = s
        .client
        .check(check_request(
            "GET",
            "elsewhere.example.com",
            "/",
            &[("authorization", &token)],
        ))
        .await
        .unwrap()
        .into_inner();
    let (status, _, body, _) = denied(&resp);
    assert_eq!(status, 403);
    assert_eq!(body["reason"], "no route allows this request");
}

#[tokio::test]
async fn gerrit_groups_decide_allow_and_deny() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    gerrit.add_account("bob", &["team-b"]);
    let mut s = with_gerrit(&gerrit, PASSWORD).await;

    let alice = bearer(&tokens::token_for("alice"));
    let resp = check(&mut s, "/a/projects/team-a/x", &[("authorization", &alice)])
        .await
        .unwrap();
    let groups = &set_headers(ok(&resp))["x-forwarded-groups"].0;
    assert_eq!(groups, "Registered Users,team-a");

    let bob = bearer(&tokens::token_for("bob"));
    let resp = check(&mut s, "/a/projects/team-a/x", &[("authorization", &bob)])
        .await
        .unwrap();
    assert_eq!(denied(&resp).0, 403);
    assert_eq!(gerrit.requests_for("alice"), 1);
    assert_eq!(gerrit.requests_for("bob"), 1);
}

#[tokio::test]
async fn hundred_concurrent_checks_for_a_new_user_make_one_gerrit_call() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    gerrit.set_delay(Duration::from_millis(200));
    let s = with_gerrit(&gerrit, PASSWORD).await;
    let token = bearer(&tokens::token_for("alice"));
    let calls = (0..100).map(|_| {
        let mut client = s.client.clone();
        let req = check_request(
            "GET",
            GERRIT,
            "/a/projects/team-a/x",
            &[("authorization", &token)],
        );
        async move { client.check(req).await.map(|r| r.into_inner()) }
    });
    let results = futures::future::join_all(calls).await;
    for r in &results {
        ok(r.as_ref().expect("check answered"));
    }
    assert_eq!(gerrit.requests_for("alice"), 1);
}

#[tokio::test]
async fn unknown_gerrit_account_has_no_groups_and_the_404_is_cached() {
    let gerrit = FakeGerrit::start().await;
    let mut s = with_gerrit(&gerrit, PASSWORD).await;
    let token = bearer(&tokens::token_for("carol"));
    for _ in 0..3 {
        let resp = check(&mut s, "/a/projects/team-a/x", &[("authorization", &token)])
            .await
            .unwrap();
        assert_eq!(denied(&resp).0, 403);
    }
    assert_eq!(
        gerrit.requests_for("carol"),
        1,
        "404 is cached for not_found_ttl"
    );
}

#[tokio::test]
async fn gerrit_down_means_cannot_decide_for_group_routes_only() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    gerrit.stop();
    let mut s = with_gerrit(&gerrit, PASSWORD).await;
    let token = bearer(&tokens::token_for("alice"));
    let err = check(&mut s, "/a/projects/team-a/x", &[("authorization", &token)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("Gerrit"), "{}", err.message());
    let resp = check(&mut s, "/c/x", &[("authorization", &token)])
        .await
        .unwrap();
    ok(&resp);
}

#[tokio::test]
async fn wrong_gerrit_password_never_allows() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let mut s = with_gerrit(&gerrit, "not-the-password").await;
    let token = bearer(&tokens::token_for("alice"));
    let err = check(&mut s, "/a/projects/team-a/x", &[("authorization", &token)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("credentials"), "{}", err.message());
}

async fn wait_ready(s: &TestServer) {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        let r = http.get(format!("{}/readyz", s.admin_url())).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server never became ready");
}

#[tokio::test]
async fn a_new_signing_key_is_picked_up_by_one_refetch_and_random_kids_do_not_storm_the_idp() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    // A refetch interval far longer than the test, so the bound below does not depend on
    // how fast this machine answers a thousand checks.
    let yaml = config(
        &format!("url: \"{}\"", idp.jwks_url()),
        "static_groups: {alice: [team-a]}",
    )
    .replace("min_refetch_interval: 1s", "min_refetch_interval: 1h");
    let mut s = TestServer::start(&yaml, &[]).await;
    wait_ready(&s).await;
    let initial = idp.fetches();
    assert_eq!(initial, 1);

    idp.publish(tokens::jwks(&["rsa-a", "rsa-b"]));
    let rotated = bearer(&tokens::sign("rsa-b", &tokens::claims("alice")));
    let resp = check(&mut s, "/c/x", &[("authorization", &rotated)])
        .await
        .unwrap();
    ok(&resp);
    assert_eq!(idp.fetches(), initial + 1, "one refetch for the new kid");

    // A flood of 1000 concurrent tokens with random kids, within min_refetch_interval of
    // that refetch: the IdP sees no further fetch.
    let signed = tokens::sign("rsa-a", &tokens::claims("mallory"));
    let before = idp.fetches();
    let flood = (0..1000).map(|i| {
        let token = signed.replacen(&jwt_header("rsa-a"), &kid_header(&format!("random-{i}")), 1);
        let req = check_request("GET", GERRIT, "/c/x", &[("authorization", &bearer(&token))]);
        let mut client = s.client.clone();
        async move { client.check(req).await.unwrap().into_inner() }
    });
    for resp in futures::future::join_all(flood).await {
        let (status, _, body, _) = denied(&resp);
        assert_eq!(status, 401);
        assert_eq!(body["reason"], "unknown key id");
    }
    assert_eq!(
        idp.fetches(),
        before,
        "fetches: {before} before the flood, {} after",
        idp.fetches()
    );
}

/// A base64url JWT header for RS256 with the given kid.
fn kid_header(kid: &str) -> String {
    use base64::Engine;
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": kid});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string())
}

#[tokio::test]
async fn jwks_never_loaded_means_cannot_decide_but_public_routes_work() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    idp.set_failing(true);
    let yaml = config(
        &format!("url: \"{}\"", idp.jwks_url()),
        "static_groups: {alice: [team-a]}",
    );
    let mut s = TestServer::start(&yaml, &[]).await;
    let token = bearer(&tokens::token_for("alice"));
    let err = check(&mut s, "/c/x", &[("authorization", &token)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    ok(&check(&mut s, "/", &[]).await.unwrap());
    let ready = reqwest::get(format!("{}/readyz", s.admin_url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    idp.set_failing(false);
    wait_ready(&s).await;
    ok(&check(&mut s, "/c/x", &[("authorization", &token)])
        .await
        .unwrap());
}

#[tokio::test]
async fn a_withdrawn_key_stops_working_after_the_next_refresh_even_for_cached_tokens() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a", "rsa-b"])).await;
    let yaml = config(
        &format!("url: \"{}\", refresh_interval: 100ms", idp.jwks_url()),
        "static_groups: {alice: [team-a]}",
    );
    let mut s = TestServer::start(&yaml, &[]).await;
    wait_ready(&s).await;
    let token = bearer(&tokens::sign("rsa-b", &tokens::claims("alice")));
    // Verified once, and again from the verified-token cache.
    ok(&check(&mut s, "/c/x", &[("authorization", &token)])
        .await
        .unwrap());
    ok(&check(&mut s, "/c/x", &[("authorization", &token)])
        .await
        .unwrap());

    idp.publish(tokens::jwks(&["rsa-a"]));
    let mut rejected = false;
    for _ in 0..100 {
        let resp = check(&mut s, "/c/x", &[("authorization", &token)])
            .await
            .unwrap();
        if resp.status.as_ref().map(|st| st.code) != Some(0) {
            let (status, _, body, _) = denied(&resp);
            assert_eq!(status, 401);
            assert_eq!(body["reason"], "unknown key id");
            rejected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        rejected,
        "a token signed by a withdrawn key was still accepted"
    );
}

#[tokio::test]
async fn keys_found_through_oidc_discovery_verify_tokens() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let yaml = config("discovery: true", "static_groups: {alice: [team-a]}")
        .replace(tokens::ISSUER, &idp.issuer());
    let mut s = TestServer::start(&yaml, &[]).await;
    wait_ready(&s).await;
    let mut claims = tokens::claims("alice");
    claims["iss"] = idp.issuer().into();
    let token = bearer(&tokens::sign("rsa-a", &claims));
    let resp = check(&mut s, "/c/x", &[("authorization", &token)])
        .await
        .unwrap();
    assert_eq!(set_headers(ok(&resp))["x-forwarded-user"].0, "alice");
    assert_eq!(idp.fetches(), 1, "the JWKS named by jwks_uri was fetched");
}

#[tokio::test]
async fn a_route_can_take_the_token_from_a_cookie_or_an_opted_in_query_parameter() {
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let yaml = config("file: jwks.json", "static_groups: {alice: [team-a]}").replacen(
        "routes:\n",
        "routes:\n  - name: ui\n    match: {hosts: [ui.example.com]}\n    allow: authenticated\n    token_from: [\"cookie:session\", \"query:access_token\"]\n    inject: {user: x-forwarded-user}\n",
        1,
    );
    let s = TestServer::start(&yaml, &[("jwks.json", &jwks)]).await;
    let token = tokens::token_for("alice");
    let ask = |path: String, headers: Vec<(&'static str, String)>| {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let req = check_request("GET", "ui.example.com", &path, &h);
        let mut client = s.client.clone();
        async move { client.check(req).await.unwrap().into_inner() }
    };

    let resp = ask(
        "/".into(),
        vec![("cookie", format!("theme=dark; session={token}"))],
    )
    .await;
    assert_eq!(set_headers(ok(&resp))["x-forwarded-user"].0, "alice");

    let resp = ask(format!("/dashboard?access_token={token}&tab=2"), vec![]).await;
    let allowed = ok(&resp);
    assert_eq!(set_headers(allowed)["x-forwarded-user"].0, "alice");
    assert_eq!(
        allowed.query_parameters_to_remove,
        vec!["access_token".to_string()]
    );

    // This route does not read the Authorization header.
    let resp = ask(
        "/".into(),
        vec![("authorization", format!("Bearer {token}"))],
    )
    .await;
    let (status, _, body, _) = denied(&resp);
    assert_eq!(status, 401);
    assert_eq!(body["reason"], "no token in the request");
}

#[tokio::test]
async fn when_the_idp_fails_cached_keys_serve_until_max_staleness_then_checks_cannot_be_decided() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let yaml = config(
        &format!(
            "url: \"{}\", refresh_interval: 50ms, max_staleness: 1s",
            idp.jwks_url()
        ),
        "static_groups: {alice: [team-a]}",
    );
    let mut s = TestServer::start(&yaml, &[]).await;
    wait_ready(&s).await;
    let token = bearer(&tokens::token_for("alice"));
    // Verified once: from here on the verified-token cache answers for it.
    ok(&check(&mut s, "/c/x", &[("authorization", &token)])
        .await
        .unwrap());
    idp.set_failing(true);
    // Right after the IdP starts failing, the last good keys still serve.
    ok(&check(&mut s, "/c/x", &[("authorization", &token)])
        .await
        .unwrap());
    let mut unavailable = false;
    for _ in 0..100 {
        match check(&mut s, "/c/x", &[("authorization", &token)]).await {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                unavailable = true;
                break;
            }
            Ok(resp) => {
                ok(&resp);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(unavailable, "stale keys were used beyond max_staleness");
    let ready = reqwest::get(format!("{}/readyz", s.admin_url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}
