//! The README's "Configuration reference" documents every field the config file accepts.
//!
//! The fields come from the schema itself, not from a list kept here: serde's derived
//! `Deserialize` hands every struct's accepted field names (after `rename`) to
//! `Deserializer::deserialize_struct`. [`Tracer`] is a deserializer that records those
//! names, then answers each field with a value of the kind asked for (one list element,
//! one map entry, `Some`, ...), so nested structs (`routes[].match.path`,
//! `issuers[].jwks`, `gerrit.events`, `routes[].kube.rules[]`) report their fields too. A
//! field added to any derived `Raw*` struct therefore shows up here without touching this
//! file.
//!
//! Two types are deserialized by hand (`deserialize_any` with a visitor of their own), and
//! serde tells a deserializer nothing about what they accept:
//! - `routes[].allow` (`RawAllow`): its map and list forms are `RawRule`s, which are traced
//!   directly;
//! - `routes[].inject.groups` (`RawGroupsHeader`): its long form's keys are the fields of
//!   `RawGroupsHeader`, listed in [`GROUPS_HEADER_KEYS`]. An exhaustive pattern on that
//!   struct (and on `RawAllow`'s variants) stops this file compiling when either gains a
//!   field or form, and a parse shows the listed keys are the accepted ones.
//!
//! How the README is read: a top-level field is documented by its `### \`name\`` heading
//! (`### \`routes[]\``). In that section, a table row documents the fields named in code
//! in its first cell (`| \`jwks.url\` / \`jwks.file\` | ...`, text after `:` or a space
//! ignored), relative to the section, or to the field named in code in the table's
//! header (`| \`allow\` condition | ...` holds `allow`'s rule fields). A nested field is
//! also documented when the row of one of its parents names it (the `match.path` row
//! names `segment_prefix`, `prefix`, `exact` and `regex`). `[]` and map keys are left out
//! of the comparison.

use mesh_authz::config::schema::{RawAllow, RawConfig, RawGroupsHeader, RawRule};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

#[test]
fn every_schema_field_has_a_row_in_the_readme_configuration_reference() {
    let readme = read_readme();
    let missing = undocumented_fields(&readme, &schema_fields());
    assert!(
        missing.is_empty(),
        "docs/configuration.md \"## Configuration reference\" does not document these \
         config fields (doc comments in src/config/schema.rs say what they mean):\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_deleted_row_is_reported_with_its_field_and_section() {
    let readme = read_readme();
    let fields = schema_fields();
    let without = |prefix: &str| -> String {
        let kept: Vec<&str> = readme
            .lines()
            .filter(|line| !line.starts_with(prefix))
            .collect();
        assert!(
            kept.len() < readme.lines().count(),
            "no line starts with {prefix}"
        );
        kept.join("\n")
    };

    let missing = undocumented_fields(&without("| `cache_max_users` |"), &fields);
    assert_eq!(
        missing,
        [
            "gerrit.cache_max_users: add a row `| `cache_max_users` | default | meaning |` \
          to the table in ### `gerrit`"
        ]
    );

    // A rule field, documented in the table headed by `allow`.
    let missing = undocumented_fields(&without("| `as_user: NAME` |"), &fields);
    assert_eq!(
        missing,
        [
            "routes[].allow.as_user: add a row `| `as_user` |` to the table headed `allow` \
          in ### `routes[]`, or name `as_user` in the row of `allow`"
        ]
    );

    // A field of a list inside a nested part, in the table headed by `kube`.
    let missing = undocumented_fields(&without("| `rules[].cluster` |"), &fields);
    assert_eq!(
        missing,
        [
            "routes[].kube.rules[].cluster: add a row `| `rules[].cluster` |` to the table \
          headed `kube` in ### `routes[]`, or name `cluster` in the row of `kube`"
        ]
    );

    // A whole top-level section.
    let missing = undocumented_fields(&readme.replace("### `audit`", "### Audit"), &fields);
    assert_eq!(missing, ["audit.output: add a section ### `audit`"]);
}

#[test]
fn the_discovered_fields_include_renamed_nested_and_hand_written_ones() {
    let fields = schema_fields();
    for expected in [
        "server.drain_delay",
        "issuers[].jwks.url",
        "gerrit.events.token_file",
        "routes[].match.path.segment_prefix",
        "routes[].allow.claims.*.one_of",
        "routes[].inject.groups.on_overflow",
        "routes[].kube.rules[].namespace_group",
        "static_groups",
        "max_token_bytes",
    ] {
        assert!(fields.contains(expected), "{expected} not in {fields:#?}");
    }
}

/// The keys of `inject.groups`' long form (`{header, only, max_bytes, on_overflow}`).
const GROUPS_HEADER_KEYS: [&str; 4] = ["header", "only", "max_bytes", "on_overflow"];

/// Every field path the schema accepts, e.g. `routes[].match.path.prefix`: `[]` follows a
/// list of structs, `*` stands for a map key.
fn schema_fields() -> BTreeSet<String> {
    hand_written_forms_are_known();
    let mut fields = trace::<RawConfig>("");
    fields.extend(trace::<RawRule>("routes[].allow"));
    fields.extend(
        GROUPS_HEADER_KEYS
            .iter()
            .map(|key| format!("routes[].inject.groups.{key}")),
    );
    fields
}

/// `RawAllow` and `RawGroupsHeader` have their own `Deserialize`. These patterns stop
/// compiling once either changes shape, so that [`schema_fields`] is revisited with them.
fn hand_written_forms_are_known() {
    let groups: RawGroupsHeader = serde_yaml::from_str(
        "{header: X-Groups, only: [team-a], max_bytes: 100, on_overflow: truncate}",
    )
    .expect("the long form of inject.groups parses");
    let RawGroupsHeader {
        header,
        only,
        max_bytes,
        on_overflow,
    } = groups;
    // Unknown keys are no error at this level: a misspelt key would leave a default.
    assert_eq!(
        (header.as_str(), only, max_bytes, on_overflow.as_str()),
        ("X-Groups", vec!["team-a".to_string()], 100, "truncate"),
        "GROUPS_HEADER_KEYS are not the keys RawGroupsHeader reads"
    );

    let allow: RawAllow = serde_yaml::from_str("[{as_user: ci-bot}]").expect("a rule list");
    match allow {
        // Strings, named in the `allow` row.
        RawAllow::Public | RawAllow::Authenticated => panic!("a list is rules"),
        // Maps and lists of maps: `RawRule`, traced in `schema_fields`.
        RawAllow::Rule(_) => panic!("a list is rules"),
        RawAllow::Rules(rules) => assert_eq!(rules[0].as_user.as_deref(), Some("ci-bot")),
    }
}

/// The field paths `T` accepts, below `base`.
fn trace<'de, T: Deserialize<'de>>(base: &str) -> BTreeSet<String> {
    let log = RefCell::new(BTreeSet::new());
    let tracer = Tracer {
        path: base.to_string(),
        log: &log,
    };
    if let Err(e) = T::deserialize(tracer) {
        panic!("tracing the schema's fields failed: {e}");
    }
    log.into_inner()
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// A deserializer that records the fields of every struct it is asked for (see the file's
/// doc comment).
struct Tracer<'a> {
    path: String,
    log: &'a RefCell<BTreeSet<String>>,
}

impl<'a> Tracer<'a> {
    fn at(&self, path: String) -> Tracer<'a> {
        Tracer {
            path,
            log: self.log,
        }
    }
}

#[derive(Debug)]
struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        TraceError(msg.to_string())
    }
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.log
            .borrow_mut()
            .extend(fields.iter().map(|f| join(&self.path, f)));
        visitor.visit_map(StructFields {
            fields: fields.iter(),
            next_value: None,
            tracer: &self,
        })
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let element = self.at(format!("{}[]", self.path));
        visitor.visit_seq(OneElement(Some(element)))
    }

    fn deserialize_map<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let value = self.at(join(&self.path, "*"));
        visitor.visit_map(OneEntry(Some(value)))
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_some(self)
    }

    fn deserialize_bool<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_bool(false)
    }

    fn deserialize_u64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_u64(1)
    }

    fn deserialize_f64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_f64(1.0)
    }

    /// Strings, paths and durations (`humantime_serde` reads a string): `1s` is all three.
    fn deserialize_str<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_str("1s")
    }

    /// The hand-written visitors (`allow`, `inject.groups`) and `serde_json::Value`
    /// (claim values) all take the string `public`; what the first two accept as a map is
    /// added in `schema_fields`.
    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_str("public")
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, TraceError> {
        Err(TraceError(format!(
            "{}: enum {name}: teach tests/config_reference.rs to list its variants' fields",
            self.path
        )))
    }

    fn deserialize_ignored_any<V: de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        visitor.visit_unit()
    }

    fn deserialize_unit<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: de::Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_string<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_i8<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_i16<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_i32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_i64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u8<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_f32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_f64(visitor)
    }

    serde::forward_to_deserialize_any! { char bytes byte_buf identifier }
}

/// Every field of a struct, each once.
struct StructFields<'t, 'a> {
    fields: std::slice::Iter<'static, &'static str>,
    next_value: Option<&'static str>,
    tracer: &'t Tracer<'a>,
}

impl<'de> MapAccess<'de> for StructFields<'_, '_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        let Some(field) = self.fields.next() else {
            return Ok(None);
        };
        self.next_value = Some(field);
        seed.deserialize(field.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let field = self
            .next_value
            .take()
            .ok_or_else(|| TraceError("a value asked for before its key".into()))?;
        seed.deserialize(self.tracer.at(join(&self.tracer.path, field)))
    }
}

/// A list of one element.
struct OneElement<'a>(Option<Tracer<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        self.0.take().map(|t| seed.deserialize(t)).transpose()
    }
}

/// A map of one entry, keyed `KEY`.
struct OneEntry<'a>(Option<Tracer<'a>>);

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        if self.0.is_none() {
            return Ok(None);
        }
        seed.deserialize("KEY".into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let value = self
            .0
            .take()
            .ok_or_else(|| TraceError("a value asked for before its key".into()))?;
        seed.deserialize(value)
    }
}

fn read_readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `### ` section of the configuration reference.
struct Section {
    /// The heading's line, e.g. ``### `routes[]` (first match wins; ...)``.
    heading: String,
    /// The field the heading names in code, without `[]`: `routes`.
    field: String,
    rows: Vec<Row>,
}

/// A table row.
struct Row {
    /// The fields named in code in the first cell, relative to the section, without `[]`
    /// (`jwks.url`; `allow.as_user` in the table headed `` `allow` condition``).
    fields: Vec<String>,
    /// The field the table's header names in code (`allow`), if any.
    table: Option<String>,
    text: String,
}

/// The text in backticks.
fn code_spans(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

fn first_cell(line: &str) -> &str {
    line.split('|').nth(1).unwrap_or("")
}

/// The sections under "## Configuration reference".
fn reference_sections(readme: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut in_reference = false;
    let mut in_fence = false;
    // Inside a table: the field its header names, if any.
    let mut table: Option<Option<String>> = None;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if line.starts_with("## ") {
            in_reference = line == "## Configuration reference";
            continue;
        }
        if !in_reference {
            continue;
        }
        if line.starts_with("### ") {
            sections.push(Section {
                heading: line.to_string(),
                field: code_spans(line).next().unwrap_or("").replace("[]", ""),
                rows: Vec::new(),
            });
            table = None;
            continue;
        }
        if !line.starts_with('|') {
            table = None;
            continue;
        }
        let Some(section) = sections.last_mut() else {
            continue;
        };
        let Some(header) = &table else {
            let header_field = code_spans(first_cell(line)).next();
            table = Some(header_field.map(|f| f.replace("[]", "")));
            continue;
        };
        if line.starts_with("|---") {
            continue;
        }
        let fields = code_spans(first_cell(line))
            .map(|span| {
                let name = span
                    .split([':', ' '])
                    .next()
                    .unwrap_or("")
                    .replace("[]", "");
                match header {
                    Some(parent) => format!("{parent}.{name}"),
                    None => name,
                }
            })
            .collect();
        section.rows.push(Row {
            fields,
            table: header.clone(),
            text: line.to_string(),
        });
    }
    sections
}

/// `word` occurs in `text`, not as part of a longer name.
fn names(text: &str, word: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word)
        .any(|(i, _)| !text[..i].ends_with(is_name) && !text[i + word.len()..].starts_with(is_name))
}

/// One message per schema field the README does not document, saying where to add it.
fn undocumented_fields(readme: &str, fields: &BTreeSet<String>) -> Vec<String> {
    let sections = reference_sections(readme);
    // Only fields without fields of their own need a row; a parent is covered by its
    // children (`issuers[].jwks` by `jwks.url`, ...).
    let leaves = fields.iter().filter(|field| {
        !fields.iter().any(|other| {
            other.len() > field.len()
                && other.starts_with(field.as_str())
                && other[field.len()..].starts_with(['.', '['])
        })
    });
    let mut missing = Vec::new();
    for field in leaves {
        // As the README writes them (`kube.rules[].verbs`), and as they are compared.
        let shown: Vec<&str> = field.split('.').filter(|s| *s != "*").collect();
        let segments: Vec<String> = shown.iter().map(|s| s.replace("[]", "")).collect();
        let Some(section) = sections.iter().find(|s| s.field == segments[0]) else {
            missing.push(format!("{field}: add a section ### `{}`", segments[0]));
            continue;
        };
        let relative = &segments[1..];
        let Some(leaf) = relative.last() else {
            continue; // a top-level field: its heading documents it
        };
        let documented = (1..=relative.len()).any(|n| {
            let candidate = relative[..n].join(".");
            section.rows.iter().any(|row| {
                row.fields.contains(&candidate) && (n == relative.len() || names(&row.text, leaf))
            })
        });
        if !documented {
            missing.push(where_to_add(field, &shown[1..], section));
        }
    }
    missing
}

/// The message for an undocumented field: the table headed by its parent, if there is
/// one, else the section's table.
fn where_to_add(field: &str, relative: &[&str], section: &Section) -> String {
    let leaf = relative[relative.len() - 1];
    let title = section_title(section);
    let table_parent = (1..relative.len()).rev().find(|&n| {
        let parent = relative[..n].join(".").replace("[]", "");
        section
            .rows
            .iter()
            .any(|row| row.table.as_deref() == Some(parent.as_str()))
    });
    if let Some(n) = table_parent {
        let parent = relative[..n].join(".");
        let row_name = relative[n..].join(".");
        return format!(
            "{field}: add a row `| `{row_name}` |` to the table headed `{parent}` in {title}, \
             or name `{leaf}` in the row of `{parent}`"
        );
    }
    let parent_hint = if relative.len() > 1 {
        format!(
            ", or name `{leaf}` in the row of `{}`",
            relative[..relative.len() - 1].join(".")
        )
    } else {
        String::new()
    };
    format!(
        "{field}: add a row `| `{}` | default | meaning |` to the table in {title}{parent_hint}",
        relative.join(".")
    )
}

/// ``### `routes[]` `` without what follows the field.
fn section_title(section: &Section) -> String {
    let end = section
        .heading
        .match_indices('`')
        .nth(1)
        .map_or(section.heading.len(), |(i, _)| i + 1);
    section.heading[..end].to_string()
}

/// Every page under `docs/` names only real config fields: each dotted path in code that
/// starts at a top-level field (`gerrit.url`, `issuers[].jwks.url`) and each key of a
/// ```` ```yaml ```` block whose top-level keys are config fields must be one the schema
/// accepts. (A bare name such as `leeway` is not checked: it could belong anywhere.)
#[test]
fn docs_pages_name_only_real_config_fields() {
    let fields = schema_fields();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut problems = Vec::new();
    let mut pages = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for unknown in unknown_fields_in_page(&text, &fields) {
                problems.push(format!("{}: {unknown}", path.display()));
            }
        }
    }
    assert!(pages > 0, "no pages under docs/");
    assert!(
        problems.is_empty(),
        "docs name config fields the schema does not have:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_misspelt_field_in_a_docs_page_is_reported() {
    let fields = schema_fields();
    let page = "Set `gerrit.urll` and `issuers[].jwks.url`.\n\n```yaml\nissuers:\n  - issuer: https://idp\n    audience: [x]\n    jwks: {url: https://idp/keys}\nroutes:\n  - name: a\n    allow: {claims: {team: {one_of: [a]}}}\n```\n";
    assert_eq!(
        unknown_fields_in_page(page, &fields),
        vec![
            "`gerrit.urll` in text".to_string(),
            "`issuers[].audience` in a yaml block".to_string()
        ]
    );
}

/// The fields `page` names that the schema lacks, as `` `path` in text`` or
/// `` `path` in a yaml block``.
fn unknown_fields_in_page(page: &str, fields: &BTreeSet<String>) -> Vec<String> {
    // Compared without `[]`; a `*` segment (a map key) accepts any name.
    let known: Vec<Vec<&str>> = fields
        .iter()
        .map(|f| f.split('.').map(|s| s.trim_end_matches("[]")).collect())
        .collect();
    let top: BTreeSet<&str> = known.iter().map(|k| k[0]).collect();
    // Top-level fields that are lists (`routes[]`): a block with a list under another
    // one (the grants file's `grants:`) is not a config.
    let lists: BTreeSet<&str> = fields
        .iter()
        .filter_map(|f| f.split('.').next()?.strip_suffix("[]"))
        .collect();
    let is_known = |path: &[&str]| {
        known
            .iter()
            .any(|k| k.len() >= path.len() && k.iter().zip(path).all(|(k, p)| *k == "*" || k == p))
    };
    let mut unknown = Vec::new();
    let mut prose = String::new();
    let mut yaml: Option<String> = None;
    for line in page.lines() {
        if let Some(block) = &mut yaml {
            if line.starts_with("```") {
                let block = yaml.take().unwrap_or_default();
                check_yaml_block(&block, &top, &lists, &is_known, &mut unknown);
            } else {
                block.push_str(line);
                block.push('\n');
            }
        } else if line.trim_start().starts_with("```yaml") {
            yaml = Some(String::new());
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    for span in code_spans(&prose) {
        let looks_like_path = span.contains('.')
            && span
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.' || c == '[' || c == ']');
        // Host and file names look like paths too (`gerrit.gerrit.svc.cluster.local`,
        // `grants.yaml`).
        let host = [
            ".local", ".com", ".org", ".net", ".io", ".test", ".invalid", ".yaml", ".yml", ".json",
            ".pem", ".md",
        ]
        .iter()
        .any(|suffix| span.ends_with(suffix));
        if !looks_like_path || host {
            continue;
        }
        let path: Vec<&str> = span.split('.').map(|s| s.trim_end_matches("[]")).collect();
        if top.contains(path[0]) && !is_known(&path) {
            unknown.push(format!("`{span}` in text"));
        }
    }
    unknown.sort();
    unknown.dedup();
    unknown
}

/// Checks a yaml block that is a config (or a fragment of one: every top-level key a
/// config field); other blocks (Gerrit's, Istio's, Dex's) are left alone.
fn check_yaml_block(
    block: &str,
    top: &BTreeSet<&str>,
    lists: &BTreeSet<&str>,
    is_known: &impl Fn(&[&str]) -> bool,
    unknown: &mut Vec<String>,
) {
    let Ok(serde_yaml::Value::Mapping(map)) = serde_yaml::from_str::<serde_yaml::Value>(block)
    else {
        return;
    };
    let keys: Vec<&str> = map.keys().filter_map(|k| k.as_str()).collect();
    if keys.is_empty() || !keys.iter().all(|k| top.contains(k)) {
        return;
    }
    let shaped_like_config = map.iter().all(|(key, value)| {
        let is_list = key.as_str().is_some_and(|k| lists.contains(k));
        !value.is_sequence() || is_list
    });
    if !shaped_like_config {
        return;
    }
    fn walk(
        value: &serde_yaml::Value,
        path: &mut Vec<String>,
        shown: &str,
        is_known: &impl Fn(&[&str]) -> bool,
        unknown: &mut Vec<String>,
    ) {
        match value {
            serde_yaml::Value::Mapping(map) => {
                for (key, value) in map {
                    let Some(key) = key.as_str() else { continue };
                    path.push(key.to_string());
                    let refs: Vec<&str> = path.iter().map(String::as_str).collect();
                    let shown = format!("{shown}.{key}");
                    if is_known(&refs) {
                        walk(value, path, &shown, is_known, unknown);
                    } else {
                        unknown.push(format!("`{}` in a yaml block", &shown[1..]));
                    }
                    path.pop();
                }
            }
            serde_yaml::Value::Sequence(items) => {
                for item in items {
                    walk(item, path, &format!("{shown}[]"), is_known, unknown);
                }
            }
            _ => {}
        }
    }
    walk(
        &serde_yaml::Value::Mapping(map),
        &mut Vec::new(),
        "",
        is_known,
        unknown,
    );
}

#[test]
fn every_section_is_read_on_its_own_when_the_file_does_not_deserialize() {
    // config::schema::SECTIONS drives the piecewise reader that reports every broken
    // section at once; a section missing from it would be reported as unknown there.
    let top: BTreeSet<String> = schema_fields()
        .iter()
        .map(|f| f.split(['.', '[']).next().unwrap().to_string())
        .collect();
    let listed: BTreeSet<String> = mesh_authz::config::schema::SECTIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(listed, top);
    // Each listed section is read: a file broken in every one of them reports each.
    let broken: String = mesh_authz::config::schema::SECTIONS
        .iter()
        .map(|s| format!("{s}: 12:34\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, &broken).unwrap();
    let err = mesh_authz::config::load(&file).unwrap_err().to_string();
    for section in mesh_authz::config::schema::SECTIONS {
        assert!(
            err.lines().any(|l| l.contains(&format!(": {section}"))),
            "{section} not reported:\n{err}"
        );
        assert!(!err.contains(&format!("{section}: unknown field")), "{err}");
    }
}
