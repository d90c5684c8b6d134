//! The other replicas of this deployment, so that a cache invalidation (an admin request
//! or a Gerrit event) received by one replica reaches them all. A Service load-balances
//! each request to a single pod; without this, the others would serve the old groups
//! until their TTL.
//!
//! Peers are found by resolving `server.peers` (typically a headless Service, one address
//! per ready pod) at each forward. A forwarded request carries this replica's instance
//! id in [`ORIGIN_HEADER`]: receivers apply it without forwarding again, and a replica
//! that finds its own id ignores it (it resolved itself among the peers).

use axum::http::{HeaderValue, StatusCode};
use std::time::Duration;

/// Marks a forwarded request and names the replica it came from.
pub const ORIGIN_HEADER: &str = "x-mesh-authz-origin";

/// How long one forward may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// What forwarding did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Forwarded {
    /// Other replicas that applied the request.
    pub ok: usize,
    /// Peers that could not be reached or refused it.
    pub failed: usize,
}

/// The replicas to forward invalidations to.
#[derive(Debug, Clone)]
pub struct Peers {
    /// `host:port` names, each resolved to every address it has.
    names: Vec<String>,
    /// This replica's id, random per process.
    instance: String,
    http: reqwest::Client,
}

impl Peers {
    /// Peers found by resolving `names` (`host:port`).
    pub fn new(names: Vec<String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            names,
            instance: format!("{:032x}", fastrand::u128(..)),
            http,
        })
    }

    /// Whether a request carrying this origin header came from this very replica.
    pub fn is_own(&self, origin: &HeaderValue) -> bool {
        origin.as_bytes() == self.instance.as_bytes()
    }

    /// POSTs `path_and_query` with `body` (and the sender's `Authorization`, so the
    /// peers check the same token) to every peer address, concurrently.
    pub async fn forward(
        &self,
        path_and_query: &str,
        authorization: Option<&HeaderValue>,
        body: axum::body::Bytes,
    ) -> Forwarded {
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
        let mut sends = tokio::task::JoinSet::new();
        for addr in addrs {
            let mut req = self
                .http
                .post(format!("http://{addr}{path_and_query}"))
                .header(ORIGIN_HEADER, &self.instance)
                .body(body.clone());
            if let Some(auth) = authorization {
                req = req.header(axum::http::header::AUTHORIZATION, auth);
            }
            sends.spawn(async move {
                match req.send().await {
                    // This replica, found among the peers: it ignored its own forward.
                    Ok(resp) if resp.status() == StatusCode::NO_CONTENT => None,
                    Ok(resp) if resp.status().is_success() => Some(true),
                    Ok(resp) => {
                        tracing::warn!(peer = %addr, status = resp.status().as_u16(), "peer refused a forwarded invalidation");
                        Some(false)
                    }
                    Err(e) => {
                        tracing::warn!(peer = %addr, error = %e.without_url(), "cannot forward an invalidation to a peer");
                        Some(false)
                    }
                }
            });
        }
        let mut forwarded = Forwarded::default();
        while let Some(result) = sends.join_next().await {
            match result {
                Ok(Some(true)) => forwarded.ok += 1,
                Ok(Some(false)) | Err(_) => forwarded.failed += 1,
                Ok(None) => {}
            }
        }
        forwarded
    }
}
