//! The poll loop against a scripted token endpoint, on tokio's paused clock.

use super::*;
use oauth2::{AuthType, Client, ClientId, HttpRequest, HttpResponse};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

fn authorization(interval: u64, expires_in: u64) -> DeviceAuthorization {
    let details = serde_json::from_value(serde_json::json!({
        "device_code": "the-device-code",
        "user_code": "BCDF-GHJK",
        "verification_uri": "https://idp.example/device",
        "verification_uri_complete": "https://idp.example/device?user_code=BCDF-GHJK",
        "expires_in": expires_in,
        "interval": interval,
    }))
    .unwrap();
    DeviceAuthorization {
        details,
        device_url: DeviceAuthorizationUrl::new("https://idp.example/device/code".into()).unwrap(),
        token_url: TokenUrl::new("https://idp.example/token".into()).unwrap(),
    }
}

fn client() -> DeviceClient {
    Client::new(ClientId::new("mesh-authz-cli".into()))
        .set_auth_type(AuthType::RequestBody)
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new("https://idp.example/device/code".into()).unwrap(),
        )
        .set_token_uri(TokenUrl::new("https://idp.example/token".into()).unwrap())
}

const TOKENS: &str = r#"{"access_token":"at","token_type":"Bearer","expires_in":300,"id_token":"x.y.z","refresh_token":"rt"}"#;

fn error(code: &str) -> String {
    format!(r#"{{"error":"{code}"}}"#)
}

/// A token endpoint answering `script` in order (then `authorization_pending`), recording
/// when each poll came (seconds since the start) and its body.
#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<(u16, String)>>>,
    polls: Arc<Mutex<Vec<(u64, String)>>>,
}

impl Script {
    fn new(answers: &[(u16, String)]) -> Self {
        Script {
            answers: Arc::new(Mutex::new(answers.iter().cloned().collect())),
            polls: Arc::default(),
        }
    }

    fn poll_times(&self) -> Vec<u64> {
        self.polls.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }
}

async fn run(script: &Script, authorization: &DeviceAuthorization) -> Result<Tokens, OidcError> {
    let start = Instant::now();
    let http = {
        let script = script.clone();
        move |request: HttpRequest| {
            let body = String::from_utf8_lossy(request.body()).into_owned();
            script
                .polls
                .lock()
                .unwrap()
                .push((start.elapsed().as_secs(), body));
            let (status, answer) = script
                .answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((400, error("authorization_pending")));
            async move {
                Ok::<HttpResponse, std::io::Error>(
                    oauth2::http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(answer.into_bytes())
                        .unwrap(),
                )
            }
        }
    };
    let client = client();
    poll(&client, authorization, &http).await
}

#[tokio::test(start_paused = true)]
async fn polls_at_the_interval_while_pending_and_returns_the_tokens() {
    let script = Script::new(&[
        (400, error("authorization_pending")),
        (400, error("authorization_pending")),
        (200, TOKENS.into()),
    ]);
    let tokens = run(&script, &authorization(5, 600)).await.unwrap();
    assert_eq!(tokens.id_token.as_deref(), Some("x.y.z"));
    assert_eq!(tokens.refresh_token.as_deref(), Some("rt"));
    assert_eq!(tokens.expires_in, Some(Duration::from_secs(300)));
    assert_eq!(script.poll_times(), [0, 5, 10]);
    let (_, body) = &script.polls.lock().unwrap()[0];
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:device_code"
    );
    assert_eq!(form["device_code"], "the-device-code");
    assert_eq!(form["client_id"], "mesh-authz-cli");
}

#[tokio::test(start_paused = true)]
async fn slow_down_adds_five_seconds_to_the_interval_from_then_on() {
    let script = Script::new(&[
        (400, error("authorization_pending")),
        (400, error("slow_down")),
        (400, error("authorization_pending")),
        (200, TOKENS.into()),
    ]);
    run(&script, &authorization(5, 600)).await.unwrap();
    assert_eq!(script.poll_times(), [0, 5, 15, 25]);
}

#[tokio::test(start_paused = true)]
async fn a_denied_device_stops_polling() {
    let script = Script::new(&[
        (400, error("authorization_pending")),
        (400, error("access_denied")),
    ]);
    let result = run(&script, &authorization(5, 600)).await;
    assert_eq!(result.err(), Some(OidcError::DeviceDenied));
    assert_eq!(script.poll_times(), [0, 5]);
}

#[tokio::test(start_paused = true)]
async fn the_idp_saying_the_code_expired_stops_polling() {
    let script = Script::new(&[(400, error("expired_token"))]);
    let result = run(&script, &authorization(5, 600)).await;
    assert_eq!(result.err(), Some(OidcError::DeviceExpired));
}

#[tokio::test(start_paused = true)]
async fn polling_ends_when_the_code_expires_without_an_answer() {
    let script = Script::new(&[]);
    let result = run(&script, &authorization(5, 12)).await;
    assert_eq!(result.err(), Some(OidcError::DeviceExpired));
    // Polls at 0, 5 and 10; by 15 the code is past its 12 seconds.
    assert_eq!(script.poll_times(), [0, 5, 10]);
}

#[tokio::test(start_paused = true)]
async fn another_error_is_the_idp_refusing() {
    let script = Script::new(&[(400, error("invalid_grant"))]);
    let result = run(&script, &authorization(5, 600)).await;
    assert!(
        matches!(&result, Err(OidcError::Refused { error, .. }) if error == "invalid_grant"),
        "{result:?}"
    );
}

#[test]
fn the_device_code_never_shows_in_debug_output() {
    let shown = format!("{:?}", authorization(5, 600));
    assert!(!shown.contains("the-device-code"), "{shown}");
    assert!(shown.contains("BCDF-GHJK"), "{shown}");
}
