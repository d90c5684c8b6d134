//! The tonic glue: `envoy.service.auth.v3.Authorization/Check`.
//!
//! Builds a [`RequestView`], asks the [`Authorizer`], records metrics and renders the
//! [`Decision`](crate::authorize::Decision). No policy lives here.

use crate::authorize::{Authorizer, Verdict};
use crate::decision;
use crate::request::RequestView;
use crate::telemetry::Metrics;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use std::sync::Arc;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// The Check service.
#[derive(Debug, Clone)]
pub struct CheckService {
    authorizer: Arc<Authorizer>,
    metrics: Arc<Metrics>,
}

impl CheckService {
    /// A service deciding with `authorizer`.
    pub fn new(authorizer: Arc<Authorizer>, metrics: Arc<Metrics>) -> Self {
        Self {
            authorizer,
            metrics,
        }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let view = RequestView::from_check_request(&request);
        let decision = self.authorizer.decide(&view).await;
        self.metrics.observe(&decision, started.elapsed());
        let request_id = view.header("x-request-id");
        let route = decision.route.as_ref().map(|r| &*r.name);
        let user = match &decision.verdict {
            Verdict::Allow { identity, .. } => identity.as_ref().map(|i| i.user.as_str()),
            _ => None,
        };
        tracing::debug!(
            decision = decision.verdict.kind(),
            reason = decision.verdict.reason(),
            route,
            user,
            request_id,
            method = view.method,
            host = view.host,
            path = view.path,
            "check"
        );
        if let Verdict::Unavailable(reason) = &decision.verdict {
            // The operator must hear about this: Envoy's failure mode now decides.
            tracing::warn!(route, request_id, reason = %reason, "cannot decide");
        }
        decision::render(&decision, request_id).map(Response::new)
    }
}
