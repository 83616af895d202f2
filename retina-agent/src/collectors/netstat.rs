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
//! | `retina.netstat.counter` | cumulative sum | `1` | monotonic counters (almost every field) |
//! | `retina.netstat.gauge` | gauge | `1` | the few fields that are states or settings |
//!
//! Attributes:
//! - `netstat.group`: the protocol group as the kernel names it: `Ip`, `Icmp`, `IcmpMsg`,
//!   `Tcp`, `Udp`, `UdpLite` (`snmp`), `TcpExt`, `IpExt`, `MPTcpExt` (`netstat`), `Ip6`,
//!   `Icmp6`, `Udp6`, `UdpLite6` (`snmp6`: the name up to its first `6`).
//! - `netstat.field`: the field name without its group, e.g. `ListenDrops` (from
//!   `TcpExt: ... ListenDrops ...`) or `InReceives` (from `Ip6InReceives`).
//!
//! So `TcpExt: ListenDrops` is `retina.netstat.counter{netstat.group="TcpExt",
//! netstat.field="ListenDrops"}` (Prometheus: `retina_netstat_counter_total{netstat_group=
//! "TcpExt",netstat_field="ListenDrops"}`).
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

use std::{
    collections::HashSet, ffi::CString, io, os::unix::ffi::OsStrExt, path::PathBuf, sync::Arc,
};

use opentelemetry::KeyValue;
use serde::Deserialize;

use crate::{
    collectors::{CollectError, Collector},
    filter::{NameFilter, Pattern},
    links::Links,
    metrics::{Kind, Metric, Number, Visitor},
};

pub const NETSTAT_COUNTER: Metric = Metric {
    name: "retina.netstat.counter",
    unit: "1",
    description: "Kernel protocol counters from /proc/net/netstat, /proc/net/snmp and \
                  /proc/net/snmp6, by netstat.group and netstat.field",
    kind: Kind::Counter,
};
pub const NETSTAT_GAUGE: Metric = Metric {
    name: "retina.netstat.gauge",
    unit: "{value}",
    description: "Kernel protocol states and settings from /proc/net/snmp and \
                  /proc/net/netstat (e.g. Tcp CurrEstab, Tcp MaxConn), by netstat.group and \
                  netstat.field",
    kind: Kind::Gauge,
};

static METRICS: &[&Metric] = &[&NETSTAT_COUNTER, &NETSTAT_GAUGE];

/// Attribute key: the protocol group (`TcpExt`, `Ip6`, ...).
pub const ATTR_GROUP: &str = "netstat.group";
/// Attribute key: the field within its group (`ListenDrops`, `InReceives`, ...).
pub const ATTR_FIELD: &str = "netstat.field";

/// `(group, field)` pairs that are not monotonic counters.
pub const GAUGES: &[(&str, &str)] = &[
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
}

impl Default for NetstatConfig {
    fn default() -> Self {
        NetstatConfig {
            enabled: true,
            proc_root: PathBuf::from("/proc"),
            include: Vec::new(),
            exclude: Vec::new(),
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
    pub fn update(&mut self) -> Result<(), NetstatError> {
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
    pub fn exported(&self) -> usize {
        self.sources
            .iter()
            .flat_map(|s| &s.slots)
            .filter(|s| s.attrs.is_some())
            .count()
    }
}

impl Collector for NetstatCollector {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        METRICS
    }

    fn collect(&mut self, _links: &Links) -> Result<(), CollectError> {
        Ok(self.update()?)
    }

    fn visit(&self, visitor: &mut dyn Visitor) {
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
        Ok(())
    }
}

/// Parses successive reads of one file as the collector does, cycle after cycle (`snmp6`:
/// the `Lines` format of `/proc/net/snmp6`, else the `Pairs` format of `netstat` and
/// `snmp`); for each cycle, the number of data points the filter selects or the error.
/// The entry point of the fuzz target `procfs` (`fuzz/`) and of tests.
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

/// Non-empty lines with their 1-based numbers.
fn lines(buf: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    buf.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
}

fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(u8::is_ascii_whitespace)
        .filter(|t| !t.is_empty())
}

/// `Group: rest` -> (`Group`, `rest`).
fn split_prefix(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let prefix = &line[..colon];
    (!prefix.is_empty() && !prefix.iter().any(u8::is_ascii_whitespace))
        .then(|| (prefix, &line[colon + 1..]))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A decimal number, optionally negative, within `i64::MIN..=u64::MAX`.
fn parse_num(t: &[u8]) -> Option<i128> {
    let (neg, digits) = match t {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, t),
    };
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i128::from(d - b'0');
    }
    let v = if neg { -v } else { v };
    (i128::from(i64::MIN)..=i128::from(u64::MAX))
        .contains(&v)
        .then_some(v)
}

/// Validates a `Pairs` file and collects its values into `scratch`. Returns whether its
/// header lines are exactly `layout`. Allocates nothing unless it fails.
fn scan_pairs(buf: &[u8], layout: &[u8], scratch: &mut Vec<Raw>) -> Result<bool, (usize, Problem)> {
    scratch.clear();
    let mut lines = lines(buf);
    let mut cursor = 0;
    let mut same = true;
    let mut any = false;
    while let Some((hline, header)) = lines.next() {
        any = true;
        let (hprefix, names) = split_prefix(header).ok_or((hline, Problem::NoPrefix))?;
        let Some((vline, values)) = lines.next() else {
            return Err((
                hline,
                Problem::MissingValueLine {
                    group: text(hprefix),
                },
            ));
        };
        let (vprefix, values) = split_prefix(values).ok_or((vline, Problem::NoPrefix))?;
        if hprefix != vprefix {
            return Err((
                vline,
                Problem::PrefixMismatch {
                    header: text(hprefix),
                    values: text(vprefix),
                },
            ));
        }
        let (mut n, mut v) = (tokens(names), tokens(values));
        let mut count = 0;
        loop {
            match (n.next(), v.next()) {
                (Some(name), Some(value)) => {
                    let value = parse_num(value).ok_or_else(|| {
                        (
                            vline,
                            Problem::NotANumber {
                                field: format!("{}:{}", text(hprefix), text(name)),
                                text: text(value),
                            },
                        )
                    })?;
                    scratch.push(Raw { value, line: vline });
                    count += 1;
                }
                (None, None) => break,
                (name, value) => {
                    let names = count + usize::from(name.is_some()) + n.count();
                    let values = count + usize::from(value.is_some()) + v.count();
                    return Err((
                        vline,
                        Problem::CountMismatch {
                            group: text(hprefix),
                            names,
                            values,
                        },
                    ));
                }
            }
        }
        if same {
            let end = cursor + header.len();
            if layout.get(cursor..end) == Some(header) && layout.get(end) == Some(&b'\n') {
                cursor = end + 1;
            } else {
                same = false;
            }
        }
    }
    if !any {
        return Err((1, Problem::Empty));
    }
    Ok(same && cursor == layout.len())
}

/// Validates a `Lines` (`snmp6`) file and collects its values into `scratch`. Returns
/// whether its names are exactly `layout`. Allocates nothing unless it fails.
fn scan_lines(buf: &[u8], layout: &[u8], scratch: &mut Vec<Raw>) -> Result<bool, (usize, Problem)> {
    scratch.clear();
    let mut cursor = 0;
    let mut same = true;
    for (line, l) in lines(buf) {
        let mut t = tokens(l);
        let (Some(name), Some(value), None) = (t.next(), t.next(), t.next()) else {
            return Err((
                line,
                Problem::Snmp6Fields {
                    tokens: tokens(l).count(),
                },
            ));
        };
        let value = parse_num(value).ok_or_else(|| {
            (
                line,
                Problem::NotANumber {
                    field: text(name),
                    text: text(value),
                },
            )
        })?;
        scratch.push(Raw { value, line });
        if same {
            let end = cursor + name.len();
            if layout.get(cursor..end) == Some(name) && layout.get(end) == Some(&b'\n') {
                cursor = end + 1;
            } else {
                same = false;
            }
        }
    }
    if scratch.is_empty() {
        return Err((1, Problem::Empty));
    }
    Ok(same && cursor == layout.len())
}

/// Builds the slots of a validated `Pairs` file.
fn build_pairs(buf: &[u8], filter: &NameFilter) -> Result<(Vec<u8>, Vec<Slot>), (usize, Problem)> {
    let mut b = Builder::new(filter);
    let mut lines = lines(buf);
    while let (Some((hline, header)), Some(_)) = (lines.next(), lines.next()) {
        let (group, names) = split_prefix(header).ok_or((hline, Problem::NoPrefix))?;
        b.layout.extend_from_slice(header);
        b.layout.push(b'\n');
        let group = b.group(group, hline)?;
        for name in tokens(names) {
            b.field(&group, name, hline)?;
        }
    }
    Ok((b.layout, b.slots))
}

/// Builds the slots of a validated `Lines` (`snmp6`) file.
fn build_lines(buf: &[u8], filter: &NameFilter) -> Result<(Vec<u8>, Vec<Slot>), (usize, Problem)> {
    let mut b = Builder::new(filter);
    for (line, l) in lines(buf) {
        let Some(name) = tokens(l).next() else {
            continue;
        };
        b.layout.extend_from_slice(name);
        b.layout.push(b'\n');
        let (group, field) = split_snmp6(name);
        let group = b.group(group, line)?;
        b.field(&group, field, line)?;
    }
    Ok((b.layout, b.slots))
}

/// `Ip6InReceives` -> (`Ip6`, `InReceives`): the group runs up to the first `6`. A name
/// without a `6` inside it goes to group `snmp6`, whole.
fn split_snmp6(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().position(|&b| b == b'6') {
        Some(i) if i > 0 && i + 1 < name.len() => (&name[..=i], &name[i + 1..]),
        _ => (b"snmp6", name),
    }
}

/// Accumulates a new table (allocation is expected here).
struct Builder<'f> {
    filter: &'f NameFilter,
    layout: Vec<u8>,
    slots: Vec<Slot>,
    seen: HashSet<(Arc<str>, Arc<str>)>,
    last_group: Option<Arc<str>>,
}

impl<'f> Builder<'f> {
    fn new(filter: &'f NameFilter) -> Self {
        Builder {
            filter,
            layout: Vec::new(),
            slots: Vec::new(),
            seen: HashSet::new(),
            last_group: None,
        }
    }

    /// The group name as a shared string (consecutive fields share one allocation).
    fn group(&mut self, raw: &[u8], line: usize) -> Result<Arc<str>, (usize, Problem)> {
        if let Some(g) = &self.last_group
            && g.as_bytes() == raw
        {
            return Ok(g.clone());
        }
        let g: Arc<str> = std::str::from_utf8(raw)
            .map_err(|_| (line, Problem::NotUtf8(text(raw))))?
            .into();
        self.last_group = Some(g.clone());
        Ok(g)
    }

    fn field(&mut self, group: &Arc<str>, raw: &[u8], line: usize) -> Result<(), (usize, Problem)> {
        let field: Arc<str> = std::str::from_utf8(raw)
            .map_err(|_| (line, Problem::NotUtf8(text(raw))))?
            .into();
        if !self.seen.insert((group.clone(), field.clone())) {
            return Err((
                line,
                Problem::Duplicate {
                    group: group.to_string(),
                    field: field.to_string(),
                },
            ));
        }
        let kind = if GAUGES.contains(&(&**group, &*field)) {
            Kind::Gauge
        } else {
            Kind::Counter
        };
        let name: Box<str> = format!("{group}:{field}").into();
        let selected = self.filter.matches(&name);
        self.slots.push(Slot {
            name,
            attrs: selected.then(|| {
                [
                    KeyValue::new(ATTR_GROUP, group.clone()),
                    KeyValue::new(ATTR_FIELD, field),
                ]
            }),
            kind,
            value: Number::U64(0),
        });
        Ok(())
    }
}

/// Fails if a counter is negative (gauges may be: `Tcp: MaxConn` is -1).
fn check_values(slots: &[Slot], values: &[Raw]) -> Result<(), (usize, Problem)> {
    for (slot, raw) in slots.iter().zip(values) {
        if slot.kind == Kind::Counter && raw.value < 0 {
            let field = slot.name.to_string();
            return Err((
                raw.line,
                Problem::NegativeCounter {
                    field,
                    // In range: parse_num bounds negatives by i64::MIN.
                    value: i64::try_from(raw.value).unwrap_or(i64::MIN),
                },
            ));
        }
    }
    Ok(())
}

/// Counters are exact `u64`s (checked non-negative); gauges are `f64`.
fn to_number(kind: Kind, v: i128) -> Number {
    match kind {
        Kind::Counter => Number::U64(u64::try_from(v).unwrap_or(0)),
        Kind::Gauge => Number::F64(v as f64),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc")
    }

    fn collector(root: &Path) -> NetstatCollector {
        NetstatCollector::new(&NetstatConfig {
            proc_root: root.to_path_buf(),
            ..NetstatConfig::default()
        })
        .unwrap()
    }

    /// "Group:Field" -> (metric name, value).
    fn points(c: &NetstatCollector) -> BTreeMap<String, (&'static str, Number)> {
        let mut out = BTreeMap::new();
        c.visit(&mut |m: &'static Metric, a: &[KeyValue], v: Number| {
            assert_eq!(a[0].key.as_str(), ATTR_GROUP);
            assert_eq!(a[1].key.as_str(), ATTR_FIELD);
            let k = format!("{}:{}", a[0].value, a[1].value);
            assert!(out.insert(k, (m.name, v)).is_none(), "duplicate");
        });
        out
    }

    fn counter(p: &BTreeMap<String, (&'static str, Number)>, k: &str) -> u64 {
        match p.get(k) {
            Some(("retina.netstat.counter", Number::U64(v))) => *v,
            other => panic!("{k}: {other:?}"),
        }
    }

    fn gauge(p: &BTreeMap<String, (&'static str, Number)>, k: &str) -> f64 {
        match p.get(k) {
            Some(("retina.netstat.gauge", Number::F64(v))) => *v,
            other => panic!("{k}: {other:?}"),
        }
    }

    /// A scratch proc root with the given files (`None` = absent).
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new(tag: &str) -> TempRoot {
            let dir =
                std::env::temp_dir().join(format!("retina-netstat-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("net")).unwrap();
            TempRoot(dir)
        }

        fn write(&self, file: &str, content: &str) {
            std::fs::write(self.0.join("net").join(file), content).unwrap();
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn parses_this_machines_files_exactly() {
        let mut c = collector(&fixtures().join("host"));
        c.update().unwrap();
        let p = points(&c);
        // Values copied from the fixture files.
        assert_eq!(gauge(&p, "Ip:Forwarding"), 2.0);
        assert_eq!(gauge(&p, "Ip:DefaultTTL"), 64.0);
        assert_eq!(counter(&p, "Ip:InReceives"), 11713);
        assert_eq!(counter(&p, "Ip:OutTransmits"), 7979);
        assert_eq!(counter(&p, "Icmp:OutRateLimitHost"), 94);
        assert_eq!(counter(&p, "IcmpMsg:InType3"), 1);
        assert_eq!(counter(&p, "IcmpMsg:OutType3"), 6);
        assert_eq!(gauge(&p, "Tcp:RtoAlgorithm"), 1.0);
        assert_eq!(gauge(&p, "Tcp:RtoMin"), 200.0);
        assert_eq!(gauge(&p, "Tcp:RtoMax"), 120000.0);
        assert_eq!(gauge(&p, "Tcp:MaxConn"), -1.0);
        assert_eq!(gauge(&p, "Tcp:CurrEstab"), 1.0);
        assert_eq!(counter(&p, "Tcp:ActiveOpens"), 77);
        assert_eq!(counter(&p, "Tcp:InSegs"), 11461);
        assert_eq!(counter(&p, "Udp:NoPorts"), 100);
        assert_eq!(counter(&p, "Udp:OutDatagrams"), 152);
        assert_eq!(counter(&p, "UdpLite:MemErrors"), 0);
        assert_eq!(counter(&p, "TcpExt:TW"), 16);
        assert_eq!(counter(&p, "TcpExt:DelayedACKs"), 3);
        assert_eq!(counter(&p, "TcpExt:TCPPureAcks"), 196);
        assert_eq!(counter(&p, "TcpExt:ListenDrops"), 0);
        assert_eq!(counter(&p, "TcpExt:TCPOrigDataSent"), 2017);
        assert_eq!(counter(&p, "TcpExt:TCPAODroppedIcmps"), 0);
        assert_eq!(counter(&p, "IpExt:InOctets"), 182220009);
        assert_eq!(counter(&p, "IpExt:OutOctets"), 701068);
        assert_eq!(counter(&p, "IpExt:InNoECTPkts"), 11713);
        assert_eq!(gauge(&p, "MPTcpExt:MPCurrEstab"), 0.0);
        assert_eq!(counter(&p, "MPTcpExt:WinProbe"), 0);
        assert_eq!(counter(&p, "Ip6:InReceives"), 1);
        assert_eq!(counter(&p, "Ip6:OutNoRoutes"), 0);
        assert_eq!(counter(&p, "Icmp6:InMsgs"), 1);
        assert_eq!(counter(&p, "Udp6:InDatagrams"), 0);
        assert_eq!(counter(&p, "UdpLite6:MemErrors"), 0);
        // Every field of every file, once: snmp 20 + 29 + 2 + 15 + 9 + 9, netstat
        // TcpExt 135 + IpExt 18 + MPTcpExt 76, snmp6 90 lines.
        assert_eq!(p.len(), 84 + 229 + 90);
        let gauges = p
            .values()
            .filter(|(m, _)| *m == "retina.netstat.gauge")
            .count();
        assert_eq!(gauges, GAUGES.len());
        assert_eq!(c.exported(), p.len());
    }

    #[test]
    fn steady_state_updates_in_place_and_layout_changes_rebuild() {
        let root = TempRoot::new("layout");
        root.write("netstat", "TcpExt: A B\nTcpExt: 1 2\n");
        root.write("snmp", "Tcp: MaxConn CurrEstab\nTcp: -1 3\n");
        root.write("snmp6", "Ip6InReceives   \t5\nIcmp6InMsgs\t6\n");
        let mut c = collector(&root.0);
        c.update().unwrap();
        let p = points(&c);
        assert_eq!(counter(&p, "TcpExt:A"), 1);
        assert_eq!(gauge(&p, "Tcp:MaxConn"), -1.0);
        assert_eq!(gauge(&p, "Tcp:CurrEstab"), 3.0);
        assert_eq!(counter(&p, "Ip6:InReceives"), 5);
        assert_eq!(counter(&p, "Icmp6:InMsgs"), 6);
        let slots_ptr = c.sources[0].slots.as_ptr();

        // Same layout: updated by position, same table.
        root.write("netstat", "TcpExt: A B\nTcpExt: 10 20\n");
        c.update().unwrap();
        assert_eq!(counter(&points(&c), "TcpExt:B"), 20);
        assert_eq!(c.sources[0].slots.as_ptr(), slots_ptr);

        // A new IcmpMsg pair (a new ICMP type): rebuilt.
        root.write(
            "snmp",
            "Tcp: MaxConn CurrEstab\nTcp: -1 4\nIcmpMsg: InType3\nIcmpMsg: 7\n",
        );
        c.update().unwrap();
        let p = points(&c);
        assert_eq!(gauge(&p, "Tcp:CurrEstab"), 4.0);
        assert_eq!(counter(&p, "IcmpMsg:InType3"), 7);
        // A field renamed with the same count: rebuilt too (layout compared byte for byte).
        root.write("netstat", "TcpExt: A C\nTcpExt: 11 21\n");
        c.update().unwrap();
        let p = points(&c);
        assert_eq!(counter(&p, "TcpExt:C"), 21);
        assert!(!p.contains_key("TcpExt:B"));
        // A group removed.
        root.write("snmp", "Tcp: MaxConn CurrEstab\nTcp: -1 4\n");
        c.update().unwrap();
        assert!(!points(&c).contains_key("IcmpMsg:InType3"));

        // snmp6 disappears (IPv6 disabled): no data from it, no error.
        std::fs::remove_file(root.0.join("net/snmp6")).unwrap();
        c.update().unwrap();
        let p = points(&c);
        assert!(!p.contains_key("Ip6:InReceives"));
        assert!(p.contains_key("TcpExt:A"));
    }

    #[test]
    fn filter_on_group_and_field() {
        let mut c = NetstatCollector::new(&NetstatConfig {
            proc_root: fixtures().join("host"),
            include: Pattern::list(&["TcpExt:Listen.*", "Tcp:.*", "Ip6:InReceives"]).unwrap(),
            exclude: Pattern::list(&["Tcp:Rto.*"]).unwrap(),
            ..NetstatConfig::default()
        })
        .unwrap();
        c.update().unwrap();
        let keys: Vec<String> = points(&c).into_keys().collect();
        assert_eq!(
            keys,
            [
                "Ip6:InReceives",
                "Tcp:ActiveOpens",
                "Tcp:AttemptFails",
                "Tcp:CurrEstab",
                "Tcp:EstabResets",
                "Tcp:InCsumErrors",
                "Tcp:InErrs",
                "Tcp:InSegs",
                "Tcp:MaxConn",
                "Tcp:OutRsts",
                "Tcp:OutSegs",
                "Tcp:PassiveOpens",
                "Tcp:RetransSegs",
                "TcpExt:ListenDrops",
                "TcpExt:ListenOverflows",
            ]
        );
    }

    /// Runs a fixture case and returns the error and the collector's points.
    fn case(name: &str) -> NetstatError {
        let mut c = collector(&fixtures().join(name));
        let err = c.update().unwrap_err();
        // The files that are fine were still read.
        assert!(c.exported() > 0, "{name}: nothing from the good files");
        err
    }

    fn malformed(err: &NetstatError) -> (&Path, usize, &Problem) {
        match err {
            NetstatError::Malformed {
                path,
                line,
                problem,
            } => (path, *line, problem),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_fixtures() {
        let e = case("missing_value_line");
        let (path, line, problem) = malformed(&e);
        assert!(path.ends_with("missing_value_line/net/snmp"));
        assert_eq!(line, 11);
        assert_eq!(
            problem,
            &Problem::MissingValueLine {
                group: "UdpLite".into()
            }
        );
        assert!(
            e.to_string().contains("missing_value_line/net/snmp:11"),
            "{e}"
        );

        let e = case("count_mismatch");
        let (path, line, problem) = malformed(&e);
        assert!(path.ends_with("count_mismatch/net/netstat"));
        assert_eq!(line, 4);
        assert_eq!(
            problem,
            &Problem::CountMismatch {
                group: "IpExt".into(),
                names: 18,
                values: 17
            }
        );

        let e = case("not_a_number");
        let (path, line, problem) = malformed(&e);
        assert!(path.ends_with("not_a_number/net/netstat"));
        assert_eq!(line, 2);
        assert_eq!(
            problem,
            &Problem::NotANumber {
                field: "TcpExt:TW".into(),
                text: "16x".into()
            }
        );

        let e = case("overflow");
        let (_, line, problem) = malformed(&e);
        assert_eq!(line, 2);
        assert!(
            matches!(problem, Problem::NotANumber { field, text }
                if field == "Ip:InReceives" && text == "18446744073709551616"),
            "{problem:?}"
        );

        let e = case("negative_counter");
        let (path, line, problem) = malformed(&e);
        assert!(path.ends_with("negative_counter/net/snmp"));
        assert_eq!(line, 8);
        assert_eq!(
            problem,
            &Problem::NegativeCounter {
                field: "Tcp:ActiveOpens".into(),
                value: -77
            }
        );

        let e = case("prefix_mismatch");
        let (_, line, problem) = malformed(&e);
        assert_eq!(line, 6);
        assert_eq!(
            problem,
            &Problem::PrefixMismatch {
                header: "MPTcpExt".into(),
                values: "MPTcpExtra".into()
            }
        );

        let e = case("no_prefix");
        let (_, line, problem) = malformed(&e);
        assert_eq!((line, problem), (1, &Problem::NoPrefix));

        let e = case("empty");
        let (path, line, problem) = malformed(&e);
        assert!(path.ends_with("empty/net/netstat"));
        assert_eq!((line, problem), (1, &Problem::Empty));

        let e = case("snmp6_bad_line");
        let (path, line, problem) = malformed(&e);
        assert!(path.ends_with("snmp6_bad_line/net/snmp6"));
        assert_eq!((line, problem), (3, &Problem::Snmp6Fields { tokens: 3 }));

        let e = case("duplicate_field");
        let (_, line, problem) = malformed(&e);
        assert_eq!(line, 9);
        assert_eq!(
            problem,
            &Problem::Duplicate {
                group: "Udp".into(),
                field: "NoPorts".into()
            }
        );

        match case("missing_file") {
            NetstatError::Read { path, source } => {
                assert!(path.ends_with("missing_file/net/netstat"));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipv6_disabled_is_no_error() {
        let mut c = collector(&fixtures().join("no_ipv6"));
        c.update().unwrap();
        let p = points(&c);
        assert!(p.contains_key("TcpExt:ListenDrops"));
        assert!(!p.keys().any(|k| k.starts_with("Ip6:")));
    }

    #[test]
    fn a_malformed_cycle_updates_nothing_from_that_file() {
        let root = TempRoot::new("keep");
        root.write("netstat", "TcpExt: A B\nTcpExt: 1 2\n");
        root.write("snmp", "Udp: X\nUdp: 5\n");
        let mut c = collector(&root.0);
        c.update().unwrap();
        // The second value is bad: the first must not be updated either.
        root.write("netstat", "TcpExt: A B\nTcpExt: 100 x\n");
        root.write("snmp", "Udp: X\nUdp: 6\n");
        let err = c.update().unwrap_err();
        assert!(err.to_string().contains("net/netstat:2"), "{err}");
        let p = points(&c);
        assert_eq!(counter(&p, "TcpExt:A"), 1);
        assert_eq!(counter(&p, "TcpExt:B"), 2);
        // The other file was updated.
        assert_eq!(counter(&p, "Udp:X"), 6);
        // Same for a malformed file with a new layout.
        root.write("netstat", "TcpExt: A B C\nTcpExt: 100 200 -3\n");
        c.update().unwrap_err();
        let p = points(&c);
        assert_eq!(counter(&p, "TcpExt:A"), 1);
        assert!(!p.contains_key("TcpExt:C"));
        // A missing mandatory file keeps the last values and reports the path.
        std::fs::remove_file(root.0.join("net/netstat")).unwrap();
        let err = c.update().unwrap_err();
        assert!(err.to_string().contains("net/netstat"), "{err}");
        assert_eq!(counter(&points(&c), "TcpExt:A"), 1);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_num(b"0"), Some(0));
        assert_eq!(parse_num(b"18446744073709551615"), Some(u64::MAX as i128));
        assert_eq!(parse_num(b"18446744073709551616"), None);
        assert_eq!(parse_num(b"99999999999999999999"), None);
        assert_eq!(parse_num(b"999999999999999999999"), None);
        assert_eq!(parse_num(b"-1"), Some(-1));
        assert_eq!(parse_num(b"-9223372036854775808"), Some(i64::MIN as i128));
        assert_eq!(parse_num(b"-9223372036854775809"), None);
        assert_eq!(parse_num(b"-"), None);
        assert_eq!(parse_num(b""), None);
        assert_eq!(parse_num(b"+1"), None);
        assert_eq!(parse_num(b"1.5"), None);
        assert_eq!(
            split_snmp6(b"Ip6InReceives"),
            (&b"Ip6"[..], &b"InReceives"[..])
        );
        assert_eq!(
            split_snmp6(b"UdpLite6InErrors"),
            (&b"UdpLite6"[..], &b"InErrors"[..])
        );
        assert_eq!(
            split_snmp6(b"Icmp6OutType133"),
            (&b"Icmp6"[..], &b"OutType133"[..])
        );
        assert_eq!(split_snmp6(b"Weird"), (&b"snmp6"[..], &b"Weird"[..]));
        assert_eq!(split_snmp6(b"Ip6"), (&b"snmp6"[..], &b"Ip6"[..]));
    }

    #[test]
    fn reads_real_proc() {
        let mut c = NetstatCollector::new(&NetstatConfig::default()).unwrap();
        c.update().unwrap();
        let p = points(&c);
        assert_eq!(gauge(&p, "Tcp:MaxConn"), -1.0);
        assert!(counter(&p, "Ip:InReceives") > 0);
        // The second cycle takes the in-place path.
        let layout = c.sources[1].layout.as_ptr();
        c.update().unwrap();
        assert_eq!(c.sources[1].layout.as_ptr(), layout);
    }

    #[test]
    fn config_deserializes_with_defaults() {
        let c: NetstatConfig = serde_json::from_str(r#"{"proc_root": "/host/proc"}"#).unwrap();
        assert!(c.enabled);
        assert_eq!(c.proc_root, Path::new("/host/proc"));
        let c: NetstatConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, NetstatConfig::default());
        assert!(serde_json::from_str::<NetstatConfig>(r#"{"procroot": "/"}"#).is_err());
    }
}
