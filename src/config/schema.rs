//! The configuration file as written: plain structs that `serde_yaml` fills in.
//!
//! Nothing here is trusted yet. Compilation (`config::compile`) turns these into runtime types that
//! cannot be invalid, collecting every problem with its field path.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The top-level fields of [`RawConfig`]: each is read on its own when the whole file
/// does not deserialize, so that every broken section is reported at once
/// (`tests/config_reference.rs` checks this list against the struct).
pub const SECTIONS: &[&str] = &[
    "server",
    "issuers",
    "gerrit",
    "static_groups",
    "routes",
    "token_cache",
    "max_token_bytes",
    "audit",
    "browser_sessions",
    "grants",
    "telemetry",
];

/// The whole configuration file.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    /// Listen addresses and shutdown timing.
    #[serde(default)]
    pub server: RawServer,
    /// Token issuers whose JWTs are accepted.
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    /// Gerrit, the source of group membership.
    pub gerrit: Option<RawGerrit>,
    /// A fixed user-to-groups table standing in for Gerrit (quickstart and tests).
    pub static_groups: Option<BTreeMap<String, Vec<String>>>,
    /// Route rules, first match wins; anything unmatched is denied.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// The verified-token cache.
    #[serde(default)]
    pub token_cache: RawTokenCache,
    /// Tokens longer than this are rejected before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// The audit log of decisions.
    pub audit: Option<RawAudit>,
    /// Browser sessions: the cookie browser sign-in leaves, its keys and lifetimes, and
    /// the paths mesh-authz answers itself. Needed when an issuer has a
    /// `browser_client`.
    pub browser_sessions: Option<RawBrowserSessions>,
    /// Time-bounded grants approved as reviews: a file in a Gerrit project (needs
    /// `gerrit`).
    pub grants: Option<RawGrants>,
    /// Telemetry beyond logs and metrics: OTLP trace export.
    #[serde(default)]
    pub telemetry: RawTelemetry,
}

/// `telemetry:` what is exported besides `/metrics` and the audit log.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTelemetry {
    /// OTLP traces. Without this section the standard `OTEL_*` variables decide; each
    /// field set here wins over its variable.
    pub traces: Option<RawTraces>,
}

/// `telemetry.traces:` one span per Check (a child of Envoy's span), with child spans for
/// token verification, JWKS fetches and Gerrit requests, exported as OTLP off the request
/// path.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTraces {
    /// Export on or off. Default: on when an endpoint is set here or in
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (and `OTEL_SDK_DISABLED` is not `true`).
    pub enabled: Option<bool>,
    /// The collector: `http://collector:4317` for `grpc`; for `http/protobuf` the full
    /// URL, `http://collector:4318/v1/traces`. Default from the `OTEL_*` variables.
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`. Default: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, then `grpc`.
    pub protocol: Option<String>,
    /// `service.name` of the spans. Default: `OTEL_SERVICE_NAME`, then `mesh-authz`.
    pub service_name: Option<String>,
    /// Share of Checks traced when the caller's trace context does not decide (0 to 1).
    /// A Check whose parent is sampled (or not) follows its parent, as Envoy decided.
    /// Default: `OTEL_TRACES_SAMPLER`/`_ARG`, then 1.
    pub sample_ratio: Option<f64>,
    /// Put the caller's user name in the Check span (`enduser.id`). Off by default: it is
    /// personal data, and trace stores are often kept longer and seen by more people.
    pub include_user: bool,
    /// Spans waiting for export, at most; a span beyond it is dropped and counted in
    /// `mesh_authz_trace_spans_dropped_total`. Default: `OTEL_BSP_MAX_QUEUE_SIZE`, then
    /// 2048.
    pub max_queue_size: Option<usize>,
    /// Time an export may take before it is abandoned (its spans dropped). Default:
    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, then `OTEL_EXPORTER_OTLP_TIMEOUT` (both in
    /// milliseconds), then `10s`.
    #[serde(default, with = "humantime_serde::option")]
    pub export_timeout: Option<Duration>,
}

/// `grants:`: where the reviewed grants file is, and how it is kept.
#[derive(Debug, Deserialize)]
pub struct RawGrants {
    /// The Gerrit project holding the file, e.g. `access-grants`.
    pub project: String,
    /// Its branch.
    #[serde(default = "default_grants_branch")]
    pub branch: String,
    /// The file's path in the branch.
    #[serde(default = "default_grants_file")]
    pub file: String,
    /// Longest a grant may last (`until - from`); longer entries are skipped.
    #[serde(default = "default_grants_max_duration", with = "humantime_serde")]
    pub max_duration: Duration,
    /// How often the branch is read when no event says it moved.
    #[serde(default = "default_grants_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// How long the last good grants stay in force while Gerrit cannot be read; then
    /// rules on grants cannot decide.
    #[serde(default = "default_grants_staleness", with = "humantime_serde")]
    pub max_staleness: Duration,
    /// What a denial on a grant rule tells the developer: how to ask for a grant (a URL
    /// to the project's changes, a runbook).
    #[serde(default)]
    pub how_to_ask: Option<String>,
}

fn default_grants_branch() -> String {
    "main".into()
}
fn default_grants_file() -> String {
    "grants.yaml".into()
}
fn default_grants_max_duration() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_grants_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_grants_staleness() -> Duration {
    Duration::from_secs(900)
}

/// `browser_sessions:` the stateless session cookie of browser sign-in.
#[derive(Debug, Deserialize)]
pub struct RawBrowserSessions {
    /// The session cookie's name. The `__Host-` prefix makes browsers keep it only when
    /// set over HTTPS by this host for `/`, so no sibling subdomain can plant one.
    /// Chunks of a long session are `NAME-1`, `NAME-2`, …, a sign-in in progress
    /// `NAME-login-…`, the ID token for sign-out `__Secure-NAME-hint` (sent to the
    /// sign-out path only); all are removed before the request goes upstream.
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// Files holding the keys that seal session cookies (AES-256-GCM), each 32 random
    /// bytes in base64 (`openssl rand -base64 32`). The first seals; all open. To rotate,
    /// put a new key first and keep the old one until `lifetime` has passed.
    pub key_files: Vec<PathBuf>,
    /// How long a session lasts from sign-in, however active.
    #[serde(default = "default_session_lifetime", with = "humantime_serde")]
    pub lifetime: Duration,
    /// A session without a request for this long ends.
    #[serde(default = "default_session_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long before the ID token expires it is refreshed (with a refresh token).
    #[serde(default = "default_refresh_before", with = "humantime_serde")]
    pub refresh_before: Duration,
    /// The path the IdP redirects back to, on every host with browser sign-in
    /// (register `https://HOST/_mesh-authz/callback` with the IdP for each host).
    #[serde(default = "default_callback_path")]
    pub callback_path: String,
    /// A path that starts a sign-in and returns to `?rd=PATH` (Gerrit's `auth.loginUrl`).
    #[serde(default = "default_sign_in_path")]
    pub sign_in_path: String,
    /// A path that ends the session and signs out at the IdP (Gerrit's `auth.logoutUrl`).
    #[serde(default = "default_sign_out_path")]
    pub sign_out_path: String,
    /// The path on the same host the IdP returns to after signing out (register
    /// `https://HOST/` as a post-logout redirect URI).
    #[serde(default = "default_after_sign_out")]
    pub after_sign_out: String,
    /// Sessions kept opened per replica (by a digest of the whole cookie), so a request
    /// skips decrypting and parsing its cookie; 0 turns it off. Bounds memory: about
    /// 0.75 KB each.
    #[serde(default = "default_session_cache")]
    pub cache_max_entries: u64,
    /// Sign-in callbacks exchanging their code at the IdP at once, per replica; more are
    /// answered 503 at once (the browser can reload), so a flood of callbacks cannot pile
    /// up requests to the IdP.
    #[serde(default = "default_concurrent_sign_ins")]
    pub max_concurrent_sign_ins: usize,
}

fn default_concurrent_sign_ins() -> usize {
    64
}

fn default_session_cache() -> u64 {
    100_000
}

fn default_cookie_name() -> String {
    "__Host-mesh-authz".into()
}
fn default_session_lifetime() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_session_idle() -> Duration {
    Duration::from_secs(3600)
}
fn default_refresh_before() -> Duration {
    Duration::from_secs(60)
}
fn default_callback_path() -> String {
    "/_mesh-authz/callback".into()
}
fn default_sign_in_path() -> String {
    "/_mesh-authz/sign-in".into()
}
fn default_sign_out_path() -> String {
    "/_mesh-authz/sign-out".into()
}
fn default_after_sign_out() -> String {
    "/".into()
}

/// `issuers[].browser_client:` mesh-authz as an OIDC client of this issuer, for browser
/// sign-in (the authorization code flow with PKCE).
#[derive(Debug, Deserialize)]
pub struct RawBrowserClient {
    /// The client id registered at the IdP. ID tokens must name it in `aud` (and `azp`).
    pub client_id: String,
    /// File holding the client secret (a mounted Secret). Without it the client is
    /// public and PKCE alone protects the code.
    pub client_secret_file: Option<PathBuf>,
    /// How the secret is sent to the token endpoint: `client_secret_basic` (HTTP Basic,
    /// the default) or `client_secret_post` (in the form body).
    #[serde(default = "default_client_auth")]
    pub client_auth: String,
    /// Scopes asked for; `openid` is required, `offline_access` asks for a refresh
    /// token.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Timeout of one request to the IdP (discovery, token endpoint).
    #[serde(default = "default_client_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_client_auth() -> String {
    "client_secret_basic".into()
}
fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "offline_access"]
        .map(String::from)
        .to_vec()
}
fn default_client_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `audit:` one JSON line per decision.
#[derive(Debug, Deserialize)]
pub struct RawAudit {
    /// `stdout`, or a file path (appended to; reopened after rotation).
    pub output: String,
}

fn default_max_token_bytes() -> usize {
    crate::authn::DEFAULT_MAX_TOKEN_BYTES
}

/// `token_cache:` how many verified tokens are remembered until they expire.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawTokenCache {
    /// Maximum entries; 0 turns the cache off.
    pub max_entries: u64,
}

impl Default for RawTokenCache {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
        }
    }
}

/// `server:` listen addresses and shutdown behaviour.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawServer {
    /// gRPC listen address for Check, health and reflection.
    pub grpc_listen: String,
    /// HTTP listen address for `/healthz`, `/readyz` and `/metrics`.
    pub admin_listen: String,
    /// How long readiness stays false before the listeners close on SIGTERM.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Upper bound on waiting for in-flight checks after the drain delay.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// `host:port` names of every replica's admin port (e.g. a headless Service), to
    /// forward cache invalidations to.
    pub peers: Vec<String>,
    /// Reload the config file when it changes.
    pub watch_config: bool,
    /// How often the config file is checked besides file-system events.
    #[serde(with = "humantime_serde")]
    pub config_check_interval: Duration,
    /// Checks being decided at once. More fail at once with gRPC UNAVAILABLE (Envoy then
    /// applies the provider's `statusOnError`) and count in
    /// `mesh_authz_checks_shed_total`, instead of queueing past Envoy's timeout.
    pub max_concurrent_checks: usize,
    /// HTTP/2 streams one gRPC connection may have open at once (announced to Envoy as
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`; Envoy holds further checks itself).
    pub max_concurrent_streams: u32,
    /// How long Envoy waits for a Check: the Istio extension provider's `timeout` (its
    /// ext_authz `grpc_service.timeout`). Not enforced here; `validate` and `serve` warn
    /// when a lookup budget (`gerrit.timeout` with its retries, `jwks.check_timeout`)
    /// cannot fit in it, since Envoy would give up first.
    #[serde(with = "humantime_serde")]
    pub envoy_timeout: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            grpc_listen: "0.0.0.0:9191".into(),
            admin_listen: "0.0.0.0:9192".into(),
            drain_delay: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(20),
            peers: Vec::new(),
            watch_config: true,
            config_check_interval: Duration::from_secs(10),
            max_concurrent_checks: 4096,
            max_concurrent_streams: 128,
            envoy_timeout: Duration::from_millis(500),
        }
    }
}

/// One `issuers[]` entry.
#[derive(Debug, Deserialize)]
pub struct RawIssuer {
    /// Exact value of the token's `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values; the token must carry at least one.
    pub audiences: Vec<String>,
    /// Where the issuer's signing keys come from.
    pub jwks: RawJwks,
    /// Claim that names the user (the Gerrit account).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Claim holding the user's email address, if any.
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// Claim holding the user's full name (for a display-name header).
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// Claim naming the Gerrit account whose groups are looked up; by default the user
    /// claim. What it holds is `gerrit_account_form`.
    pub gerrit_account_claim: Option<String>,
    /// What the Gerrit account claim holds: `username` (the default; digits are a
    /// username too, looked up by name, never read as an account number), `email` (the
    /// account's preferred email) or `account_id` (Gerrit's numeric account id: a JSON
    /// number or a string of ASCII digits; any other value fails the token as a missing
    /// claim). Usernames and emails are resolved with an exact account query and the
    /// account Gerrit finds must have exactly that username or email.
    pub gerrit_account_form: Option<String>,
    /// Put before this issuer's user names (the injected user and the Gerrit account
    /// looked up), so users of different issuers are different accounts: with
    /// `user_prefix: "ci:"` the CI issuer's `alice` is `ci:alice`, not Gerrit's alice
    /// (like the kube-apiserver's `--oidc-username-prefix`). Required when several
    /// issuers are configured; `""` says this issuer's names are the Gerrit accounts of
    /// that name, shared with every other issuer that says so. Not with
    /// `gerrit_account_form: account_id`.
    pub user_prefix: Option<String>,
    /// Accepted signature algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Longest accepted `exp - iat`; tokens then must carry `iat`.
    #[serde(default, with = "humantime_serde")]
    pub max_token_lifetime: Option<Duration>,
    /// Claims every token must carry (besides `iss`, `aud` and `exp`).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Browser sign-in with this issuer: the OIDC client mesh-authz is registered as.
    pub browser_client: Option<RawBrowserClient>,
}

fn default_user_claim() -> String {
    "sub".into()
}
fn default_name_claim() -> String {
    "name".into()
}
fn default_email_claim() -> String {
    "email".into()
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

/// `issuers[].jwks`: exactly one of `url`, `file` or `discovery: true`.
#[derive(Debug, Deserialize)]
pub struct RawJwks {
    /// HTTPS (or, for tests, HTTP) URL of the JWKS document.
    pub url: Option<String>,
    /// Path of a JWKS document, relative to the config file.
    pub file: Option<PathBuf>,
    /// Find the JWKS through `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// Refresh period when the IdP sends no `Cache-Control: max-age`.
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Lower bound on a refresh period taken from `max-age`.
    #[serde(default = "default_jwks_min_refresh", with = "humantime_serde")]
    pub min_refresh_interval: Duration,
    /// Upper bound on a refresh period taken from `max-age`.
    #[serde(default = "default_jwks_max_refresh", with = "humantime_serde")]
    pub max_refresh_interval: Duration,
    /// Minimum time between fetches triggered by tokens with an unknown `kid`.
    #[serde(default = "default_jwks_min_refetch", with = "humantime_serde")]
    pub min_refetch_interval: Duration,
    /// How long the last good key set serves while the IdP fails.
    #[serde(default = "default_jwks_max_staleness", with = "humantime_serde")]
    pub max_staleness: Duration,
    /// Timeout of one JWKS (or discovery) request.
    #[serde(default = "default_jwks_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a Check waits for the refetch a token with a new `kid` started. The fetch
    /// goes on (up to `timeout`) for the checks after it; this one cannot be decided
    /// (gRPC UNAVAILABLE). Keep it below Envoy's ext_authz timeout (the Istio provider's
    /// `timeout`, 0.5 s in the shipped manifests), or Envoy gives up on the Check first.
    #[serde(default = "default_jwks_check_timeout", with = "humantime_serde")]
    pub check_timeout: Duration,
    /// PEM file of the CA certificates trusted for the IdP's `https` JWKS and discovery
    /// URLs, instead of the built-in roots (an IdP with a private CA).
    pub ca_file: Option<PathBuf>,
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_jwks_min_refresh() -> Duration {
    Duration::from_secs(60)
}
fn default_jwks_max_refresh() -> Duration {
    Duration::from_secs(3600)
}
fn default_jwks_min_refetch() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_max_staleness() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_jwks_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_jwks_check_timeout() -> Duration {
    Duration::from_millis(300)
}

/// `gerrit:` the REST endpoint and its group cache.
#[derive(Debug, Deserialize)]
pub struct RawGerrit {
    /// Base URL, e.g. `https://gerrit.example.com` (a path prefix is kept).
    pub url: String,
    /// Service account username.
    pub username: String,
    /// File holding the service account's HTTP password (a mounted Secret), sent with
    /// HTTP Basic.
    pub password_file: Option<PathBuf>,
    /// Header naming the service account for a Gerrit with `auth.type = HTTP` and
    /// `auth.trustContainerAuth = true` (its `auth.httpHeader`, e.g. `X-Forwarded-User`).
    pub trusted_user_header: Option<String>,
    /// PEM file of the CA certificates trusted for an `https` Gerrit URL, instead of the
    /// built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Largest accepted response body, in bytes.
    #[serde(default = "default_gerrit_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Accept Gerrit events at `POST /gerrit/events` on the admin port and drop the
    /// cached groups a group change affects.
    pub events: Option<RawGerritEvents>,
    /// How often the password file is re-read (Kubernetes updates Secrets in place).
    #[serde(default = "default_password_reload", with = "humantime_serde")]
    pub password_reload_interval: Duration,
    /// Timeout of one Gerrit request.
    #[serde(default = "default_gerrit_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after timeouts, connection failures and 5xx answers.
    #[serde(default = "default_gerrit_retries")]
    pub retries: u32,
    /// First retry delay (doubled per attempt, jittered).
    #[serde(default = "default_gerrit_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Requests to Gerrit in flight at once.
    #[serde(default = "default_gerrit_concurrency")]
    pub max_concurrent_requests: usize,
    /// How long a user's groups are cached.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long "no such account" is cached.
    #[serde(default = "default_not_found_ttl", with = "humantime_serde")]
    pub not_found_ttl: Duration,
    /// Maximum number of users in the group cache.
    #[serde(default = "default_cache_max_users")]
    pub cache_max_users: u64,
    /// How long past its TTL a user's groups may still serve while Gerrit fails.
    #[serde(default = "default_gerrit_max_staleness", with = "humantime_serde")]
    pub max_staleness: Duration,
}

/// `gerrit.events`: the receiver of Gerrit's `ref-updated` events.
#[derive(Debug, Deserialize)]
pub struct RawGerritEvents {
    /// File holding a token senders must present as `Authorization: Bearer <token>`
    /// (the webhooks plugin's `remote.NAME.header`).
    pub token_file: Option<PathBuf>,
    /// The project Gerrit keeps accounts and groups in (`gerrit.allUsers`).
    #[serde(default = "default_all_users_project")]
    pub all_users_project: String,
}

fn default_all_users_project() -> String {
    "All-Users".into()
}

fn default_gerrit_max_response_bytes() -> usize {
    crate::gerrit::DEFAULT_MAX_RESPONSE_BYTES
}

fn default_gerrit_max_staleness() -> Duration {
    Duration::from_secs(300)
}

fn default_password_reload() -> Duration {
    Duration::from_secs(10)
}
fn default_gerrit_retries() -> u32 {
    1
}
fn default_gerrit_backoff() -> Duration {
    Duration::from_millis(50)
}
fn default_gerrit_concurrency() -> usize {
    16
}
fn default_gerrit_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_not_found_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_cache_max_users() -> u64 {
    10_000
}

/// One `routes[]` entry.
#[derive(Debug, Deserialize)]
pub struct RawRoute {
    /// Name shown in decisions, metrics and metadata.
    pub name: String,
    /// Which requests this route covers.
    #[serde(rename = "match", default)]
    pub matches: RawMatch,
    /// Who may pass.
    pub allow: RawAllow,
    /// Evaluate and log the decision, count would-be denials, but allow.
    #[serde(default)]
    pub dry_run: bool,
    /// Send Envoy the identity as `dynamic_metadata` on allowed requests.
    #[serde(default)]
    pub dynamic_metadata: bool,
    /// The issuers (their `issuer` URLs) whose tokens this route accepts; a token from
    /// another configured issuer is refused (401, "issuer not accepted"). Required on
    /// every route that takes tokens when several issuers are configured: each could
    /// otherwise mint any user. Default with one issuer: that issuer.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// The token must have been minted for one of these audiences (`aud`), so a token
    /// for another service is refused here (401, "audience not accepted"). Default: any
    /// audience its issuer accepts.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where to look for the token: `bearer`, `basic` (the password of HTTP Basic, as git
    /// sends it), `header:NAME`, `cookie:NAME`, `query:NAME`.
    /// A token cookie or query parameter sent twice is refused, not picked.
    #[serde(default = "default_token_from")]
    pub token_from: Vec<String>,
    /// Browsers sign in: a browser session is accepted when the request has no token,
    /// and a browser opening a page without either is sent to the IdP (the route's
    /// issuer with a `browser_client`). API calls and scripts still get 401.
    #[serde(default)]
    pub browser_sign_in: bool,
    /// Headers injected upstream from the identity.
    #[serde(default)]
    pub inject: RawInject,
    /// Request headers removed before the request goes upstream.
    #[serde(default)]
    pub remove_headers: Vec<String>,
    /// The route leads to a kube-apiserver: which requests, as whom.
    pub kube: Option<RawKube>,
}

/// `routes[].kube`.
#[derive(Debug, Deserialize)]
pub struct RawKube {
    /// Tried in order; the first that allows decides; none: denied.
    pub rules: Vec<RawKubeRule>,
    /// `granting` (the group that allowed, if any), `none`, or `fixed:NAME`.
    #[serde(default = "default_impersonate_group")]
    pub impersonate_group: String,
}

fn default_impersonate_group() -> String {
    "granting".into()
}

/// One `routes[].kube.rules[]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawKubeRule {
    /// Verbs; `*` for any.
    pub verbs: Vec<String>,
    /// API groups (`""` for core); default any.
    pub api_groups: Option<Vec<String>>,
    /// Resources, RBAC style (`pods`, `pods/log`, `*/scale`, `*`).
    pub resources: Vec<String>,
    /// Non-resource paths (`/healthz`, `/apis/*`).
    pub non_resource_paths: Vec<String>,
    /// Namespaces named outright; `*` for any.
    pub namespaces: Vec<String>,
    /// Pattern naming the group that owns a namespace, with `{namespace}`.
    pub namespace_group: Option<String>,
    /// Cluster-scoped requests too.
    pub cluster: bool,
    /// The user must also be in one of these groups.
    pub groups_any_of: Vec<String>,
}

fn default_token_from() -> Vec<String> {
    vec!["bearer".into()]
}

/// `routes[].match`; an empty field matches everything.
#[derive(Debug, Default, Deserialize)]
pub struct RawMatch {
    /// Exact hosts or `*.suffix` wildcards.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path: whole segments, a prefix, an exact path or a regex, compared with the path
    /// decoded once (`%2D` is `-`, `%2F` is `/`), as the upstream reads it.
    pub path: Option<RawPath>,
    /// HTTP methods.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Calling workload identities (`source.principal`), Istio-style patterns.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Envoy `context_extensions` that must be present with these values.
    #[serde(default)]
    pub context_extensions: BTreeMap<String, String>,
}

/// `routes[].match.path`: exactly one of `segment_prefix`, `prefix`, `exact` or `regex`.
#[derive(Debug, Deserialize)]
pub struct RawPath {
    /// Matches this path and the paths below it, by whole segments: `/a/projects/team-a`
    /// matches `/a/projects/team-a` and `/a/projects/team-a/x`, not `/a/projects/team-abc`
    /// (like Envoy's `path_separated_prefix`). A trailing `/` makes no difference.
    pub segment_prefix: Option<String>,
    /// Matches paths that start with this string, character by character: `/a/team-a`
    /// also matches `/a/team-abc` (`validate` warns unless it ends with `/`).
    pub prefix: Option<String>,
    /// Matches only this path.
    pub exact: Option<String>,
    /// Matches paths that match this regular expression as a whole.
    pub regex: Option<String>,
}

/// `routes[].allow`: `public`, `authenticated`, one rule, or a list of rules (the first
/// that holds allows).
#[derive(Debug, PartialEq)]
pub enum RawAllow {
    /// No token needed.
    Public,
    /// Any valid token.
    Authenticated,
    /// One rule, written as a map.
    Rule(RawRule),
    /// Rules, any of which allows, written as a list.
    Rules(Vec<RawRule>),
}

impl RawAllow {
    /// The rules, however written; none for `public` and `authenticated`.
    pub fn rules(&self) -> &[RawRule] {
        match self {
            RawAllow::Rule(rule) => std::slice::from_ref(rule),
            RawAllow::Rules(rules) => rules,
            RawAllow::Public | RawAllow::Authenticated => &[],
        }
    }
}

impl<'de> Deserialize<'de> for RawAllow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AllowVisitor)
    }
}

struct AllowVisitor;

impl<'de> Visitor<'de> for AllowVisitor {
    type Value = RawAllow;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`public`, `authenticated`, a rule (a map) or a list of rules")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAllow, E> {
        match v {
            "public" => Ok(RawAllow::Public),
            "authenticated" => Ok(RawAllow::Authenticated),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawAllow, A::Error> {
        RawRule::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawAllow::Rule)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<RawAllow, A::Error> {
        Vec::<RawRule>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(RawAllow::Rules)
    }
}

/// One rule of `routes[].allow`: every condition given must hold.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RawRule {
    /// A valid token is needed (implied by groups, claims and scopes).
    pub authenticated: bool,
    /// The calling workload must match one of these (Istio-style patterns).
    pub principals: Vec<String>,
    /// The user must be in one of these groups (names or UUIDs).
    pub groups_any_of: Vec<String>,
    /// The user must be in all of these groups.
    pub groups_all_of: Vec<String>,
    /// Conditions on claims, by claim name (or dotted path).
    pub claims: BTreeMap<String, RawClaimCondition>,
    /// OAuth scopes the token must carry.
    pub scopes: Vec<String>,
    /// For a workload-only rule: the user the workload acts as upstream.
    pub as_user: Option<String>,
    /// The request must act for a Gerrit change in a given state (needs `gerrit`).
    pub change: Option<Box<RawChangeCondition>>,
    /// An active grant from the `grants:` file must name the caller and this route.
    pub grant: bool,
}

/// `allow[].change`: the Gerrit change the request acts for, and the state it must be in.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RawChangeCondition {
    /// The request header naming the change: `1234`, `project~1234` or
    /// `project~branch~Change-Id` (exactly one of `header` and `claim`).
    pub header: Option<String>,
    /// The token claim naming the change (the rule then needs a token).
    pub claim: Option<String>,
    /// Projects allowed: `name`, `prefix*` or `*`; empty: any.
    pub projects: Vec<String>,
    /// Target branches allowed (without `refs/heads/`), same patterns; empty: any.
    pub branches: Vec<String>,
    /// `merged`, or `submittable` (every submit requirement satisfied, or merged).
    pub state: String,
    /// A request header that must equal the change's current revision (its merged commit
    /// once merged), so a pipeline cannot act on a patch set nobody approved.
    pub revision_header: Option<String>,
    /// An approval the change must carry: the label's highest vote by someone who is not
    /// the change's owner or the caller.
    pub approval: Option<RawApproval>,
}

/// `allow[].change.approval`.
#[derive(Debug, PartialEq, Deserialize)]
pub struct RawApproval {
    /// The label whose highest value approves (`Code-Review`, for +2).
    #[serde(default = "default_approval_label")]
    pub label: String,
    /// Whose votes do not count: `owner`, `caller`.
    #[serde(default)]
    pub not_by: Vec<String>,
}

fn default_approval_label() -> String {
    "Code-Review".into()
}

/// A condition on one claim: exactly one of `equals`, `one_of`, `contains`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RawClaimCondition {
    /// The claim equals this string, number or boolean.
    pub equals: Option<serde_json::Value>,
    /// The claim equals one of these.
    pub one_of: Option<Vec<serde_json::Value>>,
    /// The claim (a list, or space-separated words) contains this.
    pub contains: Option<serde_json::Value>,
}

/// `routes[].inject`: upstream header names for identity fields.
#[derive(Debug, Default, Deserialize)]
pub struct RawInject {
    /// Header carrying the username (Gerrit's `auth.httpHeader`).
    pub user: Option<String>,
    /// Header carrying the email address (Gerrit's `auth.httpEmailHeader`).
    pub email: Option<String>,
    /// Header carrying the full name (Gerrit's `auth.httpDisplaynameHeader`).
    pub display_name: Option<String>,
    /// Header carrying the user's group names, comma-separated: a header name, or
    /// `{header, only, max_bytes, on_overflow}`.
    pub groups: Option<RawGroupsHeader>,
}

/// `routes[].inject.groups`.
#[derive(Debug, PartialEq, Eq)]
pub struct RawGroupsHeader {
    /// The header name.
    pub header: String,
    /// Only these groups (names or UUIDs) are passed on; empty: all.
    pub only: Vec<String>,
    /// Largest header value in bytes.
    pub max_bytes: usize,
    /// `deny` or `truncate`.
    pub on_overflow: String,
}

use crate::policy::DEFAULT_GROUPS_HEADER_BYTES;

impl<'de> Deserialize<'de> for RawGroupsHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(GroupsHeaderVisitor)
    }
}

/// The long form of `inject.groups`.
#[derive(Deserialize)]
struct RawGroupsHeaderFull {
    header: String,
    #[serde(default)]
    only: Vec<String>,
    #[serde(default = "default_groups_bytes")]
    max_bytes: usize,
    #[serde(default = "default_on_overflow")]
    on_overflow: String,
}

fn default_groups_bytes() -> usize {
    DEFAULT_GROUPS_HEADER_BYTES
}

fn default_on_overflow() -> String {
    "deny".into()
}

struct GroupsHeaderVisitor;

impl<'de> Visitor<'de> for GroupsHeaderVisitor {
    type Value = RawGroupsHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a header name or `{header, only, max_bytes, on_overflow}`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawGroupsHeader, E> {
        Ok(RawGroupsHeader {
            header: v.to_string(),
            only: Vec::new(),
            max_bytes: DEFAULT_GROUPS_HEADER_BYTES,
            on_overflow: default_on_overflow(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawGroupsHeader, A::Error> {
        let f = RawGroupsHeaderFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(RawGroupsHeader {
            header: f.header,
            only: f.only,
            max_bytes: f.max_bytes,
            on_overflow: f.on_overflow,
        })
    }
}
