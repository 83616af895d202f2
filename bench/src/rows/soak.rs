//! Section 6: the memory soak's rows, from the child's JSON report.

use serde_json::Value;

use super::fmt_us;
use crate::report::{Status, Table};

/// The rows of the memory soak.
pub fn add(table: &mut Table, r: &Value) {
    let s = "soak";
    let kib = |k: &str| r["rss_kib"][k].as_u64().unwrap_or(0);
    let mib = |k: &str| kib(k) as f64 / 1024.0;
    table.info(
        s,
        "cycles / seconds",
        format!(
            "{} / {:.0}",
            r["cycles"],
            r["seconds"].as_f64().unwrap_or(0.0)
        ),
    );
    table.info(
        s,
        "RSS start -> end (medians, first / last 10 % of the soak)",
        format!("{:.2} -> {:.2} MiB", mib("start"), mib("end")),
    );
    let series = &r["series"];
    table.info(
        s,
        "data points / drop keys, start -> end",
        format!(
            "{} -> {} / {} -> {}",
            series["data_points_start"],
            series["data_points_end"],
            series["drop_keys_start"],
            series["drop_keys_end"]
        ),
    );
    let growth = r["rss_growth_percent"].as_f64().unwrap_or(f64::NAN);
    table.push(
        s,
        "RSS growth over the soak",
        format!("{growth:.2} %"),
        "< 1 %",
        Status::check(growth < 1.0),
    );
    table.push(
        s,
        "agent RSS (end)",
        format!("{:.2} MiB", mib("end")),
        "< 20 MiB",
        Status::check(mib("end") < 20.0),
    );
    table.info(
        s,
        "  of which anon / file-backed",
        format!("{:.2} / {:.2} MiB", mib("anon_end"), mib("file_end")),
    );
    table.info(
        s,
        "RSS growth over the second half",
        format!(
            "{:.2} %",
            r["rss_growth_second_half_percent"]
                .as_f64()
                .unwrap_or(f64::NAN)
        ),
    );
    let steady = r["allocations"]["per_steady_cycle"]
        .as_f64()
        .unwrap_or(f64::NAN);
    table.push(
        s,
        "allocations per steady cycle",
        format!("{steady:.3}"),
        "0",
        Status::check(steady == 0.0),
    );
    table.info(
        s,
        "allocations per cycle, all threads (export incl.)",
        format!("{}", r["allocations"]["process_wide_per_cycle"]),
    );
    table.info(
        s,
        "cycle CPU median, first -> last tenth",
        format!(
            "{} -> {}",
            fmt_us(
                r["cycle_cpu_us_first_tenth"]["median"]
                    .as_f64()
                    .unwrap_or(0.0)
            ),
            fmt_us(
                r["cycle_cpu_us_last_tenth"]["median"]
                    .as_f64()
                    .unwrap_or(0.0)
            )
        ),
    );
}
