//! `browser_sessions:` and `issuers[].browser_client`: browser sign-in.

use super::*;
use crate::config::schema::{RawBrowserClient, RawBrowserSessions};
use crate::oidc::{ClientAuth, ClientSecret, OidcClient};
use crate::signin::seal::KeyRing;
use crate::signin::session::SessionTimes;
use crate::signin::{BrowserSignInConfig, SessionSettings};

/// The browser sign-in config, if any issuer has a `browser_client`; reports what is
/// missing or wrong, and the files read (keys, secrets) into `referenced`.
pub(super) fn compile_browser(
    raw: &RawConfig,
    files: &FileResolver,
    referenced: &mut Vec<PathBuf>,
    p: &mut Problems,
) -> Option<BrowserSignInConfig> {
    let clients: Vec<OidcClient> = raw
        .issuers
        .iter()
        .enumerate()
        .filter_map(|(i, issuer)| {
            let client = issuer.browser_client.as_ref()?;
            let path = format!("issuers[{i}].browser_client");
            compile_client(&path, &issuer.issuer, client, files, referenced, p)
        })
        .collect();
    let wanted = raw.issuers.iter().any(|i| i.browser_client.is_some())
        || raw.routes.iter().any(|r| r.browser_sign_in);
    let sessions = match (&raw.browser_sessions, wanted) {
        (None, false) => return None,
        (Some(_), false) => {
            p.add(
                "browser_sessions",
                "no issuer has a `browser_client`: sessions would never be created",
            );
            return None;
        }
        (None, true) => {
            p.add(
                "browser_sessions",
                "browser sign-in needs `browser_sessions` (at least `key_files`)",
            );
            return None;
        }
        (Some(s), true) => compile_sessions(s, files, referenced, p)?,
    };
    Some(BrowserSignInConfig { sessions, clients })
}

fn compile_client(
    path: &str,
    issuer: &str,
    raw: &RawBrowserClient,
    files: &FileResolver,
    referenced: &mut Vec<PathBuf>,
    p: &mut Problems,
) -> Option<OidcClient> {
    if raw.client_id.is_empty() {
        p.add(format!("{path}.client_id"), "must not be empty");
    }
    if !raw.scopes.iter().any(|s| s == "openid") {
        p.add(format!("{path}.scopes"), "must include `openid`");
    }
    for (i, scope) in raw.scopes.iter().enumerate() {
        // RFC 6749 3.3: scope tokens are visible ASCII without `"` or `\`.
        let valid = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            p.add(
                format!("{path}.scopes[{i}]"),
                format!("{scope:?} is not a scope token"),
            );
        }
    }
    if raw.timeout.is_zero() {
        p.add(format!("{path}.timeout"), "must be greater than zero");
    }
    let auth = match (raw.client_auth.as_str(), &raw.client_secret_file) {
        ("client_secret_basic", Some(_)) => ClientAuth::SecretBasic,
        ("client_secret_post", Some(_)) => ClientAuth::SecretPost,
        ("none", None) => ClientAuth::None,
        ("client_secret_basic" | "client_secret_post", None) => {
            p.add(
                format!("{path}.client_secret_file"),
                format!("`client_auth: {}` needs the secret's file (or `client_auth: none` for a public client)", raw.client_auth),
            );
            return None;
        }
        ("none", Some(_)) => {
            p.add(
                format!("{path}.client_secret_file"),
                "a public client (`client_auth: none`) has no secret",
            );
            return None;
        }
        (other, _) => {
            p.add(
                format!("{path}.client_auth"),
                format!("{other:?} is not `client_secret_basic`, `client_secret_post` or `none`"),
            );
            return None;
        }
    };
    let secret = match &raw.client_secret_file {
        None => None,
        Some(file) => {
            referenced.push(files.resolve(file));
            match files.read(file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) if !text.trim().is_empty() => {
                        Some(ClientSecret(text.trim().to_string()))
                    }
                    _ => {
                        p.add(
                            format!("{path}.client_secret_file"),
                            format!(
                                "{} holds no secret (empty or not UTF-8)",
                                files.display(file)
                            ),
                        );
                        return None;
                    }
                },
                Err(e) => {
                    p.add(
                        format!("{path}.client_secret_file"),
                        format!("cannot read {}: {e}", files.display(file)),
                    );
                    return None;
                }
            }
        }
    };
    Some(OidcClient {
        issuer: issuer.to_string(),
        client_id: raw.client_id.clone(),
        secret,
        auth,
        scopes: raw.scopes.clone(),
        timeout: raw.timeout,
    })
}

fn compile_sessions(
    raw: &RawBrowserSessions,
    files: &FileResolver,
    referenced: &mut Vec<PathBuf>,
    p: &mut Problems,
) -> Option<SessionSettings> {
    let path = "browser_sessions";
    let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if raw.cookie_name.is_empty() || !raw.cookie_name.bytes().all(token_char) {
        p.add(
            format!("{path}.cookie_name"),
            format!(
                "{:?} is not a cookie name (RFC 6265 token characters)",
                raw.cookie_name
            ),
        );
    }
    if raw.key_files.is_empty() {
        p.add(
            format!("{path}.key_files"),
            "at least one key file (32 random bytes in base64: `openssl rand -base64 32`)",
        );
    }
    let mut texts = Vec::new();
    for (i, file) in raw.key_files.iter().enumerate() {
        referenced.push(files.resolve(file));
        match files.read(file).map(String::from_utf8) {
            Ok(Ok(text)) => texts.push(text),
            Ok(Err(_)) => p.add(
                format!("{path}.key_files[{i}]"),
                format!("{} is not base64 text", files.display(file)),
            ),
            Err(e) => p.add(
                format!("{path}.key_files[{i}]"),
                format!("cannot read {}: {e}", files.display(file)),
            ),
        }
    }
    let keys = if texts.len() == raw.key_files.len() && !texts.is_empty() {
        KeyRing::from_base64(&texts)
            .map_err(|e| p.add(format!("{path}.key_files"), e.to_string()))
            .ok()
    } else {
        None
    };
    if raw.max_concurrent_sign_ins == 0 {
        p.add(
            format!("{path}.max_concurrent_sign_ins"),
            "must be at least 1: nobody could sign in",
        );
    }
    if raw.lifetime.as_secs() < 60 {
        p.add(format!("{path}.lifetime"), "must be at least a minute");
    }
    if raw.idle_timeout.as_secs() < 60 {
        p.add(format!("{path}.idle_timeout"), "must be at least a minute");
    }
    if raw.idle_timeout > raw.lifetime {
        p.add(
            format!("{path}.idle_timeout"),
            "longer than `lifetime`: it would never end a session",
        );
    }
    let paths = [
        ("callback_path", &raw.callback_path),
        ("sign_in_path", &raw.sign_in_path),
        ("sign_out_path", &raw.sign_out_path),
        ("after_sign_out", &raw.after_sign_out),
    ];
    for (field, value) in paths {
        if crate::signin::login::same_host_target(value).is_err() || value.contains(['?', '#']) {
            p.add(
                format!("{path}.{field}"),
                format!("{value:?} is not a plain path on the same host (`/...`, no query)"),
            );
        }
    }
    let reserved = [&raw.callback_path, &raw.sign_in_path, &raw.sign_out_path];
    if reserved
        .iter()
        .enumerate()
        .any(|(i, a)| reserved[..i].contains(a))
    {
        p.add(
            path,
            "`callback_path`, `sign_in_path` and `sign_out_path` must differ",
        );
    }
    Some(SessionSettings {
        cookie_name: raw.cookie_name.clone(),
        hint_cookie_name: SessionSettings::hint_cookie_name_of(&raw.cookie_name),
        keys: Arc::new(keys?),
        times: SessionTimes {
            lifetime: raw.lifetime,
            idle_timeout: raw.idle_timeout,
            refresh_before: raw.refresh_before,
        },
        callback_path: raw.callback_path.clone(),
        sign_in_path: raw.sign_in_path.clone(),
        sign_out_path: raw.sign_out_path.clone(),
        after_sign_out: raw.after_sign_out.clone(),
        cache_max_entries: raw.cache_max_entries,
        max_concurrent_sign_ins: raw.max_concurrent_sign_ins,
    })
}
