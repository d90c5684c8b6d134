//! The deployment files agree with each other and with the server: `manifests/` (the
//! kustomize base, its config, the Istio snippets) and the ghz load-test configs in
//! `benches/ghz/`. Each test names the file and field that broke.

mod support;

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use mesh_authz::authorize::{Authorizer, Denial, Verdict};
use mesh_authz::config::{self, Config, GerritConfig, GroupsConfig};
use mesh_authz::policy::{GroupRef, HostMatcher, PrincipalMatcher, Requirement, Rule};
use mesh_authz::request::{routing_path, RequestView};
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn base() -> PathBuf {
    root().join("manifests/base")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document in a file (`---`-separated), empty documents skipped.
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The single document in a file under `manifests/base`.
fn load(name: &str) -> Value {
    let mut docs = documents(&base().join(name));
    assert_eq!(docs.len(), 1, "{name}: expected exactly one YAML document");
    docs.remove(0)
}

/// The document of `kind` in a multi-document file under `manifests/base`.
fn load_kind(name: &str, kind: &str) -> Value {
    documents(&base().join(name))
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("{name}: no {kind}"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

fn seq<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v:?}"))
}

fn config() -> Config {
    config::load(&base().join("config.yaml"))
        .unwrap_or_else(|e| panic!("manifests/base/config.yaml: {e}"))
}

fn deployment() -> Value {
    load("deployment.yaml")
}

fn container(deploy: &Value) -> &Value {
    let containers = seq(
        &deploy["spec"]["template"]["spec"]["containers"],
        "deployment.yaml containers",
    );
    containers
        .iter()
        .find(|c| c["name"] == "mesh-authz")
        .expect("deployment.yaml: a container named mesh-authz")
}

/// The volumeMount of the volume matching `pred`, and that volume.
fn mount_of<'a>(
    deploy: &'a Value,
    pred: impl Fn(&Value) -> bool,
    what: &str,
) -> (&'a Value, &'a Value) {
    let pod = &deploy["spec"]["template"]["spec"];
    let volume = seq(&pod["volumes"], "deployment.yaml volumes")
        .iter()
        .find(|v| pred(v))
        .unwrap_or_else(|| panic!("deployment.yaml: no volume for {what}"));
    let mount = seq(&container(deploy)["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap_or_else(|| panic!("deployment.yaml: the {what} volume is not mounted"));
    (mount, volume)
}

fn service_port<'a>(service: &'a Value, name: &str) -> &'a Value {
    seq(&service["spec"]["ports"], "service.yaml ports")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("service.yaml: no port named {name}"))
}

fn kustomization() -> Value {
    load("kustomization.yaml")
}

fn kustomize_resources() -> Vec<String> {
    seq(
        &kustomization()["resources"],
        "kustomization.yaml resources",
    )
    .iter()
    .map(|r| str_of(r, "resource").to_string())
    .collect()
}

/// The mesh config snippet's provider entry.
fn provider() -> Value {
    let mesh = load("istio/mesh-config-snippet.yaml");
    let providers = seq(
        &mesh["meshConfig"]["extensionProviders"],
        "mesh-config-snippet.yaml meshConfig.extensionProviders",
    );
    assert_eq!(providers.len(), 1, "one provider expected");
    providers[0].clone()
}

/// A protobuf JSON duration as Istio writes it: `0.5s`, `2s`.
fn istio_duration(v: &Value) -> Duration {
    let text = str_of(v, "timeout");
    let secs: f64 = text
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("timeout {text:?} is not like `0.5s`"));
    Duration::from_secs_f64(secs)
}

fn gerrit_timeout(config: &Config) -> Duration {
    match &config.groups {
        Some(GroupsConfig::Gerrit(g)) => g.settings.timeout,
        other => panic!("config.yaml: expected a gerrit section, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The config in the ConfigMap.

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
    // The library agrees, and the config is a production one: Gerrit, not a static table.
    let config = config();
    assert!(matches!(config.groups, Some(GroupsConfig::Gerrit(_))));
    assert!(!config.issuers.is_empty());
}

#[test]
fn production_routes_send_requests_where_their_comments_say() {
    let config = config();
    let empty = HashMap::new();
    // "METHOD host path" -> the route that decides it, if any.
    let cases = [
        ("GET gerrit.example.com /", Some("gerrit-landing")),
        ("HEAD gerrit.example.com:443 /", Some("gerrit-landing")),
        ("GET gerrit.example.com /?q=1", Some("gerrit-landing")),
        // Only the landing page is public, and only for reading.
        ("POST gerrit.example.com /", Some("gerrit-signed-in")),
        (
            "GET gerrit.example.com /a/projects/team-a%2Fservice/branches",
            Some("gerrit-team-a-rest"),
        ),
        (
            "GET gerrit.example.com /a/projects/team-a%2fservice",
            Some("gerrit-team-a-rest"),
        ),
        (
            "GET gerrit.example.com /a/projects/team%2Da/branches",
            Some("gerrit-team-a-rest"),
        ),
        (
            "GET gerrit.example.com /a/projects/team-abc/branches",
            Some("gerrit-api"),
        ),
        (
            "GET gerrit.example.com /a/team-a/service.git/info/refs?service=git-upload-pack",
            Some("gerrit-team-a-git"),
        ),
        (
            "POST gerrit.example.com /a/team-a/service/git-receive-pack",
            Some("gerrit-team-a-git"),
        ),
        // A project whose name merely starts with "team-a" is not team-a's.
        (
            "GET gerrit.example.com /a/projects/team-alpha",
            Some("gerrit-api"),
        ),
        (
            "GET gerrit.example.com /a/changes/?q=status:open",
            Some("gerrit-api"),
        ),
        (
            "POST gerrit.example.com /a/other/repo/git-receive-pack",
            Some("gerrit-api"),
        ),
        (
            "GET gerrit.example.com /c/other/repo/+/123",
            Some("gerrit-signed-in"),
        ),
        (
            "POST gerrit.example.com /a/changes/team-a%2Fservice~42/revisions/current/review",
            Some("gerrit-rest-vote"),
        ),
        (
            "POST gerrit.gerrit.svc.cluster.local:8080 /a/changes/42/revisions/1/review",
            Some("gerrit-ci-vote"),
        ),
        (
            "GET gerrit.gerrit.svc.cluster.local:8080 /a/changes/42/detail",
            Some("gerrit-ci-read"),
        ),
        (
            "POST gerrit.gerrit.svc.cluster.local:8080 /a/changes/42/abandon",
            None,
        ),
        ("GET b-1234.builds.example.com /logs", Some("build-pods")),
        ("GET b-1234.builds.example.com:8443 /", Some("build-pods")),
        ("GET builds.example.com /", None),
        ("GET other.example.com /", None),
    ];
    for (request, want) in cases {
        let mut parts = request.split(' ');
        let (method, host, full_path) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let view = RequestView::http(method, host, full_path, &empty);
        // Routes see the path in the form the server matches it in.
        let routing = routing_path(view.path).unwrap();
        let view = RequestView {
            path: &routing,
            ..view
        };
        let got = config.routes.find(&view).map(|r| r.name.to_string());
        assert_eq!(got.as_deref(), want, "config.yaml: {request}");
    }

    // What each route demands.
    let team_a = Requirement::AnyOf(vec![Rule {
        token: true,
        groups_any_of: vec![
            GroupRef::Name("team-a".into()),
            GroupRef::Name("Administrators".into()),
        ],
        ..Rule::default()
    }]);
    let ci_runner = Requirement::AnyOf(vec![Rule {
        principals: vec![PrincipalMatcher::parse("cluster.local/ns/ci/sa/runner").unwrap()],
        as_user: Some("ci-bot".into()),
        ..Rule::default()
    }]);
    for route in config.routes.routes() {
        let want = match &*route.name {
            "gerrit-landing" => Requirement::Public,
            name if name.starts_with("gerrit-team-a") => team_a.clone(),
            "gerrit-ci-vote" | "gerrit-ci-read" | "gerrit-rest-vote" => ci_runner.clone(),
            _ => Requirement::authenticated(),
        };
        assert_eq!(
            route.requirement, want,
            "config.yaml: route {:?}",
            &*route.name
        );
    }
}

/// Gerrit trusts its identity headers on every path, so every route of a host must name
/// the same ones: a route that did not would pass a client-sent value through. And the
/// token stays at the edge.
#[test]
fn routes_of_one_host_all_own_the_same_identity_headers() {
    let config = config();
    let mut by_host: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for route in config.routes.routes() {
        assert!(
            !route.hosts.is_empty(),
            "config.yaml: route {:?} covers every host; name its hosts",
            &*route.name
        );
        let names: BTreeSet<String> = route.inject.names().map(str::to_string).collect();
        assert!(
            names.contains("x-forwarded-user"),
            "config.yaml: route {:?} does not own x-forwarded-user",
            &*route.name
        );
        assert!(
            route.remove_headers.iter().any(|h| h == "authorization"),
            "config.yaml: route {:?} passes the bearer token upstream",
            &*route.name
        );
        for host in &route.hosts {
            by_host
                .entry(format!("{host:?}"))
                .or_default()
                .insert(route.name.to_string(), names.clone());
        }
    }
    for (host, routes) in by_host {
        let distinct: BTreeSet<_> = routes.values().collect();
        assert_eq!(
            distinct.len(),
            1,
            "config.yaml: routes of {host} name different identity headers: {routes:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The Kubernetes objects.

/// Files that are not Kubernetes objects.
const NOT_OBJECTS: [&str; 3] = [
    "kustomization.yaml",
    "config.yaml",
    "istio/mesh-config-snippet.yaml",
];

/// Files under `manifests/kube` that are not Kubernetes objects: the kustomization, the
/// fragment of mesh-authz's config, and the two files for developers' machines.
const KUBE_NOT_OBJECTS: [&str; 4] = [
    "kustomization.yaml",
    "config-routes.yaml",
    "developer-kubeconfig.yaml",
    "developer-client.yaml",
];

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_manifest_parses_and_every_object_is_named() {
    let mut files = Vec::new();
    yaml_files(&root().join("manifests"), &mut files);
    files.sort();
    assert!(files.len() >= 10, "found only {files:?}");
    for file in &files {
        let docs = documents(file);
        assert!(!docs.is_empty(), "{}: no YAML document", file.display());
        let not_object = match (file.strip_prefix(base()), file.strip_prefix(kube_dir())) {
            (Ok(relative), _) => NOT_OBJECTS.iter().any(|n| Path::new(n) == relative),
            (_, Ok(relative)) => KUBE_NOT_OBJECTS.iter().any(|n| Path::new(n) == relative),
            _ => false,
        };
        if not_object {
            continue;
        }
        for doc in docs {
            for field in ["apiVersion", "kind"] {
                assert!(
                    doc[field].as_str().is_some_and(|s| !s.is_empty()),
                    "{}: a document without {field}",
                    file.display()
                );
            }
            assert!(
                doc["metadata"]["name"].as_str().is_some(),
                "{}: a {:?} without metadata.name",
                file.display(),
                doc["kind"]
            );
        }
    }
}

#[test]
fn kustomization_lists_every_object_except_the_secret_and_generates_the_config() {
    let resources = kustomize_resources();
    for r in &resources {
        assert!(base().join(r).is_file(), "kustomization.yaml: missing {r}");
    }
    // Every object file in base/ is listed (a new file nobody listed is never applied),
    // except the Secret example, which must never be.
    for entry in std::fs::read_dir(base()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") || NOT_OBJECTS.contains(&name.as_str()) {
            continue;
        }
        if name == "secret.example.yaml" {
            assert!(!resources.contains(&name), "the Secret example is applied");
        } else {
            assert!(
                resources.contains(&name),
                "kustomization.yaml: {name} not listed"
            );
        }
    }

    let k = kustomization();
    let generators = seq(&k["configMapGenerator"], "configMapGenerator");
    let generator = generators
        .iter()
        .find(|g| seq(&g["files"], "files").iter().any(|f| f == "config.yaml"))
        .expect("kustomization.yaml: no configMapGenerator for config.yaml");
    // The Deployment mounts the generated ConfigMap (kustomize adds the hash to both).
    let name = str_of(&generator["name"], "generator name");
    mount_of(
        &deployment(),
        |v| v["configMap"]["name"] == name,
        "the generated ConfigMap",
    );
    // The Istio provider's host names the namespace the base puts everything in.
    let fqdn = format!(
        "mesh-authz.{}.svc.cluster.local",
        str_of(&k["namespace"], "kustomization namespace")
    );
    assert_eq!(provider()["envoyExtAuthzGrpc"]["service"], fqdn.as_str());
}

/// The rendered base, where `kubectl` is installed (CI may not have it; the other tests
/// check the same files without rendering).
#[test]
fn kustomize_renders_the_base_with_the_generated_config_mounted() {
    let Some(objects) = kustomize(&base()) else {
        return;
    };
    let namespace = kustomization()["namespace"].clone();
    for o in &objects {
        if o["kind"] != "Namespace" {
            assert_eq!(
                o["metadata"]["namespace"], namespace,
                "{:?}",
                o["metadata"]["name"]
            );
        }
    }
    let config_map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("a generated ConfigMap");
    assert_eq!(
        config_map["data"]["config.yaml"],
        read(&base().join("config.yaml")).as_str()
    );
    let deploy = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    // The hashed name reaches the Deployment: a config change rolls the pods.
    mount_of(
        deploy,
        |v| v["configMap"]["name"] == config_map["metadata"]["name"],
        "the hashed ConfigMap",
    );
    assert!(
        objects.iter().all(|o| o["kind"] != "Secret"),
        "a Secret is rendered"
    );
}

#[test]
fn service_and_container_ports_match_the_configured_listeners() {
    let config = config();
    let grpc = u64::from(config.server.grpc_listen.port());
    let admin = u64::from(config.server.admin_listen.port());

    let service = load("service.yaml");
    let deploy = deployment();
    let c = container(&deploy);
    let container_port = |name: &str| {
        seq(&c["ports"], "container ports")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    };
    for (name, port) in [("grpc", grpc), ("http-admin", admin)] {
        let sp = service_port(&service, name);
        assert_eq!(sp["port"].as_u64(), Some(port), "service.yaml port {name}");
        assert_eq!(
            container_port(name),
            Some(port),
            "deployment.yaml port {name}"
        );
        let target = &sp["targetPort"];
        assert!(
            target == name || target.as_u64() == Some(port),
            "service.yaml {name}: targetPort {target:?}"
        );
    }
    assert_eq!(service_port(&service, "grpc")["appProtocol"], "grpc");

    // The Service selects the pods.
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let selector = service["spec"]["selector"].as_mapping().unwrap();
    for (k, v) in selector {
        assert_eq!(
            &labels[k], v,
            "service.yaml selector {k:?} does not match the pods"
        );
    }

    // Probes on the admin port.
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "deployment.yaml {probe}");
        assert!(
            get["port"].as_u64() == Some(admin) || get["port"] == "http-admin",
            "deployment.yaml {probe} port {:?}",
            get["port"]
        );
    }
}

#[test]
fn deployment_reads_the_config_and_the_gerrit_secret_where_they_are_mounted() {
    let deploy = deployment();
    let c = container(&deploy);
    let args: Vec<&str> = seq(&c["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    assert_eq!(
        args.first(),
        Some(&"serve"),
        "deployment.yaml args {args:?}"
    );
    let after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
            .copied()
            .unwrap_or_else(|| panic!("deployment.yaml args {args:?}: no {flag} value"))
    };
    assert_eq!(after("--log-format"), "json");

    let (config_mount, _) = mount_of(
        &deploy,
        |v| v["configMap"]["name"] == "mesh-authz-config",
        "config",
    );
    assert_eq!(
        after("--config"),
        format!(
            "{}/config.yaml",
            str_of(&config_mount["mountPath"], "mountPath")
        ),
        "deployment.yaml: --config is not the mounted ConfigMap's config.yaml"
    );

    // The Secret: the one secret.example.yaml describes, mounted where the events token
    // file is.
    let example = load("secret.example.yaml");
    let secret_name = str_of(&example["metadata"]["name"], "secret name");
    assert_eq!(secret_name, "mesh-authz-gerrit");
    let keys: Vec<String> = example["stringData"]
        .as_mapping()
        .expect("secret.example.yaml: stringData")
        .keys()
        .map(|k| str_of(k, "secret key").to_string())
        .collect();
    assert_eq!(keys, ["events-token"], "secret.example.yaml keys");
    let (secret_mount, secret_volume) = mount_of(
        &deploy,
        |v| v["secret"]["secretName"] == secret_name,
        "the Gerrit Secret",
    );
    assert!(
        secret_volume["secret"]["items"].is_null(),
        "deployment.yaml: `items` would rename the key"
    );
    assert!(
        secret_mount["subPath"].is_null(),
        "subPath mounts never see Secret rotations"
    );
    let gerrit = gerrit_config();
    let token_file = gerrit
        .events
        .as_ref()
        .and_then(|e| e.token_file.clone())
        .expect("config.yaml: gerrit.events.token_file");
    assert_eq!(
        token_file,
        Path::new(str_of(&secret_mount["mountPath"], "mountPath")).join(&keys[0]),
        "config.yaml gerrit.events.token_file is not the mounted Secret's `{}`",
        keys[0]
    );
    assert!(
        gerrit.settings.password_file.is_none(),
        "config.yaml: this Gerrit trusts X-Forwarded-User; a password_file would need a Secret key"
    );
}

/// The checked `gerrit:` section of config.yaml.
fn gerrit_config() -> GerritConfig {
    match config().groups {
        Some(GroupsConfig::Gerrit(g)) => *g,
        other => panic!("config.yaml: expected a gerrit section, got {other:?}"),
    }
}

#[test]
fn deployment_is_hardened_and_drains_within_the_grace_period() {
    let deploy = deployment();
    let pod = &deploy["spec"]["template"]["spec"];
    let c = container(&deploy);
    assert!(deploy["spec"]["replicas"].as_u64() >= Some(2), "replicas");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], Value::Bool(true));
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true));
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false));
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    let server = config().server;
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let needed = server.drain_delay + server.shutdown_timeout;
    assert!(
        Duration::from_secs(grace) > needed,
        "terminationGracePeriodSeconds {grace} does not exceed drain_delay + shutdown_timeout ({needed:?})"
    );
}

// ---------------------------------------------------------------------------------------
// Istio.

#[test]
fn istio_provider_times_out_explicitly_and_fails_closed() {
    let provider = provider();
    let grpc = &provider["envoyExtAuthzGrpc"];
    assert!(
        !grpc["timeout"].is_null(),
        "mesh-config-snippet.yaml: set timeout; Istio's default is 600s"
    );
    let timeout = istio_duration(&grpc["timeout"]);
    assert!(
        timeout <= Duration::from_secs(2),
        "provider timeout {timeout:?}: a check should never hold a request that long"
    );
    let config = config();
    let gerrit = gerrit_timeout(&config);
    assert!(
        gerrit < timeout,
        "config.yaml gerrit.timeout {gerrit:?} must stay below the provider timeout {timeout:?}"
    );
    // The config knows the provider's timeout, and every lookup budget fits in it
    // (validate would warn otherwise).
    assert_eq!(
        config.server.envoy_timeout, timeout,
        "config.yaml server.envoy_timeout must be the provider's timeout"
    );
    assert_eq!(config.timing_warnings(), vec![]);
    assert_eq!(grpc["failOpen"], Value::Bool(false));
    assert_eq!(
        grpc["port"].as_u64(),
        service_port(&load("service.yaml"), "grpc")["port"].as_u64()
    );
}

#[test]
fn gateway_policy_is_custom_with_the_provider_and_covers_whole_hosts() {
    let policy = load("istio/authorizationpolicy.yaml");
    let spec = &policy["spec"];
    assert_eq!(spec["action"], "CUSTOM");
    assert_eq!(spec["provider"]["name"], provider()["name"]);
    assert!(
        spec["selector"]["matchLabels"].is_mapping(),
        "the policy must select the gateway"
    );

    // Whole hosts: no paths, methods, ports, sources or conditions narrow the rules.
    let mut hosts = BTreeSet::new();
    let mut catch_all = false;
    for rule in seq(&spec["rules"], "rules") {
        assert!(
            rule["from"].is_null() && rule["when"].is_null(),
            "rule {rule:?}"
        );
        if rule["to"].is_null() {
            catch_all = true;
            continue;
        }
        for to in seq(&rule["to"], "to") {
            let op = &to["operation"];
            for narrowing in [
                "paths",
                "notPaths",
                "methods",
                "notMethods",
                "ports",
                "notPorts",
            ] {
                assert!(
                    op[narrowing].is_null(),
                    "the policy narrows hosts by {narrowing}"
                );
            }
            if op["hosts"].is_null() {
                catch_all = true;
            }
            for h in seq(&op["hosts"], "hosts") {
                hosts.insert(str_of(h, "host").to_string());
            }
        }
    }
    if catch_all {
        return;
    }
    // Every host a route names is covered, in its `host:port` forms too.
    let digits_covered = (0..10).all(|d| hosts.contains(&format!("*{d}")));
    for route in seq(&load("config.yaml")["routes"], "routes") {
        for host in seq(&route["match"]["hosts"], "hosts") {
            let host = str_of(host, "host");
            if host.ends_with(".svc.cluster.local") {
                // Reached inside the mesh, not through the gateway: ci-to-gerrit.yaml.
                continue;
            }
            assert!(
                hosts.contains(host),
                "the gateway policy does not cover {host}"
            );
            if host.starts_with('*') {
                assert!(
                    digits_covered,
                    "{host}:<port> is not covered (a wildcard host has no `:*` form)"
                );
            } else {
                assert!(
                    hosts.contains(&format!("{host}:*")),
                    "the gateway policy does not cover {host}:<port>"
                );
            }
        }
    }
}

#[test]
fn every_workload_a_custom_policy_sends_to_mesh_authz_may_call_its_check_port() {
    // A CUSTOM policy makes the selected workload's sidecar (or the gateway) call
    // mesh-authz with its own mesh identity; refused there, every request it guards gets
    // Envoy's status_on_error (403, or 503 with failOpen: false).
    let access = load_kind("istio/mesh-authz-access.yaml", "AuthorizationPolicy");
    let check_principals: Vec<String> = seq(&access["spec"]["rules"], "rules")
        .iter()
        .filter(|r| r["to"][0]["operation"]["ports"][0] == "9191")
        .flat_map(|r| seq(&r["from"][0]["source"]["principals"], "principals").to_vec())
        .map(|p| str_of(&p, "principal").to_string())
        .collect();
    for (file, caller) in [
        (
            "istio/authorizationpolicy.yaml",
            "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        ),
        // Gerrit's sidecar, for the CI runner's in-mesh calls; the same identity Gerrit
        // posts its group events with.
        (
            "istio/ci-to-gerrit.yaml",
            "cluster.local/ns/gerrit/sa/gerrit",
        ),
    ] {
        let policy = load_kind(file, "AuthorizationPolicy");
        assert_eq!(policy["spec"]["action"], "CUSTOM", "{file}");
        let namespace = str_of(&policy["metadata"]["namespace"], "namespace");
        assert!(
            caller.starts_with(&format!("cluster.local/ns/{namespace}/")),
            "{file}: {caller} is not in {namespace}"
        );
        assert!(
            check_principals.iter().any(|p| p == caller),
            "{file} sends {caller}'s requests to mesh-authz, but mesh-authz-access.yaml lets only {check_principals:?} call Check"
        );
    }
}

#[test]
fn callers_allowed_at_mesh_authz_and_gerrit_are_the_gateway_and_mesh_authz() {
    let gateway_principal = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    let namespace = str_of(&kustomization()["namespace"], "namespace").to_string();
    let sa = load("serviceaccount.yaml");
    let own = format!(
        "cluster.local/ns/{namespace}/sa/{}",
        str_of(&sa["metadata"]["name"], "service account")
    );
    assert_eq!(
        deployment()["spec"]["template"]["spec"]["serviceAccountName"],
        sa["metadata"]["name"]
    );

    let access = load_kind("istio/mesh-authz-access.yaml", "AuthorizationPolicy");
    assert_eq!(access["metadata"]["namespace"], namespace.as_str());
    let check_rule = seq(&access["spec"]["rules"], "rules")
        .iter()
        .find(|r| r["to"][0]["operation"]["ports"][0] == "9191")
        .expect("mesh-authz-access.yaml: a rule for the gRPC port");
    assert_eq!(
        check_rule["from"][0]["source"]["principals"][0],
        gateway_principal
    );

    let gerrit = load_kind("istio/gerrit-access.yaml", "AuthorizationPolicy");
    let principals: Vec<&str> = seq(
        &gerrit["spec"]["rules"][0]["from"][0]["source"]["principals"],
        "principals",
    )
    .iter()
    .map(|p| str_of(p, "principal"))
    .collect();
    assert!(principals.contains(&gateway_principal));
    assert!(
        principals.contains(&own.as_str()),
        "{own} missing from {principals:?}"
    );

    // mesh-authz's lookups go to the Gerrit whose callers gerrit-access.yaml limits.
    let gerrit_host = gerrit_config()
        .settings
        .base
        .host_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        gerrit_host.split('.').nth(1),
        gerrit["metadata"]["namespace"].as_str(),
        "config.yaml gerrit.url {gerrit_host} is not in gerrit-access.yaml's namespace"
    );

    // The admin port: Gerrit may post events; mesh-authz itself (a replica passing an
    // invalidation on) may post events and invalidations.
    let posts_from = |principal: &str| -> Vec<String> {
        seq(&access["spec"]["rules"], "rules")
            .iter()
            .filter(|r| {
                r["to"][0]["operation"]["ports"][0] == "9192"
                    && r["from"][0]["source"]["principals"]
                        .as_sequence()
                        .is_some_and(|ps| ps.iter().any(|p| p == principal))
            })
            .flat_map(|r| seq(&r["to"][0]["operation"]["paths"], "paths").to_vec())
            .map(|p| str_of(&p, "path").to_string())
            .collect()
    };
    let gerrit_principal = format!(
        "cluster.local/ns/{}/sa/gerrit",
        str_of(&gerrit["metadata"]["namespace"], "namespace")
    );
    assert_eq!(posts_from(&gerrit_principal), ["/gerrit/events"]);
    assert_eq!(
        posts_from(&own),
        ["/gerrit/events", "/cache/groups/invalidate"]
    );
}

#[test]
fn peers_name_a_headless_service_of_every_replicas_admin_port() {
    let namespace = str_of(&kustomization()["namespace"], "namespace").to_string();
    let peers = load("service-peers.yaml");
    assert!(kustomize_resources().contains(&"service-peers.yaml".to_string()));
    assert_eq!(
        peers["spec"]["clusterIP"], "None",
        "service-peers.yaml: headless"
    );
    assert_eq!(
        peers["spec"]["publishNotReadyAddresses"], true,
        "service-peers.yaml: a paused (not ready) replica must still get removals"
    );
    let admin = config().server.admin_listen.port();
    assert_eq!(
        service_port(&peers, "http-admin")["port"].as_u64(),
        Some(u64::from(admin))
    );
    let labels = &deployment()["spec"]["template"]["metadata"]["labels"];
    for (k, v) in peers["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[k], v, "service-peers.yaml selector {k:?}");
    }
    assert_eq!(
        config().server.peers,
        [format!(
            "{}.{namespace}.svc.cluster.local:{admin}",
            str_of(&peers["metadata"]["name"], "name")
        )],
        "config.yaml server.peers"
    );
}

/// A git-config file (`[section "sub"]`, `key = value`) as `section.sub.key` → values.
fn git_config(path: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read(path).lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = match header.split_once(' ') {
                Some((name, sub)) => format!("{name}.{}", sub.trim_matches('"')),
                None => header.to_string(),
            };
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: not `key = value`: {line}", path.display()));
        out.entry(format!("{section}.{}", key.trim()))
            .or_default()
            .push(value.trim().to_string());
    }
    out
}

#[test]
fn gerrit_trusts_the_headers_mesh_authz_sets_and_posts_group_changes_to_it() {
    let gerrit = git_config(&root().join("manifests/gerrit/gerrit.config"));
    let one = |key: &str| -> String {
        match gerrit.get(key).map(Vec::as_slice) {
            Some([v]) => v.clone(),
            other => panic!("gerrit.config {key}: {other:?}"),
        }
    };
    assert_eq!(one("auth.type"), "HTTP");
    assert_eq!(one("auth.trustContainerAuth"), "true");
    let user_header = one("auth.httpHeader").to_ascii_lowercase();
    let email_header = one("auth.httpEmailHeader").to_ascii_lowercase();
    // mesh-authz names itself in the same header, and every authenticated Gerrit route
    // sets the users' names there.
    let cfg = gerrit_config();
    assert_eq!(
        cfg.settings
            .trusted_user_header
            .as_ref()
            .map(|h| h.as_str()),
        Some(user_header.as_str()),
        "config.yaml gerrit.trusted_user_header vs gerrit.config auth.httpHeader"
    );
    let config = config();
    let gerrit_routes: Vec<_> = config
        .routes
        .routes()
        .iter()
        .filter(|r| r.hosts.iter().any(|h| h.matches("gerrit.example.com")))
        .collect();
    assert!(!gerrit_routes.is_empty());
    for route in gerrit_routes {
        assert_eq!(
            route.inject.user.as_deref(),
            Some(user_header.as_str()),
            "{}",
            route.name
        );
        assert_eq!(
            route.inject.email.as_deref(),
            Some(email_header.as_str()),
            "{}",
            route.name
        );
    }

    let hooks = git_config(&root().join("manifests/gerrit/webhooks.config"));
    let service = load("service.yaml");
    let kustomization = kustomization();
    let namespace = str_of(&kustomization["namespace"], "namespace");
    let admin = config.server.admin_listen.port();
    assert_eq!(
        hooks["remote.mesh-authz.url"],
        [format!(
            "http://{}.{namespace}.svc.cluster.local:{admin}/gerrit/events",
            str_of(&service["metadata"]["name"], "name")
        )]
    );
    assert_eq!(hooks["remote.mesh-authz.event"], ["ref-updated"]);
    let header = &hooks["remote.mesh-authz.header"][0];
    assert!(
        header.starts_with("Authorization:Bearer ") && header.matches(':').count() == 1,
        "webhooks.config header {header:?}: the plugin splits it on `:`"
    );
}

// ---------------------------------------------------------------------------------------
// The order of the rollout in manifests/README.md. Gerrit set up to trust
// x-forwarded-user believes it from every request that reaches it: while the gateway does
// not send requests to mesh-authz (which sets or strips the header), a client-sent
// `X-Forwarded-User: admin` would make its sender admin.

/// The numbered items of the README section headed `heading`, in order, each with the
/// text that follows its number up to the next item or the end of the section.
fn readme_steps(heading: &str) -> Vec<String> {
    let path = root().join("manifests/README.md");
    let text = read(&path);
    let section = text
        .split("\n## ")
        .find(|s| s.lines().next().is_some_and(|l| l.trim() == heading))
        .unwrap_or_else(|| panic!("manifests/README.md: no section `## {heading}`"));
    let mut steps: Vec<String> = Vec::new();
    for line in section.lines().skip(1) {
        let number = line.split_once(". ").map(|(n, _)| n);
        if number.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
            assert_eq!(
                number.and_then(|n| n.parse::<usize>().ok()),
                Some(steps.len() + 1),
                "manifests/README.md `## {heading}`: steps out of sequence at {line:?}"
            );
            steps.push(String::new());
        }
        if let Some(step) = steps.last_mut() {
            step.push_str(line);
            step.push('\n');
        }
    }
    assert!(
        !steps.is_empty(),
        "manifests/README.md `## {heading}`: no numbered steps"
    );
    steps
}

/// The (1-based) steps of `steps` whose text contains `needle`.
fn steps_naming(steps: &[String], needle: &str) -> Vec<usize> {
    (1..=steps.len())
        .filter(|n| steps[n - 1].contains(needle))
        .collect()
}

const APPLY_CUSTOM: &str = "kubectl apply -f manifests/base/istio/authorizationpolicy.yaml";
const DELETE_CUSTOM: &str = "kubectl delete -f manifests/base/istio/authorizationpolicy.yaml";

#[test]
fn rollout_turns_the_checks_on_before_gerrit_trusts_the_header() {
    let steps = readme_steps("Steps");
    let custom = steps_naming(&steps, APPLY_CUSTOM);
    assert_eq!(custom.len(), 1, "`{APPLY_CUSTOM}` in steps {custom:?}");
    let trust = steps_naming(&steps, "gerrit/gerrit.config");
    assert!(
        !trust.is_empty(),
        "no step configures Gerrit (gerrit.config)"
    );
    assert!(
        trust.iter().all(|&t| t > custom[0]),
        "Gerrit is told to trust the header in step(s) {trust:?}, before the gateway \
         sends requests to mesh-authz in step {}: in between a client-sent \
         x-forwarded-user reaches Gerrit",
        custom[0]
    );
    assert_eq!(
        trust.last(),
        Some(&steps.len()),
        "Gerrit's trust in the header is not the last step"
    );
}

#[test]
fn rollback_stops_gerrit_trusting_the_header_before_the_checks_go() {
    let steps = readme_steps("Rolling back");
    let custom = steps_naming(&steps, DELETE_CUSTOM);
    assert_eq!(custom.len(), 1, "`{DELETE_CUSTOM}` in steps {custom:?}");
    let trust = steps_naming(&steps, "gerrit/gerrit.config");
    assert!(!trust.is_empty(), "no rollback step reverts gerrit.config");
    assert!(
        trust.iter().all(|&t| t < custom[0]),
        "the CUSTOM policy is deleted in step {} while Gerrit still trusts the header \
         (reverted in step(s) {trust:?})",
        custom[0]
    );
    assert_eq!(
        trust[0], 1,
        "reverting Gerrit's trust is not the first rollback step"
    );
}

/// Gerrit's trusted headers, lower case: what gerrit.config trusts, cross-checked with
/// config.yaml (gerrit.trusted_user_header and the Gerrit routes' inject names).
fn gerrit_trusted_headers() -> BTreeSet<String> {
    let gerrit = git_config(&root().join("manifests/gerrit/gerrit.config"));
    let trusted: BTreeSet<String> = ["auth.httpHeader", "auth.httpEmailHeader"]
        .iter()
        .filter_map(|k| gerrit.get(*k))
        .flatten()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let cfg = gerrit_config();
    let own = cfg
        .settings
        .trusted_user_header
        .as_ref()
        .map(|h| h.as_str().to_string())
        .expect("config.yaml: gerrit.trusted_user_header");
    assert!(
        trusted.contains(&own),
        "{own} not in gerrit.config's {trusted:?}"
    );
    let config = config();
    for route in config.routes.routes() {
        if route.hosts.iter().any(|h| h.matches("gerrit.example.com")) {
            for name in [&route.inject.user, &route.inject.email]
                .into_iter()
                .flatten()
            {
                assert!(
                    trusted.contains(name),
                    "route {} injects {name}, which gerrit.config does not trust",
                    route.name
                );
            }
        }
    }
    trusted
}

#[test]
fn header_guard_denies_gerrits_trusted_headers_at_the_gateway() {
    let custom = load("istio/authorizationpolicy.yaml");
    let guard = load("istio/header-guard.yaml");
    assert_eq!(guard["kind"], "AuthorizationPolicy");
    assert_eq!(guard["spec"]["action"], "DENY");
    // The same workload as the CUSTOM policy: the ingress gateway.
    assert_eq!(
        guard["metadata"]["namespace"],
        custom["metadata"]["namespace"]
    );
    assert_eq!(guard["spec"]["selector"], custom["spec"]["selector"]);

    // One rule per header, each matching the header's presence (`*` becomes Envoy's
    // present_match), on every host, path and method.
    let mut denied = BTreeSet::new();
    for rule in seq(&guard["spec"]["rules"], "header-guard.yaml rules") {
        assert!(
            rule["from"].is_null() && rule["to"].is_null(),
            "header-guard.yaml narrows {rule:?}"
        );
        let when = seq(&rule["when"], "when");
        assert_eq!(
            when.len(),
            1,
            "one condition per rule (they are ANDed): {rule:?}"
        );
        let key = str_of(&when[0]["key"], "key");
        let header = key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
            .unwrap_or_else(|| panic!("header-guard.yaml: {key} is not a request header"));
        assert_eq!(
            when[0]["values"],
            serde_yaml::to_value(["*"]).unwrap(),
            "{key}"
        );
        assert!(when[0]["notValues"].is_null(), "{key}");
        denied.insert(header.to_ascii_lowercase());
    }
    assert_eq!(denied, gerrit_trusted_headers(), "header-guard.yaml");

    // The README says when it is needed: before the CUSTOM policy goes while Gerrit
    // trusts the header.
    let readme = read(&root().join("manifests/README.md"));
    let guard_at = readme
        .find("kubectl apply -f manifests/base/istio/header-guard.yaml")
        .expect("manifests/README.md: never applies header-guard.yaml");
    let replace = readme
        .find("## Replacing the CUSTOM policy")
        .expect("manifests/README.md: no `## Replacing the CUSTOM policy` section");
    assert!(
        guard_at > replace,
        "header-guard.yaml is applied outside that section"
    );
}

// ---------------------------------------------------------------------------------------
// ghz load-test configs: well-formed, and they exercise the path their name says against
// the quickstart server (`cargo run --release -- serve`).

fn ghz(name: &str) -> serde_json::Value {
    let path = root().join("benches/ghz").join(name);
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn decide_ghz(name: &str) -> Verdict {
    let cfg = ghz(name);
    assert_eq!(
        cfg["call"], "envoy.service.auth.v3.Authorization.Check",
        "{name}"
    );
    assert_eq!(cfg["insecure"], true, "{name}");
    assert!(
        cfg.get("proto").is_none() && cfg.get("protoset").is_none(),
        "{name}: the server offers reflection"
    );
    let builtin = config::builtin().unwrap();
    assert_eq!(
        cfg["host"],
        format!("127.0.0.1:{}", builtin.server.grpc_listen.port()),
        "{name}"
    );
    for field in ["total", "concurrency"] {
        assert!(
            cfg[field].as_u64().is_some_and(|n| n > 0),
            "{name}: {field}"
        );
    }

    let http = &cfg["data"]["attributes"]["request"]["http"];
    let headers: HashMap<String, String> = http["headers"]
        .as_object()
        .unwrap_or_else(|| panic!("{name}: data.attributes.request.http.headers"))
        .iter()
        .map(|(k, v)| {
            assert_eq!(
                k,
                &k.to_ascii_lowercase(),
                "{name}: Envoy sends lower-case names"
            );
            (k.clone(), v.as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(headers[":path"], http["path"].as_str().unwrap(), "{name}");
    assert_eq!(
        headers[":authority"],
        http["host"].as_str().unwrap(),
        "{name}"
    );
    let view = RequestView::http(
        http["method"].as_str().unwrap(),
        http["host"].as_str().unwrap(),
        http["path"].as_str().unwrap(),
        &headers,
    );
    let authorizer = Authorizer::from_config(&builtin, reqwest::Client::new()).unwrap();
    authorizer.decide(&view).await.verdict
}

#[tokio::test]
async fn ghz_allow_config_carries_alices_token_and_is_allowed() {
    let cfg = ghz("check-allow.json");
    let alice = read(&root().join("examples/quickstart/alice.jwt"));
    assert_eq!(
        cfg["data"]["attributes"]["request"]["http"]["headers"]["authorization"],
        format!("Bearer {}", alice.trim()),
        "check-allow.json: regenerate it from examples/quickstart/alice.jwt"
    );
    let verdict = decide_ghz("check-allow.json").await;
    assert!(matches!(verdict, Verdict::Allow { .. }), "{verdict:?}");
}

#[tokio::test]
async fn ghz_deny_config_has_no_token_and_is_denied() {
    let verdict = decide_ghz("check-deny-no-token.json").await;
    assert!(
        matches!(verdict, Verdict::Deny(Denial::Unauthenticated(_))),
        "{verdict:?}"
    );
}

/// The ghz configs send the request the benches and the tests build
/// (`tests/support/istio.rs`, gateway shape), so ghz and `cargo bench` measure one request.
#[test]
fn ghz_requests_are_the_benches_istio_gateway_request() {
    let alice = read(&root().join("examples/quickstart/alice.jwt"));
    let bearer = format!("Bearer {}", alice.trim());
    for (name, headers) in [
        ("check-allow.json", vec![("authorization", bearer.as_str())]),
        ("check-cold.json", vec![("authorization", bearer.as_str())]),
        ("check-deny-no-token.json", vec![]),
    ] {
        let built = support::istio::check_request(
            support::istio::Shape::Gateway,
            "GET",
            "gerrit.example.com",
            "/a/projects/team-a/branches?n=25",
            &headers,
        );
        assert_eq!(
            ghz_check_request(name),
            built,
            "{name}: data differs from tests/support/istio.rs (Shape::Gateway)"
        );
    }
}

/// The `data` of a ghz config as a CheckRequest, refusing any field this does not read
/// (so nothing in the file escapes the comparison).
fn ghz_check_request(name: &str) -> CheckRequest {
    fn fields<'a>(
        v: &'a serde_json::Value,
        at: &str,
        known: &[&str],
    ) -> &'a serde_json::Map<String, serde_json::Value> {
        let map = v
            .as_object()
            .unwrap_or_else(|| panic!("{at}: not an object"));
        for k in map.keys() {
            assert!(known.contains(&k.as_str()), "{at}.{k}: not compared");
        }
        map
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let peer = |v: &serde_json::Value, at: &str| {
        let p = fields(v, at, &["address", "principal"]);
        let address = p.get("address").map(|a| {
            let a = fields(a, at, &["socketAddress"]);
            let s = fields(&a["socketAddress"], at, &["address", "portValue"]);
            Address {
                address: Some(AddressKind::SocketAddress(SocketAddress {
                    address: text(&s["address"]),
                    port_specifier: s["portValue"]
                        .as_u64()
                        .map(|p| PortSpecifier::PortValue(p as u32)),
                    ..Default::default()
                })),
            }
        });
        Peer {
            address,
            principal: text(&p["principal"]),
            ..Default::default()
        }
    };
    let cfg = ghz(name);
    let data = fields(&cfg["data"], "data", &["attributes"]);
    let attrs = fields(
        &data["attributes"],
        "attributes",
        &["source", "destination", "request"],
    );
    let request = fields(&attrs["request"], "request", &["http"]);
    let http = fields(
        &request["http"],
        "http",
        &[
            "id", "method", "host", "path", "scheme", "protocol", "headers",
        ],
    );
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(&attrs["source"], "source")),
            destination: Some(peer(&attrs["destination"], "destination")),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: text(&http["id"]),
                    method: text(&http["method"]),
                    host: text(&http["host"]),
                    path: text(&http["path"]),
                    scheme: text(&http["scheme"]),
                    protocol: text(&http["protocol"]),
                    headers: http["headers"]
                        .as_object()
                        .expect("headers")
                        .iter()
                        .map(|(k, v)| (k.clone(), text(v)))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The CI runner's in-mesh calls: Gerrit's sidecar asks mesh-authz about requests from the
/// ci namespace, the runner may reach Gerrit, and the routes that decide them name the
/// Gerrit Service mesh-authz itself calls.
#[tokio::test]
async fn ci_runner_calls_to_gerrit_are_decided_by_its_workload_identity() {
    let policy = load_kind("istio/ci-to-gerrit.yaml", "AuthorizationPolicy");
    let gerrit = load_kind("istio/gerrit-access.yaml", "AuthorizationPolicy");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(
        policy["spec"]["provider"]["name"],
        load("istio/mesh-config-snippet.yaml")["meshConfig"]["extensionProviders"][0]["name"]
    );
    assert_eq!(
        policy["metadata"]["namespace"],
        gerrit["metadata"]["namespace"]
    );
    assert_eq!(policy["spec"]["selector"], gerrit["spec"]["selector"]);
    let namespaces = &policy["spec"]["rules"][0]["from"][0]["source"]["namespaces"];
    assert_eq!(
        namespaces[0], "ci",
        "only the ci namespace: not the gateway, not mesh-authz"
    );
    let runner = "cluster.local/ns/ci/sa/runner";
    assert!(
        seq(
            &gerrit["spec"]["rules"][0]["from"][0]["source"]["principals"],
            "principals"
        )
        .iter()
        .any(|p| p == runner),
        "gerrit-access.yaml does not let the runner reach Gerrit"
    );
    let config = config();
    let service = gerrit_config()
        .settings
        .base
        .host_str()
        .unwrap()
        .to_string();
    let routes = config.routes.routes();
    let vote = routes
        .iter()
        .find(|r| &*r.name == "gerrit-ci-vote")
        .unwrap();
    assert!(vote.hosts.iter().any(|h| h.matches(&service)), "{service}");

    // As mesh-authz decides them (static groups stand in for Gerrit here).
    let yaml = read(&base().join("config.yaml"));
    let gerrit_start = yaml.find("\ngerrit:").unwrap();
    let gerrit_end = yaml[gerrit_start + 1..].find("\n\n").unwrap() + gerrit_start + 1;
    let yaml = format!(
        "{}\nstatic_groups: {{}}\n{}",
        &yaml[..gerrit_start],
        &yaml[gerrit_end..]
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), &yaml).unwrap();
    let config = mesh_authz::config::load(&dir.path().join("config.yaml")).unwrap();
    let authorizer = Authorizer::from_config(&config, reqwest::Client::new()).unwrap();
    let empty = HashMap::new();
    let vote = "/a/changes/42/revisions/1/review";
    let host = format!("{service}:8080");
    let as_runner = RequestView {
        principal: "spiffe://cluster.local/ns/ci/sa/runner",
        ..RequestView::http("POST", &host, vote, &empty)
    };
    match authorizer.decide(&as_runner).await.verdict {
        Verdict::Allow { headers, .. } => assert!(
            headers
                .set
                .contains(&("x-forwarded-user".into(), "ci-bot".into())),
            "{headers:?}"
        ),
        other => panic!("the runner may vote: {other:?}"),
    }
    let through_gateway = RequestView::http("POST", "gerrit.example.com", vote, &empty);
    assert!(matches!(
        authorizer.decide(&through_gateway).await.verdict,
        Verdict::Deny(Denial::PrincipalNotAllowed)
    ));
}

#[tokio::test]
async fn ghz_cold_config_sends_the_allowed_request_to_a_server_that_verifies_every_token() {
    let cold = ghz("check-cold.json");
    assert_eq!(
        cold["data"],
        ghz("check-allow.json")["data"],
        "check-cold.json: the same request as check-allow.json"
    );
    let config = mesh_authz::config::load(&root().join("benches/ghz/cold.yaml"))
        .unwrap_or_else(|e| panic!("benches/ghz/cold.yaml: {e}"));
    assert_eq!(
        config.token_cache_entries, 0,
        "cold.yaml: the token cache is off"
    );
    assert_eq!(
        cold["host"],
        config.server.grpc_listen.to_string(),
        "check-cold.json host vs cold.yaml grpc_listen"
    );
    let authorizer = Authorizer::from_config(&config, reqwest::Client::new()).unwrap();
    let http = &cold["data"]["attributes"]["request"]["http"];
    let headers: HashMap<String, String> = http["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let view = RequestView::http(
        http["method"].as_str().unwrap(),
        http["host"].as_str().unwrap(),
        http["path"].as_str().unwrap(),
        &headers,
    );
    let verdict = authorizer.decide(&view).await.verdict;
    assert!(matches!(verdict, Verdict::Allow { .. }), "{verdict:?}");
}

#[test]
fn the_shipped_protoset_is_the_descriptor_set_the_server_serves() {
    let shipped = std::fs::read(root().join("benches/ghz/authz.protoset")).unwrap();
    assert!(
        shipped == mesh_authz::server::DESCRIPTOR_SET,
        "benches/ghz/authz.protoset is stale: copy authz_descriptor.bin from the build's OUT_DIR"
    );
}

// ---------------------------------------------------------------------------------------
// The container image recipe.

/// The instructions of `Containerfile`, as `(stage, INSTRUCTION, arguments)`, with
/// continuation lines joined and comments left out.
fn containerfile() -> Vec<(usize, String, String)> {
    let text = read(&root().join("Containerfile"));
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    joined.push(std::mem::take(&mut current));
                }
            }
        }
    }
    let mut stage = 0;
    joined
        .into_iter()
        .map(|l| {
            let (word, rest) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
            let word = word.to_ascii_uppercase();
            if word == "FROM" {
                stage += 1;
            }
            (stage, word, rest.trim().to_string())
        })
        .collect()
}

#[test]
fn the_image_builds_locked_and_runs_without_a_shell_as_the_deployments_user() {
    let steps = containerfile();
    let last = steps.iter().map(|(s, _, _)| *s).max().unwrap();
    assert!(last >= 2, "a multi-stage build");
    let of = |stage: usize, word: &str| -> Vec<&str> {
        steps
            .iter()
            .filter(|(s, w, _)| *s == stage && w == word)
            .map(|(_, _, rest)| rest.as_str())
            .collect()
    };
    // The build: a locked release build of the binary.
    let build_runs = of(1, "RUN").join("\n");
    assert!(
        build_runs.contains("cargo build --release --locked"),
        "{build_runs}"
    );
    // The runtime: distroless (no shell, no package manager), nothing run in it.
    let runtime = of(last, "FROM");
    assert!(runtime[0].starts_with("gcr.io/distroless/"), "{runtime:?}");
    assert!(
        of(last, "RUN").is_empty(),
        "a RUN would need a shell in the runtime image"
    );
    // Its user: numeric, the Deployment's runAsUser and runAsGroup.
    let user = of(last, "USER");
    let deploy = deployment();
    let sc = &container(&deploy)["securityContext"];
    assert_eq!(
        user,
        [format!(
            "{}:{}",
            sc["runAsUser"].as_u64().unwrap(),
            sc["runAsGroup"].as_u64().unwrap()
        )]
    );
    // Version and commit in OCI labels, from build arguments.
    let labels = of(last, "LABEL").join(" ");
    for label in [
        "org.opencontainers.image.version=\"${VERSION}\"",
        "org.opencontainers.image.revision=\"${REVISION}\"",
    ] {
        assert!(labels.contains(label), "{label} in {labels}");
    }
    // The ports it exposes are the container ports of the Deployment.
    let exposed: Vec<u64> = of(last, "EXPOSE")
        .join(" ")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let ports: Vec<u64> = seq(&container(&deploy)["ports"], "ports")
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(exposed, ports);
    // The binary the entrypoint names is the one copied from the build.
    let copied = of(last, "COPY").join("\n");
    let entry = of(last, "ENTRYPOINT").join("");
    assert!(
        entry.contains("/usr/local/bin/mesh-authz") && copied.contains("/usr/local/bin/mesh-authz")
    );
}

#[test]
fn the_build_context_leaves_out_build_output_and_keeps_what_the_build_reads() {
    let ignore = read(&root().join(".dockerignore"));
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for out in ["target/", ".venv/", ".git/"] {
        assert!(ignored.contains(&out), "{out} is left out of the context");
    }
    for copied in containerfile()
        .iter()
        .filter(|(_, w, rest)| w == "COPY" && !rest.starts_with("--from"))
        .flat_map(|(_, _, rest)| {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        })
    {
        assert!(
            !ignored
                .iter()
                .any(|i| i.trim_end_matches('/') == copied.trim_end_matches('/')),
            "{copied} is copied but left out of the context"
        );
        assert!(root().join(&copied).exists(), "{copied} exists");
    }
}

// ---------------------------------------------------------------------------------------
// Alerts and the dashboard.

/// Every `mesh_authz_*` metric name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let re = regex::Regex::new(r"mesh_authz_[a-z0-9_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_name_exists_on_a_running_server() {
    // A server with every metric family: Gerrit (groups, grants), audit on.
    let gerrit = support::gerrit::FakeGerrit::start().await;
    let s = support::server::start_with_gerrit(
        &gerrit.url(),
        |yaml| {
            format!("{yaml}\naudit: {{output: audit.log}}\ngrants: {{project: access-grants}}\n")
        },
        &[],
    )
    .await;
    // Families show once they have a sample: an allowed and a denied check make them.
    gerrit.add_account("alice", &["team-a"]);
    assert_eq!(support::server::check_team_a(&s, "alice").await.unwrap(), 0);
    let no_token = support::server::check_request("GET", support::server::HOST, "/a/x", &[]);
    s.client.clone().check(no_token).await.unwrap();
    let exposed = s.metrics().await;
    let families: std::collections::BTreeSet<&str> = exposed
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let exists = |name: &str| {
        families.contains(name)
            || ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| {
                    name.strip_suffix(suffix)
                        .is_some_and(|b| families.contains(b))
                })
    };
    let monitoring = root().join("manifests/monitoring");
    let mut named = 0;
    for file in ["prometheusrule.yaml", "dashboard.json"] {
        let text = read(&monitoring.join(file));
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file} names metrics");
        for name in names {
            named += 1;
            assert!(
                exists(&name),
                "{file} names {name}, which /metrics does not have:\n{exposed}"
            );
        }
    }
    assert!(named > 10);
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&monitoring.join("dashboard.json"))).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 6);
}

#[test]
fn the_autoscaler_targets_the_deployment_on_cpu_and_keeps_two_replicas() {
    let hpa = load_kind("horizontalpodautoscaler.yaml", "HorizontalPodAutoscaler");
    let deploy = deployment();
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deploy["metadata"]["name"]
    );
    assert!(hpa["spec"]["minReplicas"].as_u64() >= Some(2));
    let metric = &seq(&hpa["spec"]["metrics"], "metrics")[0];
    assert_eq!(metric["resource"]["name"], "cpu");
    // Utilization is a share of the request: the container must have one.
    assert!(container(&deploy)["resources"]["requests"]["cpu"].is_string());
}

#[test]
fn the_network_policy_selects_the_pods_and_opens_only_named_ports() {
    let policy = load_kind("networkpolicy.yaml", "NetworkPolicy");
    let deploy = deployment();
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for (k, v) in policy["spec"]["podSelector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            &labels[k.as_str().unwrap()],
            v,
            "the policy selects the pods"
        );
    }
    let container_ports: Vec<&str> = seq(&container(&deploy)["ports"], "ports")
        .iter()
        .map(|p| str_of(&p["name"], "port name"))
        .collect();
    for rule in seq(&policy["spec"]["ingress"], "ingress") {
        for port in seq(&rule["ports"], "ports") {
            let name = str_of(&port["port"], "ingress port");
            assert!(
                container_ports.contains(&name),
                "ingress to unnamed port {name}"
            );
        }
    }
    let types = seq(&policy["spec"]["policyTypes"], "policyTypes");
    assert!(types.iter().any(|t| t == "Egress"), "egress is limited too");
}

#[test]
fn replicas_spread_across_zones_and_nodes() {
    let deploy = deployment();
    let keys: Vec<&str> = seq(
        &deploy["spec"]["template"]["spec"]["topologySpreadConstraints"],
        "topologySpreadConstraints",
    )
    .iter()
    .map(|c| str_of(&c["topologyKey"], "topologyKey"))
    .collect();
    assert_eq!(
        keys,
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    );
}

// ---------------------------------------------------------------------------------------
// kubectl through the gateway: `manifests/kube` (opt-in), and the kube route it needs in
// mesh-authz's config (`kube/config-routes.yaml`, merged into `base/config.yaml` by hand).
//
// The credential story these tests hold together: the gateway calls the apiserver with
// the client certificate in the Secret that destinationrule.yaml names (credentialName,
// in the gateway's namespace). manifests/README.md issues that certificate with the CN
// `mesh-authz-gateway` and no O, so the apiserver authenticates it as that User, in no
// group; clusterrolebinding.yaml binds that User to clusterrole.yaml, which lets it
// impersonate exactly what mesh-authz sends for the kube route and nothing else; and
// authorizationpolicy.yaml makes sure mesh-authz, not the client, wrote those headers.

fn kube_dir() -> PathBuf {
    root().join("manifests/kube")
}

/// The single document in a file under `manifests/kube`.
fn kube_load(name: &str) -> Value {
    let mut docs = documents(&kube_dir().join(name));
    assert_eq!(
        docs.len(),
        1,
        "kube/{name}: expected exactly one YAML document"
    );
    docs.remove(0)
}

/// The namespace of the ingress gateway the kube objects configure (the CUSTOM policy's).
fn kube_gateway_namespace() -> String {
    str_of(
        &kube_load("authorizationpolicy.yaml")["metadata"]["namespace"],
        "kube/authorizationpolicy.yaml namespace",
    )
    .to_string()
}

/// `base/config.yaml` with `kube/config-routes.yaml` merged in the way that file says:
/// each of its issuers' `audiences` added to the base issuer with the same `issuer`, its
/// routes appended. Nothing else may be in the fragment (the merge would drop it).
fn kube_config_text() -> String {
    let fragment = kube_load("config-routes.yaml");
    /// The keys of a mapping in the fragment.
    fn keys_of<'a>(value: &'a Value, what: &str) -> BTreeSet<&'a str> {
        value
            .as_mapping()
            .unwrap_or_else(|| panic!("kube/config-routes.yaml: {what} is a mapping"))
            .keys()
            .map(|k| str_of(k, "key"))
            .collect()
    }
    assert_eq!(
        keys_of(&fragment, "the file"),
        BTreeSet::from(["issuers", "routes"]),
        "kube/config-routes.yaml: only `issuers` (audiences) and `routes` are merged"
    );
    let mut merged: Value = serde_yaml::from_str(&read(&base().join("config.yaml")))
        .unwrap_or_else(|e| panic!("manifests/base/config.yaml: {e}"));
    for issuer in seq(&fragment["issuers"], "kube/config-routes.yaml issuers") {
        assert_eq!(
            keys_of(issuer, "an issuer entry"),
            BTreeSet::from(["issuer", "audiences"]),
            "kube/config-routes.yaml: an issuer entry only adds audiences"
        );
        let target = merged["issuers"]
            .as_sequence_mut()
            .expect("base/config.yaml issuers")
            .iter_mut()
            .find(|i| i["issuer"] == issuer["issuer"])
            .unwrap_or_else(|| {
                panic!(
                    "kube/config-routes.yaml: base/config.yaml has no issuer {:?}",
                    issuer["issuer"]
                )
            });
        let audiences = target["audiences"]
            .as_sequence_mut()
            .expect("base/config.yaml issuer audiences");
        for audience in seq(&issuer["audiences"], "kube/config-routes.yaml audiences") {
            if !audiences.contains(audience) {
                audiences.push(audience.clone());
            }
        }
    }
    merged["routes"]
        .as_sequence_mut()
        .expect("base/config.yaml routes")
        .extend(
            seq(&fragment["routes"], "kube/config-routes.yaml routes")
                .iter()
                .cloned(),
        );
    serde_yaml::to_string(&merged).unwrap()
}

/// The merged config, compiled as `base/config.yaml` (so paths resolve as there).
fn kube_config() -> Config {
    config::from_file_text(&base().join("config.yaml"), &kube_config_text())
        .unwrap_or_else(|e| panic!("base/config.yaml with kube/config-routes.yaml merged in: {e}"))
}

/// The routes of `config` that lead to a kube-apiserver.
fn kube_routes(config: &Config) -> Vec<std::sync::Arc<mesh_authz::policy::RouteRule>> {
    config
        .routes
        .routes()
        .iter()
        .filter(|r| r.kube.is_some())
        .cloned()
        .collect()
}

/// The hosts the kube routes of `kube/config-routes.yaml` name, lower case. Exact hosts
/// only: the Gateway, the VirtualService and the kubeconfig name one host each.
fn kube_hosts() -> Vec<String> {
    let fragment = kube_load("config-routes.yaml");
    let mut hosts = Vec::new();
    for route in seq(&fragment["routes"], "kube/config-routes.yaml routes") {
        assert!(
            route["kube"].is_mapping(),
            "kube/config-routes.yaml: route {:?} is not a kube route",
            route["name"]
        );
        for host in seq(&route["match"]["hosts"], "kube/config-routes.yaml hosts") {
            let host = str_of(host, "host");
            assert!(
                !host.contains('*') && !host.contains(':'),
                "kube/config-routes.yaml: name the kube host exactly, not {host:?}"
            );
            hosts.push(host.to_ascii_lowercase());
        }
    }
    assert!(!hosts.is_empty(), "kube/config-routes.yaml: no kube host");
    hosts
}

/// The text of the manifests/README.md section headed `## heading`.
fn readme_section(heading: &str) -> String {
    let text = read(&root().join("manifests/README.md"));
    text.split("\n## ")
        .find(|s| s.lines().next().is_some_and(|l| l.trim() == heading))
        .unwrap_or_else(|| panic!("manifests/README.md: no section `## {heading}`"))
        .to_string()
}

const KUBE_README: &str = "kubectl through the gateway (`kube/`)";
const KUBE_ROLLBACK_README: &str = "Rolling back kubectl through the gateway";

/// The in-cluster apiserver's Service, and the names its serving certificate carries
/// for it.
const APISERVER_SERVICE: &str = "kubernetes.default.svc.cluster.local";
const APISERVER_SERVICE_NAMES: [&str; 4] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    APISERVER_SERVICE,
];

#[test]
fn kube_route_merges_into_the_base_config_and_takes_only_kubectls_tokens() {
    // `validate` accepts the merged file (overlaps and unreachable routes included).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, kube_config_text()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-authz"))
        .args(["validate", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "validate refused base/config.yaml with kube/config-routes.yaml merged in:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let config = kube_config();
    let kube = kube_routes(&config);
    assert!(!kube.is_empty(), "kube/config-routes.yaml: no kube route");
    let hosts = kube_hosts();
    for route in &kube {
        for h in &route.hosts {
            assert!(
                matches!(h, HostMatcher::Exact(name) if hosts.contains(name)),
                "route {}: host {h:?} is not one of {hosts:?}",
                route.name
            );
        }
    }
    // Every request for the kube host, with or without a port, is decided by a kube
    // route (the base routes name no such host, and none catches all hosts).
    let empty: HashMap<String, String> = HashMap::new();
    for host in &hosts {
        for authority in [host.clone(), format!("{host}:443")] {
            for (method, path) in [
                ("GET", "/api"),
                ("GET", "/api/v1/namespaces/team-a/pods"),
                ("POST", "/apis/apps/v1/namespaces/team-a/deployments"),
                ("DELETE", "/api/v1/nodes/n1"),
            ] {
                let view = RequestView::http(method, &authority, path, &empty);
                let routing = routing_path(view.path).unwrap();
                let view = RequestView {
                    path: &routing,
                    ..view
                };
                let route = config
                    .routes
                    .find(&view)
                    .unwrap_or_else(|| panic!("no route decides {method} {authority}{path}"));
                assert!(
                    route.kube.is_some(),
                    "{method} {authority}{path} is decided by route {:?}, not a kube route",
                    &*route.name
                );
            }
        }
    }

    let cli_audiences: BTreeSet<&str> = kube
        .iter()
        .flat_map(|r| r.audiences.iter().map(String::as_str))
        .collect();
    for route in &kube {
        // The gateway authenticates with its own certificate; the developer's token
        // stays at the edge.
        assert!(
            route.remove_headers.iter().any(|h| h == "authorization"),
            "route {}: the bearer token would reach the apiserver",
            route.name
        );
        assert!(
            !route.audiences.is_empty(),
            "route {}: name the audience of kubectl's tokens",
            route.name
        );
    }
    // The CLI's tokens open the apiserver and nothing else: every other route that takes
    // tokens names audiences of its own.
    for route in config.routes.routes().iter().filter(|r| r.kube.is_none()) {
        if route.requirement.needs_token() {
            assert!(
                !route.audiences.is_empty()
                    && route
                        .audiences
                        .iter()
                        .all(|a| !cli_audiences.contains(a.as_str())),
                "route {} accepts kubectl's tokens (audiences {:?})",
                route.name,
                route.audiences
            );
        }
    }
}

#[test]
fn kube_custom_policy_sends_every_request_for_the_kube_host_to_mesh_authz() {
    let policy = kube_load("authorizationpolicy.yaml");
    let gerrit_policy = load("istio/authorizationpolicy.yaml");
    assert_eq!(policy["kind"], "AuthorizationPolicy");
    let spec = &policy["spec"];
    assert_eq!(spec["action"], "CUSTOM");
    // One provider per workload: Istio answers a second with a deny-all filter.
    assert_eq!(spec["provider"]["name"], provider()["name"]);
    // The gateway that base/istio/authorizationpolicy.yaml guards, by a policy of its
    // own: applying or deleting this one leaves Gerrit's alone.
    assert_eq!(
        policy["metadata"]["namespace"],
        gerrit_policy["metadata"]["namespace"]
    );
    assert_eq!(spec["selector"], gerrit_policy["spec"]["selector"]);
    assert_ne!(
        policy["metadata"]["name"],
        gerrit_policy["metadata"]["name"]
    );

    // Whole hosts: nothing narrows the rules, so no request for the host skips the check.
    let mut hosts = BTreeSet::new();
    for rule in seq(&spec["rules"], "kube/authorizationpolicy.yaml rules") {
        assert!(
            rule["from"].is_null() && rule["when"].is_null(),
            "kube/authorizationpolicy.yaml narrows {rule:?}"
        );
        for to in seq(&rule["to"], "to") {
            let op = &to["operation"];
            for narrowing in [
                "paths",
                "notPaths",
                "methods",
                "notMethods",
                "ports",
                "notPorts",
                "notHosts",
            ] {
                assert!(
                    op[narrowing].is_null(),
                    "kube/authorizationpolicy.yaml narrows hosts by {narrowing}"
                );
            }
            for h in seq(&op["hosts"], "hosts") {
                hosts.insert(str_of(h, "host").to_ascii_lowercase());
            }
        }
    }
    for host in kube_hosts() {
        assert!(
            hosts.contains(&host),
            "kube/authorizationpolicy.yaml does not cover {host}"
        );
        assert!(
            hosts.contains(&format!("{host}:*")),
            "kube/authorizationpolicy.yaml does not cover {host}:<port>"
        );
    }
}

#[test]
fn kube_gateway_and_virtual_service_route_the_kube_host_to_the_apiserver_unchanged() {
    let hosts = kube_hosts();
    let namespace = kube_gateway_namespace();
    let policy = kube_load("authorizationpolicy.yaml");

    let gateway = kube_load("gateway.yaml");
    assert_eq!(gateway["kind"], "Gateway");
    assert_eq!(gateway["metadata"]["namespace"], namespace.as_str());
    assert_eq!(
        gateway["spec"]["selector"], policy["spec"]["selector"]["matchLabels"],
        "kube/gateway.yaml configures another workload than the CUSTOM policy guards"
    );
    let servers = seq(&gateway["spec"]["servers"], "kube/gateway.yaml servers");
    assert_eq!(servers.len(), 1, "kube/gateway.yaml: one server");
    let server = &servers[0];
    assert_eq!(server["port"]["protocol"], "HTTPS");
    assert_eq!(server["port"]["number"].as_u64(), Some(443));
    assert_eq!(server["tls"]["mode"], "SIMPLE");
    assert!(
        server["tls"]["credentialName"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "kube/gateway.yaml: the server certificate's Secret"
    );
    let server_hosts: Vec<String> = seq(&server["hosts"], "kube/gateway.yaml hosts")
        .iter()
        .map(|h| {
            let h = str_of(h, "host");
            let (vs_namespace, name) = h.split_once('/').unwrap_or_else(|| {
                panic!(
                    "kube/gateway.yaml: {h}: say whose VirtualServices may attach (`{namespace}/`)"
                )
            });
            assert_eq!(
                vs_namespace, namespace,
                "kube/gateway.yaml: VirtualServices of {vs_namespace} may attach to {name}"
            );
            name.to_ascii_lowercase()
        })
        .collect();
    assert_eq!(
        server_hosts, hosts,
        "kube/gateway.yaml hosts vs the kube route's in config-routes.yaml"
    );

    let vs = kube_load("virtualservice.yaml");
    assert_eq!(vs["kind"], "VirtualService");
    assert_eq!(vs["metadata"]["namespace"], namespace.as_str());
    let vs_hosts: Vec<String> = seq(&vs["spec"]["hosts"], "kube/virtualservice.yaml hosts")
        .iter()
        .map(|h| str_of(h, "host").to_ascii_lowercase())
        .collect();
    assert_eq!(
        vs_hosts, hosts,
        "kube/virtualservice.yaml hosts vs the kube route's in config-routes.yaml"
    );
    let gateways: Vec<String> = seq(&vs["spec"]["gateways"], "kube/virtualservice.yaml gateways")
        .iter()
        .map(|g| str_of(g, "gateway").to_string())
        .collect();
    assert_eq!(
        gateways,
        vec![format!(
            "{namespace}/{}",
            str_of(&gateway["metadata"]["name"], "gateway name")
        )],
        "kube/virtualservice.yaml is bound to the gateway only (not `mesh`)"
    );
    assert!(
        vs["spec"]["tcp"].is_null() && vs["spec"]["tls"].is_null(),
        "kube/virtualservice.yaml: HTTP only, where mesh-authz decides"
    );
    let http = seq(&vs["spec"]["http"], "kube/virtualservice.yaml http");
    assert_eq!(http.len(), 1, "kube/virtualservice.yaml: one route");
    // mesh-authz decided on the request as the client sent it: headers set here would
    // name anyone to the apiserver after the check, a rewrite would send another path
    // than the one decided, a mirror would send the request elsewhere too.
    for field in ["headers", "rewrite", "mirror", "mirrors", "delegate"] {
        assert!(
            http[0][field].is_null(),
            "kube/virtualservice.yaml: `{field}` changes the request after mesh-authz decided"
        );
    }
    let destinations = seq(&http[0]["route"], "kube/virtualservice.yaml route");
    assert_eq!(destinations.len(), 1);
    assert!(
        destinations[0]["headers"].is_null(),
        "kube/virtualservice.yaml: `headers` on the destination changes the request after mesh-authz decided"
    );
    let se = kube_load("serviceentry.yaml");
    assert_eq!(
        destinations[0]["destination"]["host"], se["spec"]["hosts"][0],
        "kube/virtualservice.yaml does not lead to serviceentry.yaml's apiserver"
    );
    assert_eq!(
        destinations[0]["destination"]["port"]["number"],
        se["spec"]["ports"][0]["number"]
    );
}

#[test]
fn kube_apiserver_is_the_in_cluster_service_reached_with_the_gateways_client_certificate() {
    let namespace = kube_gateway_namespace();

    let se = kube_load("serviceentry.yaml");
    assert_eq!(se["kind"], "ServiceEntry");
    assert_eq!(se["metadata"]["namespace"], namespace.as_str());
    let hosts = seq(&se["spec"]["hosts"], "kube/serviceentry.yaml hosts");
    assert_eq!(hosts.len(), 1, "kube/serviceentry.yaml: one host");
    let host = str_of(&hosts[0], "host");
    // A private name: Istio prefers the Kubernetes Service for the Service's own name,
    // and the client certificate must not apply to every other caller of the apiserver.
    assert!(
        !APISERVER_SERVICE_NAMES.contains(&host),
        "kube/serviceentry.yaml: {host} is the Service's own name"
    );
    let only_here = serde_yaml::to_value(["."]).unwrap();
    assert_eq!(
        se["spec"]["exportTo"], only_here,
        "kube/serviceentry.yaml: known to the gateway's namespace only"
    );
    assert_eq!(se["spec"]["location"], "MESH_EXTERNAL");
    assert_eq!(se["spec"]["resolution"], "DNS");
    let endpoints = seq(&se["spec"]["endpoints"], "kube/serviceentry.yaml endpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(
        endpoints[0]["address"], APISERVER_SERVICE,
        "kube/serviceentry.yaml: the in-cluster apiserver"
    );
    assert!(endpoints[0]["ports"].is_null());
    let ports = seq(&se["spec"]["ports"], "kube/serviceentry.yaml ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["number"].as_u64(), Some(443), "the Service's port");
    assert!(ports[0]["targetPort"].is_null());
    assert_eq!(ports[0]["protocol"], "HTTPS");

    let dr = kube_load("destinationrule.yaml");
    assert_eq!(dr["kind"], "DestinationRule");
    // credentialName is read from the namespace of the proxy that uses it: the gateway's.
    assert_eq!(dr["metadata"]["namespace"], namespace.as_str());
    assert_eq!(dr["spec"]["host"], host);
    assert_eq!(dr["spec"]["exportTo"], only_here);
    assert!(
        dr["spec"]["subsets"].is_null()
            && dr["spec"]["trafficPolicy"]["portLevelSettings"].is_null(),
        "kube/destinationrule.yaml: one TLS setting for the host, nothing overriding it"
    );
    let tls = &dr["spec"]["trafficPolicy"]["tls"];
    assert_eq!(
        tls["mode"], "MUTUAL",
        "the apiserver must authenticate the gateway"
    );
    assert!(
        !str_of(&tls["credentialName"], "credentialName").is_empty(),
        "kube/destinationrule.yaml: credentialName"
    );
    for file_field in ["clientCertificate", "privateKey", "caCertificates"] {
        assert!(
            tls[file_field].is_null(),
            "kube/destinationrule.yaml: the credential comes from credentialName, not {file_field}"
        );
    }
    // The apiserver is verified: against the CA in the credential, by a name its serving
    // certificate carries (not kube.example.com, which Istio would derive from the Host).
    assert_ne!(tls["insecureSkipVerify"].as_bool(), Some(true));
    assert_eq!(tls["sni"], APISERVER_SERVICE);
    let sans = seq(
        &tls["subjectAltNames"],
        "kube/destinationrule.yaml subjectAltNames",
    );
    assert!(!sans.is_empty());
    for san in sans {
        let san = str_of(san, "subjectAltName");
        assert!(
            APISERVER_SERVICE_NAMES.contains(&san),
            "kube/destinationrule.yaml: the apiserver's certificate does not name {san}"
        );
    }
}

#[test]
fn kube_binding_names_the_user_of_the_client_certificate_the_destination_rule_presents() {
    let dr = kube_load("destinationrule.yaml");
    let credential = str_of(
        &dr["spec"]["trafficPolicy"]["tls"]["credentialName"],
        "credentialName",
    );
    let dr_namespace = str_of(&dr["metadata"]["namespace"], "namespace");
    let role = kube_load("clusterrole.yaml");
    let binding = kube_load("clusterrolebinding.yaml");
    assert_eq!(binding["kind"], "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    // The certificate's user and nobody else: a client certificate authenticates the
    // User its CN names (and the groups its O names: none here).
    let subjects = seq(
        &binding["subjects"],
        "kube/clusterrolebinding.yaml subjects",
    );
    assert_eq!(
        subjects.len(),
        1,
        "kube/clusterrolebinding.yaml: one subject"
    );
    assert_eq!(subjects[0]["kind"], "User");
    assert_eq!(subjects[0]["apiGroup"], "rbac.authorization.k8s.io");
    assert!(subjects[0]["namespace"].is_null());
    let user = str_of(&subjects[0]["name"], "subject name");
    assert!(
        !user.starts_with("system:"),
        "kube/clusterrolebinding.yaml: {user}: `system:` names are Kubernetes' own"
    );

    // manifests/README.md issues the certificate for that user, by the client signer the
    // apiserver trusts, and puts it into the Secret destinationrule.yaml names, in its
    // namespace, under the keys Istio reads.
    let section = readme_section(KUBE_README);
    let subject = section
        .split_once("-subj \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(subject, _)| subject)
        .expect("manifests/README.md: the kube section issues no certificate (`-subj \"...\"`)");
    assert_eq!(
        subject,
        format!("/CN={user}"),
        "manifests/README.md: the certificate's subject must be the bound user alone (an O would be a group)"
    );
    for needle in [
        "signerName: kubernetes.io/kube-apiserver-client".to_string(),
        "usages: [client auth]".to_string(),
        format!("kubectl -n {dr_namespace} create secret generic {credential} "),
        "--from-file=cert=".to_string(),
        "--from-file=key=".to_string(),
        "--from-file=cacert=".to_string(),
    ] {
        assert!(
            section.contains(&needle),
            "manifests/README.md `## {KUBE_README}`: no `{needle}`"
        );
    }
}

#[test]
fn kube_cluster_role_lets_the_gateway_impersonate_only_what_mesh_authz_sends() {
    use mesh_authz::identity::{Credential, GerritAccount, Identity};
    use mesh_authz::policy::kube_access::{ImpersonateGroup, KubeTarget};
    use mesh_authz::policy::{
        upstream_changes, Impersonation, IMPERSONATE_GROUP, IMPERSONATE_USER,
    };
    use mesh_authz::request::Pairs;

    let config = kube_config();
    let kube = kube_routes(&config);
    assert!(!kube.is_empty());

    // What the role grants: resource -> resourceNames (None: any name).
    let role = kube_load("clusterrole.yaml");
    assert_eq!(role["kind"], "ClusterRole");
    assert!(role["aggregationRule"].is_null());
    let mut granted: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    for rule in seq(&role["rules"], "kube/clusterrole.yaml rules") {
        assert_eq!(
            rule["verbs"],
            serde_yaml::to_value(["impersonate"]).unwrap(),
            "kube/clusterrole.yaml: only `impersonate`: {rule:?}"
        );
        assert_eq!(
            rule["apiGroups"],
            serde_yaml::to_value([""]).unwrap(),
            "kube/clusterrole.yaml: users and groups are in the core group: {rule:?}"
        );
        assert!(rule["nonResourceURLs"].is_null());
        let names = match &rule["resourceNames"] {
            Value::Null => None,
            v => Some(
                seq(v, "resourceNames")
                    .iter()
                    .map(|n| str_of(n, "resourceName").to_string())
                    .collect::<BTreeSet<String>>(),
            ),
        };
        assert!(
            names.as_ref().is_none_or(|n| !n.is_empty()),
            "kube/clusterrole.yaml: an empty resourceNames means any name"
        );
        for resource in seq(&rule["resources"], "resources") {
            let resource = str_of(resource, "resource").to_string();
            assert!(
                granted.insert(resource.clone(), names.clone()).is_none(),
                "kube/clusterrole.yaml: {resource} in two rules"
            );
        }
    }

    // The groups mesh-authz can impersonate on the kube routes: with `granting`, the
    // group that allowed (a rule's groups_any_of match, or a namespace's owner group);
    // `fixed:NAME`: NAME; `none`: none. (Grants impersonate the user alone.)
    let mut groups: BTreeSet<String> = BTreeSet::new();
    for route in &kube {
        let policy = route.kube.as_ref().unwrap();
        match &policy.impersonate_group {
            ImpersonateGroup::None => {}
            ImpersonateGroup::Fixed(g) => {
                groups.insert(g.clone());
            }
            ImpersonateGroup::Granting => {
                for (i, rule) in policy.rules.iter().enumerate() {
                    if let KubeTarget::Resources { scope, .. } = &rule.target {
                        assert!(
                            scope.namespace_group.is_none(),
                            "route {}: kube.rules[{i}] impersonates a namespace's owner group, \
                             which can be any name, and RBAC cannot list it: name the groups \
                             outright (see kube/config-routes.yaml)",
                            route.name
                        );
                    }
                    groups.extend(rule.groups_any_of.iter().map(|g| g.value().to_string()));
                }
            }
        }
    }
    for g in &groups {
        assert!(
            !g.starts_with("system:"),
            "the kube route would impersonate {g}"
        );
    }

    // The Impersonate-* headers mesh-authz sets on an allowed kube request; the client's
    // own are overwritten or removed, so the gateway's credential lends nothing else.
    let identity = Identity {
        issuer: "https://idp.example.com".into(),
        user: "alice".into(),
        email: None,
        gerrit_account: GerritAccount::Username("alice".into()),
        display_name: None,
        claims: std::sync::Arc::new(serde_json::Map::new()),
        credential: Credential::Token,
    };
    let forged = [
        ("impersonate-user", "system:admin"),
        ("impersonate-group", "system:masters"),
        ("impersonate-uid", "0"),
        ("impersonate-extra-scopes", "all"),
    ];
    let group = groups.iter().next().map(String::as_str);
    let mut sent: BTreeSet<String> = BTreeSet::new();
    for route in &kube {
        let changes = upstream_changes(
            route,
            Some(&identity),
            None,
            Some(Impersonation { group }),
            Pairs::List(&forged[..]),
        )
        .unwrap_or_else(|e| panic!("route {}: {e}", route.name));
        for (name, value) in &changes.set {
            if name.starts_with("impersonate-") {
                assert!(
                    value == "alice" || Some(value.as_str()) == group,
                    "route {}: {name}: {value}",
                    route.name
                );
                sent.insert(name.clone());
            }
        }
        for (name, _) in forged {
            assert!(
                changes.set.iter().any(|(n, _)| n == name)
                    || changes.remove.iter().any(|n| n == name),
                "route {}: the client's {name} reaches the apiserver",
                route.name
            );
        }
    }
    let needed: BTreeSet<&str> = sent
        .iter()
        .map(|header| match header.as_str() {
            h if h == IMPERSONATE_USER => "users",
            h if h == IMPERSONATE_GROUP => "groups",
            other => panic!(
                "mesh-authz sends {other}: kube/clusterrole.yaml must grant its resource \
                 (Impersonate-Uid: `uids`, Impersonate-Extra-*: `userextras/*`, in \
                 authentication.k8s.io)"
            ),
        })
        .collect();
    let resources: BTreeSet<&str> = granted.keys().map(String::as_str).collect();
    assert_eq!(
        resources, needed,
        "kube/clusterrole.yaml resources vs the Impersonate-* headers mesh-authz sets"
    );

    // Groups: exactly those the kube rules grant by. One missing, and the apiserver
    // refuses its members; one more, or any group, and the gateway's certificate could be
    // used as it (`system:masters` skips authorization altogether).
    if !groups.is_empty() {
        match &granted["groups"] {
            Some(names) => assert_eq!(
                names, &groups,
                "kube/clusterrole.yaml groups resourceNames vs the groups kube/config-routes.yaml's kube rules grant by"
            ),
            None => panic!(
                "kube/clusterrole.yaml lets the gateway impersonate any group, system:masters \
                 included: list {groups:?} as resourceNames"
            ),
        }
    }

    // Users: whoever signs in, when a rule takes a token (no list can name them all, and a
    // list would have the apiserver refuse everyone not on it); else exactly the
    // `as_user` names of the workload rules.
    let token_users = kube
        .iter()
        .any(|r| r.requirement.rules().iter().any(|rule| rule.token));
    let as_users: BTreeSet<String> = kube
        .iter()
        .flat_map(|r| {
            r.requirement
                .rules()
                .iter()
                .filter_map(|rule| rule.as_user.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    match &granted["users"] {
        None => assert!(
            token_users,
            "kube/clusterrole.yaml lets the gateway impersonate any user, but the kube routes \
             only act as {as_users:?}: list them as resourceNames"
        ),
        Some(names) => {
            assert!(
                !token_users,
                "kube/clusterrole.yaml lists the users {names:?}, but the kube routes \
                 impersonate whoever signs in: the apiserver would refuse everyone else"
            );
            assert_eq!(names, &as_users);
        }
    }
}

/// The kubeconfig stanza docs/git-and-kubectl.md's "git and kubectl" documents: its `exec`.
fn readme_exec_stanza() -> Value {
    let text = read(&root().join("docs/git-and-kubectl.md"));
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("git and kubectl"))
        .expect("docs/git-and-kubectl.md: no `## git and kubectl`");
    let block = section
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("command: mesh-authz"))
        .expect("docs/git-and-kubectl.md `## git and kubectl`: no kubeconfig stanza");
    let doc: Value = serde_yaml::from_str(block)
        .unwrap_or_else(|e| panic!("docs/git-and-kubectl.md kubeconfig stanza: {e}"));
    let exec = doc["users"][0]["user"]["exec"].clone();
    assert!(
        exec.is_mapping(),
        "docs/git-and-kubectl.md kubeconfig stanza: no users[0].user.exec"
    );
    exec
}

#[test]
fn developer_kubeconfig_runs_the_credential_plugin_against_the_kube_host() {
    use mesh_authz::credential::config::{ClientConfig, TokenKind};
    use mesh_authz::credential::kubectl::{ExecInfo, V1};

    let kubeconfig = kube_load("developer-kubeconfig.yaml");
    assert_eq!(kubeconfig["apiVersion"], "v1");
    assert_eq!(kubeconfig["kind"], "Config");
    let current = str_of(&kubeconfig["current-context"], "current-context");
    let context = seq(&kubeconfig["contexts"], "contexts")
        .iter()
        .find(|c| c["name"] == current)
        .unwrap_or_else(|| panic!("developer-kubeconfig.yaml: no context {current}"));
    let cluster = seq(&kubeconfig["clusters"], "clusters")
        .iter()
        .find(|c| c["name"] == context["context"]["cluster"])
        .expect("developer-kubeconfig.yaml: the context's cluster");
    let user = seq(&kubeconfig["users"], "users")
        .iter()
        .find(|u| u["name"] == context["context"]["user"])
        .expect("developer-kubeconfig.yaml: the context's user");

    // The exec plugin exactly as README.md documents it, and no credential beside it.
    let fields: BTreeSet<&str> = user["user"]
        .as_mapping()
        .expect("developer-kubeconfig.yaml: users[].user")
        .keys()
        .map(|k| str_of(k, "field"))
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["exec"]),
        "developer-kubeconfig.yaml: the plugin's token only"
    );
    let exec = &user["user"]["exec"];
    assert_eq!(
        exec,
        &readme_exec_stanza(),
        "developer-kubeconfig.yaml vs README.md"
    );
    assert_eq!(exec["apiVersion"], V1);
    assert_eq!(exec["command"], "mesh-authz");
    assert_eq!(
        exec["args"],
        serde_yaml::to_value(["kubectl-credential"]).unwrap()
    );
    // Without `--host`, the plugin signs in for the cluster's server, which kubectl tells
    // it only with provideClusterInfo.
    assert_eq!(exec["provideClusterInfo"], Value::Bool(true));
    assert_eq!(exec["interactiveMode"], "Never");

    // The server is the gateway's kube host: the VirtualService's, the Gateway's and the
    // kube route's (the other kube tests tie those together).
    let server = str_of(&cluster["cluster"]["server"], "server");
    let url = url::Url::parse(server).unwrap_or_else(|e| panic!("{server}: {e}"));
    assert_eq!(url.scheme(), "https");
    assert_eq!(url.port(), None, "the gateway's HTTPS server is on 443");
    assert_eq!(url.path(), "/", "the apiserver is at the root of the host");
    let host = url.host_str().unwrap().to_string();
    let vs = kube_load("virtualservice.yaml");
    let vs_hosts: Vec<&str> = seq(&vs["spec"]["hosts"], "hosts")
        .iter()
        .map(|h| str_of(h, "host"))
        .collect();
    assert_eq!(
        vs_hosts,
        [host.as_str()],
        "developer-kubeconfig.yaml server vs kube/virtualservice.yaml hosts"
    );
    assert!(kube_hosts().contains(&host));
    assert_ne!(
        cluster["cluster"]["insecure-skip-tls-verify"].as_bool(),
        Some(true),
        "developer-kubeconfig.yaml: the token would go to whoever answers"
    );

    // What the plugin makes of it: kubectl passes the exec apiVersion and the server in
    // KUBERNETES_EXEC_INFO.
    let exec_info = serde_json::json!({
        "apiVersion": exec["apiVersion"].as_str(),
        "kind": "ExecCredential",
        "spec": {"cluster": {"server": server}, "interactive": false}
    });
    let exec_info = exec_info.to_string();
    let info = ExecInfo::parse(Some(exec_info.as_str())).unwrap();
    assert_eq!(info.api_version, V1);
    assert_eq!(info.server_host.as_deref(), Some(host.as_str()));

    // The developer's client config signs that host in at the server's issuer, with the
    // client whose ID tokens (`aud`: the client id) the kube route accepts.
    let path = kube_dir().join("developer-client.yaml");
    let client = ClientConfig::parse(&path, &read(&path)).unwrap_or_else(|e| panic!("{e}"));
    let gateway = client
        .choose(info.server_host.as_deref())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gateway.token, TokenKind::IdToken);
    let config = kube_config();
    let route = kube_routes(&config)
        .into_iter()
        .find(|r| r.hosts.iter().any(|h| h.matches(&host)))
        .unwrap_or_else(|| panic!("no kube route for {host}"));
    assert!(
        route.audiences.contains(&gateway.client.client_id),
        "route {} does not take tokens for {} (audiences {:?})",
        route.name,
        gateway.client.client_id,
        route.audiences
    );
    let issuer = config
        .issuers
        .iter()
        .find(|i| i.settings.issuer == gateway.client.issuer)
        .unwrap_or_else(|| {
            panic!(
                "developer-client.yaml: issuer {} is not the server's",
                gateway.client.issuer
            )
        });
    assert!(issuer
        .settings
        .audiences
        .contains(&gateway.client.client_id));
}

#[test]
fn kube_kustomization_applies_the_check_first_and_the_binding_last() {
    let k = kube_load("kustomization.yaml");
    assert_eq!(k["kind"], "Kustomization");
    // The default (legacy) order puts RBAC before the Istio objects: the binding before
    // the check.
    assert_eq!(k["sortOptions"]["order"], "fifo");
    assert!(
        k["namespace"].is_null(),
        "kube/kustomization.yaml: the objects name their own namespace"
    );
    let resources: Vec<String> = seq(&k["resources"], "kube/kustomization.yaml resources")
        .iter()
        .map(|r| str_of(r, "resource").to_string())
        .collect();
    for r in &resources {
        assert!(
            kube_dir().join(r).is_file(),
            "kube/kustomization.yaml: missing {r}"
        );
        assert!(
            !KUBE_NOT_OBJECTS.contains(&r.as_str()),
            "kube/kustomization.yaml applies {r}"
        );
    }
    for entry in std::fs::read_dir(kube_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !KUBE_NOT_OBJECTS.contains(&name.as_str()) {
            assert!(
                resources.contains(&name),
                "kube/kustomization.yaml: {name} not listed"
            );
        }
    }
    let kinds: Vec<Value> = resources.iter().map(|r| kube_load(r)).collect();
    assert_eq!(kinds[0]["kind"], "AuthorizationPolicy");
    assert_eq!(
        kinds[0]["spec"]["action"], "CUSTOM",
        "the check comes first"
    );
    assert_eq!(
        kinds.last().unwrap()["kind"],
        "ClusterRoleBinding",
        "the binding comes last"
    );
    let namespace = kube_gateway_namespace();
    for (r, doc) in resources.iter().zip(&kinds) {
        let cluster_scoped = doc["kind"]
            .as_str()
            .is_some_and(|k| k.starts_with("Cluster"));
        if cluster_scoped {
            assert!(doc["metadata"]["namespace"].is_null(), "kube/{r}");
        } else {
            assert_eq!(
                doc["metadata"]["namespace"],
                namespace.as_str(),
                "kube/{r}: not in the gateway's namespace"
            );
        }
    }

    // Rendered, where kubectl is installed: the order survives.
    let Some(rendered) = kustomize(&kube_dir()) else {
        return;
    };
    let rendered_kinds: Vec<&Value> = rendered.iter().map(|o| &o["kind"]).collect();
    let listed_kinds: Vec<&Value> = kinds.iter().map(|o| &o["kind"]).collect();
    assert_eq!(
        rendered_kinds, listed_kinds,
        "kubectl kustomize reorders kube/"
    );
}

#[test]
fn kube_rollout_checks_the_host_before_routing_it_and_rollback_unbinds_first() {
    let steps = readme_steps(KUBE_README);
    let route = steps_naming(&steps, "config-routes.yaml");
    let check = steps_naming(
        &steps,
        "kubectl apply -f manifests/kube/authorizationpolicy.yaml",
    );
    let apply = steps_naming(&steps, "kubectl apply -k manifests/kube");
    assert_eq!(
        check.len(),
        1,
        "the CUSTOM policy is applied in steps {check:?}"
    );
    assert_eq!(
        apply.len(),
        1,
        "`kubectl apply -k manifests/kube` in steps {apply:?}"
    );
    assert!(
        check[0] < apply[0],
        "the route to the apiserver (step {}) comes before the check of its host (step {}): \
         in between, clients' own Impersonate-* headers reach the apiserver",
        apply[0],
        check[0]
    );
    assert!(
        !route.is_empty() && route.iter().all(|&r| r < apply[0]),
        "mesh-authz gets the kube route (steps {route:?}) after the gateway sends it the host \
         (step {})",
        apply[0]
    );

    let back = readme_steps(KUBE_ROLLBACK_README);
    let unbind = steps_naming(
        &back,
        "kubectl delete -f manifests/kube/clusterrolebinding.yaml",
    );
    assert_eq!(
        unbind,
        vec![1usize],
        "rolling back does not start by deleting the binding (steps {unbind:?})"
    );
    let unroute = steps_naming(&back, "manifests/kube/virtualservice.yaml");
    let rest = steps_naming(&back, "kubectl delete -k manifests/kube");
    assert_eq!(
        rest.len(),
        1,
        "`kubectl delete -k manifests/kube` in steps {rest:?}"
    );
    assert!(
        unroute.len() == 1 && unroute[0] < rest[0],
        "the route (steps {unroute:?}) must go before `kubectl delete -k` (step {}), which \
         deletes the check first",
        rest[0]
    );
}

/// The objects `kubectl kustomize DIR` renders, in order; `None` (with a note) where
/// kubectl cannot run.
fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let out = match std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped rendering: cannot run kubectl: {e}");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect(),
    )
}
