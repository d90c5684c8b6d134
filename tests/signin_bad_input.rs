//! Whatever a client puts in its `Cookie` header or a callback's query (garbage, huge
//! values, many cookies, colliding names, forged chunks, values sealed by another key),
//! browser sign-in answers with bounded work and a clear status: never a panic, never an
//! allow. The decision engine is driven directly, without sockets.

mod support;

use mesh_authz::authorize::{Authorizer, Verdict};
use mesh_authz::request::RequestView;
use proptest::prelude::*;
use std::collections::HashMap;
use support::{engine, tokens};

/// One authorizer for every case (building one reads files and keys).
fn authorizer() -> &'static Authorizer {
    static BUILT: std::sync::OnceLock<Authorizer> = std::sync::OnceLock::new();
    BUILT.get_or_init(build)
}

fn build() -> mesh_authz::authorize::Authorizer {
    engine::browser_sign_in()
}

/// A sealed value as another deployment's key would make it (a valid shape, a foreign
/// key), for the strategy to cut, splice and repeat.
fn foreign_sealed() -> String {
    let ring = mesh_authz::signin::seal::KeyRing::from_keys(&[[9u8; 32]]).unwrap();
    let session = serde_json::json!({
        "iss": tokens::ISSUER, "claims": {"preferred_username": "alice"},
        "exp": u64::MAX, "started": 0, "seen": 0
    });
    ring.seal(
        mesh_authz::signin::session::SESSION_PURPOSE,
        session.to_string().as_bytes(),
    )
    .unwrap()
}

/// Cookie headers a hostile client could send: our cookie names with random, cut and
/// spliced values, chunk announcements, repeats, and other cookies around them.
fn cookie_header() -> impl Strategy<Value = String> {
    let names = prop_oneof![
        Just("__Host-mesh-authz".to_string()),
        Just("__Host-mesh-authz-1".to_string()),
        Just("__Host-mesh-authz-2".to_string()),
        Just("__Host-mesh-authz-login-AAAAAAAAAAAA".to_string()),
        Just("__Secure-mesh-authz-hint".to_string()),
        "[a-z]{1,8}",
    ];
    let sealed = foreign_sealed();
    let values = prop_oneof![
        "[A-Za-z0-9_-]{0,64}",
        "[0-9]\\.[A-Za-z0-9_-]{0,32}",
        "\\PC{0,40}",
        (0..sealed.len()).prop_map(move |cut| sealed[..cut].to_string()),
        Just(foreign_sealed()),
        Just(format!("2.{}", foreign_sealed())),
    ];
    prop::collection::vec((names, values), 0..12).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_cookie_header_makes_an_allow(header in cookie_header(), navigate in any::<bool>()) {
        let authorizer = authorizer();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut headers: HashMap<String, String> = HashMap::new();
        headers.insert("cookie".into(), header.clone());
        if navigate {
            headers.insert("sec-fetch-mode".into(), "navigate".into());
        }
        let req = RequestView::http("GET", "gerrit.example.com", "/c/42", &headers);
        let decision = rt.block_on(authorizer.decide(&req));
        prop_assert!(
            !matches!(decision.verdict, Verdict::Allow { .. }),
            "{header:?} was allowed"
        );
    }

    #[test]
    fn no_callback_query_makes_a_session(query in "\\PC{0,200}", header in cookie_header()) {
        let authorizer = authorizer();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut headers: HashMap<String, String> = HashMap::new();
        headers.insert("cookie".into(), header);
        let path = format!("/_mesh-authz/callback?{query}");
        let req = RequestView::http("GET", "gerrit.example.com", &path, &headers);
        let decision = rt.block_on(authorizer.decide(&req));
        match decision.verdict {
            Verdict::Answer(answer) => {
                prop_assert!(answer.status >= 400, "{answer:?}");
                prop_assert!(
                    !answer.set_cookies.iter().any(|c| c.starts_with("__Host-mesh-authz=")
                        && !c.contains("Max-Age=0")),
                    "a session was set: {answer:?}"
                );
            }
            other => prop_assert!(false, "not an answer: {other:?}"),
        }
    }
}

#[test]
fn a_huge_cookie_header_of_many_cookies_is_no_session() {
    let authorizer = authorizer();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let huge = format!(
        "{}; __Host-mesh-authz=4.{}",
        (0..5000)
            .map(|i| format!("c{i}=v"))
            .collect::<Vec<_>>()
            .join("; "),
        "A".repeat(60_000)
    );
    let headers: HashMap<String, String> = [("cookie".to_string(), huge)].into();
    let req = RequestView::http("GET", "gerrit.example.com", "/c/42", &headers);
    let decision = rt.block_on(authorizer.decide(&req));
    assert!(
        matches!(decision.verdict, Verdict::Deny(_)),
        "{:?}",
        decision.verdict
    );
}
