//! `[export]` and `[prometheus]` configuration: the structs the configuration file
//! deserializes into, the standard `OTEL_*` environment variables layered on top of them,
//! and validation with reasons a user can act on.
//!
//! Precedence, lowest to highest: built-in defaults, the configuration file, the
//! environment ([`ExportConfig::apply_env`], [`PrometheusConfig::apply_env`]), command-line
//! flags (applied by the caller after `apply_env`).
//!
//! Header values (`headers`, `OTEL_EXPORTER_OTLP_HEADERS`) usually carry credentials: they
//! never appear in `Debug` output, in logs or in error messages.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use serde::Deserialize;

/// Default gRPC endpoint (OTLP/gRPC).
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// Default OTLP/HTTP endpoint, metrics path included.
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318/v1/metrics";
/// Path appended to an OTLP/HTTP base URL.
pub const HTTP_METRICS_PATH: &str = "/v1/metrics";
/// Default Prometheus listen address: loopback only.
pub const DEFAULT_PROMETHEUS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9465);
/// Default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "retina-agent";

/// OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`), default port 4317.
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`), default port 4318.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Err("http/json is not supported; use grpc or http/protobuf".into()),
            other => Err(format!(
                "unknown protocol {other:?}; expected grpc or http/protobuf"
            )),
        }
    }
}

/// Aggregation temporality of exported sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Running totals since the agent started (`cumulative`): a failed export loses
    /// nothing, the next one carries the totals.
    #[default]
    Cumulative,
    /// Change since the previous export (`delta`). A failed export loses its interval.
    Delta,
}

impl FromStr for Temporality {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cumulative" => Ok(Temporality::Cumulative),
            "delta" => Ok(Temporality::Delta),
            // The agent has only asynchronous (observable) counters and gauges, for which
            // the spec's "lowmemory" preference means cumulative.
            "lowmemory" => Ok(Temporality::Cumulative),
            other => Err(format!(
                "unknown temporality {other:?}; expected cumulative or delta"
            )),
        }
    }
}

/// Compression of OTLP request bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            other => Err(format!(
                "unknown compression {other:?}; expected none or gzip"
            )),
        }
    }
}

/// `[export]`: OTLP push of every metric the agent collects.
///
/// Environment variables (they override the file; flags override them), read by
/// [`ExportConfig::apply_env`]; a `OTEL_EXPORTER_OTLP_METRICS_*` variable wins over its
/// `OTEL_EXPORTER_OTLP_*` counterpart:
///
/// | variable | field |
/// |---|---|
/// | `OTEL_SDK_DISABLED=true` | `enabled = false` |
/// | `OTEL_EXPORTER_OTLP_ENDPOINT` | `endpoint` (a base URL: for HTTP `/v1/metrics` is appended) |
/// | `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` | `endpoint` (used as is) |
/// | `OTEL_EXPORTER_OTLP_PROTOCOL`, `..._METRICS_PROTOCOL` | `protocol` |
/// | `OTEL_EXPORTER_OTLP_HEADERS`, `..._METRICS_HEADERS` | `headers` (merged, `k=v,k2=v2`, values percent-decoded) |
/// | `OTEL_EXPORTER_OTLP_TIMEOUT`, `..._METRICS_TIMEOUT` | `timeout` (milliseconds) |
/// | `OTEL_EXPORTER_OTLP_COMPRESSION`, `..._METRICS_COMPRESSION` | `compression` |
/// | `OTEL_EXPORTER_OTLP_CERTIFICATE`, `..._METRICS_CERTIFICATE` | `ca_file` |
/// | `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `..._METRICS_CLIENT_CERTIFICATE` | `client_cert_file` |
/// | `OTEL_EXPORTER_OTLP_CLIENT_KEY`, `..._METRICS_CLIENT_KEY` | `client_key_file` |
/// | `OTEL_EXPORTER_OTLP_INSECURE`, `..._METRICS_INSECURE` | `insecure` |
/// | `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` | `temporality` (`lowmemory` = cumulative here) |
/// | `OTEL_SERVICE_NAME` | `service_name` |
/// | `OTEL_RESOURCE_ATTRIBUTES` | `resource_attributes` (merged; its `service.name` sets `service_name` unless `OTEL_SERVICE_NAME` is set) |
///
/// `OTEL_METRIC_EXPORT_INTERVAL` is the daemon's interval: see [`interval_from_env`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// Push metrics over OTLP (default `true`).
    pub enabled: bool,
    /// Collector URL (default `http://localhost:4317` for gRPC,
    /// `http://localhost:4318/v1/metrics` for HTTP). `http://` is plain text, `https://`
    /// TLS. For HTTP a URL without a path gets `/v1/metrics`; a gRPC URL has no path. A URL
    /// without a scheme (`collector:4317`) is `https://` unless `insecure` is true.
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    pub protocol: Protocol,
    /// Extra request headers or gRPC metadata, e.g. `authorization = "Bearer …"` (default
    /// none). Values are never logged.
    pub headers: BTreeMap<String, String>,
    /// Time one export may take, connecting included (default `10s`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `cumulative` (default) or `delta` sums. Prometheus is always cumulative.
    pub temporality: Temporality,
    /// `none` (default) or `gzip`.
    pub compression: Compression,
    /// PEM file of the CA(s) that sign the collector's certificate; when set, only these are
    /// trusted (default: the system's trust store).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (default none; needs `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file` (default none).
    pub client_key_file: Option<PathBuf>,
    /// For an endpoint without a scheme: plain text instead of TLS (default `false`).
    pub insecure: bool,
    /// `service.name` resource attribute (default `retina-agent`); applies to Prometheus's
    /// `target_info` too.
    pub service_name: String,
    /// Extra resource attributes (default none), e.g. `"deployment.environment.name" =
    /// "prod"`. The agent sets `service.name`, `service.version`, `host.name`, `host.id`,
    /// `host.arch`, `os.type` and `os.version` itself; entries here override all but
    /// `service.name` (use `service_name`).
    pub resource_attributes: BTreeMap<String, String>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            enabled: true,
            endpoint: None,
            protocol: Protocol::Grpc,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            temporality: Temporality::Cumulative,
            compression: Compression::None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            insecure: false,
            service_name: DEFAULT_SERVICE_NAME.to_string(),
            resource_attributes: BTreeMap::new(),
        }
    }
}

/// Header values replaced by `<redacted>`.
impl fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("ExportConfig")
            .field("enabled", &self.enabled)
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("temporality", &self.temporality)
            .field("compression", &self.compression)
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field("insecure", &self.insecure)
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .finish()
    }
}

/// `[prometheus]`: a scrape endpoint (`GET /metrics`, text format 0.0.4) serving the same
/// metrics as OTLP.
///
/// Environment: `OTEL_EXPORTER_PROMETHEUS_HOST` and `OTEL_EXPORTER_PROMETHEUS_PORT`
/// replace the host or the port of `listen` ([`PrometheusConfig::apply_env`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Serve the endpoint (default `true`).
    pub enabled: bool,
    /// Address to listen on (default `127.0.0.1:9465`, loopback only; `0.0.0.0:9465` for
    /// every interface).
    pub listen: SocketAddr,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            enabled: true,
            listen: DEFAULT_PROMETHEUS_LISTEN,
        }
    }
}

/// A configuration value the agent cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable with a value that does not parse. The value is included
    /// only for variables that never hold secrets.
    #[error("environment variable {var}: {reason}")]
    Env { var: &'static str, reason: String },
    /// An unusable setting (`export.endpoint`, `export.headers`, …).
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn env_err(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        var,
        reason: reason.into(),
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Reads the metrics-specific variable, else the generic one; empty values count as unset.
fn signal_env(
    env: &impl Fn(&str) -> Option<String>,
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

/// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds), for the daemon's collection and export
/// interval when neither a flag nor the file sets it. `Ok(None)` when unset or empty;
/// zero is an error.
pub fn interval_from_env(
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Duration>, ConfigError> {
    const VAR: &str = "OTEL_METRIC_EXPORT_INTERVAL";
    match env(VAR).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => {
            let d = parse_millis(VAR, &v)?;
            if d.is_zero() {
                return Err(env_err(VAR, "must be greater than zero"));
            }
            Ok(Some(d))
        }
    }
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

impl ExportConfig {
    /// Layers the standard `OTEL_*` variables (see the type's documentation) over this
    /// configuration. `env` looks a variable up (`|k| std::env::var(k).ok()` in the agent; a
    /// map in tests).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("OTEL_SDK_DISABLED").filter(|v| !v.trim().is_empty())
            && parse_bool("OTEL_SDK_DISABLED", &v)?
        {
            self.enabled = false;
        }
        if let Some((var, v)) = signal_env(
            &env,
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            self.protocol = v.parse().map_err(|e: String| env_err(var, e))?;
        }
        if let Some(v) = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").filter(|v| !v.trim().is_empty())
        {
            self.endpoint = Some(v.trim().to_string());
        } else if let Some(v) = env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty())
        {
            // A base URL: for OTLP/HTTP the signal path goes after whatever path it has.
            // A base without a path gets it at build time (`resolved_endpoint`), so a later
            // protocol change by a flag still works.
            let base = v.trim();
            self.endpoint = Some(match self.protocol {
                Protocol::HttpProtobuf if has_path(base) => {
                    format!("{}{HTTP_METRICS_PATH}", base.trim_end_matches('/'))
                }
                _ => base.to_string(),
            });
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
                    self.headers.retain(|old, _| !old.eq_ignore_ascii_case(&k));
                    self.headers.insert(k.to_ascii_lowercase(), v);
                }
            }
        }
        if let Some((var, v)) = signal_env(
            &env,
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            self.timeout = parse_millis(var, &v)?;
        }
        if let Some((var, v)) = signal_env(
            &env,
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ) {
            self.compression = v.parse().map_err(|e: String| env_err(var, e))?;
        }
        if let Some((_, v)) = signal_env(
            &env,
            "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ) {
            self.ca_file = Some(PathBuf::from(v.trim()));
        }
        if let Some((_, v)) = signal_env(
            &env,
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ) {
            self.client_cert_file = Some(PathBuf::from(v.trim()));
        }
        if let Some((_, v)) = signal_env(
            &env,
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ) {
            self.client_key_file = Some(PathBuf::from(v.trim()));
        }
        if let Some((var, v)) = signal_env(
            &env,
            "OTEL_EXPORTER_OTLP_METRICS_INSECURE",
            "OTEL_EXPORTER_OTLP_INSECURE",
        ) {
            self.insecure = parse_bool(var, &v)?;
        }
        if let Some(v) = env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
            .filter(|v| !v.trim().is_empty())
        {
            self.temporality = v.parse().map_err(|e: String| {
                env_err("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", e)
            })?;
        }
        if let Some(v) = env("OTEL_RESOURCE_ATTRIBUTES").filter(|v| !v.trim().is_empty()) {
            for (k, v) in parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &v, false)? {
                if k == "service.name" {
                    self.service_name = v;
                } else {
                    self.resource_attributes.insert(k, v);
                }
            }
        }
        if let Some(v) = env("OTEL_SERVICE_NAME").filter(|v| !v.trim().is_empty()) {
            self.service_name = v.trim().to_string();
        }
        Ok(())
    }

    /// The URL the exporter sends to: `endpoint` or the protocol's default, with a scheme
    /// (per `insecure`) and, for HTTP, the metrics path when the URL has none.
    pub fn resolved_endpoint(&self) -> String {
        let raw = match (&self.endpoint, self.protocol) {
            (Some(e), _) if !e.trim().is_empty() => e.trim(),
            (_, Protocol::Grpc) => DEFAULT_GRPC_ENDPOINT,
            (_, Protocol::HttpProtobuf) => DEFAULT_HTTP_ENDPOINT,
        };
        let with_scheme = if has_scheme(raw) {
            raw.to_string()
        } else if self.insecure {
            format!("http://{raw}")
        } else {
            format!("https://{raw}")
        };
        match self.protocol {
            Protocol::HttpProtobuf if !has_path(&with_scheme) => {
                format!("{}{HTTP_METRICS_PATH}", with_scheme.trim_end_matches('/'))
            }
            _ => with_scheme,
        }
    }

    /// Checks everything that can be checked without connecting: the endpoint's syntax and
    /// scheme, header names and values, the timeout, and that TLS files are readable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self
            .endpoint
            .as_deref()
            .is_some_and(|e| e.trim().is_empty())
        {
            return Err(invalid(
                "export.endpoint",
                "is blank; remove the key for the default endpoint",
            ));
        }
        let url = self.resolved_endpoint();
        let bad = |reason: String| invalid("export.endpoint", format!("{url:?}: {reason}"));
        if url.contains('#') {
            return Err(bad("a fragment (#...) is not allowed".into()));
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(other) => return Err(bad(format!("scheme {other:?} is not http or https"))),
            None => return Err(bad("no scheme (http:// or https://)".into())),
        }
        let Some(authority) = uri.authority() else {
            return Err(bad("no host".into()));
        };
        if authority.as_str().contains('@') {
            // Not echoed: the userinfo may be a password.
            return Err(invalid(
                "export.endpoint",
                "credentials in the URL are not supported; send them in a header \
                 (export.headers or OTEL_EXPORTER_OTLP_HEADERS)",
            ));
        }
        if authority.host().is_empty() {
            return Err(bad("no host".into()));
        }
        if authority.port_u16() == Some(0) {
            return Err(bad("port 0".into()));
        }
        // `http` drops a port that does not fit 16 bits (the URL would then go to the
        // scheme's port): read it from the text.
        let port_text = authority
            .as_str()
            .rsplit_once(':')
            .filter(|(host, _)| !host.starts_with('[') || host.ends_with(']'))
            .map(|(_, port)| port);
        if let Some(p) = port_text
            && !p.is_empty()
            && p.parse::<u16>().is_err()
        {
            return Err(bad("the port is not a number from 1 to 65535".into()));
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed".into()));
        }
        if self.protocol == Protocol::Grpc && uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad(format!(
                "a gRPC endpoint has no path (got {:?}); for OTLP/HTTP set protocol = \"http/protobuf\"",
                uri.path()
            )));
        }
        if self.timeout.is_zero() {
            return Err(invalid("export.timeout", "must be greater than zero"));
        }
        crate::config::limits::duration(self.timeout, crate::config::limits::EXPORT_TIMEOUT)
            .map_err(|reason| invalid("export.timeout", reason))?;
        for (k, v) in &self.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(invalid(
                    "export.headers",
                    format!("{k:?} is not a valid header name"),
                ));
            }
            if http::HeaderValue::from_str(v).is_err() {
                return Err(invalid(
                    "export.headers",
                    format!("the value of {k:?} is not a valid header value (control characters?)"),
                ));
            }
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "export.client_key_file",
                    "client_cert_file is set without client_key_file",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "export.client_cert_file",
                    "client_key_file is set without client_cert_file",
                ));
            }
            _ => {}
        }
        for (key, path) in [
            ("export.ca_file", &self.ca_file),
            ("export.client_cert_file", &self.client_cert_file),
            ("export.client_key_file", &self.client_key_file),
        ] {
            if let Some(path) = path
                && let Err(e) = crate::fsutil::read_regular(path, crate::fsutil::PEM_MAX_BYTES)
            {
                return Err(invalid(key, format!("{}: {e}", path.display())));
            }
        }
        if uri.scheme_str() == Some("http")
            && (self.ca_file.is_some() || self.client_cert_file.is_some())
        {
            return Err(bad(
                "TLS files are configured but the endpoint is http://; use https://".into(),
            ));
        }
        Ok(())
    }

    /// Header names with their values replaced by `<redacted>`, for logs.
    pub fn redacted_headers(&self) -> String {
        let names: Vec<String> = self
            .headers
            .keys()
            .map(|k| format!("{k}=<redacted>"))
            .collect();
        names.join(",")
    }
}

/// Whether `url` has a scheme (`://` before any path, query or fragment).
fn has_scheme(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains(['/', '?', '#']))
}

/// Whether `url` has a path other than `/`.
fn has_path(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.find('/') {
        Some(i) => {
            let path = rest[i..].split(['?', '#']).next().unwrap_or("");
            path != "/" && !path.is_empty()
        }
        None => false,
    }
}

impl PrometheusConfig {
    /// Applies `OTEL_EXPORTER_PROMETHEUS_HOST` (an IP address) and
    /// `OTEL_EXPORTER_PROMETHEUS_PORT` to `listen`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        const HOST: &str = "OTEL_EXPORTER_PROMETHEUS_HOST";
        const PORT: &str = "OTEL_EXPORTER_PROMETHEUS_PORT";
        if let Some(v) = env(HOST).filter(|v| !v.trim().is_empty()) {
            let v = v.trim();
            let ip: IpAddr = match v {
                "localhost" => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                _ => v
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| env_err(HOST, format!("{v:?} is not an IP address")))?,
            };
            self.listen.set_ip(ip);
        }
        if let Some(v) = env(PORT).filter(|v| !v.trim().is_empty()) {
            let port: u16 = v
                .trim()
                .parse()
                .map_err(|_| env_err(PORT, format!("{:?} is not a port number", v.trim())))?;
            self.listen.set_port(port);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn applied(pairs: &[(&str, &str)]) -> ExportConfig {
        let mut c = ExportConfig::default();
        c.apply_env(env(pairs)).unwrap();
        c
    }

    #[test]
    fn defaults() {
        let c = ExportConfig::default();
        assert!(c.enabled);
        assert_eq!(c.resolved_endpoint(), "http://localhost:4317");
        c.validate().unwrap();
        let http = ExportConfig {
            protocol: Protocol::HttpProtobuf,
            ..ExportConfig::default()
        };
        assert_eq!(http.resolved_endpoint(), "http://localhost:4318/v1/metrics");
        http.validate().unwrap();
        let p = PrometheusConfig::default();
        assert!(p.enabled);
        assert_eq!(p.listen.to_string(), "127.0.0.1:9465");
    }

    #[test]
    fn deserializes_with_humantime_and_protocol_names() {
        #[derive(Deserialize)]
        struct File {
            export: ExportConfig,
            prometheus: PrometheusConfig,
        }
        let f: File = toml::from_str(
            r#"
            [export]
            endpoint = "https://otel.example:4318"
            protocol = "http/protobuf"
            timeout = "2s 500ms"
            temporality = "delta"
            headers = { authorization = "Bearer s3cret" }
            [prometheus]
            listen = "0.0.0.0:9999"
            "#,
        )
        .unwrap();
        assert_eq!(f.export.protocol, Protocol::HttpProtobuf);
        assert_eq!(f.export.timeout, Duration::from_millis(2500));
        assert_eq!(f.export.temporality, Temporality::Delta);
        assert_eq!(
            f.export.resolved_endpoint(),
            "https://otel.example:4318/v1/metrics"
        );
        assert_eq!(f.prometheus.listen.to_string(), "0.0.0.0:9999");
        assert!(f.prometheus.enabled);
        let dbg = format!("{:?}", f.export);
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("authorization"), "{dbg}");
        assert!(toml::from_str::<File>("[export]\nbogus = 1\n[prometheus]\n").is_err());
    }

    #[test]
    fn env_overrides_and_precedence() {
        let c = applied(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://metrics:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
                "b=3, Authorization=Bearer%20tok",
            ),
            ("OTEL_SERVICE_NAME", "svc"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=ignored,k8s.node.name=n1",
            ),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ]);
        assert_eq!(c.endpoint.as_deref(), Some("http://metrics:4317"));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.headers["a"], "1");
        assert_eq!(c.headers["b"], "3");
        assert_eq!(c.headers["authorization"], "Bearer tok");
        assert_eq!(c.service_name, "svc");
        assert_eq!(c.resource_attributes["k8s.node.name"], "n1");
        assert!(!c.resource_attributes.contains_key("service.name"));
        assert_eq!(c.temporality, Temporality::Delta);
        assert_eq!(c.compression, Compression::Gzip);
        let c = applied(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs")]);
        assert_eq!(c.service_name, "from-attrs");
    }

    #[test]
    fn generic_endpoint_is_a_base_for_http() {
        let c = applied(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ]);
        assert_eq!(c.resolved_endpoint(), "http://c:4318/v1/metrics");
        let c = applied(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://gw.example/otlp/"),
        ]);
        assert_eq!(c.resolved_endpoint(), "https://gw.example/otlp/v1/metrics");
        // The signal-specific variable is used as is.
        let c = applied(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "https://gw.example/custom",
            ),
        ]);
        assert_eq!(c.resolved_endpoint(), "https://gw.example/custom");
        // A protocol switched after the environment (a flag) still gets the path.
        let mut c = applied(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        c.protocol = Protocol::HttpProtobuf;
        assert_eq!(c.resolved_endpoint(), "http://c:4318/v1/metrics");
    }

    #[test]
    fn schemeless_endpoint_uses_insecure() {
        let mut c = applied(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]);
        assert_eq!(c.resolved_endpoint(), "https://collector:4317");
        c.apply_env(env(&[("OTEL_EXPORTER_OTLP_INSECURE", "true")]))
            .unwrap();
        assert_eq!(c.resolved_endpoint(), "http://collector:4317");
        c.validate().unwrap();
    }

    #[test]
    fn bad_env_values_name_the_variable_but_never_a_header_value() {
        let mut c = ExportConfig::default();
        let e = c
            .apply_env(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && e.contains("not supported"),
            "{e}"
        );
        let e = c
            .apply_env(env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("milliseconds"), "{e}");
        let e = c
            .apply_env(env(&[("OTEL_EXPORTER_OTLP_HEADERS", "Bearer-s3cret")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_HEADERS") && !e.contains("s3cret"),
            "{e}"
        );
        let e = c
            .apply_env(env(&[("OTEL_EXPORTER_OTLP_HEADERS", "k=%zzs3cret")]))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(interval_from_env(env(&[("OTEL_METRIC_EXPORT_INTERVAL", "0")])).is_err());
        assert_eq!(
            interval_from_env(env(&[("OTEL_METRIC_EXPORT_INTERVAL", "2500")])).unwrap(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(interval_from_env(env(&[])).unwrap(), None);
        let c = applied(&[("OTEL_SDK_DISABLED", "true")]);
        assert!(!c.enabled);
    }

    #[test]
    fn validation_reasons() {
        let check = |endpoint: &str, protocol: Protocol| {
            ExportConfig {
                endpoint: Some(endpoint.into()),
                protocol,
                ..ExportConfig::default()
            }
            .validate()
            .map_err(|e| e.to_string())
        };
        check("http://127.0.0.1:4317", Protocol::Grpc).unwrap();
        check("https://c.example", Protocol::HttpProtobuf).unwrap();
        let e = check("http://c:4318/v1/metrics", Protocol::Grpc).unwrap_err();
        assert!(e.contains("gRPC endpoint has no path"), "{e}");
        let e = check("ftp://c:21", Protocol::Grpc).unwrap_err();
        assert!(e.contains("not http or https"), "{e}");
        let e = check("http://user:pw@c:4317", Protocol::Grpc).unwrap_err();
        assert!(e.contains("credentials") && !e.contains("pw"), "{e}");
        let e = check("http://c:0", Protocol::Grpc).unwrap_err();
        assert!(e.contains("port 0"), "{e}");
        let e = check("http://", Protocol::Grpc).unwrap_err();
        assert!(e.contains("export.endpoint"), "{e}");
        let mut c = ExportConfig::default();
        c.headers.insert("x-token".into(), "bad\nvalue".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("x-token") && !e.contains("bad"), "{e}");
        let c = ExportConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            endpoint: Some("https://c:4317".into()),
            ..ExportConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("export.ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let c = ExportConfig {
            enabled: false,
            endpoint: Some("garbage://".into()),
            ..ExportConfig::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn prometheus_env() {
        let mut p = PrometheusConfig::default();
        p.apply_env(env(&[
            ("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", "9100"),
        ]))
        .unwrap();
        assert_eq!(p.listen.to_string(), "0.0.0.0:9100");
        assert!(
            p.apply_env(env(&[("OTEL_EXPORTER_PROMETHEUS_PORT", "x")]))
                .is_err()
        );
    }
}
