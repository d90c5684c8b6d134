//! A TCP proxy in front of a replica's admin port that can be paused, like a replica
//! stopped with SIGSTOP (or cut off by a partition): while paused, connections are
//! accepted, as the kernel does for a stopped process, and never answered. Resuming drops
//! the connections held meanwhile (their senders gave up on them) and passes new ones on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

#[derive(Default)]
struct ProxyState {
    paused: AtomicBool,
    /// Connections accepted while paused, never read.
    held: Mutex<Vec<TcpStream>>,
    /// Connections accepted while paused, in all.
    held_total: AtomicUsize,
    /// Connections being passed on; aborted at a pause.
    pipes: Mutex<JoinSet<()>>,
}

/// A running proxy.
pub struct PausableProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

impl PausableProxy {
    /// Listens on an ephemeral loopback port and passes connections on to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    if state.paused.load(Ordering::SeqCst) {
                        state.held_total.fetch_add(1, Ordering::SeqCst);
                        state.held.lock().unwrap().push(conn);
                        continue;
                    }
                    state.pipes.lock().unwrap().spawn(async move {
                        if let Ok(mut upstream) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                        }
                    });
                }
            }
        });
        Self { addr, state, task }
    }

    /// Stops answering: open connections are cut, new ones are accepted and held.
    pub fn pause(&self) {
        self.state.paused.store(true, Ordering::SeqCst);
        self.state.pipes.lock().unwrap().abort_all();
    }

    /// Answers again; the connections held while paused are dropped.
    pub fn resume(&self) {
        self.state.held.lock().unwrap().clear();
        self.state.paused.store(false, Ordering::SeqCst);
    }

    /// Connections accepted while paused, in all.
    pub fn held(&self) -> usize {
        self.state.held_total.load(Ordering::SeqCst)
    }
}

impl Drop for PausableProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.pipes.lock().unwrap().abort_all();
    }
}
