//! OTLP trace export: the config's `telemetry.traces` merged with the standard `OTEL_*`
//! variables (the config wins), and the export queue and task they start, into which
//! [`crate::trace`] puts its spans.

use crate::config::{OtlpProtocol, TracesSettings};
use crate::telemetry::otlp::queue::{Collector, ExportTask, QueueSettings, SpanQueue};
use crate::telemetry::otlp::wire::{EncodedResource, EncodedScope};
use crate::telemetry::otlp::{ExportHeaders, OtlpExporter};
use crate::trace::Sampling;
use std::sync::Arc;
use std::time::Duration;

/// Why trace export cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// An `OTEL_*` variable holds something unusable.
    #[error("{variable}: {problem}")]
    Variable {
        /// The variable.
        variable: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// Where and how spans go, once the config and the environment are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// The collector URL the exporter is given.
    pub endpoint: String,
    /// gRPC or HTTP.
    pub protocol: OtlpProtocol,
    /// `service.name`, when set here or in the config (else the SDK reads
    /// `OTEL_SERVICE_NAME`, and mesh-authz's name is the fallback).
    pub service_name: Option<String>,
    /// Which Checks are traced: the config's ratio (parent-based), else
    /// `OTEL_TRACES_SAMPLER`/`_ARG`, else every Check whose caller does not say no.
    pub sampling: Sampling,
    /// Spans waiting for export, at most: the config's, else `OTEL_BSP_MAX_QUEUE_SIZE`,
    /// else 2048.
    pub max_queue_size: usize,
    /// Spans in one export, at most: `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (no more than
    /// the queue), else 512.
    pub max_export_batch_size: usize,
    /// How long a batch that is not full waits: `OTEL_BSP_SCHEDULE_DELAY`
    /// (milliseconds), else 5 s.
    pub schedule_delay: Duration,
    /// How long one export may take: the config's, else `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`
    /// or `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10 s.
    pub export_timeout: Duration,
    /// Headers each export carries: `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,...`, values percent-decoded).
    pub headers: ExportHeaders,
    /// Whether Check spans name the user.
    pub include_user: bool,
}

/// The specification's default queue (`OTEL_BSP_MAX_QUEUE_SIZE`).
const DEFAULT_QUEUE: usize = 2048;

/// The specification's default batch (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
const DEFAULT_BATCH: usize = 512;

/// The specification's default schedule delay (`OTEL_BSP_SCHEDULE_DELAY`).
const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_secs(5);

/// The OTLP exporter specification's default export timeout.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

impl TraceExport {
    /// What `settings` and the variables `env` reads say; `None` when export is off.
    pub fn resolve(
        settings: &TracesSettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TracesError> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let disabled_by_env = set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true")
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
        let protocol = match settings.protocol {
            Some(p) => p,
            None => match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
                .or_else(|| {
                    set("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v))
                }) {
                Some((variable, value)) => {
                    OtlpProtocol::parse(value.trim()).ok_or_else(|| TracesError::Variable {
                        variable,
                        problem: format!("{value:?}: `grpc` or `http/protobuf`"),
                    })?
                }
                None => OtlpProtocol::Grpc,
            },
        };
        // The signal-specific variable is the whole URL; the general one is a base to
        // which HTTP appends the signal's path (OTLP exporter spec).
        let endpoint = match &settings.endpoint {
            Some(url) => Some(url.as_str().to_string()),
            None => set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
                set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| match protocol {
                    OtlpProtocol::Grpc => base,
                    OtlpProtocol::HttpProtobuf => {
                        format!("{}/v1/traces", base.trim_end_matches('/'))
                    }
                })
            }),
        };
        let on = match settings.enabled {
            Some(on) => on,
            None => endpoint.is_some() && !disabled_by_env,
        };
        if !on {
            return Ok(None);
        }
        let endpoint = endpoint.unwrap_or_else(|| match protocol {
            OtlpProtocol::Grpc => "http://localhost:4317".into(),
            OtlpProtocol::HttpProtobuf => "http://localhost:4318/v1/traces".into(),
        });
        let max_queue_size = match settings.max_queue_size {
            Some(n) => n,
            None => env_positive(&set, "OTEL_BSP_MAX_QUEUE_SIZE")?.unwrap_or(DEFAULT_QUEUE),
        };
        let max_export_batch_size = env_positive(&set, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?
            .unwrap_or(DEFAULT_BATCH)
            .min(max_queue_size);
        let schedule_delay = env_positive(&set, "OTEL_BSP_SCHEDULE_DELAY")?
            .map_or(DEFAULT_SCHEDULE_DELAY, |ms| {
                Duration::from_millis(ms as u64)
            });
        Ok(Some(Self {
            endpoint,
            protocol,
            service_name: settings.service_name.clone().or_else(|| {
                set("OTEL_SERVICE_NAME")
                    .is_none()
                    .then(|| "mesh-authz".into())
            }),
            sampling: match settings.sample_ratio {
                Some(ratio) => Sampling {
                    ratio,
                    follow_parent: true,
                },
                None => env_sampling(&set)?,
            },
            max_queue_size,
            max_export_batch_size,
            schedule_delay,
            export_timeout: match settings.export_timeout {
                Some(timeout) => timeout,
                None => env_timeout(&set)?,
            },
            headers: env_headers(&set)?,
            include_user: settings.include_user,
        }))
    }

    /// Builds the exporter, starts the export task and turns tracing on. Must run
    /// inside the tokio runtime, from which the task sends.
    pub fn start(&self) -> Result<ExportTask, TracesError> {
        let headers = self.headers.clone();
        let exporter = match self.protocol {
            OtlpProtocol::Grpc => OtlpExporter::grpc(&self.endpoint, headers, self.export_timeout),
            OtlpProtocol::HttpProtobuf => {
                OtlpExporter::http(&self.endpoint, headers, self.export_timeout)
            }
        }
        .map_err(|e| TracesError::Exporter(e.to_string()))?;
        Ok(self.start_with(exporter))
    }

    /// Like [`TraceExport::start`], sending to `collector` (the OTLP exporter there;
    /// another when profiling).
    pub fn start_with(&self, collector: impl Collector) -> ExportTask {
        let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
            opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        );
        if let Some(name) = &self.service_name {
            resource = resource.with_service_name(name.clone());
        }
        let queue = Arc::new(SpanQueue::new(QueueSettings {
            capacity: self.max_queue_size,
            batch_size: self.max_export_batch_size,
            delay: self.schedule_delay,
        }));
        let task = ExportTask::spawn(
            queue.clone(),
            collector,
            EncodedResource::new(&resource.build()),
            EncodedScope::new(&crate::trace::scope()),
        );
        crate::trace::start(self.sampling, queue);
        task
    }
}

/// The positive number variable `variable` holds, if it is set.
fn env_positive(
    set: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<Option<usize>, TracesError> {
    set(variable)
        .map(|v| {
            v.trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| TracesError::Variable {
                    variable,
                    problem: format!("{v:?} is not a positive number"),
                })
        })
        .transpose()
}

/// The first of `variables` that is set (the signal's own before the general one), and
/// its value.
fn first_set(
    set: &impl Fn(&str) -> Option<String>,
    variables: [&'static str; 2],
) -> Option<(&'static str, String)> {
    variables
        .into_iter()
        .find_map(|name| set(name).map(|value| (name, value)))
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`: milliseconds.
fn env_timeout(set: &impl Fn(&str) -> Option<String>) -> Result<Duration, TracesError> {
    let Some((variable, value)) = first_set(
        set,
        [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ],
    ) else {
        return Ok(DEFAULT_EXPORT_TIMEOUT);
    };
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| TracesError::Variable {
            variable,
            problem: format!("{value:?} is not a positive number of milliseconds"),
        })
}

/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`: `key=value`
/// pairs split by commas, values percent-decoded (W3C Baggage's format, as the OTLP
/// exporter specification says). A pair that is not a valid header is refused by its
/// position, never by its value, which may be a secret.
fn env_headers(set: &impl Fn(&str) -> Option<String>) -> Result<ExportHeaders, TracesError> {
    let Some((variable, value)) = first_set(
        set,
        [
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ],
    ) else {
        return Ok(ExportHeaders::default());
    };
    let mut headers = Vec::new();
    for (n, pair) in value.split(',').map(str::trim).enumerate() {
        if pair.is_empty() {
            continue;
        }
        let bad = |what: &str| TracesError::Variable {
            variable,
            problem: format!("pair {} is not `key=value` with {what}", n + 1),
        };
        let (name, raw) = pair.split_once('=').ok_or_else(|| bad("an `=`"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| bad("a valid header name"))?;
        let decoded = percent_encoding::percent_decode_str(raw.trim()).collect::<Vec<u8>>();
        let mut value =
            http::HeaderValue::from_bytes(&decoded).map_err(|_| bad("a valid header value"))?;
        value.set_sensitive(true);
        headers.push((name, value));
    }
    Ok(ExportHeaders(headers))
}

/// The sampler `OTEL_TRACES_SAMPLER` (and `OTEL_TRACES_SAMPLER_ARG`) names, as the SDK
/// spec defines them; `parentbased_always_on` when unset.
fn env_sampling(set: &impl Fn(&str) -> Option<String>) -> Result<Sampling, TracesError> {
    let ratio = || -> Result<f64, TracesError> {
        match set("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(arg) => arg
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| TracesError::Variable {
                    variable: "OTEL_TRACES_SAMPLER_ARG",
                    problem: format!("{arg:?} is not a ratio between 0 and 1"),
                }),
        }
    };
    let (ratio, follow_parent) = match set("OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => (1.0, true),
        Some("parentbased_always_off") => (0.0, true),
        Some("parentbased_traceidratio") => (ratio()?, true),
        Some("always_on") => (1.0, false),
        Some("always_off") => (0.0, false),
        Some("traceidratio") => (ratio()?, false),
        Some(other) => {
            return Err(TracesError::Variable {
                variable: "OTEL_TRACES_SAMPLER",
                problem: format!(
                    "{other:?}: always_on, always_off, traceidratio or their parentbased_ forms"
                ),
            })
        }
    };
    Ok(Sampling {
        ratio,
        follow_parent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(
        settings: &TracesSettings,
        vars: &[(&str, &str)],
    ) -> Result<Option<TraceExport>, TracesError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TraceExport::resolve(settings, |name| vars.get(name).cloned())
    }

    #[test]
    fn export_is_off_without_an_endpoint_anywhere() {
        assert_eq!(resolve(&TracesSettings::default(), &[]).unwrap(), None);
        assert_eq!(
            resolve(&TracesSettings::default(), &[("OTEL_SERVICE_NAME", "x")]).unwrap(),
            None
        );
    }

    #[test]
    fn the_standard_variables_turn_export_on() {
        let grpc = resolve(
            &TracesSettings::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(grpc.endpoint, "http://collector:4317");
        assert_eq!(grpc.protocol, OtlpProtocol::Grpc);
        assert_eq!(grpc.service_name.as_deref(), Some("mesh-authz"));
        assert_eq!(grpc.max_queue_size, 2048);
        assert_eq!(grpc.max_export_batch_size, 512);
        assert_eq!(grpc.schedule_delay, Duration::from_secs(5));
        // HTTP appends the signal's path to the general endpoint, not to the specific one.
        let http = resolve(
            &TracesSettings::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_SERVICE_NAME", "authz-eu"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
                ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(http.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(http.protocol, OtlpProtocol::HttpProtobuf);
        // The SDK reads OTEL_SERVICE_NAME itself.
        assert_eq!(http.service_name, None);
        assert_eq!(http.max_queue_size, 100);
        assert_eq!(http.max_export_batch_size, 64);
        assert_eq!(http.schedule_delay, Duration::from_millis(250));
        let specific = resolve(
            &TracesSettings::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:4318/custom",
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(specific.endpoint, "http://traces:4318/custom");
        assert_eq!(specific.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn the_config_wins_over_the_variables() {
        let settings = TracesSettings {
            endpoint: Some(url::Url::parse("http://from-config:4317").unwrap()),
            protocol: Some(OtlpProtocol::Grpc),
            service_name: Some("authz".into()),
            max_queue_size: Some(10),
            ..TracesSettings::default()
        };
        let export = resolve(
            &settings,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://from-env:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_SERVICE_NAME", "env-name"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "99"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(export.endpoint, "http://from-config:4317/");
        assert_eq!(export.protocol, OtlpProtocol::Grpc);
        assert_eq!(export.service_name.as_deref(), Some("authz"));
        assert_eq!(export.max_queue_size, 10);
        // A batch is never larger than the queue.
        assert_eq!(export.max_export_batch_size, 10);
        let off = TracesSettings {
            enabled: Some(false),
            ..TracesSettings::default()
        };
        assert_eq!(
            resolve(&off, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]).unwrap(),
            None
        );
    }

    #[test]
    fn the_sdk_switches_turn_variable_driven_export_off_but_not_the_configs() {
        for vars in [
            [("OTEL_SDK_DISABLED", "true")],
            [("OTEL_TRACES_EXPORTER", "none")],
        ] {
            let mut all = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")];
            all.extend(vars);
            assert_eq!(resolve(&TracesSettings::default(), &all).unwrap(), None);
            let forced = TracesSettings {
                enabled: Some(true),
                ..TracesSettings::default()
            };
            assert!(resolve(&forced, &all).unwrap().is_some());
        }
    }

    #[test]
    fn unusable_variables_are_errors_that_name_them() {
        let e = resolve(
            &TracesSettings::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL: \"http/json\": `grpc` or `http/protobuf`"
        );
        let e = resolve(
            &TracesSettings::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("OTEL_BSP_MAX_QUEUE_SIZE"), "{e}");
        let e = resolve(
            &TracesSettings::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_BSP_SCHEDULE_DELAY", "5s"),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("OTEL_BSP_SCHEDULE_DELAY"), "{e}");
        let e = resolve(
            &TracesSettings::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("OTEL_TRACES_SAMPLER:"), "{e}");
    }

    #[test]
    fn the_sampler_variables_and_the_configs_ratio_decide_sampling() {
        let sampling = |settings: &TracesSettings, vars: &[(&str, &str)]| {
            let mut all = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")];
            all.extend_from_slice(vars);
            let s = resolve(settings, &all).unwrap().unwrap().sampling;
            (s.ratio, s.follow_parent)
        };
        let none = TracesSettings::default();
        assert_eq!(sampling(&none, &[]), (1.0, true));
        assert_eq!(
            sampling(&none, &[("OTEL_TRACES_SAMPLER", "always_on")]),
            (1.0, false)
        );
        assert_eq!(
            sampling(
                &none,
                &[
                    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0.25")
                ]
            ),
            (0.25, true)
        );
        let configured = TracesSettings {
            sample_ratio: Some(0.5),
            ..TracesSettings::default()
        };
        assert_eq!(
            sampling(&configured, &[("OTEL_TRACES_SAMPLER", "always_off")]),
            (0.5, true)
        );
    }

    #[test]
    fn export_headers_and_timeout_come_from_the_variables_and_values_are_never_shown() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        let export = resolve(
            &TracesSettings::default(),
            &[
                on,
                ("OTEL_EXPORTER_OTLP_HEADERS", "ignored=1"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                    " api-key = s%3Dcr3t ,, x-team=a b",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ],
        )
        .unwrap()
        .unwrap();
        let headers: Vec<_> = export
            .headers
            .0
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(headers, [("api-key", "s=cr3t"), ("x-team", "a b")]);
        assert_eq!(export.export_timeout, Duration::from_millis(2500));
        let shown = format!("{export:?}");
        assert!(
            shown.contains("api-key") && !shown.contains("cr3t"),
            "{shown}"
        );

        let plain = resolve(&TracesSettings::default(), &[on]).unwrap().unwrap();
        assert_eq!(plain.export_timeout, Duration::from_secs(10));
        assert!(plain.headers.0.is_empty());

        for (variable, value) in [
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad name=s3cret"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "k=s3cret%0A"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
        ] {
            let e = resolve(&TracesSettings::default(), &[on, (variable, value)]).unwrap_err();
            assert!(e.to_string().starts_with(variable), "{e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }
}
