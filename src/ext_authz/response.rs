//! Rendering a [`Decision`] as Envoy's `CheckResponse`.
//!
//! - allow: status OK (always set: Envoy reads an unset status as OK), an
//!   `OkHttpResponse` that overwrites identity headers and removes the rest, and, on
//!   routes with `dynamic_metadata: true`, the identity in `dynamic_metadata` for Envoy's
//!   access log;
//! - deny: a non-OK status and a `DeniedHttpResponse` (401 or 403, JSON body);
//! - browser sign-in's own answers (redirects, HTML pages): a `DeniedHttpResponse` too,
//!   with their status, `Location` and `Set-Cookie` lines;
//! - cannot decide: a gRPC `UNAVAILABLE` error, so Envoy's `failure_mode_allow` and
//!   `status_on_error` apply.

use super::code;
use crate::authorize::{Decision, Verdict};
use crate::policy::HeaderChanges;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckResponse, OkHttpResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;

/// An OK CheckResponse with these upstream header changes.
fn allowed(
    headers: HeaderChanges,
    set_cookies: Vec<String>,
    metadata: Option<envoy_types::pb::google::protobuf::Struct>,
) -> CheckResponse {
    let HeaderChanges {
        set,
        remove,
        remove_query,
    } = headers;
    CheckResponse {
        status: Some(RpcStatus {
            code: code::OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            // Moved, not copied: the strings are the decision's.
            headers: set
                .into_iter()
                .map(|(key, value)| super::headers::overwrite(key, value))
                .collect(),
            headers_to_remove: remove,
            query_parameters_to_remove: remove_query,
            // A refreshed browser session.
            response_headers_to_add: set_cookies
                .into_iter()
                .map(|c| super::headers::append("set-cookie".into(), c))
                .collect(),
            ..Default::default()
        })),
        dynamic_metadata: metadata,
    }
}

/// The CheckResponse for a decision, or the gRPC error Envoy should see when mesh-authz
/// cannot decide. `request_id` (Envoy's `x-request-id`) is echoed in denial bodies so a
/// developer can quote it to an operator. Takes the decision by value: its strings move
/// into the response.
pub fn render(
    decision: Decision,
    request_id: Option<&str>,
) -> Result<CheckResponse, tonic::Status> {
    let route = decision.route.as_deref();
    let wants_metadata = route.is_some_and(|r| r.dynamic_metadata);
    if let Some(headers) = decision.dry_run_headers {
        // A dry-run route: what would have been denied is allowed, anonymously.
        let metadata = wants_metadata.then(|| super::metadata::identity(route, None, None));
        return Ok(allowed(headers, Vec::new(), metadata));
    }
    match decision.verdict {
        Verdict::Allow {
            identity,
            membership,
            headers,
            set_cookies,
        } => {
            let metadata = wants_metadata.then(|| {
                super::metadata::identity(route, identity.as_deref(), membership.as_deref())
            });
            Ok(allowed(headers, set_cookies, metadata))
        }
        Verdict::Deny(denial) => Ok(super::denial::denied_response(
            &denial,
            super::denial::Challenge::of(route),
            route.is_some_and(|r| r.kube.is_some()),
            request_id,
        )),
        Verdict::Answer(answer) => Ok(super::answer::answered_response(answer)),
        Verdict::Unavailable(reason) => Err(tonic::Status::unavailable(format!(
            "mesh-authz cannot decide: {reason}"
        ))),
    }
}
