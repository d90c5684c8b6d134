//! mesh-authz's own cookies in the `Cookie` header: a session cookie split into chunks
//! and put back together, and the header with mesh-authz's own cookies taken
//! out before it goes upstream.
//!
//! A sealed session that fits in one cookie is `NAME=SEALED`. A longer one is split:
//! `NAME=<count>.<part 0>`, `NAME-1=<part 1>`, … up to [`MAX_CHUNKS`]. The parts are
//! joined and opened as one sealed value, so a missing, reordered or foreign chunk fails
//! the seal like any other change. Sealed values are base64url, which has no `.`.

use crate::request::cookie::{split2, CookieJar, Lookup};
use std::borrow::Cow;

/// Most bytes of one cookie's value: browsers keep at least 4,096 bytes of name, value and
/// attributes per cookie (RFC 6265, 6.1).
pub const CHUNK_BYTES: usize = 3_800;
/// Most chunks of one session: 4 × 3,800 bytes is far more than any session needs, and
/// bounds what a request can make mesh-authz put together.
pub const MAX_CHUNKS: usize = 4;
/// Why a chunked session could not be put back together.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum ChunkError {
    /// A cookie of the session was sent twice.
    #[error("a session cookie was sent more than once")]
    Repeated,
    /// The chunk count is not a number from 2 to the limit.
    #[error("the session cookie's chunk count is not valid")]
    BadCount,
    /// A chunk the first one announces was not sent.
    #[error("a chunk of the session cookie is missing")]
    Missing,
}

/// The sealed session value in the jar under `name`, put back together from its chunks:
/// `Ok(None)` when there is none, and how many cookies it took.
pub fn read_chunked<'a>(
    jar: &CookieJar<'a>,
    name: &str,
) -> Result<Option<(Cow<'a, str>, usize)>, ChunkError> {
    let first = match jar.get(name) {
        Lookup::Absent => return Ok(None),
        Lookup::Repeated => return Err(ChunkError::Repeated),
        Lookup::One(v) => v,
    };
    let Some((count, part0)) = first.split_once('.') else {
        return Ok(Some((Cow::Borrowed(first), 1)));
    };
    let count: usize = match count.parse() {
        Ok(n) if (2..=MAX_CHUNKS).contains(&n) && count.len() == 1 => n,
        _ => return Err(ChunkError::BadCount),
    };
    let mut sealed = String::with_capacity(count * CHUNK_BYTES);
    sealed.push_str(part0);
    for i in 1..count {
        match jar.get(&chunk_name(name, i)) {
            Lookup::One(part) => sealed.push_str(part),
            Lookup::Absent => return Err(ChunkError::Missing),
            Lookup::Repeated => return Err(ChunkError::Repeated),
        }
    }
    Ok(Some((Cow::Owned(sealed), count)))
}

/// The name of chunk `i` (from 1) of cookie `name`.
pub fn chunk_name(name: &str, i: usize) -> String {
    format!("{name}-{i}")
}

/// Attributes of the cookies mesh-authz sets.
#[derive(Debug, Clone, Copy)]
pub struct CookieAttributes {
    /// `Max-Age` in seconds; 0 deletes the cookie.
    pub max_age: u64,
}

/// `Set-Cookie` values that store `sealed` under `name`, split into chunks when it does
/// not fit one cookie, and delete chunks a longer earlier value left
/// (`previous_chunks`, as [`read_chunked`] reported). `None` if even [`MAX_CHUNKS`]
/// chunks cannot hold it.
pub fn set_chunked(
    name: &str,
    sealed: &str,
    attrs: CookieAttributes,
    previous_chunks: usize,
) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let count = if sealed.len() <= CHUNK_BYTES {
        out.push(set_cookie(name, sealed, attrs));
        1
    } else {
        // The first chunk also carries `<count>.`.
        let count = sealed.len().div_ceil(CHUNK_BYTES);
        if count > MAX_CHUNKS {
            return None;
        }
        // Sealed values are ASCII, so any byte index is a char boundary.
        let parts: Vec<&str> = (0..count)
            .map(|i| &sealed[i * CHUNK_BYTES..((i + 1) * CHUNK_BYTES).min(sealed.len())])
            .collect();
        out.push(set_cookie(name, &format!("{count}.{}", parts[0]), attrs));
        for (i, part) in parts.iter().enumerate().skip(1) {
            out.push(set_cookie(&chunk_name(name, i), part, attrs));
        }
        count
    };
    for i in count..previous_chunks.min(MAX_CHUNKS) {
        out.push(delete_cookie(&chunk_name(name, i)));
    }
    Some(out)
}

/// `Set-Cookie` values deleting `name` and every chunk it may have had.
pub fn delete_chunked(name: &str) -> Vec<String> {
    let mut out = vec![delete_cookie(name)];
    out.extend((1..MAX_CHUNKS).map(|i| delete_cookie(&chunk_name(name, i))));
    out
}

/// A `Set-Cookie` value: host-only, every path, HTTPS only, out of scripts' reach, and
/// sent on top-level navigations from other sites (the IdP's redirect back) but not on
/// their subrequests.
pub fn set_cookie(name: &str, value: &str, attrs: CookieAttributes) -> String {
    set_cookie_at(name, value, "/", attrs)
}

/// A `Set-Cookie` value like [`set_cookie`]'s, sent back by the browser only to `path`.
pub fn set_cookie_at(name: &str, value: &str, path: &str, attrs: CookieAttributes) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
        attrs.max_age
    )
}

/// A `Set-Cookie` value that deletes `name`.
pub fn delete_cookie(name: &str) -> String {
    set_cookie(name, "", CookieAttributes { max_age: 0 })
}

/// The `Cookie` header without the cookies `ours` claims, for the upstream: `None` when
/// none of them was sent (the header goes up unchanged), `Some("")` when no other cookie
/// remains (the header is removed). Pairs are split at `;`, and at `,` where Envoy joined
/// several `Cookie` lines; a value with a comma of its own (not RFC 6265, but seen) goes
/// up as it came unless a cookie of ours was joined onto it.
pub fn without_ours(header: &str, ours: impl Fn(&str) -> bool) -> Option<String> {
    let is_ours = |pair: &str| ours(cookie_name(pair));
    // Most requests carry none of ours: look before building anything.
    if !split2(header, b';', b',').any(is_ours) {
        return None;
    }
    let mut out = String::with_capacity(header.len());
    for piece in header.split(';') {
        // Each `;` piece keeps its other `,`-joined cookies, trimmed as a whole.
        let before = out.len();
        if before > 0 {
            out.push_str("; ");
        }
        let start = out.len();
        for (i, pair) in piece.split(',').filter(|p| !is_ours(p)).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(pair);
        }
        let group = &out[start..];
        let (lead, kept) = (group.len() - group.trim_start().len(), group.trim().len());
        if kept == 0 {
            out.truncate(before);
        } else {
            out.truncate(start + lead + kept);
            out.drain(start..start + lead);
        }
    }
    Some(out)
}

/// The name of a `name=value` pair (the whole text without `=`), trimmed.
fn cookie_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(n, _)| n).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTRS: CookieAttributes = CookieAttributes { max_age: 3600 };

    /// The `Cookie` header a browser would send back for these `Set-Cookie` values.
    fn sent_back(set: &[String]) -> String {
        set.iter()
            .filter(|c| !c.contains("Max-Age=0"))
            .map(|c| c.split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn a_cookie_sent_twice_is_neither_value() {
        let jar = CookieJar::parse("s=1; other=2; s=1");
        assert_eq!(jar.get("s"), Lookup::Repeated);
        assert_eq!(read_chunked(&jar, "s"), Err(ChunkError::Repeated));
    }

    #[test]
    fn a_short_value_is_one_cookie_and_reads_back() {
        let set = set_chunked("s", "abc", ATTRS, 0).unwrap();
        assert_eq!(
            set,
            ["s=abc; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"]
        );
        let header = sent_back(&set);
        let jar = CookieJar::parse(&header);
        assert_eq!(read_chunked(&jar, "s"), Ok(Some((Cow::Borrowed("abc"), 1))));
    }

    #[test]
    fn a_long_value_is_split_into_chunks_that_read_back_as_one() {
        let sealed: String = (0..CHUNK_BYTES * 2 + 10)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        let set = set_chunked("s", &sealed, ATTRS, 0).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set.iter().all(|c| c.len() <= 4096));
        assert!(set[0].starts_with("s=3."));
        assert!(set[1].starts_with("s-1="));
        let header = sent_back(&set);
        let jar = CookieJar::parse(&header);
        assert_eq!(read_chunked(&jar, "s"), Ok(Some((Cow::Owned(sealed), 3))));
    }

    #[test]
    fn a_missing_chunk_or_a_bad_count_is_no_session() {
        let sealed = "x".repeat(CHUNK_BYTES + 1);
        let set = set_chunked("s", &sealed, ATTRS, 0).unwrap();
        let first_only = sent_back(&set[..1]);
        assert_eq!(
            read_chunked(&CookieJar::parse(&first_only), "s"),
            Err(ChunkError::Missing)
        );
        for bad in ["s=1.x", "s=9.x", "s=x.y", "s=.y", "s=02.x; s-1=y", "s=5.x"] {
            assert_eq!(
                read_chunked(&CookieJar::parse(bad), "s"),
                Err(ChunkError::BadCount),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_value_no_four_chunks_can_hold_is_refused() {
        let sealed = "x".repeat(CHUNK_BYTES * MAX_CHUNKS + 1);
        assert_eq!(set_chunked("s", &sealed, ATTRS, 0), None);
    }

    #[test]
    fn a_shorter_value_deletes_the_chunks_a_longer_one_left() {
        let set = set_chunked("s", "short", ATTRS, 3).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set[1].starts_with("s-1=; ") && set[1].contains("Max-Age=0"));
        assert!(set[2].starts_with("s-2=; ") && set[2].contains("Max-Age=0"));
    }

    #[test]
    fn deleting_a_session_deletes_every_chunk_it_may_have() {
        let set = delete_chunked("s");
        assert_eq!(set.len(), MAX_CHUNKS);
        assert!(set.iter().all(|c| c.contains("Max-Age=0")));
    }

    #[test]
    fn the_upstream_header_keeps_other_cookies_and_drops_ours() {
        let ours = |n: &str| n == "s" || n.starts_with("s-");
        assert_eq!(
            without_ours("a=1; s=2.x; b=2; s-1=y", ours),
            Some("a=1; b=2".into())
        );
        assert_eq!(without_ours("s=x", ours), Some(String::new()));
        assert_eq!(without_ours("a=1; b=2", ours), None);
        assert_eq!(without_ours("a=1;s", ours), Some("a=1".into()));
    }

    #[test]
    fn cookie_lines_envoy_joined_with_commas_are_read_and_stripped_too() {
        let ours = |n: &str| n == "s" || n.starts_with("s-");
        let jar = CookieJar::parse("a=1,s=sealed");
        assert_eq!(jar.get("s"), Lookup::One("sealed"));
        assert_eq!(
            without_ours("a=1,s=sealed; b=2", ours),
            Some("a=1; b=2".into())
        );
        // A value with a comma of its own is left as it came.
        assert_eq!(without_ours("prefs=a,b; c=1", ours), None);
        assert_eq!(
            without_ours("prefs=a,b; s=x", ours),
            Some("prefs=a,b".into())
        );
    }

    /// `without_ours` as first written: plain, and slow on long headers.
    fn without_ours_plainly(header: &str, ours: impl Fn(&str) -> bool) -> Option<String> {
        let mut kept: Vec<String> = Vec::new();
        let mut removed = false;
        for piece in header.split(';') {
            let parts: Vec<&str> = piece.split(',').collect();
            let before = parts.len();
            let rest: Vec<&str> = parts
                .into_iter()
                .filter(|p| !ours(cookie_name(p)))
                .collect();
            removed |= rest.len() != before;
            let rest = rest.join(",");
            if !rest.trim().is_empty() {
                kept.push(rest.trim().to_string());
            }
        }
        removed.then(|| kept.join("; "))
    }

    proptest::proptest! {
        #[test]
        fn without_ours_keeps_what_the_plain_definition_keeps(
            header in "[as=1 ;,\t-]{0,40}"
        ) {
            let ours = |n: &str| n == "s" || n.starts_with("s-");
            proptest::prop_assert_eq!(
                without_ours(&header, ours),
                without_ours_plainly(&header, ours)
            );
        }
    }
}
