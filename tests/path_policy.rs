//! Routes are matched against the path the upstream acts on: escaped unreserved
//! characters decoded (RFC 3986), `%2F` kept as Gerrit reads it (inside a project name)
//! but a boundary for `segment_prefix`, and paths an upstream could resolve to another
//! route's path refused. The decision engine is driven directly, without sockets; the
//! last test generates paths.

mod support;

use mesh_authz::authorize::{Authorizer, Decision, Verdict};
use mesh_authz::request::RequestView;
use proptest::prelude::*;
use std::collections::HashMap;
use support::{engine, tokens};

/// team-a's projects need group team-a, team-b's (a project hierarchy) group team-b;
/// anything else on the host any signed-in user.
const ROUTES: &str = r#"
issuers:
  - issuer: https://idp.test.invalid
    audiences: [mesh-authz-test]
    jwks: {file: jwks.json}
    user_claim: preferred_username
static_groups: {alice: [team-a], bob: [team-b]}
routes:
  - name: team-a
    match: {hosts: [gerrit.example.com], path: {segment_prefix: /a/projects/team-a}}
    allow: {groups_any_of: [team-a]}
    inject: {user: x-forwarded-user}
  - name: team-b
    match: {hosts: [gerrit.example.com], path: {segment_prefix: /a/projects/team-b/}}
    allow: {groups_any_of: [team-b]}
    inject: {user: x-forwarded-user}
  - name: signed-in
    match: {hosts: [gerrit.example.com]}
    allow: authenticated
    inject: {user: x-forwarded-user}
"#;

struct Engine {
    authorizer: Authorizer,
}

impl Engine {
    fn new() -> Self {
        let authorizer = engine::authorizer(ROUTES, &[("jwks.json", engine::rsa_a_jwks())])
            .unwrap_or_else(|e| panic!("{e}"));
        Engine { authorizer }
    }

    async fn decide(&self, user: &str, path: &str) -> Decision {
        let token = tokens::bearer(&tokens::token_for(user));
        let headers = HashMap::from([("authorization".to_string(), token)]);
        let req = RequestView::http("GET", "gerrit.example.com", path, &headers);
        self.authorizer.decide(&req).await
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `route name` when allowed, `deny <reason> by <route>` otherwise.
fn outcome(d: &Decision) -> String {
    let route = d
        .route
        .as_ref()
        .map_or("-".to_string(), |r| r.name.to_string());
    match &d.verdict {
        Verdict::Allow { .. } => format!("allow by {route}"),
        v => format!("{} {} by {route}", v.kind(), v.reason()),
    }
}

#[tokio::test]
async fn percent_encoded_ordinary_characters_are_decided_by_the_route_of_the_decoded_path() {
    let engine = Engine::new();
    for path in [
        "/a/projects/team%2Da/branches",
        "/a/projects/%74eam-a/branches",
        "/a/%70rojects/team-a/branches",
        "/%61/projects/team-a/branches",
        "/a/projects/team-a%2fbranches",
    ] {
        let bob = engine.decide("bob", path).await;
        assert_eq!(
            outcome(&bob),
            "deny not_in_group by team-a",
            "bob on {path}"
        );
        let alice = engine.decide("alice", path).await;
        assert_eq!(outcome(&alice), "allow by team-a", "alice on {path}");
    }
}

#[tokio::test]
async fn a_subproject_in_gerrits_encoded_form_stays_under_its_parents_segment_prefix() {
    // Gerrit reads `team-b%2Fsub` as the project `team-b/sub`; git over HTTP writes it
    // with a plain `/`.
    let engine = Engine::new();
    for path in [
        "/a/projects/team-b%2Fsub/branches",
        "/a/projects/team-b%2fsub",
        "/a/projects/team-b/sub/info/refs",
    ] {
        assert_eq!(
            outcome(&engine.decide("alice", path).await),
            "deny not_in_group by team-b",
            "{path}"
        );
        assert_eq!(
            outcome(&engine.decide("bob", path).await),
            "allow by team-b",
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_segment_prefix_does_not_cover_a_longer_segment_name() {
    let engine = Engine::new();
    for path in ["/a/projects/team-abc/branches", "/a/projects/team-a-old"] {
        assert_eq!(
            outcome(&engine.decide("bob", path).await),
            "allow by signed-in",
            "{path}"
        );
    }
    for path in [
        "/a/projects/team-a",
        "/a/projects/team-a/",
        "/a/projects/team-a/x/y",
    ] {
        assert_eq!(
            outcome(&engine.decide("alice", path).await),
            "allow by team-a",
            "{path}"
        );
    }
}

#[tokio::test]
async fn paths_an_upstream_could_resolve_to_another_routes_path_are_refused() {
    let engine = Engine::new();
    for path in [
        "/a/projects/team-b/../team-a/branches",
        "/a/projects/team-b/%2e%2E/team-a",
        "/a/projects/x/..;/team-a/branches",
        "/a/projects/x/..%3B/team-a",
        "/a/projects/x/.;x/team-a",
        "/a;x/projects/team-a/branches",
        "/a/projects;x=y/team-a",
        "/a\\projects\\team-a",
        "/a/projects/x%5C..%5Cteam-a",
        "//a/projects/team-a",
        "/a//projects/team-a",
        "/a/projects/team-b%2F%2Fx",
        "/a/projects/team%2",
        "/a/projects/team%zza",
        "/a/projects/team-a%00/x",
        "/a/projects/%ff%fe",
        "/a/projects/x%0d%0aX-Forwarded-User:%20admin",
    ] {
        let d = engine.decide("bob", path).await;
        assert!(
            d.route.is_none(),
            "{path}: refused before matching, got {}",
            outcome(&d)
        );
        assert_eq!(d.verdict.reason(), "unnormalized_path", "{path}");
    }
}

/// Ways to write one character of a path segment as a client may send it.
fn spelled(c: char) -> BoxedStrategy<String> {
    let plain = Just(c.to_string());
    let upper = Just(format!("%{:02X}", c as u32));
    let lower = Just(format!("%{:02x}", c as u32));
    prop_oneof![3 => plain, 1 => upper, 1 => lower].boxed()
}

/// A segment (from names the routes care about, and others) and how it is spelled.
fn segment() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        Just("a".to_string()),
        Just("projects".to_string()),
        Just("team-a".to_string()),
        Just("team-b".to_string()),
        Just("team-abc".to_string()),
        Just("x".to_string()),
        "[a-z0-9._~-]{1,6}",
    ]
    .prop_flat_map(|name| {
        let chars: Vec<BoxedStrategy<String>> = name.chars().map(spelled).collect();
        (Just(name), chars).prop_map(|(name, parts)| (name, parts.concat()))
    })
}

/// Joins segments with `/` or, now and then, `%2F`; sometimes adds a dot, `..;` or
/// empty segment. Gives the normal form and the path as sent.
fn path() -> impl Strategy<Value = (String, String)> {
    // How it is sent, and its normal form: `%2F` stays (Gerrit reads it inside a name).
    let separator =
        prop_oneof![6 => Just(("/", "/")), 1 => Just(("%2F", "%2F")), 1 => Just(("%2f", "%2F"))];
    let odd = prop_oneof![
        4 => Just(None),
        1 => Just(Some("..")),
        1 => Just(Some("%2e")),
        1 => Just(Some("..;")),
        1 => Just(Some("")),
        1 => Just(Some(".%2E;x")),
    ];
    (
        proptest::collection::vec((segment(), separator), 1..6),
        odd,
        0usize..6,
    )
        .prop_map(|(parts, odd, at)| {
            let mut decoded = String::new();
            let mut sent = String::new();
            let at = at.min(parts.len());
            for (i, ((name, spelling), sep)) in parts.into_iter().enumerate() {
                if i == at {
                    if let Some(odd) = odd {
                        decoded.push('/');
                        decoded.push_str(&odd.replace("%2e", ".").replace("%2E", "."));
                        sent.push('/');
                        sent.push_str(odd);
                    }
                }
                decoded.push_str(if i == 0 { "/" } else { sep.1 });
                decoded.push_str(&name);
                sent.push_str(if i == 0 { "/" } else { sep.0 });
                sent.push_str(&spelling);
            }
            (decoded, sent)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the spelling, a path is decided by the route of its decoded form, or
    /// refused; it never reaches a route its decoded form would not.
    #[test]
    fn generated_paths_are_decided_like_their_decoded_form_or_refused((decoded, sent) in path()) {
        let engine = Engine::new();
        let rt = runtime();
        for user in ["alice", "bob"] {
            let as_sent = rt.block_on(engine.decide(user, &sent));
            if as_sent.verdict.reason() == "unnormalized_path" {
                continue;
            }
            let plain = rt.block_on(engine.decide(user, &decoded));
            prop_assert_eq!(outcome(&as_sent), outcome(&plain), "{} sent as {}", decoded, sent);
        }
    }
}
