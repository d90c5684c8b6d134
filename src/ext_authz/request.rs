//! Envoy's CheckRequest as the [`RequestView`] the engine decides on.

use super::wire::CheckFields;
use crate::request::{Pairs, RequestView};
use std::collections::HashMap;

/// The view of Envoy's CheckRequest. Missing parts become empty strings, which
/// match no host and no path, so a malformed request falls through to a deny.
/// `raw_headers` is what [`raw_headers`] made of the same request.
pub fn view<'a>(
    fields: &'a CheckFields<'a>,
    raw_headers: Option<&'a HashMap<String, String>>,
) -> RequestView<'a> {
    // Envoy puts the query string into `path`; matching is on the path alone.
    let view = RequestView::http(
        fields.method,
        fields.host,
        fields.path,
        match raw_headers {
            Some(map) => Pairs::Map(map),
            None => Pairs::List(&fields.headers),
        },
    );
    RequestView {
        principal: fields.principal,
        context_extensions: Pairs::List(&fields.context_extensions),
        ..view
    }
}

/// The request headers when Envoy sends them as `header_map` (its ext_authz
/// `encode_raw_headers: true`) instead of `headers`: names lower-cased, repeated headers
/// comma-joined as `headers` would have them. `None` when `headers` is in use (or there
/// are none at all). Without this, such a request would look header-less: tokens missing,
/// and forged identity headers never seen to be stripped.
pub fn raw_headers(fields: &CheckFields<'_>) -> Option<HashMap<String, String>> {
    if !fields.headers.is_empty() || fields.header_map.is_empty() {
        return None;
    }
    let mut headers: HashMap<String, String> = HashMap::with_capacity(fields.header_map.len());
    for h in &fields.header_map {
        let value = if h.raw_value.is_empty() {
            h.value.to_string()
        } else {
            String::from_utf8_lossy(h.raw_value).into_owned()
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
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use prost::Message;

    /// A serialized CheckRequest with these `headers` and `header_map` entries.
    fn request(headers: &[(&str, &str)], raw: &[(&str, &[u8])]) -> Vec<u8> {
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
        .encode_to_vec()
    }

    fn raw_headers_of(bytes: &[u8]) -> Option<HashMap<String, String>> {
        raw_headers(&CheckFields::parse(bytes).expect("a CheckRequest"))
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
        let h = raw_headers_of(&req).unwrap();
        assert_eq!(h["authorization"], "Bearer abc");
        assert_eq!(h["impersonate-group"], "system:masters,system:nodes");
    }

    #[test]
    fn headers_win_when_envoy_sends_them() {
        let req = request(
            &[("authorization", "Bearer abc")],
            &[("authorization", b"x")],
        );
        assert_eq!(raw_headers_of(&req), None);
        assert_eq!(raw_headers_of(&request(&[], &[])), None);
    }
}
