//! Configuration: a TOML file, then the environment, then command-line flags, checked
//! once, into one [`Config`].
//!
//! The whole configuration is read and validated before anything starts (no eBPF program
//! loaded, no socket bound): unknown keys, malformed durations, regular expressions that do
//! not compile, unparsable addresses and endpoints are all reported with the file, the
//! dotted key (`ethtool.stats_include[2]`) and the reason.
//!
//! Precedence, lowest first: built-in defaults ([`Config::default`], documented key by key
//! in `packaging/config.toml`), the file ([`DEFAULT_PATH`] or `--config`), the environment,
//! the flags. One exception follows the OpenTelemetry convention: `OTEL_METRIC_EXPORT_INTERVAL`
//! only applies when neither the file nor `--interval` sets the interval.
//!
//! - `file.rs`: reading and deserializing the file; a value that does not parse (a pattern
//!   that does not compile included) is an error there, with its key and position;
//! - [`env`](mod@env): the environment, `OTEL_*` included; `flags.rs`: the command line;
//! - `validate.rs`: the checks of the result, run once by [`resolve`]; a refused value the
//!   file set names the file, one the environment or a flag set says so;
//! - `error.rs`: the one [`ConfigError`]; `export.rs`: the `[export]` and `[prometheus]`
//!   sections;
//! - [`limits`]: the ranges of durations and sizes.

pub(crate) mod env;
mod error;
mod export;
mod file;
mod flags;
pub mod limits;
mod validate;

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use self::{
    export::{ExportConfig, PrometheusConfig, SeriesPolicy, Temporality},
    file::parse,
    flags::{Overrides, endpoint_host_port, parse_endpoint, parse_interval},
};
pub(crate) use self::{
    env::{EnvLookup, check_process_env, process_env},
    error::{ConfigError, Invalid},
    export::{Compression, Protocol},
    file::FileConfig,
};
/// Driven directly by the fuzz targets.
#[cfg(any(test, feature = "internals"))]
pub use self::env::check_env_utf8;
use crate::collectors::{
    conntrack::ConntrackConfig, drops::DropsConfig, ethtool::EthtoolConfig,
    netdev::NetdevConfig, netstat::NetstatConfig, qdisc::QdiscConfig, softnet::SoftnetConfig,
};

/// Where the daemon looks for its configuration when `--config` is not given. A missing
/// file there is not an error: the defaults apply.
pub(crate) const DEFAULT_PATH: &str = "/etc/retina-agent/config.toml";

/// Default collection (and export) interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The whole configuration. Every key is optional; see `packaging/config.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How often to collect and export (default 10s).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub interval: Duration,
    pub log: LogConfig,
    pub drops: DropsConfig,
    pub ethtool: EthtoolConfig,
    pub netdev: NetdevConfig,
    pub netstat: NetstatConfig,
    pub softnet: SoftnetConfig,
    pub qdisc: QdiscConfig,
    pub conntrack: ConntrackConfig,
    /// `[export]`: OTLP push.
    pub export: ExportConfig,
    /// `[prometheus]`: the scrape endpoint.
    pub prometheus: PrometheusConfig,
    /// `--btf`: read kernel BTF from this file instead of `/sys/kernel/btf/vmlinux`
    /// (diagnostics and tests; not a file key).
    #[serde(skip)]
    pub btf: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: DEFAULT_INTERVAL,
            log: LogConfig::default(),
            drops: DropsConfig::default(),
            ethtool: EthtoolConfig::default(),
            netdev: NetdevConfig::default(),
            netstat: NetstatConfig::default(),
            softnet: SoftnetConfig::default(),
            qdisc: QdiscConfig::default(),
            conntrack: ConntrackConfig::default(),
            export: ExportConfig::default(),
            prometheus: PrometheusConfig::default(),
            btf: None,
        }
    }
}

/// `[log]`: the agent's own log on stderr.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or `tracing` filter directives
    /// (`info,retina_agent=debug`). `RUST_LOG` overrides it.
    pub(crate) level: String,
    /// `text` (readable, colored on a terminal) or `json` (one object per line).
    pub(crate) format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Readable lines (ANSI colors only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for journald and log shippers.
    Json,
}

/// Where the configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Read from this file.
    File(PathBuf),
    /// The default file does not exist: built-in defaults.
    Defaults { missing: PathBuf },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Defaults { missing } => {
                write!(
                    f,
                    "built-in defaults ({} does not exist)",
                    missing.display()
                )
            }
        }
    }
}

/// A resolved configuration: file, environment and flags applied, everything validated,
/// and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Loaded {
    pub(crate) config: Config,
    pub(crate) origin: Origin,
}

/// The keys the environment and the flags set (dotted: `export.endpoint`), so that a
/// refused value is blamed on the file only when the file set it.
#[derive(Debug, Default)]
struct Overridden(BTreeSet<&'static str>);

impl Overridden {
    fn insert(&mut self, key: &'static str) {
        self.0.insert(key);
    }

    fn contains(&self, key: &str) -> bool {
        self.0.contains(key)
    }
}

/// Crates of the exporter and its transport, which log every connection attempt and
/// every failed export (the agent logs those itself, rate-limited): silenced unless the
/// filter names them. `opentelemetry` covers `opentelemetry_sdk` and `opentelemetry-otlp`
/// (a target prefix).
pub(crate) const QUIET_TARGETS: [&str; 7] = [
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "reqwest",
    "opentelemetry",
];

/// The `tracing` filter for `level` (`log.level` or `RUST_LOG`): `level` itself, then
/// `TARGET=off` for each [`QUIET_TARGETS`] entry that `level` does not name.
pub fn log_filter(level: &str) -> String {
    let named: Vec<&str> = level
        .split(',')
        .map(|d| d.split(['=', '[']).next().unwrap_or_default().trim())
        .collect();
    let mut filter = level.trim().to_string();
    for target in QUIET_TARGETS {
        let prefix = format!("{target}::");
        if !named.iter().any(|t| *t == target || t.starts_with(&prefix)) {
            if !filter.is_empty() {
                filter.push(',');
            }
            filter.push_str(target);
            filter.push_str("=off");
        }
    }
    filter
}

/// Applies the environment and then the flags to a parsed file (or to the defaults), and
/// checks the result.
pub fn resolve(
    file: Option<FileConfig>,
    env: EnvLookup<'_>,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let (mut config, sets_interval, file) = match file {
        Some(mut f) => (std::mem::take(&mut f.config), f.sets_interval, Some(f)),
        None => (Config::default(), false, None),
    };
    let mut set = Overridden::default();
    env::apply(&mut config, sets_interval, env, &mut set)?;
    flags.apply(&mut config, &mut set);
    validate::config(&config).map_err(|v| match &file {
        Some(f) if !v.overridden(&set) => f.invalid(v),
        _ => ConfigError::Resolved {
            key: v.key(),
            reason: v.reason,
        },
    })?;
    Ok(config)
}

/// Reads the file at `path` (or [`DEFAULT_PATH`], which may be missing), then applies the
/// environment and the flags.
pub(crate) fn load(
    path: Option<&Path>,
    env: EnvLookup<'_>,
    flags: &Overrides,
) -> Result<Loaded, ConfigError> {
    let (file, origin) = match file::read(path)? {
        Some((text, path)) => (Some(parse(&text, &path)?), Origin::File(path)),
        None => (
            None,
            Origin::Defaults {
                missing: PathBuf::from(DEFAULT_PATH),
            },
        ),
    };
    Ok(Loaded {
        config: resolve(file, env, flags)?,
        origin,
    })
}

#[cfg(test)]
mod tests;
