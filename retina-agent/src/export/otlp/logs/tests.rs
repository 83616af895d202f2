//! The log output's bound: with a collector that accepts connections and never answers,
//! records over [`MAX_QUEUE`] are counted as dropped, never queued, and shutdown stays
//! within its deadline.

use std::time::{Duration, Instant};

use opentelemetry_sdk::Resource;

use super::{LogOutput, MAX_QUEUE};
use crate::config::{ExportConfig, Protocol};

#[test]
fn a_full_queue_is_counted_not_grown_and_shutdown_is_bounded() {
    // Connections complete in the kernel's backlog; nothing ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = ExportConfig {
        protocol: Protocol::HttpProtobuf,
        endpoint: Some(format!("http://{}", silent.local_addr().unwrap())),
        timeout: Duration::from_millis(500),
        ..ExportConfig::default()
    };
    // The daemon's runtime: one thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let out = LogOutput::new(&config, Resource::builder_empty().build()).unwrap();
        assert!(out.endpoint().ends_with("/v1/logs"), "{}", out.endpoint());
        let stats = out.stats();
        let extra = 500;
        for _ in 0..MAX_QUEUE + extra {
            out.emit(out.record());
        }
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        // Nothing can have been exported or failed yet: the first export waits its timeout.
        assert_eq!(load(&stats.dropped), extra as u64);
        assert_eq!(load(&stats.exported), 0);
        let start = Instant::now();
        out.shutdown(start + Duration::from_secs(5)).await;
        assert!(start.elapsed() < Duration::from_secs(6), "{:?}", start.elapsed());
        assert_eq!(load(&stats.exported), 0);
    });
    drop(silent);
}
