//! The servers under load, each a process of its own: mesh-authz (the release binary
//! Cargo built for this bench) and the no-op baseline (this bench binary re-executed with
//! [`NOOP_FLAG`]). Also the configs mesh-authz is started with.

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use tokio_stream::StreamExt;

/// The argument that makes the bench binary serve the no-op baseline instead.
pub const NOOP_FLAG: &str = "--serve-noop";

/// With [`NOOP_FLAG`]: the no-op leaves the request undecoded.
pub const UNDECODED_FLAG: &str = "--undecoded";

/// A server process, killed (SIGKILL) when dropped.
pub struct ServerProcess {
    /// `mesh-authz ...` or `no-op baseline`.
    pub name: &'static str,
    child: Child,
    /// The gRPC (Check) address.
    pub grpc: SocketAddr,
    /// The admin address (mesh-authz only).
    pub admin: Option<SocketAddr>,
}

impl ServerProcess {
    /// Its process id (for /proc/PID/status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmRSS` and `VmHWM` (peak RSS) from /proc/PID/status, in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/PID/status of the server");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Whether this is mesh-authz (in any config), not the baseline.
    pub fn is_mesh_authz(&self) -> bool {
        self.name.starts_with("mesh-authz")
    }
}

/// The mesh-authz binary under test: `LOAD_BENCH_MESH_AUTHZ` (e.g. a build with other
/// profile settings), else the release binary Cargo built for this bench.
pub fn mesh_authz_binary() -> std::path::PathBuf {
    std::env::var_os("LOAD_BENCH_MESH_AUTHZ")
        .map_or_else(|| env!("CARGO_BIN_EXE_mesh-authz").into(), Into::into)
}

/// Starts `mesh-authz serve --config <config>` as `name`; its log goes to `log`, and its
/// standard output (where the quickstart writes its audit lines) to `stdout` if given, as
/// a user redirects it to a file.
pub fn start_mesh_authz(
    name: &'static str,
    config: &Path,
    log: &Path,
    stdout: Option<&Path>,
) -> ServerProcess {
    start_mesh_authz_with_env(name, config, log, stdout, &[])
}

/// Like [`start_mesh_authz`], with `env` added to its environment (the `OTEL_*`
/// variables of the traces part).
pub fn start_mesh_authz_with_env(
    name: &'static str,
    config: &Path,
    log: &Path,
    stdout: Option<&Path>,
    env: &[(&str, String)],
) -> ServerProcess {
    let mut command = Command::new(mesh_authz_binary());
    command.arg("serve").arg("--config").arg(config);
    for (key, value) in env {
        command.env(key, value);
    }
    match stdout {
        None => spawn(name, command, log),
        Some(file) => spawn_to_file(name, command, log, file),
    }
}

/// The argument that makes the bench binary serve an OTLP collector that counts and
/// discards spans.
pub const OTLP_SINK_FLAG: &str = "--serve-otlp-sink";

/// Starts the OTLP sink ([`OTLP_SINK_FLAG`]): a process of its own, so its CPU is not
/// charged to the server under test.
pub fn start_otlp_sink(log: &Path) -> ServerProcess {
    let exe = std::env::current_exe().expect("the bench binary knows its own path");
    let mut command = Command::new(exe);
    command.arg(OTLP_SINK_FLAG);
    spawn("OTLP sink", command, log)
}

/// A collector's TraceService that decodes each export (as a collector must) and keeps
/// only the count, printed to stderr at each thousandth export.
struct OtlpSink(std::sync::atomic::AtomicU64);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for OtlpSink
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let total = self
            .0
            .fetch_add(spans as u64, std::sync::atomic::Ordering::Relaxed)
            + spans as u64;
        eprintln!("spans received: {total}");
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Serves [`OtlpSink`] until killed; prints `grpc_listen=ADDR` once listening.
pub fn serve_otlp_sink() -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for the OTLP sink");
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("grpc_listen={}", listener.local_addr()?);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(
                opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                    OtlpSink(Default::default()),
                ),
            )
            .serve_with_incoming(incoming)
            .await
            .map_err(std::io::Error::other)
    });
    if let Err(e) = result {
        eprintln!("OTLP sink failed: {e}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

/// Starts the no-op baseline: this bench binary with [`NOOP_FLAG`].
pub fn start_noop(log: &Path) -> ServerProcess {
    let exe = std::env::current_exe().expect("the bench binary knows its own path");
    let mut command = Command::new(exe);
    command.arg(NOOP_FLAG);
    spawn("no-op baseline", command, log)
}

/// Starts the no-op that does not decode the request ([`UNDECODED_FLAG`]).
pub fn start_noop_undecoded(log: &Path) -> ServerProcess {
    let exe = std::env::current_exe().expect("the bench binary knows its own path");
    let mut command = Command::new(exe);
    command.arg(NOOP_FLAG).arg(UNDECODED_FLAG);
    spawn("no-op, request not decoded", command, log)
}

/// Like [`spawn`], with standard output going to `stdout_file`, read back for the address
/// line.
fn spawn_to_file(
    name: &'static str,
    mut command: Command,
    log: &Path,
    stdout_file: &Path,
) -> ServerProcess {
    let stderr = std::fs::File::create(log)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let stdout = std::fs::File::create(stdout_file)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", stdout_file.display()));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let line = loop {
        let text = std::fs::read_to_string(stdout_file).unwrap_or_default();
        if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
            break line.to_string();
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let log_text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{name} did not print its address; its log:\n{log_text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (grpc, admin) = listen_addresses(&line);
    let Some(grpc) = grpc else {
        let _ = child.kill();
        panic!("{name}: no grpc_listen= in its first line {line:?}");
    };
    ServerProcess {
        name,
        child,
        grpc,
        admin,
    }
}

/// `grpc_listen=ADDR [admin_listen=ADDR]`.
fn listen_addresses(line: &str) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let addr = |key: &str| -> Option<SocketAddr> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|a| a.parse().ok())
    };
    (addr("grpc_listen="), addr("admin_listen="))
}

/// Spawns a server that prints `grpc_listen=ADDR [admin_listen=ADDR]` on stdout once it
/// listens, and waits for that line.
fn spawn(name: &'static str, mut command: Command, log: &Path) -> ServerProcess {
    let stderr = std::fs::File::create(log)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    let (Some(grpc), admin) = listen_addresses(&line) else {
        let _ = child.kill();
        let log_text = std::fs::read_to_string(log).unwrap_or_default();
        panic!("{name} did not print its address (got {line:?}); its log:\n{log_text}");
    };
    // Keep draining stdout so that the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    ServerProcess {
        name,
        child,
        grpc,
        admin,
    }
}

/// The no-op Check service: every check is allowed with an empty `OkHttpResponse`.
struct Noop;

fn empty_ok() -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
        dynamic_metadata: None,
    }
}

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(empty_ok()))
    }
}

/// The no-op without even decoding the request (tonic's unary handling with a codec that
/// skips the message's bytes): the cheapest Check server tonic can run. mesh-authz reads
/// only the fields it needs in place, so the generated-types no-op decodes more of the
/// request than mesh-authz does; this one decodes less.
#[derive(Clone)]
struct UndecodedNoop;

impl tonic::server::NamedService for UndecodedNoop {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

struct SkipCodec;

impl tonic::codec::Codec for SkipCodec {
    type Encode = CheckResponse;
    type Decode = ();
    type Encoder = tonic_prost::ProstEncoder<CheckResponse>;
    type Decoder = SkipDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::default())
    }

    fn decoder(&mut self) -> SkipDecoder {
        SkipDecoder
    }
}

struct SkipDecoder;

impl tonic::codec::Decoder for SkipDecoder {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        use bytes::Buf;
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

struct EmptyOk;

impl tonic::server::UnaryService<()> for EmptyOk {
    type Response = CheckResponse;
    type Future = std::future::Ready<Result<tonic::Response<CheckResponse>, tonic::Status>>;

    fn call(&mut self, _: tonic::Request<()>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(empty_ok())))
    }
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for UndecodedNoop
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        Box::pin(async move {
            Ok(tonic::server::Grpc::new(SkipCodec)
                .unary(EmptyOk, request)
                .await)
        })
    }
}

/// Serves the no-op baseline until killed, like mesh-authz does its Check service: a
/// tokio multi-thread runtime with the default worker count, tonic's default server
/// settings, TCP_NODELAY on every connection. Prints `grpc_listen=ADDR` once listening.
/// `undecoded`: [`UndecodedNoop`] instead of [`Noop`].
pub fn serve_noop(undecoded: bool) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for the no-op server");
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("grpc_listen={}", listener.local_addr()?);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
            conn.inspect(|stream| {
                let _ = stream.set_nodelay(true);
            })
        });
        let mut server = tonic::transport::Server::builder();
        let served = if undecoded {
            server
                .add_service(UndecodedNoop)
                .serve_with_incoming(incoming)
                .await
        } else {
            server
                .add_service(AuthorizationServer::new(Noop))
                .serve_with_incoming(incoming)
                .await
        };
        served.map_err(std::io::Error::other)
    });
    if let Err(e) = result {
        eprintln!("no-op server failed: {e}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

/// The built-in quickstart config as shipped (`examples/quickstart/config.yaml`: audit to
/// stdout, config watching, dynamic metadata on the team-a route), listening on
/// ephemeral loopback ports instead of 9191/9192; with `audit: false`, the same without
/// its `audit:` section.
pub fn quickstart_config(audit: bool) -> String {
    let shipped = include_str!("../../examples/quickstart/config.yaml");
    let mut config = shipped
        .replace("grpc_listen: 0.0.0.0:9191", "grpc_listen: 127.0.0.1:0")
        .replace("admin_listen: 0.0.0.0:9192", "admin_listen: 127.0.0.1:0");
    assert_eq!(
        config.matches("127.0.0.1:0").count(),
        2,
        "the quickstart's listen addresses changed; update the bench"
    );
    if !audit {
        let section = "audit:\n  output: stdout\n";
        assert!(
            config.contains(section),
            "the quickstart's audit section changed; update the bench"
        );
        config = config.replace(section, "");
    }
    config
}

/// The quickstart's routes: the team-a route (group `team-a`, user/email/groups injected,
/// `authorization` removed) is the second, after the public landing page.
const ROUTES: &str = r#"
routes:
  - name: gerrit-public
    match:
      hosts: [gerrit.example.com]
      path: {exact: /}
      methods: [GET, HEAD]
    allow: public
    remove_headers: [authorization]
  - name: gerrit-team-a
    match:
      hosts: [gerrit.example.com]
      path: {segment_prefix: /a/projects/team-a}
    allow:
      groups_any_of: [team-a]
    inject:
      user: x-forwarded-user
      email: x-forwarded-email
      groups: x-forwarded-groups
    remove_headers: [authorization]
  - name: gerrit-signed-in
    match:
      hosts: [gerrit.example.com]
    allow: authenticated
    inject:
      user: x-forwarded-user
      email: x-forwarded-email
    remove_headers: [authorization]
"#;

/// The `server:` section: ephemeral loopback ports, no config watching, quick shutdown.
const SERVER: &str = r#"
server:
  grpc_listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
  drain_delay: 0s
  shutdown_timeout: 1s
  watch_config: false
"#;

/// A config with [`SERVER`], one issuer signing with `algorithm` whose keys are the file
/// `jwks.json`, the `groups` section, and [`ROUTES`].
fn config(issuer: &str, algorithm: &str, groups: &str) -> String {
    format!(
        r#"{SERVER}
issuers:
  - issuer: {issuer}
    audiences: [{audience}]
    jwks: {{file: jwks.json}}
    user_claim: preferred_username
    email_claim: email
    algorithms: [{algorithm}]
{groups}
{ROUTES}"#,
        audience = super::requests::AUDIENCE,
    )
}

/// The config of the memory part: one EdDSA issuer with the file JWKS `jwks.json`, the
/// Gerrit at `gerrit_url` (password in `gerrit-password`), every cache at its default
/// bound, no audit.
pub fn gerrit_config(gerrit_url: &str, gerrit_user: &str) -> String {
    config(
        super::requests::ED_ISSUER,
        "EdDSA",
        &format!(
            "gerrit:\n  url: {gerrit_url}\n  username: {gerrit_user}\n  password_file: gerrit-password"
        ),
    )
}

/// The `/metrics` text of a mesh-authz's admin port (empty when unreachable).
pub async fn metrics_text(server: &ServerProcess) -> String {
    let Some(admin) = server.admin else {
        return String::new();
    };
    match reqwest::get(format!("http://{admin}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// One sample of `/metrics` on the admin port (0 when absent).
pub async fn metric(server: &ServerProcess, sample: &str) -> f64 {
    metric_sum(&metrics_text(server).await, |name| name == sample)
}

/// The sum of the samples whose name (with labels) `select` accepts.
pub fn metric_sum(text: &str, select: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(name, _)| select(name))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// `manifests/base/config.yaml` as shipped (audit on, Gerrit groups, events, every route),
/// with what must point at this machine changed: ephemeral loopback ports, no peers, the
/// IdP's JWKS URL and Gerrit's URL at the bench's fakes, the events token in `token_file`.
pub fn manifests_config(fake: &str, token_file: &Path) -> String {
    let shipped = include_str!("../../manifests/base/config.yaml");
    let mut config = shipped.to_string();
    for (from, to) in [
        (
            "grpc_listen: 0.0.0.0:9191",
            "grpc_listen: 127.0.0.1:0".to_string(),
        ),
        (
            "admin_listen: 0.0.0.0:9192",
            "admin_listen: 127.0.0.1:0".to_string(),
        ),
        (
            "  peers: [mesh-authz-peers.mesh-authz.svc.cluster.local:9192]\n",
            String::new(),
        ),
        (
            "url: https://idp.example.com/.well-known/jwks.json",
            format!("url: {fake}/jwks.json"),
        ),
        (
            "url: http://gerrit.gerrit.svc.cluster.local:8080",
            format!("url: {fake}"),
        ),
        (
            "token_file: /etc/mesh-authz/gerrit/events-token",
            format!("token_file: {}", token_file.display()),
        ),
    ] {
        assert!(
            config.contains(from),
            "manifests/base/config.yaml no longer has {from:?}; update the bench"
        );
        config = config.replace(from, &to);
    }
    config
}
