//! The fake OpenID provider (`support::oidc_provider`) speaks the wire formats a relying
//! party depends on: driven here with reqwest as a relying party and a browser would,
//! redirects not followed, ID tokens verified against the JWKS it serves.

mod support;

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::header::{HeaderMap, CACHE_CONTROL, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{redirect, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use support::oidc_provider::{
    hidden_inputs, submit_login, Client, ClientAuth, FakeOidcProvider, OidcConfig, User,
};

const CALLBACK: &str = "https://rp.test.invalid/oauth2/callback";
const SIGNED_OUT: &str = "https://rp.test.invalid/signed-out";
const BASIC_CLIENT: &str = "gerrit-web";
/// Characters RFC 6749 2.3.1 has form-urlencoded before base64: `:`, `+`, space, `&`, `=`.
const BASIC_SECRET: &str = "s3cret:with+odd chars/&=";
const POST_CLIENT: &str = "dashboards";
const POST_SECRET: &str = "post-secret";
/// A state and nonce that need URL encoding.
const STATE: &str = "st/ate+1 &x=y";
const NONCE: &str = "n-0S6_WzA2Mj";

async fn provider() -> FakeOidcProvider {
    FakeOidcProvider::start(
        OidcConfig::default()
            .client(
                Client::new(BASIC_CLIENT, BASIC_SECRET, ClientAuth::ClientSecretBasic)
                    .redirect_uri(CALLBACK)
                    .post_logout_redirect_uri(SIGNED_OUT),
            )
            .client(
                Client::new(POST_CLIENT, POST_SECRET, ClientAuth::ClientSecretPost)
                    .redirect_uri(CALLBACK),
            )
            .user(User::new("alice", "wonderland").name("Alice Liddell")),
    )
    .await
}

/// `GET url`, its JSON body.
async fn get_json(url: impl reqwest::IntoUrl) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A PKCE verifier and its S256 challenge (RFC 7636 4.1, 4.2).
struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let random: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    let verifier = b64url(&random);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    Pkce {
        challenge: b64url(digest.as_ref()),
        verifier,
    }
}

/// The authorization request parameters of a relying party using `client_id`.
fn auth_params(client_id: &str, pkce: &Pkce) -> Vec<(String, String)> {
    [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", CALLBACK),
        ("scope", "openid email profile"),
        ("state", STATE),
        ("nonce", NONCE),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `params` with `name` set to `value`, or removed when `None`.
fn with(params: &[(String, String)], name: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<_> = params.iter().filter(|(k, _)| k != name).cloned().collect();
    if let Some(value) = value {
        out.push((name.to_string(), value.to_string()));
    }
    out
}

fn authorize_url(idp: &FakeOidcProvider, params: &[(String, String)]) -> String {
    url::Url::parse_with_params(&idp.authorization_endpoint(), params)
        .unwrap()
        .to_string()
}

/// Opens the login page for `params` and submits its form like a person would: hidden
/// inputs as served, the credentials typed, the button pressed. The answer to the submit.
async fn sign_in(
    http: &reqwest::Client,
    idp: &FakeOidcProvider,
    params: &[(String, String)],
    username: &str,
    password: &str,
    button: &str,
) -> reqwest::Response {
    let page = http.get(authorize_url(idp, params)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>Sign in - Fake IdP</title>"), "{html}");
    assert!(html.contains(r#"<form method="post" action="/authorize">"#));
    for element in [r#"id="username""#, r#"id="password""#, r#"id="sign-in""#] {
        assert!(html.contains(element), "no {element} in {html}");
    }
    submit_login(http, idp, &html, username, password, button).await
}

/// The query of a redirect to `base`, after checking it is one.
fn redirect_query(response: &reqwest::Response, base: &str) -> HashMap<String, String> {
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[LOCATION].to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    assert_eq!(&url[..url::Position::AfterPath], base, "{location}");
    url.query_pairs().into_owned().collect()
}

/// Signs alice in through `client_id`'s login page; the authorization code.
async fn code_for(
    http: &reqwest::Client,
    idp: &FakeOidcProvider,
    params: &[(String, String)],
) -> String {
    let answer = sign_in(http, idp, params, "alice", "wonderland", "sign-in").await;
    let query = redirect_query(&answer, CALLBACK);
    assert_eq!(query["state"], STATE);
    query["code"].clone()
}

/// `id:secret`, each form-urlencoded, in base64 (RFC 6749 2.3.1).
fn basic(id: &str, secret: &str) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// How a token request authenticates.
enum Auth<'a> {
    Basic(&'a str, &'a str),
    Post(&'a str, &'a str),
}

/// A token request: status, headers and JSON body.
async fn token_request(
    http: &reqwest::Client,
    idp: &FakeOidcProvider,
    auth: Auth<'_>,
    form: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut form: Vec<(&str, &str)> = form.to_vec();
    let mut request = http.post(idp.token_endpoint());
    match auth {
        Auth::Basic(id, secret) => request = request.header("authorization", basic(id, secret)),
        Auth::Post(id, secret) => {
            form.push(("client_id", id));
            form.push(("client_secret", secret));
        }
    }
    let response = request.form(&form).send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap();
    (status, headers, body)
}

async fn redeem(
    http: &reqwest::Client,
    idp: &FakeOidcProvider,
    auth: Auth<'_>,
    code: &str,
    verifier: &str,
) -> (StatusCode, HeaderMap, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CALLBACK),
        ("code_verifier", verifier),
    ];
    token_request(http, idp, auth, &form).await
}

async fn refresh(
    http: &reqwest::Client,
    idp: &FakeOidcProvider,
    refresh_token: &str,
) -> (StatusCode, HeaderMap, Value) {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    token_request(http, idp, Auth::Basic(BASIC_CLIENT, BASIC_SECRET), &form).await
}

/// Signs alice in through the basic client and redeems the code: the token response.
async fn tokens_for_alice(http: &reqwest::Client, idp: &FakeOidcProvider) -> Value {
    let pkce = pkce();
    let code = code_for(http, idp, &auth_params(BASIC_CLIENT, &pkce)).await;
    let auth = Auth::Basic(BASIC_CLIENT, BASIC_SECRET);
    let (status, _, body) = redeem(http, idp, auth, &code, &pkce.verifier).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Verifies `id_token` as a relying party does: keys from the discovered `jwks_uri`,
/// RS256, issuer and audience. Its claims.
async fn verify_id_token(
    http: &reqwest::Client,
    idp: &FakeOidcProvider,
    id_token: &str,
    client_id: &str,
) -> Value {
    let discovery: Value = http
        .get(idp.discovery_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
    let jwks: JwkSet = http
        .get(jwks_uri)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("ID token names its key");
    let key = DecodingKey::from_jwk(jwks.find(&kid).expect("kid is in the JWKS")).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .expect("ID token verifies")
        .claims
}

fn assert_token_error(answer: &(StatusCode, HeaderMap, Value), status: StatusCode, error: &str) {
    let (got_status, headers, body) = answer;
    assert_eq!(*got_status, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn discovery_document_names_its_endpoints_and_capabilities_under_its_issuer() {
    let idp = provider().await;
    let response = http().get(idp.discovery_url()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let doc: Value = response.json().await.unwrap();
    let issuer = idp.issuer();
    assert_eq!(issuer, format!("http://{}", idp.addr()));
    assert_eq!(doc["issuer"], issuer);
    assert_eq!(doc["authorization_endpoint"], format!("{issuer}/authorize"));
    assert_eq!(doc["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(doc["jwks_uri"], format!("{issuer}/jwks.json"));
    assert_eq!(doc["end_session_endpoint"], format!("{issuer}/logout"));
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        doc["subject_types_supported"],
        serde_json::json!(["public"])
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!([
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code"
        ])
    );
    assert!(doc["scopes_supported"]
        .as_array()
        .unwrap()
        .contains(&"openid".into()));
    let jwks: Value = get_json(idp.jwks_url()).await;
    assert_eq!(jwks, support::tokens::jwks(&["rsa-a"]));
}

#[tokio::test]
async fn code_flow_with_pkce_and_client_secret_basic_answers_a_signed_id_token_with_the_nonce() {
    let idp = provider().await;
    let http = http();
    let pkce = pkce();
    let code = code_for(&http, &idp, &auth_params(BASIC_CLIENT, &pkce)).await;
    let auth = Auth::Basic(BASIC_CLIENT, BASIC_SECRET);
    let (status, headers, body) = redeem(&http, &idp, auth, &code, &pkce.verifier).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "openid email profile");
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["refresh_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let claims = verify_id_token(
        &http,
        &idp,
        body["id_token"].as_str().unwrap(),
        BASIC_CLIENT,
    )
    .await;
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["sub"], "sub-alice");
    assert_eq!(claims["aud"], BASIC_CLIENT);
    assert_eq!(claims["azp"], BASIC_CLIENT);
    assert_eq!(claims["nonce"], NONCE);
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["preferred_username"], "alice");
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 300);
    assert!(claims["auth_time"].as_u64().unwrap() <= iat);
    let stats = idp.stats();
    assert_eq!(stats.authorization_page_views, 1);
    assert_eq!(stats.logins, 1);
    assert_eq!(stats.authorization_code_requests, 1);
    assert_eq!(stats.tokens_issued, 1);
}

#[tokio::test]
async fn code_flow_with_client_secret_post_authenticates_by_the_form_body() {
    let idp = provider().await;
    let http = http();
    let pkce = pkce();
    let code = code_for(&http, &idp, &auth_params(POST_CLIENT, &pkce)).await;
    let auth = Auth::Post(POST_CLIENT, POST_SECRET);
    let (status, _, body) = redeem(&http, &idp, auth, &code, &pkce.verifier).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims =
        verify_id_token(&http, &idp, body["id_token"].as_str().unwrap(), POST_CLIENT).await;
    assert_eq!(claims["aud"], POST_CLIENT);
    assert_eq!(claims["nonce"], NONCE);
}

#[tokio::test]
async fn a_wrong_code_verifier_is_invalid_grant() {
    let idp = provider().await;
    let http = http();
    let pkce = pkce();
    let code = code_for(&http, &idp, &auth_params(BASIC_CLIENT, &pkce)).await;
    let other = self::pkce();
    let auth = Auth::Basic(BASIC_CLIENT, BASIC_SECRET);
    let answer = redeem(&http, &idp, auth, &code, &other.verifier).await;
    assert_token_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(idp.stats().invalid_grants, 1);
}

#[tokio::test]
async fn a_code_redeemed_twice_is_invalid_grant_and_revokes_the_refresh_token_it_gave() {
    let idp = provider().await;
    let http = http();
    let pkce = pkce();
    let code = code_for(&http, &idp, &auth_params(BASIC_CLIENT, &pkce)).await;
    let auth = || Auth::Basic(BASIC_CLIENT, BASIC_SECRET);
    let (status, _, first) = redeem(&http, &idp, auth(), &code, &pkce.verifier).await;
    assert_eq!(status, StatusCode::OK);

    let again = redeem(&http, &idp, auth(), &code, &pkce.verifier).await;
    assert_token_error(&again, StatusCode::BAD_REQUEST, "invalid_grant");
    let stats = idp.stats();
    assert_eq!((stats.code_reuses, stats.invalid_grants), (1, 1));
    let refreshed = refresh(&http, &idp, first["refresh_token"].as_str().unwrap()).await;
    assert_token_error(&refreshed, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let idp = provider().await;
    let http = http();
    let pkce = pkce();
    let code = code_for(&http, &idp, &auth_params(BASIC_CLIENT, &pkce)).await;
    idp.advance_clock(Duration::from_secs(61));
    let auth = Auth::Basic(BASIC_CLIENT, BASIC_SECRET);
    let answer = redeem(&http, &idp, auth, &code, &pkce.verifier).await;
    assert_token_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn a_redirect_uri_other_than_the_authorization_requests_is_invalid_grant() {
    let idp = provider().await;
    let http = http();
    let pkce = pkce();
    let code = code_for(&http, &idp, &auth_params(BASIC_CLIENT, &pkce)).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://rp.test.invalid/other"),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let auth = Auth::Basic(BASIC_CLIENT, BASIC_SECRET);
    let answer = token_request(&http, &idp, auth, &form).await;
    assert_token_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn a_wrong_client_secret_is_401_invalid_client_with_a_basic_challenge() {
    let idp = provider().await;
    let http = http();
    let pkce = pkce();
    let code = code_for(&http, &idp, &auth_params(BASIC_CLIENT, &pkce)).await;
    let auth = Auth::Basic(BASIC_CLIENT, "not-the-secret");
    let answer = redeem(&http, &idp, auth, &code, &pkce.verifier).await;
    assert_token_error(&answer, StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(answer.1[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
}

#[tokio::test]
async fn basic_credentials_not_form_urlencoded_first_are_invalid_client() {
    let idp = provider().await;
    let raw = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_CLIENT}:{BASIC_SECRET}"))
    );
    let response = http()
        .post(idp.token_endpoint())
        .header("authorization", raw)
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn a_client_using_a_method_it_did_not_register_is_invalid_client() {
    let idp = provider().await;
    let http = http();
    let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
    let post_for_basic = Auth::Post(BASIC_CLIENT, BASIC_SECRET);
    let answer = token_request(&http, &idp, post_for_basic, &form).await;
    assert_token_error(&answer, StatusCode::UNAUTHORIZED, "invalid_client");
    let basic_for_post = Auth::Basic(POST_CLIENT, POST_SECRET);
    let answer = token_request(&http, &idp, basic_for_post, &form).await;
    assert_token_error(&answer, StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test]
async fn an_unregistered_redirect_uri_gets_an_html_400_and_no_redirect() {
    let idp = provider().await;
    let params = with(
        &auth_params(BASIC_CLIENT, &pkce()),
        "redirect_uri",
        Some("https://evil.test.invalid/cb"),
    );
    let response = http()
        .get(authorize_url(&idp, &params))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get(LOCATION).is_none());
    assert!(response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(response.text().await.unwrap().contains("not registered"));
    assert_eq!(idp.stats().authorization_page_views, 0);
}

#[tokio::test]
async fn an_unknown_client_id_gets_an_html_400_and_no_redirect() {
    let idp = provider().await;
    let params = auth_params("who-is-this", &pkce());
    let response = http()
        .get(authorize_url(&idp, &params))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get(LOCATION).is_none());
}

#[tokio::test]
async fn an_authorization_request_without_pkce_s256_is_redirected_back_as_invalid_request() {
    let idp = provider().await;
    let params = auth_params(BASIC_CLIENT, &pkce());
    for params in [
        with(&params, "code_challenge", None),
        with(&params, "code_challenge_method", None),
        with(&params, "code_challenge_method", Some("plain")),
    ] {
        let response = http()
            .get(authorize_url(&idp, &params))
            .send()
            .await
            .unwrap();
        let query = redirect_query(&response, CALLBACK);
        assert_eq!(query["error"], "invalid_request");
        assert_eq!(query["state"], STATE);
        assert!(!query.contains_key("code"));
    }
}

#[tokio::test]
async fn authorization_request_errors_are_redirected_with_the_code_the_spec_names() {
    let idp = provider().await;
    let params = auth_params(BASIC_CLIENT, &pkce());
    let cases = [
        (
            with(&params, "scope", Some("email profile")),
            "invalid_scope",
        ),
        (
            with(&params, "response_type", Some("token")),
            "unsupported_response_type",
        ),
        (with(&params, "response_type", None), "invalid_request"),
        (with(&params, "prompt", Some("none")), "login_required"),
        (
            with(&params, "request", Some("eyJhbGciOiJub25lIn0.e30.")),
            "request_not_supported",
        ),
    ];
    for (params, error) in cases {
        let response = http()
            .get(authorize_url(&idp, &params))
            .send()
            .await
            .unwrap();
        let query = redirect_query(&response, CALLBACK);
        assert_eq!(query["error"], error);
        assert_eq!(query["state"], STATE);
    }
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again_with_an_error() {
    let idp = provider().await;
    let params = auth_params(BASIC_CLIENT, &pkce());
    let answer = sign_in(&http(), &idp, &params, "alice", "looking-glass", "sign-in").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let html = answer.text().await.unwrap();
    assert!(html.contains(r#"id="error""#), "{html}");
    assert!(html.contains(r#"<form method="post" action="/authorize">"#));
    let (mut carried, mut sent) = (hidden_inputs(&html), params.clone());
    carried.sort();
    sent.sort();
    assert_eq!(carried, sent, "the form carries the authorization request");
    let stats = idp.stats();
    assert_eq!((stats.failed_logins, stats.logins), (1, 0));
}

#[tokio::test]
async fn a_denied_authorization_redirects_access_denied_with_the_state() {
    let idp = provider().await;
    let http = http();
    let params = auth_params(BASIC_CLIENT, &pkce());
    idp.deny_next_authorization();
    let denied = sign_in(&http, &idp, &params, "alice", "wonderland", "sign-in").await;
    let query = redirect_query(&denied, CALLBACK);
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["state"], STATE);
    assert!(!query.contains_key("code"));

    let cancelled = sign_in(&http, &idp, &params, "", "", "cancel").await;
    assert_eq!(
        redirect_query(&cancelled, CALLBACK)["error"],
        "access_denied"
    );
    // The switch is spent: the next sign-in gets a code.
    code_for(&http, &idp, &params).await;
    assert_eq!(idp.stats().access_denied, 2);
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token_and_refuses_the_old_one() {
    let idp = provider().await;
    let http = http();
    let first = tokens_for_alice(&http, &idp).await;
    let first_claims = verify_id_token(
        &http,
        &idp,
        first["id_token"].as_str().unwrap(),
        BASIC_CLIENT,
    )
    .await;
    let old = first["refresh_token"].as_str().unwrap();

    let (status, headers, second) = refresh(&http, &idp, old).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    let new = second["refresh_token"].as_str().unwrap();
    assert_ne!(new, old);
    let claims = verify_id_token(
        &http,
        &idp,
        second["id_token"].as_str().unwrap(),
        BASIC_CLIENT,
    )
    .await;
    assert_eq!(claims["sub"], first_claims["sub"]);
    assert_eq!(claims["auth_time"], first_claims["auth_time"]);
    assert!(claims.get("nonce").is_none(), "{claims}");

    assert_token_error(
        &refresh(&http, &idp, old).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    let (status, _, _) = refresh(&http, &idp, new).await;
    assert_eq!(status, StatusCode::OK);
    let stats = idp.stats();
    assert_eq!(stats.refresh_token_requests, 3);
    assert_eq!(stats.refresh_token_reuses, 1);
}

#[tokio::test]
async fn without_rotation_a_refresh_answers_no_new_refresh_token_and_the_old_one_keeps_working() {
    let idp = provider().await;
    idp.set_rotate_refresh_tokens(false);
    let http = http();
    let first = tokens_for_alice(&http, &idp).await;
    let token = first["refresh_token"].as_str().unwrap();
    for _ in 0..2 {
        let (status, _, body) = refresh(&http, &idp, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("refresh_token").is_none());
        assert!(body["id_token"].is_string());
    }
}

#[tokio::test]
async fn revoked_refresh_tokens_are_invalid_grant() {
    let idp = provider().await;
    let http = http();
    let first = tokens_for_alice(&http, &idp).await;
    idp.revoke_refresh_tokens();
    let answer = refresh(&http, &idp, first["refresh_token"].as_str().unwrap()).await;
    assert_token_error(&answer, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn the_id_token_lifetime_set_at_runtime_applies_to_the_next_tokens() {
    let idp = provider().await;
    let http = http();
    idp.set_id_token_lifetime(Duration::from_secs(5));
    let body = tokens_for_alice(&http, &idp).await;
    assert_eq!(body["expires_in"], 5);
    let claims = verify_id_token(
        &http,
        &idp,
        body["id_token"].as_str().unwrap(),
        BASIC_CLIENT,
    )
    .await;
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        5
    );
}

#[tokio::test]
async fn malformed_token_requests_get_spec_errors() {
    let idp = provider().await;
    let http = http();
    let auth = basic(BASIC_CLIENT, BASIC_SECRET);
    let send = |content_type: &'static str, body: &'static [u8]| {
        http.post(idp.token_endpoint())
            .header("authorization", auth.clone())
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let form = "application/x-www-form-urlencoded";
    let cases: [(&str, &[u8], &str); 6] = [
        (
            "application/json",
            b"{\"grant_type\":\"refresh_token\"}",
            "invalid_request",
        ),
        (form, b"", "invalid_request"),
        (
            form,
            b"grant_type=password&username=a&password=b",
            "unsupported_grant_type",
        ),
        (
            form,
            b"grant_type=refresh_token&grant_type=refresh_token",
            "invalid_request",
        ),
        (
            form,
            b"grant_type=authorization_code&code=%ZZ%ff\xff&redirect_uri",
            "invalid_request",
        ),
        (
            form,
            b"grant_type=refresh_token&refresh_token=%00\xfe\xff",
            "invalid_grant",
        ),
    ];
    for (content_type, body, error) in cases {
        let response = send(content_type, body).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["error"], error, "{}", String::from_utf8_lossy(body));
    }
    let anonymous = http
        .post(idp.token_endpoint())
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Still serving.
    let (status, _, _) = refresh(&http, &idp, "unknown").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_redirect_uri_with_a_query_keeps_it_when_the_code_is_added() {
    let with_query = "https://rp.test.invalid/cb?tenant=a%20b";
    let idp = FakeOidcProvider::start(
        OidcConfig::default()
            .client(Client::new("c", "s", ClientAuth::ClientSecretPost).redirect_uri(with_query))
            .user(User::new("alice", "wonderland")),
    )
    .await;
    let params = with(&auth_params("c", &pkce()), "redirect_uri", Some(with_query));
    let answer = sign_in(&http(), &idp, &params, "alice", "wonderland", "sign-in").await;
    let query = redirect_query(&answer, "https://rp.test.invalid/cb");
    assert_eq!(query["tenant"], "a b");
    assert_eq!(query["state"], STATE);
    assert!(query.contains_key("code"));
}

#[tokio::test]
async fn end_session_redirects_to_the_registered_uri_with_the_state_and_records_the_hint() {
    let idp = provider().await;
    let http = http();
    let id_token = tokens_for_alice(&http, &idp).await["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    let url = url::Url::parse_with_params(
        &idp.end_session_endpoint(),
        [
            ("id_token_hint", id_token.as_str()),
            ("post_logout_redirect_uri", SIGNED_OUT),
            ("state", STATE),
        ],
    )
    .unwrap();
    let response = http.get(url).send().await.unwrap();
    let query = redirect_query(&response, SIGNED_OUT);
    assert_eq!(query["state"], STATE);
    assert_eq!(idp.stats().logouts, 1);
    assert_eq!(idp.last_id_token_hint(), Some(id_token));
    let logout = idp.last_logout().unwrap();
    assert_eq!(logout.client_id.as_deref(), Some(BASIC_CLIENT));
    assert_eq!(logout.sub.as_deref(), Some("sub-alice"));
}

#[tokio::test]
async fn end_session_with_an_unregistered_post_logout_uri_gets_an_html_400_and_no_redirect() {
    let idp = provider().await;
    let http = http();
    let id_token = tokens_for_alice(&http, &idp).await["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    for uri in ["https://evil.test.invalid/", CALLBACK] {
        let url = url::Url::parse_with_params(
            &idp.end_session_endpoint(),
            [
                ("id_token_hint", id_token.as_str()),
                ("post_logout_redirect_uri", uri),
            ],
        )
        .unwrap();
        let response = http.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(LOCATION).is_none());
    }
    assert_eq!(idp.stats().logouts, 0);
}

#[tokio::test]
async fn end_session_without_a_redirect_uri_shows_a_signed_out_page() {
    let idp = provider().await;
    let response = http()
        .post(idp.end_session_endpoint())
        .form(&[("client_id", BASIC_CLIENT)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("signed out"));
    assert_eq!(idp.stats().logouts, 1);
    assert_eq!(idp.last_id_token_hint(), None);
}

// ---------------------------------------------------------------------------------------
// The device authorization grant (RFC 8628)

const DEVICE_CLIENT: &str = "cli";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

async fn device_provider() -> FakeOidcProvider {
    FakeOidcProvider::start(OidcConfig {
        device_poll_interval: Duration::from_secs(1),
        device_code_lifetime: Duration::from_secs(60),
        ..OidcConfig::default()
            .client(Client::new(DEVICE_CLIENT, "", ClientAuth::None))
            .client(Client::new(
                POST_CLIENT,
                POST_SECRET,
                ClientAuth::ClientSecretPost,
            ))
            .user(User::new("alice", "wonderland"))
    })
    .await
}

/// A device authorization request (RFC 8628 3.1) as form fields: status and JSON body.
async fn device_authorization(
    http: &reqwest::Client,
    idp: &FakeOidcProvider,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let response = http
        .post(idp.device_authorization_endpoint())
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn poll(
    http: &reqwest::Client,
    idp: &FakeOidcProvider,
    device_code: &str,
) -> (StatusCode, Value) {
    let form = [
        ("grant_type", DEVICE_GRANT),
        ("device_code", device_code),
        ("client_id", DEVICE_CLIENT),
    ];
    let response = http
        .post(idp.token_endpoint())
        .form(&form)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_names_the_device_endpoint_and_grant() {
    let idp = device_provider().await;
    let doc: Value = get_json(idp.discovery_url()).await;
    assert_eq!(
        doc["device_authorization_endpoint"],
        idp.device_authorization_endpoint()
    );
    assert!(doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from(DEVICE_GRANT)));
    assert!(doc["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from("none")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_code_is_pending_then_slowed_then_redeemed_once_after_approval() {
    let idp = device_provider().await;
    let http = http();
    let (status, answer) = device_authorization(
        &http,
        &idp,
        &[
            ("client_id", DEVICE_CLIENT),
            ("scope", "openid offline_access"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // RFC 8628 3.2: every field, the user code short and typeable.
    let user_code = answer["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9);
    assert_eq!(
        answer["verification_uri"],
        format!("{}/device", idp.issuer())
    );
    assert!(answer["verification_uri_complete"]
        .as_str()
        .unwrap()
        .ends_with(&format!("user_code={user_code}")));
    assert_eq!(answer["expires_in"], 60);
    assert_eq!(answer["interval"], 1);
    let device_code = answer["device_code"].as_str().unwrap();

    let (status, body) = poll(&http, &idp, device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending"))
    );
    // Again at once, sooner than the interval: slow down (and 5 s more from now on).
    let (_, body) = poll(&http, &idp, device_code).await;
    assert_eq!(body["error"], "slow_down");
    assert_eq!(idp.pending_user_codes(), [user_code]);

    // The person types the code in lower case without the dash, and approves.
    let typed = user_code.replace('-', "").to_lowercase();
    assert!(idp.approve_device(&typed, "alice"));
    // (Approved, the answer is the tokens however soon the poll comes.)
    let (status, tokens) = poll(&http, &idp, device_code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(tokens["refresh_token"].is_string());
    let claims = verify_id_token(
        &http,
        &idp,
        tokens["id_token"].as_str().unwrap(),
        DEVICE_CLIENT,
    )
    .await;
    assert_eq!(claims["preferred_username"], "alice");
    // Spent.
    let (_, body) = poll(&http, &idp, device_code).await;
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_or_expired_device_code_says_so() {
    let idp = device_provider().await;
    let http = http();
    let (_, denied) = device_authorization(&http, &idp, &[("client_id", DEVICE_CLIENT)]).await;
    assert!(idp.deny_device(denied["user_code"].as_str().unwrap()));
    let (_, body) = poll(&http, &idp, denied["device_code"].as_str().unwrap()).await;
    assert_eq!(body["error"], "access_denied");

    let (_, late) = device_authorization(&http, &idp, &[("client_id", DEVICE_CLIENT)]).await;
    idp.advance_clock(Duration::from_secs(61));
    let (_, body) = poll(&http, &idp, late["device_code"].as_str().unwrap()).await;
    assert_eq!(body["error"], "expired_token");
    // An expired code can no longer be approved either.
    assert!(!idp.approve_device(late["user_code"].as_str().unwrap(), "alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_endpoint_authenticates_clients_as_the_token_endpoint_does() {
    let idp = device_provider().await;
    let http = http();
    for form in [
        vec![("client_id", "nobody")],
        // A confidential client without its secret.
        vec![("client_id", POST_CLIENT)],
        vec![],
    ] {
        let (status, body) = device_authorization(&http, &idp, &form).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{form:?}: {body}");
        assert_eq!(body["error"], "invalid_client");
    }
    let (status, _) = device_authorization(
        &http,
        &idp,
        &[("client_id", POST_CLIENT), ("client_secret", POST_SECRET)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verification_page_is_a_form_a_person_fills_in() {
    let idp = device_provider().await;
    let http = http();
    let (_, answer) = device_authorization(&http, &idp, &[("client_id", DEVICE_CLIENT)]).await;
    let page = http
        .get(answer["verification_uri_complete"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let user_code = answer["user_code"].as_str().unwrap();
    assert!(page.contains(&format!("value=\"{user_code}\"")), "{page}");
    for id in ["username", "password", "approve", "deny"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}: {page}");
    }
    let submit = |password: &'static str| {
        http.post(format!("{}/device", idp.issuer())).form(&[
            ("user_code", user_code),
            ("username", "alice"),
            ("password", password),
            ("action", "approve"),
        ])
    };
    let wrong = submit("nope").send().await.unwrap().text().await.unwrap();
    assert!(wrong.contains("Invalid username or password"), "{wrong}");
    let right = submit("wonderland")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(right.contains("The device is connected"), "{right}");
    assert_eq!(idp.stats().device_approvals, 1);
}
