//! Section 10: the daemon under an unprivileged user's EtherType flood, from its JSON.

use serde_json::Value;

use crate::report::{Status, Table};

pub fn add(table: &mut Table, r: &Value) {
    let s = "EtherType flood";
    let f = |w: &str, k: &str| r[w][k].as_f64().unwrap_or(f64::NAN);
    for (w, label) in [
        ("normal", "before the flood"),
        ("flood_onset_5s", "first 5 s of the flood"),
        ("flooded", "during the flood"),
    ] {
        table.info(
            s,
            &format!("{label}: CPU per cycle / RSS max / scrape"),
            format!(
                "{:.2} ms / {:.1} MiB / {:.0} KB, {:.0} samples",
                f(w, "cpu_ms_per_cycle"),
                f(w, "rss_kib_max") / 1024.0,
                f(w, "scrape_bytes") / 1000.0,
                f(w, "scrape_samples"),
            ),
        );
    }
    let rss = f("flooded", "rss_kib_max").max(f("flood_onset_5s", "rss_kib_max")) / 1024.0;
    table.push(
        s,
        "RSS under the flood",
        format!("{rss:.1} MiB"),
        "< 32 MiB",
        Status::check(rss < 32.0),
    );
    let ratio = r["cpu_ratio_flooded_to_normal"]
        .as_f64()
        .unwrap_or(f64::NAN);
    table.push(
        s,
        "CPU per cycle, flooded / normal",
        format!("{ratio:.2}x"),
        "< 2x",
        Status::check(ratio < 2.0),
    );
    let pod = r["pod_no_socket_drops_after_2000_sent"]
        .as_u64()
        .unwrap_or(0);
    table.push(
        s,
        "pod's NO_SOCKET drops (2000 sent)",
        pod.to_string(),
        "2000",
        Status::check(pod == 2000),
    );
    table.info(
        s,
        "attacker: series / drops counted / pool overflow",
        format!(
            "{} / {} / {}",
            r["attacker_series"], r["attacker_drops_counted"], r["user_namespace_overflow"]
        ),
    );
}
