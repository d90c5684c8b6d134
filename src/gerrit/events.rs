//! Gerrit events that change group membership, or a change under review.
//!
//! A change's NoteDb ref `refs/changes/<last two digits>/<number>/meta` moves with every
//! vote, patch set, merge or abandon, firing `ref-updated`; the change events themselves
//! (`change-merged`, `comment-added`, `patchset-created`, ...) name it too. Either drops
//! the change from the change cache.
//!
//! Gerrit keeps each group in NoteDb under `refs/groups/<first two chars>/<UUID>` in the
//! `All-Users` project (`refs/deleted-groups/...` once deleted), so any change to a
//! group's members, included groups or name fires `ref-updated` for that ref. The events
//! arrive as Gerrit emits them: one JSON object per request (the webhooks plugin) or one
//! per line (`gerrit stream-events` relayed as is).

use super::{GerritMetrics, GroupCache};
use serde::Deserialize;
use std::path::PathBuf;

/// Why an events body was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// A line is not a JSON object.
    #[error("line {line}: not a Gerrit event: {reason}")]
    NotAnEvent {
        /// 1-based line number in the body.
        line: usize,
        /// The JSON error.
        reason: String,
    },
    /// The sender did not present the configured token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// No token file is configured, so there is nothing to check an operator's token
    /// against.
    #[error("no token is configured (gerrit.events.token_file)")]
    NoToken,
    /// The token file cannot be read: a problem on our side.
    #[error("cannot read the events token file {file}: {reason}")]
    TokenUnreadable {
        /// The file.
        file: String,
        /// The OS error.
        reason: String,
    },
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    /// `ref-updated`: the one ref.
    #[serde(rename = "refUpdate")]
    ref_update: Option<RefUpdate>,
    /// `batch-ref-updated` (newer Gerrit): several refs in one event.
    #[serde(rename = "refUpdates", default)]
    ref_updates: Vec<RefUpdate>,
    /// A change event's change.
    change: Option<ChangeAttribute>,
}

/// The change of a change event (stream-events' change attribute); older Gerrit sends
/// the number as a string.
#[derive(Deserialize)]
struct ChangeAttribute {
    number: Option<serde_json::Value>,
}

impl ChangeAttribute {
    fn number(&self) -> Option<u64> {
        match self.number.as_ref()? {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

impl Event {
    fn updates(&self) -> &[RefUpdate] {
        match (self.kind.as_str(), &self.ref_update) {
            ("ref-updated", Some(update)) => std::slice::from_ref(update),
            ("batch-ref-updated", _) => &self.ref_updates,
            _ => &[],
        }
    }
}

#[derive(Deserialize)]
struct RefUpdate {
    #[serde(rename = "refName")]
    ref_name: String,
    project: String,
}

/// What a body of events says about groups.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GroupChanges {
    /// Events read.
    pub events: usize,
    /// Events that change no group.
    pub ignored: usize,
    /// UUIDs of the groups that changed, first occurrence order, without repeats.
    pub groups: Vec<String>,
    /// Numbers of the changes under review that moved, without repeats.
    pub changes: Vec<u64>,
    /// Branches that moved (`(project, ref)` of `ref-updated` under `refs/heads/`); kept
    /// by [`GroupEvents::read`] only for the grants branch.
    pub heads: Vec<(String, String)>,
}

/// Reads one JSON event or newline-delimited events and picks out group changes in
/// `all_users` (the project Gerrit keeps accounts and groups in).
pub fn group_changes(body: &[u8], all_users: &str) -> Result<GroupChanges, EventError> {
    let mut changes = GroupChanges::default();
    let text = String::from_utf8_lossy(body);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: Event = serde_json::from_str(line).map_err(|e| EventError::NotAnEvent {
            line: i + 1,
            reason: e.to_string(),
        })?;
        changes.events += 1;
        let uuids: Vec<&str> = event
            .updates()
            .iter()
            .filter(|u| u.project == all_users)
            .filter_map(|u| group_uuid(&u.ref_name))
            .collect();
        let numbers: Vec<u64> = event
            .updates()
            .iter()
            .filter_map(|u| change_number(&u.ref_name))
            .chain(event.change.as_ref().and_then(ChangeAttribute::number))
            .collect();
        if uuids.is_empty() && numbers.is_empty() {
            changes.ignored += 1;
        }
        for uuid in uuids {
            if !changes.groups.iter().any(|g| g == uuid) {
                changes.groups.push(uuid.to_string());
            }
        }
        for number in numbers {
            if !changes.changes.contains(&number) {
                changes.changes.push(number);
            }
        }
        for update in event.updates() {
            let head = (update.project.clone(), update.ref_name.clone());
            if update.ref_name.starts_with("refs/heads/") && !changes.heads.contains(&head) {
                changes.heads.push(head);
            }
        }
    }
    Ok(changes)
}

/// The change number of a change ref: `refs/changes/34/1234/meta` (or `/1`, a patch
/// set) → 1234.
fn change_number(ref_name: &str) -> Option<u64> {
    let rest = ref_name.strip_prefix("refs/changes/")?;
    let mut parts = rest.split('/');
    let (shard, number) = (parts.next()?, parts.next()?);
    let n: u64 = number.parse().ok()?;
    let expected = format!("{:02}", n % 100);
    (shard == expected).then_some(n)
}

/// The group UUID of a group ref: `refs/groups/6a/6a1e...` → `6a1e...`.
fn group_uuid(ref_name: &str) -> Option<&str> {
    let rest = ref_name
        .strip_prefix("refs/groups/")
        .or_else(|| ref_name.strip_prefix("refs/deleted-groups/"))?;
    let (shard, uuid) = rest.split_once('/')?;
    (!uuid.is_empty() && uuid.starts_with(shard)).then_some(uuid)
}

/// What applying events did before the answer.
#[derive(Debug, Default, serde::Serialize)]
pub struct Applied {
    /// Events read.
    pub events: usize,
    /// Groups that changed.
    pub groups_changed: usize,
    /// Cached users dropped because they held a changed group.
    pub entries_dropped: usize,
    /// Changed groups whose members are being listed in the background: users added to
    /// them get access once Gerrit answers.
    pub additions_pending: usize,
    /// Changes under review dropped from the change cache.
    pub changes_dropped: usize,
}

/// Applies Gerrit group changes to the group cache.
#[derive(Debug, Clone)]
pub struct GroupEvents {
    cache: GroupCache,
    all_users: String,
    token_file: Option<PathBuf>,
    /// Changes under review, dropped when they move.
    changes: Option<super::ChangeCache>,
    /// The grants, read again when their branch moves.
    grants: Option<std::sync::Arc<super::GrantStore>>,
}

impl GroupEvents {
    /// Applies events for groups in the `all_users` project to `cache`; senders must
    /// present the token in `token_file`, if given.
    pub fn new(
        cache: GroupCache,
        all_users: impl Into<String>,
        token_file: Option<PathBuf>,
    ) -> Self {
        Self {
            cache,
            all_users: all_users.into(),
            token_file,
            changes: None,
            grants: None,
        }
    }

    /// Also reads the grants again when their branch moves.
    pub fn with_grants(mut self, grants: std::sync::Arc<super::GrantStore>) -> Self {
        self.grants = Some(grants);
        self
    }

    /// Also drops moved changes from `changes`.
    pub fn with_changes(mut self, changes: super::ChangeCache) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Whether a token file is configured.
    pub fn has_token(&self) -> bool {
        self.token_file.is_some()
    }

    /// Checks an event's `Authorization` header against the token file, if there is one.
    /// Refusals are counted as unauthorized events.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<(), EventError> {
        if self.token_file.is_none() {
            return Ok(());
        }
        let checked = self.check_token(authorization);
        if matches!(checked, Err(EventError::Unauthorized)) {
            if let Some(m) = self.metrics() {
                m.events("unauthorized", 1);
            }
        }
        checked
    }

    /// Checks an `Authorization` header against the token file, which is read each time,
    /// so a rotated Secret is used at once (events and invalidations are rare). Without a
    /// token file nothing is accepted ([`EventError::NoToken`]).
    pub fn check_token(&self, authorization: Option<&[u8]>) -> Result<(), EventError> {
        let Some(file) = &self.token_file else {
            return Err(EventError::NoToken);
        };
        let expected = std::fs::read_to_string(file).map_err(|e| EventError::TokenUnreadable {
            file: file.display().to_string(),
            reason: e.to_string(),
        })?;
        let expected = expected.trim();
        let presented = authorization
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .unwrap_or_default();
        let equal = !expected.is_empty()
            && aws_lc_rs::constant_time::verify_slices_are_equal(presented, expected.as_bytes())
                .is_ok();
        if equal {
            Ok(())
        } else {
            Err(EventError::Unauthorized)
        }
    }

    fn metrics(&self) -> Option<&GerritMetrics> {
        self.cache.metrics()
    }

    /// Reads a body of events: the group changes in it, or why it is not Gerrit events.
    pub fn read(&self, body: &[u8]) -> Result<GroupChanges, EventError> {
        let mut changes = group_changes(body, &self.all_users);
        if let Ok(changes) = &mut changes {
            // Only the grants branch matters; every other push is no business of ours.
            changes.heads.retain(|(project, name)| {
                self.grants
                    .as_ref()
                    .is_some_and(|g| g.is_moved_by(project, name))
            });
        }
        if let Some(m) = self.metrics() {
            match &changes {
                Ok(changes) => m.events("ignored", changes.ignored),
                Err(_) => m.events("invalid", 1),
            }
        }
        changes
    }

    /// Applies group changes: first drops every cached user holding a changed group, at
    /// once (a removal takes effect without waiting for Gerrit); then, in a task of its
    /// own that the answer does not wait for, asks Gerrit for each group's members and
    /// drops those cached without it (an addition). If Gerrit cannot list the members,
    /// additions wait for the TTL.
    pub async fn apply(&self, changes: GroupChanges) -> Applied {
        let mut applied = Applied {
            events: changes.events,
            groups_changed: changes.groups.len(),
            entries_dropped: 0,
            additions_pending: changes.groups.len(),
            changes_dropped: 0,
        };
        if let (Some(grants), false) = (&self.grants, changes.heads.is_empty()) {
            let grants = grants.clone();
            tokio::spawn(async move { grants.refresh_and_log().await });
        }
        if let Some(cache) = &self.changes {
            for number in &changes.changes {
                cache.forget(*number);
                tracing::info!(
                    change = number,
                    "Gerrit change moved: dropped from the change cache"
                );
            }
            applied.changes_dropped = changes.changes.len();
        }
        for uuid in &changes.groups {
            let dropped = self.cache.invalidate_holders(uuid).await;
            tracing::info!(group = %uuid, dropped, "Gerrit group changed: cached holders dropped");
            if let Some(m) = self.metrics() {
                m.dropped("event", dropped);
            }
            applied.entries_dropped += dropped;
        }
        if !changes.groups.is_empty() {
            tokio::spawn(self.clone().drop_new_members(changes.groups));
        }
        applied
    }

    /// Lists each group's members in Gerrit and drops those cached without the group.
    async fn drop_new_members(self, groups: Vec<String>) {
        for uuid in &groups {
            let members = match self.cache.gerrit() {
                Some(gerrit) => match gerrit.group_members(uuid).await {
                    Ok(Some(members)) => members,
                    Ok(None) => {
                        tracing::warn!(group = %uuid, "Gerrit does not show this group's members to the service account; users added to it get access after cache_ttl");
                        Vec::new()
                    }
                    Err(e) => {
                        tracing::warn!(group = %uuid, error = %e, "cannot list the changed group's members; users added to it get access after cache_ttl");
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            let dropped = self.cache.invalidate_new_members(uuid, &members).await;
            tracing::info!(group = %uuid, dropped, "Gerrit group changed: cached new members dropped");
            if let Some(m) = self.metrics() {
                m.events("group_changed", 1);
                m.dropped("event", dropped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "6a1e70e1a88782771a91808c8af9bbb7a9871389";

    /// A `ref-updated` event as Gerrit's stream-events and webhooks plugin send it.
    fn ref_updated(project: &str, ref_name: &str) -> String {
        serde_json::json!({
            "submitter": {"name": "Administrator", "email": "admin@example.com", "username": "admin"},
            "refUpdate": {
                "oldRev": "8c2a4d1e0d5b9f3a6e7c1b2d3f4a5b6c7d8e9f00",
                "newRev": "1f2e3d4c5b6a798877665544332211ffeeddccbb",
                "refName": ref_name,
                "project": project,
            },
            "type": "ref-updated",
            "eventCreatedOn": 1_764_000_000,
        })
        .to_string()
    }

    #[test]
    fn a_change_meta_ref_or_change_event_names_the_change() {
        let meta = ref_updated("infra/deploy", "refs/changes/34/1234/meta");
        let patch_set = ref_updated("infra/deploy", "refs/changes/34/1234/2");
        let merged = serde_json::json!({
            "type": "change-merged",
            "change": {"project": "infra/deploy", "branch": "main", "number": 77},
            "eventCreatedOn": 1_764_000_000,
        })
        .to_string();
        let old_style = r#"{"type":"comment-added","change":{"number":"78"}}"#;
        let body = [meta, patch_set, merged, old_style.to_string()].join("\n");
        let got = group_changes(body.as_bytes(), "All-Users").unwrap();
        assert_eq!(got.changes, [1234, 77, 78]);
        assert_eq!((got.events, got.ignored), (4, 0));
        // A shard that does not fit the number is no change ref.
        let odd = ref_updated("p", "refs/changes/99/1234/meta");
        assert!(group_changes(odd.as_bytes(), "All-Users")
            .unwrap()
            .changes
            .is_empty());
    }

    #[test]
    fn a_group_ref_update_in_all_users_names_the_group() {
        let body = ref_updated("All-Users", &format!("refs/groups/6a/{UUID}"));
        let got = group_changes(body.as_bytes(), "All-Users").unwrap();
        assert_eq!(
            got,
            GroupChanges {
                events: 1,
                ignored: 0,
                groups: vec![UUID.into()],
                changes: Vec::new(),
                heads: Vec::new(),
            }
        );
        let deleted = ref_updated("All-Users", &format!("refs/deleted-groups/6a/{UUID}"));
        assert_eq!(
            group_changes(deleted.as_bytes(), "All-Users")
                .unwrap()
                .groups,
            vec![UUID.to_string()]
        );
    }

    #[test]
    fn other_refs_projects_and_event_types_are_ignored() {
        let lines = [
            ref_updated("All-Users", "refs/users/01/1000001"),
            ref_updated("All-Users", "refs/meta/group-names"),
            ref_updated("team-a/service", &format!("refs/groups/6a/{UUID}")),
            ref_updated("All-Users", "refs/groups/zz/6a1e"),
            ref_updated("All-Users", "refs/groups/6a"),
            r#"{"type":"comment-added","change":{"project":"All-Users"}}"#.to_string(),
            r#"{"type":"ref-updated"}"#.to_string(),
        ];
        let got = group_changes(lines.join("\n").as_bytes(), "All-Users").unwrap();
        assert_eq!(got.events, 7);
        assert_eq!(got.ignored, 7);
        assert!(got.groups.is_empty(), "{got:?}");
    }

    #[test]
    fn newline_delimited_events_are_read_and_groups_reported_once() {
        let other = "0123456789abcdef0123456789abcdef01234567";
        let body = [
            ref_updated("All-Users", &format!("refs/groups/6a/{UUID}")),
            String::new(),
            ref_updated("All-Users", &format!("refs/groups/01/{other}")),
            ref_updated("All-Users", &format!("refs/groups/6a/{UUID}")),
        ]
        .join("\n");
        let got = group_changes(body.as_bytes(), "All-Users").unwrap();
        assert_eq!(got.events, 3);
        assert_eq!(got.groups, vec![UUID.to_string(), other.to_string()]);
    }

    #[test]
    fn a_batch_ref_update_names_every_group_in_it() {
        let other = "0123456789abcdef0123456789abcdef01234567";
        let body = serde_json::json!({
            "type": "batch-ref-updated",
            "refUpdates": [
                {"oldRev": "0", "newRev": "1", "refName": format!("refs/groups/6a/{UUID}"), "project": "All-Users"},
                {"oldRev": "0", "newRev": "1", "refName": "refs/meta/group-names", "project": "All-Users"},
                {"oldRev": "0", "newRev": "1", "refName": format!("refs/groups/01/{other}"), "project": "All-Users"},
            ],
            "eventCreatedOn": 1_764_000_000,
        })
        .to_string();
        let got = group_changes(body.as_bytes(), "All-Users").unwrap();
        assert_eq!(got.groups, vec![UUID.to_string(), other.to_string()]);
        assert_eq!(got.ignored, 0);
    }

    #[test]
    fn the_all_users_project_name_is_configurable() {
        let body = ref_updated("Site-Users", &format!("refs/groups/6a/{UUID}"));
        assert!(group_changes(body.as_bytes(), "All-Users")
            .unwrap()
            .groups
            .is_empty());
        assert_eq!(
            group_changes(body.as_bytes(), "Site-Users").unwrap().groups,
            vec![UUID.to_string()]
        );
    }

    #[test]
    fn a_body_that_is_not_json_events_is_refused_with_its_line() {
        let body = format!(
            "{}\n<html>bad gateway</html>\n",
            ref_updated("All-Users", "refs/groups/6a/6a1e")
        );
        let err = group_changes(body.as_bytes(), "All-Users").unwrap_err();
        assert!(
            err.to_string().starts_with("line 2: not a Gerrit event"),
            "{err}"
        );
    }
}
