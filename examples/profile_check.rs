//! A loop of warm in-process Checks (decode, decide, render, encode) for callgrind, which
//! counts instructions repeatably on a noisy machine. Run it twice and subtract, so that
//! start-up cancels out:
//!
//! ```sh
//! cargo build --release --example profile_check
//! valgrind --tool=callgrind target/release/examples/profile_check 1000
//! valgrind --tool=callgrind target/release/examples/profile_check 11000   # (b - a) / 10000
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 deny
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit  # as shipped
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 noop   # the floor
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit nometa
//! # browser sign-in: the same server config, alice by session cookie, then by token
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit session
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit session bearer
//! # OTLP traces on, every Check sampled, spans discarded where the exporter would send them
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit traces
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit traces10  # 10 %
//! # the same, each batch encoded as `serve` does before sending (telemetry::otlp::wire)
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit traces otlp
//! # ... or as the opentelemetry-otlp exporter does (opentelemetry-proto's conversion)
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit traces otlpcrate
//! ```

#[path = "../benches/common/mod.rs"]
mod common;

use common::{istio_check_request, quickstart};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use mesh_authz::ext_authz::{CheckCall, CheckService};
use mesh_authz::telemetry::audit::{AuditLog, AuditOutput};
use mesh_authz::telemetry::Metrics;
use prost::Message;
use std::sync::Arc;

/// The allocator the server uses (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let token = include_str!("../examples/quickstart/alice.jwt").trim();
    let mut request = istio_check_request(Some(token));
    let args: Vec<String> = std::env::args().skip(2).collect();
    let has = |word: &str| args.iter().any(|a| a == word);
    let session_dir = has("session").then(|| tempfile::tempdir().expect("a temporary directory"));
    if has("session") && !has("bearer") {
        // The request as a signed-in browser sends it: the session cookie, no token.
        let cookie = format!("__Host-mesh-authz={}", common::sealed_session("alice"));
        request = common::istio::check_request(
            common::istio::Shape::Gateway,
            "GET",
            common::HOST,
            common::PATH,
            &[("cookie", &cookie)],
        );
    }
    if has("deny") {
        let http = request
            .attributes
            .as_mut()
            .unwrap()
            .request
            .as_mut()
            .unwrap()
            .http
            .as_mut()
            .unwrap();
        http.headers.remove("authorization");
    }
    let bytes = bytes::Bytes::from(request.encode_to_vec());
    let _provider = if has("traces") {
        Some(install_traces(1.0, encoding(&has)))
    } else if has("traces10") {
        Some(install_traces(0.1, encoding(&has)))
    } else {
        None
    };
    // As the quickstart ships: audit on (to /dev/null here, so only its cost counts).
    let audit = has("audit").then(|| {
        AuditLog::start(AuditOutput::File("/dev/null".into())).expect("audit to /dev/null")
    });
    let service = CheckService::new(
        Arc::new(arc_swap::ArcSwap::from_pointee(
            if let Some(dir) = &session_dir {
                common::quickstart_with_browser_sign_in(dir.path())
            } else if has("nometa") {
                without_dynamic_metadata()
            } else {
                quickstart(true)
            },
        )),
        Arc::new(Metrics::new(None, audit.as_ref())),
        audit,
    );
    let noop = has("noop");
    rt.block_on(async {
        let mut total = 0usize;
        for _ in 0..n {
            if noop {
                // The floor: what a Check server on the generated types does (decode, an
                // empty OK, encode).
                let request = CheckRequest::decode(&bytes[..]).unwrap();
                let response = CheckResponse {
                    status: Some(Default::default()),
                    http_response: Some(HttpResponse::OkResponse(Default::default())),
                    dynamic_metadata: None,
                };
                drop(request);
                total += response.encode_to_vec().len();
                continue;
            }
            let response = service
                .check(tonic::Request::new(CheckCall(bytes.clone())))
                .await
                .unwrap()
                .into_inner();
            total += response.encode_to_vec().len();
        }
        println!("{n} checks, {total} bytes");
    });
}

/// The quickstart without `dynamic_metadata` on its team-a route (what that costs).
fn without_dynamic_metadata() -> mesh_authz::authorize::Authorizer {
    use mesh_authz::config::{self, FileResolver, BUILTIN_CONFIG};
    let text = BUILTIN_CONFIG.replace("    dynamic_metadata: true\n", "");
    assert_ne!(text, BUILTIN_CONFIG, "the quickstart has dynamic_metadata");
    let config = config::from_str("quickstart without metadata", &text, &FileResolver::Builtin)
        .expect("compiles");
    mesh_authz::authorize::Authorizer::from_config(&config, reqwest::Client::new())
        .expect("authorizer builds")
}

/// How the discarding exporter treats a batch first.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// Not at all.
    None,
    /// Encoded as `serve` encodes it (`telemetry::otlp::wire`): `otlp`.
    Ours,
    /// Converted to `opentelemetry-proto` messages and prost-encoded, as the
    /// `opentelemetry-otlp` exporter does: `otlpcrate`.
    Crate,
}

fn encoding(has: &impl Fn(&str) -> bool) -> Encoding {
    if has("otlp") {
        Encoding::Ours
    } else if has("otlpcrate") {
        Encoding::Crate
    } else {
        Encoding::None
    }
}

/// Trace export as `serve` installs it (the bounded batch queue), a `ratio` of
/// Checks sampled, with an exporter that discards what it is handed.
fn install_traces(ratio: f64, encoding: Encoding) -> opentelemetry_sdk::trace::SdkTracerProvider {
    use mesh_authz::telemetry::otlp::wire::{export_request, EncodedResource};
    use mesh_authz::telemetry::traces::TraceExport;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    /// Discards each batch, first encoding it as `encoding` says.
    #[derive(Debug)]
    struct Discard {
        encoding: Encoding,
        /// The resource as each encoding needs it, made once, as the exporter does.
        ours: EncodedResource,
        theirs: ResourceAttributesWithSchema,
    }
    impl opentelemetry_sdk::trace::SpanExporter for Discard {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            match self.encoding {
                Encoding::None => {}
                Encoding::Ours => {
                    std::hint::black_box(export_request(&batch, &self.ours));
                }
                Encoding::Crate => {
                    let request = ExportTraceServiceRequest {
                        resource_spans: group_spans_by_resource_and_scope(batch, &self.theirs),
                    };
                    std::hint::black_box(request.encode_to_vec());
                }
            }
            Ok(())
        }
    }
    let settings = mesh_authz::config::TracesSettings {
        enabled: Some(true),
        sample_ratio: Some(ratio),
        // Valgrind runs one thread at a time: a queue that holds every span, so that
        // none is dropped while the batch thread waits its turn.
        max_queue_size: Some(1 << 20),
        ..Default::default()
    };
    let export = TraceExport::resolve(&settings, |_| None)
        .expect("settings resolve")
        .expect("export on");
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("mesh-authz")
        .build();
    export.provider(Discard {
        encoding,
        ours: EncodedResource::new(&resource),
        theirs: ResourceAttributesWithSchema::from(&resource),
    })
}
