//! Configuration: the YAML schema, its compilation into runtime types, and loading.
//!
//! Loading is two steps. [`schema`] is what `serde_yaml` reads (unknown fields are
//! collected, not ignored); `compile` checks everything, reporting every problem with
//! its field path, and produces a [`Config`] whose parts cannot be invalid.

mod compile;
mod error;
mod model;
pub mod reload;
pub mod schema;

pub use error::{ConfigError, Problem};
pub use model::{
    AuditOutput, Config, GerritConfig, GerritEventsConfig, GrantsConfig, GroupsConfig,
    IssuerConfig, OtlpProtocol, ServerSettings, TracesSettings,
};

use std::path::{Path, PathBuf};

/// The quickstart config compiled into the binary, used when `--config` is not given.
pub const BUILTIN_CONFIG: &str = include_str!("../../examples/quickstart/config.yaml");
/// Files the built-in config refers to, by the relative path it uses.
const BUILTIN_FILES: &[(&str, &[u8])] = &[(
    "jwks.json",
    include_bytes!("../../examples/quickstart/jwks.json"),
)];
/// How the built-in config is named in messages.
pub const BUILTIN_NAME: &str = "<built-in quickstart config>";

/// Reads files that a config refers to (JWKS files), relative to the config's directory.
#[derive(Debug, Clone)]
pub enum FileResolver {
    /// Real files, relative paths taken from this directory.
    Disk(PathBuf),
    /// Files compiled into the binary (for the built-in config).
    Builtin,
}

impl FileResolver {
    /// The path as it will be read (for messages).
    pub fn display(&self, path: &Path) -> String {
        match self {
            FileResolver::Disk(base) => base.join(path).display().to_string(),
            FileResolver::Builtin => format!("<built-in {}>", path.display()),
        }
    }

    /// A referenced path as it will be opened later (relative paths made absolute where
    /// possible, so the server does not depend on its working directory).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match self {
            FileResolver::Disk(base) => base.join(path),
            FileResolver::Builtin => path.to_path_buf(),
        }
    }

    /// Reads a referenced file.
    pub fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        match self {
            FileResolver::Disk(base) => std::fs::read(base.join(path)),
            FileResolver::Builtin => BUILTIN_FILES
                .iter()
                .find(|(name, _)| Path::new(name) == path)
                .map(|(_, bytes)| bytes.to_vec())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }
}

/// Loads and compiles a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: name.clone(),
        source,
    })?;
    from_file_text(path, &text)
}

/// Compiles `text` as the content of the config file at `path` (relative paths in it are
/// relative to its directory).
pub fn from_file_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut config =
        compile::compile_str(&path.display().to_string(), text, &FileResolver::Disk(base))?;
    config.path = Some(path.to_path_buf());
    Ok(config)
}

/// The built-in quickstart config.
pub fn builtin() -> Result<Config, ConfigError> {
    compile::compile_str(BUILTIN_NAME, BUILTIN_CONFIG, &FileResolver::Builtin)
}

/// Compiles config text; `name` is used in messages.
pub fn from_str(name: &str, text: &str, files: &FileResolver) -> Result<Config, ConfigError> {
    compile::compile_str(name, text, files)
}
