//! Gerrit changes as review-gated rules read them: the change a request names, fetched
//! with its submit requirements and votes (`GET /a/changes/{id}?o=CURRENT_REVISION&
//! o=SUBMIT_REQUIREMENTS&o=DETAILED_LABELS&o=DETAILED_ACCOUNTS`).

use super::client::json_text;
use super::{GerritClient, GerritError};
use serde::Deserialize;
use std::collections::HashMap;

/// A change as a request names it (Gerrit's `{change-id}` forms, less the ambiguous ones:
/// a bare Change-Id may name several changes, on several branches).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChangeId {
    /// `1234`: the change number.
    Number(u64),
    /// `project~1234`.
    ProjectNumber {
        /// The project.
        project: String,
        /// The change number.
        number: u64,
    },
    /// `project~branch~I<40 hex>`: a Change-Id on one project and branch.
    Triplet {
        /// The project.
        project: String,
        /// The branch, without `refs/heads/`.
        branch: String,
        /// The Change-Id footer.
        change_id: String,
    },
}

/// Why a request's change reference was refused before asking Gerrit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a change: use a number, project~number or project~branch~Change-Id")]
pub struct ChangeIdError(pub String);

impl ChangeId {
    /// Parses a change reference from a header or claim. Strict: the reference becomes a
    /// Gerrit URL, so nothing but the documented forms (and no `..`, no empty segment)
    /// gets through.
    pub fn parse(text: &str) -> Result<Self, ChangeIdError> {
        let bad = || ChangeIdError(text.chars().take(80).collect());
        let parts: Vec<&str> = text.split('~').collect();
        match parts.as_slice() {
            [number] => number_of(number).map(ChangeId::Number).ok_or_else(bad),
            [project, number] => Ok(ChangeId::ProjectNumber {
                project: project_name(project).ok_or_else(bad)?,
                number: number_of(number).ok_or_else(bad)?,
            }),
            [project, branch, change_id] => {
                let valid_id = change_id.len() == 41
                    && change_id.starts_with('I')
                    && change_id[1..]
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !valid_id {
                    return Err(bad());
                }
                let branch = branch.strip_prefix("refs/heads/").unwrap_or(branch);
                Ok(ChangeId::Triplet {
                    project: project_name(project).ok_or_else(bad)?,
                    branch: project_name(branch).ok_or_else(bad)?,
                    change_id: (*change_id).to_string(),
                })
            }
            _ => Err(bad()),
        }
    }

    /// The `{change-id}` path segment (the client percent-encodes `/` in it).
    pub fn segment(&self) -> String {
        match self {
            ChangeId::Number(n) => n.to_string(),
            ChangeId::ProjectNumber { project, number } => format!("{project}~{number}"),
            ChangeId::Triplet {
                project,
                branch,
                change_id,
            } => format!("{project}~{branch}~{change_id}"),
        }
    }
}

impl std::fmt::Display for ChangeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.segment())
    }
}

/// A change number: 1 to 10 digits, no sign, no leading zero.
fn number_of(text: &str) -> Option<u64> {
    let valid = !text.is_empty()
        && text.len() <= 10
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    valid.then(|| text.parse().ok()).flatten()
}

/// A project or branch name: letters, digits, `-_.+/`, whole `/`-separated segments,
/// none of them `.` or `..`.
fn project_name(text: &str) -> Option<String> {
    let valid = !text.is_empty()
        && text.len() <= 255
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+/".contains(&b))
        && text
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    valid.then(|| text.to_string())
}

/// The state of a change (`ChangeInfo.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeStatus {
    /// Open.
    New,
    /// Submitted and merged: final.
    Merged,
    /// Abandoned.
    Abandoned,
    /// A status this version does not know.
    #[serde(other)]
    Other,
}

/// An account as a change names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChangeAccount {
    /// The account number.
    #[serde(rename = "_account_id")]
    pub account_id: u64,
    /// The username (with `o=DETAILED_ACCOUNTS`).
    #[serde(default)]
    pub username: Option<String>,
    /// The preferred email (with `o=DETAILED_ACCOUNTS`).
    #[serde(default)]
    pub email: Option<String>,
}

/// One vote on a label (`ApprovalInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Vote {
    /// Who voted.
    #[serde(flatten)]
    pub account: ChangeAccount,
    /// The value; absent or 0 when the reviewer has not voted.
    #[serde(default)]
    pub value: Option<i32>,
}

/// A label with its votes (`LabelInfo` with `o=DETAILED_LABELS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LabelInfo {
    /// Every reviewer's vote.
    #[serde(default)]
    pub all: Vec<Vote>,
    /// The values the label allows (`"+2": "Looks good to me, approved"`).
    #[serde(default)]
    pub values: HashMap<String, String>,
}

impl LabelInfo {
    /// The label's highest value (`+2` for Code-Review), if it lists any.
    pub fn max_value(&self) -> Option<i32> {
        self.values
            .keys()
            .filter_map(|k| k.trim().parse::<i32>().ok())
            .max()
    }
}

/// One submit requirement's result (`SubmitRequirementResultInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubmitRequirement {
    /// Its name, e.g. `Code-Review` or `Verified`.
    pub name: String,
    /// `SATISFIED`, `UNSATISFIED`, `OVERRIDDEN`, `NOT_APPLICABLE`, `ERROR`, `FORCED`.
    pub status: String,
}

impl SubmitRequirement {
    /// Whether it lets the change be submitted.
    pub fn is_met(&self) -> bool {
        matches!(
            self.status.as_str(),
            "SATISFIED" | "OVERRIDDEN" | "NOT_APPLICABLE" | "FORCED"
        )
    }
}

/// A change as Gerrit describes it (`ChangeInfo`), the fields rules read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChangeInfo {
    /// The project.
    pub project: String,
    /// The target branch, without `refs/heads/`.
    pub branch: String,
    /// The change number.
    #[serde(rename = "_number")]
    pub number: u64,
    /// Its state.
    pub status: ChangeStatus,
    /// The owner.
    pub owner: ChangeAccount,
    /// The current patch set's commit (with `o=CURRENT_REVISION`).
    #[serde(default)]
    pub current_revision: Option<String>,
    /// Submit requirements (with `o=SUBMIT_REQUIREMENTS`).
    #[serde(default)]
    pub submit_requirements: Vec<SubmitRequirement>,
    /// Labels and votes (with `o=DETAILED_LABELS`).
    #[serde(default)]
    pub labels: HashMap<String, LabelInfo>,
}

/// Parses a `ChangeInfo`, with or without the `)]}'` prefix line.
pub(crate) fn parse_change(body: &[u8]) -> Result<ChangeInfo, GerritError> {
    serde_json::from_str(json_text(body)?)
        .map_err(|e| GerritError::Response(format!("not a ChangeInfo: {e}")))
}

/// The options asked for: what the change-gated rules read.
const CHANGE_OPTIONS: &str =
    "o=CURRENT_REVISION&o=SUBMIT_REQUIREMENTS&o=DETAILED_LABELS&o=DETAILED_ACCOUNTS";

impl GerritClient {
    /// The change `id` names, or `None` if Gerrit has none the service account can see.
    pub async fn change(&self, id: &ChangeId) -> Result<Option<ChangeInfo>, GerritError> {
        let url = self.url(&["changes", &id.segment()], Some(CHANGE_OPTIONS))?;
        self.get(&url, parse_change).await
    }
}

/// How long a merged change is kept: its state is final (only a revert, which is a new
/// change, undoes it).
pub const MERGED_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long any other change is kept: votes and requirements move.
pub const OPEN_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// Most changes kept.
pub const MAX_CHANGES: u64 = 10_000;

/// Changes fetched lately, kept by how final their state is; a change event drops one.
#[derive(Clone)]
pub struct ChangeCache {
    client: GerritClient,
    cache: moka::future::Cache<ChangeId, std::sync::Arc<ChangeInfo>>,
}

impl std::fmt::Debug for ChangeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeCache")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

/// Per-entry lifetime: long for a merged change, short otherwise.
struct ByState;

impl moka::Expiry<ChangeId, std::sync::Arc<ChangeInfo>> for ByState {
    fn expire_after_create(
        &self,
        _key: &ChangeId,
        value: &std::sync::Arc<ChangeInfo>,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(if value.status == ChangeStatus::Merged {
            MERGED_TTL
        } else {
            OPEN_TTL
        })
    }
}

impl ChangeCache {
    /// A cache in front of `client`.
    pub fn new(client: GerritClient) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(MAX_CHANGES)
            .expire_after(ByState)
            .support_invalidation_closures()
            .build();
        ChangeCache { client, cache }
    }

    /// The change `id` names (`None`: Gerrit has none the service account can see).
    /// Requests for one change at once share one fetch.
    pub async fn change(
        &self,
        id: &ChangeId,
    ) -> Result<Option<std::sync::Arc<ChangeInfo>>, GerritError> {
        let fetched = self
            .cache
            .try_get_with(id.clone(), async {
                match self.client.change(id).await {
                    Ok(Some(change)) => Ok(std::sync::Arc::new(change)),
                    Ok(None) => Err(None),
                    Err(e) => Err(Some(e)),
                }
            })
            .await;
        match fetched {
            Ok(change) => Ok(Some(change)),
            Err(e) => match &*e {
                None => Ok(None),
                Some(e) => Err(e.clone()),
            },
        }
    }

    /// Drops change `number` however it was named (a change event: a vote, a new patch
    /// set, a merge).
    pub fn forget(&self, number: u64) {
        let _ = self
            .cache
            .invalidate_entries_if(move |_, change| change.number == number);
    }
}

#[cfg(test)]
mod tests;
