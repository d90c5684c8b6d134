//! The ID token a sign-in's callback gets from the token endpoint is checked as OIDC Core
//! 3.1.3.7 says, with the issuer's own key store: a token for another client, with
//! another nonce, from another issuer or expired never makes a session. The verifier is
//! driven directly, without sockets.

mod support;

use mesh_authz::authn::AuthnError;
use serde_json::{json, Value};
use support::{engine, tokens};

const CLIENT: &str = "gerrit-web";
const NONCE: &str = "n-0S6_WzA2Mj";

fn verifier() -> mesh_authz::authorize::Authorizer {
    engine::browser_sign_in()
}

/// An ID token for alice as the IdP would issue it to [`CLIENT`] for [`NONCE`].
fn id_claims() -> Value {
    let mut claims = tokens::claims("alice");
    claims["aud"] = json!(CLIENT);
    claims["azp"] = json!(CLIENT);
    claims["nonce"] = json!(NONCE);
    claims
}

async fn verify(claims: &Value, nonce: Option<&str>) -> Result<Value, AuthnError> {
    let authorizer = verifier();
    let token = tokens::sign("rsa-a", claims);
    authorizer
        .verifier()
        .verify_id_token(&token, tokens::ISSUER, CLIENT, nonce)
        .await
        .map(|v| Value::Object(v.claims))
}

#[tokio::test]
async fn an_id_token_for_this_client_and_sign_in_makes_a_session_with_only_what_rules_read() {
    let claims = verify(&id_claims(), Some(NONCE)).await.unwrap();
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    // `sub` is kept whatever the user claim: a refresh must name the same subject.
    assert_eq!(claims["sub"], "sub-alice");
    // Not kept: nothing reads them, and the cookie stays small.
    for gone in ["nonce", "aud", "azp", "iat"] {
        assert!(claims.get(gone).is_none(), "{gone} kept: {claims}");
    }
}

#[tokio::test]
async fn an_id_token_with_another_or_no_nonce_is_refused() {
    let mut other = id_claims();
    other["nonce"] = json!("someone-else's");
    assert_eq!(verify(&other, Some(NONCE)).await, Err(AuthnError::Nonce));
    let mut none = id_claims();
    none.as_object_mut().unwrap().remove("nonce");
    assert_eq!(verify(&none, Some(NONCE)).await, Err(AuthnError::Nonce));
    // A refreshed ID token carries none and expects none (OIDC Core 12.2).
    assert!(verify(&none, None).await.is_ok());
}

#[tokio::test]
async fn an_id_token_for_another_client_is_refused() {
    let mut other = id_claims();
    other["aud"] = json!("another-client");
    other["azp"] = json!("another-client");
    assert_eq!(verify(&other, Some(NONCE)).await, Err(AuthnError::Audience));
    // An API token of the same issuer (its audience) is no ID token for this client.
    let mut api = id_claims();
    api["aud"] = json!("gerrit-api");
    assert_eq!(verify(&api, Some(NONCE)).await, Err(AuthnError::Audience));
}

#[tokio::test]
async fn azp_must_name_this_client_and_is_required_with_several_audiences() {
    let mut other_azp = id_claims();
    other_azp["azp"] = json!("another-client");
    assert_eq!(
        verify(&other_azp, Some(NONCE)).await,
        Err(AuthnError::AuthorizedParty)
    );
    let mut several = id_claims();
    several["aud"] = json!([CLIENT, "another-client"]);
    several.as_object_mut().unwrap().remove("azp");
    assert_eq!(
        verify(&several, Some(NONCE)).await,
        Err(AuthnError::AuthorizedParty)
    );
    several["azp"] = json!(CLIENT);
    assert!(verify(&several, Some(NONCE)).await.is_ok());
    // One audience and no azp is fine.
    let mut single = id_claims();
    single.as_object_mut().unwrap().remove("azp");
    assert!(verify(&single, Some(NONCE)).await.is_ok());
}

#[tokio::test]
async fn an_expired_id_token_or_one_from_another_issuer_is_refused() {
    let mut expired = id_claims();
    expired["iat"] = json!(tokens::now() - 7200);
    expired["exp"] = json!(tokens::now() - 3600);
    assert_eq!(
        verify(&expired, Some(NONCE)).await,
        Err(AuthnError::Expired)
    );
    let mut foreign = id_claims();
    foreign["iss"] = json!("https://evil.example");
    assert_eq!(
        verify(&foreign, Some(NONCE)).await,
        Err(AuthnError::UnknownIssuer)
    );
}

#[tokio::test]
async fn an_id_token_signed_by_a_key_the_issuer_does_not_have_is_refused() {
    let authorizer = verifier();
    let token = tokens::sign("rsa-b", &id_claims());
    let result = authorizer
        .verifier()
        .verify_id_token(&token, tokens::ISSUER, CLIENT, Some(NONCE))
        .await;
    assert!(
        matches!(
            result,
            Err(AuthnError::UnknownKeyId | AuthnError::BadSignature)
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_id_token_without_the_user_claim_is_refused_at_sign_in_not_at_the_first_request() {
    let mut nameless = id_claims();
    nameless
        .as_object_mut()
        .unwrap()
        .remove("preferred_username");
    assert_eq!(
        verify(&nameless, Some(NONCE)).await,
        Err(AuthnError::Claim("preferred_username".into()))
    );
}
