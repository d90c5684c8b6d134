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
    /// The whole value of a named header (lower-case name).
    Header(String),
    /// A named cookie.
    Cookie(String),
    /// A query parameter. Only when configured: tokens in URLs end up in access logs.
    Query(String),
}

impl TokenSource {
    /// Parses `bearer`, `header:NAME`, `cookie:NAME` or `query:NAME`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let bad =
            || format!("{spec:?} is not `bearer`, `header:NAME`, `cookie:NAME` or `query:NAME`");
        if spec == "bearer" {
            return Ok(TokenSource::Bearer);
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
            TokenSource::Bearer => match req.header("authorization") {
                Some(value) => Some(Cow::Borrowed(bearer(value)?)),
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

fn bearer(value: &str) -> Result<&str, AuthnError> {
    let (scheme, rest) = value.trim().split_once(' ').ok_or(AuthnError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthnError::NotBearer);
    }
    let token = rest.trim_start();
    if token.is_empty() {
        return Err(AuthnError::NotBearer);
    }
    Ok(token)
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
        for bad in [
            "",
            "bearer:x",
            "header:",
            "cookie:a b",
            "form:x",
            "header:authorization",
        ] {
            assert!(TokenSource::parse(bad).is_err(), "{bad:?}");
        }
    }
}
