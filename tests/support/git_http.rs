//! A git smart-HTTP server in Gerrit's place: `git http-backend` (CGI, as git ships it)
//! behind a small HTTP/1.1 server, serving bare repositories under `/a/` as Gerrit does
//! for authenticated git. Like Gerrit with `auth.type: HTTP`, it trusts the identity
//! header the gateway injects: `X-Forwarded-User` becomes the CGI `REMOTE_USER`, without
//! which `git http-backend` refuses pushes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One request as the upstream got it.
#[derive(Clone, Debug)]
pub struct GitRequest {
    pub method: String,
    pub uri: String,
    /// `X-Forwarded-User`, if sent.
    pub user: Option<String>,
    /// Whether an `Authorization` header reached the upstream.
    pub authorization: bool,
}

pub struct GitServer {
    pub addr: SocketAddr,
    root: tempfile::TempDir,
    seen: Arc<Mutex<Vec<GitRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    root: PathBuf,
    seen: Arc<Mutex<Vec<GitRequest>>>,
}

impl GitServer {
    pub async fn start() -> Self {
        let root = tempfile::tempdir().expect("the repositories' directory");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            root: root.path().to_path_buf(),
            seen: seen.clone(),
        });
        let app = axum::Router::new().fallback(cgi).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GitServer {
            addr,
            root,
            seen,
            task,
        }
    }

    /// A bare repository `name` (e.g. `team-a/repo.git`) with one commit on `main`.
    pub fn create_repo(&self, name: &str) -> PathBuf {
        let bare = self.root.path().join(name);
        let work = tempfile::tempdir().unwrap();
        let git = |dir: &Path, args: &[&str]| {
            let out = std::process::Command::new("git")
                .current_dir(dir)
                .args(args)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .output()
                .expect("git runs");
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        git(work.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(work.path().join("README"), "hello\n").unwrap();
        git(work.path(), &["add", "README"]);
        git(
            work.path(),
            &[
                "-c",
                "user.name=Seed",
                "-c",
                "user.email=seed@example.com",
                "commit",
                "-q",
                "-m",
                "first",
            ],
        );
        std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
        git(
            work.path(),
            &["clone", "-q", "--bare", ".", bare.to_str().unwrap()],
        );
        bare
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<GitRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// The refs of repository `name`, as `git show-ref` lists them.
    pub fn refs(&self, name: &str) -> String {
        let out = std::process::Command::new("git")
            .args(["show-ref"])
            .current_dir(self.root.path().join(name))
            .output()
            .expect("git show-ref runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Runs `git http-backend` for one request (RFC 3875 CGI).
async fn cgi(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let user = header("x-forwarded-user");
    shared.seen.lock().unwrap().push(GitRequest {
        method: method.to_string(),
        uri: uri.to_string(),
        user: user.clone(),
        authorization: headers.contains_key("authorization"),
    });
    // Gerrit serves authenticated git under /a/.
    let Some(path_info) = uri.path().strip_prefix("/a") else {
        return (StatusCode::NOT_FOUND, "not under /a/").into_response();
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(user) = &user {
        command.env("REMOTE_USER", user);
    }
    for (name, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = header(name) {
            command.env(var, value);
        }
    }
    let Ok(mut child) = command.spawn() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "git http-backend did not start",
        )
            .into_response();
    };
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&body).await;
    }
    let Ok(out) = child.wait_with_output().await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "git http-backend failed").into_response();
    };
    cgi_response(&out.stdout)
}

/// A CGI answer (headers, a blank line, the body) as an HTTP response.
fn cgi_response(output: &[u8]) -> Response {
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return (StatusCode::BAD_GATEWAY, "no CGI headers").into_response();
    };
    let head = String::from_utf8_lossy(&output[..end]);
    let mut builder = axum::http::Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder
        .body(axum::body::Body::from(output[end + sep..].to_vec()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}
