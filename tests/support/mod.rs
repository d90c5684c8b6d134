//! Shared fakes and helpers for the integration tests.
//!
//! - [`check_browser`]: a browser as mesh-authz sees it through Check calls (cookies
//!   kept, the IdP's form submitted), for sign-in flows without Envoy.
//! - [`chromium`]: a real headless Chromium over WebDriver, for sign-in end to end.
//! - [`clock`]: tokio's paused clock kept from auto-advancing while real I/O runs.
//! - [`developer`]: a developer's home with a client config, running `mesh-authz login`
//!   (answering the IdP's device page like a person), `credential` and the kubectl plugin.
//! - [`idp`]: a fake IdP serving a JWKS over HTTP, counting fetches.
//! - [`oidc_provider`]: a fake OpenID provider for browser sign-in: discovery, a real
//!   HTML login form, a token endpoint checking PKCE, client secrets and single-use
//!   codes, refresh with rotation, RP-initiated logout, and the device grant.
//! - [`gerrit`]: a fake Gerrit following its REST wire format (`)]}'`, `/a/`, basic auth or
//!   a trusted header), permission model and events, with faults on demand.
//! - [`git_http`]: a git smart-HTTP upstream (`git http-backend` behind a small server),
//!   trusting `X-Forwarded-User` as Gerrit does.
//! - [`tokens`]: signs test tokens with the fixture keys in `tests/fixtures`.
//! - [`pki`]: a throwaway CA issuing server and SPIFFE workload certificates.
//! - [`envoy`], [`envoy_process`]: a real Envoy in front of mesh-authz (the process part
//!   is shared with the load bench), a Check tap and an echo upstream.
//! - [`pausable`]: a proxy in front of a replica's admin port that can stop answering,
//!   like a replica stopped with SIGSTOP, and answer again.
//! - [`otlp`]: an OTLP trace receiver (gRPC `TraceService` and HTTP `/v1/traces`).
//! - [`serve`]: the real `mesh-authz serve` as a process of its own, with its `OTEL_*`
//!   environment.
//! - [`server`]: starts the real mesh-authz server on ephemeral ports with a gRPC client.
//! - [`istio`]: CheckRequests shaped like an Istio gateway's (shared with the benches).
//! - [`responses`]: reads CheckResponses as Envoy acts on them (allowed or denied).
//! - [`engine`]: the decision engine built from config YAML, driven without sockets.

#![allow(dead_code)] // each test binary uses a different subset

pub mod check_browser;
pub mod chromium;
pub mod clock;
pub mod developer;
pub mod engine;
pub mod envoy;
pub mod envoy_process;
pub mod gerrit;
pub mod git_http;
pub mod idp;
pub mod istio;
pub mod oidc_provider;
pub mod otlp;
pub mod pausable;
pub mod pki;
pub mod responses;
pub mod serve;
pub mod server;
pub mod tokens;
