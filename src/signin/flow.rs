//! Browser sign-in at work: starting a sign-in, the IdP's redirect back, the session on
//! each request (refreshed when its ID token nears expiry), and signing out.
//!
//! Nothing is stored but in the browser's cookies, so any replica serves any step. What a
//! replica keeps is bounded and only saves work: the `state`s of callbacks it already
//! answered (a replayed callback is refused even before the IdP refuses its code), and
//! for a minute the outcome of each refresh, so that requests of one session that arrive
//! together share one refresh, and requests still carrying the old cookie after a
//! rotation get the new session instead of spending the old refresh token again.

use super::answer::Answer;
use super::cookies::{self, CookieAttributes};
use super::login::{same_host_target, PendingLogin, LOGIN_TTL_SECS};
use super::session::{
    Session, SessionClock, Standing, HINT_PURPOSE, LOGIN_PURPOSE, SESSION_PURPOSE,
};
use super::settings::{BrowserSignInConfig, SessionSettings};
use crate::authn::{AuthnError, TokenVerifier};
use crate::identity::Identity;
use crate::oidc::{OidcError, Provider, Tokens};
use crate::request::cookie::{CookieJar, Lookup};
use crate::request::RequestView;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Callbacks remembered per replica, to refuse a replay.
const MAX_REMEMBERED_STATES: u64 = 100_000;
/// Refresh outcomes remembered per replica.
const MAX_REMEMBERED_REFRESHES: u64 = 100_000;
/// How long a refresh outcome is reused.
const REFRESH_REUSE: Duration = Duration::from_secs(60);
/// How long an opened session is kept; its standing is checked on every use anyway.
const OPENED_TTL: Duration = Duration::from_secs(300);
/// Longest query string of a callback read.
const MAX_CALLBACK_QUERY: usize = 16 * 1024;

/// The paths mesh-authz answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The IdP's redirect back.
    Callback,
    /// Start a sign-in (`?rd=` where to return).
    SignIn,
    /// End the session.
    SignOut,
}

/// A session cookie, read.
#[derive(Debug)]
pub enum SessionCheck {
    /// No session cookie was sent.
    Absent,
    /// A good session.
    Valid {
        /// Who it is.
        identity: Arc<Identity>,
        /// Cookies to set on the answer (a refreshed session, a moved idle deadline).
        set_cookies: Vec<String>,
    },
    /// A cookie that is no session here, or a session that is over: sign in again.
    Rejected {
        /// Why, as a developer would read it.
        error: AuthnError,
        /// Cookies to delete.
        set_cookies: Vec<String>,
    },
}

/// An opened session as the cache keeps it: who, and the times that decide its standing
/// (not its tokens, which only a refresh or sign-out needs, and which would triple the
/// entry).
struct Opened {
    iss: String,
    clock: SessionClock,
    identity: Arc<Identity>,
}

/// A refreshed session, shared by the requests that asked for it.
#[derive(Clone)]
struct Refreshed {
    session: Session,
}

/// Browser sign-in for every issuer with a `browser_client`.
pub struct BrowserSignIn {
    settings: SessionSettings,
    providers: HashMap<String, Arc<Provider>>,
    answered_states: moka::sync::Cache<String, ()>,
    refreshes: moka::future::Cache<[u8; 32], Refreshed>,
    /// Sessions opened lately, by the digest of their whole sealed value.
    opened: Option<moka::sync::Cache<[u8; 32], Arc<Opened>>>,
    /// Code exchanges under way.
    exchanges: tokio::sync::Semaphore,
}

impl std::fmt::Debug for BrowserSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserSignIn")
            .field("cookie_name", &self.settings.cookie_name)
            .field("issuers", &self.providers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    crate::authn::unix_now()
}

impl BrowserSignIn {
    /// Browser sign-in as configured.
    pub fn new(config: &BrowserSignInConfig) -> Self {
        let providers = config
            .clients
            .iter()
            .map(|c| (c.issuer.clone(), Arc::new(Provider::new(c.clone()))))
            .collect();
        BrowserSignIn {
            settings: config.sessions.clone(),
            providers,
            answered_states: moka::sync::Cache::builder()
                .max_capacity(MAX_REMEMBERED_STATES)
                .time_to_live(Duration::from_secs(LOGIN_TTL_SECS))
                .build(),
            refreshes: moka::future::Cache::builder()
                .max_capacity(MAX_REMEMBERED_REFRESHES)
                .time_to_live(REFRESH_REUSE)
                .build(),
            exchanges: tokio::sync::Semaphore::new(config.sessions.max_concurrent_sign_ins),
            opened: (config.sessions.cache_max_entries > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(config.sessions.cache_max_entries)
                    .time_to_live(OPENED_TTL)
                    .build()
            }),
        }
    }

    /// The session cookie's settings.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// Whether `path` is one mesh-authz answers itself.
    pub fn reserved(&self, path: &str) -> Option<Reserved> {
        let s = &self.settings;
        if path == s.callback_path {
            Some(Reserved::Callback)
        } else if path == s.sign_in_path {
            Some(Reserved::SignIn)
        } else if path == s.sign_out_path {
            Some(Reserved::SignOut)
        } else {
            None
        }
    }

    /// The issuer the sign-in path uses when the config has only one.
    pub fn only_issuer(&self) -> Option<&str> {
        let mut issuers = self.providers.keys();
        match (issuers.next(), issuers.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// The `Cookie` header for the upstream, without mesh-authz's cookies: `None` when
    /// it needs no change, `Some("")` when nothing is left.
    pub fn upstream_cookie(&self, req: &RequestView<'_>) -> Option<String> {
        let header = req.header("cookie")?;
        cookies::without_ours(header, |name| self.settings.is_ours(name))
    }

    /// Sends the browser to `issuer`'s IdP to sign in, returning afterwards to
    /// `return_to` (a path on this host).
    pub async fn start(&self, req: &RequestView<'_>, issuer: &str, return_to: &str) -> Answer {
        let Some(provider) = self.providers.get(issuer) else {
            return Answer::page(
                500,
                "Sign-in is not configured",
                "No browser client is configured for this issuer.",
                vec![],
                "sign_in_not_configured",
            );
        };
        let Some(redirect_uri) = self.callback_uri(req) else {
            return bad_host();
        };
        let endpoints = match provider.endpoints().await {
            Ok(e) => e,
            Err(e) => return idp_unavailable(&e),
        };
        let login = PendingLogin::start(issuer, return_to, now());
        let url = match provider.authorization_url(
            &endpoints,
            &redirect_uri,
            &login.state,
            &login.nonce,
            &login.verifier,
        ) {
            Ok(url) => url,
            Err(e) => return idp_unavailable(&e),
        };
        let Some(name) = PendingLogin::cookie_name(&self.settings.cookie_name, &login.state) else {
            return internal("the sign-in state is not cookie-safe");
        };
        let sealed = match serde_json::to_vec(&login)
            .ok()
            .and_then(|json| self.settings.keys.seal(LOGIN_PURPOSE, &json).ok())
        {
            Some(sealed) => sealed,
            None => return internal("the sign-in could not be sealed"),
        };
        let cookie = cookies::set_cookie(
            &name,
            &sealed,
            CookieAttributes {
                max_age: LOGIN_TTL_SECS,
            },
        );
        Answer::redirect(url.to_string(), vec![cookie], "sign_in")
    }

    /// The sign-in path: `?rd=PATH` names the page to return to (default `/`).
    pub async fn sign_in_path(&self, req: &RequestView<'_>, issuer: &str) -> Answer {
        let rd = query_param(req.query, "rd").unwrap_or_else(|| "/".into());
        match same_host_target(&rd) {
            Ok(target) => self.start(req, issuer, target).await,
            Err(e) => Answer::page(
                400,
                "Sign-in refused",
                &format!("The page to return to after sign-in is refused: {e}."),
                vec![],
                "sign_in_bad_return",
            ),
        }
    }

    /// The IdP's redirect back: checks the `state` against this browser's login cookie,
    /// exchanges the code, verifies the ID token, and sets the session.
    pub async fn callback(&self, req: &RequestView<'_>, verifier: &TokenVerifier) -> Answer {
        if req.query.len() > MAX_CALLBACK_QUERY {
            return failed(
                400,
                "The sign-in answer is too long.",
                vec![],
                "callback_too_long",
            );
        }
        let state = query_param(req.query, "state");
        let jar = CookieJar::parse(req.header("cookie").unwrap_or(""));
        // The login cookie is spent whatever happens next.
        let (login_cookie, spent) = match state
            .as_deref()
            .and_then(|s| PendingLogin::cookie_name(&self.settings.cookie_name, s))
        {
            Some(name) => (jar.get(&name), vec![cookies::delete_cookie(&name)]),
            None => (Lookup::Absent, vec![]),
        };
        if let Some(error) = query_param(req.query, "error") {
            let description = query_param(req.query, "error_description")
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            let status = if error == "access_denied" { 403 } else { 400 };
            return failed(
                status,
                &format!("The identity provider did not sign you in: {error}{description}."),
                spent,
                "callback_idp_error",
            );
        }
        let (Some(state), Some(code)) = (state, query_param(req.query, "code")) else {
            return failed(
                400,
                "The sign-in answer lacks its state or code.",
                spent,
                "callback_incomplete",
            );
        };
        let Lookup::One(sealed) = login_cookie else {
            return failed(
                400,
                "This sign-in was not started in this browser, or took longer than ten minutes.",
                spent,
                "callback_no_login",
            );
        };
        let login: PendingLogin = match self
            .settings
            .keys
            .open(LOGIN_PURPOSE, sealed)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
        {
            Some(login) => login,
            None => {
                return failed(
                    400,
                    "This sign-in's cookie is not valid.",
                    spent,
                    "callback_bad_login",
                )
            }
        };
        if !login.matches_state(&state) {
            return failed(
                400,
                "The sign-in answer does not belong to this browser's sign-in.",
                spent,
                "callback_state_mismatch",
            );
        }
        if login.expired(now()) {
            return failed(
                400,
                "This sign-in took longer than ten minutes.",
                spent,
                "callback_expired",
            );
        }
        // Too many exchanges under way: the login cookie stays, so a reload finishes
        // this sign-in once the IdP has caught up.
        let Ok(_permit) = self.exchanges.try_acquire() else {
            return Answer::page(
                503,
                "Sign-in is busy",
                "Too many sign-ins are finishing at once; reload this page to try again.",
                Vec::new(),
                "callback_busy",
            );
        };
        // Remembered before the exchange, so two copies of one callback cannot both
        // run it.
        if self.answered_states.contains_key(&state) {
            return failed(
                400,
                "This sign-in answer was already used.",
                spent,
                "callback_replayed",
            );
        }
        self.answered_states.insert(state, ());
        let Some(provider) = self.providers.get(&login.issuer) else {
            return failed(
                400,
                "This sign-in's issuer is no longer configured.",
                spent,
                "callback_bad_login",
            );
        };
        let Some(redirect_uri) = self.callback_uri(req) else {
            return bad_host();
        };
        let tokens = match provider
            .exchange_code(&code, &login.verifier, &redirect_uri)
            .await
        {
            Ok(tokens) => tokens,
            Err(OidcError::Refused { error, description }) => {
                let description = description.map(|d| format!(" ({d})")).unwrap_or_default();
                return failed(
                    400,
                    &format!("The identity provider refused the sign-in: {error}{description}."),
                    spent,
                    "callback_code_refused",
                );
            }
            Err(e) => {
                let mut answer = idp_unavailable(&e);
                answer.set_cookies = spent;
                return answer;
            }
        };
        let Some(id_token) = tokens.id_token else {
            let mut answer = idp_unavailable(&OidcError::NoIdToken);
            answer.set_cookies = spent;
            return answer;
        };
        let client_id = &provider.client().client_id;
        let verified = match verifier
            .verify_id_token(&id_token, &login.issuer, client_id, Some(&login.nonce))
            .await
        {
            Ok(v) => v,
            Err(AuthnError::KeysUnavailable | AuthnError::KeyFetchPending) => return failed(
                503,
                "The identity provider's signing keys are not available yet; try again shortly.",
                spent,
                "callback_keys_unavailable",
            ),
            Err(e) => {
                return failed(
                    400,
                    &format!("The identity provider's ID token is not accepted: {e}."),
                    spent,
                    "callback_id_token_refused",
                )
            }
        };
        let at = now();
        let session = Session {
            iss: login.issuer.clone(),
            claims: verified.claims,
            exp: verified.exp,
            started: at,
            seen: at,
            refresh_token: tokens.refresh_token,
            id_token: Some(id_token),
        };
        let mut set_cookies = spent;
        match self.session_cookies(&session, at, 0) {
            Some(cookies) => set_cookies.extend(cookies),
            None => return internal("the session does not fit into cookies"),
        }
        Answer::redirect(login.return_to, set_cookies, "signed_in")
    }

    /// Ends the session, when the request started on this site: deletes its cookies and
    /// sends the browser to the IdP's
    /// `end_session_endpoint` (with `id_token_hint` and `post_logout_redirect_uri`), or
    /// straight to `after_sign_out` when the IdP has none.
    pub async fn sign_out(&self, req: &RequestView<'_>) -> Answer {
        // Another site must not sign a user out by linking here (logout CSRF). A browser
        // says where a request started; without fetch metadata there is nothing to check.
        if let Some(site) = req.header("sec-fetch-site") {
            if !matches!(site.trim(), "same-origin" | "none") {
                return Answer::page(
                    403,
                    "Sign-out refused",
                    "Signing out must start on this site: use its own sign-out link.",
                    Vec::new(),
                    "sign_out_cross_site",
                );
            }
        }
        let hint_name = &self.settings.hint_cookie_name;
        let mut delete = cookies::delete_chunked(&self.settings.cookie_name);
        delete.push(cookies::set_cookie_at(
            hint_name,
            "",
            &self.settings.sign_out_path,
            CookieAttributes { max_age: 0 },
        ));
        let back = match self.absolute(req, &self.settings.after_sign_out) {
            Some(url) => url,
            None => return bad_host(),
        };
        let jar = CookieJar::parse(req.header("cookie").unwrap_or(""));
        let session = self.open_session(&jar).ok().flatten().map(|(mut s, _)| {
            if let Lookup::One(sealed) = jar.get(hint_name) {
                s.id_token = self
                    .settings
                    .keys
                    .open(HINT_PURPOSE, sealed)
                    .ok()
                    .and_then(|t| String::from_utf8(t).ok());
            }
            s
        });
        let Some((session, provider)) =
            session.and_then(|s| self.providers.get(&s.iss).cloned().map(|p| (s, p)))
        else {
            return Answer::redirect(self.settings.after_sign_out.clone(), delete, "signed_out");
        };
        let end_session = match provider.endpoints().await {
            Ok(e) => e.end_session.clone(),
            Err(_) => None,
        };
        let Some(mut url) = end_session else {
            return Answer::redirect(self.settings.after_sign_out.clone(), delete, "signed_out");
        };
        {
            let mut query = url.query_pairs_mut();
            if let Some(hint) = &session.id_token {
                query.append_pair("id_token_hint", hint);
            }
            query.append_pair("client_id", &provider.client().client_id);
            query.append_pair("post_logout_redirect_uri", &back);
        }
        Answer::redirect(url.to_string(), delete, "signed_out")
    }

    /// The session the request carries, for a route whose browsers sign in with
    /// `issuer`.
    pub async fn session(
        &self,
        req: &RequestView<'_>,
        issuer: &str,
        verifier: &TokenVerifier,
    ) -> SessionCheck {
        let Some(header) = req.header("cookie") else {
            return SessionCheck::Absent;
        };
        let jar = CookieJar::parse(header);
        let reject = |error| SessionCheck::Rejected {
            error,
            set_cookies: cookies::delete_chunked(&self.settings.cookie_name),
        };
        let (sealed, chunks) = match cookies::read_chunked(&jar, &self.settings.cookie_name) {
            Ok(Some(found)) => found,
            Ok(None) => return SessionCheck::Absent,
            Err(_) => return reject(AuthnError::SessionInvalid),
        };
        let at = now();
        let key = self
            .opened
            .as_ref()
            .map(|_| crate::authn::token_key(&sealed));
        if let (Some(cache), Some(key)) = (&self.opened, &key) {
            if let Some(opened) = cache.get(key) {
                let standing = self.settings.times.standing_of(&opened.clock, at);
                if opened.iss == issuer && standing == (Standing::Valid { touch: false }) {
                    return SessionCheck::Valid {
                        identity: opened.identity.clone(),
                        set_cookies: Vec::new(),
                    };
                }
            }
        }
        let session = match self.open_sealed(&sealed) {
            Ok(session) => session,
            Err(()) => return reject(AuthnError::SessionInvalid),
        };
        if session.iss != issuer {
            return reject(AuthnError::UnknownIssuer);
        }
        let times = self.settings.times;
        let (session, set_cookies) = match times.standing(&session, at) {
            Standing::Ended(_) => return reject(AuthnError::SessionEnded),
            Standing::Valid { touch: false } => (session, Vec::new()),
            Standing::Valid { touch: true } => {
                let touched = Session {
                    seen: at,
                    ..session
                };
                let cookies = self
                    .session_cookies(&touched, at, chunks)
                    .unwrap_or_default();
                (touched, cookies)
            }
            standing @ (Standing::RefreshSoon | Standing::RefreshNeeded) => {
                match self.refreshed(&session, verifier).await {
                    Ok(fresh) => {
                        let cookies = self.session_cookies(&fresh, at, chunks).unwrap_or_default();
                        (fresh, cookies)
                    }
                    // Still good for a while: keep it (another replica may have won a
                    // race with a rotating refresh token, and set the browser's new
                    // cookie already).
                    Err(_) if standing == Standing::RefreshSoon => (session, Vec::new()),
                    Err(_) => return reject(AuthnError::SessionEnded),
                }
            }
        };
        match verifier.session_identity(&session.iss, &session.claims) {
            Ok(identity) => {
                let identity = Arc::new(identity);
                // Only an unchanged cookie is worth keeping: a refreshed or touched one
                // is replaced in the browser.
                if let (Some(cache), Some(key), true) = (&self.opened, key, set_cookies.is_empty())
                {
                    let opened = Opened {
                        iss: session.iss.clone(),
                        clock: session.clock(),
                        identity: identity.clone(),
                    };
                    cache.insert(key, Arc::new(opened));
                }
                SessionCheck::Valid {
                    identity,
                    set_cookies,
                }
            }
            Err(e) => reject(e),
        }
    }

    /// The session in the jar: `Err` when a cookie is there but does not open.
    fn open_session(&self, jar: &CookieJar<'_>) -> Result<Option<(Session, usize)>, ()> {
        let Some((sealed, chunks)) =
            cookies::read_chunked(jar, &self.settings.cookie_name).map_err(|_| ())?
        else {
            return Ok(None);
        };
        Ok(Some((self.open_sealed(&sealed)?, chunks)))
    }

    /// Opens a sealed session value.
    fn open_sealed(&self, sealed: &str) -> Result<Session, ()> {
        let json = self
            .settings
            .keys
            .open(SESSION_PURPOSE, sealed)
            .map_err(|_| ())?;
        serde_json::from_slice(&json).map_err(|_| ())
    }

    /// The refreshed session: one refresh per refresh token, shared by every request
    /// that asks within a minute.
    async fn refreshed(
        &self,
        session: &Session,
        verifier: &TokenVerifier,
    ) -> Result<Session, OidcError> {
        let Some(refresh_token) = session.refresh_token.clone() else {
            return Err(OidcError::NoIdToken);
        };
        let Some(provider) = self.providers.get(&session.iss).cloned() else {
            return Err(OidcError::Discovery("issuer no longer configured".into()));
        };
        let key = crate::authn::token_key(&refresh_token);
        let old = session.clone();
        let outcome = self
            .refreshes
            .try_get_with(key, async move {
                let tokens: Tokens = provider.refresh(&refresh_token).await?;
                let id_token = tokens.id_token.ok_or(OidcError::NoIdToken)?;
                let client_id = provider.client().client_id.clone();
                let verified = verifier
                    .verify_id_token(&id_token, &old.iss, &client_id, None)
                    .await
                    .map_err(|e| OidcError::Refused {
                        error: "invalid_id_token".into(),
                        description: Some(e.to_string()),
                    })?;
                // The same person, or no refresh (OIDC Core 12.2); a session without a
                // `sub` to compare is not refreshed either.
                let same = matches!(
                    (verified.claims.get("sub"), old.claims.get("sub")),
                    (Some(new), Some(was)) if new == was
                );
                if !same {
                    return Err(OidcError::Refused {
                        error: "invalid_id_token".into(),
                        description: Some("the refreshed ID token names another subject".into()),
                    });
                }
                Ok(Refreshed {
                    session: Session {
                        claims: verified.claims,
                        exp: verified.exp,
                        seen: now(),
                        refresh_token: tokens.refresh_token,
                        id_token: Some(id_token),
                        ..old
                    },
                })
            })
            .await
            .map_err(|e: Arc<OidcError>| (*e).clone());
        outcome.map(|r| Session {
            // The requests that share a refresh each keep their own start.
            started: session.started,
            ..r.session
        })
    }

    /// `Set-Cookie` values storing `session` (deleting chunks a longer one left), and its
    /// ID token, if it has one, in the sign-out hint cookie.
    fn session_cookies(
        &self,
        session: &Session,
        at: u64,
        previous_chunks: usize,
    ) -> Option<Vec<String>> {
        let json = serde_json::to_vec(session).ok()?;
        let sealed = self.settings.keys.seal(SESSION_PURPOSE, &json).ok()?;
        let attrs = CookieAttributes {
            max_age: self.settings.times.max_age(session, at),
        };
        let mut out =
            cookies::set_chunked(&self.settings.cookie_name, &sealed, attrs, previous_chunks)?;
        if let Some(id_token) = &session.id_token {
            let hint = self
                .settings
                .keys
                .seal(HINT_PURPOSE, id_token.as_bytes())
                .ok()?;
            out.push(cookies::set_cookie_at(
                &self.settings.hint_cookie_name,
                &hint,
                &self.settings.sign_out_path,
                attrs,
            ));
        }
        Some(out)
    }

    /// `https://HOST{callback_path}` for the request's host.
    fn callback_uri(&self, req: &RequestView<'_>) -> Option<String> {
        self.absolute(req, &self.settings.callback_path)
    }

    /// `https://HOST{path}`, if the request's host is a plain host name (and port).
    fn absolute(&self, req: &RequestView<'_>, path: &str) -> Option<String> {
        let host = req.host;
        let plain = !host.is_empty()
            && host.len() <= 255
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        plain.then(|| format!("https://{}{path}", host.to_ascii_lowercase()))
    }
}

/// The first value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn failed(status: u16, message: &str, set_cookies: Vec<String>, reason: &'static str) -> Answer {
    Answer::page(status, "Sign-in failed", message, set_cookies, reason)
}

fn bad_host() -> Answer {
    Answer::page(
        400,
        "Sign-in failed",
        "The request's host name is not one sign-in can return to.",
        vec![],
        "sign_in_bad_host",
    )
}

fn idp_unavailable(e: &OidcError) -> Answer {
    Answer::page(
        503,
        "Sign-in is unavailable",
        &format!("The identity provider cannot be used right now ({e}); try again shortly."),
        vec![],
        "idp_unavailable",
    )
}

fn internal(what: &str) -> Answer {
    Answer::page(500, "Sign-in failed", what, vec![], "sign_in_internal")
}
