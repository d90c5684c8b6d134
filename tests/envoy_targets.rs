//! End to end through a real Envoy 1.40 for each upstream mesh-authz guards: Gerrit
//! (trusted identity headers), the kube-apiserver (impersonation headers) and CI build pods
//! (a workload identity from mTLS instead of a token). HTTP client → Envoy (ext_authz,
//! gRPC) → an upstream that records every header line it received; each test asserts what
//! that upstream (or, on denial, the client) actually sees.
//!
//! Without Envoy the tests print SKIPPED, except under `CI=true`, where they fail.

mod support;

use serde_json::Value;
use support::envoy::{one, start_upstream, DownstreamTls, Received, Stack};
use support::pki::TestCa;
use support::{server, tokens};

/// mesh-authz with `groups` and `routes` (YAML sections), Envoy over plain HTTP.
async fn start(groups: &str, routes: &str) -> Option<Stack> {
    let yaml = server::config_with_routes("file: jwks.json", groups, routes);
    Stack::start(&yaml, &[]).await
}

/// Like [`start`], with an mTLS listener and a check tap between Envoy and mesh-authz.
async fn start_with_tls(groups: &str, routes: &str, tls: &DownstreamTls) -> Option<Stack> {
    let yaml = server::config_with_routes("file: jwks.json", groups, routes);
    Stack::start_with_tls(&yaml, &[], tls).await
}

/// The names of the `impersonate-*` headers the upstream received.
fn impersonation_headers(got: &Received) -> Vec<String> {
    let mut names: Vec<String> = got
        .headers
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("impersonate-"))
        .cloned()
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_recording_upstream_keeps_repeated_header_lines_apart() {
    // The tests below tell "two lines" from "one comma-joined line" by what the upstream
    // recorded; check the instrument first, without Envoy.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, seen) = start_upstream().await;
    let mut tcp = tokio::net::TcpStream::connect(upstream).await.unwrap();
    tcp.write_all(
        b"GET /x HTTP/1.1\r\nHost: h\r\nImpersonate-Group: a\r\nimpersonate-group: b\r\n\
          x-joined: c,d\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let got = seen.last.lock().unwrap().clone().unwrap();
    assert_eq!(
        got.header("impersonate-group"),
        Some(vec!["a".to_string(), "b".to_string()])
    );
    assert_eq!(got.header("x-joined"), one("c,d"));
}

// ---------------------------------------------------------------------------------------
// Gerrit: `auth.type = HTTP` trusts X-Forwarded-User / -Email / -Name.

const GERRIT_ROUTES: &str = r#"
routes:
  - name: gerrit
    match: {hosts: [gerrit.example.com]}
    allow: authenticated
    inject: {user: X-Forwarded-User, email: X-Forwarded-Email, display_name: X-Forwarded-Name}
    remove_headers: [authorization]
"#;

#[tokio::test]
async fn gerrit_sees_one_line_of_each_identity_header_from_the_token_and_no_credentials() {
    let Some(stack) = start("", GERRIT_ROUTES).await else {
        return;
    };
    let mut claims = tokens::claims("alice");
    // Not ASCII: Envoy passes the UTF-8 bytes through unchanged.
    claims["name"] = "Zoë Liddell".into();
    let resp = stack
        .get("gerrit.example.com", "/a/accounts/self/detail")
        .bearer_auth(tokens::sign("rsa-a", &claims))
        .header("X-Forwarded-User", "admin")
        .header("X-Forwarded-Name", "Admin")
        // A second line of a forged header: must not survive next to ours either.
        .header("X-Forwarded-Name", "Administrator")
        .header("X-Forwarded-Email", "admin@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = stack.received();
    assert_eq!(got.uri, "/a/accounts/self/detail");
    // Exactly one line each, ours: what Gerrit's HttpAuthFilter reads with getHeader.
    assert_eq!(got.header("x-forwarded-user"), one("alice"));
    assert_eq!(got.header("x-forwarded-email"), one("alice@example.com"));
    assert_eq!(got.header("x-forwarded-name"), one("Zoë Liddell"));
    assert_eq!(
        got.header("authorization"),
        None,
        "the token must not reach Gerrit"
    );
}

#[tokio::test]
async fn gerrit_gets_no_forged_display_name_or_email_when_the_token_has_none() {
    let Some(stack) = start("", GERRIT_ROUTES).await else {
        return;
    };
    // A token without `name` and `email`: the headers are removed, not left to the client.
    let mut claims = tokens::claims("bob");
    claims.as_object_mut().unwrap().remove("email");
    let resp = stack
        .get("gerrit.example.com", "/a/accounts/self/detail")
        .bearer_auth(tokens::sign("rsa-a", &claims))
        .header("X-Forwarded-Name", "Admin")
        .header("X-Forwarded-Email", "admin@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = stack.received();
    assert_eq!(got.header("x-forwarded-user"), one("bob"));
    assert_eq!(got.header("x-forwarded-name"), None);
    assert_eq!(got.header("x-forwarded-email"), None);
}

// ---------------------------------------------------------------------------------------
// kube-apiserver: mesh-authz's identity may impersonate; the apiserver believes
// Impersonate-* headers from it.

const KUBE_GROUPS: &str = "static_groups: {alice: [team-a]}";

const KUBE_ROUTES: &str = r#"
routes:
  - name: kube-health
    match: {hosts: [kube.example.com], path: {exact: /livez}, methods: [GET]}
    allow: public
  - name: kube
    match: {hosts: [kube.example.com]}
    allow: authenticated
    remove_headers: [authorization]
    kube:
      rules:
        - {verbs: [get, list, watch], resources: ["*"], namespace_group: "{namespace}"}
        - {verbs: [get], non_resource_paths: [/version, /api, /apis]}
"#;

/// A client's attempt to choose its own identity at the apiserver.
fn forge_impersonation(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request
        .header("Impersonate-User", "admin")
        // Two lines: neither may survive, and ours must not be joined onto them.
        .header("Impersonate-Group", "system:masters")
        .header("Impersonate-Group", "system:nodes")
        .header("Impersonate-Uid", "0")
        .header("Impersonate-Extra-Scopes", "all")
}

#[tokio::test]
async fn kube_apiserver_gets_exactly_our_user_and_one_granting_group_line_and_nothing_forged() {
    let Some(stack) = start(KUBE_GROUPS, KUBE_ROUTES).await else {
        return;
    };
    let resp = forge_impersonation(stack.get("kube.example.com", "/api/v1/namespaces/team-a/pods"))
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = stack.received();
    assert_eq!(got.uri, "/api/v1/namespaces/team-a/pods");
    assert_eq!(got.header("impersonate-user"), one("alice"));
    // One line, one group: the apiserver reads each Impersonate-Group line as one group
    // name, so "system:masters,team-a" or a second line would be a different identity.
    assert_eq!(got.header("impersonate-group"), one("team-a"));
    assert_eq!(
        impersonation_headers(&got),
        ["impersonate-group", "impersonate-user"],
        "no impersonate-uid or impersonate-extra-*"
    );
    assert_eq!(got.header("authorization"), None);

    // Allowed by a rule that grants no group: the forged groups are removed, not kept.
    let resp = forge_impersonation(stack.get("kube.example.com", "/version"))
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = stack.received();
    assert_eq!(got.header("impersonate-user"), one("alice"));
    assert_eq!(impersonation_headers(&got), ["impersonate-user"]);
}

#[tokio::test]
async fn kube_request_in_a_namespace_the_user_does_not_own_is_denied_saying_what_was_asked() {
    let Some(stack) = start(KUBE_GROUPS, KUBE_ROUTES).await else {
        return;
    };
    let resp = forge_impersonation(stack.get("kube.example.com", "/api/v1/namespaces/team-b/pods"))
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    // A Kubernetes Status, so kubectl prints "Error from server (Forbidden): <message>".
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(body["code"], 403);
    assert_eq!(body["error"], "access_denied");
    assert_eq!(
        body["message"],
        "kube: no rule allows list pods in namespace team-b"
    );
    assert_eq!(stack.upstream_requests(), 0);
}

#[tokio::test]
async fn a_public_route_on_the_kube_host_strips_forged_impersonation() {
    let Some(stack) = start(KUBE_GROUPS, KUBE_ROUTES).await else {
        return;
    };
    // No token and no kube section: still, nothing the client sends may reach the
    // apiserver as an Impersonate-* header, since the gateway's identity may impersonate.
    let resp = forge_impersonation(stack.get("kube.example.com", "/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = stack.received();
    assert_eq!(got.uri, "/livez");
    assert_eq!(impersonation_headers(&got), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// CI build pods: a runner votes on changes with its workload identity (mTLS), no token.

const RUNNER: &str = "spiffe://cluster.local/ns/ci/sa/runner";
const LAPTOP: &str = "spiffe://cluster.local/ns/dev/sa/laptop";
const REVIEW: &str = "/a/changes/myproject~123/revisions/current/review";

const CI_GROUPS: &str = "static_groups: {alice: [team-a], root: [ci-admins]}";

const CI_ROUTES: &str = r#"
routes:
  - name: vote
    match:
      hosts: [gerrit.example.com]
      path: {regex: "/a/changes/[^/]+/revisions/[^/]+/review"}
      methods: [POST]
    allow:
      - {principals: ["cluster.local/ns/ci/sa/runner"], as_user: ci-bot}
      - {groups_any_of: [ci-admins]}
    inject: {user: X-Forwarded-User}
"#;

/// Envoy's listener behind mTLS with certificates from `ca`, and clients for the runner
/// and the laptop workloads.
struct Mtls {
    stack: Stack,
    runner: reqwest::Client,
    laptop: reqwest::Client,
}

impl Mtls {
    async fn start() -> Option<Self> {
        let ca = TestCa::new();
        let tls = DownstreamTls {
            server: ca.server_cert("gerrit.example.com"),
            client_ca_pem: ca.cert_pem(),
        };
        let stack = start_with_tls(CI_GROUPS, CI_ROUTES, &tls).await?;
        let client = |spiffe_id: &str| {
            let identity = ca.workload_cert(spiffe_id).identity_pem();
            reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(
                    reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap(),
                )
                .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
                // The name in Envoy's certificate, at Envoy's port.
                .resolve("gerrit.example.com", stack.envoy.listener)
                .build()
                .unwrap()
        };
        let (runner, laptop) = (client(RUNNER), client(LAPTOP));
        Some(Self {
            stack,
            runner,
            laptop,
        })
    }

    fn review(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        let port = self.stack.envoy.listener.port();
        client
            .post(format!("https://gerrit.example.com:{port}{REVIEW}"))
            .json(&serde_json::json!({"labels": {"Verified": 1}}))
    }

    fn principal_envoy_sent(&self) -> String {
        self.stack.tap.as_ref().unwrap().last_principal()
    }
}

#[tokio::test]
async fn build_pod_with_the_runner_certificate_votes_as_ci_bot_without_a_token() {
    let Some(mtls) = Mtls::start().await else {
        return;
    };
    let resp = mtls
        .review(&mtls.runner)
        .header("X-Forwarded-User", "admin")
        .send()
        .await
        .unwrap();
    // What Envoy puts into `source.principal` for a TLS downstream: the client
    // certificate's URI SAN, whole (with `spiffe://`).
    assert_eq!(mtls.principal_envoy_sent(), RUNNER);
    assert_eq!(resp.status(), 200);
    let got = mtls.stack.received();
    assert_eq!(got.uri, REVIEW);
    assert_eq!(got.header("x-forwarded-user"), one("ci-bot"));
}

#[tokio::test]
async fn another_workload_without_a_token_is_asked_for_one() {
    let Some(mtls) = Mtls::start().await else {
        return;
    };
    let resp = mtls.review(&mtls.laptop).send().await.unwrap();
    assert_eq!(mtls.principal_envoy_sent(), LAPTOP);
    // The runner rule does not admit this workload; the group rule would, with a token.
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"mesh-authz\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["reason"], "no token in the request");
    assert_eq!(mtls.stack.upstream_requests(), 0);
}

#[tokio::test]
async fn another_workload_needs_a_ci_admin_token_and_then_acts_as_that_user() {
    let Some(mtls) = Mtls::start().await else {
        return;
    };
    let resp = mtls
        .review(&mtls.laptop)
        .bearer_auth(tokens::token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["reason"],
        "not a member of any group allowed on this route"
    );
    assert_eq!(mtls.stack.upstream_requests(), 0);

    let resp = mtls
        .review(&mtls.laptop)
        .bearer_auth(tokens::token_for("root"))
        .header("X-Forwarded-User", "ci-bot")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mtls.stack.received().header("x-forwarded-user"),
        one("root")
    );
}
