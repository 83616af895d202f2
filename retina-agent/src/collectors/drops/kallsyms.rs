//! The kernel's function symbols from `/proc/kallsyms`, to name drop locations.
//!
//! Loaded once, when drop locations are enabled, into one sorted table (addresses, and the
//! names in one string); an address is named by binary search, the way the kernel's own
//! `%pS` does: the last symbol at or below it, and of several symbols at that address the
//! first one listed.

use std::{io, path::Path};

pub(crate) const PROC_KALLSYMS: &str = "/proc/kallsyms";

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} line {line}: malformed symbol line {text:?}")]
    Malformed {
        path: String,
        line: usize,
        text: String,
    },
    #[error(
        "{path} lists no function addresses (all zero: kernel.kptr_restrict hides them from \
         processes without CAP_SYSLOG); drop locations need them"
    )]
    Hidden { path: String },
}

/// Function symbols sorted by address.
pub struct Kallsyms {
    addrs: Vec<u64>,
    /// Start of each symbol's name in `names`; the name ends where the next one starts.
    starts: Vec<u32>,
    names: String,
}

impl Kallsyms {
    /// Reads and sorts `/proc/kallsyms`.
    pub fn load() -> Result<Self, KallsymsError> {
        Self::from_file(Path::new(PROC_KALLSYMS))
    }

    pub(crate) fn from_file(path: &Path) -> Result<Self, KallsymsError> {
        let text = std::fs::read_to_string(path).map_err(|source| KallsymsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses the `ADDRESS TYPE NAME [MODULE]` lines of kallsyms; only text symbols
    /// (type `t`, `T`, `w`, `W`) are kept, since a drop location is always in code.
    pub(crate) fn parse(path: &str, text: &str) -> Result<Self, KallsymsError> {
        let mut entries: Vec<(u64, &str)> = Vec::new();
        let mut nonzero = false;
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_ascii_whitespace();
            let parsed = match (fields.next(), fields.next(), fields.next()) {
                (Some(a), Some(t), Some(name)) if t.len() == 1 => {
                    u64::from_str_radix(a, 16).ok().map(|a| (a, t, name))
                }
                _ => None,
            };
            let Some((addr, kind, name)) = parsed else {
                return Err(KallsymsError::Malformed {
                    path: path.into(),
                    line: i + 1,
                    text: line.chars().take(120).collect(),
                });
            };
            nonzero |= addr != 0;
            if matches!(kind, "t" | "T" | "w" | "W") {
                entries.push((addr, name));
            }
        }
        if !nonzero && !entries.is_empty() {
            return Err(KallsymsError::Hidden { path: path.into() });
        }
        // Stable: of several symbols at one address, the first listed stays first.
        entries.sort_by_key(|e| e.0);
        let mut names = String::with_capacity(entries.iter().map(|e| e.1.len()).sum());
        let mut addrs = Vec::with_capacity(entries.len());
        let mut starts = Vec::with_capacity(entries.len());
        for (addr, name) in entries {
            addrs.push(addr);
            starts.push(names.len() as u32);
            names.push_str(name);
        }
        Ok(Kallsyms {
            addrs,
            starts,
            names,
        })
    }

    /// How many function symbols the table holds.
    pub(crate) fn len(&self) -> usize {
        self.addrs.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    fn name(&self, i: usize) -> &str {
        let start = self.starts[i] as usize;
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.names.len(), |&e| e as usize);
        &self.names[start..end]
    }

    /// The function `addr` lies in: its start address and name. `None` below the first
    /// symbol.
    pub(crate) fn lookup(&self, addr: u64) -> Option<(u64, &str)> {
        let after = self.addrs.partition_point(|&a| a <= addr);
        let last = after.checked_sub(1)?;
        let start = self.addrs[last];
        // The first of the symbols at that address.
        let first = self.addrs[..=last].partition_point(|&a| a < start);
        Some((start, self.name(first)))
    }
}

#[cfg(test)]
mod tests;
