//! Per-queue statistic names, and the stat index → output series mapping built once per
//! name fetch.
//!
//! Drivers encode the queue number in the statistic name, each in its own style. The
//! patterns recognised (`N` is the queue number, `REST` the statistic):
//!
//! | driver style (examples)                          | pattern          | exported name     |
//! |--------------------------------------------------|------------------|-------------------|
//! | veth, ixgbe, ice, older virtio_net: `rx_queue_0_xdp_packets` | `rx_queue_N_REST` / `tx_queue_N_REST` | `rx_queue_REST` / `tx_queue_REST` |
//! | mlx4, mlx5, virtio_net (6.x): `rx0_packets`, `tx12_bytes`, `ch3_events` | `rxN_REST` / `txN_REST` / `chN_REST` | `rx_queue_REST` / `tx_queue_REST` / `ch_queue_REST` |
//! | i40e, older veth: `tx-0.tx_packets`, `rx-1.bytes` | `rx-N.REST` / `tx-N.REST` | `rx_queue_REST` (a leading `rx_` of REST is dropped) |
//! | ena: `queue_0_tx_cnt`                             | `queue_N_REST`   | `queue_REST`      |
//! | bnxt: `[0]: rx_ucast_packets`                     | `[N]: REST`      | `REST`            |
//! | gve: `rx_posted_desc[0]`                          | `REST[N]`        | `REST`            |
//!
//! The exported name keeps a `queue` marker because many drivers also report a device-wide
//! statistic under the bare name (virtio_net has both `rx_drops` and `rx0_drops`); should
//! an exported name still collide with a device-wide statistic of the same interface, that
//! interface's per-queue statistics of that name are exported under their original names
//! instead (as if the mode were `keep`).

use std::collections::{HashMap, hash_map};

use super::QueueMode;

/// A statistic name split into the exported name and the queue number.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueStat {
    pub base: String,
    pub queue: u32,
}

/// Largest queue number accepted (anything larger is taken as part of the name).
const MAX_QUEUE: u32 = 1 << 20;

fn parse_num(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 7 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n < MAX_QUEUE)
}

/// Splits `s` at the first byte that is not an ASCII digit.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Recognises a per-queue statistic name; `None` for device-wide ones.
pub fn parse(name: &str) -> Option<QueueStat> {
    let q = |base: String, n: &str| parse_num(n).map(|queue| QueueStat { base, queue });
    for dir in ["rx", "tx"] {
        if let Some(rest) = name.strip_prefix(dir) {
            // rx_queue_N_REST
            if let Some(after) = rest.strip_prefix("_queue_") {
                let (num, tail) = split_digits(after);
                if let Some(stat) = tail.strip_prefix('_').filter(|t| !t.is_empty()) {
                    return q(format!("{dir}_queue_{stat}"), num);
                }
            }
            // rx-N.REST
            if let Some(after) = rest.strip_prefix('-') {
                let (num, tail) = split_digits(after);
                if let Some(stat) = tail.strip_prefix('.').filter(|t| !t.is_empty()) {
                    let stat = stat
                        .strip_prefix(dir)
                        .and_then(|s| s.strip_prefix('_'))
                        .filter(|s| !s.is_empty())
                        .unwrap_or(stat);
                    return q(format!("{dir}_queue_{stat}"), num);
                }
            }
        }
    }
    // rxN_REST, txN_REST, chN_REST
    for dir in ["rx", "tx", "ch"] {
        if let Some(rest) = name.strip_prefix(dir) {
            let (num, tail) = split_digits(rest);
            if !num.is_empty()
                && let Some(stat) = tail.strip_prefix('_').filter(|t| !t.is_empty())
            {
                return q(format!("{dir}_queue_{stat}"), num);
            }
        }
    }
    // queue_N_REST
    if let Some(after) = name.strip_prefix("queue_") {
        let (num, tail) = split_digits(after);
        if let Some(stat) = tail.strip_prefix('_').filter(|t| !t.is_empty()) {
            return q(format!("queue_{stat}"), num);
        }
    }
    // [N]: REST
    if let Some(after) = name.strip_prefix('[') {
        let (num, tail) = split_digits(after);
        if let Some(stat) = tail.strip_prefix("]:") {
            let stat = stat.trim_start();
            if !stat.is_empty() {
                return q(stat.to_string(), num);
            }
        }
    }
    // REST[N]
    if let Some(head) = name.strip_suffix(']')
        && let Some(open) = head.rfind('[')
        && open > 0
    {
        return q(head[..open].to_string(), &head[open + 1..]);
    }
    None
}

/// Where one driver statistic goes.
pub(crate) const DROPPED: u32 = u32::MAX;

/// One output series before its attributes are built.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SeriesSpec {
    /// `nic.stat.name`.
    pub(crate) name: String,
    /// `nic.queue`, in split mode only.
    pub(crate) queue: Option<u32>,
}

/// The mapping from a driver's statistics (in ETHTOOL_GSTRINGS order) to output series.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// For every driver statistic, its series index or [`DROPPED`].
    pub(crate) slots: Vec<u32>,
    pub(crate) series: Vec<SeriesSpec>,
}

/// Builds the mapping for one interface's statistic `names` under `mode`, keeping only
/// series whose exported name `keep` accepts. Every series gets one statistic except in
/// [`QueueMode::Sum`], where all queues' statistics of one exported name add up into one
/// series. A name the driver reports twice is exported once (the first one).
pub(crate) fn plan(names: &[String], mode: QueueMode, mut keep: impl FnMut(&str) -> bool) -> Plan {
    let parsed: Vec<Option<QueueStat>> = match mode {
        QueueMode::Keep => names.iter().map(|_| None).collect(),
        _ => names.iter().map(|n| parse(n)).collect(),
    };
    // Device-wide names: a per-queue statistic whose exported name equals one of these is
    // kept under its original name.
    let plain: std::collections::HashSet<&str> = names
        .iter()
        .zip(&parsed)
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| n.as_str())
        .collect();

    let mut plan = Plan {
        slots: Vec::with_capacity(names.len()),
        series: Vec::new(),
    };
    let mut index: HashMap<(String, Option<u32>), u32> = HashMap::new();
    let mut accepted: HashMap<String, bool> = HashMap::new();
    for (name, parsed) in names.iter().zip(parsed) {
        let parsed = parsed.filter(|p| !plain.contains(p.base.as_str()));
        let (exported, queue, summed) = match (mode, parsed) {
            (_, None) => (name.clone(), None, false),
            (QueueMode::Drop, Some(_)) => {
                plan.slots.push(DROPPED);
                continue;
            }
            (QueueMode::Split, Some(p)) => (p.base, Some(p.queue), false),
            (QueueMode::Sum, Some(p)) => (p.base, None, true),
            (QueueMode::Keep, Some(_)) => unreachable!("keep mode parses nothing"),
        };
        let ok = match accepted.entry(exported.clone()) {
            hash_map::Entry::Occupied(e) => *e.get(),
            hash_map::Entry::Vacant(e) => *e.insert(keep(&exported)),
        };
        if !ok {
            plan.slots.push(DROPPED);
            continue;
        }
        let slot = match index.entry((exported, queue)) {
            hash_map::Entry::Occupied(e) => {
                if summed {
                    *e.get()
                } else {
                    // A duplicate name: exported once.
                    DROPPED
                }
            }
            hash_map::Entry::Vacant(e) => {
                let i = plan.series.len() as u32;
                plan.series.push(SeriesSpec {
                    name: e.key().0.clone(),
                    queue: e.key().1,
                });
                e.insert(i);
                i
            }
        };
        plan.slots.push(slot);
    }
    plan
}

#[cfg(test)]
mod tests;
