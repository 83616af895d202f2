//! Section 7: the real daemon next to node_exporter, from its JSON report.

use serde_json::Value;

use crate::report::{Status, Table};

/// The rows of the daemon run.
pub fn add(table: &mut Table, r: &Value) {
    let s = "daemon @10s";
    let f = |who: &str, k: &str| {
        let v = if who == "node_exporter" {
            &r[who][k]
        } else {
            &r[who]["figures"][k]
        };
        v.as_f64().unwrap_or(f64::NAN)
    };
    for (who, label) in [
        ("agent", "retina-agent"),
        ("agent_everything", "retina-agent, series = everything"),
        ("agent_delta", "retina-agent, temporality = delta"),
        ("agent_collection_only", "retina-agent, export off"),
        ("node_exporter", "node_exporter"),
    ] {
        table.info(
            s,
            &format!("{label}: CPU ms per 10 s / share"),
            format!(
                "{:.1} ms / {:.3} %",
                f(who, "cpu_ms_per_10s"),
                f(who, "cpu_share_percent")
            ),
        );
        table.info(
            s,
            &format!("{label}: RSS max (anon + file at end)"),
            format!(
                "{:.1} MiB ({:.1} + {:.1})",
                f(who, "rss_kib_max") / 1024.0,
                f(who, "rss_anon_kib_end") / 1024.0,
                f(who, "rss_file_kib_end") / 1024.0
            ),
        );
    }
    let rss = f("agent", "rss_kib_max") / 1024.0;
    table.push(
        s,
        "retina-agent RSS (OTLP + Prometheus on)",
        format!("{rss:.1} MiB"),
        "< 20 MiB",
        Status::check(rss < 20.0),
    );
    let rss = f("agent_collection_only", "rss_kib_max") / 1024.0;
    table.push(
        s,
        "retina-agent RSS (export off)",
        format!("{rss:.1} MiB"),
        "< 20 MiB",
        Status::check(rss < 20.0),
    );
    let ratio = f("node_exporter", "cpu_ms_per_10s") / f("agent", "cpu_ms_per_10s");
    table.push(
        s,
        "CPU: node_exporter / retina-agent (default series policy)",
        format!("{ratio:.1}x"),
        ">= 15x",
        Status::check(ratio >= 15.0),
    );
    let ratio = f("node_exporter", "cpu_ms_per_10s") / f("agent_everything", "cpu_ms_per_10s");
    table.push(
        s,
        "CPU: node_exporter / retina-agent, every series exported",
        format!("{ratio:.1}x"),
        ">= 8x",
        Status::check(ratio >= 8.0),
    );
    let ratio = f("node_exporter", "cpu_ms_per_10s") / f("agent_delta", "cpu_ms_per_10s");
    table.info(
        s,
        "CPU: node_exporter / retina-agent, temporality = delta",
        format!("{ratio:.1}x"),
    );
    let ratio = f("node_exporter", "cpu_ms_per_10s") / f("agent_collection_only", "cpu_ms_per_10s");
    table.info(
        s,
        "CPU: node_exporter / retina-agent export off",
        format!("{ratio:.1}x"),
    );
}
