//! The OTLP exporter: the agent's data points encoded straight into an OTLP/protobuf
//! request ([`super::proto`]) and sent over gRPC (tonic, raw-bytes codec) or HTTP/protobuf
//! (reqwest), with TLS by rustls/ring, custom CA and client certificates, headers, gzip,
//! and short retries of transient failures within the export's deadline.
//!
//! Cumulative sums carry the kernel's running totals, so a failed export loses nothing.
//! Delta sums are computed here from those totals against what the last *successful*
//! export carried: a failed export's change is carried by the next one instead of being
//! lost (the SDK's delta would have dropped it).

use std::{
    collections::HashMap,
    hash::Hasher,
    io::Write as _,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry::{KeyValue, Value};
use tokio::task::JoinHandle;
use tonic::{
    Status,
    client::Grpc,
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::Channel,
};

use super::{
    ExportError, SharedAgent,
    catalog::{Catalog, Grouper, counter_value, trim},
    config::{Compression, ExportConfig, Protocol, Temporality},
    proto::{self, MetricPoints, PartialSuccess, PointValue, Scope},
    selfmetrics::ExportStats,
};
use crate::metrics::{Kind, Metric};

/// How often a persisting failure (or skip) is logged again, with a count.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Extra time an export gets beyond the transport's own timeout, so that the transport's
/// error (with its reason) usually wins over the hard stop.
const HARD_STOP_MARGIN: Duration = Duration::from_secs(1);
/// Delays before the retries of a transient failure (a collector restarting); the
/// daemon's interval is the real retry cadence.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(300)];
const GRPC_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

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

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ExportError> {
    std::fs::read(path).map_err(|source| ExportError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
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
    rejections: Mutex<Streak>,
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

    fn rejected(&self, p: &PartialSuccess) {
        let points = u64::try_from(p.rejected_data_points).unwrap_or(0);
        self.stats
            .rejected_points
            .fetch_add(points, Ordering::Relaxed);
        let mut streak = self.rejections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = streak.hit() {
            tracing::warn!(
                endpoint = %self.endpoint,
                rejected_data_points = p.rejected_data_points,
                "OTLP collector rejected part of an export: {:?} (logged again at most once a \
                 minute; {n} more since the last message)",
                p.error_message
            );
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

/// Passes the already encoded request through: tonic adds only the gRPC framing.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Why one attempt failed, and whether trying again soon may help.
#[derive(Debug)]
struct SendError {
    reason: String,
    retryable: bool,
}

enum Transport {
    Grpc {
        grpc: Grpc<Channel>,
        metadata: MetadataMap,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: http::HeaderMap,
        gzip: bool,
    },
}

fn header_map(config: &ExportConfig, endpoint: &str) -> Result<http::HeaderMap, ExportError> {
    let build_err = |reason: String| ExportError::Build {
        endpoint: endpoint.to_string(),
        reason,
    };
    let mut map = http::HeaderMap::new();
    for (k, v) in &config.headers {
        let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| build_err(format!("header {k:?}: invalid name")))?;
        let mut value = http::HeaderValue::from_str(v)
            .map_err(|_| build_err(format!("header {k:?}: invalid value")))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

impl Transport {
    fn grpc(config: &ExportConfig, endpoint: &str) -> Result<Transport, ExportError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let build_err = |reason: String| ExportError::Build {
            endpoint: endpoint.to_string(),
            reason,
        };
        let mut ep = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| build_err(chain(&e)))?
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("retina-agent/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| build_err(chain(&e)))?
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
        let mut grpc = Grpc::new(ep.connect_lazy());
        if config.compression == Compression::Gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(Transport::Grpc {
            grpc,
            metadata: MetadataMap::from_headers(header_map(config, endpoint)?),
            timeout: config.timeout,
        })
    }

    fn http(config: &ExportConfig, endpoint: &str) -> Result<Transport, ExportError> {
        // reqwest is built without a default crypto provider (the one it would pull in
        // needs a C/assembly build of aws-lc); use ring, as tonic does. An error means one
        // is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("retina-agent/", env!("CARGO_PKG_VERSION")));
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
        let mut headers = header_map(config, endpoint)?;
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        let gzip = config.compression == Compression::Gzip;
        if gzip {
            headers.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static("gzip"),
            );
        }
        Ok(Transport::Http {
            client,
            url: endpoint.to_string(),
            headers,
            gzip,
        })
    }

    /// One attempt: sends `body` and decodes the collector's answer.
    async fn send(&self, body: Bytes) -> Result<Option<PartialSuccess>, SendError> {
        let answer = match self {
            Transport::Grpc {
                grpc,
                metadata,
                timeout,
            } => {
                let mut grpc = grpc.clone();
                let status_err = |s: Status| SendError {
                    retryable: matches!(
                        s.code(),
                        tonic::Code::Cancelled
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Aborted
                            | tonic::Code::OutOfRange
                            | tonic::Code::Unavailable
                            | tonic::Code::DataLoss
                    ),
                    reason: format!("gRPC {:?}: {}", s.code(), chain(&s)),
                };
                grpc.ready().await.map_err(|e| SendError {
                    reason: chain(&e),
                    retryable: true,
                })?;
                let mut request = tonic::Request::from_parts(
                    metadata.clone(),
                    tonic::Extensions::default(),
                    body,
                );
                request.set_timeout(*timeout);
                grpc.unary(request, PathAndQuery::from_static(GRPC_PATH), RawCodec)
                    .await
                    .map_err(status_err)?
                    .into_inner()
            }
            Transport::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let body = if *gzip { gzip_body(&body)? } else { body };
                let response = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .body(body)
                    .send()
                    .await
                    // reqwest's messages name the URL, never the headers.
                    .map_err(|e| SendError {
                        reason: chain(&e),
                        retryable: true,
                    })?;
                let status = response.status();
                let answer = response.bytes().await.map_err(|e| SendError {
                    reason: format!("HTTP {status}: reading the answer: {}", chain(&e)),
                    retryable: true,
                })?;
                if !status.is_success() {
                    let excerpt = String::from_utf8_lossy(&answer[..answer.len().min(200)])
                        .chars()
                        .filter(|c| !c.is_control())
                        .collect::<String>();
                    return Err(SendError {
                        reason: format!("HTTP {status}: {excerpt}"),
                        retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
                    });
                }
                answer
            }
        };
        proto::decode_response(&answer).map_err(|e| SendError {
            reason: e.to_string(),
            retryable: false,
        })
    }
}

fn gzip_body(body: &[u8]) -> Result<Bytes, SendError> {
    let mut z = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    z.write_all(body)
        .and_then(|()| z.finish())
        .map(Bytes::from)
        .map_err(|e| SendError {
            reason: format!("gzip: {e}"),
            retryable: false,
        })
}

/// A series of a delta sum: the total the last successful export was based on, and the
/// one the export in flight carries.
#[derive(Clone, Copy, Debug)]
struct DeltaSeries {
    committed: u64,
    pending: u64,
    generation: u32,
}

/// Delta temporality from the collectors' running totals.
#[derive(Debug, Default)]
struct Deltas {
    series: HashMap<(u32, u64), DeltaSeries>,
    generation: u32,
    /// `time_unix_nano` of the last successful export: the start of the next interval.
    committed_at: u64,
    pending_at: u64,
}

/// A 64-bit fingerprint of a series' attributes (`DefaultHasher::new` has fixed keys, so
/// it is the same in every export of this process).
fn attributes_hash(attrs: &[KeyValue]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for kv in attrs {
        h.write(kv.key.as_str().as_bytes());
        h.write_u8(0xff);
        match &kv.value {
            Value::String(s) => {
                h.write_u8(1);
                h.write(s.as_str().as_bytes());
                h.write_u8(0xff);
            }
            Value::I64(v) => {
                h.write_u8(2);
                h.write_i64(*v);
            }
            Value::F64(v) => {
                h.write_u8(3);
                h.write_u64(v.to_bits());
            }
            Value::Bool(v) => {
                h.write_u8(4);
                h.write_u8(u8::from(*v));
            }
            _ => h.write_u8(5),
        }
    }
    h.finish()
}

impl Deltas {
    fn begin(&mut self, now: u64) {
        self.generation = self.generation.wrapping_add(1);
        self.pending_at = now;
    }

    /// The change of one series since the last successful export. A total below the
    /// committed one means the counter restarted (interface re-created): all of it is new.
    fn delta(&mut self, metric: usize, attrs: &[KeyValue], total: u64) -> u64 {
        let generation = self.generation;
        let s = self
            .series
            .entry((metric as u32, attributes_hash(attrs)))
            .or_insert(DeltaSeries {
                committed: 0,
                pending: 0,
                generation,
            });
        s.pending = total;
        s.generation = generation;
        total.checked_sub(s.committed).unwrap_or(total)
    }

    /// Forgets series that were not in this export (their interface or key is gone).
    fn end(&mut self) {
        let g = self.generation;
        self.series.retain(|_, s| s.generation == g);
    }

    /// The export in flight was accepted: its totals are the new baseline.
    fn commit(&mut self) {
        for s in self.series.values_mut() {
            s.committed = s.pending;
        }
        self.committed_at = self.pending_at;
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Builds requests from the agent's current values into reused buffers.
struct RequestEncoder {
    catalog: Arc<Catalog>,
    resource: Vec<KeyValue>,
    temporality: Temporality,
    /// Start of every cumulative series: when the exporter started.
    started_at: u64,
    grouper: Grouper,
    deltas: Deltas,
    body: Vec<u8>,
}

impl RequestEncoder {
    /// Encodes one request from `agent`'s values; `None` once the agent is gone.
    fn encode(&mut self, agent: &SharedAgent, stats: &ExportStats) -> Option<Bytes> {
        let now = unix_nanos(SystemTime::now());
        let delta = self.temporality == Temporality::Delta;
        if delta {
            self.deltas.begin(now);
        }
        let start = if delta {
            self.deltas.committed_at
        } else {
            self.started_at
        };
        {
            let guard = agent.lock();
            let a = guard.as_ref()?;
            let deltas = &mut self.deltas;
            self.grouper.fill(
                &self.catalog,
                a,
                Some(stats),
                |i, m: &'static Metric, attrs, value, buf| {
                    let v = match m.kind {
                        Kind::Gauge => PointValue::Double(value.as_f64()),
                        Kind::Counter => {
                            let Some(total) = counter_value(value) else {
                                return;
                            };
                            let v = if delta {
                                deltas.delta(i, attrs, total)
                            } else {
                                total
                            };
                            match i64::try_from(v) {
                                Ok(v) => PointValue::Int(v),
                                Err(_) => PointValue::Double(v as f64),
                            }
                        }
                    };
                    let start = if m.kind == Kind::Gauge { 0 } else { start };
                    proto::put_data_point(buf, attrs, start, now, v);
                },
            );
        }
        if delta {
            self.deltas.end();
        }
        self.grouper.trim();
        let temporality = if delta {
            proto::Temporality::Delta
        } else {
            proto::Temporality::Cumulative
        };
        let grouper = &self.grouper;
        let metrics = self
            .catalog
            .metrics()
            .iter()
            .enumerate()
            .filter(|&(i, _)| !grouper.get(i).is_empty())
            .map(|(i, &metric)| MetricPoints {
                metric,
                temporality,
                points: grouper.get(i),
            });
        proto::put_request(
            &mut self.body,
            &self.resource,
            &Scope {
                name: "retina-agent",
                version: env!("CARGO_PKG_VERSION"),
            },
            metrics,
        );
        // The transport owns the bytes while they are sent; one allocation per export.
        let body = Bytes::copy_from_slice(&self.body);
        trim(&mut self.body);
        Some(body)
    }
}

/// The OTLP output, driven by the daemon.
pub(super) struct Otlp {
    encoder: RequestEncoder,
    transport: Arc<Transport>,
    shared: Arc<Shared>,
    /// Hard bound of one export.
    deadline: Duration,
    in_flight: Option<JoinHandle<bool>>,
    skips: Streak,
}

impl Otlp {
    pub(super) fn new(
        config: &ExportConfig,
        catalog: Arc<Catalog>,
        resource: Vec<KeyValue>,
    ) -> Result<Otlp, ExportError> {
        let endpoint = config.resolved_endpoint();
        let transport = match config.protocol {
            Protocol::Grpc => Transport::grpc(config, &endpoint)?,
            Protocol::HttpProtobuf => Transport::http(config, &endpoint)?,
        };
        let now = unix_nanos(SystemTime::now());
        Ok(Otlp {
            encoder: RequestEncoder {
                catalog,
                resource,
                temporality: config.temporality,
                started_at: now,
                grouper: Grouper::default(),
                deltas: Deltas {
                    committed_at: now,
                    ..Deltas::default()
                },
                body: Vec::new(),
            },
            transport: Arc::new(transport),
            shared: Arc::new(Shared {
                endpoint,
                stats: Arc::new(ExportStats::default()),
                failures: Mutex::new(Streak::default()),
                rejections: Mutex::new(Streak::default()),
            }),
            deadline: config.timeout + HARD_STOP_MARGIN,
            in_flight: None,
            skips: Streak::default(),
        })
    }

    pub(super) fn stats(&self) -> Arc<ExportStats> {
        self.shared.stats.clone()
    }

    pub(super) fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// Settles a finished export (a success makes its totals the delta baseline).
    /// `false` if one is still running.
    async fn reap(&mut self) -> bool {
        match &self.in_flight {
            Some(h) if !h.is_finished() => false,
            Some(_) => {
                if let Some(h) = self.in_flight.take()
                    && let Ok(true) = h.await
                {
                    self.encoder.deltas.commit();
                }
                true
            }
            None => true,
        }
    }

    fn start(&mut self, agent: &SharedAgent, deadline: Duration) -> Option<JoinHandle<bool>> {
        let started = Instant::now();
        let body = self.encoder.encode(agent, &self.shared.stats)?;
        Some(tokio::spawn(export_once(
            self.transport.clone(),
            self.shared.clone(),
            deadline,
            body,
            started,
        )))
    }

    /// Starts one export of what the collectors hold now, unless one is in flight.
    pub(super) async fn export(&mut self, agent: &SharedAgent) {
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
        // The skip streak is not ended here: with a collector down and a short interval,
        // exports and skips alternate, and each would start a new streak (and a warning).
        self.in_flight = self.start(agent, self.deadline);
    }

    /// Waits for the export in flight until `deadline`, then runs a last export bounded by
    /// what is left of it.
    pub(super) async fn finish(&mut self, agent: &SharedAgent, deadline: Instant) {
        if let Some(h) = self.in_flight.take() {
            let left = deadline.saturating_duration_since(Instant::now());
            let abort = h.abort_handle();
            match tokio::time::timeout(left, h).await {
                Ok(Ok(true)) => self.encoder.deltas.commit(),
                Ok(_) => {}
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
            return;
        }
        let Some(task) = self.start(agent, left.min(self.deadline)) else {
            return;
        };
        let abort = task.abort_handle();
        match tokio::time::timeout(left, task).await {
            Ok(_) => tracing::debug!("final OTLP export done"),
            Err(_) => {
                abort.abort();
                tracing::warn!("final OTLP export did not finish in time; abandoned");
            }
        }
    }
}

/// Sends one request within `deadline`, retrying transient failures. `true` if the
/// collector accepted it (possibly in part).
async fn export_once(
    transport: Arc<Transport>,
    shared: Arc<Shared>,
    deadline: Duration,
    body: Bytes,
    started: Instant,
) -> bool {
    let attempts = async {
        let mut delays = RETRY_DELAYS.iter();
        loop {
            match transport.send(body.clone()).await {
                Err(e) if e.retryable => match delays.next() {
                    Some(d) => {
                        tracing::debug!(endpoint = %shared.endpoint, "OTLP export attempt failed, retrying: {}", e.reason);
                        tokio::time::sleep(*d).await;
                    }
                    None => return Err(e),
                },
                other => return other,
            }
        }
    };
    let result = tokio::time::timeout(deadline, attempts).await;
    shared.stats.record_duration(started.elapsed());
    match result {
        Ok(Ok(partial)) => {
            if let Some(p) = partial {
                shared.rejected(&p);
            }
            shared.succeeded();
            true
        }
        Ok(Err(e)) => {
            shared.failed(&e.reason);
            false
        }
        Err(_) => {
            shared.failed(&format!(
                "no answer within {}",
                humantime::format_duration(deadline)
            ));
            false
        }
    }
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

    fn kv(name: &'static str) -> [KeyValue; 1] {
        [KeyValue::new("network.interface.name", name)]
    }

    #[test]
    fn deltas_count_from_the_last_successful_export() {
        let mut d = Deltas::default();
        d.begin(10);
        assert_eq!(
            d.delta(0, &kv("a"), 100),
            100,
            "a new series: all of it is new"
        );
        assert_eq!(
            d.delta(1, &kv("a"), 7),
            7,
            "another metric, same attributes"
        );
        d.end();
        d.commit();
        assert_eq!(d.committed_at, 10);
        d.begin(20);
        assert_eq!(d.delta(0, &kv("a"), 130), 30);
        assert_eq!(d.delta(1, &kv("a"), 7), 0);
        d.end();
        // That export failed: no commit. The next one carries both intervals.
        d.begin(30);
        assert_eq!(d.delta(0, &kv("a"), 150), 50);
        d.end();
        assert_eq!(
            d.series.len(),
            1,
            "metric 1's series vanished and is forgotten"
        );
        d.commit();
        assert_eq!(d.committed_at, 30);
        d.begin(40);
        assert_eq!(d.delta(0, &kv("a"), 5), 5, "the counter restarted");
        assert_eq!(d.delta(0, &kv("b"), 5), 5);
        d.end();
        d.commit();
        d.begin(50);
        assert_eq!(d.delta(0, &kv("a"), 6), 1);
    }

    #[test]
    fn attribute_hashes_tell_values_and_types_apart() {
        let h = |a: &[KeyValue]| attributes_hash(a);
        assert_ne!(h(&kv("a")), h(&kv("b")));
        assert_ne!(
            h(&[KeyValue::new("k", "1")]),
            h(&[KeyValue::new("k", 1i64)])
        );
        assert_ne!(
            h(&[KeyValue::new("ab", "c")]),
            h(&[KeyValue::new("a", "bc")])
        );
        assert_eq!(h(&kv("a")), h(&kv("a")));
    }

    #[test]
    fn error_chain_skips_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(chain(&io), "refused");
    }
}
