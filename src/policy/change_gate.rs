//! Change-gated rules: a rule that holds only when the request acts for a Gerrit change
//! in a given state (merged, or submittable), on allowed projects and branches,
//! optionally at the change's current revision and approved by someone other than its
//! owner or the caller.
//!
//! The condition judges plain facts about the change ([`ChangeFacts`]); the engine
//! fetches them from Gerrit. Each refusal says what a developer can act on.

/// A project or branch name pattern: `name`, `prefix*` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    /// Exactly this name.
    Exact(String),
    /// Names starting with this (`infra/*` is every project under `infra/`).
    Prefix(String),
    /// Any name.
    Any,
}

impl NamePattern {
    /// Parses a pattern; `*` only at the end.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern == "*" {
            return Ok(NamePattern::Any);
        }
        let (name, prefix) = match pattern.strip_suffix('*') {
            Some(p) => (p, true),
            None => (pattern, false),
        };
        if name.is_empty() || name.contains('*') || name.chars().any(char::is_whitespace) {
            return Err(format!("{pattern:?} is not `name`, `prefix*` or `*`"));
        }
        Ok(if prefix {
            NamePattern::Prefix(name.into())
        } else {
            NamePattern::Exact(name.into())
        })
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Prefix(p) => name.starts_with(p.as_str()),
            NamePattern::Any => true,
        }
    }
}

/// Where the request names its change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSource {
    /// A request header (lower-case name), e.g. `x-gerrit-change`.
    Header(String),
    /// A claim of the caller's token.
    Claim(String),
}

/// The state the change must be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequiredState {
    /// Merged: final, and what a deploy of `main` should act on.
    Merged,
    /// Every submit requirement satisfied (or already merged).
    Submittable,
}

/// Who may not be the approver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotBy {
    /// The change's owner.
    Owner,
    /// The caller (the user of the token).
    Caller,
}

/// An approval the change must carry: the label's highest vote from someone allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The label, e.g. `Code-Review`.
    pub label: String,
    /// Who does not count.
    pub not_by: Vec<NotBy>,
}

/// A rule's change condition, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeCondition {
    /// Where the change is named.
    pub from: ChangeSource,
    /// Projects allowed (patterns, `*` for any run of characters); empty: any.
    pub projects: Vec<NamePattern>,
    /// Branches allowed (patterns); empty: any.
    pub branches: Vec<NamePattern>,
    /// The state required.
    pub state: RequiredState,
    /// A header that must equal the change's current revision.
    pub revision_header: Option<String>,
    /// An approval required.
    pub approval: Option<Approval>,
}

/// The state a change is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeState {
    /// Open.
    Open,
    /// Merged.
    Merged,
    /// Abandoned.
    Abandoned,
    /// A state mesh-authz does not know.
    Unknown,
}

/// One vote, by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteFact {
    /// The label.
    pub label: String,
    /// The value.
    pub value: i32,
    /// The label's highest value.
    pub max: i32,
    /// Every name of the voter (username, email, account number).
    pub voter: Vec<String>,
}

/// What is known about a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeFacts {
    /// Its number.
    pub number: u64,
    /// Its project.
    pub project: String,
    /// Its target branch.
    pub branch: String,
    /// Its state.
    pub state: ChangeState,
    /// The current patch set's commit.
    pub current_revision: Option<String>,
    /// Submit requirements not met, by name.
    pub unmet_requirements: Vec<String>,
    /// Every name of the owner.
    pub owner: Vec<String>,
    /// The votes.
    pub votes: Vec<VoteFact>,
}

impl ChangeCondition {
    /// Judges `change` for a request that named `revision` (from the revision header)
    /// and whose caller is known by `caller` names. `Err` says why, in words a developer
    /// can act on.
    pub fn judge(
        &self,
        change: &ChangeFacts,
        revision: Option<&str>,
        caller: &[String],
    ) -> Result<(), String> {
        let n = change.number;
        if !self.projects.is_empty() && !self.projects.iter().any(|p| p.matches(&change.project)) {
            return Err(format!(
                "change {n} is in project {}, which this route does not serve",
                change.project
            ));
        }
        if !self.branches.is_empty() && !self.branches.iter().any(|b| b.matches(&change.branch)) {
            return Err(format!(
                "change {n} targets branch {}, which this route does not serve",
                change.branch
            ));
        }
        match (self.state, change.state) {
            (_, ChangeState::Merged) => {}
            (_, ChangeState::Abandoned) => return Err(format!("change {n} is abandoned")),
            (RequiredState::Merged, _) => return Err(format!("change {n} is not merged")),
            (RequiredState::Submittable, ChangeState::Unknown) => {
                return Err(format!("change {n} is in a state mesh-authz does not know"))
            }
            (RequiredState::Submittable, ChangeState::Open) => {
                if !change.unmet_requirements.is_empty() {
                    let names = change.unmet_requirements.join(", ");
                    let verb = if change.unmet_requirements.len() == 1 {
                        "is"
                    } else {
                        "are"
                    };
                    return Err(format!(
                        "change {n} cannot be submitted: {names} {verb} missing"
                    ));
                }
            }
        }
        if let Some(header) = &self.revision_header {
            let Some(revision) = revision.filter(|r| !r.is_empty()) else {
                return Err(format!(
                    "the request names no revision of change {n} ({header})"
                ));
            };
            if change.current_revision.as_deref() != Some(revision) {
                let what = if change.state == ChangeState::Merged {
                    "merged commit"
                } else {
                    "current patch set"
                };
                return Err(format!(
                    "revision {} is not change {n}'s {what}",
                    short(revision)
                ));
            }
        }
        if let Some(approval) = &self.approval {
            let excluded = |voter: &[String]| {
                approval.not_by.iter().any(|who| {
                    let names: &[String] = match who {
                        NotBy::Owner => &change.owner,
                        NotBy::Caller => caller,
                    };
                    voter.iter().any(|v| names.contains(v))
                })
            };
            let approved = change.votes.iter().any(|v| {
                v.label == approval.label && v.value >= v.max && v.max > 0 && !excluded(&v.voter)
            });
            if !approved {
                let others = match approval.not_by.as_slice() {
                    [] => String::new(),
                    [NotBy::Owner] => " by someone other than its owner".into(),
                    [NotBy::Caller] => " by someone other than you".into(),
                    _ => " by someone other than its owner and you".into(),
                };
                return Err(format!(
                    "change {n} has no {} approval{others}",
                    approval.label
                ));
            }
        }
        Ok(())
    }
}

/// The first 10 characters of a revision, for messages.
fn short(revision: &str) -> &str {
    revision.get(..10).unwrap_or(revision)
}

#[cfg(test)]
mod tests;
