//! Health, reflection, the admin port and graceful shutdown of the real server.

mod support;

use std::time::Duration;
use support::clock::until;
use support::gerrit::{FakeGerrit, PASSWORD};
use support::idp::FakeIdp;
use support::server::{check_request, config, gerrit_section, TestServer, HOST};
use support::tokens;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

const CHECK_SERVICE: &str = "envoy.service.auth.v3.Authorization";

async fn static_server() -> TestServer {
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let yaml = config("file: jwks.json", "static_groups: {alice: [team-a]}");
    TestServer::start(&yaml, &[("jwks.json", &jwks)]).await
}

async fn channel(s: &TestServer) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", s.running().grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn health(s: &TestServer, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel(s).await);
    let resp = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(resp.status).unwrap()
}

async fn status_of(url: String) -> Option<u16> {
    reqwest::get(url).await.ok().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn health_follows_key_availability() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    idp.set_failing(true);
    let yaml = config(
        &format!("url: \"{}\"", idp.jwks_url()),
        "static_groups: {alice: [team-a]}",
    );
    let s = TestServer::start(&yaml, &[]).await;
    assert_eq!(health(&s, "").await, ServingStatus::NotServing);
    assert_eq!(health(&s, CHECK_SERVICE).await, ServingStatus::NotServing);
    // The metric the alerts watch says the same, per issuer.
    let loaded = format!(
        "mesh_authz_jwks_keys_loaded{{issuer=\"{}\"}}",
        tokens::ISSUER
    );
    let age = format!(
        "mesh_authz_jwks_age_seconds{{issuer=\"{}\"}}",
        tokens::ISSUER
    );
    assert!(s.metrics().await.contains(&format!("{loaded} 0")));
    assert!(!s.metrics().await.contains(&age), "never fetched: no age");
    idp.set_failing(false);
    until("health SERVING once keys load", || async {
        health(&s, CHECK_SERVICE).await == ServingStatus::Serving
    })
    .await;
    assert_eq!(health(&s, "").await, ServingStatus::Serving);
    assert_eq!(s.metric(&loaded).await, 1.0);
    assert!(s.metrics().await.contains(&age), "fetched: its age");
}

#[tokio::test]
async fn reflection_lists_check_and_health_and_serves_their_descriptors() {
    let s = static_server().await;
    let mut client = ServerReflectionClient::new(channel(&s).await);
    let ask = |req: MessageRequest| {
        tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(req),
        }])
    };
    let mut stream = client
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&CHECK_SERVICE.to_string()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    let mut stream = client
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            CHECK_SERVICE.into(),
        )))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn admin_port_reports_health_readiness_and_decision_metrics() {
    let mut s = static_server().await;
    let admin = s.admin_url();
    assert_eq!(status_of(format!("{admin}/healthz")).await, Some(200));
    assert_eq!(status_of(format!("{admin}/readyz")).await, Some(200));

    let token = tokens::bearer(&tokens::token_for("alice"));
    s.client
        .check(check_request(
            "GET",
            HOST,
            "/a/projects/team-a/x",
            &[("authorization", &token)],
        ))
        .await
        .unwrap();
    s.client
        .check(check_request("GET", HOST, "/a/projects/team-a/x", &[]))
        .await
        .unwrap();
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"mesh_authz_checks_total{decision="allow",reason="allowed",route="gerrit-team-a"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"mesh_authz_checks_total{decision="deny",reason="missing_token",route="gerrit-team-a"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("mesh_authz_check_duration_seconds_count{decision=\"allow\"} 1"));
}

#[tokio::test]
async fn shutdown_turns_readiness_false_first_and_finishes_in_flight_checks() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    gerrit.set_delay(Duration::from_millis(600));
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let yaml = config("file: jwks.json", &gerrit_section(&gerrit.url()))
        .replace("drain_delay: 0s", "drain_delay: 300ms");
    let mut s = TestServer::start(
        &yaml,
        &[("jwks.json", &jwks), ("gerrit-password", PASSWORD)],
    )
    .await;
    let admin = s.admin_url();
    let grpc_addr = s.running().grpc_addr;

    // A check that needs a slow Gerrit call is in flight...
    let token = tokens::bearer(&tokens::token_for("alice"));
    let mut client = s.client.clone();
    let in_flight = tokio::spawn(async move {
        client
            .check(check_request(
                "GET",
                HOST,
                "/a/projects/team-a/x",
                &[("authorization", &token)],
            ))
            .await
    });
    until("the Gerrit call started", || async {
        gerrit.total_requests() == 1
    })
    .await;

    // ...when shutdown begins: readiness is false at once, while the listener still serves.
    let server = s.server.take().unwrap();
    server.begin_shutdown();
    until("readyz 503 while draining", || async {
        status_of(format!("{admin}/readyz")).await == Some(503)
    })
    .await;
    let body = reqwest::get(format!("{admin}/readyz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("shutting down"), "{body}");

    server.wait().await.unwrap();
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight check completes");
    assert_eq!(resp.into_inner().status.unwrap().code, 0);
    assert!(
        tokio::net::TcpStream::connect(grpc_addr).await.is_err(),
        "the gRPC port is closed after shutdown"
    );
}

/// One gRPC health answer on an open channel.
async fn health_on(
    client: &HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    let status = client
        .clone()
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

#[tokio::test]
async fn on_shutdown_grpc_health_and_readyz_turn_not_ready_together() {
    // The first observation of either after shutdown begins, in either order, is "not
    // ready", and so is every later one while the listeners still answer.
    for round in 0..4 {
        let jwks = tokens::jwks(&["rsa-a"]).to_string();
        let yaml = config("file: jwks.json", "static_groups: {alice: [team-a]}")
            .replace("drain_delay: 0s", "drain_delay: 800ms");
        let mut s = TestServer::start(&yaml, &[("jwks.json", &jwks)]).await;
        let health = HealthClient::new(channel(&s).await);
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", s.admin_url());
        let readyz = || async { http.get(&url).send().await.unwrap().status().as_u16() };
        assert_eq!(
            health_on(&health, CHECK_SERVICE).await,
            ServingStatus::Serving
        );
        assert_eq!(readyz().await, 200);
        let mut watch = health
            .clone()
            .watch(HealthCheckRequest {
                service: CHECK_SERVICE.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let watched = |m: Option<tonic_health::pb::HealthCheckResponse>| {
            ServingStatus::try_from(m.unwrap().status).unwrap()
        };
        assert_eq!(
            watched(watch.message().await.unwrap()),
            ServingStatus::Serving
        );

        let server = s.server.take().unwrap();
        let shutdown_began = std::time::Instant::now();
        server.begin_shutdown();
        let first = if round % 2 == 0 {
            let h = health_on(&health, CHECK_SERVICE).await;
            (h, readyz().await)
        } else {
            let r = readyz().await;
            (health_on(&health, CHECK_SERVICE).await, r)
        };
        assert_eq!(first, (ServingStatus::NotServing, 503), "round {round}");
        assert_eq!(
            watched(watch.message().await.unwrap()),
            ServingStatus::NotServing
        );
        assert!(
            shutdown_began.elapsed() < Duration::from_millis(200),
            "a Watch stream hears of shutdown at once, not at its 250 ms key re-check"
        );
        assert!(
            watch.message().await.unwrap().is_none(),
            "and then ends, so it does not hold the graceful shutdown"
        );
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < until {
            for service in ["", CHECK_SERVICE] {
                assert_eq!(
                    (health_on(&health, service).await, readyz().await),
                    (ServingStatus::NotServing, 503),
                    "round {round}, service {service:?}"
                );
            }
        }
        server.wait().await.unwrap();
    }
}

#[tokio::test]
async fn dropping_a_users_cached_groups_makes_a_membership_change_take_effect_now() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-b"]);
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    // Invalidation needs the events token.
    let admin_token = "0d9e8f6f1c2d0e9a8b7c6d5e4f3a2b1c";
    let yaml = config("file: jwks.json", &gerrit_section(&gerrit.url())).replace(
        "gerrit:\n",
        "gerrit:\n  events: {token_file: events-token}\n",
    );
    let mut s = TestServer::start(
        &yaml,
        &[
            ("jwks.json", &jwks),
            ("gerrit-password", PASSWORD),
            ("events-token", admin_token),
        ],
    )
    .await;
    let token = tokens::bearer(&tokens::token_for("alice"));
    let req = || {
        check_request(
            "GET",
            HOST,
            "/a/projects/team-a/x",
            &[("authorization", &token)],
        )
    };
    let code = |r: envoy_types::pb::envoy::service::auth::v3::CheckResponse| r.status.unwrap().code;
    assert_eq!(code(s.client.check(req()).await.unwrap().into_inner()), 7);

    // alice joins team-a in Gerrit; the cached answer still says no...
    gerrit.set_groups("alice", &["team-a"]);
    assert_eq!(code(s.client.check(req()).await.unwrap().into_inner()), 7);
    assert_eq!(gerrit.group_lists_for("alice"), 1);

    // ...until the operator drops her entry.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!(
            "{}/cache/groups/invalidate?user=alice",
            s.admin_url()
        ))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(code(s.client.check(req()).await.unwrap().into_inner()), 0);
    assert_eq!(gerrit.group_lists_for("alice"), 2);

    // Dropping everything works the same way.
    gerrit.set_groups("alice", &["team-b"]);
    let resp = http
        .post(format!("{}/cache/groups/invalidate", s.admin_url()))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(code(s.client.check(req()).await.unwrap().into_inner()), 7);
    assert_eq!(gerrit.group_lists_for("alice"), 3);
}

#[tokio::test]
async fn a_rotated_gerrit_password_file_is_picked_up_without_a_restart() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let yaml = config("file: jwks.json", &gerrit_section(&gerrit.url()))
        .replace(
            "gerrit:\n",
            "gerrit:\n  password_reload_interval: 50ms\n  max_staleness: 0s\n",
        )
        .replace("cache_ttl: 60s", "cache_ttl: 1ms");
    let mut s = TestServer::start(
        &yaml,
        &[("jwks.json", &jwks), ("gerrit-password", PASSWORD)],
    )
    .await;
    let token = tokens::bearer(&tokens::token_for("alice"));
    let req = || {
        check_request(
            "GET",
            HOST,
            "/a/projects/team-a/x",
            &[("authorization", &token)],
        )
    };
    assert_eq!(
        s.client
            .check(req())
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
            .code,
        0
    );

    // Gerrit's password is rotated; until the Secret is updated, checks cannot be decided.
    gerrit.set_password("rotated-password");
    tokio::time::sleep(Duration::from_millis(5)).await; // let the 1 ms cache entry expire
    let err = s.client.check(req()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("credentials"), "{}", err.message());

    // Kubernetes updates the mounted file; mesh-authz follows without a restart.
    std::fs::write(s.file("gerrit-password"), "rotated-password\n").unwrap();
    let mut allowed = false;
    for _ in 0..200 {
        if let Ok(resp) = s.client.check(req()).await {
            if resp.into_inner().status.unwrap().code == 0 {
                allowed = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(allowed, "the rotated password was never used");
}
