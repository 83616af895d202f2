//! NIC driver statistics (`ethtool -S`) and link state (`ethtool`, `-g`, `-l`).
//!
//! Two collectors share one [`EthtoolConfig`]:
//!
//! * [`EthtoolCollector`] (name `ethtool`) reads driver statistics with the `SIOCETHTOOL`
//!   ioctl on one socket. Names (`ETHTOOL_GSTRINGS`) and driver info (`ETHTOOL_GDRVINFO`)
//!   are fetched once per interface; in steady state a cycle costs exactly one
//!   `ETHTOOL_GSTATS` ioctl per interface and allocates nothing.
//! * [`LinkStateCollector`] (name `ethtool_link`) reports speed, duplex, ring sizes and
//!   channel counts from the ethtool generic-netlink family (the `ethtool` crate). That path
//!   allocates, so it runs on its own thread every `link_state_interval` (and soon after a
//!   new interface appears), never in the collection cycle; `collect` only picks up its
//!   latest result.
//!
//! # Metrics
//!
//! | metric | kind | unit | attributes |
//! |---|---|---|---|
//! | `retina.nic.driver.stat` | counter | `1` | `network.interface.name`, `nic.stat.name`, `nic.queue` (split mode only) |
//! | `retina.nic.info` | gauge (always 1) | `1` | `network.interface.name`, `nic.driver`, `nic.driver.version`, `nic.firmware.version`, `nic.bus_info` |
//! | `retina.nic.link.speed` | gauge | `bit/s` | `network.interface.name` |
//! | `retina.nic.link.duplex` | gauge (1 full, 0 half) | `1` | `network.interface.name` |
//! | `retina.nic.ring.size` | gauge | `{descriptor}` | `network.interface.name`, `nic.ring` (`rx`, `tx`, `rx_mini`, `rx_jumbo`), `nic.ring.setting` (`current`, `max`) |
//! | `retina.nic.channel.count` | gauge | `{channel}` | `network.interface.name`, `nic.channel.type` (`rx`, `tx`, `other`, `combined`), `nic.channel.setting` (`current`, `max`) |

mod ioctl;
mod link_state;
mod queue;

use std::{
    collections::{BTreeMap, HashSet, btree_map},
    io,
    sync::Arc,
    time::Duration,
};

use opentelemetry::KeyValue;
use serde::Deserialize;

pub use self::{
    ioctl::{DrvInfo, EthtoolSocket, GuardedBuf, IfName, MAX_STATS, Reply},
    link_state::{
        LinkState, LinkStateCollector, LinkStateError, LinkStateTable, apply_link_state,
        query_link_state,
    },
    queue::{QueueStat, parse as parse_queue_stat},
};
use super::{CollectError, Collector};
use crate::{
    filter::{NameFilter, Pattern},
    links::{Link, Links},
    metrics::{Kind, Metric, Number, Visitor, attr::INTERFACE_NAME},
};

/// Attribute keys of the NIC metrics.
pub mod attr {
    /// The driver's statistic name (`ethtool -S`), with the queue number removed in the
    /// `split` and `sum` modes.
    pub const STAT_NAME: &str = "nic.stat.name";
    /// Queue number of a per-queue statistic (`split` mode only), an integer.
    pub const QUEUE: &str = "nic.queue";
    pub const DRIVER: &str = "nic.driver";
    pub const DRIVER_VERSION: &str = "nic.driver.version";
    pub const FIRMWARE_VERSION: &str = "nic.firmware.version";
    pub const BUS_INFO: &str = "nic.bus_info";
    /// `rx`, `tx`, `rx_mini`, `rx_jumbo`.
    pub const RING: &str = "nic.ring";
    /// `current` or `max`.
    pub const RING_SETTING: &str = "nic.ring.setting";
    /// `rx`, `tx`, `other`, `combined`.
    pub const CHANNEL_TYPE: &str = "nic.channel.type";
    /// `current` or `max`.
    pub const CHANNEL_SETTING: &str = "nic.channel.setting";
}

pub static NIC_DRIVER_STAT: Metric = Metric {
    name: "retina.nic.driver.stat",
    unit: "1",
    description: "A NIC driver statistic (ethtool -S), by interface and statistic name",
    kind: Kind::Counter,
};

pub static NIC_INFO: Metric = Metric {
    name: "retina.nic.info",
    unit: "{info}",
    description: "Driver, version, firmware and bus of a NIC (ethtool -i); always 1",
    kind: Kind::Gauge,
};

pub static NIC_LINK_SPEED: Metric = Metric {
    name: "retina.nic.link.speed",
    unit: "bit/s",
    description: "Negotiated link speed; absent while the driver reports it unknown",
    kind: Kind::Gauge,
};

pub static NIC_LINK_DUPLEX: Metric = Metric {
    name: "retina.nic.link.duplex",
    unit: "{duplex}",
    description: "Link duplex: 1 full, 0 half; absent while unknown",
    kind: Kind::Gauge,
};

pub static NIC_RING_SIZE: Metric = Metric {
    name: "retina.nic.ring.size",
    unit: "{descriptor}",
    description: "NIC ring size (ethtool -g), current setting and maximum",
    kind: Kind::Gauge,
};

pub static NIC_CHANNEL_COUNT: Metric = Metric {
    name: "retina.nic.channel.count",
    unit: "{channel}",
    description: "NIC channel count (ethtool -l), current setting and maximum",
    kind: Kind::Gauge,
};

static DRIVER_METRICS: [&Metric; 2] = [&NIC_DRIVER_STAT, &NIC_INFO];

/// What to do with per-queue driver statistics (`rx_queue_0_packets`, `rx0_packets`, ...;
/// the recognised naming patterns are listed in the `queue` module).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// One series per statistic and queue: the queue number moves from the name into the
    /// `nic.queue` attribute (`rx_queue_0_packets` → `rx_queue_packets`, `nic.queue=0`).
    Split,
    /// One series per statistic, the sum over all queues (`rx_queue_packets`). The
    /// default: cardinality no longer grows with the queue count (a 64-queue mlx5 port
    /// reports ~700 statistics otherwise).
    #[default]
    Sum,
    /// Names exactly as the driver reports them, one series each (like node_exporter).
    Keep,
    /// Per-queue statistics are not exported at all.
    Drop,
}

/// The `ethtool` config section, shared by [`EthtoolCollector`] and
/// [`LinkStateCollector`].
///
/// Interface and statistic patterns are regular expressions that must match the *whole*
/// name (see [`NameFilter`]); a name is selected when it matches an `include` pattern (or
/// the list is empty) and no `exclude` pattern.
///
/// Defaults, chosen for a fleet of Kubernetes nodes: every interface except `lo` (veths
/// are kept: a pod's veth is where its drops show), every statistic, per-queue statistics
/// summed over queues (`per_queue = "sum"`), interfaces without driver statistics retried
/// every 60 cycles, link state refreshed every 60 s.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EthtoolConfig {
    /// Whether the agent runs the ethtool collectors at all (default `true`).
    pub enabled: bool,
    /// Interfaces to report (default: all).
    pub interfaces_include: Vec<Pattern>,
    /// Interfaces not to report (default: `["lo"]`).
    pub interfaces_exclude: Vec<Pattern>,
    /// Statistics to report, matched against the exported `nic.stat.name` (after the
    /// `per_queue` renaming); default all.
    pub stats_include: Vec<Pattern>,
    /// Statistics not to report, matched like `stats_include`; default none.
    pub stats_exclude: Vec<Pattern>,
    /// Per-queue statistics: `split`, `sum` (default), `keep` or `drop`.
    pub per_queue: QueueMode,
    /// Interfaces without driver statistics (`lo`, tunnels, bridges) or whose ioctl
    /// failed are asked again only every this many cycles (default 60).
    pub unsupported_retry_cycles: u32,
    /// At most this many interfaces are tracked; more are ignored, with one warning
    /// (default 16384).
    pub max_interfaces: usize,
    /// Whether [`LinkStateCollector`] reports speed, duplex, rings and channels
    /// (default `true`).
    pub link_state: bool,
    /// How often link state is refreshed: a duration string such as `"90s"`, `"5m"`
    /// (or a whole number of seconds); default `"60s"`. A new interface triggers a refresh
    /// sooner (at most one per second).
    #[serde(deserialize_with = "duration::deserialize")]
    pub link_state_interval: Duration,
}

impl Default for EthtoolConfig {
    fn default() -> Self {
        EthtoolConfig {
            enabled: true,
            interfaces_include: Vec::new(),
            // A literal: it compiles.
            interfaces_exclude: Pattern::list(&["lo"]).unwrap_or_default(),
            stats_include: Vec::new(),
            stats_exclude: Vec::new(),
            per_queue: QueueMode::default(),
            unsupported_retry_cycles: 60,
            max_interfaces: 16384,
            link_state: true,
            link_state_interval: Duration::from_secs(60),
        }
    }
}

impl EthtoolConfig {
    /// The interface filter.
    pub fn interface_filter(&self) -> NameFilter {
        NameFilter::new(&self.interfaces_include, &self.interfaces_exclude)
    }

    /// The statistic-name filter.
    pub fn stat_filter(&self) -> NameFilter {
        NameFilter::new(&self.stats_include, &self.stats_exclude)
    }
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    /// A humantime string (`"60s"`, `"5m"`, `"500ms"`) or a whole number of seconds;
    /// never zero.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let parsed = match Raw::deserialize(d)? {
            Raw::Secs(s) => Duration::from_secs(s),
            Raw::Text(t) => humantime::parse_duration(&t).map_err(|_| {
                D::Error::custom(format!(
                    "invalid duration {t:?} (examples: \"60s\", \"5m\", \"500ms\")"
                ))
            })?,
        };
        if parsed.is_zero() {
            return Err(D::Error::custom("the duration must be greater than zero"));
        }
        Ok(parsed)
    }
}

/// Everything that can go wrong in the driver-statistics path.
#[derive(Debug, thiserror::Error)]
pub enum EthtoolError {
    #[error("opening the ethtool ioctl socket: {0}")]
    Socket(io::Error),
    #[error("mapping the ethtool reply buffer: {0}")]
    Buffer(io::Error),
    #[error("starting the link-state worker thread: {0}")]
    Thread(io::Error),
    #[error("{ifname}: {ioctl}: {error}")]
    Ioctl {
        ifname: Arc<str>,
        ioctl: &'static str,
        error: io::Error,
    },
    #[error("{ifname}: the driver reports {count} statistics, more than the {MAX_STATS} accepted")]
    TooManyStats { ifname: Arc<str>, count: u32 },
}

/// Ioctls issued since the collector was created, by command (self-telemetry and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlCounts {
    pub gdrvinfo: u64,
    pub gsset_info: u64,
    pub gstrings: u64,
    pub gstats: u64,
}

/// What the collector currently does with one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceStatus {
    /// Excluded by `interfaces_include`/`interfaces_exclude`: never queried.
    Excluded,
    /// Driver statistics are read every cycle (`valid`: the last read succeeded).
    Active {
        stats: u32,
        series: u32,
        valid: bool,
    },
    /// No driver statistics (`EOPNOTSUPP` or a count of 0); asked again at cycle
    /// `retry_at`.
    Unsupported { retry_at: u64 },
    /// The last attempt failed (unexpected error, count changed while fetching names, or
    /// the interface vanished); asked again at cycle `retry_at`.
    Pending { retry_at: u64 },
}

/// Reads NIC driver statistics (`ethtool -S`) for every selected interface.
///
/// Construct it with [`EthtoolCollector::new`], add it to the agent like any collector.
/// See the module documentation for the metrics.
pub struct EthtoolCollector {
    sock: EthtoolSocket,
    /// Reply memory for `ETHTOOL_GSTRINGS` / `ETHTOOL_GSTATS`, shared by all interfaces.
    scratch: GuardedBuf,
    interfaces: NameFilter,
    stats: NameFilter,
    mode: QueueMode,
    retry_cycles: u64,
    max_interfaces: usize,
    /// Per ifindex, in ifindex order (so `visit` reports in a stable order).
    entries: BTreeMap<u32, Entry>,
    /// Exported statistic names shared between interfaces (hundreds of veths report the
    /// same nine).
    names: HashSet<Arc<str>>,
    cycle: u64,
    counts: IoctlCounts,
    overflow_warned: bool,
}

struct Entry {
    name: Arc<str>,
    /// The workload of the interface's peer namespace (a pod's host veth), on its series.
    workload: Option<Arc<crate::workload::Workload>>,
    /// [`Link::instance`] of the device the state belongs to.
    instance: u64,
    /// Last cycle the interface was in the link table.
    seen: u64,
    state: State,
}

enum State {
    Excluded,
    Idle {
        retry_at: u64,
        why: Idle,
        /// `retina.nic.info` attributes, when GDRVINFO answered.
        info: Option<Box<[KeyValue]>>,
    },
    Active(Box<Nic>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Idle {
    New,
    Unsupported,
    Pending,
}

/// An interface whose driver statistics are read every cycle.
struct Nic {
    ifname: IfName,
    /// The statistics count the names were fetched for.
    count: u32,
    /// Driver statistic index → series index (or `queue::DROPPED`).
    slots: Box<[u32]>,
    values: Box<[u64]>,
    attrs: Box<[Box<[KeyValue]>]>,
    info: Option<Box<[KeyValue]>>,
    /// The last GSTATS succeeded: `values` are current.
    valid: bool,
    /// The count changed: fetch count and names again next cycle.
    stale: bool,
}

/// How fetching names for an interface ended.
enum Setup {
    Ready(Box<Nic>),
    Unsupported(Option<Box<[KeyValue]>>),
    /// Try again next cycle (count changed mid-fetch, or the interface is going away).
    Again(Option<Box<[KeyValue]>>),
    Failed(EthtoolError, Option<Box<[KeyValue]>>),
}

fn is_errno(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

fn unsupported(e: &io::Error) -> bool {
    is_errno(e, libc::EOPNOTSUPP) || is_errno(e, libc::EINVAL)
}

fn gone(e: &io::Error) -> bool {
    is_errno(e, libc::ENODEV) || is_errno(e, libc::ENXIO)
}

impl EthtoolCollector {
    /// Opens the ioctl socket (in the caller's network namespace) and compiles the
    /// filters.
    pub fn new(config: &EthtoolConfig) -> Result<EthtoolCollector, EthtoolError> {
        Ok(EthtoolCollector {
            sock: EthtoolSocket::new().map_err(EthtoolError::Socket)?,
            scratch: GuardedBuf::new(4096).map_err(EthtoolError::Buffer)?,
            interfaces: config.interface_filter(),
            stats: config.stat_filter(),
            mode: config.per_queue,
            retry_cycles: u64::from(config.unsupported_retry_cycles.max(1)),
            max_interfaces: config.max_interfaces,
            entries: BTreeMap::new(),
            names: HashSet::new(),
            cycle: 0,
            counts: IoctlCounts::default(),
            overflow_warned: false,
        })
    }

    /// Interfaces the collector holds state for (every interface of the last link table
    /// up to `max_interfaces`, whatever its status).
    pub fn tracked_interfaces(&self) -> usize {
        self.entries.len()
    }

    /// What the collector does with interface `ifindex`, if it tracks it.
    pub fn status(&self, ifindex: u32) -> Option<InterfaceStatus> {
        self.entries.get(&ifindex).map(|e| match &e.state {
            State::Excluded => InterfaceStatus::Excluded,
            State::Idle {
                retry_at,
                why: Idle::Unsupported,
                ..
            } => InterfaceStatus::Unsupported {
                retry_at: *retry_at,
            },
            State::Idle { retry_at, .. } => InterfaceStatus::Pending {
                retry_at: *retry_at,
            },
            State::Active(nic) => InterfaceStatus::Active {
                stats: nic.count,
                series: nic.attrs.len() as u32,
                valid: nic.valid,
            },
        })
    }

    /// Collection cycles run so far.
    pub fn cycles(&self) -> u64 {
        self.cycle
    }

    /// Ioctls issued so far, by command.
    pub fn ioctl_counts(&self) -> IoctlCounts {
        self.counts
    }

    /// Fetches driver info, the statistics count and names for one interface and builds
    /// its series.
    fn setup(
        &mut self,
        ifname: IfName,
        name: &Arc<str>,
        workload: Option<&crate::workload::Workload>,
    ) -> Setup {
        let err = |ioctl: &'static str, error: io::Error| EthtoolError::Ioctl {
            ifname: name.clone(),
            ioctl,
            error,
        };
        self.counts.gdrvinfo += 1;
        let drv = match self.sock.drvinfo(&ifname) {
            Ok(d) => Some(d),
            Err(e) if gone(&e) => return Setup::Again(None),
            Err(e) if unsupported(&e) => None,
            Err(e) => return Setup::Failed(err("ETHTOOL_GDRVINFO", e), None),
        };
        let info = drv.as_ref().map(|d| {
            let mut kv = vec![
                KeyValue::new(INTERFACE_NAME, name.clone()),
                KeyValue::new(attr::DRIVER, d.driver.clone()),
                KeyValue::new(attr::DRIVER_VERSION, d.version.clone()),
                KeyValue::new(attr::FIRMWARE_VERSION, d.fw_version.clone()),
                KeyValue::new(attr::BUS_INFO, d.bus_info.clone()),
            ];
            if let Some(w) = workload {
                w.push_attributes(&mut kv);
            }
            kv.into_boxed_slice()
        });
        self.counts.gsset_info += 1;
        let count = match self.sock.stats_count(&ifname) {
            Ok(Some(n)) => n,
            Ok(None) => 0,
            Err(e) if gone(&e) => return Setup::Again(info),
            // Drivers without get_sset_count for GSSET_INFO: GDRVINFO's n_stats.
            Err(e) if unsupported(&e) => drv.as_ref().map_or(0, |d| d.n_stats),
            Err(e) => return Setup::Failed(err("ETHTOOL_GSSET_INFO", e), info),
        };
        if count == 0 {
            return Setup::Unsupported(info);
        }
        if count > MAX_STATS {
            return Setup::Failed(
                EthtoolError::TooManyStats {
                    ifname: name.clone(),
                    count,
                },
                info,
            );
        }
        let mut names = Vec::with_capacity(count as usize);
        self.counts.gstrings += 1;
        match self
            .sock
            .stat_names(&ifname, count, &mut self.scratch, |raw| {
                names.push(ioctl::c_text(raw))
            }) {
            Ok(Reply::Complete) => {}
            Ok(Reply::CountChanged { .. }) => return Setup::Again(info),
            Err(e) if gone(&e) => return Setup::Again(info),
            Err(e) if unsupported(&e) => return Setup::Unsupported(info),
            Err(e) => return Setup::Failed(err("ETHTOOL_GSTRINGS", e), info),
        }
        // Reserve the GSTATS reply now, so reading never maps memory.
        if let Err(e) = self.scratch.reserve(8 + 8 * count as usize) {
            return Setup::Failed(EthtoolError::Buffer(e), info);
        }
        let stats = &self.stats;
        let plan = queue::plan(&names, self.mode, |n| stats.matches(n));
        let attrs = plan
            .series
            .iter()
            .map(|s| {
                let stat = intern(&mut self.names, &s.name);
                let mut kv = Vec::with_capacity(6);
                kv.push(KeyValue::new(INTERFACE_NAME, name.clone()));
                kv.push(KeyValue::new(attr::STAT_NAME, stat));
                if let Some(q) = s.queue {
                    kv.push(KeyValue::new(attr::QUEUE, i64::from(q)));
                }
                if let Some(w) = workload {
                    w.push_attributes(&mut kv);
                }
                kv.into_boxed_slice()
            })
            .collect::<Box<[_]>>();
        tracing::debug!(
            interface = &**name,
            driver = drv.as_ref().map_or("", |d| d.driver.as_str()),
            stats = count,
            series = attrs.len(),
            "ethtool: driver statistics names fetched"
        );
        Setup::Ready(Box::new(Nic {
            ifname,
            count,
            slots: plan.slots.into_boxed_slice(),
            values: vec![0; attrs.len()].into_boxed_slice(),
            attrs,
            info,
            valid: false,
            stale: false,
        }))
    }

    /// Handles one interface of the link table in this cycle.
    fn update(&mut self, link: &Link) {
        let cycle = self.cycle;
        let len = self.entries.len();
        let entry = match self.entries.entry(link.ifindex) {
            btree_map::Entry::Occupied(o) => {
                let e = o.into_mut();
                if !same_device(e, link) {
                    // The ifindex now names another device (or it was renamed): start
                    // over, nothing of the old one is kept.
                    *e = Entry::new(link, &self.interfaces);
                }
                e
            }
            btree_map::Entry::Vacant(v) => {
                if len >= self.max_interfaces {
                    if !self.overflow_warned {
                        tracing::warn!(
                            max_interfaces = self.max_interfaces,
                            "ethtool: too many interfaces, ignoring the rest"
                        );
                        self.overflow_warned = true;
                    }
                    return;
                }
                v.insert(Entry::new(link, &self.interfaces))
            }
        };
        entry.seen = cycle;
        let due = match &mut entry.state {
            State::Excluded => return,
            State::Idle { retry_at, .. } => *retry_at <= cycle,
            // Every statistic filtered out by `stats_include`/`stats_exclude`: nothing to
            // read (its `retina.nic.info` is still reported).
            State::Active(nic) if nic.attrs.is_empty() => return,
            State::Active(nic) if !nic.stale => {
                self.counts.gstats += 1;
                match read(&self.sock, &mut self.scratch, nic) {
                    Ok(()) => return,
                    Err(e) if gone(&e) => return,
                    Err(e) => {
                        let why = if unsupported(&e) {
                            tracing::debug!(
                                interface = &*link.name,
                                "ethtool: ETHTOOL_GSTATS: {e}; retrying every {} cycles",
                                self.retry_cycles
                            );
                            Idle::Unsupported
                        } else {
                            tracing::warn!(
                                interface = &*link.name,
                                "ethtool: ETHTOOL_GSTATS: {e}; retrying every {} cycles",
                                self.retry_cycles
                            );
                            Idle::Pending
                        };
                        let State::Active(nic) =
                            std::mem::replace(&mut entry.state, State::Excluded)
                        else {
                            unreachable!()
                        };
                        entry.state = State::Idle {
                            retry_at: cycle + self.retry_cycles,
                            why,
                            info: nic.info,
                        };
                        return;
                    }
                }
            }
            State::Active(_) => true,
        };
        if !due {
            return;
        }
        let Some(ifname) = IfName::from_bytes(link.name_bytes()) else {
            entry.state = State::Excluded;
            return;
        };
        let previous = match &entry.state {
            State::Idle { why, .. } => *why,
            _ => Idle::New,
        };
        let name = entry.name.clone();
        let workload = entry.workload.clone();
        let outcome = self.setup(ifname, &name, workload.as_deref());
        let retry_cycles = self.retry_cycles;
        // Re-borrow: setup needed all of `self`.
        let Some(entry) = self.entries.get_mut(&link.ifindex) else {
            return;
        };
        entry.state = match outcome {
            Setup::Ready(mut nic) => {
                self.counts.gstats += 1;
                match read(&self.sock, &mut self.scratch, &mut nic) {
                    Err(e) if !gone(&e) => {
                        tracing::warn!(interface = &*name, "ethtool: ETHTOOL_GSTATS: {e}");
                        State::Idle {
                            retry_at: cycle + retry_cycles,
                            why: Idle::Pending,
                            info: nic.info,
                        }
                    }
                    _ => State::Active(nic),
                }
            }
            Setup::Unsupported(info) => {
                if previous != Idle::Unsupported {
                    tracing::debug!(
                        interface = &*name,
                        "ethtool: no driver statistics; asking again every {retry_cycles} cycles"
                    );
                }
                State::Idle {
                    retry_at: cycle + retry_cycles,
                    why: Idle::Unsupported,
                    info,
                }
            }
            Setup::Again(info) => State::Idle {
                retry_at: cycle + 1,
                why: Idle::Pending,
                info,
            },
            Setup::Failed(e, info) => {
                if previous != Idle::Pending {
                    tracing::warn!("ethtool: {e}; asking again every {retry_cycles} cycles");
                }
                State::Idle {
                    retry_at: cycle + retry_cycles,
                    why: Idle::Pending,
                    info,
                }
            }
        };
    }
}

/// Whether `entry` still describes the device `link` is: same instance (the link table
/// gives a re-created ifindex a new one) and same name (attributes carry it).
fn same_device(entry: &Entry, link: &Link) -> bool {
    entry.instance == link.instance && *entry.name == *link.name
}

impl Entry {
    fn new(link: &Link, filter: &NameFilter) -> Entry {
        Entry {
            name: link.name.clone(),
            workload: link.workload.clone(),
            instance: link.instance,
            seen: 0,
            state: if filter.matches(&link.name) {
                State::Idle {
                    retry_at: 0,
                    why: Idle::New,
                    info: None,
                }
            } else {
                State::Excluded
            },
        }
    }
}

fn intern(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(name);
    names.insert(n.clone());
    n
}

/// One `ETHTOOL_GSTATS` into `scratch`, folded into `nic.values`. Allocation-free.
fn read(sock: &EthtoolSocket, scratch: &mut GuardedBuf, nic: &mut Nic) -> io::Result<()> {
    match sock.stats(&nic.ifname, nic.count, scratch) {
        Ok((Reply::Complete, raw)) => {
            fold(&nic.slots, raw, &mut nic.values);
            nic.valid = true;
            Ok(())
        }
        Ok((Reply::CountChanged { got }, _)) => {
            tracing::debug!(
                expected = nic.count,
                got,
                "ethtool: statistics count changed; fetching names again"
            );
            nic.valid = false;
            nic.stale = true;
            Ok(())
        }
        Err(e) => {
            nic.valid = false;
            Err(e)
        }
    }
}

/// Adds one `ETHTOOL_GSTATS` reply's values into the series they map to (`slots`, from
/// [`queue::plan`]).
fn fold(slots: &[u32], raw: &[u64], values: &mut [u64]) {
    values.fill(0);
    for (&slot, &v) in slots.iter().zip(raw) {
        if let Some(out) = values.get_mut(slot as usize) {
            *out = out.wrapping_add(v);
        }
    }
}

/// One exported driver statistic: `nic.stat.name`, `nic.queue` (split mode) and value.
pub type StatPoint = (String, Option<u32>, u64);

/// What the collector makes of one interface's replies, without a socket: the
/// `ETHTOOL_GSTRINGS` reply `gstrings` for `count` statistics (names as in
/// [`EthtoolSocket::stat_names`]), mapped to series under `mode` and the `stats` filter,
/// then the values of the last `ETHTOOL_GSTATS` reply in `gstats` folded in (the
/// collector checks each reply's count before: `values` are the ones after its header).
/// `None` when the names reply does not hold `count` names or `count` exceeds
/// [`MAX_STATS`]. The entry point of the fuzz target `ethtool` (`fuzz/`) and of tests.
pub fn parse_replies(
    gstrings: &[u8],
    count: u32,
    mode: QueueMode,
    stats: &NameFilter,
    gstats: &[&[u64]],
) -> Option<Vec<StatPoint>> {
    if count > MAX_STATS {
        return None;
    }
    let mut names = Vec::new();
    if ioctl::gstrings_reply(gstrings, count, |raw| names.push(ioctl::c_text(raw)))
        != Reply::Complete
    {
        return None;
    }
    let plan = queue::plan(&names, mode, |n| stats.matches(n));
    let mut values = vec![0; plan.series.len()];
    for raw in gstats {
        fold(&plan.slots, raw, &mut values);
    }
    Some(
        plan.series
            .into_iter()
            .zip(values)
            .map(|(s, v)| (s.name, s.queue, v))
            .collect(),
    )
}

impl Collector for EthtoolCollector {
    fn name(&self) -> &'static str {
        "ethtool"
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        &DRIVER_METRICS
    }

    fn collect(&mut self, links: &Links) -> Result<(), CollectError> {
        self.cycle += 1;
        for link in links.iter() {
            self.update(link);
        }
        let cycle = self.cycle;
        let before = self.entries.len();
        self.entries.retain(|_, e| e.seen == cycle);
        if self.entries.len() != before {
            // Drop names no interface uses any more.
            self.names.retain(|n| Arc::strong_count(n) > 1);
        }
        Ok(())
    }

    fn visit(&self, visitor: &mut dyn Visitor) {
        for entry in self.entries.values() {
            match &entry.state {
                State::Active(nic) => {
                    if let Some(info) = &nic.info {
                        visitor.point(&NIC_INFO, info, Number::U64(1));
                    }
                    if nic.valid {
                        for (attrs, &v) in nic.attrs.iter().zip(nic.values.iter()) {
                            visitor.point(&NIC_DRIVER_STAT, attrs, Number::U64(v));
                        }
                    }
                }
                State::Idle {
                    info: Some(info), ..
                } => visitor.point(&NIC_INFO, info, Number::U64(1)),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_parsing() {
        let c: EthtoolConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, EthtoolConfig::default());
        assert_eq!(c.per_queue, QueueMode::Sum);
        assert_eq!(c.interfaces_exclude, ["lo"]);
        let c: EthtoolConfig = serde_json::from_str(
            r#"{"per_queue": "split", "link_state_interval": "5m", "stats_exclude": ["peer_ifindex"]}"#,
        )
        .unwrap();
        assert_eq!(c.per_queue, QueueMode::Split);
        assert_eq!(c.link_state_interval, Duration::from_secs(300));
        let c: EthtoolConfig = serde_json::from_str(r#"{"link_state_interval": 15}"#).unwrap();
        assert_eq!(c.link_state_interval, Duration::from_secs(15));
        assert!(serde_json::from_str::<EthtoolConfig>(r#"{"per_queue": "all"}"#).is_err());
        assert!(serde_json::from_str::<EthtoolConfig>(r#"{"bogus": 1}"#).is_err());
        assert!(
            serde_json::from_str::<EthtoolConfig>(r#"{"link_state_interval": "5 parsecs"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<EthtoolConfig>(r#"{"link_state_interval": "0s"}"#).is_err());
        let c: EthtoolConfig =
            serde_json::from_str(r#"{"link_state_interval": "1m 30s"}"#).unwrap();
        assert_eq!(c.link_state_interval, Duration::from_secs(90));
    }

    #[test]
    fn bad_patterns_are_refused_when_read() {
        let err = serde_json::from_str::<EthtoolConfig>(r#"{"stats_exclude": ["rx["]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid regular expression \"rx[\""), "{err}");
    }
}
