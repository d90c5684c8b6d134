//! Assembling and running the listeners: gRPC (Check, health, reflection) and admin HTTP,
//! with a graceful shutdown that turns readiness false before anything closes.

use crate::admin::{self, GrpcHealth, Readiness};
use crate::authorize::{Authorizer, Shared};
use crate::config::reload;
use crate::config::{Config, ConfigError, Problem};
use crate::ext_authz::{Admission, CheckServer, CheckService};
use crate::gerrit::GerritMetrics;
use crate::telemetry::audit::AuditLog;
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

/// The descriptor set of `envoy.service.auth.v3` built from `proto/` by build.rs, served
/// by gRPC reflection.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/authz_descriptor.bin"));

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP client for JWKS and Gerrit could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    /// gRPC reflection could not load the descriptor sets.
    #[error("cannot set up gRPC reflection: {0}")]
    Reflection(String),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The admin server failed.
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
    /// The task running the listeners panicked or was cancelled.
    #[error("server task failed: {0}")]
    Task(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Closing,
}

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    /// Where the gRPC listener is bound (useful with port 0).
    pub grpc_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    phase: watch::Sender<Phase>,
    readiness: Arc<Readiness>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Starts a graceful shutdown: readiness turns false at once, the listeners close
    /// after the drain delay, in-flight checks finish (up to the shutdown timeout).
    pub fn begin_shutdown(&self) {
        // Before anything else: `/readyz` and gRPC health both say "not ready" from here.
        self.readiness.start_draining();
        self.phase.send_if_modified(|p| {
            let start = *p == Phase::Running;
            if start {
                *p = Phase::Draining;
            }
            start
        });
    }

    /// Shuts down and waits until every listener has closed.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.begin_shutdown();
        self.wait().await
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Task(e.to_string())),
        }
    }
}

/// A shared HTTP client for JWKS and Gerrit (rustls, connection pooling).
pub fn http_client() -> Result<reqwest::Client, ServerError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("mesh-authz/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ServerError::HttpClient(e.to_string()))
}

pub use crate::authorize::CurrentAuthorizer;

/// Binds the listeners and starts serving; with a config file and
/// `server.watch_config`, reloads it when it changes.
pub async fn start(config: &Config) -> Result<RunningServer, ServerError> {
    let shared = Shared {
        http: http_client()?,
        gerrit_metrics: GerritMetrics::default(),
    };
    let authorizer = Authorizer::build(config, &shared, None)?;
    authorizer.start_background();
    log_admin_authentication(&authorizer);
    let current: CurrentAuthorizer = Arc::new(ArcSwap::from_pointee(authorizer));
    let audit = match &config.audit {
        Some(output) => Some(AuditLog::start(output.clone()).map_err(|e| {
            ServerError::Config(ConfigError::Invalid {
                file: config.source.clone(),
                problems: vec![Problem {
                    path: "audit.output".into(),
                    reason: e.to_string(),
                }],
            })
        })?),
        None => None,
    };
    // Gerrit's metrics are registered whether or not Gerrit is configured now: a reload
    // may add it.
    let metrics = Arc::new(
        Metrics::new(Some(&shared.gerrit_metrics), audit.as_ref()).with_issuers(current.clone()),
    );
    let readiness = Arc::new(Readiness::new(current.clone()));

    let peers = if config.server.peers.is_empty() {
        None
    } else {
        Some(
            admin::Peers::new(config.server.peers.clone(), metrics.clone())
                .map_err(|e| ServerError::HttpClient(e.to_string()))?,
        )
    };

    let grpc_listener = bind(config.server.grpc_listen).await?;
    let admin_listener = bind(config.server.admin_listen).await?;
    let grpc_addr = local_addr(&grpc_listener, config.server.grpc_listen)?;
    let admin_addr = local_addr(&admin_listener, config.server.admin_listen)?;

    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;

    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let reloader = match (&config.path, config.server.watch_config) {
        (Some(path), true) => Some(tokio::spawn(reload::watch(
            path.clone(),
            config.clone(),
            config.server.config_check_interval,
            {
                let mut reloader = Reloader {
                    current: current.clone(),
                    shared,
                    metrics: metrics.clone(),
                    running: config.clone(),
                };
                move |new| reloader.apply(new)
            },
        ))),
        _ => None,
    };

    let check = CheckServer::new(
        CheckService::new(current.clone(), metrics.clone(), audit.clone())
            .with_user_in_traces(config.traces.include_user),
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener).map(|conn| {
        conn.map(|stream| {
            // Checks are small request/response pairs: Nagle only adds latency.
            let _ = stream.set_nodelay(true);
            Unvectored(stream)
        })
    });
    let grpc = tonic::transport::Server::builder()
        .max_concurrent_streams(config.server.max_concurrent_streams)
        .layer(Admission::new(
            config.server.max_concurrent_checks,
            metrics.clone(),
        ))
        .add_service(GrpcHealth::new(readiness.clone()).server())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(check)
        .serve_with_incoming_shutdown(incoming, closing(phase_rx.clone()));
    let admin = axum::serve(
        admin_listener,
        admin::router(current.clone(), readiness.clone(), metrics, peers),
    )
    .with_graceful_shutdown(closing(phase_rx.clone()));

    let server = config.server.clone();
    let drain = {
        let phase_tx = phase_tx.clone();
        let mut phase_rx = phase_rx.clone();
        async move {
            // Readiness went false first (`begin_shutdown`), so load balancers stop
            // sending new checks; then the listeners close.
            if phase_rx.wait_for(|p| *p != Phase::Running).await.is_ok() {
                tracing::info!(drain_delay = ?server.drain_delay, "shutting down: readiness is now false");
                tokio::time::sleep(server.drain_delay).await;
            }
            phase_tx.send_replace(Phase::Closing);
        }
    };
    let task = tokio::spawn(async move {
        tokio::spawn(drain);
        let deadline = async {
            closing(phase_rx.clone()).await;
            tokio::time::sleep(server.shutdown_timeout).await;
        };
        let result = tokio::select! {
            (grpc, admin) = async { tokio::join!(grpc, admin) } => {
                grpc.map_err(ServerError::from).and(admin.map_err(ServerError::Admin))
            }
            () = deadline => {
                tracing::warn!(timeout = ?server.shutdown_timeout, "shutdown timeout reached with checks still in flight");
                Ok(())
            }
        };
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        // Background refreshers end with the pieces they keep fresh.
        drop(current);
        if let Some(audit) = audit {
            // The last decisions must reach the log before the process exits.
            let _ = tokio::task::spawn_blocking(move || audit.flush(Duration::from_secs(5))).await;
        }
        tracing::info!("stopped");
        result
    });
    tracing::info!(%grpc_addr, %admin_addr, config = %config.source, "mesh-authz listening");
    Ok(RunningServer {
        grpc_addr,
        admin_addr,
        phase: phase_tx,
        readiness,
        task,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Applies each new config version: a new authorizer built from it (keeping what did not
/// change) replaces the current one atomically; a version that does not compile or build
/// is refused and the current one keeps serving.
struct Reloader {
    current: CurrentAuthorizer,
    shared: Shared,
    metrics: Arc<Metrics>,
    /// The config the server was started with: what only a restart changes is compared
    /// with it.
    running: Config,
}

impl Reloader {
    fn apply(&mut self, new: Result<Config, ConfigError>) {
        let built = new.and_then(|config| {
            let previous = self.current.load();
            Authorizer::build(&config, &self.shared, Some(&previous)).map(|a| (config, a))
        });
        match built {
            Ok((config, authorizer)) => {
                authorizer.start_background();
                log_admin_authentication(&authorizer);
                self.current.store(Arc::new(authorizer));
                self.metrics.config_reload(true);
                tracing::info!(
                    config = %config.source,
                    routes = config.routes.routes().len(),
                    issuers = config.issuers.len(),
                    "config reloaded"
                );
                let restart_only = [
                    ("server", config.server != self.running.server),
                    ("audit", config.audit != self.running.audit),
                    ("telemetry", config.traces != self.running.traces),
                ];
                for (section, changed) in restart_only {
                    if changed {
                        tracing::warn!(
                            section,
                            "this section changed; it takes effect at the next restart"
                        );
                    }
                }
            }
            Err(e) => {
                self.metrics.config_reload(false);
                tracing::error!(error = %e, "config change refused; the previous config keeps serving");
            }
        }
    }
}

/// Says at start (and after a reload) what the admin port's invalidation endpoints
/// accept: with Gerrit groups, invalidation needs the events token and is off without one.
fn log_admin_authentication(authorizer: &Authorizer) {
    let gerrit = authorizer.groups().and_then(|g| g.gerrit()).is_some();
    match authorizer.group_events() {
        Some(events) if events.has_token() => {}
        Some(_) => tracing::warn!(
            "gerrit.events has no token_file: anyone who reaches the admin port can post group events, and {}",
            admin::INVALIDATION_OFF
        ),
        None if gerrit => tracing::info!("{}", admin::INVALIDATION_OFF),
        None => {}
    }
}

/// Resolves once the listeners should close.
async fn closing(mut phase: watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p == Phase::Closing).await;
}

/// A connection that tells h2 it has no vectored writes, so that h2 copies DATA frames
/// of up to 1 KiB into its write buffer instead of 256 bytes.
///
/// With vectored writes, h2 keeps a larger DATA frame aside to write it in place, and
/// holds only one such frame at a time: each answer over 256 bytes (a denial with its
/// JSON body, an allow with identity headers and dynamic metadata) costs a `writev` of
/// its own. Copied, the answers of concurrent checks go out together. Measured under
/// h2load (c8, m16): 1.7 `writev` per check before, see docs/performance.md.
#[derive(Debug)]
struct Unvectored(tokio::net::TcpStream);

impl tokio::io::AsyncRead for Unvectored {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Unvectored {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl tonic::transport::server::Connected for Unvectored {
    type ConnectInfo = <tokio::net::TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}
