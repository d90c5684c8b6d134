//! OTLP trace export: spans encoded as they end ([`wire`]), queued in batches
//! ([`queue`]), and sent by [`OtlpExporter`] from the tokio runtime, over gRPC
//! (`TraceService/Export`) or HTTP (`POST /v1/traces`, `application/x-protobuf`).
//!
//! It replaces `opentelemetry-otlp`'s exporter and the SDK's batch processor for measured
//! reasons: that crate's conversion of each span cost more than the span (see [`wire`]),
//! and the processor's moving of spans more than their encoding (see [`queue`]). What
//! the crate read from the environment is read in [`crate::telemetry::traces`]:
//! endpoint, protocol, timeout and headers.

pub mod queue;
pub mod wire;

use bytes::{Buf as _, BufMut as _, Bytes};
use http::header::{HeaderName, HeaderValue};
use std::time::Duration;

/// Why an exporter cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint is not a URL the transport can use.
    #[error("the OTLP endpoint {endpoint:?} is not usable: {problem}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Headers every export carries (`OTEL_EXPORTER_OTLP_HEADERS`): often a collector's API
/// key, so their values are marked sensitive and never shown.
#[derive(Clone, Default, PartialEq)]
pub struct ExportHeaders(pub Vec<(HeaderName, HeaderValue)>);

impl std::fmt::Debug for ExportHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// How batches travel.
#[derive(Debug, Clone)]
enum Transport {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http {
        client: reqwest::Client,
        url: String,
    },
}

/// gRPC's method for trace export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The client that sends export requests to the collector, each within the export
/// timeout.
#[derive(Debug)]
pub struct OtlpExporter {
    transport: Transport,
    headers: ExportHeaders,
    timeout: Duration,
}

impl OtlpExporter {
    /// OTLP/gRPC to `endpoint` (`http://host:4317`). Must run inside the tokio runtime;
    /// the connection is made at the first export.
    pub fn grpc(
        endpoint: &str,
        headers: ExportHeaders,
        timeout: Duration,
    ) -> Result<Self, OtlpError> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| OtlpError::Endpoint {
                endpoint: endpoint.to_owned(),
                problem: e.to_string(),
            })?
            .connect_timeout(timeout)
            .connect_lazy();
        Ok(Self::new(
            Transport::Grpc(tonic::client::Grpc::new(channel)),
            headers,
            timeout,
        ))
    }

    /// OTLP/HTTP with protobuf bodies, posted to `url` (`http://host:4318/v1/traces`).
    pub fn http(url: &str, headers: ExportHeaders, timeout: Duration) -> Result<Self, OtlpError> {
        reqwest::Url::parse(url).map_err(|e| OtlpError::Endpoint {
            endpoint: url.to_owned(),
            problem: e.to_string(),
        })?;
        Ok(Self::new(
            Transport::Http {
                client: reqwest::Client::new(),
                url: url.to_owned(),
            },
            headers,
            timeout,
        ))
    }

    fn new(transport: Transport, headers: ExportHeaders, timeout: Duration) -> Self {
        Self {
            transport,
            headers,
            timeout,
        }
    }
}

impl queue::Collector for OtlpExporter {
    async fn export(&self, body: Bytes) -> Result<(), String> {
        let send = send(self.transport.clone(), self.headers.clone(), body);
        match tokio::time::timeout(self.timeout, send).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer from the collector within {} ms",
                self.timeout.as_millis()
            )),
        }
    }
}

/// One export request; the error says what the collector or the connection said.
async fn send(transport: Transport, headers: ExportHeaders, body: Bytes) -> Result<(), String> {
    match transport {
        Transport::Grpc(mut grpc) => {
            grpc.ready()
                .await
                .map_err(|e| format!("collector unreachable: {e}"))?;
            let mut request = tonic::Request::new(body);
            let metadata = request.metadata_mut().as_mut();
            for (name, value) in headers.0 {
                metadata.insert(name, value);
            }
            metadata.insert(http::header::USER_AGENT, user_agent());
            let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
            grpc.unary(request, path, RawCodec)
                .await
                .map(drop)
                .map_err(|status| {
                    format!(
                        "collector answered {:?}: {}",
                        status.code(),
                        status.message()
                    )
                })
        }
        Transport::Http { client, url } => {
            let mut request = client
                .post(url)
                .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                .header(http::header::USER_AGENT, user_agent());
            for (name, value) in headers.0 {
                request = request.header(name, value);
            }
            let mut response = request
                .body(body)
                .send()
                .await
                .map_err(|e| format!("collector unreachable: {}", e.without_url()))?;
            let status = response.status();
            // The answer is read (up to a bound) so that the connection can be reused.
            let mut read = 0;
            while let Ok(Some(chunk)) = response.chunk().await {
                read += chunk.len();
                if read > MAX_COLLECTOR_ANSWER {
                    break;
                }
            }
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("collector answered HTTP {status}"))
            }
        }
    }
}

/// Collector answers are small; past this much, the rest of one is not read.
const MAX_COLLECTOR_ANSWER: usize = 64 * 1024;

fn user_agent() -> HeaderValue {
    HeaderValue::from_static(concat!("mesh-authz/", env!("CARGO_PKG_VERSION")))
}

/// A gRPC codec for bytes already encoded: the request as it is, the answer skipped (a
/// successful status is the acceptance).
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
