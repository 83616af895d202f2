//! `[export]` and `[prometheus]`: the structs the configuration file deserializes into.
//! The standard `OTEL_*` variables layered on top of them are read in [`super::env`]; the
//! checks are in [`super::validate`].
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
pub(crate) const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// Default OTLP/HTTP endpoint, metrics path included.
pub(crate) const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318/v1/metrics";
/// Path appended to an OTLP/HTTP base URL.
pub(crate) const HTTP_METRICS_PATH: &str = "/v1/metrics";
/// The OTLP/HTTP path of logs, in place of [`HTTP_METRICS_PATH`] for the drop events.
pub(crate) const HTTP_LOGS_PATH: &str = "/v1/logs";
/// Default Prometheus listen address: loopback only.
pub(crate) const DEFAULT_PROMETHEUS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9465);
/// Default `service.name`.
pub(crate) const DEFAULT_SERVICE_NAME: &str = "retina-agent";

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
    pub(crate) fn as_str(self) -> &'static str {
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

/// Which series the outputs (OTLP and Prometheus alike) carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesPolicy {
    /// Counters that have been zero ever since the agent started are left out until their
    /// first count, as drop series are (`informative`, the default). Gauges are always
    /// exported.
    #[default]
    Informative,
    /// Every series a collector holds (`everything`).
    Everything,
}

impl FromStr for SeriesPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "informative" => Ok(SeriesPolicy::Informative),
            "everything" => Ok(SeriesPolicy::Everything),
            other => Err(format!(
                "unknown series policy {other:?}; expected informative or everything"
            )),
        }
    }
}

/// `[export]`: OTLP push of every metric the agent collects.
///
/// Environment variables (they override the file; flags override them), read by
/// [`super::env`]; a `OTEL_EXPORTER_OTLP_METRICS_*` variable wins over its
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
/// | `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`, `..._LOGS_HEADERS`, `..._LOGS_TIMEOUT` | `logs` (the drop events' log export only; the endpoint used as is) |
/// | `OTEL_SERVICE_NAME` | `service_name` |
/// | `OTEL_RESOURCE_ATTRIBUTES` | `resource_attributes` (merged; its `service.name` sets `service_name` unless `OTEL_SERVICE_NAME` is set) |
///
/// `OTEL_METRIC_EXPORT_INTERVAL` is the daemon's `interval`: see [`super::env`].
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
    #[serde(deserialize_with = "crate::duration::deserialize")]
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
    /// `service.name` (use `service_name`). Keys that would become the same Prometheus
    /// label, or a reserved one, are refused ([`crate::export::check_resource_attributes`]).
    pub resource_attributes: BTreeMap<String, String>,
    /// Which series both outputs carry: `informative` (default: counters still at zero
    /// since the agent started are left out until their first count) or `everything`.
    pub series: SeriesPolicy,
    /// Per metric, the most series it exports (default none: no cap), e.g.
    /// `"retina.nic.driver.stat" = 4000`. Series beyond the cap are folded into one series
    /// with `otel.metric.overflow = true` (the SDK's cardinality limit), logged, and
    /// counted by `retina.agent.export.series.capped`. Applies to Prometheus too.
    pub series_caps: BTreeMap<String, usize>,
    /// The log export's own settings (`drops.flows`), from the `OTEL_EXPORTER_OTLP_LOGS_*`
    /// variables only (the file has no keys for them).
    #[serde(skip)]
    pub logs: LogsSettings,
}

/// What the `OTEL_EXPORTER_OTLP_LOGS_*` variables set for the log export, over the
/// settings it shares with the metric export (see [`ExportConfig::for_logs`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LogsSettings {
    /// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`: the full URL, used as is (no path appended).
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_LOGS_HEADERS`: override the shared headers key by key.
    pub headers: BTreeMap<String, String>,
    /// `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT`.
    pub timeout: Option<Duration>,
}

/// Header values replaced by `<redacted>`.
impl fmt::Debug for LogsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        f.debug_struct("LogsSettings")
            .field("endpoint", &self.endpoint)
            .field("headers (values redacted)", &headers)
            .field("timeout", &self.timeout)
            .finish()
    }
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
            series: SeriesPolicy::Informative,
            series_caps: BTreeMap::new(),
            logs: LogsSettings::default(),
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
            .field("series", &self.series)
            .field("series_caps", &self.series_caps)
            .field("logs", &self.logs)
            .finish()
    }
}

/// `[prometheus]`: a scrape endpoint (`GET /metrics`, text format 0.0.4) serving the same
/// metrics as OTLP.
///
/// Environment: `OTEL_EXPORTER_PROMETHEUS_HOST` and `OTEL_EXPORTER_PROMETHEUS_PORT`
/// replace the host or the port of `listen` (see [`super::env`]).
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

/// A header of `export.headers` that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHeader {
    #[error("{0:?} is not a valid header name")]
    Name(String),
    #[error("the value of {0:?} is not a valid header value (control characters?)")]
    Value(String),
}

/// One header as it is sent: the name lowercased, the value marked sensitive (never
/// logged). The one check of header names and values (`export.headers`, the
/// `OTEL_EXPORTER_OTLP_*HEADERS` variables).
pub(crate) fn header(k: &str, v: &str) -> Result<(http::HeaderName, http::HeaderValue), BadHeader> {
    let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
        .map_err(|_| BadHeader::Name(k.to_string()))?;
    let mut value = http::HeaderValue::from_str(v).map_err(|_| BadHeader::Value(k.to_string()))?;
    value.set_sensitive(true);
    Ok((name, value))
}

impl ExportConfig {
    /// `headers` as request headers (gRPC metadata), the one check of their names and
    /// values: the configuration's checks and the exporters both use it. Names are
    /// lowercased; values are marked sensitive (never logged).
    pub fn header_map(&self) -> Result<http::HeaderMap, BadHeader> {
        let mut map = http::HeaderMap::new();
        for (k, v) in &self.headers {
            let (name, value) = header(k, v)?;
            map.insert(name, value);
        }
        Ok(map)
    }

    /// The URL the exporter sends to: `endpoint` or the protocol's default, with a scheme
    /// (per `insecure`) and, for HTTP, the metrics path when the URL has none.
    pub(crate) fn resolved_endpoint(&self) -> String {
        let raw = match (&self.endpoint, self.protocol) {
            (Some(e), _) if !e.trim().is_empty() => e.trim(),
            (_, Protocol::Grpc) => DEFAULT_GRPC_ENDPOINT,
            (_, Protocol::HttpProtobuf) => DEFAULT_HTTP_ENDPOINT,
        };
        let with_scheme = self.with_scheme(raw);
        match self.protocol {
            Protocol::HttpProtobuf if !has_path(&with_scheme) => {
                format!("{}{HTTP_METRICS_PATH}", with_scheme.trim_end_matches('/'))
            }
            _ => with_scheme,
        }
    }

    /// `raw` with a scheme: its own, else `http://` with `insecure` and `https://` without.
    pub(super) fn with_scheme(&self, raw: &str) -> String {
        if has_scheme(raw) {
            raw.to_string()
        } else if self.insecure {
            format!("http://{raw}")
        } else {
            format!("https://{raw}")
        }
    }

    /// The URL the log exporter sends to: `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` as it is (a
    /// scheme added as for the metrics' URL), else that of the metrics
    /// ([`Self::resolved_endpoint`]), for HTTP with the logs path in place of the metrics
    /// path (a URL with another path is taken as it is).
    pub(crate) fn resolved_logs_endpoint(&self) -> String {
        if let Some(e) = self.logs.endpoint.as_deref().map(str::trim)
            && !e.is_empty()
        {
            return self.with_scheme(e);
        }
        let metrics = self.resolved_endpoint();
        match self.protocol {
            Protocol::HttpProtobuf => match metrics.strip_suffix(HTTP_METRICS_PATH) {
                Some(base) => format!("{base}{HTTP_LOGS_PATH}"),
                None => metrics,
            },
            Protocol::Grpc => metrics,
        }
    }

    /// The settings of the log export: these, with the `OTEL_EXPORTER_OTLP_LOGS_*`
    /// headers merged over the shared ones and the logs' timeout in place of the shared
    /// one. The URL is [`Self::resolved_logs_endpoint`].
    pub(crate) fn for_logs(&self) -> ExportConfig {
        let mut c = self.clone();
        for (k, v) in &self.logs.headers {
            c.headers.retain(|old, _| !old.eq_ignore_ascii_case(k));
            c.headers.insert(k.clone(), v.clone());
        }
        if let Some(t) = self.logs.timeout {
            c.timeout = t;
        }
        c
    }

    /// Header names with their values replaced by `<redacted>`, for logs.
    pub(crate) fn redacted_headers(&self) -> String {
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
pub(super) fn has_path(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.find('/') {
        Some(i) => {
            let path = rest[i..].split(['?', '#']).next().unwrap_or("");
            path != "/" && !path.is_empty()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
