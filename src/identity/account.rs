//! Which Gerrit account a token names, and in which form.
//!
//! Gerrit's `{account-id}` reads a string of digits as an account number before it tries
//! usernames, so a username claim `1000099` sent as an id names account #1000099, not the
//! user called `1000099`. Names therefore never go into `{account-id}`: they are looked up
//! by an exact account query and checked; only a claim declared to hold account numbers
//! is sent as one.

use std::borrow::Cow;
use std::fmt;

/// What an issuer's Gerrit account claim holds (`issuers[].gerrit_account_form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccountForm {
    /// A Gerrit username, digits or not.
    #[default]
    Username,
    /// The account's preferred email.
    Email,
    /// Gerrit's numeric account id (`_account_id`).
    AccountId,
}

impl AccountForm {
    /// The config spellings, in order.
    pub const NAMES: [&'static str; 3] = ["username", "email", "account_id"];

    /// The form a config value names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "username" => Some(AccountForm::Username),
            "email" => Some(AccountForm::Email),
            "account_id" => Some(AccountForm::AccountId),
            _ => None,
        }
    }
}

/// A Gerrit account as a token names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GerritAccount {
    /// The account with exactly this username.
    Username(String),
    /// The account with this preferred email (any case).
    Email(String),
    /// The account with this number.
    Number(u64),
}

impl GerritAccount {
    /// The account a claim value of this form names; `None` for an empty value or an
    /// account id that is not all ASCII digits.
    pub fn from_claim(form: AccountForm, value: &str) -> Option<Self> {
        if value.is_empty() {
            return None;
        }
        match form {
            AccountForm::Username => Some(GerritAccount::Username(value.to_string())),
            AccountForm::Email => Some(GerritAccount::Email(value.to_string())),
            // `u64::from_str` would also take a leading `+`.
            AccountForm::AccountId if value.bytes().all(|b| b.is_ascii_digit()) => {
                value.parse().ok().map(GerritAccount::Number)
            }
            AccountForm::AccountId => None,
        }
    }

    /// The name or number as the token carried it.
    pub fn as_claimed(&self) -> Cow<'_, str> {
        match self {
            GerritAccount::Username(name) | GerritAccount::Email(name) => Cow::Borrowed(name),
            GerritAccount::Number(number) => Cow::Owned(number.to_string()),
        }
    }

    /// Every account a bare name given to an admin endpoint may mean.
    pub fn every_form_of(name: &str) -> Vec<Self> {
        let mut forms = vec![
            GerritAccount::Username(name.to_string()),
            GerritAccount::Email(name.to_string()),
        ];
        if let Some(number) = GerritAccount::from_claim(AccountForm::AccountId, name) {
            forms.push(number);
        }
        forms
    }
}

/// Workloads (a rule's `as_user`) and tests name accounts by username.
impl From<&str> for GerritAccount {
    fn from(username: &str) -> Self {
        GerritAccount::Username(username.to_string())
    }
}

impl From<String> for GerritAccount {
    fn from(username: String) -> Self {
        GerritAccount::Username(username)
    }
}

impl fmt::Display for GerritAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GerritAccount::Username(name) => write!(f, "username {name:?}"),
            GerritAccount::Email(email) => write!(f, "email {email:?}"),
            GerritAccount::Number(number) => write!(f, "account {number}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_claim_declared_as_an_account_id_becomes_a_number() {
        use GerritAccount::*;
        let claim = |form, v| GerritAccount::from_claim(form, v);
        assert_eq!(
            claim(AccountForm::Username, "1000099"),
            Some(Username("1000099".into()))
        );
        assert_eq!(
            claim(AccountForm::Email, "1000099"),
            Some(Email("1000099".into()))
        );
        assert_eq!(
            claim(AccountForm::AccountId, "1000099"),
            Some(Number(1000099))
        );
        for not_digits in ["", "+1000099", "1000099 ", "-1", "alice", "1e6", "٣"] {
            assert_eq!(
                claim(AccountForm::AccountId, not_digits),
                None,
                "{not_digits:?}"
            );
        }
        assert_eq!(
            claim(AccountForm::AccountId, "99999999999999999999999"),
            None,
            "too large for an account number"
        );
    }

    #[test]
    fn an_admin_name_covers_every_form_it_can_be() {
        assert_eq!(GerritAccount::every_form_of("alice").len(), 2);
        assert!(GerritAccount::every_form_of("4711").contains(&GerritAccount::Number(4711)));
    }

    #[test]
    fn forms_are_spelled_as_in_the_config() {
        for name in AccountForm::NAMES {
            assert!(AccountForm::parse(name).is_some(), "{name}");
        }
        assert_eq!(AccountForm::parse("id"), None);
    }
}
