//! Browser sign-in end to end, with real parts: headless Chromium opens a Gerrit-like page
//! through the real Envoy (TLS, HTTP/2) with ext_authz to the real mesh-authz, signs in at
//! the fake OpenID provider's HTML form like a person, and lands back on the page as
//! alice. Then: a reload without the IdP, silent refreshes past the ID token's expiry, a
//! tampered cookie, sign-out, an open redirect and a script's call.
//!
//! A screenshot of the signed-in page is saved to `target/test-artifacts/
//! browser-signin.png`.

mod support;

use base64::Engine;
use std::time::Duration;
use support::chromium::Chromium;
use support::envoy::{require_envoy, start_upstream, Envoy};
use support::oidc_provider::{Client, ClientAuth, FakeOidcProvider, OidcConfig, User};
use support::server::TestServer;

const HOST: &str = "gerrit.example.com";
const COOKIE: &str = "__Host-mesh-authz";

fn config(issuer: &str) -> String {
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
  key_files: [session-key]
static_groups: {{alice: [team-a]}}
routes:
  - name: gerrit
    match: {{hosts: [{HOST}]}}
    browser_sign_in: true
    allow: authenticated
    inject: {{user: x-forwarded-user}}
"#
    )
}

/// Polls the browser's URL until `done` holds (10 s at most).
async fn until_url(browser: &Chromium, what: &str, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..200 {
        if let Ok(url) = browser.client.current_url().await {
            if done(url.as_str()) {
                return url.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never reached {what}: {}", browser.page_text_or_url().await);
}

/// Waits for the IdP's login page.
async fn at_idp_login(browser: &Chromium, idp: &FakeOidcProvider) {
    let authorize = format!("{}/authorize", idp.issuer());
    until_url(browser, "the IdP's login page", |u| {
        u.starts_with(&authorize)
    })
    .await;
}

/// Waits for the IdP's login page and signs in there like a person.
async fn sign_in_at_idp(browser: &Chromium, idp: &FakeOidcProvider) {
    at_idp_login(browser, idp).await;
    browser.type_into("username", "alice").await;
    browser.type_into("password", "alice-password").await;
    browser.click("sign-in").await;
}

async fn session_cookie(browser: &Chromium) -> Option<String> {
    let cookies = browser.client.get_all_cookies().await.unwrap();
    cookies
        .iter()
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_a_real_browser_through_envoy_and_stays_signed_in() {
    let Some(envoy_bin) = require_envoy() else {
        return;
    };
    // ID tokens that expire at once (within the issuer's leeway, so the sign-in itself
    // passes): every later request needs a refresh, done silently by the check.
    let idp = FakeOidcProvider::start(OidcConfig {
        id_token_lifetime: Duration::ZERO,
        ..OidcConfig::default()
            .client(Client::new(
                "gerrit-web",
                "s3cret",
                ClientAuth::ClientSecretBasic,
            ))
            .user(User::new("alice", "alice-password").name("Alice Liddell"))
    })
    .await;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let s = TestServer::start(
        &config(&idp.issuer()),
        &[("session-key", &key), ("client-secret", "s3cret")],
    )
    .await;
    let (upstream, seen) = start_upstream().await;
    let ca = support::pki::TestCa::new();
    let envoy = Envoy::start_for_browser(
        &envoy_bin,
        s.running().grpc_addr,
        upstream,
        &ca.server_cert(HOST),
    )
    .await;
    let origin = format!("https://{HOST}:{}", envoy.listener.port());
    idp.register_uris(
        "gerrit-web",
        &format!("{origin}/_mesh-authz/callback"),
        &format!("{origin}/"),
    );
    let Some(browser) = Chromium::start(&[HOST]).await else {
        return;
    };
    let page = format!("{origin}/c/team-a/+/42?tab=files");

    // Sign in like a person, and land back on the page as alice.
    browser.client.goto(&page).await.unwrap();
    sign_in_at_idp(&browser, &idp).await;
    until_url(&browser, "the page again", |u| u == page).await;
    assert_eq!(browser.text_of("user").await, "alice");
    let names: Vec<String> = browser
        .client
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(
        names,
        [COOKIE],
        "the session, and the spent login cookie deleted"
    );
    let cookie_upstream = browser.text_of("cookie").await;
    assert!(
        !cookie_upstream.contains(COOKIE),
        "Gerrit got {cookie_upstream}"
    );
    let shot = browser.screenshot("browser-signin").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    // A reload goes nowhere near the IdP's login, and refreshes the expired ID token.
    let stats = idp.stats();
    let before = session_cookie(&browser).await.expect("a session cookie");
    browser.client.refresh().await.unwrap();
    assert_eq!(browser.text_of("user").await, "alice");
    let after = idp.stats();
    assert_eq!(
        after.authorization_page_views,
        stats.authorization_page_views
    );
    assert!(after.refresh_token_requests > stats.refresh_token_requests);
    let refreshed = session_cookie(&browser).await.expect("still a session");
    assert_ne!(refreshed, before, "the refreshed session's cookie was set");
    browser.client.refresh().await.unwrap();
    assert_eq!(browser.text_of("user").await, "alice");
    assert_eq!(idp.stats().refresh_token_reuses, 0);

    // A tampered cookie is never an allow: back to the IdP, the upstream never asked.
    let mut bytes = refreshed.clone().into_bytes();
    let middle = bytes.len() / 2;
    bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
    browser
        .set_cookie(&origin, COOKIE, &String::from_utf8(bytes).unwrap())
        .await;
    assert_ne!(session_cookie(&browser).await.unwrap(), refreshed);
    let reached = seen.uris().len();
    browser.client.goto(&page).await.unwrap();
    at_idp_login(&browser, &idp).await;
    let after_tampering = seen.uris()[reached..].to_vec();
    assert!(
        !after_tampering.iter().any(|u| u.starts_with("/c/")),
        "the tampered request never reached Gerrit: {after_tampering:?}"
    );
    sign_in_at_idp(&browser, &idp).await;
    until_url(&browser, "the page after signing in again", |u| u == page).await;
    assert_eq!(browser.text_of("user").await, "alice");

    // Sign out: the IdP ends its session, and the next visit signs in again.
    browser
        .client
        .goto(&format!("{origin}/_mesh-authz/sign-out"))
        .await
        .unwrap();
    let authorize = format!("{}/authorize", idp.issuer());
    until_url(&browser, "the IdP after signing out", |u| {
        u.starts_with(&authorize)
    })
    .await;
    assert_eq!(idp.stats().logouts, 1);
    assert!(idp.last_id_token_hint().is_some());
    browser.client.goto(&page).await.unwrap();
    until_url(&browser, "the IdP on the next visit", |u| {
        u.starts_with(&authorize)
    })
    .await;

    // An open redirect through the sign-in path is refused.
    browser
        .client
        .goto(&format!(
            "{origin}/_mesh-authz/sign-in?rd=https://evil.example"
        ))
        .await
        .unwrap();
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.host_str(), Some(HOST));
    assert!(browser.text_of("message").await.contains("refused"));

    // A script's call gets 401, not a redirect to a login page it cannot show.
    let answer = browser
        .client
        .execute_async(
            "const done = arguments[0];
             fetch('/changes/?q=status:open', {headers: {Accept: 'application/json'}})
               .then(r => done([r.status, r.redirected, r.headers.get('www-authenticate')]))
               .catch(e => done(['error', String(e)]));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answer[0], 401, "{answer}");
    assert_eq!(answer[1], false, "{answer}");
    assert!(
        answer[2].as_str().unwrap_or("").starts_with("Bearer"),
        "{answer}"
    );
}
