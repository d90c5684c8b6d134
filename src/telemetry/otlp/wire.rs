//! OTLP's protobuf encoding of spans: each span as an entry of `ScopeSpans.spans`,
//! written from the SDK's [`SpanData`] when it ends ([`span_entry`]), and the
//! `ExportTraceServiceRequest` around a batch of entries ([`export_request`]).
//!
//! The OTLP exporter crate converts each span into `opentelemetry-proto` messages first:
//! a SipHash of the span's scope, a `String` for every key and value (through `fmt`),
//! and nested lengths computed again at every level. Callgrind measured that at 6,160
//! instructions a span, more than the span itself cost to make (docs/performance.md).
//! Here each field is written once; a nested message's length is put in front of it
//! when it is done. The tests decode what this writes with `opentelemetry-proto` and
//! compare it with that crate's own conversion.

use opentelemetry::trace::{SpanKind, Status, TraceFlags};
use opentelemetry::{Array, InstrumentationScope, Value};
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use std::time::{SystemTime, UNIX_EPOCH};

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// `SpanFlags`: the flags say whether the parent's remoteness is known, and if it is remote.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const CONTEXT_IS_REMOTE: u32 = 0x200;

/// A `Resource` message, encoded once when the SDK hands the exporter its resource.
#[derive(Debug, Clone, Default)]
pub struct EncodedResource {
    message: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    /// The encoding of `resource`.
    pub fn new(resource: &Resource) -> Self {
        let mut message = Vec::new();
        for (key, value) in resource.iter() {
            attribute(&mut message, 1, key.as_str(), value);
        }
        Self {
            message,
            schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// An `InstrumentationScope` message, encoded once.
#[derive(Debug, Clone, Default)]
pub struct EncodedScope {
    message: Vec<u8>,
    schema_url: String,
}

impl EncodedScope {
    /// The encoding of `scope`.
    pub fn new(scope: &InstrumentationScope) -> Self {
        let mut message = Vec::new();
        string_field(&mut message, 1, scope.name());
        string_field(&mut message, 2, scope.version().unwrap_or_default());
        for kv in scope.attributes() {
            attribute(&mut message, 3, kv.key.as_str(), &kv.value);
        }
        Self {
            message,
            schema_url: scope.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// Appends `span` as one entry of `ScopeSpans.spans` (its field key, length and body):
/// what the export queue keeps of a span from the moment it ends until its batch goes.
pub fn span_entry(buf: &mut Vec<u8>, span: &SpanData) {
    message_field(buf, 2, |b| encode_span(b, span));
}

/// The `ExportTraceServiceRequest` from `resource` carrying, for each scope, the span
/// entries [`span_entry`] wrote. The lengths are known, so each entry is copied once.
pub fn export_request(resource: &EncodedResource, scopes: &[(&EncodedScope, &[u8])]) -> Vec<u8> {
    let scope_spans_len = |(scope, entries): &(&EncodedScope, &[u8])| {
        field_len(1, scope.message.len(), true)
            + entries.len()
            + field_len(3, scope.schema_url.len(), false)
    };
    let resource_spans_len = field_len(1, resource.message.len(), true)
        + scopes
            .iter()
            .map(|s| field_len(2, scope_spans_len(s), true))
            .sum::<usize>()
        + field_len(3, resource.schema_url.len(), false);
    let mut buf = Vec::with_capacity(field_len(1, resource_spans_len, true));
    key(&mut buf, 1, LEN);
    varint(&mut buf, resource_spans_len as u64);
    bytes_field_always(&mut buf, 1, &resource.message);
    for s in scopes {
        let (scope, entries) = s;
        key(&mut buf, 2, LEN);
        varint(&mut buf, scope_spans_len(s) as u64);
        bytes_field_always(&mut buf, 1, &scope.message);
        buf.extend_from_slice(entries);
        string_field(&mut buf, 3, &scope.schema_url);
    }
    string_field(&mut buf, 3, &resource.schema_url);
    buf
}

/// The `ExportTraceServiceRequest` carrying `spans` from `resource`, grouped by scope as
/// they come (what [`export_request`] makes of [`span_entry`]'s for each of them).
pub fn spans_request(spans: &[SpanData], resource: &EncodedResource) -> Vec<u8> {
    let mut groups = Vec::new();
    let mut rest = spans;
    while let Some(first) = rest.first() {
        let scope = &first.instrumentation_scope;
        let n = rest
            .iter()
            .position(|s| s.instrumentation_scope != *scope)
            .unwrap_or(rest.len());
        let (group, tail) = rest.split_at(n);
        let mut entries = Vec::new();
        for span in group {
            span_entry(&mut entries, span);
        }
        groups.push((EncodedScope::new(scope), entries));
        rest = tail;
    }
    let scopes: Vec<_> = groups.iter().map(|(s, e)| (s, e.as_slice())).collect();
    export_request(resource, &scopes)
}

/// The encoded length of field `field` holding `len` bytes; proto3 leaves an empty
/// one out unless it is a message that is always written.
fn field_len(field: u32, len: usize, always: bool) -> usize {
    if len == 0 && !always {
        return 0;
    }
    varint_len(u64::from(field << 3 | LEN)) + varint_len(len as u64) + len
}

fn encode_span(buf: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    bytes_field(buf, 1, &context.trace_id().to_bytes());
    bytes_field(buf, 2, &context.span_id().to_bytes());
    string_field(buf, 3, &context.trace_state().header());
    if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        bytes_field(buf, 4, &span.parent_span_id.to_bytes());
    }
    string_field(buf, 5, &span.name);
    varint_field(buf, 6, span_kind(&span.span_kind));
    fixed64_field(buf, 7, nanos(span.start_time));
    fixed64_field(buf, 8, nanos(span.end_time));
    for kv in &span.attributes {
        attribute(buf, 9, kv.key.as_str(), &kv.value);
    }
    varint_field(buf, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        message_field(buf, 11, |b| {
            fixed64_field(b, 1, nanos(event.timestamp));
            string_field(b, 2, &event.name);
            for kv in &event.attributes {
                attribute(b, 3, kv.key.as_str(), &kv.value);
            }
            varint_field(b, 4, u64::from(event.dropped_attributes_count));
        });
    }
    varint_field(buf, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        message_field(buf, 13, |b| {
            let context = &link.span_context;
            bytes_field(b, 1, &context.trace_id().to_bytes());
            bytes_field(b, 2, &context.span_id().to_bytes());
            string_field(b, 3, &context.trace_state().header());
            for kv in &link.attributes {
                attribute(b, 4, kv.key.as_str(), &kv.value);
            }
            varint_field(b, 5, u64::from(link.dropped_attributes_count));
            fixed32_field(b, 6, flags(context.is_remote(), context.trace_flags()));
        });
    }
    varint_field(buf, 14, u64::from(span.links.dropped_count));
    message_field(buf, 15, |b| match &span.status {
        Status::Error { description } => {
            string_field(b, 2, description);
            varint_field(b, 3, 2);
        }
        Status::Ok => varint_field(b, 3, 1),
        Status::Unset => {}
    });
    fixed32_field(
        buf,
        16,
        flags(span.parent_span_is_remote, context.trace_flags()),
    );
}

fn flags(remote: bool, trace_flags: TraceFlags) -> u32 {
    let mut flags = u32::from(trace_flags.to_u8()) | CONTEXT_HAS_IS_REMOTE;
    if remote {
        flags |= CONTEXT_IS_REMOTE;
    }
    flags
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A `KeyValue` message as field `field`. A string or number value's lengths are known
/// before writing, so they are written first; an array goes through [`message_field`].
fn attribute(buf: &mut Vec<u8>, field: u32, name: &str, value: &Value) {
    let any_len = match value {
        Value::Bool(_) => 2,
        Value::I64(v) => 1 + varint_len(*v as u64),
        Value::F64(_) => 9,
        Value::String(v) => {
            let len = v.as_str().len();
            1 + varint_len(len as u64) + len
        }
        _ => return message_field(buf, field, |b| key_value(b, name, value)),
    };
    let name_len = match name.len() {
        0 => 0,
        len => 1 + varint_len(len as u64) + len,
    };
    key(buf, field, LEN);
    varint(
        buf,
        (name_len + 1 + varint_len(any_len as u64) + any_len) as u64,
    );
    string_field(buf, 1, name);
    key(buf, 2, LEN);
    varint(buf, any_len as u64);
    any_value(buf, value);
}

fn varint_len(value: u64) -> usize {
    // 7 bits a byte; 0 takes one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// A `KeyValue` message's fields.
fn key_value(buf: &mut Vec<u8>, key: &str, value: &Value) {
    string_field(buf, 1, key);
    message_field(buf, 2, |b| any_value(b, value));
}

/// An `AnyValue` message's fields (a oneof: written even when it is the default).
fn any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(v) => {
            key(buf, 2, VARINT);
            varint(buf, u64::from(*v));
        }
        Value::I64(v) => {
            key(buf, 3, VARINT);
            varint(buf, *v as u64);
        }
        Value::F64(v) => {
            key(buf, 4, FIXED64);
            buf.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Value::String(v) => bytes_field_always(buf, 1, v.as_str().as_bytes()),
        Value::Array(Array::Bool(values)) => {
            array_values(buf, values.iter().map(|v| Value::Bool(*v)));
        }
        Value::Array(Array::I64(values)) => {
            array_values(buf, values.iter().map(|v| Value::I64(*v)));
        }
        Value::Array(Array::F64(values)) => {
            array_values(buf, values.iter().map(|v| Value::F64(*v)));
        }
        Value::Array(Array::String(values)) => {
            array_values(buf, values.iter().map(|v| Value::String(v.clone())));
        }
        // A kind of value newer than this code: its text, rather than nothing.
        other => bytes_field_always(buf, 1, other.as_str().as_bytes()),
    }
}

/// An `AnyValue`'s `array_value`: an `ArrayValue` of one `AnyValue` each.
fn array_values(buf: &mut Vec<u8>, values: impl Iterator<Item = Value>) {
    message_field(buf, 5, |b| {
        for value in values {
            message_field(b, 1, |b| any_value(b, &value));
        }
    });
}

fn key(buf: &mut Vec<u8>, field: u32, wire_type: u32) {
    varint(buf, u64::from(field << 3 | wire_type));
}

fn varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// A nested message: `body` writes its fields after a one-byte length, which is filled
/// in when they are done. Most of OTLP's messages (attributes, values, status) are
/// shorter than 128 bytes; a longer one moves its body up by the extra length bytes.
fn message_field(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    key(buf, field, LEN);
    let at = buf.len();
    buf.push(0);
    body(buf);
    let end = buf.len();
    let mut len = end - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
        return;
    }
    let mut prefix = [0u8; 10];
    let mut n = 0;
    while len >= 0x80 {
        prefix[n] = (len as u8) | 0x80;
        len >>= 7;
        n += 1;
    }
    prefix[n] = len as u8;
    buf.resize(end + n, 0);
    buf.copy_within(at + 1..end, at + 1 + n);
    buf[at..=at + n].copy_from_slice(&prefix[..=n]);
}

fn bytes_field_always(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(buf, field, LEN);
    varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A `bytes` field; proto3 leaves an empty one out.
fn bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        bytes_field_always(buf, field, bytes);
    }
}

fn string_field(buf: &mut Vec<u8>, field: u32, text: &str) {
    bytes_field(buf, field, text.as_bytes());
}

fn varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(buf, field, VARINT);
        varint(buf, value);
    }
}

fn fixed64_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(buf, field, FIXED64);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32_field(buf: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        key(buf, field, FIXED32);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests;
