//! Gerrit's changes API as the fake serves it: `GET /a/changes/{change-id}`, the id as a
//! number, `project~number` or `project~branch~Change-Id`, answering `ChangeInfo` with
//! what the options ask for (`CURRENT_REVISION`, `SUBMIT_REQUIREMENTS`, `DETAILED_LABELS`,
//! `DETAILED_ACCOUNTS`). Submit requirements follow Gerrit's defaults: `Code-Review` is
//! satisfied by a +2 and no -2, `Verified` by a +1 and no -1.

use super::{
    account_details, authenticate, before_answering, gerrit_json, not_found, FakeGerrit,
    GerritState, InFlight,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One change.
#[derive(Clone, Debug)]
pub struct FakeChange {
    pub number: u64,
    pub project: String,
    pub branch: String,
    /// `I` and 40 hex digits.
    pub change_id: String,
    /// `NEW`, `MERGED` or `ABANDONED`.
    pub status: &'static str,
    /// The owner's username (an account of the fake).
    pub owner: String,
    /// The current patch set's commit.
    pub revision: String,
    /// `(label, username, value)`.
    pub votes: Vec<(String, String, i32)>,
}

impl FakeChange {
    /// An open change on `main` with no votes.
    pub fn new(number: u64, project: &str, owner: &str) -> Self {
        FakeChange {
            number,
            project: project.into(),
            branch: "main".into(),
            change_id: format!("I{:040x}", number * 7919),
            status: "NEW",
            owner: owner.into(),
            revision: format!("{:040x}", number * 104_729),
            votes: Vec::new(),
        }
    }

    /// On `branch`.
    pub fn on_branch(mut self, branch: &str) -> Self {
        self.branch = branch.into();
        self
    }

    /// With a vote.
    pub fn vote(mut self, label: &str, username: &str, value: i32) -> Self {
        self.votes.push((label.into(), username.into(), value));
        self
    }

    /// Code-Review+2 by `reviewer` and Verified+1 by the CI account `ci`.
    pub fn approved_by(self, reviewer: &str) -> Self {
        self.vote("Code-Review", reviewer, 2)
            .vote("Verified", "ci", 1)
    }

    /// Merged.
    pub fn merged(mut self) -> Self {
        self.status = "MERGED";
        self
    }
}

/// The values each label allows, as Gerrit lists them.
fn label_values(label: &str) -> Value {
    match label {
        "Code-Review" => json!({
            "-2": "This shall not be submitted", "-1": "I would prefer this is not submitted as is",
            " 0": "No score", "+1": "Looks good to me, but someone else must approve",
            "+2": "Looks good to me, approved"
        }),
        _ => json!({"-1": "Fails", " 0": "No score", "+1": "Verified"}),
    }
}

impl FakeGerrit {
    /// Adds or replaces a change.
    pub fn put_change(&self, change: FakeChange) {
        let mut changes = self.state.changes.lock().unwrap();
        changes.retain(|c| c.number != change.number);
        changes.push(change);
    }

    /// Changes a change in place (a vote, a merge, a new patch set).
    pub fn update_change(&self, number: u64, update: impl FnOnce(&mut FakeChange)) {
        let mut changes = self.state.changes.lock().unwrap();
        let change = changes
            .iter_mut()
            .find(|c| c.number == number)
            .expect("a change the fake has");
        update(change);
    }

    /// `GET /a/changes/...` requests answered or refused for change `number` (however
    /// it was named).
    pub fn change_requests(&self, number: u64) -> usize {
        self.state
            .change_requests
            .lock()
            .unwrap()
            .get(&number)
            .copied()
            .unwrap_or_default()
    }

    /// The `ref-updated` event Gerrit fires when change `number` moves (its NoteDb meta
    /// ref), as stream-events writes it.
    pub fn change_ref_updated_event(&self, number: u64) -> String {
        let change = self
            .state
            .changes
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.number == number)
            .cloned()
            .expect("a change the fake has");
        json!({
            "type": "ref-updated",
            "submitter": {"name": "Gerrit Code Review", "username": "gerrit"},
            "refUpdate": {
                "oldRev": "0000000000000000000000000000000000000000",
                "newRev": change.revision,
                "refName": format!("refs/changes/{:02}/{}/meta", number % 100, number),
                "project": change.project,
            },
            "eventCreatedOn": 1_700_000_000u64,
        })
        .to_string()
    }
}

/// Finds the change an `{change-id}` names.
fn find(changes: &[FakeChange], id: &str) -> Option<FakeChange> {
    let parts: Vec<&str> = id.split('~').collect();
    changes
        .iter()
        .find(|c| match parts.as_slice() {
            [n] => n.parse() == Ok(c.number),
            [project, n] => *project == c.project && n.parse() == Ok(c.number),
            [project, branch, change_id] => {
                *project == c.project
                    && branch.strip_prefix("refs/heads/").unwrap_or(branch) == c.branch
                    && *change_id == c.change_id
            }
            _ => false,
        })
        .cloned()
}

pub(super) async fn get_change(
    State(state): State<Arc<GerritState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    state.total.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(&state);
    let found = find(&state.changes.lock().unwrap(), &id);
    if let Some(change) = &found {
        *state
            .change_requests
            .lock()
            .unwrap()
            .entry(change.number)
            .or_default() += 1;
    }
    if let Some(response) = before_answering(&state).await {
        return response;
    }
    if let Err(refused) = authenticate(&state, &headers) {
        return refused.into_response();
    }
    let Some(change) = found else {
        return not_found(&id);
    };
    let options: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "o")
        .map(|(_, v)| v.into_owned())
        .collect();
    let has = |o: &str| options.iter().any(|x| x == o);
    let accounts = state.accounts.lock().unwrap().clone();
    let account = |username: &str| {
        let a = accounts.iter().find(|a| a.username == username);
        match (a, has("DETAILED_ACCOUNTS")) {
            (Some(a), true) => account_details(a),
            (Some(a), false) => json!({"_account_id": a.number}),
            (None, _) => json!({"_account_id": 0}),
        }
    };
    let mut info = json!({
        "id": format!("{}~{}~{}", change.project.replace('/', "%2F"), change.branch, change.change_id),
        "project": change.project,
        "branch": change.branch,
        "change_id": change.change_id,
        "subject": format!("Change {}", change.number),
        "status": change.status,
        "created": "2026-12-01 09:59:32.126000000",
        "updated": "2026-12-01 11:16:36.775000000",
        "_number": change.number,
        "owner": account(&change.owner),
    });
    if has("CURRENT_REVISION") {
        info["current_revision"] = json!(change.revision);
        info["revisions"] = json!({ change.revision.clone(): {"_number": 1, "kind": "REWORK"} });
    }
    let labels = ["Code-Review", "Verified"];
    if has("DETAILED_LABELS") {
        let mut map = serde_json::Map::new();
        for label in labels {
            let all: Vec<Value> = change
                .votes
                .iter()
                .filter(|(l, _, _)| l == label)
                .map(|(_, who, value)| {
                    let mut vote = account(who);
                    vote["value"] = json!(value);
                    vote["date"] = json!("2026-12-01 10:00:00.000000000");
                    vote
                })
                .collect();
            map.insert(
                label.to_string(),
                json!({"all": all, "values": label_values(label), "default_value": 0}),
            );
        }
        info["labels"] = Value::Object(map);
    }
    if has("SUBMIT_REQUIREMENTS") {
        let requirements: Vec<Value> = labels
            .iter()
            .map(|label| {
                let votes = change.votes.iter().filter(|(l, _, _)| l == label);
                let max = if *label == "Code-Review" { 2 } else { 1 };
                let min = -max;
                let (mut has_max, mut has_min) = (false, false);
                for (_, _, v) in votes {
                    has_max |= *v == max;
                    has_min |= *v == min;
                }
                let status = if change.status == "MERGED" || (has_max && !has_min) {
                    "SATISFIED"
                } else {
                    "UNSATISFIED"
                };
                json!({
                    "name": label,
                    "status": status,
                    "is_legacy": false,
                    "submittability_expression_result": {
                        "expression": format!("label:{label}=MAX AND -label:{label}=MIN"),
                        "fulfilled": status == "SATISFIED",
                    }
                })
            })
            .collect();
        info["submit_requirements"] = json!(requirements);
    }
    gerrit_json(&info)
}
