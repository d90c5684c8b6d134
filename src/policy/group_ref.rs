//! How a policy names a Gerrit group: by UUID or by name, never "either".
//!
//! Gerrit lets a group's owners rename it to anything unused, so a name that looks like
//! another group's UUID is easy to get: if `b28cbac7...` could match a name *or* a UUID,
//! the owner of any group could satisfy a rule written for team-a's UUID. Each entry
//! therefore says which one it compares, and the two never stand in for each other.

use super::PolicyError;
use crate::identity::{Group, Membership};

/// A group as a rule names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupRef {
    /// Compared with the group's UUID only (`uuid:...`): survives renames, and only
    /// Gerrit assigns it.
    Uuid(String),
    /// Compared with the group's name only (`name:...`, or a plain entry that does not
    /// look like a UUID): whoever owns a group chooses its name.
    Name(String),
}

impl GroupRef {
    /// Compiles a policy entry: `uuid:UUID`, `name:NAME`, or a plain name. A plain entry
    /// shaped like a Gerrit group UUID (40 hex digits, or `scheme:rest` like
    /// `global:Registered-Users` or `ldap:cn=...`) is refused as ambiguous: such entries
    /// used to match names and UUIDs alike.
    pub fn parse(entry: &str) -> Result<Self, PolicyError> {
        let group = if let Some(uuid) = entry.strip_prefix("uuid:") {
            GroupRef::Uuid(uuid.to_string())
        } else if let Some(name) = entry.strip_prefix("name:") {
            GroupRef::Name(name.to_string())
        } else if looks_like_uuid(entry) {
            return Err(PolicyError::AmbiguousGroup(entry.to_string()));
        } else {
            GroupRef::Name(entry.to_string())
        };
        let value = group.value();
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(PolicyError::InvalidGroup(entry.to_string()));
        }
        Ok(group)
    }

    /// The UUID or name, without its `uuid:`/`name:` form.
    pub fn value(&self) -> &str {
        match self {
            GroupRef::Uuid(v) | GroupRef::Name(v) => v,
        }
    }

    /// Whether `group` is the one named.
    pub fn names(&self, group: &Group) -> bool {
        match self {
            GroupRef::Uuid(uuid) => group.uuid == *uuid,
            GroupRef::Name(name) => group.name == *name,
        }
    }

    /// Whether the user of `membership` is in the group named.
    pub fn is_held_by(&self, membership: &Membership) -> bool {
        membership.groups.iter().any(|g| self.names(g))
    }
}

impl std::fmt::Display for GroupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupRef::Uuid(v) => write!(f, "uuid:{v}"),
            GroupRef::Name(v) => write!(f, "name:{v}"),
        }
    }
}

/// Gerrit's UUID shapes: 40 hex digits (internal groups) or a backend prefix
/// (`global:`, `ldap:`, `user:`, plugins' own), a lower-case word before a colon.
fn looks_like_uuid(entry: &str) -> bool {
    let hex40 = entry.len() == 40 && entry.bytes().all(|b| b.is_ascii_hexdigit());
    let scheme = entry.split_once(':').is_some_and(|(scheme, _)| {
        scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    });
    hex40 || scheme
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEAM_A_UUID: &str = "b28cbac76633db95727d1f71f761c9fe20c45524";

    fn group(name: &str, uuid: &str) -> Group {
        Group {
            name: name.into(),
            uuid: uuid.into(),
        }
    }

    #[test]
    fn a_uuid_entry_matches_the_uuid_and_never_a_name() {
        let rule = GroupRef::parse(&format!("uuid:{TEAM_A_UUID}")).unwrap();
        assert!(rule.names(&group("team-a", TEAM_A_UUID)));
        // Mallory renamed her own group after team-a's UUID.
        assert!(!rule.names(&group(
            TEAM_A_UUID,
            "49a90117d1f3c0ffee0000000000000000000000"
        )));
    }

    #[test]
    fn a_name_entry_matches_the_name_and_never_a_uuid() {
        for entry in ["team-a", "name:team-a"] {
            let rule = GroupRef::parse(entry).unwrap();
            assert!(rule.names(&group("team-a", TEAM_A_UUID)), "{entry}");
            assert!(!rule.names(&group("other", "team-a")), "{entry}");
        }
        let written_as_name = GroupRef::parse(&format!("name:{TEAM_A_UUID}")).unwrap();
        assert!(!written_as_name.names(&group("team-a", TEAM_A_UUID)));
        assert!(written_as_name.names(&group(TEAM_A_UUID, "49a9")));
    }

    #[test]
    fn plain_entries_shaped_like_a_uuid_are_refused_as_ambiguous() {
        for entry in [
            TEAM_A_UUID,
            &TEAM_A_UUID.to_uppercase(),
            "global:Registered-Users",
            "ldap:cn=devs,ou=groups",
            "user:alice",
        ] {
            assert_eq!(
                GroupRef::parse(entry),
                Err(PolicyError::AmbiguousGroup(entry.to_string())),
                "{entry}"
            );
        }
        // Not UUID-shaped: plain names.
        for entry in [
            "team-a",
            "Registered Users",
            "b28cbac7",
            "Team: Infra",
            "a b:c",
        ] {
            assert_eq!(
                GroupRef::parse(entry),
                Ok(GroupRef::Name(entry.to_string())),
                "{entry}"
            );
        }
    }

    #[test]
    fn empty_values_and_control_characters_are_refused() {
        for entry in ["", "uuid:", "name:", "team\n-a", "uuid:\u{0}"] {
            assert!(GroupRef::parse(entry).is_err(), "{entry:?}");
        }
    }
}
