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

/// What reading a file piece by piece found.
#[derive(Debug, Default)]
pub struct Reading {
    /// `(path, reason)` for every unknown field and every piece that does not deserialize.
    pub problems: Vec<(String, String)>,
    /// The file without the pieces that do not deserialize, so that what the rest says
    /// can be checked in the same run; `None` when the file is not YAML or not a mapping.
    pub salvaged: Option<Value>,
    /// For `issuers` and `routes`: the index in the file of each element kept, by its
    /// index in [`Reading::salvaged`].
    pub kept: BTreeMap<&'static str, Vec<usize>>,
}

impl Reading {
    /// `routes[2].match` of the salvaged file as the file numbers it (`routes[4].match`).
    pub fn original_path(&self, path: &str) -> String {
        for (section, kept) in &self.kept {
            let Some(rest) = path.strip_prefix(section).and_then(|r| r.strip_prefix('[')) else {
                continue;
            };
            let Some((index, tail)) = rest.split_once(']') else {
                continue;
            };
            if let Some(original) = index.parse::<usize>().ok().and_then(|i| kept.get(i)) {
                return format!("{section}[{original}]{tail}");
            }
        }
        path.to_string()
    }
}

/// Reads `text` piece by piece: every structural problem, and the rest of the file.
pub fn read(text: &str) -> Reading {
    let mut reading = Reading::default();
    let value: Value = match serde_yaml::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            reading.problems.push((String::new(), e.to_string()));
            return reading;
        }
    };
    let map = match value {
        Value::Mapping(map) => map,
        Value::Null => return reading,
        _ => {
            reading.problems.push((
                String::new(),
                "the config is a mapping of sections (`server`, `issuers`, `routes`, ...)".into(),
            ));
            return reading;
        }
    };
    let out = &mut reading.problems;
    let mut salvaged = serde_yaml::Mapping::new();
    for (key, value) in map {
        let Some(name) = key.as_str().map(str::to_string) else {
            out.push((String::new(), format!("{key:?} is not a section name")));
            continue;
        };
        let kept = match name.as_str() {
            "server" => piece::<RawServer>(&name, value.clone(), out),
            "issuers" | "routes" => {
                let (section, items) = match name.as_str() {
                    "issuers" => ("issuers", each::<RawIssuer>(&name, value.clone(), out)),
                    _ => ("routes", each::<RawRoute>(&name, value.clone(), out)),
                };
                if let (Some(items), Value::Sequence(all)) = (items, &value) {
                    let kept: Vec<Value> = items.iter().map(|&i| all[i].clone()).collect();
                    reading.kept.insert(section, items);
                    salvaged.insert(key, Value::Sequence(kept));
                }
                continue;
            }
            "gerrit" => piece::<RawGerrit>(&name, value.clone(), out),
            "static_groups" => piece::<BTreeMap<String, Vec<String>>>(&name, value.clone(), out),
            "token_cache" => piece::<RawTokenCache>(&name, value.clone(), out),
            "max_token_bytes" => piece::<usize>(&name, value.clone(), out),
            "audit" => piece::<RawAudit>(&name, value.clone(), out),
            "browser_sessions" => piece::<RawBrowserSessions>(&name, value.clone(), out),
            "grants" => piece::<RawGrants>(&name, value.clone(), out),
            "telemetry" => piece::<RawTelemetry>(&name, value.clone(), out),
            _ => {
                out.push((name, "unknown field".into()));
                false
            }
        };
        if kept {
            salvaged.insert(key, value);
        }
    }
    reading.salvaged = Some(Value::Mapping(salvaged));
    reading
}

/// A list section, each element on its own: the indices of those that deserialize, or
/// `None` when the section is not a list.
fn each<T: DeserializeOwned>(
    path: &str,
    value: Value,
    out: &mut Vec<(String, String)>,
) -> Option<Vec<usize>> {
    match value {
        Value::Sequence(items) => Some(
            items
                .into_iter()
                .enumerate()
                .filter(|(i, item)| piece::<T>(&format!("{path}[{i}]"), item.clone(), out))
                .map(|(i, _)| i)
                .collect(),
        ),
        other => {
            piece::<Vec<T>>(path, other, out);
            None
        }
    }
}

/// One piece: its unknown fields, and its first error with the field it is at; whether
/// it deserializes.
fn piece<T: DeserializeOwned>(path: &str, value: Value, out: &mut Vec<(String, String)>) -> bool {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let result: Result<T, _> = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(value, &mut track),
        |p| unknown.push(yaml_path(&p)),
    );
    for field in unknown {
        out.push((join(path, &field), "unknown field".into()));
    }
    match result {
        Ok(_) => true,
        Err(e) => {
            let at = track.path().to_string();
            let at = if at == "." { String::new() } else { at };
            out.push((join(path, &at), with_hint(&e.to_string())));
            false
        }
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
        let found = read(text).problems;
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

    #[test]
    fn the_rest_of_the_file_is_kept_with_its_numbering() {
        let text = "routes:\n  - name: a\n    allow: public\n  - broken: 1\n  - name: c\n    allow: public\n";
        let reading = read(text);
        assert_eq!(reading.kept["routes"], vec![0, 2]);
        assert_eq!(reading.original_path("routes[1].match"), "routes[2].match");
        assert_eq!(reading.original_path("routes[0]"), "routes[0]");
        assert_eq!(
            reading.original_path("server.drain_delay"),
            "server.drain_delay"
        );
        let salvaged = reading.salvaged.unwrap();
        assert_eq!(salvaged["routes"].as_sequence().unwrap().len(), 2);
    }
}
