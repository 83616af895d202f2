//! The per-workload TCP section of the "where packets died" view: retransmits and failed
//! connects per workload in the window, largest first. A drop counted here is one half of
//! packet loss; the other half (loss in the network) shows only as retransmits and failed
//! connects at the sender.
//!
//! Rows come from sources, each a function from the window's points to [`Row`]s:
//! [`netns_rows`] reads the per-namespace counters (`retina.workload.netstat.stat`). Another
//! source (e.g. eBPF TCP events per socket cgroup, for services in the host's namespace)
//! adds its own function and its metric to [`reads`]; [`render`] takes the rows of every
//! source, merges rows of the same workload and source, and sorts them.

use std::{cmp::Reverse, collections::BTreeMap, fmt::Write as _};

use serde_json::Value as Json;

use crate::{
    collectors::netstat::workloads::WORKLOAD_NETSTAT_COUNTER,
    commands::snapshot::Point,
    model::{Number, attr},
    workload::attr as wattr,
};

/// One workload's TCP trouble in the window, from one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `pod=… container=… unit=… netns=…`: what tells the workload apart.
    pub workload: String,
    /// Segments retransmitted.
    pub retransmits: u64,
    /// Active connects that failed (refused, reset or timed out in SYN-SENT).
    pub failed_connects: u64,
    /// Where the counts come from (`netns`: the namespace's own protocol counters).
    pub source: &'static str,
}

/// Whether a source of this section reads `metric` (to capture only what is needed).
pub fn reads(metric: &str) -> bool {
    metric == WORKLOAD_NETSTAT_COUNTER.name
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
pub fn workload_label(p: &Point, keys: &[(&str, &str)]) -> String {
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
pub fn netns_rows(points: &[Point]) -> Vec<Row> {
    const KEYS: [(&str, &str); 4] = [
        ("pod", wattr::POD_UID),
        ("container", wattr::CONTAINER_ID),
        ("unit", wattr::SYSTEMD_UNIT),
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

pub const TITLE: &str = "TCP trouble per workload";

/// The section as text, from the rows of every source: rows of one workload and source
/// merged, all-zero rows left out, largest (retransmits + failed connects) first; empty
/// when nothing moved.
pub fn render(rows: Vec<Row>) -> String {
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
mod tests {
    use super::*;

    fn point(pod: &str, field: &str, v: u64) -> Point {
        Point {
            metric: &WORKLOAD_NETSTAT_COUNTER,
            attributes: vec![
                ("k8s.pod.uid".into(), Json::from(pod)),
                ("netstat.field".into(), Json::from(field)),
                ("netstat.group".into(), Json::from("Tcp")),
                ("network.namespace.inode".into(), Json::from(4026532000u64)),
            ],
            value: Number::U64(v),
        }
    }

    #[test]
    fn workloads_largest_first_and_quiet_ones_left_out() {
        let points = [
            point("a", "RetransSegs", 3),
            point("a", "AttemptFails", 1),
            point("b", "AttemptFails", 20),
            point("c", "RetransSegs", 0),
            point("c", "OutRsts", 9),
        ];
        let rows = netns_rows(&points);
        assert_eq!(rows.len(), 3);
        // A second source's row for a service in the host's namespace.
        let mut all = rows;
        all.push(Row {
            workload: "unit=x.service".into(),
            retransmits: 2,
            failed_connects: 0,
            source: "ebpf",
        });
        let text = render(all);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[2].contains("pod=b") && lines[2].contains("20"), "{text}");
        assert!(lines[3].contains("pod=a netns=4026532000"), "{text}");
        assert!(lines[4].contains("unit=x.service") && lines[4].contains("ebpf"));
        assert!(!text.contains("pod=c"), "{text}");
        assert_eq!(render(Vec::new()), "");
    }
}
