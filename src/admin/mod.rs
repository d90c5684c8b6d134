//! The admin HTTP port: `/healthz`, `/readyz`, `/metrics`.

use crate::authorize::Authorizer;
use crate::telemetry::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether the server should receive traffic.
#[derive(Debug)]
pub struct Readiness {
    authorizer: Arc<Authorizer>,
    draining: AtomicBool,
}

impl Readiness {
    /// Readiness for an authorizer.
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        Self {
            authorizer,
            draining: AtomicBool::new(false),
        }
    }

    /// Marks the server as shutting down: readiness turns false for good.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        let missing: Vec<&str> = self
            .authorizer
            .verifier()
            .stores()
            .filter(|s| !s.is_loaded())
            .map(|s| s.issuer())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("no signing keys yet for: {}", missing.join(", ")))
        }
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

/// The admin router.
pub fn router(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { readiness, metrics })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
