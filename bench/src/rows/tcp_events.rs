//! Section 11: the TCP event programs' rows.

use crate::{
    report::{Status, Table},
    tcp_events::TcpReport,
};

pub fn add(table: &mut Table, r: &TcpReport) {
    let s = "TCP events";
    table.info(s, "connects refused", r.connects.to_string());
    for (name, tp, runs, ns, empty) in &r.programs {
        table.info(
            s,
            &format!("{name} on {tp}: run time per event ({runs} runs), empty program"),
            format!("{ns:.1} ns, {empty:.1} ns"),
        );
        let over = ns - empty;
        table.push(
            s,
            &format!("{name} above empty program, per event"),
            format!("{over:.1} ns"),
            "≤ 50 ns",
            Status::check(over <= 50.0),
        );
    }
    let exact = r.failures_counted == r.connects && r.resets_counted == r.connects;
    table.push(
        s,
        "failed connects and resets received counted",
        format!(
            "{} and {} of {}",
            r.failures_counted, r.resets_counted, r.connects
        ),
        "exact",
        Status::check(exact),
    );
}
