//! Trace context: the parent a Check's span joins (what Envoy sent, W3C or B3), the
//! spans of the request path, and the `traceparent` that Gerrit and IdP requests carry.
//!
//! A span is recorded here and handed, when it ends, to a [`SpanSink`] as the SDK's
//! [`SpanData`]: the export queue, which encodes it at once (`telemetry::otlp::queue`).
//! Not as `tracing` spans through `tracing-opentelemetry` (the `tracing` registry and
//! that layer were 9,500 of the 14,800 instructions a traced Check cost for its two
//! spans), nor through the SDK's tracer, whose span sits behind a `Box<dyn>` in a mutex
//! in an `Arc` and costs about 1,700 instructions to make and end (callgrind,
//! docs/performance.md). The current span travels as the OpenTelemetry [`Context`] of
//! the future that runs inside it ([`TraceSpan::run`]), so the API's propagation and
//! context functions work unchanged.
//!
//! With export off no tracer is set: each function here returns after one load, and
//! nothing is allocated.

use futures_util::future::Either;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// How Checks are sampled. Decided here, before any span exists, so that an unsampled
/// Check costs what it costs with export off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Share of Checks traced, 0 to 1: of all of them, or of those whose caller's trace
    /// context does not decide.
    pub ratio: f64,
    /// Whether a caller's sampled flag decides (`parentbased_*`).
    pub follow_parent: bool,
}

impl Sampling {
    /// Whether a Check with `parent` is traced.
    fn samples(&self, parent: Option<&Context>) -> bool {
        if self.follow_parent {
            if let Some(parent) = parent {
                return parent.span().span_context().is_sampled();
            }
        }
        self.ratio >= 1.0 || (self.ratio > 0.0 && fastrand::f64() < self.ratio)
    }
}

/// Where a span goes when it ends.
pub trait SpanSink: Send + Sync {
    /// Takes `span`, which has just ended. Called on the request path: it must not
    /// block or wait.
    fn end(&self, span: SpanData);
}

/// The instrumentation scope of every span made here.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("mesh-authz").build()
}

/// What makes spans once export is on.
struct Tracing {
    sampling: Sampling,
    /// Where ended spans go.
    sink: Arc<dyn SpanSink>,
    scope: InstrumentationScope,
}

/// Set once, when export starts; unset, nothing is traced.
static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Turns tracing on: Checks sampled by `sampling` make spans, which end in `sink`
/// (once per process; later calls change nothing).
pub fn start(sampling: Sampling, sink: Arc<dyn SpanSink>) {
    let _ = TRACING.set(Tracing {
        sampling,
        sink,
        scope: scope(),
    });
}

/// One span of the request path, or none (export off, Check not sampled, or no traced
/// Check around it). Ends when dropped, as the SDK's [`SpanData`].
#[must_use = "a span ends when dropped"]
pub struct TraceSpan {
    open: Option<Box<OpenSpan>>,
}

/// A span being recorded.
struct OpenSpan {
    /// The parent's context with this span as its current one: what [`TraceSpan::run`]
    /// runs futures in, so that their spans and requests are this span's children.
    cx: Context,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    kind: SpanKind,
    name: &'static str,
    start: SystemTime,
    attributes: Mutex<Vec<KeyValue>>,
}

impl TraceSpan {
    /// No span: what every function here returns with export off.
    pub const fn none() -> Self {
        Self { open: None }
    }

    /// A span below `parent` (a caller's remote span, one of ours, or none).
    fn start(
        name: &'static str,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        parent: &Context,
    ) -> Self {
        let parent_span = parent.span();
        let parent_context = parent_span.span_context();
        let (trace_id, trace_state, parent_span_id, parent_is_remote) = if parent_context.is_valid()
        {
            (
                parent_context.trace_id(),
                parent_context.trace_state().clone(),
                parent_context.span_id(),
                parent_context.is_remote(),
            )
        } else {
            (
                TraceId::from(fastrand::u128(1..)),
                TraceState::default(),
                SpanId::INVALID,
                false,
            )
        };
        let context = SpanContext::new(
            trace_id,
            SpanId::from(fastrand::u64(1..)),
            TraceFlags::SAMPLED,
            false,
            trace_state,
        );
        Self {
            open: Some(Box::new(OpenSpan {
                cx: parent.with_remote_span_context(context),
                parent_span_id,
                parent_is_remote,
                kind,
                name,
                start: SystemTime::now(),
                attributes: Mutex::new(attributes),
            })),
        }
    }

    /// Whether this is a span (not [`TraceSpan::none`]).
    pub fn is_traced(&self) -> bool {
        self.open.is_some()
    }

    /// Sets attribute `key` (a no-op without a span; `value` is copied only with one).
    pub fn record(&self, key: &'static str, value: &str) {
        self.record_all(|| vec![KeyValue::new(key, value.to_owned())]);
    }

    /// Adds the attributes `attributes` makes (only called when there is a span).
    fn record_all(&self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(open) = &self.open {
            // Only this span's owner records on it: the lock is never contended, and a
            // poisoned one (a panic while pushing) still holds a usable Vec.
            let mut held = open
                .attributes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let attributes = attributes();
            if held.is_empty() {
                *held = attributes;
            } else {
                held.extend(attributes);
            }
        }
    }

    /// `future` inside this span: spans started and requests sent while it runs are its
    /// children. Without a span, `future` as it is.
    pub fn run<F: Future>(&self, future: F) -> Either<WithContext<F>, F> {
        match &self.open {
            Some(open) => Either::Left(future.with_context(open.cx.clone())),
            None => Either::Right(future),
        }
    }
}

impl Drop for TraceSpan {
    fn drop(&mut self) {
        // Ends it now, even while a task spawned inside it still holds the context.
        let (Some(open), Some(tracing)) = (self.open.take(), TRACING.get()) else {
            return;
        };
        let OpenSpan {
            cx,
            parent_span_id,
            parent_is_remote,
            kind,
            name,
            start,
            attributes,
        } = *open;
        let span = cx.span();
        let data = SpanData {
            span_context: span.span_context().clone(),
            parent_span_id,
            parent_span_is_remote: parent_is_remote,
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: SystemTime::now(),
            attributes: attributes
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: tracing.scope.clone(),
        };
        tracing.sink.end(data);
    }
}

impl std::fmt::Debug for TraceSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.open {
            Some(open) => {
                let span = open.cx.span();
                let context = span.span_context();
                write!(f, "TraceSpan({}-{})", context.trace_id(), context.span_id())
            }
            None => f.write_str("TraceSpan(none)"),
        }
    }
}

/// The span of one Check call when it is sampled, a child of the span `parent` names.
/// `parent` is only read with export on. Its attributes are recorded when the decision
/// is known ([`record_decision`]).
pub fn check_span(parent: impl FnOnce() -> Option<Context>) -> TraceSpan {
    let Some(tracing) = TRACING.get() else {
        return TraceSpan::none();
    };
    let parent = parent();
    if !tracing.sampling.samples(parent.as_ref()) {
        return TraceSpan::none();
    }
    TraceSpan::start(
        "envoy.service.auth.v3.Authorization/Check",
        SpanKind::Server,
        Vec::new(),
        &parent.unwrap_or_default(),
    )
}

/// A span inside the current traced Check, with the attributes `attributes` makes (only
/// called when there is a span). Work outside a Check (the JWKS refresher) and in
/// unsampled Checks makes none.
pub fn child(
    name: &'static str,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> TraceSpan {
    if TRACING.get().is_none() {
        return TraceSpan::none();
    }
    let Some(parent) = Context::map_current(|cx| cx.has_active_span().then(|| cx.clone())) else {
        return TraceSpan::none();
    };
    TraceSpan::start(name, kind, attributes(), &parent)
}

/// `future` in the current span, for a task spawned inside a Check: its spans join the
/// Check's trace even when it outlives the Check. With export off, `future` as it is.
pub fn in_current_span<F: Future>(future: F) -> Either<WithContext<F>, F> {
    match TRACING.get() {
        Some(_) => Either::Left(future.with_current_context()),
        None => Either::Right(future),
    }
}

/// What a decision records on its Check span. No header value, token or cookie:
/// the route and rule are the config's names, the reason one of mesh-authz's codes.
#[derive(Debug, Clone, Copy)]
pub struct DecisionAttributes<'a> {
    /// The route's name, if one matched (shared with the compiled route, not copied).
    pub route: Option<&'a Arc<str>>,
    /// The rule or grant that decided, if any.
    pub rule: Option<&'a str>,
    /// `allow`, `deny`, `unavailable`, ...
    pub decision: &'static str,
    /// The reason code.
    pub reason: &'static str,
    /// Whether the route only observes.
    pub dry_run: bool,
    /// The caller, only when the config lets traces carry it (personal data).
    pub user: Option<&'a str>,
}

/// How many attributes [`record_decision`] sets, at most.
const DECISION_ATTRIBUTES: usize = 6;

/// Records the decision's attributes on `span` (a no-op without a span).
pub fn record_decision(span: &TraceSpan, attributes: DecisionAttributes<'_>) {
    span.record_all(|| decision_attributes(attributes));
}

fn decision_attributes(attributes: DecisionAttributes<'_>) -> Vec<KeyValue> {
    let mut values = Vec::with_capacity(DECISION_ATTRIBUTES);
    if let Some(route) = attributes.route {
        values.push(KeyValue::new("mesh_authz.route", Arc::clone(route)));
    }
    if let Some(rule) = attributes.rule {
        values.push(KeyValue::new("mesh_authz.rule", rule.to_owned()));
    }
    values.push(KeyValue::new("mesh_authz.decision", attributes.decision));
    values.push(KeyValue::new("mesh_authz.reason", attributes.reason));
    values.push(KeyValue::new("mesh_authz.dry_run", attributes.dry_run));
    if let Some(user) = attributes.user {
        values.push(KeyValue::new("enduser.id", user.to_owned()));
    }
    values
}

/// The parent named by trace headers: W3C `traceparent` (with `tracestate`) first, then
/// B3 (the single `b3` header, then `x-b3-*`). `None` when none is valid.
pub fn parent_from<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Context> {
    w3c_parent(&header).or_else(|| b3_parent(&header))
}

fn w3c_parent<'a>(header: &impl Fn(&str) -> Option<&'a str>) -> Option<Context> {
    struct W3c<'a> {
        traceparent: &'a str,
        tracestate: Option<&'a str>,
    }
    impl Extractor for W3c<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => Some(self.traceparent),
                "tracestate" => self.tracestate,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    let headers = W3c {
        traceparent: header("traceparent")?,
        tracestate: header("tracestate"),
    };
    let cx = TraceContextPropagator::new().extract(&headers);
    cx.span().span_context().is_valid().then_some(cx)
}

/// B3 as Zipkin defines it (openzipkin/b3-propagation): 16 or 32 hex trace id, 16 hex
/// span id; sampled `1`/`0` (`d` or `x-b3-flags: 1`, debug, means sampled); absent
/// sampling leaves the decision to the sampler (here: sampled, as Envoy would record).
fn b3_parent<'a>(header: &impl Fn(&str) -> Option<&'a str>) -> Option<Context> {
    let (trace_id, span_id, sampled) = match header("b3") {
        Some(single) => {
            let mut parts = single.split('-');
            let trace_id = parts.next()?;
            let span_id = parts.next()?;
            let sampled = parts.next();
            (trace_id, span_id, sampled)
        }
        None => {
            // The ids first: a request without B3 costs one more lookup, not three.
            let trace_id = header("x-b3-traceid")?;
            let span_id = header("x-b3-spanid")?;
            let sampled = match header("x-b3-flags") {
                Some("1") => Some("d"),
                _ => header("x-b3-sampled"),
            };
            (trace_id, span_id, sampled)
        }
    };
    let sampled = match sampled {
        None | Some("1" | "d" | "true") => true,
        Some("0" | "false") => false,
        Some(_) => return None,
    };
    let trace_id = match trace_id.len() {
        16 | 32 if is_lower_hex(trace_id) => TraceId::from_hex(trace_id).ok()?,
        _ => return None,
    };
    if span_id.len() != 16 || !is_lower_hex(span_id) {
        return None;
    }
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    context
        .is_valid()
        .then(|| Context::new().with_remote_span_context(context))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The `traceparent` for an outgoing request made inside the current span, so the
/// Gerrit's or IdP's own trace joins this one. `None` with export off or outside a span.
pub fn traceparent() -> Option<http::HeaderValue> {
    TRACING.get()?;
    Context::map_current(|cx| {
        let span = cx.span();
        let context = span.span_context();
        if !context.is_valid() {
            return None;
        }
        let value = format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        );
        http::HeaderValue::from_str(&value).ok()
    })
}

/// Adds [`traceparent`] to an outgoing request, when there is one.
pub fn propagate(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match traceparent() {
        Some(value) => request.header("traceparent", value),
        None => request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn parent(headers: &[(&str, &str)]) -> Option<SpanContext> {
        let map: HashMap<&str, &str> = headers.iter().copied().collect();
        parent_from(|name| map.get(name).copied()).map(|cx| cx.span().span_context().clone())
    }

    #[test]
    fn traceparent_names_the_parent_and_its_sampling() {
        let sampled = parent(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]).unwrap();
        assert_eq!(sampled.trace_id().to_string(), TRACE);
        assert_eq!(sampled.span_id().to_string(), SPAN);
        assert!(sampled.is_sampled() && sampled.is_remote());
        let unsampled = parent(&[("traceparent", &format!("00-{TRACE}-{SPAN}-00"))]).unwrap();
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn a_valid_traceparent_wins_over_b3_and_a_broken_one_falls_through() {
        let b3 = [
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ];
        let w3c = format!("00-{TRACE}-{SPAN}-01");
        let both = parent(&[("traceparent", w3c.as_str()), b3[0], b3[1]]).unwrap();
        assert_eq!(both.trace_id().to_string(), TRACE);
        let broken = parent(&[("traceparent", "00-zz-yy-01"), b3[0], b3[1]]).unwrap();
        assert_eq!(
            broken.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
    }

    #[test]
    fn b3_multi_and_single_headers_name_the_parent() {
        let multi = parent(&[
            ("x-b3-traceid", "80f198ee56343ba8"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ])
        .unwrap();
        // A 64-bit trace id is the low half of the 128-bit one.
        assert_eq!(
            multi.trace_id().to_string(),
            "000000000000000080f198ee56343ba8"
        );
        assert!(!multi.is_sampled());
        let debug = parent(&[
            ("x-b3-traceid", "80f198ee56343ba8"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ])
        .unwrap();
        assert!(debug.is_sampled());
        let single = parent(&[("b3", &format!("{TRACE}-{SPAN}-1-05e3ac9a4f6e3b90"))]).unwrap();
        assert_eq!(single.span_id().to_string(), SPAN);
        assert!(single.is_sampled());
    }

    #[test]
    fn malformed_or_all_zero_ids_name_no_parent() {
        let zero_trace = "0".repeat(32);
        for headers in [
            vec![("traceparent", "garbage")],
            vec![("traceparent", &*format!("00-{zero_trace}-{SPAN}-01"))],
            vec![("b3", "0")],
            vec![("b3", &*format!("{TRACE}-{SPAN}-maybe"))],
            vec![("x-b3-traceid", "80F198EE56343BA8"), ("x-b3-spanid", SPAN)],
            vec![("x-b3-traceid", "80f198ee56343ba8")],
            vec![("x-b3-traceid", "80f198ee5634"), ("x-b3-spanid", SPAN)],
            vec![("x-b3-traceid", TRACE), ("x-b3-spanid", "0000000000000000")],
        ] {
            assert!(parent(&headers).is_none(), "{headers:?}");
        }
    }

    #[test]
    fn without_export_nothing_is_propagated() {
        let span = check_span(|| panic!("the parent is not read with export off"));
        assert!(!span.is_traced());
        assert!(traceparent().is_none());
    }

    #[test]
    fn parent_based_sampling_follows_the_callers_flag_and_the_ratio_decides_the_rest() {
        let sampled = parent_from(|n| {
            (n == "traceparent")
                .then_some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        });
        let unsampled = parent_from(|n| {
            (n == "traceparent")
                .then_some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        });
        let never = Sampling {
            ratio: 0.0,
            follow_parent: true,
        };
        assert!(never.samples(sampled.as_ref()));
        assert!(!never.samples(unsampled.as_ref()));
        assert!(!never.samples(None));
        let always = Sampling {
            ratio: 1.0,
            follow_parent: false,
        };
        assert!(always.samples(unsampled.as_ref()));
        let tenth = Sampling {
            ratio: 0.1,
            follow_parent: true,
        };
        let traced = (0..10_000).filter(|_| tenth.samples(None)).count();
        assert!((700..1300).contains(&traced), "{traced} of 10000");
    }
}
