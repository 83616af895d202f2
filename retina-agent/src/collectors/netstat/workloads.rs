//! The `netstat_workloads` collector: the protocol counters of every network namespace that
//! holds a workload (a pod, a container, a systemd service with a namespace of its own),
//! read through one process of the namespace (`/proc/PID/net/{snmp,netstat,snmp6}`) and
//! parsed by the host `netstat` collector's parsers.
//!
//! # Metrics
//!
//! | name | kind | unit |
//! |---|---|---|
//! | `retina.workload.netstat.stat` | cumulative sum | `1` |
//! | `retina.workload.netstat.state` | gauge | `{value}` |
//!
//! Attributes: `netstat.group`, `netstat.field` (as `retina.netstat.stat`),
//! `network.namespace.inode`, and the workload's `k8s.pod.uid`, `container.id`,
//! `systemd.unit`, `user.id` (those its processes agree on, as the drop metrics have them).
//! Fields: [`DEFAULT_FIELDS`] unless `[netstat.workloads] include`/`exclude` say otherwise.
//!
//! # Cycle
//!
//! The namespaces and one process of each come from the agent's process walk
//! ([`Workloads`]: the BPF task iterator), at most every [`RESCAN`] and at the next cycle
//! after a namespace's process has exited. For each namespace the collector holds a pidfd
//! of its process and the three files, opened once: a cycle is three `pread`s per
//! namespace and one `poll` over all pidfds, and allocates nothing. Reading one namespace
//! costs tens of µs (the kernel sums every counter over the CPUs), so a cycle reads
//! namespaces in turn until it has spent [`BUDGET_NS`] of CPU, and the next goes on where it
//! stopped: with many pods each namespace is read every few cycles (new ones first, then
//! the least recently read, so that none waits more than a turn), while exits are seen
//! every cycle (`snapshot` reads every namespace in each of its two looks). A namespace
//! whose process has exited is dropped at once (its open files would keep it alive): its series
//! leave the next export. Under `ProtectProc=invisible` another user's `/proc/PID` does
//! not exist for the agent: such namespaces are counted ([`WorkloadNetstatCollector::hidden`]),
//! logged once and reported by `check`.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::KeyValue;
use serde::Deserialize;

use super::{Format, NetstatError, Source};
use crate::{
    collectors::{CollectError, Collector, procfile::ProcFile},
    filter::{NameFilter, Pattern},
    kernel::links::Links,
    model::{Kind, Metric, Visitor, Workload, attr, in_key_order},
    workload::Workloads,
};

pub(crate) const WORKLOAD_NETSTAT_COUNTER: Metric = Metric {
    name: "retina.workload.netstat.stat",
    unit: "1",
    description: "Kernel protocol counters of a workload's network namespace \
                  (/proc/PID/net/{snmp,netstat,snmp6}), by netstat.group and netstat.field",
    kind: Kind::Counter,
};
pub(crate) const WORKLOAD_NETSTAT_GAUGE: Metric = Metric {
    name: "retina.workload.netstat.state",
    unit: "{value}",
    description: "Kernel protocol states of a workload's network namespace (e.g. Tcp \
                  CurrEstab), by netstat.group and netstat.field",
    kind: Kind::Gauge,
};

static METRICS: &[&Metric] = &[&WORKLOAD_NETSTAT_COUNTER, &WORKLOAD_NETSTAT_GAUGE];

/// The fields exported per namespace by default: enough to tell whether a pod's TCP and
/// UDP are healthy (17 series per namespace), small enough for a fleet.
pub(crate) const DEFAULT_FIELDS: &[&str] = &[
    "Tcp:(RetransSegs|AttemptFails|EstabResets|OutRsts|InErrs)",
    "TcpExt:(ListenOverflows|ListenDrops|TCPSynRetrans|TCPTimeouts)",
    "Udp6?:(NoPorts|InErrors|RcvbufErrors|SndbufErrors)",
];

/// The CPU time a cycle spends reading namespaces, at most (plus one namespace's read):
/// past it, the next cycle goes on where this one stopped. Measured at 256 pods
/// (docs/performance.md): a namespace's three files cost tens of µs, so up to a few dozen
/// namespaces are read every cycle, and more are read in turn.
pub(crate) const BUDGET_NS: u64 = 1_500_000;

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Namespaces are looked for again after this long (and at the next cycle after a
/// namespace's process exited).
pub(crate) const RESCAN: Duration = Duration::from_secs(10);

/// `[netstat.workloads]` configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadNetstatConfig {
    /// Whether the collector runs (default `true`; `netstat.enabled = false` turns it off
    /// too).
    pub enabled: bool,
    /// Fields to export, anchored regular expressions over `GROUP:FIELD`; default
    /// [`DEFAULT_FIELDS`]; an empty list exports every field (about 300 per namespace).
    pub include: Vec<Pattern>,
    /// Fields never exported; wins over `include`.
    pub exclude: Vec<Pattern>,
    /// Every namespace is read every cycle, with no CPU budget: set by `snapshot`, whose
    /// two looks must each hold every namespace's values of that moment (the budget is
    /// for the daemon's steady cycles). Not a configuration key.
    #[serde(skip)]
    pub whole_cycles: bool,
}

impl Default for WorkloadNetstatConfig {
    fn default() -> Self {
        WorkloadNetstatConfig {
            enabled: true,
            // Constant patterns (a unit test compiles them).
            include: Pattern::list(DEFAULT_FIELDS).unwrap_or_default(),
            exclude: Vec::new(),
            whole_cycles: false,
        }
    }
}

/// The files read per namespace, in this order.
const FILES: [(&str, Format, bool); 3] = [
    ("snmp", Format::Pairs, false),
    ("netstat", Format::Pairs, false),
    ("snmp6", Format::Lines, true),
];

/// One namespace being read.
#[derive(Debug)]
struct Entry {
    netns: u32,
    pid: u32,
    workload: Arc<Workload>,
    pidfd: OwnedFd,
    files: [ProcFile; 3],
    sources: [Source; 3],
    /// The workload's attributes and the namespace inode.
    base: Vec<KeyValue>,
    /// Per selected slot: (file, slot index, all attributes).
    points: Vec<(usize, usize, Vec<KeyValue>)>,
    /// `sources[i].generation` the points were built for.
    built: [u64; 3],
    /// When it was last read, in the collector's count of reads (0: never).
    last_read: u64,
    /// `/proc/PID` is not visible to the agent (`ProtectProc=invisible`).
    hidden: bool,
    /// Its process exited (seen by the last poll).
    exited: bool,
}

/// Protocol counters per workload namespace.
#[derive(Debug)]
pub struct WorkloadNetstatCollector {
    filter: NameFilter,
    proc_root: PathBuf,
    workloads: Workloads,
    /// In round-robin read order.
    entries: Vec<Entry>,
    /// Where the next cycle's reads start.
    cursor: usize,
    /// Namespace reads so far (each entry's `last_read` is one of them).
    reads: u64,
    /// CPU time a cycle spends reading, at most ([`BUDGET_NS`]; `u64::MAX`: no budget).
    budget_ns: u64,
    /// Namespaces read in the last cycle.
    read_last: usize,
    last_scan: Option<Instant>,
    rescan_now: bool,
    scans: u64,
    said_hidden: bool,
    pollfds: Vec<libc::pollfd>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadNetstatError {
    #[error("network namespace {netns} (process {pid}): {source}")]
    Namespace {
        netns: u32,
        pid: u32,
        #[source]
        source: NetstatError,
    },
}

impl WorkloadNetstatCollector {
    /// With the agent's process walk (`host_netns`: the agent's own namespace, skipped).
    pub fn new(config: &WorkloadNetstatConfig, host_netns: u32) -> WorkloadNetstatCollector {
        Self::with_workloads(config, Workloads::new(host_netns))
    }

    /// With a given process walk (tests: another `/proc`).
    pub(crate) fn with_workloads(
        config: &WorkloadNetstatConfig,
        workloads: Workloads,
    ) -> WorkloadNetstatCollector {
        WorkloadNetstatCollector {
            filter: NameFilter::new(&config.include, &config.exclude),
            proc_root: workloads.proc_root().to_path_buf(),
            workloads,
            entries: Vec::new(),
            cursor: 0,
            reads: 0,
            budget_ns: match config.whole_cycles {
                true => u64::MAX,
                false => BUDGET_NS,
            },
            read_last: 0,
            last_scan: None,
            rescan_now: false,
            scans: 0,
            said_hidden: false,
            pollfds: Vec::new(),
        }
    }

    /// Process walks run so far (they allocate; steady cycles do not).
    #[cfg(any(test, feature = "internals"))]
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Namespaces read.
    #[cfg(any(test, feature = "internals"))]
    pub fn namespaces(&self) -> usize {
        self.entries.iter().filter(|e| !e.hidden).count()
    }

    /// Namespaces read in the last cycle (all of them unless the budget ran out).
    #[cfg(feature = "internals")]
    pub fn read_last_cycle(&self) -> usize {
        self.read_last
    }

    /// Namespaces whose process's `/proc/PID` the agent cannot see.
    pub(crate) fn hidden(&self) -> usize {
        self.entries.iter().filter(|e| e.hidden).count()
    }

    /// Rebuilds the set of namespaces from a fresh process walk.
    fn rescan(&mut self) {
        self.scans += 1;
        self.last_scan = Some(Instant::now());
        self.rescan_now = false;
        self.workloads.scan();
        let mut old: HashMap<u32, Entry> =
            self.entries.drain(..).map(|e| (e.netns, e)).collect();
        let mut keep = Vec::new();
        for (netns, pid, w) in self.workloads.namespaces() {
            if w.is_empty() {
                continue;
            }
            match old.remove(&netns) {
                Some(e) if e.pid == pid && e.workload == *w => keep.push(e),
                _ => keep.extend(Entry::new(&self.proc_root, netns, pid, w)),
            }
        }
        // The least recently read first (never read: first of all), and the next cycle
        // starts there: when a cycle's budget covers only part of the namespaces, each is
        // still read in turn, none is left behind by the walks' order.
        keep.sort_by_key(|e| e.last_read);
        tracing::debug!(
            namespaces = keep.len(),
            unread = keep.iter().filter(|e| e.last_read == 0).count(),
            dropped = old.len(),
            "workload namespaces rescanned"
        );
        self.entries = keep;
        self.cursor = 0;
    }

    /// One cycle: reads every namespace, then drops those whose process exited.
    pub fn update(&mut self) -> Result<(), WorkloadNetstatError> {
        if self.rescan_now || self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN) {
            self.rescan();
        }
        let mut first = None;
        // Round-robin from where the last cycle stopped, until every namespace was read
        // or the cycle's CPU budget is spent.
        let n = self.entries.len();
        let start = thread_cpu_ns();
        let mut done = 0;
        while done < n {
            let e = &mut self.entries[(self.cursor + done) % n];
            done += 1;
            if e.hidden {
                continue;
            }
            self.reads += 1;
            e.last_read = self.reads;
            if let Err(source) = e.read(&self.filter)
                && first.is_none()
            {
                first = Some(WorkloadNetstatError::Namespace {
                    netns: e.netns,
                    pid: e.pid,
                    source,
                });
            }
            if thread_cpu_ns().saturating_sub(start) >= self.budget_ns {
                break;
            }
        }
        self.read_last = done;
        tracing::debug!(
            namespaces = n,
            read = done,
            cpu_us = thread_cpu_ns().saturating_sub(start) / 1000,
            "workload namespaces read"
        );
        self.cursor = if n == 0 { 0 } else { (self.cursor + done) % n };
        // Which processes exited, in one system call; a read that raced an exit (and may
        // have opened another process's files under a reused pid) is thrown away with it.
        self.pollfds.clear();
        self.pollfds
            .extend(self.entries.iter().map(|e| libc::pollfd {
                fd: e.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
        // SAFETY: `pollfds` is a valid array of `len` pollfd structures.
        let n = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                0,
            )
        };
        if n > 0 {
            for (e, p) in self.entries.iter_mut().zip(&self.pollfds) {
                e.exited = p.revents != 0;
            }
            self.entries.retain(|e| !e.exited);
            self.rescan_now = true;
        }
        let hidden = self.hidden();
        if hidden > 0 && !self.said_hidden {
            self.said_hidden = true;
            tracing::warn!(
                "{hidden} workload network namespaces' protocol counters cannot be read: their processes' {}/PID is hidden from the agent (ProtectProc=invisible in the unit hides other users' processes; /proc/PID/net itself needs no ptrace access: a drop-in with ProtectProc=default makes them readable)",
                self.proc_root.display()
            );
        }
        first.map_or(Ok(()), Err)
    }
}

impl Entry {
    fn new(proc_root: &std::path::Path, netns: u32, pid: u32, w: &Arc<Workload>) -> Option<Entry> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if fd < 0 {
            tracing::debug!(pid, "pidfd_open: {}", io::Error::last_os_error());
            return None;
        }
        // SAFETY: a descriptor just returned, owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let dir = proc_root.join(format!("{pid}/net"));
        let mk = |i: usize| {
            let (name, format, optional) = FILES[i];
            let path = dir.join(name);
            Some((
                ProcFile::new(path.clone(), 16 * 1024).ok()?,
                Source::new(path, format, optional).ok()?,
            ))
        };
        let ([f0, f1, f2], [s0, s1, s2]) = {
            let (a, b, c) = (mk(0)?, mk(1)?, mk(2)?);
            ([a.0, b.0, c.0], [a.1, b.1, c.1])
        };
        let mut base = Vec::new();
        w.push_attributes(&mut base);
        base.push(KeyValue::new(attr::NETNS_INODE, i64::from(netns)));
        tracing::debug!(netns, pid, attributes = ?base, "workload new namespace");
        Some(Entry {
            netns,
            pid,
            workload: w.clone(),
            pidfd,
            files: [f0, f1, f2],
            sources: [s0, s1, s2],
            base,
            points: Vec::new(),
            built: [u64::MAX; 3],
            last_read: 0,
            hidden: false,
            exited: false,
        })
    }

    /// Reads and parses the three files; rebuilds the points' attributes when a table
    /// changed.
    fn read(&mut self, filter: &NameFilter) -> Result<(), NetstatError> {
        let mut first = None;
        for i in 0..3 {
            let (file, source) = (&mut self.files[i], &mut self.sources[i]);
            match file.read() {
                Ok(bytes) => {
                    source.buf.clear();
                    source.buf.extend_from_slice(bytes);
                    if let Err(e) = source.parse(filter) {
                        first.get_or_insert(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && i == 0 => {
                    // The process is alive (its pidfd says so below) but its /proc/PID is
                    // not there for the agent: hidden by the mount's hidepid=.
                    self.hidden = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && source.optional => {
                    if !source.slots.is_empty() {
                        source.layout.clear();
                        source.slots.clear();
                        source.generation += 1;
                    }
                }
                Err(e) => {
                    first.get_or_insert(NetstatError::Read {
                        path: file.path().to_path_buf(),
                        source: e,
                    });
                }
            }
        }
        if self.built != self.sources.each_ref().map(|s| s.generation) {
            self.build_points();
        }
        first.map_or(Ok(()), Err)
    }

    fn build_points(&mut self) {
        self.points.clear();
        for (i, source) in self.sources.iter().enumerate() {
            for (j, slot) in source.slots.iter().enumerate() {
                if let Some(a) = &slot.attrs {
                    let mut all = Vec::with_capacity(2 + self.base.len());
                    all.extend_from_slice(a);
                    all.extend_from_slice(&self.base);
                    self.points.push((i, j, in_key_order(all)));
                }
            }
        }
        self.built = self.sources.each_ref().map(|s| s.generation);
    }
}

impl Collector for WorkloadNetstatCollector {
    fn name(&self) -> &'static str {
        "netstat_workloads"
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        METRICS
    }

    fn collect(&mut self, _links: &Links) -> Result<(), CollectError> {
        Ok(self.update()?)
    }

    fn visit(&self, visitor: &mut dyn Visitor) {
        for e in self.entries.iter().filter(|e| !e.hidden) {
            for (i, j, attrs) in &e.points {
                let Some(slot) = e.sources[*i].slots.get(*j) else {
                    continue;
                };
                let metric = match slot.kind {
                    Kind::Counter => &WORKLOAD_NETSTAT_COUNTER,
                    Kind::Gauge => &WORKLOAD_NETSTAT_GAUGE,
                };
                visitor.point(metric, attrs, slot.value);
            }
        }
    }
}

#[cfg(test)]
mod tests;
