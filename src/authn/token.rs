//! Finding the bearer token in the request.

use super::AuthnError;
use crate::request::cookie::{CookieJar, Lookup};
use crate::request::RequestView;
use std::borrow::Cow;

/// Default bound on token size; longer tokens are rejected before any parsing.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Where a route looks for the token; the first source present in the request is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`, scheme matched case-insensitively.
    Bearer,
    /// `Authorization: Basic base64(user:token)` (RFC 7617), as git sends what its
    /// credential helper gave: the password is the token. The user name is ignored: only
    /// the token is verified, and a route taking Basic always removes `Authorization`
    /// upstream, so the name reaches nobody who could trust it.
    Basic,
    /// The whole value of a named header (lower-case name).
    Header(String),
    /// A named cookie.
    Cookie(String),
    /// A query parameter. Only when configured: tokens in URLs end up in access logs.
    Query(String),
}

impl TokenSource {
    /// Parses `bearer`, `basic`, `header:NAME`, `cookie:NAME` or `query:NAME`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{spec:?} is not `bearer`, `basic`, `header:NAME`, `cookie:NAME` or `query:NAME`"
            )
        };
        match spec {
            "bearer" => return Ok(TokenSource::Bearer),
            "basic" => return Ok(TokenSource::Basic),
            _ => {}
        }
        let (kind, name) = spec.split_once(':').ok_or_else(bad)?;
        let name = name.trim();
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token_char) {
            return Err(bad());
        }
        match kind {
            "header" if name.eq_ignore_ascii_case("authorization") => {
                Err("use `bearer` for the Authorization header".into())
            }
            "header" => Ok(TokenSource::Header(name.to_ascii_lowercase())),
            "cookie" => Ok(TokenSource::Cookie(name.to_string())),
            "query" => Ok(TokenSource::Query(name.to_string())),
            _ => Err(bad()),
        }
    }
}

/// The token from the first of `sources` present in the request.
pub fn find_token<'a>(
    req: &RequestView<'a>,
    sources: &[TokenSource],
) -> Result<Cow<'a, str>, AuthnError> {
    for source in sources {
        let found = match source {
            // One header, two schemes: the scheme sent decides which source it is.
            TokenSource::Bearer | TokenSource::Basic => match req.header("authorization") {
                Some(value) => Some(authorization(value, sources)?),
                None => None,
            },
            TokenSource::Header(name) => req.header(name).map(|v| Cow::Borrowed(v.trim())),
            TokenSource::Cookie(name) => match req.header("cookie") {
                Some(header) => cookie(header, name)?.map(Cow::Borrowed),
                None => None,
            },
            TokenSource::Query(name) => query_param(req.query, name)?,
        };
        if let Some(token) = found {
            if token.is_empty() {
                return Err(AuthnError::Malformed);
            }
            return Ok(token);
        }
    }
    Err(AuthnError::MissingToken)
}

/// The token in an `Authorization` header, by the schemes `sources` accept.
fn authorization<'a>(value: &'a str, sources: &[TokenSource]) -> Result<Cow<'a, str>, AuthnError> {
    let takes_basic = sources.contains(&TokenSource::Basic);
    let takes_bearer = sources.contains(&TokenSource::Bearer);
    let wrong = if takes_basic {
        AuthnError::NotBearerOrBasic
    } else {
        AuthnError::NotBearer
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim_start();
    if takes_bearer && scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(wrong);
        }
        return Ok(Cow::Borrowed(rest));
    }
    if takes_basic && scheme.eq_ignore_ascii_case("basic") {
        return basic_password(rest).map(Cow::Owned);
    }
    Err(wrong)
}

/// The password of Basic credentials (RFC 7617): `base64(user ":" password)`.
fn basic_password(credentials: &str) -> Result<String, AuthnError> {
    use base64::Engine;
    // Base64 is 4/3 of the token, plus the user name: far beyond that is no token.
    if credentials.len() > DEFAULT_MAX_TOKEN_BYTES * 2 {
        return Err(AuthnError::TooLarge);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .map_err(|_| AuthnError::BadBasic)?;
    let text = String::from_utf8(decoded).map_err(|_| AuthnError::BadBasic)?;
    match text.split_once(':') {
        Some((_, password)) if !password.is_empty() => Ok(password.to_string()),
        _ => Err(AuthnError::BadBasic),
    }
}

/// A cookie's value from a `Cookie` header, unquoted; one sent twice is refused.
fn cookie<'a>(header: &'a str, name: &str) -> Result<Option<&'a str>, AuthnError> {
    match CookieJar::parse(header).get(name) {
        Lookup::Absent => Ok(None),
        Lookup::One(value) => Ok(Some(value.trim_matches('"'))),
        Lookup::Repeated => Err(AuthnError::RepeatedToken),
    }
}

/// A query parameter's percent-decoded value; one sent twice is refused (the upstream
/// may read the other).
fn query_param<'a>(query: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, AuthnError> {
    let mut values = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v);
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(
            percent_encoding::percent_decode_str(v).decode_utf8_lossy(),
        )),
        (Some(_), Some(_)) => Err(AuthnError::RepeatedToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn extract(auth: Option<&str>) -> Result<String, AuthnError> {
        let mut headers = HashMap::new();
        if let Some(a) = auth {
            headers.insert("authorization".to_string(), a.to_string());
        }
        let req = RequestView::http("GET", "h", "/", &headers);
        find_token(&req, &[TokenSource::Bearer]).map(|t| t.into_owned())
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(extract(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(extract(Some("bearer  abc")).unwrap(), "abc");
        assert_eq!(extract(Some("BEARER abc")).unwrap(), "abc");
    }

    #[test]
    fn missing_and_other_schemes_are_told_apart() {
        assert_eq!(extract(None), Err(AuthnError::MissingToken));
        assert_eq!(
            extract(Some("Basic dXNlcjpwdw==")),
            Err(AuthnError::NotBearer)
        );
        assert_eq!(extract(Some("Bearer")), Err(AuthnError::NotBearer));
        assert_eq!(extract(Some("Bearer   ")), Err(AuthnError::NotBearer));
    }

    fn find(headers: &[(&str, &str)], query: &str, sources: &[&str]) -> Result<String, AuthnError> {
        let headers: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sources: Vec<TokenSource> = sources
            .iter()
            .map(|s| TokenSource::parse(s).unwrap())
            .collect();
        let path = format!("/?{query}");
        let req = RequestView::http("GET", "h", &path, &headers);
        find_token(&req, &sources).map(|t| t.into_owned())
    }

    #[test]
    fn the_first_present_source_wins() {
        let sources = [
            "bearer",
            "header:x-token",
            "cookie:session",
            "query:access_token",
        ];
        assert_eq!(
            find(&[("authorization", "Bearer a")], "", &sources).unwrap(),
            "a"
        );
        assert_eq!(find(&[("x-token", "b")], "", &sources).unwrap(), "b");
        assert_eq!(
            find(&[("cookie", "theme=dark; session=c; x=y")], "", &sources).unwrap(),
            "c"
        );
        assert_eq!(
            find(&[], "x=1&access_token=d%2Ee", &sources).unwrap(),
            "d.e"
        );
        assert_eq!(find(&[], "", &sources), Err(AuthnError::MissingToken));
        // A present but broken first source is an error, not a fall-through.
        assert_eq!(
            find(
                &[("authorization", "Basic x"), ("x-token", "b")],
                "",
                &sources
            ),
            Err(AuthnError::NotBearer)
        );
    }

    #[test]
    fn a_token_cookie_or_parameter_sent_twice_is_refused_not_picked() {
        // A sibling subdomain can add a second cookie of the same name (cookie tossing);
        // whichever comes first, neither is trusted. Likewise a repeated parameter, of
        // which the upstream may read the other one.
        for header in [
            "session=attacker; session=victim",
            "session=victim, session=attacker",
            "theme=dark; session=a;session=a",
        ] {
            assert_eq!(
                find(&[("cookie", header)], "", &["cookie:session"]),
                Err(AuthnError::RepeatedToken),
                "{header}"
            );
        }
        assert_eq!(
            find(
                &[],
                "access_token=a&x=1&access_token=b",
                &["query:access_token"]
            ),
            Err(AuthnError::RepeatedToken)
        );
        // Other cookies and parameters may repeat.
        assert_eq!(
            find(
                &[("cookie", "x=1; session=t; x=2")],
                "",
                &["cookie:session"]
            )
            .unwrap(),
            "t"
        );
        assert_eq!(
            find(&[], "n=1&access_token=t&n=2", &["query:access_token"]).unwrap(),
            "t"
        );
    }

    fn basic(user_and_password: &str) -> String {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_and_password);
        format!("Basic {encoded}")
    }

    #[test]
    fn a_basic_password_is_the_token_and_the_user_name_is_ignored() {
        for user in ["alice", "someone-else", "", "a@b.c"] {
            let header = basic(&format!("{user}:the.token.value"));
            assert_eq!(
                find(&[("authorization", &header)], "", &["basic"]).unwrap(),
                "the.token.value"
            );
        }
        // The password holds everything after the first colon (RFC 7617 2).
        let header = basic("alice:to:ken");
        assert_eq!(
            find(&[("authorization", &header)], "", &["basic"]).unwrap(),
            "to:ken"
        );
        let lower = basic("alice:t").replace("Basic", "bAsIc");
        assert_eq!(
            find(&[("authorization", &lower)], "", &["basic"]).unwrap(),
            "t"
        );
    }

    #[test]
    fn bearer_and_basic_on_one_route_are_chosen_by_the_scheme() {
        let header = basic("git:t1");
        for sources in [&["bearer", "basic"][..], &["basic", "bearer"][..]] {
            assert_eq!(
                find(&[("authorization", &header)], "", sources).unwrap(),
                "t1"
            );
            assert_eq!(
                find(&[("authorization", "Bearer t2")], "", sources).unwrap(),
                "t2"
            );
            assert_eq!(
                find(&[("authorization", "Digest x")], "", sources),
                Err(AuthnError::NotBearerOrBasic)
            );
        }
        // A route without `basic` still refuses Basic credentials.
        assert_eq!(
            find(&[("authorization", &header)], "", &["bearer"]),
            Err(AuthnError::NotBearer)
        );
        assert_eq!(
            find(&[("authorization", "Bearer t")], "", &["basic"]),
            Err(AuthnError::NotBearerOrBasic)
        );
    }

    #[test]
    fn broken_basic_credentials_are_refused_as_such() {
        for header in [
            "Basic".to_string(),
            "Basic !!!not-base64".to_string(),
            basic("no-colon"),
            basic("alice:"),
            format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    [0xff, b':', 0xfe]
                )
            ),
        ] {
            assert_eq!(
                find(&[("authorization", &header)], "", &["basic"]),
                Err(AuthnError::BadBasic),
                "{header}"
            );
        }
        // Far beyond any token: refused before decoding.
        let huge = format!("Basic {}", "QUFB".repeat(DEFAULT_MAX_TOKEN_BYTES));
        assert_eq!(
            find(&[("authorization", &huge)], "", &["basic"]),
            Err(AuthnError::TooLarge)
        );
    }

    #[test]
    fn query_tokens_are_ignored_unless_configured() {
        assert_eq!(
            find(&[], "access_token=t", &["bearer"]),
            Err(AuthnError::MissingToken)
        );
    }

    #[test]
    fn source_specs_are_checked() {
        assert_eq!(
            TokenSource::parse("header:X-Token"),
            Ok(TokenSource::Header("x-token".into()))
        );
        assert_eq!(TokenSource::parse("basic"), Ok(TokenSource::Basic));
        for bad in [
            "",
            "bearer:x",
            "basic:x",
            "header:",
            "cookie:a b",
            "form:x",
            "header:authorization",
        ] {
            assert!(TokenSource::parse(bad).is_err(), "{bad:?}");
        }
    }
}
