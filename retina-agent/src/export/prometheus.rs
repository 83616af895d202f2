//! The Prometheus scrape endpoint: `GET /metrics` in the text exposition format, served by
//! a minimal HTTP/1.1 server (hyper) on the daemon's runtime.
//!
//! Bounded everywhere: request headers must arrive within [`HEADER_TIMEOUT`] and fit in
//! [`MAX_HEADER_BYTES`]; at most [`MAX_CONNECTIONS`] connections are served at once (more
//! are closed on accept); a connection lives at most [`CONNECTION_LIFETIME`]. Other paths
//! get 404, other methods 405.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder, proto::MetricFamily, proto::MetricType};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};

use super::ExportError;

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
    pub(super) async fn bind(
        listen: SocketAddr,
        registry: Registry,
    ) -> Result<Server, ExportError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ExportError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(listen);
        let task = tokio::spawn(serve(listener, Arc::new(registry)));
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

async fn serve(listener: TcpListener, registry: Arc<Registry>) {
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
        let registry = registry.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| handle(req, registry.clone()));
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
    registry: Arc<Registry>,
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
    // Gathering runs the instrument callbacks, which lock the agent: off the runtime.
    let encoded = tokio::task::spawn_blocking(move || {
        let mut families = registry.gather();
        normalize_names(&mut families);
        let mut buf = Vec::with_capacity(64 * 1024);
        TextEncoder::new().encode(&families, &mut buf).map(|()| buf)
    })
    .await;
    match encoded {
        Ok(Ok(buf)) => {
            let mut r = Response::new(Full::new(Bytes::from(buf)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        Ok(Err(e)) => {
            tracing::warn!("Prometheus endpoint: encoding: {e}");
            Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"))
        }
        Err(e) => {
            tracing::warn!("Prometheus endpoint: gathering: {e}");
            Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "gathering failed\n",
            ))
        }
    }
}

/// Unit suffixes the OpenTelemetry Prometheus exporter appends.
const UNIT_WORDS: &[&str] = &[
    "bytes",
    "seconds",
    "milliseconds",
    "microseconds",
    "nanoseconds",
    "minutes",
    "hours",
    "days",
    "ratio",
    "percent",
    "bits",
    "kilobytes",
    "megabytes",
    "gigabytes",
    "kibibytes",
    "mebibytes",
    "gibibytes",
];

/// The Prometheus name the OpenTelemetry compatibility rules give, where the exporter
/// (0.33) differs: it appends the unit suffix even when the name already ends with it
/// (`retina.drop.bytes` in `By` becomes `retina_drop_bytes_bytes_total`), and `_ratio`
/// (unit `1`) to counters as well as gauges. `None` when `name` is already right.
pub fn compat_name(name: &str, counter: bool) -> Option<String> {
    let (mut base, total) = match name.strip_suffix("_total") {
        Some(b) if counter => (b, "_total"),
        _ => (name, ""),
    };
    let mut changed = false;
    if counter && let Some(b) = base.strip_suffix("_ratio") {
        base = b;
        changed = true;
    }
    if let Some((head, last)) = base.rsplit_once('_')
        && UNIT_WORDS.contains(&last)
        && head.strip_suffix(last).is_some_and(|h| h.ends_with('_'))
    {
        base = head;
        changed = true;
    }
    changed.then(|| format!("{base}{total}"))
}

fn normalize_names(families: &mut [MetricFamily]) {
    let taken: std::collections::HashSet<String> =
        families.iter().map(|f| f.name().to_string()).collect();
    for f in families.iter_mut() {
        let counter = f.get_field_type() == MetricType::COUNTER;
        if let Some(name) = compat_name(f.name(), counter)
            && !taken.contains(&name)
        {
            f.set_name(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compat_names() {
        assert_eq!(
            compat_name("retina_drop_bytes_bytes_total", true).as_deref(),
            Some("retina_drop_bytes_total")
        );
        assert_eq!(
            compat_name("retina_drop_overflow_bytes_bytes_total", true).as_deref(),
            Some("retina_drop_overflow_bytes_total")
        );
        assert_eq!(
            compat_name("retina_netstat_counter_ratio_total", true).as_deref(),
            Some("retina_netstat_counter_total")
        );
        assert_eq!(compat_name("retina_netstat_gauge_ratio", false), None);
        assert_eq!(compat_name("system_network_io_bytes_total", true), None);
        assert_eq!(compat_name("retina_drop_count_total", true), None);
        assert_eq!(
            compat_name("retina_agent_collect_duration_seconds", false),
            None
        );
        assert_eq!(
            compat_name("x_seconds_seconds", false).as_deref(),
            Some("x_seconds")
        );
        assert_eq!(compat_name("xbytes_bytes", false), None);
    }
}
