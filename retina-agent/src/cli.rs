//! Command-line interface.
//!
//! Flags override the configuration file and the environment (see [`crate::config`]); a
//! flag that is not given leaves the configured value alone.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

pub use crate::config::LogFormat;
use crate::{
    collectors::drops::Hook,
    commands::snapshot::Format,
    config::{self, Overrides, Protocol},
};

/// What `--version` prints after the name: the package version and the git commit the
/// binary was built from (`build.rs`), e.g. `0.1.0 (git commit 68bb07412abc)`.
pub const VERSION: &str = concat!(
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
pub struct Cli {
    /// Configuration file [default: /etc/retina-agent/config.toml, used if it exists].
    #[arg(long, global = true, value_name = "PATH", env = "RETINA_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format on stderr: `text` (readable) or `json` (for journald and log shippers)
    /// [config: log.format; env: RETINA_LOG_FORMAT; default: text].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Read kernel BTF from this file instead of /sys/kernel/btf/vmlinux (diagnostics).
    #[arg(long, global = true, env = "RETINA_BTF", hide_short_help = true)]
    pub btf: Option<PathBuf>,

    /// Capacity of the kernel drop map (distinct reason/namespace/interface/protocol keys);
    /// drops beyond it are counted in retina.drop.overflow.* [config: drops.map_entries;
    /// default: 16384].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(config::limits::MAP_ENTRIES.1)))]
    pub drop_map_entries: Option<u32>,

    /// How the drop probe attaches to kfree_skb: `auto` (BTF-enabled tracepoint, else the
    /// raw tracepoint), `btf` or `raw` (diagnostics).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        hide_short_help = true
    )]
    pub drop_hook: DropHook,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    let d = config::parse_duration(s)?;
    config::limits::duration(d, config::limits::SNAPSHOT_DURATION)?;
    Ok(d)
}

fn parse_settle(s: &str) -> Result<Duration, String> {
    let d = config::parse_duration(s)?;
    config::limits::duration(d, config::limits::SNAPSHOT_SETTLE)?;
    Ok(d)
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
}

/// Export settings that `run` and `check` share.
#[derive(Debug, Default, Args)]
pub struct ExportArgs {
    /// Serve Prometheus metrics on this address [config: prometheus.listen].
    #[arg(long, value_name = "ADDR")]
    pub prometheus_listen: Option<SocketAddr>,
    /// Do not serve Prometheus metrics [config: prometheus.enabled].
    #[arg(long, conflicts_with = "prometheus_listen")]
    pub no_prometheus: bool,
    /// Export OTLP to this collector endpoint, e.g. http://127.0.0.1:4317 [config:
    /// export.endpoint; env: OTEL_EXPORTER_OTLP_ENDPOINT].
    #[arg(long, value_name = "URL", value_parser = config::parse_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: `grpc` or `http/protobuf` [config: export.protocol; env:
    /// OTEL_EXPORTER_OTLP_PROTOCOL].
    #[arg(long, value_name = "PROTOCOL", value_parser = parse_protocol)]
    pub otlp_protocol: Option<Protocol>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// How often to collect (and export) [config: interval; env: OTEL_METRIC_EXPORT_INTERVAL
    /// (ms); default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_interval)]
    pub interval: Option<Duration>,
    /// Print a summary of new drops by reason and interface every interval (default: when
    /// stdout is a terminal).
    #[arg(long, overrides_with = "no_summary")]
    pub summary: bool,
    /// Never print the summary.
    #[arg(long, overrides_with = "summary")]
    pub no_summary: bool,
    #[command(flatten)]
    pub export: ExportArgs,
}

impl RunArgs {
    /// `Some(true)` for `--summary`, `Some(false)` for `--no-summary`, `None` for neither.
    pub fn summary(&self) -> Option<bool> {
        match (self.summary, self.no_summary) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

/// `--drop-hook`: how the drop probe attaches to `kfree_skb` (the probe's [`Hook`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DropHook {
    /// The BTF-enabled tracepoint where it loads, else the raw tracepoint.
    #[default]
    Auto,
    /// Only the BTF-enabled tracepoint (`tp_btf`, direct loads).
    Btf,
    /// Only the raw tracepoint (`bpf_probe_read_kernel`): what kernels without BTF-enabled
    /// tracepoints run.
    Raw,
}

impl From<DropHook> for Hook {
    fn from(hook: DropHook) -> Hook {
        match hook {
            DropHook::Auto => Hook::Auto,
            DropHook::Btf => Hook::Btf,
            DropHook::Raw => Hook::Raw,
        }
    }
}

/// Output of `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
    #[command(flatten)]
    pub export: ExportArgs,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// How long to watch when no command is given.
    #[arg(long, value_parser = parse_snapshot_duration, default_value = "5s")]
    pub duration: Duration,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Print the kernel's running totals instead of the window's changes.
    #[arg(long)]
    pub cumulative: bool,
    /// Name the kernel function that freed each dropped packet (`drop.location`), for this
    /// look only [config: drops.locations].
    #[arg(long)]
    pub locations: bool,
    /// Count the dropped packets per flow in the kernel for this look and print the top
    /// flows (exact counts, or "≥ N" for a flow the LRU map evicted before) [config:
    /// drops.flows].
    #[arg(long)]
    pub flows: bool,
    /// Write the sampled dropped packets to FILE as pcapng, each with its drop reason (and
    /// location) in the packet comment; implies --flows.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// After CMD exits, wait this long for packets it sent to be processed (softirq).
    #[arg(long, value_parser = parse_settle, default_value = "200ms")]
    pub settle: Duration,
    /// Run CMD as this user: its uid, primary group and supplementary groups from the
    /// user database (needs root: `sudo retina-agent snapshot --user "$USER" -- curl ...`
    /// from a shell, `--user "$SUDO_USER"` in a script run with sudo).
    #[arg(long, value_name = "NAME", requires = "command")]
    pub user: Option<String>,
    /// Command to run while watching; the window is its lifetime. CMD runs as the caller
    /// (or `--user`), never with the agent's capabilities: its ambient and inheritable sets
    /// are cleared, so under the unit it has none. Under sudo without `--user` it runs as
    /// root.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl Cli {
    /// The flags that override the configuration, for the chosen command.
    pub fn overrides(&self) -> Overrides {
        let mut o = Overrides {
            log_format: self.log_format,
            drop_map_entries: self.drop_map_entries,
            drop_hook: self.drop_hook.into(),
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
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("retina-agent").chain(args.iter().copied()))
    }

    #[test]
    fn run_flags_become_overrides() {
        let c = cli(&[
            "run",
            "--config",
            "/tmp/c.toml",
            "--interval",
            "2s",
            "--prometheus-listen",
            "127.0.0.1:9999",
            "--otlp-endpoint",
            "http://collector:4317",
            "--otlp-protocol",
            "http/protobuf",
            "--log-format",
            "json",
            "--drop-map-entries",
            "9",
        ])
        .unwrap();
        assert_eq!(
            c.config.as_deref(),
            Some(std::path::Path::new("/tmp/c.toml"))
        );
        let o = c.overrides();
        assert_eq!(o.interval, Some(Duration::from_secs(2)));
        assert_eq!(o.prometheus_listen, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(o.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(o.otlp_protocol, Some(Protocol::HttpProtobuf));
        assert_eq!(o.log_format, Some(LogFormat::Json));
        assert_eq!(o.drop_map_entries, Some(9));
        assert!(!o.no_prometheus);
    }

    #[test]
    fn nothing_given_overrides_nothing() {
        let c = cli(&["run"]).unwrap();
        assert_eq!(c.overrides(), Overrides::default());
        let Command::Run(args) = &c.command else {
            panic!()
        };
        assert_eq!(args.summary(), None);
    }

    #[test]
    fn summary_flags() {
        let summary = |args: &[&str]| match cli(args).unwrap().command {
            Command::Run(r) => r.summary(),
            _ => panic!(),
        };
        assert_eq!(summary(&["run", "--summary"]), Some(true));
        assert_eq!(summary(&["run", "--no-summary"]), Some(false));
        assert_eq!(summary(&["run", "--summary", "--no-summary"]), Some(false));
        assert_eq!(summary(&["run", "--no-summary", "--summary"]), Some(true));
    }

    #[test]
    fn bad_flag_values_are_usage_errors() {
        for args in [
            &["run", "--interval", "10 parsecs"][..],
            &["run", "--interval", "0s"],
            &["run", "--prometheus-listen", "localhost"],
            &["run", "--otlp-endpoint", "ftp://collector:4317"],
            &["run", "--otlp-protocol", "http"],
            &[
                "run",
                "--no-prometheus",
                "--prometheus-listen",
                "127.0.0.1:1",
            ],
            &["run", "--drop-map-entries", "0"],
            &["run", "--drop-map-entries", "1048577"],
            &["run", "--interval", "1ns"],
            &["run", "--interval", "99ms"],
            &["run", "--interval", "18446744073709551615s"],
            &["snapshot", "--duration", "20000y"],
            &["snapshot", "--settle", "2m"],
        ] {
            assert!(cli(args).is_err(), "{args:?} should be rejected");
        }
    }

    #[test]
    fn check_takes_export_flags() {
        let c = cli(&["check", "--format", "json", "--no-prometheus"]).unwrap();
        assert!(c.overrides().no_prometheus);
        assert!(matches!(
            c.command,
            Command::Check(CheckArgs {
                format: CheckFormat::Json,
                ..
            })
        ));
    }
}
