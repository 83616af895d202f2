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
//!   allocates, so it runs in a task on the agent's tokio runtime every
//!   `link_state_interval` (and soon after a new interface appears), never in the
//!   collection cycle; `collect` only picks up its latest result.
//!
//! # Metrics
//!
//! | metric | kind | unit | attributes |
//! |---|---|---|---|
//! | `retina.nic.driver.stat` | counter | `1` | `network.interface.name`, `nic.stat.name`, `nic.queue` (split mode only) |
//! | `retina.nic.info` | gauge (always 1) | `1` | `network.interface.name`, `nic.driver`, `nic.driver.version`, `nic.firmware.version`, `nic.bus_info` (each left out when the driver answers it empty) |
//! | `retina.nic.link.speed` | gauge | `bit/s` | `network.interface.name` |
//! | `retina.nic.link.duplex` | gauge (1 full, 0 half) | `1` | `network.interface.name` |
//! | `retina.nic.ring.size` | gauge | `{descriptor}` | `network.interface.name`, `nic.ring` (`rx`, `tx`, `rx_mini`, `rx_jumbo`), `nic.ring.setting` (`current`, `max`) |
//! | `retina.nic.channels` | gauge | `{channel}` | `network.interface.name`, `nic.channel.type` (`rx`, `tx`, `other`, `combined`), `nic.channel.setting` (`current`, `max`) |

mod driver;
mod ioctl;
mod link_state;
mod netlink;
mod queue;

use std::{io, sync::Arc, time::Duration};

use serde::Deserialize;

pub use self::{driver::EthtoolCollector, ioctl::MAX_STATS, link_state::LinkStateCollector};
/// The pieces the integration tests, the bench and the fuzz targets drive directly.
#[cfg(feature = "internals")]
pub use self::{
    driver::{InterfaceStatus, parse_replies},
    ioctl::{EthtoolSocket, GuardedBuf, IfName, Reply},
    netlink::{LinkStateTable, apply_link_state},
    queue::parse as parse_queue_stat,
};
use crate::{
    filter::{NameFilter, Pattern},
    model::{Kind, Metric},
};

/// Attribute keys of the NIC metrics.
pub(crate) mod attr {
    /// The driver's statistic name (`ethtool -S`), with the queue number removed in the
    /// `split` and `sum` modes.
    pub(crate) const STAT_NAME: &str = "nic.stat.name";
    /// Queue number of a per-queue statistic (`split` mode only), an integer.
    pub(crate) const QUEUE: &str = "nic.queue";
    pub(crate) const DRIVER: &str = "nic.driver";
    pub(crate) const DRIVER_VERSION: &str = "nic.driver.version";
    pub(crate) const FIRMWARE_VERSION: &str = "nic.firmware.version";
    pub(crate) const BUS_INFO: &str = "nic.bus_info";
    /// `rx`, `tx`, `rx_mini`, `rx_jumbo`.
    pub(crate) const RING: &str = "nic.ring";
    /// `current` or `max`.
    pub(crate) const RING_SETTING: &str = "nic.ring.setting";
    /// `rx`, `tx`, `other`, `combined`.
    pub(crate) const CHANNEL_TYPE: &str = "nic.channel.type";
    /// `current` or `max`.
    pub(crate) const CHANNEL_SETTING: &str = "nic.channel.setting";
}

pub(crate) static NIC_DRIVER_STAT: Metric = Metric {
    name: "retina.nic.driver.stat",
    unit: "1",
    description: "A NIC driver statistic (ethtool -S), by interface and statistic name",
    kind: Kind::Counter,
};

pub(crate) static NIC_INFO: Metric = Metric {
    name: "retina.nic.info",
    unit: "{info}",
    description: "Driver, version, firmware and bus of a NIC (ethtool -i); always 1",
    kind: Kind::Gauge,
};

pub(crate) static NIC_LINK_SPEED: Metric = Metric {
    name: "retina.nic.link.speed",
    unit: "bit/s",
    description: "Negotiated link speed; absent while the driver reports it unknown",
    kind: Kind::Gauge,
};

pub(crate) static NIC_LINK_DUPLEX: Metric = Metric {
    name: "retina.nic.link.duplex",
    unit: "{duplex}",
    description: "Link duplex: 1 full, 0 half; absent while unknown",
    kind: Kind::Gauge,
};

pub(crate) static NIC_RING_SIZE: Metric = Metric {
    name: "retina.nic.ring.size",
    unit: "{descriptor}",
    description: "NIC ring size (ethtool -g), current setting and maximum",
    kind: Kind::Gauge,
};

pub(crate) static NIC_CHANNEL_COUNT: Metric = Metric {
    name: "retina.nic.channels",
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
    #[serde(deserialize_with = "crate::duration::deserialize")]
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
    pub(crate) fn interface_filter(&self) -> NameFilter {
        NameFilter::new(&self.interfaces_include, &self.interfaces_exclude)
    }

    /// The statistic-name filter.
    pub(crate) fn stat_filter(&self) -> NameFilter {
        NameFilter::new(&self.stats_include, &self.stats_exclude)
    }
}

/// Why an ethtool collector could not start, or what failed in the driver-statistics path.
#[derive(Debug, thiserror::Error)]
pub enum EthtoolError {
    #[error("opening the ethtool ioctl socket: {0}")]
    Socket(io::Error),
    #[error("mapping the ethtool reply buffer: {0}")]
    Buffer(io::Error),
    #[error("the link-state collector runs on the agent's tokio runtime, and none is running: {0}")]
    Runtime(tokio::runtime::TryCurrentError),
    #[error("{ifname}: {ioctl}: {error}")]
    Ioctl {
        ifname: Arc<str>,
        ioctl: &'static str,
        error: io::Error,
    },
    #[error("{ifname}: the driver reports {count} statistics, more than the {MAX_STATS} accepted")]
    TooManyStats { ifname: Arc<str>, count: u32 },
}

#[cfg(test)]
mod tests;
