//! Per-user group cache in front of Gerrit (or a static table).

use super::{GerritClient, GerritError, Group};
use moka::ops::compute::Op;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A user's resolved membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Whether the account exists (and is visible to the service account).
    pub known_account: bool,
    /// Effective groups; empty for unknown accounts.
    pub groups: Vec<Group>,
}

impl Membership {
    /// Whether the user is in a group with this name or UUID.
    pub fn contains(&self, name_or_uuid: &str) -> bool {
        self.groups
            .iter()
            .any(|g| g.name == name_or_uuid || g.uuid == name_or_uuid)
    }
}

/// Where group membership comes from.
#[derive(Debug, Clone)]
pub enum GroupSource {
    /// Gerrit's REST API.
    Gerrit(GerritClient),
    /// A fixed table (quickstart, demos); users not in it are unknown accounts.
    Static(Arc<HashMap<String, Vec<Group>>>),
    /// A table that counts lookups, for tests of the cache itself.
    #[cfg(test)]
    Counted(
        Arc<HashMap<String, Vec<Group>>>,
        Arc<std::sync::atomic::AtomicUsize>,
    ),
}

impl GroupSource {
    async fn lookup(&self, user: &str) -> Result<Membership, GerritError> {
        let groups = match self {
            GroupSource::Gerrit(client) => client.account_groups(user).await?,
            GroupSource::Static(table) => table.get(user).cloned(),
            #[cfg(test)]
            GroupSource::Counted(table, lookups) => {
                lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                table.get(user).cloned()
            }
        };
        Ok(match groups {
            Some(groups) => Membership {
                known_account: true,
                groups,
            },
            None => Membership {
                known_account: false,
                groups: Vec::new(),
            },
        })
    }
}

/// Stand-in for TTLs beyond what `Instant` can represent.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A cached answer and when it stops being fresh.
///
/// Freshness is kept here, on tokio's clock, rather than in moka's expiry, so TTLs are
/// testable with a paused clock; moka bounds the entry count.
struct Cached {
    membership: Arc<Membership>,
    fresh_until: Instant,
}

/// Caches each user's groups for a TTL (a shorter one for unknown accounts, so a new
/// Gerrit account starts working soon). Concurrent lookups of the same user share one
/// Gerrit request; failures are not cached.
#[derive(Clone)]
pub struct GroupCache {
    source: GroupSource,
    ttl: Duration,
    not_found_ttl: Duration,
    cache: moka::future::Cache<String, Arc<Cached>>,
}

impl std::fmt::Debug for GroupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCache")
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl GroupCache {
    /// A cache of at most `max_users` users.
    pub fn new(
        source: GroupSource,
        ttl: Duration,
        not_found_ttl: Duration,
        max_users: u64,
    ) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_users)
            .build();
        Self {
            source,
            ttl,
            not_found_ttl,
            cache,
        }
    }

    /// The user's membership, from cache or from the source.
    pub async fn membership(&self, user: &str) -> Result<Arc<Membership>, GerritError> {
        let entry = self
            .cache
            .try_get_with_by_ref(user, self.load(user))
            .await
            .map_err(|e: Arc<GerritError>| (*e).clone())?;
        if entry.fresh_until > Instant::now() {
            return Ok(entry.membership.clone());
        }
        // Expired: reload under moka's per-key lock, so callers arriving together make
        // one request and later ones find the fresh entry.
        let result = self
            .cache
            .entry_by_ref(user)
            .and_try_compute_with(|current| async move {
                match current {
                    Some(e) if e.value().fresh_until > Instant::now() => Ok(Op::Nop),
                    _ => self.load(user).await.map(Op::Put),
                }
            })
            .await?;
        result
            .into_entry()
            .map(|e| e.into_value().membership.clone())
            .ok_or_else(|| GerritError::Response("cache entry vanished".into()))
    }

    async fn load(&self, user: &str) -> Result<Arc<Cached>, GerritError> {
        let membership = self.source.lookup(user).await?;
        let ttl = if membership.known_account {
            self.ttl
        } else {
            self.not_found_ttl
        };
        let now = Instant::now();
        Ok(Arc::new(Cached {
            membership: Arc::new(membership),
            // A TTL too large for the clock means "until restart", never a panic.
            fresh_until: now.checked_add(ttl).unwrap_or(now + FOREVER),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> GroupSource {
        let mut t = HashMap::new();
        t.insert(
            "alice".to_string(),
            vec![Group {
                uuid: "6a1e70e1a88782771a91808c8af9bbb7a9871389".into(),
                name: "team-a".into(),
            }],
        );
        GroupSource::Static(Arc::new(t))
    }

    #[tokio::test]
    async fn membership_matches_group_name_or_uuid() {
        let c = GroupCache::new(table(), Duration::from_secs(60), Duration::from_secs(5), 10);
        let m = c.membership("alice").await.unwrap();
        assert!(m.known_account);
        assert!(m.contains("team-a"));
        assert!(m.contains("6a1e70e1a88782771a91808c8af9bbb7a9871389"));
        assert!(!m.contains("team-b"));
        let bob = c.membership("bob").await.unwrap();
        assert!(!bob.known_account);
        assert!(bob.groups.is_empty());
    }

    fn counted() -> (GroupSource, Arc<std::sync::atomic::AtomicUsize>) {
        let GroupSource::Static(table) = table() else {
            unreachable!()
        };
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (GroupSource::Counted(table, lookups.clone()), lookups)
    }

    fn count(lookups: &std::sync::atomic::AtomicUsize) -> usize {
        lookups.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn known_accounts_are_cached_for_the_ttl_then_looked_up_again() {
        let (source, lookups) = counted();
        let c = GroupCache::new(source, Duration::from_secs(60), Duration::from_secs(5), 10);
        c.membership("alice").await.unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        c.membership("alice").await.unwrap();
        assert_eq!(count(&lookups), 1, "fresh for the whole TTL");
        tokio::time::advance(Duration::from_secs(2)).await;
        let m = c.membership("alice").await.unwrap();
        assert!(m.contains("team-a"));
        assert_eq!(count(&lookups), 2, "looked up again after the TTL");
        c.membership("alice").await.unwrap();
        assert_eq!(count(&lookups), 2, "and cached again");
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_accounts_use_the_shorter_not_found_ttl() {
        let (source, lookups) = counted();
        let c = GroupCache::new(source, Duration::from_secs(60), Duration::from_secs(5), 10);
        assert!(!c.membership("carol").await.unwrap().known_account);
        tokio::time::advance(Duration::from_secs(4)).await;
        c.membership("carol").await.unwrap();
        assert_eq!(count(&lookups), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        c.membership("carol").await.unwrap();
        assert_eq!(count(&lookups), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_reloads_after_expiry_share_one_lookup() {
        let (source, lookups) = counted();
        let c = GroupCache::new(source, Duration::from_secs(60), Duration::from_secs(5), 10);
        c.membership("alice").await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        let all = futures::future::join_all((0..20).map(|_| c.membership("alice"))).await;
        assert!(all.iter().all(|m| m.as_ref().unwrap().known_account));
        assert_eq!(count(&lookups), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_enormous_ttl_does_not_panic() {
        let c = GroupCache::new(table(), Duration::MAX, Duration::MAX, 10);
        assert!(c.membership("alice").await.unwrap().known_account);
    }
}
