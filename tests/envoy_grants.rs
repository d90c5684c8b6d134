//! A grant approved as a review, end to end through the real Envoy: an agent's
//! `kubectl delete --raw` of a pod in `payments` is refused with the how-to-ask message;
//! once the grant's change merges (the branch's event) it reaches the apiserver
//! impersonated as the agent; after `until` it is refused again; the audit log has every
//! step, the allow naming the grant.

mod support;

use std::process::{Command, Output};
use std::time::Duration;
use support::developer::require_program;
use support::envoy::{require_envoy, start_upstream, Envoy};
use support::gerrit::FakeGerrit;
use support::pki::TestCa;
use support::server::{post_gerrit_events, start_with_gerrit_routes};
use support::tokens;

const ROUTES: &str = r#"
audit: {output: audit.log}
grants:
  project: access-grants
  how_to_ask: https://gerrit.example.com/q/project:access-grants
routes:
  - name: kube
    match: {hosts: [localhost]}
    allow: {authenticated: true, grant: true}
    remove_headers: [authorization]
    kube:
      rules:
        - {verbs: [get], resources: [namespaces], cluster: true}
"#;

fn rfc3339(unix: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(unix as i64, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_may_delete_a_pod_only_while_its_reviewed_grant_lasts() {
    let Some(envoy_bin) = require_envoy() else {
        return;
    };
    if !require_program("kubectl", &["version", "--client"]) {
        return;
    }
    let gerrit = FakeGerrit::start().await;
    gerrit.add_account("agent-7", &[]);
    gerrit.merge_file("access-grants", "main", "grants.yaml", "grants: []\n");
    let s = start_with_gerrit_routes(&gerrit.url(), ROUTES).await;
    let (upstream, seen) = start_upstream().await;
    let ca = TestCa::new();
    let envoy = Envoy::start_for_browser(
        &envoy_bin,
        s.running().grpc_addr,
        upstream,
        &ca.server_cert("localhost"),
    )
    .await;
    let ca_file = s.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let server = format!("https://localhost:{}", envoy.listener.port());
    let token = tokens::token_for("agent-7");
    let kubectl = || -> Output {
        Command::new("kubectl")
            .args(["--server", &server, "--certificate-authority"])
            .arg(&ca_file)
            .args(["--token", &token])
            .args([
                "delete",
                "--raw",
                "/api/v1/namespaces/payments/pods/payments-7f9c",
            ])
            .env("KUBECONFIG", "/dev/null")
            .output()
            .expect("kubectl runs")
    };
    support::clock::until("the grants read at start", || async {
        gerrit.branch_requests() > 0
    })
    .await;

    // No grant: refused with the way to ask.
    let out = kubectl();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        stderr.contains("Forbidden") || stderr.contains("403"),
        "{stderr}"
    );
    assert!(
        stderr.contains("https://gerrit.example.com/q/project:access-grants"),
        "the developer reads how to ask: {stderr}"
    );
    assert_eq!(seen.count(), 0);

    // The grant merges: four seconds from now.
    let now = tokens::now();
    let file = format!(
        "grants:\n  - id: INC-4711\n    who: {{users: [agent-7]}}\n    routes: [kube]\n    kube: {{verbs: [delete], resources: [pods], namespaces: [payments]}}\n    from: {}\n    until: {}\n    reason: \"INC-4711: restart the stuck payment pods\"\n",
        rfc3339(now - 60),
        rfc3339(now + 4)
    );
    gerrit.merge_file("access-grants", "main", "grants.yaml", &file);
    let status = post_gerrit_events(
        &s,
        &gerrit.branch_ref_updated_event("access-grants", "main"),
    )
    .await;
    assert_eq!(status, 200);
    support::clock::until("the grant in force", || async {
        s.metric("mesh_authz_grants_active").await == 1.0
    })
    .await;
    let out = kubectl();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = seen.last_request();
    assert_eq!(got.uri, "/api/v1/namespaces/payments/pods/payments-7f9c");
    assert_eq!(
        got.header("impersonate-user"),
        Some(vec!["agent-7".to_string()])
    );
    assert_eq!(got.header("impersonate-group"), None);
    assert_eq!(got.header("authorization"), None);

    // After `until`: refused again, with nothing reloaded.
    while tokens::now() < now + 4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = kubectl();
    assert!(!out.status.success());
    assert_eq!(seen.count(), 1);

    // The audit log has the three decisions, the allow naming the grant.
    let deletes = || {
        let audit = std::fs::read_to_string(s.dir.path().join("audit.log")).unwrap_or_default();
        audit
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["path"] == "/api/v1/namespaces/payments/pods/payments-7f9c")
            .collect::<Vec<_>>()
    };
    support::clock::until("three audit lines", || async { deletes().len() == 3 }).await;
    let lines = deletes();
    let audit = format!("{lines:#?}");
    let decisions: Vec<&str> = lines
        .iter()
        .map(|l| l["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["deny", "allow", "deny"], "{audit}");
    let rule = lines[1]["rule"].as_str().unwrap();
    assert!(
        rule.contains("grant INC-4711") && rule.contains("restart the stuck payment pods"),
        "{rule}"
    );
    assert_eq!(lines[0]["reason"], "no_grant");
    assert_eq!(lines[2]["reason"], "no_grant");
}
