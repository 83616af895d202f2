//! Section 8: what one export costs. The agent with every collector, OTLP/gRPC to a real
//! collector (rotel-agent, blackhole exporter) and the Prometheus endpoint on, on one
//! current-thread runtime as the daemon runs them. Each export (the SDK's collect through
//! the observable instruments, the exporter's transform and protobuf encoding, the send
//! and the answer) and each scrape (the OpenMetrics encoding through `prometheus-client`
//! and the HTTP exchange, client side included) is timed with the process's CPU clock, so
//! the blocking thread a scrape runs on is counted too. Collection cycles run between
//! exports but are not in the figures.
//!
//! It runs once per series policy (`informative`, the default, and `everything`), and once
//! more with the default policy under delta temporality (`export.temporality = "delta"`:
//! only the counters that moved are exported). With the default policy it then measures a
//! collector outage: [`PACED`] cycles paced at [`PACE`]
//! with the collector up (collection plus export), then as many with it killed, and
//! compares the CPU per cycle.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use retina_agent::{
    config::{ExportConfig, PrometheusConfig, SeriesPolicy, Temporality},
    export::{Exporters, SharedAgent, catalog::Catalog},
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{
    cycle,
    sys::{self, ChildGuard, Summary},
};

/// Exports and scrapes before the measured ones (connections made, buffers sized).
const WARM: usize = 10;
/// Cycles of each half of the outage measurement, and their pacing (the daemon's loop at a
/// short interval: the exporter's backoff is in wall time).
pub const PACED: usize = 40;
pub const PACE: Duration = Duration::from_millis(500);

/// CPU per cycle (collection and export) with the collector up, then down.
pub struct Outage {
    pub up_us: Summary,
    pub down_us: Summary,
    /// Exports attempted (and failed) while down, of [`PACED`].
    pub attempts: u64,
    /// CPU of the first failed export alone (collect, encode, refused connection).
    pub first_failure_us: f64,
}

pub struct Figures {
    pub policy: &'static str,
    pub temporality: &'static str,
    /// Data points per export sent (median): under delta, the counters that moved and the
    /// gauges.
    pub sent_points: u64,
    /// Points the outputs carry under the policy; `points` is every series held.
    pub exported_points: usize,
    pub outage: Option<Outage>,
    pub points: usize,
    pub otlp_cpu_us: Summary,
    pub sdk_collect_us: Summary,
    pub scrape_cpu_us: Summary,
    pub scrape_bytes: usize,
    pub json: Value,
}

/// `GET /metrics`; returns the body's length.
async fn scrape(addr: SocketAddr) -> Result<usize> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::with_capacity(2 << 20);
    s.read_to_end(&mut out).await?;
    ensure!(
        out.starts_with(b"HTTP/1.1 200"),
        "scrape answered {:?}",
        String::from_utf8_lossy(&out[..out.len().min(80)])
    );
    Ok(out.len())
}

pub fn policy_name(p: SeriesPolicy) -> &'static str {
    match p {
        SeriesPolicy::Informative => "informative",
        SeriesPolicy::Everything => "everything",
    }
}

pub fn temporality_name(t: Temporality) -> &'static str {
    match t {
        Temporality::Cumulative => "cumulative",
        Temporality::Delta => "delta",
    }
}

/// `exports` measured OTLP exports and as many scrapes under `policy` and `temporality`;
/// with `outage`, the collector-down measurement after them.
pub fn measure(
    rotel: &Path,
    exports: usize,
    policy: SeriesPolicy,
    temporality: Temporality,
    outage: bool,
) -> Result<Figures> {
    let mut agent = cycle::full_agent()?;
    agent.cycle();
    let mut points = 0;
    agent.visit(&mut |_: &'static retina_agent::model::Metric,
                      _: &[opentelemetry::KeyValue],
                      _: retina_agent::model::Number| points += 1);
    let catalog = Catalog::new(&agent, true, policy, &Default::default());
    let exported_points: usize = catalog.count_points(&agent, None).iter().sum();
    let shared = SharedAgent::new(agent);
    let (grpc, http) = (sys::free_port()?, sys::free_port()?);
    let mut cmd = sys::blackhole_rotel(rotel, grpc, http);
    let mut rotel_guard = Some(ChildGuard::spawn("rotel-agent", &mut cmd)?);
    sys::wait_for_port(grpc, "rotel-agent")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let export = ExportConfig {
            enabled: true,
            endpoint: Some(format!("http://127.0.0.1:{grpc}")),
            timeout: Duration::from_secs(5),
            insecure: true,
            series: policy,
            temporality,
            ..ExportConfig::default()
        };
        let prometheus = PrometheusConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let mut ex = Exporters::start(&shared, &export, &prometheus).await?;
        let addr = ex.prometheus_addr().context("no Prometheus endpoint")?;
        let cycle = || {
            if let Some(a) = shared.lock().as_mut() {
                a.cycle();
            }
        };
        let stats = ex.otlp_stats().context("no OTLP exporter")?;
        let mut otlp = Vec::with_capacity(exports);
        let mut collect = Vec::with_capacity(exports);
        let mut sent = Vec::with_capacity(exports);
        for i in 0..WARM + exports {
            sys::check_stop()?;
            cycle();
            let c0 = sys::process_cpu_ns();
            ex.export().await;
            ex.flush().await;
            let c1 = sys::process_cpu_ns();
            if i >= WARM {
                otlp.push(c1 - c0);
                // Wall time of the SDK's collect, on this thread (no waiting in it).
                collect.push(
                    stats
                        .last_collect_nanos
                        .load(std::sync::atomic::Ordering::Relaxed),
                );
                sent.push(stats.last_points.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
        let failures = stats.failures.load(std::sync::atomic::Ordering::Relaxed);
        let successes = stats.successes.load(std::sync::atomic::Ordering::Relaxed);
        ensure!(
            failures == 0 && successes == (WARM + exports) as u64,
            "exports to rotel: {successes} succeeded, {failures} failed"
        );
        let mut scrapes = Vec::with_capacity(exports);
        let mut bytes = 0;
        for i in 0..WARM + exports {
            sys::check_stop()?;
            cycle();
            let c0 = sys::process_cpu_ns();
            bytes = scrape(addr).await?;
            let c1 = sys::process_cpu_ns();
            if i >= WARM {
                scrapes.push(c1 - c0);
            }
        }
        let outage = if outage {
            let mut up = Vec::with_capacity(PACED);
            for _ in 0..PACED {
                sys::check_stop()?;
                tokio::time::sleep(PACE).await;
                let c0 = sys::process_cpu_ns();
                cycle();
                ex.export().await;
                ex.flush().await;
                up.push(sys::process_cpu_ns() - c0);
            }
            drop(rotel_guard.take());
            let failed_before = stats.failures.load(std::sync::atomic::Ordering::Relaxed);
            let mut down = Vec::with_capacity(PACED);
            let mut first_failure = 0;
            for i in 0..PACED {
                sys::check_stop()?;
                tokio::time::sleep(PACE).await;
                let c0 = sys::process_cpu_ns();
                cycle();
                ex.export().await;
                ex.flush().await;
                let c = sys::process_cpu_ns() - c0;
                if i == 0 {
                    first_failure = c;
                }
                down.push(c);
            }
            let attempts =
                stats.failures.load(std::sync::atomic::Ordering::Relaxed) - failed_before;
            Some(Outage {
                up_us: Summary::of(&up).scaled(1e-3),
                down_us: Summary::of(&down).scaled(1e-3),
                attempts,
                first_failure_us: first_failure as f64 * 1e-3,
            })
        } else {
            None
        };
        ex.shutdown(Instant::now() + Duration::from_secs(3)).await;
        let otlp_cpu_us = Summary::of(&otlp).scaled(1e-3);
        let sdk_collect_us = Summary::of(&collect).scaled(1e-3);
        let scrape_cpu_us = Summary::of(&scrapes).scaled(1e-3);
        let outage_json = outage.as_ref().map(|o| {
            json!({
                "pace_ms": PACE.as_millis() as u64,
                "cycles": PACED,
                "cpu_per_cycle_up_us": o.up_us.json(),
                "cpu_per_cycle_down_us": o.down_us.json(),
                "mean_ratio_down_up": o.down_us.mean / o.up_us.mean,
                "attempts_while_down": o.attempts,
                "first_failed_export_cpu_us": o.first_failure_us,
            })
        });
        sent.sort_unstable();
        let sent_points = sent.get(sent.len() / 2).copied().unwrap_or(0);
        let json = json!({
            "policy": policy_name(policy),
            "temporality": temporality_name(temporality),
            "points_per_export_sent_median": sent_points,
            "exported_points": exported_points,
            "collector_outage": outage_json,
            "data_points": points,
            "exports": exports,
            "otlp_export_cpu_us": otlp_cpu_us.json(),
            "sdk_collect_wall_us": sdk_collect_us.json(),
            "scrape_cpu_us": scrape_cpu_us.json(),
            "scrape_bytes": bytes,
            "exports_succeeded": successes,
        });
        Ok(Figures {
            policy: policy_name(policy),
            temporality: temporality_name(temporality),
            sent_points,
            exported_points,
            outage,
            points,
            otlp_cpu_us,
            sdk_collect_us,
            scrape_cpu_us,
            scrape_bytes: bytes,
            json,
        })
    })
}
