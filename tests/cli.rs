//! The `mesh-authz` binary: validate, check and serve as an operator runs them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mesh-authz"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_the_quickstart_config() {
    let out = bin()
        .args(["validate", "--config"])
        .arg(repo("examples/quickstart/config.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
}

#[test]
fn validate_reports_every_problem_with_file_field_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        r#"
issuers:
  - issuer: https://idp.example.com
    audiences: [mesh]
    jwks: {file: nowhere.json}
routes:
  - name: gerrit
    match: {hosts: ["gerrit.*.com"]}
    allow: authenticated
    inject: {usr: x-user}
"#,
    )
    .unwrap();
    let out = bin()
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    let file = path.display().to_string();
    for expected in [
        format!("{file}: routes[0].inject.usr: unknown field"),
        format!("{file}: routes[0].match.hosts[0]: invalid host pattern"),
        format!("{file}: issuers[0].jwks.file: cannot read"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn validate_names_a_missing_file() {
    let out = bin()
        .args(["validate", "--config", "/nonexistent/mesh-authz.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out)
        .1
        .contains("/nonexistent/mesh-authz.yaml: cannot read"));
}

#[test]
fn serve_and_check_name_a_missing_config_and_its_cause_once() {
    let missing = "/nonexistent/mesh-authz.yaml";
    for args in [
        vec!["serve", "--config", missing],
        vec!["check", "--host", "x", "--config", missing],
    ] {
        let command = args[0];
        let out = bin().args(&args).output().unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert_eq!(
            stderr.trim(),
            "error: /nonexistent/mesh-authz.yaml: cannot read: No such file or directory (os error 2)",
            "{command}"
        );
    }
}

/// Runs `validate` on a config with the quickstart issuer and these routes.
fn validate_routes(routes: &str) -> (Output, String) {
    let (_dir, path) = routes_config(routes);
    let out = bin()
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (out, path.display().to_string())
}

/// A config file with the quickstart issuer and these routes, in a temp dir that lives as
/// long as the returned handle.
fn routes_config(routes: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("examples/quickstart/jwks.json"),
        dir.path().join("jwks.json"),
    )
    .unwrap();
    let path = dir.path().join("routes.yaml");
    let config = format!(
        "issuers:\n  - issuer: https://idp.example.com\n    audiences: [mesh]\n    jwks: {{file: jwks.json}}\nroutes:\n{routes}"
    );
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

#[test]
fn validate_refuses_an_unreachable_route_and_names_the_route_before_it() {
    let (out, file) = validate_routes(
        r#"
  - name: gerrit
    match: {hosts: [gerrit.example.com]}
    allow: authenticated
  - name: gerrit-admin
    match: {hosts: [gerrit.example.com], path: {prefix: /a/config/}}
    allow: public
"#,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}: routes[1] (\"gerrit-admin\"): unreachable: every request it matches is matched first by routes[0] (\"gerrit\")"
        )),
        "{stderr}"
    );
    assert!(!stdout.contains("ok ("), "{stdout}");
}

#[test]
fn validate_warns_about_a_route_that_loses_requests_to_a_more_general_one_and_passes() {
    let (out, file) = validate_routes(
        r#"
  - name: gerrit-read
    match: {hosts: [gerrit.example.com], methods: [GET, HEAD]}
    allow: authenticated
  - name: gerrit-api
    match: {hosts: [gerrit.example.com], path: {prefix: /a/}}
    allow: authenticated
"#,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}: warning: routes[1] (\"gerrit-api\"): requests such as GET gerrit.example.com/a/ are decided by routes[0] (\"gerrit-read\") first"
        )),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("{file}: ok (1 issuer(s), 2 route(s))")),
        "{stdout}"
    );
}

#[test]
fn validate_says_nothing_about_specific_routes_before_general_ones() {
    let (out, _) = validate_routes(
        r#"
  - name: gerrit-landing
    match: {hosts: [gerrit.example.com], path: {exact: /}, methods: [GET]}
    allow: public
  - name: gerrit-api-read
    match: {hosts: [gerrit.example.com], path: {prefix: /a/}, methods: [GET, HEAD]}
    allow: authenticated
  - name: gerrit
    match: {hosts: [gerrit.example.com]}
    allow: authenticated
"#,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn validate_warns_about_a_prefix_that_ends_inside_a_segment_and_not_about_segment_prefixes() {
    let (out, file) = validate_routes(
        r#"
  - name: team-a
    match: {hosts: [gerrit.example.com], path: {prefix: /a/projects/team-a}}
    allow: authenticated
  - name: team-b
    match: {hosts: [gerrit.example.com], path: {segment_prefix: /a/projects/team-b}}
    allow: authenticated
  - name: api
    match: {hosts: [gerrit.example.com], path: {prefix: /a/}}
    allow: authenticated
"#,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}: warning: routes[0] (\"team-a\"): prefix \"/a/projects/team-a\" also matches \"/a/projects/team-ax\": use `segment_prefix: /a/projects/team-a` for whole segments, or end the prefix with `/`"
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "only routes[0] is warned about: {stderr}"
    );
}

fn check(token: Option<&str>) -> Output {
    let mut cmd = bin();
    cmd.args(["check", "--config"])
        .arg(repo("examples/quickstart/config.yaml"))
        .args(["--method", "GET", "--host", "gerrit.example.com"])
        .args(["--path", "/a/projects/team-a/branches"]);
    if let Some(t) = token {
        cmd.arg("--token-file").arg(repo(t));
    }
    cmd.output().unwrap()
}

#[test]
fn check_explains_an_allow_with_the_route_and_upstream_headers() {
    let out = check(Some("examples/quickstart/alice.jwt"));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("route:    gerrit-team-a"), "{stdout}");
    assert!(stdout.contains("decision: ALLOW"), "{stdout}");
    assert!(
        stdout.contains("set     x-forwarded-user: alice"),
        "{stdout}"
    );
    assert!(stdout.contains("remove  authorization"), "{stdout}");
}

#[test]
fn check_explains_a_group_denial() {
    let out = check(Some("examples/quickstart/bob.jwt"));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("decision: DENY (HTTP 403)"), "{stdout}");
    assert!(
        stdout.contains("allow: groups any of [name:team-a]: not a member"),
        "{stdout}"
    );
}

#[test]
fn check_without_a_token_is_a_401() {
    let out = check(None);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("decision: DENY (HTTP 401)"), "{stdout}");
    assert!(stdout.contains("no token"), "{stdout}");
}

/// Runs `check` for `GET ci.example.com/` against a config whose only route wants the
/// Envoy context extension `gateway: internal`, with extra `args`.
fn check_context_extension_route(args: &[&str]) -> Output {
    let (_dir, file) = routes_config(
        r#"
  - name: ci-internal
    match:
      hosts: [ci.example.com]
      context_extensions: {gateway: internal}
    allow: public
"#,
    );
    bin()
        .args(["check", "--host", "ci.example.com", "--config"])
        .arg(&file)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_matches_routes_on_context_extensions_given_on_the_command_line() {
    let out = check_context_extension_route(&["--context-extension", "gateway=internal"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("route:    ci-internal"), "{stdout}");

    let out = check_context_extension_route(&["--context-extension", "gateway=public"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("route:    (none)"), "{stdout}");

    let out = check_context_extension_route(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).0);
}

#[test]
fn check_refuses_a_context_extension_without_a_value() {
    let out = check_context_extension_route(&["--context-extension", "gateway"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("--context-extension \"gateway\": expected `key=value`"),
        "{stderr}"
    );
}

/// A config with the quickstart issuer (whose demo tokens alice.jwt and bob.jwt verify)
/// and one route on `tokens.example.com` reading the token from where `token_from` says.
fn token_from_config(token_from: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("examples/quickstart/jwks.json"),
        dir.path().join("jwks.json"),
    )
    .unwrap();
    let path = dir.path().join("tokens.yaml");
    let config = format!(
        r#"
issuers:
  - issuer: https://idp.demo.mesh-authz.invalid
    audiences: [mesh-authz-demo]
    jwks: {{file: jwks.json}}
    user_claim: preferred_username
routes:
  - name: tokens
    match: {{hosts: [tokens.example.com]}}
    token_from: {token_from}
    allow: authenticated
    inject: {{user: x-forwarded-user}}
    remove_headers: [authorization, cookie]
"#
    );
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

fn alice_token() -> String {
    std::fs::read_to_string(repo("examples/quickstart/alice.jwt"))
        .unwrap()
        .trim()
        .to_string()
}

/// No piece of `secret` (the whole, or a dot-separated part of a JWT) in the output.
fn assert_not_echoed(out: &Output, secret: &str, what: &str) {
    let (stdout, stderr) = text(out);
    for part in std::iter::once(secret).chain(secret.split('.').filter(|p| p.len() > 8)) {
        assert!(
            !stdout.contains(part) && !stderr.contains(part),
            "{what} echoed:\n{stdout}{stderr}"
        );
    }
}

#[test]
fn check_never_echoes_a_query_token_and_shows_the_rest_of_the_query() {
    let (_dir, config) = token_from_config("[bearer, \"query:access_token\", \"query:t\"]");
    let token = alice_token();
    let path = format!("/builds/42?page=2&t={token}&access_token={token}&q=x");
    let out = bin()
        .args(["check", "--host", "tokens.example.com", "--config"])
        .arg(&config)
        .args(["--path", &path])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("token verified"), "{stdout}");
    assert_not_echoed(&out, &token, "the query token");
    assert!(
        stdout.contains(
            "request:  GET tokens.example.com/builds/42?page=2&t=[redacted]&access_token=[redacted]&q=x"
        ),
        "{stdout}"
    );
}

#[test]
fn check_never_echoes_authorization_cookie_or_token_header_values() {
    let token = alice_token();
    for (token_from, header) in [
        ("[bearer]", format!("authorization: Bearer {token}")),
        (
            "[\"cookie:session\"]",
            format!("cookie: theme=dark; session={token}"),
        ),
        ("[\"header:x-token\"]", format!("x-token: {token}")),
    ] {
        let (_dir, config) = token_from_config(token_from);
        let out = bin()
            .args(["check", "--host", "tokens.example.com", "--config"])
            .arg(&config)
            .args(["-H", &header])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{token_from}: {stdout}{stderr}");
        assert_not_echoed(&out, &token, token_from);
    }

    // A malformed -H is refused without repeating its value.
    let (_dir, config) = token_from_config("[bearer]");
    let out = bin()
        .args(["check", "--host", "tokens.example.com", "--config"])
        .arg(&config)
        .args(["-H", &format!("authorization=Bearer {token}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(
        text(&out).1.contains("expected `name: value`"),
        "{:?}",
        text(&out)
    );
    assert_not_echoed(&out, &token, "a malformed --header");
}

#[test]
fn serve_drains_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo("examples/quickstart/config.yaml"))
        .unwrap()
        .replace("0.0.0.0:9191", "127.0.0.1:0")
        .replace("0.0.0.0:9192", "127.0.0.1:0");
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    std::fs::copy(
        repo("examples/quickstart/jwks.json"),
        dir.path().join("jwks.json"),
    )
    .unwrap();
    let mut child = bin()
        .args(["serve", "--config"])
        .arg(dir.path().join("config.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // grpc_listen=127.0.0.1:PORT admin_listen=127.0.0.1:PORT
    let admin = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin_listen="))
        .unwrap_or_else(|| panic!("no address line: {line:?}"))
        .to_string();
    let readyz = format!("http://{admin}/readyz");
    let ready = || {
        reqwest::blocking::get(&readyz)
            .map(|r| r.status().as_u16())
            .ok()
    };
    assert_eq!(ready(), Some(200));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // drain_delay is 1s in the quickstart config: readiness must turn false within it.
    let mut saw_not_ready = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        saw_not_ready |= ready() != Some(200);
        assert!(
            Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(saw_not_ready, "readiness never went false before exit");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn check_sends_the_token_as_git_does_with_basic_and_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("examples/quickstart/jwks.json"),
        dir.path().join("jwks.json"),
    )
    .unwrap();
    let config = dir.path().join("git.yaml");
    std::fs::write(
        &config,
        r#"
issuers:
  - issuer: https://idp.demo.mesh-authz.invalid
    audiences: [mesh-authz-demo]
    jwks: {file: jwks.json}
    user_claim: preferred_username
routes:
  - name: gerrit-git
    match: {hosts: [gerrit.example.com], path: {segment_prefix: /a}}
    token_from: [basic]
    allow: authenticated
    inject: {user: x-forwarded-user}
"#,
    )
    .unwrap();
    let run = |extra: &[&str]| {
        bin()
            .args([
                "check",
                "--host",
                "gerrit.example.com",
                "--path",
                "/a/team-a/repo.git/info/refs",
            ])
            .arg("--config")
            .arg(&config)
            .arg("--token-file")
            .arg(repo("examples/quickstart/alice.jwt"))
            .args(extra)
            .output()
            .unwrap()
    };
    let token = std::fs::read_to_string(repo("examples/quickstart/alice.jwt")).unwrap();
    let out = run(&["--basic"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("set     x-forwarded-user: alice"),
        "{stdout}"
    );
    assert!(stdout.contains("remove  authorization"), "{stdout}");
    assert!(!stdout.contains(token.trim()), "the token is never shown");
    // As a Bearer token, the git route refuses it and says which schemes it takes.
    let out = run(&[]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("neither a Bearer token nor Basic credentials"),
        "{stdout}"
    );
    // Basic credentials given as a header: the password inside is not shown either.
    use base64::Engine;
    let pair = format!("alice:{}", token.trim());
    let header = format!(
        "authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    );
    let out = bin()
        .args([
            "check",
            "--host",
            "gerrit.example.com",
            "--path",
            "/a/x",
            "-H",
            &header,
        ])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains(token.trim()), "{stdout}");
}

#[test]
fn check_shows_what_a_dry_run_route_passes_upstream() {
    // The quickstart's team-a route in dry-run: bob would be denied, alice allowed.
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo("examples/quickstart/config.yaml"))
        .unwrap()
        .replacen(
            "    allow:\n      groups_any_of: [team-a]\n",
            "    allow:\n      groups_any_of: [team-a]\n    dry_run: true\n",
            1,
        );
    assert!(config.contains("dry_run: true"), "the quickstart changed");
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    std::fs::copy(
        repo("examples/quickstart/jwks.json"),
        dir.path().join("jwks.json"),
    )
    .unwrap();
    let run = |token: &str| {
        bin()
            .args(["check", "--config"])
            .arg(dir.path().join("config.yaml"))
            .args(["--method", "GET", "--host", "gerrit.example.com"])
            .args(["--path", "/a/projects/team-a/branches", "--token-file"])
            .arg(repo(token))
            .output()
            .unwrap()
    };
    let out = run("examples/quickstart/bob.jwt");
    let (stdout, _) = text(&out);
    assert!(stdout.contains("decision: DENY (HTTP 403)"), "{stdout}");
    assert!(stdout.contains("passes it on as it came"), "{stdout}");
    assert!(stdout.contains("remove  x-forwarded-user"), "{stdout}");
    assert!(!stdout.contains("remove  authorization"), "{stdout}");
    let out = run("examples/quickstart/alice.jwt");
    let (stdout, _) = text(&out);
    assert!(stdout.contains("decision: ALLOW"), "{stdout}");
    assert!(
        stdout.contains("set     x-forwarded-user: alice"),
        "{stdout}"
    );
    assert!(!stdout.contains("remove  authorization"), "{stdout}");
}
