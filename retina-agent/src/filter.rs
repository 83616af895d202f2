//! Name filters shared by collectors: which interfaces (or netstat fields) to export.
//!
//! Configured as two plain lists of regular expressions (`include`, `exclude`) in a
//! collector's config section. Every pattern is anchored: it must match the *whole* name
//! (`eth.*` matches `eth0` but not `veth0`). A name is selected when it matches at least one
//! `include` pattern (or `include` is empty) and no `exclude` pattern.
//!
//! Patterns are compiled once, when the config is loaded. Collectors are expected to call
//! [`NameFilter::matches`] only when a name first appears and cache the answer, not on
//! every cycle.

use regex::Regex;

/// An include/exclude list of anchored regular expressions over names.
#[derive(Clone, Debug, Default)]
pub struct NameFilter {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
}

impl NameFilter {
    /// Compiles `include` and `exclude` patterns. Each is anchored (`^(?:PATTERN)$`).
    ///
    /// The error of the first pattern that fails to compile is returned; its message
    /// quotes that pattern.
    pub fn new(include: &[String], exclude: &[String]) -> Result<NameFilter, regex::Error> {
        Ok(NameFilter {
            include: compile_all(include)?,
            exclude: compile_all(exclude)?,
        })
    }

    /// A filter that selects every name.
    pub fn all() -> NameFilter {
        NameFilter::default()
    }

    /// Whether `name` is selected: it fully matches an `include` pattern (or there is
    /// none) and fully matches no `exclude` pattern.
    pub fn matches(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(name)))
            && !self.exclude.iter().any(|r| r.is_match(name))
    }

    /// Whether this filter selects every name (no patterns at all).
    pub fn is_all(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

fn compile_all(patterns: &[String]) -> Result<Vec<Regex>, regex::Error> {
    patterns
        .iter()
        .map(|p| Regex::new(&format!("^(?:{p})$")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_selects_everything() {
        let f = NameFilter::new(&[], &[]).unwrap();
        assert!(f.is_all());
        assert!(f.matches("eth0"));
        assert!(f.matches(""));
        assert!(NameFilter::all().matches("lo"));
    }

    #[test]
    fn patterns_are_anchored() {
        let f = NameFilter::new(&s(&["eth.*"]), &[]).unwrap();
        assert!(f.matches("eth0"));
        assert!(!f.matches("veth0"));
        let f = NameFilter::new(&s(&["eth0"]), &[]).unwrap();
        assert!(!f.matches("eth01"));
        // Alternation inside a pattern stays anchored as a whole.
        let f = NameFilter::new(&s(&["lo|eth0"]), &[]).unwrap();
        assert!(f.matches("lo"));
        assert!(f.matches("eth0"));
        assert!(!f.matches("lo0"));
        assert!(!f.matches("xeth0"));
    }

    #[test]
    fn exclude_wins_over_include() {
        let f = NameFilter::new(&s(&["eth.*", "lo"]), &s(&["eth1", "veth.*"])).unwrap();
        assert!(f.matches("eth0"));
        assert!(!f.matches("eth1"));
        assert!(f.matches("lo"));
        assert!(!f.matches("veth9"));
        assert!(!f.matches("docker0"));
        let f = NameFilter::new(&[], &s(&["veth.*"])).unwrap();
        assert!(f.matches("eth0"));
        assert!(!f.matches("veth0"));
    }

    #[test]
    fn bad_pattern_is_named_in_the_error() {
        let err = NameFilter::new(&s(&["ok"]), &s(&["eth[0-"])).unwrap_err();
        assert!(err.to_string().contains("eth[0-"), "{err}");
    }
}
