//! The device authorization grant (RFC 8628), for command-line clients: the device
//! authorization endpoint, the verification page where a person enters the user code,
//! signs in and approves or denies, and the token endpoint's `device_code` grant with
//! `authorization_pending`, `slow_down`, `access_denied` and `expired_token` (3.5).
//!
//! Decisions where the RFC leaves a choice:
//! - User codes are 8 characters from 20 consonants, shown as `XXXX-XXXX` (6.1); the
//!   verification page ignores case, spaces and dashes in what is typed.
//! - A poll sooner than the current interval after the previous poll of the same device
//!   code answers `slow_down` and adds 5 seconds to the interval (3.5); the first poll
//!   may come at once.
//! - An approved device code is spent by the poll that gets the tokens; a later poll is
//!   `invalid_grant`.

use super::{escape, html_page, issue_tokens, random_token, Grant, Params, Shared, TokenError};
use crate::support::oidc_provider::Client;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// The grant type of a device code redemption (RFC 8628 3.4).
pub(super) const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 6.1: consonants only, so no word is spelled and no vowel looks like a digit.
const USER_CODE_CHARS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A device authorization, from its request to its redemption.
pub(super) struct DeviceGrant {
    client_id: String,
    scope: String,
    /// Normalised: 8 characters, no dash.
    user_code: String,
    /// On the provider's clock.
    issued_at: u64,
    expires_in: u64,
    /// Seconds; grows by 5 with each `slow_down`.
    interval: u64,
    last_poll: Option<Instant>,
    status: DeviceStatus,
}

#[derive(Clone, PartialEq, Eq)]
enum DeviceStatus {
    Pending,
    Approved { username: String, auth_time: u64 },
    Denied,
    Spent,
}

/// A user code as typed: upper case, without spaces or dashes.
fn normalise(user_code: &str) -> String {
    user_code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .flat_map(char::to_uppercase)
        .collect()
}

fn new_user_code() -> String {
    (0..8)
        .map(|_| USER_CODE_CHARS[fastrand::usize(..USER_CODE_CHARS.len())] as char)
        .collect()
}

/// `XXXX-XXXX`, as shown to the user.
fn shown(user_code: &str) -> String {
    format!("{}-{}", &user_code[..4], &user_code[4..])
}

impl Shared {
    /// Approves the pending device authorization with `user_code` for `username`, as the
    /// person would on the verification page. False when there is none.
    pub(super) fn approve_device(&self, user_code: &str, username: &str) -> bool {
        self.decide_device(user_code, Some(username))
    }

    /// Denies it, as the person would.
    pub(super) fn deny_device(&self, user_code: &str) -> bool {
        self.decide_device(user_code, None)
    }

    fn decide_device(&self, user_code: &str, approve_as: Option<&str>) -> bool {
        let code = normalise(user_code);
        let now = self.now();
        let mut state = self.lock();
        let Some(grant) = state.device_codes.values_mut().find(|g| {
            g.user_code == code
                && g.status == DeviceStatus::Pending
                && now <= g.issued_at + g.expires_in
        }) else {
            return false;
        };
        grant.status = match approve_as {
            Some(username) => DeviceStatus::Approved {
                username: username.to_string(),
                auth_time: now,
            },
            None => DeviceStatus::Denied,
        };
        match approve_as {
            Some(_) => state.stats.device_approvals += 1,
            None => state.stats.device_denials += 1,
        }
        true
    }

    /// The user codes of pending device authorizations, newest last.
    pub(super) fn pending_user_codes(&self) -> Vec<String> {
        let state = self.lock();
        let mut pending: Vec<(u64, String)> = state
            .device_codes
            .values()
            .filter(|g| g.status == DeviceStatus::Pending)
            .map(|g| (g.issued_at, shown(&g.user_code)))
            .collect();
        pending.sort();
        pending.into_iter().map(|(_, code)| code).collect()
    }
}

/// `POST /device/code`: the device authorization request (RFC 8628 3.1, 3.2).
pub(super) async fn authorize(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    match device_authorization(&shared, &headers, &body) {
        Ok(answer) => super::token_json(StatusCode::OK, &answer),
        Err(error) => axum::response::IntoResponse::into_response(error),
    }
}

fn device_authorization(
    shared: &Shared,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Value, TokenError> {
    if !super::is_form_urlencoded(headers) {
        return Err(TokenError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(body);
    if let Some(duplicate) = params.duplicated(&["client_id", "client_secret", "scope"]) {
        return Err(duplicate.into());
    }
    let client = super::authenticate_client(shared, headers, &params)?;
    let scope = params.one("scope")?.unwrap_or("openid").to_string();
    let device_code = random_token();
    let user_code = new_user_code();
    let expires_in = shared.device_code_lifetime;
    let interval = shared.device_poll_interval;
    let verification_uri = format!("{}/device", shared.issuer);
    let complete = format!("{verification_uri}?user_code={}", shown(&user_code));
    let mut state = shared.lock();
    state.stats.device_authorizations += 1;
    state.device_codes.insert(
        device_code.clone(),
        DeviceGrant {
            client_id: client.client_id.clone(),
            scope,
            user_code: user_code.clone(),
            issued_at: shared.now(),
            expires_in,
            interval,
            last_poll: None,
            status: DeviceStatus::Pending,
        },
    );
    Ok(json!({
        "device_code": device_code,
        "user_code": shown(&user_code),
        "verification_uri": verification_uri,
        "verification_uri_complete": complete,
        "expires_in": expires_in,
        "interval": interval,
    }))
}

/// `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 3.4, 3.5).
pub(super) fn redeem(
    shared: &Shared,
    client: &Client,
    params: &Params,
) -> Result<Value, TokenError> {
    let Some(device_code) = params.one("device_code")? else {
        return Err(TokenError::invalid_request("device_code is required"));
    };
    let now = shared.now();
    let mut state = shared.lock();
    state.stats.device_polls += 1;
    let Some(grant) = state.device_codes.get_mut(device_code) else {
        return Err(TokenError::invalid_grant("unknown device code"));
    };
    if grant.client_id != client.client_id {
        return Err(TokenError::invalid_grant(
            "the device code was issued to another client",
        ));
    }
    if grant.status == DeviceStatus::Spent {
        return Err(TokenError::invalid_grant(
            "the device code was already used",
        ));
    }
    if now > grant.issued_at + grant.expires_in {
        return Err(TokenError::bad_request(
            "expired_token",
            "the device code has expired",
        ));
    }
    let too_soon = grant
        .last_poll
        .is_some_and(|at| at.elapsed().as_secs_f64() < grant.interval as f64);
    grant.last_poll = Some(Instant::now());
    match grant.status.clone() {
        DeviceStatus::Pending if too_soon => {
            grant.interval += 5;
            state.stats.slow_downs += 1;
            Err(TokenError::bad_request(
                "slow_down",
                "polling faster than the interval",
            ))
        }
        DeviceStatus::Pending => Err(TokenError::bad_request(
            "authorization_pending",
            "the user has not answered yet",
        )),
        DeviceStatus::Denied => Err(TokenError::bad_request(
            "access_denied",
            "the user denied the device",
        )),
        DeviceStatus::Approved {
            username,
            auth_time,
        } => {
            grant.status = DeviceStatus::Spent;
            let scope = grant.scope.clone();
            state.next_grant += 1;
            let issued = Grant {
                client_id: client.client_id.clone(),
                username,
                scope: scope.clone(),
                auth_time,
                grant: state.next_grant,
            };
            issue_tokens(shared, &mut state, &issued, &scope, None, true)
        }
        DeviceStatus::Spent => Err(TokenError::invalid_grant(
            "the device code was already used",
        )),
    }
}

/// `GET /device`: the verification page, the code filled in from
/// `verification_uri_complete`.
pub(super) async fn page(uri: Uri) -> Response {
    let params = Params::parse(uri.query().unwrap_or_default().as_bytes());
    let code = params.one("user_code").ok().flatten().unwrap_or_default();
    verification_form(code, "", None)
}

fn verification_form(user_code: &str, username: &str, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p id=\"error\" role=\"alert\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<p>Enter the code your device shows, and sign in to let it act for you.</p>\n{error}\
         <form method=\"post\" action=\"/device\">\n\
         <label for=\"user_code\">Code</label>\n\
         <input id=\"user_code\" name=\"user_code\" type=\"text\" value=\"{code}\">\n\
         <label for=\"username\">Username</label>\n\
         <input id=\"username\" name=\"username\" type=\"text\" value=\"{username}\">\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\">\n\
         <button id=\"approve\" type=\"submit\" name=\"action\" value=\"approve\">Approve</button>\n\
         <button id=\"deny\" type=\"submit\" name=\"action\" value=\"deny\">Deny</button>\n\
         </form>",
        code = escape(user_code),
        username = escape(username),
    );
    html_page(StatusCode::OK, "Connect a device", &body)
}

/// `POST /device`: the person's answer.
pub(super) async fn submit(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let params = Params::parse(&body);
    let field = |name: &str| params.one(name).ok().flatten().unwrap_or_default();
    let (user_code, username, password) =
        (field("user_code"), field("username"), field("password"));
    if !shared.password_ok(username, password) {
        return verification_form(user_code, username, Some("Invalid username or password."));
    }
    let decided = if field("action") == "deny" {
        shared.deny_device(user_code)
    } else {
        shared.approve_device(user_code, username)
    };
    if !decided {
        return verification_form(
            user_code,
            username,
            Some("This code is not valid or has expired."),
        );
    }
    let message = if field("action") == "deny" {
        "<p id=\"result\">The device was denied.</p>"
    } else {
        "<p id=\"result\">The device is connected. You can close this window.</p>"
    };
    html_page(StatusCode::OK, "Done", message)
}
