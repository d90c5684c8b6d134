//! The admin HTTP port: `/healthz`, `/readyz`, `/metrics`, group cache invalidation
//! (`POST /cache/groups/invalidate[?user=NAME]`, which needs the events token) and
//! Gerrit's group events (`POST /gerrit/events`); and the gRPC health service, answered
//! from the same [`Readiness`]. Keep this port inside the cluster.

mod health;
mod peers;

pub use health::GrpcHealth;
pub use peers::{Forwarded, Peers, ORIGIN_HEADER};

use crate::authorize::Authorizer;
use crate::authorize::CurrentAuthorizer;
use crate::gerrit::EventError;
use crate::telemetry::Metrics;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Whether the server should receive traffic: the one answer behind `/readyz` and the
/// gRPC health service ([`GrpcHealth`]), both computed from it at each request.
#[derive(Debug)]
pub struct Readiness {
    authorizer: CurrentAuthorizer,
    /// Set once, on shutdown; receivers (health `Watch` streams) wake at once.
    draining: watch::Sender<bool>,
}

impl Readiness {
    /// Readiness for an authorizer.
    pub fn new(authorizer: CurrentAuthorizer) -> Self {
        Self {
            authorizer,
            draining: watch::Sender::new(false),
        }
    }

    /// Marks the server as shutting down: readiness turns false for good, for `/readyz`
    /// and gRPC health alike, before this returns.
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Wakes when shutdown starts.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        if *self.draining.borrow() {
            return Err("shutting down".into());
        }
        let authorizer = self.authorizer.load();
        let missing: Vec<&str> = authorizer
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
    authorizer: CurrentAuthorizer,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    peers: Option<Peers>,
}

/// How a request to an invalidation endpoint arrived.
enum Arrival {
    /// From outside: apply it and forward it to the peers.
    Direct,
    /// Forwarded by a peer: apply it only.
    Forwarded,
    /// Forwarded by this very replica (it resolved itself among the peers): ignore it.
    Own,
}

impl AdminState {
    fn arrival(&self, headers: &HeaderMap) -> Arrival {
        match (headers.get(ORIGIN_HEADER), &self.peers) {
            (None, _) => Arrival::Direct,
            (Some(origin), Some(peers)) if peers.is_own(origin) => Arrival::Own,
            (Some(_), _) => Arrival::Forwarded,
        }
    }

    /// Starts forwarding a directly received invalidation to the peers, if any are
    /// configured, before this replica applies it: the two run independently.
    fn start_forward(
        &self,
        arrival: &Arrival,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Option<JoinHandle<Forwarded>> {
        let peers = self
            .peers
            .as_ref()
            .filter(|_| matches!(arrival, Arrival::Direct))?;
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        Some(peers.forward(path, headers.get(header::AUTHORIZATION), body))
    }
}

/// What the first attempts at forwarding did (bounded by the forward timeout).
async fn forwarded(forwarding: Option<JoinHandle<Forwarded>>) -> Option<Forwarded> {
    match forwarding?.await {
        Ok(forwarded) => Some(forwarded),
        Err(e) => {
            tracing::error!(error = %e, "forwarding to the peers failed");
            None
        }
    }
}

/// The admin router. `peers`, if given, receive every invalidation this replica receives.
pub fn router(
    authorizer: CurrentAuthorizer,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    peers: Option<Peers>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/cache/groups/invalidate", post(invalidate_groups))
        .route("/gerrit/events", post(gerrit_events))
        .with_state(AdminState {
            authorizer,
            readiness,
            metrics,
            peers,
        })
}

#[derive(serde::Deserialize)]
struct InvalidateQuery {
    user: Option<String>,
}

/// Why cache invalidation is refused when no token is configured.
pub const INVALIDATION_OFF: &str = "cache invalidation is off: it needs the token in gerrit.events.token_file, and none is configured";

/// Checks an invalidation's bearer token against `gerrit.events.token_file`; without
/// one, every invalidation is refused: dropping caches sends every user's next check to
/// Gerrit, so nobody may do it unauthenticated.
fn authenticate_invalidation(
    authorizer: &Authorizer,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, String)> {
    let Some(events) = authorizer.group_events().filter(|e| e.has_token()) else {
        tracing::warn!("cache invalidation refused: {INVALIDATION_OFF}");
        return Err((StatusCode::FORBIDDEN, format!("{INVALIDATION_OFF}\n")));
    };
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match events.check_token(authorization) {
        Ok(()) => Ok(()),
        Err(e @ EventError::Unauthorized) => {
            tracing::warn!("cache invalidation refused: {e}");
            Err((StatusCode::UNAUTHORIZED, format!("{e}\n")))
        }
        Err(e) => {
            tracing::error!("{e}");
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot check the token\n".into(),
            ))
        }
    }
}

/// Drops one user's cached groups (`?user=NAME`) or all of them, so a membership change
/// in Gerrit takes effect now rather than after the TTL; on every replica, with peers.
/// Needs the events token.
async fn invalidate_groups(
    State(state): State<AdminState>,
    Query(query): Query<InvalidateQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let authorizer = state.authorizer.load_full();
    let Some(groups) = authorizer.groups() else {
        return (
            StatusCode::NOT_FOUND,
            "no group source is configured\n".into(),
        );
    };
    if let Err(refused) = authenticate_invalidation(&authorizer, &headers) {
        return refused;
    }
    let arrival = state.arrival(&headers);
    if matches!(arrival, Arrival::Own) {
        return (StatusCode::NO_CONTENT, String::new());
    }
    let forwarding = state.start_forward(&arrival, &uri, &headers, Bytes::new());
    let mut answer = match query.user {
        Some(user) => {
            let was_cached = groups.invalidate(&user).await;
            tracing::info!(
                user,
                was_cached,
                "group cache entry dropped by admin request"
            );
            let what = if was_cached {
                "dropped"
            } else {
                "nothing cached for"
            };
            format!("{what} {user}")
        }
        None => {
            groups.invalidate_all();
            tracing::info!("group cache dropped by admin request");
            "dropped all cached groups".to_string()
        }
    };
    if let Some(f) = forwarded(forwarding).await {
        answer.push_str(&format!(
            "; other replicas: {} done, {} failed",
            f.ok, f.failed
        ));
        if f.retrying > 0 {
            answer.push_str(" (retried in the background)");
        }
    }
    (StatusCode::OK, answer + "\n")
}

/// Gerrit events (the webhooks plugin posts one per request; a relay of
/// `gerrit stream-events` may post several, one per line): group changes drop the cached
/// groups they affect, on every replica, with peers.
///
/// The answer waits for neither Gerrit nor a peer that does not answer: events that
/// change groups are forwarded first, each replica drops the holders of the changed
/// groups at once and lists their members afterwards, and a failed forward is retried
/// in the background. The answer says what was done by then.
async fn gerrit_events(
    State(state): State<AdminState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let authorizer = state.authorizer.load_full();
    let Some(events) = authorizer.group_events().cloned() else {
        return (
            StatusCode::NOT_FOUND,
            "Gerrit events are not enabled (gerrit.events)\n".into(),
        );
    };
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if let Err(e) = events.authenticate(authorization) {
        return match e {
            EventError::Unauthorized => {
                tracing::warn!("Gerrit event refused: {e}");
                (StatusCode::UNAUTHORIZED, format!("{e}\n"))
            }
            e => {
                tracing::error!("{e}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot check the token\n".into(),
                )
            }
        };
    }
    let arrival = state.arrival(&headers);
    if matches!(arrival, Arrival::Own) {
        return (StatusCode::NO_CONTENT, String::new());
    }
    let changes = match events.read(&body) {
        Ok(changes) => changes,
        Err(e) => {
            tracing::warn!("Gerrit event refused: {e}");
            return (StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
    };
    // Events that change no group and no change under review (a push to a branch) are
    // not passed on.
    let forwarding =
        if changes.groups.is_empty() && changes.changes.is_empty() && changes.heads.is_empty() {
            None
        } else {
            state.start_forward(&arrival, &uri, &headers, body)
        };
    // In a task of its own: a sender that hangs up does not stop it half-way.
    let applied = tokio::spawn(async move { events.apply(changes).await }).await;
    let applied = match applied {
        Ok(applied) => applied,
        Err(e) => {
            tracing::error!(error = %e, "applying Gerrit events failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "applying the events failed\n".into(),
            );
        }
    };
    let mut answer = serde_json::json!(applied);
    if let Some(f) = forwarded(forwarding).await {
        answer["other_replicas"] = serde_json::json!(f);
    }
    (StatusCode::OK, format!("{answer}\n"))
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let gerrit_problem = state
        .authorizer
        .load()
        .groups()
        .and_then(|g| g.metrics())
        .and_then(|m| m.degraded());
    match (state.readiness.check(), gerrit_problem) {
        // Still ready: taking every replica out would fail public and token-only routes
        // too, and a restart mends neither credentials nor the URL. The body and a metric
        // say what is wrong.
        (Ok(()), Some(problem)) => (StatusCode::OK, format!("ready, degraded: {problem}\n")),
        (Ok(()), None) => (StatusCode::OK, "ready\n".to_string()),
        (Err(why), _) => (
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
