//! The local demo works: `examples/envoy-demo/run.sh --check` starts a real Envoy, this
//! build's `mesh-authz serve` on the quickstart config and the echo upstream, sends the
//! three requests its README shows (allowed, denied, no token), and stops them all.
//!
//! Skips like the other Envoy tests when Envoy is missing (fails under `CI=true`), and
//! likewise without `curl` or `python3`, which the script uses.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use support::developer::require_program;
use support::envoy::require_envoy;

#[test]
fn the_envoy_demo_check_passes_its_three_requests() {
    let Some(envoy) = require_envoy() else {
        return;
    };
    for (program, args) in [("curl", ["--version"]), ("python3", ["--version"])] {
        if !require_program(program, &args) {
            return;
        }
    }
    // Free ports, not the quickstart's fixed ones, so that a demo or a server already
    // running on this machine does not clash. Held together so they are distinct.
    let held: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(held);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/envoy-demo/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--check")
        .env("MESH_AUTHZ_BIN", env!("CARGO_BIN_EXE_mesh-authz"))
        .env("ENVOY_BIN", &envoy)
        .env("DEMO_ENVOY_PORT", ports[0].to_string())
        .env("DEMO_GRPC_PORT", ports[1].to_string())
        .env("DEMO_ADMIN_PORT", ports[2].to_string())
        .env_remove("DEMO_UPSTREAM_PORT")
        .env_remove("DEMO_ENVOY_ADMIN_PORT")
        .env_remove("DEMO_KEEP_LOGS")
        .stdin(Stdio::null())
        .output()
        .expect("bash runs run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "run.sh --check failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    for name in ["allowed", "denied", "missing-token"] {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with(&format!("PASS {name}:"))),
            "no `PASS {name}:` line in run.sh --check's output:\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    assert!(
        !stdout.lines().any(|line| line.starts_with("FAIL")),
        "{stdout}"
    );
}
