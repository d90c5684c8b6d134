//! End to end through a real Envoy 1.40: HTTP client → Envoy (ext_authz) → echo upstream,
//! with mesh-authz deciding over gRPC.

mod support;

use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use support::envoy::{require_envoy, start_upstream, Envoy, Seen};
use support::{server, tokens};

struct Stack {
    _authz: server::TestServer,
    envoy: Envoy,
    seen: Arc<Seen>,
    http: reqwest::Client,
}

impl Stack {
    /// mesh-authz with static groups (alice in team-a, bob not), Envoy, and the upstream.
    async fn start(groups: &str, files: &[(&str, &str)]) -> Option<Self> {
        let binary = require_envoy()?;
        let jwks = tokens::jwks(&["rsa-a"]).to_string();
        let mut all_files = vec![("jwks.json", jwks.as_str())];
        all_files.extend_from_slice(files);
        let authz =
            server::TestServer::start(&server::config("file: jwks.json", groups), &all_files).await;
        let (upstream, seen) = start_upstream().await;
        let envoy = Envoy::start(&binary, authz.running().grpc_addr, upstream).await;
        Some(Self {
            _authz: authz,
            envoy,
            seen,
            http: reqwest::Client::new(),
        })
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("http://{}{path}", self.envoy.listener))
            .header("host", "gerrit.example.com")
    }

    fn upstream_saw(&self, header: &str) -> Option<Vec<String>> {
        let seen = self.seen.last_headers.lock().unwrap();
        seen["headers"][header].as_array().map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
    }

    fn upstream_requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

const GROUPS: &str = "static_groups: {alice: [team-a], bob: [team-b]}";

#[tokio::test]
async fn allowed_request_reaches_upstream_with_our_identity_and_no_credentials_or_forgeries() {
    let Some(stack) = Stack::start(GROUPS, &[]).await else {
        return;
    };
    let resp = stack
        .get("/a/projects/team-a/branches?limit=5")
        .bearer_auth(tokens::token_for("alice"))
        .header("x-forwarded-user", "admin")
        .header("x-forwarded-groups", "Administrators")
        .header("x-forwarded-email", "root@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        stack.upstream_saw("x-forwarded-user"),
        Some(vec!["alice".to_string()])
    );
    assert_eq!(
        stack.upstream_saw("x-forwarded-email"),
        Some(vec!["alice@example.com".to_string()])
    );
    let groups = stack.upstream_saw("x-forwarded-groups").unwrap();
    assert_eq!(
        groups.len(),
        1,
        "one header line, not the client's plus ours: {groups:?}"
    );
    assert_eq!(groups[0], "team-a");
    assert_eq!(
        stack.upstream_saw("authorization"),
        None,
        "the token must not reach Gerrit"
    );
}

#[tokio::test]
async fn public_route_strips_a_forged_identity_header() {
    let Some(stack) = Stack::start(GROUPS, &[]).await else {
        return;
    };
    let resp = stack
        .get("/")
        .header("x-forwarded-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(stack.upstream_requests(), 1);
    assert_eq!(stack.upstream_saw("x-forwarded-user"), None);
}

#[tokio::test]
async fn denials_carry_our_status_challenge_and_body_and_never_reach_upstream() {
    let Some(stack) = Stack::start(GROUPS, &[]).await else {
        return;
    };

    let resp = stack
        .get("/a/projects/team-a/branches")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer realm=\"mesh-authz\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["reason"], "no token in the request");

    let mut expired = tokens::claims("alice");
    expired["exp"] = (tokens::now() - 3600).into();
    let resp = stack
        .get("/a/projects/team-a/branches")
        .bearer_auth(tokens::sign("rsa-a", &expired))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"invalid_token\", error_description=\"token expired\""));

    let resp = stack
        .get("/a/projects/team-a/branches")
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
}

#[tokio::test]
async fn when_mesh_authz_cannot_decide_envoy_fails_closed() {
    // Gerrit at a closed port: the group route cannot be decided; Envoy's default
    // failure_mode_allow=false turns the gRPC error into a 403.
    let gerrit = server::gerrit_section("http://127.0.0.1:9");
    let Some(stack) = Stack::start(&gerrit, &[("gerrit-password", "pw")]).await else {
        return;
    };
    let resp = stack
        .get("/a/projects/team-a/branches")
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(stack.upstream_requests(), 0);

    // A route that needs no groups keeps working while Gerrit is down.
    let resp = stack
        .get("/c/project/+/1")
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        stack.upstream_saw("x-forwarded-user"),
        Some(vec!["alice".to_string()])
    );
}
