//! The exporter against minimal in-process OTLP collectors (gRPC through tonic's server,
//! HTTP through hyper's): partial success is counted from the exporter's own report, and
//! an answer larger than any real OTLP answer fails the export instead of being read.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_server::{MetricsService, MetricsServiceServer},
};
use opentelemetry_sdk::metrics::{data::ResourceMetrics, exporter::PushMetricExporter as _};
use prost::Message as _;
use tracing_subscriber::layer::SubscriberExt as _;

use super::{partial, transport};
use crate::config::{ExportConfig, Protocol};

const REJECTED: i64 = 7;

/// What the test collectors answer.
#[derive(Clone, Copy)]
enum Answer {
    /// A partial success rejecting [`REJECTED`] points.
    Partial,
    /// An answer of 64 MiB.
    Huge,
}

fn response(answer: Answer) -> ExportMetricsServiceResponse {
    let message = match answer {
        Answer::Partial => "rejected by the test".to_string(),
        Answer::Huge => "x".repeat(64 << 20),
    };
    ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: REJECTED,
            error_message: message,
        }),
    }
}

struct Grpc(Answer);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        _: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(response(self.0)))
    }
}

async fn grpc_collector(answer: Answer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = MetricsServiceServer::new(Grpc(answer)).max_encoding_message_size(usize::MAX);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

/// Answers every request with `answer`, as protobuf; the huge one is streamed in 1 MiB
/// chunks after a `Content-Length` of 1 GiB, as a hostile endpoint would.
async fn http_collector(answer: Answer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let body = match answer {
                            Answer::Partial => {
                                Full::new(Bytes::from(response(answer).encode_to_vec())).boxed()
                            }
                            Answer::Huge => {
                                let chunk = Bytes::from(vec![0u8; 1 << 20]);
                                let frames = futures_util::stream::iter((0..1024).map(move |_| {
                                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                        chunk.clone(),
                                    ))
                                }));
                                StreamBody::new(frames).boxed()
                            }
                        };
                        let mut r = http::Response::new(body);
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/x-protobuf"),
                        );
                        if let Answer::Huge = answer {
                            r.headers_mut().insert(
                                http::header::CONTENT_LENGTH,
                                http::HeaderValue::from_static("1073741824"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn config(protocol: Protocol, endpoint: String) -> ExportConfig {
    ExportConfig {
        protocol,
        endpoint: Some(endpoint),
        timeout: Duration::from_secs(5),
        ..ExportConfig::default()
    }
}

/// One export of an empty request to a collector answering `answer`, with the
/// partial-success layer installed; returns the outcome and the rejected points counted.
fn export_once(protocol: Protocol, answer: Answer) -> (Result<(), String>, u64) {
    // The partial-success totals are process-wide: one of these tests at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let subscriber = tracing_subscriber::registry().with(partial::layer());
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let endpoint = match protocol {
                Protocol::Grpc => format!("http://{}", grpc_collector(answer).await),
                Protocol::HttpProtobuf => {
                    format!("http://{}/v1/metrics", http_collector(answer).await)
                }
            };
            let config = config(protocol, endpoint.clone());
            let (exporter, last_error) = transport::exporter(&config, &endpoint).unwrap();
            let before = partial::totals().1;
            let result = exporter
                .export(&ResourceMetrics::default())
                .await
                .map_err(|e| {
                    let detail = last_error.take().unwrap_or_default();
                    format!("{e}: {detail}")
                });
            (result, partial::totals().1 - before)
        })
    })
}

#[test]
fn grpc_partial_success_is_counted() {
    let (result, rejected) = export_once(Protocol::Grpc, Answer::Partial);
    assert_eq!(result, Ok(()));
    assert_eq!(rejected, REJECTED as u64);
    assert_eq!(partial::last_message(), "rejected by the test");
}

#[test]
fn http_partial_success_is_counted() {
    let (result, rejected) = export_once(Protocol::HttpProtobuf, Answer::Partial);
    assert_eq!(result, Ok(()));
    assert_eq!(rejected, REJECTED as u64);
}

#[test]
fn a_huge_grpc_answer_fails_the_export() {
    let (result, rejected) = export_once(Protocol::Grpc, Answer::Huge);
    let err = result.unwrap_err();
    assert!(
        err.contains("message length too large") || err.contains("OutOfRange"),
        "{err}"
    );
    assert_eq!(rejected, 0);
}

#[test]
fn a_huge_http_answer_fails_the_export() {
    let (result, rejected) = export_once(Protocol::HttpProtobuf, Answer::Huge);
    let err = result.unwrap_err();
    assert!(err.contains("4 MiB"), "{err}");
    assert_eq!(rejected, 0);
}

/// The seed corpus of the fuzz target `otlp` holds the very answer these collectors send,
/// as prost encodes it.
#[test]
fn fuzz_seed_is_the_prost_encoding_of_a_partial_success() {
    let seed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/otlp/partial-success"
    ))
    .unwrap();
    assert_eq!(seed, response(Answer::Partial).encode_to_vec());
}
