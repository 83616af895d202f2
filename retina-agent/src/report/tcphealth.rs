//! The per-workload TCP section of the "where packets died" view: retransmits and failed
//! connects per workload in the window, largest first. A drop counted here is one half of
//! packet loss; the other half (loss in the network) shows only as retransmits and failed
//! connects at the sender.
//!
//! Rows come from sources, each a function from the window's points to [`Row`]s:
//! [`netns_rows`] reads the per-namespace counters (`retina.workload.netstat.stat`),
//! [`cgroup_rows`] the eBPF TCP events per socket cgroup (`retina.tcp.*`, for services in
//! the host's namespace); [`rows`] is both, and [`reads`] names their metrics. [`render`]
//! takes the rows, merges rows of the same workload and source, and sorts them.

use std::{cmp::Reverse, collections::BTreeMap, fmt::Write as _};

use serde_json::Value as Json;

use crate::{
    collectors::{
        netstat::workloads::WORKLOAD_NETSTAT_COUNTER,
        tcp_events::{TCP_CONNECT_FAILURES, TCP_RETRANSMITS},
    },
    model::{Metric, Number, attr},
    report::Point,
    workload::attr as wattr,
};

/// One workload's TCP trouble in the window, from one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    /// `pod=… container=… unit=… netns=…`: what tells the workload apart.
    pub(crate) workload: String,
    /// Segments retransmitted.
    pub(crate) retransmits: u64,
    /// Active connects that failed (refused, reset or timed out in SYN-SENT).
    pub(crate) failed_connects: u64,
    /// Where the counts come from (`netns`: the namespace's own protocol counters).
    pub(crate) source: &'static str,
}

/// Whether a source of this section reads `metric` (to capture only what is needed).
pub(crate) fn reads(metric: &Metric) -> bool {
    [
        WORKLOAD_NETSTAT_COUNTER.name,
        TCP_RETRANSMITS.name,
        TCP_CONNECT_FAILURES.name,
    ]
    .contains(&metric.name)
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

/// `label=value ...` of the workload attributes of `p` among `keys`.
pub(crate) fn workload_label(p: &Point, keys: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (label, key) in keys {
        if let Some(v) = attribute(p, key) {
            let sep = if out.is_empty() { "" } else { " " };
            let _ = write!(out, "{sep}{label}={}", text(v));
        }
    }
    out
}

/// Rows from the per-namespace protocol counters: `Tcp:RetransSegs` and
/// `Tcp:AttemptFails` of each workload namespace.
pub(crate) fn netns_rows(points: &[Point]) -> Vec<Row> {
    const KEYS: [(&str, &str); 4] = [
        ("pod", attr::POD_UID),
        ("container", attr::CONTAINER_ID),
        ("unit", attr::SYSTEMD_UNIT),
        ("netns", attr::NETNS_INODE),
    ];
    let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in points
        .iter()
        .filter(|p| p.metric.name == WORKLOAD_NETSTAT_COUNTER.name)
    {
        let Number::U64(n) = p.value else { continue };
        let field = |k| attribute(p, k).map(text);
        if field("netstat.group").as_deref() != Some("Tcp") {
            continue;
        }
        let e = by.entry(workload_label(p, &KEYS)).or_default();
        match field("netstat.field").as_deref() {
            Some("RetransSegs") => e.0 += n,
            Some("AttemptFails") => e.1 += n,
            _ => {}
        }
    }
    by.into_iter()
        .map(|(workload, (retransmits, failed_connects))| Row {
            workload,
            retransmits,
            failed_connects,
            source: "netns",
        })
        .collect()
}

/// Rows from the eBPF TCP events per socket cgroup (`retina.tcp.*`, sockets in the host's
/// namespace): the unit, pod or container that owns the socket, else its cgroup path.
pub(crate) fn cgroup_rows(points: &[Point]) -> Vec<Row> {
    const KEYS: [(&str, &str); 3] = [
        ("pod", attr::POD_UID),
        ("container", attr::CONTAINER_ID),
        ("unit", attr::SYSTEMD_UNIT),
    ];
    const CGROUP: [(&str, &str); 1] = [("cgroup", wattr::SOCKET_CGROUP)];
    let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in points {
        let retransmit = p.metric.name == TCP_RETRANSMITS.name;
        if !retransmit && p.metric.name != TCP_CONNECT_FAILURES.name {
            continue;
        }
        let Number::U64(n) = p.value else { continue };
        let mut label = workload_label(p, &KEYS);
        if label.is_empty() {
            label = workload_label(p, &CGROUP);
        }
        if label.is_empty() {
            continue;
        }
        let e = by.entry(label).or_default();
        if retransmit {
            e.0 += n;
        } else {
            e.1 += n;
        }
    }
    by.into_iter()
        .map(|(workload, (retransmits, failed_connects))| Row {
            workload,
            retransmits,
            failed_connects,
            source: "cgroup",
        })
        .collect()
}

/// The rows of every source of the section.
pub(crate) fn rows(points: &[Point]) -> Vec<Row> {
    let mut rows = netns_rows(points);
    rows.extend(cgroup_rows(points));
    rows
}

pub(crate) const TITLE: &str = "TCP trouble per workload";

/// The section as text, from the rows of every source: rows of one workload and source
/// merged, all-zero rows left out, largest (retransmits + failed connects) first; empty
/// when nothing moved.
pub(crate) fn render(rows: Vec<Row>) -> String {
    let mut merged: BTreeMap<(String, &'static str), (u64, u64)> = BTreeMap::new();
    for r in rows {
        let e = merged.entry((r.workload, r.source)).or_default();
        e.0 += r.retransmits;
        e.1 += r.failed_connects;
    }
    let mut rows: Vec<Row> = merged
        .into_iter()
        .filter(|(_, (a, b))| a + b > 0)
        .map(|((workload, source), (retransmits, failed_connects))| Row {
            workload,
            retransmits,
            failed_connects,
            source,
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    rows.sort_by_key(|r| Reverse(r.retransmits + r.failed_connects));
    let mut out = format!(
        "{TITLE}:\n{:>11}  {:>15}  {:<6}  WORKLOAD\n",
        "RETRANSMITS", "FAILED_CONNECTS", "SOURCE"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:>11}  {:>15}  {:<6}  {}",
            r.retransmits, r.failed_connects, r.source, r.workload
        );
    }
    out
}

#[cfg(test)]
mod tests;
