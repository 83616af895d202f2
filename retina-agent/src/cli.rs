//! Command-line interface.
//!
//! Flags override the configuration file and the environment (see [`crate::config`]); a
//! flag that is not given leaves the configured value alone.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

pub(crate) use crate::config::LogFormat;
use crate::{
    collectors::drops::Hook,
    config::{self, Overrides, Protocol},
};

/// What `--version` prints after the name: the package version and the git commit the
/// binary was built from (`build.rs`), e.g. `0.1.0 (git commit 68bb07412abc)`.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RETINA_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "retina-agent",
    version = VERSION,
    about = "Kernel packet drops by reason, NIC driver statistics, interface and netstat counters, as metrics"
)]
pub(crate) struct Cli {
    /// Configuration file [default: /etc/retina-agent/config.toml, used if it exists].
    #[arg(long, global = true, value_name = "PATH", env = "RETINA_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Log format on stderr: `text` (readable) or `json` (for journald and log shippers)
    /// [config: log.format; env: RETINA_LOG_FORMAT; default: text].
    #[arg(long, global = true, value_enum)]
    pub(crate) log_format: Option<LogFormat>,

    /// Read kernel BTF from this file instead of /sys/kernel/btf/vmlinux (diagnostics).
    #[arg(long, global = true, env = "RETINA_BTF", hide_short_help = true)]
    pub(crate) btf: Option<PathBuf>,

    /// Capacity of the kernel drop map (distinct reason/namespace/interface/protocol keys);
    /// drops beyond it are counted in retina.drop.overflow.* [config: drops.map_entries;
    /// default: 16384].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(config::limits::MAP_ENTRIES.1)))]
    pub(crate) drop_map_entries: Option<u32>,

    /// How the drop probe attaches to kfree_skb: `auto` (BTF-enabled tracepoint, else the
    /// raw tracepoint), `btf` or `raw` (diagnostics).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        hide_short_help = true
    )]
    pub(crate) drop_hook: Hook,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: collect every interval and export.
    ///
    /// SIGTERM or SIGINT stops it after a final collection and export; SIGHUP
    /// (`systemctl reload retina-agent`) reads the configuration again and applies it,
    /// or refuses it and keeps the running one (SIGNALS in retina-agent(1)).
    Run(RunArgs),
    /// Attach, wait DURATION or run CMD, and print what happened in that window.
    Snapshot(SnapshotArgs),
    /// List the drop reasons the running kernel defines (value and name).
    Reasons {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Check that this machine and the configuration can run the agent (kernel, BTF,
    /// capabilities, probe load, config, exporter endpoints); exit 1 if a check fails, 2 if
    /// the configuration cannot be used (as `run`).
    Check(CheckArgs),
}

fn parse_snapshot_duration(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s)?;
    config::limits::duration(d, config::limits::SNAPSHOT_DURATION)?;
    Ok(d)
}

fn parse_settle(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s)?;
    config::limits::duration(d, config::limits::SNAPSHOT_SETTLE)?;
    Ok(d)
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
}

/// Export settings that `run` and `check` share.
#[derive(Debug, Default, Args)]
pub(crate) struct ExportArgs {
    /// Serve Prometheus metrics on this address [config: prometheus.listen].
    #[arg(long, value_name = "ADDR")]
    pub(crate) prometheus_listen: Option<SocketAddr>,
    /// Do not serve Prometheus metrics [config: prometheus.enabled].
    #[arg(long, conflicts_with = "prometheus_listen")]
    pub(crate) no_prometheus: bool,
    /// Export OTLP to this collector endpoint, e.g. http://127.0.0.1:4317 [config:
    /// export.endpoint; env: OTEL_EXPORTER_OTLP_ENDPOINT].
    #[arg(long, value_name = "URL", value_parser = config::parse_endpoint)]
    pub(crate) otlp_endpoint: Option<String>,
    /// OTLP transport: `grpc` or `http/protobuf` [config: export.protocol; env:
    /// OTEL_EXPORTER_OTLP_PROTOCOL].
    #[arg(long, value_name = "PROTOCOL", value_parser = parse_protocol)]
    pub(crate) otlp_protocol: Option<Protocol>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// How often to collect (and export) [config: interval; env: OTEL_METRIC_EXPORT_INTERVAL
    /// (ms); default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_interval)]
    pub(crate) interval: Option<Duration>,
    /// Print a summary of new drops by reason and interface every interval (default: when
    /// stdout is a terminal).
    #[arg(long, overrides_with = "no_summary")]
    pub(crate) summary: bool,
    /// Never print the summary.
    #[arg(long, overrides_with = "summary")]
    pub(crate) no_summary: bool,
    #[command(flatten)]
    pub(crate) export: ExportArgs,
}

impl RunArgs {
    /// `Some(true)` for `--summary`, `Some(false)` for `--no-summary`, `None` for neither.
    pub(crate) fn summary(&self) -> Option<bool> {
        match (self.summary, self.no_summary) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

/// Output of `snapshot` and `reasons`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Json,
    Table,
}

/// Output of `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CheckFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: CheckFormat,
    #[command(flatten)]
    pub(crate) export: ExportArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotArgs {
    /// How long to watch when no command is given.
    #[arg(long, value_parser = parse_snapshot_duration, default_value = "5s")]
    pub(crate) duration: Duration,
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: Format,
    /// Print the kernel's running totals instead of the window's changes.
    #[arg(long)]
    pub(crate) cumulative: bool,
    /// Name the kernel function that freed each dropped packet (`drop.location`), for this
    /// look only [config: drops.locations].
    #[arg(long)]
    pub(crate) locations: bool,
    /// Count the dropped packets per flow in the kernel for this look and print the top
    /// flows (exact counts, or "≥ N" for a flow the LRU map evicted before) [config:
    /// drops.flows].
    #[arg(long)]
    pub(crate) flows: bool,
    /// Write the sampled dropped packets to FILE as pcapng, each with its drop reason (and
    /// location) in the packet comment; implies --flows.
    #[arg(long, value_name = "FILE")]
    pub(crate) pcap: Option<PathBuf>,
    /// After CMD exits, wait this long for packets it sent to be processed (softirq).
    #[arg(long, value_parser = parse_settle, default_value = "200ms")]
    pub(crate) settle: Duration,
    /// Run CMD as this user: its uid, primary group and supplementary groups from the
    /// user database (needs root: `sudo retina-agent snapshot --user "$USER" -- curl ...`
    /// from a shell, `--user "$SUDO_USER"` in a script run with sudo).
    #[arg(long, value_name = "NAME", requires = "command")]
    pub(crate) user: Option<String>,
    /// Command to run while watching; the window is its lifetime. CMD runs as the caller
    /// (or `--user`), never with the agent's capabilities: its ambient and inheritable sets
    /// are cleared, so under the unit it has none. Under sudo without `--user` it runs as
    /// root.
    #[arg(last = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

impl Cli {
    /// The flags that override the configuration, for the chosen command.
    pub(crate) fn overrides(&self) -> Overrides {
        let mut o = Overrides {
            log_format: self.log_format,
            drop_map_entries: self.drop_map_entries,
            drop_hook: self.drop_hook,
            btf: self.btf.clone(),
            ..Overrides::default()
        };
        let export = match &self.command {
            Command::Run(args) => {
                o.interval = args.interval;
                Some(&args.export)
            }
            Command::Check(args) => Some(&args.export),
            Command::Snapshot(args) => {
                o.drop_locations = args.locations;
                o.drop_flows = args.flows || args.pcap.is_some();
                None
            }
            Command::Reasons { .. } => None,
        };
        if let Some(e) = export {
            o.prometheus_listen = e.prometheus_listen;
            o.no_prometheus = e.no_prometheus;
            o.otlp_endpoint = e.otlp_endpoint.clone();
            o.otlp_protocol = e.otlp_protocol;
        }
        o
    }
}

#[cfg(test)]
mod tests;
