//! A fake Gerrit that follows the documented REST wire format:
//! `GET /a/accounts/{account-id}/groups/` behind HTTP basic auth, JSON bodies behind the
//! `)]}'` XSSI line, `404 Not found: ...` as plain text, `401` for bad credentials.
//! Account ids resolve like Gerrit's: `self`/`me` mean the caller (add an account named
//! [`USERNAME`] to give the service account groups), a bare number is an account id.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Service account the fake accepts.
pub const USERNAME: &str = "mesh-authz";
/// Its HTTP password.
pub const PASSWORD: &str = "s3cret-http-password";

/// One account: username, email and group names.
#[derive(Clone)]
struct Account {
    username: String,
    email: String,
    groups: Vec<String>,
}

#[derive(Default)]
struct GerritState {
    password: Mutex<String>,
    accounts: Mutex<Vec<Account>>,
    requests: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    delay: Mutex<Duration>,
    /// The next N requests answer this status with an HTML error page.
    failures: Mutex<(usize, u16)>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A running fake Gerrit.
pub struct FakeGerrit {
    state: Arc<GerritState>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// The UUID the fake gives a group: 40 hex digits derived from its name, like an
/// internal Gerrit group.
pub fn group_uuid(name: &str) -> String {
    let mut hex = String::new();
    for b in name.bytes().cycle().take(20) {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

impl FakeGerrit {
    /// Starts on an ephemeral loopback port with no accounts.
    pub async fn start() -> Self {
        let state = Arc::new(GerritState {
            password: Mutex::new(PASSWORD.to_string()),
            ..GerritState::default()
        });
        let app = Router::new()
            .route("/a/accounts/{account}/groups/", get(account_groups))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { state, addr, task }
    }

    /// Base URL, as configured in `gerrit.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds an account in these groups (besides the system group Registered Users).
    pub fn add_account(&self, username: &str, groups: &[&str]) {
        self.state.accounts.lock().unwrap().push(Account {
            username: username.into(),
            email: format!("{username}@example.com"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        });
    }

    /// Gerrit's numeric account id of a known account (`{account-id}` may be this number).
    pub fn account_id(&self, username: &str) -> usize {
        let accounts = self.state.accounts.lock().unwrap();
        let index = accounts
            .iter()
            .position(|a| a.username == username)
            .expect("known account");
        account_number(index)
    }

    /// Changes the service account's password (a credential rotation).
    pub fn set_password(&self, password: &str) {
        *self.state.password.lock().unwrap() = password.to_string();
    }

    /// Replaces an account's groups (a membership change in Gerrit).
    pub fn set_groups(&self, username: &str, groups: &[&str]) {
        let mut accounts = self.state.accounts.lock().unwrap();
        let account = accounts
            .iter_mut()
            .find(|a| a.username == username)
            .expect("known account");
        account.groups = groups.iter().map(|g| g.to_string()).collect();
    }

    /// Makes the next `n` requests fail with `status` and an HTML page, like a proxy in
    /// front of a struggling Gerrit.
    pub fn fail_next(&self, n: usize, status: u16) {
        *self.state.failures.lock().unwrap() = (n, status);
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Delays every answer (to make concurrent requests overlap).
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Requests made for one account id (as it appeared in the path, decoded).
    pub fn requests_for(&self, account: &str) -> usize {
        self.state
            .requests
            .lock()
            .unwrap()
            .get(account)
            .copied()
            .unwrap_or(0)
    }

    /// All group requests.
    pub fn total_requests(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Stops listening: later requests fail to connect, like a Gerrit that is down.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for FakeGerrit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Gerrit's account number for the `index`-th account added (Gerrit starts at 1000000).
fn account_number(index: usize) -> usize {
    1_000_000 + index
}

/// Resolves an `{account-id}` the way Gerrit's AccountResolver does, for the forms the
/// fake knows, in Gerrit's order: `self`/`me` (the caller, i.e. the service account, if
/// it was added as an account), a bare account number, `Full Name (number)`, a username,
/// `Full Name <email>`, an email.
fn resolve(accounts: &[Account], id: &str) -> Option<Account> {
    let by_number = |n: usize| {
        accounts
            .iter()
            .enumerate()
            .find(|(i, _)| account_number(*i) == n)
            .map(|(_, a)| a)
    };
    let parenthesized = id
        .strip_suffix(')')
        .and_then(|rest| rest.rsplit_once(" ("))
        .and_then(|(_, n)| n.parse::<usize>().ok());
    let bracketed = match (id.find('<'), id.find('>')) {
        (Some(lt), Some(gt)) if gt > lt && id.contains('@') => Some(&id[lt + 1..gt]),
        _ => None,
    };
    let found = if matches!(id, "self" | "me") {
        accounts.iter().find(|a| a.username == USERNAME)
    } else if let Ok(n) = id.parse::<usize>() {
        by_number(n)
    } else if let Some(n) = parenthesized {
        by_number(n)
    } else if let Some(a) = accounts.iter().find(|a| a.username == id) {
        Some(a)
    } else {
        let email = bracketed.unwrap_or(id);
        accounts.iter().find(|a| a.email == email)
    };
    found.cloned()
}

fn authorized(headers: &HeaderMap, password: &str) -> bool {
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{password}"));
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        == Some(expected.as_str())
}

async fn account_groups(
    State(state): State<Arc<GerritState>>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.total.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let response = answer(&state, account, headers).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn answer(state: &GerritState, account: String, headers: HeaderMap) -> Response {
    *state
        .requests
        .lock()
        .unwrap()
        .entry(account.clone())
        .or_default() += 1;
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let failure = {
        let mut failures = state.failures.lock().unwrap();
        (failures.0 > 0).then(|| {
            failures.0 -= 1;
            failures.1
        })
    };
    if let Some(status) = failure {
        return (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response();
    }
    let password = state.password.lock().unwrap().clone();
    if !authorized(&headers, &password) {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"Gerrit Code Review\"")],
            "Unauthorized",
        )
            .into_response();
    }
    let found = resolve(&state.accounts.lock().unwrap(), &account);
    let Some(found) = found else {
        return (
            StatusCode::NOT_FOUND,
            [("content-type", "text/plain;charset=utf-8")],
            format!("Not found: {account}"),
        )
            .into_response();
    };
    let mut infos = vec![json!({
        "id": "global%3ARegistered-Users",
        "name": "Registered Users",
        "options": {},
        "group_id": 3,
    })];
    for (i, name) in found.groups.iter().enumerate() {
        let uuid = group_uuid(name);
        infos.push(json!({
            "id": uuid,
            "url": format!("#/admin/groups/uuid-{uuid}"),
            "options": {"visible_to_all": true},
            "description": format!("Members of {name}"),
            "group_id": 10 + i,
            "owner": "Administrators",
            "owner_id": "59b92f35489e62c80d1ab1bf0c2d17843038df8b",
            "created_on": "2026-01-01 09:59:32.126000000",
            "name": name,
        }));
    }
    let body = format!(")]}}'\n{}\n", serde_json::to_string_pretty(&infos).unwrap());
    ([("content-type", "application/json;charset=utf-8")], body).into_response()
}
