//! Gerrit's project content API as the fake serves it: `GET /a/projects/{project}/
//! branches/{branch}` (`BranchInfo`) and `GET /a/projects/{project}/commits/{commit}/
//! files/{file}/content` (the file at that commit, base64, as Gerrit sends it). Each
//! [`FakeGerrit::merge_file`] is a new commit on the branch.

use super::{authenticate, before_answering, gerrit_json, not_found, FakeGerrit, GerritState};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Commits and branches.
#[derive(Default)]
pub(super) struct Repositories {
    /// `(project, branch)` → commit.
    branches: Vec<((String, String), String)>,
    /// `(project, commit, path)` → content.
    files: Vec<((String, String, String), String)>,
    commits: u64,
}

impl FakeGerrit {
    /// Merges `content` as `path` on `branch` of `project`: a new commit the branch points
    /// at. Its revision.
    pub fn merge_file(&self, project: &str, branch: &str, path: &str, content: &str) -> String {
        let mut repos = self.state.repositories.lock().unwrap();
        repos.commits += 1;
        // A commit id as git would show it: 40 hex digits, different for each commit.
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            format!("{project}\n{branch}\n{path}\n{}\n{content}", repos.commits).as_bytes(),
        );
        let commit: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let key = (project.to_string(), branch.to_string());
        repos.branches.retain(|(k, _)| *k != key);
        repos.branches.push((key, commit.clone()));
        repos.files.push((
            (project.into(), commit.clone(), path.into()),
            content.into(),
        ));
        commit
    }

    /// Branch reads (`GET .../branches/...`) so far.
    pub fn branch_requests(&self) -> usize {
        self.state.branch_requests.load(Ordering::SeqCst)
    }

    /// The `ref-updated` event Gerrit fires when `branch` of `project` moves.
    pub fn branch_ref_updated_event(&self, project: &str, branch: &str) -> String {
        let revision = self
            .state
            .repositories
            .lock()
            .unwrap()
            .branches
            .iter()
            .find(|(k, _)| k.0 == project && k.1 == branch)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        json!({
            "type": "ref-updated",
            "submitter": {"name": "Gerrit Code Review", "username": "gerrit"},
            "refUpdate": {
                "oldRev": "0000000000000000000000000000000000000000",
                "newRev": revision,
                "refName": format!("refs/heads/{branch}"),
                "project": project,
            },
            "eventCreatedOn": 1_700_000_000u64,
        })
        .to_string()
    }
}

pub(super) async fn get_branch(
    State(state): State<Arc<GerritState>>,
    Path((project, branch)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    state.total.fetch_add(1, Ordering::SeqCst);
    state.branch_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = before_answering(&state).await {
        return response;
    }
    if let Err(refused) = authenticate(&state, &headers) {
        return refused.into_response();
    }
    let branch = branch
        .strip_prefix("refs/heads/")
        .unwrap_or(&branch)
        .to_string();
    let found = state
        .repositories
        .lock()
        .unwrap()
        .branches
        .iter()
        .find(|(k, _)| k.0 == project && k.1 == branch)
        .map(|(_, c)| c.clone());
    match found {
        Some(revision) => gerrit_json(&json!({
            "ref": format!("refs/heads/{branch}"),
            "revision": revision,
            "can_delete": false,
        })),
        None => not_found(&branch),
    }
}

pub(super) async fn get_file_content(
    State(state): State<Arc<GerritState>>,
    Path((project, commit, path)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    state.total.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = before_answering(&state).await {
        return response;
    }
    if let Err(refused) = authenticate(&state, &headers) {
        return refused.into_response();
    }
    let found = state
        .repositories
        .lock()
        .unwrap()
        .files
        .iter()
        .find(|(k, _)| k.0 == project && k.1 == commit && k.2 == path)
        .map(|(_, content)| content.clone());
    match found {
        Some(content) => (
            [
                ("content-type", "text/plain;charset=iso-8859-1"),
                ("x-fyi-content-encoding", "base64"),
                ("x-fyi-content-type", "text/x-yaml"),
            ],
            base64::engine::general_purpose::STANDARD.encode(content),
        )
            .into_response(),
        None => not_found(&path),
    }
}
