//! Every structural problem of a file that does not deserialize, at once.
//!
//! serde stops at the first error. When the whole file fails, each section, and each
//! issuer and route, is read again on its own from the parsed YAML, so that a file with a
//! wrong duration in `server`, a missing field in `issuers[1]` and an unknown field in
//! `routes[3]` shows all three in one run (the first error of each piece).

use super::yaml_path;
use crate::config::schema::{
    RawAudit, RawBrowserSessions, RawGerrit, RawGrants, RawIssuer, RawRoute, RawServer,
    RawTelemetry, RawTokenCache,
};
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::BTreeMap;

/// `(path, reason)` for every unknown field and every piece that does not deserialize.
pub fn problems(text: &str) -> Vec<(String, String)> {
    let value: Value = match serde_yaml::from_str(text) {
        Ok(value) => value,
        Err(e) => return vec![(String::new(), e.to_string())],
    };
    let map = match value {
        Value::Mapping(map) => map,
        Value::Null => return Vec::new(),
        _ => {
            return vec![(
                String::new(),
                "the config is a mapping of sections (`server`, `issuers`, `routes`, ...)".into(),
            )]
        }
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let Some(key) = key.as_str().map(str::to_string) else {
            out.push((String::new(), format!("{key:?} is not a section name")));
            continue;
        };
        match key.as_str() {
            "server" => piece::<RawServer>(&key, value, &mut out),
            "issuers" => each::<RawIssuer>(&key, value, &mut out),
            "gerrit" => piece::<RawGerrit>(&key, value, &mut out),
            "static_groups" => piece::<BTreeMap<String, Vec<String>>>(&key, value, &mut out),
            "routes" => each::<RawRoute>(&key, value, &mut out),
            "token_cache" => piece::<RawTokenCache>(&key, value, &mut out),
            "max_token_bytes" => piece::<usize>(&key, value, &mut out),
            "audit" => piece::<RawAudit>(&key, value, &mut out),
            "browser_sessions" => piece::<RawBrowserSessions>(&key, value, &mut out),
            "grants" => piece::<RawGrants>(&key, value, &mut out),
            "telemetry" => piece::<RawTelemetry>(&key, value, &mut out),
            _ => out.push((key, "unknown field".into())),
        }
    }
    out
}

/// A list section: each element on its own.
fn each<T: DeserializeOwned>(path: &str, value: Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.into_iter().enumerate() {
                piece::<T>(&format!("{path}[{i}]"), item, out);
            }
        }
        other => piece::<Vec<T>>(path, other, out),
    }
}

/// One piece: its unknown fields, and its first error with the field it is at.
fn piece<T: DeserializeOwned>(path: &str, value: Value, out: &mut Vec<(String, String)>) {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let result: Result<T, _> = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(value, &mut track),
        |p| unknown.push(yaml_path(&p)),
    );
    for field in unknown {
        out.push((join(path, &field), "unknown field".into()));
    }
    if let Err(e) = result {
        let at = track.path().to_string();
        let at = if at == "." { String::new() } else { at };
        out.push((join(path, &at), with_hint(&e.to_string())));
    }
}

fn join(path: &str, rest: &str) -> String {
    match (path.is_empty(), rest.is_empty()) {
        (_, true) => path.to_string(),
        (true, false) => rest.to_string(),
        (false, false) if rest.starts_with('[') => format!("{path}{rest}"),
        (false, false) => format!("{path}.{rest}"),
    }
}

/// serde's message, with what to write instead where that is not obvious from it.
pub fn with_hint(message: &str) -> String {
    if message.contains("expected a duration") {
        format!("{message}: write a duration with its unit, such as `30s`, `500ms` or `5m`")
    } else {
        message.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_broken_piece_is_reported_with_its_field() {
        let text = "server:\n  drain_delay: 5\nissuers:\n  - issuer: https://a\n    audiences: [x]\n    jwks: {url: https://a/k}\n    bogus: 1\n    leeway: 30\n  - audiences: [y]\n    jwks: {url: https://b/k}\nroutes:\n  - name: a\n    alow: public\n  - name: b\n    allow: public\n    match: {methods: GET}\nmystery: 1\n";
        let found = problems(text);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "server.drain_delay",
                "issuers[0].bogus",
                "issuers[0].leeway",
                "issuers[1]",
                "routes[0].alow",
                "routes[0]",
                "routes[1].match.methods",
                "mystery",
            ],
            "{found:#?}"
        );
        assert!(found[0].1.contains("such as `30s`"), "{found:#?}");
        assert!(found[3].1.contains("missing field `issuer`"), "{found:#?}");
    }
}
