//! Builds `opentelemetry-otlp`'s `MetricExporter` and `LogExporter` from the agent's
//! settings.
//!
//! The exporter's own builders do not read `OTEL_EXPORTER_OTLP_CERTIFICATE` or the
//! client certificate and key, so the agent builds the transport itself and hands it over:
//! a tonic `Channel` (gRPC) or a reqwest `Client` (HTTP/protobuf), with rustls on ring,
//! the configured CA bundle (or the system roots) and client identity. Everything else
//! (timeouts, retries (off: one attempt per export), gzip, headers) goes through the exporter's
//! builder. Explicit settings win over the exporter's own reading of `OTEL_*`; the agent
//! has already folded those variables into its configuration.
//!
//! Answers are bounded: the HTTP client reads at most 4 MiB of a collector's answer
//! (`opentelemetry-http`'s limit for reqwest), and gRPC decodes at most tonic's 4 MiB per
//! message; anything larger fails the export.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

use opentelemetry_otlp::{
    LogExporter, MetricExporter, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::metrics::Temporality as SdkTemporality;

use super::super::ExportError;
use crate::config::{Compression, ExportConfig, Protocol, Temporality};

/// An error and its sources, `: `-separated, without repeats.
use crate::kernel::sys::error_chain;

/// A PEM file: a regular file of at most [`crate::fsutil::PEM_MAX_BYTES`].
fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ExportError> {
    crate::fsutil::read_regular(path, crate::fsutil::PEM_MAX_BYTES).map_err(|source| {
        ExportError::ReadFile {
            what,
            path: path.to_path_buf(),
            source,
        }
    })
}

pub(super) fn sdk_temporality(t: Temporality) -> SdkTemporality {
    match t {
        Temporality::Cumulative => SdkTemporality::Cumulative,
        Temporality::Delta => SdkTemporality::Delta,
    }
}

/// One attempt per export: the exporter rebuilds and re-encodes the whole request for
/// each retry, so retries made a collector that is down cost more CPU than one that is up.
/// The exporter backs off itself instead, without collecting (`super::backoff`).
fn retry_policy() -> RetryPolicy {
    RetryPolicy::default().with_max_retries(0)
}

fn compression(c: Compression) -> Option<opentelemetry_otlp::Compression> {
    match c {
        Compression::Gzip => Some(opentelemetry_otlp::Compression::Gzip),
        Compression::None => None,
    }
}

fn build_err(endpoint: &str, reason: String) -> ExportError {
    ExportError::Build {
        endpoint: endpoint.to_string(),
        reason,
    }
}

/// The configured headers ([`ExportConfig::header_map`]).
fn header_map(config: &ExportConfig, endpoint: &str) -> Result<http::HeaderMap, ExportError> {
    config
        .header_map()
        .map_err(|e| build_err(endpoint, e.to_string()))
}

/// Why the last HTTP request failed, in full: the exporter's own error says only
/// "network error" or the status code.
#[derive(Debug, Default)]
pub(super) struct LastError(Mutex<Option<String>>);

impl LastError {
    fn set(&self, reason: String) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(reason);
        }
    }

    /// Takes the reason recorded since the last call.
    pub(super) fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut l| l.take())
    }
}

/// The reqwest client as `opentelemetry-http` drives it (answers capped at 4 MiB), keeping
/// the reason of a failure for the agent's log.
#[derive(Debug)]
struct Client {
    inner: reqwest::Client,
    last_error: Arc<LastError>,
}

/// How much of an error answer's body the log shows.
const BODY_EXCERPT: usize = 200;

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        match self.inner.send_bytes(request).await {
            Ok(response) => {
                let status = response.status();
                if !status.is_success() {
                    let body = response.body();
                    let excerpt: String =
                        String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)])
                            .chars()
                            .filter(|c| !c.is_control())
                            .collect();
                    self.last_error.set(format!("HTTP {status}: {excerpt}"));
                }
                Ok(response)
            }
            Err(e) => {
                self.last_error.set(error_chain(&*e));
                Err(e)
            }
        }
    }
}

/// The metric exporter for `config`, sending to `endpoint` (already resolved), and where
/// the HTTP transport leaves the reason of a failure.
pub(super) fn exporter(
    config: &ExportConfig,
    endpoint: &str,
) -> Result<(MetricExporter, Arc<LastError>), ExportError> {
    let last_error = Arc::new(LastError::default());
    let temporality = sdk_temporality(config.temporality);
    let built = match config.protocol {
        Protocol::Grpc => tonic_config(MetricExporter::builder().with_tonic(), config, endpoint)?
            .with_temporality(temporality)
            .build(),
        Protocol::HttpProtobuf => {
            http_config(MetricExporter::builder().with_http(), config, endpoint, &last_error)?
                .with_temporality(temporality)
                .build()
        }
    };
    built
        .map(|e| (e, last_error))
        .map_err(|e| build_err(endpoint, error_chain(&e)))
}

/// The log exporter for `config`: the same transport, headers, TLS, timeout and
/// compression as the metric exporter's ([`exporter`]).
pub(super) fn log_exporter(
    config: &ExportConfig,
    endpoint: &str,
) -> Result<(LogExporter, Arc<LastError>), ExportError> {
    let last_error = Arc::new(LastError::default());
    let built = match config.protocol {
        Protocol::Grpc => tonic_config(LogExporter::builder().with_tonic(), config, endpoint)?.build(),
        Protocol::HttpProtobuf => {
            http_config(LogExporter::builder().with_http(), config, endpoint, &last_error)?.build()
        }
    };
    built
        .map(|e| (e, last_error))
        .map_err(|e| build_err(endpoint, error_chain(&e)))
}

/// A gRPC exporter builder with the agent's channel (TLS), timeout, headers as metadata,
/// one attempt per export and compression.
fn tonic_config<B: WithTonicConfig + WithExportConfig>(
    builder: B,
    config: &ExportConfig,
    endpoint: &str,
) -> Result<B, ExportError> {
    let mut b = builder
        .with_channel(grpc_channel(config, endpoint)?)
        .with_timeout(config.timeout)
        .with_metadata(tonic::metadata::MetadataMap::from_headers(header_map(
            config, endpoint,
        )?))
        .with_retry_policy(retry_policy());
    if let Some(c) = compression(config.compression) {
        b = b.with_compression(c);
    }
    Ok(b)
}

/// An HTTP/protobuf exporter builder with the agent's client (TLS), endpoint, timeout,
/// headers, one attempt per export and compression; the client leaves the reason of a
/// failure in `last_error`.
fn http_config<B: WithHttpConfig + WithExportConfig>(
    builder: B,
    config: &ExportConfig,
    endpoint: &str,
    last_error: &Arc<LastError>,
) -> Result<B, ExportError> {
    // Checked here for a clear error; the exporter takes them as strings.
    header_map(config, endpoint)?;
    let headers: HashMap<String, String> = config
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let mut b = builder
        .with_endpoint(endpoint)
        .with_http_client(Client {
            inner: http_client(config)?,
            last_error: last_error.clone(),
        })
        .with_timeout(config.timeout)
        .with_headers(headers)
        .with_retry_policy(retry_policy());
    if let Some(c) = compression(config.compression) {
        b = b.with_compression(c);
    }
    Ok(b)
}

/// A lazily connecting gRPC channel: bounded by the timeout, kept alive by HTTP/2 pings,
/// with TLS for `https://`.
fn grpc_channel(
    config: &ExportConfig,
    endpoint: &str,
) -> Result<tonic::transport::Channel, ExportError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut ep = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| build_err(endpoint, error_chain(&e)))?
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .user_agent(concat!("retina-agent/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| build_err(endpoint, error_chain(&e)))?
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
            .map_err(|e| ExportError::Tls(error_chain(&e)))?;
    }
    Ok(ep.connect_lazy())
}

/// The HTTP client: rustls with the configured CA and client identity, bounded by the
/// timeout.
fn http_client(config: &ExportConfig) -> Result<reqwest::Client, ExportError> {
    // reqwest is built without a default crypto provider (the one it would pull in needs
    // a C/assembly build of aws-lc); use ring, as tonic does. An error means one is
    // installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut client = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .user_agent(concat!("retina-agent/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.ca_file {
        let certs = reqwest::Certificate::from_pem_bundle(&read("CA file", path)?)
            .map_err(|e| ExportError::Tls(format!("{}: {}", path.display(), error_chain(&e))))?;
        client = client.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&config.client_cert_file, &config.client_key_file) {
        let mut pem = read("client certificate", cert)?;
        pem.push(b'\n');
        pem.extend(read("client key", key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| ExportError::Tls(format!("client certificate/key: {}", error_chain(&e))))?;
        client = client.identity(identity);
    }
    client.build().map_err(|e| ExportError::Tls(error_chain(&e)))
}
