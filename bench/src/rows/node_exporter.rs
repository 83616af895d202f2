//! Section 3: node_exporter next to our cycle.

use serde_json::{Map, Value, json};

use crate::{
    cycle::CycleReport,
    node_exporter::{self, Measured},
    report::{Status, Table},
    sys,
};

/// The rows of one interface count's node_exporter measurement, compared with our cycle
/// when it was measured too; returns the comparison for the JSON report.
pub fn add(
    table: &mut Table,
    s: &str,
    m: &Measured,
    ours: Option<&CycleReport>,
) -> Map<String, Value> {
    table.info(
        s,
        "node_exporter CPU per scrape",
        format!("{:.1} ms", m.cpu_ms_per_scrape),
    );
    for c in node_exporter::COLLECTORS {
        if let Some(d) = m.durations_ms.get(c) {
            table.info(
                s,
                &format!("node_exporter {c} collector (own duration, median)"),
                format!("{:.2} ms", d.median),
            );
        }
    }
    table.info(
        s,
        "node_exporter RSS",
        format!("{:.1} MiB", m.rss_kib as f64 / 1024.0),
    );
    let mut cmp = Map::new();
    if let Some(r) = &ours {
        let ratio = m.cpu_ms_per_scrape * 1000.0 / r.cycle_cpu_us.mean;
        table.push(
            s,
            "CPU per collection: node_exporter / ours",
            format!("{ratio:.0}x"),
            ">= 100x",
            Status::check(ratio >= 100.0),
        );
        cmp.insert("cpu_per_collection_ratio".into(), json!(sys::round3(ratio)));
        cmp.insert(
            "our_cycle_cpu_us_mean".into(),
            json!(sys::round3(r.cycle_cpu_us.mean)),
        );
        // What the ratio would be with the link counters from RTM_GETSTATS instead of
        // the full RTM_GETLINK dump (docs/performance.md), from this run's figures.
        let cpu = |k: &str| r.part_cpu_us.get(k).map_or(f64::NAN, |v| v.mean);
        let projected = r.cycle_cpu_us.mean - cpu("links_refresh") + cpu("floor_getstats");
        let pratio = m.cpu_ms_per_scrape * 1000.0 / projected;
        table.info(
            s,
            "  same, projected with RTM_GETSTATS for counters",
            format!("{pratio:.0}x"),
        );
        cmp.insert(
            "projected_cycle_cpu_us_mean_with_getstats".into(),
            json!(sys::round3(projected)),
        );
        cmp.insert(
            "projected_cpu_per_collection_ratio_with_getstats".into(),
            json!(sys::round3(pratio)),
        );
        let wall = |k: &str| r.part_wall_us.get(k).map_or(f64::NAN, |v| v.median);
        for (c, ours_us) in [
            ("ethtool", wall("ethtool")),
            ("netdev", wall("links_refresh") + wall("netdev")),
            ("netstat", wall("netstat")),
        ] {
            if let Some(d) = m.durations_ms.get(c) {
                let ratio = d.median * 1000.0 / ours_us;
                table.info(
                    s,
                    &format!("{c}: node_exporter / ours (wall, median)"),
                    format!("{ratio:.0}x"),
                );
                cmp.insert(format!("{c}_wall_ratio"), json!(sys::round3(ratio)));
            }
        }
    }
    cmp
}
