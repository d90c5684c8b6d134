use super::*;

fn problems(yaml: &str) -> Vec<String> {
    match compile_str("test.yaml", yaml, &FileResolver::Builtin) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(e) => vec![e.to_string()],
    }
}

const GOOD: &str = r#"
issuers:
  - issuer: https://idp.example.com
    audiences: [mesh]
    jwks: {file: jwks.json}
static_groups:
  alice: [team-a]
routes:
  - name: api
    match: {hosts: ["*.example.com"], path: {prefix: /a/}, methods: [GET]}
    allow: {groups_any_of: [team-a]}
    inject: {user: X-Forwarded-User}
    remove_headers: [Authorization]
  - name: open
    allow: public
"#;

#[test]
fn a_good_config_compiles() {
    let c = compile_str("test.yaml", GOOD, &FileResolver::Builtin).unwrap();
    assert_eq!(c.routes.routes().len(), 2);
    assert_eq!(c.issuers.len(), 1);
    assert_eq!(c.server.grpc_listen.port(), 9191);
    let api = &c.routes.routes()[0];
    assert_eq!(api.inject.user.as_deref(), Some("x-forwarded-user"));
    assert_eq!(api.remove_headers, vec!["authorization".to_string()]);
}

#[test]
fn every_unknown_field_is_reported_with_its_path() {
    let yaml = GOOD.replace(
        "    allow: public",
        "    allow: public\n    alow: public\n    match: {hostz: [a]}",
    );
    let got = problems(&yaml);
    assert!(
        got.contains(&"routes[1].alow: unknown field".to_string()),
        "{got:?}"
    );
    assert!(
        got.contains(&"routes[1].match.hostz: unknown field".to_string()),
        "{got:?}"
    );
}

#[test]
fn all_semantic_problems_are_reported_at_once() {
    let yaml = r#"
issuers:
  - issuer: https://idp.example.com
    audiences: []
    jwks: {url: "ftp://x"}
    algorithms: [HS256, RS257]
    gerrit_account_form: number
routes:
  - name: a
    match: {hosts: ["a.*.com"], path: {prefix: nope}}
    allow: {groups_any_of: [team-a]}
    inject: {user: "bad header"}
  - name: a
    allow: authenticated
    inject: {user: x-user}
    remove_headers: [X-User]
"#;
    let got = problems(yaml);
    let want = [
        "issuers[0].audiences: list at least one non-empty audience",
        "issuers[0].algorithms[0]: HS256 is symmetric",
        "issuers[0].algorithms[1]: unknown algorithm \"RS257\"",
        "issuers[0].jwks.url: \"ftp://x\" is not an http(s) URL",
        "issuers[0].gerrit_account_form: number is not one of username, email, account_id",
        "routes[0].match.hosts[0]: invalid host pattern",
        "routes[0].match.path.prefix: invalid path",
        "routes[0].inject.user: invalid header name",
        "routes[0].allow.groups_any_of: needs group membership",
        "routes[1].name: duplicate route name",
        "routes[1].remove_headers[0]: \"x-user\" is also injected",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in {got:#?}"
        );
    }
}

#[test]
fn type_errors_name_the_field_and_line() {
    let got = problems("server: {drain_delay: soon}\nroutes: []\n");
    assert!(got[0].contains("server.drain_delay"), "{got:?}");
    assert!(got[0].contains("line 1"), "{got:?}");
    // What the rest says is checked in the same run.
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[1].starts_with("routes: at least one route"), "{got:?}");
}

#[test]
fn an_unreadable_jwks_file_is_a_config_problem() {
    let yaml = GOOD.replace("jwks.json", "missing.json");
    let got = problems(&yaml);
    assert!(
        got[0].starts_with("issuers[0].jwks.file: cannot read <built-in missing.json>"),
        "{got:?}"
    );
}

/// Problems of a config whose referenced files are `files`, in a temp dir.
fn problems_with_files(yaml: &str, files: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let resolver = FileResolver::Disk(dir.path().to_path_buf());
    match compile_str("test.yaml", yaml, &resolver) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(e) => vec![e.to_string()],
    }
}

fn with_gerrit(section: &str) -> String {
    GOOD.replace("static_groups:\n  alice: [team-a]\n", section)
}

#[test]
fn gerrit_sections_are_checked_field_by_field() {
    let jwks = (
        "jwks.json",
        include_str!("../../../examples/quickstart/jwks.json"),
    );
    let cases = [
            (
                "gerrit:\n  url: https://review.example.com\n  username: svc\n",
                "gerrit: set `password_file` (HTTP Basic) or `trusted_user_header`",
            ),
            (
                "gerrit:\n  url: https://review.example.com\n  username: svc\n  trusted_user_header: \"X User\"\n",
                "gerrit.trusted_user_header: invalid header name",
            ),
            (
                "gerrit:\n  url: http://review.example.com\n  username: svc\n  password_file: pw\n  ca_file: jwks.json\n",
                "gerrit.ca_file: only used with an https `url`",
            ),
            (
                "gerrit:\n  url: https://review.example.com\n  username: svc\n  password_file: pw\n  max_response_bytes: 10\n",
                "gerrit.max_response_bytes: must be at least 1024",
            ),
        ];
    for (section, want) in cases {
        let got = problems_with_files(
            &with_gerrit(section),
            &[jwks, ("ca.pem", "not a certificate"), ("short", "abc\n")],
        );
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "{section}: missing {want:?} in {got:#?}"
        );
    }
    // Trusting a header alone is enough.
    let header_only = "gerrit:\n  url: https://review.example.com\n  username: svc\n  trusted_user_header: X-Forwarded-User\n  events: {}\n";
    assert_eq!(
        problems_with_files(&with_gerrit(header_only), &[jwks]),
        Vec::<String>::new()
    );
}

#[test]
fn rules_and_kube_sections_compile_and_every_mistake_is_named() {
    let good = r#"
issuers:
  - issuer: https://idp.example.com
    audiences: [mesh]
    jwks: {file: jwks.json}
static_groups: {alice: [team-a]}
routes:
  - name: vote
    match:
      hosts: [gerrit.example.com]
      path: {regex: "/a/changes/[^/]+/revisions/[^/]+/review"}
      methods: [POST]
      principals: ["cluster.local/ns/ci/*"]
      context_extensions: {target: gerrit}
    allow:
      - principals: [cluster.local/ns/ci/sa/runner]
        as_user: ci-bot
      - groups_all_of: [team-a, reviewers]
        claims:
          email_verified: {equals: true}
          department: {one_of: [eng, ops]}
        scopes: [gerrit:write]
    dry_run: true
    inject:
      user: X-Forwarded-User
      display_name: X-Forwarded-Name
      groups: {header: X-Forwarded-Groups, only: [team-a], max_bytes: 512, on_overflow: truncate}
  - name: kube
    match: {hosts: [kube.example.com]}
    allow: authenticated
    kube:
      impersonate_group: "fixed:developers"
      rules:
        - {verbs: [get, list, watch], resources: ["*"], namespace_group: "team-{namespace}"}
        - {verbs: ["*"], api_groups: ["", apps], resources: [pods, "deployments/scale"], namespaces: [sandbox]}
        - {verbs: [get], non_resource_paths: [/version, "/apis/*"]}
"#;
    let c =
        compile_str("test.yaml", good, &FileResolver::Builtin).unwrap_or_else(|e| panic!("{e}"));
    let vote = &c.routes.routes()[0];
    assert!(vote.dry_run);
    assert_eq!(vote.requirement.rules().len(), 2);
    assert!(
        !vote.requirement.rules()[0].token,
        "a workload rule needs no token"
    );
    assert!(vote.requirement.rules()[1].token && vote.requirement.rules()[1].needs_groups());
    let kube = c.routes.routes()[1].kube.as_ref().unwrap();
    assert_eq!(
        kube.impersonate_group,
        ImpersonateGroup::Fixed("developers".into())
    );
    assert_eq!(kube.rules.len(), 3);

    let bad = r#"
issuers:
  - issuer: https://idp.example.com
    audiences: [mesh]
    jwks: {file: jwks.json}
routes:
  - name: a
    match: {path: {regex: "(unclosed"}, principals: ["a*b"]}
    allow:
      - {}
      - {authenticated: true, as_user: bot}
      - {principals: ["*"], claims: {dept: {equals: eng, one_of: [ops]}, tier: {equals: [1]}}}
    inject: {groups: {header: x-g, on_overflow: explode, max_bytes: 1}}
  - name: k
    allow: public
    kube: {rules: []}
  - name: k2
    allow: [{principals: [cluster.local/ns/ci/sa/runner]}]
    kube:
      impersonate_group: team-a
      rules:
        - {verbs: [get], resources: [pods]}
        - {verbs: [fetch], resources: [pods], namespaces: ["*"]}
        - {verbs: [get], resources: [pods], namespace_group: team-a, groups_any_of: [x]}
        - {verbs: [get], non_resource_paths: [healthz], namespaces: [a]}
        - {verbs: [get]}
"#;
    let got = problems(bad);
    let want = [
        "routes[0].match.path.regex: invalid path regex \"(unclosed\"",
        "routes[0].match.principals[0]: invalid principal pattern \"a*b\"",
        "routes[0].allow[0]: an empty rule would allow everyone",
        "routes[0].allow[1].as_user: only for a rule on `principals` alone",
        "routes[0].allow[2].claims.dept: set exactly one of `equals`, `one_of` or `contains`",
        "routes[0].allow[2].claims.tier: compare with strings, numbers or booleans",
        "routes[0].inject.groups.on_overflow: \"explode\": use `deny` or `truncate`",
        "routes[0].inject.groups.max_bytes: must be between 64 and 16384",
        "routes[1].kube: a public route has no user to impersonate",
        "routes[1].kube.rules: list at least one rule",
        "routes[2].allow[0]: on a kube route every rule needs a user to impersonate",
        "routes[2].kube.impersonate_group: \"team-a\": use `granting`, `none` or `fixed:GROUP`",
        "routes[2].kube.rules[0]: applies nowhere",
        "routes[2].kube.rules[1].verbs[0]: \"fetch\" is not a verb the apiserver uses",
        "routes[2].kube.rules[2].namespace_group: must contain `{namespace}`",
        "routes[2].kube.rules[2]: needs group membership",
        "routes[0].inject.groups: injects groups, but neither",
        "routes[2].kube.rules[3]: non_resource_paths take no namespaces",
        "routes[2].kube.rules[3].non_resource_paths[0]: \"healthz\": a path starting with `/`",
        "routes[2].kube.rules[4]: set exactly one of `resources` or `non_resource_paths`",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

#[test]
fn peers_must_be_host_and_port() {
    let yaml = format!(
            "server:\n  peers: [\"peers.mesh-authz.svc:9192\", \"no-port\", \":9192\", \"h:0\"]\n{GOOD}"
        );
    let got = problems(&yaml);
    assert_eq!(got.len(), 3, "{got:#?}");
    for (i, g) in got.iter().enumerate() {
        assert!(g.starts_with(&format!("server.peers[{}]: ", i + 1)), "{g}");
    }
}

#[test]
fn the_builtin_quickstart_config_compiles() {
    let c = super::super::builtin().unwrap();
    assert!(!c.routes.routes().is_empty());
}

#[test]
fn change_conditions_report_every_problem_with_its_field() {
    let bad = r#"
issuers:
  - issuer: https://idp.example.com
    audiences: [mesh]
    jwks: {file: jwks.json}
static_groups: {alice: [team-a]}
routes:
  - name: a
    allow:
      - authenticated: true
        change: {header: x-change, claim: change, state: done, projects: ["a*b"]}
      - authenticated: true
        change:
          header: "bad header"
          state: merged
          revision_header: "x y"
          approval: {not_by: [owner, boss]}
      - {authenticated: true, change: {state: merged}}
"#;
    let got = problems(bad);
    for want in [
        "routes[0].allow[0].change: reads the change from Gerrit, but `gerrit` is not configured",
        "routes[0].allow[0].change: set exactly one of `header` and `claim`",
        "routes[0].allow[0].change.projects[0]: \"a*b\" is not `name`, `prefix*` or `*`",
        "routes[0].allow[0].change.state: \"done\" is not `merged` or `submittable`",
        "routes[0].allow[1].change.header: invalid header name",
        "routes[0].allow[1].change.revision_header: invalid header name",
        "routes[0].allow[1].change.approval.not_by[1]: \"boss\" is not `owner` or `caller`",
        "routes[0].allow[2].change: set exactly one of `header` and `claim`",
    ] {
        assert!(
            got.iter().any(|p| p.starts_with(want)),
            "{want}\nin {got:#?}"
        );
    }
}

#[test]
fn a_lookup_budget_that_cannot_fit_in_envoys_timeout_is_warned_about() {
    let with = |gerrit_extra: &str, top: &str| {
        let gerrit = format!(
            "gerrit:\n  url: https://review.example.com\n  username: svc\n  trusted_user_header: X-Gerrit-Service\n{gerrit_extra}{top}"
        );
        let yaml = GOOD.replace("static_groups:\n  alice: [team-a]\n", &gerrit);
        compile_str("t.yaml", &yaml, &FileResolver::Builtin)
            .unwrap_or_else(|e| panic!("{e}"))
            .timing_warnings()
    };
    // Defaults: 2 s a try, one retry: over 4 s against Envoy's 0.5 s.
    let warnings = with("", "");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].0, "gerrit.timeout");
    assert!(
        warnings[0].1.contains("4s 75ms") && warnings[0].1.contains("500ms"),
        "{warnings:?}"
    );
    // The shipped manifests' bounds fit: 200 ms, one retry after 50 ms (75 with jitter).
    assert_eq!(with("  timeout: 200ms\n", ""), vec![]);
    // A longer Envoy timeout makes room.
    assert_eq!(with("", "server:\n  envoy_timeout: 5s\n"), vec![]);
}

#[test]
fn a_file_broken_in_structure_and_meaning_shows_both_in_one_run() {
    // A wrong duration (structure) and a bad host pattern in another route (meaning):
    // one run names both, the route with its number in the file.
    let yaml = GOOD
        .replace(
            "static_groups:",
            "server:\n  drain_delay: 5\nstatic_groups:",
        )
        .replace(
            "  - name: open\n",
            "  - broken: true\n  - name: bad-host\n    match: {hosts: [\"a.*.com\"]}\n    allow: public\n  - name: open\n",
        );
    let got = problems(&yaml);
    assert!(
        got.iter()
            .any(|p| p.starts_with("server.drain_delay: ") && p.contains("`30s`")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|p| p.starts_with("routes[1]: missing field `name`")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|p| p.starts_with("routes[2].match.hosts[0]: ")),
        "the meaning of the rest, numbered as in the file: {got:#?}"
    );
}
