//! The tonic glue: `envoy.service.auth.v3.Authorization/Check`.
//!
//! Builds a [`RequestView`], asks the [`Authorizer`](crate::authorize::Authorizer) in
//! force, records metrics and the audit log, and renders the
//! [`Decision`](crate::authorize::Decision). No policy lives here.

use super::grpc::CheckCall;
use super::request;
use super::wire::CheckFields;
use crate::authorize::CurrentAuthorizer;
use crate::authorize::Verdict;
use crate::telemetry::audit::{self, AuditLog, AuditRecord};
use crate::telemetry::Metrics;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// The Check service.
#[derive(Debug, Clone)]
pub struct CheckService {
    authorizer: CurrentAuthorizer,
    metrics: Arc<Metrics>,
    audit: Option<AuditLog>,
    /// Whether the Check span names the user (`telemetry.traces.include_user`).
    user_in_traces: bool,
}

impl CheckService {
    /// A service deciding with the authorizer in force, recording each decision in
    /// `audit`.
    pub fn new(
        authorizer: CurrentAuthorizer,
        metrics: Arc<Metrics>,
        audit: Option<AuditLog>,
    ) -> Self {
        Self {
            authorizer,
            metrics,
            audit,
            user_in_traces: false,
        }
    }

    /// Lets the Check span name the user.
    pub fn with_user_in_traces(mut self, on: bool) -> Self {
        self.user_in_traces = on;
        self
    }
}

impl CheckService {
    /// Decides one Check call: its request message still serialized, its answer the
    /// CheckResponse, or the gRPC error Envoy should see.
    pub async fn check(
        &self,
        request: Request<CheckCall>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        // Envoy has given up on a call that waited past its deadline: answering it would
        // only take time from calls Envoy still waits for.
        if super::admission::expired(
            request.extensions().get(),
            request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok()),
        ) {
            self.metrics.check_expired();
            return Err(Status::deadline_exceeded(
                "the check waited past its grpc-timeout before it could be decided",
            ));
        }
        let (metadata, _, CheckCall(bytes)) = request.into_parts();
        let metadata = metadata.into_headers();

        let fields = CheckFields::parse(&bytes).map_err(|e| {
            Status::invalid_argument(format!("not an envoy.service.auth.v3.CheckRequest: {e}"))
        })?;
        let raw = request::raw_headers(&fields);
        let view = request::view(&fields, raw.as_ref());
        // The authorizer in force now; a reload meanwhile does not affect this check.
        let authorizer = self.authorizer.load_full();
        // Envoy's ext_authz span (in the call's metadata when Envoy traces) first, else
        // the span the request itself carries; read only with export on.
        let span = crate::trace::check_span(|| {
            crate::trace::parent_from(|name| trace_metadata(&metadata, name))
                .or_else(|| crate::trace::parent_from(|name| view.header(name)))
        });
        let decision = span.run(authorizer.decide(&view)).await;
        let elapsed = started.elapsed();
        self.metrics.observe(&decision, elapsed);
        let request_id = view.header("x-request-id");
        let route = decision.route.as_ref().map(|r| &*r.name);
        let user = decision.caller.as_ref().map(|i| i.user.as_str());
        tracing::debug!(
            decision = decision.verdict.kind(),
            reason = decision.verdict.reason(),
            route,
            rule = decision.rule.as_deref(),
            user,
            request_id,
            method = view.method,
            host = view.host,
            path = view.path,
            "check"
        );
        crate::trace::record_decision(
            &span,
            crate::trace::DecisionAttributes {
                route: decision.route.as_ref().map(|r| &r.name),
                rule: decision.rule.as_deref(),
                decision: decision.verdict.kind(),
                reason: decision.verdict.reason(),
                dry_run: decision.dry_run(),
                user: user.filter(|_| self.user_in_traces),
            },
        );
        if let Some(audit) = &self.audit {
            audit.record(&AuditRecord {
                time: SystemTime::now(),
                request_id,
                // Envoy's own span (in the call's metadata when it traces) first: when
                // the gateway starts the trace, the request's headers carry none.
                trace_id: audit::trace_id(|name| trace_metadata(&metadata, name))
                    .or_else(|| audit::trace_id(|name| view.header(name))),
                user,
                issuer: decision.caller.as_ref().map(|i| i.issuer.as_str()),
                principal: (!view.principal.is_empty()).then_some(view.principal),
                credential: decision.caller.as_ref().map(|i| i.credential.as_str()),
                method: view.method,
                host: view.host,
                path: view.path,
                route,
                rule: decision.rule.as_deref(),
                decision: decision.verdict.kind(),
                reason: decision.verdict.reason(),
                detail: decision.verdict.detail().as_deref(),
                dry_run: decision.dry_run(),
                latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            });
        }
        match (&decision.verdict, decision.dry_run()) {
            (Verdict::Allow { .. }, _) => {}
            (verdict, true) => tracing::info!(
                route,
                request_id,
                would_be = verdict.kind(),
                reason = verdict.reason(),
                "dry-run route: allowed a request it would not have"
            ),
            // The operator must hear about this: Envoy's failure mode now decides.
            (Verdict::Unavailable(reason), false) => {
                tracing::warn!(route, request_id, reason = %reason, "cannot decide")
            }
            (Verdict::Deny(_) | Verdict::Answer(_), false) => {}
        }
        super::render(decision, request_id).map(Response::new)
    }
}

/// A trace header of the call's gRPC metadata. The trace headers' names are parsed once
/// here: a lookup by `&str` parses (and lowercases) the name each time, and a Check makes
/// up to six.
fn trace_metadata<'a>(metadata: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    use http::HeaderName;
    static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
    static B3: HeaderName = HeaderName::from_static("b3");
    static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
    static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
    static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
    static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
    let value = match name {
        "traceparent" => metadata.get(&TRACEPARENT),
        "tracestate" => metadata.get(&TRACESTATE),
        "b3" => metadata.get(&B3),
        "x-b3-traceid" => metadata.get(&B3_TRACE_ID),
        "x-b3-spanid" => metadata.get(&B3_SPAN_ID),
        "x-b3-sampled" => metadata.get(&B3_SAMPLED),
        "x-b3-flags" => metadata.get(&B3_FLAGS),
        other => metadata.get(other),
    };
    value?.to_str().ok()
}
