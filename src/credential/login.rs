//! `mesh-authz login`: the device grant as a person sees it. The IdP gives a code, the
//! person opens the verification page in any browser (this machine's, when it has one),
//! signs in and approves; the refresh token lands in the token store.

use super::config::Gateway;
use super::current::{stored_from, unix_now};
use super::store::{Stored, TokenStore};
use super::CredentialError;
use crate::oidc::Provider;
use std::io::Write;

/// Signs in to `gateway`'s issuer and stores the tokens. Instructions and progress go to
/// `say` (stderr); no token is ever written there.
pub async fn login(
    gateway: &Gateway,
    store: &TokenStore,
    provider: &Provider,
    say: &mut dyn Write,
    open_browser: bool,
) -> Result<Stored, CredentialError> {
    let issuer = &gateway.client.issuer;
    let idp = |error| CredentialError::Idp {
        issuer: issuer.clone(),
        error,
    };
    let authorization = provider.start_device_authorization().await.map_err(idp)?;
    let page = authorization
        .verification_uri_complete()
        .unwrap_or(authorization.verification_uri());
    let _ = writeln!(
        say,
        "To sign in for {}, open {}\nand enter the code {}",
        gateway.hosts.join(", "),
        authorization.verification_uri(),
        authorization.user_code(),
    );
    if authorization.verification_uri_complete().is_some() {
        let _ = writeln!(say, "(or open {page})");
    }
    if open_browser && open_in_browser(page) {
        let _ = writeln!(say, "A browser was opened on that page.");
    }
    let _ = writeln!(
        say,
        "Waiting for the approval (the code is good for {} minutes)...",
        authorization.expires_in().as_secs().div_ceil(60)
    );
    let tokens = provider.device_tokens(&authorization).await.map_err(idp)?;
    let stored = stored_from(gateway, &tokens, None, unix_now())?;
    store.save(&stored)?;
    let who = stored.user.as_deref().unwrap_or("(unknown user)");
    let _ = writeln!(say, "Signed in as {who} at {issuer}.");
    if stored.refresh_token.is_none() {
        let _ = writeln!(
            say,
            "warning: the IdP gave no refresh token (ask for the `offline_access` scope): sign in again when the token expires"
        );
    }
    Ok(stored)
}

/// Opens `url` in the user's browser when there is a display: `$BROWSER`, else
/// `xdg-open`. Whether it worked is only a hint; the URL is printed anyway.
fn open_in_browser(url: &str) -> bool {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let program = match var("BROWSER") {
        // `$BROWSER` may list several, `:`-separated; the first is tried.
        Some(list) => list.split(':').next().unwrap_or_default().to_string(),
        None if var("DISPLAY").is_some() || var("WAYLAND_DISPLAY").is_some() => {
            "xdg-open".to_string()
        }
        None => return false,
    };
    std::process::Command::new(program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}
