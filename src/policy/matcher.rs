//! Host, path, method and workload principal matchers.

use super::PolicyError;
use crate::request::routing_path;

/// Matches the request host, ignoring case and any `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatcher {
    /// The host equals this (lower-case) name.
    Exact(String),
    /// The host ends with this (lower-case) suffix, which starts with a dot, and has at
    /// least one character before it: `*.example.com` matches `a.example.com` but not
    /// `example.com`, like Envoy's virtual host wildcards.
    Suffix(String),
}

impl HostMatcher {
    /// Compiles `host` or `*.suffix`.
    pub fn parse(pattern: &str) -> Result<Self, PolicyError> {
        let invalid = || PolicyError::InvalidHost(pattern.to_string());
        let lower = pattern.to_ascii_lowercase();
        let (suffix, name) = match lower.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 => (true, rest),
            Some(_) => return Err(invalid()),
            None => (false, lower.as_str()),
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        let body = if suffix { &name[1..] } else { name };
        if !name_ok(body) || body.contains('*') {
            return Err(invalid());
        }
        Ok(if suffix {
            HostMatcher::Suffix(name.to_string())
        } else {
            HostMatcher::Exact(name.to_string())
        })
    }

    /// Whether `host` (as sent, maybe with a port, any case) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = strip_port(host);
        match self {
            HostMatcher::Exact(name) => host.eq_ignore_ascii_case(name),
            HostMatcher::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// `host:port` → `host`; IPv6 literals in brackets keep their brackets.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Longest accepted path regex, in characters.
pub const MAX_REGEX_LEN: usize = 1024;
/// Bound on a compiled path regex (the `regex` crate's `size_limit`), so one route cannot
/// cost unbounded memory or matching time; ample for path patterns.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// Matches the request path (query string already removed, decoded once by
/// [`crate::request::routing_path`]).
#[derive(Debug, Clone)]
pub enum PathMatcher {
    /// Every path.
    Any,
    /// This path and those below it, by whole segments; stored without a trailing `/`.
    /// As in `Prefix`, a `/` in it also matches `%2F`.
    SegmentPrefix(String),
    /// Paths starting with this string (case-sensitive, like Envoy's `prefix`); a `/` in
    /// it also matches `%2F`.
    Prefix(String),
    /// Only this path.
    Exact(String),
    /// Paths the whole of which match this regular expression (like Envoy's
    /// `safe_regex`: a full match, not a search).
    Regex(Box<regex::Regex>),
}

impl PartialEq for PathMatcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathMatcher::Any, PathMatcher::Any) => true,
            (PathMatcher::SegmentPrefix(a), PathMatcher::SegmentPrefix(b))
            | (PathMatcher::Prefix(a), PathMatcher::Prefix(b))
            | (PathMatcher::Exact(a), PathMatcher::Exact(b)) => a == b,
            (PathMatcher::Regex(a), PathMatcher::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for PathMatcher {}

impl PathMatcher {
    /// Compiles a segment prefix: `/a/b` (or `/a/b/`) matches `/a/b`, `/a/b/...` and
    /// `/a/b%2F...` (Gerrit's REST API writes project `b/c` as `b%2Fc`).
    pub fn segment_prefix(prefix: &str) -> Result<Self, PolicyError> {
        check_path(prefix).map(|p| PathMatcher::SegmentPrefix(p.trim_end_matches('/').into()))
    }

    /// Compiles a prefix matcher.
    pub fn prefix(prefix: &str) -> Result<Self, PolicyError> {
        check_path(prefix).map(PathMatcher::Prefix)
    }

    /// Compiles an exact matcher.
    pub fn exact(path: &str) -> Result<Self, PolicyError> {
        check_path(path).map(PathMatcher::Exact)
    }

    /// Compiles a full-match regular expression (RE2 syntax, no look-around or
    /// back-references, so matching is linear in the path length), bounded in size.
    pub fn regex(pattern: &str) -> Result<Self, PolicyError> {
        let invalid = |reason: String| PolicyError::InvalidRegex {
            pattern: pattern.to_string(),
            reason,
        };
        if pattern.chars().count() > MAX_REGEX_LEN {
            return Err(invalid(format!("longer than {MAX_REGEX_LEN} characters")));
        }
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(|re| PathMatcher::Regex(Box::new(re)))
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => {
                    invalid(format!("compiles to more than {REGEX_SIZE_LIMIT} bytes"))
                }
                // The last line says what is wrong; the lines above quote the anchored
                // pattern, whose caret would point at the wrong column.
                e => invalid(
                    e.to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim_start_matches("error: ")
                        .to_string(),
                ),
            })
    }

    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Any => true,
            PathMatcher::SegmentPrefix(prefix) => {
                strip_prefix_segments(path, prefix).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || rest.starts_with("%2F")
                })
            }
            PathMatcher::Prefix(prefix) => strip_prefix_segments(path, prefix).is_some(),
            PathMatcher::Exact(exact) => path == exact,
            PathMatcher::Regex(re) => re.is_match(path),
        }
    }
}

/// Matches the calling workload's identity, Envoy's `source.principal` (under Istio mTLS
/// the SPIFFE id `spiffe://cluster.local/ns/<ns>/sa/<service account>`). Patterns are
/// written like Istio's `principals`, with or without `spiffe://`: exact, `prefix*`,
/// `*suffix`, or `*` (any workload with an identity). No identity (plain text, no mTLS)
/// matches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalMatcher {
    /// Exactly this identity.
    Exact(String),
    /// Identities starting with this.
    Prefix(String),
    /// Identities ending with this.
    Suffix(String),
    /// Any identity.
    Any,
}

impl PrincipalMatcher {
    /// Compiles an Istio-style principal pattern.
    pub fn parse(pattern: &str) -> Result<Self, PolicyError> {
        let invalid = || PolicyError::InvalidPrincipal(pattern.to_string());
        let p = pattern.strip_prefix("spiffe://").unwrap_or(pattern);
        if p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let matcher = match (p.strip_suffix('*'), p.strip_prefix('*')) {
            _ if p == "*" => PrincipalMatcher::Any,
            (Some(prefix), None) if !prefix.contains('*') => {
                PrincipalMatcher::Prefix(prefix.into())
            }
            (None, Some(suffix)) if !suffix.contains('*') => {
                PrincipalMatcher::Suffix(suffix.into())
            }
            (None, None) if !p.contains('*') => PrincipalMatcher::Exact(p.into()),
            _ => return Err(invalid()),
        };
        Ok(matcher)
    }

    /// Whether the request's principal (as Envoy sends it, maybe with `spiffe://`)
    /// matches.
    pub fn matches(&self, principal: &str) -> bool {
        let p = principal.strip_prefix("spiffe://").unwrap_or(principal);
        if p.is_empty() {
            return false;
        }
        match self {
            PrincipalMatcher::Exact(e) => p == e,
            PrincipalMatcher::Prefix(prefix) => p.starts_with(prefix.as_str()),
            PrincipalMatcher::Suffix(suffix) => p.ends_with(suffix.as_str()),
            PrincipalMatcher::Any => true,
        }
    }
}

/// The rest of `path` after `prefix`, where a `/` of the prefix also matches `%2F` (the
/// routing form's only spelling of it); `None` if `path` does not start with it. Gerrit's
/// REST API reads `team-b%2Fsub` as the project `team-b/sub`, and a servlet container
/// that accepts `%2F` decodes it before routing (`/a%2Fteam-a/info/refs` is team-a's
/// repository to the git servlet): either way it is a `/` to the upstream.
fn strip_prefix_segments<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let mut rest = path.as_bytes();
    for &p in prefix.as_bytes() {
        rest = match rest {
            [b, tail @ ..] if *b == p => tail,
            [b'%', b'2', b'F', tail @ ..] if p == b'/' => tail,
            _ => return None,
        };
    }
    // Only ASCII was consumed, so the rest starts at a character boundary.
    path.get(path.len() - rest.len()..)
}

/// A route path in the form requests are matched in ([`routing_path`]): `%2d` becomes
/// `-` and `%2f` becomes `%2F`, so either spelling in the config means the same.
fn check_path(path: &str) -> Result<String, PolicyError> {
    let invalid = || PolicyError::InvalidPath(path.to_string());
    if !path.starts_with('/') || path.contains(['?', '#']) {
        return Err(invalid());
    }
    // A trailing `/` is checked as part of the path, and `prefix: /a/` is no empty segment.
    routing_path(path)
        .map(|p| p.into_owned())
        .map_err(|e| PolicyError::UnsafePath(path.to_string(), e))
}

/// A set of HTTP methods; empty means any method.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodSet(Vec<String>);

impl MethodSet {
    /// Compiles a list of method names (stored upper-case).
    pub fn new<S: AsRef<str>>(methods: &[S]) -> Result<Self, PolicyError> {
        let mut out = Vec::with_capacity(methods.len());
        for m in methods {
            let m = m.as_ref();
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(PolicyError::InvalidMethod(m.to_string()));
            }
            out.push(m.to_ascii_uppercase());
        }
        Ok(MethodSet(out))
    }

    /// Whether `method` is in the set (HTTP methods are case-sensitive; Envoy sends them
    /// as the client did, normally upper-case).
    pub fn matches(&self, method: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|m| m == method)
    }

    /// The methods, empty for "any".
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_slash_also_matches_gerrits_encoded_slash() {
        // Gerrit reads `team-b%2Fsub` as the project team-b/sub: below `team-b/`.
        let p = PathMatcher::prefix("/a/projects/team-b/").unwrap();
        for path in [
            "/a/projects/team-b/x",
            "/a/projects/team-b%2Fsub",
            "/a/projects/team-b%2Fsub/branches",
        ] {
            assert!(p.matches(path), "{path}");
        }
        for path in [
            "/a/projects/team-b",
            "/a/projects/team-bc/x",
            "/a/projects/team-b%2",
        ] {
            assert!(!p.matches(path), "{path}");
        }
        let inner = PathMatcher::prefix("/a/projects/team-b/sub/").unwrap();
        assert!(inner.matches("/a/projects/team-b%2Fsub%2Fx"));
        // The git servlet gets `/a%2Fteam-a/info/refs` decoded: team-a's repository.
        let git = PathMatcher::segment_prefix("/a/team-a").unwrap();
        assert!(git.matches("/a%2Fteam-a/info/refs"));
        assert!(git.matches("/a%2Fteam-a%2Fsub"));
        assert!(!git.matches("/a%2Fteam-abc"));
    }

    #[test]
    fn exact_host_ignores_case_and_port() {
        let m = HostMatcher::parse("Gerrit.Example.com").unwrap();
        assert!(m.matches("gerrit.example.com"));
        assert!(m.matches("GERRIT.example.com:443"));
        assert!(!m.matches("gerrit.example.com.evil.io"));
        assert!(!m.matches("xgerrit.example.com"));
    }

    #[test]
    fn wildcard_host_needs_a_label_before_the_suffix() {
        let m = HostMatcher::parse("*.example.com").unwrap();
        assert!(m.matches("a.example.com"));
        assert!(m.matches("a.b.example.com:8080"));
        assert!(!m.matches("example.com"));
        assert!(!m.matches(".example.com"));
        assert!(!m.matches("example.com.evil.io"));
        assert!(!m.matches("evilexample.com"));
    }

    #[test]
    fn bad_host_patterns_are_rejected() {
        for p in [
            "",
            "*",
            "*.",
            "a.*.com",
            "*example.com",
            "exa mple.com",
            "a/b",
        ] {
            assert!(HostMatcher::parse(p).is_err(), "{p:?} should be rejected");
        }
    }

    #[test]
    fn ipv6_host_port_is_stripped_only_after_the_bracket() {
        let m = HostMatcher::parse("gerrit").unwrap();
        assert!(!m.matches("[::1]:80"));
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn path_prefix_and_exact() {
        let p = PathMatcher::prefix("/a/").unwrap();
        assert!(p.matches("/a/changes/"));
        assert!(!p.matches("/b/a/"));
        let e = PathMatcher::exact("/login").unwrap();
        assert!(e.matches("/login"));
        assert!(!e.matches("/login/"));
        assert!(PathMatcher::prefix("a/").is_err());
        assert!(PathMatcher::exact("/x?y").is_err());
    }

    #[test]
    fn path_regex_is_a_full_match() {
        let r = PathMatcher::regex("/a/changes/[^/]+/revisions/[^/]+/review").unwrap();
        assert!(r.matches("/a/changes/team-a%2Fsvc~42/revisions/current/review"));
        assert!(!r.matches("/a/changes/42/revisions/1/review/extra"));
        assert!(!r.matches("/x/a/changes/42/revisions/1/review"));
        assert!(!r.matches("/a/changes/42/revisions//review"));
        // Alternation is grouped, so it cannot escape the anchors.
        let alt = PathMatcher::regex("/a|/b").unwrap();
        assert!(alt.matches("/a") && alt.matches("/b"));
        assert!(!alt.matches("/a/x") && !alt.matches("/x/b"));
    }

    #[test]
    fn path_regexes_are_bounded_and_errors_say_why() {
        let too_long = "a".repeat(MAX_REGEX_LEN + 1);
        let e = PathMatcher::regex(&too_long).unwrap_err().to_string();
        assert!(e.contains("longer than 1024 characters"), "{e}");
        // Small to write, huge to compile: 20 nested bounded repeats.
        let e = PathMatcher::regex("(((((a{100}){100}){100})))")
            .unwrap_err()
            .to_string();
        assert!(e.contains("compiles to more than 65536 bytes"), "{e}");
        let e = PathMatcher::regex("/a/(unclosed").unwrap_err().to_string();
        assert!(e.contains("unclosed group"), "{e}");
        assert!(
            PathMatcher::regex("(?=look)ahead").is_err(),
            "no look-around"
        );
    }

    #[test]
    fn principals_match_like_istio_with_or_without_the_scheme() {
        let runner = "spiffe://cluster.local/ns/ci/sa/runner";
        for (pattern, yes, no) in [
            (
                "cluster.local/ns/ci/sa/runner",
                runner,
                "spiffe://cluster.local/ns/ci/sa/runner2",
            ),
            (
                "spiffe://cluster.local/ns/ci/sa/runner",
                runner,
                "spiffe://cluster.local/ns/cd/sa/runner",
            ),
            (
                "cluster.local/ns/ci/*",
                runner,
                "spiffe://cluster.local/ns/cid/sa/x",
            ),
            (
                "*/sa/runner",
                runner,
                "spiffe://cluster.local/ns/ci/sa/other",
            ),
            ("*", runner, ""),
        ] {
            let m = PrincipalMatcher::parse(pattern).unwrap();
            assert!(m.matches(yes), "{pattern} vs {yes}");
            assert!(!m.matches(no), "{pattern} vs {no}");
        }
        assert!(!PrincipalMatcher::parse("*").unwrap().matches("spiffe://"));
        for bad in ["", "a*b", "*a*", "**", "spiffe://", "a b"] {
            assert!(PrincipalMatcher::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn methods_are_upper_cased_and_empty_means_any() {
        let m = MethodSet::new(&["get", "HEAD"]).unwrap();
        assert!(m.matches("GET"));
        assert!(m.matches("HEAD"));
        assert!(!m.matches("POST"));
        assert!(MethodSet::default().matches("DELETE"));
        assert!(MethodSet::new(&["GE T"]).is_err());
    }
}
