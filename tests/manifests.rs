//! The kustomize base is consistent with itself and with the server.

use serde_yaml::Value;
use std::path::{Path, PathBuf};

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base")
}

fn load(name: &str) -> Value {
    let path = base().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn configmap_config_is_accepted_by_validate() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-authz"))
        .args(["validate", "--config"])
        .arg(base().join("config.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "validate refused manifests/base/config.yaml:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kustomization_lists_existing_files_and_generates_the_config() {
    let k = load("kustomization.yaml");
    for r in k["resources"].as_sequence().unwrap() {
        assert!(
            base().join(r.as_str().unwrap()).exists(),
            "missing resource {r:?}"
        );
    }
    let gen = &k["configMapGenerator"][0];
    assert_eq!(gen["name"], "mesh-authz-config");
    assert_eq!(gen["files"][0], "config.yaml");
}

#[test]
fn service_grpc_port_matches_the_configured_listener_and_the_container() {
    let config = load("config.yaml");
    let grpc_port = port_of(config["server"]["grpc_listen"].as_str().unwrap());
    let admin_port = port_of(config["server"]["admin_listen"].as_str().unwrap());

    let service = load("service.yaml");
    let ports = service["spec"]["ports"].as_sequence().unwrap();
    let grpc = ports
        .iter()
        .find(|p| p["name"] == "grpc")
        .expect("a port named grpc");
    assert_eq!(grpc["port"].as_u64(), Some(grpc_port));

    let deploy = load("deployment.yaml");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let container_port = |name: &str| {
        container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    };
    assert_eq!(container_port("grpc"), Some(grpc_port));
    assert_eq!(container_port("http-admin"), Some(admin_port));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
}

#[test]
fn deployment_reads_the_config_where_the_configmap_is_mounted() {
    let deploy = load("deployment.yaml");
    let pod = &deploy["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == "mesh-authz-config")
        .expect("a volume from the generated ConfigMap");
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the config volume is mounted");
    assert_eq!(
        config_path,
        format!("{}/config.yaml", mount["mountPath"].as_str().unwrap())
    );

    // The Gerrit password file the config names lives in the mounted Secret.
    let config = load("config.yaml");
    let password = config["gerrit"]["password_file"].as_str().unwrap();
    let secret_mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "gerrit-password")
        .unwrap();
    assert!(password.starts_with(secret_mount["mountPath"].as_str().unwrap()));

    // Time to drain and finish in-flight checks before Kubernetes kills the pod.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > 5 + 15,
        "terminationGracePeriodSeconds {grace} too short"
    );
}

#[test]
fn istio_provider_has_an_explicit_timeout_and_the_policy_uses_it() {
    let mesh = load("istio/mesh-config-snippet.yaml");
    let provider = &mesh["meshConfig"]["extensionProviders"][0];
    let grpc = &provider["envoyExtAuthzGrpc"];
    assert!(
        grpc["timeout"].as_str().is_some(),
        "Istio's default timeout is 600s"
    );
    assert_eq!(grpc["port"].as_u64(), Some(9191));
    assert_eq!(grpc["failOpen"], Value::Bool(false));

    let policy = load("istio/authorizationpolicy.yaml");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
}
