//! A browser as mesh-authz sees it through Check calls: it keeps the cookies Check answers
//! set (as a browser applies `Set-Cookie`), sends them back with each request, and signs
//! in at the fake OpenID provider by submitting its HTML form. Envoy is left out: the
//! gRPC answers are read as Envoy acts on them (`responses`). The real browser and Envoy
//! run in `envoy_browser.rs`.

use super::oidc_provider::{submit_login, FakeOidcProvider};
use super::server::TestServer;
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use std::collections::BTreeMap;

/// Headers of a browser opening a page.
pub const NAVIGATE: &[(&str, &str)] = &[
    ("sec-fetch-mode", "navigate"),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
];
/// Headers of a page's script calling the REST API.
pub const XHR: &[(&str, &str)] = &[("sec-fetch-mode", "cors"), ("accept", "application/json")];

/// What a check came to, as the browser (or the upstream) sees it.
#[derive(Debug)]
pub enum Seen {
    /// Forwarded upstream with these header changes.
    Allowed {
        /// Headers set upstream, by name.
        set: BTreeMap<String, String>,
        /// Headers removed upstream.
        removed: Vec<String>,
        /// `Set-Cookie` lines on the response.
        set_cookies: Vec<String>,
    },
    /// Answered by Envoy with this status, without reaching the upstream.
    Answered {
        /// HTTP status.
        status: u16,
        /// `Location`, if any.
        location: Option<String>,
        /// `Set-Cookie` lines.
        set_cookies: Vec<String>,
        /// The body.
        body: String,
        /// Every response header, by name (last value).
        headers: BTreeMap<String, String>,
    },
}

impl Seen {
    /// The HTTP status the browser gets (200 for an allowed request).
    pub fn status(&self) -> u16 {
        match self {
            Seen::Allowed { .. } => 200,
            Seen::Answered { status, .. } => *status,
        }
    }

    /// The `Location` of a redirect; panics otherwise.
    pub fn location(&self) -> &str {
        match self {
            Seen::Answered {
                location: Some(l), ..
            } => l,
            other => panic!("expected a redirect, got {other:?}"),
        }
    }

    /// The upstream headers of an allowed request; panics otherwise.
    pub fn upstream(&self) -> &BTreeMap<String, String> {
        match self {
            Seen::Allowed { set, .. } => set,
            other => panic!("expected an allowed request, got {other:?}"),
        }
    }

    /// `Set-Cookie` lines.
    pub fn set_cookies(&self) -> &[String] {
        match self {
            Seen::Allowed { set_cookies, .. } | Seen::Answered { set_cookies, .. } => set_cookies,
        }
    }
}

fn lines(options: &[HeaderValueOption], name: &str) -> Vec<String> {
    options
        .iter()
        .filter_map(|o| o.header.as_ref())
        .filter(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.clone())
        .collect()
}

/// The header options of a denied response Envoy 1.40 sends: those with `append: true`
/// it drops (measured in `envoy_browser.rs`).
#[allow(deprecated)]
fn sent_on_denial(options: &[HeaderValueOption]) -> Vec<HeaderValueOption> {
    options
        .iter()
        .filter(|o| o.append.is_none_or(|a| !a.value))
        .cloned()
        .collect()
}

/// Reads a CheckResponse as Envoy acts on it.
pub fn seen(response: &CheckResponse) -> Seen {
    let code = response.status.as_ref().map_or(-1, |s| s.code);
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) if code == 0 => Seen::Allowed {
            set: ok
                .headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            removed: ok.headers_to_remove.clone(),
            set_cookies: lines(&ok.response_headers_to_add, "set-cookie"),
        },
        Some(HttpResponse::DeniedResponse(d)) if code != 0 => Seen::Answered {
            status: d.status.as_ref().map_or(403, |s| s.code as u16),
            location: lines(&sent_on_denial(&d.headers), "location").pop(),
            set_cookies: lines(&sent_on_denial(&d.headers), "set-cookie"),
            body: d.body.clone(),
            headers: d
                .headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
                .collect(),
        },
        other => panic!("not an answer Envoy acts on: status {code}, {other:?}"),
    }
}

/// A browser's cookie jar for one host, as it applies `Set-Cookie` lines: by name, with
/// the path they are sent to.
#[derive(Debug, Default, Clone)]
pub struct CookieJar {
    cookies: BTreeMap<String, (String, String)>,
}

impl CookieJar {
    /// Applies `Set-Cookie` lines: stores, replaces, or deletes (`Max-Age=0`).
    pub fn apply(&mut self, set_cookies: &[String]) {
        for line in set_cookies {
            let mut parts = line.split(';');
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let attributes: Vec<&str> = parts.map(str::trim).collect();
            let path = attributes
                .iter()
                .find_map(|a| a.strip_prefix("Path="))
                .unwrap_or("/");
            if attributes
                .iter()
                .any(|a| a.eq_ignore_ascii_case("max-age=0"))
            {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().into(), (value.trim().into(), path.into()));
            }
        }
    }

    /// The `Cookie` header a browser sends to `path`, if any cookie goes there.
    pub fn header_for(&self, path: &str) -> Option<String> {
        let sent: Vec<String> = self
            .cookies
            .iter()
            .filter(|(_, (_, p))| path.starts_with(p.as_str()))
            .map(|(k, (v, _))| format!("{k}={v}"))
            .collect();
        (!sent.is_empty()).then(|| sent.join("; "))
    }

    /// The `Cookie` header a browser sends to `/`.
    pub fn header(&self) -> Option<String> {
        self.header_for("/")
    }

    /// The stored cookies' names.
    pub fn names(&self) -> Vec<String> {
        self.cookies.keys().cloned().collect()
    }

    /// A stored cookie's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(|(v, _)| v.as_str())
    }

    /// Stores a cookie for `/` as is (a test's forgery).
    pub fn set(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.into(), (value.into(), "/".into()));
    }
}

/// A browser on `host` talking to mesh-authz through Check calls.
pub struct CheckBrowser<'a> {
    /// The server asked.
    pub server: &'a TestServer,
    /// The page host.
    pub host: String,
    /// Its cookies for `host`.
    pub jar: CookieJar,
    /// Talks to the IdP (no redirects followed, as the test follows them).
    pub http: reqwest::Client,
}

impl<'a> CheckBrowser<'a> {
    /// A browser with no cookies.
    pub fn new(server: &'a TestServer, host: &str) -> Self {
        CheckBrowser {
            server,
            host: host.into(),
            jar: CookieJar::default(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Requests `path_and_query` with `headers` and the jar's cookies, applies the
    /// answer's cookies, and returns what came of it.
    pub async fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
        let cookie = self.jar.header_for(path);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(cookie) = &cookie {
            all.push(("cookie", cookie));
        }
        let seen = self.check_only(method, path, &all).await;
        self.jar.apply(seen.set_cookies());
        seen
    }

    /// One Check with exactly these headers; the jar is neither read nor changed.
    pub async fn check_only(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
        let request = super::server::check_request(method, &self.host, path, headers);
        let response = self
            .server
            .client
            .clone()
            .check(request)
            .await
            .expect("Check answers")
            .into_inner();
        seen(&response)
    }

    /// Opens a page.
    pub async fn open(&mut self, path: &str) -> Seen {
        self.request("GET", path, NAVIGATE).await
    }

    /// Follows a sign-in redirect to the IdP, signs in as `user` with `password` through
    /// its form, and returns the callback path (and query) the IdP redirects back to.
    pub async fn sign_in_at_idp(
        &self,
        idp: &FakeOidcProvider,
        authorize: &str,
        user: &str,
        password: &str,
    ) -> String {
        let page = self.http.get(authorize).send().await.unwrap();
        assert_eq!(page.status(), 200, "the IdP's login page");
        let html = page.text().await.unwrap();
        let answer = submit_login(&self.http, idp, &html, user, password, "sign-in").await;
        assert_eq!(answer.status(), 302, "the IdP redirects back");
        let location = answer.headers()["location"].to_str().unwrap().to_string();
        let url = url::Url::parse(&location).unwrap();
        assert_eq!(url.host_str(), Some(self.host.as_str()), "{location}");
        assert_eq!(url.scheme(), "https");
        url[url::Position::BeforePath..].to_string()
    }

    /// Opens `page`, is sent to sign in, signs in as `user`, and returns what the
    /// callback answered (a redirect back to `page` when all went well).
    pub async fn sign_in(&mut self, idp: &FakeOidcProvider, page: &str, user: &str) -> Seen {
        let to_idp = self.open(page).await;
        assert_eq!(to_idp.status(), 302, "{to_idp:?}");
        let callback = self
            .sign_in_at_idp(idp, to_idp.location(), user, &format!("{user}-password"))
            .await;
        self.open(&callback).await
    }
}
