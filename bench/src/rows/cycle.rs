//! Section 1, 2 and 4: the collection cycle's rows.

use super::fmt_us;
use crate::{
    cycle::CycleReport,
    report::{Status, Table},
};

/// The rows of one interface count's cycle measurement.
pub fn add(table: &mut Table, s: &str, n: usize, r: &CycleReport) {
    table.info(
        s,
        "interfaces in link table / with driver stats",
        format!("{} / {}", r.table_interfaces, r.driver_stat_interfaces),
    );
    table.info(s, "data points per cycle", r.points.to_string());
    table.info(
        s,
        "cycle CPU median / p99",
        format!(
            "{} / {}",
            fmt_us(r.cycle_cpu_us.median),
            fmt_us(r.cycle_cpu_us.p99)
        ),
    );
    table.info(
        s,
        "cycle wall median / p99",
        format!(
            "{} / {}",
            fmt_us(r.cycle_wall_us.median),
            fmt_us(r.cycle_wall_us.p99)
        ),
    );
    table.info(
        s,
        "cycle CPU per interface (median)",
        fmt_us(r.cycle_cpu_us.median / r.table_interfaces.max(1) as f64),
    );
    for (name, v) in &r.part_cpu_us {
        table.info(
            s,
            &format!("  part {name}: CPU median / p99"),
            format!("{} / {}", fmt_us(v.median), fmt_us(v.p99)),
        );
    }
    table.info(
        s,
        "floor GSTATS per interface (CPU median)",
        fmt_us(r.floor_us_per_interface),
    );
    let cpu = |k: &str| r.part_cpu_us.get(k).map_or(f64::NAN, |v| v.median);
    table.info(
        s,
        "links refresh / raw RTM_GETLINK dump (CPU median)",
        format!("{:.2}x", cpu("links_refresh") / cpu("floor_getlink")),
    );
    table.info(
        s,
        "raw RTM_GETSTATS (LINK_64) / RTM_GETLINK dump",
        format!("{:.2}x", cpu("floor_getstats") / cpu("floor_getlink")),
    );
    table.info(
        s,
        "netstat / raw read of the 3 files (CPU median)",
        format!("{:.2}x", cpu("netstat") / cpu("floor_proc")),
    );
    table.info(
        s,
        &format!("drops / raw map batch read ({} entries)", r.map_entries),
        format!("{:.2}x", cpu("drops") / cpu("floor_map")),
    );
    // The loss readers of issue 13 (softnet, qdisc with a qdisc on every veth,
    // conntrack) against the rest of the cycle.
    let new_readers = cpu("softnet") + cpu("qdisc") + cpu("conntrack");
    let rest = r.cycle_cpu_us.median - new_readers;
    table.info(
        s,
        "qdisc / raw RTM_GETQDISC dump (CPU median)",
        format!("{:.2}x", cpu("qdisc") / cpu("floor_getqdisc")),
    );
    table.info(
        s,
        "softnet + qdisc + conntrack (CPU median)",
        fmt_us(new_readers),
    );
    table.push(
        s,
        "softnet + qdisc + conntrack / rest of the cycle",
        format!("{:.1} %", 100.0 * new_readers / rest),
        "< 20 %",
        Status::check(new_readers < 0.2 * rest),
    );
    table.push(
        s,
        "driver stats: ours / floor (CPU median)",
        format!("{:.2}x", r.ethtool_over_floor),
        "<= 1.3x",
        Status::check(r.ethtool_over_floor <= 1.3),
    );
    if n >= 256 {
        table.push(
            s,
            "whole cycle CPU (median)",
            fmt_us(r.cycle_cpu_us.median),
            "< 2 ms",
            Status::check(r.cycle_cpu_us.median < 2000.0),
        );
    }
    table.push(
        s,
        "allocations per steady cycle (collect)",
        format!("{:.3}", r.cycle_allocs_per_cycle),
        "0",
        Status::check(r.cycle_allocs_per_cycle == 0.0),
    );
    table.push(
        s,
        "allocations per visit (export read)",
        format!("{:.3}", r.visit_allocs_per_cycle),
        "0",
        Status::check(r.visit_allocs_per_cycle == 0.0),
    );
}
