//! Issuer signing keys: loading, caching and refetching a JWKS.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
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
    },
    /// Read once from a file at config load; `name` is the path, for messages.
    Static {
        /// Where the document came from.
        name: String,
        /// The document itself.
        document: Arc<[u8]>,
    },
}

/// Caches one issuer's key set and refetches it: periodically, and when a token names a
/// `kid` the set does not hold, at most once per `min_refetch_interval`.
pub struct JwksStore {
    issuer: String,
    source: JwksSource,
    http: reqwest::Client,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Bumped whenever the key set changes, so verified tokens are checked again.
    generation: AtomicU64,
    /// Serialises fetches (concurrent unknown-kid requests share one) and remembers when
    /// the last unknown-kid refetch started. Background refreshes do not count against
    /// that limit, so a key rotated just after a refresh is still found at once.
    last_kid_refetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch_interval: Duration,
    refresh_interval: Duration,
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
    /// A store for `issuer`. A static source is parsed now; a URL source starts empty
    /// until [`JwksStore::refresh`] succeeds.
    pub fn new(
        issuer: String,
        source: JwksSource,
        http: reqwest::Client,
        refresh_interval: Duration,
        min_refetch_interval: Duration,
    ) -> Result<Self, JwksError> {
        let current = match &source {
            JwksSource::Static { document, .. } => Some(Arc::new(KeySet::parse(document)?)),
            JwksSource::Url { .. } => None,
        };
        Ok(Self {
            issuer,
            source,
            http,
            current: RwLock::new(current),
            generation: AtomicU64::new(0),
            last_kid_refetch: tokio::sync::Mutex::new(None),
            min_refetch_interval,
            refresh_interval,
        })
    }

    /// The issuer this store serves.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The current key set, if one was ever loaded.
    pub fn key_set(&self) -> Option<Arc<KeySet>> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    /// Changes whenever a different key set is stored.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a key set is loaded.
    pub fn is_loaded(&self) -> bool {
        self.key_set().is_some()
    }

    /// Called when a token names a `kid` the current set lacks. Fetches again unless a
    /// fetch started less than `min_refetch_interval` ago; callers that arrive while a
    /// fetch runs wait for it instead of starting their own. Returns the newest set.
    pub async fn refetch_for_unknown_kid(&self, kid: Option<&str>) -> Option<Arc<KeySet>> {
        if matches!(self.source, JwksSource::Static { .. }) {
            return self.key_set();
        }
        let mut last = self.last_kid_refetch.lock().await;
        if let Some(set) = self.key_set() {
            if set.find(kid).is_some() {
                return Some(set); // another caller's fetch brought the key
            }
        }
        if matches!(*last, Some(t) if t.elapsed() < self.min_refetch_interval) {
            return self.key_set();
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_and_store().await {
            tracing::warn!(issuer = %self.issuer, error = %e, "JWKS refetch failed");
        }
        self.key_set()
    }

    /// Fetches the key set now (for the background refresher). Keeps the old set on
    /// failure.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        if matches!(self.source, JwksSource::Static { .. }) {
            return Ok(());
        }
        let _serialised = self.last_kid_refetch.lock().await;
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<(), JwksError> {
        let JwksSource::Url { url, timeout } = &self.source else {
            return Ok(());
        };
        let set = fetch(&self.http, url, *timeout).await?;
        if let Ok(mut current) = self.current.write() {
            if current.as_ref().is_some_and(|c| c.digest == set.digest) {
                tracing::debug!(issuer = %self.issuer, "JWKS unchanged");
                return Ok(());
            }
            tracing::info!(issuer = %self.issuer, keys = set.len(), "JWKS loaded");
            *current = Some(Arc::new(set));
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Keeps the key set fresh: retries quickly until the first load succeeds, then
    /// refreshes every `refresh_interval`. Runs until the task is aborted.
    pub async fn run_refresher(self: Arc<Self>) {
        if matches!(self.source, JwksSource::Static { .. }) {
            return;
        }
        let mut retry = Duration::from_millis(500);
        loop {
            let wait = match self.refresh().await {
                Ok(()) => self.refresh_interval,
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer, error = %e, "JWKS fetch failed");
                    if self.is_loaded() {
                        self.refresh_interval.min(Duration::from_secs(30))
                    } else {
                        retry = (retry * 2).min(Duration::from_secs(10));
                        retry
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

async fn fetch(http: &reqwest::Client, url: &Url, timeout: Duration) -> Result<KeySet, JwksError> {
    let err = |reason: String| JwksError::Fetch {
        url: url.to_string(),
        reason,
    };
    let mut resp = http
        .get(url.clone())
        .header("accept", "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(err(format!("document larger than {MAX_JWKS_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    KeySet::parse(&body)
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
}
