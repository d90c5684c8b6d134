//! Reading CheckResponses the way Envoy would act on them: allowed (with header
//! mutations and metadata) or denied (with an HTTP status, headers and body).

use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckResponse, OkHttpResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{BoolValue, Struct};
use serde_json::Value;
use std::collections::HashMap;

/// One header mutation: its value and its (deprecated, but read by ext_authz) `append`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetHeader {
    /// The value Envoy would set.
    pub value: String,
    /// `append` as sent: `Some(false)` overwrites, `None` leaves it to Envoy's default.
    pub append: Option<BoolValue>,
}

/// Header name → mutation. Panics on a header listed twice (the last would win in Envoy).
pub fn header_options(options: &[HeaderValueOption]) -> HashMap<String, SetHeader> {
    let mut map = HashMap::new();
    for option in options {
        let header = option.header.as_ref().expect("header option has a header");
        #[allow(deprecated)]
        let append = option.append;
        let previous = map.insert(
            header.key.clone(),
            SetHeader {
                value: header.value.clone(),
                append,
            },
        );
        assert!(previous.is_none(), "{} set twice", header.key);
    }
    map
}

/// The OkHttpResponse of an allowed check; panics unless the status is explicitly OK
/// (Envoy reads an unset status as OK, so it must be set).
pub fn allowed(resp: &CheckResponse) -> &OkHttpResponse {
    let status = resp.status.as_ref().expect("status must be set explicitly");
    assert_eq!(status.code, 0, "not allowed: {resp:?}");
    match &resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("expected ok_response, got {other:?}"),
    }
}

/// What the client of a denied request gets.
#[derive(Debug)]
pub struct Denied {
    /// HTTP status Envoy answers with.
    pub http_status: u16,
    /// Response headers.
    pub headers: HashMap<String, SetHeader>,
    /// The body parsed as JSON.
    pub json: Value,
    /// The body as sent.
    pub body: String,
    /// The gRPC status message in the CheckResponse (Envoy may log it).
    pub rpc_message: String,
}

impl Denied {
    /// A response header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|h| h.value.as_str())
    }

    /// Everything a client or a log could see: body, header values, status message.
    pub fn visible_text(&self) -> String {
        let mut text = format!("{}\n{}\n", self.body, self.rpc_message);
        for (k, v) in &self.headers {
            text.push_str(&format!("{k}: {}\n", v.value));
        }
        text
    }
}

/// The denial of a denied check; panics if the check was allowed or has no body.
pub fn denied(resp: &CheckResponse) -> Denied {
    let status = resp.status.as_ref().expect("status must be set explicitly");
    assert_ne!(status.code, 0, "expected a denial, got {resp:?}");
    let Some(HttpResponse::DeniedResponse(d)) = &resp.http_response else {
        panic!("expected denied_response, got {:?}", resp.http_response);
    };
    Denied {
        http_status: d.status.as_ref().map_or(0, |s| s.code as u16),
        headers: header_options(&d.headers),
        json: serde_json::from_str(&d.body).expect("denial body is JSON"),
        body: d.body.clone(),
        rpc_message: status.message.clone(),
    }
}

/// A string field of `dynamic_metadata`.
pub fn metadata_string(meta: &Struct, key: &str) -> Option<String> {
    match meta.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        other => panic!("metadata {key} is not a string: {other:?}"),
    }
}

/// A list-of-strings field of `dynamic_metadata`.
pub fn metadata_strings(meta: &Struct, key: &str) -> Option<Vec<String>> {
    match meta.fields.get(key)?.kind.as_ref()? {
        Kind::ListValue(list) => Some(
            list.values
                .iter()
                .map(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => s.clone(),
                    other => panic!("metadata {key} holds a non-string: {other:?}"),
                })
                .collect(),
        ),
        other => panic!("metadata {key} is not a list: {other:?}"),
    }
}
