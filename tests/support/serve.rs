//! The real `mesh-authz serve` as its own process: for what is set up once per process
//! (the global trace exporter, the `OTEL_*` variables).

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::AsyncBufReadExt;
use tonic::transport::Channel;

/// A running `mesh-authz serve`; stopped with SIGTERM when dropped.
pub struct Served {
    child: tokio::process::Child,
    /// The gRPC (Check) address.
    pub grpc: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    /// The config directory; `serve.log` holds the server's stderr.
    pub dir: tempfile::TempDir,
}

/// The variables a test's environment may carry that would change what is exported.
const OTEL_VARIABLES: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_RESOURCE_ATTRIBUTES",
];

impl Served {
    /// Writes `yaml` (and `files`) to a temp dir and starts `serve` on it with `env`
    /// added to a clean `OTEL_*` environment; returns once it prints its addresses.
    pub async fn start(yaml: &str, files: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-authz"));
        command
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        for name in OTEL_VARIABLES {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .await
            .unwrap();
        let address = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| {
                    panic!(
                        "serve printed no addresses ({line:?}); its log:\n{}",
                        std::fs::read_to_string(dir.path().join("serve.log")).unwrap()
                    )
                })
                .parse()
                .unwrap()
        };
        let (grpc, admin) = (address("grpc_listen="), address("admin_listen="));
        Self {
            child,
            grpc,
            admin,
            dir,
        }
    }

    /// Waits until `/readyz` says 200 (the issuers' keys are loaded), as the mesh waits
    /// before it routes Checks here; panics with the last answer after 10 s.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.admin);
        let mut last = String::new();
        for _ in 0..200 {
            match reqwest::get(&url).await {
                Ok(r) if r.status() == 200 => return,
                Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("/readyz never turned 200: {last}; log:\n{}", self.log());
    }

    /// A Check client.
    pub async fn client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    /// The value of one sample in `/metrics` (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        super::server::sample_value(&text, sample)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.file("serve.log")).unwrap_or_default()
    }

    /// A path in the config directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// SIGTERM, then waits for the exit; true if it exited successfully.
    pub async fn stop(mut self) -> bool {
        if let Some(pid) = self.child.id() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::TERM,
            );
        }
        self.child.wait().await.unwrap().success()
    }
}
