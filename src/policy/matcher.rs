//! Host, path and method matchers.

use super::PolicyError;

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

/// Matches the request path (query string already removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatcher {
    /// Every path.
    Any,
    /// Paths starting with this string (case-sensitive, like Envoy's `prefix`).
    Prefix(String),
    /// Only this path.
    Exact(String),
}

impl PathMatcher {
    /// Compiles a prefix matcher.
    pub fn prefix(prefix: &str) -> Result<Self, PolicyError> {
        check_path(prefix).map(|p| PathMatcher::Prefix(p.to_string()))
    }

    /// Compiles an exact matcher.
    pub fn exact(path: &str) -> Result<Self, PolicyError> {
        check_path(path).map(|p| PathMatcher::Exact(p.to_string()))
    }

    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Any => true,
            PathMatcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathMatcher::Exact(exact) => path == exact,
        }
    }
}

fn check_path(path: &str) -> Result<&str, PolicyError> {
    if path.starts_with('/') && !path.contains(['?', '#']) {
        Ok(path)
    } else {
        Err(PolicyError::InvalidPath(path.to_string()))
    }
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
    fn methods_are_upper_cased_and_empty_means_any() {
        let m = MethodSet::new(&["get", "HEAD"]).unwrap();
        assert!(m.matches("GET"));
        assert!(m.matches("HEAD"));
        assert!(!m.matches("POST"));
        assert!(MethodSet::default().matches("DELETE"));
        assert!(MethodSet::new(&["GE T"]).is_err());
    }
}
