use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message as _;

use super::*;

/// Found by the fuzz target `otlp` (`fuzz/`): answers claiming huge rejected counts
/// made the process-wide total wrap and go backwards.
#[test]
fn huge_rejected_counts_saturate_instead_of_wrapping() {
    let crash: &[u8] = &[
        0x0a, 0x18, 0x08, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3b, 0xc8, 0x18,
        0x97, 0x18, 0x12, 0x00, 0x12, 0x00, 0xc8, 0x18, 0xe3, 0x36, 0x12, 0x00, 0xc8, 0x3d,
        0xc0, 0x0a,
    ];
    let answer = ExportMetricsServiceResponse::decode(crash).unwrap();
    let rejected = answer.partial_success.unwrap().rejected_data_points;
    assert!(rejected > 1 << 60, "{rejected}");
    let total = AtomicU64::new(0);
    let mut last = 0;
    for _ in 0..8 {
        add_saturating(&total, u64::try_from(rejected).unwrap());
        let now = total.load(Ordering::Relaxed);
        assert!(now >= last, "went back from {last} to {now}");
        last = now;
    }
    assert_eq!(last, u64::MAX);
}
