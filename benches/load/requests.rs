//! What the bench sends: Istio-like CheckRequests, their gRPC framing for h2load, and
//! tokens (RS256 with the `rsa-a` test fixture, EdDSA with a key made for the run).

use base64::Engine;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prost::Message;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::codegen::Bytes;

/// The issuer of the RS256 tokens (warm driver, cold, Envoy parts): the quickstart's, whose
/// config those parts run with the `rsa-a` test key in its JWKS.
pub const ISSUER: &str = "https://idp.demo.mesh-authz.invalid";
/// The audience of every bench token: the quickstart's.
pub const AUDIENCE: &str = "mesh-authz-demo";
/// The issuer of the EdDSA tokens (memory part).
pub const ED_ISSUER: &str = "https://idp-ed.bench.mesh-authz.invalid";
pub use crate::common::{HOST, PATH};

/// A test fixture from `tests/fixtures` (TEST-ONLY keys).
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A CheckRequest as an Istio ingress gateway sends it for `GET HOST PATH` (the shared
/// builder, gateway shape), with `authorization: Bearer <token>` when there is a token.
pub fn check_request(token: Option<&str>) -> CheckRequest {
    crate::common::istio_check_request(token)
}

/// The serialized request (what tonic frames itself).
pub fn encode(request: &CheckRequest) -> Bytes {
    Bytes::from(request.encode_to_vec())
}

/// A gRPC length-prefixed message, as h2load sends it: a 0 byte (not compressed), the
/// length as 4 bytes big-endian, then the serialized request.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).expect("request under 4 GiB");
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Claims for `user` from `issuer`, valid for two hours, with a distinct `jti`.
pub fn claims(issuer: &str, user: &str, jti: u64) -> Value {
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": user,
        "preferred_username": user,
        "email": format!("{user}@example.com"),
        "iat": now(),
        "exp": now() + 7200,
        "jti": format!("bench-{jti}"),
    })
}

/// Signs tokens with one key and algorithm.
#[derive(Clone)]
pub struct Signer {
    header: Header,
    key: EncodingKey,
}

impl Signer {
    /// RS256 with the `rsa-a` fixture key (kid `rsa-a`, as in its JWK).
    pub fn rsa_a() -> Self {
        let pem = fixture("rsa-a.pem");
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa-a.pem parses");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-a".into());
        Self { header, key }
    }

    /// A fresh Ed25519 key pair: the signer (EdDSA) and its public JWKS (kty OKP).
    pub fn ed25519() -> (Self, Value) {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key generation");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("fresh key parses");
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key());
        let jwks = json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": x,
            "kid": "bench-ed25519", "use": "sig", "alg": "EdDSA",
        }]});
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("bench-ed25519".into());
        let key = EncodingKey::from_ed_der(pkcs8.as_ref());
        (Self { header, key }, jwks)
    }

    /// One signed token.
    pub fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&self.header, claims, &self.key).expect("signing works")
    }

    /// Signs `n` tokens on every core: token `i` carries `claims(i)`.
    pub fn sign_many(&self, n: usize, claims: impl Fn(usize) -> Value + Sync) -> Vec<String> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = n.div_ceil(threads).max(1);
        let mut tokens = vec![String::new(); n];
        std::thread::scope(|scope| {
            for (c, slots) in tokens.chunks_mut(chunk).enumerate() {
                let claims = &claims;
                scope.spawn(move || {
                    for (j, slot) in slots.iter_mut().enumerate() {
                        *slot = self.sign(&claims(c * chunk + j));
                    }
                });
            }
        });
        tokens
    }
}

/// The JWKS holding the public `rsa-a` fixture key.
pub fn rsa_a_jwks() -> Value {
    let jwk: Value = serde_json::from_str(&fixture("rsa-a.jwk.json")).expect("JWK is JSON");
    json!({ "keys": [jwk] })
}
