//! The edge to Envoy, and the only module that names Envoy's types: the gRPC Check
//! service (`grpc.rs`, `service.rs`), the CheckRequest read in place from its bytes
//! (`wire.rs`) as a [`crate::request::RequestView`] (`request.rs`), and the
//! [`crate::authorize::Decision`] rendered as a CheckResponse; before all of it, the
//! admission of calls (a bound on checks in flight).

mod admission;
mod answer;
mod denial;
mod grpc;
mod headers;
mod metadata;
pub mod request;
mod response;
mod service;
mod wire;

pub use admission::Admission;
pub use denial::{denial_body, denied_response, http_status as denied_http_status};
pub use grpc::{CheckCall, CheckServer};
pub use response::render;
pub use service::CheckService;

/// gRPC status codes used in `CheckResponse.status`.
mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAUTHENTICATED: i32 = 16;
}
