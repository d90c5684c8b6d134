//! Token verification cost per algorithm, cold (every call verifies the signature) and
//! from the verified-token cache, on the PyJWT-signed interop fixtures.
//!
//! `cargo bench --bench verify`

use criterion::{criterion_group, criterion_main, Criterion};
use mesh_authz::authorize::Authorizer;
use mesh_authz::config::{self, FileResolver};
use std::hint::black_box;
use std::path::Path;

const ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn fixtures() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/interop"
    ))
}

fn authorizer(cache_entries: u64) -> Authorizer {
    let yaml = format!(
        r#"
issuers:
  - issuer: https://interop.test.invalid
    audiences: [mesh-authz-interop]
    jwks: {{file: jwks.json}}
    algorithms: [{}]
token_cache: {{max_entries: {cache_entries}}}
routes:
  - name: all
    allow: authenticated
"#,
        ALGORITHMS.join(", ")
    );
    let config = config::from_str("bench.yaml", &yaml, &FileResolver::Disk(fixtures().into()))
        .expect("bench config compiles");
    Authorizer::from_config(&config, reqwest::Client::new()).expect("authorizer builds")
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cold = authorizer(0);
    let cached = authorizer(1000);
    for alg in ALGORITHMS {
        let token = std::fs::read_to_string(fixtures().join(format!("{}.jwt", alg.to_lowercase())))
            .unwrap();
        let token = token.trim();
        c.bench_function(&format!("verify_{alg}_cold"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(cold.verifier().verify(token).await.is_ok()) })
        });
        c.bench_function(&format!("verify_{alg}_cached"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(cached.verifier().verify(token).await.is_ok()) })
        });
    }
}

criterion_group!(verify, benches);
criterion_main!(verify);
