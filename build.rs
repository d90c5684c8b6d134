//! Compiles the vendored Envoy protos in `proto/` into the `FileDescriptorSet` that the
//! gRPC reflection service serves, so `grpcurl` and `ghz` can call Check without local
//! proto files. The message types themselves come from `envoy-types`; only the descriptor
//! set is produced here, with `protox` (pure Rust, no `protoc` needed).

use protox::prost::Message;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["envoy/service/auth/v3/external_auth.proto"], ["proto"])
        .unwrap_or_else(|e| panic!("compiling proto/ failed: {e}"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("authz_descriptor.bin"),
        descriptors.encode_to_vec(),
    )
    .expect("writing the descriptor set to OUT_DIR");
}
