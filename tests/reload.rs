//! Live reload of the config file: a valid new version replaces the old one atomically
//! while checks keep flowing, an invalid one is refused and the old one keeps serving, a
//! Kubernetes ConfigMap update (a `..data` symlink swap) is seen, and caches survive a
//! reload that leaves their sections alone.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::clock::until;
use support::gerrit::FakeGerrit;
use support::idp::FakeIdp;
use support::server::{
    check_request, config, start_with_gerrit, TestServer, HOST, STATIC_GROUPS, TEAM_A,
};
use support::tokens;

const APPLIED: &str = r#"mesh_authz_config_reloads_total{result="applied"}"#;
const REFUSED: &str = r#"mesh_authz_config_reloads_total{result="refused"}"#;

/// The test config (keys from a file, static groups) with `extra` server settings.
fn v1(extra: &str) -> String {
    config("file: jwks.json", STATIC_GROUPS).replace(
        "  shutdown_timeout: 5s\n",
        &format!("  shutdown_timeout: 5s\n{extra}"),
    )
}

/// v1 where team-b may use team-a's route too.
fn v2(extra: &str) -> String {
    v1(extra).replace("groups_any_of: [team-a]", "groups_any_of: [team-a, team-b]")
}

/// Not a config: a host pattern that does not compile.
fn broken(extra: &str) -> String {
    v2(extra).replace("hosts: [gerrit.example.com]", "hosts: [\"gerrit.*.com\"]")
}

/// Replaces a file the way editors and `kubectl cp` do: a new file renamed over the old.
fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Replaces `from` with `to` in the server's config file and waits until that is the
/// `applied`-th change applied.
async fn edit_and_apply(s: &TestServer, from: &str, to: &str, applied: f64) {
    let yaml = std::fs::read_to_string(s.file("config.yaml")).unwrap();
    assert!(yaml.contains(from), "{from:?} not in the config");
    replace_file(&s.file("config.yaml"), &yaml.replace(from, to));
    until("the change applied", || async {
        s.metric(APPLIED).await == applied
    })
    .await;
}

/// The gRPC status code of a team-a check by `user`, or the transport error.
async fn team_a(s: &TestServer, user: &str) -> Result<i32, tonic::Status> {
    let token = tokens::bearer(&tokens::token_for(user));
    let req = check_request("GET", HOST, TEAM_A, &[("authorization", &token)]);
    s.client
        .clone()
        .check(req)
        .await
        .map(|r| r.into_inner().status.unwrap().code)
}

#[tokio::test]
async fn under_load_a_valid_config_switches_decisions_at_once_and_an_invalid_one_is_refused() {
    // Events only: the periodic check is far off, so the file watcher must do it.
    let extra = "  config_check_interval: 1h\n";
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let s = Arc::new(TestServer::start(&v1(extra), &[("jwks.json", &jwks)]).await);
    let config_path = s.file("config.yaml");

    // Four clients check bob on team-a's route without pause; each keeps its answers.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (s, stop) = (s.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    answers.push(team_a(&s, "bob").await.map_err(|e| e.to_string()));
                }
                answers
            })
        })
        .collect();
    until("checks before the change", || async {
        s.metric(r#"mesh_authz_checks_total{decision="deny",reason="not_in_group",route="gerrit-team-a"}"#)
            .await
            >= 20.0
    })
    .await;
    replace_file(&config_path, &v2(extra));
    until("the new config applied", || async {
        s.metric(APPLIED).await == 1.0
    })
    .await;
    let allowed =
        r#"mesh_authz_checks_total{decision="allow",reason="allowed",route="gerrit-team-a"}"#;
    until("checks after the change", || async {
        s.metric(allowed).await >= 20.0
    })
    .await;
    replace_file(&config_path, &broken(extra));
    until("the broken config refused", || async {
        s.metric(REFUSED).await == 1.0
    })
    .await;
    let before = s.metric(allowed).await;
    until("checks after the refusal", || async {
        s.metric(allowed).await >= before + 20.0
    })
    .await;
    stop.store(true, Ordering::Relaxed);

    for client in clients {
        let answers = client.await.unwrap();
        assert!(
            answers.iter().all(Result::is_ok),
            "a check failed during a reload: {:?}",
            answers.iter().find(|a| a.is_err())
        );
        let codes: Vec<i32> = answers.into_iter().map(Result::unwrap).collect();
        // Denied (7) until the swap, allowed (0) from then on, never back.
        let switch = codes
            .iter()
            .position(|c| *c == 0)
            .expect("switched to allow");
        assert!(codes[..switch].iter().all(|c| *c == 7), "{codes:?}");
        assert!(
            codes[switch..].iter().all(|c| *c == 0),
            "flipped back: {codes:?}"
        );
    }
    assert_eq!(s.metric(APPLIED).await, 1.0);
}

#[tokio::test]
async fn a_configmap_update_that_swaps_the_data_symlink_is_applied() {
    // The layout the kubelet gives a ConfigMap volume: files are symlinks through `..data`
    // into a timestamped directory, and an update swaps `..data` in one rename.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extra = "  config_check_interval: 1h\n";
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let version = |name: &str, config: &str| {
        std::fs::create_dir(d.join(name)).unwrap();
        std::fs::write(d.join(name).join("config.yaml"), config).unwrap();
        std::fs::write(d.join(name).join("jwks.json"), &jwks).unwrap();
    };
    version("..2026_11_25_16_00_00.1", &v1(extra));
    std::os::unix::fs::symlink("..2026_11_25_16_00_00.1", d.join("..data")).unwrap();
    for f in ["config.yaml", "jwks.json"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), d.join(f)).unwrap();
    }
    let config = mesh_authz::config::load(&d.join("config.yaml")).unwrap();
    let server = mesh_authz::server::start(&config).await.unwrap();
    let admin = format!("http://{}", server.admin_addr);
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://{}", server.grpc_addr),
    )
    .await
    .unwrap();
    let bob = || {
        let token = tokens::bearer(&tokens::token_for("bob"));
        check_request("GET", HOST, TEAM_A, &[("authorization", &token)])
    };
    let code = client
        .check(bob())
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .code;
    assert_eq!(code, 7);

    version("..2026_11_25_16_05_00.2", &v2(extra));
    std::os::unix::fs::symlink("..2026_11_25_16_05_00.2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_11_25_16_00_00.1")).unwrap();

    let metric = |name: &'static str| {
        let admin = admin.clone();
        async move {
            let text = reqwest::get(format!("{admin}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0)
        }
    };
    until("the new ConfigMap version applied", || async {
        metric(APPLIED).await == 1.0
    })
    .await;
    let code = client
        .check(bob())
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .code;
    assert_eq!(code, 0, "team-b may now use the route");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_config_that_cannot_be_built_is_refused_and_the_old_one_keeps_serving() {
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start_with_gerrit(
        &gerrit.url(),
        |y| {
            y.replace(
                "  shutdown_timeout: 5s\n",
                "  shutdown_timeout: 5s\n  config_check_interval: 100ms\n",
            )
        },
        &[],
    )
    .await;
    assert_eq!(team_a(&s, "alice").await.unwrap(), 0);
    // Compiles, but the password file it names is not there.
    let yaml = std::fs::read_to_string(s.file("config.yaml")).unwrap();
    replace_file(
        &s.file("config.yaml"),
        &yaml.replace(
            "password_file: gerrit-password",
            "password_file: missing-password",
        ),
    );
    until("the change refused", || async {
        s.metric(REFUSED).await == 1.0
    })
    .await;
    assert_eq!(s.metric(APPLIED).await, 0.0);
    assert_eq!(
        team_a(&s, "alice").await.unwrap(),
        0,
        "the old config still decides"
    );
}

#[tokio::test]
async fn a_reload_that_leaves_issuers_and_gerrit_alone_keeps_their_keys_and_caches() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("alice", &["team-a"]);
    let s = start_with_gerrit(
        &gerrit.url(),
        |y| {
            y.replace("file: jwks.json", &format!("url: \"{}\"", idp.jwks_url()))
                .replace(
                    "  shutdown_timeout: 5s\n",
                    "  shutdown_timeout: 5s\n  config_check_interval: 100ms\n",
                )
        },
        &[],
    )
    .await;
    until("keys loaded", || async {
        team_a(&s, "alice").await.ok() == Some(0)
    })
    .await;
    let (fetches, lists) = (idp.fetches(), gerrit.group_lists_for("alice"));

    // Only a route changes.
    edit_and_apply(&s, "path: {exact: /}", "path: {exact: /welcome}", 1.0).await;
    assert_eq!(team_a(&s, "alice").await.unwrap(), 0);
    assert_eq!(idp.fetches(), fetches, "the key set was kept");
    assert_eq!(
        gerrit.group_lists_for("alice"),
        lists,
        "alice's groups were kept"
    );

    // A changed group cache setting starts a new cache.
    edit_and_apply(&s, "cache_ttl: 60s", "cache_ttl: 30s", 2.0).await;
    assert_eq!(team_a(&s, "alice").await.unwrap(), 0);
    assert_eq!(gerrit.group_lists_for("alice"), lists + 1, "asked again");
    assert_eq!(idp.fetches(), fetches, "the key set was still kept");
}

#[tokio::test]
async fn claim_conditions_read_the_tokens_claims_before_and_after_a_reload_that_adds_them() {
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let yaml = v1("  config_check_interval: 100ms\n").replace(
        "    allow: authenticated\n    inject: {user: x-forwarded-user, email: x-forwarded-email}",
        "    allow: {claims: {department: {one_of: [eng, ops]}}, scopes: [gerrit:read]}\n    inject: {user: x-forwarded-user, email: x-forwarded-email}",
    );
    assert!(
        yaml.contains("department"),
        "the signed-in route takes the claim rule"
    );
    let s = TestServer::start(&yaml, &[("jwks.json", &jwks)]).await;
    let signed_in = |claims: serde_json::Value| {
        let token = tokens::bearer(&tokens::sign("rsa-a", &claims));
        let req = check_request("GET", HOST, "/c/project/+/1", &[("authorization", &token)]);
        let mut client = s.client.clone();
        async move {
            client
                .check(req)
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap()
                .code
        }
    };
    let mut eng = tokens::claims("alice");
    eng["department"] = "eng".into();
    eng["scope"] = "openid gerrit:read".into();
    eng["tier"] = 2.into();
    let mut sales = eng.clone();
    sales["department"] = "sales".into();
    let mut no_scope = eng.clone();
    no_scope["scope"] = "openid".into();
    assert_eq!(signed_in(eng.clone()).await, 0);
    assert_eq!(signed_in(sales).await, 7);
    assert_eq!(signed_in(no_scope).await, 7);

    // The same token, already verified and cached, meets a new condition on a claim no
    // rule read before: it is verified again, with that claim.
    edit_and_apply(
        &s,
        "department: {one_of: [eng, ops]}}",
        "department: {one_of: [eng, ops]}, tier: {equals: 2}}",
        1.0,
    )
    .await;
    assert_eq!(signed_in(eng).await, 0, "tier 2 is kept and matches");
}
