//! A fake IdP: serves a JWKS at `/jwks.json` (counting fetches) and an OIDC discovery
//! document at `/.well-known/openid-configuration` naming it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct IdpState {
    jwks: Mutex<Value>,
    fetches: AtomicUsize,
    failing: AtomicBool,
    /// Milliseconds each JWKS answer waits.
    delay_ms: AtomicUsize,
}

/// A running fake IdP.
pub struct FakeIdp {
    state: Arc<IdpState>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    scheme: &'static str,
}

impl FakeIdp {
    /// Starts serving `jwks` on an ephemeral loopback port.
    pub async fn start(jwks: Value) -> Self {
        let state = Arc::new(IdpState {
            jwks: Mutex::new(jwks),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let discovery = serde_json::json!({
            "issuer": format!("http://{addr}"),
            "jwks_uri": format!("http://{addr}/jwks.json"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        })
        .to_string();
        let app = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { ([("content-type", "application/json")], discovery) }),
            )
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            state,
            addr,
            task,
            scheme: "http",
        }
    }

    /// Like [`FakeIdp::start`], over HTTPS with a certificate from a CA of its own: the
    /// IdP and that CA's PEM. Its issuer and JWKS URLs are `https://127.0.0.1:PORT/...`.
    pub async fn start_tls(jwks: Value) -> (Self, String) {
        let state = Arc::new(IdpState {
            jwks: Mutex::new(jwks),
            ..Default::default()
        });
        let app = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .with_state(state.clone());
        let (addr, ca_pem, task) = super::pki::serve_https(app).await;
        (
            Self {
                state,
                addr,
                task,
                scheme: "https",
            },
            ca_pem,
        )
    }

    /// The issuer URL its discovery document names (`http://127.0.0.1:PORT`).
    pub fn issuer(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}://{}/jwks.json", self.scheme, self.addr)
    }

    /// Replaces the published key set.
    pub fn publish(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    /// Makes every fetch answer HTTP 500 (or serve again).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes every JWKS answer wait `delay` first (a slow IdP).
    pub fn set_delay(&self, delay: std::time::Duration) {
        let ms = usize::try_from(delay.as_millis()).unwrap();
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_jwks(State(state): State<Arc<IdpState>>) -> Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay as u64)).await;
    }
    if state.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "IdP is down").into_response();
    }
    let body = state.jwks.lock().unwrap().to_string();
    ([("content-type", "application/json")], body).into_response()
}
