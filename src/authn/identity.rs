//! The verified caller.

/// Who the caller is, taken from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The issuer that signed the token.
    pub issuer: String,
    /// The user name (the configured user claim), injected upstream.
    pub user: String,
    /// The email claim, when present and a string.
    pub email: Option<String>,
    /// The Gerrit account id to look groups up for: the issuer's `gerrit_account_claim`
    /// (a username, an email or a numeric account id), by default the user name.
    pub gerrit_account: String,
}
