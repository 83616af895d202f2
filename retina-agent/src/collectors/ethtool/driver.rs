//! The `ethtool` collector: NIC driver statistics (`ethtool -S`) and driver info
//! (`ethtool -i`) over the `SIOCETHTOOL` ioctl, one socket for every interface.

use std::{collections::HashSet, io, sync::Arc};

use opentelemetry::KeyValue;

use super::{
    DRIVER_METRICS, EthtoolConfig, EthtoolError, NIC_DRIVER_STAT, NIC_INFO, QueueMode, attr,
    ioctl::{self, EthtoolSocket, GuardedBuf, IfName, MAX_STATS, Reply},
    queue,
};
use crate::{
    collectors::{CollectError, Collector, interfaces::Interfaces},
    filter::NameFilter,
    kernel::links::{Link, Links},
    model::{Metric, Number, Visitor, attr::INTERFACE_NAME, in_key_order},
};

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
#[cfg(feature = "internals")]
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
    /// Per ifindex, in ifindex order (so `visit` reports in a stable order), at most
    /// `max_interfaces`.
    entries: Interfaces<Entry>,
    /// Exported statistic names shared between interfaces (hundreds of veths report the
    /// same nine).
    names: HashSet<Arc<str>>,
    counts: IoctlCounts,
    overflow_warned: bool,
}

struct Entry {
    name: Arc<str>,
    /// The workload of the interface's peer namespace (a pod's host veth), on its series.
    workload: Option<Arc<crate::model::Workload>>,
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

/// The statistics a driver reports through `ethtool -S` that are not counts: exported as
/// counters, `rate()` over them would mean nothing, and they do not move. veth's
/// `peer_ifindex` is the other end's interface index (the agent already follows the peer
/// to its namespace for the pod's attributes).
fn not_counts(driver: Option<&str>) -> &'static [&'static str] {
    match driver {
        Some("veth") => &["peer_ifindex"],
        _ => &[],
    }
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
            entries: Interfaces::with_limit(config.max_interfaces),
            names: HashSet::new(),
            counts: IoctlCounts::default(),
            overflow_warned: false,
        })
    }

    /// Interfaces the collector holds state for (every interface of the last link table
    /// up to `max_interfaces`, whatever its status).
    #[cfg(feature = "internals")]
    pub fn tracked_interfaces(&self) -> usize {
        self.entries.len()
    }

    /// What the collector does with interface `ifindex`, if it tracks it.
    #[cfg(feature = "internals")]
    pub fn status(&self, ifindex: u32) -> Option<InterfaceStatus> {
        self.entries.get(ifindex).map(|e| match &e.state {
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

    /// Ioctls issued so far, by command.
    #[cfg(feature = "internals")]
    pub fn ioctl_counts(&self) -> IoctlCounts {
        self.counts
    }

    /// Fetches driver info, the statistics count and names for one interface and builds
    /// its series.
    fn setup(
        &mut self,
        ifname: IfName,
        name: &Arc<str>,
        workload: Option<&crate::model::Workload>,
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
        let info = drv.as_ref().map(|d| info_attributes(name, d, workload));
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
        let not_counts = not_counts(drv.as_ref().map(|d| d.driver.as_str()));
        let plan = queue::plan(&names, self.mode, |n| {
            stats.matches(n) && !not_counts.contains(&n)
        });
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
                in_key_order(kv).into_boxed_slice()
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
        let cycle = self.entries.cycle();
        let filter = &self.interfaces;
        let Some((entry, _)) = self.entries.track(link, |link| Entry::new(link, filter)) else {
            if !self.overflow_warned {
                tracing::warn!(
                    max_interfaces = self.max_interfaces,
                    "ethtool: too many interfaces, ignoring the rest"
                );
                self.overflow_warned = true;
            }
            return;
        };
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
        let Some(entry) = self.entries.get_mut(link.ifindex) else {
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

impl Entry {
    fn new(link: &Link, filter: &NameFilter) -> Entry {
        Entry {
            name: link.name.clone(),
            workload: link.workload.clone(),
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
#[cfg(feature = "internals")]
pub(crate) type StatPoint = (String, Option<u32>, u64);

/// What the collector makes of one interface's replies, without a socket: the
/// `ETHTOOL_GSTRINGS` reply `gstrings` for `count` statistics (names as in
/// [`EthtoolSocket::stat_names`]), mapped to series under `mode` and the `stats` filter,
/// then the values of the last `ETHTOOL_GSTATS` reply in `gstats` folded in (the
/// collector checks each reply's count before: `values` are the ones after its header).
/// `None` when the names reply does not hold `count` names or `count` exceeds
/// [`MAX_STATS`]. The entry point of the fuzz target `ethtool` (`fuzz/`) and of tests.
#[cfg(feature = "internals")]
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
        self.entries.begin();
        for link in links.iter() {
            self.update(link);
        }
        if self.entries.end() > 0 {
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

/// The attributes of a `retina.nic.info` series. A value the driver leaves empty is left
/// out: `veth` and `tun` answer no firmware version and no bus, and an empty attribute
/// would be hashed, encoded and stored on every export for nothing (a Prometheus label
/// with an empty value is absent anyway).
pub(crate) fn info_attributes(
    name: &Arc<str>,
    d: &ioctl::DrvInfo,
    workload: Option<&crate::model::Workload>,
) -> Box<[KeyValue]> {
    let mut kv = vec![KeyValue::new(INTERFACE_NAME, name.clone())];
    for (key, value) in [
        (attr::DRIVER, &d.driver),
        (attr::DRIVER_VERSION, &d.version),
        (attr::FIRMWARE_VERSION, &d.fw_version),
        (attr::BUS_INFO, &d.bus_info),
    ] {
        if !value.is_empty() {
            kv.push(KeyValue::new(key, Arc::<str>::from(value.as_str())));
        }
    }
    if let Some(w) = workload {
        w.push_attributes(&mut kv);
    }
    in_key_order(kv).into_boxed_slice()
}
