//! A collector's OTLP answer: the body decoded as `opentelemetry-otlp` 0.33 decodes it
//! (prost, `ExportMetricsServiceResponse`; the same for OTLP/HTTP and, after the gRPC
//! frame, for gRPC), the partial-success event it logs for it, and the agent's layer that
//! counts those events (`retina.agent.export.rejected`).
//!
//! Input: an answer body (protobuf).
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message as _;
use retina_agent::export::{partial_success_layer, partial_success_totals};
use tracing_subscriber::layer::SubscriberExt as _;

static INIT: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(partial_success_layer());
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    });
    let Ok(response) = ExportMetricsServiceResponse::decode(data) else {
        return;
    };
    let before = partial_success_totals();
    // As `handle_partial_success` (http/metrics.rs) and the tonic client
    // (tonic/metrics.rs) of opentelemetry-otlp 0.33.1 log it, through `otel_warn!`.
    if let Some(p) = response.partial_success
        && (p.rejected_data_points > 0 || !p.error_message.is_empty())
    {
        tracing::warn!(
            name: "HttpMetricsClient.PartialSuccess",
            target: "opentelemetry-otlp",
            name = "HttpMetricsClient.PartialSuccess",
            rejected_data_points = p.rejected_data_points,
            error_message = p.error_message.as_str(),
        );
        let after = partial_success_totals();
        assert_eq!(after.0, before.0 + 1, "one answer counted");
        // The counter of rejected points never goes back.
        assert!(
            after.1 >= before.1,
            "rejected points went from {} to {}",
            before.1,
            after.1
        );
    }
});
