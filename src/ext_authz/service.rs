//! The tonic glue: `envoy.service.auth.v3.Authorization/Check`.
//!
//! Builds a [`RequestView`], asks the [`Authorizer`](crate::authorize::Authorizer) in
//! force, records metrics and the audit log, and renders the
//! [`Decision`](crate::authorize::Decision). No policy lives here.

use super::request;
use crate::authorize::CurrentAuthorizer;
use crate::authorize::Verdict;
use crate::request::RequestView;
use crate::telemetry::audit::{self, AuditLog, AuditRecord};
use crate::telemetry::Metrics;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// Checks decided at once unless the config says otherwise (`server.max_concurrent_checks`).
pub const DEFAULT_MAX_CONCURRENT_CHECKS: usize = 4096;

/// The Check service.
#[derive(Debug, Clone)]
pub struct CheckService {
    authorizer: CurrentAuthorizer,
    metrics: Arc<Metrics>,
    audit: Option<AuditLog>,
    in_flight: Arc<InFlight>,
}

/// Counts the checks being decided, up to a bound.
#[derive(Debug)]
struct InFlight {
    now: AtomicUsize,
    max: usize,
    /// When a shed check was last logged (seconds on the process clock + 1; 0: never), so
    /// an overload logs once a second, not once per check.
    last_logged: AtomicU64,
}

/// One check's place among those in flight; given back when dropped (also when Envoy
/// cancels the call).
struct Slot<'a>(&'a InFlight);

impl InFlight {
    fn enter(&self) -> Option<Slot<'_>> {
        if self.now.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.now.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self))
    }

    /// Whether to log this shed check: the first in each second.
    fn should_log(&self) -> bool {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs()
            + 1;
        self.last_logged.swap(now, Ordering::Relaxed) != now
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
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
            in_flight: Arc::new(InFlight {
                now: AtomicUsize::new(0),
                max: DEFAULT_MAX_CONCURRENT_CHECKS,
                last_logged: AtomicU64::new(0),
            }),
        }
    }

    /// The same service deciding at most `max` checks at once; more are shed.
    pub fn with_max_concurrent_checks(mut self, max: usize) -> Self {
        self.in_flight = Arc::new(InFlight {
            now: AtomicUsize::new(0),
            max: max.max(1),
            last_logged: AtomicU64::new(0),
        });
        self
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        // Shed before any work: past the bound, waiting would only push checks beyond
        // Envoy's timeout (and hold their memory), so say so at once.
        let Some(_slot) = self.in_flight.enter() else {
            self.metrics.check_shed();
            if self.in_flight.should_log() {
                tracing::warn!(
                    max_concurrent_checks = self.in_flight.max,
                    "overloaded: shedding checks (counted in mesh_authz_checks_shed_total)"
                );
            }
            return Err(Status::unavailable(format!(
                "mesh-authz is overloaded: {} checks in flight (server.max_concurrent_checks); try again",
                self.in_flight.max
            )));
        };
        let (metadata, _, request) = request.into_parts();
        let raw = request::raw_headers(&request);
        let view = request::view(&request);
        let view = match &raw {
            Some(headers) => RequestView { headers, ..view },
            None => view,
        };
        // The authorizer in force now; a reload meanwhile does not affect this check.
        let authorizer = self.authorizer.load_full();
        let decision = authorizer.decide(&view).await;
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
        if let Some(audit) = &self.audit {
            audit.record(&AuditRecord {
                time: SystemTime::now(),
                request_id,
                // Envoy's own span (in the call's metadata when it traces) first: when
                // the gateway starts the trace, the request's headers carry none.
                trace_id: audit::trace_id(|name| metadata.get(name)?.to_str().ok())
                    .or_else(|| audit::trace_id(|name| view.header(name))),
                user,
                issuer: decision.caller.as_ref().map(|i| i.issuer.as_str()),
                principal: (!view.principal.is_empty()).then_some(view.principal),
                method: view.method,
                host: view.host,
                path: view.path,
                route,
                rule: decision.rule.as_deref(),
                decision: decision.verdict.kind(),
                reason: decision.verdict.reason(),
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
            (Verdict::Deny(_), false) => {}
        }
        super::render(decision, request_id).map(Response::new)
    }
}
