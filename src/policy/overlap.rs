//! How routes overlap: the first matching route decides, so a route can be unreachable
//! (an earlier route matches everything it does) or partly shadowed (an earlier route
//! that is not simply more specific takes some of its requests).
//!
//! A route matches the product of its components: hosts, path, methods, principals and
//! context extensions. So `later ⊆ earlier` holds when it holds for every component, and
//! `later ⊄ earlier` holds when it fails for one component and `later` matches anything
//! at all. Each component question is answered only where it can be decided:
//!
//! - "unreachable" is claimed only on a proof that every component is contained;
//! - "shadowed" is claimed only when non-containment is shown both ways and a concrete
//!   request, checked with the real matchers against the whole table, matches the later
//!   route and is decided by the earlier one. That request is the finding's example.
//!
//! Path regexes are where it stops being decidable here: two regexes are related only
//! when they are the same pattern, an exact path is tested against a regex, and anything
//! else involving a regex is unknown unless a sample path settles it.

use super::{HostMatcher, MethodSet, PathMatcher, PrincipalMatcher, RouteRule, RouteTable};
use crate::request::{routing_path, RequestView};
use regex_syntax::hir::{Class, Hir, HirKind, Literal};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// What `validate` says about how routes overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Every request route `later` matches is matched by `earlier` first: `later` never
    /// decides.
    Unreachable {
        /// Index of the route that matches first.
        earlier: usize,
        /// Index of the route that never decides.
        later: usize,
    },
    /// Some requests `later` matches are taken by `earlier` (which is not simply more
    /// specific); `example` describes one such request, e.g. "GET gerrit.example.com/a/x".
    Shadowed {
        /// Index of the route that takes the requests.
        earlier: usize,
        /// Index of the route that loses them.
        later: usize,
        /// One request `later` matches that `earlier` decides, as `METHOD hostPATH`, with
        /// ` from PRINCIPAL` and ` with context extensions k=v, ...` when the routes need
        /// them.
        example: String,
    },
    /// A `prefix` that ends inside a segment: `/a/projects/team-a` also matches
    /// `/a/projects/team-abc`, which is rarely meant.
    MidSegmentPrefix {
        /// Index of the route.
        route: usize,
        /// The prefix as written.
        prefix: String,
    },
}

/// Every unreachable route (once, against the first earlier route that covers it) and
/// every shadowing of a reachable route, ordered by the later route, then the earlier.
pub fn findings(routes: &RouteTable) -> Vec<Finding> {
    let routes = routes.routes();
    let mut out = Vec::new();
    for (later, l) in routes.iter().enumerate() {
        if let PathMatcher::Prefix(prefix) = &l.path {
            if !prefix.ends_with('/') {
                out.push(Finding::MidSegmentPrefix {
                    route: later,
                    prefix: prefix.clone(),
                });
            }
        }
        if let Some(earlier) = routes[..later].iter().position(|e| covers(e, l)) {
            out.push(Finding::Unreachable { earlier, later });
            // A route that never decides has nothing left to lose: no warnings about it.
            continue;
        }
        for (earlier, e) in routes[..later].iter().enumerate() {
            if !(escapes(l, e) && escapes(e, l)) {
                continue;
            }
            if let Some(example) = example(routes, earlier, later) {
                out.push(Finding::Shadowed {
                    earlier,
                    later,
                    example: example.to_string(),
                });
            }
        }
    }
    out
}

/// Whether every request `inner` matches is matched by `outer`: proven, never guessed.
/// Paths range over everything Envoy may send, `*` and the empty path included.
fn covers(outer: &RouteRule, inner: &RouteRule) -> bool {
    hosts_within(&inner.hosts, &outer.hosts)
        && path_within(&inner.path, &outer.path)
        && methods_within(&inner.methods, &outer.methods)
        && principals_within(&inner.principals, &outer.principals)
        && extensions_within(&inner.context_extensions, &outer.context_extensions)
}

/// Whether one component shows that some ordinary request `inner` matches is not matched
/// by `outer`, provided both match any ordinary request at all (the caller checks that
/// with an example). Only paths are ever undecided; for them a sample path is needed.
fn escapes(inner: &RouteRule, outer: &RouteRule) -> bool {
    !hosts_within(&inner.hosts, &outer.hosts)
        || path_escapes(&inner.path, &outer.path)
        || !methods_within(&inner.methods, &outer.methods)
        || !principals_within(&inner.principals, &outer.principals)
        || !extensions_within(&inner.context_extensions, &outer.context_extensions)
}

/// Host lists, empty meaning any host; exact (decidable in every case).
fn hosts_within(inner: &[HostMatcher], outer: &[HostMatcher]) -> bool {
    if outer.is_empty() {
        return true;
    }
    // "Any host" is never within a list: a host without a dot that no exact entry names
    // (such as `localhost`) escapes every list of exact names and `*.suffix` patterns.
    !inner.is_empty() && inner.iter().all(|h| host_within(h, outer))
}

fn host_within(host: &HostMatcher, outer: &[HostMatcher]) -> bool {
    match host {
        HostMatcher::Exact(name) => outer.iter().any(|o| o.matches(name)),
        // `label + suffix` for a label not named by any exact entry is in the pattern; it
        // is matched by `*.t` exactly when the suffix ends with `t`. Exact names alone
        // never cover the infinitely many hosts of a wildcard.
        HostMatcher::Suffix(suffix) => outer
            .iter()
            .any(|o| matches!(o, HostMatcher::Suffix(other) if suffix.ends_with(other.as_str()))),
    }
}

/// Path matchers over every path: only what can be proven.
fn path_within(inner: &PathMatcher, outer: &PathMatcher) -> bool {
    use PathMatcher::{Any, Exact, Prefix, Regex, SegmentPrefix};
    let below = |a: &str, b: &str| {
        a == b || a.starts_with(&format!("{b}/")) || a.starts_with(&format!("{b}%2F"))
    };
    match (inner, outer) {
        (_, Any) => true,
        (SegmentPrefix(a) | Exact(a), SegmentPrefix(b)) => below(a, b),
        // Every path of `prefix: /a/b/` is below `/a`; `prefix: /a` also matches `/ab`.
        (Prefix(a), SegmentPrefix(b)) => {
            a.starts_with(&format!("{b}/")) || a.starts_with(&format!("{b}%2F"))
        }
        (SegmentPrefix(a), Prefix(b)) => a.starts_with(b.as_str()),
        (Prefix(a) | Exact(a), Prefix(b)) => a.starts_with(b.as_str()),
        (Exact(a), Exact(b)) => a == b,
        (Exact(a), Regex(re)) => re.is_match(a),
        // Different patterns may well describe the same paths; that is not decided here.
        (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
        _ => false,
    }
}

/// Whether a sample ordinary path of `inner` is not matched by `outer`. For prefix,
/// exact and any the samples always settle it; for regexes they may not (then false).
fn path_escapes(inner: &PathMatcher, outer: &PathMatcher) -> bool {
    path_samples(inner).iter().any(|p| !outer.matches(p))
}

/// Method sets, empty meaning any method; exact.
fn methods_within(inner: &MethodSet, outer: &MethodSet) -> bool {
    let (inner, outer) = (inner.as_slice(), outer.as_slice());
    outer.is_empty() || (!inner.is_empty() && inner.iter().all(|m| outer.contains(m)))
}

/// Principal lists, empty meaning any caller, including one without an identity; exact.
fn principals_within(inner: &[PrincipalMatcher], outer: &[PrincipalMatcher]) -> bool {
    if outer.is_empty() {
        return true;
    }
    // A caller without an identity matches only an empty list.
    !inner.is_empty() && inner.iter().all(|p| principal_within(p, outer))
}

fn principal_within(p: &PrincipalMatcher, outer: &[PrincipalMatcher]) -> bool {
    use PrincipalMatcher::{Any, Exact, Prefix, Suffix};
    outer.iter().any(|o| match (p, o) {
        (_, Any) => true,
        (Exact(id), o) => o.matches(&format!("spiffe://{id}")),
        (Prefix(a), Prefix(b)) => a.starts_with(b.as_str()),
        (Suffix(a), Suffix(b)) => a.ends_with(b.as_str()),
        // Otherwise `a + z` (or `z + a`, or any identity for `*`) escapes, with `z`'s
        // first and last characters chosen unlike every other pattern's: finitely many
        // exact names, prefixes and suffixes cannot cover an infinite pattern together
        // unless one of them covers it alone.
        _ => false,
    })
}

/// Required context extensions: `inner` requires at least what `outer` does. Exact for
/// the key-unique lists the config produces (a list naming one key twice with different
/// values matches nothing and is never found to intersect anything).
fn extensions_within(inner: &[(String, String)], outer: &[(String, String)]) -> bool {
    outer.iter().all(|pair| inner.contains(pair))
}

/// A concrete request shared by two routes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Example {
    method: String,
    host: String,
    path: String,
    /// As Envoy sends it (`spiffe://...`), empty for a caller without an identity.
    principal: String,
    context_extensions: Vec<(String, String)>,
}

impl fmt::Display for Example {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}{}", self.method, self.host, self.path)?;
        if !self.principal.is_empty() {
            write!(f, " from {}", self.principal)?;
        }
        for (i, (k, v)) in self.context_extensions.iter().enumerate() {
            let lead = if i == 0 {
                " with context extensions "
            } else {
                ", "
            };
            write!(f, "{lead}{k}={v}")?;
        }
        Ok(())
    }
}

/// Bound on the requests tried for one example, so a route with long lists cannot make
/// `validate` slow; an example not found in time means no warning.
const MAX_EXAMPLES_TRIED: usize = 4096;

/// A request that route `later` matches and the table gives to route `earlier`.
fn example(routes: &[Arc<RouteRule>], earlier: usize, later: usize) -> Option<Example> {
    let (e, l) = (&routes[earlier], &routes[later]);
    let mut context_extensions = l.context_extensions.clone();
    for (k, v) in &e.context_extensions {
        match context_extensions.iter().find(|(key, _)| key == k) {
            Some((_, value)) if value != v => return None,
            Some(_) => {}
            None => context_extensions.push((k.clone(), v.clone())),
        }
    }
    context_extensions.sort();
    let extension_map: HashMap<String, String> = context_extensions.iter().cloned().collect();
    // Each component's candidates include a member of every non-empty intersection of
    // its patterns (regexes aside), so keeping those both routes match decides, component
    // by component, whether the routes intersect, before any request is tried.
    let hosts = shared(
        [host_samples(&l.hosts), host_samples(&e.hosts)].concat(),
        |h| host_ok(&l.hosts, h) && host_ok(&e.hosts, h),
    );
    let paths = shared(
        [path_samples(&l.path), path_samples(&e.path)].concat(),
        |p| l.path.matches(p) && e.path.matches(p),
    );
    let methods = shared(
        [method_samples(&l.methods), method_samples(&e.methods)].concat(),
        |m| l.methods.matches(m) && e.methods.matches(m),
    );
    let principals = shared(principal_samples(&l.principals, &e.principals), |p| {
        principal_ok(&l.principals, p) && principal_ok(&e.principals, p)
    });
    let headers = HashMap::new();
    let mut tried = 0;
    for host in &hosts {
        for path in &paths {
            for method in &methods {
                for principal in &principals {
                    tried += 1;
                    if tried > MAX_EXAMPLES_TRIED {
                        return None;
                    }
                    let req = RequestView {
                        method,
                        host,
                        path,
                        query: "",
                        headers: &headers,
                        principal,
                        context_extensions: &extension_map,
                    };
                    // The real matchers have the last word: the example is true by
                    // construction, whatever the sampling above got wrong.
                    if l.matches(&req)
                        && routes.iter().position(|r| r.matches(&req)) == Some(earlier)
                    {
                        return Some(Example {
                            method: method.clone(),
                            host: host.clone(),
                            path: path.clone(),
                            principal: principal.clone(),
                            context_extensions,
                        });
                    }
                }
            }
        }
    }
    None
}

/// The candidates `keep` accepts, each once, in order.
fn shared(mut candidates: Vec<String>, keep: impl Fn(&str) -> bool) -> Vec<String> {
    candidates.retain(|c| keep(c));
    dedup_keep_order(&mut candidates);
    candidates
}

fn dedup_keep_order(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|x| seen.insert(x.clone()));
}

fn host_ok(hosts: &[HostMatcher], host: &str) -> bool {
    hosts.is_empty() || hosts.iter().any(|h| h.matches(host))
}

fn principal_ok(principals: &[PrincipalMatcher], principal: &str) -> bool {
    principals.is_empty() || principals.iter().any(|p| p.matches(principal))
}

/// A host for each pattern; hosts for "any host".
fn host_samples(hosts: &[HostMatcher]) -> Vec<String> {
    if hosts.is_empty() {
        return vec!["example.com".into(), "www.example.org".into()];
    }
    hosts
        .iter()
        .map(|h| match h {
            HostMatcher::Exact(name) => name.clone(),
            HostMatcher::Suffix(suffix) => format!("a{suffix}"),
        })
        .collect()
}

/// Ordinary paths the matcher matches, the shortest first. A prefix gives longer ones
/// too: `/a` also stands for `/ax`, which another route's exact `/a` does not match.
fn path_samples(path: &PathMatcher) -> Vec<String> {
    let mut out = match path {
        PathMatcher::Any => vec!["/".into(), "/x".into()],
        // Deeper too: `prefix: /a/` escapes `regex: /a/[^/]*` only below a segment.
        PathMatcher::Prefix(p) => vec![
            p.clone(),
            format!("{p}x"),
            format!("{p}y"),
            format!("{p}x/x"),
        ],
        PathMatcher::SegmentPrefix(p) => vec![
            if p.is_empty() { "/".into() } else { p.clone() },
            format!("{p}/x"),
            format!("{p}/y"),
            format!("{p}/x/x"),
        ],
        PathMatcher::Exact(p) => vec![p.clone()],
        PathMatcher::Regex(re) => regex_samples(re),
    };
    out.retain(|p| path.matches(p) && is_ordinary(p));
    out
}

/// A path operators write routes for and `check` can be given as is: starting with `/`,
/// no query or fragment, no escapes, nothing refused before matching, nothing unprintable.
fn is_ordinary(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains(['?', '#'])
        // Nothing encoded, nothing refused: matched as written.
        && matches!(routing_path(path), Ok(Cow::Borrowed(_)))
        && !path.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The listed methods; common ones for "any method".
fn method_samples(methods: &MethodSet) -> Vec<String> {
    if methods.as_slice().is_empty() {
        ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
            .map(String::from)
            .to_vec()
    } else {
        methods.as_slice().to_vec()
    }
}

/// Principals as Envoy sends them: none, a member of each pattern, and `prefix + suffix`
/// for every prefix and suffix pattern (the only members both share).
fn principal_samples(a: &[PrincipalMatcher], b: &[PrincipalMatcher]) -> Vec<String> {
    let all: Vec<&PrincipalMatcher> = a.iter().chain(b).collect();
    let mut ids: Vec<String> = all
        .iter()
        .map(|p| match p {
            PrincipalMatcher::Exact(id) => id.clone(),
            PrincipalMatcher::Prefix(prefix) => format!("{prefix}x"),
            PrincipalMatcher::Suffix(suffix) => format!("x{suffix}"),
            PrincipalMatcher::Any => "cluster.local/ns/default/sa/default".into(),
        })
        .collect();
    for p in &all {
        for s in &all {
            if let (PrincipalMatcher::Prefix(prefix), PrincipalMatcher::Suffix(suffix)) = (p, s) {
                ids.push(join_overlapping(prefix, suffix));
                ids.push(format!("{prefix}{suffix}"));
            }
        }
    }
    std::iter::once(String::new())
        .chain(ids.into_iter().map(|id| format!("spiffe://{id}")))
        .collect()
}

/// `prefix + suffix` sharing their longest overlap, so `cluster.local/ns/ci/` and
/// `/sa/runner` give the identity one would write, `cluster.local/ns/ci/sa/runner`.
fn join_overlapping(prefix: &str, suffix: &str) -> String {
    let overlap = (1..=prefix.len().min(suffix.len()))
        .rev()
        .find(|&k| suffix.is_char_boundary(k) && prefix.ends_with(&suffix[..k]))
        .unwrap_or(0);
    format!("{prefix}{}", &suffix[overlap..])
}

/// Samples drawn from one regex, at most.
const REGEX_SAMPLES: usize = 16;
/// Longest sample drawn from a regex: a witness must stay readable (and `{1000}` cheap).
const MAX_SAMPLE_LEN: usize = 256;

/// Some strings the regex matches, found by walking its syntax tree (shortest choices
/// first) and kept only if the regex really matches them; look-arounds such as `\b` are
/// taken as empty, so a sample may fail that test and be dropped. Often empty for
/// unusual patterns, which only makes the analysis say less.
fn regex_samples(re: &regex::Regex) -> Vec<String> {
    // The same syntax and flags `PathMatcher::regex` compiled (the crate's defaults).
    let Ok(hir) = regex_syntax::ParserBuilder::new()
        .build()
        .parse(re.as_str())
    else {
        return Vec::new();
    };
    let mut out = samples(&hir);
    out.retain(|s| re.is_match(s));
    dedup_keep_order(&mut out);
    out
}

fn samples(hir: &Hir) -> Vec<String> {
    let mut out = match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => vec![String::new()],
        HirKind::Literal(Literal(bytes)) => std::str::from_utf8(bytes)
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
        HirKind::Class(class) => class_samples(class).into_iter().map(String::from).collect(),
        HirKind::Repetition(rep) => {
            let subs = samples(&rep.sub);
            let mut out = Vec::new();
            // The fewest repetitions, and one more where allowed: `[^/]+` gives `x` and
            // `xx`, `.*` gives `` and `x`.
            for n in [rep.min, rep.min.saturating_add(1)] {
                if rep.max.is_some_and(|max| n > max) {
                    continue;
                }
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                for s in &subs {
                    if s.len().saturating_mul(n) <= MAX_SAMPLE_LEN {
                        out.push(s.repeat(n));
                    }
                }
            }
            out
        }
        HirKind::Capture(capture) => samples(&capture.sub),
        HirKind::Concat(parts) => parts.iter().fold(vec![String::new()], |acc, part| {
            let next = samples(part);
            acc.iter()
                .flat_map(|a| next.iter().map(move |b| format!("{a}{b}")))
                .filter(|s| s.len() <= MAX_SAMPLE_LEN)
                .take(REGEX_SAMPLES)
                .collect()
        }),
        HirKind::Alternation(alternatives) => alternatives.iter().flat_map(samples).collect(),
    };
    out.retain(|s| s.len() <= MAX_SAMPLE_LEN);
    out.truncate(REGEX_SAMPLES);
    out
}

/// Up to two characters of a class, readable ones preferred (`[^/]` gives `x`, not NUL).
fn class_samples(class: &Class) -> Vec<char> {
    let ranges: Vec<(char, char)> = match class {
        Class::Unicode(c) => c.ranges().iter().map(|r| (r.start(), r.end())).collect(),
        // Paths are text: only the ASCII part of a byte class can be written down.
        Class::Bytes(c) => c
            .ranges()
            .iter()
            .filter(|r| r.start().is_ascii())
            .map(|r| (char::from(r.start()), char::from(r.end().min(0x7f))))
            .collect(),
    };
    let contains = |c: char| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
    let readable = |c: &char| !c.is_control() && !c.is_whitespace();
    let mut out: Vec<char> = "xa0-_".chars().filter(|&c| contains(c)).take(2).collect();
    if out.is_empty() {
        // `(?i)b` is `[Bb]`: write it the way paths usually are.
        out = ('a'..='z').filter(|&c| contains(c)).take(2).collect();
    }
    if out.is_empty() {
        // The first readable character of each range, looking a little way in.
        out = ranges
            .iter()
            .filter_map(|&(lo, hi)| (lo..=hi).take(256).find(readable))
            .take(2)
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::TokenSource;
    use crate::policy::{IdentityHeaders, Requirement};

    /// A route from a compact spec: space-separated `host:H`, `prefix:P`, `exact:P`,
    /// `regex:R`, `method:M`, `principal:P`, `ext:K=V` (each but the path repeatable);
    /// what is not given matches anything.
    fn route(spec: &str) -> RouteRule {
        let mut r = RouteRule {
            name: spec.into(),
            hosts: vec![],
            path: PathMatcher::Any,
            methods: MethodSet::default(),
            principals: vec![],
            context_extensions: vec![],
            requirement: Requirement::Public,
            dry_run: false,
            dynamic_metadata: false,
            token_sources: vec![TokenSource::Bearer],
            inject: IdentityHeaders::default(),
            remove_headers: vec![],
            kube: None,
            foreign_identity_headers: vec![],
            issuers: vec![],
            audiences: vec![],
        };
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
                                    headers: &headers,
                                    principal: q.principals[pr],
                                    context_extensions: &q.extensions[x],
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
                            headers: &headers,
                            principal: &ex.principal,
                            context_extensions: &map,
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
}
