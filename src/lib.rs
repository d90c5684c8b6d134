//! mesh-authz: an external authorization server for Envoy and Istio.
//!
//! # Layout
//!
//! The request path, top to bottom:
//!
//! ```text
//! Envoy ──gRPC Check──▶ service      tonic glue: CheckRequest → RequestView, audit, render
//!                        │
//!                        ▼
//!                       authorize    the decision: path → route → rules → token → groups
//!                        │           → verdict
//!                        ├─ request  the path routes see (RFC 3986 normal form; paths an
//!                        │           upstream could resolve elsewhere refused)
//!                        ├─ policy   routes (host/path/method/principal matchers), rules,
//!                        │           group references (uuid: or name:), the upstream
//!                        │           header changes (inject), kube-apiserver requests and
//!                        │           their access rules
//!                        ├─ authn    token extraction, JWT verification, JWKS store
//!                        └─ gerrit   REST client (accounts resolved by exact query),
//!                                    per-user group cache, group events
//!                        │
//!                        ▼
//!                       decision     Decision → CheckResponse (Envoy header options,
//!                                    denials, metadata)
//! ```
//!
//! Around it:
//! - [`config`]: YAML schema, compilation into runtime types, all problems with paths;
//!   watching the file for live reload.
//! - [`server`]: binds gRPC (Check, health, reflection) and admin HTTP; swaps in the
//!   authorizer of a reloaded config; graceful shutdown.
//! - [`admin`]: `/healthz`, `/readyz` and gRPC health from one readiness state,
//!   `/metrics`, authenticated group cache invalidation and Gerrit's group events, passed
//!   on to the other replicas first and retried (`admin::Peers`).
//! - [`telemetry`]: logging setup, Prometheus metrics, the audit log.
//! - [`request`]: the request view shared by policy, authn and decision, and the path in
//!   the form routes match it.
//! - `main.rs`: the CLI (`serve`, `validate` with route overlap findings, `check`).

#![warn(missing_docs)]

pub mod admin;
pub mod authn;
pub mod authorize;
pub mod config;
pub mod decision;
pub mod gerrit;
pub mod policy;
pub mod request;
pub mod server;
pub mod service;
pub mod telemetry;
