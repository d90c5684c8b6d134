//! Assembling an authorizer from a checked config: key stores, the verifier, the group
//! cache (reading Gerrit's password, CA and token files now) and the routes, keeping
//! what a reload did not change.

use super::Authorizer;
use crate::authn::{JwksStore, TokenVerifier};
use crate::config::{Config, ConfigError, GerritConfig, GroupsConfig, IssuerConfig, Problem};
use crate::gerrit::{
    CacheSettings, GerritClient, GerritCredentials, GerritMetrics, GroupCache, GroupEvents, Secret,
    StaticGroups,
};
use crate::policy::RouteTable;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The config parts behind an authorizer's stateful pieces.
#[derive(Debug, Clone, Default)]
pub(super) struct Sources {
    issuers: Vec<IssuerConfig>,
    token_cache_entries: u64,
    max_token_bytes: usize,
    /// The claims the routes' rules look at: what a verified identity keeps.
    claims: BTreeSet<String>,
    groups: Option<GroupsConfig>,
}

impl Sources {
    fn of(config: &Config) -> Self {
        Sources {
            issuers: config.issuers.clone(),
            token_cache_entries: config.token_cache_entries,
            max_token_bytes: config.max_token_bytes,
            claims: claims_used(&config.routes),
            groups: config.groups.clone(),
        }
    }

    /// Whether a verifier built from `self` verifies exactly as one built from `other`.
    fn same_verification(&self, other: &Sources) -> bool {
        self.token_cache_entries == other.token_cache_entries
            && self.max_token_bytes == other.max_token_bytes
            // Cached identities hold only the claims that were used when they were made.
            && self.claims == other.claims
            && self.issuers.len() == other.issuers.len()
            && self.issuers.iter().zip(&other.issuers).all(|(a, b)| {
                a.settings == b.settings && a.timing == b.timing && a.jwks.same_as(&b.jwks)
            })
    }
}

/// What authorizers built from successive configs share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The HTTP client for JWKS fetches.
    pub http: reqwest::Client,
    /// The Gerrit metrics, registered once for `/metrics`.
    pub gerrit_metrics: GerritMetrics,
}

impl Authorizer {
    /// Builds the runtime parts from a checked config: key stores, the verifier, the
    /// group cache (reading Gerrit's password file now) and the routes.
    pub fn from_config(config: &Config, http: reqwest::Client) -> Result<Self, ConfigError> {
        let shared = Shared {
            http,
            gerrit_metrics: GerritMetrics::default(),
        };
        Self::build(config, &shared, None)
    }

    /// Builds from a checked config, keeping what `previous` (the authorizer in force
    /// before a reload) has for parts that did not change: the verifier with its token
    /// cache when no issuer changed, else each unchanged issuer's key store (keys
    /// loaded); the group cache when the group source did not change.
    pub fn build(
        config: &Config,
        shared: &Shared,
        previous: Option<&Authorizer>,
    ) -> Result<Self, ConfigError> {
        let problem = |path: &str, reason: String| ConfigError::Invalid {
            file: config.source.clone(),
            problems: vec![Problem {
                path: path.to_string(),
                reason,
            }],
        };
        let sources = Sources::of(config);
        let verifier = match previous.filter(|p| p.sources.same_verification(&sources)) {
            Some(previous) => previous.verifier.clone(),
            None => {
                let mut issuers = Vec::with_capacity(config.issuers.len());
                for (i, issuer) in config.issuers.iter().enumerate() {
                    let kept = previous.and_then(|p| {
                        p.verifier.stores().find(|s| {
                            s.serves(&issuer.settings.issuer, &issuer.jwks, &issuer.timing)
                        })
                    });
                    let store = match kept {
                        Some(store) => store.clone(),
                        None => Arc::new(
                            JwksStore::new(
                                issuer.settings.issuer.clone(),
                                issuer.jwks.clone(),
                                shared.http.clone(),
                                issuer.timing,
                            )
                            .map_err(|e| problem(&format!("issuers[{i}].jwks"), e.to_string()))?,
                        ),
                    };
                    issuers.push((issuer.settings.clone(), store));
                }
                Arc::new(
                    TokenVerifier::new(issuers, config.token_cache_entries, config.max_token_bytes)
                        .keeping_claims(sources.claims.clone()),
                )
            }
        };
        let kept_groups = previous
            .filter(|p| p.sources.groups.is_some() && p.sources.groups == sources.groups)
            .and_then(|p| p.groups.clone());
        let groups = match (&config.groups, kept_groups) {
            (_, Some(kept)) => Some(kept),
            (None, None) => None,
            (Some(GroupsConfig::Static(table)), None) => Some(GroupCache::new(
                Arc::new(StaticGroups(table.clone())),
                CacheSettings {
                    ttl: STATIC_TTL,
                    not_found_ttl: STATIC_TTL,
                    max_users: table.len() as u64 + 1,
                    max_staleness: Duration::ZERO,
                },
            )),
            (Some(GroupsConfig::Gerrit(gerrit)), None) => {
                let client = gerrit_client(gerrit, shared.gerrit_metrics.clone())
                    .map_err(|(path, reason)| problem(path, reason))?;
                Some(GroupCache::new(Arc::new(client), gerrit.cache))
            }
        };
        let changes = groups
            .as_ref()
            .and_then(GroupCache::gerrit)
            .map(|client| crate::gerrit::ChangeCache::new(client.clone()));
        let grants = match (&config.grants, groups.as_ref().and_then(GroupCache::gerrit)) {
            (Some(g), Some(client)) => {
                // A reload with the same grants source keeps the set already read.
                let kept = previous
                    .and_then(|p| p.grants.as_ref())
                    .filter(|(store, _)| store.settings() == &g.settings)
                    .map(|(store, _)| store.clone());
                let store = kept.unwrap_or_else(|| {
                    let store = Arc::new(crate::gerrit::GrantStore::new(
                        client.clone(),
                        g.settings.clone(),
                    ));
                    // Outside a runtime (benches, `check`) the caller refreshes it.
                    if tokio::runtime::Handle::try_current().is_ok() {
                        store.spawn_refresher();
                    }
                    store
                });
                Some((store, g.how_to_ask.clone()))
            }
            _ => None,
        };
        let group_events = match (&config.groups, &groups) {
            (Some(GroupsConfig::Gerrit(gerrit)), Some(cache)) => match &gerrit.events {
                Some(e) => {
                    if let Some(file) = &e.token_file {
                        check_token_file(file)
                            .map_err(|reason| problem("gerrit.events.token_file", reason))?;
                    }
                    let events = GroupEvents::new(
                        cache.clone(),
                        e.all_users_project.clone(),
                        e.token_file.clone(),
                    );
                    let events = match &changes {
                        Some(changes) => events.with_changes(changes.clone()),
                        None => events,
                    };
                    Some(match &grants {
                        Some((store, _)) => events.with_grants(store.clone()),
                        None => events,
                    })
                }
                None => None,
            },
            _ => None,
        };
        Ok(Self {
            verifier,
            groups,
            group_events,
            changes,
            grants,
            routes: config.routes.clone(),
            browser: config
                .browser
                .as_ref()
                .map(|b| Arc::new(crate::signin::BrowserSignIn::new(b))),
            sources,
        })
    }
}

/// The Gerrit client for a checked `gerrit:` section, reading the password and CA files
/// now. Errors name the config field.
fn gerrit_client(
    gerrit: &GerritConfig,
    metrics: GerritMetrics,
) -> Result<GerritClient, (&'static str, String)> {
    let settings = &gerrit.settings;
    let password = match &settings.password_file {
        None => None,
        Some(file) => {
            let password = std::fs::read_to_string(file)
                .map(Secret::new)
                .map_err(|e| {
                    (
                        "gerrit.password_file",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
            if password.expose().is_empty() {
                return Err((
                    "gerrit.password_file",
                    format!("{} is empty", file.display()),
                ));
            }
            Some(password)
        }
    };
    let ca_certificates = settings
        .ca_file
        .as_deref()
        .map(read_ca_bundle)
        .transpose()
        .map_err(|reason| ("gerrit.ca_file", reason))?
        .unwrap_or_default();
    GerritClient::new(
        settings.clone(),
        GerritCredentials {
            password,
            ca_certificates,
        },
        gerrit.cache.max_users,
        metrics,
    )
    .map_err(|e| ("gerrit", format!("cannot build the HTTP client: {e}")))
}

/// The events token file must hold a token that cannot be guessed.
fn check_token_file(file: &std::path::Path) -> Result<(), String> {
    let shown = file.display();
    let token = std::fs::read_to_string(file).map_err(|e| format!("cannot read {shown}: {e}"))?;
    match token.trim().len() {
        0 => Err(format!("{shown} is empty")),
        n if n < 16 => Err(format!(
            "{shown}: a token of {n} characters is guessable; use at least 16"
        )),
        _ => Ok(()),
    }
}

/// The certificates of a PEM bundle; at least one.
fn read_ca_bundle(file: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let shown = file.display();
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {shown}: {e}"))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!("{shown}: no PEM certificates in it")),
        // reqwest says only "builder error" here.
        Err(_) => Err(format!("{shown}: not a PEM certificate bundle")),
    }
}

/// The top-level claims some rule's conditions read: claim names (and, for dotted paths,
/// the object they start in), and `scope` and `scp` for scope conditions.
fn claims_used(routes: &RouteTable) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    if routes.routes().iter().any(|r| !r.audiences.is_empty()) {
        names.insert("aud".to_string());
    }
    for rule in routes.routes().iter().flat_map(|r| r.requirement.rules()) {
        for c in &rule.claims {
            names.insert(c.claim.clone());
            if let Some((first, _)) = c.claim.split_once('.') {
                names.insert(first.to_string());
            }
        }
        if !rule.scopes.is_empty() {
            names.extend(["scope".to_string(), "scp".to_string()]);
        }
        if let Some(crate::policy::change_gate::ChangeSource::Claim(c)) =
            rule.change.as_ref().map(|c| &c.from)
        {
            names.insert(c.clone());
        }
    }
    names
}

/// Static tables never change, so their entries stay for an hour (the cache needs a TTL).
const STATIC_TTL: Duration = Duration::from_secs(3600);
