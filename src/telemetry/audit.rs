//! The audit log: one JSON line per authorization decision.
//!
//! [`AuditLog::record`] only queues the record; a dedicated thread serialises and writes it,
//! so a slow or full disk never delays a Check. The queue is bounded: when the writer falls
//! behind, records are dropped and counted ([`AuditLog::dropped`]) rather than growing
//! memory without limit or making Envoy wait.
//!
//! A file output follows logrotate's `create` mode (rename, then a new file): about once a
//! second the writer checks whether the path still names the open file and reopens it if
//! not. Lines queued before the rename is noticed still go to the renamed file, so rotate
//! with `delaycompress`.

use serde::{Serialize, Serializer};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Records the queue holds; several seconds of peak traffic, so only a stalled disk drops.
const QUEUE_CAPACITY: usize = 65_536;
/// Longest time a written line waits in the buffer under steady load.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the writer checks whether the file was rotated away.
const REOPEN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Large enough that any line Envoy can produce goes through the buffer: a failed write
/// then leaves the buffer intact instead of a torn line in the file.
const BUFFER_BYTES: usize = 256 * 1024;
/// `flush` timeouts beyond this are cut to it, so the deadline cannot overflow.
const MAX_FLUSH_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// One decision as the audit log records it. Never holds a token, a cookie, a header value
/// other than the ids below, or a query string.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When the decision was made; written as RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    /// Envoy's `x-request-id`.
    pub request_id: Option<String>,
    /// The mesh trace id, see [`trace_id`].
    pub trace_id: Option<String>,
    /// The authenticated user.
    pub user: Option<String>,
    /// The issuer of the user's token.
    pub issuer: Option<String>,
    /// The calling workload's SPIFFE id (`source.principal`).
    pub principal: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Host or `:authority`.
    pub host: String,
    /// Path without the query string (queries can carry tokens); [`AuditLog::record`]
    /// strips one a caller passes anyway.
    pub path: String,
    /// The route that matched.
    pub route: Option<String>,
    /// Which alternative of the route decided, e.g. `allow[1]`.
    pub rule: Option<String>,
    /// `allow`, `deny` or `unavailable`.
    pub decision: &'static str,
    /// Short stable reason code, e.g. `not_in_group`.
    pub reason: String,
    /// The route is in dry-run: `decision` is what would have happened; the request was
    /// allowed.
    pub dry_run: bool,
    /// Time taken to decide, in microseconds.
    pub latency_us: u64,
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-25T16:24:13.123Z`.
fn serialize_time<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    // humantime panics before 1970 and fails after 9999; a wrong clock must not stop the
    // writer, so the time is clamped into that range.
    let latest = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    let time = (*time).clamp(UNIX_EPOCH, latest);
    serializer.collect_str(&humantime::format_rfc3339_millis(time))
}

pub use crate::config::AuditOutput;

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit file could not be opened for append.
    #[error("cannot open audit log {}: {source}", path.display())]
    Open {
        /// The configured path.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the audit log writer thread: {0}")]
    Spawn(#[source] io::Error),
}

/// The running audit log: a bounded queue drained by a writer thread.
///
/// Cloning gives another handle to the same log. The writer exits once every handle is
/// dropped and the queue is written out; call [`AuditLog::flush`] at shutdown, since the
/// process may exit before that.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
}

/// State both the handles and the writer see.
#[derive(Debug)]
struct Shared {
    output: AuditOutput,
    dropped: AtomicU64,
    write_errors: AtomicU64,
}

enum Msg {
    // Boxed: the channel allocates all its slots up front, so slots are kept pointer-sized.
    Record(Box<AuditRecord>),
    Flush(SyncSender<bool>),
}

impl std::fmt::Debug for AuditLog {
    // Counters only: queued records are not for debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("output", &self.shared.output)
            .field("dropped", &self.dropped())
            .field("write_errors", &self.write_errors())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer. File: opened for append (created 0640 if missing); error if it
    /// cannot be opened.
    pub fn start(output: AuditOutput) -> Result<Self, AuditError> {
        Self::start_with(output, QUEUE_CAPACITY, REOPEN_CHECK_INTERVAL)
    }

    /// [`AuditLog::start`] with a chosen queue size and rotation check interval (tests).
    pub(crate) fn start_with(
        output: AuditOutput,
        capacity: usize,
        reopen_check: Duration,
    ) -> Result<Self, AuditError> {
        let (log, writer) = Self::prepare(output, capacity, reopen_check)?;
        writer.spawn()?;
        Ok(log)
    }

    /// The log and its writer, not yet running: records queue (and, once the queue is
    /// full, are dropped) until [`Writer::spawn`].
    fn prepare(
        output: AuditOutput,
        capacity: usize,
        reopen_check: Duration,
    ) -> Result<(Self, Writer), AuditError> {
        let sink = Sink::open(&output)?;
        let shared = Arc::new(Shared {
            output,
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        });
        // At least one slot: a zero-capacity channel would accept nothing without a waiting
        // writer, dropping almost every record.
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let now = Instant::now();
        let writer = Writer {
            rx,
            sink,
            shared: Arc::clone(&shared),
            line: Vec::new(),
            reopen_check,
            last_reopen_check: now,
            last_flush: now,
            dirty: false,
            failed_since_ack: false,
            logged_kinds: HashSet::new(),
        };
        Ok((Self { tx, shared }, writer))
    }

    /// Queues a record; never blocks and never fails the caller. When the queue is full the
    /// record is dropped and counted. A query string or fragment left in `path` is cut off.
    pub fn record(&self, mut record: AuditRecord) {
        let path_len = crate::request::split_path(&record.path).0.len();
        record.path.truncate(path_len);
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {}
            // Full: the writer is behind. Disconnected: it is gone (it only ends when every
            // handle is dropped, so this is not expected). The caller must not wait either way.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped because the queue was full (for a metric).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Failed writes, flushes and reopens of the output (for a metric). A record whose write
    /// failed is lost; the first failure of each kind is also logged.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Writes everything queued so far and flushes; for shutdown (and tests). Blocks the
    /// calling thread for at most `timeout` (call it from `spawn_blocking` in async code).
    ///
    /// Returns true if the writer got through everything queued before the call and flushed
    /// it without a write error since the previous `flush`; false on timeout or error.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout.min(MAX_FLUSH_WAIT);
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack_tx);
        // At shutdown under load the queue may be full: wait for room until the deadline.
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or(false)
    }
}

/// The output: a buffer over stdout or a file.
struct Sink {
    out: BufWriter<Box<dyn Write + Send>>,
    /// Set for a file: which file is open, to notice rotation.
    file: Option<OpenFile>,
}

/// A file output's path and the device and inode open under it.
struct OpenFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Sink {
    fn open(output: &AuditOutput) -> Result<Self, AuditError> {
        match output {
            AuditOutput::Stdout => Ok(Self {
                // Not `stdout().lock()`: the lock would be held for the life of the process.
                out: BufWriter::with_capacity(BUFFER_BYTES, Box::new(io::stdout())),
                file: None,
            }),
            AuditOutput::File(path) => {
                let (file, open) = open_append(path).map_err(|source| AuditError::Open {
                    path: path.clone(),
                    source,
                })?;
                Ok(Self {
                    out: BufWriter::with_capacity(BUFFER_BYTES, Box::new(file)),
                    file: Some(open),
                })
            }
        }
    }
}

/// Opens `path` for append, creating it 0640 (before umask) if missing.
fn open_append(path: &Path) -> io::Result<(File, OpenFile)> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    let meta = file.metadata()?;
    let open = OpenFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok((file, open))
}

/// The writer thread's state.
struct Writer {
    rx: Receiver<Msg>,
    sink: Sink,
    shared: Arc<Shared>,
    /// One serialised line, reused: serialising into the buffered writer directly could
    /// leave half a line in it if serialisation failed.
    line: Vec<u8>,
    reopen_check: Duration,
    last_reopen_check: Instant,
    last_flush: Instant,
    /// Lines were written to the buffer (or a flush failed) since the last good flush.
    dirty: bool,
    /// An error happened since the last `Flush` message was answered.
    failed_since_ack: bool,
    /// Error kinds already logged: a full disk would otherwise log once per line.
    logged_kinds: HashSet<io::ErrorKind>,
}

impl Writer {
    /// Runs the writer on a thread of its own until every handle of the log is dropped.
    fn spawn(self) -> Result<(), AuditError> {
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || self.run())
            .map(drop)
            .map_err(AuditError::Spawn)
    }
}

impl Writer {
    fn run(mut self) {
        loop {
            let msg = match self.rx.try_recv() {
                Ok(msg) => Some(msg),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    // The queue ran empty: flush now so lines appear promptly.
                    if self.dirty {
                        self.flush();
                    }
                    // Wake up when idle too, to follow a rotation without traffic.
                    match self.rx.recv_timeout(REOPEN_CHECK_INTERVAL) {
                        Ok(msg) => Some(msg),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if self.last_reopen_check.elapsed() >= self.reopen_check {
                self.reopen_if_rotated();
            }
            match msg {
                Some(Msg::Record(record)) => self.write(&record),
                Some(Msg::Flush(ack)) => {
                    let flushed = self.flush();
                    let ok = flushed && !self.failed_since_ack;
                    self.failed_since_ack = false;
                    // The caller may have timed out and gone; nothing to do then.
                    let _ = ack.try_send(ok);
                }
                None => {}
            }
            // Under steady load the queue never runs empty; flush on time as well.
            if self.dirty && self.last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush();
            }
        }
        if self.dirty {
            self.flush();
        }
    }

    fn write(&mut self, record: &AuditRecord) {
        self.line.clear();
        if let Err(error) = serde_json::to_writer(&mut self.line, record) {
            self.fail("serialise", error.into());
            return;
        }
        self.line.push(b'\n');
        match self.sink.out.write_all(&self.line) {
            Ok(()) => self.dirty = true,
            Err(error) => {
                // Whatever the buffer still holds is retried by the next flush.
                self.dirty = true;
                self.fail("write", error);
            }
        }
    }

    /// Flushes the buffer; true on success.
    fn flush(&mut self) -> bool {
        self.last_flush = Instant::now();
        match self.sink.out.flush() {
            Ok(()) => {
                self.dirty = false;
                true
            }
            Err(error) => {
                self.fail("flush", error);
                false
            }
        }
    }

    /// Reopens the file if its path now names another file or none (renamed by logrotate).
    fn reopen_if_rotated(&mut self) {
        self.last_reopen_check = Instant::now();
        let Some(file) = &self.sink.file else {
            return;
        };
        let rotated = match std::fs::metadata(&file.path) {
            Ok(meta) => (meta.dev(), meta.ino()) != (file.dev, file.ino),
            Err(error) if error.kind() == io::ErrorKind::NotFound => true,
            // Cannot tell (e.g. a directory lost its permissions): keep the open file.
            Err(error) => {
                self.fail("check", error);
                return;
            }
        };
        if !rotated {
            return;
        }
        match open_append(&file.path) {
            Ok((new, open)) => {
                // What is buffered was queued before the rotation: it belongs to the old file.
                if self.dirty {
                    self.flush();
                }
                self.sink.out = BufWriter::with_capacity(BUFFER_BYTES, Box::new(new));
                self.dirty = false;
                tracing::info!(path = %open.path.display(), "audit log reopened after rotation");
                self.sink.file = Some(open);
            }
            // Keep writing to the renamed file rather than lose lines; retried next check.
            Err(error) => self.fail("reopen", error),
        }
    }

    fn fail(&mut self, what: &'static str, error: io::Error) {
        self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        self.failed_since_ack = true;
        if self.logged_kinds.insert(error.kind()) {
            tracing::error!(
                output = ?self.shared.output,
                %error,
                "audit log {what} failed; audit lines may be lost (further errors of this kind are only counted)"
            );
        }
    }
}

/// The trace id of the request, to join the audit line with the mesh trace: W3C
/// `traceparent` first (`00-<32 hex>-<16 hex>-<2 hex>`, version 00 only, all-zero trace
/// or parent id invalid), else B3 `x-b3-traceid` (16 or 32 hex, not all zero, returned as
/// sent), else None. Only well-formed lowercase-hex values are returned (anything else:
/// None) so a client cannot inject text into the log. A malformed `traceparent` falls
/// through to B3. `header` looks a header up by its lower-case name: in the Check call's
/// gRPC metadata, where Envoy puts its own span context when it traces, or in the
/// request's headers, which carry only what the client sent.
pub fn trace_id<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    header("traceparent")
        .and_then(w3c_trace_id)
        .or_else(|| header("x-b3-traceid").and_then(b3_trace_id))
        .map(str::to_owned)
}

fn w3c_trace_id(value: &str) -> Option<&str> {
    // Exactly four fields: later versions may append fields, but only 00 is known.
    let mut fields = value.split('-');
    let (version, trace, parent, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let valid = fields.next().is_none()
        && version == "00"
        && is_lower_hex(trace, 32)
        && is_lower_hex(parent, 16)
        && is_lower_hex(flags, 2)
        && !is_all_zero(trace)
        && !is_all_zero(parent);
    valid.then_some(trace)
}

fn b3_trace_id(value: &str) -> Option<&str> {
    let valid = (is_lower_hex(value, 16) || is_lower_hex(value, 32)) && !is_all_zero(value);
    valid.then_some(value)
}

fn is_lower_hex(value: &str, len: usize) -> bool {
    value.len() == len
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_all_zero(value: &str) -> bool {
    value.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const WAIT: Duration = Duration::from_secs(10);
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn sample() -> AuditRecord {
        AuditRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_795_623_853_123),
            request_id: Some("req-1".into()),
            trace_id: None,
            user: Some("alice".into()),
            issuer: Some("https://issuer.example".into()),
            principal: Some("spiffe://cluster.local/ns/web/sa/frontend".into()),
            method: "GET".into(),
            host: "git.example".into(),
            path: "/a/changes/".into(),
            route: Some("gerrit".into()),
            rule: Some("allow[1]".into()),
            decision: "deny",
            reason: "not_in_group".into(),
            dry_run: false,
            latency_us: 42,
        }
    }

    fn file_log(dir: &tempfile::TempDir, capacity: usize, reopen: Duration) -> (AuditLog, PathBuf) {
        let path = dir.path().join("audit.log");
        let log = AuditLog::start_with(AuditOutput::File(path.clone()), capacity, reopen)
            .expect("start audit log");
        (log, path)
    }

    /// A file log whose writer has not started yet: the queue only fills.
    fn stopped_file_log(dir: &tempfile::TempDir, capacity: usize) -> (AuditLog, Writer, PathBuf) {
        let path = dir.path().join("audit.log");
        let (log, writer) = AuditLog::prepare(
            AuditOutput::File(path.clone()),
            capacity,
            REOPEN_CHECK_INTERVAL,
        )
        .expect("prepare audit log");
        (log, writer, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .expect("read audit file")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn record_becomes_one_json_line_with_fields_in_order_and_rfc3339_millis_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, path) = file_log(&dir, 16, REOPEN_CHECK_INTERVAL);
        log.record(sample());
        assert!(log.flush(WAIT));
        assert_eq!(
            lines(&path),
            [concat!(
                r#"{"time":"2026-11-25T16:24:13.123Z","request_id":"req-1","trace_id":null,"#,
                r#""user":"alice","issuer":"https://issuer.example","#,
                r#""principal":"spiffe://cluster.local/ns/web/sa/frontend","method":"GET","#,
                r#""host":"git.example","path":"/a/changes/","route":"gerrit","rule":"allow[1]","#,
                r#""decision":"deny","reason":"not_in_group","dry_run":false,"latency_us":42}"#
            )]
        );
    }

    #[test]
    fn newlines_in_values_stay_inside_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, path) = file_log(&dir, 16, REOPEN_CHECK_INTERVAL);
        let mut record = sample();
        record.user = Some("mallory\n{\"decision\":\"allow\"}".into());
        log.record(record);
        log.record(sample());
        assert!(log.flush(WAIT));
        let lines = lines(&path);
        assert_eq!(lines.len(), 2);
        let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
        assert_eq!(first["user"], "mallory\n{\"decision\":\"allow\"}");
        assert_eq!(first["decision"], "deny");
    }

    #[test]
    fn query_string_and_fragment_are_stripped_from_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, path) = file_log(&dir, 16, REOPEN_CHECK_INTERVAL);
        let mut record = sample();
        record.path = "/a/changes/?access_token=secret#frag".into();
        log.record(record);
        let mut record = sample();
        record.path = "/login#access_token=secret".into();
        log.record(record);
        assert!(log.flush(WAIT));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("secret"), "{text}");
        let paths: Vec<String> = lines(&path)
            .iter()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("json");
                value["path"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(paths, ["/a/changes/", "/login"]);
    }

    #[test]
    fn times_outside_humantimes_range_are_clamped_not_panicking() {
        let mut record = sample();
        record.time = UNIX_EPOCH - Duration::from_secs(1);
        let json = serde_json::to_string(&record).expect("serialise");
        assert!(
            json.starts_with(r#"{"time":"1970-01-01T00:00:00.000Z""#),
            "{json}"
        );
        record.time = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        let json = serde_json::to_string(&record).expect("serialise");
        assert!(
            json.starts_with(r#"{"time":"9999-12-31T23:59:59.999Z""#),
            "{json}"
        );
    }

    fn lookup<'a>(headers: &'a HashMap<String, String>) -> impl Fn(&str) -> Option<&'a str> {
        |name| headers.get(name).map(String::as_str)
    }

    #[test]
    fn trace_id_prefers_traceparent_then_b3() {
        let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let both = headers(&[
            ("traceparent", &traceparent),
            ("x-b3-traceid", "80f198ee56343ba8"),
        ]);
        assert_eq!(trace_id(lookup(&both)).as_deref(), Some(TRACE));
        let b3_short = headers(&[("x-b3-traceid", "80f198ee56343ba8")]);
        assert_eq!(
            trace_id(lookup(&b3_short)).as_deref(),
            Some("80f198ee56343ba8")
        );
        let b3_long = headers(&[("x-b3-traceid", TRACE)]);
        assert_eq!(trace_id(lookup(&b3_long)).as_deref(), Some(TRACE));
        assert_eq!(trace_id(lookup(&HashMap::new())), None);
    }

    #[test]
    fn malformed_traceparent_falls_through_to_b3() {
        let both = headers(&[
            ("traceparent", "garbage"),
            ("x-b3-traceid", "80f198ee56343ba8"),
        ]);
        assert_eq!(trace_id(lookup(&both)).as_deref(), Some("80f198ee56343ba8"));
    }

    #[test]
    fn malformed_or_injected_trace_ids_are_rejected() {
        let zeros = "0".repeat(32);
        let bad_traceparents = [
            format!("00-abc\n{TRACE}-00f067aa0ba902b7-01"),
            format!("00-{TRACE}\n{{\"x\":1}}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-00F067AA0BA902B7-01"),
            format!("00-{}-00f067aa0ba902b7-01", &TRACE[..31]),
            format!("00-{TRACE}0-00f067aa0ba902b7-01"),
            format!("00-{TRACE}-00f067aa0ba902b-01"),
            format!("00-{TRACE}-00f067aa0ba902b7-1"),
            format!("00-{zeros}-00f067aa0ba902b7-01"),
            format!("00-{TRACE}-0000000000000000-01"),
            format!("01-{TRACE}-00f067aa0ba902b7-01"),
            format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
            format!("00-{TRACE}-00f067aa0ba902b7-01,00-{TRACE}-00f067aa0ba902b7-01"),
            format!(" 00-{TRACE}-00f067aa0ba902b7-01"),
            String::new(),
        ];
        for value in &bad_traceparents {
            let h = headers(&[("traceparent", value)]);
            assert_eq!(trace_id(lookup(&h)), None, "traceparent {value:?}");
        }
        let bad_b3 = [
            "80F198EE56343BA8".to_owned(),
            "80f198ee56343ba".to_owned(),
            "80f198ee56343ba8a".to_owned(),
            format!("{TRACE}0"),
            "0000000000000000".to_owned(),
            zeros.clone(),
            "80f198ee\n56343ba8".to_owned(),
            "80f198ee56343bag".to_owned(),
            String::new(),
        ];
        for value in &bad_b3 {
            let h = headers(&[("x-b3-traceid", value)]);
            assert_eq!(trace_id(lookup(&h)), None, "x-b3-traceid {value:?}");
        }
    }

    #[test]
    fn full_queue_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, writer, path) = stopped_file_log(&dir, 4);
        let started = Instant::now();
        for _ in 0..10 {
            log.record(sample());
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "record() blocked"
        );
        assert_eq!(log.dropped(), 6);
        writer.spawn().expect("start the writer");
        assert!(log.flush(WAIT));
        assert_eq!(lines(&path).len(), 4);
        assert_eq!(log.dropped(), 6);
    }

    #[test]
    fn rotation_by_rename_sends_later_lines_to_the_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Check on every record, so the test need not wait out the real interval.
        let (log, path) = file_log(&dir, 16, Duration::ZERO);
        let mut before = sample();
        before.request_id = Some("before".into());
        log.record(before);
        assert!(log.flush(WAIT));
        let rotated = dir.path().join("audit.log.1");
        std::fs::rename(&path, &rotated).expect("rename");
        let mut after = sample();
        after.request_id = Some("after".into());
        log.record(after);
        assert!(log.flush(WAIT));
        let old = lines(&rotated);
        let new = lines(&path);
        assert_eq!(old.len(), 1);
        assert!(old[0].contains(r#""request_id":"before""#), "{old:?}");
        assert_eq!(new.len(), 1);
        assert!(new[0].contains(r#""request_id":"after""#), "{new:?}");
        let mode = std::fs::metadata(&path).expect("stat").mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "new file mode {mode:o}");
        assert_eq!(log.write_errors(), 0);
    }

    #[test]
    fn rotation_is_noticed_without_traffic_within_the_check_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, path) = file_log(&dir, 16, REOPEN_CHECK_INTERVAL);
        log.record(sample());
        assert!(log.flush(WAIT));
        std::fs::rename(&path, dir.path().join("audit.log.1")).expect("rename");
        let deadline = Instant::now() + WAIT;
        while !path.exists() {
            assert!(Instant::now() < deadline, "file not recreated");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(log.write_errors(), 0);
    }

    #[test]
    fn directory_path_fails_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = AuditLog::start(AuditOutput::File(dir.path().to_path_buf()));
        assert!(
            matches!(result, Err(AuditError::Open { ref path, .. }) if path == dir.path()),
            "{result:?}"
        );
    }

    #[test]
    fn write_errors_are_counted_and_later_writes_still_attempted() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        // A small buffer would be needed to fail on write; with the large one the failure
        // shows at flush, which is the same path a full disk takes.
        let log = AuditLog::start_with(AuditOutput::File(full.into()), 16, REOPEN_CHECK_INTERVAL)
            .expect("open /dev/full");
        log.record(sample());
        assert!(!log.flush(WAIT));
        let first = log.write_errors();
        assert!(first > 0);
        log.record(sample());
        assert!(!log.flush(WAIT), "writer stopped answering");
        assert!(log.write_errors() > first);
    }

    #[test]
    fn debug_shows_counters_not_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _writer, _path) = stopped_file_log(&dir, 4);
        log.record(sample());
        let debug = format!("{log:?}");
        assert!(debug.contains("dropped"), "{debug}");
        assert!(!debug.contains("alice"), "{debug}");
    }
}
