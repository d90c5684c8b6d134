//! Denied responses: HTTP status, `WWW-Authenticate`, JSON body.

use super::code;
use super::headers::overwrite;
use crate::authorize::Denial;
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckResponse, DeniedHttpResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;

/// The realm in `WWW-Authenticate`.
const REALM: &str = "mesh-authz";

/// The scheme a 401 asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer` with the RFC 6750 error.
    Bearer,
    /// `Basic`, on a route that takes the token as a Basic password: what makes git ask
    /// its credential helper. Only Basic is offered there: offered Bearer too, curl (git's
    /// HTTP client) tries Bearer first without a token, and falls back to Basic only after
    /// a second 401 (measured with git 2.47, libcurl 7.88).
    Basic,
}

impl Challenge {
    /// The challenge of a route (of none: Bearer).
    pub fn of(route: Option<&crate::policy::RouteRule>) -> Self {
        let takes_basic =
            route.is_some_and(|r| r.token_sources.contains(&crate::authn::TokenSource::Basic));
        if takes_basic {
            Challenge::Basic
        } else {
            Challenge::Bearer
        }
    }
}

/// The HTTP status for a denial: 401 without a usable token, 400 for a path refused before
/// matching, 403 otherwise.
pub fn http_status(denial: &Denial) -> u16 {
    match denial {
        Denial::Unauthenticated(_) => 401,
        Denial::UnsafePath(_) => 400,
        _ => 403,
    }
}

/// `(error, reason)` for the JSON body. Neither ever contains token or claim contents.
fn error_and_reason(denial: &Denial) -> (&'static str, String) {
    match denial {
        Denial::Unauthenticated(e) => (
            e.rfc6750_error().unwrap_or("invalid_request"),
            e.to_string(),
        ),
        Denial::UnsafePath(e) => ("invalid_request", e.to_string()),
        Denial::NoRoute => ("access_denied", "no route allows this request".into()),
        Denial::PrincipalNotAllowed => (
            "access_denied",
            "the calling workload is not allowed on this route".into(),
        ),
        Denial::ClaimUnmet(_) => (
            "access_denied",
            "the token does not carry what this route requires".into(),
        ),
        Denial::KubeForbidden(what) => ("access_denied", format!("kube: {what}")),
        Denial::ChangeUnmet(why) => ("access_denied", why.clone()),
        Denial::NoGrant { route, how_to_ask } => (
            "access_denied",
            match how_to_ask {
                Some(how) => format!(
                    "no active grant lets you do this on route {route:?}; to ask for one: {how}"
                ),
                None => format!("no active grant lets you do this on route {route:?}"),
            },
        ),
        Denial::GroupsTooLarge => (
            "access_denied",
            "too many groups to pass to the upstream; the route should list the groups it needs"
                .into(),
        ),
        Denial::NotInGroup(_) => (
            "access_denied",
            "not a member of any group allowed on this route".into(),
        ),
        Denial::UnsafeHeaderValue => (
            "access_denied",
            "the identity cannot be passed to the upstream safely".into(),
        ),
    }
}

/// The JSON body: `{"error": ..., "reason": ..., "request_id": ...}`.
pub fn denial_body(denial: &Denial, request_id: Option<&str>) -> String {
    let (error, reason) = error_and_reason(denial);
    body(error, &reason, request_id)
}

/// The body on a kube route: a Kubernetes `Status`, as the apiserver answers, so kubectl
/// prints the reason (`Error from server (Forbidden): ...`) rather than "unknown"; with
/// mesh-authz's own fields beside it.
fn kube_status_body(status: u16, error: &str, reason: &str, request_id: Option<&str>) -> String {
    let kind = match status {
        401 => "Unauthorized",
        400 => "BadRequest",
        _ => "Forbidden",
    };
    let mut out = String::with_capacity(192 + reason.len());
    out.push_str(
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"#,
    );
    json_string(&mut out, reason);
    out.push_str(r#","reason":"#);
    json_string(&mut out, kind);
    out.push_str(&format!(r#","code":{status},"error":"#));
    json_string(&mut out, error);
    if let Some(id) = request_id {
        out.push_str(r#","request_id":"#);
        json_string(&mut out, id);
    }
    out.push('}');
    out
}

/// Writes the body directly, each value a JSON string literal: denials from a flood of
/// unauthenticated clients should cost little.
fn body(error: &str, reason: &str, request_id: Option<&str>) -> String {
    let mut out = String::with_capacity(128 + reason.len());
    out.push_str(r#"{"error":"#);
    json_string(&mut out, error);
    out.push_str(r#","reason":"#);
    json_string(&mut out, reason);
    if let Some(id) = request_id {
        out.push_str(r#","request_id":"#);
        json_string(&mut out, id);
    }
    out.push('}');
    out
}

/// Appends `s` as a JSON string literal. Runs of characters that need no escape are copied
/// whole (every denial writes one of these bodies).
fn json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        // Every byte that needs escaping is ASCII, so `i` is a char boundary.
        if b == b'"' || b == b'\\' || b < 0x20 {
            out.push_str(&s[plain..i]);
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                _ => {
                    let _ = write!(out, "\\u{b:04x}");
                }
            }
            plain = i + 1;
        }
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// `WWW-Authenticate` for a 401 (RFC 6750 §3): no error code when no credentials came.
/// A Basic challenge carries no error: the JSON body says what was wrong.
fn www_authenticate(denial: &Denial, challenge: Challenge) -> Option<String> {
    let Denial::Unauthenticated(e) = denial else {
        return None;
    };
    if challenge == Challenge::Basic {
        return Some(format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""));
    }
    Some(match e.rfc6750_error() {
        None => format!("Bearer realm=\"{REALM}\""),
        Some(code) => {
            format!("Bearer realm=\"{REALM}\", error=\"{code}\", error_description=\"{e}\"")
        }
    })
}

/// The CheckResponse that makes Envoy answer the client with our denial.
pub fn denied_response(
    denial: &Denial,
    challenge: Challenge,
    kube: bool,
    request_id: Option<&str>,
) -> CheckResponse {
    let status = http_status(denial);
    let mut headers = vec![
        overwrite("content-type".into(), "application/json".into()),
        overwrite("cache-control".into(), "no-store".into()),
    ];
    if let Some(value) = www_authenticate(denial, challenge) {
        headers.push(overwrite("www-authenticate".into(), value));
    }
    let (grpc_code, http_code) = match status {
        401 => (code::UNAUTHENTICATED, StatusCode::Unauthorized),
        400 => (code::INVALID_ARGUMENT, StatusCode::BadRequest),
        _ => (code::PERMISSION_DENIED, StatusCode::Forbidden),
    };
    let (error, reason) = error_and_reason(denial);
    CheckResponse {
        status: Some(RpcStatus {
            code: grpc_code,
            message: reason.clone(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: http_code as i32,
            }),
            headers,
            body: if kube {
                kube_status_body(status, error, &reason, request_id)
            } else {
                body(error, &reason, request_id)
            },
        })),
        dynamic_metadata: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::AuthnError;

    #[test]
    fn bodies_are_json_whatever_the_request_id_holds() {
        let ids = [
            "req-1",
            "a\"b",
            "back\\slash",
            "new\nline\u{1}",
            "ünïcode",
            "",
            "\"",
            "\"\\\u{1f}",
            "ü\"ü\\€",
            "trailing\"",
        ];
        for id in ids {
            let text = denial_body(&Denial::NoRoute, Some(id));
            let body: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(body["request_id"], id, "{text}");
            assert_eq!(body["error"], "access_denied");
        }
        let none: serde_json::Value =
            serde_json::from_str(&denial_body(&Denial::NoRoute, None)).unwrap();
        assert_eq!(
            none,
            serde_json::json!({"error": "access_denied", "reason": "no route allows this request"})
        );
    }

    #[test]
    fn missing_token_gets_a_bare_bearer_challenge() {
        let d = Denial::Unauthenticated(AuthnError::MissingToken);
        assert_eq!(
            www_authenticate(&d, Challenge::Bearer).unwrap(),
            "Bearer realm=\"mesh-authz\""
        );
        assert_eq!(http_status(&d), 401);
    }

    #[test]
    fn bad_token_gets_the_rfc6750_error_and_reason() {
        let d = Denial::Unauthenticated(AuthnError::Expired);
        assert_eq!(
            www_authenticate(&d, Challenge::Bearer).unwrap(),
            "Bearer realm=\"mesh-authz\", error=\"invalid_token\", error_description=\"token expired\""
        );
        let body: serde_json::Value =
            serde_json::from_str(&denial_body(&d, Some("req-1"))).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "invalid_token", "reason": "token expired", "request_id": "req-1"})
        );
    }

    #[test]
    fn a_route_taking_basic_challenges_with_basic_only() {
        for e in [
            AuthnError::MissingToken,
            AuthnError::Expired,
            AuthnError::BadBasic,
        ] {
            let d = Denial::Unauthenticated(e);
            assert_eq!(
                www_authenticate(&d, Challenge::Basic).unwrap(),
                "Basic realm=\"mesh-authz\", charset=\"UTF-8\""
            );
        }
    }

    #[test]
    fn a_kube_route_denies_with_a_kubernetes_status_kubectl_can_print() {
        let d = Denial::KubeForbidden("no rule allows delete pods in namespace payments".into());
        let r = denied_response(&d, Challenge::Bearer, true, Some("req-\"1"));
        let Some(HttpResponse::DeniedResponse(denied)) = r.http_response else {
            panic!()
        };
        let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "kube: no rule allows delete pods in namespace payments",
                "reason": "Forbidden", "code": 403,
                "error": "access_denied", "request_id": "req-\"1"
            })
        );
        let unauthenticated = denied_response(
            &Denial::Unauthenticated(AuthnError::Expired),
            Challenge::Bearer,
            true,
            None,
        );
        let Some(HttpResponse::DeniedResponse(denied)) = unauthenticated.http_response else {
            panic!()
        };
        let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(
            (body["reason"].as_str(), body["code"].as_u64()),
            (Some("Unauthorized"), Some(401))
        );
    }

    #[test]
    fn group_denial_is_403_without_challenge() {
        let r = denied_response(
            &Denial::NotInGroup("not a member of team-a".into()),
            Challenge::Basic,
            false,
            None,
        );
        let Some(HttpResponse::DeniedResponse(d)) = r.http_response else {
            panic!()
        };
        assert_eq!(d.status.unwrap().code, 403);
        assert!(d
            .headers
            .iter()
            .all(|h| h.header.as_ref().unwrap().key != "www-authenticate"));
        assert_eq!(r.status.unwrap().code, code::PERMISSION_DENIED);
    }
}
