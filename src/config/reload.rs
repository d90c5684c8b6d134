//! Watching the config file for changes.
//!
//! The file's directory is watched for file-system events (inotify), which is how a
//! Kubernetes ConfigMap update shows: the kubelet writes a new `..<timestamp>` directory
//! and swaps the `..data` symlink the config file points through. Events are coalesced,
//! then the config and the files it refers to (JWKS files, the Gerrit CA bundle) are read;
//! only when their content differs from the last version seen is the config compiled and
//! handed on. A periodic check catches what events miss (network file systems, a watcher
//! that could not be set up).

use super::{from_file_text, Config, ConfigError};
use notify::Watcher;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long events must stop before the files are read: a ConfigMap update or an
/// editor's save is several events within milliseconds.
const SETTLE: Duration = Duration::from_millis(200);

/// Watches the config file at `path`, whose current version is `current`, and calls
/// `on_change` with each new version, compiled (or why it does not compile). Runs until
/// the task is dropped.
pub async fn watch(
    path: PathBuf,
    current: Config,
    check_interval: Duration,
    mut on_change: impl FnMut(Result<Config, ConfigError>) + Send,
) {
    let mut seen = fingerprint(&path, &current.files);
    let (tx, mut events) = tokio::sync::mpsc::channel::<()>(1);
    // Kept alive for as long as the loop runs; dropping it stops the events.
    let _watcher = match file_watcher(&path, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, interval = ?check_interval, "cannot watch the config file for changes; checking it periodically only");
            None
        }
    };
    let mut files = current.files.clone();
    loop {
        tokio::select! {
            Some(()) = events.recv() => {
                // Let a burst of events settle, then read once.
                tokio::time::sleep(SETTLE).await;
                while events.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(check_interval) => {}
        }
        let now = fingerprint(&path, &files);
        if now == seen {
            continue;
        }
        seen = now;
        let result = match std::fs::read_to_string(&path) {
            Ok(text) => from_file_text(&path, &text),
            Err(source) => Err(ConfigError::Read {
                file: path.display().to_string(),
                source,
            }),
        };
        if let Ok(config) = &result {
            // The new version may refer to other files: follow those from now on.
            files.clone_from(&config.files);
            seen = fingerprint(&path, &files);
        }
        on_change(result);
    }
}

/// A watcher on the config file's directory (and, for a symlinked file, on the directory
/// of what it points at), sending a unit on every event.
fn file_watcher(
    path: &Path,
    tx: tokio::sync::mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        // Full means an event is already pending: one is enough.
        let _ = tx.try_send(());
    })?;
    let mut dirs = vec![parent(path)];
    if let Ok(target) = std::fs::canonicalize(path) {
        dirs.push(parent(&target));
    }
    dirs.dedup();
    for dir in dirs {
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A SHA-256 over what the config file and the files it refers to hold right now (an
/// unreadable file counts as its error, so a file that appears later is a change).
fn fingerprint(path: &Path, files: &[PathBuf]) -> Vec<u8> {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in std::iter::once(path).chain(files.iter().map(PathBuf::as_path)) {
        let bytes = std::fs::read(p).unwrap_or_else(|e| e.to_string().into_bytes());
        // Lengths first, so the parts cannot run into each other.
        digest.update(&(bytes.len() as u64).to_le_bytes());
        digest.update(&bytes);
    }
    digest.finish().as_ref().to_vec()
}
