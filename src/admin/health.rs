//! `grpc.health.v1.Health` on the gRPC port, answered from the same [`Readiness`] as
//! `/readyz` at each call: the two cannot disagree, and shutdown turns both false at the
//! same instant (a mirror updated on an interval lagged `/readyz` by up to that interval).

use super::Readiness;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The services health is reported for: the server as a whole, and Check.
const SERVICES: [&str; 2] = ["", "envoy.service.auth.v3.Authorization"];

/// How often a `Watch` stream re-checks readiness for signing keys that arrived (the key
/// stores do not announce it); shutdown wakes it at once.
const WATCH_RECHECK: Duration = Duration::from_millis(250);

/// The gRPC health service.
#[derive(Debug, Clone)]
pub struct GrpcHealth {
    readiness: Arc<Readiness>,
}

impl GrpcHealth {
    /// Health as `readiness` says.
    pub fn new(readiness: Arc<Readiness>) -> Self {
        Self { readiness }
    }

    /// The tonic service.
    pub fn server(self) -> HealthServer<Self> {
        HealthServer::new(self)
    }

    fn status(&self, service: &str) -> Result<ServingStatus, Status> {
        if !SERVICES.contains(&service) {
            return Err(Status::not_found("service not registered"));
        }
        Ok(if self.readiness.check().is_ok() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

#[tonic::async_trait]
impl Health for GrpcHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = self.status(&request.get_ref().service)?;
        Ok(Response::new(response(status)))
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let mut last = self.status(&service)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let health = self.clone();
        let mut draining = self.readiness.draining();
        tokio::spawn(async move {
            // Once shutting down, a stream ends after saying so: an open stream would hold
            // the graceful shutdown until its timeout. Clients call Watch again (with
            // backoff) and hear NOT_SERVING until the port closes.
            if tx.send(Ok(response(last))).await.is_err() || *draining.borrow() {
                return;
            }
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    changed = draining.changed() => {
                        if changed.is_err() {
                            return; // the server is gone
                        }
                    }
                    () = tokio::time::sleep(WATCH_RECHECK) => {}
                }
                let Ok(status) = health.status(&service) else {
                    return;
                };
                if status != last {
                    if tx.send(Ok(response(status))).await.is_err() {
                        return;
                    }
                    last = status;
                }
                if *draining.borrow() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
