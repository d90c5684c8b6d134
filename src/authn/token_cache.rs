//! The verified-token cache: a token already verified is not verified again until it
//! expires, which makes repeated requests from one git client cheap.

use super::jwks::JwksStore;
use super::Identity;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Cache key: a 256-bit collision-resistant digest of the whole token, so only the
/// identical token can hit (a cheaper, non-cryptographic hash would let a forged token
/// collide with a verified one's entry).
pub type TokenKey = [u8; 32];

/// The key for a token: SHA-256 where the CPU has SHA instructions, BLAKE3 elsewhere,
/// whichever is faster. For a 750-byte token, on this project's AMD EPYC (SHA-NI):
/// SHA-256 (aws-lc) 0.43 us, BLAKE3 0.80 us (one chunk leaves BLAKE3 no parallelism);
/// without SHA instructions SHA-256 takes several times BLAKE3's time. Keys never leave
/// the process, so which one it is needs no agreement with anything.
pub fn token_key(token: &str) -> TokenKey {
    if has_sha_instructions() {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut key = [0; 32];
        key.copy_from_slice(digest.as_ref());
        key
    } else {
        *blake3::hash(token.as_bytes()).as_bytes()
    }
}

#[cfg(target_arch = "x86_64")]
fn has_sha_instructions() -> bool {
    // Detected once; the macro caches it.
    std::arch::is_x86_feature_detected!("sha")
}

#[cfg(target_arch = "aarch64")]
fn has_sha_instructions() -> bool {
    std::arch::is_aarch64_feature_detected!("sha2")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn has_sha_instructions() -> bool {
    false
}

/// Seconds since the epoch, on the wall clock that `exp` is written in.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Verified {
    identity: Arc<Identity>,
    /// The token's `exp`: the entry is never used at or after it.
    exp: u64,
    /// The key store that verified it, and its generation then: a changed key set
    /// (a withdrawn key) sends the token through full verification again.
    store: Arc<JwksStore>,
    generation: u64,
}

/// Evicts entries when their token expires.
struct UntilExp;

impl moka::Expiry<TokenKey, Arc<Verified>> for UntilExp {
    fn expire_after_create(
        &self,
        _: &TokenKey,
        value: &Arc<Verified>,
        _: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(value.exp.saturating_sub(unix_now())))
    }
}

/// Bounded map from token digest to the identity it proved.
pub struct VerifiedTokenCache {
    cache: moka::sync::Cache<TokenKey, Arc<Verified>>,
}

impl std::fmt::Debug for VerifiedTokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokenCache")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl VerifiedTokenCache {
    /// A cache of at most `max_entries` tokens.
    pub fn new(max_entries: u64) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExp)
                .build(),
        }
    }

    /// The identity of an already verified, unexpired token whose key set is unchanged
    /// and not stale (past `max_staleness`, cached tokens stop working like all others).
    pub fn get(&self, key: &TokenKey, now: u64) -> Option<Arc<Identity>> {
        let hit = self.cache.get(key)?;
        if now < hit.exp && hit.store.generation() == hit.generation && hit.store.is_loaded() {
            Some(hit.identity.clone())
        } else {
            self.cache.invalidate(key);
            None
        }
    }

    /// Remembers a verified token until its `exp`.
    pub fn insert(
        &self,
        key: TokenKey,
        identity: Arc<Identity>,
        exp: u64,
        store: Arc<JwksStore>,
        generation: u64,
    ) {
        self.cache.insert(
            key,
            Arc::new(Verified {
                identity,
                exp,
                store,
                generation,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::JwksSource;

    fn store() -> Arc<JwksStore> {
        let jwk = include_str!("../../tests/fixtures/rsa-a.jwk.json");
        let doc = format!(r#"{{"keys":[{jwk}]}}"#);
        let source = JwksSource::Static {
            name: "test".into(),
            document: doc.into_bytes().into(),
        };
        Arc::new(
            JwksStore::new(
                "https://idp".into(),
                source,
                reqwest::Client::new(),
                crate::authn::JwksTiming::default(),
            )
            .unwrap(),
        )
    }

    fn alice() -> Arc<Identity> {
        Arc::new(Identity {
            issuer: "https://idp".into(),
            user: "alice".into(),
            email: None,
            gerrit_account: "alice".into(),
            display_name: None,
            claims: Arc::default(),
            credential: Default::default(),
        })
    }

    #[test]
    fn a_cached_token_is_served_until_its_exp_and_never_at_or_after() {
        let cache = VerifiedTokenCache::new(10);
        let key = token_key("header.payload.signature");
        let now = unix_now();
        cache.insert(key, alice(), now + 60, store(), 0);
        assert_eq!(cache.get(&key, now).unwrap().user, "alice");
        assert_eq!(cache.get(&key, now + 59).unwrap().user, "alice");
        assert!(cache.get(&key, now + 60).is_none());
        assert!(
            cache.get(&key, now).is_none(),
            "an expired entry is dropped"
        );
    }

    #[test]
    fn only_the_identical_token_hits() {
        let cache = VerifiedTokenCache::new(10);
        let now = unix_now();
        cache.insert(token_key("a.b.c"), alice(), now + 60, store(), 0);
        assert!(cache.get(&token_key("a.b.c "), now).is_none());
        assert!(cache.get(&token_key("a.b.d"), now).is_none());
    }

    #[test]
    fn the_key_is_the_whole_tokens_sha256_or_blake3_digest() {
        let hex: String = token_key("abc")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let expected = if has_sha_instructions() {
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" // SHA-256
        } else {
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85" // BLAKE3
        };
        assert_eq!(hex, expected);
    }

    #[test]
    fn a_changed_key_set_sends_tokens_back_to_verification() {
        let cache = VerifiedTokenCache::new(10);
        let key = token_key("a.b.c");
        let now = unix_now();
        let store = store();
        cache.insert(
            key,
            alice(),
            now + 60,
            store.clone(),
            store.generation() + 1,
        );
        assert!(cache.get(&key, now).is_none());
    }
}
