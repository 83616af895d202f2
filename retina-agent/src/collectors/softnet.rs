//! The `softnet` collector: the per-CPU receive backlog statistics of
//! `/proc/net/softnet_stat` (one line per online CPU, `%08x` columns).
//!
//! # Column layouts
//!
//! The kernel has only ever appended columns (versions approximate: the collector goes by
//! the column count alone):
//!
//! | columns | kernels | what they are |
//! |---|---|---|
//! | 9 | 2.6 before RPS | processed, dropped, time_squeeze, 5 zeros (fastroute), cpu_collision |
//! | 10 | 2.6.35+ | + received_rps |
//! | 11 | 3.11+ | + flow_limit_count |
//! | 13 | 5.10+ | + backlog length (input + process queue), CPU number |
//! | 15 | 6.x | + input queue length, process queue length |
//!
//! A value the layout lacks is not exported (never a 0). Lines with another count than
//! the first, fewer than 9 columns, or a token that is not hexadecimal make the whole read
//! an error naming the file and line; the previous values stay.
//!
//! # CPU numbers
//!
//! Rows are the online CPUs in ascending order. From 5.10 on the kernel prints the CPU
//! number (column 13); on older layouts the collector maps row N to the N-th CPU of
//! `/sys/devices/system/cpu/online`, read again whenever the number of rows changes.
//!
//! # Counters
//!
//! The kernel's counters are 32 bits and wrap; they are exported widened to 64 bits
//! ([`Wide`]), so a wrap between two cycles never looks like a reset. The file is of the
//! agent's network namespace, but its contents are not per namespace (the backlog is per
//! CPU).

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use opentelemetry::KeyValue;
use serde::Deserialize;

use crate::{
    collectors::{
        ProcCollector,
        procfile::{NulPath, ProcFile, Wide, hex_u64, parse_cpu_list},
    },
    model::{Kind, Metric, Number, Visitor},
};

pub(crate) const SOFTNET_PROCESSED: Metric = Metric {
    name: "retina.softnet.processed",
    unit: "{packet}",
    description: "Packets the CPU's receive softirq processed (/proc/net/softnet_stat column 1)",
    kind: Kind::Counter,
};
pub(crate) const SOFTNET_DROPPED: Metric = Metric {
    name: "retina.softnet.dropped",
    unit: "{packet}",
    description: "Packets dropped because the CPU's input backlog was full \
                  (netdev_max_backlog; softnet_stat column 2)",
    kind: Kind::Counter,
};
pub(crate) const SOFTNET_TIME_SQUEEZE: Metric = Metric {
    name: "retina.softnet.time_squeeze",
    unit: "{event}",
    description: "Times the receive softirq stopped with work left, out of budget or time \
                  (netdev_budget; softnet_stat column 3)",
    kind: Kind::Counter,
};
pub(crate) const SOFTNET_RECEIVED_RPS: Metric = Metric {
    name: "retina.softnet.received_rps",
    unit: "{packet}",
    description: "Times this CPU was woken to process packets steered to it by RPS/RFS \
                  (softnet_stat column 10; Linux 2.6.35+)",
    kind: Kind::Counter,
};
pub(crate) const SOFTNET_FLOW_LIMIT: Metric = Metric {
    name: "retina.softnet.flow_limit_count",
    unit: "{packet}",
    description: "Packets dropped by the per-flow backlog limit (net.core.flow_limit_*; \
                  softnet_stat column 11; Linux 3.11+)",
    kind: Kind::Counter,
};
pub(crate) const SOFTNET_BACKLOG: Metric = Metric {
    name: "retina.softnet.backlog.length",
    unit: "{packet}",
    description: "Packets waiting in the CPU's input and process queues \
                  (softnet_stat column 12; Linux 5.10+)",
    kind: Kind::Gauge,
};

static METRICS: &[&Metric] = &[
    &SOFTNET_PROCESSED,
    &SOFTNET_DROPPED,
    &SOFTNET_TIME_SQUEEZE,
    &SOFTNET_RECEIVED_RPS,
    &SOFTNET_FLOW_LIMIT,
    &SOFTNET_BACKLOG,
];

/// Attribute key: the CPU number.
pub(crate) const ATTR_CPU: &str = "cpu";

/// Fewest columns any kernel printed.
const MIN_COLUMNS: usize = 9;
/// Columns parsed at most (later ones, from kernels newer than this agent, are ignored).
const MAX_COLUMNS: usize = 16;
const COL_RPS: usize = 9;
const COL_FLOW_LIMIT: usize = 10;
const COL_BACKLOG: usize = 11;
const COL_CPU: usize = 12;

/// `[softnet]` configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SoftnetConfig {
    /// Whether the collector runs (default `true`).
    pub(crate) enabled: bool,
    /// Where procfs is mounted (default `/proc`); reads `PROC_ROOT/net/softnet_stat`.
    pub(crate) proc_root: PathBuf,
    /// Where sysfs is mounted (default `/sys`), for the online CPU list of kernels before
    /// 5.10.
    pub(crate) sys_root: PathBuf,
}

impl Default for SoftnetConfig {
    fn default() -> Self {
        SoftnetConfig {
            enabled: true,
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

/// What is wrong with the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("file is empty")]
    Empty,
    #[error("{found} columns, expected at least {MIN_COLUMNS}")]
    TooFewColumns { found: usize },
    #[error("{found} columns, but the first line has {first}")]
    ColumnCount { found: usize, first: usize },
    #[error("column {column}: `{text}` is not a hexadecimal number")]
    NotHex { column: usize, text: String },
    #[error("CPU number {cpu} appears twice")]
    DuplicateCpu { cpu: u64 },
    #[error("CPU number {cpu} is out of range")]
    CpuRange { cpu: u64 },
}

/// Why the `softnet` collector could not be built or a cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum SoftnetError {
    #[error("softnet collector: {0}")]
    Path(#[from] NulPath),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {problem}", path.display())]
    Malformed {
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        problem: Problem,
    },
}

/// One line of the file, parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawRow {
    pub columns: usize,
    pub(crate) values: [u64; MAX_COLUMNS],
}

impl RawRow {
    fn col(&self, i: usize) -> Option<u64> {
        (i < self.columns).then(|| self.values[i])
    }
}

/// Parses the whole file into `rows` (cleared first). Blank lines are skipped.
pub fn parse(text: &[u8], rows: &mut Vec<RawRow>) -> Result<(), (usize, Problem)> {
    rows.clear();
    let mut first = None;
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let mut row = RawRow::default();
        for token in line
            .split(|b| b.is_ascii_whitespace())
            .filter(|t| !t.is_empty())
        {
            if row.columns < MAX_COLUMNS {
                row.values[row.columns] = hex_u64(token).ok_or_else(|| {
                    (
                        line_no,
                        Problem::NotHex {
                            column: row.columns + 1,
                            text: String::from_utf8_lossy(token).into_owned(),
                        },
                    )
                })?;
            }
            row.columns += 1;
        }
        if row.columns == 0 {
            continue;
        }
        if row.columns < MIN_COLUMNS {
            return Err((line_no, Problem::TooFewColumns { found: row.columns }));
        }
        match first {
            None => first = Some(row.columns),
            Some(f) if f != row.columns => {
                return Err((
                    line_no,
                    Problem::ColumnCount {
                        found: row.columns,
                        first: f,
                    },
                ));
            }
            Some(_) => {}
        }
        row.columns = row.columns.min(MAX_COLUMNS);
        rows.push(row);
    }
    if rows.is_empty() {
        return Err((1, Problem::Empty));
    }
    Ok(())
}

/// The exported state of one CPU.
#[derive(Debug)]
struct Cpu {
    cpu: u32,
    attrs: [KeyValue; 1],
    processed: Wide,
    dropped: Wide,
    time_squeeze: Wide,
    received_rps: Option<Wide>,
    flow_limit: Option<Wide>,
    backlog: Option<u64>,
}

/// Per-CPU backlog statistics from procfs.
#[derive(Debug)]
pub struct SoftnetCollector {
    file: ProcFile,
    online: ProcFile,
    scratch: Vec<RawRow>,
    cpu_ids: Vec<u32>,
    /// Columns of the layout the CPUs were built for.
    columns: usize,
    cpus: Vec<Cpu>,
}

impl SoftnetCollector {
    pub fn new(config: &SoftnetConfig) -> Result<SoftnetCollector, SoftnetError> {
        Ok(SoftnetCollector {
            file: ProcFile::new(config.proc_root.join("net/softnet_stat"), 4096)?,
            online: ProcFile::new(config.sys_root.join("devices/system/cpu/online"), 64)?,
            scratch: Vec::new(),
            cpu_ids: Vec::new(),
            columns: 0,
            cpus: Vec::new(),
        })
    }

    /// Number of CPUs currently exported.
    #[cfg(any(test, feature = "internals"))]
    pub fn cpus(&self) -> usize {
        self.cpus.len()
    }

    /// Column count of the file at the last successful read (0 before).
    #[cfg(any(test, feature = "internals"))]
    pub fn columns(&self) -> usize {
        self.columns
    }

    fn malformed(&self, (line, problem): (usize, Problem)) -> SoftnetError {
        SoftnetError::Malformed {
            path: self.file.path().to_path_buf(),
            line,
            problem,
        }
    }

    pub(crate) fn update(&mut self) -> Result<(), SoftnetError> {
        let text = match self.file.read() {
            Ok(t) => t,
            Err(source) => {
                return Err(SoftnetError::Read {
                    path: self.file.path().to_path_buf(),
                    source,
                });
            }
        };
        let parsed = parse(text, &mut self.scratch);
        parsed.map_err(|p| self.malformed(p))?;
        let columns = self.scratch[0].columns;
        let same = columns == self.columns
            && self.scratch.len() == self.cpus.len()
            && (columns <= COL_CPU
                || self
                    .scratch
                    .iter()
                    .zip(&self.cpus)
                    .all(|(r, c)| r.values[COL_CPU] == u64::from(c.cpu)));
        if same {
            for (row, cpu) in self.scratch.iter().zip(self.cpus.iter_mut()) {
                cpu.apply(row);
            }
            return Ok(());
        }
        self.rebuild()
    }

    /// A new layout or CPU set: CPU numbers from the file or the online list, fresh state.
    fn rebuild(&mut self) -> Result<(), SoftnetError> {
        let columns = self.scratch[0].columns;
        self.cpu_ids.clear();
        if columns > COL_CPU {
            for (i, row) in self.scratch.iter().enumerate() {
                let cpu = row.values[COL_CPU];
                let cpu = u32::try_from(cpu)
                    .map_err(|_| self.malformed((i + 1, Problem::CpuRange { cpu })))?;
                if self.cpu_ids.contains(&cpu) {
                    return Err(self.malformed((i + 1, Problem::DuplicateCpu { cpu: cpu.into() })));
                }
                self.cpu_ids.push(cpu);
            }
        } else {
            let online_path = self.online.path().display().to_string();
            let mut ids = std::mem::take(&mut self.cpu_ids);
            let listed = match self.online.read() {
                Ok(text) => parse_cpu_list(text, &mut ids).is_some(),
                Err(_) => false,
            };
            if !listed || ids.len() != self.scratch.len() {
                // No usable online list: rows in order, as the file has them.
                tracing::debug!(
                    path = online_path,
                    "softnet: online CPU list unusable; numbering rows"
                );
                ids.clear();
                ids.extend(0..self.scratch.len() as u32);
            }
            self.cpu_ids = ids;
        }
        self.cpus = self
            .scratch
            .iter()
            .zip(&self.cpu_ids)
            .map(|(row, &cpu)| Cpu::new(cpu, row))
            .collect();
        self.columns = columns;
        Ok(())
    }
}

impl Cpu {
    fn new(cpu: u32, row: &RawRow) -> Cpu {
        Cpu {
            cpu,
            attrs: [KeyValue::new(ATTR_CPU, i64::from(cpu))],
            processed: Wide::new(row.values[0]),
            dropped: Wide::new(row.values[1]),
            time_squeeze: Wide::new(row.values[2]),
            received_rps: row.col(COL_RPS).map(Wide::new),
            flow_limit: row.col(COL_FLOW_LIMIT).map(Wide::new),
            backlog: row.col(COL_BACKLOG),
        }
    }

    fn apply(&mut self, row: &RawRow) {
        self.processed.update(row.values[0]);
        self.dropped.update(row.values[1]);
        self.time_squeeze.update(row.values[2]);
        if let (Some(w), Some(v)) = (&mut self.received_rps, row.col(COL_RPS)) {
            w.update(v);
        }
        if let (Some(w), Some(v)) = (&mut self.flow_limit, row.col(COL_FLOW_LIMIT)) {
            w.update(v);
        }
        self.backlog = row.col(COL_BACKLOG);
    }
}

impl ProcCollector for SoftnetCollector {
    const NAME: &'static str = "softnet";
    const METRICS: &'static [&'static Metric] = METRICS;
    type Error = SoftnetError;

    fn read(&mut self) -> Result<(), SoftnetError> {
        self.update()
    }

    fn points(&self, visitor: &mut dyn Visitor) {
        for c in &self.cpus {
            let a = &c.attrs[..];
            visitor.point(&SOFTNET_PROCESSED, a, Number::U64(c.processed.get()));
            visitor.point(&SOFTNET_DROPPED, a, Number::U64(c.dropped.get()));
            visitor.point(&SOFTNET_TIME_SQUEEZE, a, Number::U64(c.time_squeeze.get()));
            if let Some(w) = c.received_rps {
                visitor.point(&SOFTNET_RECEIVED_RPS, a, Number::U64(w.get()));
            }
            if let Some(w) = c.flow_limit {
                visitor.point(&SOFTNET_FLOW_LIMIT, a, Number::U64(w.get()));
            }
            if let Some(v) = c.backlog {
                visitor.point(&SOFTNET_BACKLOG, a, Number::U64(v));
            }
        }
    }
}
