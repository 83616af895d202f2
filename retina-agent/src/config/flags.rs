//! The command line's share of the configuration: the flags that override a key
//! ([`Overrides`]) and the parsers of their values, which hold them to the same rules as
//! the file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{Config, LogFormat, Overridden, export::Protocol, limits};
use crate::collectors::drops::probe::Hook;

/// Values given on the command line; each one that is set wins over file and environment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub(crate) interval: Option<Duration>,
    pub(crate) log_format: Option<LogFormat>,
    pub(crate) drop_map_entries: Option<u32>,
    /// `snapshot --locations`: `drop.location` for this look only.
    pub(crate) drop_locations: bool,
    /// `snapshot --flows`: drop flows for this look only.
    pub(crate) drop_flows: bool,
    /// `--drop-hook`.
    pub(crate) drop_hook: Hook,
    /// `--btf`.
    pub(crate) btf: Option<PathBuf>,
    pub(crate) prometheus_listen: Option<SocketAddr>,
    pub(crate) no_prometheus: bool,
    pub(crate) otlp_endpoint: Option<String>,
    pub(crate) otlp_protocol: Option<Protocol>,
}

impl Overrides {
    /// Applies the flags that are set to `config`, recording in `set` each key they set.
    pub(super) fn apply(&self, config: &mut Config, set: &mut Overridden) {
        if let Some(d) = self.interval {
            config.interval = d;
            set.insert("interval");
        }
        if let Some(f) = self.log_format {
            config.log.format = f;
            set.insert("log.format");
        }
        if let Some(n) = self.drop_map_entries {
            config.drops.map_entries = n;
            set.insert("drops.map_entries");
        }
        if self.drop_locations {
            config.drops.locations = true;
            set.insert("drops.locations");
        }
        if self.drop_flows {
            config.drops.flows = true;
            set.insert("drops.flows");
        }
        config.drops.hook = self.drop_hook;
        config.btf = self.btf.clone();
        if let Some(e) = &self.otlp_endpoint {
            config.export.endpoint = Some(e.clone());
            set.insert("export.endpoint");
        }
        if let Some(p) = self.otlp_protocol {
            config.export.protocol = p;
            set.insert("export.protocol");
        }
        if let Some(addr) = self.prometheus_listen {
            config.prometheus.listen = addr;
            config.prometheus.enabled = true;
            set.insert("prometheus.listen");
            set.insert("prometheus.enabled");
        }
        if self.no_prometheus {
            config.prometheus.enabled = false;
            set.insert("prometheus.enabled");
        }
    }
}

/// [`crate::duration::parse`] within [`limits::INTERVAL`] (the `--interval` flag).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s)?;
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
