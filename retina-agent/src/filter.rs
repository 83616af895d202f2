//! Name filters shared by collectors: which interfaces (or netstat fields) to export.
//!
//! Configured as two plain lists of regular expressions (`include`, `exclude`) in a
//! collector's config section. Every pattern is anchored: it must match the *whole* name
//! (`eth.*` matches `eth0` but not `veth0`). A name is selected when it matches at least one
//! `include` pattern (or `include` is empty) and no `exclude` pattern.
//!
//! A [`Pattern`] is compiled when it is read (deserializing the configuration, or
//! [`Pattern::new`]); a [`NameFilter`] is made of compiled patterns and compiles nothing.
//! Collectors call [`NameFilter::matches`] only when a name first appears and cache the
//! answer, not on every cycle.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Deserializer};

/// One anchored regular expression (`^(?:PATTERN)$`), compiled.
#[derive(Clone)]
pub struct Pattern {
    source: Box<str>,
    regex: Regex,
}

/// A pattern that does not compile; the message quotes the pattern as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression {pattern:?}: {detail}")]
pub struct PatternError {
    pub(crate) pattern: String,
    pub(crate) detail: String,
}

impl Pattern {
    /// Compiles `source`, anchored.
    pub fn new(source: &str) -> Result<Pattern, PatternError> {
        match Regex::new(&format!("^(?:{source})$")) {
            Ok(regex) => Ok(Pattern {
                source: source.into(),
                regex,
            }),
            Err(e) => {
                let detail = match e {
                    regex::Error::Syntax(detail) => {
                        // The syntax error quotes the anchored pattern; show the user's.
                        let detail = detail.lines().last().unwrap_or_default().trim();
                        detail.strip_prefix("error: ").unwrap_or(detail).to_string()
                    }
                    other => other.to_string(),
                };
                Err(PatternError {
                    pattern: source.to_string(),
                    detail,
                })
            }
        }
    }

    /// Compiles every pattern of `sources`, stopping at the first that fails.
    pub fn list<S: AsRef<str>>(sources: &[S]) -> Result<Vec<Pattern>, PatternError> {
        sources.iter().map(|s| Pattern::new(s.as_ref())).collect()
    }

    /// Whether `name` matches as a whole.
    #[cfg(test)]
    pub(crate) fn is_match(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

/// Two patterns are equal when they are written the same.
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl PartialEq<&str> for Pattern {
    fn eq(&self, other: &&str) -> bool {
        &*self.source == *other
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.source, f)
    }
}

/// A string, compiled on the spot: a bad pattern is an error of the value being read (in
/// a configuration file, its key path and position).
impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Pattern;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a regular expression")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Pattern, E> {
                Pattern::new(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// An include/exclude list of anchored regular expressions over names.
#[derive(Clone, Debug, Default)]
pub struct NameFilter {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
}

impl NameFilter {
    /// A filter of compiled patterns (nothing is compiled here).
    pub(crate) fn new(include: &[Pattern], exclude: &[Pattern]) -> NameFilter {
        let regexes = |list: &[Pattern]| list.iter().map(|p| p.regex.clone()).collect();
        NameFilter {
            include: regexes(include),
            exclude: regexes(exclude),
        }
    }

    /// A filter that selects every name.
    #[cfg(any(test, feature = "internals"))]
    pub fn all() -> NameFilter {
        NameFilter::default()
    }

    /// Whether `name` is selected: it fully matches an `include` pattern (or there is
    /// none) and fully matches no `exclude` pattern.
    pub(crate) fn matches(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(name)))
            && !self.exclude.iter().any(|r| r.is_match(name))
    }

    /// Whether this filter selects every name (no patterns at all).
    #[cfg(test)]
    pub(crate) fn is_all(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

#[cfg(test)]
mod tests;
