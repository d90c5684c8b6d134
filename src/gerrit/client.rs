//! Gerrit REST client: `GET /a/accounts/{account}/groups/`.

use super::{GerritError, GerritMetrics, Secret};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use url::Url;

/// Gerrit prefixes JSON with this line to defeat XSSI; it must be stripped.
const XSSI_PREFIX: &str = ")]}'";
/// Largest groups response accepted; a user in thousands of groups is still far below.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Characters left as they are in an account id path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A Gerrit group the user belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group UUID, decoded (e.g. `global:Registered-Users` or 40 hex digits).
    pub uuid: String,
    /// The group name.
    pub name: String,
}

/// Connection settings for Gerrit.
#[derive(Debug, Clone)]
pub struct GerritSettings {
    /// Base URL; REST paths are appended under `a/`.
    pub base: Url,
    /// Service account username.
    pub username: String,
    /// Service account HTTP password.
    pub password: Secret,
    /// The file the password came from, re-read by [`GerritClient::run_password_reloader`].
    pub password_file: Option<std::path::PathBuf>,
    /// How often the password file is re-read.
    pub password_reload_interval: Duration,
    /// Retries after a timeout, connection failure or 5xx (not after 4xx or bad bodies).
    pub retries: u32,
    /// First retry delay; doubled per attempt, with ±50 % jitter.
    pub retry_backoff: Duration,
    /// Requests to Gerrit in flight at once; more wait their turn.
    pub max_concurrent_requests: usize,
    /// Timeout of one request.
    pub timeout: Duration,
}

/// Answers "which groups is this account in?" from Gerrit's REST API.
#[derive(Debug, Clone)]
pub struct GerritClient {
    http: reqwest::Client,
    settings: Arc<GerritSettings>,
    /// The current password: Kubernetes rotates mounted Secrets in place.
    password: Arc<RwLock<Secret>>,
    /// Bounds concurrent requests, so a cold start or cache flush cannot flood Gerrit.
    in_flight: Arc<Semaphore>,
    metrics: GerritMetrics,
}

impl GerritClient {
    /// A client; `http` should be shared with the rest of the process.
    pub fn new(http: reqwest::Client, settings: GerritSettings) -> Self {
        let password = Arc::new(RwLock::new(settings.password.clone()));
        let in_flight = Arc::new(Semaphore::new(settings.max_concurrent_requests.max(1)));
        Self {
            http,
            settings: Arc::new(settings),
            password,
            in_flight,
            metrics: GerritMetrics::default(),
        }
    }

    fn current_password(&self) -> Secret {
        match self.password.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the password file every `password_reload_interval` and switches to a
    /// changed password without a restart. A missing or empty file keeps the old password
    /// (and says so).
    pub async fn run_password_reloader(self) {
        let interval = self.settings.password_reload_interval;
        let Some(path) = self.settings.password_file.clone() else {
            return;
        };
        loop {
            tokio::time::sleep(interval).await;
            match tokio::fs::read_to_string(&path).await.map(Secret::new) {
                Ok(new) if new.expose().is_empty() => {
                    tracing::warn!(file = %path.display(), "Gerrit password file is empty; keeping the old password");
                }
                Ok(new) if new != self.current_password() => {
                    if let Ok(mut current) = self.password.write() {
                        *current = new;
                    }
                    tracing::info!(file = %path.display(), "Gerrit password reloaded");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot re-read the Gerrit password file; keeping the old password");
                }
            }
        }
    }

    /// The account's effective groups, or `None` if Gerrit has no such (visible) account.
    ///
    /// An id Gerrit would resolve to an account other than the one it names (see
    /// [`names_another_account`]) is answered as an unknown account without asking.
    pub async fn account_groups(&self, account: &str) -> Result<Option<Vec<Group>>, GerritError> {
        // `.` and `..` would be resolved as dot-segments in the URL, not sent as an id.
        if matches!(account, "" | "." | "..") {
            return Ok(None);
        }
        if names_another_account(account) {
            tracing::warn!(
                account,
                "Gerrit would resolve this account id to another account: no groups"
            );
            return Ok(None);
        }
        let url = self.groups_url(account)?;
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| GerritError::Unreachable("client shut down".into()))?;
        let mut attempt = 0;
        loop {
            match self.fetch_groups(&url).await {
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

    /// The client's metrics.
    pub fn metrics(&self) -> &GerritMetrics {
        &self.metrics
    }

    async fn fetch_groups(&self, url: &Url) -> Result<Option<Vec<Group>>, GerritError> {
        let started = tokio::time::Instant::now();
        let result = self.fetch_groups_once(url).await;
        let outcome = match &result {
            Ok(Some(_)) => "ok",
            Ok(None) => "not_found",
            Err(e) => e.code(),
        };
        if outcome == "credentials" {
            tracing::error!(
                "Gerrit rejects the service account: check gerrit.username and the password file"
            );
        }
        self.metrics.request(outcome, started.elapsed());
        result
    }

    async fn fetch_groups_once(&self, url: &Url) -> Result<Option<Vec<Group>>, GerritError> {
        let resp = self
            .http
            .get(url.clone())
            .basic_auth(
                &self.settings.username,
                Some(self.current_password().expose()),
            )
            .header("accept", "application/json")
            .timeout(self.settings.timeout)
            .send()
            .await
            .map_err(|e| GerritError::Unreachable(without_url(e)))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s @ (401 | 403) => return Err(GerritError::Credentials(s)),
            s => return Err(GerritError::Status(s)),
        }
        let body = read_limited(resp).await?;
        parse_groups(&body).map(Some)
    }

    fn groups_url(&self, account: &str) -> Result<Url, GerritError> {
        let mut base = self.settings.base.as_str().to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let account = utf8_percent_encode(account, SEGMENT);
        Url::parse(&format!("{base}a/accounts/{account}/groups/"))
            .map_err(|e| GerritError::Response(format!("cannot build URL: {e}")))
    }
}

/// Whether Gerrit's account resolver reads `account` as a reference to some other account
/// rather than as the username, email or account number it looks like: `self` and `me`
/// are the caller (our service account, with its groups), `Name (1000001)` is account
/// 1000001, `Name <someone@example.com>` is that email's account.
fn names_another_account(account: &str) -> bool {
    let parenthesized_id = account
        .strip_suffix(')')
        .and_then(|rest| rest.rsplit_once(" ("))
        .is_some_and(|(_, id)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    let name_and_email = match (account.find('<'), account.find('>')) {
        (Some(lt), Some(gt)) => gt > lt && account.contains('@'),
        _ => false,
    };
    matches!(account, "self" | "me") || parenthesized_id || name_and_email
}

/// reqwest errors print the URL, which is harmless here but noisy; keep the cause.
fn without_url(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "request timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        e.without_url().to_string()
    }
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, GerritError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| GerritError::Unreachable(without_url(e)))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(GerritError::Response(format!(
                "body larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a `GroupInfo` list, with or without the `)]}'` prefix line.
pub(crate) fn parse_groups(body: &[u8]) -> Result<Vec<Group>, GerritError> {
    #[derive(serde::Deserialize)]
    struct GroupInfo {
        id: String,
        name: Option<String>,
    }
    let text = std::str::from_utf8(body).map_err(|_| GerritError::Response("not UTF-8".into()))?;
    let json = text.strip_prefix(XSSI_PREFIX).unwrap_or(text);
    let infos: Vec<GroupInfo> = serde_json::from_str(json)
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
    fn ids_gerrit_resolves_to_another_account_are_recognised() {
        for id in [
            "self",
            "me",
            "Jane Doe (1000001)",
            " (7)",
            "Jane <jane@example.com>",
            "<root@example.com>",
        ] {
            assert!(names_another_account(id), "{id}");
        }
        for id in [
            "alice",
            "selfie",
            "Me",
            "jane.doe@example.com",
            "1000001",
            "team (a)",
            "a<b>",
        ] {
            assert!(!names_another_account(id), "{id}");
        }
    }

    #[test]
    fn html_error_pages_are_rejected() {
        assert!(parse_groups(b"<html><body>Bad gateway</body></html>").is_err());
        assert!(parse_groups(b")]}'\n{\"not\":\"a list\"}").is_err());
    }

    #[test]
    fn account_ids_are_url_encoded_in_the_path() {
        let c = GerritClient::new(
            reqwest::Client::new(),
            GerritSettings {
                base: Url::parse("https://review.example.com/r").unwrap(),
                username: "svc".into(),
                password: Secret::new("pw"),
                password_file: None,
                password_reload_interval: Duration::from_secs(10),
                retries: 0,
                retry_backoff: Duration::from_millis(100),
                max_concurrent_requests: 4,
                timeout: Duration::from_secs(1),
            },
        );
        assert_eq!(
            c.groups_url("jane.doe@example.com").unwrap().as_str(),
            "https://review.example.com/r/a/accounts/jane.doe%40example.com/groups/"
        );
        assert_eq!(
            c.groups_url("../x").unwrap().as_str(),
            "https://review.example.com/r/a/accounts/..%2Fx/groups/"
        );
    }
}
