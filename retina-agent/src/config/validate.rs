//! The checks of a resolved configuration (file, environment and flags applied), run
//! once, for what deserialization cannot check: value ranges, the log filter, the
//! exporter's endpoint, headers and TLS files. Patterns need no check here: they are
//! compiled when read ([`crate::filter::Pattern`]).

use super::{
    Config,
    error::Violation,
    export::{ExportConfig, Protocol},
    limits,
};

/// The keys the endpoint URL is made of ([`ExportConfig::resolved_endpoint`]).
const URL: &[&str] = &["export.endpoint", "export.protocol", "export.insecure"];
const ENDPOINT: &[&str] = &["export", "endpoint"];
const TIMEOUT: &[&str] = &["export", "timeout"];
const HEADERS: &[&str] = &["export", "headers"];
const PAIR: &[&str] = &["export.client_cert_file", "export.client_key_file"];
const URL_AND_TLS: &[&str] = &[
    "export.endpoint",
    "export.protocol",
    "export.insecure",
    "export.ca_file",
    "export.client_cert_file",
];

/// The first problem of `config`, if any.
pub(super) fn config(config: &Config) -> Result<(), Violation> {
    if let Err(reason) = check_log_level(&config.log.level) {
        return Err(Violation::at(
            &["log", "level"],
            format!(
                "invalid log filter {:?}: {reason} (examples: info, debug, \"info,retina_agent=debug\")",
                config.log.level
            ),
        ));
    }
    limits::duration(config.interval, limits::INTERVAL)
        .map_err(|r| Violation::at(&["interval"], r))?;
    if config.drops.map_entries == 0 {
        return Err(Violation::at(
            &["drops", "map_entries"],
            "must be at least 1",
        ));
    }
    if config.drops.locations_capacity == 0 {
        return Err(Violation::at(
            &["drops", "locations_capacity"],
            "must be at least 1",
        ));
    }
    limits::size(config.drops.map_entries, limits::MAP_ENTRIES)
        .map_err(|r| Violation::at(&["drops", "map_entries"], r))?;
    limits::size(config.drops.flows_capacity, limits::FLOWS_CAPACITY)
        .map_err(|r| Violation::at(&["drops", "flows_capacity"], r))?;
    limits::size(
        config.drops.flow_events_per_second,
        limits::FLOW_EVENTS_PER_SECOND,
    )
    .map_err(|r| Violation::at(&["drops", "flow_events_per_second"], r))?;
    limits::size(config.drops.flow_snaplen, limits::FLOW_SNAPLEN)
        .map_err(|r| Violation::at(&["drops", "flow_snaplen"], r))?;
    let e = &config.ethtool;
    limits::duration(e.link_state_interval, limits::LINK_STATE_INTERVAL)
        .map_err(|r| Violation::at(&["ethtool", "link_state_interval"], r))?;
    limits::size(e.unsupported_retry_cycles, limits::UNSUPPORTED_RETRY_CYCLES)
        .map_err(|r| Violation::at(&["ethtool", "unsupported_retry_cycles"], r))?;
    limits::size(e.max_interfaces, limits::MAX_INTERFACES)
        .map_err(|r| Violation::at(&["ethtool", "max_interfaces"], r))?;
    // Checked with OTLP off too: the Prometheus `target_info` carries them.
    crate::export::check_resource_attributes(&config.export.resource_attributes)
        .map_err(|r| Violation::at(&["export", "resource_attributes"], r))?;
    series_caps(&config.export)?;
    export(&config.export)
}

/// `export.series_caps`: both outputs apply them, so they are checked even with OTLP off.
fn series_caps(c: &ExportConfig) -> Result<(), Violation> {
    for (metric, &cap) in &c.series_caps {
        limits::size(cap, limits::SERIES_CAP).map_err(|r| {
            Violation::at(
                &["export", "series_caps"],
                format!("{metric:?}: {r} (remove the key for no cap)"),
            )
        })?;
    }
    Ok(())
}

/// A level or `tracing` filter directives. Stricter than `EnvFilter` on one point: a bare
/// word must be a level (`EnvFilter` would take `inf` as a target name).
pub(super) fn check_log_level(level: &str) -> Result<(), String> {
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

/// Why a URL cannot be an OTLP endpoint ([`endpoint_url`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum UrlProblem {
    /// It holds a userinfo (`user:password@`): the reason must not echo the URL.
    Credentials,
    /// Anything else, as a phrase (the caller adds the URL).
    Other(String),
}

/// `url` (with its scheme) as an OTLP endpoint of any signal and protocol: http or https,
/// a host, a port from 1 to 65535 if any, no credentials, query or fragment. The one check
/// of `export.endpoint` and of `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`.
pub(super) fn endpoint_url(url: &str) -> Result<http::Uri, UrlProblem> {
    let bad = |reason: &str| UrlProblem::Other(reason.to_string());
    if url.contains('#') {
        return Err(bad("a fragment (#...) is not allowed"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| UrlProblem::Other(e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(UrlProblem::Other(format!(
                "scheme {other:?} is not http or https"
            )));
        }
        None => return Err(bad("no scheme (http:// or https://)")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.as_str().contains('@') {
        return Err(UrlProblem::Credentials);
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.port_u16() == Some(0) {
        return Err(bad("port 0"));
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
        return Err(bad("the port is not a number from 1 to 65535"));
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not allowed"));
    }
    Ok(uri)
}

/// `[export]`: everything that can be checked without connecting: the endpoint's syntax
/// and scheme, header names and values, the timeout, and that TLS files are readable.
pub(super) fn export(c: &ExportConfig) -> Result<(), Violation> {
    if !c.enabled {
        return Ok(());
    }
    if c.endpoint.as_deref().is_some_and(|e| e.trim().is_empty()) {
        return Err(Violation::at(
            ENDPOINT,
            "is blank; remove the key for the default endpoint",
        ));
    }
    let url = c.resolved_endpoint();
    let bad = |reason: String| Violation::of(ENDPOINT, URL, format!("{url:?}: {reason}"));
    let uri = match endpoint_url(&url) {
        Ok(uri) => uri,
        Err(UrlProblem::Credentials) => {
            return Err(Violation::of(
                ENDPOINT,
                URL,
                "credentials in the URL are not supported; send them in a header \
                 (export.headers or OTEL_EXPORTER_OTLP_HEADERS)",
            ));
        }
        Err(UrlProblem::Other(reason)) => return Err(bad(reason)),
    };
    if c.protocol == Protocol::Grpc && uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad(format!(
            "a gRPC endpoint has no path (got {:?}); for OTLP/HTTP set protocol = \"http/protobuf\"",
            uri.path()
        )));
    }
    if c.timeout.is_zero() {
        return Err(Violation::at(TIMEOUT, "must be greater than zero"));
    }
    limits::duration(c.timeout, limits::EXPORT_TIMEOUT)
        .map_err(|reason| Violation::at(TIMEOUT, reason))?;
    c.header_map()
        .map_err(|e| Violation::at(HEADERS, e.to_string()))?;
    match (&c.client_cert_file, &c.client_key_file) {
        (Some(_), None) => {
            return Err(Violation::of(
                &["export", "client_key_file"],
                PAIR,
                "client_cert_file is set without client_key_file",
            ));
        }
        (None, Some(_)) => {
            return Err(Violation::of(
                &["export", "client_cert_file"],
                PAIR,
                "client_key_file is set without client_cert_file",
            ));
        }
        _ => {}
    }
    for (key, path) in [
        (&["export", "ca_file"], &c.ca_file),
        (&["export", "client_cert_file"], &c.client_cert_file),
        (&["export", "client_key_file"], &c.client_key_file),
    ] {
        if let Some(path) = path
            && let Err(e) = crate::fsutil::read_regular(path, crate::fsutil::PEM_MAX_BYTES)
        {
            return Err(Violation::at(key, format!("{}: {e}", path.display())));
        }
    }
    if uri.scheme_str() == Some("http") && (c.ca_file.is_some() || c.client_cert_file.is_some()) {
        return Err(Violation::of(
            ENDPOINT,
            URL_AND_TLS,
            format!("{url:?}: TLS files are configured but the endpoint is http://; use https://"),
        ));
    }
    Ok(())
}
