//! The HTTP request as the decision logic sees it, independent of gRPC types.

mod path;

pub use path::{routing_path, PathError};

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

/// The request headers when Envoy sends them as `header_map` (its ext_authz
/// `encode_raw_headers: true`) instead of `headers`: names lower-cased, repeated headers
/// comma-joined as `headers` would have them. `None` when `headers` is in use (or there
/// are none at all). Without this, such a request would look header-less: tokens missing,
/// and forged identity headers never seen to be stripped.
pub fn raw_headers(req: &CheckRequest) -> Option<HashMap<String, String>> {
    let http = req.attributes.as_ref()?.request.as_ref()?.http.as_ref()?;
    let raw = http.header_map.as_ref()?;
    if !http.headers.is_empty() || raw.headers.is_empty() {
        return None;
    }
    let mut headers: HashMap<String, String> = HashMap::with_capacity(raw.headers.len());
    for h in &raw.headers {
        let value = if h.raw_value.is_empty() {
            h.value.clone()
        } else {
            String::from_utf8_lossy(&h.raw_value).into_owned()
        };
        headers
            .entry(h.key.to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    Some(headers)
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

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;

    fn request(headers: &[(&str, &str)], raw: &[(&str, &[u8])]) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        header_map: Some(HeaderMap {
                            headers: raw
                                .iter()
                                .map(|(k, v)| HeaderValue {
                                    key: k.to_string(),
                                    raw_value: v.to_vec(),
                                    ..Default::default()
                                })
                                .collect(),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn raw_header_maps_are_read_like_headers_with_repeats_joined() {
        let req = request(
            &[],
            &[
                ("authorization", b"Bearer abc"),
                ("Impersonate-Group", b"system:masters"),
                ("impersonate-group", b"system:nodes"),
            ],
        );
        let h = raw_headers(&req).unwrap();
        assert_eq!(h["authorization"], "Bearer abc");
        assert_eq!(h["impersonate-group"], "system:masters,system:nodes");
    }

    #[test]
    fn headers_win_when_envoy_sends_them() {
        let req = request(
            &[("authorization", "Bearer abc")],
            &[("authorization", b"x")],
        );
        assert_eq!(raw_headers(&req), None);
        assert_eq!(raw_headers(&request(&[], &[])), None);
    }
}
