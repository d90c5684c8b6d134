//! Issuer signing keys: loading, caching and refetching a JWKS.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Why a JWKS could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The HTTP fetch failed or returned a non-2xx status.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The JWKS URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The document is not a JWKS or holds no usable signing key.
    #[error("invalid JWKS: {0}")]
    Invalid(String),
}

/// Largest JWKS document accepted; real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One usable verification key.
pub struct VerifyKey {
    /// The key, ready for `jsonwebtoken::decode`.
    pub key: DecodingKey,
    /// The one algorithm this key may verify, when the JWK pins it: its `alg`, or its
    /// curve (P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA).
    pub alg: Option<Algorithm>,
    /// The algorithm family the key can verify.
    pub family: AlgorithmFamily,
}

/// The keys of one issuer at one point in time.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    all: Vec<Arc<VerifyKey>>,
    /// SHA-256 of the document, to notice when a refresh changed nothing.
    digest: [u8; 32],
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .field("keys", &self.all.len())
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document, keeping every asymmetric signing key and skipping (with a
    /// log line) keys that cannot be used, so one odd key does not hide the others.
    pub fn parse(document: &[u8]) -> Result<Self, JwksError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document = serde_json::from_slice(document)
            .map_err(|e| JwksError::Invalid(format!("not a JWKS document: {e}")))?;
        let mut set = KeySet {
            digest: sha256(document),
            ..KeySet::default()
        };
        for (index, value) in doc.keys.into_iter().enumerate() {
            match usable_key(value) {
                Ok((kid, key)) => {
                    let key = Arc::new(key);
                    if let Some(kid) = kid {
                        set.by_kid.insert(kid, key.clone());
                    }
                    set.all.push(key);
                }
                Err(reason) => tracing::warn!(index, reason, "skipping JWKS key"),
            }
        }
        if set.all.is_empty() {
            return Err(JwksError::Invalid("no usable signing key".into()));
        }
        Ok(set)
    }

    /// The key for a token header: by `kid`, or the only key when the token has none.
    pub fn find(&self, kid: Option<&str>) -> Option<&Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None if self.all.len() == 1 => self.all.first(),
            None => None,
        }
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether the set holds no key (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}

fn usable_key(value: serde_json::Value) -> Result<(Option<String>, VerifyKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("unsupported JWK: {e}"))?;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err("key `use` is not `sig`".into());
    }
    let alg = match jwk.common.key_algorithm {
        Some(a) => Some(
            // KeyAlgorithm and Algorithm share their names (RS256, ...).
            Algorithm::from_str(&a.to_string()).map_err(|_| format!("unsupported key alg {a}"))?,
        ),
        None => None,
    };
    let curve_alg = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => Some(match &ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            other => return Err(format!("unsupported EC curve {other:?}")),
        }),
        AlgorithmParameters::OctetKeyPair(okp) => match &okp.curve {
            EllipticCurve::Ed25519 => Some(Algorithm::EdDSA),
            other => return Err(format!("unsupported OKP curve {other:?}")),
        },
        _ => None,
    };
    let alg = match (alg, curve_alg) {
        (Some(a), Some(c)) if a != c => {
            return Err(format!("key alg {a:?} does not fit its curve ({c:?})"));
        }
        (a, c) => a.or(c),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    let family = key.family();
    if family == AlgorithmFamily::Hmac {
        // A JWKS is public; a symmetric key in it could be used by anyone to sign.
        return Err("symmetric keys are never accepted".into());
    }
    Ok((jwk.common.key_id, VerifyKey { key, alg, family }))
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// Fetched over HTTP(S) and refreshed.
    Url {
        /// The JWKS URL.
        url: Url,
        /// Timeout of one fetch.
        timeout: Duration,
        /// CA certificates (PEM) trusted instead of the built-in roots.
        ca: Option<Arc<[u8]>>,
    },
    /// OIDC discovery: `{issuer}/.well-known/openid-configuration` names the `jwks_uri`,
    /// looked up again on every fetch.
    Discovery {
        /// The issuer URL (the document's `issuer` must equal it).
        issuer: String,
        /// Timeout of each of the two requests.
        timeout: Duration,
        /// CA certificates (PEM) trusted instead of the built-in roots.
        ca: Option<Arc<[u8]>>,
    },
    /// Read once from a file at config load; `name` is the path, for messages.
    Static {
        /// Where the document came from.
        name: String,
        /// The document itself.
        document: Arc<[u8]>,
    },
}

/// Fetches an issuer's key set. [`JwksStore::new`] fetches from its [`JwksSource`];
/// [`JwksStore::with_fetch`] takes any other (the store's own tests script the answers,
/// so a paused clock can drive refreshes without I/O).
#[tonic::async_trait]
pub trait KeyFetch: Send + Sync {
    /// The current key set and how long it may be cached.
    async fn fetch(&self) -> Result<Fetched, JwksError>;
}

/// Fetches from a configured source: the URL, OIDC discovery, or the document read at
/// load.
struct SourceFetch {
    source: JwksSource,
    http: reqwest::Client,
}

#[tonic::async_trait]
impl KeyFetch for SourceFetch {
    async fn fetch(&self) -> Result<Fetched, JwksError> {
        match &self.source {
            JwksSource::Url { url, timeout, .. } => fetch_jwks(&self.http, url, *timeout).await,
            JwksSource::Discovery {
                issuer, timeout, ..
            } => {
                let jwks_uri = discover(&self.http, issuer, *timeout).await?;
                fetch_jwks(&self.http, &jwks_uri, *timeout).await
            }
            JwksSource::Static { document, .. } => Ok(Fetched {
                set: KeySet::parse(document)?,
                max_age: None,
            }),
        }
    }
}

impl JwksSource {
    /// Whether both name the same keys, fetched the same way.
    pub fn same_as(&self, other: &JwksSource) -> bool {
        match (self, other) {
            (
                JwksSource::Url {
                    url: a,
                    timeout: ta,
                    ca: ca_a,
                },
                JwksSource::Url {
                    url: b,
                    timeout: tb,
                    ca: ca_b,
                },
            ) => a == b && ta == tb && ca_a == ca_b,
            (
                JwksSource::Discovery {
                    issuer: a,
                    timeout: ta,
                    ca: ca_a,
                },
                JwksSource::Discovery {
                    issuer: b,
                    timeout: tb,
                    ca: ca_b,
                },
            ) => a == b && ta == tb && ca_a == ca_b,
            (JwksSource::Static { document: a, .. }, JwksSource::Static { document: b, .. }) => {
                a == b
            }
            _ => false,
        }
    }
}

/// A refetch for a new `kid` that did not finish within `check_timeout`; it goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefetchPending;

/// When a fetched key set is refreshed and how long it may serve while the IdP fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksTiming {
    /// Refresh period when the IdP sends no `Cache-Control: max-age`.
    pub refresh_interval: Duration,
    /// Lower bound on a `max-age`-derived refresh period.
    pub min_refresh_interval: Duration,
    /// Upper bound on a `max-age`-derived refresh period.
    pub max_refresh_interval: Duration,
    /// Minimum time between fetches triggered by unknown `kid`s.
    pub min_refetch_interval: Duration,
    /// How long after the last successful fetch the key set may still be used.
    pub max_staleness: Duration,
    /// How long a Check waits for a refetch its token's unknown `kid` started.
    pub check_timeout: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(60),
            max_refresh_interval: Duration::from_secs(3600),
            min_refetch_interval: Duration::from_secs(30),
            max_staleness: Duration::from_secs(24 * 3600),
            check_timeout: Duration::from_millis(300),
        }
    }
}

impl JwksTiming {
    /// The wait before the next refresh after a successful fetch.
    pub fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        match max_age {
            Some(age) => age.clamp(self.min_refresh_interval, self.max_refresh_interval),
            None => self.refresh_interval,
        }
    }
}

/// One successful fetch: the keys and the server's `max-age`, if it sent one.
#[derive(Debug)]
pub struct Fetched {
    set: KeySet,
    max_age: Option<Duration>,
}

impl Fetched {
    /// Keys that may be cached for `max_age` (the refresh interval applies without one).
    pub fn new(set: KeySet, max_age: Option<Duration>) -> Self {
        Self { set, max_age }
    }
}

struct Current {
    set: Arc<KeySet>,
    /// When the last fetch succeeded (`None` for a static set, which never goes stale).
    fetched_at: Option<Instant>,
}

/// Caches one issuer's key set and refetches it: in the background before it ages, and
/// when a token names a `kid` the set does not hold (at most once per
/// `min_refetch_interval`). While the IdP fails, the last good set serves for up to
/// `max_staleness`; after that the issuer has no keys and checks cannot be decided.
pub struct JwksStore {
    issuer: String,
    source: JwksSource,
    fetcher: Arc<dyn KeyFetch>,
    timing: JwksTiming,
    current: RwLock<Option<Current>>,
    /// Bumped whenever the key set changes, so verified tokens are checked again.
    generation: AtomicU64,
    /// Serialises fetches (concurrent unknown-kid requests share one) and remembers when
    /// the last unknown-kid refetch started. Background refreshes do not count against
    /// that limit, so a key rotated just after a refresh is still found at once.
    last_kid_refetch: tokio::sync::Mutex<Option<Instant>>,
    /// Whether [`JwksStore::spawn_refresher`] has run (once per store, which a config
    /// reload may hand on to the next verifier).
    refresher: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for JwksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksStore")
            .field("issuer", &self.issuer)
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

impl JwksStore {
    /// A store for `issuer`. A static source is parsed now; a fetched one starts empty
    /// until [`JwksStore::refresh`] succeeds.
    pub fn new(
        issuer: String,
        source: JwksSource,
        http: reqwest::Client,
        timing: JwksTiming,
    ) -> Result<Self, JwksError> {
        let http = match &source {
            JwksSource::Url { ca: Some(pem), .. } | JwksSource::Discovery { ca: Some(pem), .. } => {
                with_roots(pem)?
            }
            _ => http,
        };
        let fetcher = Arc::new(SourceFetch {
            source: source.clone(),
            http,
        });
        Self::with_fetch(issuer, source, fetcher, timing)
    }

    /// A store for `issuer` whose keys come from `fetcher`; `source` says what they are
    /// (for [`JwksStore::serves`]) and, when static, is parsed now.
    pub fn with_fetch(
        issuer: String,
        source: JwksSource,
        fetcher: Arc<dyn KeyFetch>,
        timing: JwksTiming,
    ) -> Result<Self, JwksError> {
        let current = match &source {
            JwksSource::Static { document, .. } => Some(Current {
                set: Arc::new(KeySet::parse(document)?),
                fetched_at: None,
            }),
            _ => None,
        };
        Ok(Self {
            issuer,
            source,
            fetcher,
            timing,
            current: RwLock::new(current),
            generation: AtomicU64::new(0),
            last_kid_refetch: tokio::sync::Mutex::new(None),
            refresher: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether this store fetches the same keys the same way as one built from `source`
    /// and `timing` for `issuer`: a reloaded config may keep it, keys and all.
    pub fn serves(&self, issuer: &str, source: &JwksSource, timing: &JwksTiming) -> bool {
        self.issuer == issuer && self.source.same_as(source) && self.timing == *timing
    }

    /// Starts the background refresher, once per store. It holds the store weakly and
    /// ends after the store is dropped (a reload replaced it, or the server stopped).
    pub fn spawn_refresher(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.is_static() || self.refresher.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(refresh_loop(Arc::downgrade(self)));
    }

    /// The issuer this store serves.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The current key set, unless none was ever loaded or the last successful fetch is
    /// older than `max_staleness`.
    pub fn key_set(&self) -> Option<Arc<KeySet>> {
        let current = self.current.read().ok()?;
        let current = current.as_ref()?;
        match current.fetched_at {
            Some(at) if at.elapsed() > self.timing.max_staleness => None,
            _ => Some(current.set.clone()),
        }
    }

    /// Changes whenever a different key set is stored.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// How long ago the key set was last fetched successfully (`None`: never, or a
    /// static set, which does not age).
    pub fn age(&self) -> Option<std::time::Duration> {
        let current = self.current.read().ok()?;
        current.as_ref()?.fetched_at.map(|at| at.elapsed())
    }

    /// The bound past which the last good set is no longer used.
    pub fn max_staleness(&self) -> std::time::Duration {
        self.timing.max_staleness
    }

    /// Whether a usable key set is loaded.
    pub fn is_loaded(&self) -> bool {
        self.key_set().is_some()
    }

    fn is_static(&self) -> bool {
        matches!(self.source, JwksSource::Static { .. })
    }

    /// Called when a token names a `kid` the current set lacks. Fetches again unless a
    /// refetch started less than `min_refetch_interval` ago; callers that arrive while a
    /// fetch runs wait for it instead of starting their own. Returns the newest set, or
    /// [`RefetchPending`] when the fetch takes longer than `check_timeout`: the Check
    /// stops waiting, the fetch goes on for the checks after it.
    pub async fn refetch_for_unknown_kid(
        self: &Arc<Self>,
        kid: Option<&str>,
    ) -> Result<Option<Arc<KeySet>>, RefetchPending> {
        if self.is_static() {
            return Ok(self.key_set());
        }
        let store = self.clone();
        let kid = kid.map(str::to_owned);
        // In the Check's span, so the fetch is its child in the trace even when it
        // outlives the Check.
        let fetch = tokio::spawn(crate::trace::in_current_span(async move {
            store.refetch(kid.as_deref()).await
        }));
        match tokio::time::timeout(self.timing.check_timeout, fetch).await {
            Ok(Ok(set)) => Ok(set),
            // The task panicked (it does not): the set as it is.
            Ok(Err(_)) => Ok(self.key_set()),
            Err(_) => Err(RefetchPending),
        }
    }

    async fn refetch(&self, kid: Option<&str>) -> Option<Arc<KeySet>> {
        let mut last = self.last_kid_refetch.lock().await;
        if let Some(set) = self.key_set() {
            if set.find(kid).is_some() {
                return Some(set); // another caller's fetch brought the key
            }
        }
        if matches!(*last, Some(t) if t.elapsed() < self.timing.min_refetch_interval) {
            return self.key_set();
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_and_store().await {
            tracing::warn!(issuer = %self.issuer, error = %e, "JWKS refetch failed");
        }
        self.key_set()
    }

    /// Fetches the key set now. Keeps the old set on failure. Returns the server's
    /// `max-age`, if any.
    pub async fn refresh(&self) -> Result<Option<Duration>, JwksError> {
        if self.is_static() {
            return Ok(None);
        }
        let _serialised = self.last_kid_refetch.lock().await;
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<Option<Duration>, JwksError> {
        let span = crate::trace::child("JWKS fetch", SpanKind::Client, || {
            vec![KeyValue::new("mesh_authz.issuer", self.issuer.to_string())]
        });
        let fetched = span.run(self.fetch()).await;
        span.record(
            "mesh_authz.outcome",
            if fetched.is_ok() { "ok" } else { "error" },
        );
        let Fetched { set, max_age } = fetched?;
        if let Ok(mut current) = self.current.write() {
            let changed = current.as_ref().is_none_or(|c| c.set.digest != set.digest);
            if changed {
                tracing::info!(issuer = %self.issuer, keys = set.len(), "JWKS loaded");
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            *current = Some(Current {
                set: Arc::new(set),
                fetched_at: Some(Instant::now()),
            });
        }
        Ok(max_age)
    }

    async fn fetch(&self) -> Result<Fetched, JwksError> {
        self.fetcher.fetch().await
    }

    /// Keeps the key set fresh: retries with backoff until a fetch succeeds, then
    /// refreshes after `max-age` (within bounds) or `refresh_interval`. Runs until the
    /// task is aborted.
    pub async fn run_refresher(self: Arc<Self>) {
        if self.is_static() {
            return;
        }
        // Holding `self` keeps the weak reference alive: this loop runs until aborted.
        let weak = Arc::downgrade(&self);
        refresh_loop(weak).await;
    }
}

/// The refresher's loop; ends once the store is gone.
async fn refresh_loop(store: std::sync::Weak<JwksStore>) {
    let mut retry = Duration::from_millis(500);
    loop {
        let Some(this) = store.upgrade() else {
            return;
        };
        let wait = match this.refresh().await {
            Ok(max_age) => {
                retry = Duration::from_millis(500);
                this.timing.next_refresh(max_age)
            }
            Err(e) => {
                tracing::warn!(issuer = %this.issuer, error = %e, "JWKS fetch failed");
                let wait = retry;
                retry = (retry * 2).min(Duration::from_secs(30));
                wait.min(this.timing.refresh_interval)
            }
        };
        drop(this);
        tokio::time::sleep(wait).await;
    }
}

/// A client trusting only the CA certificates in `pem` (`jwks.ca_file`), for an IdP with
/// a private CA.
fn with_roots(pem: &[u8]) -> Result<reqwest::Client, JwksError> {
    let roots = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| JwksError::Invalid(format!("ca_file: {e}")))?;
    let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false);
    for root in roots {
        builder = builder.add_root_certificate(root);
    }
    builder
        .build()
        .map_err(|e| JwksError::Invalid(format!("cannot build the HTTP client: {e}")))
}

/// `max-age` from a `Cache-Control` header.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|directive| {
        let (name, secs) = directive.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| secs.trim().trim_matches('"').parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

async fn get_limited(
    http: &reqwest::Client,
    url: &Url,
    timeout: Duration,
) -> Result<(Vec<u8>, Option<Duration>), JwksError> {
    let err = |reason: String| JwksError::Fetch {
        url: url.to_string(),
        reason,
    };
    let mut resp = crate::trace::propagate(http.get(url.clone()))
        .header("accept", "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| err(crate::outbound::error_text(e)))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let max_age = max_age(resp.headers());
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| err(crate::outbound::error_text(e)))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(err(format!("document larger than {MAX_JWKS_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

async fn fetch_jwks(
    http: &reqwest::Client,
    url: &Url,
    timeout: Duration,
) -> Result<Fetched, JwksError> {
    let (body, max_age) = get_limited(http, url, timeout).await?;
    Ok(Fetched {
        set: KeySet::parse(&body)?,
        max_age,
    })
}

/// The `jwks_uri` from the issuer's OIDC discovery document.
async fn discover(
    http: &reqwest::Client,
    issuer: &str,
    timeout: Duration,
) -> Result<Url, JwksError> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let url = Url::parse(&format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))
    .map_err(|e| JwksError::Invalid(format!("issuer is not a URL: {e}")))?;
    let (body, _) = get_limited(http, &url, timeout).await?;
    let doc: Discovery = serde_json::from_slice(&body)
        .map_err(|e| JwksError::Invalid(format!("not an OIDC discovery document: {e}")))?;
    // OIDC Discovery §4.3: the document must name exactly the issuer it was fetched for.
    if doc.issuer != issuer {
        return Err(JwksError::Invalid(format!(
            "discovery document names issuer {:?}, expected {issuer:?}",
            doc.issuer
        )));
    }
    let jwks_uri = Url::parse(&doc.jwks_uri)
        .map_err(|e| JwksError::Invalid(format!("jwks_uri is not a URL: {e}")))?;
    if !matches!(jwks_uri.scheme(), "https" | "http") {
        return Err(JwksError::Invalid("jwks_uri is not http(s)".into()));
    }
    Ok(jwks_uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_JWK: &str = r#"{"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;
    const EC_JWK: &str = r#"{"kty":"EC","kid":"e1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn keys_are_found_by_kid() {
        let doc = format!(r#"{{"keys":[{RSA_JWK},{EC_JWK}]}}"#);
        let set = KeySet::parse(doc.as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.find(Some("r1")).unwrap().family, AlgorithmFamily::Rsa);
        assert_eq!(set.find(Some("e1")).unwrap().family, AlgorithmFamily::Ec);
        assert!(set.find(Some("nope")).is_none());
        assert!(
            set.find(None).is_none(),
            "no kid is ambiguous with two keys"
        );
    }

    #[test]
    fn symmetric_and_odd_keys_are_skipped_not_fatal() {
        let doc = format!(
            r#"{{"keys":[{{"kty":"oct","kid":"h","k":"c2VjcmV0"}},{{"kty":"XYZ"}},{RSA_JWK}]}}"#
        );
        let set = KeySet::parse(doc.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.find(Some("h")).is_none());
        assert!(
            set.find(None).is_some(),
            "a single key serves tokens without kid"
        );
    }

    #[test]
    fn encryption_keys_are_not_used_for_signatures() {
        let enc = RSA_JWK.replace(r#""use":"sig""#, r#""use":"enc""#);
        let doc = format!(r#"{{"keys":[{enc}]}}"#);
        assert!(KeySet::parse(doc.as_bytes()).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(KeySet::parse(b"<html>").is_err());
        assert!(KeySet::parse(br#"{"keys":[]}"#).is_err());
    }

    fn fetched(max_age: Option<u64>) -> Result<Fetched, String> {
        let doc = format!(r#"{{"keys":[{RSA_JWK}]}}"#);
        Ok(Fetched {
            set: KeySet::parse(doc.as_bytes()).unwrap(),
            max_age: max_age.map(Duration::from_secs),
        })
    }

    /// Scripted fetch results, consumed front first.
    type Script = Arc<std::sync::Mutex<std::collections::VecDeque<Result<Fetched, String>>>>;

    struct ScriptedFetch(Script);

    #[tonic::async_trait]
    impl KeyFetch for ScriptedFetch {
        async fn fetch(&self) -> Result<Fetched, JwksError> {
            let next = self.0.lock().unwrap().pop_front();
            match next {
                Some(Ok(fetched)) => Ok(fetched),
                Some(Err(e)) => Err(JwksError::Invalid(e)),
                None => Err(JwksError::Invalid("script exhausted".into())),
            }
        }
    }

    fn scripted(
        answers: Vec<Result<Fetched, String>>,
        timing: JwksTiming,
    ) -> (Arc<JwksStore>, Script) {
        let script: Script = Arc::new(std::sync::Mutex::new(answers.into_iter().collect()));
        let store = JwksStore::with_fetch(
            "https://idp".into(),
            JwksSource::Url {
                url: "https://idp.invalid/jwks".parse().unwrap(),
                timeout: Duration::from_secs(1),
                ca: None,
            },
            Arc::new(ScriptedFetch(script.clone())),
            timing,
        )
        .unwrap();
        (Arc::new(store), script)
    }

    fn remaining(script: &Script) -> usize {
        script.lock().unwrap().len()
    }

    /// Lets the refresher task run until it sleeps again.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_follows_max_age_within_the_bounds() {
        let timing = JwksTiming {
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(60),
            max_refresh_interval: Duration::from_secs(3600),
            ..JwksTiming::default()
        };
        // max-age 10 s is below the 60 s floor; 7200 s above the 1 h ceiling.
        let (store, script) = scripted(
            vec![
                fetched(Some(10)),
                fetched(Some(7200)),
                fetched(None),
                fetched(None),
            ],
            timing,
        );
        let task = tokio::spawn(store.clone().run_refresher());
        settle().await;
        assert_eq!(remaining(&script), 3, "first fetch at start");
        tokio::time::advance(Duration::from_secs(59)).await;
        settle().await;
        assert_eq!(remaining(&script), 3, "not before the 60 s floor");
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(remaining(&script), 2);
        tokio::time::advance(Duration::from_secs(3599)).await;
        settle().await;
        assert_eq!(remaining(&script), 2, "max-age 7200 s is capped at 1 h");
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(remaining(&script), 1);
        tokio::time::advance(Duration::from_secs(300)).await;
        settle().await;
        assert_eq!(remaining(&script), 0, "no max-age: refresh_interval");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_good_set_serves_until_max_staleness_then_the_issuer_has_no_keys() {
        let timing = JwksTiming {
            refresh_interval: Duration::from_secs(60),
            max_staleness: Duration::from_secs(600),
            ..JwksTiming::default()
        };
        let mut answers = vec![fetched(None)];
        answers.extend((0..100).map(|_| Err("IdP down".to_string())));
        let (store, _script) = scripted(answers, timing);
        let task = tokio::spawn(store.clone().run_refresher());
        settle().await;
        assert!(store.is_loaded());
        tokio::time::advance(Duration::from_secs(599)).await;
        settle().await;
        assert!(
            store.is_loaded(),
            "still within max_staleness while the IdP fails"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        settle().await;
        assert!(!store.is_loaded(), "stale beyond the bound: cannot decide");
        assert!(store.key_set().is_none());
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn idp_down_at_start_then_keys_arrive() {
        let (store, script) = scripted(
            vec![Err("down".into()), Err("down".into()), fetched(None)],
            JwksTiming::default(),
        );
        let task = tokio::spawn(store.clone().run_refresher());
        settle().await;
        assert!(!store.is_loaded());
        // Backoff: 0.5 s, then 1 s.
        tokio::time::advance(Duration::from_millis(500)).await;
        settle().await;
        assert!(!store.is_loaded());
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert!(store.is_loaded());
        assert_eq!(remaining(&script), 0);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_refresh_keeps_the_generation() {
        let (store, _script) = scripted(vec![fetched(None), fetched(None)], JwksTiming::default());
        store.refresh().await.unwrap();
        let g = store.generation();
        store.refresh().await.unwrap();
        assert_eq!(
            store.generation(),
            g,
            "same document: verified tokens stay cached"
        );
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "cache-control",
            "public, max-age=3600, must-revalidate".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(3600)));
        h.insert("cache-control", "no-cache".parse().unwrap());
        assert_eq!(max_age(&h), None);
        h.insert("cache-control", "Max-Age=\"60\"".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::from_secs(60)));
    }
}
