//! The `conntrack` collector: the connection tracking table's size and limit, and its
//! per-CPU event counters.
//!
//! # Sources
//!
//! * `PROC_ROOT/sys/net/netfilter/nf_conntrack_count` → `retina.conntrack.entries`;
//! * `PROC_ROOT/sys/net/netfilter/nf_conntrack_max` → `retina.conntrack.limit` (the kernel's
//!   limit is one global value, writable only in the initial namespace, that every
//!   namespace's own count is checked against);
//! * `PROC_ROOT/net/stat/nf_conntrack` → `retina.conntrack.stat`: a header line naming the
//!   columns, then one line of `%08x` values per possible CPU. Columns differ between
//!   kernels (`searched`, `new`, `delete` ... in old ones, `clashres`, `chainlength`,
//!   `search_restart` in new ones), so they are matched by their header names: every
//!   column but `entries` (the table size again, on every line) is a data point with
//!   attributes `conntrack.stat` (the header's name) and `cpu`. Row N is the N-th CPU of
//!   `/sys/devices/system/cpu/possible`. Values are 32-bit counters, widened to 64 bits.
//!
//! # Namespace
//!
//! All three files are those of the agent's own network namespace (the host's, for the
//! daemon): each namespace has its own table and counters. Run the agent (or `snapshot`)
//! inside another namespace (`ip netns exec NAME ...`) to read that one's.
//!
//! # Without conntrack
//!
//! When `nf_conntrack` is not loaded the files do not exist: the collector says so once in
//! the log, exports nothing, and looks again every cycle (someone may load it). It never
//! loads the module itself.

#[cfg(test)]
mod tests;

use std::{io, path::PathBuf};

use opentelemetry::KeyValue;
use serde::Deserialize;

use crate::{
    collectors::{
        ProcCollector,
        procfile::{NulPath, ProcFile, Wide, dec_u64, hex_u64, parse_cpu_list},
    },
    model::{Kind, Metric, Number, Visitor},
};

pub(crate) const CONNTRACK_ENTRIES: Metric = Metric {
    name: "retina.conntrack.entries",
    unit: "{entry}",
    description: "Connections in the conntrack table (nf_conntrack_count)",
    kind: Kind::Gauge,
};
pub(crate) const CONNTRACK_LIMIT: Metric = Metric {
    name: "retina.conntrack.limit",
    unit: "{entry}",
    description: "Size limit of the conntrack table (nf_conntrack_max); new connections \
                  beyond it are dropped unless an unassured one can be evicted",
    kind: Kind::Gauge,
};
pub(crate) const CONNTRACK_STAT: Metric = Metric {
    name: "retina.conntrack.stat",
    unit: "{event}",
    description: "Connection tracking events per CPU from /proc/net/stat/nf_conntrack \
                  (found, invalid, insert, insert_failed, drop, early_drop, \
                  search_restart, ...), by conntrack.stat and cpu",
    kind: Kind::Counter,
};

static METRICS: &[&Metric] = &[&CONNTRACK_ENTRIES, &CONNTRACK_LIMIT, &CONNTRACK_STAT];

/// Attribute key: the statistic, as the header of /proc/net/stat/nf_conntrack names it.
pub(crate) const ATTR_STAT: &str = "conntrack.stat";
/// Attribute key: the CPU number.
pub(crate) const ATTR_CPU: &str = "cpu";

/// The column that repeats the table size on every line (exported as
/// `retina.conntrack.entries` from its own file instead).
const ENTRIES_COLUMN: &[u8] = b"entries";

/// `[conntrack]` configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackConfig {
    /// Whether the collector runs (default `true`).
    pub(crate) enabled: bool,
    /// Where procfs is mounted (default `/proc`).
    pub(crate) proc_root: PathBuf,
    /// Where sysfs is mounted (default `/sys`), for the possible CPU list.
    pub(crate) sys_root: PathBuf,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            enabled: true,
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

/// What is wrong with a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("file is empty")]
    Empty,
    #[error("header line has no column names")]
    NoHeader,
    #[error("column name `{0}` is not printable ASCII")]
    BadName(String),
    #[error("column {0} appears twice in the header")]
    DuplicateName(String),
    #[error("no CPU lines after the header")]
    NoRows,
    #[error("{found} values, but the header names {names} columns")]
    ColumnCount { found: usize, names: usize },
    #[error("column {column}: `{text}` is not a hexadecimal number")]
    NotHex { column: String, text: String },
    #[error("`{0}` is not a non-negative decimal number")]
    NotDecimal(String),
}

/// Why the `conntrack` collector could not be built or a cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("conntrack collector: {0}")]
    Path(#[from] NulPath),
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {problem}", path.display())]
    Malformed {
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        problem: Problem,
    },
}

/// Parses the statistics file: checks the header, then the values, row-major, into
/// `values` (cleared first). Returns the header line and the number of columns.
pub fn parse_stats<'a>(
    text: &'a [u8],
    values: &mut Vec<u64>,
) -> Result<(&'a [u8], usize), (usize, Problem)> {
    values.clear();
    let mut lines = text.split(|&b| b == b'\n');
    let header = lines.next().filter(|h| !h.trim_ascii().is_empty());
    let Some(header) = header else {
        return Err((1, Problem::Empty));
    };
    let names = tokens(header).count();
    if names == 0 {
        return Err((1, Problem::NoHeader));
    }
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        let start = values.len();
        for (column, token) in tokens(line).enumerate() {
            if column >= names {
                let found = tokens(line).count();
                return Err((line_no, Problem::ColumnCount { found, names }));
            }
            let v = hex_u64(token).ok_or_else(|| {
                let column = tokens(header).nth(column).unwrap_or_default();
                (
                    line_no,
                    Problem::NotHex {
                        column: String::from_utf8_lossy(column).into_owned(),
                        text: String::from_utf8_lossy(token).into_owned(),
                    },
                )
            })?;
            values.push(v);
        }
        let found = values.len() - start;
        if found != 0 && found != names {
            return Err((line_no, Problem::ColumnCount { found, names }));
        }
    }
    if values.is_empty() {
        return Err((2, Problem::NoRows));
    }
    Ok((header, names))
}

fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
}

/// Builds the column table of a header: for each column, its name if exported.
pub fn column_names(header: &[u8]) -> Result<Vec<Option<String>>, (usize, Problem)> {
    let mut out: Vec<Option<String>> = Vec::new();
    for name in tokens(header) {
        if !name.iter().all(|b| b.is_ascii_graphic()) {
            return Err((
                1,
                Problem::BadName(String::from_utf8_lossy(name).into_owned()),
            ));
        }
        if name == ENTRIES_COLUMN {
            out.push(None);
            continue;
        }
        // Checked printable ASCII above.
        let name = String::from_utf8_lossy(name).into_owned();
        if out.iter().flatten().any(|n| *n == name) {
            return Err((1, Problem::DuplicateName(name)));
        }
        out.push(Some(name));
    }
    Ok(out)
}

/// One exported (statistic, CPU) counter.
#[derive(Debug)]
struct Stat {
    attrs: [KeyValue; 2],
    /// Index of its value in a row.
    column: usize,
    row: usize,
    value: Wide,
}

/// A gauge read from a one-number sysctl file.
#[derive(Debug)]
struct Gauge {
    file: ProcFile,
    value: Option<u64>,
}

impl Gauge {
    fn update(&mut self) -> Result<(), ConntrackError> {
        self.value = None;
        let text = match self.file.read() {
            Ok(t) => t,
            Err(source) => {
                return Err(ConntrackError::Read {
                    path: self.file.path().to_path_buf(),
                    source,
                });
            }
        };
        match dec_u64(text.trim_ascii()) {
            Some(v) => {
                self.value = Some(v);
                Ok(())
            }
            None => {
                let problem = Problem::NotDecimal(String::from_utf8_lossy(text).into_owned());
                Err(ConntrackError::Malformed {
                    path: self.file.path().to_path_buf(),
                    line: 1,
                    problem,
                })
            }
        }
    }
}

/// Connection tracking statistics from procfs.
#[derive(Debug)]
pub struct ConntrackCollector {
    stats_file: ProcFile,
    possible: ProcFile,
    count: Gauge,
    max: Gauge,
    /// The header line the stats were built for.
    header: Vec<u8>,
    rows: usize,
    columns: usize,
    stats: Vec<Stat>,
    scratch: Vec<u64>,
    /// The statistics file was missing at the last read.
    absent: Option<bool>,
}

impl ConntrackCollector {
    pub fn new(config: &ConntrackConfig) -> Result<ConntrackCollector, ConntrackError> {
        let sys = config.proc_root.join("sys/net/netfilter");
        Ok(ConntrackCollector {
            stats_file: ProcFile::new(config.proc_root.join("net/stat/nf_conntrack"), 4096)?,
            possible: ProcFile::new(config.sys_root.join("devices/system/cpu/possible"), 64)?,
            count: Gauge {
                file: ProcFile::new(sys.join("nf_conntrack_count"), 32)?,
                value: None,
            },
            max: Gauge {
                file: ProcFile::new(sys.join("nf_conntrack_max"), 32)?,
                value: None,
            },
            header: Vec::new(),
            rows: 0,
            columns: 0,
            stats: Vec::new(),
            scratch: Vec::new(),
            absent: None,
        })
    }

    /// Whether conntrack was present at the last read.
    #[cfg(test)]
    pub(crate) fn present(&self) -> bool {
        self.absent == Some(false)
    }

    /// Number of (statistic, CPU) counters exported.
    #[cfg(any(test, feature = "internals"))]
    pub fn exported(&self) -> usize {
        self.stats.len()
    }

    fn malformed(&self, (line, problem): (usize, Problem)) -> ConntrackError {
        ConntrackError::Malformed {
            path: self.stats_file.path().to_path_buf(),
            line,
            problem,
        }
    }

    pub(crate) fn update(&mut self) -> Result<(), ConntrackError> {
        let text = match self.stats_file.read() {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.absent != Some(true) {
                    tracing::info!(
                        path = %self.stats_file.path().display(),
                        "conntrack: nf_conntrack is not loaded (file absent): no conntrack \
                         metrics until it is; the agent never loads it"
                    );
                }
                self.absent = Some(true);
                self.stats.clear();
                self.header.clear();
                self.count.value = None;
                self.max.value = None;
                return Ok(());
            }
            Err(source) => {
                return Err(ConntrackError::Read {
                    path: self.stats_file.path().to_path_buf(),
                    source,
                });
            }
        };
        if self.absent == Some(true) {
            tracing::info!("conntrack: nf_conntrack is loaded now: collecting");
        }
        self.absent = Some(false);
        let parsed = parse_stats(text, &mut self.scratch);
        let (header, columns) = match parsed {
            Ok(p) => p,
            Err(p) => return Err(self.malformed(p)),
        };
        let rows = self.scratch.len() / columns;
        if header == self.header.as_slice() && rows == self.rows {
            for s in &mut self.stats {
                s.value.update(self.scratch[s.row * columns + s.column]);
            }
        } else {
            let names = column_names(header);
            if names.is_ok() {
                self.header.clear();
                self.header.extend_from_slice(header);
            }
            let names = names.map_err(|p| self.malformed(p))?;
            self.rebuild(&names, rows, columns);
        }
        let count = self.count.update();
        let max = self.max.update();
        count.and(max)
    }

    fn rebuild(&mut self, names: &[Option<String>], rows: usize, columns: usize) {
        let mut cpus = Vec::new();
        let listed = match self.possible.read() {
            Ok(text) => parse_cpu_list(text, &mut cpus).is_some(),
            Err(_) => false,
        };
        if !listed || cpus.len() < rows {
            cpus = (0..rows as u32).collect();
        }
        self.stats.clear();
        for (row, &cpu) in cpus.iter().enumerate().take(rows) {
            for (column, name) in names.iter().enumerate() {
                let Some(name) = name else { continue };
                self.stats.push(Stat {
                    attrs: [
                        KeyValue::new(ATTR_STAT, name.clone()),
                        KeyValue::new(ATTR_CPU, i64::from(cpu)),
                    ],
                    column,
                    row,
                    value: Wide::new(self.scratch[row * columns + column]),
                });
            }
        }
        self.rows = rows;
        self.columns = columns;
    }
}

impl ProcCollector for ConntrackCollector {
    const NAME: &'static str = "conntrack";
    const METRICS: &'static [&'static Metric] = METRICS;
    type Error = ConntrackError;

    fn read(&mut self) -> Result<(), ConntrackError> {
        self.update()
    }

    fn points(&self, visitor: &mut dyn Visitor) {
        if let Some(v) = self.count.value {
            visitor.point(&CONNTRACK_ENTRIES, &[], Number::U64(v));
        }
        if let Some(v) = self.max.value {
            visitor.point(&CONNTRACK_LIMIT, &[], Number::U64(v));
        }
        for s in &self.stats {
            visitor.point(&CONNTRACK_STAT, &s.attrs, Number::U64(s.value.get()));
        }
    }
}
