//! Tokio's paused clock for tests that also do real I/O (HTTP to the fakes, gRPC).
//!
//! A paused clock normally auto-advances to the next timer whenever the runtime waits,
//! which would fire every HTTP timeout while a real socket is still answering. Tokio does
//! not auto-advance while a `spawn_blocking` task runs, so [`manual_clock`] parks one:
//! time then moves only by `tokio::time::advance`, and TTLs are tested without sleeps.

use std::time::Duration;

/// Holds auto-advance off until dropped.
pub struct ManualClock {
    release: Option<std::sync::mpsc::Sender<()>>,
}

/// Stops the paused clock from auto-advancing. Call inside a
/// `#[tokio::test(start_paused = true)]` test. Nothing on the tested path may then sleep
/// (retry backoff, for one) unless the test advances the clock past it.
pub fn manual_clock() -> ManualClock {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = wait.recv();
    });
    ManualClock {
        release: Some(release),
    }
}

impl Drop for ManualClock {
    fn drop(&mut self) {
        self.release.take();
    }
}

/// Waits in real time (the virtual clock stands still), for polling real I/O.
pub async fn real_sleep(d: Duration) {
    tokio::task::spawn_blocking(move || std::thread::sleep(d))
        .await
        .unwrap();
}

/// Polls `done` every few real milliseconds, for at most ten real seconds.
pub async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..2000 {
        if done().await {
            return;
        }
        real_sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}
