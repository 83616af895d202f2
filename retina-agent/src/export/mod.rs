//! Metric export: OTLP push (gRPC or HTTP/protobuf) through the OpenTelemetry SDK and
//! `opentelemetry-otlp`, and a Prometheus scrape endpoint through `prometheus-client`.
//!
//! Both outputs read the collectors' own state: the SDK's observable instruments and the
//! Prometheus encoder walk the points of one metric at a time through
//! [`catalog::Catalog::visit_metric`], straight from the values the collectors hold (the
//! kernel's running totals and current values); no second copy sits in between. The set
//! of metrics is fixed at start ([`catalog`]): one entry per metric a collector lists in
//! [`Collector::metrics`](crate::collectors::Collector) plus the agent's own health
//! ([`selfmetrics`]).
//!
//! OTLP is pushed by the daemon: right after each collection cycle [`Exporters::export`]
//! collects the SDK's one reader and sends the result on a task, unless the previous send
//! is still in flight, in which case it is skipped and counted
//! (`retina.agent.export.skipped`). With cumulative temporality (the default) a failed
//! export loses nothing; the next one carries the running totals.
//!
//! The Prometheus endpoint is pulled by scrapes (`GET /metrics`), always cumulative, and is
//! not an SDK reader (a second reader would double the callbacks' work).

pub mod catalog;
mod otlp;
mod prometheus;
mod resource;
pub(crate) mod selfmetrics;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use crate::{
    agent::Agent,
    config::{ExportConfig, PrometheusConfig},
};
pub(crate) use otlp::LogOutput;
pub use otlp::partial_success_layer;
pub(crate) use resource::check_attributes as check_resource_attributes;
#[cfg(feature = "internals")]
pub use otlp::partial_success_totals;

/// The agent, shared between the daemon loop (which collects) and the exporters'
/// callbacks (which read). `None` once the daemon has taken it back to drop it (detaching
/// the eBPF program) at shutdown; callbacks then observe nothing.
#[derive(Clone)]
pub struct SharedAgent(Arc<Mutex<Option<Agent>>>);

impl std::fmt::Debug for SharedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedAgent")
    }
}

impl SharedAgent {
    pub fn new(agent: Agent) -> Self {
        SharedAgent(Arc::new(Mutex::new(Some(agent))))
    }

    /// Locks the agent. A panic in another holder does not make the data unusable: the
    /// lock's poison is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Option<Agent>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the agent out, so that dropping it detaches the eBPF program even while
    /// exporter callbacks still hold this handle.
    pub fn take(&self) -> Option<Agent> {
        self.lock().take()
    }
}

/// What the exporters could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading {what} {}: {source}", path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("OTLP TLS configuration: {0}")]
    Tls(String),
    #[error("building the OTLP exporter for {endpoint}: {reason}")]
    Build { endpoint: String, reason: String },
    #[error(
        "Prometheus endpoint: cannot listen on {addr}: {source} (set prometheus.listen, or prometheus.enabled = false)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The OTLP log output of the drop events (`drops.flows`), when OTLP export is on: the
/// metric export's endpoint (with the logs path over HTTP), transport and resource. Must
/// run inside the Tokio runtime.
pub(crate) fn log_output(export: &ExportConfig) -> Result<Option<LogOutput>, ExportError> {
    if !export.enabled {
        return Ok(None);
    }
    LogOutput::new(export, resource::build(export)).map(Some)
}

/// Without OTLP, free heap pages are handed back to the kernel every this many exports
/// (once a minute at the default 10 s interval): the Prometheus scrapes allocate and free
/// blocks that, over days, leave free pages scattered in the heap that glibc only returns
/// when asked. Counted in exports rather than time so that the soak bench, which runs
/// exports back to back, sees what the daemon does. With OTLP on, every send ends with a
/// trim (`otlp::send`), which covers the scrapes too.
const RELEASE_EVERY_EXPORTS: u32 = 6;

/// The two outputs.
pub struct Exporters {
    otlp: Option<otlp::Otlp>,
    prometheus: Option<prometheus::Server>,
    exports_since_release: u32,
}

impl Exporters {
    /// Builds the enabled outputs for the metrics of `agent`'s collectors and binds the
    /// Prometheus endpoint. Must run inside the Tokio runtime (the gRPC channel and the
    /// HTTP server are spawned on it).
    pub async fn start(
        agent: &SharedAgent,
        export: &ExportConfig,
        prometheus: &PrometheusConfig,
    ) -> Result<Self, ExportError> {
        let mut exporters = Exporters {
            otlp: None,
            prometheus: None,
            exports_since_release: 0,
        };
        if !export.enabled && !prometheus.enabled {
            tracing::info!("OTLP export and Prometheus endpoint both disabled");
            return Ok(exporters);
        }
        let catalog = {
            let guard = agent.lock();
            let Some(a) = guard.as_ref() else {
                return Ok(exporters);
            };
            Arc::new(catalog::Catalog::new(
                a,
                export.enabled,
                export.series,
                &export.series_caps,
            ))
        };
        let resource = resource::build(export);
        if export.enabled {
            exporters.otlp = Some(otlp::Otlp::new(
                export,
                agent,
                catalog.clone(),
                resource.clone(),
            )?);
        }
        if prometheus.enabled {
            let scraper = prometheus::Scraper::new(
                agent.clone(),
                catalog.clone(),
                exporters.otlp.as_ref().map(|o| o.stats()),
                resource::sorted_attributes(&resource),
            );
            let server = prometheus::Server::bind(prometheus.listen, scraper).await?;
            tracing::info!("Prometheus endpoint at http://{}/metrics", server.addr());
            exporters.prometheus = Some(server);
        }
        if let Some(o) = &exporters.otlp {
            tracing::info!(
                endpoint = o.endpoint(),
                protocol = %export.protocol,
                temporality = ?export.temporality,
                timeout = ?export.timeout,
                headers = %export.redacted_headers(),
                metrics = catalog.len(),
                "exporting OTLP metrics"
            );
        }
        Ok(exporters)
    }

    /// No output at all (what is left when a reload can start none).
    pub(crate) fn none() -> Self {
        Exporters {
            otlp: None,
            prometheus: None,
            exports_since_release: 0,
        }
    }

    /// The Prometheus endpoint's bound address (useful with port 0).
    #[cfg(feature = "internals")]
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus.as_ref().map(|s| s.addr())
    }

    /// Starts an OTLP export of what the collectors hold now, unless one is in flight (then
    /// it is skipped and counted). Returns once the request is encoded.
    pub async fn export(&mut self) {
        if let Some(o) = &mut self.otlp {
            o.export().await;
            return;
        }
        self.exports_since_release += 1;
        if self.exports_since_release >= RELEASE_EVERY_EXPORTS {
            self.exports_since_release = 0;
            let start = Instant::now();
            crate::memory::release_free_pages();
            tracing::trace!(took = ?start.elapsed(), "free heap pages released");
        }
    }

    /// Waits until the OTLP export in flight, if any, has finished.
    #[cfg(feature = "internals")]
    pub async fn flush(&mut self) {
        if let Some(o) = &mut self.otlp {
            o.flush().await;
        }
    }

    /// The OTLP exporter's counters (successes, failures, skips), if OTLP is on.
    #[cfg(feature = "internals")]
    pub fn otlp_stats(&self) -> Option<Arc<selfmetrics::ExportStats>> {
        self.otlp.as_ref().map(|o| o.stats())
    }

    /// Final export and teardown, all within `deadline`: waits for an export in flight
    /// (abandoning it at the deadline), runs one last export of the current values, stops
    /// the Prometheus endpoint.
    pub async fn shutdown(mut self, deadline: Instant) {
        if let Some(mut o) = self.otlp.take() {
            o.finish(deadline).await;
        }
        if let Some(s) = self.prometheus.take() {
            s.stop().await;
        }
    }
}
