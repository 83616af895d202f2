//! Section 13: the daemon with drop flows on under a million-drop flood, from its JSON.

use serde_json::Value;

use crate::report::{Status, Table};

pub fn add(table: &mut Table, r: &Value) {
    let s = "drop flows flood";
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let w = |w: &str, k: &str| r[w][k].as_f64().unwrap_or(f64::NAN);
    table.info(
        s,
        &format!(
            "CPU over {:.0} s: idle / flood / its exported events alone",
            f("window_seconds")
        ),
        format!(
            "{:.1} / {:.1} / {:.1} ms ({:.0} / {:.0} / {:.0} records)",
            w("idle", "cpu_ms"),
            w("flood", "cpu_ms"),
            w("events_only", "cpu_ms"),
            w("idle", "records_exported"),
            w("flood", "records_exported"),
            w("events_only", "records_exported"),
        ),
    );
    table.info(
        s,
        "one collection cycle (idle CPU per 1 s interval) / one exported record",
        format!(
            "{:.2} ms / {:.3} ms",
            f("cycle_cpu_ms"),
            f("cpu_ms_per_exported_record")
        ),
    );
    table.info(
        s,
        "flood beyond idle, no record taken off, in cycles per second",
        format!(
            "{:.2} ({:.2} ms/s)",
            f("flood_minus_idle_cycles_per_second"),
            f("flood_minus_idle_ms_per_s")
        ),
    );
    let ratio = f("cycles_per_second_beyond_events");
    table.push(
        s,
        &format!(
            "{:.0}-drop flood beyond its exported events, in cycles per second",
            f("flood_datagrams")
        ),
        format!(
            "{ratio:.2} ({:.2} ms/s)",
            f("flood_beyond_its_records_ms_per_s")
        ),
        "< 1",
        Status::check(ratio < 1.0),
    );
}
