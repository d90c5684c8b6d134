//! The decision engine without sockets: an [`Authorizer`] built from config YAML and the
//! files it names, as `mesh-authz serve` would build it (files are read at build time, so
//! the directory can go once it is built).

use mesh_authz::authorize::Authorizer;
use mesh_authz::config;

/// An authorizer from `yaml`, with `files` (name, content) beside it; `Err` is the
/// config's problems as `validate` would print them.
pub fn authorizer(yaml: &str, files: &[(&str, String)]) -> Result<Authorizer, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).map_err(|e| e.to_string())?;
    }
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, yaml).map_err(|e| e.to_string())?;
    let config = config::load(&file).map_err(|e| e.to_string())?;
    Authorizer::from_config(&config, reqwest::Client::new()).map_err(|e| e.to_string())
}

/// The JWKS of fixture key `rsa-a`, as a file's content.
pub fn rsa_a_jwks() -> String {
    super::tokens::jwks(&["rsa-a"]).to_string()
}

/// An authorizer for issuer [`super::tokens::ISSUER`] (fixture key `rsa-a`) with browser
/// sign-in as the public client `gerrit-web`, on one route for any signed-in user of
/// `gerrit.example.com`. No IdP is asked until a sign-in starts.
pub fn browser_sign_in() -> Authorizer {
    let yaml = format!(
        r#"
issuers:
  - issuer: {issuer}
    audiences: [gerrit-api]
    jwks: {{file: jwks.json}}
    user_claim: preferred_username
    browser_client: {{client_id: gerrit-web, client_auth: none}}
browser_sessions: {{key_files: [key]}}
routes:
  - name: gerrit
    match: {{hosts: [gerrit.example.com]}}
    browser_sign_in: true
    allow: authenticated
"#,
        issuer = super::tokens::ISSUER
    );
    authorizer(
        &yaml,
        &[
            ("jwks.json", rsa_a_jwks()),
            ("key", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into()),
        ],
    )
    .expect("config compiles")
}
