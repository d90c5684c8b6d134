//! What mesh-authz's own HTTP requests (to the IdP, to Gerrit) have in common: how their
//! failures read in logs and `validate`.

/// A reqwest error as an operator needs it: reqwest's "error sending request" followed by
/// the cause below it (connection refused, DNS, the TLS certificate's issuer), without
/// the URL (the caller names what was fetched).
pub fn error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = reqwest::get(format!("http://127.0.0.1:{port}/keys"))
            .await
            .unwrap_err();
        let text = error_text(e);
        assert!(text.contains("Connection refused"), "{text}");
        assert!(!text.contains("/keys"), "{text}");
    }
}
