//! Section 9: the workload mapping's rows.

use super::fmt_us;
use crate::{
    report::{Status, Table},
    workload::WorkloadReport,
};

/// The rows of the workload mapping measurement at `r.pods` pods.
pub fn add(table: &mut Table, s: &str, r: &WorkloadReport) {
    table.info(
        s,
        "host links with a peer netns / namespaces found by the scan",
        format!("{} / {}", r.host_links_with_peer, r.namespaces_scanned),
    );
    table.info(
        s,
        "/proc scan (drops' workload lookup) CPU / wall median",
        format!(
            "{} / {}",
            fmt_us(r.scan_cpu_us.median),
            fmt_us(r.scan_wall_us.median)
        ),
    );
    table.info(
        s,
        "veth peer resolution (scan + RTM_GETNSID each) CPU / wall median",
        format!(
            "{} / {}",
            fmt_us(r.resolve_cpu_us.median),
            fmt_us(r.resolve_wall_us.median)
        ),
    );
    table.push(
        s,
        "pods whose host veth carries their uid",
        format!("{} / {}", r.pods_resolved, r.pods),
        "all",
        Status::check(r.pods_resolved == r.pods),
    );
    table.info(
        s,
        "steady per-cycle check, CPU per cycle",
        format!("{:.0} ns", r.update_cpu_ns),
    );
    table.push(
        s,
        "allocations per steady cycle (peer check)",
        format!("{:.3}", r.update_allocs_per_call),
        "0",
        Status::check(r.update_allocs_per_call == 0.0),
    );
    table.info(
        s,
        "socket owners: full cgroup walk CPU / wall median",
        format!(
            "{} / {}",
            fmt_us(r.owners_walk_cpu_us.median),
            fmt_us(r.owners_walk_wall_us.median)
        ),
    );
    table.push(
        s,
        "socket owners: pods' container cgroups found by the walk",
        format!("{} / {}", r.owners_found, r.pods),
        "all",
        Status::check(r.owners_found == r.pods),
    );
    table.info(
        s,
        "socket owners: per-cycle check of every pod's cgroup, CPU",
        fmt_us(r.owners_check_cpu_us),
    );
    table.info(
        s,
        "socket owners: 100 removed ids among 5000 empty cgroups, CPU per cycle: walk (before) / remembered (now), median",
        format!(
            "{} / {}",
            fmt_us(r.removed.walk_cpu_us.median),
            fmt_us(r.removed.cached_cpu_us.median)
        ),
    );
    table.push(
        s,
        "allocations per socket-owner check",
        format!("{:.3}", r.owners_check_allocs),
        "0",
        Status::check(r.owners_check_allocs == 0.0),
    );
    table.info(
        s,
        "series per workload: min / median / max",
        format!(
            "{} / {} / {}",
            r.series_per_pod.min, r.series_per_pod.median, r.series_per_pod.max
        ),
    );
    table.info(
        s,
        "  one pod's series by metric",
        r.first_pod_by_metric
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
}
