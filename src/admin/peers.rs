//! The other replicas of this deployment, so that a cache invalidation (an admin request
//! or a Gerrit event) received by one replica reaches them all. A Service load-balances
//! each request to a single pod; without this, the others would serve the old groups
//! until their TTL.
//!
//! Peers are found by resolving `server.peers` (typically a headless Service, one address
//! per pod) at each forward. A forwarded request carries this replica's instance id in
//! [`ORIGIN_HEADER`]: receivers apply it without forwarding again, and a replica that
//! finds its own id ignores it (it resolved itself among the peers).
//!
//! Forwards run in tasks of their own, so a sender that hangs up cancels none of them.
//! The first attempt at each peer is reported to the sender; one that failed is retried
//! in the background ([`RETRY_DELAYS`]), since nothing else would: the sender got its
//! answer and will not send again.

use crate::telemetry::Metrics;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Marks a forwarded request and names the replica it came from.
pub const ORIGIN_HEADER: &str = "x-mesh-authz-origin";

/// How long one attempt at a forward may take. A peer answers as soon as it has dropped
/// the cached holders of a changed group, which takes milliseconds (it lists the group's
/// members afterwards, without keeping the sender waiting); a peer that has not answered
/// in 2 s is stopped or cut off. The answer to the sender waits for the first attempts,
/// so this also keeps it well inside the 5 s socket timeout of Gerrit's webhooks plugin.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits before each retry of a forward whose attempt failed: seven attempts over about
/// a minute. A replica stopped by its node (CPU throttling, a frozen cgroup, a debugger)
/// or cut off by a network partition is usually back within that; one gone for longer
/// has most likely been replaced, and a new replica starts with an empty cache. A
/// forward given up on is logged as an error and counted
/// (`mesh_authz_peer_forwards_total{result="gave_up"}`): that replica serves the old
/// groups until `cache_ttl`.
const RETRY_DELAYS: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(15),
    Duration::from_secs(30),
];

/// What the first attempts at forwarding did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Forwarded {
    /// Other replicas that answered that they applied the request.
    pub ok: usize,
    /// Peers that did not: unreachable, timed out, or refused it.
    pub failed: usize,
    /// Of those, how many are being retried in the background (all but those that
    /// refused it for good, like a peer without `gerrit.events`).
    pub retrying: usize,
}

/// How one attempt at one peer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// This replica, found among the peers: it ignored its own forward.
    Own,
    /// The peer applied it.
    Applied,
    /// Unreachable, timed out, a server error, or a token it does not (yet) accept (a
    /// rotated Secret reaches the replicas' mounts at different times): worth retrying.
    Failed,
    /// Refused for a reason a retry does not change (not enabled there, say).
    Refused,
}

/// One request to pass on.
#[derive(Clone)]
struct Forward {
    path_and_query: String,
    /// The sender's `Authorization`, so the peers check the same token. Never logged.
    authorization: Option<HeaderValue>,
    body: Bytes,
}

/// The replicas to forward invalidations to.
#[derive(Clone)]
pub struct Peers {
    /// `host:port` names, each resolved to every address it has.
    names: Vec<String>,
    /// This replica's id, random per process.
    instance: String,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// Peers found by resolving `names` (`host:port`); forwards are counted in `metrics`.
    pub fn new(names: Vec<String>, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            names,
            instance: format!("{:032x}", fastrand::u128(..)),
            http,
            metrics,
        })
    }

    /// Whether a request carrying this origin header came from this very replica.
    pub fn is_own(&self, origin: &HeaderValue) -> bool {
        origin.as_bytes() == self.instance.as_bytes()
    }

    /// Starts POSTing `path_and_query` with `body` and the sender's `authorization` to
    /// every peer address, concurrently, in tasks of their own. The handle yields what
    /// the first attempts did; failed ones go on being retried after it.
    pub fn forward(
        &self,
        path_and_query: &str,
        authorization: Option<&HeaderValue>,
        body: Bytes,
    ) -> JoinHandle<Forwarded> {
        let forward = Forward {
            path_and_query: path_and_query.to_string(),
            authorization: authorization.cloned(),
            body,
        };
        let peers = self.clone();
        tokio::spawn(async move { peers.forward_to_all(forward).await })
    }

    async fn forward_to_all(self, forward: Forward) -> Forwarded {
        let mut addrs = Vec::new();
        for name in &self.names {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(found) => addrs.extend(found),
                Err(e) => {
                    tracing::warn!(peers = %name, error = %e, "cannot resolve peers; invalidation reaches this replica only");
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        let mut first_attempts = Vec::new();
        for addr in addrs {
            let (report, first) = oneshot::channel();
            tokio::spawn(self.clone().deliver(addr, forward.clone(), report));
            first_attempts.push(first);
        }
        let mut forwarded = Forwarded::default();
        for first in first_attempts {
            match first.await {
                Ok(Attempt::Own) => {}
                Ok(Attempt::Applied) => forwarded.ok += 1,
                Ok(Attempt::Failed) => {
                    forwarded.failed += 1;
                    forwarded.retrying += 1;
                }
                Ok(Attempt::Refused) | Err(_) => forwarded.failed += 1,
            }
        }
        forwarded
    }

    /// Forwards to one peer, reports the first attempt, then retries a failed one.
    async fn deliver(self, addr: SocketAddr, forward: Forward, report: oneshot::Sender<Attempt>) {
        let first = self.attempt(addr, &forward).await;
        let _ = report.send(first);
        if first != Attempt::Failed {
            return;
        }
        for (retry, delay) in RETRY_DELAYS.iter().enumerate() {
            tokio::time::sleep(*delay).await;
            match self.attempt(addr, &forward).await {
                Attempt::Failed => {}
                Attempt::Refused => return,
                Attempt::Own | Attempt::Applied => {
                    tracing::info!(peer = %addr, retry = retry + 1, "a retried forward reached the peer");
                    return;
                }
            }
        }
        self.metrics.peer_forward("gave_up");
        tracing::error!(
            peer = %addr,
            attempts = RETRY_DELAYS.len() + 1,
            "gave up forwarding an invalidation: that replica serves the old groups until cache_ttl"
        );
    }

    /// One POST to one peer, counted.
    async fn attempt(&self, addr: SocketAddr, forward: &Forward) -> Attempt {
        let mut req = self
            .http
            .post(format!("http://{addr}{}", forward.path_and_query))
            .header(ORIGIN_HEADER, &self.instance)
            .body(forward.body.clone());
        if let Some(auth) = &forward.authorization {
            req = req.header(axum::http::header::AUTHORIZATION, auth);
        }
        let attempt = match req.send().await {
            Ok(resp) if resp.status() == StatusCode::NO_CONTENT => Attempt::Own,
            Ok(resp) if resp.status().is_success() => Attempt::Applied,
            Ok(resp) => {
                let status = resp.status();
                let retry = status.is_server_error()
                    || matches!(
                        status,
                        StatusCode::UNAUTHORIZED
                            | StatusCode::FORBIDDEN
                            | StatusCode::TOO_MANY_REQUESTS
                    );
                tracing::warn!(peer = %addr, status = status.as_u16(), retry, "peer refused a forwarded invalidation");
                if retry {
                    Attempt::Failed
                } else {
                    Attempt::Refused
                }
            }
            Err(e) => {
                tracing::warn!(peer = %addr, error = %e.without_url(), "cannot forward an invalidation to a peer");
                Attempt::Failed
            }
        };
        match attempt {
            Attempt::Own => {}
            Attempt::Applied => self.metrics.peer_forward("ok"),
            Attempt::Failed | Attempt::Refused => self.metrics.peer_forward("failed"),
        }
        attempt
    }
}
