//! mesh-authz: an external authorization server for Envoy and Istio.
//!
//! # Layout
//!
//! The request path, top to bottom:
//!
//! ```text
//! Envoy ──gRPC Check──▶ service      tonic glue: CheckRequest → RequestView, render result
//!                        │
//!                        ▼
//!                       authorize    the decision: route → token → groups → verdict
//!                        ├─ policy   route table: host/path/method matchers, requirements
//!                        ├─ authn    bearer token extraction, JWT verification, JWKS store
//!                        └─ gerrit   REST client, per-user group cache, group events
//!                        │
//!                        ▼
//!                       decision     Decision → CheckResponse (headers, denials, metadata)
//! ```
//!
//! Around it:
//! - [`config`]: YAML schema, compilation into runtime types, all problems with paths.
//! - [`server`]: binds gRPC (Check, health, reflection) and admin HTTP; graceful shutdown.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, group cache invalidation and Gerrit's
//!   group events, passed on to the other replicas (`admin::Peers`).
//! - [`telemetry`]: logging setup and Prometheus metrics.
//! - [`request`]: the request view shared by policy, authn and decision.
//! - `main.rs`: the CLI (`serve`, `validate`, `check`).

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
