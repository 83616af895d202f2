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
//! 10. the daemon as the unit runs it under an unprivileged user's EtherType flood (issue
//!     26): CPU per cycle, RSS and scrape size before, at the onset and during the flood
//!     (`--only flood`);
//! 9. the workload mapping at `--pods` pods (namespace, veth, process in a kubelet cgroup):
//!    the /proc scan and the veth-peer resolution, the steady per-cycle check, and the
//!    series per workload (`--only workload`);
//! 11. per-workload protocol counters at `--pods` pods: the `netstat_workloads` collector's
//!     cycle, CPU and allocations, and each file's read alone (`--only netns`).
//! 12. the TCP event programs' run time per event next to an empty program on each hook,
//!     and exact counts, under refused loopback connects (`--only tcp`).
//! 13. the daemon with drop flows on under a 1 000 000-drop flood: its CPU beyond the
//!     events it exports, in collection cycles per second (`--only flows-flood`).
//!
//! Every veth, namespace, child process and sysctl it changes is restored by an RAII guard,
//! also on failure and on Ctrl-C (SIGINT/SIGTERM stop the run at the next check).
//!
//! Layout: `opts` (the flags), `run` (the sections in order), one module per measurement
//! (`cycle`, `floors`, `node_exporter`, `export`, `ebpf` with `bpf`, `soak`, `agent_run`,
//! `workload`), `rows/` (each section's table rows), `report` (the table), `net` and `sys`
//! (veths, processes, clocks).

mod agent_run;
mod bpf;
mod cycle;
mod ebpf;
mod ebpf_flows;
mod export;
mod flood;
mod floors;
mod flows_flood;
mod net;
mod netns_stat;
mod node_exporter;
mod opts;
mod removed_owners;
mod report;
mod rows;
mod run;
mod soak;
mod sys;
mod tcp_events;
mod workload;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{Map, Value, json};

use crate::{opts::Opts, report::Table};

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
#[allow(
    clippy::enum_variant_names,
    reason = "each is a child process the bench starts, and its name says so"
)]
enum Sub {
    /// The memory soak's child process (started by the bench itself).
    #[command(hide = true)]
    SoakChild(soak::SoakArgs),
    /// The EtherType flood (section 10), run as an unprivileged user.
    #[command(hide = true)]
    FloodChild,
    /// N datagrams to 127.0.0.1:9 (section 10, inside a namespace).
    #[command(hide = true)]
    UdpChild { n: u64 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sys::install_signal_handlers();
    let child = match &cli.command {
        Some(Sub::FloodChild) => Some(retina_tests::flood::run(None)),
        Some(Sub::UdpChild { n }) => Some(flood::udp_child(*n)),
        _ => None,
    };
    if let Some(r) = child {
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
    let result = run::run(&opts, &out_dir, &mut doc, &mut table);
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
