//! git's credential helper protocol (git-credential(1), "INPUT/OUTPUT FORMAT";
//! gitcredentials(7), "CUSTOM HELPERS"): git writes `key=value` lines to the helper's
//! stdin, ended by a blank line or EOF; for `get` the helper answers the same way.

use super::current::CurrentToken;
use super::CredentialError;

/// Most bytes of a request read: git's own are a few hundred.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What git asks the helper to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Return a credential.
    Get,
    /// git used a credential and it worked (ignored: the store is mesh-authz's).
    Store,
    /// git used a credential and it was refused.
    Erase,
}

impl Operation {
    /// The operation named on the command line; `None` for one a newer git may add
    /// (gitcredentials(7): a helper ignores operations it does not know).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "get" => Some(Operation::Get),
            "store" => Some(Operation::Store),
            "erase" => Some(Operation::Erase),
            _ => None,
        }
    }
}

/// A request from git, the attributes this helper reads.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct GitRequest {
    /// `https`, `http`, …
    pub protocol: Option<String>,
    /// `host` or `host:port`.
    pub host: Option<String>,
    /// The password git used (`store`, `erase`).
    pub password: Option<String>,
}

impl std::fmt::Debug for GitRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRequest")
            .field("protocol", &self.protocol)
            .field("host", &self.host)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl GitRequest {
    /// Parses git's request. Attributes it does not read (`path`, `username`,
    /// `wwwauth[]`, `capability[]`, …) are skipped; a line without `=` is an error.
    pub fn parse(input: &str) -> Result<Self, CredentialError> {
        let mut request = GitRequest::default();
        for line in input.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(CredentialError::GitProtocol(format!(
                    "a line without `=` (key {:?})",
                    line.chars().take(20).collect::<String>()
                )));
            };
            if value.contains('\0') {
                return Err(CredentialError::GitProtocol("a value with NUL".into()));
            }
            let value = Some(value.to_string());
            match key {
                "protocol" => request.protocol = value,
                "host" => request.host = value,
                "password" => request.password = value,
                // git may send `url=` instead of its parts.
                "url" => {
                    if let Some(url) = value.as_deref().and_then(|u| url::Url::parse(u).ok()) {
                        request.protocol = Some(url.scheme().to_string());
                        request.host = url.host_str().map(|h| match url.port() {
                            Some(port) => format!("{h}:{port}"),
                            None => h.to_string(),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(request)
    }

    /// The host when the request is for HTTPS: tokens never go out in the clear.
    pub fn https_host(&self) -> Option<&str> {
        (self.protocol.as_deref() == Some("https"))
            .then_some(self.host.as_deref())
            .flatten()
    }
}

/// The answer to `get`: the token as the password, the user's name (the gateway ignores
/// it), and the token's expiry so git (2.40 and later) does not reuse it after.
pub fn answer(token: &CurrentToken) -> String {
    let user = token
        .user
        .as_deref()
        .filter(|u| !u.contains(['\n', '\0']))
        .unwrap_or("mesh-authz");
    format!(
        "username={user}\npassword={}\npassword_expiry_utc={}\n",
        token.token, token.expires
    )
}

/// The answer that stops git from asking other helpers or the terminal: a developer
/// told to run `mesh-authz login` should not be prompted for a password instead.
pub const QUIT: &str = "quit=1\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_as_git_writes_it_is_read() {
        let input = "capability[]=authtype\nprotocol=https\nhost=gerrit.example.com:8443\npath=team-a/repo.git\nwwwauth[]=Basic realm=\"mesh-authz\"\n\nignored=after-blank\n";
        let r = GitRequest::parse(input).unwrap();
        assert_eq!(r.protocol.as_deref(), Some("https"));
        assert_eq!(r.https_host(), Some("gerrit.example.com:8443"));
        assert_eq!(r.password, None);
    }

    #[test]
    fn a_url_attribute_gives_protocol_and_host() {
        let r = GitRequest::parse("url=https://gerrit.example.com:8443/a/repo\n").unwrap();
        assert_eq!(r.https_host(), Some("gerrit.example.com:8443"));
        let r = GitRequest::parse("url=https://gerrit.example.com/x").unwrap();
        assert_eq!(r.https_host(), Some("gerrit.example.com"));
    }

    #[test]
    fn plain_http_gets_no_host_so_no_token() {
        let r = GitRequest::parse("protocol=http\nhost=gerrit.example.com\n").unwrap();
        assert_eq!(r.https_host(), None);
        assert_eq!(
            GitRequest::parse("host=gerrit.example.com\n")
                .unwrap()
                .https_host(),
            None
        );
    }

    #[test]
    fn lines_that_are_not_the_protocol_are_refused() {
        for bad in ["protocol https\n", "host=a\0b\n"] {
            assert!(matches!(
                GitRequest::parse(bad),
                Err(CredentialError::GitProtocol(_))
            ));
        }
        assert_eq!(GitRequest::parse("").unwrap(), GitRequest::default());
        assert_eq!(GitRequest::parse("\r\n").unwrap(), GitRequest::default());
    }

    #[test]
    fn the_answer_has_the_token_as_password_and_its_expiry() {
        let token = CurrentToken {
            token: "t.o.k".into(),
            expires: 1_900_000_000,
            user: Some("alice".into()),
        };
        assert_eq!(
            answer(&token),
            "username=alice\npassword=t.o.k\npassword_expiry_utc=1900000000\n"
        );
        let odd = CurrentToken {
            user: Some("a\nprotocol=http".into()),
            ..token
        };
        assert!(answer(&odd).starts_with("username=mesh-authz\n"));
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let r = GitRequest::parse("protocol=https\nhost=h\npassword=secret\n").unwrap();
        assert!(!format!("{r:?}").contains("secret"));
    }

    #[test]
    fn unknown_operations_are_ignored() {
        assert_eq!(Operation::parse("get"), Some(Operation::Get));
        assert_eq!(Operation::parse("capability"), None);
    }
}
