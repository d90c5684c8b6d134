//! Gerrit REST client: `GET /a/accounts/?q=username:NAME&o=DETAILS` (which account a
//! username or email names), `GET /a/accounts/{number}/groups/` (its effective groups) and
//! `GET /a/groups/{uuid}/members/?recursive` (a group's members, for event-driven
//! invalidation).

use super::{GerritAccount, GerritError, GerritMetrics, Secret};
use crate::identity::Group;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderName, HeaderValue};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use url::Url;

/// Gerrit prefixes JSON with this line to defeat XSSI; it must be stripped.
const XSSI_PREFIX: &str = ")]}'";
/// Default bound on a response body: a user in thousands of groups is still far below.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Characters left as they are in a path segment (account ids, group UUIDs).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An account as Gerrit lists it among a group's members: every name the account may
/// be looked up by.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Member {
    /// The numeric account id.
    #[serde(rename = "_account_id")]
    pub account_id: u64,
    /// The username, if the account has one.
    pub username: Option<String>,
    /// The preferred email, if visible.
    pub email: Option<String>,
}

impl Member {
    /// Whether `account` (as a token names a Gerrit account) is this member: its exact
    /// username, its preferred email (any case) or its number, each only in that form.
    pub fn is_named_by(&self, account: &GerritAccount) -> bool {
        match account {
            GerritAccount::Username(name) => self.username.as_deref() == Some(name.as_str()),
            GerritAccount::Email(email) => self
                .email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email)),
            GerritAccount::Number(number) => self.account_id == *number,
        }
    }
}

/// The checked `gerrit:` section: where Gerrit is, how the service account signs in
/// and how requests are bounded. `config` compiles `gerrit:` into this; the files it
/// names are read when the client is built ([`GerritCredentials`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GerritSettings {
    /// Base URL; REST paths are appended under `a/`.
    pub base: Url,
    /// Service account username.
    pub username: String,
    /// File with the HTTP password (Gerrit's default for `/a/` is Basic auth), read at
    /// start and then every `password_reload_interval`; `None` when Gerrit trusts a
    /// header instead.
    pub password_file: Option<PathBuf>,
    /// How often the password file is re-read.
    pub password_reload_interval: Duration,
    /// Header that names the username, for a Gerrit with `auth.type = HTTP` and
    /// `auth.trustContainerAuth = true`, which authenticates `/a/` by that header alone.
    pub trusted_user_header: Option<HeaderName>,
    /// PEM bundle of the CA certificates trusted for `https` instead of the built-in
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// Timeout of one request, from sending it to the end of the body.
    pub timeout: Duration,
    /// Retries after a timeout, connection failure or 5xx (not after 4xx or bad bodies).
    pub retries: u32,
    /// First retry delay; doubled per attempt, with ±50 % jitter.
    pub retry_backoff: Duration,
    /// Requests to Gerrit in flight at once; more wait their turn.
    pub max_concurrent_requests: usize,
    /// Largest accepted response body.
    pub max_response_bytes: usize,
}

/// What was read from the files [`GerritSettings`] names when the client was built.
#[derive(Debug, Clone, Default)]
pub struct GerritCredentials {
    /// The HTTP password from `password_file`.
    pub password: Option<Secret>,
    /// The certificates of `ca_file`; empty: the built-in Web PKI roots.
    pub ca_certificates: Vec<reqwest::Certificate>,
}

/// How long an id's resolution to an account number is trusted. Usernames and account
/// numbers do not change; emails rarely do.
const RESOLUTION_TTL: Duration = Duration::from_secs(3600);

/// How often the service account looks itself up (`GET /a/accounts/self`), besides at
/// start: a 404 there means `gerrit.url` does not lead to Gerrit.
pub const SELF_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Answers "which groups is this account in?" from Gerrit's REST API. Clones share one
/// connection pool, password, request bound and resolution cache.
#[derive(Debug, Clone)]
pub struct GerritClient(Arc<ClientState>);

/// What a client and its clones share; the background tasks hold it weakly, so they end
/// when the last clone is dropped.
#[derive(Debug)]
pub struct ClientState {
    http: reqwest::Client,
    settings: Arc<GerritSettings>,
    /// The current password: Kubernetes rotates mounted Secrets in place.
    password: Arc<RwLock<Option<Secret>>>,
    /// Bounds concurrent requests, so a cold start or cache flush cannot flood Gerrit.
    in_flight: Arc<Semaphore>,
    /// Usernames and emails already resolved to the account number they name.
    account_numbers: moka::sync::Cache<GerritAccount, u64>,
    /// Whether the password reloader was started (once per client and its clones).
    reloader: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the periodic self-check was started (once per client and its clones).
    self_checker: std::sync::atomic::AtomicBool,
    metrics: GerritMetrics,
}

impl std::ops::Deref for GerritClient {
    type Target = ClientState;

    fn deref(&self) -> &ClientState {
        &self.0
    }
}

impl GerritClient {
    /// A client with its own connection pool (and trust roots, if configured), counting
    /// into `metrics` (shared across config reloads). It remembers at most
    /// `max_accounts` id → account number resolutions.
    pub fn new(
        settings: GerritSettings,
        credentials: GerritCredentials,
        max_accounts: u64,
        metrics: GerritMetrics,
    ) -> Result<Self, reqwest::Error> {
        let mut http = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("mesh-authz/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.timeout)
            // Gerrit's redirects lead to login pages, never to JSON.
            .redirect(reqwest::redirect::Policy::none());
        if !credentials.ca_certificates.is_empty() {
            http = http.tls_built_in_root_certs(false);
            for cert in &credentials.ca_certificates {
                http = http.add_root_certificate(cert.clone());
            }
        }
        let http = http.build()?;
        let password = Arc::new(RwLock::new(credentials.password));
        let in_flight = Arc::new(Semaphore::new(settings.max_concurrent_requests.max(1)));
        let account_numbers = moka::sync::Cache::builder()
            .max_capacity(max_accounts.max(1))
            .time_to_live(RESOLUTION_TTL)
            .build();
        Ok(Self(Arc::new(ClientState {
            http,
            settings: Arc::new(settings),
            password,
            in_flight,
            account_numbers,
            reloader: Arc::default(),
            self_checker: Default::default(),
            metrics,
        })))
    }

    fn current_password(&self) -> Option<Secret> {
        match self.password.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Starts re-reading the password file every `password_reload_interval`, switching
    /// to a changed password without a restart (a missing or empty file keeps the old
    /// one, and says so). Once per client; the task ends after the client is dropped.
    pub fn spawn_password_reloader(&self) {
        use std::sync::atomic::Ordering;
        let Some(path) = self.settings.password_file.clone() else {
            return;
        };
        if self.reloader.swap(true, Ordering::AcqRel) {
            return;
        }
        let interval = self.settings.password_reload_interval;
        let password = Arc::downgrade(&self.password);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(password) = password.upgrade() else {
                    return;
                };
                reload_password(&path, &password).await;
            }
        });
    }

    /// Looks the service account itself up now and at every `SELF_CHECK_INTERVAL`,
    /// recording in the metrics whether `gerrit.url` leads to Gerrit and Gerrit accepts
    /// the credentials. Once per client; the task ends after the client is dropped.
    pub fn spawn_self_check(&self) {
        use std::sync::atomic::Ordering;
        if self.self_checker.swap(true, Ordering::AcqRel) {
            return;
        }
        let client = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            loop {
                let Some(client) = client.upgrade().map(GerritClient) else {
                    return;
                };
                client.self_check().await;
                drop(client);
                tokio::time::sleep(SELF_CHECK_INTERVAL).await;
            }
        });
    }

    /// `GET /a/accounts/self` once, without retries (the next check is a minute away):
    /// the service account must exist, so a 404 means the URL or its path prefix is
    /// wrong and every user would look unknown.
    pub async fn self_check(&self) {
        let result = async {
            let url = self.url(&["accounts", "self"], None)?;
            match tokio::time::timeout(self.settings.timeout, self.get_once(&url)).await {
                Ok(Ok(Some(body))) => parse_account(&body).map(Some),
                Ok(other) => other.map(|_| None),
                Err(_) => Err(GerritError::Unreachable("request timed out".into())),
            }
        }
        .await;
        let outcome = match &result {
            Ok(Some(_)) => "ok",
            Ok(None) => "not_found",
            Err(e) => e.code(),
        };
        let (was_wrong, was_rejected) = (
            self.metrics.url_wrong(),
            self.metrics.credentials_rejected(),
        );
        self.metrics.self_check(outcome);
        // Log changes of state, not every minute of the same one.
        let base = redacted(&self.settings.base);
        match (was_wrong, self.metrics.url_wrong()) {
            (false, true) => tracing::error!(
                url = %base,
                "Gerrit answers 404 for the service account itself (GET /a/accounts/self): gerrit.url or its path prefix is wrong; checks that need groups cannot be decided"
            ),
            (true, false) => {
                tracing::info!(url = %base, "gerrit.url answers for the service account again")
            }
            _ => {}
        }
        match &result {
            Err(GerritError::Credentials(status)) if !was_rejected => tracing::error!(
                status,
                username = %self.settings.username,
                "Gerrit rejects the service account (self-check)"
            ),
            Err(GerritError::Credentials(_)) | Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Gerrit self-check failed"),
        }
    }

    /// The account's effective groups, or `None` if Gerrit has no such (visible, active)
    /// account.
    pub async fn account_groups(
        &self,
        account: &GerritAccount,
    ) -> Result<Option<Vec<Group>>, GerritError> {
        let Some(number) = self.account_number(account).await? else {
            return Ok(None);
        };
        let url = self.url(&["accounts", &number.to_string(), "groups", ""], None)?;
        let groups = self.get(&url, parse_groups).await?;
        if groups.is_none() {
            // The account went away (or out of sight) since it was resolved.
            self.account_numbers.invalidate(account);
        }
        Ok(groups.map(|mut groups| {
            with_registered_users(&mut groups);
            groups
        }))
    }

    /// The number of the account `account` names: its own for an account number; for a
    /// username or email, the one active account an exact query finds with exactly that
    /// username (or that preferred email, any case).
    ///
    /// A name is never sent as an `{account-id}`: Gerrit's resolver reads digits as an
    /// account number, `self` as the caller, `Name (1000001)` as that account, and falls
    /// back to full-name and default searches, each of which would hand this user another
    /// account's groups. The query's `username:` and `email:` match any case and email
    /// prefixes, so the answer is checked too.
    async fn account_number(&self, account: &GerritAccount) -> Result<Option<u64>, GerritError> {
        let (operator, name) = match account {
            GerritAccount::Number(number) => return Ok(Some(*number)),
            GerritAccount::Username(name) => ("username", name),
            GerritAccount::Email(email) => ("email", email),
        };
        if let Some(number) = self.account_numbers.get(account) {
            return Ok(Some(number));
        }
        // A quote or backslash cannot be quoted in Gerrit's query syntax, and is in no
        // username (nor in any email a sane IdP issues).
        if name
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            tracing::warn!(%account, "cannot be looked up in Gerrit: no groups");
            return Ok(None);
        }
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &format!("{operator}:\"{name}\""))
            .append_pair("o", "DETAILS")
            .finish();
        let url = self.url(&["accounts", ""], Some(&query))?;
        // A query answers `[]` when nothing matches, never 404: a 404 means the URL does
        // not lead to Gerrit's REST API.
        let found = self
            .get(&url, parse_members)
            .await?
            .ok_or(GerritError::WrongUrl)?;
        let named: Vec<u64> = found
            .iter()
            .filter(|info| info.is_named_by(account))
            .map(|info| info.account_id)
            .collect();
        let number = match named.as_slice() {
            [] => return Ok(None),
            [number] => *number,
            several => {
                tracing::warn!(%account, accounts = ?several, "several Gerrit accounts have this name: no groups");
                return Ok(None);
            }
        };
        self.account_numbers.insert(account.clone(), number);
        Ok(Some(number))
    }

    /// Forgets which account `account` names (an admin invalidation: the account may have
    /// changed).
    pub fn forget_account(&self, account: &GerritAccount) {
        self.account_numbers.invalidate(account);
    }

    /// The group's members, transitively (members of included groups too), or `None` if
    /// Gerrit has no such group or does not let the service account see its members.
    pub async fn group_members(&self, uuid: &str) -> Result<Option<Vec<Member>>, GerritError> {
        let url = self.url(&["groups", uuid, "members", ""], Some("recursive"))?;
        self.get(&url, parse_members).await
    }

    /// The client's metrics.
    pub fn metrics(&self) -> &GerritMetrics {
        &self.metrics
    }

    /// GETs a JSON resource and parses it (`None` on 404), with bounded concurrency and
    /// retries of transient failures.
    pub(super) async fn get<T>(
        &self,
        url: &Url,
        parse: fn(&[u8]) -> Result<T, GerritError>,
    ) -> Result<Option<T>, GerritError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| GerritError::Unreachable("client shut down".into()))?;
        let mut attempt = 0;
        loop {
            match self.get_once_measured(url, parse).await {
                Err(e) if e.is_transient() && attempt < self.settings.retries => {
                    attempt += 1;
                    let backoff = self
                        .settings
                        .retry_backoff
                        .saturating_mul(1 << (attempt - 1).min(10))
                        .mul_f64(0.5 + fastrand::f64());
                    tracing::debug!(attempt, error = %e, ?backoff, "retrying Gerrit");
                    tokio::time::sleep(backoff).await;
                }
                result => return result,
            }
        }
    }

    /// One attempt, measured and counted by outcome (a body that does not parse counts
    /// as `bad_response`).
    async fn get_once_measured<T>(
        &self,
        url: &Url,
        parse: fn(&[u8]) -> Result<T, GerritError>,
    ) -> Result<Option<T>, GerritError> {
        let started = tokio::time::Instant::now();
        // Named by the REST collection only: the rest of the path names accounts.
        let span = crate::trace::child("Gerrit GET", SpanKind::Client, || {
            vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("mesh_authz.gerrit_collection", collection(url)),
            ]
        });
        // The timeout covers the body too: a Gerrit that sends headers and then stalls
        // must not hold the check.
        let attempt = tokio::time::timeout(self.settings.timeout, self.get_once(url));
        let result = match span.run(attempt).await {
            Ok(Ok(Some(body))) => parse(&body).map(Some),
            Ok(other) => other.map(|_| None),
            Err(_) => Err(GerritError::Unreachable("request timed out".into())),
        };
        let outcome = match &result {
            Ok(Some(_)) => "ok",
            Ok(None) => "not_found",
            Err(e) => e.code(),
        };
        span.record("mesh_authz.outcome", outcome);
        if let Err(GerritError::Credentials(status)) = &result {
            let how = if self.settings.trusted_user_header.is_some() {
                "check that the account exists and gerrit.trusted_user_header matches Gerrit's auth.httpHeader"
            } else {
                "check gerrit.username and the password file"
            };
            tracing::error!(
                status,
                username = %self.settings.username,
                "Gerrit rejects the service account: {how}"
            );
        }
        self.metrics.request(outcome, started.elapsed());
        result
    }

    async fn get_once(&self, url: &Url) -> Result<Option<Vec<u8>>, GerritError> {
        let auth = &*self.settings;
        let mut req = crate::trace::propagate(self.http.get(url.clone()))
            .header("accept", "application/json");
        if let Some(password) = self.current_password() {
            req = req.basic_auth(&auth.username, Some(password.expose()));
        }
        if let Some(header) = &auth.trusted_user_header {
            let value = HeaderValue::from_str(&auth.username)
                .map_err(|_| GerritError::Response("username is not a header value".into()))?;
            req = req.header(header, value);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| GerritError::Unreachable(without_url(e)))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s @ (401 | 403) => return Err(GerritError::Credentials(s)),
            s => return Err(GerritError::Status(s)),
        }
        read_limited(resp, self.settings.max_response_bytes)
            .await
            .map(Some)
    }

    /// `{base}/a/{segments...}`, each segment URL-encoded as one path segment.
    pub(super) fn url(&self, segments: &[&str], query: Option<&str>) -> Result<Url, GerritError> {
        let mut url = self.settings.base.as_str().to_string();
        if !url.ends_with('/') {
            url.push('/');
        }
        url.push('a');
        for segment in segments {
            url.push('/');
            url.extend(utf8_percent_encode(segment, SEGMENT));
        }
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        Url::parse(&url).map_err(|e| GerritError::Response(format!("cannot build URL: {e}")))
    }
}

/// Re-reads the password file into `password` if it changed.
async fn reload_password(path: &std::path::Path, password: &RwLock<Option<Secret>>) {
    let current = || match password.read() {
        Ok(p) => p.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    match tokio::fs::read_to_string(path).await.map(Secret::new) {
        Ok(new) if new.expose().is_empty() => {
            tracing::warn!(file = %path.display(), "Gerrit password file is empty; keeping the old password");
        }
        Ok(new) if Some(&new) != current().as_ref() => {
            if let Ok(mut slot) = password.write() {
                *slot = Some(new);
            }
            tracing::info!(file = %path.display(), "Gerrit password reloaded");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot re-read the Gerrit password file; keeping the old password");
        }
    }
}

/// Gerrit shows system groups only to administrators (`GroupControl.canSeeMembers`), but
/// every account it resolves is, by definition, in Registered Users: add it when hidden,
/// so policy can name it whatever the service account may see.
fn with_registered_users(groups: &mut Vec<Group>) {
    if !groups.iter().any(|g| g.uuid == REGISTERED_USERS) {
        groups.insert(
            0,
            Group {
                uuid: REGISTERED_USERS.into(),
                name: "Registered Users".into(),
            },
        );
    }
}

/// The UUID of Gerrit's system group of all signed-in accounts.
const REGISTERED_USERS: &str = "global:Registered-Users";

/// The REST collection a Gerrit URL reads (`accounts`, `groups`, `changes`,
/// `projects`): what a span may say of it.
fn collection(url: &Url) -> &'static str {
    let mut segments = url.path_segments().into_iter().flatten();
    // `{base}/a/{collection}/...`; the base may have a path of its own.
    while let Some(segment) = segments.next() {
        if segment == "a" {
            return match segments.next() {
                Some("accounts") => "accounts",
                Some("groups") => "groups",
                Some("changes") => "changes",
                Some("projects") => "projects",
                _ => "other",
            };
        }
    }
    "other"
}

/// reqwest errors print the URL, which is harmless here but noisy; keep the cause.
fn without_url(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "request timed out".into()
    } else if e.is_connect() {
        // The source says why: refused, TLS (unknown issuer, bad name), DNS.
        let mut cause = String::from("connection failed");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = format!("connection failed: {s}");
            source = s.source();
        }
        cause
    } else {
        e.without_url().to_string()
    }
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, GerritError> {
    let too_large = || GerritError::Response(format!("body larger than {limit} bytes"));
    // A declared length over the limit is refused before reading anything.
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| GerritError::Unreachable(without_url(e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The JSON text of a Gerrit response, without the `)]}'` line.
pub(super) fn json_text(body: &[u8]) -> Result<&str, GerritError> {
    let text = std::str::from_utf8(body).map_err(|_| GerritError::Response("not UTF-8".into()))?;
    Ok(text.strip_prefix(XSSI_PREFIX).unwrap_or(text))
}

/// Parses a `GroupInfo` list, with or without the `)]}'` prefix line.
pub(crate) fn parse_groups(body: &[u8]) -> Result<Vec<Group>, GerritError> {
    #[derive(serde::Deserialize)]
    struct GroupInfo {
        id: String,
        name: Option<String>,
    }
    let infos: Vec<GroupInfo> = serde_json::from_str(json_text(body)?)
        .map_err(|e| GerritError::Response(format!("not a GroupInfo list: {e}")))?;
    Ok(infos
        .into_iter()
        .map(|g| {
            let uuid = percent_decode_str(&g.id).decode_utf8_lossy().into_owned();
            Group {
                name: g.name.unwrap_or_else(|| uuid.clone()),
                uuid,
            }
        })
        .collect())
}

/// Parses one `AccountInfo`.
fn parse_account(body: &[u8]) -> Result<Member, GerritError> {
    serde_json::from_str(json_text(body)?)
        .map_err(|e| GerritError::Response(format!("not an AccountInfo: {e}")))
}

/// The URL without user info, for logs.
fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// Parses an `AccountInfo` list (a group's members, an account query's answer).
fn parse_members(body: &[u8]) -> Result<Vec<Member>, GerritError> {
    serde_json::from_str(json_text(body)?)
        .map_err(|e| GerritError::Response(format!("not an AccountInfo list: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_group_info_with_xssi_prefix() {
        let body = br##")]}'
[
  {
    "id": "global%3ARegistered-Users",
    "name": "Registered Users",
    "options": {},
    "group_id": 3
  },
  {
    "id": "6a1e70e1a88782771a91808c8af9bbb7a9871389",
    "url": "#/admin/groups/uuid-6a1e70e1a88782771a91808c8af9bbb7a9871389",
    "options": {"visible_to_all": true},
    "description": "Users who may submit",
    "group_id": 6,
    "owner": "Administrators",
    "owner_id": "59b92f35489e62c80d1ab1bf0c2d17843038df8b",
    "created_on": "2013-02-01 09:59:32.126000000",
    "name": "team-a"
  }
]
"##;
        let groups = parse_groups(body).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].uuid, "global:Registered-Users");
        assert_eq!(groups[0].name, "Registered Users");
        assert_eq!(groups[1].name, "team-a");
        assert_eq!(groups[1].uuid, "6a1e70e1a88782771a91808c8af9bbb7a9871389");
    }

    #[test]
    fn parses_documented_account_info_members() {
        let body = br#")]}'
[
  {
    "_account_id": 1000097,
    "name": "Jane Roe",
    "email": "jane.roe@example.com",
    "username": "jane"
  },
  {
    "_account_id": 1000098,
    "name": "John Doe"
  }
]
"#;
        let members = parse_members(body).unwrap();
        assert_eq!(members.len(), 2);
        use GerritAccount::{Email, Number, Username};
        let jane = &members[0];
        for id in [
            Username("jane".into()),
            Email("jane.roe@example.com".into()),
            Email("Jane.Roe@Example.com".into()),
            Number(1000097),
        ] {
            assert!(jane.is_named_by(&id), "{id}");
        }
        for id in [
            Username("Jane".into()),
            Username("jane.roe@example.com".into()),
            Username("1000097".into()),
            Email("jane".into()),
            Email("jane.roe@example.com.evil".into()),
            Number(1000098),
        ] {
            assert!(!jane.is_named_by(&id), "{id}");
        }
        assert!(members[1].is_named_by(&Number(1000098)));
        assert!(!members[1].is_named_by(&Username("John Doe".into())));
    }

    #[test]
    fn registered_users_is_added_when_gerrit_hides_it_and_kept_when_shown() {
        let mut hidden = parse_groups(
            br#")]}'
[{"id": "6a1e70e1a88782771a91808c8af9bbb7a9871389", "name": "team-a"}]"#,
        )
        .unwrap();
        with_registered_users(&mut hidden);
        let names: Vec<&str> = hidden.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["Registered Users", "team-a"]);
        assert_eq!(hidden[0].uuid, "global:Registered-Users");

        let mut shown = parse_groups(
            br#")]}'
[{"id": "6a1e", "name": "team-a"}, {"id": "global%3ARegistered-Users", "name": "Signed-in"}]"#,
        )
        .unwrap();
        with_registered_users(&mut shown);
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert_eq!(shown[1].name, "Signed-in", "Gerrit's own name is kept");
    }

    #[test]
    fn html_error_pages_are_rejected() {
        assert!(parse_groups(b"<html><body>Bad gateway</body></html>").is_err());
        assert!(parse_groups(b")]}'\n{\"not\":\"a list\"}").is_err());
    }

    fn client(base: &str) -> GerritClient {
        GerritClient::new(
            GerritSettings {
                base: Url::parse(base).unwrap(),
                username: "svc".into(),
                password_file: None,
                password_reload_interval: Duration::from_secs(10),
                trusted_user_header: None,
                ca_file: None,
                retries: 0,
                retry_backoff: Duration::from_millis(100),
                max_concurrent_requests: 4,
                timeout: Duration::from_secs(1),
                max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            },
            GerritCredentials {
                password: Some(Secret::new("pw")),
                ca_certificates: Vec::new(),
            },
            100,
            GerritMetrics::default(),
        )
        .unwrap()
    }

    #[test]
    fn account_ids_and_group_uuids_are_url_encoded_as_one_path_segment() {
        let c = client("https://review.example.com/r");
        let url = |segments: &[&str], q| c.url(segments, q).unwrap().to_string();
        assert_eq!(
            url(&["accounts", "jane.doe@example.com", "groups", ""], None),
            "https://review.example.com/r/a/accounts/jane.doe%40example.com/groups/"
        );
        assert_eq!(
            url(&["accounts", "../x", "groups", ""], None),
            "https://review.example.com/r/a/accounts/..%2Fx/groups/"
        );
        assert_eq!(
            url(
                &["groups", "ldap:cn=x,ou=y", "members", ""],
                Some("recursive")
            ),
            "https://review.example.com/r/a/groups/ldap%3Acn%3Dx%2Cou%3Dy/members/?recursive"
        );
        let root = client("https://review.example.com/");
        assert_eq!(
            root.url(&["accounts", "42", "groups", ""], None)
                .unwrap()
                .as_str(),
            "https://review.example.com/a/accounts/42/groups/"
        );
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let c = client("https://review.example.com/");
        assert!(!format!("{c:?}").contains("pw\""), "{c:?}");
        assert!(format!("{c:?}").contains("[redacted]"));
    }
}
