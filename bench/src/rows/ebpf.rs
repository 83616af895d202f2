//! Section 5: the eBPF overhead's rows.

use crate::{
    ebpf::EbpfReport,
    report::{Status, Table},
};

/// The rows of the eBPF probe measurement.
pub fn add(table: &mut Table, r: &EbpfReport) {
    let s = "eBPF";
    table.info(s, "drops flooded", r.sent.to_string());
    table.info(
        s,
        "agent program run time per drop",
        format!("{:.1} ns", r.ours_ns),
    );
    table.info(
        s,
        "empty program run time per drop",
        format!("{:.1} ns", r.empty_ns),
    );
    let over = r.ours_ns - r.empty_ns;
    table.push(
        s,
        "agent above empty program, per drop",
        format!("{over:.1} ns"),
        "< 40 ns",
        Status::check(over < 40.0),
    );
    table.info(
        s,
        "6 reads via bpf_probe_read_kernel (raw_tp), above empty",
        format!("{:.1} ns", r.probe6_ns - r.empty_ns),
    );
    match r.direct6_ns {
        Some(d) => table.info(
            s,
            "same 6 reads as direct BTF loads (tp_btf), after agent, above empty",
            format!("{:.1} ns", d - r.empty_ns),
        ),
        None => table.info(
            s,
            "same 6 reads as direct BTF loads (tp_btf)",
            "did not load (see JSON)".into(),
        ),
    }
    table.info(
        s,
        "per-CPU hash lookup+add, constant 16-byte key, above empty",
        format!("{:.1} ns", r.hash_const_ns - r.empty_ns),
    );
    table.info(
        s,
        "per-CPU array lookup+add, constant index, above empty",
        format!("{:.1} ns", r.array_const_ns - r.empty_ns),
    );
    if let (Some(first), Some(after)) = (r.direct6_first_ns, r.ours_after_reads_ns) {
        table.info(
            s,
            "2nd flood: 6 direct reads attached first, above empty",
            format!("{:.1} ns", first - r.empty2_ns),
        );
        table.info(
            s,
            "2nd flood: agent program behind them, above empty",
            format!("{:.1} ns", after - r.empty2_ns),
        );
    }
    table.push(
        s,
        "drops counted for drops made",
        format!("{} / {}", r.counted, r.sent),
        "exact",
        Status::check(r.counted == r.sent),
    );
    table.info(
        s,
        "3rd flood: agent with drop locations / empty program, per drop",
        format!("{:.1} / {:.1} ns", r.locations_ns, r.locations_empty_ns),
    );
    table.push(
        s,
        "3rd flood (drop locations): counted for drops made",
        format!("{} / {}", r.locations_counted, r.sent),
        "exact",
        Status::check(r.locations_counted == r.sent),
    );
    let f = &r.flows;
    table.info(
        s,
        "4th flood: agent with drop flows / empty program, per drop",
        format!("{:.1} / {:.1} ns", f.ns, f.empty_ns),
    );
    let more = (f.ns - f.empty_ns) - over;
    table.push(
        s,
        "drop flows on: above flows off (1st flood), per drop",
        format!("{more:.1} ns"),
        "<= 30 ns",
        Status::check(more <= 30.0),
    );
    table.push(
        s,
        "4th flood (drop flows): flow's exact count for drops made",
        format!(
            "{} / {}{}",
            f.counted,
            f.sent,
            if f.exact { "" } else { " (not exact)" }
        ),
        "exact",
        Status::check(f.exact && f.counted == f.sent),
    );
}
