//! Configuration: a TOML file, then the environment, then command-line flags.
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

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer};
use toml::de::{DeTable, DeValue};

use crate::{
    collectors::{
        conntrack::ConntrackConfig, ethtool::EthtoolConfig, netdev::NetdevConfig,
        netstat::NetstatConfig, qdisc::QdiscConfig, softnet::SoftnetConfig,
    },
    export::{self, ExportConfig, PrometheusConfig, Protocol},
    filter::NameFilter,
};

/// Where the daemon looks for its configuration when `--config` is not given. A missing
/// file there is not an error: the defaults apply.
pub const DEFAULT_PATH: &str = "/etc/retina-agent/config.toml";

/// Default collection (and export) interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The accepted range of every duration and size in the configuration (file, environment
/// and flags alike), documented in `packaging/config.toml`. A value outside is refused by
/// `check` and `run` (exit status 2) with the key and the range; nothing that follows from
/// an accepted value (deadlines, timers) can overflow.
pub mod limits {
    use std::time::Duration;

    /// `interval` / `--interval` / `OTEL_METRIC_EXPORT_INTERVAL`: at least 100 ms (a
    /// collection of a few thousand interfaces takes milliseconds; less only burns CPU), at
    /// most a day.
    pub const INTERVAL: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(86_400));
    /// `export.timeout` / `OTEL_EXPORTER_OTLP_TIMEOUT`: 1 ms to 10 minutes.
    pub const EXPORT_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(600));
    /// `ethtool.link_state_interval`: 1 s (the refresh floor) to a day.
    pub const LINK_STATE_INTERVAL: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(86_400));
    /// `snapshot --duration`: 1 ms to a day.
    pub const SNAPSHOT_DURATION: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(86_400));
    /// `snapshot --settle`: 1 ms to a minute.
    pub const SNAPSHOT_SETTLE: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(60));
    /// `drops.map_entries` / `--drop-map-entries`: 1 to 1048576 keys.
    pub const MAP_ENTRIES: (u32, u32) = (1, 1 << 20);
    /// `ethtool.unsupported_retry_cycles`: 1 to 1000000 cycles.
    pub const UNSUPPORTED_RETRY_CYCLES: (u32, u32) = (1, 1_000_000);
    /// `ethtool.max_interfaces`: 1 to 1048576 interfaces.
    pub const MAX_INTERFACES: (usize, usize) = (1, 1 << 20);

    /// `Ok` if `d` is within `range`, else why not.
    pub fn duration(d: Duration, (min, max): (Duration, Duration)) -> Result<(), String> {
        if d < min || d > max {
            return Err(format!(
                "{} is out of range: must be between {} and {}",
                humantime::format_duration(d),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(())
    }

    /// `Ok` if `n` is within `range`, else why not.
    pub fn size<T: PartialOrd + std::fmt::Display>(n: T, (min, max): (T, T)) -> Result<(), String> {
        if n < min || n > max {
            return Err(format!(
                "{n} is out of range: must be between {min} and {max}"
            ));
        }
        Ok(())
    }
}

/// Environment variables the configuration reads itself; the `OTEL_EXPORTER_*`,
/// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SDK_DISABLED` variables are
/// applied by [`ExportConfig::apply_env`] and [`PrometheusConfig::apply_env`].
pub mod env {
    /// Export interval in milliseconds (OpenTelemetry SDK convention); applies only when
    /// neither the file nor `--interval` sets `interval`.
    pub const METRIC_EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
    /// Log filter (`info`, `retina_agent=debug,warn`); overrides `log.level`.
    pub const RUST_LOG: &str = "RUST_LOG";
    /// Log format (`text` or `json`); overrides `log.format`.
    pub const LOG_FORMAT: &str = "RETINA_LOG_FORMAT";
}

/// The whole configuration. Every key is optional; see `packaging/config.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How often to collect and export (default 10s).
    #[serde(deserialize_with = "duration")]
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
        }
    }
}

/// `[log]`: the agent's own log on stderr.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or `tracing` filter directives
    /// (`info,retina_agent=debug`). `RUST_LOG` overrides it.
    pub level: String,
    /// `text` (readable, colored on a terminal) or `json` (one object per line).
    pub format: LogFormat,
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
pub enum LogFormat {
    /// Readable lines (ANSI colors only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for journald and log shippers.
    Json,
}

/// `[drops]`: the kernel packet drop counter (eBPF on the `kfree_skb` tracepoint).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DropsConfig {
    /// Whether to load the eBPF probe and count drops by reason.
    pub enabled: bool,
    /// Capacity of the kernel drop map (distinct reason/namespace/interface/protocol keys);
    /// drops beyond it are counted in `retina.drop.overflow.*`.
    pub map_entries: u32,
    /// Add `drop.location` (the kernel function that freed the packet) to the drop series.
    pub locations: bool,
    /// With `locations`: distinct functions named; drops elsewhere go without
    /// `drop.location` and are counted in `retina.drop.location.overflow`.
    pub locations_capacity: u32,
}

impl Default for DropsConfig {
    fn default() -> Self {
        DropsConfig {
            enabled: true,
            map_entries: retina_ebpf_common::DEFAULT_DROPS_MAX_ENTRIES,
            locations: false,
            locations_capacity: crate::drops::locations::DEFAULT_CAPACITY,
        }
    }
}

/// Values given on the command line; each one that is set wins over file and environment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub interval: Option<Duration>,
    pub log_format: Option<LogFormat>,
    pub drop_map_entries: Option<u32>,
    pub prometheus_listen: Option<SocketAddr>,
    pub no_prometheus: bool,
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<Protocol>,
}

/// Where the configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
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

/// A resolved configuration: file, environment and flags applied, everything validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub origin: Origin,
}

/// A configuration file as parsed, before environment and flags.
#[derive(Clone, Debug, PartialEq)]
pub struct FileConfig {
    pub config: Config,
    /// Whether the file sets `interval` (then `OTEL_METRIC_EXPORT_INTERVAL` does not apply).
    pub sets_interval: bool,
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Invalid>),
    #[error("environment variable {name}={value:?}: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("environment variable {name}: the value is not valid UTF-8")]
    EnvNotUtf8 { name: String },
    /// An `OTEL_*` variable the exporter settings could not take (its value is not shown:
    /// headers may hold credentials).
    #[error("{0}")]
    ExportEnv(#[source] export::ConfigError),
    /// A setting that is only wrong once the environment and the flags are applied.
    #[error("key `{key}` (after environment and flags): {reason}")]
    Resolved { key: String, reason: String },
}

impl ConfigError {
    /// The problem in the file, if that is what this is.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            ConfigError::Invalid(i) => Some(i),
            _ => None,
        }
    }
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The file the text came from.
    pub file: PathBuf,
    /// Dotted path of the offending key (`netdev.include[1]`), when the problem is a value.
    pub key: Option<String>,
    pub reason: String,
    /// 1-based line and column of the offending text, when known.
    pub position: Option<(usize, usize)>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.reason)?;
        if let Some((line, column)) = self.position {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

/// Accepts a humantime duration string greater than zero (`10s`, `500ms`, `1m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|_| format!("invalid duration {s:?} (examples: 10s, 500ms, 1m)"))?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(d)
}

/// [`parse_duration`] within [`limits::INTERVAL`] (the `--interval` flag).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    limits::duration(d, limits::INTERVAL)?;
    Ok(d)
}

/// Checks the syntax of an OTLP collector endpoint given on the command line: a URL with
/// an `http` or `https` scheme (or none: see `export.insecure`) and a host. The rest
/// (the path against the protocol) is checked with the resolved configuration.
pub fn parse_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bad = |why: &str| format!("invalid endpoint {s:?}: {why} (example: http://127.0.0.1:4317)");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let full = if s.contains("://") {
        s.to_string()
    } else {
        format!("https://{s}")
    };
    let uri: http::Uri = full.parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(bad(&format!("scheme `{other}` is not http or https"))),
        None => return Err(bad("no scheme")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.as_str().contains('@') {
        return Err("credentials in the endpoint URL are not supported; use export.headers or OTEL_EXPORTER_OTLP_HEADERS".into());
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    Ok(s.to_string())
}

/// Host and port a resolved endpoint URL connects to (the scheme's port when it has none).
pub fn endpoint_host_port(url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    let authority = uri.authority()?;
    let port = authority
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((host.to_string(), port))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"10s\", \"500ms\", \"1m\" or whole seconds")
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
            match u64::try_from(n) {
                Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
                _ => Err(E::custom(format!(
                    "invalid duration {n}: must be greater than zero"
                ))),
            }
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
            parse_duration(s).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// Parses configuration text. `file` only names it in errors.
pub fn parse(text: &str, file: &Path) -> Result<FileConfig, ConfigError> {
    let invalid = |key: Option<String>, reason: String, span: Option<std::ops::Range<usize>>| {
        ConfigError::Invalid(Box::new(Invalid {
            file: file.to_path_buf(),
            key,
            reason,
            position: span.map(|s| position(text, s.start)),
        }))
    };
    let root = DeTable::parse(text)
        .map_err(|e| invalid(None, format!("TOML syntax: {}", e.message()), e.span()))?;
    let root = DeValue::Table(root.into_inner());
    let sets_interval = root.get("interval").is_some();
    let de = toml::de::Deserializer::parse(text)
        .map_err(|e| invalid(None, format!("TOML syntax: {}", e.message()), e.span()))?;
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let key = (path != "." && !path.is_empty()).then_some(path);
        let inner = e.into_inner();
        invalid(key, inner.message().to_string(), inner.span())
    })?;
    validate(&config).map_err(|(path, reason)| {
        let span = lookup(&root, &path).map(|v| v.span());
        invalid(Some(render_path(&path)), reason, span)
    })?;
    Ok(FileConfig {
        config,
        sets_interval,
    })
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

fn render_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn lookup<'a, 'i>(root: &'a DeValue<'i>, path: &[Seg]) -> Option<&'a toml::Spanned<DeValue<'i>>> {
    let (first, rest) = path.split_first()?;
    let mut v = match first {
        Seg::Key(k) => root.get(*k)?,
        Seg::Index(i) => root.get(*i)?,
    };
    for seg in rest {
        v = match seg {
            Seg::Key(k) => v.get_ref().get(*k)?,
            Seg::Index(i) => v.get_ref().get(*i)?,
        };
    }
    Some(v)
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

type Violation = (Vec<Seg>, String);

/// Checks what deserialization cannot: value ranges, patterns, addresses.
fn validate(config: &Config) -> Result<(), Violation> {
    use Seg::Key;
    if let Err(reason) = check_log_level(&config.log.level) {
        return Err((
            vec![Key("log"), Key("level")],
            format!(
                "invalid log filter {:?}: {reason} (examples: info, debug, \"info,retina_agent=debug\")",
                config.log.level
            ),
        ));
    }
    limits::duration(config.interval, limits::INTERVAL).map_err(|r| (vec![Key("interval")], r))?;
    if config.drops.map_entries == 0 {
        return Err((
            vec![Key("drops"), Key("map_entries")],
            "must be at least 1".into(),
        ));
    }
    if config.drops.locations_capacity == 0 {
        return Err((
            vec![Key("drops"), Key("locations_capacity")],
            "must be at least 1".into(),
        ));
    }
    limits::size(config.drops.map_entries, limits::MAP_ENTRIES)
        .map_err(|r| (vec![Key("drops"), Key("map_entries")], r))?;
    let e = &config.ethtool;
    limits::duration(e.link_state_interval, limits::LINK_STATE_INTERVAL)
        .map_err(|r| (vec![Key("ethtool"), Key("link_state_interval")], r))?;
    limits::size(e.unsupported_retry_cycles, limits::UNSUPPORTED_RETRY_CYCLES)
        .map_err(|r| (vec![Key("ethtool"), Key("unsupported_retry_cycles")], r))?;
    limits::size(e.max_interfaces, limits::MAX_INTERFACES)
        .map_err(|r| (vec![Key("ethtool"), Key("max_interfaces")], r))?;
    patterns(
        &[Key("ethtool"), Key("interfaces_include")],
        &e.interfaces_include,
    )?;
    patterns(
        &[Key("ethtool"), Key("interfaces_exclude")],
        &e.interfaces_exclude,
    )?;
    patterns(&[Key("ethtool"), Key("stats_include")], &e.stats_include)?;
    patterns(&[Key("ethtool"), Key("stats_exclude")], &e.stats_exclude)?;
    patterns(&[Key("netdev"), Key("include")], &config.netdev.include)?;
    patterns(&[Key("netdev"), Key("exclude")], &config.netdev.exclude)?;
    patterns(&[Key("netstat"), Key("include")], &config.netstat.include)?;
    patterns(&[Key("netstat"), Key("exclude")], &config.netstat.exclude)?;
    // Endpoint syntax and scheme, headers, timeout, readable TLS files.
    config.export.validate().map_err(|e| match e {
        export::ConfigError::Invalid { key, reason } => (key.split('.').map(Key).collect(), reason),
        other => (vec![Key("export")], other.to_string()),
    })?;
    Ok(())
}

/// A level or `tracing` filter directives. Stricter than `EnvFilter` on one point: a bare
/// word must be a level (`EnvFilter` would take `inf` as a target name).
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains(['=', '[', ':'])
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "`{directive}` is not a level (off, error, warn, info, debug, trace)"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Compiles each pattern as the collectors will ([`NameFilter`]), naming the first bad one.
fn patterns(path: &[Seg], list: &[String]) -> Result<(), Violation> {
    for (i, p) in list.iter().enumerate() {
        if let Err(e) = NameFilter::new(std::slice::from_ref(p), &[]) {
            let mut path = path.to_vec();
            path.push(Seg::Index(i));
            let reason = match e {
                regex::Error::Syntax(detail) => {
                    // The syntax error quotes the anchored pattern; show the user's.
                    let detail = detail.lines().last().unwrap_or_default().trim();
                    let detail = detail.strip_prefix("error: ").unwrap_or(detail);
                    format!("invalid regular expression {p:?}: {detail}")
                }
                other => format!("invalid regular expression {p:?}: {other}"),
            };
            return Err((path, reason));
        }
    }
    Ok(())
}

/// Crates of the exporter and its transport, which log every connection attempt and
/// every failed export (the agent logs those itself, rate-limited): silenced unless the
/// filter names them. `opentelemetry` covers `opentelemetry_sdk` and `opentelemetry-otlp`
/// (a target prefix).
pub const QUIET_TARGETS: [&str; 7] = [
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

/// Reads the environment through `env` (injectable for tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`load`] and [`resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Whether a variable is one the configuration (or the exporter settings) reads as text.
fn is_config_var(name: &std::ffi::OsStr) -> bool {
    // `RETINA_CONFIG` and `RETINA_BTF` are paths, which may be any bytes.
    let name = name.as_encoded_bytes();
    name.starts_with(b"OTEL_")
        || name == env::RUST_LOG.as_bytes()
        || name == env::LOG_FORMAT.as_bytes()
}

/// Refuses a variable the configuration reads whose value is not UTF-8: silently ignoring
/// it would drop, e.g., an `OTEL_EXPORTER_OTLP_HEADERS` auth header. The value is not shown
/// (headers hold credentials).
pub fn check_env_utf8(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<(), ConfigError> {
    for (name, value) in vars {
        if is_config_var(&name) && value.to_str().is_none() {
            return Err(ConfigError::EnvNotUtf8 {
                name: name.to_string_lossy().into_owned(),
            });
        }
    }
    Ok(())
}

/// [`check_env_utf8`] over the process environment.
pub fn check_process_env() -> Result<(), ConfigError> {
    check_env_utf8(std::env::vars_os())
}

/// Applies the environment and then the flags to a parsed file (or to the defaults).
pub fn resolve(
    file: Option<FileConfig>,
    env: EnvLookup<'_>,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let (mut config, sets_interval) = match file {
        Some(f) => (f.config, f.sets_interval),
        None => (Config::default(), false),
    };
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());

    if !sets_interval
        && let Some(d) =
            export::interval_from_env(|k: &str| env(k)).map_err(ConfigError::ExportEnv)?
    {
        if let Err(reason) = limits::duration(d, limits::INTERVAL) {
            return Err(ConfigError::Env {
                name: env::METRIC_EXPORT_INTERVAL,
                value: env(env::METRIC_EXPORT_INTERVAL).unwrap_or_default(),
                reason,
            });
        }
        config.interval = d;
    }
    if let Some(v) = get(env::RUST_LOG) {
        // The same check as the file's `log.level`: a bare word must be a level.
        if let Err(e) = check_log_level(&v) {
            return Err(ConfigError::Env {
                name: env::RUST_LOG,
                value: v,
                reason: format!("invalid log filter: {e}"),
            });
        }
        config.log.level = v;
    }
    if let Some(v) = get(env::LOG_FORMAT) {
        config.log.format = match v.trim().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::Env {
                    name: env::LOG_FORMAT,
                    value: v,
                    reason: "expected `text` or `json`".into(),
                });
            }
        };
    }

    config
        .export
        .apply_env(|k: &str| env(k))
        .map_err(ConfigError::ExportEnv)?;
    config
        .prometheus
        .apply_env(|k: &str| env(k))
        .map_err(ConfigError::ExportEnv)?;

    if let Some(d) = flags.interval {
        config.interval = d;
    }
    if let Some(f) = flags.log_format {
        config.log.format = f;
    }
    if let Some(n) = flags.drop_map_entries {
        config.drops.map_entries = n;
    }
    if let Some(e) = &flags.otlp_endpoint {
        config.export.endpoint = Some(e.clone());
    }
    if let Some(p) = flags.otlp_protocol {
        config.export.protocol = p;
    }
    if let Some(addr) = flags.prometheus_listen {
        config.prometheus.listen = addr;
        config.prometheus.enabled = true;
    }
    if flags.no_prometheus {
        config.prometheus.enabled = false;
    }
    // The file was validated on its own; what the environment and flags changed is
    // checked here.
    for (key, check) in [
        (
            "interval",
            limits::duration(config.interval, limits::INTERVAL),
        ),
        (
            "drops.map_entries",
            limits::size(config.drops.map_entries, limits::MAP_ENTRIES),
        ),
    ] {
        if let Err(reason) = check {
            return Err(ConfigError::Resolved {
                key: key.into(),
                reason,
            });
        }
    }
    config.export.validate().map_err(|e| match e {
        export::ConfigError::Invalid { key, reason } => ConfigError::Resolved {
            key: key.to_string(),
            reason,
        },
        other => ConfigError::ExportEnv(other),
    })?;
    Ok(config)
}

/// Reads the file at `path` (or [`DEFAULT_PATH`], which may be missing), then applies the
/// environment and the flags.
pub fn load(
    path: Option<&Path>,
    env: EnvLookup<'_>,
    flags: &Overrides,
) -> Result<Loaded, ConfigError> {
    let (file, origin) = match read(path)? {
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

/// The file's text; `None` when no path was given and the default file does not exist.
fn read(path: Option<&Path>) -> Result<Option<(String, PathBuf)>, ConfigError> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    match crate::fsutil::read_regular_string(&path, crate::fsutil::CONFIG_MAX_BYTES) {
        Ok(text) => Ok(Some((text, path))),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const FILE: &str = "/etc/retina-agent/test.toml";

    fn parse_str(text: &str) -> Result<FileConfig, ConfigError> {
        parse(text, Path::new(FILE))
    }

    /// Parses `text`, expecting an error; returns it after checking it names the file.
    fn invalid(text: &str) -> (Invalid, String) {
        let err = parse_str(text).expect_err("config should be rejected");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{FILE}: ")), "{msg}");
        (err.invalid().expect("an Invalid error").clone(), msg)
    }

    fn assert_invalid(text: &str, key: &str, reason: &str) -> Invalid {
        let (inv, msg) = invalid(text);
        assert_eq!(inv.key.as_deref(), Some(key), "{msg}");
        assert!(msg.contains(&format!("key `{key}`: ")), "{msg}");
        assert!(msg.contains(reason), "{msg:?} should contain {reason:?}");
        inv
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let f = parse_str("").unwrap();
        assert_eq!(f.config, Config::default());
        assert!(!f.sets_interval);
        assert_eq!(Config::default().interval, Duration::from_secs(10));
        assert_eq!(Config::default().log.level, "info");
        assert_eq!(Config::default().drops.map_entries, 16384);
    }

    #[test]
    fn values_are_read() {
        let f = parse_str(
            "interval = \"2s\"\n[log]\nlevel = \"debug\"\nformat = \"json\"\n\
             [drops]\nenabled = false\nmap_entries = 8\n\
             [netdev]\ninclude = [\"eth.*\"]\n",
        )
        .unwrap();
        assert!(f.sets_interval);
        let c = f.config;
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(!c.drops.enabled);
        assert_eq!(c.drops.map_entries, 8);
        assert_eq!(c.netdev.include, vec!["eth.*".to_string()]);
    }

    #[test]
    fn unknown_top_level_key() {
        let inv = assert_invalid(
            "interval = \"5s\"\nintervall = \"5s\"\n",
            "intervall",
            "unknown field `intervall`",
        );
        assert_eq!(inv.position.map(|p| p.0), Some(2));
    }

    #[test]
    fn unknown_nested_key() {
        assert_invalid(
            "[drops]\nmap_entires = 5\n",
            "drops.map_entires",
            "unknown field `map_entires`, expected",
        );
        assert_invalid(
            "[netdev]\nenabled = true\nincludes = []\n",
            "netdev.includes",
            "unknown field `includes`",
        );
    }

    #[test]
    fn unknown_section() {
        assert_invalid("[colectors]\n", "colectors", "unknown field `colectors`");
    }

    #[test]
    fn bad_duration() {
        let inv = assert_invalid(
            "interval = \"10 parsecs\"\n",
            "interval",
            "invalid duration \"10 parsecs\" (examples: 10s, 500ms, 1m)",
        );
        assert_eq!(inv.position, Some((1, 12)));
        assert_invalid("interval = \"0s\"\n", "interval", "greater than zero");
        assert_invalid(
            "interval = true\n",
            "interval",
            "expected a duration such as",
        );
        assert_invalid("interval = 0\n", "interval", "greater than zero");
        assert_eq!(
            parse_str("interval = 15\n").unwrap().config.interval,
            Duration::from_secs(15)
        );
    }

    #[test]
    fn bad_regex() {
        let inv = assert_invalid(
            "[netdev]\ninclude = [\"eth0\", \"lo\", \"veth[0-\"]\n",
            "netdev.include[2]",
            "invalid regular expression \"veth[0-\"",
        );
        assert_eq!(inv.position.map(|p| p.0), Some(2));
        assert_invalid(
            "[ethtool]\nstats_include = [\"rx_.*\", \"tx_.*\", \"*bad\"]\n",
            "ethtool.stats_include[2]",
            "invalid regular expression \"*bad\"",
        );
        assert_invalid(
            "[netstat]\nexclude = [\"(Tcp\"]\n",
            "netstat.exclude[0]",
            "invalid regular expression \"(Tcp\"",
        );
    }

    #[test]
    fn wrong_type() {
        assert_invalid(
            "[drops]\nmap_entries = \"many\"\n",
            "drops.map_entries",
            "invalid type: string \"many\", expected u32",
        );
        assert_invalid(
            "[drops]\nenabled = 1\n",
            "drops.enabled",
            "invalid type: integer `1`, expected a boolean",
        );
        assert_invalid("log = \"debug\"\n", "log", "invalid type: string");
        assert_invalid(
            "[netdev]\ninclude = \"eth.*\"\n",
            "netdev.include",
            "expected a sequence",
        );
        assert_invalid(
            "[log]\nformat = \"xml\"\n",
            "log.format",
            "unknown variant `xml`, expected `text` or `json`",
        );
    }

    #[test]
    fn out_of_range() {
        assert_invalid(
            "[drops]\nmap_entries = 0\n",
            "drops.map_entries",
            "must be at least 1",
        );
        assert_invalid(
            "[drops]\nmap_entries = -1\n",
            "drops.map_entries",
            "invalid value: integer `-1`, expected u32",
        );
        assert_invalid(
            "[log]\nlevel = \"loud\"\n",
            "log.level",
            "invalid log filter \"loud\"",
        );
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let (inv, msg) = invalid("interval = \"5s\"\n[drops\n");
        assert_eq!(inv.key, None);
        assert!(msg.contains("TOML syntax"), "{msg}");
        assert_eq!(inv.position.map(|p| p.0), Some(2), "{msg}");
    }

    #[test]
    fn missing_default_file_is_fine_missing_explicit_file_is_not() {
        let dir = std::env::temp_dir().join(format!("retina-config-{}", std::process::id()));
        let missing = dir.join("nope.toml");
        let err = load(Some(&missing), &no_env, &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert!(err.to_string().contains("nope.toml"), "{err}");
        if !Path::new(DEFAULT_PATH).exists() {
            let loaded = load(None, &no_env, &Overrides::default()).unwrap();
            assert_eq!(loaded.config, Config::default());
            assert!(matches!(loaded.origin, Origin::Defaults { .. }));
        }
    }

    #[test]
    fn precedence_file_env_flag() {
        let file = || Some(parse_str("[log]\nformat = \"json\"\nlevel = \"warn\"\n").unwrap());
        // File alone.
        let c = resolve(file(), &no_env, &Overrides::default()).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "warn");
        // Environment over file.
        let env = env_of(&[
            (env::LOG_FORMAT, "text"),
            (env::RUST_LOG, "retina_agent=debug"),
        ]);
        let c = resolve(file(), &env, &Overrides::default()).unwrap();
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, "retina_agent=debug");
        // Flag over environment.
        let flags = Overrides {
            log_format: Some(LogFormat::Json),
            ..Overrides::default()
        };
        let c = resolve(file(), &env, &flags).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn transport_crates_stay_quiet_unless_named() {
        assert_eq!(
            log_filter("info"),
            "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off,opentelemetry=off"
        );
        let f = log_filter("debug,tonic=debug,hyper_util::client=trace");
        assert!(
            f.starts_with("debug,tonic=debug,hyper_util::client=trace,"),
            "{f}"
        );
        assert!(
            !f.contains("tonic=off") && !f.contains("hyper_util=off"),
            "{f}"
        );
        assert!(f.contains("hyper=off") && f.contains("h2=off"), "{f}");
        for level in ["info", "warn,retina_agent=debug", &log_filter("info")] {
            tracing_subscriber::EnvFilter::builder()
                .parse(log_filter(level))
                .unwrap();
        }
    }

    #[test]
    fn bad_address() {
        assert_invalid(
            "[prometheus]\nlisten = \"localhost\"\n",
            "prometheus.listen",
            "invalid socket address syntax",
        );
        assert_invalid(
            "[prometheus]\nlisten = \"127.0.0.1:99999\"\n",
            "prometheus.listen",
            "invalid socket address",
        );
    }

    #[test]
    fn bad_endpoint() {
        let inv = assert_invalid(
            "[export]\nendpoint = \"ftp://collector:21\"\n",
            "export.endpoint",
            "not http or https",
        );
        assert_eq!(inv.position, Some((2, 12)));
        assert_invalid(
            "[export]\nendpoint = \"http://c:4318/v1/metrics\"\n",
            "export.endpoint",
            "gRPC endpoint has no path",
        );
        assert_invalid(
            "[export]\nendpoint = \"http://c:4317\"\ntimeout = \"0s\"\n",
            "export.timeout",
            "greater than zero",
        );
        assert_invalid(
            "[export]\nprotocol = \"http\"\n",
            "export.protocol",
            "unknown variant `http`",
        );
        assert_invalid(
            "[export.headers]\nx-token = 5\n",
            "export.headers.x-token",
            "invalid type: integer",
        );
        // Disabled export is not checked.
        parse_str("[export]\nenabled = false\nendpoint = \"ftp://x\"\n").unwrap();
        assert!(parse_endpoint("collector:4317").is_ok());
        assert!(parse_endpoint("http://127.0.0.1:4317").is_ok());
        assert!(parse_endpoint("ftp://c").is_err());
        assert!(parse_endpoint("http://").is_err());
        assert!(parse_endpoint("").is_err());
        assert!(parse_endpoint("http://u:pw@c:1").is_err());
        assert_eq!(
            endpoint_host_port("https://c.example/v1/metrics"),
            Some(("c.example".to_string(), 443))
        );
        assert_eq!(
            endpoint_host_port("http://[::1]:4317"),
            Some(("::1".to_string(), 4317))
        );
    }

    #[test]
    fn export_precedence_file_env_flag() {
        let file = || {
            Some(
                parse_str(
                    "[export]\nendpoint = \"http://file:4317\"\n\
                     [prometheus]\nlisten = \"127.0.0.1:9001\"\n",
                )
                .unwrap(),
            )
        };
        let c = resolve(file(), &no_env, &Overrides::default()).unwrap();
        assert_eq!(c.export.endpoint.as_deref(), Some("http://file:4317"));
        assert_eq!(c.prometheus.listen.port(), 9001);
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", "9002"),
        ]);
        let c = resolve(file(), &env, &Overrides::default()).unwrap();
        assert_eq!(c.export.endpoint.as_deref(), Some("http://env:4317"));
        assert_eq!(c.prometheus.listen.port(), 9002);
        let flags = Overrides {
            otlp_endpoint: Some("http://flag:4318".into()),
            otlp_protocol: Some(Protocol::HttpProtobuf),
            prometheus_listen: Some("127.0.0.1:9003".parse().unwrap()),
            ..Overrides::default()
        };
        let c = resolve(file(), &env, &flags).unwrap();
        assert_eq!(c.export.resolved_endpoint(), "http://flag:4318/v1/metrics");
        assert_eq!(c.prometheus.listen.port(), 9003);
        assert!(c.prometheus.enabled);
        let flags = Overrides {
            no_prometheus: true,
            ..Overrides::default()
        };
        assert!(!resolve(file(), &env, &flags).unwrap().prometheus.enabled);
    }

    /// Field names a section of [`Config`] accepts, from the `deny_unknown_fields` error
    /// (so it works for every section, whoever owns its type).
    fn fields_of(section: Option<&str>) -> Vec<String> {
        let text = match section {
            Some(s) => format!("[{s}]\n__probe__ = 0\n"),
            None => "__probe__ = 0\n".to_string(),
        };
        let msg = parse_str(&text).unwrap_err().to_string();
        let expected = msg
            .split_once("expected")
            .unwrap_or_else(|| panic!("{msg}"))
            .1;
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    const PACKAGED: &str = include_str!("../../packaging/config.toml");

    #[test]
    fn packaged_config_is_the_defaults() {
        let f = parse(PACKAGED, Path::new("packaging/config.toml")).unwrap();
        assert_eq!(f.config, Config::default());
    }

    #[test]
    fn packaged_config_lists_every_key() {
        // Text of each section: from its header to the next.
        let mut sections: HashMap<Option<String>, String> = HashMap::new();
        let mut current = None;
        for line in PACKAGED.lines() {
            let t = line.trim();
            if t.starts_with('[') && !t.starts_with("[[") {
                current = Some(t.trim_matches(['[', ']']).to_string());
                continue;
            }
            sections
                .entry(current.clone())
                .or_default()
                .push_str(&format!("{line}\n"));
        }
        let top = fields_of(None);
        assert!(top.contains(&"interval".to_string()), "{top:?}");
        for field in top {
            // A key is listed as `key = value` (or commented out when it has no default
            // value), or as a `[key]` section.
            let text = &sections[&None];
            let listed = sections.contains_key(&Some(field.clone()))
                || text.lines().any(|l| is_key_line(l, &field));
            assert!(listed, "packaging/config.toml does not list `{field}`");
            if let Some(section_text) = sections.get(&Some(field.clone())) {
                for key in fields_of(Some(&field)) {
                    assert!(
                        section_text.lines().any(|l| is_key_line(l, &key)),
                        "packaging/config.toml does not list `{field}.{key}`"
                    );
                }
            }
        }
    }

    fn is_key_line(line: &str, key: &str) -> bool {
        let l = line.trim_start().trim_start_matches('#').trim_start();
        l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    }

    #[test]
    fn drop_map_entries_flag_overrides_file() {
        let file = parse_str("[drops]\nmap_entries = 100\n").unwrap();
        let flags = Overrides {
            drop_map_entries: Some(7),
            ..Overrides::default()
        };
        assert_eq!(
            resolve(Some(file), &no_env, &flags)
                .unwrap()
                .drops
                .map_entries,
            7
        );
    }

    #[test]
    fn interval_precedence() {
        let env = env_of(&[(env::METRIC_EXPORT_INTERVAL, "2500")]);
        // Neither file nor flag: the environment applies.
        let c = resolve(Some(parse_str("").unwrap()), &env, &Overrides::default()).unwrap();
        assert_eq!(c.interval, Duration::from_millis(2500));
        let c = resolve(None, &env, &Overrides::default()).unwrap();
        assert_eq!(c.interval, Duration::from_millis(2500));
        // The file wins over the environment.
        let file = || Some(parse_str("interval = \"30s\"").unwrap());
        let c = resolve(file(), &env, &Overrides::default()).unwrap();
        assert_eq!(c.interval, Duration::from_secs(30));
        // The flag wins over both.
        let flags = Overrides {
            interval: Some(Duration::from_secs(1)),
            ..Overrides::default()
        };
        assert_eq!(
            resolve(file(), &env, &flags).unwrap().interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            resolve(None, &env, &flags).unwrap().interval,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn bad_environment_values_are_rejected() {
        for (name, value, reason) in [
            (env::METRIC_EXPORT_INTERVAL, "10s", "milliseconds"),
            (env::METRIC_EXPORT_INTERVAL, "0", "greater than zero"),
            (env::LOG_FORMAT, "xml", "xml"),
            (env::RUST_LOG, "info,[==", "invalid log filter"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "not supported"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", "http", "not a port number"),
        ] {
            let env = env_of(&[(name, value)]);
            let err = resolve(None, &env, &Overrides::default()).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains(reason), "{msg}");
        }
        // An endpoint from the environment that only the resolved configuration rejects.
        let env = env_of(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "ftp://c:21")]);
        let msg = resolve(None, &env, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("key `export.endpoint` (after environment and flags)")
                && msg.contains("not http or https"),
            "{msg}"
        );
    }
}

#[cfg(test)]
mod limits_tests;
