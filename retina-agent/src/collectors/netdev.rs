//! The `netdev` collector: per-interface byte, packet, drop and error counters
//! (`struct rtnl_link_stats64`) from the cycle's rtnetlink dump ([`Links`]).
//!
//! It asks the kernel nothing itself. Each selected interface gets its attribute sets
//! (`network.interface.name` + `network.io.direction`) built once, when it appears; every
//! later cycle copies eight counters per interface and allocates nothing.
//!
//! Metrics (OpenTelemetry semantic conventions for system metrics), all cumulative sums,
//! each with attributes `network.interface.name` and `network.io.direction`
//! (`receive` / `transmit`):
//!
//! | name | unit | from `rtnl_link_stats64` |
//! |---|---|---|
//! | `system.network.io` | `By` | `rx_bytes` / `tx_bytes` |
//! | `system.network.packet.count` | `{packet}` | `rx_packets` / `tx_packets` |
//! | `system.network.packet.dropped` | `{packet}` | `rx_dropped` / `tx_dropped` |
//! | `system.network.errors` | `{error}` | `rx_errors` / `tx_errors` |

use opentelemetry::KeyValue;
use serde::Deserialize;

use crate::{
    collectors::{CollectError, Collector, interfaces::Interfaces},
    filter::{NameFilter, Pattern},
    kernel::links::{Link, LinkStats, Links},
    model::{Kind, Metric, Number, Visitor, attr, in_key_order},
};

pub(crate) const NETWORK_IO: Metric = Metric {
    name: "system.network.io",
    unit: "By",
    description: "Bytes received and transmitted by the interface (rtnl_link_stats64 rx_bytes/tx_bytes)",
    kind: Kind::Counter,
};
pub(crate) const NETWORK_PACKETS: Metric = Metric {
    name: "system.network.packet.count",
    unit: "{packet}",
    description: "Packets received and transmitted by the interface (rx_packets/tx_packets)",
    kind: Kind::Counter,
};
pub(crate) const NETWORK_DROPPED: Metric = Metric {
    name: "system.network.packet.dropped",
    unit: "{packet}",
    description: "Packets the interface dropped on receive or transmit (rx_dropped/tx_dropped)",
    kind: Kind::Counter,
};
pub(crate) const NETWORK_ERRORS: Metric = Metric {
    name: "system.network.errors",
    unit: "{error}",
    description: "Receive and transmit errors of the interface (rx_errors/tx_errors)",
    kind: Kind::Counter,
};

static METRICS: &[&Metric] = &[
    &NETWORK_IO,
    &NETWORK_PACKETS,
    &NETWORK_DROPPED,
    &NETWORK_ERRORS,
];

/// `[netdev]` configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NetdevConfig {
    /// Whether the collector runs (default `true`).
    pub enabled: bool,
    /// Interface names to export (anchored regular expressions); empty = all.
    pub include: Vec<Pattern>,
    /// Interface names never exported (anchored regular expressions); wins over `include`.
    pub exclude: Vec<Pattern>,
}

impl Default for NetdevConfig {
    fn default() -> Self {
        NetdevConfig {
            enabled: true,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// Attribute sets and last counters of one exported interface.
#[derive(Debug)]
struct Series {
    /// The interface name, the direction, and the workload of a pod's host veth.
    receive: Box<[KeyValue]>,
    transmit: Box<[KeyValue]>,
    stats: LinkStats,
}

/// Interface counters from the [`Links`] table.
#[derive(Debug)]
pub struct NetdevCollector {
    filter: NameFilter,
    /// Per interface (also those the filter rejects, `None`: the filter runs once per
    /// interface, not once per cycle).
    ifaces: Interfaces<Option<Series>>,
}

impl NetdevCollector {
    /// A collector exporting the interfaces the patterns of `config` select.
    pub fn new(config: &NetdevConfig) -> NetdevCollector {
        NetdevCollector::with_filter(NameFilter::new(&config.include, &config.exclude))
    }

    /// A collector exporting the interfaces `filter` selects.
    pub fn with_filter(filter: NameFilter) -> NetdevCollector {
        NetdevCollector {
            filter,
            ifaces: Interfaces::new(),
        }
    }

    /// Copies the counters of every interface in `links`; interfaces no longer there are
    /// forgotten. Allocates only for an interface that is new (or renamed/recreated).
    pub fn update(&mut self, links: &Links) {
        self.ifaces.begin();
        for link in links.iter() {
            let filter = &self.filter;
            let Some((series, _)) = self.ifaces.track(link, |link| series(filter, link)) else {
                continue;
            };
            if let Some(series) = series {
                series.stats = link.stats;
            }
        }
        self.ifaces.end();
    }

    /// Number of interfaces currently exported.
    #[cfg(any(test, feature = "internals"))]
    pub fn exported(&self) -> usize {
        self.ifaces.values().filter(|s| s.is_some()).count()
    }
}

/// The attribute sets of `link`, if `filter` selects it.
fn series(filter: &NameFilter, link: &Link) -> Option<Series> {
    filter.matches(&link.name).then(|| {
        let set = |direction: &'static str| {
            let mut kv = vec![
                KeyValue::new(attr::INTERFACE_NAME, link.name.clone()),
                KeyValue::new(attr::IO_DIRECTION, direction),
            ];
            if let Some(w) = &link.workload {
                w.push_attributes(&mut kv);
            }
            in_key_order(kv).into_boxed_slice()
        };
        Series {
            receive: set("receive"),
            transmit: set("transmit"),
            stats: link.stats,
        }
    })
}

impl Collector for NetdevCollector {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        METRICS
    }

    fn collect(&mut self, links: &Links) -> Result<(), CollectError> {
        self.update(links);
        Ok(())
    }

    fn visit(&self, visitor: &mut dyn Visitor) {
        for s in self.ifaces.values().flatten() {
            let st = &s.stats;
            let (rx, tx) = (&s.receive[..], &s.transmit[..]);
            visitor.point(&NETWORK_IO, rx, Number::U64(st.rx_bytes));
            visitor.point(&NETWORK_IO, tx, Number::U64(st.tx_bytes));
            visitor.point(&NETWORK_PACKETS, rx, Number::U64(st.rx_packets));
            visitor.point(&NETWORK_PACKETS, tx, Number::U64(st.tx_packets));
            visitor.point(&NETWORK_DROPPED, rx, Number::U64(st.rx_dropped));
            visitor.point(&NETWORK_DROPPED, tx, Number::U64(st.tx_dropped));
            visitor.point(&NETWORK_ERRORS, rx, Number::U64(st.rx_errors));
            visitor.point(&NETWORK_ERRORS, tx, Number::U64(st.tx_errors));
        }
    }
}

#[cfg(test)]
mod tests;
