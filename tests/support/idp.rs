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
}

/// A running fake IdP.
pub struct FakeIdp {
    state: Arc<IdpState>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
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
        Self { state, addr, task }
    }

    /// The issuer URL its discovery document names (`http://127.0.0.1:PORT`).
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// Replaces the published key set.
    pub fn publish(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    /// Makes every fetch answer HTTP 500 (or serve again).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
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
    if state.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "IdP is down").into_response();
    }
    let body = state.jwks.lock().unwrap().to_string();
    ([("content-type", "application/json")], body).into_response()
}
