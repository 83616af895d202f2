//! The configuration file: read (a regular file, size-capped), parsed as TOML and
//! deserialized into [`Config`], with errors naming the file, the dotted key
//! (`ethtool.stats_include[2]`), the reason and the position.

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::{Config, ConfigError, DEFAULT_PATH, Invalid, error::Violation};

/// A configuration file as deserialized, before the environment and the flags; checked
/// with them by [`super::resolve`].
#[derive(Clone, Debug, PartialEq)]
pub struct FileConfig {
    pub(crate) config: Config,
    /// Whether the file sets `interval` (then `OTEL_METRIC_EXPORT_INTERVAL` does not apply).
    pub(crate) sets_interval: bool,
    /// The file, for errors.
    path: PathBuf,
    /// Its text, for the position of a value the checks refuse.
    text: String,
}

/// Parses configuration text. `file` only names it in errors.
pub fn parse(text: &str, file: &Path) -> Result<FileConfig, ConfigError> {
    let invalid = |key: Option<String>, reason: String, span: Option<std::ops::Range<usize>>| {
        ConfigError::Invalid(Box::new(Invalid {
            file: file.to_path_buf(),
            key,
            reason,
            position: span.map(|s| position(text, s.start)),
        }))
    };
    let root = DeTable::parse(text)
        .map_err(|e| invalid(None, format!("TOML syntax: {}", e.message()), e.span()))?;
    let sets_interval = DeValue::Table(root.into_inner()).get("interval").is_some();
    let de = toml::de::Deserializer::parse(text)
        .map_err(|e| invalid(None, format!("TOML syntax: {}", e.message()), e.span()))?;
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let key = (path != "." && !path.is_empty()).then_some(path);
        let inner = e.into_inner();
        invalid(key, inner.message().to_string(), inner.span())
    })?;
    Ok(FileConfig {
        config,
        sets_interval,
        path: file.to_path_buf(),
        text: text.to_string(),
    })
}

impl FileConfig {
    /// The error for a value of this file that the checks refuse, with its position.
    pub(super) fn invalid(&self, v: Violation) -> ConfigError {
        let position = DeTable::parse(&self.text).ok().and_then(|root| {
            let root = DeValue::Table(root.into_inner());
            lookup(&root, v.path).map(|value| position(&self.text, value.span().start))
        });
        ConfigError::Invalid(Box::new(Invalid {
            file: self.path.clone(),
            key: Some(v.key()),
            reason: v.reason,
            position,
        }))
    }
}

fn lookup<'a, 'i>(root: &'a DeValue<'i>, path: &[&str]) -> Option<&'a toml::Spanned<DeValue<'i>>> {
    let (first, rest) = path.split_first()?;
    let mut v = root.get(*first)?;
    for key in rest {
        v = v.get_ref().get(*key)?;
    }
    Some(v)
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The file's text; `None` when no path was given and the default file does not exist.
pub(super) fn read(path: Option<&Path>) -> Result<Option<(String, PathBuf)>, ConfigError> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    match crate::fsutil::read_regular_string(&path, crate::fsutil::CONFIG_MAX_BYTES) {
        Ok(text) => Ok(Some((text, path))),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}
