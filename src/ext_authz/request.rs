//! Envoy's CheckRequest as the [`RequestView`] the engine decides on.

use crate::request::{RequestView, EMPTY};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use std::collections::HashMap;

/// The view of Envoy's CheckRequest. Missing parts become empty strings, which
/// match no host and no path, so a malformed request falls through to a deny.
pub fn view(req: &CheckRequest) -> RequestView<'_> {
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
        Some(http) => RequestView::http(&http.method, &http.host, &http.path, &http.headers),
        None => RequestView::http("", "", "", &EMPTY),
    };
    RequestView {
        principal,
        context_extensions,
        ..view
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
