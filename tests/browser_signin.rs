//! Browser sign-in through the real server's Check service: a browser (cookies kept as a
//! browser keeps them) is sent to the fake OpenID provider, signs in through its form, and
//! comes back with a session that any replica holding the keys accepts. Scripts and API
//! clients keep getting 401; nothing forged, replayed or tampered with is ever allowed.

mod support;

use base64::Engine;
use std::collections::HashMap;
use std::time::Duration;
use support::check_browser::{CheckBrowser, Seen, NAVIGATE, XHR};
use support::oidc_provider::{
    submit_login, Client, ClientAuth, FakeOidcProvider, OidcConfig, User,
};
use support::server::TestServer;

const HOST: &str = "gerrit.example.com";
const CALLBACK: &str = "https://gerrit.example.com/_mesh-authz/callback";
const COOKIE: &str = "__Host-mesh-authz";
const HINT: &str = "__Secure-mesh-authz-hint";

fn key(seed: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([seed; 32])
}

async fn idp() -> FakeOidcProvider {
    idp_with(|c| c).await
}

async fn idp_with(change: impl FnOnce(OidcConfig) -> OidcConfig) -> FakeOidcProvider {
    let config = OidcConfig::default()
        .client(
            Client::new("gerrit-web", "s3cret+/=", ClientAuth::ClientSecretBasic)
                .redirect_uri(CALLBACK)
                .post_logout_redirect_uri("https://gerrit.example.com/"),
        )
        .user(User::new("alice", "alice-password"))
        .user(User::new("bob", "bob-password"));
    FakeOidcProvider::start(change(config)).await
}

/// Gerrit behind browser sign-in: team-a's projects for team-a, the rest for anyone
/// signed in; `extra` is added to `browser_sessions`.
fn config(idp: &FakeOidcProvider, keys: &[&str], extra: &str) -> String {
    let key_files: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        r#"
server: {{grpc_listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, drain_delay: 0s}}
issuers:
  - issuer: {issuer}
    audiences: [gerrit-api]
    jwks: {{discovery: true}}
    user_claim: preferred_username
    browser_client:
      client_id: gerrit-web
      client_secret_file: client-secret
browser_sessions:
  key_files: [{key_files}]
{extra}
static_groups: {{alice: [team-a], bob: [team-b]}}
routes:
  - name: gerrit-team-a
    match: {{hosts: [{HOST}], path: {{segment_prefix: /a/projects/team-a}}}}
    browser_sign_in: true
    allow: {{groups_any_of: [team-a]}}
    inject: {{user: x-forwarded-user}}
  - name: gerrit
    match: {{hosts: [{HOST}]}}
    browser_sign_in: true
    allow: authenticated
    inject: {{user: x-forwarded-user}}
"#,
        issuer = idp.issuer(),
        key_files = key_files.join(", "),
    )
}

async fn server(idp: &FakeOidcProvider, keys: &[(&str, String)], extra: &str) -> TestServer {
    let names: Vec<&str> = keys.iter().map(|(n, _)| *n).collect();
    let mut files: Vec<(&str, &str)> = keys.iter().map(|(n, k)| (*n, k.as_str())).collect();
    files.push(("client-secret", "s3cret+/=\n"));
    TestServer::start(&config(idp, &names, extra), &files).await
}

async fn one_key_server(idp: &FakeOidcProvider) -> TestServer {
    server(idp, &[("key-1", key(1))], "").await
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn a_browser_opening_a_page_is_sent_to_the_idp_with_state_nonce_and_an_s256_challenge() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    let seen = browser.open("/q/status:open?x=1").await;
    assert_eq!(seen.status(), 302);
    let location = seen.location();
    assert!(
        location.starts_with(&format!("{}/authorize?", idp.issuer())),
        "{location}"
    );
    let q = query(location);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "gerrit-web");
    assert_eq!(q["redirect_uri"], CALLBACK);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    assert!(q["state"].len() >= 22 && q["nonce"].len() >= 22);
    assert_ne!(q["state"], q["nonce"]);
    // The sign-in is bound to this browser by a cookie of its own, out of scripts' reach.
    let [login] = seen.set_cookies() else {
        panic!("one login cookie: {:?}", seen.set_cookies())
    };
    assert!(login.starts_with(&format!("{COOKIE}-login-")), "{login}");
    for attribute in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
    ] {
        assert!(login.contains(attribute), "{attribute} in {login}");
    }
    assert!(
        !login.contains(&q["state"]),
        "the state is sealed, not shown"
    );
}

#[tokio::test]
async fn signing_in_at_the_idp_returns_to_the_page_with_a_session_the_upstream_never_sees() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    let back = browser
        .sign_in(&idp, "/c/team-a/+/42?tab=files", "alice")
        .await;
    assert_eq!(back.status(), 302, "{back:?}");
    assert_eq!(back.location(), "/c/team-a/+/42?tab=files");
    let session = back
        .set_cookies()
        .iter()
        .find(|c| c.starts_with(&format!("{COOKIE}=")))
        .expect("a session cookie");
    for attribute in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=43200",
    ] {
        assert!(session.contains(attribute), "{attribute} in {session}");
    }
    assert!(session.len() < 4096, "one cookie: {} bytes", session.len());
    assert_eq!(
        browser.jar.names(),
        [COOKIE, HINT],
        "the login cookie is spent; the ID token waits for sign-out in a cookie of its own"
    );
    assert!(browser
        .jar
        .header()
        .unwrap()
        .starts_with(&format!("{COOKIE}=")));
    assert!(
        !browser.jar.header().unwrap().contains(HINT),
        "sent to sign-out only"
    );

    // The page now loads as alice, and again, without the IdP.
    let logins = idp.stats().logins;
    for _ in 0..2 {
        browser.jar.set("theme", "dark");
        let page = browser.open("/c/team-a/+/42?tab=files").await;
        assert_eq!(
            page.upstream().get("x-forwarded-user").map(String::as_str),
            Some("alice")
        );
        // Gerrit gets the page's other cookies, never the session.
        assert_eq!(
            page.upstream().get("cookie").map(String::as_str),
            Some("theme=dark")
        );
    }
    assert_eq!(idp.stats().logins, logins);
    // Groups and rules apply to a session as to a token.
    assert_eq!(
        browser.open("/a/projects/team-a/branches").await.status(),
        200
    );
    let mut bob = CheckBrowser::new(&s, HOST);
    bob.sign_in(&idp, "/", "bob").await;
    assert_eq!(bob.open("/a/projects/team-a/branches").await.status(), 403);
}

#[tokio::test]
async fn with_only_the_session_cookie_the_upstream_gets_no_cookie_header() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    browser.sign_in(&idp, "/", "alice").await;
    match browser.open("/").await {
        Seen::Allowed { set, removed, .. } => {
            assert!(!set.contains_key("cookie"));
            assert!(removed.iter().any(|h| h == "cookie"), "{removed:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn scripts_api_clients_and_git_get_401_not_a_redirect() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let browser = CheckBrowser::new(&s, HOST);
    for (method, headers) in [
        ("GET", XHR),
        (
            "GET",
            &[("accept", "*/*"), ("user-agent", "git/2.39.5")][..],
        ),
        ("POST", NAVIGATE),
        ("GET", &[][..]),
    ] {
        let seen = browser
            .check_only(method, "/changes/?q=status:open", headers)
            .await;
        assert_eq!(seen.status(), 401, "{method} {headers:?}: {seen:?}");
    }
    assert_eq!(idp.stats().authorization_page_views, 0);
}

#[tokio::test]
async fn a_tampered_truncated_foreign_or_repeated_session_cookie_is_never_an_allow() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    browser.sign_in(&idp, "/", "alice").await;
    let good = browser.jar.get(COOKIE).unwrap().to_string();
    assert_eq!(browser.open("/").await.status(), 200);

    // Sealed by another deployment's key.
    let other = server(&idp, &[("key-9", key(9))], "").await;
    let mut elsewhere = CheckBrowser::new(&other, HOST);
    elsewhere.sign_in(&idp, "/", "alice").await;
    let foreign = elsewhere.jar.get(COOKIE).unwrap().to_string();

    let mut flipped = good.clone().into_bytes();
    let middle = flipped.len() / 2;
    flipped[middle] = if flipped[middle] == b'A' { b'B' } else { b'A' };
    let forged = [
        String::from_utf8(flipped).unwrap(),
        good[..good.len() - 1].to_string(),
        good[..good.len() / 2].to_string(),
        foreign,
        String::new(),
        "x".repeat(3000),
        "2.".to_string() + &good,
    ];
    for value in &forged {
        let cookie = format!("{COOKIE}={value}");
        for headers in [NAVIGATE, XHR] {
            let mut all = headers.to_vec();
            all.push(("cookie", &cookie));
            let seen = browser.check_only("GET", "/", &all).await;
            assert!(
                matches!(seen.status(), 302 | 401),
                "{value:?} with {headers:?}: {seen:?}"
            );
        }
    }
    // The good cookie twice (a cookie-name collision): neither is trusted.
    let twice = format!("{COOKIE}={good}; {COOKIE}={good}");
    let seen = browser
        .check_only("GET", "/", &[("cookie", &twice), XHR[0], XHR[1]])
        .await;
    assert_eq!(seen.status(), 401);
    // A huge header of many cookies costs bounded work and is no session.
    let many: String =
        (0..2000).map(|i| format!("c{i}=v; ")).collect::<String>() + &format!("{COOKIE}={good}");
    let seen = browser
        .check_only("GET", "/", &[("cookie", &many), XHR[0], XHR[1]])
        .await;
    assert_eq!(seen.status(), 401);
}

#[tokio::test]
async fn a_rejected_session_sends_a_navigation_to_sign_in_and_deletes_the_cookie() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    browser.jar.set(COOKIE, "not-a-session");
    let seen = browser.open("/").await;
    assert_eq!(seen.status(), 302);
    assert!(seen
        .set_cookies()
        .iter()
        .any(|c| c.starts_with(&format!("{COOKIE}=;")) && c.contains("Max-Age=0")));
    assert!(browser.jar.get(COOKIE).is_none());
}

#[tokio::test]
async fn a_callback_with_a_wrong_state_no_login_cookie_or_replayed_is_an_html_error_and_no_session()
{
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    let to_idp = browser.open("/").await;
    let callback = browser
        .sign_in_at_idp(&idp, to_idp.location(), "alice", "alice-password")
        .await;
    let q = query(&format!("https://{HOST}{callback}"));

    // The callback URL opened in another browser (login CSRF): no login cookie there.
    let mut stranger = CheckBrowser::new(&s, HOST);
    let seen = stranger.open(&callback).await;
    assert_error_page(&seen, 400, "not started in this browser");
    assert!(stranger.jar.get(COOKIE).is_none());

    let login_cookie: Vec<(String, String)> = browser
        .jar
        .names()
        .into_iter()
        .filter(|n| n.contains("-login-"))
        .map(|n| (n.clone(), browser.jar.get(&n).unwrap().to_string()))
        .collect();
    assert_eq!(login_cookie.len(), 1);

    // This browser with another state: refused, and the sign-in is spent.
    let wrong = callback.replace(&q["state"], &format!("{}x", q["state"]));
    let seen = browser.open(&wrong).await;
    assert_error_page(&seen, 400, "does not belong");
    assert!(browser.jar.get(COOKIE).is_none());
    assert!(browser.jar.names().is_empty());

    // The real callback (its login cookie back), once; a replay fails even with the
    // login cookie put back again.
    for (name, value) in &login_cookie {
        browser.jar.set(name, value);
    }
    assert_eq!(browser.open(&callback).await.status(), 302);
    assert!(browser.jar.get(COOKIE).is_some());
    let mut replayer = CheckBrowser::new(&s, HOST);
    for (name, value) in &login_cookie {
        replayer.jar.set(name, value);
    }
    let seen = replayer.open(&callback).await;
    assert_error_page(&seen, 400, "already used");
    assert!(replayer.jar.get(COOKIE).is_none());
}

#[tokio::test]
async fn an_idp_that_refuses_the_sign_in_gets_an_html_error_page_and_no_session() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    let to_idp = browser.open("/").await;
    idp.deny_next_authorization();
    let page = browser.http.get(to_idp.location()).send().await.unwrap();
    let html = page.text().await.unwrap();
    let answer = submit_login(
        &browser.http,
        &idp,
        &html,
        "alice",
        "alice-password",
        "sign-in",
    )
    .await;
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("error=access_denied"), "{location}");
    let path = &location[CALLBACK.len() - "/_mesh-authz/callback".len()..];
    let seen = browser.open(path).await;
    assert_error_page(&seen, 403, "access_denied");
    assert!(browser.jar.get(COOKIE).is_none());
    assert!(
        browser.jar.names().is_empty(),
        "the login cookie is spent too"
    );
}

#[tokio::test]
async fn the_sign_in_path_returns_only_to_a_page_on_the_same_host() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    // As sent in the query: plain, encoded, and with what browsers drop or rewrite.
    for evil in [
        "https://evil.example",
        "https%3A%2F%2Fevil.example%2F",
        "//evil.example",
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "%2F%09%2Fevil.example",
        "%2F%0A%2Fevil.example",
        "evil.example",
    ] {
        let seen = browser
            .open(&format!("/_mesh-authz/sign-in?rd={evil}"))
            .await;
        assert_error_page(&seen, 400, "refused");
    }
    let seen = browser
        .open("/_mesh-authz/sign-in?rd=%2Fdashboard%2Fself")
        .await;
    assert_eq!(seen.status(), 302);
    let callback = browser
        .sign_in_at_idp(&idp, seen.location(), "alice", "alice-password")
        .await;
    assert_eq!(browser.open(&callback).await.location(), "/dashboard/self");
}

#[tokio::test]
async fn a_session_near_expiry_is_refreshed_once_for_many_requests_and_the_new_cookie_is_set() {
    // ID tokens live 30 s and refresh starts 60 s before expiry: the first request after
    // sign-in refreshes.
    let idp = idp_with(|mut c| {
        c.id_token_lifetime = Duration::from_secs(30);
        c
    })
    .await;
    let s = server(&idp, &[("key-1", key(1))], "  refresh_before: 60s").await;
    let mut browser = CheckBrowser::new(&s, HOST);
    browser.sign_in(&idp, "/", "alice").await;
    let old = browser.jar.header().unwrap();
    assert_eq!(idp.stats().refresh_token_requests, 0);

    // Ten requests of one page at once share one refresh.
    let headers = [("cookie", old.as_str()), XHR[0], XHR[1]];
    let checks = (0..10).map(|_| browser.check_only("GET", "/", &headers));
    let seen = futures::future::join_all(checks).await;
    assert!(seen.iter().all(|s| s.status() == 200), "{seen:?}");
    assert_eq!(idp.stats().refresh_token_requests, 1, "one refresh");
    let fresh: Vec<&String> = seen.iter().flat_map(|s| s.set_cookies()).collect();
    assert!(!fresh.is_empty(), "the refreshed session is set");
    browser
        .jar
        .apply(&fresh.into_iter().cloned().collect::<Vec<_>>());
    assert_ne!(browser.jar.header().unwrap(), old);
    assert_eq!(
        browser.open("/").await.upstream()["x-forwarded-user"],
        "alice"
    );
    // The old cookie, still in flight after the rotation, is not logged out.
    let late = browser
        .check_only("GET", "/", &[("cookie", old.as_str()), XHR[0], XHR[1]])
        .await;
    assert_eq!(late.status(), 200);
    assert_eq!(
        idp.stats().refresh_token_reuses,
        0,
        "the rotated token is not spent twice"
    );
}

#[tokio::test]
async fn a_session_that_cannot_be_refreshed_signs_a_navigation_in_again_and_gets_an_api_call_401() {
    // ID tokens expire at once (inside the issuer's 30 s leeway, so the sign-in works).
    let idp = idp_with(|mut c| {
        c.id_token_lifetime = Duration::from_secs(0);
        c
    })
    .await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    browser.sign_in(&idp, "/", "alice").await;
    idp.revoke_refresh_tokens();
    let cookie = browser.jar.header().unwrap();
    let api = browser
        .check_only("GET", "/changes/", &[("cookie", &cookie), XHR[0], XHR[1]])
        .await;
    assert_eq!(api.status(), 401);
    let page = browser
        .check_only("GET", "/", &[("cookie", &cookie), NAVIGATE[0], NAVIGATE[1]])
        .await;
    assert_eq!(page.status(), 302);
    assert!(page.location().starts_with(&idp.issuer()));
}

#[tokio::test]
async fn signing_out_deletes_the_session_and_signs_out_at_the_idp() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    browser.sign_in(&idp, "/", "alice").await;
    let seen = browser.open("/_mesh-authz/sign-out").await;
    assert_eq!(seen.status(), 302);
    let location = seen.location().to_string();
    assert!(
        location.starts_with(&format!("{}/logout?", idp.issuer())),
        "{location}"
    );
    let q = query(&location);
    assert_eq!(q["post_logout_redirect_uri"], "https://gerrit.example.com/");
    assert!(q["id_token_hint"].split('.').count() == 3);
    assert!(browser.jar.get(COOKIE).is_none());
    assert!(browser.jar.get(HINT).is_none());
    let at_idp = browser.http.get(&location).send().await.unwrap();
    assert_eq!(at_idp.status(), 302);
    assert_eq!(idp.stats().logouts, 1);
    // The next visit signs in again.
    assert!(browser
        .open("/")
        .await
        .location()
        .starts_with(&idp.issuer()));
}

#[tokio::test]
async fn any_replica_with_the_keys_serves_a_session_and_a_rotated_key_signs_nobody_out() {
    let idp = idp().await;
    let a = server(&idp, &[("key-1", key(1))], "").await;
    let mut browser = CheckBrowser::new(&a, HOST);
    browser.sign_in(&idp, "/", "alice").await;
    let cookie = browser.jar.header().unwrap();
    let api = |s| {
        let cookie = cookie.clone();
        async move {
            CheckBrowser::new(s, HOST)
                .check_only("GET", "/", &[("cookie", &cookie), XHR[0], XHR[1]])
                .await
                .status()
        }
    };
    // Another replica; then the rotation: a new key first, the old one kept.
    let b = server(&idp, &[("key-1", key(1))], "").await;
    assert_eq!(api(&b).await, 200);
    let rotated = server(&idp, &[("key-2", key(2)), ("key-1", key(1))], "").await;
    assert_eq!(api(&rotated).await, 200);
    // Once the old key is dropped, its sessions sign in again.
    let retired = server(&idp, &[("key-2", key(2))], "").await;
    assert_eq!(api(&retired).await, 401);
}

fn assert_error_page(seen: &Seen, status: u16, says: &str) {
    match seen {
        Seen::Answered {
            status: got,
            body,
            headers,
            location,
            ..
        } => {
            assert_eq!(*got, status, "{body}");
            assert!(location.is_none());
            assert_eq!(
                headers.get("content-type").map(String::as_str),
                Some("text/html; charset=utf-8")
            );
            assert_eq!(
                headers.get("cache-control").map(String::as_str),
                Some("no-store")
            );
            assert!(body.contains(says), "{says:?} in {body}");
        }
        other => panic!("expected an error page, got {other:?}"),
    }
}

#[tokio::test]
async fn the_audit_log_says_who_came_by_session_and_what_sign_in_answered() {
    let idp = idp().await;
    let yaml = config(&idp, &["key-1"], "") + "audit: {output: audit.log}\n";
    let s = TestServer::start(&yaml, &[("key-1", &key(1)), ("client-secret", "s3cret+/=")]).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    browser.sign_in(&idp, "/", "alice").await;
    browser.open("/c/42").await;
    let path = s.file("audit.log");
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    support::clock::until("three audit lines", || async {
        read().lines().count() >= 3
    })
    .await;
    let lines = read();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<[&str; 3]> = records
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or("-");
            [text("decision"), text("reason"), text("credential")]
        })
        .collect();
    assert_eq!(
        summary,
        [
            ["answer", "sign_in", "-"],
            ["answer", "signed_in", "-"],
            ["allow", "allowed", "session"],
        ]
    );
    assert_eq!(records[2]["user"], "alice");
    // Never a code, a state or a cookie.
    assert!(!lines.contains("code=") && !lines.contains("state=") && !lines.contains(COOKIE));
}

#[tokio::test]
async fn a_sign_out_another_site_started_is_refused_and_the_session_stays() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    let mut browser = CheckBrowser::new(&s, HOST);
    browser.sign_in(&idp, "/", "alice").await;
    let cookie = browser.jar.header_for("/_mesh-authz/sign-out").unwrap();
    for site in ["cross-site", "same-site"] {
        let seen = browser
            .check_only(
                "GET",
                "/_mesh-authz/sign-out",
                &[
                    ("cookie", &cookie),
                    ("sec-fetch-site", site),
                    ("sec-fetch-mode", "navigate"),
                ],
            )
            .await;
        assert_error_page(&seen, 403, "this site");
        assert!(seen.set_cookies().is_empty(), "{site}: nothing deleted");
    }
    assert_eq!(browser.open("/").await.status(), 200, "still signed in");
    // From the site's own link (or typed in), signing out works.
    for site in ["same-origin", "none"] {
        let seen = browser
            .check_only(
                "GET",
                "/_mesh-authz/sign-out",
                &[("cookie", &cookie), ("sec-fetch-site", site)],
            )
            .await;
        assert_eq!(seen.status(), 302, "{site}");
    }
}

#[tokio::test]
async fn with_the_idp_down_a_page_load_gets_a_clear_503_page_and_nobody_is_let_in() {
    let idp = idp().await;
    let s = one_key_server(&idp).await;
    // The server has the IdP's keys (loaded at start); now the IdP goes away.
    drop(idp);
    let mut browser = CheckBrowser::new(&s, HOST);
    for _ in 0..2 {
        let seen = browser.open("/c/42").await;
        assert_error_page(&seen, 503, "try again shortly");
        assert!(
            browser.jar.names().is_empty(),
            "no login cookie without a sign-in"
        );
    }
    // Scripts and API clients still get their 401.
    let api = browser.check_only("GET", "/changes/", XHR).await;
    assert_eq!(api.status(), 401);
}

#[tokio::test]
async fn a_replica_that_loses_a_refresh_race_keeps_the_session_while_it_is_valid() {
    // ID tokens live 30 s and refresh starts 60 s before expiry: every check refreshes.
    let idp = idp_with(|mut c| {
        c.id_token_lifetime = Duration::from_secs(30);
        c
    })
    .await;
    let a = server(&idp, &[("key-1", key(1))], "  refresh_before: 60s").await;
    let b = server(&idp, &[("key-1", key(1))], "  refresh_before: 60s").await;
    let mut browser = CheckBrowser::new(&a, HOST);
    browser.sign_in(&idp, "/", "alice").await;
    let old = browser.jar.header().unwrap();
    let headers = [("cookie", old.as_str()), XHR[0], XHR[1]];
    // Replica a refreshes first and rotates the refresh token.
    let on_a = browser.check_only("GET", "/", &headers).await;
    assert_eq!(on_a.status(), 200);
    assert!(
        !on_a.set_cookies().is_empty(),
        "a set the refreshed session"
    );
    // Replica b, asked with the old cookie a moment later, finds the refresh token spent.
    let on_b = CheckBrowser::new(&b, HOST)
        .check_only("GET", "/", &headers)
        .await;
    assert_eq!(
        idp.stats().refresh_token_reuses,
        1,
        "b tried the spent token"
    );
    assert_eq!(on_b.status(), 200, "not signed out: {on_b:?}");
    assert!(
        !on_b.set_cookies().iter().any(|c| c.contains("Max-Age=0")),
        "nothing deleted: {on_b:?}"
    );
}

#[tokio::test]
async fn callbacks_beyond_the_bound_get_a_503_at_once_and_finish_on_reload() {
    let idp = idp().await;
    let s = server(&idp, &[("key-1", key(1))], "  max_concurrent_sign_ins: 1").await;
    let mut first = CheckBrowser::new(&s, HOST);
    let mut second = CheckBrowser::new(&s, HOST);
    let mut callbacks = Vec::new();
    for browser in [&mut first, &mut second] {
        let to_idp = browser.open("/").await;
        let callback = browser
            .sign_in_at_idp(&idp, to_idp.location(), "alice", "alice-password")
            .await;
        callbacks.push(callback);
    }
    // A slow IdP: whichever exchange starts first is still under way when the other
    // callback comes.
    idp.set_token_delay(Duration::from_millis(500));
    let (a, b) = tokio::join!(first.open(&callbacks[0]), second.open(&callbacks[1]));
    let (done, busy, busy_browser, busy_callback) = match (a.status(), b.status()) {
        (302, 503) => (a, b, &mut second, &callbacks[1]),
        (503, 302) => (b, a, &mut first, &callbacks[0]),
        other => panic!("one sign-in finishes, one is told to retry: {other:?}"),
    };
    assert_eq!(done.status(), 302);
    assert_error_page(&busy, 503, "reload this page");
    assert!(
        busy.set_cookies().is_empty(),
        "the sign-in is kept for the reload"
    );
    // The reload finishes the other sign-in.
    idp.set_token_delay(Duration::ZERO);
    let reload = busy_browser.open(busy_callback).await;
    assert_eq!(reload.status(), 302, "{reload:?}");
    assert!(busy_browser.jar.get(COOKIE).is_some());
}
