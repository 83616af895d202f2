//! The environment: the agent's own variables and the standard `OTEL_*` ones, layered over
//! the file (or the defaults), before the flags.
//!
//! | variable | key |
//! |---|---|
//! | `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds) | `interval`, only when neither the file nor `--interval` sets it |
//! | `RUST_LOG` | `log.level` |
//! | `RETINA_LOG_FORMAT` | `log.format` |
//! | `OTEL_SDK_DISABLED=true` | `export.enabled = false` |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `export.endpoint` (a base URL: for HTTP `/v1/metrics` is appended) |
//! | `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` | `export.endpoint` (used as is) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL`, `..._METRICS_PROTOCOL` | `export.protocol` |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `..._METRICS_HEADERS` | `export.headers` (merged, `k=v,k2=v2`, values percent-decoded) |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `..._METRICS_TIMEOUT` | `export.timeout` (milliseconds) |
//! | `OTEL_EXPORTER_OTLP_COMPRESSION`, `..._METRICS_COMPRESSION` | `export.compression` |
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE`, `..._METRICS_CERTIFICATE` | `export.ca_file` |
//! | `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `..._METRICS_CLIENT_CERTIFICATE` | `export.client_cert_file` |
//! | `OTEL_EXPORTER_OTLP_CLIENT_KEY`, `..._METRICS_CLIENT_KEY` | `export.client_key_file` |
//! | `OTEL_EXPORTER_OTLP_INSECURE`, `..._METRICS_INSECURE` | `export.insecure` |
//! | `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` | `export.temporality` (`lowmemory` = cumulative here) |
//! | `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` | the URL of the log export of `drops.flows` (used as is: no `/v1/logs` appended) |
//! | `OTEL_EXPORTER_OTLP_LOGS_HEADERS` | headers of the log export only (merged over `export.headers`) |
//! | `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT` | the log export's timeout (milliseconds; default `export.timeout`) |
//! | `OTEL_SERVICE_NAME` | `export.service_name` |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `export.resource_attributes` (merged; its `service.name` sets `service_name` unless `OTEL_SERVICE_NAME` is set) |
//! | `OTEL_EXPORTER_PROMETHEUS_HOST`, `OTEL_EXPORTER_PROMETHEUS_PORT` | the host or the port of `prometheus.listen` |
//!
//! A `OTEL_EXPORTER_OTLP_METRICS_*` variable wins over its `OTEL_EXPORTER_OTLP_*`
//! counterpart. The log export shares the metric export's settings (the `..._METRICS_*`
//! ones included) except where a `OTEL_EXPORTER_OTLP_LOGS_*` variable says otherwise. Empty values count as unset. A value that does not parse is an error
//! naming the variable; the value itself is shown only for variables that never hold
//! secrets.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use super::{
    Config, ConfigError, LogFormat, Overridden,
    export::{self, ExportConfig, HTTP_METRICS_PATH, PrometheusConfig, Protocol, has_path},
    limits,
    validate::{UrlProblem, check_log_level, endpoint_url},
};

/// Export interval in milliseconds (OpenTelemetry SDK convention); applies only when
/// neither the file nor `--interval` sets `interval`.
pub(crate) const METRIC_EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
/// Log filter (`info`, `retina_agent=debug,warn`); overrides `log.level`.
pub(crate) const RUST_LOG: &str = "RUST_LOG";
/// Log format (`text` or `json`); overrides `log.format`.
pub(crate) const LOG_FORMAT: &str = "RETINA_LOG_FORMAT";

/// Reads the environment through `env` (injectable for tests).
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`super::load`] and [`super::resolve`].
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Whether a variable is one the configuration (or the exporter settings) reads as text.
fn is_config_var(name: &std::ffi::OsStr) -> bool {
    // `RETINA_CONFIG` and `RETINA_BTF` are paths, which may be any bytes.
    let name = name.as_encoded_bytes();
    name.starts_with(b"OTEL_") || name == RUST_LOG.as_bytes() || name == LOG_FORMAT.as_bytes()
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
pub(crate) fn check_process_env() -> Result<(), ConfigError> {
    check_env_utf8(std::env::vars_os())
}

/// Layers the environment over `config`, recording in `set` each key it sets.
/// `sets_interval`: the file sets `interval` (then [`METRIC_EXPORT_INTERVAL`] does not
/// apply).
pub(super) fn apply(
    config: &mut Config,
    sets_interval: bool,
    env: EnvLookup<'_>,
    set: &mut Overridden,
) -> Result<(), ConfigError> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if !sets_interval && let Some(v) = get(METRIC_EXPORT_INTERVAL) {
        let d = parse_millis(METRIC_EXPORT_INTERVAL, &v)?;
        if d.is_zero() {
            return Err(env_err(METRIC_EXPORT_INTERVAL, "must be greater than zero"));
        }
        if let Err(reason) = limits::duration(d, limits::INTERVAL) {
            return Err(ConfigError::Env {
                name: METRIC_EXPORT_INTERVAL,
                value: Some(v),
                reason,
            });
        }
        config.interval = d;
        set.insert("interval");
    }
    if let Some(v) = get(RUST_LOG) {
        // The same check as the file's `log.level`: a bare word must be a level.
        if let Err(e) = check_log_level(&v) {
            return Err(ConfigError::Env {
                name: RUST_LOG,
                value: Some(v),
                reason: format!("invalid log filter: {e}"),
            });
        }
        config.log.level = v;
        set.insert("log.level");
    }
    if let Some(v) = get(LOG_FORMAT) {
        config.log.format = match v.trim().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::Env {
                    name: LOG_FORMAT,
                    value: Some(v),
                    reason: "expected `text` or `json`".into(),
                });
            }
        };
        set.insert("log.format");
    }
    export(&mut config.export, env, set)?;
    prometheus(&mut config.prometheus, env, set)
}

fn env_err(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        name,
        value: None,
        reason: reason.into(),
    }
}

/// Reads the metrics-specific variable, else the generic one; empty values count as unset.
fn signal_env(
    env: EnvLookup<'_>,
    metrics_var: &'static str,
    generic_var: &'static str,
) -> Option<(&'static str, String)> {
    let get = |var: &'static str| env(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v));
    get(metrics_var).or_else(|| get(generic_var))
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(env_err(var, format!("{other:?} is not true or false"))),
    }
}

fn parse_millis(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let ms: u64 = value.trim().parse().map_err(|_| {
        env_err(
            var,
            format!("{:?} is not a whole number of milliseconds", value.trim()),
        )
    })?;
    Ok(Duration::from_millis(ms))
}

/// Decodes `%XX` escapes (W3C baggage octets, as `OTEL_EXPORTER_OTLP_HEADERS` and
/// `OTEL_RESOURCE_ATTRIBUTES` use). `None` when an escape is malformed or the result is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `key1=value1,key2=value2` (OTLP headers, resource attributes). Errors name the
/// entry's position and key, never its value when `secret`.
fn parse_pairs(
    var: &'static str,
    value: &str,
    secret: bool,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, entry) in value.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((k, v)) = entry.split_once('=') else {
            let shown = if secret {
                format!("entry {}", i + 1)
            } else {
                format!("entry {} ({entry:?})", i + 1)
            };
            return Err(env_err(var, format!("{shown} is not key=value")));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(env_err(var, format!("entry {} has an empty key", i + 1)));
        }
        let v = percent_decode(v.trim()).ok_or_else(|| {
            env_err(
                var,
                format!("the value of {k:?} has a malformed %-escape or is not UTF-8"),
            )
        })?;
        out.push((k.to_string(), v));
    }
    Ok(out)
}

/// Layers the `OTEL_*` exporter variables (see the table above) over `[export]`.
pub(super) fn export(
    c: &mut ExportConfig,
    env: EnvLookup<'_>,
    set: &mut Overridden,
) -> Result<(), ConfigError> {
    if let Some(v) = env("OTEL_SDK_DISABLED").filter(|v| !v.trim().is_empty())
        && parse_bool("OTEL_SDK_DISABLED", &v)?
    {
        c.enabled = false;
        set.insert("export.enabled");
    }
    if let Some((var, v)) = signal_env(
        env,
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ) {
        c.protocol = v.parse().map_err(|e: String| env_err(var, e))?;
        set.insert("export.protocol");
    }
    if let Some(v) = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").filter(|v| !v.trim().is_empty()) {
        c.endpoint = Some(v.trim().to_string());
        set.insert("export.endpoint");
    } else if let Some(v) = env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty()) {
        // A base URL: for OTLP/HTTP the signal path goes after whatever path it has.
        // A base without a path gets it at build time (`resolved_endpoint`), so a later
        // protocol change by a flag still works.
        let base = v.trim();
        c.endpoint = Some(match c.protocol {
            Protocol::HttpProtobuf if has_path(base) => {
                format!("{}{HTTP_METRICS_PATH}", base.trim_end_matches('/'))
            }
            _ => base.to_string(),
        });
        set.insert("export.endpoint");
    }
    // Generic first, then the metrics-specific variable overrides per key. Header names
    // are case-insensitive: kept lowercase so a file's `Authorization` and the
    // environment's `authorization` are one header.
    for var in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    ] {
        if let Some(v) = env(var).filter(|v| !v.trim().is_empty()) {
            for (k, v) in parse_pairs(var, &v, true)? {
                c.headers.retain(|old, _| !old.eq_ignore_ascii_case(&k));
                c.headers.insert(k.to_ascii_lowercase(), v);
                set.insert("export.headers");
            }
        }
    }
    if let Some((var, v)) = signal_env(
        env,
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ) {
        c.timeout = parse_millis(var, &v)?;
        set.insert("export.timeout");
    }
    if let Some((var, v)) = signal_env(
        env,
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
    ) {
        c.compression = v.parse().map_err(|e: String| env_err(var, e))?;
        set.insert("export.compression");
    }
    if let Some((_, v)) = signal_env(
        env,
        "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ) {
        c.ca_file = Some(PathBuf::from(v.trim()));
        set.insert("export.ca_file");
    }
    if let Some((_, v)) = signal_env(
        env,
        "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    ) {
        c.client_cert_file = Some(PathBuf::from(v.trim()));
        set.insert("export.client_cert_file");
    }
    if let Some((_, v)) = signal_env(
        env,
        "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    ) {
        c.client_key_file = Some(PathBuf::from(v.trim()));
        set.insert("export.client_key_file");
    }
    if let Some((var, v)) = signal_env(
        env,
        "OTEL_EXPORTER_OTLP_METRICS_INSECURE",
        "OTEL_EXPORTER_OTLP_INSECURE",
    ) {
        c.insecure = parse_bool(var, &v)?;
        set.insert("export.insecure");
    }
    if let Some(v) =
        env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE").filter(|v| !v.trim().is_empty())
    {
        c.temporality = v
            .parse()
            .map_err(|e: String| env_err("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", e))?;
        set.insert("export.temporality");
    }
    logs(c, env, set)?;
    if let Some(v) = env("OTEL_RESOURCE_ATTRIBUTES").filter(|v| !v.trim().is_empty()) {
        for (k, v) in parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &v, false)? {
            if k == "service.name" {
                c.service_name = v;
                set.insert("export.service_name");
            } else {
                c.resource_attributes.insert(k, v);
                set.insert("export.resource_attributes");
            }
        }
    }
    if let Some(v) = env("OTEL_SERVICE_NAME").filter(|v| !v.trim().is_empty()) {
        c.service_name = v.trim().to_string();
        set.insert("export.service_name");
    }
    Ok(())
}
/// The `OTEL_EXPORTER_OTLP_LOGS_*` variables: the log export's own endpoint, headers and
/// timeout, checked here (the file has no keys for them).
fn logs(c: &mut ExportConfig, env: EnvLookup<'_>, set: &mut Overridden) -> Result<(), ConfigError> {
    const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
    const HEADERS: &str = "OTEL_EXPORTER_OTLP_LOGS_HEADERS";
    const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT";
    let get = |var: &str| env(var).filter(|v| !v.trim().is_empty());
    if let Some(v) = get(ENDPOINT) {
        let url = v.trim();
        match endpoint_url(&c.with_scheme(url)) {
            Ok(_) => {}
            // Not echoed: the userinfo may be a password.
            Err(UrlProblem::Credentials) => {
                return Err(env_err(
                    ENDPOINT,
                    "credentials in the URL are not supported; send them in a header \
                     (OTEL_EXPORTER_OTLP_LOGS_HEADERS)",
                ));
            }
            // The URL is shown: like the metrics' endpoint it must not hold credentials.
            Err(UrlProblem::Other(reason)) => {
                return Err(env_err(ENDPOINT, format!("{url:?}: {reason}")));
            }
        }
        c.logs.endpoint = Some(url.to_string());
        set.insert("export.logs.endpoint");
    }
    if let Some(v) = get(HEADERS) {
        for (k, v) in parse_pairs(HEADERS, &v, true)? {
            let k = k.to_ascii_lowercase();
            export::header(&k, &v).map_err(|e| env_err(HEADERS, e.to_string()))?;
            c.logs.headers.insert(k, v);
            set.insert("export.logs.headers");
        }
    }
    if let Some(v) = get(TIMEOUT) {
        let d = parse_millis(TIMEOUT, &v)?;
        if d.is_zero() {
            return Err(env_err(TIMEOUT, "must be greater than zero"));
        }
        limits::duration(d, limits::EXPORT_TIMEOUT).map_err(|reason| env_err(TIMEOUT, reason))?;
        c.logs.timeout = Some(d);
        set.insert("export.logs.timeout");
    }
    Ok(())
}

/// Applies `OTEL_EXPORTER_PROMETHEUS_HOST` (an IP address) and
/// `OTEL_EXPORTER_PROMETHEUS_PORT` to `prometheus.listen`.
pub(super) fn prometheus(
    p: &mut PrometheusConfig,
    env: EnvLookup<'_>,
    set: &mut Overridden,
) -> Result<(), ConfigError> {
    const HOST: &str = "OTEL_EXPORTER_PROMETHEUS_HOST";
    const PORT: &str = "OTEL_EXPORTER_PROMETHEUS_PORT";
    if let Some(v) = env(HOST).filter(|v| !v.trim().is_empty()) {
        let v = v.trim();
        let ip: IpAddr = match v {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => v
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| env_err(HOST, format!("{v:?} is not an IP address")))?,
        };
        p.listen.set_ip(ip);
        set.insert("prometheus.listen");
    }
    if let Some(v) = env(PORT).filter(|v| !v.trim().is_empty()) {
        let port: u16 = v
            .trim()
            .parse()
            .map_err(|_| env_err(PORT, format!("{:?} is not a port number", v.trim())))?;
        p.listen.set_port(port);
        set.insert("prometheus.listen");
    }
    Ok(())
}
