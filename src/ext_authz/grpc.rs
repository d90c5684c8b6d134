//! `envoy.service.auth.v3.Authorization` as a gRPC service: the method table and the
//! codec, in place of the generated `AuthorizationServer`.
//!
//! The generated server decodes each CheckRequest into owned, hashed structures before
//! the service sees it. This one hands the service the message bytes, which
//! [`wire`](super::wire) reads in place; responses are encoded by prost as before.

use super::service::CheckService;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use std::sync::Arc;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// The full gRPC path of Check.
const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A Check call's request message, still serialized.
#[derive(Clone)]
pub struct CheckCall(pub bytes::Bytes);

impl std::fmt::Debug for CheckCall {
    // The bytes carry the request's headers, `Authorization` among them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckCall({} bytes)", self.0.len())
    }
}

/// Requests stay bytes; responses are prost-encoded.
#[derive(Debug, Clone, Copy, Default)]
struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckResponse;
    type Decode = CheckCall;
    type Encoder = tonic_prost::ProstEncoder<CheckResponse>;
    type Decoder = CallDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CallDecoder
    }
}

#[derive(Debug, Clone, Copy)]
struct CallDecoder;

impl Decoder for CallDecoder {
    type Item = CheckCall;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CheckCall>, Status> {
        use bytes::Buf;
        // A view of tonic's receive buffer, not a copy.
        Ok(Some(CheckCall(src.copy_to_bytes(src.remaining()))))
    }
}

/// The Authorization service for tonic's router.
#[derive(Debug, Clone)]
pub struct CheckServer {
    service: Arc<CheckService>,
}

impl CheckServer {
    /// Serves Check with `service`.
    pub fn new(service: CheckService) -> Self {
        Self {
            service: Arc::new(service),
        }
    }
}

impl NamedService for CheckServer {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

/// One Check call, for tonic's unary handling.
struct Unary(Arc<CheckService>);

impl UnaryService<CheckCall> for Unary {
    type Response = CheckResponse;
    type Future = BoxFuture<Response<CheckResponse>, Status>;

    fn call(&mut self, request: Request<CheckCall>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.check(request).await })
    }
}

impl<B> Service<http::Request<B>> for CheckServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK {
            // Like the generated server: any other method of this service is
            // UNIMPLEMENTED.
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let unary = Unary(self.service.clone());
        Box::pin(async move { Ok(Grpc::new(CheckCodec).unary(unary, request).await) })
    }
}
