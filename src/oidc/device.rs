//! The device authorization grant (RFC 8628): a command line asks the IdP for a code,
//! the person approves it in any browser, and the command line polls the token endpoint
//! until then. oauth2's poll loop keeps the RFC's rules (3.5): the same interval while
//! `authorization_pending`, 5 seconds more after `slow_down`, a stop at `access_denied`,
//! `expired_token` or the code's `expires_in`.

use super::provider::{token_error, tokens, Bounded, OauthClient};
use super::{OidcError, Provider, Tokens};
use oauth2::{
    AsyncHttpClient, DeviceAuthorizationUrl, DeviceCodeErrorResponse, DeviceCodeErrorResponseType,
    EndpointNotSet, EndpointSet, RequestTokenError, Scope, StandardDeviceAuthorizationResponse,
    TokenUrl,
};
use std::time::Duration;

/// Longest wait for the person, whatever `expires_in` the IdP gives.
const MAX_WAIT: Duration = Duration::from_secs(30 * 60);

type DeviceClient = OauthClient<EndpointNotSet, EndpointSet, EndpointSet>;

/// A device sign-in started: what to show the person, and what to poll with.
pub struct DeviceAuthorization {
    details: StandardDeviceAuthorizationResponse,
    device_url: DeviceAuthorizationUrl,
    token_url: TokenUrl,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The device code is a credential until it is spent.
        f.debug_struct("DeviceAuthorization")
            .field("user_code", &self.user_code())
            .field("verification_uri", &self.verification_uri())
            .finish_non_exhaustive()
    }
}

impl DeviceAuthorization {
    /// The code the person types at the verification page.
    pub fn user_code(&self) -> &str {
        self.details.user_code().secret()
    }

    /// Where the person goes.
    pub fn verification_uri(&self) -> &str {
        self.details.verification_uri().as_str()
    }

    /// The same, with the code filled in, if the IdP offers it.
    pub fn verification_uri_complete(&self) -> Option<&str> {
        self.details
            .verification_uri_complete()
            .map(|u| u.secret().as_str())
    }

    /// How long the code is good for.
    pub fn expires_in(&self) -> Duration {
        self.details.expires_in()
    }
}

impl Provider {
    fn device_client(
        &self,
        device_url: DeviceAuthorizationUrl,
        token_url: TokenUrl,
    ) -> DeviceClient {
        self.client_without_endpoints()
            .set_device_authorization_url(device_url)
            .set_token_uri(token_url)
    }

    /// Asks the IdP for a device code and the user code to show.
    pub async fn start_device_authorization(&self) -> Result<DeviceAuthorization, OidcError> {
        let endpoints = self.endpoints().await?;
        let device_url = endpoints
            .device_authorization
            .clone()
            .ok_or(OidcError::NoDeviceFlow)?;
        let token_url = endpoints.token.clone();
        let details: StandardDeviceAuthorizationResponse = self
            .device_client(device_url.clone(), token_url.clone())
            .exchange_device_code()
            .add_scopes(self.client().scopes.iter().cloned().map(Scope::new))
            .request_async(&Bounded(self.http()))
            .await
            .map_err(token_error)?;
        Ok(DeviceAuthorization {
            details,
            device_url,
            token_url,
        })
    }

    /// Polls the token endpoint until the person approves or denies the device, or the
    /// code expires.
    pub async fn device_tokens(
        &self,
        authorization: &DeviceAuthorization,
    ) -> Result<Tokens, OidcError> {
        let client = self.device_client(
            authorization.device_url.clone(),
            authorization.token_url.clone(),
        );
        poll(&client, authorization, &Bounded(self.http())).await
    }
}

/// The poll loop on tokio's clock (so tests run it on a paused one).
async fn poll<'c, C>(
    client: &'c DeviceClient,
    authorization: &'c DeviceAuthorization,
    http: &'c C,
) -> Result<Tokens, OidcError>
where
    C: AsyncHttpClient<'c>,
{
    let wall = chrono::Utc::now();
    let start = tokio::time::Instant::now();
    let now = move || {
        let elapsed = chrono::Duration::from_std(start.elapsed()).unwrap_or_default();
        wall + elapsed
    };
    let wait = authorization.expires_in().min(MAX_WAIT);
    let answer = client
        .exchange_device_access_token(&authorization.details)
        .set_time_fn(now)
        .request_async(http, tokio::time::sleep, Some(wait))
        .await;
    match answer {
        Ok(answer) => Ok(tokens(answer)),
        Err(RequestTokenError::ServerResponse(e)) => Err(device_error(&e)),
        Err(RequestTokenError::Request(e)) => {
            Err(OidcError::Unavailable(format!("token endpoint: {e}")))
        }
        Err(RequestTokenError::Parse(e, _)) => Err(OidcError::Unavailable(format!(
            "token endpoint answered garbage: {e}"
        ))),
        Err(RequestTokenError::Other(e)) => {
            Err(OidcError::Unavailable(format!("token endpoint: {e}")))
        }
    }
}

fn device_error(e: &DeviceCodeErrorResponse) -> OidcError {
    match e.error() {
        DeviceCodeErrorResponseType::AccessDenied => OidcError::DeviceDenied,
        DeviceCodeErrorResponseType::ExpiredToken => OidcError::DeviceExpired,
        other => OidcError::Refused {
            error: other.as_ref().to_string(),
            description: e.error_description().cloned(),
        },
    }
}

#[cfg(test)]
mod tests;
