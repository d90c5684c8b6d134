//! The groups a user is in, whatever the source (Gerrit, a static table).

/// A Gerrit group the user belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group UUID, decoded (e.g. `global:Registered-Users` or 40 hex digits).
    pub uuid: String,
    /// The group name.
    pub name: String,
}

/// A user's resolved membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Whether the account exists (and is visible to the service account).
    pub known_account: bool,
    /// Effective groups; empty for unknown accounts.
    pub groups: Vec<Group>,
}

impl Membership {
    /// Whether the user is in the group with this UUID.
    pub fn contains_uuid(&self, uuid: &str) -> bool {
        self.groups.iter().any(|g| g.uuid == uuid)
    }
}

#[cfg(test)]
impl Membership {
    /// A known account in groups of these names, each with the UUID `uuid-NAME`: the
    /// policy tests' shared builder.
    pub(crate) fn of_names(names: &[&str]) -> Self {
        Membership {
            known_account: true,
            groups: names
                .iter()
                .map(|n| Group {
                    uuid: format!("uuid-{n}"),
                    name: n.to_string(),
                })
                .collect(),
        }
    }
}
