//! `retina-bench`: the agent's performance figures in one run, next to the kernel floor and
//! to node_exporter, on veth pairs created for the run. Run it with `cargo xtask bench`
//! (which builds the release agent and passes the paths); needs root.
//!
//! Sections (docs/performance.md has the method and the latest figures):
//! 1. the full collection cycle and each part alone: CPU (CLOCK_THREAD_CPUTIME_ID) and wall
//!    time per cycle, median and p99;
//! 2. a raw ETHTOOL_GSTATS loop over the same interfaces (the floor) → ours / floor;
//! 3. node_exporter with the ethtool, netdev and netstat collectors → node_exporter / ours;
//! 4. heap allocations per steady-state cycle (counting global allocator);
//! 5. the eBPF probe's run time per drop next to an empty program on the same hook, and
//!    exact drop accounting, under a flood of UDP datagrams to a closed port;
//! 6. a memory soak (child process) with veth churn and the OTLP exporter against a
//!    collector going up and down;
//! 7. the real daemon at `--interval 10s` next to node_exporter scraped every 10 s;
//! 8. one OTLP export (SDK and exporter) and one Prometheus scrape, CPU per interface count;
//! 9. the workload mapping at `--pods` pods (namespace, veth, process in a kubelet cgroup):
//!    the /proc scan and the veth-peer resolution, the steady per-cycle check, and the
//!    series per workload (`--only workload`).
//!
//! Every veth, namespace, child process and sysctl it changes is restored by an RAII guard,
//! also on failure and on Ctrl-C (SIGINT/SIGTERM stop the run at the next check).

#[path = "../bench/mod.rs"]
mod bench;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use bench::{
    agent_run, cycle, ebpf, export,
    net::BenchNet,
    node_exporter,
    report::{Status, Table},
    soak, sys,
};
use clap::{Parser, Subcommand};
use serde_json::{Map, Value, json};

#[global_allocator]
static GLOBAL: retina_tests::alloc::Counting = retina_tests::alloc::Counting;

#[derive(Parser, Debug)]
#[command(
    name = "retina-bench",
    about = "retina-agent performance bench (root; see docs/performance.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// The memory soak's child process (started by the bench itself).
    #[command(hide = true)]
    SoakChild(soak::SoakArgs),
}

#[derive(clap::Args, Debug)]
struct Opts {
    /// Veth pairs to measure with (host ends in the host namespace, peers in a bench
    /// namespace), in increasing order; eth0 and lo come on top.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    interfaces: Vec<usize>,
    /// Measured collection cycles per interface count [default: 2000, --quick 300].
    #[arg(long)]
    cycles: Option<usize>,
    /// Memory soak cycles [default: 100000, --quick 5000].
    #[arg(long)]
    soak_cycles: Option<usize>,
    /// node_exporter scrapes per interface count [default: 20, --quick 5].
    #[arg(long)]
    scrapes: Option<usize>,
    /// Measured OTLP exports and Prometheus scrapes per interface count [default: 100,
    /// --quick 20].
    #[arg(long)]
    exports: Option<usize>,
    /// Datagrams dropped for the eBPF measurement [default: 2000000, --quick 1000000].
    #[arg(long)]
    flood: Option<u64>,
    /// Seconds the real daemon and node_exporter run side by side [default: 120, --quick 30].
    #[arg(long)]
    agent_seconds: Option<u64>,
    /// A shorter run (under 3 minutes).
    #[arg(long)]
    quick: bool,
    /// Sections to run: cycle, node-exporter, export, ebpf, soak, agent, workload [default:
    /// all].
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The release agent binary, for section 7 [default: next to this binary].
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// Pods made for the workload section [default: 256].
    #[arg(long, default_value_t = 256)]
    pods: usize,
    #[arg(long, default_value = "/usr/bin/prometheus-node-exporter")]
    node_exporter: PathBuf,
    /// rotel-agent (PyPI `rotel`), the OTLP collector for sections 6 and 7 [env:
    /// RETINA_ROTEL_AGENT; default: a TCP listener in the soak, none in section 7].
    #[arg(long, env = "RETINA_ROTEL_AGENT")]
    rotel: Option<PathBuf>,
    /// The soak's OTLP collector: `rotel` (needs --rotel), `tcp` (accepts and closes) or
    /// `none` (no export) [default: rotel when available, else tcp].
    #[arg(long)]
    soak_export: Option<String>,
    /// JSON report [default: target/bench/retina-bench.json].
    #[arg(long)]
    out: Option<PathBuf>,
}

const SECTIONS: [&str; 7] = [
    "cycle",
    "node-exporter",
    "export",
    "ebpf",
    "soak",
    "agent",
    "workload",
];

impl Opts {
    fn pick<T>(&self, given: Option<T>, full: T, quick: T) -> T {
        given.unwrap_or(if self.quick { quick } else { full })
    }

    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sys::install_signal_handlers();
    if let Some(Sub::SoakChild(args)) = &cli.command {
        return match soak::child(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("soak child: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let opts = cli.opts;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench/retina-bench.json"));
    if let Some(dir) = out.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("creating {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let mut doc = Map::new();
    let mut table = Table::default();
    let started = Instant::now();
    let out_dir = out.parent().unwrap_or(Path::new(".")).to_path_buf();
    let result = run(&opts, &out_dir, &mut doc, &mut table);
    doc.insert(
        "total_seconds".into(),
        json!(sys::round3(started.elapsed().as_secs_f64())),
    );
    doc.insert("loadavg_at_end".into(), json!(sys::loadavg()));
    if let Err(e) = &result {
        doc.insert("error".into(), json!(format!("{e:#}")));
    }
    let written = write_outputs(&out, &Value::Object(doc), &table);
    println!("\n{}", table.text());
    match written {
        Ok(md) => println!("JSON: {}\nMarkdown table: {}", out.display(), md.display()),
        Err(e) => eprintln!("writing the report: {e:#}"),
    }
    let missed = table.missed();
    if !missed.is_empty() {
        println!("\nTargets missed:");
        for r in missed {
            println!(
                "  {} / {}: {} (target {})",
                r.section, r.what, r.value, r.target
            );
        }
    }
    println!("total: {:.0} s", started.elapsed().as_secs_f64());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nretina-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_outputs(out: &Path, doc: &Value, table: &Table) -> Result<PathBuf> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_string_pretty(doc)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    let md = out.with_extension("md");
    std::fs::write(&md, table.markdown()).with_context(|| format!("writing {}", md.display()))?;
    Ok(md)
}

fn banner(s: &str) {
    eprintln!("\n==> {s}   (load {:.2})", sys::loadavg()[0]);
}

fn fmt_us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.3} ms", v / 1000.0)
    } else {
        format!("{v:.2} µs")
    }
}

fn run(opts: &Opts, out_dir: &Path, doc: &mut Map<String, Value>, table: &mut Table) -> Result<()> {
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
            let s = section.as_str();
            table.info(
                s,
                "interfaces in link table / with driver stats",
                format!("{} / {}", r.table_interfaces, r.driver_stat_interfaces),
            );
            table.info(s, "data points per cycle", r.points.to_string());
            table.info(
                s,
                "cycle CPU median / p99",
                format!(
                    "{} / {}",
                    fmt_us(r.cycle_cpu_us.median),
                    fmt_us(r.cycle_cpu_us.p99)
                ),
            );
            table.info(
                s,
                "cycle wall median / p99",
                format!(
                    "{} / {}",
                    fmt_us(r.cycle_wall_us.median),
                    fmt_us(r.cycle_wall_us.p99)
                ),
            );
            table.info(
                s,
                "cycle CPU per interface (median)",
                fmt_us(r.cycle_cpu_us.median / r.table_interfaces.max(1) as f64),
            );
            for (name, v) in &r.part_cpu_us {
                table.info(
                    s,
                    &format!("  part {name}: CPU median / p99"),
                    format!("{} / {}", fmt_us(v.median), fmt_us(v.p99)),
                );
            }
            table.info(
                s,
                "floor GSTATS per interface (CPU median)",
                fmt_us(r.floor_us_per_interface),
            );
            let cpu = |k: &str| r.part_cpu_us.get(k).map_or(f64::NAN, |v| v.median);
            table.info(
                s,
                "links refresh / raw RTM_GETLINK dump (CPU median)",
                format!("{:.2}x", cpu("links_refresh") / cpu("floor_getlink")),
            );
            table.info(
                s,
                "raw RTM_GETSTATS (LINK_64) / RTM_GETLINK dump",
                format!("{:.2}x", cpu("floor_getstats") / cpu("floor_getlink")),
            );
            table.info(
                s,
                "netstat / raw read of the 3 files (CPU median)",
                format!("{:.2}x", cpu("netstat") / cpu("floor_proc")),
            );
            table.info(
                s,
                &format!("drops / raw map batch read ({} entries)", r.map_entries),
                format!("{:.2}x", cpu("drops") / cpu("floor_map")),
            );
            // The loss readers of issue 13 (softnet, qdisc with a qdisc on every veth,
            // conntrack) against the rest of the cycle.
            let new_readers = cpu("softnet") + cpu("qdisc") + cpu("conntrack");
            let rest = r.cycle_cpu_us.median - new_readers;
            table.info(
                s,
                "qdisc / raw RTM_GETQDISC dump (CPU median)",
                format!("{:.2}x", cpu("qdisc") / cpu("floor_getqdisc")),
            );
            table.info(
                s,
                "softnet + qdisc + conntrack (CPU median)",
                fmt_us(new_readers),
            );
            table.push(
                s,
                "softnet + qdisc + conntrack / rest of the cycle",
                format!("{:.1} %", 100.0 * new_readers / rest),
                "< 20 %",
                Status::check(new_readers < 0.2 * rest),
            );
            table.push(
                s,
                "driver stats: ours / floor (CPU median)",
                format!("{:.2}x", r.ethtool_over_floor),
                "<= 1.3x",
                Status::check(r.ethtool_over_floor <= 1.3),
            );
            if n >= 256 {
                table.push(
                    s,
                    "whole cycle CPU (median)",
                    fmt_us(r.cycle_cpu_us.median),
                    "< 2 ms",
                    Status::check(r.cycle_cpu_us.median < 2000.0),
                );
            }
            table.push(
                s,
                "allocations per steady cycle (collect)",
                format!("{:.3}", r.cycle_allocs_per_cycle),
                "0",
                Status::check(r.cycle_allocs_per_cycle == 0.0),
            );
            table.push(
                s,
                "allocations per visit (export read)",
                format!("{:.3}", r.visit_allocs_per_cycle),
                "0",
                Status::check(r.visit_allocs_per_cycle == 0.0),
            );
            table.flush_new();
            entry.insert("cycle".into(), r.json.clone());
            ours = Some(r);
        }
        if want_ne {
            banner(&format!("[3] node_exporter, {n} veths, {scrapes} scrapes"));
            let m = node_exporter::measure(&opts.node_exporter, scrapes)?;
            let s = section.as_str();
            table.info(
                s,
                "node_exporter CPU per scrape",
                format!("{:.1} ms", m.cpu_ms_per_scrape),
            );
            for c in node_exporter::COLLECTORS {
                if let Some(d) = m.durations_ms.get(c) {
                    table.info(
                        s,
                        &format!("node_exporter {c} collector (own duration, median)"),
                        format!("{:.2} ms", d.median),
                    );
                }
            }
            table.info(
                s,
                "node_exporter RSS",
                format!("{:.1} MiB", m.rss_kib as f64 / 1024.0),
            );
            let mut cmp = Map::new();
            if let Some(r) = &ours {
                let ratio = m.cpu_ms_per_scrape * 1000.0 / r.cycle_cpu_us.mean;
                table.push(
                    s,
                    "CPU per collection: node_exporter / ours",
                    format!("{ratio:.0}x"),
                    ">= 100x",
                    Status::check(ratio >= 100.0),
                );
                cmp.insert("cpu_per_collection_ratio".into(), json!(sys::round3(ratio)));
                cmp.insert(
                    "our_cycle_cpu_us_mean".into(),
                    json!(sys::round3(r.cycle_cpu_us.mean)),
                );
                // What the ratio would be with the link counters from RTM_GETSTATS instead of
                // the full RTM_GETLINK dump (docs/performance.md), from this run's figures.
                let cpu = |k: &str| r.part_cpu_us.get(k).map_or(f64::NAN, |v| v.mean);
                let projected = r.cycle_cpu_us.mean - cpu("links_refresh") + cpu("floor_getstats");
                let pratio = m.cpu_ms_per_scrape * 1000.0 / projected;
                table.info(
                    s,
                    "  same, projected with RTM_GETSTATS for counters",
                    format!("{pratio:.0}x"),
                );
                cmp.insert(
                    "projected_cycle_cpu_us_mean_with_getstats".into(),
                    json!(sys::round3(projected)),
                );
                cmp.insert(
                    "projected_cpu_per_collection_ratio_with_getstats".into(),
                    json!(sys::round3(pratio)),
                );
                let wall = |k: &str| r.part_wall_us.get(k).map_or(f64::NAN, |v| v.median);
                for (c, ours_us) in [
                    ("ethtool", wall("ethtool")),
                    ("netdev", wall("links_refresh") + wall("netdev")),
                    ("netstat", wall("netstat")),
                ] {
                    if let Some(d) = m.durations_ms.get(c) {
                        let ratio = d.median * 1000.0 / ours_us;
                        table.info(
                            s,
                            &format!("{c}: node_exporter / ours (wall, median)"),
                            format!("{ratio:.0}x"),
                        );
                        cmp.insert(format!("{c}_wall_ratio"), json!(sys::round3(ratio)));
                    }
                }
            }
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
            let f = export::measure(rotel, exports)?;
            let s = section.as_str();
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
            table.flush_new();
            entry.insert("export".into(), f.json);
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
        table.flush_new();
        doc.insert("ebpf".into(), r.json);
    }
    drop(parts.take());

    if opts.runs("workload") {
        let pods = opts.pods;
        let runs = opts.pick(None, 20, 10);
        banner(&format!("[9] workload mapping, {pods} pods, {runs} scans"));
        let r = bench::workload::run(pods, runs)?;
        let s = &format!("workload, {pods} pods");
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
        table.flush_new();
        doc.insert("workload".into(), r.json);
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
                table.info(
                    s,
                    "CPU: node_exporter / retina-agent",
                    format!("{ratio:.1}x"),
                );
                let ratio = f("node_exporter", "cpu_ms_per_10s")
                    / f("agent_collection_only", "cpu_ms_per_10s");
                table.info(
                    s,
                    "CPU: node_exporter / retina-agent export off",
                    format!("{ratio:.1}x"),
                );
                table.flush_new();
                doc.insert("daemon".into(), r);
            }
            Some(_) => eprintln!("warning: no node_exporter: skipping section 7"),
            None => eprintln!("warning: no retina-agent binary (--agent-bin): skipping section 7"),
        }
    }
    drop(net);
    Ok(())
}
