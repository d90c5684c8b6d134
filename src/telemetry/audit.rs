//! The audit log: one JSON line per authorization decision.
//!
//! [`AuditLog::record`] serialises the line on the calling thread, straight into a buffer
//! that only that thread normally touches (one per thread, in a fixed set of shards), and
//! returns: no allocation, no hand-off per line and no wake-up of another thread. A writer
//! thread swaps the buffers out and writes them in one batch per shard every
//! [`WRITE_INTERVAL`], or sooner when a buffer fills past a quarter of its bound. So a
//! slow or full disk never delays a Check, and memory stays bounded: a shard over its bound
//! drops lines and counts them ([`AuditLog::dropped`]).
//!
//! Lines of one thread stay in order; lines of different threads are interleaved by batch,
//! so the file is ordered within [`WRITE_INTERVAL`] (each line has its `time`).
//!
//! A file output follows logrotate's `create` mode (rename, then a new file): about once a
//! second the writer checks whether the path still names the open file and reopens it if
//! not. Lines written before the rename is noticed still go to the renamed file, so rotate
//! with `delaycompress`.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of lines waiting to be written, across all shards: at 70,000 checks/s of 450-byte
/// lines, over half a second of peak traffic, so only a stalled disk drops lines.
const BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// How often the writer writes out what was recorded (and flushes it): the longest a line
/// waits before it reaches the output.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(100);
/// How often the writer checks whether the file was rotated away.
const REOPEN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// `flush` timeouts beyond this are cut to it, so the deadline cannot overflow.
const MAX_FLUSH_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// One decision as the audit log records it. Never holds a token, a cookie, a header value
/// other than the ids below, or a query string. Borrows everything: recording a decision
/// copies nothing but the serialised line.
#[derive(Debug, Clone, Copy)]
pub struct AuditRecord<'a> {
    /// When the decision was made; written as RFC 3339 UTC with milliseconds.
    pub time: SystemTime,
    /// Envoy's `x-request-id`.
    pub request_id: Option<&'a str>,
    /// The mesh trace id, see [`trace_id`].
    pub trace_id: Option<&'a str>,
    /// The authenticated user.
    pub user: Option<&'a str>,
    /// The issuer of the user's token.
    pub issuer: Option<&'a str>,
    /// The calling workload's SPIFFE id (`source.principal`).
    pub principal: Option<&'a str>,
    /// What the user proved who they are with: `token`, `session` (browser sign-in) or
    /// `workload` (a rule's `as_user`); none without a user.
    pub credential: Option<&'a str>,
    /// HTTP method.
    pub method: &'a str,
    /// Host or `:authority`.
    pub host: &'a str,
    /// Path without the query string (queries can carry tokens); [`AuditLog::record`]
    /// strips one a caller passes anyway.
    pub path: &'a str,
    /// The route that matched.
    pub route: Option<&'a str>,
    /// Which alternative of the route decided, e.g. `allow[1]`.
    pub rule: Option<&'a str>,
    /// `allow`, `deny` or `unavailable`.
    pub decision: &'static str,
    /// Short stable reason code, e.g. `not_in_group`.
    pub reason: &'a str,
    /// What the code leaves out: which group or claim was missing, why a Check could not
    /// be decided (`not a member of name:team-a`); none on an allow.
    pub detail: Option<&'a str>,
    /// The route is in dry-run: `decision` is what would have happened; the request was
    /// allowed.
    pub dry_run: bool,
    /// Time taken to decide, in microseconds.
    pub latency_us: u64,
}

impl AuditRecord<'_> {
    /// Appends the record as one JSON line (newline included), fields in declaration
    /// order, as `serde_json` would write it, without its per-byte escaping: each string
    /// is scanned eight bytes at a time and copied whole unless it needs escaping.
    fn write_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        write_time(out, self.time);
        out.push(b'"');
        // One reservation for the whole line, unless a value needs escaping.
        let values = [
            self.request_id,
            self.trace_id,
            self.user,
            self.issuer,
            self.principal,
            self.credential,
        ]
        .map(|v| v.map_or(0, str::len));
        out.reserve(
            256 + values.iter().sum::<usize>()
                + self.method.len()
                + self.host.len()
                + self.path.len()
                + self.route.map_or(0, str::len)
                + self.rule.map_or(0, str::len)
                + self.reason.len()
                + self.detail.map_or(0, str::len),
        );
        field(out, b",\"request_id\":", self.request_id);
        field(out, b",\"trace_id\":", self.trace_id);
        field(out, b",\"user\":", self.user);
        field(out, b",\"issuer\":", self.issuer);
        field(out, b",\"principal\":", self.principal);
        field(out, b",\"credential\":", self.credential);
        field(out, b",\"method\":", Some(self.method));
        field(out, b",\"host\":", Some(self.host));
        field(out, b",\"path\":", Some(self.path));
        field(out, b",\"route\":", self.route);
        field(out, b",\"rule\":", self.rule);
        field(out, b",\"decision\":", Some(self.decision));
        field(out, b",\"reason\":", Some(self.reason));
        field(out, b",\"detail\":", self.detail);
        out.extend_from_slice(b",\"dry_run\":");
        out.extend_from_slice(if self.dry_run { b"true" } else { b"false" });
        out.extend_from_slice(b",\"latency_us\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.latency_us).as_bytes());
        out.extend_from_slice(b"}\n");
    }
}

/// `key` (`,"name":`) and the value, a JSON string or `null`. Inlined, so that each key
/// is copied as a constant of known length rather than through `memcpy`.
#[inline(always)]
fn field(out: &mut Vec<u8>, key: &'static [u8], value: Option<&str>) {
    out.extend_from_slice(key);
    match value {
        Some(value) => json_string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-25T16:24:13.123Z`.
fn write_time(out: &mut Vec<u8>, time: SystemTime) {
    // humantime panics before 1970 and fails after 9999; a wrong clock must not stop the
    // writer, so the time is clamped into that range (a four-digit year: fixed width).
    let latest = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    let since = time
        .clamp(UNIX_EPOCH, latest)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (second, millis) = (since.as_secs(), since.subsec_millis());
    // Formatting the date is most of a line's cost and changes once a second: each
    // thread keeps the last second's text.
    thread_local! {
        static LAST_SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let text = LAST_SECOND.with(|last| {
        let (cached, text) = last.get();
        if cached == second {
            return text;
        }
        let mut text = [0; 19];
        let full = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second));
        // `YYYY-MM-DDTHH:MM:SSZ`: everything but the `Z`.
        text.copy_from_slice(&full.to_string().as_bytes()[..19]);
        last.set((second, text));
        text
    });
    let digit = |n: u32| b'0' + (n % 10) as u8;
    out.extend_from_slice(&text);
    out.extend_from_slice(&[
        b'.',
        digit(millis / 100),
        digit(millis / 10),
        digit(millis),
        b'Z',
    ]);
}

/// `value` as a JSON string, escaped as `serde_json` escapes it: `"` and `\\`, the short
/// forms `\b \t \n \f \r`, other control characters as `\u00XX`; everything else as is.
fn json_string(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut clean = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping; the last few padded with a
        // byte that needs none.
        let word = match bytes.get(i..i + 8) {
            Some(chunk) => u64::from_le_bytes(chunk.try_into().unwrap_or_default()),
            None => {
                let mut tail = [b'a'; 8];
                tail[..bytes.len() - i].copy_from_slice(&bytes[i..]);
                u64::from_le_bytes(tail)
            }
        };
        if !needs_escape(word) {
            i += 8;
            continue;
        }
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x08 => Some(b"\\b"),
            b'\t' => Some(b"\\t"),
            b'\n' => Some(b"\\n"),
            0x0c => Some(b"\\f"),
            b'\r' => Some(b"\\r"),
            0..=0x1f => None,
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[clean..i]);
        match escape {
            Some(short) => out.extend_from_slice(short),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        i += 1;
        clean = i;
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
}

/// Whether any byte of `word` is below 0x20, `"` or `\\` (bit tricks from "Bit Twiddling
/// Hacks": a byte-wise "less than" and "has zero byte").
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH != 0;
    below_space
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * u64::from(b'\\')))
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

/// The running audit log: per-thread line buffers drained by a writer thread.
///
/// Cloning gives another handle to the same log. The writer exits once every handle is
/// dropped and what was recorded is written out; call [`AuditLog::flush`] at shutdown,
/// since the process may exit before that.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

/// How the buffers are cut up.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Buffers; threads are spread over them.
    shards: usize,
    /// Bound on one buffer, in bytes.
    shard_bytes: usize,
}

impl Limits {
    /// Twice as many shards as cores (so that Tokio's workers rarely share one), sharing
    /// [`BUFFER_BYTES`].
    fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let shards = (2 * cores).clamp(2, 64);
        Self {
            shards,
            shard_bytes: BUFFER_BYTES / shards,
        }
    }
}

/// State both the handles and the writer see.
struct Shared {
    output: AuditOutput,
    shards: Box<[Mutex<Vec<u8>>]>,
    shard_bytes: usize,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    /// The writer thread, to wake it early (a buffer filling up, a flush).
    writer: OnceLock<std::thread::Thread>,
    flushes: Mutex<Flushes>,
    flushed: Condvar,
}

/// Flush requests and answers, numbered.
#[derive(Debug, Default)]
struct Flushes {
    /// The last flush asked for.
    requested: u64,
    /// The last flush answered, and whether it went without an error.
    answered: u64,
    ok: bool,
}

impl Shared {
    fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// The flush bookkeeping; never poisoned for good (a panic elsewhere leaves it valid).
    fn flushes(&self) -> MutexGuard<'_, Flushes> {
        self.flushes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Locks a shard; a panic while it was held left at most a partial line, cut off by the
/// next record.
fn lock(shard: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

/// This thread's shard number (modulo the shard count): threads are numbered as they
/// first record, so a few worker threads get distinct shards.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SLOT.with(|slot| {
        slot.get().unwrap_or_else(|| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            slot.set(Some(n));
            n
        })
    })
}

impl std::fmt::Debug for AuditLog {
    // Counters only: buffered lines are not for debug output.
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
        Self::start_with(output, Limits::for_this_machine(), REOPEN_CHECK_INTERVAL)
    }

    /// [`AuditLog::start`] with chosen buffers and rotation check interval (tests).
    fn start_with(
        output: AuditOutput,
        limits: Limits,
        reopen_check: Duration,
    ) -> Result<Self, AuditError> {
        let (log, writer) = Self::prepare(output, limits, reopen_check)?;
        writer.spawn()?;
        Ok(log)
    }

    /// The log and its writer, not yet running: lines accumulate (and, once a buffer is
    /// full, are dropped) until [`Writer::spawn`].
    fn prepare(
        output: AuditOutput,
        limits: Limits,
        reopen_check: Duration,
    ) -> Result<(Self, Writer), AuditError> {
        let sink = Sink::open(&output)?;
        let shards = limits.shards.max(1);
        let shared = Arc::new(Shared {
            output,
            shards: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            shard_bytes: limits.shard_bytes,
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            writer: OnceLock::new(),
            flushes: Mutex::new(Flushes::default()),
            flushed: Condvar::new(),
        });
        let now = Instant::now();
        let writer = Writer {
            sink,
            shared: Arc::clone(&shared),
            batch: Vec::new(),
            reopen_check,
            last_reopen_check: now,
            failed_since_ack: false,
            logged_kinds: HashSet::new(),
        };
        Ok((Self { shared }, writer))
    }

    /// Records a decision: serialises the line into this thread's buffer. Never blocks on
    /// the output and never fails the caller; a line that does not fit its buffer's bound
    /// is dropped and counted. A query string or fragment left in `path` is cut off.
    pub fn record(&self, record: &AuditRecord<'_>) {
        let record = AuditRecord {
            path: crate::request::split_path(record.path).0,
            ..*record
        };
        let shared = &*self.shared;
        let shard = &shared.shards[thread_slot() % shared.shards.len()];
        let mut buffer = lock(shard);
        let start = buffer.len();
        record.write_line(&mut buffer);
        if buffer.len() > shared.shard_bytes {
            buffer.truncate(start);
            drop(buffer);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            shared.wake_writer();
            return;
        }
        // Wake the writer once per buffer as it passes a quarter of its bound, so it
        // writes long before the bound; otherwise it comes by itself.
        let early = shared.shard_bytes / 4;
        let crossed = start < early && buffer.len() >= early;
        drop(buffer);
        if crossed {
            shared.wake_writer();
        }
    }

    /// Lines dropped because their buffer was full (for a metric).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Failed writes, flushes and reopens of the output (for a metric). The lines of a
    /// failed write are lost; the first failure of each kind is also logged.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Writes out everything recorded so far and flushes; for shutdown (and tests). Blocks
    /// the calling thread for at most `timeout` (call it from `spawn_blocking` in async
    /// code).
    ///
    /// Returns true if the writer wrote everything recorded before the call without a
    /// write error since the previous `flush`; false on timeout or error.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout.min(MAX_FLUSH_WAIT);
        let shared = &*self.shared;
        let mut flushes = shared.flushes();
        flushes.requested += 1;
        let mine = flushes.requested;
        shared.wake_writer();
        while flushes.answered < mine {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            flushes = shared
                .flushed
                .wait_timeout(flushes, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        flushes.ok
    }
}

/// The output: stdout or a file, written in whole batches.
struct Sink {
    out: Box<dyn Write + Send>,
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
                out: Box::new(io::stdout()),
                file: None,
            }),
            AuditOutput::File(path) => {
                let (file, open) = open_append(path).map_err(|source| AuditError::Open {
                    path: path.clone(),
                    source,
                })?;
                Ok(Self {
                    out: Box::new(file),
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
    sink: Sink,
    shared: Arc<Shared>,
    /// A shard's buffer, swapped out and written; its allocation goes back to the shard at
    /// the next swap, so two buffers per shard are ever allocated.
    batch: Vec<u8>,
    reopen_check: Duration,
    last_reopen_check: Instant,
    /// An error happened since the last flush request was answered.
    failed_since_ack: bool,
    /// Error kinds already logged: a full disk would otherwise log once per batch.
    logged_kinds: HashSet<io::ErrorKind>,
}

impl Writer {
    /// Runs the writer on a thread of its own until every handle of the log is dropped.
    fn spawn(self) -> Result<(), AuditError> {
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || self.run())
            .map_err(AuditError::Spawn)?;
        let _ = shared.writer.set(handle.thread().clone());
        // Lines recorded before the writer was known have no wake-up to wait for.
        shared.wake_writer();
        Ok(())
    }

    fn run(mut self) {
        loop {
            std::thread::park_timeout(WRITE_INTERVAL);
            // Every handle gone: write out what is left and stop.
            let last = Arc::strong_count(&self.shared) == 1;
            // Read before writing out: whatever was recorded before the request is in the
            // buffers now, so this round answers it.
            let requested = self.shared.flushes().requested;
            if self.last_reopen_check.elapsed() >= self.reopen_check {
                self.reopen_if_rotated();
            }
            self.write_out();
            let answered = self.shared.flushes().answered;
            if requested > answered {
                let mut flushes = self.shared.flushes();
                flushes.answered = requested;
                flushes.ok = !self.failed_since_ack;
                self.failed_since_ack = false;
                drop(flushes);
                self.shared.flushed.notify_all();
            }
            if last {
                return;
            }
        }
    }

    /// Swaps each shard's buffer out and writes it, then flushes the output.
    fn write_out(&mut self) {
        let mut wrote = false;
        for i in 0..self.shared.shards.len() {
            {
                let mut buffer = lock(&self.shared.shards[i]);
                if buffer.is_empty() {
                    continue;
                }
                self.batch.clear();
                std::mem::swap(&mut *buffer, &mut self.batch);
            }
            wrote = true;
            if let Err(error) = self.sink.out.write_all(&self.batch) {
                self.fail("write", error);
            }
        }
        if wrote {
            if let Err(error) = self.sink.out.flush() {
                self.fail("flush", error);
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
                // Nothing is held back in the sink: everything not yet written goes to the
                // new file.
                self.sink.out = Box::new(new);
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
pub fn trace_id<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    header("traceparent")
        .and_then(w3c_trace_id)
        .or_else(|| header("x-b3-traceid").and_then(b3_trace_id))
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

    fn sample() -> AuditRecord<'static> {
        AuditRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_795_623_853_123),
            request_id: Some("req-1"),
            trace_id: None,
            user: Some("alice"),
            issuer: Some("https://issuer.example"),
            principal: Some("spiffe://cluster.local/ns/web/sa/frontend"),
            credential: Some("token"),
            method: "GET",
            host: "git.example",
            path: "/a/changes/",
            route: Some("gerrit"),
            rule: Some("allow[1]"),
            decision: "deny",
            reason: "not_in_group",
            detail: Some("not a member of name:team-a"),
            dry_run: false,
            latency_us: 42,
        }
    }

    /// The length of [`sample`]'s line, newline included.
    fn sample_line_bytes() -> usize {
        let mut line = Vec::new();
        sample().write_line(&mut line);
        line.len()
    }

    fn escaped(value: &str) -> String {
        let mut out = Vec::new();
        json_string(&mut out, value);
        String::from_utf8(out).expect("escaping keeps UTF-8")
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u8..=0x7f)
            .map(|b| format!("ab{}cdefghijklmnop", b as char))
            .collect();
        cases.extend(
            [
                "",
                "\"",
                "\\",
                "plain-ascii-longer-than-eight",
                "tab\there, newline\n, cr\r, ff\u{c}, bs\u{8}, nul\u{0}, unit\u{1f}, del\u{7f}",
                "ünïcödé ✓ 𝄞 and \"quotes\" \\ back",
                "12345678\n12345678\"",
            ]
            .map(String::from),
        );
        for case in &cases {
            assert_eq!(
                escaped(case),
                serde_json::to_string(case).expect("serialise"),
                "{case:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(value in "\\PC*|[\\x00-\\x7f]*") {
            proptest::prop_assert_eq!(escaped(&value), serde_json::to_string(&value).unwrap());
        }
    }

    /// Room for `lines` sample lines in each of `shards` buffers.
    fn limits(shards: usize, lines: usize) -> Limits {
        Limits {
            shards,
            shard_bytes: lines * sample_line_bytes(),
        }
    }

    fn file_log(dir: &tempfile::TempDir, lines: usize, reopen: Duration) -> (AuditLog, PathBuf) {
        let path = dir.path().join("audit.log");
        let log = AuditLog::start_with(AuditOutput::File(path.clone()), limits(4, lines), reopen)
            .expect("start audit log");
        (log, path)
    }

    /// A file log whose writer has not started yet: the buffers only fill.
    fn stopped_file_log(dir: &tempfile::TempDir, lines: usize) -> (AuditLog, Writer, PathBuf) {
        let path = dir.path().join("audit.log");
        let (log, writer) = AuditLog::prepare(
            AuditOutput::File(path.clone()),
            limits(1, lines),
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
        log.record(&sample());
        assert!(log.flush(WAIT));
        assert_eq!(
            lines(&path),
            [concat!(
                r#"{"time":"2026-11-25T16:24:13.123Z","request_id":"req-1","trace_id":null,"#,
                r#""user":"alice","issuer":"https://issuer.example","#,
                r#""principal":"spiffe://cluster.local/ns/web/sa/frontend","credential":"token","#,
                r#""method":"GET","#,
                r#""host":"git.example","path":"/a/changes/","route":"gerrit","rule":"allow[1]","#,
                r#""decision":"deny","reason":"not_in_group","detail":"not a member of name:team-a","dry_run":false,"latency_us":42}"#
            )]
        );
    }

    #[test]
    fn newlines_in_values_stay_inside_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, path) = file_log(&dir, 16, REOPEN_CHECK_INTERVAL);
        let mut record = sample();
        record.user = Some("mallory\n{\"decision\":\"allow\"}");
        log.record(&record);
        log.record(&sample());
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
        record.path = "/a/changes/?access_token=secret#frag";
        log.record(&record);
        let mut record = sample();
        record.path = "/login#access_token=secret";
        log.record(&record);
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

    proptest::proptest! {
        /// The per-thread second cache never shows a stale second: any sequence of times
        /// (repeats, steps back, jumps) reads as humantime formats each one.
        #[test]
        fn times_read_as_rfc3339_millis_whatever_came_before(
            millis in proptest::collection::vec(0u64..253_402_300_799_999, 1..6),
            repeat in 0usize..3,
        ) {
            // Each time, then the last millisecond of its second (a cache hit), then some again.
            let same_second = millis.iter().map(|ms| ms - ms % 1000 + 999);
            let times: Vec<u64> = millis.iter().copied().zip(same_second)
                .flat_map(|(a, b)| [a, b])
                .chain(millis.iter().copied().take(repeat))
                .collect();
            for ms in times {
                let time = UNIX_EPOCH + Duration::from_millis(ms);
                let mut out = Vec::new();
                write_time(&mut out, time);
                proptest::prop_assert_eq!(
                    String::from_utf8(out).expect("UTF-8"),
                    humantime::format_rfc3339_millis(time).to_string()
                );
            }
        }
    }

    #[test]
    fn times_outside_humantimes_range_are_clamped_not_panicking() {
        let line = |record: &AuditRecord| {
            let mut out = Vec::new();
            record.write_line(&mut out);
            String::from_utf8(out).expect("UTF-8")
        };
        let mut record = sample();
        record.time = UNIX_EPOCH - Duration::from_secs(1);
        let json = line(&record);
        assert!(
            json.starts_with(r#"{"time":"1970-01-01T00:00:00.000Z""#),
            "{json}"
        );
        record.time = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        let json = line(&record);
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
        assert_eq!(trace_id(lookup(&both)), Some(TRACE));
        let b3_short = headers(&[("x-b3-traceid", "80f198ee56343ba8")]);
        assert_eq!(trace_id(lookup(&b3_short)), Some("80f198ee56343ba8"));
        let b3_long = headers(&[("x-b3-traceid", TRACE)]);
        assert_eq!(trace_id(lookup(&b3_long)), Some(TRACE));
        assert_eq!(trace_id(lookup(&HashMap::new())), None);
    }

    #[test]
    fn malformed_traceparent_falls_through_to_b3() {
        let both = headers(&[
            ("traceparent", "garbage"),
            ("x-b3-traceid", "80f198ee56343ba8"),
        ]);
        assert_eq!(trace_id(lookup(&both)), Some("80f198ee56343ba8"));
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
            log.record(&sample());
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
    fn lines_from_many_threads_are_all_written_each_threads_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, path) = file_log(&dir, 10_000, REOPEN_CHECK_INTERVAL);
        std::thread::scope(|scope| {
            for t in 0..8 {
                let log = log.clone();
                scope.spawn(move || {
                    for i in 0..1000 {
                        let id = format!("{t}-{i}");
                        let mut record = sample();
                        record.request_id = Some(&id);
                        log.record(&record);
                    }
                });
            }
        });
        assert!(log.flush(WAIT));
        assert_eq!(log.dropped(), 0);
        let mut next = [0; 8];
        for line in lines(&path) {
            let value: serde_json::Value = serde_json::from_str(&line).expect("json");
            let id = value["request_id"].as_str().expect("request_id");
            let (t, i) = id.split_once('-').expect("t-i");
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s lines out of order");
            next[t] += 1;
        }
        assert_eq!(next, [1000; 8]);
    }

    #[test]
    fn lines_reach_the_output_without_a_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, path) = file_log(&dir, 16, REOPEN_CHECK_INTERVAL);
        log.record(&sample());
        let deadline = Instant::now() + WAIT;
        while lines(&path).is_empty() {
            assert!(Instant::now() < deadline, "line not written");
            std::thread::sleep(WRITE_INTERVAL / 4);
        }
        assert_eq!(lines(&path).len(), 1);
    }

    #[test]
    fn rotation_by_rename_sends_later_lines_to_the_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Check on every record, so the test need not wait out the real interval.
        let (log, path) = file_log(&dir, 16, Duration::ZERO);
        let mut before = sample();
        before.request_id = Some("before");
        log.record(&before);
        assert!(log.flush(WAIT));
        let rotated = dir.path().join("audit.log.1");
        std::fs::rename(&path, &rotated).expect("rename");
        let mut after = sample();
        after.request_id = Some("after");
        log.record(&after);
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
        log.record(&sample());
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
        let log = AuditLog::start_with(
            AuditOutput::File(full.into()),
            limits(4, 16),
            REOPEN_CHECK_INTERVAL,
        )
        .expect("open /dev/full");
        log.record(&sample());
        assert!(!log.flush(WAIT));
        let first = log.write_errors();
        assert!(first > 0);
        log.record(&sample());
        assert!(!log.flush(WAIT), "writer stopped answering");
        assert!(log.write_errors() > first);
    }

    #[test]
    fn debug_shows_counters_not_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _writer, _path) = stopped_file_log(&dir, 4);
        log.record(&sample());
        let debug = format!("{log:?}");
        assert!(debug.contains("dropped"), "{debug}");
        assert!(!debug.contains("alice"), "{debug}");
    }
}
