//! Finding the bearer token in the request.

use super::AuthnError;
use crate::request::RequestView;

/// Tokens longer than this are rejected before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The token from `Authorization: Bearer <token>` (scheme matched case-insensitively).
pub fn bearer_token<'a>(req: &RequestView<'a>) -> Result<&'a str, AuthnError> {
    let value = req
        .header("authorization")
        .ok_or(AuthnError::MissingToken)?;
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(AuthnError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthnError::NotBearer);
    }
    let token = rest.trim_start();
    if token.is_empty() {
        return Err(AuthnError::NotBearer);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthnError::TooLarge);
    }
    Ok(token)
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
        let req = RequestView {
            method: "GET",
            host: "h",
            path: "/",
            headers: &headers,
        };
        bearer_token(&req).map(str::to_string)
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

    #[test]
    fn oversized_token_is_rejected_without_parsing() {
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(extract(Some(&big)), Err(AuthnError::TooLarge));
    }
}
