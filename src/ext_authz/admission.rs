//! Admission of Check calls, as they arrive: a bound on the checks in flight, counted from
//! the moment a call arrives on its connection until its answer is written, so the bound
//! covers checks waiting to be run as well as checks running.
//!
//! Past the bound a call is answered UNAVAILABLE at once, before it is decoded or queued:
//! under overload, waiting would only answer checks after Envoy's timeout (when Envoy no
//! longer listens) while holding their memory. A call that waited past its own deadline
//! (`grpc-timeout`, which Envoy sets from its ext_authz timeout) is answered
//! DEADLINE_EXCEEDED without being decided, see [`expired`].

use crate::telemetry::Metrics;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The gRPC path of Check; other calls (health, reflection) are not bounded.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// When a call arrived, for [`expired`].
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

/// The tower layer that admits Check calls (`server.max_concurrent_checks`).
#[derive(Debug, Clone)]
pub struct Admission {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    in_flight: AtomicUsize,
    max: usize,
    metrics: Arc<Metrics>,
    /// When a shed call was last logged (seconds since `started`, plus one; 0: never), so
    /// an overload logs once a second, not once per call.
    last_logged: AtomicU64,
    started: Instant,
}

impl Admission {
    /// Admits at most `max` Check calls at once, counting the others in `metrics`.
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            state: Arc::new(State {
                in_flight: AtomicUsize::new(0),
                max: max.max(1),
                metrics,
                last_logged: AtomicU64::new(0),
                started: Instant::now(),
            }),
        }
    }
}

/// One admitted call's place; given back when its answer is done or the call is dropped
/// (Envoy cancelled it).
struct Slot(Arc<State>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl State {
    fn enter(self: &Arc<Self>) -> Option<Slot> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(Arc::clone(self)))
    }

    fn shed(&self) -> tonic::Status {
        self.metrics.check_shed();
        let second = self.started.elapsed().as_secs() + 1;
        if self.last_logged.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(
                max_concurrent_checks = self.max,
                "overloaded: refusing checks (counted in mesh_authz_checks_shed_total)"
            );
        }
        tonic::Status::unavailable(format!(
            "mesh-authz is overloaded: {} checks in flight (server.max_concurrent_checks); try again",
            self.max
        ))
    }
}

impl<S> tower::Layer<S> for Admission {
    type Service = Admitted<S>;

    fn layer(&self, inner: S) -> Admitted<S> {
        Admitted {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

/// A service behind [`Admission`].
#[derive(Debug, Clone)]
pub struct Admitted<S> {
    inner: S,
    state: Arc<State>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Admitted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(self.inner.call(request));
        }
        let Some(slot) = self.state.enter() else {
            let status = self.state.shed();
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        request.extensions_mut().insert(Arrival(Instant::now()));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let _slot = slot;
            answer.await
        })
    }
}

/// Whether a call that arrived at `arrival` with the `grpc-timeout` header `timeout` is
/// past its deadline: Envoy has given up on it, so deciding it is wasted work.
pub fn expired(arrival: Option<&Arrival>, timeout: Option<&str>) -> bool {
    match (arrival, timeout.and_then(grpc_timeout)) {
        (Some(Arrival(at)), Some(timeout)) => at.elapsed() >= timeout,
        _ => false,
    }
}

/// A `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`),
/// per the gRPC HTTP/2 protocol. Anything else: no deadline.
fn grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_as_the_protocol_writes_them() {
        assert_eq!(grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("250u"), Some(Duration::from_micros(250)));
        for bad in ["", "m", "500", "123456789m", "5x", "-1m", "1.5S", "५m"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_call_is_expired_only_past_its_own_deadline() {
        let long_ago = Arrival(Instant::now() - Duration::from_secs(1));
        let now = Arrival(Instant::now());
        assert!(expired(Some(&long_ago), Some("500m")));
        assert!(!expired(Some(&now), Some("500m")));
        assert!(
            !expired(Some(&long_ago), None),
            "no deadline, never expired"
        );
        assert!(!expired(None, Some("500m")), "arrival unknown: decide");
    }
}
