//! Envoy header options for the upstream header changes.

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::google::protobuf::BoolValue;

/// An Envoy header option that sets `key` to `value`, replacing whatever the client sent.
///
/// `append` is deprecated in favour of `append_action`, but it is what Envoy's ext_authz
/// reads for `OkHttpResponse.headers`; setting it explicitly leaves no room for a default
/// that appends: an appended value would be comma-joined onto the client's, letting it
/// forge identity.
pub fn overwrite(key: String, value: String) -> HeaderValueOption {
    option(key, value, false)
}

/// An Envoy header option that adds `key: value` as a line of its own (response cookies:
/// each `Set-Cookie` must stay a separate line).
pub fn append(key: String, value: String) -> HeaderValueOption {
    option(key, value, true)
}

#[allow(deprecated)]
fn option(key: String, value: String, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key,
            value,
            ..Default::default()
        }),
        append: Some(BoolValue { value: append }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(deprecated)]
    fn an_overwrite_never_appends_to_what_the_client_sent() {
        let o = overwrite("x-forwarded-user".into(), "alice".into());
        assert_eq!(o.append, Some(BoolValue { value: false }));
        let h = o.header.unwrap();
        assert_eq!(
            (h.key.as_str(), h.value.as_str()),
            ("x-forwarded-user", "alice")
        );
    }
}
