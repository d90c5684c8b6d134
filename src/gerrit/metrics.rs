//! What the Gerrit client and group cache measure. The families are shared handles;
//! the telemetry module registers them for `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Label of a Gerrit request's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok`, `not_found`, `credentials`, `status`, `unreachable` or `bad_response`.
    pub outcome: &'static str,
}

/// Label of a group cache lookup's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    /// `hit`, `miss`, `stale` (served past its TTL because Gerrit failed) or `refresh`
    /// (reloaded ahead of expiry).
    pub result: &'static str,
}

/// Label of a received Gerrit event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// `group_changed`, `ignored` (not a group change), `invalid` (an unreadable body) or
    /// `unauthorized` (a wrong token).
    pub result: &'static str,
}

/// Label of why cached entries were dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// `event` (a Gerrit group change) or `admin` (the invalidation endpoint).
    pub trigger: &'static str,
}

/// Label of a grants file read.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantReadLabel {
    /// `read` (a new revision), `unchanged`, `refused` (the file does not parse: the
    /// previous set stays) or `failed` (Gerrit could not be read).
    pub result: &'static str,
}

/// Label naming one grant entry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabel {
    /// The entry's id.
    pub grant: String,
}

/// Gerrit request and group cache metrics.
#[derive(Clone, Debug)]
pub struct GerritMetrics {
    grant_reads: Family<GrantReadLabel, Counter>,
    grants_skipped: Family<GrantLabel, Gauge>,
    grant_allows: Family<GrantLabel, Counter>,
    /// The grants in force, counted active at each scrape.
    grants_in_force: Arc<arc_swap::ArcSwapOption<crate::policy::grants::GrantSet>>,
    requests: Family<OutcomeLabel, Counter>,
    latency: Histogram,
    lookups: Family<CacheLabel, Counter>,
    entries: Gauge,
    credentials_rejected: Gauge,
    self_checks: Family<OutcomeLabel, Counter>,
    url_wrong: Gauge,
    events: Family<EventLabel, Counter>,
    dropped: Family<TriggerLabel, Counter>,
}

impl Default for GerritMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            // 1 ms .. ~4 s.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            lookups: Family::default(),
            entries: Gauge::default(),
            credentials_rejected: Gauge::default(),
            self_checks: Family::default(),
            url_wrong: Gauge::default(),
            events: Family::default(),
            dropped: Family::default(),
            grant_reads: Family::default(),
            grants_skipped: Family::default(),
            grant_allows: Family::default(),
            grants_in_force: Arc::default(),
        }
    }
}

/// `grants_active`, counted against the clock when scraped: a grant stops counting the
/// second it ends, with no refresh.
#[derive(Debug)]
struct GrantsCollector(Arc<arc_swap::ArcSwapOption<crate::policy::grants::GrantSet>>);

impl prometheus_client::collector::Collector for GrantsCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let active = self
            .0
            .load()
            .as_ref()
            .map_or(0, |set| set.active(crate::authn::unix_now()));
        let gauge = prometheus_client::metrics::gauge::ConstGauge::new(active as i64);
        let metric = encoder.encode_descriptor(
            "grants_active",
            "Grants from the reviewed grants file in force now",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

impl GerritMetrics {
    /// Adds these metrics to `registry` (prefix `mesh_authz_` comes from the registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gerrit_requests",
            "Gerrit group requests by outcome (each retry counts)",
            self.requests.clone(),
        );
        registry.register(
            "gerrit_request_duration_seconds",
            "Latency of one Gerrit group request",
            self.latency.clone(),
        );
        registry.register(
            "group_cache_lookups",
            "Group cache lookups by result: hit, miss, stale, refresh",
            self.lookups.clone(),
        );
        registry.register(
            "group_cache_entries",
            "Users in the group cache",
            self.entries.clone(),
        );
        registry.register(
            "gerrit_credentials_rejected",
            "1 while Gerrit rejects the service account (HTTP 401/403): a configuration problem",
            self.credentials_rejected.clone(),
        );
        registry.register(
            "gerrit_self_checks",
            "The service account looking itself up (GET /a/accounts/self, at start and every minute), by outcome",
            self.self_checks.clone(),
        );
        registry.register(
            "gerrit_url_wrong",
            "1 while Gerrit answers 404 for the service account itself: gerrit.url or its path prefix is wrong, and checks that need groups cannot be decided",
            self.url_wrong.clone(),
        );
        registry.register(
            "gerrit_events",
            "Gerrit events received at /gerrit/events, by result",
            self.events.clone(),
        );
        registry.register(
            "group_cache_dropped",
            "Group cache entries dropped by invalidation, by trigger",
            self.dropped.clone(),
        );
        registry.register(
            "grant_reads",
            "Reads of the grants file from Gerrit, by result",
            self.grant_reads.clone(),
        );
        registry.register(
            "grants_skipped",
            "1 for each entry of the grants file in force that was skipped as invalid (see the warning log line for why)",
            self.grants_skipped.clone(),
        );
        registry.register(
            "grant_allows",
            "Requests allowed by a grant, by grant",
            self.grant_allows.clone(),
        );
        registry.register_collector(Box::new(GrantsCollector(self.grants_in_force.clone())));
    }

    /// Records a read of the grants file.
    pub fn grant_read(&self, result: &'static str) {
        self.grant_reads
            .get_or_create(&GrantReadLabel { result })
            .inc();
    }

    /// A new grants set is in force, with these entries skipped.
    pub fn grants_in_force(
        &self,
        set: Arc<crate::policy::grants::GrantSet>,
        skipped: &[crate::policy::grants::Skipped],
    ) {
        self.grants_in_force.store(Some(set));
        self.grants_skipped.clear();
        for s in skipped {
            self.grants_skipped
                .get_or_create(&GrantLabel {
                    grant: s.entry.clone(),
                })
                .set(1);
        }
    }

    /// Counts a request a grant allowed.
    pub fn grant_allowed(&self, grant: &str) {
        self.grant_allows
            .get_or_create(&GrantLabel {
                grant: grant.to_string(),
            })
            .inc();
    }

    pub(super) fn request(&self, outcome: &'static str, elapsed: Duration) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
        self.latency.observe(elapsed.as_secs_f64());
        self.credentials_rejected
            .set(i64::from(outcome == "credentials"));
    }

    /// Records a self-check: a 404 means the URL is wrong, an answer (even 401/403) means
    /// it is right; a timeout or 5xx says nothing about it.
    pub(super) fn self_check(&self, outcome: &'static str) {
        self.self_checks
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.credentials_rejected
            .set(i64::from(outcome == "credentials"));
        match outcome {
            "not_found" => self.url_wrong.set(1),
            "ok" | "credentials" => self.url_wrong.set(0),
            _ => 0,
        };
    }

    pub(super) fn lookup(&self, result: &'static str) {
        self.lookups.get_or_create(&CacheLabel { result }).inc();
    }

    pub(super) fn events(&self, result: &'static str, n: usize) {
        self.events
            .get_or_create(&EventLabel { result })
            .inc_by(n as u64);
    }

    /// Counts cache entries dropped by an invalidation.
    pub fn dropped(&self, trigger: &'static str, n: usize) {
        self.dropped
            .get_or_create(&TriggerLabel { trigger })
            .inc_by(n as u64);
    }

    pub(super) fn entries(&self, n: u64) {
        self.entries.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Whether Gerrit rejected the service account on the last request.
    pub fn credentials_rejected(&self) -> bool {
        self.credentials_rejected.get() != 0
    }

    /// Whether the last self-check found no service account: a wrong `gerrit.url`.
    pub fn url_wrong(&self) -> bool {
        self.url_wrong.get() != 0
    }

    /// What keeps group checks from working while the server can still serve other
    /// routes (readiness reports it as degraded), if anything.
    pub fn degraded(&self) -> Option<&'static str> {
        if self.url_wrong() {
            Some("Gerrit answers 404 for the service account itself (GET /a/accounts/self): gerrit.url or its path prefix is wrong; checks that need groups cannot be decided")
        } else if self.credentials_rejected() {
            Some("Gerrit rejects the service account credentials; checks that need groups cannot be decided")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_404_for_the_service_account_says_the_url_is_wrong_and_only_an_answer_clears_it() {
        let m = GerritMetrics::default();
        assert_eq!(m.degraded(), None);
        m.self_check("not_found");
        assert!(m.degraded().is_some_and(|d| d.contains("gerrit.url")));
        // Gerrit down for a minute says nothing about the URL.
        for outcome in ["unreachable", "status", "bad_response"] {
            m.self_check(outcome);
            assert!(m.url_wrong(), "{outcome}");
        }
        m.self_check("credentials");
        assert!(!m.url_wrong(), "401: something authenticates there");
        assert!(m.degraded().is_some_and(|d| d.contains("credentials")));
        m.self_check("ok");
        assert_eq!(m.degraded(), None);
    }
}
