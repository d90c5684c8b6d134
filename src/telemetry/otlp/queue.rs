//! The export queue: a span is encoded ([`wire::span_entry`]) the moment it ends, into
//! the batch being filled, and a task on the runtime sends each batch when it is full
//! or when the schedule delay has passed, one export at a time.
//!
//! It replaces the SDK's batch span processor for a measured reason. That processor
//! moves each span's `SpanData` through a channel and a `Vec` to its own thread, where
//! it is encoded and dropped: 5,200 instructions a traced Check (callgrind), of which the
//! encoding was 2,200 and the rest moving and dropping the spans' structs. Here a span's
//! only copy is its encoding, about 200 bytes, and a span that finds the queue full is
//! dropped (and counted) before it is encoded. The queue is bounded as the SDK's was
//! (`OTEL_BSP_MAX_QUEUE_SIZE` spans), and nothing on the request path waits for it.

use super::wire::{self, EncodedResource, EncodedScope};
use crate::trace::SpanSink;
use bytes::Bytes;
use opentelemetry_sdk::trace::SpanData;
use prometheus_client::metrics::counter::Counter;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// The export queue's counters, shown on `/metrics` whether export is on or not.
#[derive(Debug, Default)]
pub struct TraceCounters {
    /// Spans dropped because the queue was full.
    pub dropped: Counter,
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans in exports that failed (collector down, refused, timed out).
    pub failed: Counter,
}

/// The process's trace counters (one queue per process).
pub static COUNTERS: LazyLock<TraceCounters> = LazyLock::new(TraceCounters::default);

/// How the queue holds and sends spans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSettings {
    /// Spans waiting for export, at most; beyond it a span is dropped and counted.
    pub capacity: usize,
    /// Spans in one export, at most; a full batch is sent at once.
    pub batch_size: usize,
    /// How long a batch that is not full waits before it is sent.
    pub delay: Duration,
}

/// Where export requests go: the OTLP exporter, or a stand-in when profiling.
pub trait Collector: Send + Sync + 'static {
    /// Sends one encoded `ExportTraceServiceRequest`; the error says why it was not
    /// accepted (and never holds a header value).
    fn export(&self, body: Bytes) -> impl Future<Output = Result<(), String>> + Send;
}

/// Spans encoded and waiting, in batches; see the module's text.
#[derive(Debug)]
pub struct SpanQueue {
    batches: Mutex<Batches>,
    /// Spans in `batches` and in the export under way: what `capacity` bounds.
    queued: AtomicUsize,
    settings: QueueSettings,
    /// Signalled when a batch fills.
    full: Notify,
    /// Set at shutdown: later spans are dropped.
    closed: AtomicBool,
    counters: &'static TraceCounters,
}

/// The batch being filled, and those full and waiting.
#[derive(Debug, Default)]
struct Batches {
    filling: Batch,
    full: VecDeque<Batch>,
}

/// Span entries of one export, as `ScopeSpans.spans` fields.
#[derive(Default)]
struct Batch {
    entries: Vec<u8>,
    spans: usize,
}

impl std::fmt::Debug for Batch {
    // The entries can name users (`traces.include_user`): only their size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("spans", &self.spans)
            .field("bytes", &self.entries.len())
            .finish()
    }
}

/// A first guess at a batch's size, so that it rarely grows while spans are appended
/// under the lock (a span of mesh-authz's encodes to about 200 bytes).
fn batch_capacity(batch_size: usize) -> usize {
    batch_size.saturating_mul(256).min(1 << 20)
}

impl SpanQueue {
    /// An empty queue, counting in the process's [`COUNTERS`].
    pub fn new(settings: QueueSettings) -> Self {
        Self::counting_in(settings, &COUNTERS)
    }

    /// An empty queue counting in `counters`.
    fn counting_in(settings: QueueSettings, counters: &'static TraceCounters) -> Self {
        Self {
            batches: Mutex::new(Batches::default()),
            queued: AtomicUsize::new(0),
            settings,
            full: Notify::new(),
            closed: AtomicBool::new(false),
            counters,
        }
    }

    /// The oldest full batch; with `any` (the delay passed, or shutdown), else the one
    /// being filled, if it holds a span.
    fn take(&self, any: bool) -> Option<Batch> {
        let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        match batches.full.pop_front() {
            Some(batch) => Some(batch),
            None if any && batches.filling.spans > 0 => Some(std::mem::take(&mut batches.filling)),
            None => None,
        }
    }
}

/// Every span is one of [`crate::trace`]'s, of its one scope: batches are framed with
/// that scope, encoded once ([`ExportTask::spawn`]), not with each span's.
impl SpanSink for SpanQueue {
    fn end(&self, span: SpanData) {
        let capacity = self.settings.capacity;
        let taken = !self.closed.load(Ordering::Acquire)
            && self
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < capacity).then_some(n + 1)
                })
                .is_ok();
        if !taken {
            self.counters.dropped.inc();
            return;
        }
        let batch_size = self.settings.batch_size;
        let filled = {
            // Encoded under the lock, straight into its batch, so that it is written once;
            // the lock is held for that encoding only (about 1,300 instructions).
            let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
            let batch = &mut batches.filling;
            if batch.spans == 0 && batch.entries.capacity() == 0 {
                batch.entries.reserve(batch_capacity(batch_size));
            }
            wire::span_entry(&mut batch.entries, &span);
            batch.spans += 1;
            let filled = batch.spans >= batch_size;
            if filled {
                let batch = std::mem::take(&mut batches.filling);
                batches.full.push_back(batch);
            }
            filled
        };
        if filled {
            self.full.notify_one();
        }
    }
}

/// The task that sends the queue's batches; [`ExportTask::shutdown`] sends what is left.
#[derive(Debug)]
pub struct ExportTask {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ExportTask {
    /// Starts sending `queue`'s batches to `collector`, as from `resource` and `scope`.
    /// Must run inside the tokio runtime.
    pub fn spawn(
        queue: Arc<SpanQueue>,
        collector: impl Collector,
        resource: EncodedResource,
        scope: EncodedScope,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        // The first delay runs from now, not from when the task is first polled.
        let first = tokio::time::Instant::now() + queue.settings.delay;
        let sender = Sender {
            queue,
            collector,
            resource,
            scope,
            failing: false,
        };
        Self {
            stop,
            task: tokio::spawn(sender.run(first, stopped)),
        }
    }

    /// Stops taking spans and sends those queued, waiting `timeout` at most.
    pub async fn shutdown(self, timeout: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "trace export did not finish sending queued spans before shutdown"
            );
        }
    }
}

/// The export task's state.
struct Sender<C> {
    queue: Arc<SpanQueue>,
    collector: C,
    resource: EncodedResource,
    scope: EncodedScope,
    /// Whether the last export failed (failures are logged when they start and end).
    failing: bool,
}

impl<C: Collector> Sender<C> {
    async fn run(mut self, first: tokio::time::Instant, mut stopped: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval_at(first, self.queue.settings.delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let any = tokio::select! {
                () = self.queue.full.notified() => false,
                _ = tick.tick() => true,
                _ = &mut stopped => break,
            };
            while let Some(batch) = self.queue.take(any) {
                self.send(batch).await;
            }
        }
        self.queue.closed.store(true, Ordering::Release);
        while let Some(batch) = self.queue.take(true) {
            self.send(batch).await;
        }
    }

    async fn send(&mut self, batch: Batch) {
        let spans = batch.spans;
        let body = wire::export_request(&self.resource, &[(&self.scope, &batch.entries)]);
        drop(batch);
        let result = self.collector.export(Bytes::from(body)).await;
        self.queue.queued.fetch_sub(spans, Ordering::AcqRel);
        match result {
            Ok(()) => {
                self.queue.counters.exported.inc_by(spans as u64);
                if std::mem::take(&mut self.failing) {
                    tracing::info!("trace export works again");
                }
            }
            Err(error) => {
                self.queue.counters.failed.inc_by(spans as u64);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(%error, spans, "trace export failed; spans are dropped until it works (mesh_authz_trace_spans_export_failed_total)");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
