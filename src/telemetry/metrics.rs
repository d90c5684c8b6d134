//! Prometheus metrics (text exposition via `prometheus-client`).

use crate::authorize::Decision;
use crate::gerrit::GerritMetrics;
use prometheus_client::encoding::EncodeLabelSet;
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

/// All metrics of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    duration: Family<DecisionLabel, Histogram>,
    peer_forwards: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric (no Gerrit metrics).
    pub fn new() -> Self {
        Self::with_gerrit(None)
    }

    /// Registers every metric, including Gerrit's when groups come from Gerrit.
    pub fn with_gerrit(gerrit: Option<&GerritMetrics>) -> Self {
        let mut registry = Registry::with_prefix("mesh_authz");
        if let Some(gerrit) = gerrit {
            gerrit.register(&mut registry);
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
            "Invalidations forwarded to other replicas, by result (ok, failed)",
            peer_forwards.clone(),
        );
        Self {
            registry,
            checks,
            duration,
            peer_forwards,
        }
    }

    /// Counts invalidations forwarded to peers.
    pub fn peer_forwards(&self, ok: usize, failed: usize) {
        for (result, n) in [("ok", ok), ("failed", failed)] {
            self.peer_forwards
                .get_or_create(&ResultLabel { result })
                .inc_by(n as u64);
        }
    }

    /// Records one decision.
    pub fn observe(&self, decision: &Decision, elapsed: Duration) {
        let kind = decision.verdict.kind();
        self.checks
            .get_or_create(&CheckLabels {
                decision: kind,
                reason: decision.verdict.reason(),
                route: decision
                    .route
                    .as_ref()
                    .map(|r| r.name.to_string())
                    .unwrap_or_default(),
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
