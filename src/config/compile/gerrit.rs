//! `gerrit:`: the REST endpoint, its credentials, the group cache and events.

use super::*;

pub(super) fn compile_gerrit(
    raw: &RawGerrit,
    files: &FileResolver,
    p: &mut Problems,
) -> Option<GroupsConfig> {
    let url = http_url(&raw.url, "gerrit.url", p);
    if raw.username.is_empty() {
        p.add("gerrit.username", "must not be empty");
    } else if HeaderValue::from_str(&raw.username).is_err() {
        p.add(
            "gerrit.username",
            "must be printable ASCII without control characters",
        );
    }
    match &raw.password_file {
        Some(f) if f.as_os_str().is_empty() => p.add("gerrit.password_file", "must not be empty"),
        None if raw.trusted_user_header.is_none() => p.add(
            "gerrit",
            "set `password_file` (HTTP Basic) or `trusted_user_header` (Gerrit with auth.trustContainerAuth), or both",
        ),
        _ => {}
    }
    let trusted_user_header = raw.trusted_user_header.as_deref().and_then(|h| {
        header_name(h)
            .map_err(|e| p.add("gerrit.trusted_user_header", e.to_string()))
            .ok()
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
    });
    if raw.ca_file.is_some() && url.as_ref().is_some_and(|u| u.scheme() != "https") {
        p.add("gerrit.ca_file", "only used with an https `url`");
    }
    if raw.timeout.is_zero() {
        p.add("gerrit.timeout", "must be greater than zero");
    }
    if raw.max_concurrent_requests == 0 {
        p.add("gerrit.max_concurrent_requests", "must be at least 1");
    }
    if raw.retries > 5 {
        p.add(
            "gerrit.retries",
            "at most 5: retries multiply the time a check can take",
        );
    }
    if raw.password_reload_interval.is_zero() {
        p.add(
            "gerrit.password_reload_interval",
            "must be greater than zero",
        );
    }
    if raw.max_response_bytes < 1024 {
        p.add(
            "gerrit.max_response_bytes",
            "must be at least 1024: a user in a few groups already needs that",
        );
    }
    if raw.cache_max_users == 0 {
        p.add("gerrit.cache_max_users", "must be greater than zero");
    }
    if let Some(events) = &raw.events {
        if events.all_users_project.is_empty() {
            p.add("gerrit.events.all_users_project", "must not be empty");
        }
    }
    Some(GroupsConfig::Gerrit(Box::new(GerritConfig {
        settings: GerritSettings {
            base: url?,
            username: raw.username.clone(),
            password_file: raw.password_file.as_deref().map(|f| files.resolve(f)),
            password_reload_interval: raw.password_reload_interval,
            trusted_user_header,
            ca_file: raw.ca_file.as_deref().map(|f| files.resolve(f)),
            timeout: raw.timeout,
            retries: raw.retries,
            retry_backoff: raw.retry_backoff,
            max_concurrent_requests: raw.max_concurrent_requests,
            max_response_bytes: raw.max_response_bytes,
        },
        events: raw.events.as_ref().map(|e| GerritEventsConfig {
            token_file: e.token_file.as_deref().map(|f| files.resolve(f)),
            all_users_project: e.all_users_project.clone(),
        }),
        cache: CacheSettings {
            ttl: raw.cache_ttl,
            not_found_ttl: raw.not_found_ttl,
            max_users: raw.cache_max_users,
            max_staleness: raw.max_staleness,
        },
    })))
}
