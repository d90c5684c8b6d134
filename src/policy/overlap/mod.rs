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
                        headers: (&headers).into(),
                        principal,
                        context_extensions: (&extension_map).into(),
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
mod tests;
