//! "Where packets died": every loss counter of a window, from every layer, in one list.
//!
//! The view reads the points the collectors already export; [`RULES`] says which metric
//! (and which attribute values of it) counts lost packets at which layer, and which
//! attributes tell its rows apart. A new collector plugs in by adding rows to [`RULES`];
//! a rule whose metric no collector exports simply matches nothing.
//!
//! One packet can appear in more than one row: the stack-location rows break the
//! stack-reason rows down by kernel function, and some losses bump an interface counter
//! and free the packet with a reason (an unknown EtherType is both `rx_dropped` on the
//! interface and `UNHANDLED_PROTO` in the stack). The rows are counters side by side, not
//! a sum.

use std::{cmp::Reverse, collections::BTreeMap, fmt::Write as _};

use serde_json::Value as Json;

use super::Point;
use crate::{
    collectors::{
        conntrack::{self, CONNTRACK_STAT},
        drops::collector::{DROP_COUNT, MISSED, OVERFLOW_COUNT},
        ethtool::{self, NIC_DRIVER_STAT},
        netdev::{NETWORK_DROPPED, NETWORK_ERRORS},
        qdisc::{self, QDISC_DROPS, QDISC_OVERLIMITS},
        softnet::{self, SOFTNET_DROPPED, SOFTNET_TIME_SQUEEZE},
    },
    model::{Kind, Metric, Number, attr},
};

/// Where in the path of a packet a counter counts losses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Layer {
    /// The NIC, its driver, or the interface (ring full, FIFO overrun, interface drops).
    Nic,
    /// The per-CPU receive backlog (`/proc/net/softnet_stat`).
    Backlog,
    /// A queueing discipline.
    Qdisc,
    /// Connection tracking.
    Conntrack,
    /// The stack, by the kernel's drop reason (`kfree_skb`).
    StackReason,
    /// The stack, by the kernel function that freed the packet (`drops.locations`).
    StackLocation,
}

impl Layer {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Layer::Nic => "NIC",
            Layer::Backlog => "backlog",
            Layer::Qdisc => "qdisc",
            Layer::Conntrack => "conntrack",
            Layer::StackReason => "stack reason",
            Layer::StackLocation => "stack location",
        }
    }
}

/// Which points of a metric a rule takes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Filter {
    /// Every point.
    Any,
    /// Points that have the attribute.
    Has(&'static str),
    /// Points whose attribute is one of the values.
    OneOf(&'static str, &'static [&'static str]),
    /// Points whose attribute contains one of the fragments (ASCII case-insensitive).
    Contains(&'static str, &'static [&'static str]),
}

/// One row of the table: points of `metric` that pass `filter` count losses at `layer`;
/// points with the same values of the `by` attributes are summed into one row, shown as
/// `label=value` (the first attribute of each alternative list that the point has).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rule {
    pub(crate) metric: &'static Metric,
    pub(crate) filter: Filter,
    pub(crate) layer: Layer,
    pub(crate) by: &'static [(&'static str, &'static [&'static str])],
    /// Shown after the attributes (for counters without any).
    pub(crate) note: &'static str,
}

const IFACE: (&str, &[&str]) = ("if", &[attr::INTERFACE_NAME, attr::INTERFACE_INDEX]);
const NETNS: (&str, &[&str]) = ("netns", &[attr::NETNS_NAME, attr::NETNS_INODE]);
const DIRECTION: (&str, &[&str]) = ("dir", &[attr::IO_DIRECTION]);
/// The workload of the drop's namespace (see `crate::workload`), where there is one.
const WORKLOAD: [(&str, &[&str]); 3] = [
    ("pod", &[attr::POD_UID]),
    ("container", &[attr::CONTAINER_ID]),
    ("unit", &[attr::SYSTEMD_UNIT]),
];
const QDISC: [(&str, &[&str]); 4] = [
    IFACE,
    ("qdisc", &[qdisc::ATTR_KIND]),
    ("handle", &[qdisc::ATTR_HANDLE]),
    ("parent", &[qdisc::ATTR_PARENT]),
];

/// Driver statistics whose names say they count lost packets.
pub(crate) const NIC_LOSS_NAMES: &[&str] = &[
    "drop", "miss", "fifo", "discard", "nobuf", "no_buf", "overrun",
];

/// Every loss counter the view knows, by metric and attribute.
pub(crate) static RULES: &[Rule] = &[
    Rule {
        metric: &NIC_DRIVER_STAT,
        filter: Filter::Contains(ethtool::attr::STAT_NAME, NIC_LOSS_NAMES),
        layer: Layer::Nic,
        by: &[IFACE, ("stat", &[ethtool::attr::STAT_NAME])],
        note: "",
    },
    Rule {
        metric: &NETWORK_DROPPED,
        filter: Filter::Any,
        layer: Layer::Nic,
        by: &[IFACE, DIRECTION],
        note: "",
    },
    Rule {
        metric: &NETWORK_ERRORS,
        filter: Filter::Any,
        layer: Layer::Nic,
        by: &[IFACE, DIRECTION],
        note: "",
    },
    Rule {
        metric: &SOFTNET_DROPPED,
        filter: Filter::Any,
        layer: Layer::Backlog,
        by: &[("cpu", &[softnet::ATTR_CPU])],
        note: "",
    },
    Rule {
        metric: &SOFTNET_TIME_SQUEEZE,
        filter: Filter::Any,
        layer: Layer::Backlog,
        by: &[("cpu", &[softnet::ATTR_CPU])],
        note: "(softirq budget ran out with work left)",
    },
    Rule {
        metric: &QDISC_DROPS,
        filter: Filter::Any,
        layer: Layer::Qdisc,
        by: &QDISC,
        note: "",
    },
    Rule {
        metric: &QDISC_OVERLIMITS,
        filter: Filter::Any,
        layer: Layer::Qdisc,
        by: &QDISC,
        note: "(over the rate: delayed or dropped)",
    },
    Rule {
        metric: &CONNTRACK_STAT,
        filter: Filter::OneOf(
            conntrack::ATTR_STAT,
            &["drop", "early_drop", "insert_failed", "invalid"],
        ),
        layer: Layer::Conntrack,
        by: &[("stat", &[conntrack::ATTR_STAT])],
        note: "",
    },
    Rule {
        metric: &DROP_COUNT,
        filter: Filter::Any,
        layer: Layer::StackReason,
        by: &[
            ("reason", &[attr::DROP_REASON]),
            IFACE,
            NETNS,
            WORKLOAD[0],
            WORKLOAD[1],
            WORKLOAD[2],
        ],
        note: "",
    },
    Rule {
        metric: &OVERFLOW_COUNT,
        filter: Filter::Any,
        layer: Layer::StackReason,
        by: &[],
        note: "(drop map full: no reason kept)",
    },
    Rule {
        metric: &MISSED,
        filter: Filter::Any,
        layer: Layer::StackReason,
        by: &[],
        note: "(not counted: probe already running on that CPU)",
    },
    Rule {
        metric: &DROP_COUNT,
        filter: Filter::Has(attr::DROP_LOCATION),
        layer: Layer::StackLocation,
        by: &[
            ("function", &[attr::DROP_LOCATION]),
            ("reason", &[attr::DROP_REASON]),
            IFACE,
            NETNS,
            WORKLOAD[0],
            WORKLOAD[1],
            WORKLOAD[2],
        ],
        note: "",
    },
];

/// Whether any rule reads `metric` (to capture only what the view needs).
pub(crate) fn reads(metric: &Metric) -> bool {
    RULES.iter().any(|r| r.metric.name == metric.name)
}

/// One line of the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) packets: u64,
    pub(crate) layer: Layer,
    pub(crate) metric: &'static str,
    /// `label=value ...`, then the rule's note.
    pub(crate) place: String,
}

fn attribute<'a>(p: &'a Point, key: &str) -> Option<&'a Json> {
    p.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn passes(filter: Filter, p: &Point) -> bool {
    match filter {
        Filter::Any => true,
        Filter::Has(k) => attribute(p, k).is_some(),
        Filter::OneOf(k, values) => {
            attribute(p, k).is_some_and(|v| values.iter().any(|w| text(v) == *w))
        }
        Filter::Contains(k, fragments) => attribute(p, k).is_some_and(|v| {
            let v = text(v).to_ascii_lowercase();
            fragments.iter().any(|f| v.contains(f))
        }),
    }
}

/// The non-zero loss counters among `points` (a window's changes, or running totals), by
/// layer and place, largest first.
pub(crate) fn rows(points: &[Point]) -> Vec<Row> {
    let mut sums: BTreeMap<(Layer, &'static str, String), u64> = BTreeMap::new();
    for rule in RULES {
        for p in points.iter().filter(|p| p.metric.name == rule.metric.name) {
            let Number::U64(n) = p.value else { continue };
            if n == 0 || p.metric.kind != Kind::Counter || !passes(rule.filter, p) {
                continue;
            }
            let mut place = String::new();
            for (label, keys) in rule.by {
                if let Some(v) = keys.iter().find_map(|k| attribute(p, k)) {
                    let _ = write!(place, "{}{label}={}", sep(&place), text(v));
                }
            }
            if !rule.note.is_empty() {
                let _ = write!(place, "{}{}", sep(&place), rule.note);
            }
            *sums.entry((rule.layer, rule.metric.name, place)).or_insert(0) += n;
        }
    }
    let mut rows: Vec<Row> = sums
        .into_iter()
        .map(|((layer, metric, place), packets)| Row {
            packets,
            layer,
            metric,
            place,
        })
        .collect();
    // Stable: equal counts stay in layer order.
    rows.sort_by_key(|r| Reverse(r.packets));
    rows
}

fn sep(s: &str) -> &'static str {
    if s.is_empty() { "" } else { " " }
}

pub(crate) const TITLE: &str = "where packets died";

/// The section as text: a title line, then one line per row (or a line saying nothing was
/// lost).
pub(crate) fn render(rows: &[Row]) -> String {
    if rows.is_empty() {
        return format!("{TITLE}: no loss counter moved\n");
    }
    let count_w = rows
        .iter()
        .map(|r| r.packets.to_string().len())
        .max()
        .unwrap_or(0)
        .max(7);
    let metric_w = rows.iter().map(|r| r.metric.len()).max().unwrap_or(0);
    let mut out = format!(
        "{TITLE}:\n{:>count_w$}  {:<14}  {:<metric_w$}  WHERE\n",
        "PACKETS", "LAYER", "METRIC"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>count_w$}  {:<14}  {:<metric_w$}  {}",
            r.packets,
            r.layer.as_str(),
            r.metric,
            r.place
        );
    }
    out
}

#[cfg(test)]
mod tests;
