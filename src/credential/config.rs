//! `client.yaml`: which gateway hosts sign in at which issuer, with which client.
//!
//! ```yaml
//! gateways:
//!   - hosts: [gerrit.example.com, kube.example.com]
//!     issuer: https://idp.example.com/realms/dev
//!     client_id: mesh-authz-cli
//! ```

use super::CredentialError;
use crate::oidc::{ClientAuth, OidcClient};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest client config read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientConfig {
    gateways: Vec<RawGateway>,
}

/// `gateways[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    /// Hosts as git and kubectl name them: `host`, or `host:port` when the port is not
    /// 443.
    hosts: Vec<String>,
    /// The issuer, as the server's `issuers[].issuer` names it.
    issuer: String,
    /// A public client registered at the IdP for the device grant
    /// (`urn:ietf:params:oauth:grant-type:device_code`), without a secret.
    client_id: String,
    /// Scopes asked for; `openid` and `offline_access` (for a refresh token) by default
    /// with `profile` and `email`.
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    /// Which token is the password: `id_token` (the default; its `aud` is `client_id`,
    /// so the server's issuer must list it in `audiences`) or `access_token` (when the
    /// IdP issues JWT access tokens for the gateway's audience).
    #[serde(default)]
    token: TokenKind,
    /// Timeout of one request to the IdP.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "offline_access"]
        .map(String::from)
        .to_vec()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Which token of the IdP's answer is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// The ID token.
    #[default]
    IdToken,
    /// The access token.
    AccessToken,
}

impl TokenKind {
    /// As the config names it.
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::IdToken => "id_token",
            TokenKind::AccessToken => "access_token",
        }
    }
}

/// One gateway: its hosts and where they sign in.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Hosts, lower case.
    pub hosts: Vec<String>,
    /// The IdP client (public: no secret).
    pub client: OidcClient,
    /// The token sent.
    pub token: TokenKind,
}

impl Gateway {
    /// The first host, for messages.
    pub fn host(&self) -> &str {
        self.hosts.first().map_or("", String::as_str)
    }
}

/// The checked client config.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where it was read from.
    pub path: PathBuf,
    gateways: Vec<Gateway>,
}

impl ClientConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let text = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CredentialError::NoConfig(path.to_path_buf()))
            }
            Err(e) => return Err(config_error(path, e.to_string())),
            Ok(m) if m.len() > MAX_CONFIG_BYTES => {
                return Err(config_error(path, "larger than 64 KiB".into()))
            }
            Ok(_) => {
                std::fs::read_to_string(path).map_err(|e| config_error(path, e.to_string()))?
            }
        };
        Self::parse(path, &text)
    }

    /// Checks config text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, CredentialError> {
        let raw: RawClientConfig =
            serde_yaml::from_str(text).map_err(|e| config_error(path, e.to_string()))?;
        let mut problems = Vec::new();
        let mut gateways = Vec::new();
        for (i, g) in raw.gateways.into_iter().enumerate() {
            let at = format!("gateways[{i}]");
            if g.hosts.is_empty() {
                problems.push(format!("{at}.hosts: list at least one host"));
            }
            if let Err(e) = check_issuer(&g.issuer) {
                problems.push(format!("{at}.issuer: {e}"));
            }
            if g.client_id.is_empty() {
                problems.push(format!("{at}.client_id: must not be empty"));
            }
            if !g.scopes.iter().any(|s| s == "openid") {
                problems.push(format!("{at}.scopes: must include `openid`"));
            }
            if g.timeout.is_zero() {
                problems.push(format!("{at}.timeout: must be greater than zero"));
            }
            gateways.push(Gateway {
                hosts: g.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                client: OidcClient {
                    issuer: g.issuer,
                    client_id: g.client_id,
                    secret: None,
                    auth: ClientAuth::None,
                    scopes: g.scopes,
                    timeout: g.timeout,
                },
                token: g.token,
            });
        }
        if gateways.is_empty() {
            problems.push("gateways: list at least one gateway".into());
        }
        let mut seen: Vec<&str> = Vec::new();
        for host in gateways.iter().flat_map(|g| &g.hosts) {
            if seen.contains(&host.as_str()) {
                problems.push(format!("host {host} is in more than one gateway"));
            }
            seen.push(host);
        }
        if !problems.is_empty() {
            return Err(config_error(path, problems.join("; ")));
        }
        Ok(ClientConfig {
            path: path.to_path_buf(),
            gateways,
        })
    }

    /// The gateway for `host` as git or kubectl names it (a `:443` is ignored).
    pub fn gateway(&self, host: &str) -> Option<&Gateway> {
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix(":443").unwrap_or(&host);
        self.gateways.iter().find(|g| {
            g.hosts
                .iter()
                .any(|h| h.strip_suffix(":443").unwrap_or(h) == host)
        })
    }

    /// The gateway named by `host`, or the only one when no host is given.
    pub fn choose(&self, host: Option<&str>) -> Result<&Gateway, CredentialError> {
        match (host, self.gateways.as_slice()) {
            (Some(host), _) => self
                .gateway(host)
                .ok_or_else(|| CredentialError::UnknownHost {
                    host: host.to_string(),
                    path: self.path.clone(),
                }),
            (None, [only]) => Ok(only),
            (None, _) => Err(config_error(
                &self.path,
                "several gateways: name the host to sign in to".into(),
            )),
        }
    }
}

/// `https://`, or `http://` on a loopback host (a local IdP for testing only): tokens
/// must not cross a network in the clear.
fn check_issuer(issuer: &str) -> Result<(), String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("{issuer:?} is not a URL: {e}"))?;
    let loopback = matches!(
        url.host(),
        Some(url::Host::Ipv4(ip)) if ip.is_loopback()
    ) || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || url.host_str() == Some("localhost");
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("{issuer:?} must be an https:// URL")),
    }
}

fn config_error(path: &Path, message: String) -> CredentialError {
    CredentialError::Config {
        path: path.to_path_buf(),
        message,
    }
}

/// mesh-authz's directory in the user's config directory: `$XDG_CONFIG_HOME/mesh-authz`,
/// else `~/.config/mesh-authz`.
pub fn config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".config"))
        })?;
    Some(base.join("mesh-authz"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientConfig, String> {
        ClientConfig::parse(Path::new("client.yaml"), text).map_err(|e| e.to_string())
    }

    const ONE: &str = "gateways:\n  - hosts: [Gerrit.example.com, kube.example.com:6443]\n    issuer: https://idp.example.com\n    client_id: cli\n";

    #[test]
    fn a_gateway_is_found_by_its_hosts_whatever_the_case_and_a_default_port() {
        let config = parse(ONE).unwrap();
        for host in [
            "gerrit.example.com",
            "GERRIT.example.com",
            "gerrit.example.com:443",
        ] {
            assert!(config.gateway(host).is_some(), "{host}");
        }
        assert!(config.gateway("kube.example.com:6443").is_some());
        assert!(config.gateway("kube.example.com").is_none());
        assert!(config.gateway("evil.example.com").is_none());
        let g = config.choose(None).unwrap();
        assert_eq!(g.client.client_id, "cli");
        assert_eq!(g.client.auth, ClientAuth::None);
        assert!(g.client.secret.is_none());
        assert_eq!(g.token, TokenKind::IdToken);
        assert!(g.client.scopes.contains(&"offline_access".to_string()));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let text = "gateways:\n  - hosts: []\n    issuer: http://idp.example.com\n    client_id: ''\n    scopes: [email]\n";
        let e = parse(text).unwrap_err();
        for expected in [
            "gateways[0].hosts",
            "gateways[0].issuer: \"http://idp.example.com\" must be an https:// URL",
            "gateways[0].client_id",
            "gateways[0].scopes",
        ] {
            assert!(e.contains(expected), "{expected} in {e}");
        }
        assert!(parse("gateways: []\n")
            .unwrap_err()
            .contains("at least one gateway"));
        assert!(parse("gateway: []\n")
            .unwrap_err()
            .contains("unknown field"));
        let twice = format!("{ONE}  - hosts: [gerrit.example.com]\n    issuer: https://b.example\n    client_id: c\n");
        assert!(parse(&twice).unwrap_err().contains("more than one gateway"));
    }

    #[test]
    fn a_plain_http_issuer_is_accepted_on_loopback_only() {
        for (issuer, ok) in [
            ("http://127.0.0.1:8080", true),
            ("http://localhost:8080", true),
            ("http://[::1]:8080", true),
            ("http://10.0.0.1", false),
            ("ftp://idp.example.com", false),
            ("https://idp.example.com/realms/x", true),
        ] {
            assert_eq!(check_issuer(issuer).is_ok(), ok, "{issuer}");
        }
    }

    #[test]
    fn several_gateways_need_a_host_to_choose() {
        let two = format!("{ONE}  - hosts: [other.example.com]\n    issuer: https://b.example\n    client_id: c\n    token: access_token\n");
        let config = parse(&two).unwrap();
        assert!(config.choose(None).is_err());
        assert_eq!(
            config.choose(Some("other.example.com")).unwrap().token,
            TokenKind::AccessToken
        );
        assert!(matches!(
            config.choose(Some("nope.example.com")),
            Err(CredentialError::UnknownHost { .. })
        ));
    }
}
