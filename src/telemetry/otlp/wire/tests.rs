//! The encoding checked against `opentelemetry-proto`: what is written here decodes to
//! the very messages that crate's conversion makes of the same spans.

use super::*;
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
use prost::Message;
use std::borrow::Cow;
use std::time::Duration;

fn scope(name: &'static str) -> InstrumentationScope {
    InstrumentationScope::builder(name)
        .with_version("0.1.0")
        .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
        .with_attributes([KeyValue::new("scope.attr", true)])
        .build()
}

fn context(trace: u128, span: u64, remote: bool, state: &str) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        remote,
        TraceState::from_key_value([("vendor", state)]).expect("a valid tracestate"),
    )
}

fn span(n: u64, scope: InstrumentationScope) -> SpanData {
    let start = UNIX_EPOCH + Duration::from_nanos(1_765_000_000_123_456_789 + n);
    let mut events = SpanEvents::default();
    events.events = vec![Event::new(
        "fetched",
        start + Duration::from_micros(3),
        vec![KeyValue::new("keys", 2_i64)],
        1,
    )];
    events.dropped_count = 2;
    let mut links = SpanLinks::default();
    links.links = vec![Link::new(
        context(7, 9, true, "y"),
        vec![KeyValue::new("why", "retry")],
        3,
    )];
    SpanData {
        span_context: context(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c, n + 1, false, "x"),
        parent_span_id: if n.is_multiple_of(2) {
            SpanId::from(0xb7ad_6b71_6920_3331)
        } else {
            SpanId::INVALID
        },
        parent_span_is_remote: n.is_multiple_of(3),
        span_kind: [SpanKind::Server, SpanKind::Client, SpanKind::Internal][n as usize % 3].clone(),
        name: Cow::Owned(format!("span {n} é")),
        start_time: start,
        end_time: start + Duration::from_micros(17 + n),
        attributes: vec![
            KeyValue::new("route", "gerrit"),
            KeyValue::new("decision", ""),
            KeyValue::new("cache.hit", n.is_multiple_of(2)),
            KeyValue::new("count", -(n as i64) - 1),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("ratio", 0.25),
            KeyValue::new("long", "x".repeat(300)),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -2, 1 << 40]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![0.5, -1.0]))),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec![StringValue::from("a"), "".into()])),
            ),
        ],
        dropped_attributes_count: n as u32 % 2,
        events,
        links,
        status: match n % 3 {
            0 => Status::Unset,
            1 => Status::Ok,
            _ => Status::error("Gerrit answered 503"),
        },
        instrumentation_scope: scope,
    }
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("mesh-authz")
        .with_attribute(KeyValue::new("service.version", "0.1.0"))
        .with_attribute(KeyValue::new("replicas", 3_i64))
        .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
        .build()
}

/// What `opentelemetry-proto` makes of `spans`, and what this module writes, decoded.
fn both(
    spans: Vec<SpanData>,
    resource: &Resource,
) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let ours = spans_request(&spans, &EncodedResource::new(resource));
    let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).expect("our bytes decode");
    let expected = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            spans,
            &ResourceAttributesWithSchema::from(resource),
        ),
    };
    (decoded, expected)
}

#[test]
fn a_batch_decodes_to_what_opentelemetry_proto_makes_of_it() {
    let spans: Vec<_> = (0..40).map(|n| span(n, scope("mesh-authz"))).collect();
    let (ours, theirs) = both(spans, &resource());
    assert_eq!(ours.resource_spans[0].scope_spans[0].spans.len(), 40);
    assert_eq!(ours, theirs);
}

#[test]
fn spans_of_two_scopes_are_grouped_by_scope() {
    let spans = vec![
        span(0, scope("a")),
        span(1, scope("a")),
        span(2, scope("b")),
    ];
    let (ours, theirs) = both(spans, &resource());
    assert_eq!(ours.resource_spans[0].scope_spans.len(), 2);
    assert_eq!(ours, theirs);
}

#[test]
fn an_empty_resource_and_an_empty_batch_still_decode() {
    let (ours, theirs) = both(Vec::new(), &Resource::builder_empty().build());
    assert_eq!(ours, theirs);
}

#[test]
fn a_span_longer_than_one_length_byte_keeps_its_fields() {
    // Lengths of 128 bytes and more take two varint bytes; 16 KiB three.
    let mut long = span(5, scope("mesh-authz"));
    long.attributes = vec![KeyValue::new("big", "y".repeat(20_000))];
    let (ours, theirs) = both(vec![long], &resource());
    assert_eq!(ours, theirs);
}
