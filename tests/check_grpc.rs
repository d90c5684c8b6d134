//! The Check RPC over a real socket, as Envoy sees it: allow with header mutations and
//! metadata, 401 and 403 denials with their bodies and challenges, forged identity headers,
//! where a route takes the token from (header, cookie, query), and signing keys served by
//! an IdP over HTTP (rotation, withdrawal, OIDC discovery, unknown `kid` floods, an IdP
//! that is down from the start or fails later).

mod support;

use base64::Engine;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::google::protobuf::BoolValue;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::idp::FakeIdp;
use support::responses::{allowed, denied, header_options, metadata_string, metadata_strings};
use support::server::{
    check_request, config, raw_check, TestServer, HOST, PUBLIC, REQUEST_ID, SIGNED_IN,
    STATIC_GROUPS, TEAM_A,
};
use support::tokens::{self, bearer};

/// Overwrite, never append: what every identity header must carry.
const OVERWRITE: Option<BoolValue> = Some(BoolValue { value: false });

/// A server with keys (an RSA and an EC one) from a file and a static group table.
async fn static_server() -> TestServer {
    let jwks = tokens::jwks(&["rsa-a", "ec-a"]).to_string();
    let yaml = config("file: jwks.json", STATIC_GROUPS);
    TestServer::start(&yaml, &[("jwks.json", &jwks)]).await
}

/// A server whose keys come from `idp` over HTTP.
async fn idp_server(idp: &FakeIdp) -> TestServer {
    idp_server_with(idp, "", |y| y).await
}

/// A server whose keys come from `idp` over HTTP, with `jwks_options` (`, key: value`
/// pairs) added to the issuer's `jwks` and `edit` applied to the config.
async fn idp_server_with(
    idp: &FakeIdp,
    jwks_options: &str,
    edit: impl FnOnce(String) -> String,
) -> TestServer {
    let yaml = config(
        &format!("url: \"{}\"{jwks_options}", idp.jwks_url()),
        STATIC_GROUPS,
    );
    TestServer::start(&edit(yaml), &[]).await
}

async fn check(
    s: &TestServer,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<CheckResponse, tonic::Status> {
    let mut client = s.client.clone();
    client
        .check(check_request(method, host, path, headers))
        .await
        .map(|r| r.into_inner())
}

/// A GET to [`HOST`] that must get an answer (allow or deny, not an error).
async fn get(s: &TestServer, path: &str, headers: &[(&str, &str)]) -> CheckResponse {
    check(s, "GET", HOST, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: gRPC error {e:?}"))
}

/// `/readyz` status code.
async fn readyz(s: &TestServer) -> (u16, String) {
    let r = reqwest::get(format!("{}/readyz", s.admin_url()))
        .await
        .expect("admin port answers");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Polls `/readyz` until it says 200 (bounded: about 10 s).
async fn wait_ready(s: &TestServer) {
    for _ in 0..500 {
        if readyz(s).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("/readyz never turned 200: {:?}", readyz(s).await);
}

#[tokio::test]
async fn allowed_check_sets_ok_status_overwriting_identity_headers_and_route_metadata() {
    let s = static_server().await;
    let token = bearer(&tokens::token_for("alice"));
    let resp = get(&s, TEAM_A, &[("authorization", &token)]).await;

    let ok = allowed(&resp);
    let set = header_options(&ok.headers);
    assert_eq!(set.len(), 3, "exactly the three identity headers: {set:?}");
    for (name, value) in [
        ("x-forwarded-user", "alice"),
        ("x-forwarded-email", "alice@example.com"),
        ("x-forwarded-groups", "team-a"),
    ] {
        assert_eq!(set[name].value, value, "{name}");
        assert_eq!(set[name].append, OVERWRITE, "{name} must overwrite");
    }
    // Exactly the token: a header both set and removed would be lost (Envoy removes last).
    assert_eq!(
        ok.headers_to_remove,
        vec!["authorization".to_string()],
        "the token must not reach the upstream, the identity headers must"
    );

    let meta = resp.dynamic_metadata.as_ref().expect("dynamic metadata");
    assert_eq!(metadata_string(meta, "user").as_deref(), Some("alice"));
    assert_eq!(
        metadata_string(meta, "route").as_deref(),
        Some("gerrit-team-a")
    );
    assert_eq!(
        metadata_string(meta, "issuer").as_deref(),
        Some(tokens::ISSUER)
    );
    assert_eq!(
        metadata_strings(meta, "groups"),
        Some(vec!["team-a".to_string()])
    );

    // A route that does not ask for dynamic metadata sends none: Envoy parses it on
    // every request.
    let resp = check(&s, "GET", HOST, SIGNED_IN, &[("authorization", &token)])
        .await
        .unwrap();
    allowed(&resp);
    assert_eq!(resp.dynamic_metadata, None);
}

#[tokio::test]
async fn a_request_message_that_is_not_valid_protobuf_is_refused_invalid_argument_undecided() {
    use prost::Message;
    let s = static_server().await;
    let token = bearer(&tokens::token_for("alice"));
    let headers = [("authorization", token.as_str()), ("x-odd", "~")];
    allowed(&get(&s, TEAM_A, &headers).await);
    let valid = check_request("GET", HOST, TEAM_A, &headers).encode_to_vec();

    // The same message with one header value no longer UTF-8, as protobuf strings must be.
    let at = valid
        .iter()
        .position(|&b| b == b'~')
        .expect("the x-odd value");
    let mut broken = valid.clone();
    broken[at] = 0xff;
    let (status, message) = raw_check(&s, &broken, None).await;
    assert_eq!(status, "3", "INVALID_ARGUMENT: {message}");
    assert!(message.contains("not UTF-8"), "{message}");
    // And truncated in the middle of a field.
    let (status, message) = raw_check(&s, &valid[..valid.len() - 3], None).await;
    assert_eq!(status, "3", "INVALID_ARGUMENT: {message}");
    assert!(message.contains("truncated"), "{message}");
}

#[tokio::test]
async fn request_without_a_token_gets_401_with_a_bare_bearer_challenge_and_a_json_body() {
    let s = static_server().await;
    let d = denied(&get(&s, TEAM_A, &[]).await);
    assert_eq!(d.http_status, 401);
    assert_eq!(
        d.header("www-authenticate"),
        Some("Bearer realm=\"mesh-authz\""),
        "no error code when the request carried no credentials (RFC 6750 §3.1)"
    );
    assert_eq!(d.header("content-type"), Some("application/json"));
    assert_eq!(
        d.json,
        json!({
            "error": "invalid_request",
            "reason": "no token in the request",
            "request_id": REQUEST_ID,
        })
    );
}

#[tokio::test]
async fn an_authorization_header_of_another_scheme_gets_401_invalid_request() {
    let s = static_server().await;
    let d = denied(&get(&s, SIGNED_IN, &[("authorization", "Basic YWxpY2U6cHc=")]).await);
    assert_eq!(d.http_status, 401);
    assert_eq!(d.json["error"], "invalid_request");
    assert_eq!(
        d.header("www-authenticate"),
        Some(
            "Bearer realm=\"mesh-authz\", error=\"invalid_request\", \
             error_description=\"Authorization header is not a Bearer token\""
        )
    );
    assert!(!d.visible_text().contains("YWxpY2U6cHc="), "{d:?}");
}

/// Claims whose values are easy to spot if they leak.
fn distinctive_claims() -> Value {
    let mut c = tokens::claims("zebediah");
    c["email"] = "zeb.private@corp.example".into();
    c
}

/// Every string value in a claims object.
fn string_values(claims: &Value) -> Vec<String> {
    claims
        .as_object()
        .expect("claims are an object")
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// A token whose payload was replaced after signing (the signature is the original's).
fn with_payload(token: &str, claims: &Value) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    parts.join(".")
}

#[tokio::test]
async fn rejected_tokens_get_401_invalid_token_and_the_answer_never_echoes_token_or_claims() {
    let s = static_server().await;
    let now = tokens::now();

    let mut expired = distinctive_claims();
    expired["iat"] = (now - 7200).into();
    expired["exp"] = (now - 3600).into();
    let mut wrong_audience = distinctive_claims();
    wrong_audience["aud"] = "another-service".into();
    let mut unknown_issuer = distinctive_claims();
    unknown_issuer["iss"] = "https://evil.example.net".into();
    let mut not_yet_valid = distinctive_claims();
    not_yet_valid["nbf"] = (now + 3600).into();
    let mut forged = distinctive_claims();
    forged["preferred_username"] = "admin".into();
    forged["email"] = "admin@corp.example".into();
    let tampered = with_payload(&tokens::sign("rsa-a", &distinctive_claims()), &forged);

    let cases: Vec<(&str, String, Vec<String>, &str)> = vec![
        (
            "expired",
            tokens::sign("rsa-a", &expired),
            string_values(&expired),
            "token expired",
        ),
        (
            "not yet valid",
            tokens::sign("rsa-a", &not_yet_valid),
            string_values(&not_yet_valid),
            "token not yet valid",
        ),
        (
            "wrong audience",
            tokens::sign("rsa-a", &wrong_audience),
            string_values(&wrong_audience),
            "audience not accepted",
        ),
        (
            "signed with rsa-b, kid says rsa-a",
            tokens::sign_with_kid("rsa-b", "rsa-a", &distinctive_claims()),
            string_values(&distinctive_claims()),
            "invalid signature",
        ),
        (
            "payload tampered after signing",
            tampered,
            [string_values(&forged), string_values(&distinctive_claims())].concat(),
            "invalid signature",
        ),
        (
            "unknown issuer",
            tokens::sign("rsa-a", &unknown_issuer),
            string_values(&unknown_issuer),
            "issuer not accepted",
        ),
        (
            "three dot-separated parts that are not a JWT",
            "zebediah-header.zebediah-payload.zebediah-signature".to_string(),
            vec![],
            "malformed token",
        ),
        (
            "larger than any token",
            "z".repeat(9000),
            vec![],
            "token too large",
        ),
    ];
    for (case, token, claim_values, reason) in cases {
        let d = denied(&get(&s, TEAM_A, &[("authorization", &bearer(&token))]).await);
        assert_eq!(d.http_status, 401, "{case}");
        assert_eq!(
            d.header("www-authenticate"),
            Some(
                format!(
                    "Bearer realm=\"mesh-authz\", error=\"invalid_token\", \
                     error_description=\"{reason}\""
                )
                .as_str()
            ),
            "{case}"
        );
        assert_eq!(
            d.json,
            json!({"error": "invalid_token", "reason": reason, "request_id": REQUEST_ID}),
            "{case}"
        );
        let visible = d.visible_text();
        for part in token.split('.').chain([token.as_str()]) {
            assert!(!visible.contains(part), "{case}: token leaked: {visible}");
        }
        for value in claim_values {
            assert!(
                !visible.contains(&value),
                "{case}: claim value {value:?} leaked: {visible}"
            );
        }
    }
}

/// RFC 7515 §4.1.11: a recipient must reject a JWS whose `crit` lists an extension it
/// does not understand and process. mesh-authz understands none, so a `crit` of any shape
/// is refused, however well the token is signed.
#[tokio::test]
async fn validly_signed_tokens_with_a_critical_header_are_rejected() {
    let s = static_server().await;
    let claims = distinctive_claims();
    let reason = "token has critical header parameters that are not supported";
    let cases = [
        (
            "crit names an unknown extension",
            json!({"crit": ["urn:x-unknown"], "urn:x-unknown": true}),
        ),
        (
            "crit b64 with an unencoded payload (RFC 7797)",
            json!({"crit": ["b64"], "b64": false}),
        ),
        ("crit empty", json!({"crit": []})),
        ("crit not a list", json!({"crit": "b64", "b64": false})),
        ("crit null", json!({"crit": null})),
    ];
    for (case, fields) in &cases {
        let token = tokens::sign_with_header_fields("rsa-a", fields, &claims);
        let d = denied(&get(&s, TEAM_A, &[("authorization", &bearer(&token))]).await);
        assert_eq!(d.http_status, 401, "{case}");
        assert_eq!(
            d.json,
            json!({"error": "invalid_token", "reason": reason, "request_id": REQUEST_ID}),
            "{case}"
        );
        let visible = d.visible_text();
        for part in token.split('.') {
            assert!(!visible.contains(part), "{case}: token leaked: {visible}");
        }
    }
    assert_eq!(
        s.metric(
            r#"mesh_authz_checks_total{decision="deny",reason="unsupported_critical_header",route="gerrit-team-a"}"#
        )
        .await,
        cases.len() as f64
    );

    // The same signing without `crit` (an unknown non-critical field is ignored) verifies.
    let plain = tokens::sign_with_header_fields(
        "rsa-a",
        &json!({"urn:x-unknown": true}),
        &tokens::claims("alice"),
    );
    allowed(&get(&s, TEAM_A, &[("authorization", &bearer(&plain))]).await);
}

#[tokio::test]
async fn valid_token_outside_the_required_group_gets_403_access_denied_without_a_challenge() {
    let s = static_server().await;
    let token = bearer(&tokens::token_for("bob"));
    let d = denied(&get(&s, TEAM_A, &[("authorization", &token)]).await);
    assert_eq!(d.http_status, 403);
    assert_eq!(
        d.header("www-authenticate"),
        None,
        "a 403 must not ask for credentials"
    );
    assert_eq!(
        d.json,
        json!({
            "error": "access_denied",
            "reason": "not a member of any group allowed on this route",
            "request_id": REQUEST_ID,
        })
    );
    assert!(!d.visible_text().contains("bob"), "{d:?}");

    // The same token is good enough where no group is required.
    allowed(&get(&s, SIGNED_IN, &[("authorization", &token)]).await);
}

#[tokio::test]
async fn request_for_a_host_no_route_covers_gets_403_no_route_even_with_a_valid_token() {
    let s = static_server().await;
    let token = bearer(&tokens::token_for("alice"));
    for headers in [vec![], vec![("authorization", token.as_str())]] {
        let resp = check(&s, "GET", "jenkins.example.com", "/", &headers)
            .await
            .unwrap();
        let d = denied(&resp);
        assert_eq!(d.http_status, 403);
        assert_eq!(d.header("www-authenticate"), None);
        assert_eq!(d.json["error"], "access_denied");
        assert_eq!(d.json["reason"], "no route allows this request");
    }
}

#[tokio::test]
async fn client_sent_identity_header_is_overwritten_not_appended() {
    let s = static_server().await;
    let token = bearer(&tokens::token_for("alice"));
    let forged = [
        ("authorization", token.as_str()),
        ("x-forwarded-user", "admin"),
        ("x-forwarded-email", "admin@example.com"),
        ("x-forwarded-groups", "Administrators"),
    ];
    let resp = get(&s, TEAM_A, &forged).await;
    let ok = allowed(&resp);
    let set = header_options(&ok.headers);
    for (name, real) in [
        ("x-forwarded-user", "alice"),
        ("x-forwarded-email", "alice@example.com"),
        ("x-forwarded-groups", "team-a"),
    ] {
        assert_eq!(set[name].value, real, "{name}");
        assert_eq!(
            set[name].append, OVERWRITE,
            "{name}: appending would comma-join the forged value"
        );
        assert!(!ok.headers_to_remove.contains(&name.to_string()));
    }

    // The signed-in route overwrites too.
    let resp = get(&s, SIGNED_IN, &forged).await;
    let set = header_options(&allowed(&resp).headers);
    assert_eq!(set["x-forwarded-user"].value, "alice");
    assert_eq!(set["x-forwarded-user"].append, OVERWRITE);
}

#[tokio::test]
async fn client_sent_identity_header_is_removed_on_a_public_route() {
    let s = static_server().await;
    let resp = get(&s, PUBLIC, &[("x-forwarded-user", "admin")]).await;
    let ok = allowed(&resp);
    assert!(
        ok.headers.is_empty(),
        "a public route sets no identity: {:?}",
        ok.headers
    );
    // Every identity header any route injects is removed, not just this route's own.
    assert_eq!(
        ok.headers_to_remove,
        vec![
            "x-forwarded-user".to_string(),
            "x-forwarded-email".into(),
            "x-forwarded-groups".into()
        ],
        "forged identity headers must not reach the upstream"
    );
    let meta = resp.dynamic_metadata.as_ref().expect("dynamic metadata");
    assert_eq!(metadata_string(meta, "user"), None);
    assert_eq!(
        metadata_string(meta, "route").as_deref(),
        Some("gerrit-public")
    );
}

#[tokio::test]
async fn identity_header_for_a_claim_the_token_lacks_is_removed_not_passed_through() {
    let s = static_server().await;
    let mut claims = tokens::claims("alice");
    claims.as_object_mut().unwrap().remove("email");
    let token = bearer(&tokens::sign("rsa-a", &claims));
    let resp = get(
        &s,
        SIGNED_IN,
        &[
            ("authorization", &token),
            ("x-forwarded-email", "ceo@example.com"),
        ],
    )
    .await;
    let ok = allowed(&resp);
    let set = header_options(&ok.headers);
    assert_eq!(set["x-forwarded-user"].value, "alice");
    assert!(!set.contains_key("x-forwarded-email"));
    assert!(
        ok.headers_to_remove
            .contains(&"x-forwarded-email".to_string()),
        "{:?}",
        ok.headers_to_remove
    );
}

#[tokio::test]
async fn token_signed_with_a_newly_published_key_is_accepted_after_one_jwks_refetch() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let s = idp_server(&idp).await;
    wait_ready(&s).await;
    let before = idp.fetches();

    idp.publish(tokens::jwks(&["rsa-a", "rsa-b"]));
    let rotated = bearer(&tokens::sign("rsa-b", &tokens::claims("alice")));
    let resp = get(&s, SIGNED_IN, &[("authorization", &rotated)]).await;
    assert_eq!(
        header_options(&allowed(&resp).headers)["x-forwarded-user"].value,
        "alice"
    );
    assert_eq!(
        idp.fetches(),
        before + 1,
        "exactly one refetch for the new kid"
    );

    // The new key is now known: another user's token with it costs no fetch.
    let other = bearer(&tokens::sign("rsa-b", &tokens::claims("carol")));
    allowed(&get(&s, SIGNED_IN, &[("authorization", &other)]).await);
    // And the old key keeps working.
    allowed(
        &get(
            &s,
            SIGNED_IN,
            &[("authorization", &bearer(&tokens::token_for("dave")))],
        )
        .await,
    );
    assert_eq!(idp.fetches(), before + 1);
}

#[tokio::test]
async fn a_slow_refetch_for_a_new_key_answers_within_the_check_budget_and_lands_for_later_checks() {
    // Envoy gives a Check 0.5 s (the shipped provider timeout); jwks.timeout is 5 s.
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let s = idp_server_with(&idp, ", check_timeout: 300ms", |y| y).await;
    wait_ready(&s).await;
    idp.set_delay(Duration::from_millis(1500));
    idp.publish(tokens::jwks(&["rsa-a", "rsa-b"]));
    let rotated = bearer(&tokens::sign("rsa-b", &tokens::claims("alice")));
    let started = std::time::Instant::now();
    let err = check(&s, "GET", HOST, SIGNED_IN, &[("authorization", &rotated)])
        .await
        .expect_err("the key is not known yet: cannot decide, never a 401 that blames the caller");
    let waited = started.elapsed();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        waited < Duration::from_millis(450),
        "the Check waited {waited:?} for the IdP, past Envoy's 0.5 s"
    );
    // The fetch went on without the Check: once it lands the key verifies.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match check(&s, "GET", HOST, SIGNED_IN, &[("authorization", &rotated)]).await {
            Ok(resp) => {
                allowed(&resp);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                assert!(std::time::Instant::now() < deadline, "the key never landed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn an_idp_with_a_private_ca_is_trusted_through_jwks_ca_file_and_only_then() {
    let (idp, ca_pem) = FakeIdp::start_tls(tokens::jwks(&["rsa-a"])).await;
    let yaml = config(
        &format!("url: \"{}\", ca_file: idp-ca.pem", idp.jwks_url()),
        STATIC_GROUPS,
    );
    let s = TestServer::start(&yaml, &[("idp-ca.pem", &ca_pem)]).await;
    wait_ready(&s).await;
    let token = bearer(&tokens::token_for("alice"));
    allowed(&get(&s, SIGNED_IN, &[("authorization", &token)]).await);

    // Without it the built-in roots do not know the CA: no keys, cannot decide.
    let untrusted = TestServer::start(
        &config(&format!("url: \"{}\"", idp.jwks_url()), STATIC_GROUPS),
        &[],
    )
    .await;
    // Its first fetches (at start, then after 0.5 s) fail in the TLS handshake.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let err = check(
        &untrusted,
        "GET",
        HOST,
        SIGNED_IN,
        &[("authorization", &token)],
    )
    .await
    .expect_err("no keys");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let (status, _) = readyz(&untrusted).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn tokens_with_random_unknown_kids_cost_at_most_one_jwks_fetch_per_refetch_interval() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let s = idp_server(&idp).await;
    wait_ready(&s).await;
    // Kids nobody published, different on every run.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let tokens: Vec<String> = (0..200)
        .map(|i| {
            bearer(&tokens::sign_with_kid(
                "rsa-a",
                &format!("kid-{nonce:x}-{i}"),
                &tokens::claims("mallory"),
            ))
        })
        .collect();
    let before = idp.fetches();
    let started = Instant::now();
    let checks = tokens.iter().map(|token| {
        let req = check_request("GET", HOST, SIGNED_IN, &[("authorization", token)]);
        let mut client = s.client.clone();
        async move { client.check(req).await.map(|r| r.into_inner()) }
    });
    for resp in futures::future::join_all(checks).await {
        let d = denied(&resp.expect("answered"));
        assert_eq!(d.http_status, 401);
        assert_eq!(d.json["reason"], "unknown key id");
    }

    // The test config sets min_refetch_interval to 1 s: one refetch is allowed at once
    // and one more per full interval the flood took (normally none).
    let extra = idp.fetches() - before;
    let allowed_extra = 1 + started.elapsed().as_secs() as usize;
    assert!(
        (1..=allowed_extra).contains(&extra),
        "{extra} JWKS fetches for 200 unknown kids (at most {allowed_extra} allowed)"
    );
}

#[tokio::test]
async fn without_signing_keys_token_routes_are_unavailable_until_the_idp_recovers() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    idp.set_failing(true);
    let s = idp_server(&idp).await;
    for _ in 0..500 {
        if idp.fetches() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        idp.fetches() > 0,
        "the server never tried to fetch the JWKS"
    );

    let token = bearer(&tokens::token_for("alice"));
    for path in [SIGNED_IN, TEAM_A] {
        let err = check(&s, "GET", HOST, path, &[("authorization", &token)])
            .await
            .expect_err("cannot decide without keys: must not allow or deny");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{path}: {err:?}");
    }
    // A bad token cannot be told from a good one either: no 401 that blames the caller.
    let err = check(
        &s,
        "GET",
        HOST,
        SIGNED_IN,
        &[(
            "authorization",
            &bearer(&tokens::sign("rsa-b", &tokens::claims("x"))),
        )],
    )
    .await
    .expect_err("cannot decide");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    // Public routes need no keys.
    allowed(&get(&s, PUBLIC, &[]).await);
    let (status, body) = readyz(&s).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(tokens::ISSUER), "{body}");

    idp.set_failing(false);
    wait_ready(&s).await;
    let resp = get(&s, SIGNED_IN, &[("authorization", &token)]).await;
    assert_eq!(
        header_options(&allowed(&resp).headers)["x-forwarded-user"].value,
        "alice"
    );
}

#[tokio::test]
async fn es256_tokens_are_accepted_too() {
    let s = static_server().await;
    let token = bearer(&tokens::sign("ec-a", &tokens::claims("alice")));
    let resp = get(&s, TEAM_A, &[("authorization", &token)]).await;
    assert_eq!(
        header_options(&allowed(&resp).headers)["x-forwarded-user"].value,
        "alice"
    );
}

#[tokio::test]
async fn a_route_can_take_the_token_from_a_cookie_or_an_opted_in_query_parameter() {
    let jwks = tokens::jwks(&["rsa-a"]).to_string();
    let yaml = config("file: jwks.json", STATIC_GROUPS).replacen(
        "routes:\n",
        "routes:\n  - name: ui\n    match: {hosts: [ui.example.com]}\n    allow: authenticated\n    token_from: [\"cookie:session\", \"query:access_token\"]\n    inject: {user: x-forwarded-user}\n",
        1,
    );
    let s = TestServer::start(&yaml, &[("jwks.json", &jwks)]).await;
    let token = tokens::token_for("alice");

    let cookie = format!("theme=dark; session={token}");
    let resp = check(&s, "GET", "ui.example.com", "/", &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(
        header_options(&allowed(&resp).headers)["x-forwarded-user"].value,
        "alice"
    );

    let resp = check(
        &s,
        "GET",
        "ui.example.com",
        &format!("/dashboard?access_token={token}&tab=2"),
        &[],
    )
    .await
    .unwrap();
    let ok = allowed(&resp);
    assert_eq!(
        header_options(&ok.headers)["x-forwarded-user"].value,
        "alice"
    );
    assert_eq!(
        ok.query_parameters_to_remove,
        vec!["access_token".to_string()],
        "the token must not reach the upstream in the URL"
    );

    // This route does not read the Authorization header.
    let resp = check(
        &s,
        "GET",
        "ui.example.com",
        "/",
        &[("authorization", &bearer(&token))],
    )
    .await
    .unwrap();
    let d = denied(&resp);
    assert_eq!(d.http_status, 401);
    assert_eq!(d.json["reason"], "no token in the request");
}

#[tokio::test]
async fn unknown_kids_right_after_a_key_rotation_refetch_cost_no_further_jwks_fetch() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    // A refetch interval far longer than the test, so the bound below does not depend on
    // how fast this machine answers a thousand checks.
    let s = idp_server_with(&idp, "", |y| {
        y.replace("min_refetch_interval: 1s", "min_refetch_interval: 1h")
    })
    .await;
    wait_ready(&s).await;
    assert_eq!(idp.fetches(), 1, "one fetch at start");

    idp.publish(tokens::jwks(&["rsa-a", "rsa-b"]));
    let rotated = bearer(&tokens::sign("rsa-b", &tokens::claims("alice")));
    allowed(&get(&s, SIGNED_IN, &[("authorization", &rotated)]).await);
    assert_eq!(idp.fetches(), 2, "one refetch for the new kid");

    // A flood of 1000 concurrent tokens with random kids, within min_refetch_interval of
    // that refetch: the IdP sees no further fetch.
    let flood: Vec<String> = (0..1000)
        .map(|i| {
            bearer(&tokens::sign_with_kid(
                "rsa-a",
                &format!("random-{i}"),
                &tokens::claims("mallory"),
            ))
        })
        .collect();
    let checks = flood.iter().map(|token| {
        let req = check_request("GET", HOST, SIGNED_IN, &[("authorization", token)]);
        let mut client = s.client.clone();
        async move { client.check(req).await.map(|r| r.into_inner()) }
    });
    for resp in futures::future::join_all(checks).await {
        let d = denied(&resp.expect("answered"));
        assert_eq!(d.http_status, 401);
        assert_eq!(d.json["reason"], "unknown key id");
    }
    assert_eq!(idp.fetches(), 2, "no fetch for the flood");
}

#[tokio::test]
async fn a_withdrawn_key_stops_working_after_the_next_refresh_even_for_cached_tokens() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a", "rsa-b"])).await;
    let s = idp_server_with(&idp, ", refresh_interval: 100ms", |y| y).await;
    wait_ready(&s).await;
    let token = bearer(&tokens::sign("rsa-b", &tokens::claims("alice")));
    // Verified once, and again from the verified-token cache.
    allowed(&get(&s, SIGNED_IN, &[("authorization", &token)]).await);
    allowed(&get(&s, SIGNED_IN, &[("authorization", &token)]).await);

    idp.publish(tokens::jwks(&["rsa-a"]));
    // Bounded wait (about 5 s) for a refresh to drop the key.
    for _ in 0..100 {
        let resp = get(&s, SIGNED_IN, &[("authorization", &token)]).await;
        if resp.status.as_ref().map(|st| st.code) != Some(0) {
            let d = denied(&resp);
            assert_eq!(d.http_status, 401);
            assert_eq!(d.json["reason"], "unknown key id");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a token signed by a withdrawn key was still accepted");
}

#[tokio::test]
async fn keys_found_through_oidc_discovery_verify_tokens() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let yaml = config("discovery: true", STATIC_GROUPS).replace(tokens::ISSUER, &idp.issuer());
    let s = TestServer::start(&yaml, &[]).await;
    wait_ready(&s).await;
    let mut claims = tokens::claims("alice");
    claims["iss"] = idp.issuer().into();
    let token = bearer(&tokens::sign("rsa-a", &claims));
    let resp = get(&s, SIGNED_IN, &[("authorization", &token)]).await;
    assert_eq!(
        header_options(&allowed(&resp).headers)["x-forwarded-user"].value,
        "alice"
    );
    assert_eq!(idp.fetches(), 1, "the JWKS named by jwks_uri was fetched");
}

#[tokio::test]
async fn when_the_idp_fails_cached_keys_serve_until_max_staleness_then_checks_cannot_be_decided() {
    let idp = FakeIdp::start(tokens::jwks(&["rsa-a"])).await;
    let s = idp_server_with(&idp, ", refresh_interval: 50ms, max_staleness: 1s", |y| y).await;
    wait_ready(&s).await;
    let token = bearer(&tokens::token_for("alice"));
    // Verified once: from here on the verified-token cache answers for it.
    allowed(&get(&s, SIGNED_IN, &[("authorization", &token)]).await);
    idp.set_failing(true);
    // Right after the IdP starts failing, the last good keys still serve.
    allowed(&get(&s, SIGNED_IN, &[("authorization", &token)]).await);
    let mut unavailable = false;
    // Bounded wait (about 5 s) for max_staleness (1 s) to run out.
    for _ in 0..100 {
        match check(&s, "GET", HOST, SIGNED_IN, &[("authorization", &token)]).await {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                unavailable = true;
                break;
            }
            Ok(resp) => {
                allowed(&resp);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(unavailable, "stale keys were used beyond max_staleness");
    let (status, body) = readyz(&s).await;
    assert_eq!(status, 503, "{body}");
}
