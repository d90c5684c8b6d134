//! One issuer's IdP: discovery (where to send the browser, where to exchange codes, where
//! to sign out, where devices start) and the token endpoint (the code exchange and the
//! refresh grant).

use super::{ClientAuth, OidcClient, OidcError};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EndpointNotSet, EndpointSet, ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long discovered endpoints are used before they are fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// After a failed discovery, how long sign-ins fail at once instead of asking again (an
/// IdP that is down would otherwise hold every page load for the request's timeout).
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);
/// Largest token endpoint answer read (ID and refresh tokens are a few KB).
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;
/// Largest discovery document read.
const MAX_DISCOVERY_BYTES: usize = 256 * 1024;

/// The endpoints discovery names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Where the browser signs in.
    pub authorization: AuthUrl,
    /// Where codes and refresh tokens are exchanged.
    pub token: TokenUrl,
    /// Where the browser signs out (RP-Initiated Logout), if the IdP has one.
    pub end_session: Option<url::Url>,
    /// Where a device starts a sign-in (RFC 8628), if the IdP has one.
    pub device_authorization: Option<oauth2::DeviceAuthorizationUrl>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    end_session_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
}

/// What a token endpoint answered, tokens hidden from `Debug`.
#[derive(Clone)]
pub struct Tokens {
    /// The ID token (verified by the caller). A refresh answer may lack one (OIDC Core
    /// 12.2).
    pub id_token: Option<String>,
    /// The access token.
    pub access_token: String,
    /// The access token's lifetime, if the IdP said.
    pub expires_in: Option<Duration>,
    /// A refresh token, if the IdP gave one.
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<set>"),
            )
            .finish_non_exhaustive()
    }
}

/// The OIDC fields of a token response (OIDC Core 3.1.3.3).
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct IdTokenFields {
    id_token: Option<String>,
}

impl std::fmt::Debug for IdTokenFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdTokenFields(<redacted>)")
    }
}

impl ExtraTokenFields for IdTokenFields {}

pub(super) type OidcTokenResponse = StandardTokenResponse<IdTokenFields, BasicTokenType>;
/// The oauth2 client of an OIDC token response, with the endpoints `A` (authorization),
/// `D` (device authorization) and `T` (token) set or not.
pub(super) type OauthClient<A, D, T> = Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    A,
    D,
    EndpointNotSet,
    EndpointNotSet,
    T,
>;
/// No endpoint set yet.
pub(super) type BareClient = OauthClient<EndpointNotSet, EndpointNotSet, EndpointNotSet>;
type TokenClient = OauthClient<EndpointSet, EndpointNotSet, EndpointSet>;

/// One issuer's IdP, for browser sign-in.
pub struct Provider {
    client: OidcClient,
    http: reqwest::Client,
    discovered: Mutex<Discovered>,
}

/// Discovery's outcome so far.
#[derive(Default)]
struct Discovered {
    /// The last good endpoints, and when they were fetched.
    endpoints: Option<(Arc<Endpoints>, Instant)>,
    /// The last failure, and when, while there are no endpoints to serve.
    failed: Option<(OidcError, Instant)>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.client.issuer)
            .field("client_id", &self.client.client_id)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// A provider for `client`, with an HTTP client that follows no redirects (an IdP
    /// endpoint that redirects is a misconfiguration, not something to chase).
    pub fn new(client: OidcClient) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(client.timeout)
            .build()
            .unwrap_or_default();
        Provider {
            client,
            http,
            discovered: Mutex::new(Discovered::default()),
        }
    }

    /// The configured client.
    pub fn client(&self) -> &OidcClient {
        &self.client
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The endpoints, from discovery (fetched once an hour; one fetch at a time; after a
    /// failure, not asked again for a few seconds: the last good endpoints serve, or the
    /// failure is the answer at once).
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, OidcError> {
        let mut discovered = self.discovered.lock().await;
        if let Some((endpoints, at)) = &discovered.endpoints {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(endpoints.clone());
            }
        }
        if let Some((error, at)) = &discovered.failed {
            if at.elapsed() < DISCOVERY_RETRY {
                // Failed a moment ago: the stale endpoints, or the failure, at once.
                return match &discovered.endpoints {
                    Some((endpoints, _)) => Ok(endpoints.clone()),
                    None => Err(error.clone()),
                };
            }
        }
        match self.discover().await {
            Ok(endpoints) => {
                let endpoints = Arc::new(endpoints);
                discovered.endpoints = Some((endpoints.clone(), Instant::now()));
                discovered.failed = None;
                Ok(endpoints)
            }
            Err(e) => {
                discovered.failed = Some((e.clone(), Instant::now()));
                // The last good endpoints serve while the IdP's discovery fails.
                match &discovered.endpoints {
                    Some((endpoints, _)) => Ok(endpoints.clone()),
                    None => Err(e),
                }
            }
        }
    }

    async fn discover(&self) -> Result<Endpoints, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.client.issuer.trim_end_matches('/')
        );
        let response = crate::trace::propagate(self.http.get(&url))
            .send()
            .await
            .map_err(|e| {
                OidcError::Unavailable(format!("discovery: {}", crate::outbound::error_text(e)))
            })?;
        if !response.status().is_success() {
            return Err(OidcError::Unavailable(format!(
                "discovery answered HTTP {}",
                response.status().as_u16()
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_DISCOVERY_BYTES)
        {
            return Err(OidcError::Discovery("document too large".into()));
        }
        let body = response.bytes().await.map_err(|e| {
            OidcError::Unavailable(format!("discovery: {}", crate::outbound::error_text(e)))
        })?;
        if body.len() > MAX_DISCOVERY_BYTES {
            return Err(OidcError::Discovery("document too large".into()));
        }
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Discovery(format!("not a discovery document: {e}")))?;
        // OIDC Discovery 4.3: the document's issuer must be the one asked about.
        if doc.issuer != self.client.issuer {
            return Err(OidcError::Discovery(format!(
                "it names issuer {:?}, not {:?}",
                doc.issuer, self.client.issuer
            )));
        }
        let url_of = |name: &str, value: &str| {
            url::Url::parse(value)
                .ok()
                .filter(|u| matches!(u.scheme(), "https" | "http"))
                .ok_or_else(|| OidcError::Discovery(format!("{name} {value:?} is not a URL")))
        };
        Ok(Endpoints {
            authorization: AuthUrl::from_url(url_of(
                "authorization_endpoint",
                &doc.authorization_endpoint,
            )?),
            token: TokenUrl::from_url(url_of("token_endpoint", &doc.token_endpoint)?),
            end_session: doc
                .end_session_endpoint
                .as_deref()
                .map(|u| url_of("end_session_endpoint", u))
                .transpose()?,
            device_authorization: doc
                .device_authorization_endpoint
                .as_deref()
                .map(|u| url_of("device_authorization_endpoint", u))
                .transpose()?
                .map(oauth2::DeviceAuthorizationUrl::from_url),
        })
    }

    fn token_client(&self, endpoints: &Endpoints) -> TokenClient {
        self.client_without_endpoints()
            .set_auth_uri(endpoints.authorization.clone())
            .set_token_uri(endpoints.token.clone())
    }

    /// The client, its secret and how it is sent; no endpoints yet.
    pub(super) fn client_without_endpoints(&self) -> BareClient {
        let client = Client::new(ClientId::new(self.client.client_id.clone()));
        let client = match &self.client.secret {
            Some(secret) => client.set_client_secret(ClientSecret::new(secret.0.clone())),
            None => client,
        };
        match self.client.auth {
            ClientAuth::SecretBasic => client.set_auth_type(AuthType::BasicAuth),
            ClientAuth::SecretPost | ClientAuth::None => {
                client.set_auth_type(AuthType::RequestBody)
            }
        }
    }

    /// The URL that sends the browser to sign in: `response_type=code`, the client, its
    /// scopes, `redirect_uri`, `state`, `nonce`, and the PKCE S256 challenge of
    /// `verifier`.
    pub fn authorization_url(
        &self,
        endpoints: &Endpoints,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<url::Url, OidcError> {
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| OidcError::Discovery(format!("redirect URI: {e}")))?;
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.into()));
        let state = state.to_string();
        let (url, _) = self
            .token_client(endpoints)
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.client.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .set_redirect_uri(Cow::Owned(redirect))
            .add_extra_param("nonce", nonce.to_string())
            .url();
        Ok(url)
    }

    /// Exchanges an authorization code (with its PKCE verifier and the same
    /// `redirect_uri`) for tokens.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Tokens, OidcError> {
        let endpoints = self.endpoints().await?;
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| OidcError::Discovery(format!("redirect URI: {e}")))?;
        let answer = self
            .token_client(&endpoints)
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .set_redirect_uri(Cow::Owned(redirect))
            .request_async(&Bounded(&self.http))
            .await
            .map_err(token_error)?;
        Ok(tokens(answer))
    }

    /// Uses a refresh token; with rotation, the answer carries the next one.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, OidcError> {
        let endpoints = self.endpoints().await?;
        let token = RefreshToken::new(refresh_token.to_string());
        let answer = self
            .token_client(&endpoints)
            .exchange_refresh_token(&token)
            .request_async(&Bounded(&self.http))
            .await
            .map_err(token_error)?;
        let mut tokens = tokens(answer);
        // RFC 6749 6: without a new refresh token, the old one stays good.
        if tokens.refresh_token.is_none() {
            tokens.refresh_token = Some(refresh_token.to_string());
        }
        Ok(tokens)
    }
}

/// The IdP's HTTP client for the token endpoint, reading at most
/// [`MAX_TOKEN_ANSWER_BYTES`] of an answer (oauth2's own reqwest client reads it whole).
pub(super) struct Bounded<'a>(pub(super) &'a reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for Bounded<'_> {
    type Error = oauth2::HttpClientError<reqwest::Error>;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<oauth2::HttpResponse, Self::Error>>
                + Send
                + Sync
                + 'c,
        >,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let mut request = reqwest::Request::try_from(request).map_err(Box::new)?;
            // The IdP's own trace joins the check's (sign-in callbacks and refreshes).
            if let Some(value) = crate::trace::traceparent() {
                request.headers_mut().insert("traceparent", value);
            }
            let mut response = self.0.execute(request).await.map_err(Box::new)?;
            let mut builder = oauth2::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(Box::new)? {
                if body.len() + chunk.len() > MAX_TOKEN_ANSWER_BYTES {
                    return Err(oauth2::HttpClientError::Other(format!(
                        "answer larger than {MAX_TOKEN_ANSWER_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            builder.body(body).map_err(oauth2::HttpClientError::Http)
        })
    }
}

pub(super) fn tokens(answer: OidcTokenResponse) -> Tokens {
    Tokens {
        id_token: answer.extra_fields().id_token.clone(),
        access_token: answer.access_token().secret().clone(),
        expires_in: answer.expires_in(),
        refresh_token: answer.refresh_token().map(|t| t.secret().clone()),
    }
}

pub(super) fn token_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, BasicErrorResponse>,
) -> OidcError {
    match e {
        RequestTokenError::ServerResponse(answer) => OidcError::Refused {
            error: answer.error().as_ref().to_string(),
            description: answer.error_description().cloned(),
        },
        RequestTokenError::Request(e) => OidcError::Unavailable(format!("token endpoint: {e}")),
        RequestTokenError::Parse(e, _) => {
            OidcError::Unavailable(format!("token endpoint answered garbage: {e}"))
        }
        RequestTokenError::Other(e) => OidcError::Unavailable(format!("token endpoint: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::{ClientAuth, OidcClient};

    /// An IdP whose token endpoint answers `token_answer`.
    async fn idp(token_answer: String) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery = serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
        })
        .to_string();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { discovery }),
            )
            .route(
                "/token",
                axum::routing::post(move || async move {
                    ([("content-type", "application/json")], token_answer)
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider::new(OidcClient {
            issuer,
            client_id: "gerrit-web".into(),
            secret: None,
            auth: ClientAuth::None,
            scopes: vec!["openid".into()],
            timeout: Duration::from_secs(5),
        })
    }

    #[tokio::test]
    async fn the_sign_in_redirect_carries_the_s256_challenge_of_the_verifier_and_the_request() {
        let provider = idp(String::new()).await;
        let endpoints = provider.endpoints().await.unwrap();
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let url = provider
            .authorization_url(
                &endpoints,
                "https://h/cb",
                "the-state",
                "the-nonce",
                verifier,
            )
            .unwrap();
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        // RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier))); its appendix B example.
        assert_eq!(
            q["code_challenge"],
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "gerrit-web");
        assert_eq!(q["redirect_uri"], "https://h/cb");
        assert_eq!(q["state"], "the-state");
        assert_eq!(q["nonce"], "the-nonce");
        assert_eq!(q["scope"], "openid");
    }

    #[tokio::test]
    async fn a_token_answer_is_read_into_tokens() {
        let answer =
            r#"{"access_token":"a","token_type":"Bearer","id_token":"x.y.z","refresh_token":"r"}"#;
        let tokens = idp(answer.into())
            .await
            .exchange_code("code", "verifier", "https://h/cb")
            .await
            .unwrap();
        assert_eq!(tokens.id_token.as_deref(), Some("x.y.z"));
        assert_eq!(tokens.access_token, "a");
        assert_eq!(tokens.refresh_token.as_deref(), Some("r"));
    }

    #[tokio::test]
    async fn a_token_answer_larger_than_the_bound_is_not_read() {
        let huge = format!(
            r#"{{"access_token":"{}","token_type":"Bearer","id_token":"x.y.z"}}"#,
            "a".repeat(MAX_TOKEN_ANSWER_BYTES)
        );
        let result = idp(huge)
            .await
            .exchange_code("code", "verifier", "https://h/cb")
            .await;
        assert!(
            matches!(&result, Err(OidcError::Unavailable(m)) if m.contains("larger than")),
            "{result:?}"
        );
    }
}
