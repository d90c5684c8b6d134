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
//! # OTLP traces on, every Check sampled, as `serve` exports them (each span encoded into
//! # the export queue as it ends, each batch framed), discarded where they would be sent
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit traces
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit traces10  # 10 %
//! # for comparison, the SDK's batch span processor instead of the export queue, its
//! # batches not encoded, encoded by telemetry::otlp::wire, or converted as the
//! # opentelemetry-otlp exporter does (opentelemetry-proto)
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit traces sdk
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit traces sdk otlp
//! valgrind --tool=callgrind target/release/examples/profile_check 11000 audit traces sdk otlpcrate
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
    let ratio = if has("traces") {
        Some(1.0)
    } else if has("traces10") {
        Some(0.1)
    } else {
        None
    };
    // Kept until the end: what exports the spans.
    let _export = ratio.map(|ratio| -> Box<dyn std::any::Any> {
        let _runtime = rt.enter();
        if has("sdk") {
            Box::new(install_sdk_processor(ratio, encoding(&has)))
        } else {
            Box::new(install_traces(ratio))
        }
    });
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
        for i in 0..n {
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
            if i % 64 == 63 {
                // Lets other tasks (the trace export's) run, as a server's would.
                tokio::task::yield_now().await;
            }
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

/// Trace export as `serve` installs it (the export queue and its task), a `ratio` of
/// Checks sampled, each export request discarded where it would be sent.
fn install_traces(ratio: f64) -> mesh_authz::telemetry::otlp::queue::ExportTask {
    struct Discard;
    impl mesh_authz::telemetry::otlp::queue::Collector for Discard {
        async fn export(&self, body: bytes::Bytes) -> Result<(), String> {
            std::hint::black_box(body);
            Ok(())
        }
    }
    trace_export(ratio).start_with(Discard)
}

/// `serve`'s trace settings, with a queue that holds every span: valgrind runs one
/// thread at a time, and none should be dropped while the export waits its turn.
fn trace_export(ratio: f64) -> mesh_authz::telemetry::traces::TraceExport {
    let settings = mesh_authz::config::TracesSettings {
        enabled: Some(true),
        sample_ratio: Some(ratio),
        max_queue_size: Some(1 << 20),
        ..Default::default()
    };
    mesh_authz::telemetry::traces::TraceExport::resolve(&settings, |_| None)
        .expect("settings resolve")
        .expect("export on")
}

/// How the discarding exporter behind the SDK's processor treats a batch first.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// Not at all.
    None,
    /// Encoded by `telemetry::otlp::wire`: `otlp`.
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

/// The SDK's batch span processor as the span sink (what `serve` used before the export
/// queue).
#[derive(Debug)]
struct SdkProcessor(opentelemetry_sdk::trace::BatchSpanProcessor);

impl mesh_authz::trace::SpanSink for SdkProcessor {
    fn end(&self, span: opentelemetry_sdk::trace::SpanData) {
        use opentelemetry_sdk::trace::SpanProcessor;
        self.0.on_end(span);
    }
}

impl Drop for SdkProcessor {
    fn drop(&mut self) {
        use opentelemetry_sdk::trace::SpanProcessor;
        let _ = self.0.shutdown();
    }
}

/// The SDK's batch span processor with an exporter that discards each batch after
/// encoding it as `encoding` says.
fn install_sdk_processor(ratio: f64, encoding: Encoding) -> Arc<SdkProcessor> {
    use mesh_authz::telemetry::otlp::wire::{spans_request, EncodedResource};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    #[derive(Debug)]
    struct Discard {
        encoding: Encoding,
        /// The resource as each encoding needs it, made once, as an exporter does.
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
                    std::hint::black_box(spans_request(&batch, &self.ours));
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
    let export = trace_export(ratio);
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("mesh-authz")
        .build();
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(Discard {
        encoding,
        ours: EncodedResource::new(&resource),
        theirs: ResourceAttributesWithSchema::from(&resource),
    })
    .with_batch_config(
        opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_max_queue_size(export.max_queue_size)
            .build(),
    )
    .build();
    let sink = Arc::new(SdkProcessor(processor));
    mesh_authz::trace::start(export.sampling, sink.clone());
    sink
}
