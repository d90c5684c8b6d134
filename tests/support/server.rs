//! Starting the real server for a test, and building Envoy-like CheckRequests.

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use mesh_authz::config::GroupsConfig;
use mesh_authz::server::RunningServer;
use std::path::PathBuf;
use tonic::transport::Channel;

/// The host the standard test routes ([`config`]) cover.
pub const HOST: &str = "gerrit.example.com";
/// A path only members of team-a may use (route `gerrit-team-a`).
pub const TEAM_A: &str = "/a/projects/team-a/branches";
/// A path any signed-in user may use (route `gerrit-signed-in`, no groups needed).
pub const SIGNED_IN: &str = "/c/project/+/42";
/// The public path (route `gerrit-public`, GET only).
pub const PUBLIC: &str = "/";
/// The `x-request-id` that [`check_request`] sends; denial bodies echo it.
pub const REQUEST_ID: &str = super::istio::REQUEST_ID;
/// A `groups` section for [`config`]: alice in team-a, bob in team-b, from the config.
pub const STATIC_GROUPS: &str = "static_groups: {alice: [team-a], bob: [team-b]}";

/// A running mesh-authz with a connected Check client.
pub struct TestServer {
    /// The server (shut it down to test draining).
    pub server: Option<RunningServer>,
    /// A gRPC client connected over TCP.
    pub client: AuthorizationClient<Channel>,
    /// Directory holding the config and referenced files.
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Writes `yaml` to a temp dir (with `files` beside it), loads it like `--config`
    /// would, and starts the server on ephemeral ports.
    ///
    /// With Gerrit configured, returns once the start-up self-check (the service account
    /// looking itself up) is done, so it neither races the test's faults nor its counts.
    pub async fn start(yaml: &str, files: &[(&str, &str)]) -> Self {
        let (dir, config) = write_config(yaml, files);
        let server = mesh_authz::server::start(&config).await.unwrap();
        let client = AuthorizationClient::connect(format!("http://{}", server.grpc_addr))
            .await
            .unwrap();
        let s = Self {
            server: Some(server),
            client,
            dir,
        };
        if matches!(config.groups, Some(GroupsConfig::Gerrit(_))) {
            super::clock::until("the Gerrit self-check at start", || async {
                s.metrics()
                    .await
                    .lines()
                    .any(|l| l.starts_with("mesh_authz_gerrit_self_checks_total{"))
            })
            .await;
        }
        s
    }

    /// The running server.
    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    /// Base URL of the admin port.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.running().admin_addr)
    }

    /// Path of a file in the config directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The admin port's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample in `/metrics`, named with its labels as exposed (e.g.
    /// `mesh_authz_group_cache_lookups_total{result="miss"}`); 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        sample_value(&self.metrics().await, sample)
    }
}

/// The value of `sample` (a metric name with its labels as exposed) in `/metrics` text;
/// 0 when absent.
pub fn sample_value(metrics: &str, sample: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Writes `yaml` as `config.yaml` into a temp dir, with `files` beside it, and loads it
/// like `--config` would.
fn write_config(
    yaml: &str,
    files: &[(&str, &str)],
) -> (tempfile::TempDir, mesh_authz::config::Config) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = mesh_authz::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    (dir, config)
}

/// Why the server refuses to start with `yaml` (and `files` beside it); panics if it starts.
pub async fn start_error(yaml: &str, files: &[(&str, &str)]) -> String {
    let (_dir, config) = write_config(yaml, files);
    match mesh_authz::server::start(&config).await {
        Ok(server) => {
            server.begin_shutdown();
            panic!("the server started");
        }
        Err(e) => e.to_string(),
    }
}

/// A server asking the Gerrit at `gerrit_url` for groups: the standard test config with
/// [`gerrit_section`] and `edit` applied, the rsa-a JWKS, the service account's password
/// in `gerrit-password`, and `files` beside it.
pub async fn start_with_gerrit(
    gerrit_url: &str,
    edit: impl FnOnce(String) -> String,
    files: &[(&str, &str)],
) -> TestServer {
    let jwks = super::tokens::jwks(&["rsa-a"]).to_string();
    let yaml = edit(config("file: jwks.json", &gerrit_section(gerrit_url)));
    let mut all = vec![
        ("jwks.json", jwks.as_str()),
        ("gerrit-password", super::gerrit::PASSWORD),
    ];
    all.extend_from_slice(files);
    TestServer::start(&yaml, &all).await
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.begin_shutdown();
        }
    }
}

/// A config with the standard test routes. `jwks` is a `url:` or `file:` line;
/// `groups` is a `gerrit:` or `static_groups:` section (or empty).
pub fn config(jwks: &str, groups: &str) -> String {
    config_with_routes(jwks, groups, STANDARD_ROUTES)
}

/// The standard test routes: on [`HOST`], [`PUBLIC`] is public, `/a/projects/team-a`
/// ([`TEAM_A`]) needs group team-a, everything else ([`SIGNED_IN`]) a valid token.
const STANDARD_ROUTES: &str = r#"
routes:
  - name: gerrit-public
    match: {hosts: [gerrit.example.com], path: {exact: /}, methods: [GET]}
    allow: public
    inject: {user: x-forwarded-user}
    dynamic_metadata: true
  - name: gerrit-team-a
    match: {hosts: [gerrit.example.com], path: {segment_prefix: /a/projects/team-a}}
    allow: {groups_any_of: [team-a]}
    dynamic_metadata: true
    inject: {user: x-forwarded-user, email: x-forwarded-email, groups: x-forwarded-groups}
    remove_headers: [authorization]
  - name: gerrit-signed-in
    match: {hosts: [gerrit.example.com]}
    allow: authenticated
    inject: {user: x-forwarded-user, email: x-forwarded-email}
    remove_headers: [authorization]
"#;

/// A config like [`config`] with `routes` (a whole `routes:` section) instead of the
/// standard ones.
pub fn config_with_routes(jwks: &str, groups: &str, routes: &str) -> String {
    format!(
        r#"
server:
  grpc_listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
  drain_delay: 0s
  shutdown_timeout: 5s
issuers:
  - issuer: {issuer}
    audiences: [{audience}]
    jwks: {{{jwks}, min_refetch_interval: 1s}}
    user_claim: preferred_username
{groups}
{routes}
"#,
        issuer = super::tokens::ISSUER,
        audience = super::tokens::AUDIENCE,
    )
}

/// The token the tests put in `gerrit.events.token_file`; cache invalidation needs it too.
pub const EVENTS_TOKEN: &str = "6f1c2d0e9a8b7c6d5e4f3a2b1c0d9e8f";

/// The file [`with_events_token`] names, to pass beside the config.
pub const EVENTS_TOKEN_FILE: (&str, &str) = ("events-token", EVENTS_TOKEN);

/// A config edit turning on `gerrit.events` with [`EVENTS_TOKEN_FILE`] as its token file.
pub fn with_events_token(yaml: String) -> String {
    yaml.replace(
        "gerrit:\n",
        "gerrit:\n  events: {token_file: events-token}\n",
    )
}

/// A server asking the Gerrit at `gerrit_url` for groups, with `gerrit.events` and its
/// token on (so an operator can drop cached groups): [`start_with_gerrit`] with
/// [`with_events_token`] and then `edit`.
pub async fn start_with_events_token(
    gerrit_url: &str,
    edit: impl FnOnce(String) -> String,
) -> TestServer {
    start_with_gerrit(
        gerrit_url,
        |y| edit(with_events_token(y)),
        &[EVENTS_TOKEN_FILE],
    )
    .await
}

/// A server on `routes` (a whole `routes:` section, maybe with other top-level sections)
/// asking the Gerrit at `gerrit_url`, with `gerrit.events` and its token on: the rsa-a
/// JWKS and the service account's password beside it.
pub async fn start_with_gerrit_routes(gerrit_url: &str, routes: &str) -> TestServer {
    let jwks = super::tokens::jwks(&["rsa-a"]).to_string();
    let yaml = with_events_token(config_with_routes(
        "file: jwks.json",
        &gerrit_section(gerrit_url),
        routes,
    ));
    TestServer::start(
        &yaml,
        &[
            ("jwks.json", jwks.as_str()),
            ("gerrit-password", super::gerrit::PASSWORD),
            EVENTS_TOKEN_FILE,
        ],
    )
    .await
}

/// POSTs Gerrit events to the admin port with the events token, as the webhooks plugin
/// would: the status.
pub async fn post_gerrit_events(s: &TestServer, body: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/gerrit/events", s.admin_url()))
        .bearer_auth(EVENTS_TOKEN)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// POSTs to the cache invalidation endpoint (`query` is `""` or `"?user=NAME"`) with
/// `token` as the bearer token, if given: status and body.
pub async fn invalidate(s: &TestServer, query: &str, token: Option<&str>) -> (u16, String) {
    let mut req =
        reqwest::Client::new().post(format!("{}/cache/groups/invalidate{query}", s.admin_url()));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A `gerrit:` section for a fake Gerrit whose password is in `password-file`.
pub fn gerrit_section(url: &str) -> String {
    format!(
        "gerrit:\n  url: {url}\n  username: {}\n  password_file: gerrit-password\n  timeout: 2s\n  cache_ttl: 60s\n  not_found_ttl: 5s\n",
        super::gerrit::USERNAME
    )
}

/// `GET HOST/a/projects/team-a/x` (route `gerrit-team-a`) with `user`'s bearer token: the
/// CheckResponse's status code, or the gRPC error the call ended with.
/// A Check call as Envoy makes it, over plain HTTP/2, with `message` as the serialized
/// request and `grpc-timeout` if given (tonic's own client would enforce a short timeout
/// itself, before the server could answer, and only sends valid messages); returns the
/// gRPC status code and message of the answer's head (an error answer carries them there).
pub async fn raw_check(
    s: &TestServer,
    message: &[u8],
    grpc_timeout: Option<&str>,
) -> (String, String) {
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(message);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut call = client
        .post(format!(
            "http://{}/envoy.service.auth.v3.Authorization/Check",
            s.server.as_ref().expect("running").grpc_addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(timeout) = grpc_timeout {
        call = call.header("grpc-timeout", timeout);
    }
    let answer = call.body(body).send().await.expect("HTTP/2 call");
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    (
        header("grpc-status"),
        percent_decoded(&header("grpc-message")),
    )
}

/// `grpc-message` as gRPC percent-encodes it, decoded.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn check_team_a(s: &TestServer, user: &str) -> Result<i32, tonic::Status> {
    let token = super::tokens::bearer(&super::tokens::token_for(user));
    let req = check_request(
        "GET",
        HOST,
        "/a/projects/team-a/x",
        &[("authorization", &token)],
    );
    s.client
        .clone()
        .check(req)
        .await
        .map(|r| r.into_inner().status.map_or(-1, |status| status.code))
}

/// A CheckRequest shaped like one from an Istio gateway, with only what decisions read
/// ([`super::istio::Shape::Minimal`]).
pub fn check_request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> CheckRequest {
    super::istio::check_request(super::istio::Shape::Minimal, method, host, path, headers)
}
