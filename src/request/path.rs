//! The path routes are matched against: the request path in the normal form of RFC 3986
//! (section 6.2.2), refusing what an upstream could read as another path.
//!
//! Envoy passes the path on as the client wrote it (unless `normalize_path` is on), and
//! the upstream decodes it: `/a/projects/team%2Da` is team-a's project to Gerrit, but a
//! route written `/a/projects/team-a` would not match the raw text. Percent-encoded
//! unreserved characters (letters, digits, `-._~`) mean the same as the characters
//! themselves, so they are decoded; other escapes are kept, their hex digits upper-cased.
//! `%2F` in particular stays: Gerrit's REST API reads `team-b%2Fsub` as one segment, the
//! project `team-b/sub` (and change ids carry such names), so decoding it would change
//! which segment is which. `segment_prefix` routes treat `%2F` as a boundary instead.
//!
//! Refused (HTTP 400), because some upstream resolves them elsewhere: `.` and `..`
//! segments however written (Jetty also reads `..;` as `..`), `;` path parameters (which
//! servlet containers strip before routing), empty segments, backslashes, control
//! characters and malformed escapes; these are looked for in the fully decoded path too,
//! so `x%2F..%2Fy` is refused like `x/../y`.

use std::borrow::Cow;

/// Why a path is refused before any route is matched (HTTP 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `.` or `..` segment (plain, percent-encoded, or followed by `;`): it names
    /// another path.
    #[error("the path contains `.` or `..` segments")]
    DotSegment,
    /// `//` inside the path: upstreams differ on whether it is one separator.
    #[error("the path contains an empty segment (`//`)")]
    EmptySegment,
    /// `\` (plain or `%5C`): some servers read it as `/`.
    #[error("the path contains a backslash")]
    Backslash,
    /// A `;` path parameter, which servlet containers strip before routing.
    #[error("the path contains `;` (a path parameter)")]
    PathParameter,
    /// `%` not followed by two hex digits, or an escape that decodes to invalid UTF-8.
    #[error("the path contains an invalid percent-encoding")]
    BadEscape,
    /// A control character (`%00`, `%0D`, ...), which no upstream should be handed.
    #[error("the path contains a control character")]
    ControlCharacter,
}

/// The path (without query) in RFC 3986 normal form, as routes see it; borrowed when
/// nothing is escaped, the common case. Refused when an upstream could read it as another
/// path (see the module doc).
pub fn routing_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.contains('%') {
        check_decoded(path, true)?;
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut routing = Vec::with_capacity(bytes.len());
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&h| hex(h));
                let lo = bytes.get(i + 2).and_then(|&l| hex(l));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                decoded.push(v);
                if is_unreserved(v) {
                    routing.push(v);
                } else {
                    routing.extend_from_slice(&[b'%', HEX[usize::from(hi)], HEX[usize::from(lo)]]);
                }
                i += 3;
            }
            _ => {
                routing.push(b);
                decoded.push(b);
                i += 1;
            }
        }
    }
    let decoded = std::str::from_utf8(&decoded).map_err(|_| PathError::BadEscape)?;
    check_decoded(decoded, false)?;
    // Only ASCII was rewritten, so the routing form is as valid UTF-8 as the input.
    String::from_utf8(routing)
        .map(Cow::Owned)
        .map_err(|_| PathError::BadEscape)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 3986 unreserved characters: an escape of one means the character itself.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Checks on the decoded path, where `%2e`, `%2F`, `%3B` and `%5C` have become what the
/// upstream sees (`raw`: the path has no escapes, and a `;` in it is a path parameter).
/// One pass over the bytes: it runs on every Check.
fn check_decoded(path: &str, raw: bool) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    // Where the current segment starts: after a `/` (what precedes the first `/`, empty
    // for every path Envoy sends, is no segment).
    let mut segment: Option<usize> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' => {
                if let Some(start) = segment {
                    check_segment(&bytes[start..i], false)?;
                }
                segment = Some(i + 1);
            }
            b'\\' => return Err(PathError::Backslash),
            b';' if raw => return Err(PathError::PathParameter),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ => {}
        }
    }
    match segment {
        Some(start) => check_segment(&bytes[start..], true),
        None => Ok(()),
    }
}

/// A segment that is `.` or `..` (also before a `;`: `..;x` is `..` to a servlet
/// container), or empty where it is not the last (a trailing `/` is an ordinary path,
/// `/a/accounts/self/groups/`; `//` is not).
fn check_segment(segment: &[u8], last: bool) -> Result<(), PathError> {
    match segment {
        [] if last => Ok(()),
        [] => Err(PathError::EmptySegment),
        [b'.'] | [b'.', b'.'] | [b'.', b';', ..] | [b'.', b'.', b';', ..] => {
            Err(PathError::DotSegment)
        }
        _ => Ok(()),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/a/projects/team-a/branches",
            "/a/accounts/self/groups/",
            "",
        ] {
            assert!(
                matches!(routing_path(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p}"
            );
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_upper_case() {
        for (sent, seen) in [
            ("/a/projects/team%2Da", "/a/projects/team-a"),
            ("/%61/%70rojects/%7e%5F", "/a/projects/~_"),
            ("/a/projects/team-b%2Fsub", "/a/projects/team-b%2Fsub"),
            ("/a/projects/team-b%2fsub", "/a/projects/team-b%2Fsub"),
            ("/a/%252e%252e/x", "/a/%252e%252e/x"),
            ("/c/p/+/1/a%20b%3a", "/c/p/+/1/a%20b%3A"),
            ("/a/%C3%A9", "/a/%C3%A9"),
        ] {
            assert_eq!(routing_path(sent).as_deref(), Ok(seen), "{sent}");
        }
    }

    #[test]
    fn what_an_upstream_could_resolve_elsewhere_is_refused_with_its_reason() {
        use PathError::*;
        for (path, why) in [
            ("/a/../b", DotSegment),
            ("/a/.", DotSegment),
            ("/a/%2e%2E/b", DotSegment),
            ("/a/.%2e", DotSegment),
            ("/a/x%2F..%2Fy", DotSegment),
            ("/a/..%3B/b", DotSegment),
            ("/a/.%3bx/b", DotSegment),
            ("/a/..;/b", PathParameter),
            ("/a;x/b", PathParameter),
            ("//a", EmptySegment),
            ("/a//b", EmptySegment),
            ("/a/%2F/b", EmptySegment),
            ("/a\\b", Backslash),
            ("/a/%5c..", Backslash),
            ("/a/%2", BadEscape),
            ("/a/%g0", BadEscape),
            ("/a/%ff", BadEscape),
            ("/a/x%2F%2Fy", EmptySegment),
            ("/a/%00", ControlCharacter),
            ("/a/%0d%0a", ControlCharacter),
            ("/a/%7F", ControlCharacter),
        ] {
            assert_eq!(routing_path(path), Err(why), "{path}");
        }
        for ok in [
            "/a/..b",
            "/a/b..",
            "/a/...",
            "/a/.well-known/x",
            "/a/%2e%2e%2e",
            "/a/b/",
        ] {
            assert!(routing_path(ok).is_ok(), "{ok}");
        }
    }

    /// The definition, written plainly with strings: decode every escape, split on `/`.
    fn by_definition(path: &str) -> Option<String> {
        if path.contains(['\\', ';']) {
            return None;
        }
        let (mut routing, mut decoded) = (Vec::new(), Vec::new());
        let mut rest = path.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'%' {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                let v = u8::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| !hex.contains('+'))?;
                decoded.push(v);
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    routing.push(v);
                } else {
                    routing.extend(format!("%{v:02X}").bytes());
                }
                rest = &tail[2..];
            } else {
                routing.push(b);
                decoded.push(b);
                rest = tail;
            }
        }
        let decoded = String::from_utf8(decoded).ok()?;
        if decoded.chars().any(|c| c == '\\' || c.is_ascii_control()) {
            return None;
        }
        let segments: Vec<&str> = decoded.split('/').skip(1).collect();
        for (i, segment) in segments.iter().enumerate() {
            let name = segment.split(';').next().unwrap_or_default();
            if (segment.is_empty() && i + 1 < segments.len()) || name == "." || name == ".." {
                return None;
            }
        }
        String::from_utf8(routing).ok()
    }

    #[test]
    fn routing_paths_agree_with_the_definition_for_every_short_path() {
        let alphabet = ['.', '%', '2', 'e', 'F', '/', ';', 'a', '5', 'C'];
        let mut paths = vec![String::new()];
        for _ in 0..6 {
            paths = paths
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            for path in &paths {
                let path = format!("/{path}");
                assert_eq!(
                    routing_path(&path).ok().map(Cow::into_owned),
                    by_definition(&path),
                    "{path:?}"
                );
            }
        }
    }
}
