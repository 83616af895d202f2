//! Section 8: the export cost's rows.

use super::fmt_us;
use crate::{
    export::Figures,
    report::{Status, Table},
};

/// The rows of one interface count's OTLP export and Prometheus scrape measurement.
pub fn add(table: &mut Table, s: &str, n: usize, f: &Figures) {
    table.info(s, "exported data points", f.points.to_string());
    table.push(
        s,
        "OTLP export CPU (SDK collect + encode + send), median / p99",
        format!(
            "{} / {}",
            fmt_us(f.otlp_cpu_us.median),
            fmt_us(f.otlp_cpu_us.p99)
        ),
        if n >= 256 { "<= 10 ms" } else { "" },
        if n >= 256 {
            Status::check(f.otlp_cpu_us.median <= 10_000.0)
        } else {
            Status::Info
        },
    );
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
