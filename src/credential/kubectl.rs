//! kubectl's exec credential plugin protocol (client.authentication.k8s.io): kubectl runs
//! the command and reads an `ExecCredential` with the bearer token and its expiry from
//! its stdout; it caches the token until then.

use super::current::CurrentToken;
use super::CredentialError;

/// The API version kubectl asks for when it says nothing (it always says, in
/// `KUBERNETES_EXEC_INFO`).
pub const V1: &str = "client.authentication.k8s.io/v1";
const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// What `KUBERNETES_EXEC_INFO` says: the API version to answer in, and the cluster's
/// server when the kubeconfig sets `provideClusterInfo: true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInfo {
    /// The API version of the answer.
    pub api_version: &'static str,
    /// `host[:port]` of the cluster's server, if given.
    pub server_host: Option<String>,
}

impl ExecInfo {
    /// Reads the environment variable's value (`None`: not set).
    pub fn parse(value: Option<&str>) -> Result<Self, CredentialError> {
        let Some(text) = value.filter(|v| !v.trim().is_empty()) else {
            return Ok(ExecInfo {
                api_version: V1,
                server_host: None,
            });
        };
        let info: serde_json::Value =
            serde_json::from_str(text).map_err(|e| CredentialError::ExecInfo(e.to_string()))?;
        let api_version = match info.get("apiVersion").and_then(|v| v.as_str()) {
            Some(V1) | None => V1,
            Some(V1BETA1) => V1BETA1,
            Some(other) => {
                return Err(CredentialError::ExecInfo(format!(
                    "apiVersion {other:?}: this plugin speaks {V1} and {V1BETA1}"
                )))
            }
        };
        let server_host = info
            .pointer("/spec/cluster/server")
            .and_then(|v| v.as_str())
            .and_then(|s| url::Url::parse(s).ok())
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                })
            });
        Ok(ExecInfo {
            api_version,
            server_host,
        })
    }
}

/// The `ExecCredential` for `token`.
pub fn exec_credential(api_version: &str, token: &CurrentToken) -> String {
    let expires = chrono::DateTime::<chrono::Utc>::from_timestamp(token.expires as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    serde_json::json!({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {
            "token": token.token,
            "expirationTimestamp": expires,
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_has_the_token_and_an_rfc3339_expiry() {
        let token = CurrentToken {
            token: "t.o.k".into(),
            expires: 1_900_000_000,
            user: None,
        };
        let out: serde_json::Value = serde_json::from_str(&exec_credential(V1, &token)).unwrap();
        assert_eq!(
            out,
            serde_json::json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"token": "t.o.k", "expirationTimestamp": "2030-03-17T17:46:40Z"}
            })
        );
    }

    #[test]
    fn exec_info_gives_the_version_and_the_server() {
        let info = ExecInfo::parse(Some(
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"cluster":{"server":"https://kube.example.com:6443"},"interactive":false}}"#,
        ))
        .unwrap();
        assert_eq!(info.api_version, V1BETA1);
        assert_eq!(info.server_host.as_deref(), Some("kube.example.com:6443"));
        let bare = ExecInfo::parse(Some(
            r#"{"apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
        ))
        .unwrap();
        assert_eq!(
            bare,
            ExecInfo {
                api_version: V1,
                server_host: None
            }
        );
        assert_eq!(ExecInfo::parse(None).unwrap().api_version, V1);
    }

    #[test]
    fn an_unknown_version_or_garbage_is_an_error() {
        for bad in [
            r#"{"apiVersion":"client.authentication.k8s.io/v2"}"#,
            "{not json",
        ] {
            assert!(matches!(
                ExecInfo::parse(Some(bad)),
                Err(CredentialError::ExecInfo(_))
            ));
        }
    }
}
