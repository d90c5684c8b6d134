//! A real headless Chromium (Debian `chromium` + `chromium-driver`) driven over WebDriver
//! (fantoccini), for the browser sign-in flow end to end.
//!
//! Outside CI a machine without them skips loudly; under `CI=true` that is a failure
//! (`.ci/run` installs both).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Chromium and chromedriver binaries, if installed.
fn binaries() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
    };
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"])
        .ok_or("no chromium on PATH (Debian: apt-get install chromium chromium-driver)")?;
    let driver = find(&["chromedriver"])
        .ok_or("no chromedriver on PATH (Debian: apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

/// A browser session; chromedriver (and with it Chromium) is killed on drop.
pub struct Chromium {
    /// The WebDriver session.
    pub client: fantoccini::Client,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // chromedriver leaves Chromium running when killed: end the browser processes
        // too, found by this session's own profile directory.
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg("--")
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .status();
    }
}

impl Chromium {
    /// Starts headless Chromium resolving each of `hosts` to 127.0.0.1 and accepting the
    /// test CA's certificates (`--ignore-certificate-errors`: the page is still a secure
    /// context, so `Secure` and `__Host-` cookies behave as in production). `None` when
    /// Chromium is missing and the test may skip.
    pub async fn start(hosts: &[&str]) -> Option<Self> {
        let (chromium, driver_bin) = match binaries() {
            Ok(found) => found,
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("a real browser is required under CI=true and {why}")
            }
            Err(why) => {
                eprintln!(
                    "\n**************************************************************\n\
                     SKIPPED: browser end-to-end test, {why}.\n\
                     **************************************************************\n"
                );
                return None;
            }
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let rules: Vec<String> = hosts.iter().map(|h| format!("MAP {h} 127.0.0.1")).collect();
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--ignore-certificate-errors".into(),
            "--window-size=1100,700".into(),
            format!("--host-resolver-rules={}", rules.join(", ")),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"binary": chromium, "args": args}),
        );
        caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
        let webdriver = format!("http://127.0.0.1:{port}");
        // fantoccini's HTTP client is built on rustls, which finds two crypto providers
        // in this build and wants one named (chromedriver itself is plain HTTP).
        let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut last_error = String::new();
        for _ in 0..100 {
            let builder = fantoccini::ClientBuilder::rustls().map(|mut b| {
                b.capabilities(caps.clone());
                b
            });
            match builder {
                Ok(builder) => match builder.connect(&webdriver).await {
                    Ok(client) => {
                        return Some(Chromium {
                            client,
                            driver,
                            profile,
                        })
                    }
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a session: {last_error}");
    }

    /// The text of the element with `id` on the current page.
    pub async fn text_of(&self, id: &str) -> String {
        match self.client.find(fantoccini::Locator::Id(id)).await {
            Ok(element) => element.text().await.unwrap(),
            Err(e) => panic!("no #{id} on {}: {e}", self.page_text_or_url().await),
        }
    }

    /// The page's visible text, or its URL when there is none (for messages).
    pub async fn page_text_or_url(&self) -> String {
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let body = self.client.find(fantoccini::Locator::Css("body")).await;
        match body {
            Ok(body) => format!("{url}: {}", body.text().await.unwrap_or_default()),
            Err(_) => url,
        }
    }

    /// Types `text` into the input with `id`, as a person would.
    pub async fn type_into(&self, id: &str, text: &str) {
        let input = self.client.find(fantoccini::Locator::Id(id)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Clicks the element with `id` and waits for the next page to load.
    pub async fn click(&self, id: &str) {
        self.client
            .find(fantoccini::Locator::Id(id))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Sets a cookie for `url` as its server would (host-only, `Path=/`, `Secure`,
    /// `HttpOnly`, `SameSite=Lax`), through the DevTools protocol: WebDriver's Add Cookie
    /// gives every cookie a `Domain`, which `__Host-` cookies must not have.
    pub async fn set_cookie(&self, url: &str, name: &str, value: &str) {
        let params = serde_json::json!({
            "url": url, "name": name, "value": value, "path": "/",
            "secure": true, "httpOnly": true, "sameSite": "Lax",
        });
        let answer = self
            .client
            .issue_cmd(Cdp {
                cmd: "Network.setCookie",
                params,
            })
            .await
            .unwrap();
        assert_eq!(answer["success"], serde_json::json!(true), "{answer}");
    }

    /// Saves a screenshot of the current page to `target/test-artifacts/NAME.png` and
    /// returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await.unwrap()).unwrap();
        path
    }
}

/// A DevTools protocol command through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: serde_json::Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = serde_json::json!({"cmd": self.cmd, "params": self.params});
        (axum::http::Method::POST, Some(body.to_string()))
    }
}
