//! Browser sign-in's own answers as Envoy's `DeniedHttpResponse`: Envoy sends the browser
//! exactly this status, these headers and this body instead of forwarding the request.

use super::code;
use super::headers::overwrite;
use crate::signin::Answer;
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckResponse, DeniedHttpResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;

/// Envoy's status code for an answer's HTTP status.
fn status_code(status: u16) -> StatusCode {
    match status {
        302 => StatusCode::Found,
        400 => StatusCode::BadRequest,
        403 => StatusCode::Forbidden,
        404 => StatusCode::NotFound,
        503 => StatusCode::ServiceUnavailable,
        _ => StatusCode::InternalServerError,
    }
}

/// The CheckResponse that makes Envoy send `answer` to the browser. Any non-OK gRPC status
/// makes Envoy use the `DeniedHttpResponse`; its status is what the browser sees.
pub fn answered_response(answer: Answer) -> CheckResponse {
    let mut headers = vec![
        overwrite("cache-control".into(), "no-store".into()),
        // The callback's URL holds the code: no page it leads to should see it.
        overwrite("referrer-policy".into(), "no-referrer".into()),
    ];
    if let Some(location) = answer.location {
        headers.push(overwrite("location".into(), location));
    }
    if answer.page.is_some() {
        headers.push(overwrite(
            "content-type".into(),
            "text/html; charset=utf-8".into(),
        ));
    }
    // Several cookies: each its own `Set-Cookie` line. Envoy 1.40 drops `append: true`
    // options from a denied response and sends every `append: false` one, so several
    // `Set-Cookie` options of one name all reach the browser (measured in
    // tests/envoy_browser.rs).
    headers.extend(
        answer
            .set_cookies
            .into_iter()
            .map(|c| overwrite("set-cookie".into(), c)),
    );
    CheckResponse {
        status: Some(RpcStatus {
            code: code::UNAUTHENTICATED,
            message: answer.reason.to_string(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status_code(answer.status) as i32,
            }),
            headers,
            body: answer.page.unwrap_or_default(),
        })),
        dynamic_metadata: None,
    }
}
