//! The run: the sections in order, on veth pairs made for it, each adding its rows to the
//! table and its figures to the JSON report.

use std::{collections::BTreeSet, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use retina_agent::config::{SeriesPolicy, Temporality};
use serde_json::{Map, Value, json};

use crate::{
    agent_run, cycle, ebpf, export, flood, flows_flood,
    net::BenchNet,
    node_exporter,
    opts::{Opts, SECTIONS},
    report::Table,
    rows, soak, sys, tcp_events, workload,
};

/// A section's start on stderr, with the load average (the figures depend on it).
fn banner(s: &str) {
    eprintln!("\n==> {s}   (load {:.2})", sys::loadavg()[0]);
}

/// Runs the sections `opts` selects; what was measured before an error stays in `doc` and
/// `table`.
pub fn run(
    opts: &Opts,
    out_dir: &Path,
    doc: &mut Map<String, Value>,
    table: &mut Table,
) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("retina-bench needs root (veths, namespaces, eBPF): run it with `cargo xtask bench`");
    }
    for s in &opts.only {
        if !SECTIONS.contains(&s.as_str()) {
            bail!(
                "unknown section {s:?} in --only (known: {})",
                SECTIONS.join(", ")
            );
        }
    }
    let mut counts: Vec<usize> = opts
        .interfaces
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    counts.retain(|&n| n > 0);
    if counts.is_empty() {
        bail!("--interfaces needs at least one positive count");
    }
    let cycles = opts.pick(opts.cycles, 2000, 300);
    let soak_cycles = opts.pick(opts.soak_cycles, 100_000, 5000);
    let scrapes = opts.pick(opts.scrapes, 20, 5);
    let exports = opts.pick(opts.exports, 100, 20);
    let flood = opts.pick(opts.flood, 2_000_000, 1_000_000);
    let agent_seconds = opts.pick(opts.agent_seconds, 120, 30);
    let args: Vec<String> = std::env::args().collect();
    doc.insert("command".into(), json!(args.join(" ")));
    doc.insert("machine".into(), sys::machine());
    doc.insert(
        "settings".into(),
        json!({
            "interfaces": counts, "cycles": cycles, "soak_cycles": soak_cycles,
            "node_exporter_scrapes": scrapes, "flood_datagrams": flood,
            "agent_seconds": agent_seconds, "quick": opts.quick,
        }),
    );

    let want_ne = opts.runs("node-exporter") && {
        let ok = opts.node_exporter.is_file();
        if !ok {
            eprintln!(
                "warning: {} missing (Debian `prometheus-node-exporter`): skipping the comparison",
                opts.node_exporter.display()
            );
        }
        ok
    };

    let mut net = BenchNet::new()?;
    let mut per_count = Map::new();
    let needs_agent = opts.runs("cycle") || want_ne;
    let mut agent = if opts.runs("cycle") {
        Some(cycle::full_agent()?)
    } else {
        None
    };
    let mut parts = if needs_agent {
        Some(cycle::Parts::new()?)
    } else {
        None
    };
    for &n in &counts {
        sys::check_stop()?;
        let have = net.hosts.len();
        let any_per_count = needs_agent || opts.runs("export");
        if any_per_count && n > have {
            banner(&format!("creating {} veth pairs ({n} in all)", n - have));
            net.add(n - have)?;
            net.settle()?;
        }
        let section = format!("{n} veths");
        let mut entry = Map::new();
        let mut ours = None;
        if let (Some(agent), Some(parts)) = (agent.as_mut(), parts.as_mut()) {
            banner(&format!(
                "[1,2,4] collection cycle, {n} veths, {cycles} cycles"
            ));
            let r = cycle::run(agent, parts, cycles)?;
            rows::cycle::add(table, &section, n, &r);
            table.flush_new();
            entry.insert("cycle".into(), r.json.clone());
            ours = Some(r);
        }
        if want_ne {
            banner(&format!("[3] node_exporter, {n} veths, {scrapes} scrapes"));
            let m = node_exporter::measure(&opts.node_exporter, scrapes)?;
            let cmp = rows::node_exporter::add(table, &section, &m, ours.as_ref());
            table.flush_new();
            entry.insert("node_exporter".into(), m.json());
            entry.insert("node_exporter_vs_ours".into(), Value::Object(cmp));
        }
        if opts.runs("export") {
            let rotel = opts
                .rotel
                .as_deref()
                .context("the export section needs rotel-agent (--rotel or RETINA_ROTEL_AGENT)")?;
            banner(&format!(
                "[8] export cost, {n} veths, {exports} exports and scrapes"
            ));
            // The default, every series, and the default under delta temporality; the
            // collector outage with the default only.
            for (key, policy, temporality, outage) in [
                (
                    "export",
                    SeriesPolicy::Informative,
                    Temporality::Cumulative,
                    true,
                ),
                (
                    "export_everything",
                    SeriesPolicy::Everything,
                    Temporality::Cumulative,
                    false,
                ),
                (
                    "export_delta",
                    SeriesPolicy::Informative,
                    Temporality::Delta,
                    false,
                ),
            ] {
                let f = export::measure(rotel, exports, policy, temporality, outage)?;
                rows::export::add(table, &section, n, &f);
                table.flush_new();
                entry.insert(key.into(), f.json);
            }
        }
        per_count.insert(n.to_string(), Value::Object(entry));
        doc.insert(
            "by_interface_count".into(),
            Value::Object(per_count.clone()),
        );
    }
    drop(agent.take());

    if opts.runs("ebpf") {
        banner(&format!("[5] eBPF overhead: {flood} drops"));
        // Its own drop probes, loaded in the order the section needs: no other probe of the
        // agent's may run on the hook.
        drop(parts.take());
        let r = ebpf::run(flood)?;
        rows::ebpf::add(table, &r);
        table.flush_new();
        doc.insert("ebpf".into(), r.json);
    }
    drop(parts.take());

    if opts.runs("tcp") {
        let connects = opts.pick(opts.connects, 50_000, 20_000);
        banner(&format!(
            "[11] TCP event programs: {connects} refused connects"
        ));
        let r = tcp_events::run(connects)?;
        rows::tcp_events::add(table, &r);
        table.flush_new();
        doc.insert("tcp_events".into(), r.json);
    }

    if opts.runs("workload") {
        let pods = opts.pods;
        let runs = opts.pick(None, 20, 10);
        banner(&format!("[9] workload mapping, {pods} pods, {runs} scans"));
        let r = workload::run(pods, runs)?;
        rows::workload::add(table, &format!("workload, {pods} pods"), &r);
        table.flush_new();
        doc.insert("workload".into(), r.json);
    }

    if opts.runs("netns") {
        let pods = opts.pods;
        let cycles = opts.pick(opts.cycles, 500, 100);
        banner(&format!(
            "[11] per-workload protocol counters, {pods} pods, {cycles} cycles"
        ));
        let r = super::netns_stat::run(pods, cycles)?;
        super::netns_stat::add(table, &r);
        table.flush_new();
        doc.insert("netns".into(), r.json);
    }

    if opts.runs("soak") {
        let max = counts.last().copied().unwrap_or(256);
        if net.hosts.len() < max {
            net.add(max - net.hosts.len())?;
            net.settle()?;
        }
        let export = match &opts.soak_export {
            Some(e) => e.as_str(),
            None if opts.rotel.is_some() => "rotel",
            None => "tcp",
        };
        banner(&format!(
            "[6] memory soak: {soak_cycles} cycles, {max} veths + churn, OTLP export to {export}"
        ));
        let args = soak::SoakArgs {
            cycles: soak_cycles,
            netns: net.ns.name.clone(),
            prefix: net.prefix().to_string(),
            churn_every: if opts.quick { 500 } else { 1000 },
            churn_count: 4,
            export: export.to_string(),
            rotel: opts.rotel.clone(),
            interval_us: 0,
        };
        let r = soak::spawn(&args)?;
        rows::soak::add(table, &r);
        table.flush_new();
        doc.insert("soak".into(), r);
    }

    if opts.runs("agent") {
        let agent_bin = opts.agent_bin.clone().or_else(|| {
            let p = std::env::current_exe().ok()?.parent()?.join("retina-agent");
            p.is_file().then_some(p)
        });
        match agent_bin {
            Some(bin) if opts.node_exporter.is_file() => {
                let max = counts.last().copied().unwrap_or(256);
                banner(&format!(
                    "[7] retina-agent run --interval 10s next to node_exporter, {agent_seconds} s, {max} veths"
                ));
                let log = out_dir.join("agent-run.log");
                let r = agent_run::run(&agent_run::Options {
                    agent_bin: &bin,
                    node_exporter: &opts.node_exporter,
                    rotel: opts.rotel.as_deref(),
                    window: Duration::from_secs(agent_seconds),
                    log,
                })?;
                rows::agent::add(table, &r);
                table.flush_new();
                doc.insert("daemon".into(), r);
            }
            Some(_) => eprintln!("warning: no node_exporter: skipping section 7"),
            None => eprintln!("warning: no retina-agent binary (--agent-bin): skipping section 7"),
        }
    }
    if opts.runs("flood") {
        let agent_bin = opts.agent_bin.clone().or_else(|| {
            let p = std::env::current_exe().ok()?.parent()?.join("retina-agent");
            p.is_file().then_some(p)
        });
        match agent_bin {
            Some(bin) => {
                let seconds = opts.pick(None, 30, 15);
                banner(&format!(
                    "[10] retina-agent as the unit, run --interval 1s, under an EtherType flood from a user namespace, {seconds} s windows"
                ));
                let r = flood::run(&flood::Options {
                    agent_bin: &bin,
                    window: Duration::from_secs(seconds),
                    log: out_dir.join("flood-agent.log"),
                })?;
                rows::flood::add(table, &r);
                table.flush_new();
                doc.insert("flood".into(), r);
            }
            None => eprintln!("warning: no retina-agent binary (--agent-bin): skipping section 10"),
        }
    }
    if opts.runs("flows-flood") {
        let agent_bin = opts.agent_bin.clone().or_else(|| {
            let p = std::env::current_exe().ok()?.parent()?.join("retina-agent");
            p.is_file().then_some(p)
        });
        match (agent_bin, opts.rotel.as_deref()) {
            (Some(bin), Some(rotel)) => {
                let seconds = opts.pick(None, 20, 10);
                banner(&format!(
                    "[13] retina-agent with drop flows on, {} datagrams to a closed port, {seconds} s windows",
                    flows_flood::FLOOD
                ));
                let r = flows_flood::run(&flows_flood::Options {
                    agent_bin: &bin,
                    rotel,
                    window: Duration::from_secs(seconds),
                    log: out_dir.join("flows-flood-agent.log"),
                })?;
                rows::flows_flood::add(table, &r);
                table.flush_new();
                doc.insert("flows_flood".into(), r);
            }
            (None, _) => {
                eprintln!("warning: no retina-agent binary (--agent-bin): skipping section 13")
            }
            (_, None) => eprintln!(
                "warning: section 13 needs rotel-agent (--rotel or RETINA_ROTEL_AGENT): skipped"
            ),
        }
    }
    drop(net);
    Ok(())
}
