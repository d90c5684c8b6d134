//! A fake OpenID Connect provider speaking the wire formats of OpenID Connect Core 1.0,
//! Discovery 1.0 and RP-Initiated Logout 1.0, OAuth 2.0 (RFC 6749) and PKCE (RFC 7636),
//! for tests of a relying party's browser sign-in: a real login form a WebDriver can fill
//! in, authorization codes bound to a PKCE challenge, a token endpoint authenticating
//! clients, refresh tokens with rotation, an end-session endpoint, and for command-line
//! clients the device authorization grant (RFC 8628, in `oidc_provider/device.rs`).
//!
//! It is strict where a relying party could get the protocol wrong (exact redirect URIs,
//! S256 only, single-use codes, the registered client authentication method) and answers
//! every bad request with the error the specs name, never a panic.
//!
//! Decisions where the specs leave a choice:
//! - There is no IdP session (no SSO cookie): every authorization request shows the login
//!   form, and `prompt=none` answers `login_required` (OIDC Core 3.1.2.6).
//! - A refresh token is issued with every code exchange, `offline_access` or not (as most
//!   IdPs do), unless [`OidcConfig::issue_refresh_tokens`] is off. Refresh tokens do not
//!   expire and survive logout; [`FakeOidcProvider::revoke_refresh_tokens`] ends them.
//! - Without rotation a refresh answers no `refresh_token` (RFC 6749 5.1 makes it optional):
//!   the client keeps using the one it has.
//! - A code is spent by any redemption attempt of the client it was issued to, failed or
//!   not (a wrong `code_verifier` cannot be retried). Redeeming a spent code revokes the
//!   refresh tokens issued from it (RFC 6749 4.1.2, a SHOULD).
//! - A missing `code_verifier` is `invalid_grant`, like a wrong one.
//! - `email`, `email_verified`, `name` and `preferred_username` are in every ID token, the
//!   scopes asked for or not; there is no UserInfo endpoint.
//! - `expires_in` (the opaque access token) equals the ID token lifetime.
//! - The end-session endpoint signs out at once (no confirmation page); an `id_token_hint`
//!   must be an ID token this provider issued, expired ones included (RP-Initiated Logout
//!   2: the OP SHOULD accept them).

mod device;

use super::tokens;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, LOCATION, PRAGMA, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How a client authenticates at the token endpoint (OIDC Core 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A public client (`token_endpoint_auth_method` `none`): `client_id` in the body and
    /// no secret, as command-line clients are registered.
    None,
}

/// A registered client (relying party).
#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: String,
    pub client_secret: String,
    pub auth_method: ClientAuth,
    /// Compared exactly, as OIDC Core 3.1.2.1 requires.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
}

impl Client {
    /// A client with no redirect URIs yet.
    pub fn new(client_id: &str, client_secret: &str, auth_method: ClientAuth) -> Self {
        Self {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            auth_method,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
        }
    }

    /// Registers a redirect URI.
    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.to_string());
        self
    }

    /// Registers a post-logout redirect URI.
    pub fn post_logout_redirect_uri(mut self, uri: &str) -> Self {
        self.post_logout_redirect_uris.push(uri.to_string());
        self
    }
}

/// A user who can sign in.
#[derive(Clone, Debug)]
pub struct User {
    pub username: String,
    pub password: String,
    /// The `sub` claim; `sub-{username}` unless set, as in `tokens::claims`.
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

impl User {
    /// `username` with email `{username}@example.com` (verified) and name `username`.
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            username: username.to_string(),
            password: password.to_string(),
            sub: format!("sub-{username}"),
            email: format!("{username}@example.com"),
            email_verified: true,
            name: username.to_string(),
        }
    }

    pub fn email(mut self, email: &str) -> Self {
        self.email = email.to_string();
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    pub fn sub(mut self, sub: &str) -> Self {
        self.sub = sub.to_string();
        self
    }
}

/// What the provider knows and how it behaves.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    pub clients: Vec<Client>,
    pub users: Vec<User>,
    /// ID token `exp - iat`, and the access token's `expires_in`.
    pub id_token_lifetime: Duration,
    /// How long an authorization code can be redeemed.
    pub code_lifetime: Duration,
    /// Whether each refresh spends the refresh token and answers a new one.
    pub rotate_refresh_tokens: bool,
    /// Whether code exchanges answer a refresh token at all.
    pub issue_refresh_tokens: bool,
    /// The fixture key (`tokens.rs`) that signs ID tokens; its name is the `kid`.
    pub signing_key: String,
    /// A device code's `expires_in` (RFC 8628 3.2).
    pub device_code_lifetime: Duration,
    /// The polling `interval` a device authorization answers (whole seconds).
    pub device_poll_interval: Duration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            clients: Vec::new(),
            users: Vec::new(),
            id_token_lifetime: Duration::from_secs(300),
            code_lifetime: Duration::from_secs(60),
            rotate_refresh_tokens: true,
            issue_refresh_tokens: true,
            signing_key: "rsa-a".to_string(),
            device_code_lifetime: Duration::from_secs(600),
            device_poll_interval: Duration::from_secs(5),
        }
    }
}

impl OidcConfig {
    pub fn client(mut self, client: Client) -> Self {
        self.clients.push(client);
        self
    }

    pub fn user(mut self, user: User) -> Self {
        self.users.push(user);
        self
    }
}

/// What the provider has seen, for tests to assert on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Login forms shown for a valid `GET /authorize`.
    pub authorization_page_views: usize,
    /// Sign-ins with the right password.
    pub logins: usize,
    /// Sign-ins with a wrong username or password (the form is shown again).
    pub failed_logins: usize,
    /// Authorization answered `access_denied` (cancelled, or [`FakeOidcProvider::deny_next_authorization`]).
    pub access_denied: usize,
    /// Token requests with `grant_type=authorization_code`, answered or refused.
    pub authorization_code_requests: usize,
    /// Token requests with `grant_type=refresh_token`, answered or refused.
    pub refresh_token_requests: usize,
    /// Token requests answered with tokens.
    pub tokens_issued: usize,
    /// Token requests refused with `invalid_grant`.
    pub invalid_grants: usize,
    /// Redemptions of a code already spent.
    pub code_reuses: usize,
    /// Refreshes with a token already rotated or revoked.
    pub refresh_token_reuses: usize,
    /// Accepted end-session requests.
    pub logouts: usize,
    /// Device authorization requests answered.
    pub device_authorizations: usize,
    /// Token requests with the device code grant, answered or refused.
    pub device_polls: usize,
    /// Polls answered `slow_down`.
    pub slow_downs: usize,
    /// Device authorizations approved, and denied.
    pub device_approvals: usize,
    pub device_denials: usize,
}

/// An accepted end-session request, as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logout {
    pub id_token_hint: Option<String>,
    /// The client named by `client_id` or the hint's `aud`.
    pub client_id: Option<String>,
    /// The hint's `sub`.
    pub sub: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
}

/// A running fake OpenID provider on an ephemeral loopback port.
pub struct FakeOidcProvider {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeOidcProvider {
    /// Starts serving `config` on `127.0.0.1:0`. Panics on an unknown signing key.
    pub async fn start(config: OidcConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake OpenID provider");
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared::new(addr, config));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks.json", get(jwks))
            .route("/authorize", get(authorize_page).post(authorize_submit))
            .route("/token", post(token))
            .route("/logout", get(end_session_get).post(end_session_post))
            .route("/device/code", post(device::authorize))
            .route("/device", get(device::page).post(device::submit))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { shared, task }
    }

    /// The issuer, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.shared.issuer)
    }

    /// `{issuer}/authorize`.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.shared.issuer)
    }

    /// `{issuer}/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.shared.issuer)
    }

    /// `{issuer}/jwks.json`.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.shared.issuer)
    }

    /// `{issuer}/logout`.
    pub fn end_session_endpoint(&self) -> String {
        format!("{}/logout", self.shared.issuer)
    }

    /// `{issuer}/device/code`.
    pub fn device_authorization_endpoint(&self) -> String {
        format!("{}/device/code", self.shared.issuer)
    }

    /// Approves the pending device authorization showing `user_code` for `username`,
    /// as the person would on the verification page. False when there is none.
    pub fn approve_device(&self, user_code: &str, username: &str) -> bool {
        self.shared.approve_device(user_code, username)
    }

    /// Denies the pending device authorization showing `user_code`.
    pub fn deny_device(&self, user_code: &str) -> bool {
        self.shared.deny_device(user_code)
    }

    /// The user codes of pending device authorizations (`XXXX-XXXX`), oldest first.
    pub fn pending_user_codes(&self) -> Vec<String> {
        self.shared.pending_user_codes()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Lifetime of ID tokens (and `expires_in`) issued from now on.
    pub fn set_id_token_lifetime(&self, lifetime: Duration) {
        let secs = lifetime.as_secs();
        self.shared.id_token_lifetime.store(secs, Ordering::SeqCst);
    }

    /// Turns refresh token rotation on or off for refreshes from now on.
    pub fn set_rotate_refresh_tokens(&self, rotate: bool) {
        self.shared
            .rotate_refresh_tokens
            .store(rotate, Ordering::SeqCst);
    }

    /// The next sign-in with the right password answers `error=access_denied` instead of
    /// a code, as when the user refuses consent or a policy at the IdP denies access.
    pub fn deny_next_authorization(&self) {
        self.shared.deny_next.store(true, Ordering::SeqCst);
    }

    /// Makes the token endpoint wait this long before each answer, like an IdP under
    /// load.
    pub fn set_token_delay(&self, delay: Duration) {
        self.shared
            .token_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Registers another redirect URI and post-logout redirect URI for `client_id`, as an
    /// IdP's admin would (a test learns its gateway's port only once it runs).
    pub fn register_uris(
        &self,
        client_id: &str,
        redirect_uri: &str,
        post_logout_redirect_uri: &str,
    ) {
        let mut clients = self.shared.clients.lock().unwrap();
        let client = clients.get_mut(client_id).expect("a registered client");
        client.redirect_uris.push(redirect_uri.to_string());
        client
            .post_logout_redirect_uris
            .push(post_logout_redirect_uri.to_string());
    }

    /// Makes every refresh token issued so far answer `invalid_grant`.
    pub fn revoke_refresh_tokens(&self) {
        let mut state = self.shared.lock();
        for grant in state.refresh_tokens.values_mut() {
            grant.status = RefreshStatus::Revoked;
        }
    }

    /// Moves the provider's clock forward: codes expire and tokens are stamped by it.
    pub fn advance_clock(&self, by: Duration) {
        let secs = by.as_secs();
        self.shared.clock_offset.fetch_add(secs, Ordering::SeqCst);
    }

    /// The provider's clock, seconds since the epoch.
    pub fn now(&self) -> u64 {
        self.shared.now()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// The last accepted end-session request.
    pub fn last_logout(&self) -> Option<Logout> {
        self.shared.lock().last_logout.clone()
    }

    /// The `id_token_hint` of the last accepted end-session request.
    pub fn last_id_token_hint(&self) -> Option<String> {
        self.last_logout().and_then(|logout| logout.id_token_hint)
    }
}

impl Drop for FakeOidcProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// State

struct Shared {
    addr: SocketAddr,
    issuer: String,
    signing_key: String,
    discovery: String,
    jwks: String,
    clients: Mutex<HashMap<String, Client>>,
    users: HashMap<String, User>,
    code_lifetime: u64,
    issue_refresh_tokens: bool,
    id_token_lifetime: AtomicU64,
    rotate_refresh_tokens: AtomicBool,
    deny_next: AtomicBool,
    clock_offset: AtomicU64,
    /// Milliseconds the token endpoint waits before answering (a slow IdP).
    token_delay_ms: AtomicU64,
    device_code_lifetime: u64,
    device_poll_interval: u64,
    state: Mutex<ProviderState>,
}

/// Everything issued and seen, behind one lock so no lock order can go wrong.
#[derive(Default)]
struct ProviderState {
    codes: HashMap<String, IssuedCode>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    /// ID tokens issued, so `id_token_hint` can be checked: token -> (client_id, sub).
    id_tokens: HashMap<String, (String, String)>,
    next_grant: u64,
    stats: Stats,
    last_logout: Option<Logout>,
    /// Device authorizations by device code.
    device_codes: HashMap<String, device::DeviceGrant>,
}

/// A validated authorization request (OIDC Core 3.1.2.1).
#[derive(Clone, Debug)]
struct AuthorizationRequest {
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
}

struct IssuedCode {
    request: AuthorizationRequest,
    username: String,
    auth_time: u64,
    issued_at: u64,
    spent: bool,
    /// Refresh tokens issued from this code share it, to revoke them on code reuse.
    grant: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RefreshStatus {
    Active,
    Rotated,
    Revoked,
}

struct RefreshGrant {
    client_id: String,
    username: String,
    scope: String,
    auth_time: u64,
    grant: u64,
    status: RefreshStatus,
}

impl Shared {
    fn new(addr: SocketAddr, config: OidcConfig) -> Self {
        let issuer = format!("http://{addr}");
        // Signing once now makes a missing key fail here, not in a token request.
        tokens::sign(&config.signing_key, &json!({}));
        let alg = if config.signing_key.starts_with("ec") {
            "ES256"
        } else {
            "RS256"
        };
        Self {
            addr,
            discovery: discovery_document(&issuer, alg).to_string(),
            jwks: tokens::jwks(&[config.signing_key.as_str()]).to_string(),
            issuer,
            signing_key: config.signing_key,
            clients: Mutex::new(
                config
                    .clients
                    .into_iter()
                    .map(|c| (c.client_id.clone(), c))
                    .collect(),
            ),
            users: config
                .users
                .into_iter()
                .map(|u| (u.username.clone(), u))
                .collect(),
            code_lifetime: config.code_lifetime.as_secs(),
            issue_refresh_tokens: config.issue_refresh_tokens,
            id_token_lifetime: AtomicU64::new(config.id_token_lifetime.as_secs()),
            rotate_refresh_tokens: AtomicBool::new(config.rotate_refresh_tokens),
            deny_next: AtomicBool::new(false),
            clock_offset: AtomicU64::new(0),
            token_delay_ms: AtomicU64::new(0),
            device_code_lifetime: config.device_code_lifetime.as_secs(),
            device_poll_interval: config.device_poll_interval.as_secs().max(1),
            state: Mutex::new(ProviderState::default()),
        }
    }

    /// The state; a panic elsewhere while holding it leaves counters that are still
    /// worth reading, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, ProviderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        tokens::now() + self.clock_offset.load(Ordering::SeqCst)
    }

    /// Whether `username` signs in with `password`; a failure is counted.
    fn password_ok(&self, username: &str, password: &str) -> bool {
        let known = self
            .users
            .get(username)
            .is_some_and(|user| user.password == password);
        if !known {
            self.lock().stats.failed_logins += 1;
        }
        known
    }
}

/// The discovery document (Discovery 1.0 section 3). `request_uri_parameter_supported`
/// defaults to true there, so it is said false.
fn discovery_document(issuer: &str, alg: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks.json"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
        "code_challenge_methods_supported": ["S256"],
        "device_authorization_endpoint": format!("{issuer}/device/code"),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "grant_types_supported": [
            "authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"
        ],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": [
            "iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce",
            "email", "email_verified", "name", "preferred_username"
        ],
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    })
}

// ---------------------------------------------------------------------------------------
// Parameters

/// Request parameters as sent (query or form body), decoded leniently: bad percent
/// escapes and bad UTF-8 cannot fail the parse, only the validation after it.
struct Params(Vec<(String, String)>);

/// A parameter sent more than once (RFC 6749 3.1 forbids it).
struct Duplicate(String);

impl Params {
    fn parse(bytes: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(bytes)
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// The value of `name`. Empty values count as omitted (RFC 6749 3.1).
    fn one(&self, name: &str) -> Result<Option<&str>, Duplicate> {
        let mut values = self
            .0
            .iter()
            .filter(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str());
        let first = values.next();
        match values.next() {
            Some(_) => Err(Duplicate(name.to_string())),
            None => Ok(first),
        }
    }

    /// The first of `names` sent more than once.
    fn duplicated(&self, names: &[&str]) -> Option<Duplicate> {
        names.iter().find_map(|name| self.one(name).err())
    }
}

/// RFC 7636 4.1: 43 to 128 characters of `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`;
/// an S256 challenge (BASE64URL of 32 bytes) fits the same rule.
fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// BASE64URL(SHA256(verifier)) == challenge (RFC 7636 4.6).
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()) == challenge
}

/// An unguessable token: 256 random bits, base64url.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `uri` with `pairs` appended to its query, keeping any query it has (RFC 6749 3.1.2).
/// `None` when `uri` is not an absolute URL.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(uri).ok()?;
    if !pairs.is_empty() {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
    }
    Some(url.into())
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (
            StatusCode::FOUND,
            [
                (LOCATION, value),
                (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => html_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            "<p>The redirect URI cannot be sent in a header.</p>",
        ),
    }
}

// ---------------------------------------------------------------------------------------
// HTML

/// Escapes text for HTML content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page titled "`title` - Fake IdP" with `body` (already HTML).
fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>{} - Fake IdP</title></head>\n<body>\n<h1>{}</h1>\n{body}\n</body>\n</html>\n",
        escape(title),
        escape(title),
    );
    (
        status,
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// A 400 page for a request that cannot be answered by redirecting.
fn error_page(message: &str) -> Response {
    let body = format!("<p id=\"error\">{}</p>", escape(message));
    html_page(StatusCode::BAD_REQUEST, "Error", &body)
}

/// The login form, carrying the authorization request in hidden inputs; `error` and the
/// username typed come back after a failed attempt.
fn login_page(request: &AuthorizationRequest, username: &str, error: Option<&str>) -> Response {
    let mut hidden = vec![
        ("response_type", "code"),
        ("client_id", request.client_id.as_str()),
        ("redirect_uri", request.redirect_uri.as_str()),
        ("scope", request.scope.as_str()),
        ("code_challenge", request.code_challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    if let Some(state) = &request.state {
        hidden.push(("state", state.as_str()));
    }
    if let Some(nonce) = &request.nonce {
        hidden.push(("nonce", nonce.as_str()));
    }
    let hidden: String = hidden
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape(value)
            )
        })
        .collect();
    let error = error
        .map(|e| format!("<p id=\"error\" role=\"alert\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<p>to continue to <strong id=\"client\">{client}</strong></p>\n{error}\
         <form method=\"post\" action=\"/authorize\">\n{hidden}\
         <label for=\"username\">Username</label>\n\
         <input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" value=\"{username}\">\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\n\
         <button id=\"sign-in\" type=\"submit\" name=\"action\" value=\"sign-in\">Sign in</button>\n\
         <button id=\"cancel\" type=\"submit\" name=\"action\" value=\"cancel\">Cancel</button>\n\
         </form>",
        client = escape(&request.client_id),
        username = escape(username),
    );
    html_page(StatusCode::OK, "Sign in", &body)
}

// ---------------------------------------------------------------------------------------
// Discovery and keys

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, shared.discovery.clone())
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, shared.jwks.clone())
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

// ---------------------------------------------------------------------------------------
// Authorization endpoint (OIDC Core 3.1.2)

/// Why an authorization request is refused.
enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: the user is told, and nothing is
    /// redirected (RFC 6749 4.1.2.1, OIDC Core 3.1.2.6).
    Page(String),
    /// Sent back to the client's redirect URI (RFC 6749 4.1.2.1).
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

impl AuthorizeError {
    fn into_response(self) -> Response {
        match self {
            AuthorizeError::Page(message) => error_page(&message),
            AuthorizeError::Redirect {
                redirect_uri,
                state,
                error,
                description,
            } => error_redirect(&redirect_uri, state.as_deref(), error, &description),
        }
    }
}

fn error_redirect(
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    match with_query(redirect_uri, &pairs) {
        Some(location) => redirect(&location),
        None => error_page("The registered redirect URI is not an absolute URL."),
    }
}

/// The authorization request parameters this provider reads.
const AUTHORIZATION_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "prompt",
    "request",
    "request_uri",
];

/// Validates an authorization request: client and redirect URI first, as only then may
/// errors be redirected, then the rest in the order the specs list them.
fn validate_authorization(
    shared: &Shared,
    params: &Params,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let page = |message: &str| AuthorizeError::Page(message.to_string());
    let client_id = match params.one("client_id") {
        Err(_) => return Err(page("client_id was sent more than once.")),
        Ok(None) => return Err(page("The request has no client_id.")),
        Ok(Some(id)) => id,
    };
    let Some(client) = shared.clients.lock().unwrap().get(client_id).cloned() else {
        return Err(page("Unknown client_id."));
    };
    let redirect_uri = match params.one("redirect_uri") {
        Err(_) => return Err(page("redirect_uri was sent more than once.")),
        Ok(None) => return Err(page("The request has no redirect_uri.")),
        Ok(Some(uri)) => uri,
    };
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return Err(page("The redirect_uri is not registered for this client."));
    }
    let state = params.one("state").ok().flatten().map(str::to_string);
    let fail = |error: &'static str, description: &str| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.to_string(),
        state: state.clone(),
        error,
        description: description.to_string(),
    };
    if let Some(Duplicate(name)) = params.duplicated(AUTHORIZATION_PARAMS) {
        return Err(fail(
            "invalid_request",
            &format!("{name} was sent more than once"),
        ));
    }
    // No duplicates now, so `one` cannot fail below.
    let get = |name: &str| params.one(name).ok().flatten();
    if get("request").is_some() {
        return Err(fail(
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    if get("request_uri").is_some() {
        return Err(fail(
            "request_uri_not_supported",
            "request_uri is not supported",
        ));
    }
    match get("response_type") {
        None => return Err(fail("invalid_request", "response_type is required")),
        Some("code") => {}
        Some(_) => {
            return Err(fail(
                "unsupported_response_type",
                "only the authorization code flow (response_type=code) is supported",
            ))
        }
    }
    if get("response_mode").is_some_and(|mode| mode != "query") {
        return Err(fail(
            "invalid_request",
            "only response_mode=query is supported",
        ));
    }
    let scope = get("scope").unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return Err(fail("invalid_scope", "the scope must include openid"));
    }
    let Some(code_challenge) = get("code_challenge") else {
        return Err(fail("invalid_request", "code_challenge required (PKCE)"));
    };
    // An absent method means "plain" (RFC 7636 4.3), which is not supported.
    if get("code_challenge_method") != Some("S256") {
        return Err(fail(
            "invalid_request",
            "transform algorithm not supported; use S256",
        ));
    }
    if !is_pkce_string(code_challenge) {
        return Err(fail("invalid_request", "code_challenge is malformed"));
    }
    if get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "none")) {
        return Err(fail(
            "login_required",
            "there is no session at this provider",
        ));
    }
    Ok(AuthorizationRequest {
        client_id: client_id.to_string(),
        redirect_uri: redirect_uri.to_string(),
        scope: scope.to_string(),
        state,
        nonce: get("nonce").map(str::to_string),
        code_challenge: code_challenge.to_string(),
    })
}

/// `GET /authorize`: the login form, or the error.
async fn authorize_page(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let params = Params::parse(uri.query().unwrap_or_default().as_bytes());
    match validate_authorization(&shared, &params) {
        Ok(request) => {
            shared.lock().stats.authorization_page_views += 1;
            login_page(&request, "", None)
        }
        Err(error) => error.into_response(),
    }
}

/// `POST /authorize`: the login form submitted. The hidden inputs came from the browser,
/// so the request is validated again.
async fn authorize_submit(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let params = Params::parse(&body);
    let request = match validate_authorization(&shared, &params) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let deny = |description: &str| {
        shared.lock().stats.access_denied += 1;
        error_redirect(
            &request.redirect_uri,
            request.state.as_deref(),
            "access_denied",
            description,
        )
    };
    if params.one("action").ok().flatten() == Some("cancel") {
        return deny("the user cancelled the sign-in");
    }
    let username = params.one("username").ok().flatten().unwrap_or_default();
    let password = params.one("password").ok().flatten().unwrap_or_default();
    if !shared.password_ok(username, password) {
        return login_page(&request, username, Some("Invalid username or password."));
    }
    if shared.deny_next.swap(false, Ordering::SeqCst) {
        return deny("the provider denied the authorization");
    }
    let code = issue_code(&shared, request.clone(), username);
    let mut pairs = vec![("code", code.as_str())];
    if let Some(state) = &request.state {
        pairs.push(("state", state));
    }
    match with_query(&request.redirect_uri, &pairs) {
        Some(location) => redirect(&location),
        None => error_page("The registered redirect URI is not an absolute URL."),
    }
}

fn issue_code(shared: &Shared, request: AuthorizationRequest, username: &str) -> String {
    let now = shared.now();
    let code = random_token();
    let mut state = shared.lock();
    state.stats.logins += 1;
    state.next_grant += 1;
    let grant = state.next_grant;
    state.codes.insert(
        code.clone(),
        IssuedCode {
            request,
            username: username.to_string(),
            auth_time: now,
            issued_at: now,
            spent: false,
            grant,
        },
    );
    code
}

// ---------------------------------------------------------------------------------------
// Token endpoint (OIDC Core 3.1.3, RFC 6749 4.1.3, 5, 6)

/// An error answer of the token endpoint (RFC 6749 5.2).
struct TokenError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// Adds `WWW-Authenticate: Basic` to a 401.
    basic_challenge: bool,
}

impl TokenError {
    fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::bad_request("invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::bad_request("invalid_grant", description)
    }

    fn invalid_client(description: impl Into<String>, basic_challenge: bool) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
            basic_challenge,
        }
    }
}

impl From<Duplicate> for TokenError {
    fn from(Duplicate(name): Duplicate) -> Self {
        Self::invalid_request(format!("{name} was sent more than once"))
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut response = token_json(self.status, &body);
        if self.basic_challenge {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"fake-idp\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// A token endpoint answer: JSON, never cached (RFC 6749 5.1).
fn token_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, "application/json"),
            (CACHE_CONTROL, "no-store"),
            (PRAGMA, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let delay = shared.token_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let grant_type = Params::parse(&body)
        .one("grant_type")
        .ok()
        .flatten()
        .map(str::to_string);
    {
        let mut state = shared.lock();
        match grant_type.as_deref() {
            Some("authorization_code") => state.stats.authorization_code_requests += 1,
            Some("refresh_token") => state.stats.refresh_token_requests += 1,
            _ => {}
        }
    }
    match token_answer(&shared, &headers, &body) {
        Ok(answer) => {
            shared.lock().stats.tokens_issued += 1;
            token_json(StatusCode::OK, &answer)
        }
        Err(error) => {
            if error.error == "invalid_grant" {
                shared.lock().stats.invalid_grants += 1;
            }
            error.into_response()
        }
    }
}

fn token_answer(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Value, TokenError> {
    if !is_form_urlencoded(headers) {
        return Err(TokenError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(body);
    if let Some(duplicate) = params.duplicated(&[
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
        "client_id",
        "client_secret",
        "device_code",
    ]) {
        return Err(duplicate.into());
    }
    let client = authenticate_client(shared, headers, &params)?;
    match params.one("grant_type")? {
        None => Err(TokenError::invalid_request("grant_type is required")),
        Some("authorization_code") => redeem_code(shared, &client, &params),
        Some("refresh_token") => refresh(shared, &client, &params),
        Some(device::GRANT_TYPE) => device::redeem(shared, &client, &params),
        Some(_) => Err(TokenError::bad_request(
            "unsupported_grant_type",
            "supported: authorization_code, refresh_token, device_code",
        )),
    }
}

fn is_form_urlencoded(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Client credentials from `Authorization: Basic`: base64 of `id:secret`, each
/// form-urlencoded first (RFC 6749 2.3.1). `None` when malformed.
fn basic_credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// Decodes one application/x-www-form-urlencoded component (`+` is a space).
fn form_decode(component: &str) -> Option<String> {
    let spaced = component.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Authenticates the client by its registered method (OIDC Core 9); one method per
/// request (RFC 6749 2.3).
fn authenticate_client(
    shared: &Shared,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Client, TokenError> {
    let body_id = params.one("client_id")?;
    let body_secret = params.one("client_secret")?;
    let (client_id, secret, used) = match headers.get(AUTHORIZATION) {
        Some(header) => {
            let Some((id, secret)) = basic_credentials(header) else {
                return Err(TokenError::invalid_client(
                    "malformed Basic credentials",
                    true,
                ));
            };
            if body_secret.is_some() {
                return Err(TokenError::invalid_request(
                    "more than one client authentication method",
                ));
            }
            if body_id.is_some_and(|body_id| body_id != id) {
                return Err(TokenError::invalid_request(
                    "client_id differs from the authenticated client",
                ));
            }
            (id, secret, ClientAuth::ClientSecretBasic)
        }
        None => match (body_id, body_secret) {
            (Some(id), Some(secret)) => (
                id.to_string(),
                secret.to_string(),
                ClientAuth::ClientSecretPost,
            ),
            (Some(id), None) => (id.to_string(), String::new(), ClientAuth::None),
            _ => {
                return Err(TokenError::invalid_client(
                    "client authentication required",
                    true,
                ))
            }
        },
    };
    let challenge = used == ClientAuth::ClientSecretBasic;
    let Some(client) = shared.clients.lock().unwrap().get(&client_id).cloned() else {
        return Err(TokenError::invalid_client("unknown client", challenge));
    };
    let challenge = challenge || client.auth_method == ClientAuth::ClientSecretBasic;
    if client.auth_method != used {
        return Err(TokenError::invalid_client(
            format!(
                "the client is registered for {}",
                auth_method_name(client.auth_method)
            ),
            challenge,
        ));
    }
    if client.client_secret != secret {
        return Err(TokenError::invalid_client("wrong client secret", challenge));
    }
    Ok(client)
}

fn auth_method_name(method: ClientAuth) -> &'static str {
    match method {
        ClientAuth::ClientSecretBasic => "client_secret_basic",
        ClientAuth::ClientSecretPost => "client_secret_post",
        ClientAuth::None => "none",
    }
}

/// `grant_type=authorization_code` (RFC 6749 4.1.3, RFC 7636 4.5, OIDC Core 3.1.3.2).
fn redeem_code(shared: &Shared, client: &Client, params: &Params) -> Result<Value, TokenError> {
    let Some(code) = params.one("code")? else {
        return Err(TokenError::invalid_request("code is required"));
    };
    let Some(redirect_uri) = params.one("redirect_uri")? else {
        return Err(TokenError::invalid_request("redirect_uri is required"));
    };
    let verifier = params.one("code_verifier")?;
    let now = shared.now();
    let mut state = shared.lock();
    let Some(issued) = state.codes.get_mut(code) else {
        return Err(TokenError::invalid_grant("unknown authorization code"));
    };
    if issued.request.client_id != client.client_id {
        return Err(TokenError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if issued.spent {
        let grant = issued.grant;
        state.stats.code_reuses += 1;
        revoke_grant(&mut state, grant);
        return Err(TokenError::invalid_grant("the code was already used"));
    }
    issued.spent = true;
    if now > issued.issued_at + shared.code_lifetime {
        return Err(TokenError::invalid_grant("the code expired"));
    }
    if issued.request.redirect_uri != redirect_uri {
        return Err(TokenError::invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    let Some(verifier) = verifier else {
        return Err(TokenError::invalid_grant("code_verifier required (PKCE)"));
    };
    if !is_pkce_string(verifier) || !pkce_matches(verifier, &issued.request.code_challenge) {
        return Err(TokenError::invalid_grant("PKCE verification failed"));
    }
    let grant = Grant {
        client_id: issued.request.client_id.clone(),
        username: issued.username.clone(),
        scope: issued.request.scope.clone(),
        auth_time: issued.auth_time,
        grant: issued.grant,
    };
    let nonce = issued.request.nonce.clone();
    let refresh = shared.issue_refresh_tokens;
    issue_tokens(
        shared,
        &mut state,
        &grant,
        &grant.scope,
        nonce.as_deref(),
        refresh,
    )
}

/// Revokes the refresh tokens issued from one authorization.
fn revoke_grant(state: &mut ProviderState, grant: u64) {
    for token in state.refresh_tokens.values_mut() {
        if token.grant == grant {
            token.status = RefreshStatus::Revoked;
        }
    }
}

/// `grant_type=refresh_token` (RFC 6749 6, OIDC Core 12).
fn refresh(shared: &Shared, client: &Client, params: &Params) -> Result<Value, TokenError> {
    let Some(token) = params.one("refresh_token")? else {
        return Err(TokenError::invalid_request("refresh_token is required"));
    };
    let requested_scope = params.one("scope")?;
    let rotate = shared.rotate_refresh_tokens.load(Ordering::SeqCst);
    let mut state = shared.lock();
    let Some(stored) = state.refresh_tokens.get_mut(token) else {
        return Err(TokenError::invalid_grant("unknown refresh token"));
    };
    if stored.client_id != client.client_id {
        return Err(TokenError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    let status = stored.status;
    if status != RefreshStatus::Active {
        state.stats.refresh_token_reuses += 1;
        return Err(TokenError::invalid_grant(match status {
            RefreshStatus::Rotated => "the refresh token was already used (rotated)",
            _ => "the refresh token was revoked",
        }));
    }
    let granted: Vec<&str> = stored.scope.split(' ').collect();
    let scope = match requested_scope {
        Some(requested) if requested.split(' ').all(|s| granted.contains(&s)) => requested,
        Some(_) => {
            return Err(TokenError::bad_request(
                "invalid_scope",
                "the scope exceeds the one originally granted",
            ))
        }
        None => stored.scope.as_str(),
    }
    .to_string();
    if rotate {
        stored.status = RefreshStatus::Rotated;
    }
    let grant = Grant {
        client_id: stored.client_id.clone(),
        username: stored.username.clone(),
        scope: stored.scope.clone(),
        auth_time: stored.auth_time,
        grant: stored.grant,
    };
    issue_tokens(shared, &mut state, &grant, &scope, None, rotate)
}

/// One authorization, as tokens issued from it carry it.
struct Grant {
    client_id: String,
    username: String,
    /// The scope granted at authorization, kept by new refresh tokens.
    scope: String,
    auth_time: u64,
    grant: u64,
}

/// The token response (OIDC Core 3.1.3.3), recording the ID token and refresh token.
fn issue_tokens(
    shared: &Shared,
    state: &mut ProviderState,
    grant: &Grant,
    scope: &str,
    nonce: Option<&str>,
    with_refresh_token: bool,
) -> Result<Value, TokenError> {
    let Some(user) = shared.users.get(&grant.username) else {
        return Err(TokenError::invalid_grant("the user no longer exists"));
    };
    let now = shared.now();
    let lifetime = shared.id_token_lifetime.load(Ordering::SeqCst);
    let id_token = tokens::sign(
        &shared.signing_key,
        &id_token_claims(shared, user, grant, now, lifetime, nonce),
    );
    state.id_tokens.insert(
        id_token.clone(),
        (grant.client_id.clone(), user.sub.clone()),
    );
    let mut answer = json!({
        "access_token": random_token(),
        "token_type": "Bearer",
        "expires_in": lifetime,
        "id_token": id_token,
        "scope": scope,
    });
    if with_refresh_token {
        let refresh_token = random_token();
        state.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshGrant {
                client_id: grant.client_id.clone(),
                username: grant.username.clone(),
                scope: grant.scope.clone(),
                auth_time: grant.auth_time,
                grant: grant.grant,
                status: RefreshStatus::Active,
            },
        );
        answer["refresh_token"] = Value::String(refresh_token);
    }
    Ok(answer)
}

/// ID token claims (OIDC Core 2). A refreshed ID token has no nonce and keeps the
/// original `auth_time` (OIDC Core 12.2).
fn id_token_claims(
    shared: &Shared,
    user: &User,
    grant: &Grant,
    now: u64,
    lifetime: u64,
    nonce: Option<&str>,
) -> Value {
    let mut claims = json!({
        "iss": shared.issuer,
        "sub": user.sub,
        "aud": grant.client_id,
        "azp": grant.client_id,
        "exp": now + lifetime,
        "iat": now,
        "auth_time": grant.auth_time,
        "email": user.email,
        "email_verified": user.email_verified,
        "name": user.name,
        "preferred_username": user.username,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = Value::String(nonce.to_string());
    }
    claims
}

// ---------------------------------------------------------------------------------------
// End-session endpoint (RP-Initiated Logout 1.0, section 2: GET and POST)

async fn end_session_get(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let params = Params::parse(uri.query().unwrap_or_default().as_bytes());
    end_session(&shared, &params)
}

async fn end_session_post(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    end_session(&shared, &Params::parse(&body))
}

fn end_session(shared: &Shared, params: &Params) -> Response {
    let logout = match validate_logout(shared, params) {
        Ok(logout) => logout,
        Err(message) => return error_page(&message),
    };
    {
        let mut state = shared.lock();
        state.stats.logouts += 1;
        state.last_logout = Some(logout.clone());
    }
    match &logout.post_logout_redirect_uri {
        Some(uri) => {
            let state: Vec<(&str, &str)> = logout
                .state
                .as_deref()
                .map(|s| ("state", s))
                .into_iter()
                .collect();
            match with_query(uri, &state) {
                Some(location) => redirect(&location),
                None => {
                    error_page("The registered post_logout_redirect_uri is not an absolute URL.")
                }
            }
        }
        None => html_page(
            StatusCode::OK,
            "Signed out",
            "<p id=\"signed-out\">You have been signed out.</p>",
        ),
    }
}

/// Checks an end-session request; the error is shown to the user, as the client cannot
/// be trusted with a redirect (RP-Initiated Logout 2, 3).
fn validate_logout(shared: &Shared, params: &Params) -> Result<Logout, String> {
    if let Some(Duplicate(name)) = params.duplicated(&[
        "id_token_hint",
        "client_id",
        "post_logout_redirect_uri",
        "state",
        "logout_hint",
        "ui_locales",
    ]) {
        return Err(format!("{name} was sent more than once."));
    }
    let get = |name: &str| params.one(name).ok().flatten();
    let hint = get("id_token_hint");
    let hinted = match hint {
        Some(token) => match shared.lock().id_tokens.get(token) {
            Some(found) => Some(found.clone()),
            None => return Err("The id_token_hint was not issued by this provider.".into()),
        },
        None => None,
    };
    let client_id = match (get("client_id"), &hinted) {
        (Some(id), Some((aud, _))) if id != aud => {
            return Err("client_id differs from the id_token_hint's audience.".into())
        }
        (Some(id), _) => Some(id.to_string()),
        (None, Some((aud, _))) => Some(aud.clone()),
        (None, None) => None,
    };
    if let Some(id) = &client_id {
        if !shared.clients.lock().unwrap().contains_key(id) {
            return Err("Unknown client_id.".into());
        }
    }
    let post_logout_redirect_uri = get("post_logout_redirect_uri");
    if let Some(uri) = post_logout_redirect_uri {
        let Some(client) = client_id
            .as_ref()
            .and_then(|id| shared.clients.lock().unwrap().get(id).cloned())
        else {
            return Err(
                "post_logout_redirect_uri needs id_token_hint or client_id to name the client."
                    .into(),
            );
        };
        if !client.post_logout_redirect_uris.iter().any(|r| r == uri) {
            return Err("The post_logout_redirect_uri is not registered for this client.".into());
        }
    }
    Ok(Logout {
        id_token_hint: hint.map(str::to_string),
        client_id,
        sub: hinted.map(|(_, sub)| sub),
        post_logout_redirect_uri: post_logout_redirect_uri.map(str::to_string),
        state: get("state").map(str::to_string),
    })
}

fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The hidden inputs of the login page's form, as a browser would submit them.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let input =
        regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)">"#).unwrap();
    input
        .captures_iter(html)
        .map(|c| (c[1].to_string(), unescape_html(&c[2])))
        .collect()
}

/// Submits the login page `html` like a person would: its hidden inputs as served, the
/// credentials typed, `button` (`sign-in` or `cancel`) pressed. The answer to the submit.
pub async fn submit_login(
    http: &reqwest::Client,
    idp: &FakeOidcProvider,
    html: &str,
    username: &str,
    password: &str,
    button: &str,
) -> reqwest::Response {
    let mut form = hidden_inputs(html);
    form.push(("username".into(), username.into()));
    form.push(("password".into(), password.into()));
    form.push(("action".into(), button.into()));
    http.post(format!("{}/authorize", idp.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap()
}
