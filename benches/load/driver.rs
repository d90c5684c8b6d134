//! A gRPC load driver for what h2load cannot do (a different body per request): tonic
//! clients over a fixed number of connections with a fixed number of calls in flight on
//! each, like h2load's `-c` and `-m`. Bodies are serialized up front and sent as bytes,
//! and only the `status` of each answer is decoded, so the driver spends as little CPU
//! as it can beside the server.
//!
//! Also the single typed call that checks a server's decision before a run.

use super::report::Stats;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use prost::bytes::BufMut;
use prost::Message;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::Bytes;
use tonic::transport::{Channel, Endpoint};

/// Connections and calls in flight per connection.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// HTTP/2 connections.
    pub connections: usize,
    /// Calls in flight on each.
    pub concurrency: usize,
}

/// A CheckResponse with only its `status` read (the rest is skipped while decoding).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusOnly {
    /// The decision: code 0 allows.
    #[prost(message, optional, tag = "1")]
    pub status: Option<envoy_types::pb::google::rpc::Status>,
}

/// Sends pre-serialized requests, decodes [`StatusOnly`].
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

/// Writes the serialized request as it is.
struct RawEncoder;

/// Reads the answer's status.
struct StatusDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = StatusOnly;
    type Encoder = RawEncoder;
    type Decoder = StatusDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> StatusDecoder {
        StatusDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for StatusDecoder {
    type Item = StatusOnly;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<StatusOnly>, tonic::Status> {
        StatusOnly::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("bad CheckResponse: {e}")))
    }
}

/// One connection to `addr`, with TCP_NODELAY like h2load and Envoy.
async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

/// What one calling task measured.
#[derive(Default)]
struct TaskResult {
    nanos: Vec<u64>,
    statuses: BTreeMap<String, u64>,
}

/// Sends `total` calls to `addr`; call `i` carries `bodies[i % bodies.len()]`. Returns the
/// latency statistics and the answers by gRPC status and decision code.
pub async fn run(
    settings: Settings,
    addr: SocketAddr,
    bodies: Arc<Vec<Bytes>>,
    total: usize,
) -> Stats {
    assert!(!bodies.is_empty(), "nothing to send");
    let mut channels = Vec::with_capacity(settings.connections);
    for _ in 0..settings.connections {
        channels.push(connect(addr).await);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for channel in &channels {
        let grpc = tonic::client::Grpc::new(channel.clone());
        for _ in 0..settings.concurrency {
            let (mut grpc, next, bodies) = (grpc.clone(), next.clone(), bodies.clone());
            tasks.push(tokio::spawn(async move {
                let mut result = TaskResult {
                    nanos: Vec::with_capacity(total / 64 + 1),
                    ..TaskResult::default()
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return result;
                    }
                    let body = bodies[i % bodies.len()].clone();
                    let sent = Instant::now();
                    let answer = call(&mut grpc, body).await;
                    result.nanos.push(sent.elapsed().as_nanos() as u64);
                    *result.statuses.entry(answer).or_insert(0) += 1;
                }
            }));
        }
    }
    let mut nanos = Vec::with_capacity(total);
    let mut statuses = BTreeMap::new();
    for task in tasks {
        let result = task.await.expect("a driver task panicked");
        nanos.extend(result.nanos);
        for (status, n) in result.statuses {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    let elapsed = started.elapsed();
    Stats::from_latencies(nanos, elapsed, statuses)
}

/// One Check call; the answer as `[gRPC status / decision code]`.
async fn call(grpc: &mut tonic::client::Grpc<Channel>, body: Bytes) -> String {
    if let Err(e) = grpc.ready().await {
        return format!("[transport error: {e}]");
    }
    let path = PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
    match grpc.unary(tonic::Request::new(body), path, RawCodec).await {
        Ok(response) => {
            let code = response.into_inner().status.map_or(0, |s| s.code);
            format!("[OK / decision {}]", code_name(code))
        }
        Err(status) => format!("[{:?}]", status.code()),
    }
}

/// The gRPC name of a decision code.
fn code_name(code: i32) -> String {
    format!("{:?}", tonic::Code::from_i32(code))
}

/// The decision a server is expected to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Status OK with an `ok_response`.
    Allow,
    /// Status UNAUTHENTICATED with a denied response of HTTP 401.
    Unauthenticated,
}

/// Sends `request` once with a typed client and panics unless the answer is `expect`: a
/// bench must not time the wrong path. Returns a one-line description of the answer.
pub async fn assert_decision(addr: SocketAddr, request: &CheckRequest, expect: Expect) -> String {
    let mut client = AuthorizationClient::new(connect(addr).await);
    let response = client
        .check(request.clone())
        .await
        .unwrap_or_else(|e| panic!("Check on {addr} failed: {e}"))
        .into_inner();
    let code = response.status.as_ref().map_or(0, |s| s.code);
    let described = match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            let headers: Vec<String> = ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| format!("{}: {}", h.key, h.value))
                .collect();
            format!(
                "{} allowed, set [{}], remove {:?}",
                code_name(code),
                headers.join(", "),
                ok.headers_to_remove
            )
        }
        Some(HttpResponse::DeniedResponse(denied)) => format!(
            "{} denied, HTTP {}",
            code_name(code),
            denied.status.as_ref().map_or(0, |s| s.code)
        ),
        Some(HttpResponse::ErrorResponse(_)) => format!("{} error response", code_name(code)),
        None => format!("{} without an HTTP response", code_name(code)),
    };
    let ok = match expect {
        Expect::Allow => code == 0 && described.contains("allowed"),
        Expect::Unauthenticated => code == 16 && described.ends_with("HTTP 401"),
    };
    assert!(ok, "{addr}: expected {expect:?}, got {described}");
    described
}
