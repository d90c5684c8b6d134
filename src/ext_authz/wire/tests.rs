use super::*;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use proptest::prelude::*;
use prost::Message;
use std::collections::HashMap;

/// What the engine reads, from prost's decode.
#[derive(Debug, PartialEq)]
struct Seen {
    method: String,
    host: String,
    path: String,
    has_http: bool,
    headers: HashMap<String, String>,
    header_map: Vec<(String, String, Vec<u8>)>,
    principal: String,
    context_extensions: HashMap<String, String>,
}

fn seen_by_prost(req: &CheckRequest) -> Seen {
    let attributes = req.attributes.clone().unwrap_or_default();
    let http = attributes.request.and_then(|r| r.http);
    let has_http = http.is_some();
    let http = http.unwrap_or_default();
    Seen {
        method: http.method,
        host: http.host,
        path: http.path,
        has_http,
        headers: http.headers,
        header_map: http
            .header_map
            .map(|m| m.headers)
            .unwrap_or_default()
            .into_iter()
            .map(|h| (h.key, h.value, h.raw_value))
            .collect(),
        principal: attributes.source.map(|s| s.principal).unwrap_or_default(),
        context_extensions: attributes.context_extensions,
    }
}

fn seen_here(fields: &CheckFields<'_>) -> Seen {
    let map = |pairs: &[(&str, &str)]| {
        // Later entries replace earlier ones, as the engine's lookup reads them.
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Seen {
        method: fields.method.into(),
        host: fields.host.into(),
        path: fields.path.into(),
        has_http: fields.has_http,
        headers: map(&fields.headers),
        header_map: fields
            .header_map
            .iter()
            .map(|h| (h.key.into(), h.value.into(), h.raw_value.to_vec()))
            .collect(),
        principal: fields.principal.into(),
        context_extensions: map(&fields.context_extensions),
    }
}

/// Both readers on the same bytes: where prost decodes, this reader sees the same.
fn agrees_with_prost(bytes: &[u8]) -> Result<(), TestCaseError> {
    let here = CheckFields::parse(bytes);
    if let Ok(req) = CheckRequest::decode(bytes) {
        let fields =
            here.map_err(|e| TestCaseError::fail(format!("prost decodes, not here: {e}")))?;
        prop_assert_eq!(seen_here(&fields), seen_by_prost(&req));
        // The engine's lookup (the last entry wins) gives prost's value for every name.
        for (name, value) in &seen_by_prost(&req).headers {
            let found = fields.headers.iter().rev().find(|(k, _)| k == name);
            prop_assert_eq!(found.map(|(_, v)| *v), Some(value.as_str()));
        }
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    // Short, from a small alphabet, so that names repeat across entries.
    prop_oneof![
        Just(String::new()),
        "[a-c]{1,2}",
        Just("authorization".to_string()),
        Just("x-forwarded-user".to_string()),
        "\\PC{0,6}",
    ]
}

fn pairs() -> impl Strategy<Value = HashMap<String, String>> {
    proptest::collection::hash_map(text(), text(), 0..5)
}

fn check_request() -> impl Strategy<Value = CheckRequest> {
    let http = (
        (text(), text(), text(), text()),
        pairs(),
        proptest::option::of(proptest::collection::vec(
            (text(), text(), proptest::collection::vec(any::<u8>(), 0..4)),
            0..3,
        )),
        any::<i64>(),
    )
        .prop_map(
            |((method, host, path, scheme), headers, raw, size)| HttpRequest {
                method,
                host,
                path,
                scheme,
                size,
                headers,
                header_map: raw.map(|raw| HeaderMap {
                    headers: raw
                        .into_iter()
                        .map(|(key, value, raw_value)| HeaderValue {
                            key,
                            value,
                            raw_value,
                        })
                        .collect(),
                }),
                ..Default::default()
            },
        );
    (
        proptest::option::of(http),
        proptest::option::of((text(), text())),
        pairs(),
    )
        .prop_map(|(http, peers, context_extensions)| CheckRequest {
            attributes: Some(AttributeContext {
                source: peers.clone().map(|(principal, service)| Peer {
                    principal,
                    service,
                    ..Default::default()
                }),
                destination: peers.map(|(principal, _)| Peer {
                    principal,
                    ..Default::default()
                }),
                request: http.map(|http| Request {
                    http: Some(http),
                    ..Default::default()
                }),
                context_extensions,
                ..Default::default()
            }),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any request Envoy could send reads the same here as through the generated types.
    #[test]
    fn every_encoded_request_reads_as_prost_decodes_it(req in check_request()) {
        agrees_with_prost(&req.encode_to_vec())?;
    }

    /// Two messages back to back are one merged message in protobuf: a later header,
    /// host or path replaces the earlier one, as prost merges them.
    #[test]
    fn concatenated_requests_merge_as_prost_merges_them(a in check_request(), b in check_request()) {
        let mut bytes = a.encode_to_vec();
        bytes.extend(b.encode_to_vec());
        agrees_with_prost(&bytes)?;
    }

    /// Damaged bytes never panic, and whatever prost still decodes reads the same here.
    #[test]
    fn damaged_requests_are_refused_or_read_as_prost_reads_them(
        req in check_request(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = req.encode_to_vec();
        if bytes.is_empty() {
            return Ok(());
        }
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        agrees_with_prost(&bytes)?;
        agrees_with_prost(&bytes[..cut.index(bytes.len())])?;
    }

    /// Arbitrary bytes: no panic, and agreement wherever prost decodes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        agrees_with_prost(&bytes)?;
    }
}

/// `CheckRequest{attributes{request{http{<http>}}}}` around raw HttpRequest bytes.
fn wrap_http(http: &[u8]) -> Vec<u8> {
    fn len_field(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(tag << 3) | 2];
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }
    len_field(1, &len_field(4, &len_field(2, http)))
}

#[test]
fn a_header_not_in_utf8_refuses_the_request() {
    // headers entry {key: "authorization", value: 0xff}
    let entry = [&[0x0a, 13][..], b"authorization", &[0x12, 1, 0xff]].concat();
    let http = [&[0x1a, entry.len() as u8][..], &entry].concat();
    let bytes = wrap_http(&http);
    assert!(
        CheckRequest::decode(&bytes[..]).is_err(),
        "prost refuses it too"
    );
    assert_eq!(
        CheckFields::parse(&bytes).unwrap_err(),
        WireError::NotUtf8("headers")
    );
}

#[test]
fn a_header_entry_sent_with_another_wire_type_refuses_the_request() {
    // Field 3 (headers) keyed with wire type 0 (varint) but framed as an entry.
    let entry = [&[0x0a, 1][..], b"a", &[0x12, 1], b"b"].concat();
    let http = [&[0x18, entry.len() as u8][..], &entry].concat();
    let bytes = wrap_http(&http);
    assert!(
        CheckRequest::decode(&bytes[..]).is_err(),
        "prost refuses it too"
    );
    assert_eq!(
        CheckFields::parse(&bytes).unwrap_err(),
        WireError::WireType("headers")
    );
}

#[test]
fn a_method_sent_as_a_varint_refuses_the_request() {
    let bytes = wrap_http(&[0x10, 0x01]);
    assert!(CheckRequest::decode(&bytes[..]).is_err());
    assert_eq!(
        CheckFields::parse(&bytes).unwrap_err(),
        WireError::WireType("method")
    );
}

#[test]
fn unknown_fields_and_groups_are_skipped() {
    // field 99 varint, field 98 group holding a fixed32, then host "h".
    let http = [
        &[0x98, 0x06, 0x05][..],
        &[0x93, 0x06, 0x0d, 1, 2, 3, 4, 0x94, 0x06],
        &[0x2a, 1],
        b"h",
    ]
    .concat();
    let bytes = wrap_http(&http);
    let req = CheckRequest::decode(&bytes[..]).unwrap();
    let fields = CheckFields::parse(&bytes).unwrap();
    assert_eq!(fields.host, "h");
    assert_eq!(seen_here(&fields), seen_by_prost(&req));
}

#[test]
fn groups_nested_past_prosts_limit_refuse_the_request() {
    let depth = 120;
    let mut http = Vec::new();
    for _ in 0..depth {
        http.extend([0x93, 0x06]); // start group 98
    }
    for _ in 0..depth {
        http.extend([0x94, 0x06]); // end group 98
    }
    let bytes = wrap_http(&http);
    assert!(CheckRequest::decode(&bytes[..]).is_err());
    assert_eq!(CheckFields::parse(&bytes).unwrap_err(), WireError::TooDeep);
}

#[test]
fn a_length_past_the_end_refuses_the_request() {
    // The outer lengths are right; the host's says 5 bytes where there is 1.
    let mut bytes = wrap_http(&[0x2a, 5, b'h']);
    assert!(CheckRequest::decode(&bytes[..]).is_err());
    assert_eq!(
        CheckFields::parse(&bytes).unwrap_err(),
        WireError::Truncated
    );
    bytes.clear();
    assert_eq!(CheckFields::parse(&bytes).unwrap(), CheckFields::default());
}

#[test]
fn debug_output_leaves_headers_out() {
    let bytes = wrap_http(
        &[
            &[0x1a, 0x15, 0x0a, 13][..],
            b"authorization",
            &[0x12, 4],
            b"s3cr",
        ]
        .concat(),
    );
    let fields = CheckFields::parse(&bytes).unwrap();
    assert_eq!(fields.headers, [("authorization", "s3cr")]);
    assert!(!format!("{fields:?}").contains("s3cr"));
}
