//! The developer's side of sign-in, for git and kubectl: `mesh-authz login` signs in
//! once with the OAuth device grant, and the helpers git (`mesh-authz credential`) and
//! kubectl (`mesh-authz kubectl-credential`) call hand out a fresh token, refreshed
//! silently from the stored refresh token.
//!
//! - [`config`]: which gateway hosts sign in where (`~/.config/mesh-authz/client.yaml`).
//! - [`store`]: the refresh token and the last token, one mode-0600 file per issuer and
//!   client, refreshes serialised across processes.
//! - [`current`]: the token to send now: the stored one while it lasts, else refreshed.
//! - [`login`]: the device grant as a person sees it.
//! - [`git`]: git's credential helper protocol.
//! - [`kubectl`]: kubectl's `ExecCredential`.
//! - [`commands`]: the subcommands as `main` runs them (paths, stdin, exit status).
//!
//! Tokens go to stdout only where the protocol puts them (git's `password=`, the
//! `ExecCredential`); messages go to stderr and never hold one.

pub mod commands;
pub mod config;
pub mod current;
pub mod git;
pub mod kubectl;
pub mod login;
pub mod store;

use crate::oidc::OidcError;
use std::path::PathBuf;

/// Why the command line could not produce a token.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No client config file.
    #[error(
        "no client config at {0}: create it (see docs/git-and-kubectl.md) or pass --client-config"
    )]
    NoConfig(PathBuf),
    /// The client config is not valid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the field.
        message: String,
    },
    /// The host is in no gateway of the config.
    #[error("{host} is not a gateway in {path}: add it to a `gateways[].hosts`")]
    UnknownHost {
        /// The host asked about.
        host: String,
        /// The config file.
        path: PathBuf,
    },
    /// Nothing stored for the gateway's issuer and client.
    #[error("not signed in to {issuer}: run `mesh-authz login {host}`")]
    NotSignedIn {
        /// The issuer.
        issuer: String,
        /// A host of the gateway, for the command to run.
        host: String,
    },
    /// The refresh token no longer works (revoked, expired, rotated elsewhere).
    #[error("the sign-in at {issuer} has ended ({reason}): run `mesh-authz login {host}`")]
    SignInEnded {
        /// The issuer.
        issuer: String,
        /// A host of the gateway.
        host: String,
        /// What the IdP said.
        reason: String,
    },
    /// Signing in or refreshing failed at the IdP.
    #[error("{issuer}: {error}")]
    Idp {
        /// The issuer.
        issuer: String,
        /// What went wrong.
        error: OidcError,
    },
    /// The token file is readable or writable by others.
    #[error("{path} is open to other users (mode {mode:03o}): run `chmod 600 {path}`, or delete it and sign in again", path = .path.display())]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file or directory belongs to another user.
    #[error("{} belongs to another user: refusing to use it", .0.display())]
    NotOwner(PathBuf),
    /// The token store could not be read or written.
    #[error("{}: {reason}", .path.display())]
    Store {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// git sent something that is not its credential protocol.
    #[error("not git's credential protocol: {0}")]
    GitProtocol(String),
    /// `KUBERNETES_EXEC_INFO` asks for something this plugin does not speak.
    #[error("KUBERNETES_EXEC_INFO: {0}")]
    ExecInfo(String),
    /// The IdP's answer holds no token of the kind the gateway sends.
    #[error(
        "the IdP's answer has no {0}: set `token:` in the client config to the kind it issues"
    )]
    NoToken(&'static str),
}
