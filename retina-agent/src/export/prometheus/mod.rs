//! The Prometheus scrape endpoint: `GET /metrics` in the OpenMetrics text format, encoded
//! by the Prometheus project's `prometheus-client` crate ([`encode`]) straight from the
//! collectors' values, served by a minimal HTTP/1.1 server (hyper) on the daemon's runtime.
//! OpenMetrics goes to clients that ask for it by `Accept` (Prometheus does); the others
//! get the same samples in the text format 0.0.4 ([`format`]).
//!
//! Bounded everywhere, so that no client can keep a scrape out:
//! - request headers must arrive within [`HEADER_TIMEOUT`] and fit in [`MAX_HEADER_BYTES`];
//! - one request per connection (`Connection: close`), so pipelined requests are not read;
//! - a connection lives at most [`CONNECTION_LIFETIME`], writing its answer included, so a
//!   client that stops reading is cut off;
//! - at most [`MAX_CONNECTIONS`] at once; a new connection beyond that closes the oldest
//!   (idle or stalled clients are evicted by new ones, a real scrape takes milliseconds);
//! - scrapes are encoded one at a time on one blocking thread; others wait without a
//!   thread of their own.
//!
//! Other paths get 404, other methods 405.

mod encode;
mod format;

pub(super) use encode::label_name;

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use opentelemetry::KeyValue;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::Semaphore, task::AbortHandle, task::JoinHandle};

use super::{ExportError, SharedAgent, catalog::Catalog, selfmetrics::ExportStats};

pub(crate) const METRICS_PATH: &str = "/metrics";
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_CONNECTIONS: usize = 32;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

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

    /// Stops accepting and waits until the listening socket is closed (so that the same
    /// address can be bound again right away, as a reload may).
    pub(super) async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The connections being served, oldest first.
#[derive(Default)]
struct Connections {
    next_id: u64,
    live: VecDeque<(u64, AbortHandle)>,
}

impl Connections {
    fn lock(this: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
        this.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn serve(listener: TcpListener, scraper: Arc<Scraper>) {
    let connections = Arc::new(Mutex::new(Connections::default()));
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
        let mut conns = Connections::lock(&connections);
        while conns.live.len() >= MAX_CONNECTIONS {
            if let Some((_, oldest)) = conns.live.pop_front() {
                tracing::debug!(%peer, "Prometheus endpoint: connection limit; closing the oldest");
                oldest.abort();
            }
        }
        let id = conns.next_id;
        conns.next_id += 1;
        let scraper = scraper.clone();
        let registry = connections.clone();
        let task = tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, scraper.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "Prometheus endpoint: {e}"),
                Err(_) => {
                    tracing::debug!(%peer, "Prometheus endpoint: connection outlived its limit; closed")
                }
            }
            Connections::lock(&registry).live.retain(|(i, _)| *i != id);
        });
        conns.live.push_back((id, task.abort_handle()));
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
    let format = format::negotiate(req.headers().get(header::ACCEPT));
    // One scrape at a time; the others wait here, not on a thread of their own.
    let Ok(_permit) = scraper.one_at_a_time.acquire().await else {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"));
    };
    // Reading the values locks the agent, which a collection cycle holds: off the runtime.
    let s = scraper.clone();
    match tokio::task::spawn_blocking(move || s.scrape(format)).await {
        Ok(Ok(body)) => {
            let mut r = Response::new(Full::new(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(format.content_type()),
            );
            r.headers_mut()
                .insert(header::VARY, header::HeaderValue::from_static("accept"));
            Ok(r)
        }
        Ok(Err(e)) => {
            tracing::warn!("Prometheus endpoint: encoding failed: {e}");
            Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n"))
        }
        Err(e) => {
            tracing::warn!("Prometheus endpoint: scrape: {e}");
            Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n"))
        }
    }
}

/// What a scrape reads, and the text buffer it reuses.
pub(super) struct Scraper {
    registry: Registry,
    /// The OpenMetrics exposition, then (for the text format) its translation.
    buffer: Mutex<(String, String)>,
    one_at_a_time: Semaphore,
}

impl Scraper {
    pub(super) fn new(
        agent: SharedAgent,
        catalog: Arc<Catalog>,
        export_stats: Option<Arc<ExportStats>>,
        resource: Vec<KeyValue>,
    ) -> Scraper {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(encode::Families::new(
            agent,
            catalog,
            export_stats,
            resource,
        )));
        Scraper {
            registry,
            buffer: Mutex::new((String::new(), String::new())),
            one_at_a_time: Semaphore::new(1),
        }
    }

    /// The whole exposition of the current values, in `format`.
    fn scrape(&self, format: format::Format) -> Result<Bytes, std::fmt::Error> {
        let mut buffers = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let (om, text) = &mut *buffers;
        om.clear();
        prometheus_client::encoding::text::encode(om, &self.registry)?;
        let out: &str = match format {
            format::Format::OpenMetrics => om.as_str(),
            format::Format::Text => {
                format::to_text(om, text)?;
                text.as_str()
            }
        };
        let body = Bytes::copy_from_slice(out.as_bytes());
        // Give back what a burst of series left, never in a steady state.
        for b in [om, text] {
            if b.capacity() > 2 * b.len() + 64 * 1024 {
                let keep = b.len() + b.len() / 2;
                b.shrink_to(keep);
            }
        }
        Ok(body)
    }
}
