//! The HTTP request as the decision logic sees it, independent of Envoy's types (the
//! `ext_authz` edge builds it from a CheckRequest).

pub mod cookie;
mod path;

pub use path::{routing_path, PathError};

use std::collections::HashMap;

/// Name/value pairs of the request: its headers, Envoy's context extensions. Borrowed
/// either from a map or from the pairs as the CheckRequest carried them.
#[derive(Clone, Copy)]
pub enum Pairs<'a> {
    /// A map (the `check` CLI, tests, raw header maps joined by the edge).
    Map(&'a HashMap<String, String>),
    /// In message order, read in place. As in a protobuf map, a later pair replaces an
    /// earlier one with the same name.
    List(&'a [(&'a str, &'a str)]),
}

impl<'a> Pairs<'a> {
    /// None at all.
    pub const EMPTY: Pairs<'static> = Pairs::List(&[]);

    /// The value for `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        match *self {
            Pairs::Map(map) => map.get(name).map(String::as_str),
            // From the end: the last pair with this name is the one in force.
            Pairs::List(list) => list.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v),
        }
    }

    /// Every name; in a `List`, a name sent twice comes twice.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (map, list) = match *self {
            Pairs::Map(map) => (Some(map), None),
            Pairs::List(list) => (None, Some(list)),
        };
        let from_map = map.into_iter().flat_map(|m| m.keys().map(String::as_str));
        from_map.chain(list.into_iter().flat_map(|l| l.iter().map(|(k, _)| *k)))
    }
}

impl<'a> From<&'a HashMap<String, String>> for Pairs<'a> {
    fn from(map: &'a HashMap<String, String>) -> Self {
        Pairs::Map(map)
    }
}

/// A borrowed view of the request being authorized.
///
/// Built once per Check from Envoy's `AttributeContext`; header names are lower-case, as
/// Envoy sends them.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    /// HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// Host or `:authority`, possibly with a port.
    pub host: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// The query string (after `?`, before any `#`), empty if none.
    pub query: &'a str,
    /// Request headers with lower-case names.
    pub headers: Pairs<'a>,
    /// The calling workload's identity (`source.principal`, a SPIFFE id under Istio
    /// mTLS); empty without one.
    pub principal: &'a str,
    /// Envoy's `context_extensions` (set per route or virtual host in Envoy's config).
    pub context_extensions: Pairs<'a>,
}

impl<'a> RequestView<'a> {
    /// A view of an HTTP request with no workload identity and no context extensions;
    /// `path` may carry a query string.
    pub fn http(
        method: &'a str,
        host: &'a str,
        path: &'a str,
        headers: impl Into<Pairs<'a>>,
    ) -> Self {
        let (path, query) = split_path(path);
        Self {
            method,
            host,
            path,
            query,
            headers: headers.into(),
            principal: "",
            context_extensions: Pairs::EMPTY,
        }
    }

    /// A header value by lower-case name.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name)
    }
}

/// `/p?q#f` → (`/p`, `q`).
pub fn split_path(full: &str) -> (&str, &str) {
    // One pass: the path ends at the first `?` or `#`, and only a `?` starts a query.
    let end = memchr::memchr2(b'?', b'#', full.as_bytes()).unwrap_or(full.len());
    let (path, rest) = full.split_at(end);
    let query = rest
        .strip_prefix('?')
        .map_or("", |q| q.split('#').next().unwrap_or(""));
    (path, query)
}

impl std::fmt::Debug for RequestView<'_> {
    // Headers are left out on purpose: they carry `Authorization` and `Cookie`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestView")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_between_the_first_question_mark_and_the_fragment() {
        assert_eq!(split_path("/p?q=1#f"), ("/p", "q=1"));
        assert_eq!(split_path("/p#f?q=1"), ("/p", ""));
        assert_eq!(split_path("/p?a?b"), ("/p", "a?b"));
        assert_eq!(split_path("/p"), ("/p", ""));
        assert_eq!(split_path(""), ("", ""));
    }

    proptest::proptest! {
        /// As RFC 3986 splits a request target: the fragment goes first, then the query
        /// at the first `?` of what is left.
        #[test]
        fn paths_split_as_the_rfc_reads_them(full in "[/a?#]{0,12}") {
            let without_fragment = full.split('#').next().unwrap_or("");
            let expected = without_fragment.split_once('?').unwrap_or((without_fragment, ""));
            proptest::prop_assert_eq!(split_path(&full), expected);
        }
    }

    #[test]
    fn a_later_pair_wins_and_names_come_from_both_kinds() {
        let list = [("a", "1"), ("b", "2"), ("a", "3")];
        let pairs = Pairs::List(&list);
        assert_eq!(pairs.get("a"), Some("3"));
        assert_eq!(pairs.get("c"), None);
        let map: HashMap<String, String> = [("x".into(), "y".into())].into();
        assert_eq!(Pairs::from(&map).get("x"), Some("y"));
        assert_eq!(Pairs::from(&map).names().collect::<Vec<_>>(), ["x"]);
    }
}
