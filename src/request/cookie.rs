//! The `Cookie` header, parsed once with bounded work. Both the token sources
//! (`cookie:NAME`) and browser sign-in read cookies through it, so both refuse a cookie
//! sent twice the same way.

/// Most `name=value` pairs read from one `Cookie` header; further ones are ignored, so a
/// header of many cookies costs bounded work.
pub const MAX_PAIRS: usize = 128;

/// One cookie name's presence in the header.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Lookup<'a> {
    /// Not sent.
    Absent,
    /// Sent once, with this value.
    One(&'a str),
    /// Sent more than once: whichever a browser meant, none is trusted (a sibling
    /// subdomain can add a cookie of the same name).
    Repeated,
}

/// The cookies of one request, parsed once.
#[derive(Debug, Default)]
pub struct CookieJar<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> CookieJar<'a> {
    /// Parses a `Cookie` header (`a=1; b=2`). Envoy joins an HTTP/2 browser's cookie
    /// lines with `; `, but several HTTP/1.1 `Cookie` lines with `,`, so both separate
    /// pairs (RFC 6265 cookie values hold neither). Pairs without `=` are skipped; names
    /// and values are trimmed of spaces.
    pub fn parse(header: &'a str) -> Self {
        let pairs = split2(header, b';', b',')
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                let name = name.trim();
                (!name.is_empty()).then(|| (name, value.trim()))
            })
            .take(MAX_PAIRS)
            .collect();
        CookieJar { pairs }
    }

    /// The value of cookie `name`.
    pub fn get(&self, name: &str) -> Lookup<'a> {
        let mut found = Lookup::Absent;
        for (n, v) in &self.pairs {
            if *n == name {
                if found != Lookup::Absent {
                    return Lookup::Repeated;
                }
                found = Lookup::One(v);
            }
        }
        found
    }

    /// The names of the cookies that start with `prefix`.
    pub fn names_starting_with<'s>(
        &'s self,
        prefix: &'s str,
    ) -> impl Iterator<Item = &'a str> + 's {
        self.pairs
            .iter()
            .map(|(n, _)| *n)
            .filter(move |n| n.starts_with(prefix))
    }
}

/// `text` split at every `a` and every `b` (ASCII, so each piece is a `str`). memchr
/// finds them; `str::split` with a set of chars looks at one char at a time, which cost
/// more than the rest of reading a session.
pub fn split2(text: &str, a: u8, b: u8) -> impl Iterator<Item = &str> {
    debug_assert!(a.is_ascii() && b.is_ascii());
    let mut start = 0;
    memchr::memchr2_iter(a, b, text.as_bytes())
        .chain(std::iter::once(text.len()))
        .map(move |end| {
            let piece = text.get(start..end).unwrap_or_default();
            start = end + 1;
            piece
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_header_parses_into_names_and_values() {
        let jar = CookieJar::parse("a=1; b = 2 ;c=x=y; flag; =nameless; d=");
        assert_eq!(jar.get("a"), Lookup::One("1"));
        assert_eq!(jar.get("b"), Lookup::One("2"));
        assert_eq!(jar.get("c"), Lookup::One("x=y"));
        assert_eq!(jar.get("d"), Lookup::One(""));
        assert_eq!(jar.get("flag"), Lookup::Absent);
        assert_eq!(jar.get("e"), Lookup::Absent);
    }

    #[test]
    fn cookie_lines_joined_with_commas_are_separate_cookies() {
        let jar = CookieJar::parse("a=1, b=2;c=3,d=4");
        for (name, value) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
            assert_eq!(jar.get(name), Lookup::One(value));
        }
    }

    #[test]
    fn a_cookie_sent_twice_is_neither_value() {
        let jar = CookieJar::parse("s=1; other=2; s=1");
        assert_eq!(jar.get("s"), Lookup::Repeated);
        assert_eq!(jar.get("other"), Lookup::One("2"));
    }

    #[test]
    fn only_the_first_pairs_of_a_huge_header_are_read() {
        let header: String = (0..10_000).map(|i| format!("c{i}=v; ")).collect();
        let jar = CookieJar::parse(&header);
        assert_eq!(jar.get("c0"), Lookup::One("v"));
        assert_eq!(jar.get(&format!("c{}", MAX_PAIRS - 1)), Lookup::One("v"));
        assert_eq!(jar.get(&format!("c{MAX_PAIRS}")), Lookup::Absent);
    }

    #[test]
    fn split2_splits_as_str_split_does() {
        for text in ["", ";", "a", "a;b,c", ";a,,b;", "é;ü,x", ",,,"] {
            let ours: Vec<&str> = split2(text, b';', b',').collect();
            let std: Vec<&str> = text.split([';', ',']).collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }
}
