//! The checked configuration: what `compile` produces and the server is built from.

use crate::authn::{IssuerSettings, JwksSource, JwksTiming};
use crate::gerrit::{CacheSettings, GerritSettings};
use crate::identity::Group;
use crate::policy::RouteTable;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A checked configuration, ready to build a server from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (file path or the built-in name).
    pub source: String,
    /// The config file, if it came from one (watched for changes).
    pub path: Option<PathBuf>,
    /// Files the config was compiled from besides itself (JWKS files, the Gerrit CA
    /// bundle): a change to one is a change to the config.
    pub files: Vec<PathBuf>,
    /// Listen addresses and shutdown timing.
    pub server: ServerSettings,
    /// Accepted token issuers.
    pub issuers: Vec<IssuerConfig>,
    /// Where group membership comes from, if any route needs groups.
    pub groups: Option<GroupsConfig>,
    /// The route table.
    pub routes: RouteTable,
    /// Capacity of the verified-token cache (0: off).
    pub token_cache_entries: u64,
    /// Longest accepted token.
    pub max_token_bytes: usize,
    /// Where the audit log goes, if anywhere.
    pub audit: Option<AuditOutput>,
    /// Browser sign-in, if an issuer has a `browser_client`.
    pub browser: Option<crate::signin::BrowserSignInConfig>,
    /// Grants approved as reviews, if configured.
    pub grants: Option<GrantsConfig>,
    /// `telemetry.traces` as written; the `OTEL_*` variables fill in the rest at start.
    pub traces: TracesSettings,
}

impl Config {
    /// Lookup budgets that cannot fit in the time Envoy gives a Check
    /// (`server.envoy_timeout`), each as `(field, why)`: Envoy would give up on the Check
    /// before mesh-authz could answer "cannot decide" itself. Warnings, not errors: the
    /// config works, its failures just read as Envoy timeouts.
    pub fn timing_warnings(&self) -> Vec<(String, String)> {
        let deadline = self.server.envoy_timeout;
        let shown = |d: Duration| humantime::format_duration(d).to_string();
        let mut warnings = Vec::new();
        if let Some(GroupsConfig::Gerrit(gerrit)) = &self.groups {
            let s = &gerrit.settings;
            // Each try may take `timeout`; the backoff before try n is `retry_backoff`
            // times 2^(n-1), with up to +50 % jitter (gerrit::client).
            let backoff: Duration = (0..s.retries.min(10))
                .map(|n| s.retry_backoff.saturating_mul(1 << n).mul_f64(1.5))
                .sum();
            let worst = s.timeout.saturating_mul(s.retries + 1) + backoff;
            if worst >= deadline {
                warnings.push((
                    "gerrit.timeout".to_string(),
                    format!(
                        "one Gerrit lookup may take {} ({} tries of {} and their backoff), not less than server.envoy_timeout ({}): Envoy gives up first; lower gerrit.timeout or gerrit.retries",
                        shown(worst),
                        s.retries + 1,
                        shown(s.timeout),
                        shown(deadline)
                    ),
                ));
            }
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            if issuer.timing.check_timeout >= deadline {
                warnings.push((
                    format!("issuers[{i}].jwks.check_timeout"),
                    format!(
                        "{} is not less than server.envoy_timeout ({}): a Check waiting for a new key is timed out by Envoy first",
                        shown(issuer.timing.check_timeout),
                        shown(deadline)
                    ),
                ));
            }
        }
        warnings
    }
}

/// `telemetry.traces` as checked: what the config says, each `None` left to the
/// standard `OTEL_*` variable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracesSettings {
    /// Export forced on or off.
    pub enabled: Option<bool>,
    /// The collector's URL.
    pub endpoint: Option<url::Url>,
    /// How spans are sent.
    pub protocol: Option<OtlpProtocol>,
    /// `service.name`.
    pub service_name: Option<String>,
    /// Share of parentless Checks traced, 0 to 1.
    pub sample_ratio: Option<f64>,
    /// Whether the Check span names the user.
    pub include_user: bool,
    /// Spans waiting for export, at most.
    pub max_queue_size: Option<usize>,
    /// Longest export.
    pub export_timeout: Option<Duration>,
}

/// OTLP's two transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc`: the collector's TraceService, usually port 4317.
    Grpc,
    /// `http/protobuf`: POST to `/v1/traces`, usually port 4318.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The protocol an `OTEL_EXPORTER_OTLP_*PROTOCOL` value or the config names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}

/// `grants:` as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantsConfig {
    /// Where the file is and how it is kept.
    pub settings: crate::gerrit::GrantsSettings,
    /// What a denial tells the developer to do.
    pub how_to_ask: Option<String>,
}

/// Listen addresses and shutdown timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// gRPC address (Check, health, reflection).
    pub grpc_listen: SocketAddr,
    /// Admin HTTP address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// Time readiness is false before listeners close.
    pub drain_delay: Duration,
    /// Bound on waiting for in-flight checks.
    pub shutdown_timeout: Duration,
    /// Whether the config file is watched and reloaded when it changes.
    pub watch_config: bool,
    /// How often the config file is checked for changes besides file-system events.
    pub config_check_interval: Duration,
    /// `host:port` names resolving to every replica's admin address.
    pub peers: Vec<String>,
    /// Checks decided at once; more are shed with UNAVAILABLE.
    pub max_concurrent_checks: usize,
    /// HTTP/2 streams per gRPC connection.
    pub max_concurrent_streams: u32,
    /// How long Envoy waits for a Check (`server.envoy_timeout`).
    pub envoy_timeout: Duration,
}

/// One issuer: verification settings plus where its keys come from.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Claims and algorithms.
    pub settings: IssuerSettings,
    /// The JWKS source.
    pub jwks: JwksSource,
    /// Refresh, refetch and staleness timing.
    pub timing: JwksTiming,
}

/// Where group membership comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupsConfig {
    /// Gerrit's REST API.
    Gerrit(Box<GerritConfig>),
    /// A fixed table.
    Static(Arc<HashMap<String, Vec<Group>>>),
}

/// The `gerrit:` section, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GerritConfig {
    /// The endpoint, the service account and the request bounds.
    pub settings: GerritSettings,
    /// The receiver of Gerrit events at `POST /gerrit/events`, if enabled.
    pub events: Option<GerritEventsConfig>,
    /// Group cache ageing.
    pub cache: CacheSettings,
}

/// `gerrit.events`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GerritEventsConfig {
    /// File with the token senders must present, re-read on every request.
    pub token_file: Option<PathBuf>,
    /// The project Gerrit keeps groups in.
    pub all_users_project: String,
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    /// Standard output (application logs go to standard error).
    Stdout,
    /// A file, opened for append and reopened when rotated.
    File(PathBuf),
}
