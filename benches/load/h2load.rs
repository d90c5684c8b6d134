//! Driving a Check server with h2load: one framed request body, gRPC headers, per-request
//! latencies from its `--log-file`.
//!
//! h2load does not read gRPC trailers: its status distribution is HTTP-level (a denied
//! check is HTTP 200 too). The bench therefore asserts the decision with a gRPC client
//! before each run.

use super::report::Stats;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The gRPC path of Check.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// h2load's settings (the same for every server).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Requests (`-n`).
    pub requests: u64,
    /// Connections (`-c`).
    pub connections: u32,
    /// Concurrent streams per connection (`-m`).
    pub streams: u32,
}

impl Settings {
    /// The same settings with another request count (for warm-up runs).
    pub fn with_requests(self, requests: u64) -> Self {
        Self { requests, ..self }
    }

    /// The command line, with `BODY`, `LOG` and `ADDR` placeholders (for the report).
    pub fn command_line(&self) -> String {
        format!(
            "h2load -n {} -c {} -m {} -t 1 -d BODY -H 'content-type: application/grpc' \
             -H 'te: trailers' -H 'grpc-timeout: {GRPC_TIMEOUT}' --log-file LOG http://ADDR{CHECK_PATH}",
            self.requests, self.connections, self.streams
        )
    }
}

/// The deadline Envoy puts on each Check: its ext_authz `timeout` (0.5 s, as docs/istio.md
/// configures Istio) as `grpc-timeout` (measured: Envoy 1.40 sends `grpc-timeout: 500m`).
pub const GRPC_TIMEOUT: &str = "500m";

/// A run at a fixed offered rate: `rps` in all, spread over the connections, for `seconds`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Connections and streams, as in the saturating runs.
    pub settings: Settings,
    /// Checks per second offered, in all.
    pub rps: u32,
    /// Duration (`-D`).
    pub seconds: u32,
}

impl Rate {
    /// The command line, with placeholders (for the report).
    pub fn command_line(&self) -> String {
        format!(
            "h2load -D {} --rps {} -c {} -m {} -t 1 -d BODY -H 'content-type: application/grpc' \
             -H 'te: trailers' -H 'grpc-timeout: {GRPC_TIMEOUT}' --log-file LOG http://ADDR{CHECK_PATH}",
            self.seconds,
            self.per_connection(),
            self.settings.connections,
            self.settings.streams
        )
    }

    /// h2load's `--rps` is per client (connection).
    fn per_connection(&self) -> u32 {
        (self.rps / self.settings.connections.max(1)).max(1)
    }
}

/// Runs h2load at a fixed rate against `addr` and reads the latencies it logged.
pub fn run_rate(rate: Rate, addr: SocketAddr, body: &Path, log: &Path) -> Stats {
    let (stats, _) = invoke(
        rate.settings,
        &[
            "-D".into(),
            rate.seconds.to_string(),
            "--rps".into(),
            rate.per_connection().to_string(),
        ],
        addr,
        body,
        log,
    );
    stats
}

/// Runs h2load with `settings`' connections and streams for `seconds` (as fast as answers
/// come) and reads the latencies it logged.
pub fn run_for(
    settings: Settings,
    seconds: u32,
    addr: SocketAddr,
    body: &Path,
    log: &Path,
) -> Stats {
    let (stats, _) = invoke(
        settings,
        &["-D".into(), seconds.to_string()],
        addr,
        body,
        log,
    );
    stats
}

/// Runs h2load against `addr` sending `body` (a framed request) and reads the per-request
/// latencies it logged to `log`.
pub fn run(settings: Settings, addr: SocketAddr, body: &Path, log: &Path) -> Stats {
    let (stats, stdout) = invoke(
        settings,
        &["-n".into(), settings.requests.to_string()],
        addr,
        body,
        log,
    );
    let failed = settings.requests - stats.count;
    assert_eq!(
        failed, 0,
        "h2load: {failed} of {} requests got no answer:\n{stdout}",
        settings.requests
    );
    stats
}

/// Runs h2load with `settings`' connections and streams, `length` (how many requests or
/// how long, and at what rate) and what every run shares (one thread, the gRPC headers,
/// `body`, the log): its statistics, and its standard output.
fn invoke(
    settings: Settings,
    length: &[String],
    addr: SocketAddr,
    body: &Path,
    log: &Path,
) -> (Stats, String) {
    let _ = std::fs::remove_file(log);
    let output = Command::new("h2load")
        .args(length)
        .args(["-c", &settings.connections.to_string()])
        .args(["-m", &settings.streams.to_string()])
        .args(["-t", "1"])
        .arg("-d")
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", &format!("grpc-timeout: {GRPC_TIMEOUT}")])
        .arg("--log-file")
        .arg(log)
        .arg(format!("http://{addr}{CHECK_PATH}"))
        .output()
        .expect("running h2load (is it installed? apt-get install nghttp2-client)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "h2load failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let (total, rps) = finished(&stdout);
    let (nanos, statuses) = read_log(log);
    let stats = Stats {
        rps,
        ..Stats::from_latencies(nanos, total, statuses)
    };
    (stats, stdout)
}

/// `finished in 2.75s, 72727.27 req/s, ...`: the run's duration and h2load's req/s.
fn finished(stdout: &str) -> (Duration, f64) {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .unwrap_or_else(|| panic!("no `finished in` line in h2load's output:\n{stdout}"));
    let mut parts = line.split(", ");
    let total = parts.next().and_then(parse_duration);
    let rps = parts
        .next()
        .and_then(|p| p.strip_suffix(" req/s"))
        .and_then(|p| p.parse().ok());
    match (total, rps) {
        (Some(total), Some(rps)) => (total, rps),
        _ => panic!("cannot read h2load's `finished in {line}`"),
    }
}

/// `2.75s`, `850.12ms`, `900us` (h2load's units).
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    let value: f64 = number.trim().parse().ok()?;
    Some(Duration::from_secs_f64(value * scale))
}

/// h2load's `--log-file` (nghttp2 1.52): one line per completed request, tab-separated:
/// start time (µs since the epoch), HTTP status, time to the end of the response (µs).
/// Returns the latencies in nanoseconds and the count per HTTP status.
fn read_log(log: &Path) -> (Vec<u64>, BTreeMap<String, u64>) {
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("reading h2load's log {}: {e}", log.display()));
    let mut nanos = Vec::with_capacity(text.len() / 24);
    let mut statuses = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut columns = line.split('\t');
        let (_start, status, micros) = (columns.next(), columns.next(), columns.next());
        let (Some(status), Some(Ok(micros))) = (status, micros.map(str::parse::<u64>)) else {
            panic!("unexpected line in h2load's log: {line:?}");
        };
        *statuses.entry(format!("[HTTP {status}]")).or_insert(0) += 1;
        nanos.push(micros * 1000);
    }
    (nanos, statuses)
}

/// The share of the requests in h2load's `log` answered within `limit`.
pub fn share_within(log: &Path, limit: Duration) -> f64 {
    let (nanos, _) = read_log(log);
    let limit = limit.as_nanos() as u64;
    nanos.iter().filter(|&&n| n <= limit).count() as f64 / nanos.len().max(1) as f64
}
