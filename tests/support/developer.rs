//! A developer's machine for the `login`, `credential` and `kubectl-credential`
//! commands: a throwaway home directory with a client config pointing at the fake IdP,
//! and the real `mesh-authz` binary run in it (no display, so no browser is opened).

use super::oidc_provider::FakeOidcProvider;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The client id the fake IdP registers for the command line.
pub const CLI_CLIENT: &str = "mesh-authz-cli";

pub struct Developer {
    pub home: tempfile::TempDir,
}

impl Developer {
    /// A home whose `~/.config/mesh-authz/client.yaml` signs `hosts` in at `issuer`.
    pub fn new(issuer: &str, hosts: &[&str]) -> Self {
        Self::with_config(&format!(
            "gateways:\n  - hosts: [{}]\n    issuer: {issuer}\n    client_id: {CLI_CLIENT}\n",
            hosts.join(", ")
        ))
    }

    /// A home with this client config.
    pub fn with_config(config: &str) -> Self {
        let home = tempfile::tempdir().expect("a home directory");
        let dir = home.path().join(".config/mesh-authz");
        std::fs::create_dir_all(&dir).expect("the config directory");
        std::fs::write(dir.join("client.yaml"), config).expect("the client config");
        Developer { home }
    }

    /// The binary, run as this developer: `HOME` here, nothing that opens a browser.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mesh-authz"));
        command
            .env("HOME", self.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("MESH_AUTHZ_CLIENT_CONFIG")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("BROWSER")
            .env_remove("KUBERNETES_EXEC_INFO");
        command
    }

    /// `~/.config/mesh-authz/tokens`.
    pub fn token_dir(&self) -> PathBuf {
        self.home.path().join(".config/mesh-authz/tokens")
    }

    /// The token files (not lock files).
    pub fn token_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.token_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect()
    }

    /// `mesh-authz login ARGS`, answered at the IdP's verification page as a person
    /// would: the code it printed, `username` and `password`, and `approve` (or
    /// `deny`). `None` answers nothing. Returns the finished command and the code.
    pub async fn login(
        &self,
        idp: &FakeOidcProvider,
        args: &[&str],
        answer: Option<(&str, &str, &str)>,
    ) -> (Output, String) {
        let mut child = self
            .command()
            .arg("login")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mesh-authz login starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut code = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while code.is_empty() && std::time::Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(c) = line.strip_prefix("and enter the code ") {
                        code = c.trim().to_string();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if let (Some((username, password, action)), false) = (answer, code.is_empty()) {
            let page = reqwest::Client::new()
                .post(format!("{}/device", idp.issuer()))
                .form(&[
                    ("user_code", code.as_str()),
                    ("username", username),
                    ("password", password),
                    ("action", action),
                ])
                .send()
                .await
                .expect("the verification page answers")
                .text()
                .await
                .unwrap_or_default();
            assert!(
                page.contains("id=\"result\""),
                "the IdP took the answer: {page}"
            );
        }
        let status = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("joined")
            .expect("mesh-authz login ends");
        let stderr = reader.join().expect("stderr read");
        (
            Output {
                status: status.status,
                stdout: status.stdout,
                stderr: stderr.into_bytes(),
            },
            code,
        )
    }

    /// `mesh-authz credential OPERATION` with git's request on stdin.
    pub fn credential(&self, operation: &str, request: &str) -> Output {
        self.run_with_stdin(&["credential", operation], request)
    }

    /// The command with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mesh-authz starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
        child.wait_with_output().expect("mesh-authz ends")
    }
}

/// stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// git's `get` request for `host` over HTTPS.
pub fn git_get(host: &str) -> String {
    format!("protocol=https\nhost={host}\n\n")
}

/// The `key=value` lines of git's answer.
pub fn git_answer(out: &Output) -> std::collections::HashMap<String, String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether `program` runs (`program VERSION_ARGS`); without it a test is skipped with a
/// loud note, and fails under `CI=true`, where `.ci/run` installs it.
pub fn require_program(program: &str, version_args: &[&str]) -> bool {
    let runs = Command::new(program)
        .args(version_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{program} is required under CI=true; .ci/run installs it");
        }
        eprintln!("\nSKIPPED: `{program}` is not installed (apt-get install it, or run .ci/run)\n");
    }
    runs
}

/// kubectl's client minor version (`kubectl version --client -o json`).
pub fn kubectl_minor() -> Option<u32> {
    let out = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let minor = v.pointer("/clientVersion/minor")?.as_str()?;
    minor.trim_end_matches('+').parse().ok()
}
