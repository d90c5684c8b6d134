//! The HTTP request as the decision logic sees it, independent of gRPC types.

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use std::collections::HashMap;
use std::sync::LazyLock;

static EMPTY: LazyLock<HashMap<String, String>> = LazyLock::new(HashMap::new);

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

    /// Builds a view from Envoy's CheckRequest. Missing parts become empty strings, which
    /// match no host and no path, so a malformed request falls through to a deny.
    pub fn from_check_request(req: &'a CheckRequest) -> Self {
        let attributes = req.attributes.as_ref();
        let http = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let principal = attributes
            .and_then(|a| a.source.as_ref())
            .map_or("", |s| s.principal.as_str());
        let context_extensions = attributes.map_or(&*EMPTY, |a| &a.context_extensions);
        let view = match http {
            // Envoy puts the query string into `path`; matching is on the path alone.
            Some(http) => Self::http(&http.method, &http.host, &http.path, &http.headers),
            None => Self::http("", "", "", &EMPTY),
        };
        Self {
            principal,
            context_extensions,
            ..view
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

/// Whether a path has a `.` or `..` segment, literally or percent-encoded. Envoy does not
/// normalise paths unless configured to (Istio does by default), and prefix rules on an
/// unnormalised path can be sidestepped: `/a/projects/team-a/../team-b`. Such paths are
/// refused before any route is matched.
pub fn has_dot_segments(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
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
