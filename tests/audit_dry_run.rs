//! The audit log (one JSON line per decision, never a secret) and dry-run routes (decide,
//! report, allow), through the real server over gRPC.

mod support;

use serde_json::Value;
use support::responses::{allowed, denied, header_options};
use support::server::{check_request, config, TestServer, HOST, REQUEST_ID, STATIC_GROUPS, TEAM_A};
use support::tokens;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The standard test config with static groups, `edit` applied, auditing to `audit.jsonl`.
async fn start(edit: impl FnOnce(String) -> String) -> TestServer {
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let yaml = edit(config(
        "file: jwks.json",
        &format!("{STATIC_GROUPS}\naudit: {{output: audit.jsonl}}"),
    ));
    TestServer::start(&yaml, &[("jwks.json", &jwks)]).await
}

/// Shuts the server down (which flushes the audit log) and reads its lines.
async fn audit_lines(mut s: TestServer) -> (String, Vec<Value>) {
    s.server.take().unwrap().shutdown().await.unwrap();
    let text = std::fs::read_to_string(s.file("audit.jsonl")).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (text, lines)
}

async fn check(
    s: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<envoy_types::pb::envoy::service::auth::v3::CheckResponse, tonic::Status> {
    s.client
        .clone()
        .check(check_request("GET", HOST, path, headers))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn every_decision_is_one_audit_line_with_who_what_and_why_and_no_secrets() {
    let s = start(|y| y).await;
    let alice = tokens::token_for("alice");
    let bob = tokens::token_for("bob");
    let alice_bearer = tokens::bearer(&alice);
    let bob_bearer = tokens::bearer(&bob);
    let cookie = "GerritAccount=session-secret-4711";
    allowed(
        &check(
            &s,
            &format!("{TEAM_A}?access_token={alice}"),
            &[
                ("authorization", &alice_bearer),
                ("cookie", cookie),
                ("traceparent", TRACEPARENT),
            ],
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        denied(
            &check(&s, TEAM_A, &[("authorization", &bob_bearer)])
                .await
                .unwrap()
        )
        .http_status,
        403
    );
    assert_eq!(
        denied(&check(&s, TEAM_A, &[]).await.unwrap()).http_status,
        401
    );
    let (text, lines) = audit_lines(s).await;
    assert_eq!(lines.len(), 3, "{text}");
    for secret in [
        alice.as_str(),
        bob.as_str(),
        "session-secret-4711",
        "Bearer",
    ] {
        assert!(!text.contains(secret), "the audit log holds {secret:?}");
    }

    let allow = &lines[0];
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["reason"], "allowed");
    assert_eq!(allow["user"], "alice");
    assert_eq!(allow["issuer"], tokens::ISSUER);
    assert_eq!(allow["route"], "gerrit-team-a");
    assert_eq!(allow["rule"], "allow");
    assert_eq!(allow["method"], "GET");
    assert_eq!(allow["host"], HOST);
    assert_eq!(allow["path"], TEAM_A, "no query string");
    assert_eq!(allow["request_id"], REQUEST_ID);
    assert_eq!(allow["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        allow["principal"],
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    );
    assert_eq!(allow["dry_run"], false);
    assert!(allow["latency_us"].as_u64().is_some());
    assert!(
        allow["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "RFC 3339 with milliseconds: {}",
        allow["time"]
    );

    // A denied user is still named: who was turned away matters most.
    assert_eq!(lines[1]["decision"], "deny");
    assert_eq!(lines[1]["reason"], "not_in_group");
    assert_eq!(lines[1]["user"], "bob");
    assert_eq!(lines[1]["rule"], Value::Null);
    // And what was missing, for whoever reads the line: which group.
    assert_eq!(lines[1]["detail"], "not a member of name:team-a");
    assert_eq!(lines[2]["reason"], "missing_token");
    assert_eq!(lines[2]["detail"], "no token in the request");
    assert_eq!(lines[2]["user"], Value::Null);
    assert_eq!(allow["detail"], Value::Null);
}

#[tokio::test]
async fn the_audit_trace_id_is_envoys_span_from_the_call_metadata_before_the_request_headers() {
    // Envoy with tracing on sends its ext_authz span as gRPC metadata (`traceparent` with
    // the OpenTelemetry tracer, `x-b3-*` with Zipkin); the request's headers carry only
    // what the client sent, often nothing when the gateway starts the trace.
    let s = start(|y| y).await;
    let envoy_span = "00-0af7651916cd43dd8448eb211c80319c-61b1c487a68d07cb-01";
    let send = |metadata: &[(&'static str, &'static str)], headers: &[(&str, &str)]| {
        let mut request = tonic::Request::new(check_request("GET", HOST, TEAM_A, headers));
        for (name, value) in metadata {
            request.metadata_mut().insert(*name, value.parse().unwrap());
        }
        let mut client = s.client.clone();
        async move { client.check(request).await.unwrap() }
    };
    send(
        &[("traceparent", envoy_span)],
        &[("traceparent", TRACEPARENT)],
    )
    .await;
    send(&[("traceparent", envoy_span)], &[]).await;
    send(
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "830d31df16029876"),
        ],
        &[],
    )
    .await;
    send(&[], &[("traceparent", TRACEPARENT)]).await;
    send(
        &[("traceparent", "garbage")],
        &[("traceparent", TRACEPARENT)],
    )
    .await;
    send(&[], &[]).await;
    let (text, lines) = audit_lines(s).await;
    let trace_ids: Vec<Value> = lines.iter().map(|l| l["trace_id"].clone()).collect();
    let expected = serde_json::json!([
        "0af7651916cd43dd8448eb211c80319c", // metadata beats the client's header
        "0af7651916cd43dd8448eb211c80319c", // metadata only
        "463ac35c9f6413ad48485a3953bb6124", // B3 metadata
        "4bf92f3577b34da6a3ce929d0e0e4736", // no metadata: the client's header
        "4bf92f3577b34da6a3ce929d0e0e4736", // malformed metadata: the client's header
        null
    ]);
    assert_eq!(Value::from(trace_ids), expected, "{text}");
}

#[tokio::test]
async fn a_dry_run_route_passes_what_it_would_deny_as_it_came_without_identity_and_reports_it() {
    let s = start(|y| {
        y.replace(
            "    allow: {groups_any_of: [team-a]}\n",
            "    allow: {groups_any_of: [team-a]}\n    dry_run: true\n",
        )
    })
    .await;
    let bob = tokens::bearer(&tokens::token_for("bob"));
    let resp = check(
        &s,
        TEAM_A,
        &[("authorization", &bob), ("x-forwarded-user", "admin")],
    )
    .await
    .unwrap();
    let ok = allowed(&resp);
    assert!(
        header_options(&ok.headers).is_empty(),
        "no identity is passed on: {ok:?}"
    );
    for h in ["x-forwarded-user", "x-forwarded-groups"] {
        assert!(
            ok.headers_to_remove.iter().any(|r| r == h),
            "{h} removed: {ok:?}"
        );
    }
    // Shadow mode changes no traffic: the caller's own credentials go on (the route
    // removes Authorization only once it enforces).
    assert!(
        !ok.headers_to_remove.iter().any(|r| r == "authorization"),
        "{ok:?}"
    );
    // Would-be allows get the identity, and keep their Authorization too.
    let alice = tokens::bearer(&tokens::token_for("alice"));
    let resp = check(&s, TEAM_A, &[("authorization", &alice)])
        .await
        .unwrap();
    let ok = allowed(&resp);
    assert_eq!(
        header_options(&ok.headers)["x-forwarded-user"].value,
        "alice"
    );
    assert!(
        !ok.headers_to_remove.iter().any(|r| r == "authorization"),
        "{ok:?}"
    );
    // A request without a token (a 401 elsewhere) is let through too, anonymously.
    allowed(&check(&s, TEAM_A, &[]).await.unwrap());

    let denials = r#"mesh_authz_dry_run_decisions_total{route="gerrit-team-a",decision="deny",reason="not_in_group"}"#;
    assert_eq!(s.metric(denials).await, 1.0);
    let served =
        r#"mesh_authz_checks_total{decision="allow",reason="dry_run",route="gerrit-team-a"}"#;
    assert_eq!(s.metric(served).await, 2.0);

    let (_, lines) = audit_lines(s).await;
    assert_eq!(lines[0]["decision"], "deny", "what would have happened");
    assert_eq!(lines[0]["reason"], "not_in_group");
    assert_eq!(lines[0]["dry_run"], true);
    assert_eq!(lines[1]["decision"], "allow");
    assert_eq!(lines[2]["reason"], "missing_token");
}
