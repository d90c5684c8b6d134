//! Per-user group cache in front of Gerrit (or a static table).

use super::{GerritClient, GerritError, GerritMetrics, Member};
use crate::identity::{GerritAccount, Group, Membership};
use moka::ops::compute::Op;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where a user's groups come from: Gerrit's REST API ([`GerritClient`]), a fixed table
/// ([`StaticGroups`]), or any other source that can answer (the cache's own tests count
/// and fail lookups with one).
#[tonic::async_trait]
pub trait GroupSource: Send + Sync {
    /// The user's groups; `None` for an account the source does not know.
    async fn groups(&self, user: &GerritAccount) -> Result<Option<Vec<Group>>, GerritError>;

    /// The Gerrit client behind this source, if it is Gerrit (password reloads, the
    /// self-check, group events).
    fn gerrit(&self) -> Option<&GerritClient> {
        None
    }
}

#[tonic::async_trait]
impl GroupSource for GerritClient {
    async fn groups(&self, user: &GerritAccount) -> Result<Option<Vec<Group>>, GerritError> {
        self.account_groups(user).await
    }

    fn gerrit(&self) -> Option<&GerritClient> {
        Some(self)
    }
}

/// A fixed user-to-groups table (quickstart, demos); users not in it are unknown
/// accounts.
#[derive(Debug, Clone)]
pub struct StaticGroups(pub Arc<HashMap<String, Vec<Group>>>);

#[tonic::async_trait]
impl GroupSource for StaticGroups {
    async fn groups(&self, user: &GerritAccount) -> Result<Option<Vec<Group>>, GerritError> {
        Ok(self.0.get(&*user.as_claimed()).cloned())
    }
}

/// A user's membership as a source answers it.
async fn lookup(source: &dyn GroupSource, user: &GerritAccount) -> Result<Membership, GerritError> {
    Ok(match source.groups(user).await? {
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

/// How the group cache ages its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a known account's groups are fresh.
    pub ttl: Duration,
    /// How long "no such account" is fresh.
    pub not_found_ttl: Duration,
    /// Bound on cached users.
    pub max_users: u64,
    /// How long past its TTL an entry may still serve while Gerrit fails.
    pub max_staleness: Duration,
}

/// Entries used in the last fifth of their TTL are reloaded in the background, so a user
/// who keeps making requests never waits for Gerrit.
const REFRESH_AHEAD_AT: f64 = 0.8;

/// A cached answer and its age.
///
/// Age is kept here, on tokio's clock, rather than in moka's expiry, so TTLs are testable
/// with a paused clock; moka bounds the entry count.
struct Cached {
    membership: Arc<Membership>,
    fetched_at: Instant,
    ttl: Duration,
    /// A background reload is under way (at most one per entry).
    refreshing: AtomicBool,
}

impl Cached {
    fn age(&self) -> Duration {
        Instant::now().saturating_duration_since(self.fetched_at)
    }
}

/// Caches each user's groups for a TTL (a shorter one for unknown accounts, so a new
/// Gerrit account starts working soon). Concurrent lookups of the same user share one
/// Gerrit request; failures are not cached. Hot entries are refreshed ahead of expiry;
/// when Gerrit fails, expired entries keep serving up to `max_staleness`.
#[derive(Clone)]
pub struct GroupCache {
    source: Arc<dyn GroupSource>,
    settings: CacheSettings,
    cache: moka::future::Cache<GerritAccount, Arc<Cached>>,
    /// Bumped by every invalidation. A load that was under way when it changed may hold a
    /// pre-invalidation answer, so it is cached as already expired (see [`Self::load`]).
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for GroupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCache")
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl GroupCache {
    /// An empty cache in front of `source`.
    pub fn new(source: Arc<dyn GroupSource>, settings: CacheSettings) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(settings.max_users)
            .build();
        Self {
            source,
            settings,
            cache,
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The metrics of the Gerrit source, if groups come from Gerrit.
    pub fn metrics(&self) -> Option<&GerritMetrics> {
        self.gerrit().map(GerritClient::metrics)
    }

    fn count(&self, result: &'static str) {
        if let Some(m) = self.metrics() {
            m.lookup(result);
            m.entries(self.cache.entry_count());
        }
    }

    /// The user's membership, from cache or from the source.
    pub async fn membership(&self, user: &GerritAccount) -> Result<Arc<Membership>, GerritError> {
        let mut missed = false;
        let entry = self
            .cache
            .try_get_with_by_ref(user, async {
                missed = true;
                self.load(user).await
            })
            .await
            .map_err(|e: Arc<GerritError>| (*e).clone())?;
        let age = entry.age();
        if age < entry.ttl {
            self.count(if missed { "miss" } else { "hit" });
            if age >= entry.ttl.mul_f64(REFRESH_AHEAD_AT) {
                self.refresh_in_background(user, &entry);
            }
            return Ok(entry.membership.clone());
        }
        match self.reload_expired(user).await {
            Ok(membership) => {
                self.count("miss");
                Ok(membership)
            }
            Err(e) if age < entry.ttl.saturating_add(self.settings.max_staleness) => {
                self.count("stale");
                tracing::warn!(%user, error = %e, age = ?age, "Gerrit failed: serving stale groups");
                Ok(entry.membership.clone())
            }
            Err(e) => Err(e),
        }
    }

    /// Reloads an expired entry under moka's per-key lock, so callers arriving together
    /// make one request and later ones find the fresh entry.
    async fn reload_expired(&self, user: &GerritAccount) -> Result<Arc<Membership>, GerritError> {
        let result = self
            .cache
            .entry_by_ref(user)
            .and_try_compute_with(|current| async move {
                match current {
                    Some(e) if e.value().age() < e.value().ttl => Ok(Op::Nop),
                    _ => self.load(user).await.map(Op::Put),
                }
            })
            .await?;
        result
            .into_entry()
            .map(|e| e.into_value().membership.clone())
            .ok_or_else(|| GerritError::Response("cache entry vanished".into()))
    }

    fn refresh_in_background(&self, user: &GerritAccount, entry: &Arc<Cached>) {
        if entry.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (this, user, entry) = (self.clone(), user.clone(), entry.clone());
        tokio::spawn(async move {
            match this.load(&user).await {
                Ok(fresh) => {
                    this.count("refresh");
                    this.cache.insert(user, fresh).await;
                }
                Err(e) => {
                    tracing::warn!(%user, error = %e, "refreshing groups ahead of expiry failed");
                    entry.refreshing.store(false, Ordering::Release);
                }
            }
        });
    }

    /// The Gerrit client, when groups come from Gerrit.
    pub fn gerrit(&self) -> Option<&GerritClient> {
        self.source.gerrit()
    }

    /// Forgets one user's groups (under every account form the name can be: username,
    /// email, account number): the next check asks Gerrit. Returns whether the user was
    /// cached.
    pub async fn invalidate(&self, user: &str) -> bool {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut dropped = false;
        for account in GerritAccount::every_form_of(user) {
            if let Some(gerrit) = self.gerrit() {
                gerrit.forget_account(&account);
            }
            dropped |= self.cache.remove(&account).await.is_some();
        }
        if let Some(m) = self.metrics() {
            m.dropped("admin", usize::from(dropped));
            m.entries(self.cache.entry_count());
        }
        dropped
    }

    /// Forgets every user's groups.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let n = self.cache.entry_count();
        self.cache.invalidate_all();
        if let Some(m) = self.metrics() {
            m.dropped("admin", usize::try_from(n).unwrap_or(usize::MAX));
            m.entries(0);
        }
    }

    /// Forgets the groups of every cached user who holds this group: a removal from it
    /// (or from a group it is in) takes effect at the next check. Returns how many
    /// entries were dropped.
    pub async fn invalidate_holders(&self, uuid: &str) -> usize {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.drop_where(|_, m| m.contains_uuid(uuid)).await
    }

    /// Forgets the groups of cached users named in `members` (a group's members after a
    /// change) who are cached without the group: they were just added. Returns how many
    /// entries were dropped.
    pub async fn invalidate_new_members(&self, uuid: &str, members: &[Member]) -> usize {
        if members.is_empty() {
            return 0;
        }
        self.drop_where(|user, m| {
            !m.contains_uuid(uuid) && members.iter().any(|member| member.is_named_by(user))
        })
        .await
    }

    async fn drop_where(&self, doomed: impl Fn(&GerritAccount, &Membership) -> bool) -> usize {
        let users: Vec<Arc<GerritAccount>> = self
            .cache
            .iter()
            .filter(|(user, cached)| doomed(user, &cached.membership))
            .map(|(user, _)| user)
            .collect();
        for user in &users {
            self.cache.invalidate(user.as_ref()).await;
        }
        if let Some(m) = self.metrics() {
            m.entries(self.cache.entry_count());
        }
        users.len()
    }

    async fn load(&self, user: &GerritAccount) -> Result<Arc<Cached>, GerritError> {
        let generation = self.generation.load(Ordering::Acquire);
        let membership = lookup(&*self.source, user).await?;
        let ttl = if self.generation.load(Ordering::Acquire) != generation {
            // Invalidated while Gerrit was answering: the answer may predate the change.
            // Cached as expired, so waiting callers ask again (see `membership`) and a
            // background refresh does not keep it.
            Duration::ZERO
        } else if membership.known_account {
            self.settings.ttl
        } else {
            self.settings.not_found_ttl
        };
        Ok(Arc::new(Cached {
            membership: Arc::new(membership),
            fetched_at: Instant::now(),
            ttl,
            refreshing: AtomicBool::new(false),
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Whether the membership has a group named `name`.
    fn in_group(m: &Membership, name: &str) -> bool {
        m.groups.iter().any(|g| g.name == name)
    }
    use std::sync::atomic::AtomicUsize;

    /// A lookup table that counts lookups, fails on demand and can hold answers back.
    #[derive(Debug, Default)]
    pub struct CountedTable {
        table: std::sync::Mutex<HashMap<String, Vec<Group>>>,
        lookups: AtomicUsize,
        failing: AtomicBool,
        /// Lookups read the table, then wait for this (write-lock it to hold them).
        gate: tokio::sync::RwLock<()>,
    }

    #[tonic::async_trait]
    impl GroupSource for CountedTable {
        async fn groups(&self, user: &GerritAccount) -> Result<Option<Vec<Group>>, GerritError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(GerritError::Unreachable("test: Gerrit down".into()));
            }
            let answer = self.table.lock().unwrap().get(&*user.as_claimed()).cloned();
            let _open = self.gate.read().await;
            Ok(answer)
        }
    }

    impl CountedTable {
        fn set(&self, user: &str, groups: Vec<Group>) {
            self.table.lock().unwrap().insert(user.into(), groups);
        }
    }

    fn alice_groups() -> HashMap<String, Vec<Group>> {
        let mut t = HashMap::new();
        t.insert(
            "alice".to_string(),
            vec![Group {
                uuid: "6a1e70e1a88782771a91808c8af9bbb7a9871389".into(),
                name: "team-a".into(),
            }],
        );
        t
    }

    fn table() -> Arc<dyn GroupSource> {
        Arc::new(StaticGroups(Arc::new(alice_groups())))
    }

    fn settings(ttl: u64, not_found_ttl: u64, max_staleness: u64) -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_secs(ttl),
            not_found_ttl: Duration::from_secs(not_found_ttl),
            max_users: 10,
            max_staleness: Duration::from_secs(max_staleness),
        }
    }

    fn counted() -> (Arc<dyn GroupSource>, Arc<CountedTable>) {
        let counted = Arc::new(CountedTable {
            table: std::sync::Mutex::new(alice_groups()),
            ..CountedTable::default()
        });
        (counted.clone(), counted)
    }

    fn count(c: &CountedTable) -> usize {
        c.lookups.load(Ordering::SeqCst)
    }

    /// Lets spawned background refreshes run.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn membership_matches_group_name_or_uuid() {
        let c = GroupCache::new(table(), settings(60, 5, 0));
        let m = c.membership(&"alice".into()).await.unwrap();
        assert!(m.known_account);
        assert!(in_group(&m, "team-a"));
        assert!(m.contains_uuid("6a1e70e1a88782771a91808c8af9bbb7a9871389"));
        assert!(!in_group(&m, "team-b"));
        let bob = c.membership(&"bob".into()).await.unwrap();
        assert!(!bob.known_account);
        assert!(bob.groups.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn known_accounts_are_cached_for_the_ttl_then_looked_up_again() {
        let (source, lookups) = counted();
        let c = GroupCache::new(source, settings(60, 5, 0));
        c.membership(&"alice".into()).await.unwrap();
        tokio::time::advance(Duration::from_secs(47)).await;
        c.membership(&"alice".into()).await.unwrap();
        assert_eq!(
            count(&lookups),
            1,
            "fresh, and not yet in the refresh-ahead window"
        );
        tokio::time::advance(Duration::from_secs(14)).await;
        let m = c.membership(&"alice".into()).await.unwrap();
        assert!(in_group(&m, "team-a"));
        assert_eq!(count(&lookups), 2, "looked up again after the TTL");
        c.membership(&"alice".into()).await.unwrap();
        assert_eq!(count(&lookups), 2, "and cached again");
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_accounts_use_the_shorter_not_found_ttl() {
        let (source, lookups) = counted();
        let c = GroupCache::new(source, settings(60, 5, 0));
        assert!(!c.membership(&"carol".into()).await.unwrap().known_account);
        tokio::time::advance(Duration::from_secs(3)).await;
        c.membership(&"carol".into()).await.unwrap();
        assert_eq!(count(&lookups), 1);
        tokio::time::advance(Duration::from_secs(3)).await;
        c.membership(&"carol".into()).await.unwrap();
        assert_eq!(count(&lookups), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_reloads_after_expiry_share_one_lookup() {
        let (source, lookups) = counted();
        let c = GroupCache::new(source, settings(60, 5, 0));
        c.membership(&"alice".into()).await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        let alice = GerritAccount::from("alice");
        let all = futures::future::join_all((0..20).map(|_| c.membership(&alice))).await;
        assert!(all.iter().all(|m| m.as_ref().unwrap().known_account));
        assert_eq!(count(&lookups), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hot_user_is_refreshed_ahead_of_expiry_and_never_waits() {
        let (source, lookups) = counted();
        let c = GroupCache::new(source, settings(60, 5, 0));
        c.membership(&"alice".into()).await.unwrap();
        // Steady load, one request a second, for five TTLs.
        for _ in 0..300 {
            tokio::time::advance(Duration::from_secs(1)).await;
            // Served from cache at once: with Gerrit failing, a miss would be an error.
            lookups.failing.store(true, Ordering::SeqCst);
            assert!(c.membership(&"alice".into()).await.is_ok());
            lookups.failing.store(false, Ordering::SeqCst);
            settle().await;
        }
        // One refresh per 48 s window rather than a miss per TTL: 300 s / 48 s ≈ 6,
        // plus the first load. Failed attempts while `failing` was set are retried later.
        let n = count(&lookups);
        assert!((6..=40).contains(&n), "lookups: {n}");
    }

    #[tokio::test(start_paused = true)]
    async fn stale_groups_serve_while_gerrit_fails_up_to_max_staleness() {
        let (source, lookups) = counted();
        let c = GroupCache::new(source, settings(60, 5, 300));
        c.membership(&"alice".into()).await.unwrap();
        lookups.failing.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(61)).await;
        let stale = c.membership(&"alice".into()).await.unwrap();
        assert!(in_group(&stale, "team-a"), "stale but served");
        tokio::time::advance(Duration::from_secs(298)).await;
        assert!(
            c.membership(&"alice".into()).await.is_ok(),
            "59 + 299 s < 60 + 300 s"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(
            c.membership(&"alice".into()).await,
            Err(GerritError::Unreachable(_))
        ));
        lookups.failing.store(false, Ordering::SeqCst);
        assert!(
            c.membership(&"alice".into()).await.is_ok(),
            "recovers with Gerrit"
        );
    }

    fn group(name: &str) -> Group {
        Group {
            uuid: format!("uuid-{name}"),
            name: name.into(),
        }
    }

    fn member(id: u64, username: &str) -> Member {
        Member {
            account_id: id,
            username: Some(username.into()),
            email: Some(format!("{username}@example.com")),
        }
    }

    #[tokio::test]
    async fn a_group_change_drops_its_holders_and_its_new_members_only() {
        use GerritAccount::{Email, Number, Username};
        let (source, lookups) = counted();
        let alice = Username("alice".into());
        let bob = Username("bob".into());
        let carol = Email("carol@example.com".into());
        let dave = Number(1000004);
        // Erin's username is dave's account number: she is not dave.
        let erin = Username("1000004".into());
        for (user, groups) in [
            ("alice", vec![group("team-a")]),
            ("bob", vec![group("team-b")]),
            ("carol@example.com", vec![group("team-b")]),
            ("1000004", vec![]),
        ] {
            lookups.set(user, groups);
        }
        let c = GroupCache::new(source, settings(60, 5, 0));
        for user in [&alice, &bob, &carol, &dave, &erin] {
            c.membership(user).await.unwrap();
        }
        assert_eq!(c.invalidate_holders("uuid-team-a").await, 1, "alice");
        // team-a's members now: alice (dropped already), carol (by email) and dave (by
        // number); bob and erin are not members.
        let members = [
            member(1000001, "alice"),
            member(1000003, "carol"),
            member(1000004, "dave"),
        ];
        assert_eq!(c.invalidate_new_members("uuid-team-a", &members).await, 2);
        let before = count(&lookups);
        for user in [&alice, &carol, &dave] {
            c.membership(user).await.unwrap();
        }
        assert_eq!(count(&lookups), before + 3, "the three dropped ones reload");
        c.membership(&bob).await.unwrap();
        c.membership(&erin).await.unwrap();
        assert_eq!(count(&lookups), before + 3, "bob and erin are still cached");
    }

    #[tokio::test]
    async fn a_lookup_under_way_during_an_invalidation_is_asked_again() {
        let (source, lookups) = counted();
        let c = GroupCache::new(source, settings(60, 5, 0));
        // Gerrit reads alice's groups (team-a) but the answer is held in flight...
        let hold = lookups.gate.write().await;
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.membership(&"alice".into()).await.unwrap() }
        });
        while count(&lookups) == 0 {
            tokio::task::yield_now().await;
        }
        // ...while alice leaves team-a and the change is announced.
        lookups.set("alice", vec![]);
        c.invalidate_holders("6a1e70e1a88782771a91808c8af9bbb7a9871389")
            .await;
        drop(hold);
        let first = waiting.await.unwrap();
        assert!(
            !in_group(&first, "team-a"),
            "the answer that was under way is not trusted: the waiting check asks again"
        );
        assert_eq!(count(&lookups), 2);
        assert!(!in_group(
            &c.membership(&"alice".into()).await.unwrap(),
            "team-a"
        ));
        assert_eq!(count(&lookups), 2, "the fresh answer is cached");
    }

    #[tokio::test(start_paused = true)]
    async fn an_enormous_ttl_does_not_panic() {
        let c = GroupCache::new(
            table(),
            CacheSettings {
                ttl: Duration::MAX,
                not_found_ttl: Duration::MAX,
                max_users: 10,
                max_staleness: Duration::MAX,
            },
        );
        assert!(c.membership(&"alice".into()).await.unwrap().known_account);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(c.membership(&"alice".into()).await.unwrap().known_account);
    }
}
