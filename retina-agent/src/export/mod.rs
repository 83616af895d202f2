//! Metric export: OTLP push (gRPC or HTTP/protobuf) and a Prometheus scrape endpoint, both
//! fed by one OpenTelemetry meter provider.
//!
//! Every metric a collector lists in [`Collector::metrics`](crate::collectors::Collector)
//! becomes one observable instrument (a monotonic `ObservableCounter<u64>` for
//! [`Kind::Counter`](crate::metrics::Kind), an `ObservableGauge<f64>` for gauges), registered
//! once. Its callback visits only the collectors that list the metric and hands the
//! values and the collectors' precomputed attribute slices to the SDK: an export does no
//! work of its own beyond the SDK's aggregation and encoding.
//!
//! The OTLP reader is a manual reader driven by the daemon: right after each collection
//! cycle [`Exporters::export`] starts one export (collect, then send) on a task, unless the
//! previous one is still in flight, in which case it is skipped and counted
//! (`retina.agent.export.skipped`). An export is bounded by the configured timeout, so a
//! collector that accepts connections and never answers costs one task, never a queue:
//! the only state kept is the SDK's current aggregation. With cumulative temporality (the
//! default) a failed export loses nothing; the next one carries the running totals.
//!
//! The Prometheus reader is pulled by scrapes (`GET /metrics`), always cumulative.

mod config;
mod instruments;
mod otlp;
mod prometheus;
mod resource;
pub mod selfmetrics;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

pub use config::{
    Compression, ConfigError, DEFAULT_GRPC_ENDPOINT, DEFAULT_HTTP_ENDPOINT,
    DEFAULT_PROMETHEUS_LISTEN, DEFAULT_SERVICE_NAME, ExportConfig, PrometheusConfig, Protocol,
    Temporality, interval_from_env,
};
use opentelemetry::{InstrumentationScope, metrics::MeterProvider as _};
use opentelemetry_sdk::metrics::{Instrument, SdkMeterProvider, Stream};

use crate::agent::Agent;

/// The agent, shared between the daemon loop (which collects) and the exporters'
/// callbacks (which read). `None` once the daemon has taken it back to drop it (detaching
/// the eBPF program) at shutdown; callbacks then observe nothing.
#[derive(Clone)]
pub struct SharedAgent(Arc<Mutex<Option<Agent>>>);

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
    #[error("export configuration: {0}")]
    Config(#[from] ConfigError),
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
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
}

/// The meter provider and its two outputs.
pub struct Exporters {
    provider: Option<SdkMeterProvider>,
    otlp: Option<otlp::Otlp>,
    prometheus: Option<prometheus::Server>,
}

/// Instrumentation scope of every instrument.
fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("retina-agent")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

impl Exporters {
    /// Builds the meter provider with the enabled readers, registers one instrument per
    /// metric of `agent`'s collectors plus the self-telemetry, binds the Prometheus
    /// endpoint. Call it after a first collection cycle: series limits are sized from what
    /// that cycle saw. Must run inside the Tokio runtime (the gRPC channel and the HTTP
    /// server are spawned on it).
    pub async fn start(
        agent: &SharedAgent,
        export: &ExportConfig,
        prometheus: &PrometheusConfig,
    ) -> Result<Self, ExportError> {
        if !export.enabled && !prometheus.enabled {
            tracing::info!("OTLP export and Prometheus endpoint both disabled");
            return Ok(Exporters {
                provider: None,
                otlp: None,
                prometheus: None,
            });
        }
        export.validate()?;
        let limits = {
            let guard = agent.lock();
            guard
                .as_ref()
                .map(|a| instruments::series_limits(a, export.cardinality_limit))
                .unwrap_or_default()
        };
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource::build(export))
            .with_view(move |i: &Instrument| {
                let limit = limits.get(i.name()).copied()?;
                Stream::builder().with_cardinality_limit(limit).build().ok()
            });
        let otlp = if export.enabled {
            let (otlp, reader) = otlp::Otlp::new(export)?;
            builder = builder.with_reader(reader);
            Some(otlp)
        } else {
            None
        };
        let server = if prometheus.enabled {
            let registry = ::prometheus::Registry::new();
            let reader = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .scope_info_enabled(false)
                .build()
                .map_err(|e| ExportError::Prometheus(e.to_string()))?;
            builder = builder.with_reader(reader);
            Some(prometheus::Server::bind(prometheus.listen, registry).await?)
        } else {
            None
        };
        let provider = builder.build();
        let meter = provider.meter_with_scope(scope());
        let registered = instruments::register(&meter, agent);
        selfmetrics::register(&meter, agent, otlp.as_ref().map(|o| o.stats()));
        if let Some(s) = &server {
            tracing::info!("Prometheus endpoint at http://{}/metrics", s.addr());
        }
        if let Some(o) = &otlp {
            tracing::info!(
                endpoint = o.endpoint(),
                protocol = %export.protocol,
                temporality = ?export.temporality,
                timeout = ?export.timeout,
                headers = %export.redacted_headers(),
                instruments = registered,
                "exporting OTLP metrics"
            );
        }
        Ok(Exporters {
            provider: Some(provider),
            otlp,
            prometheus: server,
        })
    }

    /// The Prometheus endpoint's bound address (useful with port 0).
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus.as_ref().map(|s| s.addr())
    }

    /// Starts an OTLP export of what the collectors hold now, unless one is in flight (then
    /// it is skipped and counted). Returns at once.
    pub async fn export(&mut self) {
        if let Some(o) = &mut self.otlp {
            o.export().await;
        }
    }

    /// Final export and teardown, all within `deadline`: waits for an export in flight
    /// (abandoning it at the deadline), runs one last export of the current values, stops
    /// the Prometheus endpoint and shuts the provider down.
    pub async fn shutdown(mut self, deadline: Instant) {
        if let Some(mut o) = self.otlp.take() {
            o.finish(deadline).await;
        }
        if let Some(s) = self.prometheus.take() {
            s.stop();
        }
        if let Some(provider) = self.provider.take() {
            let left = deadline.saturating_duration_since(Instant::now());
            let task = tokio::task::spawn_blocking(move || provider.shutdown());
            match tokio::time::timeout(left.max(Duration::from_millis(100)), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::debug!("meter provider shutdown: {e}"),
                Ok(Err(e)) => tracing::debug!("meter provider shutdown task: {e}"),
                Err(_) => tracing::debug!("meter provider shutdown timed out"),
            }
        }
    }
}
