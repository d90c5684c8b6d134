//! Logs, metrics, the audit log and trace export.

pub mod audit;
mod metrics;
pub mod otlp;
pub mod traces;

pub use metrics::Metrics;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber: log lines on stderr (`RUST_LOG` overrides
/// the default `info`). Spans are not logged: those of the request path are OTLP's
/// ([`crate::trace`]).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal; in a pod they would litter the log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    };
    // `try_init`: a second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(fmt).try_init();
}
