//! Test tokens signed with the fixture keys (tests/fixtures, TEST-ONLY keys).

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Issuer used by the test configs.
pub const ISSUER: &str = "https://idp.test.invalid";
/// Audience used by the test configs.
pub const AUDIENCE: &str = "mesh-authz-test";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The public JWK of a fixture key (`rsa-a`, `rsa-b`, `ec-a`).
pub fn jwk(name: &str) -> Value {
    serde_json::from_str(&fixture(&format!("{name}.jwk.json"))).expect("fixture JWK is JSON")
}

/// A JWKS document holding the named fixture keys.
pub fn jwks(names: &[&str]) -> Value {
    json!({ "keys": names.iter().map(|n| jwk(n)).collect::<Vec<_>>() })
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Standard claims for `user`, valid for an hour.
pub fn claims(user: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": format!("sub-{user}"),
        "preferred_username": user,
        "email": format!("{user}@example.com"),
        "iat": now(),
        "exp": now() + 3600,
    })
}

/// Signs `claims` with fixture key `key` (its name is the `kid`).
pub fn sign(key: &str, claims: &Value) -> String {
    let pem = fixture(&format!("{key}.pem"));
    let (alg, enc) = if key.starts_with("ec") {
        (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes()))
    } else {
        (Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes()))
    };
    let mut header = Header::new(alg);
    header.kid = Some(key.to_string());
    encode(&header, claims, &enc.expect("fixture key parses")).expect("signing works")
}

/// Signs `claims` (RS256) with RSA fixture key `key` but names `kid` in the header: a
/// token whose `kid` lies about its key, or names a key the issuer never published.
pub fn sign_with_kid(key: &str, kid: &str, claims: &Value) -> String {
    let pem = fixture(&format!("{key}.pem"));
    let enc = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("fixture RSA key parses");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    encode(&header, claims, &enc).expect("signing works")
}

/// `token` as an `authorization` header value.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A valid RS256 token for `user`.
pub fn token_for(user: &str) -> String {
    sign("rsa-a", &claims(user))
}

/// Signs `claims` (RS256) with RSA fixture key `key`, its name as `kid`, and `extra`'s
/// fields added to the protected header as they are (`crit` of any shape, say): the
/// header JSON is written here, not by jsonwebtoken, whose `Header` types `crit`.
pub fn sign_with_header_fields(key: &str, extra: &Value, claims: &Value) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": key});
    for (name, value) in extra.as_object().expect("header fields are an object") {
        header[name] = value.clone();
    }
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let pem = fixture(&format!("{key}.pem"));
    let enc = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("fixture RSA key parses");
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &enc, Algorithm::RS256)
        .expect("signing works");
    format!("{signing_input}.{signature}")
}

/// A JWT's claims, not verified (for asserting on a token a client handed out).
pub fn decode_unverified(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}
