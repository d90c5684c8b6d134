//! Which requests are a person's browser opening a page, the only ones sent to sign in.
//! Everything else (API calls, a page's own `fetch`/XHR, git) gets 401 as before: a
//! redirect to an IdP's HTML login page is no answer to a script.

use crate::request::RequestView;

/// Whether `req` is a browser navigation without credentials: `GET` or `HEAD`, no
/// `Authorization` header, and a top-level page load.
///
/// A browser that sends `Sec-Fetch-Mode` (every current one) is believed: only
/// `navigate` is a page load, so a script's `fetch` that asks for `text/html` is not
/// redirected (the redirect would fail its CORS check anyway). Without the header, an
/// `Accept` that names `text/html` decides, and `X-Requested-With` marks a script.
pub fn is_browser_navigation(req: &RequestView<'_>) -> bool {
    if !(req.method == "GET" || req.method == "HEAD") {
        return false;
    }
    if req.header("authorization").is_some() {
        return false;
    }
    if let Some(mode) = req.header("sec-fetch-mode") {
        return mode.trim().eq_ignore_ascii_case("navigate");
    }
    if req.header("x-requested-with").is_some() {
        return false;
    }
    req.header("accept").is_some_and(accepts_html)
}

/// Whether an `Accept` value lists `text/html` (parameters and case ignored; `*/*`
/// alone is what curl and most API clients send, and is not a page load).
fn accepts_html(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("text/html")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn navigation(method: &str, headers: &[(&str, &str)]) -> bool {
        let headers: std::collections::HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let req = RequestView::http(method, "gerrit.example.com", "/q/status:open", &headers);
        is_browser_navigation(&req)
    }

    const CHROME_ACCEPT: &str =
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

    #[test]
    fn a_browser_opening_a_page_is_a_navigation() {
        assert!(navigation(
            "GET",
            &[("sec-fetch-mode", "navigate"), ("accept", CHROME_ACCEPT)]
        ));
        assert!(navigation("HEAD", &[("sec-fetch-mode", "navigate")]));
        // An older browser without fetch metadata: its Accept decides.
        assert!(navigation("GET", &[("accept", CHROME_ACCEPT)]));
        assert!(navigation("GET", &[("accept", "TEXT/HTML; charset=utf-8")]));
    }

    #[test]
    fn scripts_api_clients_and_git_are_not_navigations() {
        // Gerrit's UI calling its REST API.
        assert!(!navigation(
            "GET",
            &[("sec-fetch-mode", "cors"), ("accept", "application/json")]
        ));
        // A fetch that asks for HTML is still a script.
        assert!(!navigation(
            "GET",
            &[("sec-fetch-mode", "cors"), ("accept", "text/html")]
        ));
        assert!(!navigation(
            "GET",
            &[
                ("x-requested-with", "XMLHttpRequest"),
                ("accept", "text/html")
            ]
        ));
        assert!(!navigation("GET", &[("accept", "application/json")]));
        assert!(!navigation("GET", &[("accept", "*/*")]));
        assert!(!navigation("GET", &[]));
        // git over smart HTTP.
        assert!(!navigation(
            "GET",
            &[("user-agent", "git/2.39.5"), ("accept", "*/*")]
        ));
    }

    #[test]
    fn only_get_and_head_without_credentials_are_navigations() {
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get"] {
            assert!(
                !navigation(method, &[("sec-fetch-mode", "navigate")]),
                "{method}"
            );
        }
        assert!(!navigation(
            "GET",
            &[
                ("sec-fetch-mode", "navigate"),
                ("authorization", "Bearer x")
            ]
        ));
    }
}
