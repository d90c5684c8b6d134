//! A fake Gerrit that follows the documented REST wire format and permission model:
//!
//! - `GET /a/accounts/?q=QUERY[&o=DETAILS][&n=N][&S=N]`: Query Account, a list of
//!   `AccountInfo` (only `_account_id` unless `o=DETAILS`), `_more_accounts` on the last one
//!   when cut off. The operators `username:` (any case, as Gerrit's index lower-cases it),
//!   `email:` (the email or a prefix of it, any case), `name:` and `is:active` /
//!   `is:inactive`; values bare, `"quoted"` or `{braced}`; `is:active` unless asked
//!   otherwise; an unknown operator is `400 Bad Request`. Never 404: no match is `[]`.
//! - `GET /a/accounts/{account-id}`: the `AccountInfo` of the account the id resolves to.
//! - `GET /a/accounts/{account-id}/groups/`: the account's effective groups (direct ones
//!   and every group that includes them, transitively), filtered like Gerrit's
//!   `GetGroups`: a group shows only if it is visible to all or the service account owns
//!   it; system groups (Registered Users) only to an administrator.
//! - `GET /a/groups/{uuid}/members/[?recursive]`: `AccountInfo`s, 404 for a group the
//!   service account cannot see.
//! - JSON bodies behind the `)]}'` XSSI line, `404 Not found: ...` as plain text.
//! - Authentication like Gerrit's `/a/` filters: HTTP Basic with the HTTP password, or,
//!   with [`FakeGerrit::trust_header`], `auth.trustContainerAuth` (the header names the
//!   caller, no password is checked: 403 without it, 401 for an unknown account).
//! - Account ids resolve like Gerrit's AccountResolver: `self`/`me` mean the caller, a bare
//!   number is an account id, `Name (id)` and `Name <email>` forms, username, email, and
//!   when none of those match, a full name, then a default search (a unique account whose
//!   name, username or email contains the id).
//!
//! The service account ([`USERNAME`]) is an account from the start, as in a real Gerrit
//! (it could not authenticate otherwise); its own `GET /a/accounts/self`, which mesh-authz
//! makes at start and every minute, is counted apart ([`FakeGerrit::self_requests`]) from
//! the requests about users.
//!
//! - `GET /a/changes/{change-id}`: `ChangeInfo` with submit requirements and votes
//!   (`gerrit/changes.rs`).
//! - `GET /a/projects/{p}/branches/{b}` and `.../commits/{c}/files/{f}/content`: branches
//!   and base64 file content (`gerrit/projects.rs`).
//!
//! It can also misbehave ([`Fault`]), serve over TLS with a private CA, and write the
//! `ref-updated` event Gerrit fires when a group changes.

pub mod changes;
mod projects;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Service account mesh-authz uses.
pub const USERNAME: &str = "mesh-authz";
/// Its HTTP password.
pub const PASSWORD: &str = "s3cret-http-password";

/// Ways the fake can misbehave, for the next N requests.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// An HTML error page with this status, like a proxy in front of a struggling Gerrit.
    ErrorPage(u16),
    /// `200` with an HTML page (a login page on a misconfigured path, say).
    HtmlOk,
    /// `200` with JSON cut off mid-way.
    TruncatedJson,
    /// `200` with a JSON object where a list belongs.
    WrongShape,
    /// `200` with a 10 MB body; `declared` sends its Content-Length, else it is chunked.
    Huge {
        /// Whether Content-Length is sent.
        declared: bool,
    },
    /// Accepts the request and never answers.
    Stall,
    /// Sends the headers and the start of the body, then nothing.
    StallMidBody,
    /// `404` for a path the server does not have, like a Gerrit (or a proxy in front of
    /// it) reached under a wrong path prefix.
    NoSuchPath,
}

/// One account.
#[derive(Clone)]
struct Account {
    /// Gerrit's account number (`_account_id`).
    number: usize,
    username: String,
    email: String,
    full_name: String,
    groups: Vec<String>,
}

/// One internal group.
#[derive(Clone)]
struct GroupDef {
    /// Whether anyone may see it and its members (`visible_to_all`); otherwise only its
    /// owners and administrators, and the service account is neither.
    visible_to_all: bool,
    /// Groups included in this one (their members are members of this one).
    subgroups: Vec<String>,
}

#[derive(Default)]
struct GerritState {
    password: Mutex<String>,
    trusted_header: Mutex<Option<String>>,
    admin: AtomicBool,
    accounts: Mutex<Vec<Account>>,
    groups: Mutex<HashMap<String, GroupDef>>,
    requests: Mutex<HashMap<String, usize>>,
    /// Group lists answered, by the username of the account they were for.
    group_lists: Mutex<HashMap<String, usize>>,
    member_requests: Mutex<HashMap<String, usize>>,
    /// Member lists are accepted and never answered (the other endpoints still answer).
    stall_member_lists: AtomicBool,
    total: AtomicUsize,
    delay: Mutex<Duration>,
    faults: Mutex<(usize, Option<Fault>)>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// The identity of each request, as Gerrit saw it (username), in order.
    callers: Mutex<Vec<String>>,
    traceparents: Mutex<Vec<String>>,
    /// `GET /a/accounts/self` requests (the service account checking itself).
    self_requests: AtomicUsize,
    /// Changes under review.
    changes: Mutex<Vec<changes::FakeChange>>,
    /// Change requests, by change number.
    change_requests: Mutex<HashMap<u64, usize>>,
    /// Branches and files.
    repositories: Mutex<projects::Repositories>,
    branch_requests: AtomicUsize,
}

impl GerritState {
    /// A site with the service account and no one else.
    fn new() -> Arc<Self> {
        let state = GerritState {
            password: Mutex::new(PASSWORD.to_string()),
            ..GerritState::default()
        };
        state.accounts.lock().unwrap().push(Account {
            number: FIRST_ACCOUNT_NUMBER,
            username: USERNAME.into(),
            email: format!("{USERNAME}@example.com"),
            full_name: "Mesh Authz".into(),
            groups: Vec::new(),
        });
        Arc::new(state)
    }
}

/// A running fake Gerrit.
pub struct FakeGerrit {
    state: Arc<GerritState>,
    base: String,
    task: tokio::task::JoinHandle<()>,
    /// PEM of the CA that signed its certificate, when serving TLS.
    pub ca_pem: Option<String>,
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
    /// Starts on an ephemeral loopback port with no accounts, over plain HTTP.
    pub async fn start() -> Self {
        let state = GerritState::new();
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            state,
            base: format!("http://{addr}"),
            task,
            ca_pem: None,
        }
    }

    /// Starts over HTTPS with a certificate for 127.0.0.1 from a fresh private CA
    /// (its PEM is in [`FakeGerrit::ca_pem`]).
    pub async fn start_tls() -> Self {
        let state = GerritState::new();
        let (addr, ca_pem, task) = super::pki::serve_https(router(state.clone())).await;
        Self {
            state,
            base: format!("https://{addr}"),
            task,
            ca_pem: Some(ca_pem),
        }
    }

    /// Base URL, as configured in `gerrit.url`.
    pub fn url(&self) -> String {
        self.base.clone()
    }

    /// Adds an account in these groups (besides the system group Registered Users), with
    /// the email `{username}@example.com` and the username, capitalised, as full name.
    /// Groups not seen before are created, visible to all.
    pub fn add_account(&self, username: &str, groups: &[&str]) {
        let mut full_name = username.to_string();
        if let Some(first) = full_name.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        self.add_account_named(username, &full_name, groups);
    }

    /// Adds an account with this full name. Usernames are unique, as in Gerrit.
    pub fn add_account_named(&self, username: &str, full_name: &str, groups: &[&str]) {
        self.ensure_groups(groups);
        let mut accounts = self.state.accounts.lock().unwrap();
        assert!(
            accounts.iter().all(|a| a.username != username),
            "{username} exists already (the service account always does: use set_groups)"
        );
        let number = accounts.iter().map(|a| a.number).max().unwrap_or(0) + 1;
        accounts.push(Account {
            number: number.max(FIRST_ACCOUNT_NUMBER),
            username: username.into(),
            email: format!("{username}@example.com"),
            full_name: full_name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        });
    }

    fn ensure_groups(&self, names: &[&str]) {
        let mut groups = self.state.groups.lock().unwrap();
        for name in names {
            groups.entry(name.to_string()).or_insert(GroupDef {
                visible_to_all: true,
                subgroups: Vec::new(),
            });
        }
    }

    /// Makes a group visible only to its owners, which the service account is not.
    pub fn hide_group(&self, name: &str) {
        self.ensure_groups(&[name]);
        self.state
            .groups
            .lock()
            .unwrap()
            .get_mut(name)
            .unwrap()
            .visible_to_all = false;
    }

    /// Includes `child` in `parent`: members of `child` are members of `parent`.
    pub fn include_group(&self, parent: &str, child: &str) {
        self.ensure_groups(&[parent, child]);
        self.state
            .groups
            .lock()
            .unwrap()
            .get_mut(parent)
            .unwrap()
            .subgroups
            .push(child.into());
    }

    /// Gives the service account the Administrate Server capability: it then sees every
    /// group, system groups included.
    pub fn make_service_account_admin(&self) {
        self.state.admin.store(true, Ordering::SeqCst);
    }

    /// Gerrit's numeric account id of a known account (`{account-id}` may be this number).
    pub fn account_id(&self, username: &str) -> usize {
        let accounts = self.state.accounts.lock().unwrap();
        accounts
            .iter()
            .find(|a| a.username == username)
            .expect("known account")
            .number
    }

    /// Removes an account, as if it had never been created (Gerrit itself only
    /// deactivates accounts; a site where the service account was never set up looks
    /// like this).
    pub fn delete_account(&self, username: &str) {
        self.state
            .accounts
            .lock()
            .unwrap()
            .retain(|a| a.username != username);
    }

    /// Changes the service account's password (a credential rotation).
    pub fn set_password(&self, password: &str) {
        *self.state.password.lock().unwrap() = password.to_string();
    }

    /// Switches to `auth.type = HTTP` with `auth.httpHeader = header` and
    /// `auth.trustContainerAuth = true`: the header names the caller; passwords are not
    /// checked.
    pub fn trust_header(&self, header: &str) {
        *self.state.trusted_header.lock().unwrap() = Some(header.to_ascii_lowercase());
    }

    /// Replaces an account's groups (a membership change in Gerrit).
    pub fn set_groups(&self, username: &str, groups: &[&str]) {
        self.ensure_groups(groups);
        let mut accounts = self.state.accounts.lock().unwrap();
        let account = accounts
            .iter_mut()
            .find(|a| a.username == username)
            .expect("known account");
        account.groups = groups.iter().map(|g| g.to_string()).collect();
    }

    /// The `ref-updated` event Gerrit fires (stream-events, webhooks plugin) when the
    /// group's NoteDb ref in All-Users changes.
    pub fn ref_updated_event(&self, group: &str) -> String {
        let uuid = group_uuid(group);
        json!({
            "submitter": {"name": "Administrator", "email": "admin@example.com", "username": "admin"},
            "refUpdate": {
                "oldRev": "8c2a4d1e0d5b9f3a6e7c1b2d3f4a5b6c7d8e9f00",
                "newRev": "1f2e3d4c5b6a798877665544332211ffeeddccbb",
                "refName": format!("refs/groups/{}/{uuid}", &uuid[..2]),
                "project": "All-Users",
            },
            "type": "ref-updated",
            "eventCreatedOn": 1_764_000_000,
        })
        .to_string()
    }

    /// Makes the next `n` requests misbehave.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        *self.state.faults.lock().unwrap() = (n, Some(fault));
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// Delays every answer (to make concurrent requests overlap).
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Makes member lists (`/a/groups/{uuid}/members/`) hang without an answer, like a
    /// Gerrit stalled on a large group, while account and group lookups still answer.
    pub fn stall_member_lists(&self) {
        self.state.stall_member_lists.store(true, Ordering::SeqCst);
    }

    /// Group lists answered for the account with this username, whatever id named it.
    pub fn group_lists_for(&self, username: &str) -> usize {
        self.state
            .group_lists
            .lock()
            .unwrap()
            .get(username)
            .copied()
            .unwrap_or(0)
    }

    /// Account and group requests made with this account id in the path (decoded), or
    /// account queries for it (`username:ID`, `email:ID`).
    pub fn requests_for(&self, account: &str) -> usize {
        self.state
            .requests
            .lock()
            .unwrap()
            .get(account)
            .copied()
            .unwrap_or(0)
    }

    /// Member list requests made for one group (by name).
    pub fn member_requests_for(&self, group: &str) -> usize {
        self.state
            .member_requests
            .lock()
            .unwrap()
            .get(&group_uuid(group))
            .copied()
            .unwrap_or(0)
    }

    /// All requests about users (not the service account's `GET /a/accounts/self`).
    pub fn total_requests(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// `GET /a/accounts/self` requests: the service account looking itself up.
    pub fn self_requests(&self) -> usize {
        self.state.self_requests.load(Ordering::SeqCst)
    }

    /// The `traceparent` of every request, in order (`-` where there was none).
    pub fn traceparents(&self) -> Vec<String> {
        self.state.traceparents.lock().unwrap().clone()
    }

    /// Who each request about users authenticated as, in order.
    pub fn callers(&self) -> Vec<String> {
        self.state.callers.lock().unwrap().clone()
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

fn router(state: Arc<GerritState>) -> Router {
    Router::new()
        .route("/a/accounts/", get(query_accounts))
        .route("/a/accounts/{account}", get(account_info))
        .route("/a/accounts/{account}/groups/", get(account_groups))
        .route("/a/groups/{group}/members/", get(group_members))
        .route("/a/changes/{change}", get(changes::get_change))
        .route(
            "/a/projects/{project}/branches/{branch}",
            get(projects::get_branch),
        )
        .route(
            "/a/projects/{project}/commits/{commit}/files/{file}/content",
            get(projects::get_file_content),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            record_traceparent,
        ))
        .with_state(state)
}

/// Keeps each request's `traceparent` (or `-` without one), for the trace tests.
async fn record_traceparent(
    State(state): State<Arc<GerritState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let value = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    state.traceparents.lock().unwrap().push(value);
    next.run(request).await
}

/// Gerrit numbers accounts from 1000000 up; the service account is the first.
const FIRST_ACCOUNT_NUMBER: usize = 1_000_000;

/// Resolves an `{account-id}` the way Gerrit's AccountResolver does, for the forms the
/// fake knows, in Gerrit's order: `self`/`me` (the caller), a bare account number,
/// `Full Name (number)`, a username, `Full Name <email>`, an email.
fn resolve(accounts: &[Account], id: &str, caller: &str) -> Option<Account> {
    // ByExactAccountId and ByParenthesizedAccountId short-circuit: a number that is no
    // account is not looked up as a username.
    let by_number = |n: usize| accounts.iter().find(|a| a.number == n);
    let parenthesized = id
        .strip_suffix(')')
        .and_then(|rest| rest.rsplit_once(" ("))
        .and_then(|(_, n)| n.parse::<usize>().ok());
    let bracketed = match (id.find('<'), id.find('>')) {
        (Some(lt), Some(gt)) if gt > lt && id.contains('@') => Some(&id[lt + 1..gt]),
        _ => None,
    };
    let found = if matches!(id, "self" | "me") {
        accounts.iter().find(|a| a.username == caller)
    } else if let Ok(n) = id.parse::<usize>() {
        by_number(n)
    } else if let Some(n) = parenthesized {
        by_number(n)
    } else if let Some(a) = accounts.iter().find(|a| a.username == id) {
        Some(a)
    } else if let Some(a) = accounts.iter().find(|a| a.email == bracketed.unwrap_or(id)) {
        Some(a)
    } else if let Some(a) = accounts.iter().find(|a| a.full_name == id) {
        Some(a)
    } else {
        // The default search: one account whose name, username or email contains the id.
        let needle = id.to_lowercase();
        let hits: Vec<&Account> = accounts
            .iter()
            .filter(|a| {
                [&a.full_name, &a.username, &a.email]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&needle))
            })
            .collect();
        match hits.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    };
    found.cloned()
}

/// Every group the account is in: its own and, transitively, those including them.
fn effective_groups(groups: &HashMap<String, GroupDef>, account: &Account) -> Vec<String> {
    let mut effective: Vec<String> = account.groups.clone();
    let mut i = 0;
    while i < effective.len() {
        let child = effective[i].clone();
        for (name, def) in groups {
            if def.subgroups.contains(&child) && !effective.contains(name) {
                effective.push(name.clone());
            }
        }
        i += 1;
    }
    effective
}

/// Why Gerrit's `/a/` filter refused a request.
enum Refused {
    /// No trusted header (ContainerAuthFilter): 403.
    NoHeader,
    /// Unknown account or wrong password: 401.
    Unauthorized,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::NoHeader => StatusCode::FORBIDDEN.into_response(),
            Refused::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"Gerrit Code Review\"")],
                "Unauthorized",
            )
                .into_response(),
        }
    }
}

/// Authenticates the request like Gerrit's `/a/` filters: the caller's username.
fn authenticate(state: &GerritState, headers: &HeaderMap) -> Result<String, Refused> {
    let trusted = state.trusted_header.lock().unwrap().clone();
    if let Some(header) = trusted {
        // ContainerAuthFilter: the header is the identity; no password is checked.
        let Some(user) = headers.get(&header).and_then(|v| v.to_str().ok()) else {
            return Err(Refused::NoHeader);
        };
        let exists = state
            .accounts
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.username == user);
        return if exists {
            Ok(user.to_string())
        } else {
            Err(Refused::Unauthorized)
        };
    }
    let password = state.password.lock().unwrap().clone();
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{password}"));
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    if presented == Some(expected.as_str()) {
        Ok(USERNAME.to_string())
    } else {
        Err(Refused::Unauthorized)
    }
}

/// Counts, delays and misbehaves as configured; `None` means answer normally.
async fn before_answering(state: &GerritState) -> Option<Response> {
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fault = {
        let mut faults = state.faults.lock().unwrap();
        if faults.0 > 0 {
            faults.0 -= 1;
            faults.1
        } else {
            None
        }
    };
    match fault {
        Some(fault) => Some(fault_response(fault).await),
        None => None,
    }
}

async fn fault_response(fault: Fault) -> Response {
    const TEN_MB: usize = 10 * 1024 * 1024;
    let json = [("content-type", "application/json;charset=utf-8")];
    match fault {
        Fault::ErrorPage(status) => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "text/html")],
            format!("<html><body><h1>{status} Bad Gateway</h1></body></html>"),
        )
            .into_response(),
        Fault::HtmlOk => (
            [("content-type", "text/html")],
            "<!DOCTYPE html><html><head><title>Gerrit Code Review</title></head><body>Sign in</body></html>",
        )
            .into_response(),
        Fault::TruncatedJson => (json, ")]}'\n[{\"id\": \"global%3ARegistered-Users\", \"na").into_response(),
        Fault::WrongShape => (json, ")]}'\n{\"message\": \"not a list\"}\n").into_response(),
        Fault::Huge { declared: true } => {
            // A valid list, 10 MB long.
            let mut body = String::with_capacity(TEN_MB + 64);
            body.push_str(")]}'\n[");
            while body.len() < TEN_MB {
                body.push_str("{\"id\": \"global%3ARegistered-Users\", \"name\": \"Registered Users\"},");
            }
            body.push_str("{\"id\": \"x\"}]");
            (json, body).into_response()
        }
        Fault::Huge { declared: false } => {
            let chunk = bytes_of(")]}'\n[".to_string() + &"{\"id\": \"g\", \"name\": \"g\"},".repeat(4000));
            let chunks = TEN_MB / chunk.len() + 1;
            let stream = futures::stream::iter(
                (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            (json, axum::body::Body::from_stream(stream)).into_response()
        }
        Fault::Stall => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Fault::NoSuchPath => (
            StatusCode::NOT_FOUND,
            [("content-type", "text/plain;charset=utf-8")],
            "Not Found",
        )
            .into_response(),
        Fault::StallMidBody => {
            let start = futures::stream::iter([Ok::<_, std::io::Error>(bytes_of(
                ")]}'\n[{\"id\": \"global%3ARegistered-Users\",".to_string(),
            ))]);
            let stream = futures::StreamExt::chain(start, futures::stream::pending());
            (json, axum::body::Body::from_stream(stream)).into_response()
        }
    }
}

fn bytes_of(s: String) -> axum::body::Bytes {
    axum::body::Bytes::from(s)
}

struct InFlight<'a>(&'a GerritState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a GerritState) -> Self {
        state.total.fetch_add(1, Ordering::SeqCst);
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [("content-type", "text/plain;charset=utf-8")],
        format!("Not found: {what}"),
    )
        .into_response()
}

fn gerrit_json(value: &serde_json::Value) -> Response {
    let body = format!(")]}}'\n{}\n", serde_json::to_string_pretty(value).unwrap());
    ([("content-type", "application/json;charset=utf-8")], body).into_response()
}

/// An `AccountInfo` with the details (`o=DETAILS`, and always for a single account).
fn account_details(a: &Account) -> serde_json::Value {
    json!({
        "_account_id": a.number,
        "name": a.full_name,
        "email": a.email,
        "username": a.username,
    })
}

async fn account_info(
    State(state): State<Arc<GerritState>>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Response {
    // The service account's own look-up (mesh-authz's self-check) is counted apart.
    let is_self_check = account == "self";
    let _in_flight = if is_self_check {
        state.self_requests.fetch_add(1, Ordering::SeqCst);
        None
    } else {
        *state
            .requests
            .lock()
            .unwrap()
            .entry(account.clone())
            .or_default() += 1;
        Some(InFlight::enter(&state))
    };
    if let Some(response) = before_answering(&state).await {
        return response;
    }
    let caller = match authenticate(&state, &headers) {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    if !is_self_check {
        state.callers.lock().unwrap().push(caller.clone());
    }
    let accounts = state.accounts.lock().unwrap().clone();
    let Some(found) = resolve(&accounts, &account, &caller) else {
        return not_found(&account);
    };
    gerrit_json(&account_details(&found))
}

/// One operator of an account query.
enum Term {
    Username(String),
    Email(String),
    Name(String),
    Active(bool),
}

/// Parses an account query the fake understands: `op:value` terms separated by spaces
/// (ANDed), values bare, `"quoted"` or `{braced}`.
fn parse_query(q: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    let mut rest = q.trim_start();
    while !rest.is_empty() {
        let Some((op, after)) = rest.split_once(':') else {
            return Err(format!("no operator in {rest:?}"));
        };
        let (value, after) = match after.chars().next() {
            Some('"') => {
                let end = after[1..].find('"').ok_or("unterminated quote")?;
                (&after[1..=end], &after[end + 2..])
            }
            Some('{') => {
                let end = after[1..].find('}').ok_or("unterminated brace")?;
                (&after[1..=end], &after[end + 2..])
            }
            _ => after.split_at(after.find(' ').unwrap_or(after.len())),
        };
        terms.push(match (op, value) {
            ("username", v) => Term::Username(v.to_string()),
            ("email", v) => Term::Email(v.to_string()),
            ("name", v) => Term::Name(v.to_string()),
            ("is", "active") => Term::Active(true),
            ("is", "inactive") => Term::Active(false),
            (op, v) => return Err(format!("Unsupported operator {op}:{v}")),
        });
        rest = after.trim_start();
    }
    Ok(terms)
}

/// Query Account: `GET /a/accounts/?q=...`.
async fn query_accounts(
    State(state): State<Arc<GerritState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let _in_flight = InFlight::enter(&state);
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let q = param("q").unwrap_or_default().to_string();
    let terms = parse_query(&q);
    for term in terms.iter().flatten() {
        if let Term::Username(v) | Term::Email(v) = term {
            *state.requests.lock().unwrap().entry(v.clone()).or_default() += 1;
        }
    }
    if let Some(response) = before_answering(&state).await {
        return response;
    }
    let caller = match authenticate(&state, &headers) {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    state.callers.lock().unwrap().push(caller);
    let terms = match terms {
        Ok(terms) if !terms.is_empty() => terms,
        Ok(_) => return (StatusCode::BAD_REQUEST, "missing query field").into_response(),
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let details = params.iter().any(|(k, v)| k == "o" && v == "DETAILS");
    let limit = param("n").and_then(|n| n.parse().ok()).unwrap_or(10usize);
    let start = param("S")
        .or(param("start"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0usize);
    // is:active is added unless the query asks about activity itself; the fake's
    // accounts are all active.
    let matches = |a: &Account| {
        terms.iter().all(|t| match t {
            Term::Username(v) => a.username.eq_ignore_ascii_case(v),
            Term::Email(v) => a.email.to_lowercase().starts_with(&v.to_lowercase()),
            Term::Name(v) => a
                .full_name
                .split_whitespace()
                .chain(a.email.split(['@', '.']))
                .any(|part| part.eq_ignore_ascii_case(v)),
            Term::Active(active) => *active,
        })
    };
    let accounts = state.accounts.lock().unwrap().clone();
    let found: Vec<&Account> = accounts.iter().filter(|a| matches(a)).skip(start).collect();
    let mut infos: Vec<serde_json::Value> = found
        .iter()
        .take(limit)
        .map(|a| {
            if details {
                account_details(a)
            } else {
                json!({"_account_id": a.number})
            }
        })
        .collect();
    if found.len() > limit {
        if let Some(last) = infos.last_mut() {
            last["_more_accounts"] = json!(true);
        }
    }
    gerrit_json(&json!(infos))
}

async fn account_groups(
    State(state): State<Arc<GerritState>>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _in_flight = InFlight::enter(&state);
    *state
        .requests
        .lock()
        .unwrap()
        .entry(account.clone())
        .or_default() += 1;
    if let Some(response) = before_answering(&state).await {
        return response;
    }
    let caller = match authenticate(&state, &headers) {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    state.callers.lock().unwrap().push(caller.clone());
    let found = resolve(&state.accounts.lock().unwrap(), &account, &caller);
    let Some(found) = found else {
        return not_found(&account);
    };
    *state
        .group_lists
        .lock()
        .unwrap()
        .entry(found.username.clone())
        .or_default() += 1;
    let admin = state.admin.load(Ordering::SeqCst);
    let groups = state.groups.lock().unwrap().clone();
    // GetGroups: only groups the caller can see (and whose members it can see).
    let mut infos = Vec::new();
    if admin {
        infos.push(json!({
            "id": "global%3ARegistered-Users",
            "name": "Registered Users",
            "options": {},
            "group_id": 3,
        }));
    }
    for (i, name) in effective_groups(&groups, &found).iter().enumerate() {
        let visible = admin || groups.get(name).is_some_and(|g| g.visible_to_all);
        if !visible {
            continue;
        }
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
    gerrit_json(&json!(infos))
}

async fn group_members(
    State(state): State<Arc<GerritState>>,
    Path(group): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let _in_flight = InFlight::enter(&state);
    *state
        .member_requests
        .lock()
        .unwrap()
        .entry(group.clone())
        .or_default() += 1;
    if state.stall_member_lists.load(Ordering::SeqCst) {
        return fault_response(Fault::Stall).await;
    }
    if let Some(response) = before_answering(&state).await {
        return response;
    }
    if let Err(refused) = authenticate(&state, &headers) {
        return refused.into_response();
    }
    let recursive = query.is_some_and(|q| q.split('&').any(|p| p == "recursive"));
    let admin = state.admin.load(Ordering::SeqCst);
    let groups = state.groups.lock().unwrap().clone();
    let Some((name, def)) = groups.iter().find(|(name, _)| group_uuid(name) == group) else {
        return not_found(&group);
    };
    if !(admin || def.visible_to_all) {
        return not_found(&group);
    }
    let accounts = state.accounts.lock().unwrap().clone();
    let members: Vec<serde_json::Value> = accounts
        .iter()
        .filter(|a| {
            if recursive {
                effective_groups(&groups, a).contains(name)
            } else {
                a.groups.contains(name)
            }
        })
        .map(account_details)
        .collect();
    gerrit_json(&json!(members))
}
