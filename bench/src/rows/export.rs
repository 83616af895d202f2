//! Section 8: the export cost's rows.

use super::fmt_us;
use crate::{
    export::Figures,
    report::{Status, Table},
};

/// The rows of one interface count's OTLP export and Prometheus scrape measurement.
pub fn add(table: &mut Table, s: &str, n: usize, f: &Figures) {
    let delta = f.temporality == "delta";
    let default = f.policy == "informative" && !delta;
    let label = if delta {
        format!("[series = {}, temporality = delta]", f.policy)
    } else {
        format!("[series = {}]", f.policy)
    };
    table.info(
        s,
        &format!("{label} data points per export sent (exported series of all held)"),
        format!("{} ({} of {})", f.sent_points, f.exported_points, f.points),
    );
    let target = if !default { 10_000.0 } else { 5_000.0 };
    table.push(
        s,
        "OTLP export CPU (SDK collect + encode + send), median / p99",
        format!(
            "{} / {}",
            fmt_us(f.otlp_cpu_us.median),
            fmt_us(f.otlp_cpu_us.p99)
        ),
        match (n >= 256, default, delta) {
            (true, _, true) => "",
            (true, true, _) => "<= 5 ms",
            (true, false, _) => "<= 10 ms",
            _ => "",
        },
        if n >= 256 && !delta {
            Status::check(f.otlp_cpu_us.median <= target)
        } else {
            Status::Info
        },
    );
    if let Some(o) = &f.outage {
        let ratio = o.down_us.mean / o.up_us.mean;
        table.push(
            s,
            "CPU per cycle (collect + export), collector down / up, mean",
            format!(
                "{} / {} = {ratio:.2}x ({} attempts in {} cycles down; first failed export {})",
                fmt_us(o.down_us.mean),
                fmt_us(o.up_us.mean),
                o.attempts,
                crate::export::PACED,
                fmt_us(o.first_failure_us)
            ),
            "<= 1.1x",
            Status::check(ratio <= 1.1),
        );
    }
    table.info(
        s,
        "  of which the SDK's collect (callbacks + aggregation), wall median",
        fmt_us(f.sdk_collect_us.median),
    );
    table.info(
        s,
        "Prometheus scrape CPU (encode + HTTP), median / p99",
        format!(
            "{} / {} ({} KiB)",
            fmt_us(f.scrape_cpu_us.median),
            fmt_us(f.scrape_cpu_us.p99),
            f.scrape_bytes / 1024
        ),
    );
}
