//! The grants file, read from Gerrit: the branch's revision
//! (`GET /a/projects/{p}/branches/{b}`), then the file at exactly that commit
//! (`GET /a/projects/{p}/commits/{rev}/files/{f}/content`, base64). Read at start, when
//! the branch's `ref-updated` arrives, and every `refresh_interval` as a fallback. The last
//! good set stays in force while Gerrit cannot be read, for `max_staleness`; after that
//! rules on grants cannot decide.

use super::client::json_text;
use super::{GerritClient, GerritError};
use crate::policy::grants::{GrantSet, Skipped};
use arc_swap::ArcSwapOption;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where the grants file is, and how it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantsSettings {
    /// The project, e.g. `access-grants`.
    pub project: String,
    /// The branch (without `refs/heads/`).
    pub branch: String,
    /// The file's path in the branch.
    pub file: String,
    /// Longest a grant may last.
    pub max_duration: Duration,
    /// How often the branch is read when no event says it moved.
    pub refresh_interval: Duration,
    /// How long the last good set is used while Gerrit cannot be read.
    pub max_staleness: Duration,
}

/// The set in force, and when Gerrit last answered.
#[derive(Debug)]
struct Loaded {
    set: Arc<GrantSet>,
    confirmed_at: Instant,
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// The branch had not moved.
    Unchanged,
    /// A new revision was read: how many grants, and the entries skipped.
    Read {
        /// Its revision.
        revision: String,
        /// Valid grants.
        grants: usize,
        /// Entries left out.
        skipped: Vec<Skipped>,
    },
    /// The new revision's file does not parse: the previous set stays.
    Refused {
        /// Its revision.
        revision: String,
        /// Why.
        reason: String,
    },
}

/// The grants in force.
#[derive(Debug)]
pub struct GrantStore {
    client: GerritClient,
    settings: GrantsSettings,
    loaded: ArcSwapOption<Loaded>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
}

impl GrantStore {
    /// A store reading through `client`; nothing is loaded until [`GrantStore::refresh`].
    pub fn new(client: GerritClient, settings: GrantsSettings) -> Self {
        GrantStore {
            client,
            settings,
            loaded: ArcSwapOption::empty(),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &GrantsSettings {
        &self.settings
    }

    /// The set to decide with: `Err` says why there is none (not read yet, or Gerrit
    /// unreachable for longer than `max_staleness`).
    pub fn current(&self) -> Result<Arc<GrantSet>, String> {
        let guard = self.loaded.load();
        let Some(loaded) = guard.as_ref() else {
            return Err("the grants file has not been read from Gerrit yet".into());
        };
        let age = loaded.confirmed_at.elapsed();
        if age > self.settings.max_staleness {
            return Err(format!(
                "the grants file could not be read from Gerrit for {}",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            ));
        }
        Ok(loaded.set.clone())
    }

    /// Reads the branch, and the file if the branch moved.
    pub async fn refresh(&self) -> Result<Refreshed, GerritError> {
        let _one = self.refreshing.lock().await;
        let s = &self.settings;
        let branch = self
            .client
            .url(&["projects", &s.project, "branches", &s.branch], None)?;
        let revision = self
            .client
            .get(&branch, parse_branch_revision)
            .await?
            .ok_or_else(|| {
                GerritError::Response(format!(
                    "no branch {} in project {} (or the service account cannot see it)",
                    s.branch, s.project
                ))
            })?;
        let now = Instant::now();
        if let Some(loaded) = self.loaded.load().as_ref() {
            if loaded.set.revision == revision {
                self.loaded.store(Some(Arc::new(Loaded {
                    set: loaded.set.clone(),
                    confirmed_at: now,
                })));
                return Ok(Refreshed::Unchanged);
            }
        }
        let file = self.client.url(
            &[
                "projects", &s.project, "commits", &revision, "files", &s.file, "content",
            ],
            None,
        )?;
        let text = self
            .client
            .get(&file, parse_base64_content)
            .await?
            .ok_or_else(|| GerritError::Response(format!("no file {} at {revision}", s.file)))?;
        match GrantSet::parse(&text, &revision, s.max_duration) {
            Ok((set, skipped)) => {
                let grants = set.grants.len();
                let set = Arc::new(set);
                self.client.metrics().grants_in_force(set.clone(), &skipped);
                self.loaded.store(Some(Arc::new(Loaded {
                    set,
                    confirmed_at: now,
                })));
                Ok(Refreshed::Read {
                    revision,
                    grants,
                    skipped,
                })
            }
            Err(e) => {
                // Gerrit answered: the previous set is confirmed as the one in force.
                if let Some(loaded) = self.loaded.load().as_ref() {
                    self.loaded.store(Some(Arc::new(Loaded {
                        set: loaded.set.clone(),
                        confirmed_at: now,
                    })));
                }
                Ok(Refreshed::Refused {
                    revision,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Refreshes now and logs what came of it.
    pub async fn refresh_and_log(&self) {
        let result = self.refresh().await;
        self.client.metrics().grant_read(match &result {
            Ok(Refreshed::Unchanged) => "unchanged",
            Ok(Refreshed::Read { .. }) => "read",
            Ok(Refreshed::Refused { .. }) => "refused",
            Err(_) => "failed",
        });
        match result {
            Ok(Refreshed::Unchanged) => {}
            Ok(Refreshed::Read {
                revision,
                grants,
                skipped,
            }) => {
                tracing::info!(%revision, grants, skipped = skipped.len(), "grants file read");
                for s in skipped {
                    tracing::warn!(%revision, entry = %s.entry, reason = %s.reason, "grant skipped");
                }
            }
            Ok(Refreshed::Refused { revision, reason }) => {
                tracing::error!(%revision, %reason, "grants file refused: the previous grants stay");
            }
            Err(e) => tracing::warn!(error = %e, "grants file not read: the previous grants stay"),
        }
    }

    /// Refreshes every `refresh_interval` until the store is dropped.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let store = Arc::downgrade(self);
        let every = self.settings.refresh_interval;
        tokio::spawn(async move {
            loop {
                match store.upgrade() {
                    Some(store) => store.refresh_and_log().await,
                    None => return,
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Counts a request allowed by grant `id`.
    pub fn count_allow(&self, id: &str) {
        self.client.metrics().grant_allowed(id);
    }

    /// Whether a `ref-updated` of `project` and `ref_name` moves the grants branch.
    pub fn is_moved_by(&self, project: &str, ref_name: &str) -> bool {
        project == self.settings.project
            && ref_name.strip_prefix("refs/heads/").unwrap_or(ref_name) == self.settings.branch
    }
}

/// A `BranchInfo`'s `revision`.
fn parse_branch_revision(body: &[u8]) -> Result<String, GerritError> {
    #[derive(serde::Deserialize)]
    struct BranchInfo {
        revision: String,
    }
    let info: BranchInfo = serde_json::from_str(json_text(body)?)
        .map_err(|e| GerritError::Response(format!("not a BranchInfo: {e}")))?;
    if info.revision.len() < 7 || !info.revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GerritError::Response(
            "the branch revision is not a commit".into(),
        ));
    }
    Ok(info.revision)
}

/// A file's content as Gerrit sends it: base64 text.
fn parse_base64_content(body: &[u8]) -> Result<String, GerritError> {
    use base64::Engine;
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| GerritError::Response(format!("file content is not base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| GerritError::Response("the file is not UTF-8".into()))
}
