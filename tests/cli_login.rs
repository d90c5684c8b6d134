//! `mesh-authz login`, `credential` (git's helper) and `kubectl-credential` as a
//! developer runs them, against the fake IdP's device grant: what is stored and how,
//! what git and kubectl read, silent refresh, and every way it ends with a message.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use support::developer::{git_answer, git_get, text, Developer, CLI_CLIENT};
use support::oidc_provider::{Client, ClientAuth, FakeOidcProvider, OidcConfig, User};
use support::tokens;

const GERRIT: &str = "gerrit.example.com";

async fn idp_with(lifetime: Duration, device_lifetime: Duration) -> FakeOidcProvider {
    FakeOidcProvider::start(OidcConfig {
        id_token_lifetime: lifetime,
        device_code_lifetime: device_lifetime,
        device_poll_interval: Duration::from_secs(1),
        ..OidcConfig::default()
            .client(Client::new(CLI_CLIENT, "", ClientAuth::None))
            .user(User::new("alice", "alice-pw"))
    })
    .await
}

async fn idp() -> FakeOidcProvider {
    idp_with(Duration::from_secs(600), Duration::from_secs(600)).await
}

/// A developer signed in as alice.
async fn signed_in(idp: &FakeOidcProvider) -> Developer {
    let dev = Developer::new(&idp.issuer(), &[GERRIT, "kube.example.com:6443"]);
    let (out, _) = dev
        .login(idp, &[GERRIT], Some(("alice", "alice-pw", "approve")))
        .await;
    assert!(out.status.success(), "{:?}", text(&out));
    dev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_shows_a_code_and_after_approval_keeps_the_sign_in_in_a_private_file() {
    let idp = idp().await;
    let dev = Developer::new(&idp.issuer(), &[GERRIT]);
    let (out, code) = dev
        .login(&idp, &[], Some(("alice", "alice-pw", "approve")))
        .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(code.len(), 9, "XXXX-XXXX: {stderr}");
    assert!(
        stderr.contains(&format!("open {}/device", idp.issuer())),
        "{stderr}"
    );
    assert!(stderr.contains("Signed in as alice"), "{stderr}");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    let files = dev.token_files();
    assert_eq!(files.len(), 1);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&files[0]), 0o600);
    assert_eq!(mode(&dev.token_dir()), 0o700);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let refresh = stored["refresh_token"].as_str().unwrap();
    let token = stored["token"].as_str().unwrap();
    assert!(!stderr.contains(refresh) && !stderr.contains(token));
    let stats = idp.stats();
    assert_eq!(
        (stats.device_authorizations, stats.device_approvals),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_gets_alices_id_token_as_the_password_for_a_gateway_host_only() {
    let idp = idp().await;
    let dev = signed_in(&idp).await;
    let out = dev.credential("get", &git_get(GERRIT));
    assert!(out.status.success(), "{:?}", text(&out));
    let answer = git_answer(&out);
    assert_eq!(answer["username"], "alice");
    let claims = tokens::decode_unverified(&answer["password"]);
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["aud"], CLI_CLIENT);
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(answer["password_expiry_utc"], claims["exp"].to_string());
    // Another host, plain HTTP, an operation it does not know: nothing at all.
    for (operation, request) in [
        ("get", git_get("github.com")),
        ("get", format!("protocol=http\nhost={GERRIT}\n\n")),
        ("get", "host=gerrit.example.com\n\n".to_string()),
        ("capability", git_get(GERRIT)),
        (
            "store",
            format!("{}password=x\n", git_get(GERRIT).trim_end()),
        ),
    ] {
        let out = dev.credential(operation, &request);
        assert!(
            out.status.success(),
            "{operation} {request:?}: {:?}",
            text(&out)
        );
        assert!(
            out.stdout.is_empty(),
            "{operation} {request:?}: {:?}",
            text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_near_expiry_is_refreshed_silently_and_the_rotated_refresh_token_kept() {
    // 30 s tokens are always within the minute before expiry: every get refreshes.
    let idp = idp_with(Duration::from_secs(30), Duration::from_secs(600)).await;
    let dev = signed_in(&idp).await;
    for _ in 0..2 {
        let out = dev.credential("get", &git_get(GERRIT));
        assert!(out.status.success(), "{:?}", text(&out));
        assert!(git_answer(&out).contains_key("password"));
    }
    let stats = idp.stats();
    assert_eq!(stats.refresh_token_requests, 2);
    assert_eq!(
        stats.refresh_token_reuses, 0,
        "each rotated token spent once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_share_one_refresh() {
    let idp = idp_with(Duration::from_secs(30), Duration::from_secs(600)).await;
    let dev = std::sync::Arc::new(signed_in(&idp).await);
    // A token with more than a minute left, then many gets at once: one refresh.
    idp.set_id_token_lifetime(Duration::from_secs(600));
    let gets: Vec<_> = (0..6)
        .map(|_| {
            let dev = dev.clone();
            std::thread::spawn(move || dev.credential("get", &git_get(GERRIT)))
        })
        .collect();
    let answers: Vec<_> = gets.into_iter().map(|g| g.join().unwrap()).collect();
    for out in &answers {
        assert!(out.status.success(), "{:?}", text(out));
    }
    let passwords: std::collections::HashSet<String> = answers
        .iter()
        .map(|o| git_answer(o)["password"].clone())
        .collect();
    assert_eq!(passwords.len(), 1, "one token for all");
    let stats = idp.stats();
    assert_eq!(stats.refresh_token_requests, 1);
    assert_eq!(stats.refresh_token_reuses, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_sign_in_tells_git_to_stop_and_the_developer_to_log_in() {
    let idp = idp_with(Duration::from_secs(30), Duration::from_secs(600)).await;
    let dev = signed_in(&idp).await;
    idp.revoke_refresh_tokens();
    let out = dev.credential("get", &git_get(GERRIT));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert_eq!(stdout, "quit=1\n", "git stops and does not prompt");
    assert!(
        stderr.contains("has ended")
            && stderr.contains("run `mesh-authz login gerrit.example.com`"),
        "{stderr}"
    );
    // Said at once the next time, without asking the IdP again.
    let before = idp.stats().refresh_token_requests;
    let again = dev.credential("get", &git_get(GERRIT));
    assert!(!again.status.success());
    assert_eq!(idp.stats().refresh_token_requests, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_signed_in_says_how_to_sign_in() {
    let idp = idp().await;
    let dev = Developer::new(&idp.issuer(), &[GERRIT]);
    let out = dev.credential("get", &git_get(GERRIT));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert_eq!(stdout, "quit=1\n");
    assert!(
        stderr.contains("not signed in") && stderr.contains("mesh-authz login"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_others_can_read_is_refused_with_the_fix() {
    let idp = idp().await;
    let dev = signed_in(&idp).await;
    let file = dev.token_files().remove(0);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dev.credential("get", &git_get(GERRIT));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(!stdout.contains("password"), "{stdout}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_after_a_refused_token_makes_the_next_get_refresh() {
    let idp = idp().await;
    let dev = signed_in(&idp).await;
    let token = git_answer(&dev.credential("get", &git_get(GERRIT)))["password"].clone();
    assert_eq!(idp.stats().refresh_token_requests, 0);
    let erase = format!("protocol=https\nhost={GERRIT}\nusername=alice\npassword={token}\n\n");
    assert!(dev.credential("erase", &erase).status.success());
    let next = dev.credential("get", &git_get(GERRIT));
    assert!(next.status.success(), "{:?}", text(&next));
    // (The same second may sign the same claims again: the refresh is what shows.)
    assert_eq!(idp.stats().refresh_token_requests, 1);
    // An erase for a token that is not the stored one leaves the stored one alone.
    let stale = format!("protocol=https\nhost={GERRIT}\npassword=an-old-token\n\n");
    assert!(dev.credential("erase", &stale).status.success());
    assert!(dev.credential("get", &git_get(GERRIT)).status.success());
    assert_eq!(idp.stats().refresh_token_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_device_ends_login_with_a_message_and_nothing_stored() {
    let idp = idp().await;
    let dev = Developer::new(&idp.issuer(), &[GERRIT]);
    let (out, _) = dev
        .login(&idp, &[], Some(("alice", "alice-pw", "deny")))
        .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("denied"), "{stderr}");
    assert!(dev.token_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_ends_login_with_a_message() {
    let idp = idp_with(Duration::from_secs(600), Duration::from_secs(2)).await;
    let dev = Developer::new(&idp.issuer(), &[GERRIT]);
    let (out, _) = dev.login(&idp, &[], None).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("expired"), "{stderr}");
    assert!(dev.token_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_idp_is_a_clear_error() {
    let dev = Developer::new("http://127.0.0.1:9", &[GERRIT]);
    let (out, _) = {
        let idp = idp().await;
        dev.login(&idp, &[], None).await
    };
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("http://127.0.0.1:9") && stderr.contains("unavailable"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_an_exec_credential_with_the_token_and_its_expiry() {
    let idp = idp().await;
    let dev = signed_in(&idp).await;
    let out = dev
        .command()
        .args(["kubectl-credential"])
        .env(
            "KUBERNETES_EXEC_INFO",
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"cluster":{"server":"https://kube.example.com:6443"},"interactive":false}}"#,
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let credential: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(credential["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(credential["kind"], "ExecCredential");
    let token = credential["status"]["token"].as_str().unwrap();
    let claims = tokens::decode_unverified(token);
    assert_eq!(claims["preferred_username"], "alice");
    let expiry = credential["status"]["expirationTimestamp"]
        .as_str()
        .unwrap();
    let parsed = chrono::DateTime::parse_from_rfc3339(expiry).unwrap();
    assert_eq!(parsed.timestamp(), claims["exp"].as_i64().unwrap());
    // A host no gateway lists: an error, no credential.
    let out = dev
        .command()
        .args(["kubectl-credential", "--host", "other.example.com"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(text(&out).1.contains("not a gateway"), "{:?}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_forgets_the_sign_in() {
    let idp = idp().await;
    let dev = signed_in(&idp).await;
    let out = dev.command().args(["logout", GERRIT]).output().unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(dev.token_files().is_empty());
    assert!(!dev.credential("get", &git_get(GERRIT)).status.success());
}
