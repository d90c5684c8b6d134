use super::*;
use crate::identity::Membership;

const EIGHT_HOURS: Duration = Duration::from_secs(8 * 3600);
/// 2026-12-06T10:00:00Z.
const TEN: u64 = 1_796_551_200;

const FILE: &str = r#"
grants:
  - id: INC-4711
    who: {users: [agent-7], groups: [oncall]}
    routes: [kube]
    kube: {verbs: [delete], resources: [pods], namespaces: [payments]}
    from: 2026-12-06T10:00:00Z
    until: 2026-12-06T14:00:00Z
    reason: "INC-4711: restart the stuck payment pods"
  - id: deploy-window
    who: {principals: [cluster.local/ns/ci/sa/deployer]}
    routes: [deploy]
    from: 2026-12-06T12:00:00+02:00
    until: 2026-12-06T13:00:00+02:00
    reason: release 42
"#;

fn parsed(text: &str) -> (GrantSet, Vec<Skipped>) {
    GrantSet::parse(text, "abc123", EIGHT_HOURS).unwrap()
}

fn caller<'a>(user: Option<&'a str>, m: Option<&'a Membership>, principal: &'a str) -> Caller<'a> {
    Caller {
        user,
        membership: m,
        principal,
    }
}

fn delete_pod(ns: &str) -> KubeRequest {
    crate::policy::kube::parse("DELETE", &format!("/api/v1/namespaces/{ns}/pods/p-1"), "")
}

#[test]
fn a_grant_is_active_from_from_until_until_to_the_second() {
    let (set, skipped) = parsed(FILE);
    assert!(skipped.is_empty(), "{skipped:?}");
    let g = &set.grants[0];
    assert_eq!((g.from, g.until), (TEN, TEN + 4 * 3600));
    assert!(!g.is_active(TEN - 1));
    assert!(g.is_active(TEN));
    assert!(g.is_active(TEN + 4 * 3600 - 1));
    assert!(!g.is_active(TEN + 4 * 3600));
    // Offsets are times like any other: 12:00+02:00 is 10:00Z.
    assert_eq!(set.grants[1].from, TEN);
    assert_eq!(set.active(TEN), 2);
}

#[test]
fn a_grant_names_users_groups_or_workloads_for_its_routes_and_requests() {
    let (set, _) = parsed(FILE);
    let oncall = Membership::of_names(&["oncall"]);
    let now = TEN + 60;
    let req = delete_pod("payments");
    assert_eq!(
        set.find("kube", &caller(Some("agent-7"), None, ""), Some(&req), now)
            .map(|g| g.id.as_str()),
        Some("INC-4711")
    );
    assert!(set
        .find(
            "kube",
            &caller(Some("bob"), Some(&oncall), ""),
            Some(&req),
            now
        )
        .is_some());
    // Not named, another route, another namespace, another verb, too late.
    assert!(set
        .find("kube", &caller(Some("bob"), None, ""), Some(&req), now)
        .is_none());
    assert!(set
        .find("gerrit", &caller(Some("agent-7"), None, ""), None, now)
        .is_none());
    assert!(set
        .find(
            "kube",
            &caller(Some("agent-7"), None, ""),
            Some(&delete_pod("kube-system")),
            now
        )
        .is_none());
    let get = crate::policy::kube::parse("GET", "/api/v1/namespaces/payments/secrets", "");
    assert!(set
        .find("kube", &caller(Some("agent-7"), None, ""), Some(&get), now)
        .is_none());
    assert!(set
        .find(
            "kube",
            &caller(Some("agent-7"), None, ""),
            Some(&req),
            TEN + 4 * 3600
        )
        .is_none());
    // A workload by its principal.
    let deployer = caller(None, None, "spiffe://cluster.local/ns/ci/sa/deployer");
    assert!(set.find("deploy", &deployer, None, now).is_some());
}

#[test]
fn invalid_entries_are_skipped_with_the_reason_and_never_widen_access() {
    let text = r#"
grants:
  - id: too-long
    who: {users: [a]}
    routes: [kube]
    from: 2026-12-06T00:00:00Z
    until: 2026-12-06T09:00:01Z
    reason: r
  - id: backwards
    who: {users: [a]}
    routes: [kube]
    from: 2026-12-06T10:00:00Z
    until: 2026-12-06T09:00:00Z
    reason: r
  - id: nobody
    who: {}
    routes: [kube]
    from: 2026-12-06T10:00:00Z
    until: 2026-12-06T11:00:00Z
    reason: r
  - id: everyone
    who: {principals: ["*"]}
    routes: [kube]
    from: 2026-12-06T10:00:00Z
    until: 2026-12-06T11:00:00Z
    reason: r
  - id: any-namespace
    who: {users: [a]}
    routes: [kube]
    kube: {verbs: ["*"], resources: ["*"], namespaces: ["*"]}
    from: 2026-12-06T10:00:00Z
    until: 2026-12-06T11:00:00Z
    reason: r
  - id: no-reason
    who: {users: [a]}
    routes: [kube]
    from: 2026-12-06T10:00:00Z
    until: 2026-12-06T11:00:00Z
    reason: " "
  - id: typo
    who: {users: [a]}
    route: [kube]
    from: 2026-12-06T10:00:00Z
    until: 2026-12-06T11:00:00Z
    reason: r
  - id: bad-time
    who: {users: [a]}
    routes: [kube]
    from: tomorrow
    until: 2026-12-06T11:00:00Z
    reason: r
  - id: fine
    who: {users: [a]}
    routes: [gerrit]
    from: 2026-12-06T10:00:00Z
    until: 2026-12-06T11:00:00Z
    reason: r
  - id: fine
    who: {users: [b]}
    routes: [gerrit]
    from: 2026-12-06T10:00:00Z
    until: 2026-12-06T11:00:00Z
    reason: a second entry named fine
"#;
    let (set, skipped) = parsed(text);
    assert_eq!(
        set.grants.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        ["fine"]
    );
    assert_eq!(set.grants[0].users, ["a"]);
    let reasons: Vec<(&str, &str)> = skipped
        .iter()
        .map(|s| (s.entry.as_str(), s.reason.as_str()))
        .collect();
    let expect = [
        (
            "too-long",
            "lasts 9h 1s, longer than the 8h grants may last",
        ),
        ("backwards", "`until` is not after `from`"),
        ("nobody", "`who` names nobody"),
        ("everyone", "`who.principals` may not be `*`"),
        (
            "any-namespace",
            "`kube.namespaces` must name namespaces, not `*`",
        ),
        ("no-reason", "`reason` is empty"),
        ("typo", "unknown field `route`"),
        ("bad-time", "`from` \"tomorrow\" is not an RFC 3339 time"),
        ("fine", "another entry has the same id"),
    ];
    assert_eq!(reasons.len(), expect.len(), "{reasons:#?}");
    for ((entry, reason), (want_entry, want)) in reasons.iter().zip(expect) {
        assert_eq!(*entry, want_entry);
        assert!(reason.contains(want), "{entry}: {reason} (wanted {want})");
    }
}

#[test]
fn a_file_that_does_not_parse_is_an_error_not_an_empty_set() {
    for bad in ["grants: {not: a list}", "grant: []", "\t\u{0}", ": :"] {
        assert!(GrantSet::parse(bad, "r", EIGHT_HOURS).is_err(), "{bad:?}");
    }
    let (empty, _) = parsed("grants: []");
    assert!(empty.grants.is_empty());
}
