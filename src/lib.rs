//! mesh-authz: an external authorization server for Envoy and Istio.
//!
//! # Layout
//!
//! The request path, top to bottom:
//!
//! ```text
//! Envoy ──gRPC Check──▶ ext_authz    the only module that knows Envoy's types:
//!                        │           CheckRequest bytes read in place (wire.rs) →
//!                        │           RequestView (request.rs), the service (grpc.rs,
//!                        │           service.rs: audit, metrics), render (response.rs)
//!                        ▼
//!                       authorize    the decision: path → route → rules → token → groups
//!                        │           → change → grant → verdict (Decision, Verdict, Denial)
//!                        ├─ request  RequestView, and the path routes see (RFC 3986
//!                        │           normal form; paths an upstream could resolve
//!                        │           elsewhere refused)
//!                        ├─ policy   routes (host/path/method/principal matchers), rules,
//!                        │           group references (uuid: or name:), the upstream
//!                        │           header changes (inject), kube-apiserver requests and
//!                        │           their access rules, change conditions judged on
//!                        │           plain facts (change_gate), the grants file (grants)
//!                        ├─ signin   browser sign-in: which requests are page loads, the
//!                        │           OIDC code flow with PKCE answered at the gateway
//!                        │           (start, callback, sign-out), sealed session cookies
//!                        │           read and refreshed; its own answers (redirects, pages)
//!                        ├─ oidc     the IdP as an OAuth client sees it: discovery, the
//!                        │           token endpoint, the device grant (also the CLI's)
//!                        ├─ authn    token extraction, JWT verification, JWKS store,
//!                        │           ID tokens for sign-in
//!                        ├─ gerrit   REST client (accounts resolved by exact query),
//!                        │           per-user group cache, changes and their cache, the
//!                        │           grants store, events (groups, changes, grants branch)
//!                        └─ identity who the caller is, whatever the source: Identity,
//!                                    the Gerrit account it names, its groups (Membership)
//!                        │
//!                        ▼
//!                       ext_authz    Decision → CheckResponse (header options that
//!                                    overwrite, denials with JSON bodies, sign-in's
//!                                    answers, metadata)
//! ```
//!
//! Imports go down this map and never back up: no two top-level modules import each
//! other, directly or through a third.
//!
//! Around it:
//! - [`config`]: `schema.rs` (what the YAML may say), `compile/` (one file per section,
//!   every problem with its path), `model.rs` (the checked config, which cannot be
//!   invalid), `reload.rs` (watching the file for live reload).
//! - [`server`]: binds gRPC (Check, health, reflection) and admin HTTP; swaps in the
//!   authorizer of a reloaded config; graceful shutdown.
//! - [`admin`]: `/healthz`, `/readyz` and gRPC health from one readiness state,
//!   `/metrics`, authenticated group cache invalidation and Gerrit's group events, passed
//!   on to the other replicas first and retried (`admin::Peers`).
//! - [`telemetry`]: logging setup, Prometheus metrics, the audit log, OTLP trace export
//!   (`traces.rs`: the config over the `OTEL_*` variables; `otlp/`: `wire.rs`, OTLP's
//!   protobuf encoding, `queue.rs`, the bounded queue of encoded spans and the task that
//!   sends its batches, and the exporter, gRPC or HTTP).
//! - [`outbound`]: what mesh-authz's own requests share (how their errors read).
//! - [`trace`]: the request path's spans and their sampling, the parent Envoy sends (W3C or
//!   B3), the `traceparent` of Gerrit and IdP requests; used by the modules above, imports
//!   none of them.
//! - [`credential`]: the developer's side, for git and kubectl: `login` (the device
//!   grant), the token store, git's credential helper and kubectl's exec plugin.
//! - `main.rs`: the CLI (`serve`, `validate` with route overlap findings, `check`,
//!   `login`, `logout`, `credential`, `kubectl-credential`).
//!
//! Outside `src/`:
//! - `tests/`: one file per behaviour area, against the real server over sockets (and a
//!   real Envoy in `envoy_*.rs`); shared fakes (Gerrit, IdP) and builders (tokens, the
//!   Istio-like CheckRequest, the engine without sockets) in `tests/support/`.
//! - `benches/`: criterion (`check.rs`, `verify.rs`); `load/`, whole processes under
//!   h2load and wrk against a no-op Check server; `ghz/`, configs for a running server.
//! - `examples/`: the quickstart's keys and demo tokens; `profile_check.rs` for callgrind.
//! - `manifests/`: the kustomize base and Istio policies, checked by `tests/manifests.rs`.

#![warn(missing_docs)]

pub mod admin;
pub mod authn;
pub mod authorize;
pub mod config;
pub mod credential;
pub mod ext_authz;
pub mod gerrit;
pub mod identity;
pub mod oidc;
pub mod outbound;
pub mod policy;
pub mod request;
pub mod server;
pub mod signin;
pub mod telemetry;
pub mod trace;
