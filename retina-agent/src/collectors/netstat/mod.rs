//! The `netstat` collector: the kernel's protocol statistics from `/proc/net/netstat`,
//! `/proc/net/snmp` and `/proc/net/snmp6` (of the reading process's network namespace).
//!
//! # Metrics
//!
//! The kernel reports hundreds of fields, and their set differs between kernel versions, so
//! they are not one metric name each. Every field is a data point of one of two metrics,
//! identified by two attributes:
//!
//! | name | kind | unit | what |
//! |---|---|---|---|
//! | `retina.netstat.stat` | cumulative sum | `1` | monotonic counters (almost every field) |
//! | `retina.netstat.state` | gauge | `1` | the few fields that are states or settings |
//!
//! Attributes:
//! - `netstat.group`: the protocol group as the kernel names it: `Ip`, `Icmp`, `IcmpMsg`,
//!   `Tcp`, `Udp`, `UdpLite` (`snmp`), `TcpExt`, `IpExt`, `MPTcpExt` (`netstat`), `Ip6`,
//!   `Icmp6`, `Udp6`, `UdpLite6` (`snmp6`: the name up to its first `6`).
//! - `netstat.field`: the field name without its group, e.g. `ListenDrops` (from
//!   `TcpExt: ... ListenDrops ...`) or `InReceives` (from `Ip6InReceives`).
//!
//! So `TcpExt: ListenDrops` is `retina.netstat.stat{netstat.field="ListenDrops",
//! netstat.group="TcpExt"}` (Prometheus: `retina_netstat_stat_total{netstat_field=
//! "ListenDrops",netstat_group="TcpExt"}`; attributes in key order, `model::in_key_order`).
//!
//! Gauges (see [`GAUGES`]): `Ip:Forwarding`, `Ip:DefaultTTL`, `Tcp:RtoAlgorithm`,
//! `Tcp:RtoMin`, `Tcp:RtoMax`, `Tcp:MaxConn` (`-1`: no limit), `Tcp:CurrEstab`,
//! `MPTcpExt:MPCurrEstab`. Gauge values are exported as `f64`, counters as `u64`.
//!
//! The `include`/`exclude` patterns of [`NetstatConfig`] match `GROUP:FIELD`
//! (`TcpExt:ListenDrops`, `Ip6:InReceives`), anchored.
//!
//! # Cycle
//!
//! Each file is read into a buffer reused across cycles (opened through a path converted to
//! a C string once) and parsed in place. The first cycle builds a table of slots (one per
//! field, attributes built once); later cycles compare each header line (or, for `snmp6`,
//! each name) byte for byte with the table's and update values by position, allocating
//! nothing. A changed layout (a new `IcmpMsg` type, another kernel) rebuilds the table.
//!
//! A malformed file (missing value line, header/value count mismatch, non-number, empty
//! file, negative counter) is a [`NetstatError`] with its path and line, and none of its
//! values is updated in that cycle: the previous values stay. A missing `snmp6` is normal
//! (IPv6 disabled) and only means no data from it; a missing `netstat` or `snmp` is an
//! error.

mod parse;
#[cfg(test)]
mod tests;
pub mod workloads;

use std::{ffi::CString, io, os::unix::ffi::OsStrExt, path::PathBuf};

use opentelemetry::KeyValue;
use serde::Deserialize;

use self::parse::{build_lines, build_pairs, check_values, scan_lines, scan_pairs, to_number};
use crate::{
    collectors::ProcCollector,
    filter::{NameFilter, Pattern},
    model::{Kind, Metric, Number, Visitor},
};

pub(crate) const NETSTAT_COUNTER: Metric = Metric {
    name: "retina.netstat.stat",
    unit: "1",
    description: "Kernel protocol counters from /proc/net/netstat, /proc/net/snmp and \
                  /proc/net/snmp6, by netstat.group and netstat.field",
    kind: Kind::Counter,
};
pub(crate) const NETSTAT_GAUGE: Metric = Metric {
    name: "retina.netstat.state",
    unit: "{value}",
    description: "Kernel protocol states and settings from /proc/net/snmp and \
                  /proc/net/netstat (e.g. Tcp CurrEstab, Tcp MaxConn), by netstat.group and \
                  netstat.field",
    kind: Kind::Gauge,
};

static METRICS: &[&Metric] = &[&NETSTAT_COUNTER, &NETSTAT_GAUGE];

/// Attribute key: the protocol group (`TcpExt`, `Ip6`, ...).
pub(crate) const ATTR_GROUP: &str = "netstat.group";
/// Attribute key: the field within its group (`ListenDrops`, `InReceives`, ...).
pub(crate) const ATTR_FIELD: &str = "netstat.field";

/// `(group, field)` pairs that are not monotonic counters.
pub(crate) const GAUGES: &[(&str, &str)] = &[
    ("Ip", "Forwarding"),
    ("Ip", "DefaultTTL"),
    ("Tcp", "RtoAlgorithm"),
    ("Tcp", "RtoMin"),
    ("Tcp", "RtoMax"),
    ("Tcp", "MaxConn"),
    ("Tcp", "CurrEstab"),
    ("MPTcpExt", "MPCurrEstab"),
];

/// `[netstat]` configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NetstatConfig {
    /// Whether the collector runs (default `true`).
    pub enabled: bool,
    /// Where procfs is mounted (default `/proc`); files are read from `PROC_ROOT/net/`.
    pub proc_root: PathBuf,
    /// Fields to export, as anchored regular expressions over `GROUP:FIELD`
    /// (`TcpExt:ListenDrops`, `Tcp:.*`); empty = all.
    pub include: Vec<Pattern>,
    /// Fields never exported (same syntax); wins over `include`.
    pub exclude: Vec<Pattern>,
    /// `[netstat.workloads]`: the same counters per workload namespace.
    pub workloads: workloads::WorkloadNetstatConfig,
}

impl Default for NetstatConfig {
    fn default() -> Self {
        NetstatConfig {
            enabled: true,
            proc_root: PathBuf::from("/proc"),
            include: Vec::new(),
            exclude: Vec::new(),
            workloads: workloads::WorkloadNetstatConfig::default(),
        }
    }
}

/// What is wrong in a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("file is empty")]
    Empty,
    #[error("header line of group {group} has no value line")]
    MissingValueLine { group: String },
    #[error("line has no `Group:` prefix")]
    NoPrefix,
    #[error("value line of group {values} follows a header line of group {header}")]
    PrefixMismatch { header: String, values: String },
    #[error("group {group}: {names} field names but {values} values")]
    CountMismatch {
        group: String,
        names: usize,
        values: usize,
    },
    #[error("field {field}: `{text}` is not a number in the range of i64 or u64")]
    NotANumber { field: String, text: String },
    #[error("counter {field} is negative ({value})")]
    NegativeCounter { field: String, value: i64 },
    #[error("expected `NAME VALUE`, found {tokens} fields")]
    Snmp6Fields { tokens: usize },
    #[error("field name `{0}` is not UTF-8")]
    NotUtf8(String),
    #[error("field {field} of group {group} appears twice")]
    Duplicate { group: String, field: String },
}

/// Why the `netstat` collector could not be built or a cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum NetstatError {
    #[error("path {} contains a NUL byte", path.display())]
    Path { path: PathBuf },
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

/// How a file lays out its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `netstat`, `snmp`: a `Group: Name Name ...` line, then `Group: 1 2 ...`.
    Pairs,
    /// `snmp6`: one `Name value` per line.
    Lines,
}

/// One exported field.
#[derive(Debug)]
struct Slot {
    /// `GROUP:FIELD`, for the filter and error messages.
    name: Box<str>,
    /// `[group, field]`; `None` when the filter rejects the field.
    attrs: Option<[KeyValue; 2]>,
    kind: Kind,
    value: Number,
}

/// A value parsed this cycle and the line it came from.
#[derive(Clone, Copy, Debug)]
struct Raw {
    value: i128,
    line: usize,
}

/// Everything kept for one file.
#[derive(Debug)]
struct Source {
    format: Format,
    path: PathBuf,
    cpath: CString,
    /// A missing file is normal (`snmp6` without IPv6).
    optional: bool,
    /// The file's bytes of the last read; capacity kept.
    buf: Vec<u8>,
    /// Header lines (`Pairs`) or names (`Lines`) the slots were built for, each followed
    /// by `\n`.
    layout: Vec<u8>,
    slots: Vec<Slot>,
    /// Values of this cycle, in file order, before they are committed.
    scratch: Vec<Raw>,
    /// The file was missing at the last read.
    absent: bool,
    /// Logging of this file's errors when another file's error is the one returned.
    streak: crate::ratelimit::Streak,
    /// Bumped whenever `slots` is replaced (a new layout), for readers that keep
    /// something per slot (`workloads`).
    generation: u64,
}

/// Protocol statistics from procfs.
#[derive(Debug)]
pub struct NetstatCollector {
    filter: NameFilter,
    sources: [Source; 3],
}

impl NetstatCollector {
    /// Prepares the field filter and the three file paths under `config.proc_root`.
    pub fn new(config: &NetstatConfig) -> Result<NetstatCollector, NetstatError> {
        let filter = NameFilter::new(&config.include, &config.exclude);
        let net = config.proc_root.join("net");
        Ok(NetstatCollector {
            filter,
            sources: [
                Source::new(net.join("netstat"), Format::Pairs, false)?,
                Source::new(net.join("snmp"), Format::Pairs, false)?,
                Source::new(net.join("snmp6"), Format::Lines, true)?,
            ],
        })
    }

    /// Reads and parses the three files. Every file is processed even if another fails;
    /// the first error is returned (later ones are logged).
    pub(crate) fn update(&mut self) -> Result<(), NetstatError> {
        let mut first = None;
        for source in &mut self.sources {
            match source.update(&self.filter) {
                Ok(()) => {
                    source.streak.ok();
                }
                // The first error goes to the agent, which logs it rate-limited.
                Err(e) if first.is_none() => {
                    source.streak.ok();
                    first = Some(e);
                }
                Err(e) => match source.streak.fail() {
                    Some(0) => tracing::warn!("netstat collector: {e}"),
                    Some(n) => {
                        tracing::warn!("netstat collector: still failing ({n} more failures): {e}")
                    }
                    None => {}
                },
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Number of data points currently exported.
    #[cfg(any(test, feature = "internals"))]
    pub fn exported(&self) -> usize {
        self.sources
            .iter()
            .flat_map(|s| &s.slots)
            .filter(|s| s.attrs.is_some())
            .count()
    }
}

impl ProcCollector for NetstatCollector {
    const NAME: &'static str = "netstat";
    const METRICS: &'static [&'static Metric] = METRICS;
    type Error = NetstatError;

    fn read(&mut self) -> Result<(), NetstatError> {
        self.update()
    }

    fn points(&self, visitor: &mut dyn Visitor) {
        for slot in self.sources.iter().flat_map(|s| &s.slots) {
            if let Some(attrs) = &slot.attrs {
                let metric = match slot.kind {
                    Kind::Counter => &NETSTAT_COUNTER,
                    Kind::Gauge => &NETSTAT_GAUGE,
                };
                visitor.point(metric, attrs, slot.value);
            }
        }
    }
}

impl Source {
    fn new(path: PathBuf, format: Format, optional: bool) -> Result<Source, NetstatError> {
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| NetstatError::Path { path: path.clone() })?;
        Ok(Source {
            format,
            path,
            cpath,
            optional,
            buf: Vec::with_capacity(16 * 1024),
            layout: Vec::new(),
            slots: Vec::new(),
            scratch: Vec::new(),
            absent: false,
            streak: crate::ratelimit::Streak::default(),
            generation: 0,
        })
    }

    fn malformed(&self, (line, problem): (usize, Problem)) -> NetstatError {
        NetstatError::Malformed {
            path: self.path.clone(),
            line,
            problem,
        }
    }

    fn update(&mut self, filter: &NameFilter) -> Result<(), NetstatError> {
        match crate::fsutil::read_regular_into(
            &self.cpath,
            &mut self.buf,
            crate::fsutil::PROC_MAX_BYTES,
        ) {
            Ok(()) => self.absent = false,
            Err(e) if self.optional && e.kind() == io::ErrorKind::NotFound => {
                if !self.absent {
                    tracing::debug!(path = %self.path.display(), "absent (IPv6 disabled?): no data from it");
                    self.absent = true;
                }
                self.layout.clear();
                self.slots.clear();
                self.generation += 1;
                return Ok(());
            }
            Err(source) => {
                return Err(NetstatError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        }
        self.parse(filter)
    }

    /// Parses `buf` (this cycle's bytes) into the slots: in place when the layout is the
    /// last one, else into a new table that replaces the old one only once validated.
    fn parse(&mut self, filter: &NameFilter) -> Result<(), NetstatError> {
        let same = match self.format {
            Format::Pairs => scan_pairs(&self.buf, &self.layout, &mut self.scratch),
            Format::Lines => scan_lines(&self.buf, &self.layout, &mut self.scratch),
        }
        .map_err(|p| self.malformed(p))?;
        if same && self.scratch.len() == self.slots.len() {
            check_values(&self.slots, &self.scratch).map_err(|p| self.malformed(p))?;
            for (slot, raw) in self.slots.iter_mut().zip(&self.scratch) {
                slot.value = to_number(slot.kind, raw.value);
            }
            return Ok(());
        }
        // New layout: build the table aside, validate, then swap it in.
        let (layout, mut slots) = match self.format {
            Format::Pairs => build_pairs(&self.buf, filter),
            Format::Lines => build_lines(&self.buf, filter),
        }
        .map_err(|p| self.malformed(p))?;
        if slots.len() != self.scratch.len() {
            // Cannot happen: both walks see the same validated bytes.
            return Err(self.malformed((
                1,
                Problem::CountMismatch {
                    group: String::new(),
                    names: slots.len(),
                    values: self.scratch.len(),
                },
            )));
        }
        check_values(&slots, &self.scratch).map_err(|p| self.malformed(p))?;
        for (slot, raw) in slots.iter_mut().zip(&self.scratch) {
            slot.value = to_number(slot.kind, raw.value);
        }
        self.layout = layout;
        self.slots = slots;
        self.generation += 1;
        Ok(())
    }
}

/// Parses successive reads of one file as the collector does, cycle after cycle (`snmp6`:
/// the `Lines` format of `/proc/net/snmp6`, else the `Pairs` format of `netstat` and
/// `snmp`); for each cycle, the number of data points the filter selects or the error.
/// The entry point of the fuzz target `procfs` (`fuzz/`) and of tests.
#[cfg(feature = "internals")]
pub fn parse_cycles(
    snmp6: bool,
    cycles: &[&[u8]],
    filter: &NameFilter,
) -> Vec<Result<usize, NetstatError>> {
    let format = if snmp6 { Format::Lines } else { Format::Pairs };
    let Ok(mut source) = Source::new(PathBuf::from("parse_cycles"), format, snmp6) else {
        return Vec::new();
    };
    cycles
        .iter()
        .map(|text| {
            source.buf.clear();
            source.buf.extend_from_slice(text);
            source.parse(filter)?;
            Ok(source.slots.iter().filter(|s| s.attrs.is_some()).count())
        })
        .collect()
}
