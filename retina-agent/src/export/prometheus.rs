//! The Prometheus scrape endpoint: `GET /metrics` in the text exposition format (0.0.4),
//! served by a minimal HTTP/1.1 server (hyper) on the daemon's runtime.
//!
//! A scrape reads the collectors' current values and writes the text straight into a
//! buffer kept for the next scrape (no intermediate registry or aggregation). Names
//! follow the OpenTelemetry-to-Prometheus rules: dots become underscores, the unit's
//! word is appended (`By` → `_bytes`, `s` → `_seconds`, `bit/s` → `_bits_per_second`;
//! `{annotations}` and `1` on counters add nothing) unless the name ends with it already,
//! counters end in `_total`; attribute keys become labels the same way. The resource is
//! served as `target_info`.
//!
//! Bounded everywhere: request headers must arrive within [`HEADER_TIMEOUT`] and fit in
//! [`MAX_HEADER_BYTES`]; at most [`MAX_CONNECTIONS`] connections are served at once (more
//! are closed on accept); a connection lives at most [`CONNECTION_LIFETIME`]. Other paths
//! get 404, other methods 405.

use std::{
    convert::Infallible,
    io::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use opentelemetry::{KeyValue, Value};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};

use super::{
    ExportError, SharedAgent,
    catalog::{Catalog, Grouper, counter_value, trim},
    selfmetrics::ExportStats,
};
use crate::metrics::{Kind, Metric, Number};

pub const METRICS_PATH: &str = "/metrics";
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_CONNECTIONS: usize = 32;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// The running endpoint; stops accepting when stopped or dropped.
pub(super) struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `listen` and serves on the current runtime.
    pub(super) async fn bind(listen: SocketAddr, scraper: Scraper) -> Result<Server, ExportError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ExportError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(listen);
        let task = tokio::spawn(serve(listener, Arc::new(scraper)));
        Ok(Server { addr, task })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, scraper: Arc<Scraper>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::debug!("Prometheus endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "Prometheus endpoint: too many connections; closing");
            continue;
        };
        let scraper = scraper.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| handle(req, scraper.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "Prometheus endpoint: {e}"),
            }
        });
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    scraper: Arc<Scraper>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != METRICS_PATH {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    // Reading the values locks the agent, which a collection cycle holds: off the runtime.
    match tokio::task::spawn_blocking(move || scraper.scrape()).await {
        Ok(body) => {
            let mut r = Response::new(Full::new(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        Err(e) => {
            tracing::warn!("Prometheus endpoint: scrape: {e}");
            Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n"))
        }
    }
}

/// The Prometheus unit word for an OpenTelemetry (UCUM) unit; `None` adds nothing.
fn unit_word(unit: &str, kind: Kind) -> Option<&'static str> {
    Some(match unit {
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "bit/s" => "bits_per_second",
        "By/s" => "bytes_per_second",
        "%" => "percent",
        // A dimensionless counter counts things: `_ratio_total` would mislead.
        "1" if kind == Kind::Gauge => "ratio",
        _ => return None,
    })
}

/// The Prometheus family name of `m`.
pub fn family_name(m: &Metric) -> String {
    let mut bytes = Vec::with_capacity(m.name.len() + 24);
    put_name(&mut bytes, m.name);
    // Only ASCII was written.
    let mut name = String::from_utf8_lossy(&bytes).into_owned();
    if let Some(word) = unit_word(m.unit, m.kind)
        && !name.strip_suffix(word).is_some_and(|h| h.ends_with('_'))
    {
        name.push('_');
        name.push_str(word);
    }
    if m.kind == Kind::Counter && !name.ends_with("_total") {
        name.push_str("_total");
    }
    name
}

/// Writes `s` with `\`, `"` (when `quote`) and newlines escaped.
fn put_escaped(out: &mut Vec<u8>, s: &str, quote: bool) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}

/// Writes a metric or label name: `name` with each byte Prometheus cannot hold as `_`
/// (and a `_` before a leading digit).
fn put_name(out: &mut Vec<u8>, key: &str) {
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push(b'_');
    }
    out.extend(key.bytes().map(|b| {
        if b.is_ascii_alphanumeric() || b == b'_' {
            b
        } else {
            b'_'
        }
    }));
}

fn put_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{v}");
    }
}

/// Writes one sample line: `name{labels} value`.
fn put_sample(out: &mut Vec<u8>, name: &str, attrs: &[KeyValue], value: Number, kind: Kind) {
    let value = match (kind, value) {
        (Kind::Counter, v) => match counter_value(v) {
            Some(v) => Number::U64(v),
            None => return,
        },
        (Kind::Gauge, v) => v,
    };
    out.extend_from_slice(name.as_bytes());
    if !attrs.is_empty() {
        out.push(b'{');
        for (i, kv) in attrs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            put_name(out, kv.key.as_str());
            out.extend_from_slice(b"=\"");
            match &kv.value {
                Value::String(s) => put_escaped(out, s.as_str(), true),
                Value::I64(v) => {
                    let _ = write!(out, "{v}");
                }
                Value::F64(v) => put_f64(out, *v),
                Value::Bool(v) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
                _ => {}
            }
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.push(b' ');
    match value {
        Number::U64(v) => {
            let _ = write!(out, "{v}");
        }
        Number::F64(v) => put_f64(out, v),
    }
    out.push(b'\n');
}

/// One metric's `# HELP` and `# TYPE` lines, written once at start.
fn header(m: &Metric, name: &str) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"# HELP ");
    h.extend_from_slice(name.as_bytes());
    h.push(b' ');
    put_escaped(&mut h, m.description, false);
    h.extend_from_slice(b"\n# TYPE ");
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(match m.kind {
        Kind::Counter => b" counter\n",
        Kind::Gauge => b" gauge\n",
    });
    h
}

/// The `target_info` family: the resource's attributes as labels, value 1.
fn target_info(resource: &[KeyValue]) -> Vec<u8> {
    let mut t = b"# HELP target_info Target metadata\n# TYPE target_info gauge\n".to_vec();
    put_sample(&mut t, "target_info", resource, Number::U64(1), Kind::Gauge);
    t
}

/// What a scrape reads and the buffers it reuses.
pub(super) struct Scraper {
    agent: SharedAgent,
    catalog: Arc<Catalog>,
    export_stats: Option<Arc<ExportStats>>,
    /// Per metric: family name, and the `# HELP`/`# TYPE` lines.
    families: Vec<(String, Vec<u8>)>,
    target_info: Vec<u8>,
    buffers: Mutex<(Grouper, Vec<u8>)>,
}

impl Scraper {
    pub(super) fn new(
        agent: SharedAgent,
        catalog: Arc<Catalog>,
        export_stats: Option<Arc<ExportStats>>,
        resource: &[KeyValue],
    ) -> Scraper {
        let families = catalog
            .metrics()
            .iter()
            .map(|m| {
                let name = family_name(m);
                let h = header(m, &name);
                (name, h)
            })
            .collect();
        Scraper {
            agent,
            catalog,
            export_stats,
            families,
            target_info: target_info(resource),
            buffers: Mutex::new((Grouper::default(), Vec::new())),
        }
    }

    /// The whole exposition of the current values.
    pub(super) fn scrape(&self) -> Bytes {
        let mut bufs = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let (grouper, out) = &mut *bufs;
        out.clear();
        {
            let guard = self.agent.lock();
            if let Some(agent) = guard.as_ref() {
                grouper.fill(
                    &self.catalog,
                    agent,
                    self.export_stats.as_deref(),
                    |i, m, attrs, value, buf| {
                        put_sample(buf, &self.families[i].0, attrs, value, m.kind)
                    },
                );
            }
        }
        for (i, (_, head)) in self.families.iter().enumerate() {
            let lines = grouper.get(i);
            if !lines.is_empty() {
                out.extend_from_slice(head);
                out.extend_from_slice(lines);
            }
        }
        out.extend_from_slice(&self.target_info);
        grouper.trim();
        let body = Bytes::copy_from_slice(out);
        trim(out);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &'static str, unit: &'static str, kind: Kind) -> Metric {
        Metric {
            name,
            unit,
            description: "d",
            kind,
        }
    }

    #[test]
    fn family_names_follow_the_otel_rules() {
        let cases = [
            (
                "retina.drop.bytes",
                "By",
                Kind::Counter,
                "retina_drop_bytes_total",
            ),
            (
                "retina.drop.count",
                "{packet}",
                Kind::Counter,
                "retina_drop_count_total",
            ),
            (
                "retina.netstat.counter",
                "1",
                Kind::Counter,
                "retina_netstat_counter_total",
            ),
            ("retina.x.level", "1", Kind::Gauge, "retina_x_level_ratio"),
            (
                "system.network.io",
                "By",
                Kind::Counter,
                "system_network_io_bytes_total",
            ),
            (
                "retina.agent.collect.duration",
                "s",
                Kind::Gauge,
                "retina_agent_collect_duration_seconds",
            ),
            (
                "retina.nic.link.speed",
                "bit/s",
                Kind::Gauge,
                "retina_nic_link_speed_bits_per_second",
            ),
            ("x_seconds", "s", Kind::Gauge, "x_seconds"),
            ("xbytes", "By", Kind::Gauge, "xbytes_bytes"),
            ("a-b.c_total", "{x}", Kind::Counter, "a_b_c_total"),
            ("9lives", "", Kind::Gauge, "_9lives"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                family_name(&metric(name, unit, kind)),
                want,
                "{name} {unit}"
            );
        }
    }

    fn line(attrs: &[KeyValue], value: Number, kind: Kind) -> String {
        let mut out = Vec::new();
        put_sample(&mut out, "m", attrs, value, kind);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn samples_escape_labels_and_format_values() {
        assert_eq!(line(&[], Number::U64(7), Kind::Counter), "m 7\n");
        assert_eq!(
            line(
                &[
                    KeyValue::new("network.interface.name", "a\"b\\c\nd"),
                    KeyValue::new("idx", 3i64),
                    KeyValue::new("up", true),
                ],
                Number::F64(0.25),
                Kind::Gauge
            ),
            "m{network_interface_name=\"a\\\"b\\\\c\\nd\",idx=\"3\",up=\"true\"} 0.25\n"
        );
        assert_eq!(line(&[], Number::F64(1e10), Kind::Gauge), "m 10000000000\n");
        assert_eq!(line(&[], Number::F64(f64::NAN), Kind::Gauge), "m NaN\n");
        assert_eq!(
            line(&[], Number::F64(f64::INFINITY), Kind::Gauge),
            "m +Inf\n"
        );
        assert_eq!(
            line(&[], Number::F64(f64::NEG_INFINITY), Kind::Gauge),
            "m -Inf\n"
        );
        // A counter value that cannot be one is left out, not exported as garbage.
        assert_eq!(line(&[], Number::F64(-1.0), Kind::Counter), "");
        assert_eq!(line(&[], Number::F64(2.9), Kind::Counter), "m 2\n");
    }

    #[test]
    fn headers_and_target_info() {
        let m = Metric {
            name: "retina.drop.count",
            unit: "{packet}",
            description: "Packets\\dropped\nby reason",
            kind: Kind::Counter,
        };
        let name = family_name(&m);
        assert_eq!(
            String::from_utf8(header(&m, &name)).unwrap(),
            "# HELP retina_drop_count_total Packets\\\\dropped\\nby reason\n\
             # TYPE retina_drop_count_total counter\n"
        );
        let t = target_info(&[KeyValue::new("service.name", "retina-agent")]);
        assert!(
            String::from_utf8(t)
                .unwrap()
                .ends_with("target_info{service_name=\"retina-agent\"} 1\n")
        );
    }
}
