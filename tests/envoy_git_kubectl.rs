//! git and kubectl through the real Envoy (TLS) and the real mesh-authz, signed in with
//! `mesh-authz login` at the fake IdP: real `git` clones and pushes to a smart-HTTP
//! upstream (`git http-backend`) with `mesh-authz credential` as its credential helper,
//! and real `kubectl` calls a stand-in apiserver with `mesh-authz kubectl-credential` as
//! its exec plugin.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use support::developer::{kubectl_minor, require_program, text, Developer, CLI_CLIENT};
use support::envoy::{require_envoy, start_upstream, Envoy};
use support::git_http::GitServer;
use support::oidc_provider::{Client, ClientAuth, FakeOidcProvider, OidcConfig, User};
use support::pki::TestCa;
use support::server::TestServer;

const GERRIT: &str = "gerrit.example.com";

fn config(issuer: &str) -> String {
    format!(
        r#"
server: {{grpc_listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, drain_delay: 0s}}
issuers:
  - issuer: {issuer}
    audiences: [{CLI_CLIENT}]
    jwks: {{discovery: true}}
    user_claim: preferred_username
static_groups: {{alice: [team-a]}}
routes:
  # Pushing to team-a's repositories: members of team-a only.
  - name: git-push
    match: {{hosts: [{GERRIT}], path: {{regex: '/a/team-a/.*/git-receive-pack'}}}}
    token_from: [basic]
    allow: {{groups_any_of: [team-a]}}
    inject: {{user: x-forwarded-user}}
  # Fetching: anyone signed in.
  - name: git
    match: {{hosts: [{GERRIT}], path: {{segment_prefix: /a}}}}
    token_from: [basic]
    allow: authenticated
    inject: {{user: x-forwarded-user}}
  # The apiserver, by the name kubectl dials.
  - name: kube
    match: {{hosts: [localhost]}}
    allow: authenticated
    remove_headers: [authorization]
    kube:
      rules:
        - {{verbs: [get, list, watch], resources: ["*"], namespace_group: "{{namespace}}"}}
"#
    )
}

async fn idp() -> FakeOidcProvider {
    FakeOidcProvider::start(OidcConfig {
        device_poll_interval: Duration::from_secs(1),
        ..OidcConfig::default()
            .client(Client::new(CLI_CLIENT, "", ClientAuth::None))
            .user(User::new("alice", "alice-pw"))
            .user(User::new("bob", "bob-pw"))
    })
    .await
}

/// git as the developer runs it: their home (and its `.gitconfig`), no terminal prompts.
fn git(dev: &Developer, dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("HOME", dev.home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        // A machine-wide CA bundle would override the developer's `http.sslCAInfo`.
        .env_remove("GIT_SSL_CAINFO")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .output()
        .expect("git runs")
}

/// The developer's `~/.gitconfig`: trust the test CA, reach the gateway host on the
/// loopback listener, a commit identity; and, when `helper`, the one line
/// docs/git-and-kubectl.md asks for (with this build's binary).
fn write_gitconfig(dev: &Developer, ca: &Path, origin_host: &str, port: u16, helper: bool) {
    let mut config = format!(
        "[http]\n\tsslCAInfo = {}\n\tcurloptResolve = {GERRIT}:{port}:127.0.0.1\n[user]\n\tname = Dev\n\temail = dev@example.com\n",
        ca.display()
    );
    if helper {
        config.push_str(&format!(
            "[credential \"https://{origin_host}\"]\n\thelper = \"!{} credential\"\n",
            env!("CARGO_BIN_EXE_mesh-authz")
        ));
    }
    std::fs::write(dev.home.path().join(".gitconfig"), config).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_and_pushes_as_the_signed_in_user_and_fails_clearly_without_sign_in() {
    let Some(envoy_bin) = require_envoy() else {
        return;
    };
    if !require_program("git", &["--version"]) {
        return;
    }
    let idp = idp().await;
    let server = TestServer::start(&config(&idp.issuer()), &[]).await;
    let upstream = GitServer::start().await;
    upstream.create_repo("team-a/repo.git");
    let ca = TestCa::new();
    let envoy = Envoy::start_for_browser(
        &envoy_bin,
        server.running().grpc_addr,
        upstream.addr,
        &ca.server_cert(GERRIT),
    )
    .await;
    let port = envoy.listener.port();
    let host = format!("{GERRIT}:{port}");
    let url = format!("https://{host}/a/team-a/repo.git");

    let alice = Developer::new(&idp.issuer(), &[&host]);
    let ca_file = alice.home.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();

    // Without the helper: git gets the Basic challenge, has no credential, and says so.
    write_gitconfig(&alice, &ca_file, &host, port, false);
    let work = tempfile::tempdir().unwrap();
    let out = git(&alice, work.path(), &["clone", "-q", &url, "repo"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("could not read Username"), "{stderr}");
    assert!(
        upstream.requests().is_empty(),
        "nothing reached the upstream"
    );
    // What git was answered: 401 with a Basic challenge only (offered Bearer too, curl
    // would try that first and need one more round trip).
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .resolve(GERRIT, envoy.listener)
        .build()
        .unwrap();
    let answer = client
        .get(format!("{url}/info/refs?service=git-upload-pack"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let challenges: Vec<_> = answer
        .headers()
        .get_all("www-authenticate")
        .iter()
        .collect();
    assert_eq!(
        challenges,
        ["Basic realm=\"mesh-authz\", charset=\"UTF-8\""]
    );

    // Signed in, with the helper: clone and push as alice.
    let (login, _) = alice
        .login(&idp, &[], Some(("alice", "alice-pw", "approve")))
        .await;
    assert!(login.status.success(), "{:?}", text(&login));
    write_gitconfig(&alice, &ca_file, &host, port, true);
    let out = git(&alice, work.path(), &["clone", "-q", &url, "repo"]);
    assert!(out.status.success(), "clone: {:?}", text(&out));
    let repo = work.path().join("repo");
    std::fs::write(repo.join("CHANGE"), "a change\n").unwrap();
    for args in [&["add", "CHANGE"][..], &["commit", "-q", "-m", "a change"]] {
        let out = git(&alice, &repo, args);
        assert!(out.status.success(), "{args:?}: {:?}", text(&out));
    }
    let out = git(
        &alice,
        &repo,
        &["push", "-q", "origin", "HEAD:refs/for/main"],
    );
    assert!(out.status.success(), "push: {:?}", text(&out));
    assert!(upstream.refs("team-a/repo.git").contains("refs/for/main"));
    let seen = upstream.requests();
    assert!(seen.iter().any(|r| r.uri.ends_with("/git-receive-pack")));
    for request in &seen {
        assert_eq!(request.user.as_deref(), Some("alice"), "{request:?}");
        assert!(
            !request.authorization,
            "Authorization never reaches git: {request:?}"
        );
    }

    // bob, signed in but not in team-a: he may clone, and his push is refused with 403.
    let bob = Developer::new(&idp.issuer(), &[&host]);
    let bob_ca = bob.home.path().join("ca.pem");
    std::fs::write(&bob_ca, ca.cert_pem()).unwrap();
    write_gitconfig(&bob, &bob_ca, &host, port, true);
    let (login, _) = bob
        .login(&idp, &[], Some(("bob", "bob-pw", "approve")))
        .await;
    assert!(login.status.success(), "{:?}", text(&login));
    let bob_work = tempfile::tempdir().unwrap();
    let out = git(&bob, bob_work.path(), &["clone", "-q", &url, "repo"]);
    assert!(out.status.success(), "bob's clone: {:?}", text(&out));
    let bob_repo = bob_work.path().join("repo");
    std::fs::write(bob_repo.join("B"), "b\n").unwrap();
    git(&bob, &bob_repo, &["add", "B"]);
    git(&bob, &bob_repo, &["commit", "-q", "-m", "b"]);
    let pushes_before = upstream
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.uri.ends_with("/git-receive-pack"))
        .count();
    // (A ref alice's push did not create, so that git sends the pack and is not stopped
    // by its own fast-forward check first.)
    let out = git(
        &bob,
        &bob_repo,
        &["push", "origin", "HEAD:refs/for/feature"],
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("403"), "{stderr}");
    let pushes_after = upstream
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.uri.ends_with("/git-receive-pack"))
        .count();
    assert_eq!(
        pushes_before, pushes_after,
        "bob's pack never reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_calls_the_apiserver_as_the_signed_in_user_within_their_namespaces() {
    let Some(envoy_bin) = require_envoy() else {
        return;
    };
    if !require_program("kubectl", &["version", "--client"]) {
        return;
    }
    // The stanza of docs/git-and-kubectl.md (v1, kubectl 1.22 and later); Debian
    // bookworm's kubectl 1.20 speaks v1beta1 and knows no interactiveMode.
    let (api_version, interactive) = match kubectl_minor() {
        Some(minor) if minor < 22 => ("v1beta1", ""),
        _ => ("v1", "\n      interactiveMode: Never"),
    };
    let idp = idp().await;
    let server = TestServer::start(&config(&idp.issuer()), &[]).await;
    let (upstream, seen) = start_upstream().await;
    let ca = TestCa::new();
    let envoy = Envoy::start_for_browser(
        &envoy_bin,
        server.running().grpc_addr,
        upstream,
        &ca.server_cert("localhost"),
    )
    .await;
    let port = envoy.listener.port();
    let dev = Developer::new(&idp.issuer(), &[&format!("localhost:{port}")]);
    let (login, _) = dev
        .login(&idp, &[], Some(("alice", "alice-pw", "approve")))
        .await;
    assert!(login.status.success(), "{:?}", text(&login));
    let ca_file = dev.home.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    // The kubeconfig of docs/git-and-kubectl.md, pointed at this gateway and this build's binary.
    let kubeconfig = dev.home.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: gateway
  cluster:
    server: https://localhost:{port}
    certificate-authority: {ca}
users:
- name: developer
  user:
    exec:
      apiVersion: client.authentication.k8s.io/{api_version}
      command: {bin}
      args: [kubectl-credential]
      provideClusterInfo: true{interactive}
contexts:
- name: gateway
  context: {{cluster: gateway, user: developer}}
current-context: gateway
"#,
            ca = ca_file.display(),
            bin = env!("CARGO_BIN_EXE_mesh-authz"),
        ),
    )
    .unwrap();
    let kubectl = |path: &str| {
        Command::new("kubectl")
            .args(["get", "--raw", path])
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dev.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .expect("kubectl runs")
    };
    let out = kubectl("/api/v1/namespaces/team-a/pods");
    assert!(out.status.success(), "{:?}", text(&out));
    let got = seen.last_request();
    assert_eq!(got.uri, "/api/v1/namespaces/team-a/pods");
    assert_eq!(
        got.header("impersonate-user"),
        Some(vec!["alice".to_string()])
    );
    assert_eq!(got.header("authorization"), None);

    let before = seen.count();
    let out = kubectl("/api/v1/namespaces/team-b/pods");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Forbidden") || stderr.contains("403"),
        "{stderr}"
    );
    assert_eq!(seen.count(), before, "the apiserver never saw it");
}
