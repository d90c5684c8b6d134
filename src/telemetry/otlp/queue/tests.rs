//! The queue and its task on tokio's paused clock, with a collector that keeps what it
//! is sent (decoded with `opentelemetry-proto`) or refuses it.

use super::*;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
use prost::Message;
use std::borrow::Cow;
use std::time::UNIX_EPOCH;

/// Keeps the span names of each export it accepts; refuses all while `refuse` is set.
#[derive(Clone, Default)]
struct Kept {
    exports: Arc<Mutex<Vec<Vec<String>>>>,
    refuse: Arc<AtomicBool>,
}

impl Collector for Kept {
    async fn export(&self, body: Bytes) -> Result<(), String> {
        if self.refuse.load(Ordering::Acquire) {
            return Err("refused".into());
        }
        let request = ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())?;
        let [resource_spans] = request.resource_spans.as_slice() else {
            return Err("not one ResourceSpans".into());
        };
        let resource = resource_spans.resource.as_ref().ok_or("no resource")?;
        assert_eq!(resource.attributes[0].key, "service.name");
        let [scope_spans] = resource_spans.scope_spans.as_slice() else {
            return Err("not one ScopeSpans".into());
        };
        assert_eq!(
            scope_spans.scope.as_ref().ok_or("no scope")?.name,
            "mesh-authz"
        );
        let names = scope_spans.spans.iter().map(|s| s.name.clone()).collect();
        self.exports.lock().unwrap().push(names);
        Ok(())
    }
}

impl Kept {
    fn exports(&self) -> Vec<Vec<String>> {
        self.exports.lock().unwrap().clone()
    }
}

fn span(n: usize) -> SpanData {
    let start = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(7),
            SpanId::from(n as u64 + 1),
            TraceFlags::SAMPLED,
            false,
            Default::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: Cow::Owned(format!("s{n}")),
        start_time: start,
        end_time: start + Duration::from_micros(40),
        attributes: vec![KeyValue::new("mesh_authz.decision", "allow")],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: crate::trace::scope(),
    }
}

/// Spans waiting for export, the one under way included.
fn queued(queue: &SpanQueue) -> usize {
    queue.queued.load(Ordering::Acquire)
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("s{n}")).collect()
}

/// A queue of `capacity` spans sending batches of `batch_size` to a [`Kept`], its own
/// counters, and the task.
fn started(
    capacity: usize,
    batch_size: usize,
) -> (Arc<SpanQueue>, Kept, &'static TraceCounters, ExportTask) {
    let counters: &'static TraceCounters = Box::leak(Box::default());
    let queue = Arc::new(SpanQueue::counting_in(
        QueueSettings {
            capacity,
            batch_size,
            delay: Duration::from_secs(5),
        },
        counters,
    ));
    let kept = Kept::default();
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name("authz")
        .build();
    let task = ExportTask::spawn(
        queue.clone(),
        kept.clone(),
        EncodedResource::new(&resource),
        EncodedScope::new(&crate::trace::scope()),
    );
    (queue, kept, counters, task)
}

/// Lets the task run what it can without the clock moving.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_at_once_and_a_partial_one_after_the_delay() {
    let (queue, kept, counters, _task) = started(100, 4);
    for n in 0..6 {
        queue.end(span(n));
    }
    settle().await;
    assert_eq!(kept.exports(), [names(0..4)], "the full batch, at once");
    assert_eq!(queued(&queue), 2);
    tokio::time::advance(Duration::from_millis(4_900)).await;
    settle().await;
    assert_eq!(kept.exports().len(), 1, "the rest waits for the delay");
    tokio::time::advance(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(kept.exports(), [names(0..4), names(4..6)]);
    assert_eq!(queued(&queue), 0);
    assert_eq!(counters.exported.get(), 6);
    assert_eq!(counters.dropped.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn spans_beyond_the_queue_are_dropped_and_counted_until_it_has_room() {
    let (queue, kept, counters, _task) = started(5, 10);
    for n in 0..8 {
        queue.end(span(n));
    }
    assert_eq!(queued(&queue), 5);
    assert_eq!(counters.dropped.get(), 3);
    tokio::time::advance(Duration::from_secs(6)).await;
    settle().await;
    assert_eq!(kept.exports(), [names(0..5)]);
    queue.end(span(8));
    assert_eq!(queued(&queue), 1, "room again once a batch is sent");
    assert_eq!(counters.dropped.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_refused_export_counts_its_spans_as_failed_and_frees_their_room() {
    let (queue, kept, counters, _task) = started(4, 2);
    kept.refuse.store(true, Ordering::Release);
    for n in 0..4 {
        queue.end(span(n));
    }
    settle().await;
    assert_eq!(counters.failed.get(), 4);
    assert_eq!(queued(&queue), 0);
    kept.refuse.store(false, Ordering::Release);
    queue.end(span(4));
    queue.end(span(5));
    settle().await;
    assert_eq!(kept.exports(), [names(4..6)]);
    assert_eq!(counters.exported.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_what_is_queued_and_takes_no_more() {
    let (queue, kept, counters, task) = started(100, 50);
    for n in 0..3 {
        queue.end(span(n));
    }
    task.shutdown(Duration::from_secs(1)).await;
    assert_eq!(kept.exports(), [names(0..3)]);
    queue.end(span(3));
    assert_eq!(counters.dropped.get(), 1);
    assert_eq!(queued(&queue), 0);
}

#[tokio::test(start_paused = true)]
async fn the_queues_debug_output_shows_sizes_not_the_spans_it_holds() {
    let (queue, _kept, _counters, _task) = started(100, 50);
    let mut named = span(0);
    named
        .attributes
        .push(KeyValue::new("enduser.id", "alice@example.com"));
    queue.end(named);
    let shown = format!("{queue:?}");
    assert!(shown.contains("spans: 1"), "{shown}");
    // Neither as text nor as the list of byte values a derived `Debug` would print.
    assert!(!shown.contains("alice"), "{shown}");
    assert!(!shown.contains("97, 108, 105, 99, 101"), "{shown}");
}
