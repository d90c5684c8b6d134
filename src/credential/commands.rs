//! The subcommands as `main` runs them: where the config and store are, what is read
//! from stdin and the environment, what goes to stdout, and the exit status.

use super::config::{config_dir, ClientConfig};
use super::current::{current_token, unix_now};
use super::git::{self, GitRequest, Operation};
use super::kubectl::{exec_credential, ExecInfo};
use super::store::TokenStore;
use super::CredentialError;
use crate::oidc::Provider;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The client config file: the one given, else `client.yaml` in mesh-authz's config
/// directory.
pub fn config_path(given: Option<&Path>) -> Result<PathBuf, CredentialError> {
    match given {
        Some(path) => Ok(path.to_path_buf()),
        None => config_dir().map(|d| d.join("client.yaml")).ok_or_else(|| {
            CredentialError::NoConfig(PathBuf::from("~/.config/mesh-authz/client.yaml"))
        }),
    }
}

/// The token store: `tokens/` in mesh-authz's config directory.
pub fn token_store() -> Result<TokenStore, CredentialError> {
    config_dir()
        .map(|d| TokenStore::new(d.join("tokens")))
        .ok_or_else(|| CredentialError::Store {
            path: PathBuf::from("~/.config/mesh-authz/tokens"),
            reason: "neither XDG_CONFIG_HOME nor HOME is set".into(),
        })
}

/// `mesh-authz login [HOST]`.
pub async fn login(
    config: Option<&Path>,
    host: Option<&str>,
    open_browser: bool,
) -> Result<(), CredentialError> {
    let config = ClientConfig::load(&config_path(config)?)?;
    let gateway = config.choose(host)?;
    let provider = Provider::new(gateway.client.clone());
    let store = token_store()?;
    let mut stderr = std::io::stderr();
    super::login::login(gateway, &store, &provider, &mut stderr, open_browser).await?;
    Ok(())
}

/// `mesh-authz logout [HOST]`: forgets the stored tokens.
pub fn logout(config: Option<&Path>, host: Option<&str>) -> Result<bool, CredentialError> {
    let config = ClientConfig::load(&config_path(config)?)?;
    let gateway = config.choose(host)?;
    token_store()?.remove(&gateway.client.issuer, &gateway.client.client_id)
}

/// What a helper run ends with.
pub enum Outcome {
    /// Done (output written, or nothing to say).
    Done,
    /// Failed; the message is for stderr. For git, `quit=1` was written first.
    Failed(CredentialError),
}

/// `mesh-authz credential <operation>`, git's helper: `get` answers for the configured
/// gateway hosts over HTTPS only and says nothing for any other host, so git goes on to
/// its other helpers.
pub async fn git_helper(
    config: Option<&Path>,
    operation: &str,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> Outcome {
    let Some(operation) = Operation::parse(operation) else {
        return Outcome::Done;
    };
    let mut input = String::new();
    if let Err(e) = stdin
        .take(git::MAX_REQUEST_BYTES as u64)
        .read_to_string(&mut input)
    {
        return Outcome::Failed(CredentialError::GitProtocol(e.to_string()));
    }
    let request = match GitRequest::parse(&input) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e),
    };
    let Some(host) = request.https_host() else {
        return Outcome::Done;
    };
    let config = match config_path(config).and_then(|p| ClientConfig::load(&p)) {
        Ok(c) => c,
        // No config: this helper has nothing for anyone.
        Err(CredentialError::NoConfig(_)) => return Outcome::Done,
        Err(e) => return Outcome::Failed(e),
    };
    let Some(gateway) = config.gateway(host) else {
        return Outcome::Done;
    };
    let store = match token_store() {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e),
    };
    match operation {
        Operation::Store => Outcome::Done,
        Operation::Erase => {
            // git refused the token (401): forget it unless it is not the one stored, so
            // the next `get` refreshes instead of handing it out again.
            let (issuer, client_id) = (&gateway.client.issuer, &gateway.client.client_id);
            match store.load(issuer, client_id) {
                Ok(Some(stored)) if stored.token.is_some() && stored.token == request.password => {
                    let forgotten = super::store::Stored {
                        token: None,
                        expires: None,
                        ..stored
                    };
                    match store.save(&forgotten) {
                        Ok(()) => Outcome::Done,
                        Err(e) => Outcome::Failed(e),
                    }
                }
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Failed(e),
            }
        }
        Operation::Get => {
            let provider = Provider::new(gateway.client.clone());
            match current_token(gateway, &store, &provider, unix_now()).await {
                Ok(token) => match stdout.write_all(git::answer(&token).as_bytes()) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Failed(CredentialError::GitProtocol(e.to_string())),
                },
                Err(e) => {
                    let _ = stdout.write_all(git::QUIT.as_bytes());
                    Outcome::Failed(e)
                }
            }
        }
    }
}

/// `mesh-authz kubectl-credential [--host HOST]`: kubectl's exec plugin. The host is
/// the one given, else the cluster server's from `KUBERNETES_EXEC_INFO`.
pub async fn kubectl_plugin(
    config: Option<&Path>,
    host: Option<&str>,
    exec_info: Option<&str>,
    stdout: &mut dyn Write,
) -> Result<(), CredentialError> {
    let info = ExecInfo::parse(exec_info)?;
    let config = ClientConfig::load(&config_path(config)?)?;
    let gateway = match host.or(info.server_host.as_deref()) {
        Some(host) => config.choose(Some(host))?,
        None => config.choose(None)?,
    };
    let provider = Provider::new(gateway.client.clone());
    let token = current_token(gateway, &token_store()?, &provider, unix_now()).await?;
    stdout
        .write_all(exec_credential(info.api_version, &token).as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(|e| CredentialError::Store {
            path: PathBuf::from("stdout"),
            reason: e.to_string(),
        })
}
