//! The engine without sockets: which denial wins when several rules fail, when a rule
//! that cannot be checked makes the answer "cannot decide", dry-run, and header hygiene.
//! Configs are compiled from YAML against the quickstart's key set, with its demo tokens.

use super::*;
use crate::config::{self, FileResolver};
use std::collections::HashMap;

const ALICE: &str = include_str!("../../examples/quickstart/alice.jwt");
const BOB: &str = include_str!("../../examples/quickstart/bob.jwt");

/// The quickstart issuer, with `groups` (a `static_groups:` or `gerrit:` section) and
/// `routes`.
fn authorizer(groups: &str, routes: &str) -> Authorizer {
    let yaml = format!(
        "issuers:\n  - issuer: https://idp.demo.mesh-authz.invalid\n    audiences: [mesh-authz-demo]\n    jwks: {{file: jwks.json}}\n    user_claim: preferred_username\n{groups}\nroutes:\n{routes}"
    );
    let config = config::from_str("test.yaml", &yaml, &FileResolver::Builtin)
        .unwrap_or_else(|e| panic!("{e}"));
    Authorizer::from_config(&config, reqwest::Client::new()).unwrap()
}

const STATIC: &str = "static_groups: {alice: [team-a], bob: [team-b]}";

/// Gerrit that refuses connections at once: every group lookup fails.
const GERRIT_DOWN: &str = "gerrit:\n  url: http://127.0.0.1:9\n  username: mesh-authz\n  trusted_user_header: X-Gerrit-Service\n  retries: 0";

async fn decide(a: &Authorizer, path: &str, headers: &[(&str, &str)]) -> Decision {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    a.decide(&RequestView::http(
        "GET",
        "gerrit.example.com",
        path,
        &headers,
    ))
    .await
}

fn bearer(token: &str) -> String {
    format!("Bearer {}", token.trim())
}

#[tokio::test]
async fn the_denial_of_the_rule_that_got_furthest_is_the_answer() {
    let a = authorizer(
        STATIC,
        "  - name: r\n    allow:\n      - principals: [cluster.local/ns/ci/sa/runner]\n      - groups_any_of: [team-a]\n",
    );
    // No workload identity, no token: "send a token" (401) says more than "not a
    // workload this rule names" (403).
    let d = decide(&a, "/x", &[]).await;
    assert!(
        matches!(
            d.verdict,
            Verdict::Deny(Denial::Unauthenticated(AuthnError::MissingToken))
        ),
        "{:?}",
        d.verdict
    );
    // A valid token without the group: 403 not in group, not 401.
    let d = decide(&a, "/x", &[("authorization", &bearer(BOB))]).await;
    assert!(
        matches!(d.verdict, Verdict::Deny(Denial::NotInGroup(_))),
        "{:?}",
        d.verdict
    );
    assert_eq!(d.caller.as_ref().map(|c| c.user.as_str()), Some("bob"));
    let d = decide(&a, "/x", &[("authorization", &bearer(ALICE))]).await;
    assert_eq!(d.rule.as_deref(), Some("allow[1]"));
}

#[tokio::test]
async fn a_rule_that_cannot_be_checked_makes_the_answer_cannot_decide_not_deny() {
    let a = authorizer(
        GERRIT_DOWN,
        "  - name: groups\n    match: {path: {segment_prefix: /a/projects/team-a}}\n    allow:\n      - groups_any_of: [team-a]\n      - claims: {email: {equals: nobody@example.com}}\n  - name: signed-in\n    allow: authenticated\n",
    );
    // The group rule could have allowed; the claim rule denies: cannot decide.
    let d = decide(
        &a,
        "/a/projects/team-a/x",
        &[("authorization", &bearer(BOB))],
    )
    .await;
    assert!(
        matches!(d.verdict, Verdict::Unavailable(_)),
        "{:?}",
        d.verdict
    );
    assert_eq!(d.verdict.reason(), "unavailable");
    // A route that needs no groups still decides while Gerrit is down.
    let d = decide(&a, "/c/x", &[("authorization", &bearer(BOB))]).await;
    assert!(
        matches!(d.verdict, Verdict::Allow { .. }),
        "{:?}",
        d.verdict
    );
}

/// A dry-run route that removes `Authorization` when enforcing, and a second route whose
/// upstream trusts `x-gerrit-user`.
const DRY_RUN_ROUTES: &str = "  - name: trial\n    match: {path: {prefix: /x}}\n    dry_run: true\n    allow: {groups_any_of: [team-a]}\n    inject: {user: x-forwarded-user}\n    remove_headers: [authorization, x-debug]\n  - name: other\n    allow: authenticated\n    inject: {user: x-gerrit-user}\n";

#[tokio::test]
async fn a_dry_run_route_passes_a_would_be_denied_request_as_it_came_but_for_identity_headers() {
    let a = authorizer(STATIC, DRY_RUN_ROUTES);
    let d = decide(
        &a,
        "/x",
        &[
            ("authorization", &bearer(BOB)),
            ("x-debug", "1"),
            ("x-forwarded-user", "admin"),
            ("x-gerrit-user", "admin"),
            ("impersonate-user", "system:admin"),
        ],
    )
    .await;
    assert!(d.dry_run());
    assert!(
        matches!(d.verdict, Verdict::Deny(Denial::NotInGroup(_))),
        "{:?}",
        d.verdict
    );
    let headers = d.dry_run_headers.expect("passed on");
    assert!(headers.set.is_empty(), "{headers:?}");
    // What the upstream trusts from mesh-authz alone is never passed on as sent.
    for forged in ["x-forwarded-user", "x-gerrit-user", "impersonate-user"] {
        assert!(
            headers.remove.iter().any(|h| h == forged),
            "{forged} reaches the upstream: {headers:?}"
        );
    }
    // The rest of the request is as without mesh-authz: the caller's own credentials
    // stay (Gerrit may still authenticate them itself), the route's removals wait until
    // it enforces.
    for own in ["authorization", "x-debug"] {
        assert!(
            !headers.remove.iter().any(|h| h == own),
            "{own} removed in dry-run: {headers:?}"
        );
    }
}

#[tokio::test]
async fn a_dry_run_route_injects_a_would_be_allowed_callers_identity_and_takes_nothing_away() {
    let a = authorizer(STATIC, DRY_RUN_ROUTES);
    let d = decide(
        &a,
        "/x",
        &[
            ("authorization", &bearer(ALICE)),
            ("x-gerrit-user", "admin"),
        ],
    )
    .await;
    assert!(d.dry_run());
    assert!(d.dry_run_headers.is_none());
    let Verdict::Allow { headers, .. } = &d.verdict else {
        panic!("{:?}", d.verdict)
    };
    assert_eq!(
        headers.set,
        vec![("x-forwarded-user".into(), "alice".into())]
    );
    assert!(
        headers.remove.iter().any(|h| h == "x-gerrit-user"),
        "{headers:?}"
    );
    assert!(
        !headers
            .remove
            .iter()
            .any(|h| h == "authorization" || h == "x-debug"),
        "{headers:?}"
    );
    // The same route enforcing removes them.
    let enforcing = authorizer(STATIC, &DRY_RUN_ROUTES.replace("    dry_run: true\n", ""));
    let d = decide(&enforcing, "/x", &[("authorization", &bearer(ALICE))]).await;
    let Verdict::Allow { headers, .. } = &d.verdict else {
        panic!("{:?}", d.verdict)
    };
    assert!(
        headers.remove.iter().any(|h| h == "authorization"),
        "{headers:?}"
    );
}

#[tokio::test]
async fn forged_identity_and_impersonation_headers_never_pass_on_any_route() {
    let a = authorizer(
        STATIC,
        "  - name: landing\n    match: {path: {exact: /}}\n    allow: public\n  - name: api\n    allow: authenticated\n    inject: {user: x-forwarded-user, groups: x-forwarded-groups}\n",
    );
    let forged = [
        ("authorization", bearer(ALICE)),
        ("x-forwarded-user", "admin".to_string()),
        ("x-forwarded-groups", "Administrators".to_string()),
        ("impersonate-user", "system:admin".to_string()),
        ("impersonate-group", "system:masters".to_string()),
    ];
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for path in ["/", "/a/x"] {
        let d = decide(&a, path, &forged).await;
        let Verdict::Allow { headers, .. } = &d.verdict else {
            panic!("{path}: {:?}", d.verdict)
        };
        for name in [
            "x-forwarded-user",
            "x-forwarded-groups",
            "impersonate-user",
            "impersonate-group",
        ] {
            let set = headers.set.iter().find(|(k, _)| k == name);
            let removed = headers.remove.iter().any(|h| h == name);
            assert!(
                removed || set.is_some_and(|(_, v)| v != "admin" && v != "Administrators"),
                "{path}: a client-sent {name} would pass: {headers:?}"
            );
        }
    }
}
