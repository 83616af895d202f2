//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::snapshot::Format;

#[derive(Debug, Parser)]
#[command(
    name = "retina-agent",
    version,
    about = "Kernel packet drops by reason, NIC driver statistics, interface and netstat counters, as metrics"
)]
pub struct Cli {
    /// Log format on stderr: `text` (readable) or `json` (for journald and log shippers).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "RETINA_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// Read kernel BTF from this file instead of /sys/kernel/btf/vmlinux (diagnostics).
    #[arg(long, global = true, env = "RETINA_BTF", hide_short_help = true)]
    pub btf: Option<PathBuf>,

    /// Capacity of the kernel drop map (distinct reason/namespace/interface/protocol keys);
    /// drops beyond it are counted in retina.drop.overflow.*.
    #[arg(long, global = true, default_value_t = retina_ebpf_common::DEFAULT_DROPS_MAX_ENTRIES, value_parser = clap::value_parser!(u32).range(1..))]
    pub drop_map_entries: u32,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: collect every interval and export.
    Run(RunArgs),
    /// Attach, wait DURATION or run CMD, and print what happened in that window.
    Snapshot(SnapshotArgs),
    /// List the drop reasons the running kernel defines (value and name).
    Reasons {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10s, 500ms, 1m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// How often to collect (and, with an exporter, export).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub interval: Duration,
    /// Print a summary of new drops by reason and interface every interval (default: when
    /// stdout is a terminal).
    #[arg(long, overrides_with = "no_summary")]
    pub summary: bool,
    #[arg(long, hide = true)]
    pub no_summary: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// How long to watch when no command is given.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub duration: Duration,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Print the kernel's running totals instead of the window's changes.
    #[arg(long)]
    pub cumulative: bool,
    /// After CMD exits, wait this long for packets it sent to be processed (softirq).
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
    pub settle: Duration,
    /// Command to run while watching; the window is its lifetime.
    #[arg(last = true)]
    pub command: Vec<String>,
}
