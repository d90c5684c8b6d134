//! The Envoy path: a real Envoy (one worker) with the ext_authz filter (gRPC,
//! `failure_mode_allow: false`) in front of a `direct_response` route, driven over HTTP/1.1
//! by wrk.

use super::envoy_process::{envoy_in_venv, spawn, wait_until_ready};
use super::report::Stats;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Envoy: `ENVOY_BIN`, else the one in `<repo>/.venv` or `<repo>/target/envoy-venv` (as
/// the tests install it), else why there is none. The bench never installs it.
pub fn find() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("ENVOY_BIN={} is not a file", path.display()))
        };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for venv in [root.join(".venv"), root.join("target/envoy-venv")] {
        if let Some(path) = envoy_in_venv(&venv) {
            return Ok(path);
        }
    }
    Err("no Envoy: set ENVOY_BIN, or run the Envoy tests once (they install it into target/envoy-venv)".into())
}

/// `envoy --version`, trimmed.
pub fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Where the Envoy part's processes run. Pinned (the default on a machine with two or
/// more CPUs): Envoy on CPU 0, the Check server and wrk on the others, as at a gateway whose
/// Envoy has its cores to itself and whose authz server runs in a pod of its own.
/// Unpinned (`LOAD_BENCH_PIN=off`): the scheduler places everything, and whatever CPU a
/// Check server uses can come out of Envoy's core.
#[derive(Debug, Clone)]
pub struct Placement {
    /// `taskset -c` list for Envoy.
    pub envoy: Option<String>,
    /// `taskset -c` list for the Check server and wrk.
    pub others: Option<String>,
}

impl Placement {
    /// From `LOAD_BENCH_PIN` (`off` or unset) and the machine's CPU count.
    pub fn from_env(cpus: usize) -> Self {
        let off = std::env::var("LOAD_BENCH_PIN").is_ok_and(|v| v == "off" || v == "0");
        if off || cpus < 2 {
            return Self {
                envoy: None,
                others: None,
            };
        }
        Self {
            envoy: Some("0".into()),
            others: Some(format!("1-{}", cpus - 1)),
        }
    }

    /// For the report.
    pub fn describe(&self) -> String {
        match (&self.envoy, &self.others) {
            (Some(envoy), Some(others)) => format!(
                "pinned: Envoy on CPU {envoy}, Check server and wrk on CPU {others} (LOAD_BENCH_PIN=off to let the scheduler place them)"
            ),
            _ => "unpinned: the scheduler places Envoy, the Check server and wrk".into(),
        }
    }

    /// A command that runs `program` on `cpus`, if any.
    fn command(program: &Path, cpus: Option<&str>) -> Command {
        match cpus {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpus).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Moves every thread of a running process onto the others' CPUs.
    pub fn pin_other(&self, pid: u32) {
        let Some(cpus) = &self.others else { return };
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("running taskset (util-linux)");
        assert!(status.success(), "taskset -a -p -c {cpus} {pid} failed");
    }
}

/// A running Envoy, killed when dropped.
pub struct Envoy {
    child: Child,
    /// Where HTTP clients connect.
    pub listener: SocketAddr,
    /// The admin endpoint.
    pub admin: SocketAddr,
}

impl Envoy {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Envoy's bootstrap: one listener, a `direct_response` 200 for every path, and, with
/// `authz`, the ext_authz filter calling that Check server over HTTP/2.
fn bootstrap(authz: Option<SocketAddr>) -> String {
    let filter = match authz {
        Some(_) => {
            r#"
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              grpc_service:
                envoy_grpc: {cluster_name: authz}
                timeout: 0.5s"#
        }
        None => "",
    };
    let cluster = match authz {
        Some(addr) => format!(
            r#"
  clusters:
  - name: authz
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: authz
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}"#,
            ip = addr.ip(),
            port = addr.port()
        ),
        None => String::new(),
    };
    format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                direct_response:
                  status: 200
                  body: {{inline_string: "ok\n"}}
          http_filters:{filter}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{cluster}
"#
    )
}

impl Envoy {
    /// Starts Envoy with one worker (`--concurrency 1`) in `dir`, asking the Check server
    /// at `authz` (or no ext_authz filter at all), and waits until its listener is up.
    pub async fn start(
        binary: &Path,
        authz: Option<SocketAddr>,
        dir: &Path,
        placement: &Placement,
    ) -> Self {
        let tag = authz.map_or("none".to_string(), |a| a.port().to_string());
        let config = dir.join(format!("envoy-{tag}.yaml"));
        let admin_path = dir.join(format!("envoy-{tag}.admin"));
        let log_path = dir.join(format!("envoy-{tag}.log"));
        std::fs::write(&config, bootstrap(authz)).expect("writing Envoy's bootstrap");
        let command = Placement::command(binary, placement.envoy.as_deref());
        let mut child = spawn(command, &config, &admin_path, &log_path);
        let (admin, listener) = wait_until_ready(&mut child, &admin_path, &log_path).await;
        Self {
            child,
            listener,
            admin,
        }
    }

    /// The ext_authz counters `ok`, `denied`, `error` (as `name=value`).
    pub async fn authz_counters(&self) -> String {
        let stats = reqwest::get(format!("http://{}/stats?filter=ext_authz", self.admin))
            .await
            .and_then(|r| r.error_for_status());
        let Ok(stats) = stats else {
            return "unavailable".into();
        };
        let text = stats.text().await.unwrap_or_default();
        let wanted = ["ok", "denied", "error", "failure_mode_allowed"];
        let counters: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("http.ingress.ext_authz."))
            .filter(|l| wanted.iter().any(|w| l.starts_with(&format!("{w}:"))))
            .map(|l| l.replace(": ", "="))
            .collect();
        if counters.is_empty() {
            "none (no ext_authz filter)".into()
        } else {
            counters.join(" ")
        }
    }
}

/// wrk's settings.
#[derive(Debug, Clone, Copy)]
pub struct Wrk {
    /// Connections (`-c`).
    pub connections: u32,
    /// Duration (`-d`), seconds.
    pub seconds: u32,
}

impl Wrk {
    /// The command line, with `TOKEN` and `ENVOY` placeholders (for the report).
    pub fn command_line(&self) -> String {
        format!(
            "wrk -t1 -c{} -d{}s --latency -H 'Host: {}' -H 'Authorization: Bearer TOKEN' \
             http://ENVOY{}",
            self.connections,
            self.seconds,
            super::requests::HOST,
            super::requests::PATH,
        )
    }

    /// Runs wrk against Envoy's listener for `seconds` and reads its report.
    pub fn run(
        &self,
        listener: SocketAddr,
        token: &str,
        seconds: u32,
        placement: &Placement,
    ) -> Stats {
        let output = Placement::command(Path::new("wrk"), placement.others.as_deref())
            .arg("-t1")
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .args(["-H", &format!("Host: {}", super::requests::HOST)])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("http://{listener}{}", super::requests::PATH))
            .output()
            .expect("running wrk (is it installed? apt-get install wrk)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "wrk failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        parse(&stdout)
    }
}

/// Reads wrk's report: `Latency avg stdev max`, the `--latency` distribution
/// (50/75/90/99 %), `N requests in Xs`, `Non-2xx or 3xx responses: N`, `Requests/sec`.
/// wrk does not report the fastest request.
fn parse(out: &str) -> Stats {
    let fail = || -> ! { panic!("cannot read wrk's output:\n{out}") };
    let words = |prefix: &str| -> Vec<&str> {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.split_whitespace().collect())
            .unwrap_or_else(|| fail())
    };
    let latency = words("Latency ");
    let (average, slowest) = match latency.as_slice() {
        [avg, _stdev, max, ..] => (duration(avg), duration(max)),
        _ => fail(),
    };
    let percentile = |p: &str| duration(words(&format!("{p}%")).first().unwrap_or_else(|| fail()));
    let count: u64 = out
        .lines()
        .map(str::trim)
        .find_map(|l| l.split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| fail());
    let total = out
        .lines()
        .map(str::trim)
        .find_map(|l| l.split_once(" requests in "))
        .and_then(|(_, rest)| rest.split(',').next())
        .map(duration)
        .unwrap_or_else(|| fail());
    let rps: f64 = words("Requests/sec:")
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fail());
    let non_2xx: u64 = out
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    // `Socket errors: connect 0, read 0, write 0, timeout 5`, only when there are some.
    let socket_errors: u64 = out
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("Socket errors:"))
        .flat_map(|l| l.split([' ', ',']).filter_map(|w| w.parse::<u64>().ok()))
        .sum();
    let mut statuses = BTreeMap::new();
    statuses.insert("[HTTP 2xx/3xx]".to_string(), count - non_2xx);
    if non_2xx > 0 {
        statuses.insert("[HTTP other]".to_string(), non_2xx);
    }
    if socket_errors > 0 {
        statuses.insert("[socket errors]".to_string(), socket_errors);
    }
    Stats {
        count,
        total,
        rps,
        slowest,
        fastest: None,
        average,
        p50: percentile("50"),
        p90: percentile("90"),
        p99: percentile("99"),
        statuses,
        other_cpu: None,
        process_cpu: Vec::new(),
    }
}

/// wrk's durations: `830.12us`, `1.92ms`, `10.00s`, `1.50m`.
fn duration(text: &str) -> Duration {
    let text = text.trim();
    let units = [
        ("us", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    for (unit, scale) in units {
        if let Some(n) = text.strip_suffix(unit) {
            if let Ok(v) = n.parse::<f64>() {
                return Duration::from_secs_f64(v * scale);
            }
        }
    }
    panic!("cannot read wrk's duration {text:?}")
}

/// One request through Envoy (`Host` and optional bearer token); its HTTP status.
pub async fn probe(listener: SocketAddr, token: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .get(format!("http://{listener}{}", super::requests::PATH))
        .header("host", super::requests::HOST);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("request through Envoy failed: {e}"))
        .status()
        .as_u16()
}
