//! Change-gated rules at work: the change the request names, fetched from Gerrit (through
//! the change cache), turned into the plain facts the policy judges.

use super::{Denial, Outcome, Trace};
use crate::gerrit::{ChangeCache, ChangeId, ChangeInfo, ChangeStatus};
use crate::identity::{GerritAccount, Identity};
use crate::policy::change_gate::{ChangeSource, ChangeState, VoteFact};
use crate::policy::{ChangeCondition, ChangeFacts};
use crate::request::RequestView;

/// Judges `condition` for `req`, whose caller is `identity` (a token's user) or
/// `acting_as` (a workload's `as_user`).
pub(super) async fn check(
    condition: &ChangeCondition,
    changes: Option<&ChangeCache>,
    req: &RequestView<'_>,
    identity: Option<&Identity>,
    acting_as: Option<&str>,
    steps: &mut Trace,
) -> Outcome {
    let named = match &condition.from {
        ChangeSource::Header(h) => req.header(h).map(str::to_string),
        ChangeSource::Claim(c) => identity
            .and_then(|i| i.claims.get(c))
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
    };
    let Some(named) = named.filter(|n| !n.trim().is_empty()) else {
        let place = match &condition.from {
            ChangeSource::Header(h) => format!("header {h}"),
            ChangeSource::Claim(c) => format!("claim {c}"),
        };
        return unmet(
            format!("the request names no Gerrit change ({place})"),
            steps,
        );
    };
    let id = match ChangeId::parse(named.trim()) {
        Ok(id) => id,
        Err(e) => return unmet(e.to_string(), steps),
    };
    let Some(changes) = changes else {
        // Config compilation refuses this; stay closed if it ever happens.
        return Outcome::Undecided("no Gerrit configured for changes".into());
    };
    let change = match changes.change(&id).await {
        Ok(Some(change)) => change,
        Ok(None) => return unmet(format!("change {id} was not found in Gerrit"), steps),
        Err(e) => {
            steps.note(|| format!("change {id}: {e}: cannot decide"));
            return Outcome::Undecided(format!("change lookup failed: {e}"));
        }
    };
    let facts = facts(&change);
    let revision = condition
        .revision_header
        .as_deref()
        .and_then(|h| req.header(h))
        .map(str::trim);
    let caller = caller_names(identity, acting_as);
    match condition.judge(&facts, revision, &caller) {
        Ok(()) => {
            steps.note(|| {
                format!(
                    "change {} ({}, {}) is as required",
                    facts.number, facts.project, facts.branch
                )
            });
            Outcome::Holds(String::new())
        }
        Err(why) => unmet(why, steps),
    }
}

/// The condition does not hold, for this reason.
fn unmet(why: String, steps: &mut Trace) -> Outcome {
    steps.note(|| why.clone());
    Outcome::Fails(Denial::ChangeUnmet(why))
}

/// The facts the policy judges, from Gerrit's `ChangeInfo`.
pub(super) fn facts(change: &ChangeInfo) -> ChangeFacts {
    let names = |account: &crate::gerrit::ChangeAccount| {
        let mut names = vec![account.account_id.to_string()];
        names.extend(account.username.clone());
        names.extend(account.email.as_ref().map(|e| e.to_ascii_lowercase()));
        names
    };
    let votes = change
        .labels
        .iter()
        .flat_map(|(label, info)| {
            let max = info.max_value().unwrap_or(0);
            info.all.iter().filter_map(move |vote| {
                vote.value.map(|value| VoteFact {
                    label: label.clone(),
                    value,
                    max,
                    voter: names(&vote.account),
                })
            })
        })
        .collect();
    ChangeFacts {
        number: change.number,
        project: change.project.clone(),
        branch: change.branch.clone(),
        state: match change.status {
            ChangeStatus::New => ChangeState::Open,
            ChangeStatus::Merged => ChangeState::Merged,
            ChangeStatus::Abandoned => ChangeState::Abandoned,
            ChangeStatus::Other => ChangeState::Unknown,
        },
        current_revision: change.current_revision.clone(),
        unmet_requirements: change
            .submit_requirements
            .iter()
            .filter(|r| !r.is_met())
            .map(|r| r.name.clone())
            .collect(),
        owner: names(&change.owner),
        votes,
    }
}

/// Every name the caller may have in a vote: the user, its email, the Gerrit account.
fn caller_names(identity: Option<&Identity>, acting_as: Option<&str>) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(i) = identity {
        names.push(i.user.clone());
        names.extend(i.email.as_ref().map(|e| e.to_ascii_lowercase()));
        names.push(match &i.gerrit_account {
            GerritAccount::Username(u) => u.clone(),
            GerritAccount::Email(e) => e.to_ascii_lowercase(),
            GerritAccount::Number(n) => n.to_string(),
        });
    }
    names.extend(acting_as.map(str::to_string));
    names
}
