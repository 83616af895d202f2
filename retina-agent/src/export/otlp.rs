//! The OTLP exporter: transport setup (gRPC with tonic, HTTP/protobuf with reqwest, TLS
//! with rustls/ring), and the export step the daemon runs after each collection.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{
    MetricExporter, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, Pipeline, Temporality as SdkTemporality,
        data::ResourceMetrics, exporter::PushMetricExporter, reader::MetricReader,
    },
};
use tokio::task::JoinHandle;

use super::{
    ExportError,
    config::{Compression, ExportConfig, Protocol, Temporality},
    selfmetrics::ExportStats,
};

/// How often a persisting failure (or skip) is logged again, with a count.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Extra time an export gets beyond the transport's own timeout, so that the transport's
/// error (with its reason) usually wins over the hard stop.
const HARD_STOP_MARGIN: Duration = Duration::from_secs(1);

/// The manual reader, shared between the meter provider (which owns a reader) and the
/// export step (which drives it).
#[derive(Debug, Clone)]
pub(super) struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> SdkTemporality {
        self.0.temporality(kind)
    }
}

/// The reason of the last failed HTTP request: the OTLP crate reports only "network
/// error", this keeps what reqwest said (connection refused, TLS, timeout).
#[derive(Debug, Default)]
struct LastError(Mutex<Option<String>>);

impl LastError {
    fn set(&self, s: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }
    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// reqwest with its error reasons kept.
#[derive(Debug)]
struct DiagnosingClient {
    inner: reqwest::Client,
    last_error: Arc<LastError>,
}

/// An error and its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cur) = next {
        let part = cur.to_string();
        if !s.contains(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        next = cur.source();
    }
    s
}

#[async_trait::async_trait]
impl HttpClient for DiagnosingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let result = HttpClient::send_bytes(&self.inner, request).await;
        if let Err(e) = &result {
            // reqwest's messages name the URL, never the headers.
            self.last_error.set(chain(&**e));
        }
        result
    }
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ExportError> {
    std::fs::read(path).map_err(|source| ExportError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn retry_policy() -> RetryPolicy {
    // A short retry for transient errors (a collector restarting); the daemon's interval
    // is the real retry cadence, and the export's deadline bounds all attempts.
    RetryPolicy::recommended()
        .with_max_retries(2)
        .with_initial_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(1))
}

fn sdk_temporality(t: Temporality) -> SdkTemporality {
    match t {
        Temporality::Cumulative => SdkTemporality::Cumulative,
        Temporality::Delta => SdkTemporality::Delta,
    }
}

fn build_grpc(config: &ExportConfig, endpoint: &str) -> Result<MetricExporter, ExportError> {
    use opentelemetry_otlp::tonic_types::{
        metadata::MetadataMap,
        transport::{Certificate, ClientTlsConfig, Identity},
    };
    let build_err = |reason: String| ExportError::Build {
        endpoint: endpoint.to_string(),
        reason,
    };
    let mut ep = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| build_err(chain(&e)))?
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        // Notice a dead connection (collector host gone) without waiting for TCP.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match &config.ca_file {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read("CA file", path)?)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&config.client_cert_file, &config.client_key_file) {
            tls = tls.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        ep = ep
            .tls_config(tls)
            .map_err(|e| ExportError::Tls(chain(&e)))?;
    }
    let channel = ep.connect_lazy();
    let mut metadata = http::HeaderMap::new();
    for (k, v) in &config.headers {
        let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| build_err(format!("header {k:?}: invalid name")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| build_err(format!("header {k:?}: invalid value")))?;
        metadata.insert(name, value);
    }
    let mut builder = MetricExporter::builder()
        .with_tonic()
        .with_channel(channel)
        .with_metadata(MetadataMap::from_headers(metadata))
        .with_timeout(config.timeout)
        .with_retry_policy(retry_policy());
    if config.compression == Compression::Gzip {
        builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    builder
        .with_temporality(sdk_temporality(config.temporality))
        .build()
        .map_err(|e| build_err(e.to_string()))
}

fn build_http(
    config: &ExportConfig,
    endpoint: &str,
) -> Result<(MetricExporter, Arc<LastError>), ExportError> {
    let build_err = |reason: String| ExportError::Build {
        endpoint: endpoint.to_string(),
        reason,
    };
    // reqwest is built without a default crypto provider (the one it would pull in needs
    // a C/assembly build of aws-lc); use ring, as tonic does. An error means one is
    // installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut client = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout);
    if let Some(path) = &config.ca_file {
        let certs = reqwest::Certificate::from_pem_bundle(&read("CA file", path)?)
            .map_err(|e| ExportError::Tls(format!("{}: {}", path.display(), chain(&e))))?;
        client = client.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&config.client_cert_file, &config.client_key_file) {
        let mut pem = read("client certificate", cert)?;
        pem.push(b'\n');
        pem.extend(read("client key", key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| ExportError::Tls(format!("client certificate/key: {}", chain(&e))))?;
        client = client.identity(identity);
    }
    let client = client.build().map_err(|e| ExportError::Tls(chain(&e)))?;
    let last_error = Arc::new(LastError::default());
    // The OTLP crate percent-decodes header values given to it; ours are final already.
    let headers: HashMap<String, String> = config
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.replace('%', "%25")))
        .collect();
    let mut builder = MetricExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(DiagnosingClient {
            inner: client,
            last_error: last_error.clone(),
        })
        .with_headers(headers)
        .with_timeout(config.timeout)
        .with_retry_policy(retry_policy());
    if config.compression == Compression::Gzip {
        builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    let exporter = builder
        .with_temporality(sdk_temporality(config.temporality))
        .build()
        .map_err(|e| build_err(e.to_string()))?;
    Ok((exporter, last_error))
}

/// Logs the first event of a streak at once, then at most once every [`LOG_EVERY`] with
/// how many happened since.
#[derive(Debug, Default)]
struct Streak {
    since: Option<Instant>,
    count: u64,
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl Streak {
    /// Records one event; returns `Some(unlogged count)` when it should be logged now.
    fn hit(&mut self) -> Option<u64> {
        let now = Instant::now();
        self.count += 1;
        if self.since.is_none() {
            self.since = Some(now);
            self.last_logged = Some(now);
            return Some(0);
        }
        self.unlogged += 1;
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            self.last_logged = Some(now);
            return Some(std::mem::take(&mut self.unlogged));
        }
        None
    }

    /// Ends the streak; returns its length and duration if there was one.
    fn end(&mut self) -> Option<(u64, Duration)> {
        let since = self.since.take()?;
        let count = std::mem::take(&mut self.count);
        self.unlogged = 0;
        self.last_logged = None;
        Some((count, since.elapsed()))
    }
}

/// State the export tasks share with the daemon side.
#[derive(Debug)]
struct Shared {
    endpoint: String,
    stats: Arc<ExportStats>,
    failures: Mutex<Streak>,
    http_error: Option<Arc<LastError>>,
}

impl Shared {
    fn failed(&self, reason: &str) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let mut streak = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match streak.hit() {
            Some(0) => tracing::warn!(
                endpoint = %self.endpoint,
                "OTLP export failed: {reason}; collection continues, export is retried every \
                 interval (logged again at most once a minute)"
            ),
            Some(n) => tracing::warn!(
                endpoint = %self.endpoint,
                failures = streak.count,
                "OTLP export still failing ({n} more failures since the last message): {reason}"
            ),
            None => tracing::debug!(endpoint = %self.endpoint, "OTLP export failed: {reason}"),
        }
    }

    fn succeeded(&self) {
        self.stats.successes.fetch_add(1, Ordering::Relaxed);
        let mut streak = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((count, over)) = streak.end() {
            tracing::info!(
                endpoint = %self.endpoint,
                "OTLP export recovered after {count} failed exports over {}",
                humantime::format_duration(Duration::from_secs(over.as_secs()))
            );
        }
    }
}

/// The OTLP output, driven by the daemon.
pub(super) struct Otlp {
    reader: SharedReader,
    exporter: Arc<MetricExporter>,
    shared: Arc<Shared>,
    /// Hard bound of one export.
    deadline: Duration,
    in_flight: Option<JoinHandle<ResourceMetrics>>,
    /// The buffer of the last export, reused by the next.
    spare: Option<ResourceMetrics>,
    skips: Streak,
}

impl Otlp {
    /// Builds the exporter and the reader to give the meter provider.
    pub(super) fn new(config: &ExportConfig) -> Result<(Otlp, SharedReader), ExportError> {
        let endpoint = config.resolved_endpoint();
        let (exporter, http_error) = match config.protocol {
            Protocol::Grpc => (build_grpc(config, &endpoint)?, None),
            Protocol::HttpProtobuf => {
                let (e, last) = build_http(config, &endpoint)?;
                (e, Some(last))
            }
        };
        let reader = SharedReader(Arc::new(
            ManualReader::builder()
                .with_temporality(sdk_temporality(config.temporality))
                .build(),
        ));
        let otlp = Otlp {
            reader: reader.clone(),
            exporter: Arc::new(exporter),
            shared: Arc::new(Shared {
                endpoint,
                stats: Arc::new(ExportStats::default()),
                failures: Mutex::new(Streak::default()),
                http_error,
            }),
            deadline: config.timeout + HARD_STOP_MARGIN,
            in_flight: None,
            spare: None,
            skips: Streak::default(),
        };
        Ok((otlp, reader))
    }

    pub(super) fn stats(&self) -> Arc<ExportStats> {
        self.shared.stats.clone()
    }

    pub(super) fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// Takes back the buffer of a finished export. `false` if one is still running.
    async fn reap(&mut self) -> bool {
        match &self.in_flight {
            Some(h) if !h.is_finished() => false,
            Some(_) => {
                if let Some(h) = self.in_flight.take()
                    && let Ok(rm) = h.await
                {
                    self.spare = Some(rm);
                }
                true
            }
            None => true,
        }
    }

    /// Starts one export unless one is in flight.
    pub(super) async fn export(&mut self) {
        if !self.reap().await {
            self.shared.stats.skipped.fetch_add(1, Ordering::Relaxed);
            match self.skips.hit() {
                Some(0) => tracing::warn!(
                    endpoint = %self.shared.endpoint,
                    "previous OTLP export still in flight (collector slow or not answering); \
                     skipping this one (logged again at most once a minute)"
                ),
                Some(n) => tracing::warn!(
                    endpoint = %self.shared.endpoint,
                    "OTLP exports still being skipped: {n} more since the last message"
                ),
                None => {}
            }
            return;
        }
        if let Some((count, _)) = self.skips.end() {
            tracing::debug!("OTLP export no longer skipped after {count} skips");
        }
        let rm = self.spare.take().unwrap_or_default();
        self.in_flight = Some(tokio::spawn(export_once(
            self.reader.clone(),
            self.exporter.clone(),
            self.shared.clone(),
            self.deadline,
            rm,
        )));
    }

    /// Waits for the export in flight until `deadline`, then runs a last export bounded by
    /// what is left of it, then shuts the exporter down.
    pub(super) async fn finish(&mut self, deadline: Instant) {
        if let Some(h) = self.in_flight.take() {
            let left = deadline.saturating_duration_since(Instant::now());
            let abort = h.abort_handle();
            match tokio::time::timeout(left, h).await {
                Ok(Ok(rm)) => self.spare = Some(rm),
                Ok(Err(_)) => {}
                Err(_) => {
                    abort.abort();
                    tracing::warn!(
                        endpoint = %self.shared.endpoint,
                        "OTLP export in flight at shutdown did not finish in time; abandoned, \
                         no final export"
                    );
                    return;
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!("no time left for a final OTLP export");
        } else {
            let rm = self.spare.take().unwrap_or_default();
            let task = tokio::spawn(export_once(
                self.reader.clone(),
                self.exporter.clone(),
                self.shared.clone(),
                left.min(self.deadline),
                rm,
            ));
            let abort = task.abort_handle();
            match tokio::time::timeout(left, task).await {
                Ok(_) => tracing::debug!("final OTLP export done"),
                Err(_) => {
                    abort.abort();
                    tracing::warn!("final OTLP export did not finish in time; abandoned");
                }
            }
        }
        if let Err(e) = self.exporter.shutdown() {
            tracing::debug!("OTLP exporter shutdown: {e}");
        }
    }
}

/// Collects the current values (on a blocking thread: the callbacks lock the agent) and
/// sends them, within `deadline`. Returns the buffer for reuse.
async fn export_once(
    reader: SharedReader,
    exporter: Arc<MetricExporter>,
    shared: Arc<Shared>,
    deadline: Duration,
    rm: ResourceMetrics,
) -> ResourceMetrics {
    let start = Instant::now();
    let collected = tokio::task::spawn_blocking(move || {
        let mut rm = rm;
        let result = reader.collect(&mut rm);
        (rm, result)
    })
    .await;
    let rm = match collected {
        Ok((rm, Ok(()))) => rm,
        Ok((rm, Err(e))) => {
            shared.failed(&format!("collecting the data points: {e}"));
            return rm;
        }
        Err(e) => {
            shared.failed(&format!("collecting the data points: {e}"));
            return ResourceMetrics::default();
        }
    };
    if let Some(last) = &shared.http_error {
        last.take();
    }
    let result = tokio::time::timeout(deadline, exporter.export(&rm)).await;
    shared.stats.record_duration(start.elapsed());
    match result {
        Ok(Ok(())) => shared.succeeded(),
        Ok(Err(e)) => {
            let mut reason = e.to_string();
            if let Some(detail) = shared.http_error.as_ref().and_then(|l| l.take()) {
                reason.push_str(": ");
                reason.push_str(&detail);
            }
            shared.failed(&reason);
        }
        Err(_) => shared.failed(&format!(
            "no answer within {}",
            humantime::format_duration(deadline)
        )),
    }
    rm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streak_logs_first_then_rate_limited() {
        let mut s = Streak::default();
        assert_eq!(s.hit(), Some(0));
        assert_eq!(s.hit(), None);
        assert_eq!(s.hit(), None);
        assert_eq!(s.count, 3);
        s.last_logged = Some(Instant::now() - LOG_EVERY);
        assert_eq!(s.hit(), Some(3));
        let (n, _) = s.end().unwrap();
        assert_eq!(n, 4);
        assert!(s.end().is_none());
        assert_eq!(s.hit(), Some(0));
    }

    #[test]
    fn error_chain_skips_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(chain(&io), "refused");
    }
}
