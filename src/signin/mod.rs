//! Browser sign-in: the OIDC authorization code flow with PKCE, answered by mesh-authz
//! itself at the gateway, and the stateless session cookie it leaves.
//!
//! - [`flow`]: sign-in at work: start, callback, the session on each request (with
//!   refresh), sign-out.
//! - [`answer`]: what mesh-authz answers a browser itself (redirects, error pages).
//! - [`navigation`]: which requests are a person opening a page (the only ones sent to
//!   sign in; scripts and git get 401).
//! - [`login`]: one sign-in in progress (`state`, `nonce`, PKCE) and the page to return
//!   to, which must be on the same host.
//! - [`session`]: what a session cookie holds and how long it is good for.
//! - [`seal`]: AES-256-GCM under a key ring, so cookies open on every replica and keys
//!   rotate without signing anyone out.
//! - [`settings`]: the configured clients and session cookie.
//! - [`cookies`]: the `Cookie` header read with bounds, sessions split into chunks, and
//!   the header sent upstream without mesh-authz's cookies.

pub mod answer;
pub mod cookies;
pub mod flow;
pub mod login;
pub mod navigation;
pub mod seal;
pub mod session;
pub mod settings;

pub use answer::Answer;
pub use flow::{BrowserSignIn, Reserved, SessionCheck};
pub use settings::{BrowserSignInConfig, SessionSettings};
