//! Prometheus metrics (text exposition via `prometheus-client`).

use crate::authorize::Decision;
use crate::gerrit::GerritMetrics;
use crate::telemetry::audit::AuditLog;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    decision: &'static str,
    reason: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DryRunLabels {
    route: String,
    decision: &'static str,
    reason: &'static str,
}

/// Reads the audit log's own counters at each scrape.
#[derive(Debug)]
struct AuditCollector(AuditLog);

impl Collector for AuditCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in [
            (
                "audit_dropped",
                "Audit records dropped because the writer fell behind",
                self.0.dropped(),
            ),
            (
                "audit_write_errors",
                "Failed writes, flushes or reopens of the audit log",
                self.0.write_errors(),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabel {
    issuer: String,
}

/// The signing keys of each issuer of the authorizer in force, read at scrape time (a
/// reload changes the issuers): whether each has usable keys, and how old they are.
#[derive(Debug)]
struct IssuerKeysCollector(crate::authorize::CurrentAuthorizer);

impl Collector for IssuerKeysCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::gauge::ConstGauge;
        let authorizer = self.0.load();
        let stores: Vec<_> = authorizer.verifier().stores().cloned().collect();
        let mut loaded = encoder.encode_descriptor(
            "jwks_keys_loaded",
            "1 while the issuer's signing keys are usable; 0 when never fetched or older than jwks.max_staleness (its tokens cannot be checked)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for store in &stores {
            let label = IssuerLabel {
                issuer: store.issuer().to_string(),
            };
            ConstGauge::new(i64::from(store.is_loaded())).encode(loaded.encode_family(&label)?)?;
        }
        let mut age = encoder.encode_descriptor(
            "jwks_age_seconds",
            "Seconds since the issuer's keys were last fetched successfully (fetched issuers only)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for store in &stores {
            if let Some(a) = store.age() {
                let label = IssuerLabel {
                    issuer: store.issuer().to_string(),
                };
                ConstGauge::new(a.as_secs_f64()).encode(age.encode_family(&label)?)?;
            }
        }
        Ok(())
    }
}

/// All metrics of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    duration: Family<DecisionLabel, Histogram>,
    peer_forwards: Family<ResultLabel, Counter>,
    dry_run: Family<DryRunLabels, Counter>,
    reloads: Family<ResultLabel, Counter>,
    last_reload: Gauge,
    shed: Counter,
    expired: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None, None)
    }
}

impl Metrics {
    /// Adds the issuers' key metrics (`jwks_keys_loaded`, `jwks_age_seconds`) of the
    /// authorizer in force, whatever a reload makes it.
    pub fn with_issuers(mut self, current: crate::authorize::CurrentAuthorizer) -> Self {
        self.registry
            .register_collector(Box::new(IssuerKeysCollector(current)));
        self
    }

    /// Registers every metric, including Gerrit's when groups come from Gerrit and the
    /// audit log's when there is one.
    pub fn new(gerrit: Option<&GerritMetrics>, audit: Option<&AuditLog>) -> Self {
        let mut registry = Registry::with_prefix("mesh_authz");
        if let Some(gerrit) = gerrit {
            gerrit.register(&mut registry);
        }
        if let Some(audit) = audit {
            registry.register_collector(Box::new(AuditCollector(audit.clone())));
        }
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "checks",
            "Check decisions by decision (allow, deny, unavailable), reason and route",
            checks.clone(),
        );
        let duration = Family::<DecisionLabel, Histogram>::new_with_constructor(|| {
            // 25 us .. ~1.6 s: warm checks sit at the bottom, Gerrit calls higher up.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000025, 2.0, 17,
            ))
        });
        registry.register(
            "check_duration_seconds",
            "Time to decide one Check, by decision",
            duration.clone(),
        );
        let info = Family::<VersionLabel, Gauge>::default();
        info.get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register("build_info", "Build information", info);
        let peer_forwards = Family::<ResultLabel, Counter>::default();
        registry.register(
            "peer_forwards",
            "Attempts at forwarding an invalidation to another replica, by result: ok (applied there), failed (not confirmed; retried unless refused for good), gave_up (a forward whose every attempt failed: that replica keeps the old groups until cache_ttl)",
            peer_forwards.clone(),
        );
        let dry_run = Family::<DryRunLabels, Counter>::default();
        registry.register(
            "dry_run_decisions",
            "Checks on dry-run routes that would not have been allowed (they were), by route, decision and reason",
            dry_run.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        // Both series from the start, at 0: an alert on `increase(...{result="refused"})`
        // then sees the first refusal rather than a series appearing.
        for result in ["applied", "refused"] {
            let _ = reloads.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "config_reloads",
            "Config file changes by result: applied, or refused (the previous config keeps serving)",
            reloads.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "checks_shed",
            "Checks refused with UNAVAILABLE on arrival because server.max_concurrent_checks were in flight (Envoy applies statusOnError to them)",
            shed.clone(),
        );
        let expired = Counter::default();
        registry.register(
            "checks_expired",
            "Checks answered DEADLINE_EXCEEDED without a decision: they waited past their grpc-timeout (Envoy had given up on them)",
            expired.clone(),
        );
        let traces = &super::otlp::queue::COUNTERS;
        registry.register(
            "trace_spans_dropped",
            "Spans dropped because telemetry.traces.max_queue_size spans were waiting for export (the collector is slow or down); decisions are unaffected",
            traces.dropped.clone(),
        );
        registry.register(
            "trace_spans_exported",
            "Spans the OTLP collector accepted",
            traces.exported.clone(),
        );
        registry.register(
            "trace_spans_export_failed",
            "Spans in OTLP exports that failed (collector down, refused or timed out); they are not retried",
            traces.failed.clone(),
        );
        let last_reload = Gauge::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When a config change was last applied (Unix time); 0 before any",
            last_reload.clone(),
        );
        Self {
            registry,
            checks,
            duration,
            peer_forwards,
            dry_run,
            reloads,
            last_reload,
            shed,
            expired,
        }
    }

    /// Counts a check that waited past its deadline.
    pub fn check_expired(&self) {
        self.expired.inc();
    }

    /// Counts a check shed under overload.
    pub fn check_shed(&self) {
        self.shed.inc();
    }

    /// Counts a config change, applied or refused.
    pub fn config_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        if applied {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.last_reload.set(i64::try_from(now).unwrap_or(i64::MAX));
        }
    }

    /// Counts one attempt at forwarding an invalidation to a peer (`ok`, `failed`), or a
    /// forward given up on (`gave_up`).
    pub fn peer_forward(&self, result: &'static str) {
        self.peer_forwards
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Records one decision. A dry-run route's checks count as allowed (reason
    /// `dry_run`), and those that would not have been also in `dry_run_decisions`.
    pub fn observe(&self, decision: &Decision, elapsed: Duration) {
        let route = decision
            .route
            .as_ref()
            .map(|r| r.name.to_string())
            .unwrap_or_default();
        let (kind, reason) = match (&decision.dry_run_headers, &decision.verdict) {
            (Some(_), verdict) => {
                self.dry_run
                    .get_or_create(&DryRunLabels {
                        route: route.clone(),
                        decision: verdict.kind(),
                        reason: verdict.reason(),
                    })
                    .inc();
                ("allow", "dry_run")
            }
            (None, verdict) => (verdict.kind(), verdict.reason()),
        };
        self.checks
            .get_or_create(&CheckLabels {
                decision: kind,
                reason,
                route,
            })
            .inc();
        self.duration
            .get_or_create(&DecisionLabel { decision: kind })
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
