//! The HTTP request as the decision logic sees it, independent of Envoy's types (the
//! `ext_authz` edge builds it from a CheckRequest).

mod path;

pub use path::{routing_path, PathError};

use std::collections::HashMap;
use std::sync::LazyLock;

/// No headers, no context extensions.
pub static EMPTY: LazyLock<HashMap<String, String>> = LazyLock::new(HashMap::new);

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
    pub headers: &'a HashMap<String, String>,
    /// The calling workload's identity (`source.principal`, a SPIFFE id under Istio
    /// mTLS); empty without one.
    pub principal: &'a str,
    /// Envoy's `context_extensions` (set per route or virtual host in Envoy's config).
    pub context_extensions: &'a HashMap<String, String>,
}

impl<'a> RequestView<'a> {
    /// A view of an HTTP request with no workload identity and no context extensions;
    /// `path` may carry a query string.
    pub fn http(
        method: &'a str,
        host: &'a str,
        path: &'a str,
        headers: &'a HashMap<String, String>,
    ) -> Self {
        let (path, query) = split_path(path);
        Self {
            method,
            host,
            path,
            query,
            headers,
            principal: "",
            context_extensions: &EMPTY,
        }
    }

    /// A header value by lower-case name.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// `/p?q#f` → (`/p`, `q`).
pub fn split_path(full: &str) -> (&str, &str) {
    let without_fragment = full.split('#').next().unwrap_or("");
    without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""))
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
