//! The one error of the configuration, and the key paths it names.

use std::{fmt, path::PathBuf};

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem in the file: its own values, or what they make together.
    #[error("{0}")]
    Invalid(Box<Invalid>),
    /// An environment variable with a value that does not parse. `value` is shown only
    /// for variables that never hold secrets (`OTEL_EXPORTER_OTLP_HEADERS` may hold
    /// credentials).
    #[error("environment variable {name}{}: {reason}", shown(value))]
    Env {
        name: &'static str,
        value: Option<String>,
        reason: String,
    },
    #[error("environment variable {name}: the value is not valid UTF-8")]
    EnvNotUtf8 { name: String },
    /// A setting that is only wrong once the environment and the flags are applied.
    #[error("key `{key}` (after environment and flags): {reason}")]
    Resolved { key: String, reason: String },
}

fn shown(value: &Option<String>) -> String {
    value
        .as_ref()
        .map_or_else(String::new, |v| format!("={v:?}"))
}

impl ConfigError {
    /// The problem in the file, if that is what this is.
    #[cfg(test)]
    pub(crate) fn invalid(&self) -> Option<&Invalid> {
        match self {
            ConfigError::Invalid(i) => Some(i),
            _ => None,
        }
    }
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The file the text came from.
    pub(crate) file: PathBuf,
    /// Dotted path of the offending key (`netdev.include[1]`), when the problem is a value.
    pub(crate) key: Option<String>,
    pub(crate) reason: String,
    /// 1-based line and column of the offending text, when known.
    pub(crate) position: Option<(usize, usize)>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.reason)?;
        if let Some((line, column)) = self.position {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

/// A value the checks of [`super::validate`] refuse: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Violation {
    /// The key named in the error, by section (`["export", "endpoint"]`).
    pub(crate) path: &'static [&'static str],
    /// The keys whose values make the problem (dotted); empty: the key itself. When the
    /// environment or a flag set one of them, the error says "after environment and
    /// flags" instead of naming the file.
    pub(crate) involves: &'static [&'static str],
    pub(crate) reason: String,
}

impl Violation {
    /// A problem with the value of the key at `path` alone.
    pub(crate) fn at(path: &'static [&'static str], reason: impl Into<String>) -> Violation {
        Violation {
            path,
            involves: &[],
            reason: reason.into(),
        }
    }

    /// A problem reported at `path` that the values of `keys` make together.
    pub(crate) fn of(
        path: &'static [&'static str],
        keys: &'static [&'static str],
        reason: impl Into<String>,
    ) -> Violation {
        Violation {
            involves: keys,
            ..Violation::at(path, reason)
        }
    }

    /// The dotted key (`export.endpoint`).
    pub(crate) fn key(&self) -> String {
        self.path.join(".")
    }

    /// Whether a key it involves was set by the environment or a flag.
    pub(crate) fn overridden(&self, set: &super::Overridden) -> bool {
        if self.involves.is_empty() {
            set.contains(&self.key())
        } else {
            self.involves.iter().any(|k| set.contains(k))
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key(), self.reason)
    }
}
