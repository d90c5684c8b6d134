//! Overlap analysis: findings for route tables, and the shipped configs.

use super::*;

/// A route from a compact spec: space-separated `host:H`, `prefix:P`, `exact:P`,
/// `regex:R`, `method:M`, `principal:P`, `ext:K=V` (each but the path repeatable);
/// what is not given matches anything.
fn route(spec: &str) -> RouteRule {
    let mut r = RouteRule::test_base(spec);
    let mut methods = Vec::new();
    for part in spec.split_whitespace() {
        let (kind, value) = part.split_once(':').unwrap();
        match kind {
            "host" => r.hosts.push(HostMatcher::parse(value).unwrap()),
            "prefix" => r.path = PathMatcher::prefix(value).unwrap(),
            "segments" => r.path = PathMatcher::segment_prefix(value).unwrap(),
            "exact" => r.path = PathMatcher::exact(value).unwrap(),
            "regex" => r.path = PathMatcher::regex(value).unwrap(),
            "method" => methods.push(value.to_string()),
            "principal" => r.principals.push(PrincipalMatcher::parse(value).unwrap()),
            "ext" => {
                let (k, v) = value.split_once('=').unwrap();
                r.context_extensions.push((k.into(), v.into()));
            }
            _ => panic!("bad spec part {part:?}"),
        }
    }
    r.methods = MethodSet::new(&methods).unwrap();
    r
}

fn table(specs: &[&str]) -> RouteTable {
    RouteTable::new(specs.iter().map(|s| route(s)).collect())
}

/// Overlap findings as short strings: `unreachable 2 by 0`, `shadowed 1 by 0: GET h/p`.
fn describe(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter_map(|f| match f {
            Finding::Unreachable { earlier, later } => {
                Some(format!("unreachable {later} by {earlier}"))
            }
            Finding::Shadowed {
                earlier,
                later,
                example,
            } => Some(format!("shadowed {later} by {earlier}: {example}")),
            Finding::MidSegmentPrefix { .. } => None,
        })
        .collect()
}

#[test]
fn prefixes_that_end_inside_a_segment_are_reported_and_segment_prefixes_are_not() {
    let t = table(&[
        "prefix:/a/projects/team-a",
        "prefix:/a/projects/team-b/",
        "segments:/a/projects/team-c",
        "exact:/a/projects/team-d",
    ]);
    assert_eq!(
        findings(&t),
        vec![Finding::MidSegmentPrefix {
            route: 0,
            prefix: "/a/projects/team-a".into()
        }]
    );
}

#[test]
fn segment_prefixes_cover_what_is_below_them_by_whole_segments() {
    let unreachable = |specs: &[&str]| describe(&findings(&table(specs)));
    assert_eq!(
        unreachable(&[
            "segments:/a",
            "segments:/a/b",
            "exact:/a/b/c",
            "prefix:/a/b/"
        ]),
        vec![
            "unreachable 1 by 0",
            "unreachable 2 by 0",
            "unreachable 3 by 0"
        ]
    );
    assert_eq!(
        unreachable(&["prefix:/a", "segments:/a/b"]),
        vec!["unreachable 1 by 0"]
    );
    // `prefix: /a` also matches `/ab`, which `segments: /a` does not: reachable, and
    // specific before general is no finding.
    assert!(unreachable(&["segments:/a", "prefix:/a"]).is_empty());
}

#[test]
fn findings_name_unreachable_and_shadowed_routes_but_not_specific_before_general() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "a general route before a specific one makes it unreachable",
            &["host:g.com prefix:/", "host:g.com prefix:/a/ method:GET"],
            &["unreachable 1 by 0"],
        ),
        (
            "specific before general is the intended pattern",
            &["host:g.com prefix:/a/ method:GET", "host:g.com"],
            &[],
        ),
        (
            "a wildcard host covers its subdomains",
            &["host:*.example.com", "host:a.example.com host:*.b.example.com"],
            &["unreachable 1 by 0"],
        ),
        (
            "a wildcard host does not cover the bare domain",
            &["host:*.example.com", "host:example.com"],
            &[],
        ),
        (
            "hosts compare case-insensitively",
            &["host:Gerrit.Example.com", "host:gerrit.example.COM prefix:/a"],
            &["unreachable 1 by 0"],
        ),
        (
            "one of several hosts outside the earlier route keeps a route reachable",
            &["host:a.com", "host:a.com host:b.com"],
            &[],
        ),
        (
            "an exact path inside an earlier prefix",
            &["prefix:/a/", "exact:/a/b"],
            &["unreachable 1 by 0"],
        ),
        (
            "an exact path before the prefix it starts",
            &["exact:/a", "prefix:/a"],
            &[],
        ),
        (
            "a regex covers an exact path it matches",
            &["regex:/a/[^/]+", "exact:/a/b method:GET"],
            &["unreachable 1 by 0"],
        ),
        (
            "a regex does not overlap an exact path it does not match",
            &["regex:/a/[^/]+", "exact:/a/b/c"],
            &[],
        ),
        (
            "the same regex with fewer methods",
            &["regex:/a/.*", "regex:/a/.* method:GET"],
            &["unreachable 1 by 0"],
        ),
        (
            "different regexes are never claimed to cover each other",
            &["regex:/a/.*", "regex:/a/b.*"],
            &[],
        ),
        (
            "a regex that covers a prefix is not proven to, so nothing is said",
            &["regex:/a/.*", "prefix:/a/"],
            &[],
        ),
        (
            "general before specific with a partial overlap is a warning",
            &["host:g.com method:GET", "host:g.com prefix:/a/"],
            &["shadowed 1 by 0: GET g.com/a/"],
        ),
        (
            "a regex route loses requests to an earlier route for any path",
            &["method:GET", "regex:/a/changes/[^/]+/review"],
            &["shadowed 1 by 0: GET example.com/a/changes/x/review"],
        ),
        (
            "any path after `/` is not called unreachable: Envoy may send `*`",
            &["prefix:/", "method:GET"],
            &[],
        ),
        (
            "disjoint methods do not overlap",
            &["host:g.com method:GET", "host:g.com method:POST"],
            &[],
        ),
        (
            "disjoint hosts do not overlap",
            &["host:a.com", "host:b.com prefix:/a"],
            &[],
        ),
        (
            "a principal prefix covers an identity under it",
            &[
                "principal:cluster.local/ns/ci/*",
                "principal:spiffe://cluster.local/ns/ci/sa/runner",
            ],
            &["unreachable 1 by 0"],
        ),
        (
            "`*` does not cover callers without an identity, who still reach a later route",
            &["principal:*", "method:GET"],
            &["shadowed 1 by 0: GET example.com/ from spiffe://cluster.local/ns/default/sa/default"],
        ),
        (
            "no principals covers every caller",
            &["method:GET", "method:GET principal:*"],
            &["unreachable 1 by 0"],
        ),
        (
            "a principal suffix and prefix share identities",
            &[
                "principal:*/sa/runner method:GET",
                "principal:cluster.local/ns/ci/*",
            ],
            &["shadowed 1 by 0: GET example.com/ from spiffe://cluster.local/ns/ci/sa/runner"],
        ),
        (
            "more required context extensions are a subset",
            &["ext:vh=gerrit", "ext:vh=gerrit ext:env=prod prefix:/a"],
            &["unreachable 1 by 0"],
        ),
        (
            "different values of one context extension do not overlap",
            &["ext:vh=gerrit", "ext:vh=builds"],
            &[],
        ),
        (
            "context extensions appear in the example",
            &["ext:vh=gerrit method:GET", "ext:env=prod"],
            &["shadowed 1 by 0: GET example.com/ with context extensions env=prod, vh=gerrit"],
        ),
        (
            "an unreachable route is reported once, against the first route covering it",
            &["prefix:/", "prefix:/a", "prefix:/a/b"],
            &["unreachable 1 by 0", "unreachable 2 by 0"],
        ),
        (
            "an unreachable route gets no warnings",
            &["host:g.com", "method:GET", "host:g.com prefix:/a"],
            &["shadowed 1 by 0: GET g.com/", "unreachable 2 by 0"],
        ),
        (
            "the example is a request the earlier route decides, not one before it",
            &["host:g.com exact:/", "method:GET", "host:g.com"],
            &["shadowed 1 by 0: GET g.com/", "shadowed 2 by 1: GET g.com/x"],
        ),
        (
            "an overlap an even earlier route takes entirely is not a warning",
            &["host:g.com prefix:/a", "method:GET prefix:/a", "host:g.com"],
            &["shadowed 1 by 0: GET g.com/a"],
        ),
    ];
    for (what, specs, expected) in cases {
        assert_eq!(describe(&findings(&table(specs))), *expected, "{what}");
    }
}

fn hosts(list: &[&str]) -> Vec<HostMatcher> {
    list.iter()
        .map(|h| HostMatcher::parse(h).unwrap())
        .collect()
}

#[test]
fn host_containment_is_decided_for_exact_names_and_wildcards() {
    let cases: &[(&[&str], &[&str], bool)] = &[
        (&[], &[], true),
        (&["a.com"], &[], true),
        (&[], &["a.com"], false),
        (&[], &["*.com"], false),
        (&["a.example.com"], &["*.example.com"], true),
        (&["example.com"], &["*.example.com"], false),
        (&["*.b.example.com"], &["*.example.com"], true),
        (&["*.example.com"], &["*.b.example.com"], false),
        (
            &["*.example.com"],
            &["a.example.com", "*.b.example.com"],
            false,
        ),
        (&["*.xexample.com"], &["*.example.com"], false),
        (&["A.Example.COM"], &["a.example.com"], true),
        (&["a.com", "b.com"], &["a.com"], false),
        (&["a.com", "b.com"], &["b.com", "a.com"], true),
    ];
    for (inner, outer, expected) in cases {
        assert_eq!(
            hosts_within(&hosts(inner), &hosts(outer)),
            *expected,
            "{inner:?} within {outer:?}"
        );
    }
}

fn path(spec: &str) -> PathMatcher {
    route(spec).path
}

#[test]
fn path_containment_is_proven_only_where_decidable_and_refuted_by_sample_paths() {
    // (inner, outer, proven within over every path, an ordinary path escapes)
    let cases = [
        ("", "", true, false),
        ("prefix:/a/", "", true, false),
        ("", "prefix:/", false, false),
        ("", "prefix:/a", false, true),
        ("", "exact:/", false, true),
        ("prefix:/a/b", "prefix:/a", true, false),
        ("prefix:/a", "prefix:/a/b", false, true),
        ("exact:/a/b", "prefix:/a/", true, false),
        ("exact:/a", "prefix:/a/", false, true),
        ("prefix:/a", "exact:/a", false, true),
        ("exact:/a", "exact:/a", true, false),
        ("exact:/a/x", "regex:/a/[^/]+", true, false),
        ("exact:/a/x/y", "regex:/a/[^/]+", false, true),
        ("regex:/a/.*", "regex:/a/.*", true, false),
        ("regex:/a/.*", "prefix:/a/", false, false),
        ("prefix:/a/", "regex:/a/.*", false, false),
        ("regex:/a/(x|y)", "regex:/a/x|/a/y", false, false),
        ("regex:/b/.*", "prefix:/a/", false, true),
        ("prefix:/a/", "regex:/a/[^/]*", false, true),
    ];
    for (inner, outer, within, escapes) in cases {
        let (i, o) = (path(inner), path(outer));
        assert_eq!(path_within(&i, &o), within, "{inner:?} within {outer:?}");
        assert_eq!(path_escapes(&i, &o), escapes, "{inner:?} escapes {outer:?}");
    }
}

#[test]
fn method_containment_treats_an_empty_set_as_any_method() {
    let set = |m: &[&str]| MethodSet::new(m).unwrap();
    let cases: &[(&[&str], &[&str], bool)] = &[
        (&[], &[], true),
        (&["GET"], &[], true),
        (&[], &["GET", "POST"], false),
        (&["GET"], &["GET", "HEAD"], true),
        (&["GET", "PUT"], &["GET", "HEAD"], false),
        (&["get"], &["GET"], true),
    ];
    for (inner, outer, expected) in cases {
        assert_eq!(
            methods_within(&set(inner), &set(outer)),
            *expected,
            "{inner:?} within {outer:?}"
        );
    }
}

#[test]
fn principal_containment_is_decided_for_every_pattern_kind() {
    let list = |p: &[&str]| -> Vec<PrincipalMatcher> {
        p.iter()
            .map(|p| PrincipalMatcher::parse(p).unwrap())
            .collect()
    };
    let cases: &[(&[&str], &[&str], bool)] = &[
        (&[], &[], true),
        (&["*"], &[], true),
        (&[], &["*"], false),
        (&["ns/ci/sa/runner"], &["ns/ci/*"], true),
        (&["spiffe://ns/ci/sa/runner"], &["*/sa/runner"], true),
        (&["ns/ci/*"], &["ns/*"], true),
        (&["ns/*"], &["ns/ci/*"], false),
        (&["*/sa/runner"], &["*/runner"], true),
        (&["*/runner"], &["*/sa/runner"], false),
        (&["ns/ci/*"], &["*/sa/runner", "ns/ci/sa/x"], false),
        (&["ns/ci/*"], &["*"], true),
        (&["*"], &["ns/*", "*/x"], false),
        (&["ns/ci/sa/runner", "ns/cd/*"], &["ns/*"], true),
    ];
    for (inner, outer, expected) in cases {
        assert_eq!(
            principals_within(&list(inner), &list(outer)),
            *expected,
            "{inner:?} within {outer:?}"
        );
    }
}

#[test]
fn more_required_context_extensions_are_a_subset() {
    let list = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    type Pairs = &'static [(&'static str, &'static str)];
    let cases: &[(Pairs, Pairs, bool)] = &[
        (&[], &[], true),
        (&[("vh", "g")], &[], true),
        (&[], &[("vh", "g")], false),
        (&[("vh", "g"), ("env", "p")], &[("vh", "g")], true),
        (&[("vh", "g")], &[("vh", "b")], false),
    ];
    for (inner, outer, expected) in cases {
        assert_eq!(
            extensions_within(&list(inner), &list(outer)),
            *expected,
            "{inner:?} within {outer:?}"
        );
    }
}

#[test]
fn regex_samples_are_readable_paths_the_regex_matches() {
    for (pattern, first) in [
        (
            "/a/changes/[^/]+/revisions/[^/]+/review",
            Some("/a/changes/x/revisions/x/review"),
        ),
        ("/(a|b)/x", Some("/a/x")),
        ("/a/.*", Some("/a/")),
        ("/x{3}", Some("/xxx")),
        ("/[A-Z]+", Some("/A")),
        (r"/a/\d+", Some("/a/0")),
        ("(?i)/abc", Some("/abc")),
        (r"/a\B/b", None),
        ("/x{500}", None),
    ] {
        let PathMatcher::Regex(re) = PathMatcher::regex(pattern).unwrap() else {
            unreachable!()
        };
        let samples = regex_samples(&re);
        assert!(
            samples.iter().all(|s| re.is_match(s)),
            "{pattern}: {samples:?}"
        );
        assert_eq!(samples.first().map(String::as_str), first, "{pattern}");
    }
}

// Property tests: random routes from small vocabularies, checked against brute force
// over requests built to include a witness of every relation the vocabularies allow.

const HOST_PATTERNS: &[&str] = &[
    "gerrit.example.com",
    "*.example.com",
    "a.example.com",
    "*.b.example.com",
    "x.b.example.com",
    "example.com",
    "*.org",
];
const PATHS: &[&str] = &[
    "prefix:/",
    "prefix:/a",
    "prefix:/a/",
    "prefix:/a/b",
    "prefix:/b/",
    "exact:/",
    "exact:/a",
    "exact:/a/b",
    "exact:/ab",
];
const REGEXES: &[&str] = &[
    "regex:/a/[^/]+",
    "regex:/a/.*",
    "regex:/(a|b)/x",
    "regex:/a",
    "regex:/a/b|/ab",
];
const METHODS: &[&str] = &["GET", "POST", "HEAD"];
const PRINCIPALS: &[&str] = &[
    "cluster.local/ns/ci/sa/runner",
    "cluster.local/ns/ci/*",
    "*/sa/runner",
    "*",
    "cluster.local/*",
    "*/sa/other",
];
const EXTENSIONS: &[&str] = &["vh=gerrit", "vh=builds", "env=prod"];

fn random_route(rng: &mut fastrand::Rng, regexes: bool) -> RouteRule {
    route(&random_spec(rng, regexes).join(" "))
}

/// Two routes; half the time the later is the earlier with parts dropped and added,
/// so that near-containment, both ways, is common.
fn random_pair(rng: &mut fastrand::Rng, regexes: bool) -> (RouteRule, RouteRule) {
    let earlier = random_spec(rng, regexes);
    let later = if rng.bool() {
        random_spec(rng, regexes)
    } else {
        let mut later: Vec<String> = earlier
            .iter()
            .filter(|_| rng.usize(0..4) > 0)
            .cloned()
            .collect();
        for part in random_spec(rng, regexes) {
            let clash =
                ext_key(&part).is_some() && later.iter().any(|p| ext_key(p) == ext_key(&part));
            if rng.usize(0..3) == 0 && !clash {
                later.push(part);
            }
        }
        later
    };
    (route(&earlier.join(" ")), route(&later.join(" ")))
}

/// The key of an `ext:K=V` part: one value per key, as in config maps.
fn ext_key(part: &str) -> Option<&str> {
    part.strip_prefix("ext:").and_then(|e| e.split('=').next())
}

fn random_spec(rng: &mut fastrand::Rng, regexes: bool) -> Vec<String> {
    let mut spec = Vec::new();
    for _ in 0..rng.usize(0..3) {
        spec.push(format!(
            "host:{}",
            HOST_PATTERNS[rng.usize(..HOST_PATTERNS.len())]
        ));
    }
    let paths = if regexes && rng.bool() {
        REGEXES
    } else {
        PATHS
    };
    if rng.usize(0..4) > 0 {
        spec.push(paths[rng.usize(..paths.len())].to_string());
    }
    for m in METHODS {
        if rng.usize(0..3) == 0 {
            spec.push(format!("method:{m}"));
        }
    }
    for _ in 0..rng.usize(0..3) {
        spec.push(format!(
            "principal:{}",
            PRINCIPALS[rng.usize(..PRINCIPALS.len())]
        ));
    }
    let mut keys = Vec::new();
    for _ in 0..rng.usize(0..3) {
        let ext = EXTENSIONS[rng.usize(..EXTENSIONS.len())];
        // Config maps have one value per key.
        let key = ext.split('=').next().unwrap();
        if !keys.contains(&key) {
            keys.push(key);
            spec.push(format!("ext:{ext}"));
        }
    }
    spec
}

/// The requests brute force tries: every combination of these parts, built to
/// include a witness of every relation the route vocabularies above allow. Paths
/// include unusual ones (`*`, empty, dot-segments) that only "unreachable" considers.
struct Requests {
    hosts: Vec<&'static str>,
    paths: Vec<&'static str>,
    methods: Vec<&'static str>,
    principals: Vec<&'static str>,
    extensions: Vec<HashMap<String, String>>,
}

fn requests() -> Requests {
    let extensions: [&[(&str, &str)]; 6] = [
        &[],
        &[("vh", "gerrit")],
        &[("vh", "builds")],
        &[("env", "prod")],
        &[("vh", "gerrit"), ("env", "prod")],
        &[("vh", "builds"), ("env", "prod")],
    ];
    Requests {
        hosts: vec![
            "gerrit.example.com",
            "a.example.com",
            "x.b.example.com",
            "y.b.example.com",
            "zz.example.com",
            "example.com",
            "zz.org",
            "localhost",
            "GERRIT.example.com:443",
        ],
        paths: vec![
            "", "*", "/", "/a", "/a/", "/a/b", "/a/bc", "/a/b/c", "/ab", "/abc", "/b/", "/b/x",
            "/a/x", "/x", "/a/./b",
        ],
        methods: vec!["GET", "POST", "HEAD", "PUT"],
        principals: vec![
            "",
            "spiffe://cluster.local/ns/ci/sa/runner",
            "spiffe://cluster.local/ns/ci/sa/other",
            "spiffe://cluster.local/ns/ci/sa/x",
            "spiffe://cluster.local/ns/cd/sa/x",
            "spiffe://other/sa/runner",
            "spiffe://other/sa/other",
            "spiffe://x",
        ],
        extensions: extensions
            .iter()
            .map(|ext| {
                ext.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect(),
    }
}

/// Which request parts each component of a route accepts, so brute force over every
/// combination is cheap; [`observe`] checks this against `RouteRule::matches`.
struct Accepts {
    hosts: Vec<bool>,
    paths: Vec<bool>,
    methods: Vec<bool>,
    principals: Vec<bool>,
    extensions: Vec<bool>,
}

impl Accepts {
    fn new(r: &RouteRule, q: &Requests) -> Self {
        Accepts {
            hosts: q.hosts.iter().map(|h| host_ok(&r.hosts, h)).collect(),
            paths: q.paths.iter().map(|p| r.path.matches(p)).collect(),
            methods: q.methods.iter().map(|m| r.methods.matches(m)).collect(),
            principals: q
                .principals
                .iter()
                .map(|p| principal_ok(&r.principals, p))
                .collect(),
            extensions: q
                .extensions
                .iter()
                .map(|m| {
                    r.context_extensions
                        .iter()
                        .all(|(k, v)| m.get(k) == Some(v))
                })
                .collect(),
        }
    }

    fn get(&self, [h, p, m, pr, x]: [usize; 5]) -> bool {
        self.hosts[h]
            && self.paths[p]
            && self.methods[m]
            && self.principals[pr]
            && self.extensions[x]
    }
}

/// What brute force over [`requests`] says about `later` after `earlier`.
struct Observed {
    /// Some request matches `later` and not `earlier`.
    later_escapes: bool,
    /// The same, with an ordinary path.
    later_escapes_ordinary: bool,
    /// Some request with an ordinary path matches `earlier` and not `later`.
    earlier_escapes_ordinary: bool,
    /// Some request with an ordinary path matches both.
    shared_ordinary: bool,
}

fn observe(q: &Requests, earlier: &RouteRule, later: &RouteRule) -> Observed {
    let (ea, la) = (Accepts::new(earlier, q), Accepts::new(later, q));
    let headers = HashMap::new();
    let mut o = Observed {
        later_escapes: false,
        later_escapes_ordinary: false,
        earlier_escapes_ordinary: false,
        shared_ordinary: false,
    };
    let mut n = 0usize;
    for h in 0..q.hosts.len() {
        for p in 0..q.paths.len() {
            let ordinary = is_ordinary(q.paths[p]);
            for m in 0..q.methods.len() {
                for pr in 0..q.principals.len() {
                    for x in 0..q.extensions.len() {
                        let at = [h, p, m, pr, x];
                        let (e, l) = (ea.get(at), la.get(at));
                        n += 1;
                        // Every so often, the real matcher must agree with the model.
                        if n.is_multiple_of(61) {
                            let view = RequestView {
                                method: q.methods[m],
                                host: q.hosts[h],
                                path: q.paths[p],
                                query: "",
                                headers: (&headers).into(),
                                principal: q.principals[pr],
                                context_extensions: (&q.extensions[x]).into(),
                            };
                            assert_eq!(earlier.matches(&view), e, "{view:?}");
                            assert_eq!(later.matches(&view), l, "{view:?}");
                        }
                        o.later_escapes |= l && !e;
                        o.later_escapes_ordinary |= l && !e && ordinary;
                        o.earlier_escapes_ordinary |= e && !l && ordinary;
                        o.shared_ordinary |= e && l && ordinary;
                    }
                }
            }
        }
    }
    o
}

#[test]
fn unreachable_is_never_claimed_when_some_request_reaches_the_later_route() {
    let q = requests();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut claimed = 0;
    for _ in 0..3000 {
        let (earlier, later) = random_pair(&mut rng, true);
        if covers(&earlier, &later) {
            claimed += 1;
            assert!(
                !observe(&q, &earlier, &later).later_escapes,
                "{:?} claimed unreachable after {:?}",
                later.name,
                earlier.name
            );
        }
    }
    assert!(
        claimed > 200,
        "too few unreachable pairs generated: {claimed}"
    );
}

#[test]
fn without_regexes_findings_agree_exactly_with_brute_force() {
    let q = requests();
    let mut rng = fastrand::Rng::with_seed(12);
    let (mut unreachable, mut shadowed) = (0, 0);
    for _ in 0..1500 {
        let (earlier, later) = random_pair(&mut rng, false);
        let pair = format!("{:?} then {:?}", earlier.name, later.name);
        let o = observe(&q, &earlier, &later);
        let found = findings(&RouteTable::new(vec![earlier, later]));
        let expected_unreachable = !o.later_escapes;
        let expected_shadowed = !expected_unreachable
            && o.shared_ordinary
            && o.later_escapes_ordinary
            && o.earlier_escapes_ordinary;
        assert_eq!(
            found
                .iter()
                .any(|f| matches!(f, Finding::Unreachable { .. })),
            expected_unreachable,
            "unreachable: {pair}"
        );
        assert_eq!(
            found.iter().any(|f| matches!(f, Finding::Shadowed { .. })),
            expected_shadowed,
            "shadowed: {pair}: {found:?}"
        );
        unreachable += usize::from(expected_unreachable);
        shadowed += usize::from(expected_shadowed);
    }
    assert!(
        unreachable > 100 && shadowed > 200,
        "too few cases generated: {unreachable} unreachable, {shadowed} shadowed"
    );
}

#[test]
fn shadowing_examples_match_the_later_route_and_are_decided_by_the_earlier() {
    let q = requests();
    let headers = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(13);
    let mut checked = 0;
    for _ in 0..400 {
        let t = RouteTable::new((0..4).map(|_| random_route(&mut rng, true)).collect());
        let routes = t.routes();
        for f in findings(&t) {
            match f {
                Finding::Shadowed {
                    earlier,
                    later,
                    example: shown,
                } => {
                    let ex = example(routes, earlier, later).unwrap();
                    assert_eq!(ex.to_string(), shown);
                    let map: HashMap<String, String> =
                        ex.context_extensions.iter().cloned().collect();
                    let view = RequestView {
                        method: &ex.method,
                        host: &ex.host,
                        path: &ex.path,
                        query: "",
                        headers: (&headers).into(),
                        principal: &ex.principal,
                        context_extensions: (&map).into(),
                    };
                    assert!(routes[later].matches(&view), "{shown}");
                    assert_eq!(
                        t.find(&view).map(|r| r.name.clone()),
                        Some(routes[earlier].name.clone()),
                        "{shown}"
                    );
                    assert!(is_ordinary(&ex.path), "{shown}");
                    checked += 1;
                }
                Finding::Unreachable { earlier, later } => assert!(
                    !observe(&q, &routes[earlier], &routes[later]).later_escapes,
                    "{:?} claimed unreachable after {:?}",
                    routes[later].name,
                    routes[earlier].name
                ),
                Finding::MidSegmentPrefix { .. } => {}
            }
        }
    }
    assert!(checked > 300, "too few shadowings generated: {checked}");
}

#[test]
fn the_shipped_configs_have_no_overlap_findings() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "manifests/base/config.yaml",
        "examples/quickstart/config.yaml",
    ] {
        let config = crate::config::load(&root.join(file)).unwrap();
        assert_eq!(findings(&config.routes), vec![], "{file}");
    }
}
