//! Routes say which issuers and audiences they trust: a token from another IdP in the
//! config, or minted for another service, does not pass for a Gerrit user. The decision
//! engine is driven directly, without sockets.

mod support;

use mesh_authz::authorize::{Authorizer, Decision, Verdict};
use mesh_authz::request::RequestView;
use serde_json::{json, Value};
use std::collections::HashMap;
use support::{engine, tokens};

const CORP: &str = "https://idp.test.invalid";
const CI: &str = "https://ci.test.invalid";

/// Two issuers: the company IdP (tokens for Gerrit and for builds) and a CI issuer
/// (tokens for builds). Gerrit trusts the company IdP's `gerrit` tokens only.
const CONFIG: &str = r#"
issuers:
  - issuer: https://idp.test.invalid
    audiences: [gerrit, builds]
    jwks: {file: corp.json}
    user_claim: preferred_username
    user_prefix: ""
  - issuer: https://ci.test.invalid
    audiences: [builds]
    jwks: {file: ci.json}
    user_claim: sub
    user_prefix: "ci:"
static_groups: {alice: [team-a]}
routes:
  - name: gerrit-team-a
    match: {hosts: [gerrit.example.com], path: {segment_prefix: /a/projects/team-a}}
    issuers: [https://idp.test.invalid]
    audiences: [gerrit]
    allow: {groups_any_of: [team-a]}
    inject: {user: x-forwarded-user}
  - name: gerrit
    match: {hosts: [gerrit.example.com]}
    issuers: [https://idp.test.invalid]
    audiences: [gerrit]
    allow: authenticated
    inject: {user: x-forwarded-user}
  - name: builds-team-a
    match: {hosts: [team-a.builds.example.com]}
    issuers: [https://idp.test.invalid, https://ci.test.invalid]
    audiences: [builds]
    allow: {groups_any_of: [team-a]}
    inject: {user: x-forwarded-user}
  - name: builds
    match: {hosts: [builds.example.com]}
    issuers: [https://idp.test.invalid, https://ci.test.invalid]
    audiences: [builds]
    allow: authenticated
    inject: {user: x-forwarded-user}
"#;

fn load(yaml: &str) -> Result<Authorizer, String> {
    engine::authorizer(
        yaml,
        &[
            ("corp.json", tokens::jwks(&["rsa-a"]).to_string()),
            ("ci.json", tokens::jwks(&["rsa-b"]).to_string()),
        ],
    )
}

fn token(key: &str, iss: &str, aud: &str, user: &str) -> String {
    let mut claims: Value = tokens::claims(user);
    claims["iss"] = json!(iss);
    claims["aud"] = json!(aud);
    claims["sub"] = json!(user);
    tokens::sign(key, &claims)
}

async fn decide(a: &Authorizer, host: &str, path: &str, token: &str) -> Decision {
    let headers = HashMap::from([("authorization".to_string(), tokens::bearer(token))]);
    a.decide(&RequestView::http("GET", host, path, &headers))
        .await
}

fn outcome(d: &Decision) -> String {
    match &d.verdict {
        Verdict::Allow { .. } => "allow".into(),
        v => format!("{} {}", v.kind(), v.reason()),
    }
}

#[tokio::test]
async fn a_second_issuer_cannot_mint_gerrit_users_on_routes_that_trust_only_the_first() {
    let a = load(CONFIG).unwrap();
    let ci_alice = token("rsa-b", CI, "builds", "alice");
    for path in ["/a/projects/team-a/branches", "/c/x/+/1"] {
        let d = decide(&a, "gerrit.example.com", path, &ci_alice).await;
        assert_eq!(outcome(&d), "deny unknown_issuer", "{path}");
    }
    // The CI issuer is trusted where the config says so.
    let d = decide(&a, "builds.example.com", "/", &ci_alice).await;
    assert_eq!(outcome(&d), "allow");
    // And the company IdP's alice is alice on Gerrit.
    let corp_alice = token("rsa-a", CORP, "gerrit", "alice");
    let d = decide(
        &a,
        "gerrit.example.com",
        "/a/projects/team-a/x",
        &corp_alice,
    )
    .await;
    assert_eq!(outcome(&d), "allow");
}

#[tokio::test]
async fn a_token_minted_for_another_audience_is_refused_on_a_route_that_requires_its_own() {
    let a = load(CONFIG).unwrap();
    let for_builds = token("rsa-a", CORP, "builds", "alice");
    let d = decide(&a, "gerrit.example.com", "/c/x/+/1", &for_builds).await;
    assert_eq!(outcome(&d), "deny audience");
    let d = decide(&a, "builds.example.com", "/", &for_builds).await;
    assert_eq!(outcome(&d), "allow");
    let for_gerrit = token("rsa-a", CORP, "gerrit", "alice");
    let d = decide(&a, "builds.example.com", "/", &for_gerrit).await;
    assert_eq!(outcome(&d), "deny audience");
}

#[test]
fn with_several_issuers_a_token_route_that_does_not_name_its_issuers_is_refused() {
    let yaml = CONFIG.replace("    issuers: [https://idp.test.invalid]\n    audiences: [gerrit]\n    allow: authenticated", "    allow: authenticated");
    let err = load(&yaml).expect_err("refused");
    assert!(
        err.contains("routes[1].issuers: several issuers are configured"),
        "{err}"
    );
    // One issuer: nothing to say.
    let one = CONFIG
        .replace(
            "  - issuer: https://ci.test.invalid\n    audiences: [builds]\n    jwks: {file: ci.json}\n    user_claim: sub\n    user_prefix: \"ci:\"\n",
            "",
        )
        .replace("    issuers: [https://idp.test.invalid, https://ci.test.invalid]\n", "")
        .replace("    issuers: [https://idp.test.invalid]\n", "");
    load(&one).unwrap();
}

#[test]
fn route_issuers_and_audiences_must_be_ones_the_config_accepts() {
    let unknown = CONFIG.replacen(
        "issuers: [https://idp.test.invalid]",
        "issuers: [https://nobody.test.invalid]",
        1,
    );
    let err = load(&unknown).expect_err("refused");
    assert!(err.contains("routes[0].issuers[0]"), "{err}");
    let never = CONFIG.replacen(
        "audiences: [gerrit]\n    allow: {",
        "audiences: [other]\n    allow: {",
        1,
    );
    let err = load(&never).expect_err("refused");
    assert!(err.contains("routes[0].audiences[0]"), "{err}");
}

/// The user an allowed decision injects.
fn injected_user(d: &Decision) -> Option<String> {
    match &d.verdict {
        Verdict::Allow { headers, .. } => headers
            .set
            .iter()
            .find(|(k, _)| k == "x-forwarded-user")
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn users_of_different_issuers_are_different_accounts_unless_the_config_says_so() {
    let a = load(CONFIG).unwrap();
    // The CI issuer's alice is "ci:alice": not the company's alice, not in her groups.
    let ci_alice = token("rsa-b", CI, "builds", "alice");
    let d = decide(&a, "builds.example.com", "/", &ci_alice).await;
    assert_eq!(injected_user(&d).as_deref(), Some("ci:alice"));
    let d = decide(&a, "team-a.builds.example.com", "/", &ci_alice).await;
    assert_eq!(outcome(&d), "deny not_in_group");
    let corp_alice = token("rsa-a", CORP, "builds", "alice");
    let d = decide(&a, "team-a.builds.example.com", "/", &corp_alice).await;
    assert_eq!(injected_user(&d).as_deref(), Some("alice"));

    // Saying nothing with several issuers is refused; saying "" on both shares accounts.
    let silent = CONFIG.replace("    user_prefix: \"ci:\"\n", "");
    let err = load(&silent).expect_err("refused");
    assert!(
        err.contains("issuers[1].user_prefix: several issuers"),
        "{err}"
    );
    let shared = load(&CONFIG.replace("user_prefix: \"ci:\"", "user_prefix: \"\"")).unwrap();
    let d = decide(&shared, "team-a.builds.example.com", "/", &ci_alice).await;
    assert_eq!(injected_user(&d).as_deref(), Some("alice"));
}
