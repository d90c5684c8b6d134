//! The verified caller.

/// Who the caller is, taken from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The issuer that signed the token.
    pub issuer: String,
    /// The user name (the configured user claim), also the Gerrit account id.
    pub user: String,
    /// The email claim, when present and a string.
    pub email: Option<String>,
}
