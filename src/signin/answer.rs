//! What mesh-authz answers a browser itself, instead of passing the request upstream: a
//! redirect (to the IdP, back to the page, out to the IdP's sign-out) or a short HTML page
//! saying what went wrong. Never cached: each carries `Cache-Control: no-store`.

/// An answer mesh-authz gives the browser directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status: 302, or 4xx/5xx for a page.
    pub status: u16,
    /// `Location`, for a redirect.
    pub location: Option<String>,
    /// `Set-Cookie` values.
    pub set_cookies: Vec<String>,
    /// The HTML page, for an error.
    pub page: Option<String>,
    /// A short stable label for metrics and the audit log (`sign_in`, `signed_in`,
    /// `callback_state_mismatch`, ...).
    pub reason: &'static str,
}

impl Answer {
    /// A 302 to `location`.
    pub fn redirect(location: String, set_cookies: Vec<String>, reason: &'static str) -> Self {
        Answer {
            status: 302,
            location: Some(location),
            set_cookies,
            page: None,
            reason,
        }
    }

    /// An HTML page with `status`, a title and one paragraph of explanation (escaped).
    pub fn page(
        status: u16,
        title: &str,
        message: &str,
        set_cookies: Vec<String>,
        reason: &'static str,
    ) -> Self {
        Answer {
            status,
            location: None,
            set_cookies,
            page: Some(html_page(title, message)),
            reason,
        }
    }
}

fn html_page(title: &str, message: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title></head>\n<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
         <h1>{title}</h1>\n<p id=\"message\">{message}</p>\n\
         <p><a href=\"/\">Start again</a></p>\n</body></html>\n",
        title = escape(title),
        message = escape(message),
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_escapes_what_it_is_told() {
        let answer = Answer::page(
            400,
            "Sign-in failed",
            "the IdP said <script>alert(1)</script> & \"more\"",
            vec![],
            "test",
        );
        let page = answer.page.unwrap();
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;more&quot;"));
        assert!(!page.contains("<script>"));
        assert!(page.starts_with("<!doctype html>"));
    }
}
