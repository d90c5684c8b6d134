//! OTLP traces from the real `mesh-authz serve`, received by an in-test collector: the
//! Check span joins the caller's trace, token verification, JWKS fetches and Gerrit
//! requests are its children, Gerrit sees the same trace, attributes carry no secret,
//! and a collector that is down or stalled changes no decision.

mod support;

use std::time::Duration;
use support::gerrit::FakeGerrit;
use support::idp::FakeIdp;
use support::otlp::{Receiver, Span};
use support::serve::Served;
use support::server::{check_request, gerrit_section, HOST, TEAM_A};
use support::{gerrit, tokens};
use tonic::Request;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ENVOY_SPAN: &str = "00f067aa0ba902b7";

/// The standard test routes against `idp`'s JWKS and `gerrit`, with `extra` appended.
fn config(idp: &FakeIdp, gerrit: &FakeGerrit, extra: &str) -> String {
    let yaml = support::server::config(
        &format!("url: {}", idp.jwks_url()),
        &gerrit_section(&gerrit.url()),
    );
    format!("{yaml}\n{extra}")
}

/// `serve` with alice in team-a at a fake Gerrit, keys from a fake IdP, and `telemetry`
/// (a `telemetry:` section) exporting every 50 ms.
async fn serve_with_telemetry(telemetry: &str) -> (Served, FakeGerrit, FakeIdp) {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let served = Served::start(
        &config(&idp, &gerrit, telemetry),
        &[("gerrit-password", gerrit::PASSWORD)],
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    )
    .await;
    served.wait_ready().await;
    (served, gerrit, idp)
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// A Check of `GET TEAM_A` with `token`, the caller's span in the call's metadata.
fn team_a_check(
    token: &str,
    metadata: Option<&str>,
) -> Request<envoy_types::pb::envoy::service::auth::v3::CheckRequest> {
    let mut request = Request::new(check_request(
        "GET",
        HOST,
        TEAM_A,
        &[("authorization", &tokens::bearer(token))],
    ));
    if let Some(traceparent) = metadata {
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
    }
    request
}

/// `serve` with alice in team-a at a fake Gerrit, keys from a fake IdP, exporting over
/// gRPC to `receiver` with the variables `env` added.
async fn serve_exporting_to(
    receiver: &Receiver,
    env: &[(&str, &str)],
) -> (Served, FakeGerrit, FakeIdp) {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let endpoint = format!("http://{}", receiver.grpc);
    let mut all = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ];
    all.extend_from_slice(env);
    let served = Served::start(
        &config(&idp, &gerrit, ""),
        &[("gerrit-password", gerrit::PASSWORD)],
        &all,
    )
    .await;
    served.wait_ready().await;
    (served, gerrit, idp)
}

#[tokio::test]
async fn the_check_span_joins_envoys_trace_with_token_jwks_and_gerrit_spans_below_it() {
    let receiver = Receiver::start().await;
    let (served, gerrit, idp) = serve_exporting_to(
        &receiver,
        &[
            ("OTEL_SERVICE_NAME", "authz-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    // The IdP rotates in a key the server has not fetched: this Check refetches the JWKS.
    idp.publish(tokens::jwks(&["rsa-a", "rsa-b"]));
    let token = tokens::sign("rsa-b", &tokens::claims("alice"));
    let envoy_span = format!("00-{TRACE}-{ENVOY_SPAN}-01");
    let answer = served
        .client()
        .await
        .check(team_a_check(&token, Some(&envoy_span)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status.unwrap().code, 0, "allowed");

    let spans = receiver
        .wait_for("the Check span", |spans| {
            spans.iter().any(|s| s.trace_id == TRACE && s.kind == 2)
        })
        .await;
    let in_trace: Vec<Span> = spans.into_iter().filter(|s| s.trace_id == TRACE).collect();
    let check = named(&in_trace, "envoy.service.auth.v3.Authorization/Check");
    let [check] = check.as_slice() else {
        panic!("one Check span expected: {in_trace:#?}");
    };
    assert_eq!(check.parent_span_id, ENVOY_SPAN, "a child of Envoy's span");
    assert_eq!(check.service, "authz-under-test");
    assert_eq!(check.attribute("mesh_authz.route"), Some("gerrit-team-a"));
    assert_eq!(check.attribute("mesh_authz.decision"), Some("allow"));
    assert!(check.attribute("mesh_authz.reason").is_some(), "{check:#?}");
    assert!(check.attribute("mesh_authz.rule").is_some(), "{check:#?}");
    assert_eq!(
        check.attribute("enduser.id"),
        None,
        "the user is personal data, off by default"
    );

    let verify = named(&in_trace, "verify token");
    let [verify] = verify.as_slice() else {
        panic!("one token span expected: {in_trace:#?}");
    };
    assert_eq!(verify.parent_span_id, check.span_id);
    assert_eq!(verify.attribute("mesh_authz.token_cache"), Some("miss"));
    assert_eq!(verify.attribute("mesh_authz.issuer"), Some(tokens::ISSUER));
    let jwks = named(&in_trace, "JWKS fetch");
    let [jwks] = jwks.as_slice() else {
        panic!("one JWKS fetch in the Check expected: {in_trace:#?}");
    };
    assert_eq!(jwks.parent_span_id, verify.span_id, "fetched for the token");
    assert_eq!(jwks.attribute("mesh_authz.outcome"), Some("ok"));

    let gerrit_spans = named(&in_trace, "Gerrit GET");
    assert!(
        gerrit_spans.len() >= 2,
        "the account query and its groups: {in_trace:#?}"
    );
    for span in &gerrit_spans {
        assert_eq!(span.parent_span_id, check.span_id, "{span:#?}");
        assert_eq!(span.attribute("mesh_authz.outcome"), Some("ok"));
        assert_eq!(span.kind, 3, "client");
    }
    let collections: Vec<&str> = gerrit_spans
        .iter()
        .filter_map(|s| s.attribute("mesh_authz.gerrit_collection"))
        .collect();
    assert!(collections.contains(&"accounts"), "{collections:?}");
    // Gerrit's own trace joins: each of its requests named one of these spans as parent.
    let gerrit_parents: Vec<String> = gerrit
        .traceparents()
        .into_iter()
        .filter(|t| t.contains(TRACE))
        .collect();
    assert_eq!(
        gerrit_parents.len(),
        gerrit_spans.len(),
        "{gerrit_parents:?}"
    );
    for traceparent in &gerrit_parents {
        let parent = traceparent.split('-').nth(2).unwrap();
        assert!(
            gerrit_spans.iter().any(|s| s.span_id == parent),
            "{traceparent} names no Gerrit span"
        );
    }

    // No token, password or header value among the attributes.
    for span in &in_trace {
        for (key, value) in &span.attributes {
            for secret in [token.as_str(), gerrit::PASSWORD, "Bearer", "alice"] {
                assert!(
                    !value.contains(secret),
                    "{} attribute {key}={value:?} carries {secret:?}",
                    span.name
                );
            }
        }
    }

    // A caller that did not sample its trace: the Check follows it and exports nothing.
    let unsampled_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    served
        .client()
        .await
        .check(team_a_check(
            &token,
            Some(&format!("00-{unsampled_trace}-{ENVOY_SPAN}-00")),
        ))
        .await
        .unwrap();

    // Later Checks: the token comes from the cache, still with its span. (The first
    // re-verifies once: its entry predates the key set it fetched.)
    let next = format!("00-{TRACE}-{}-01", "1111111111111111");
    for _ in 0..2 {
        served
            .client()
            .await
            .check(team_a_check(&token, Some(&next)))
            .await
            .unwrap();
    }
    let spans = receiver
        .wait_for("the cached token's span", |spans| {
            spans
                .iter()
                .any(|s| s.attribute("mesh_authz.token_cache") == Some("hit"))
        })
        .await;
    let hit = spans
        .iter()
        .find(|s| s.attribute("mesh_authz.token_cache") == Some("hit"))
        .unwrap();
    let parent = spans
        .iter()
        .find(|s| s.span_id == hit.parent_span_id)
        .expect("the cache hit's parent");
    assert_eq!(parent.kind, 2, "a Check span: {parent:#?}");
    assert_eq!(parent.parent_span_id, "1111111111111111");
    // Exported in order: the unsampled Check's spans would have come before these.
    assert!(
        !spans.iter().any(|s| s.trace_id == unsampled_trace),
        "an unsampled caller's Check was exported"
    );
    assert!(served.stop().await);
}

#[tokio::test]
async fn over_http_the_config_wins_and_a_b3_request_header_names_the_parent() {
    let receiver = Receiver::start().await;
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let telemetry = format!(
        "telemetry:\n  traces:\n    endpoint: http://{}/v1/traces\n    protocol: http/protobuf\n    service_name: from-config\n    include_user: true\n",
        receiver.http
    );
    let served = Served::start(
        &config(&idp, &gerrit, &telemetry),
        &[("gerrit-password", gerrit::PASSWORD)],
        &[
            // Said by the environment, overruled by the config.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "from-environment"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    served.wait_ready().await;
    // No trace context in the call's metadata (Envoy not tracing); the request carries B3.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let request = check_request(
        "GET",
        HOST,
        TEAM_A,
        &[
            (
                "authorization",
                &tokens::bearer(&tokens::token_for("alice")),
            ),
            ("x-b3-traceid", b3_trace),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ],
    );
    let answer = served
        .client()
        .await
        .check(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status.unwrap().code, 0);
    let spans = receiver
        .wait_for("the Check span over HTTP", |spans| {
            spans.iter().any(|s| s.kind == 2)
        })
        .await;
    let check = spans.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(check.service, "from-config");
    assert_eq!(check.trace_id, b3_trace);
    assert_eq!(check.parent_span_id, "e457b5a2e4d86bd1");
    assert_eq!(check.attribute("enduser.id"), Some("alice"), "include_user");
    assert!(served.stop().await);
}

#[tokio::test]
async fn a_stalled_collector_changes_no_decision_and_its_dropped_spans_are_counted() {
    // A collector that accepts connections and never answers: every export hangs until
    // its timeout, and the queue fills.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_addr = stalled.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = stalled.accept().await {
            open.push(socket);
        }
    });
    let (served, _gerrit, _idp) = serve_with_telemetry(&format!(
        "telemetry:\n  traces:\n    endpoint: http://{stalled_addr}\n    max_queue_size: 8\n    export_timeout: 30s\n"
    ))
    .await;
    let token = tokens::token_for("alice");
    let mut client = served.client().await;
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let started = std::time::Instant::now();
        let answer = client
            .check(team_a_check(&token, None))
            .await
            .unwrap()
            .into_inner();
        slowest = slowest.max(started.elapsed());
        assert_eq!(answer.status.unwrap().code, 0, "check {i} allowed");
    }
    // A check takes microseconds; an export waiting on the collector would take 30 s.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest check {slowest:?}"
    );
    let dropped = served.metric("mesh_authz_trace_spans_dropped_total").await;
    assert!(
        dropped >= 300.0,
        "dropped {dropped}; log:\n{}",
        served.log()
    );
    assert_eq!(
        served.metric("mesh_authz_trace_spans_exported_total").await,
        0.0
    );
    held.abort();
    // A dead collector (nothing listening): same answers.
    drop(served);
}

#[tokio::test]
async fn with_no_collector_listening_checks_are_answered_and_failed_exports_counted() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (served, _gerrit, _idp) = serve_with_telemetry(&format!(
        "telemetry:\n  traces:\n    endpoint: http://{closed}/v1/traces\n    protocol: http/protobuf\n"
    ))
    .await;
    let token = tokens::token_for("alice");
    let mut client = served.client().await;
    for i in 0..20 {
        let answer = client
            .check(team_a_check(&token, None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status.unwrap().code, 0, "check {i} allowed");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served
        .metric("mesh_authz_trace_spans_export_failed_total")
        .await
        == 0.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed export counted; log:\n{}",
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served.stop().await, "SIGTERM with an unreachable collector");
}

#[tokio::test]
async fn spans_still_queued_at_sigterm_reach_the_collector_before_the_process_exits() {
    let receiver = Receiver::start().await;
    // Nothing is sent on schedule during the test: only shutdown sends.
    let (served, _gerrit, _idp) =
        serve_exporting_to(&receiver, &[("OTEL_BSP_SCHEDULE_DELAY", "600000")]).await;
    let envoy_span = format!("00-{TRACE}-{ENVOY_SPAN}-01");
    let answer = served
        .client()
        .await
        .check(team_a_check(&tokens::token_for("alice"), Some(&envoy_span)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status.unwrap().code, 0, "allowed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.spans().is_empty(), "nothing sent before the delay");
    assert!(served.stop().await, "SIGTERM");
    let spans = receiver.spans();
    let check = named(&spans, "envoy.service.auth.v3.Authorization/Check");
    assert_eq!(
        check.len(),
        1,
        "the Check span, sent at shutdown: {spans:#?}"
    );
    assert_eq!(check[0].trace_id, TRACE);
}
