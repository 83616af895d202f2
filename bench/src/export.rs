//! Section 8: what one export costs. The agent with every collector, OTLP/gRPC to a real
//! collector (rotel-agent, blackhole exporter) and the Prometheus endpoint on, on one
//! current-thread runtime as the daemon runs them. Each export (the SDK's collect through
//! the observable instruments, the exporter's transform and protobuf encoding, the send
//! and the answer) and each scrape (the OpenMetrics encoding through `prometheus-client`
//! and the HTTP exchange, client side included) is timed with the process's CPU clock, so
//! the blocking thread a scrape runs on is counted too. Collection cycles run between
//! exports but are not in the figures.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use retina_agent::{
    config::{ExportConfig, PrometheusConfig},
    export::{Exporters, SharedAgent},
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{
    cycle,
    sys::{self, ChildGuard, Summary},
};

/// Exports and scrapes before the measured ones (connections made, buffers sized).
const WARM: usize = 10;

pub struct Figures {
    pub points: usize,
    pub otlp_cpu_us: Summary,
    pub sdk_collect_us: Summary,
    pub scrape_cpu_us: Summary,
    pub scrape_bytes: usize,
    pub json: Value,
}

fn wait_for_port(port: u16) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        sys::sleep(Duration::from_millis(50))?;
    }
    bail!("rotel-agent did not listen on 127.0.0.1:{port} within 20 s")
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

/// `exports` measured OTLP exports and as many scrapes.
pub fn measure(rotel: &Path, exports: usize) -> Result<Figures> {
    let mut agent = cycle::full_agent()?;
    agent.cycle();
    let mut points = 0;
    agent.visit(&mut |_: &'static retina_agent::model::Metric,
                      _: &[opentelemetry::KeyValue],
                      _: retina_agent::model::Number| points += 1);
    let shared = SharedAgent::new(agent);
    let (grpc, http) = (sys::free_port()?, sys::free_port()?);
    let mut cmd = Command::new(rotel);
    cmd.args(["start", "--exporter", "blackhole", "--otlp-grpc-endpoint"])
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{http}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _rotel = ChildGuard::spawn("rotel-agent", &mut cmd)?;
    wait_for_port(grpc)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let export = ExportConfig {
            enabled: true,
            endpoint: Some(format!("http://127.0.0.1:{grpc}")),
            timeout: Duration::from_secs(5),
            insecure: true,
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
        ex.shutdown(Instant::now() + Duration::from_secs(3)).await;
        let otlp_cpu_us = Summary::of(&otlp).scaled(1e-3);
        let sdk_collect_us = Summary::of(&collect).scaled(1e-3);
        let scrape_cpu_us = Summary::of(&scrapes).scaled(1e-3);
        let json = json!({
            "data_points": points,
            "exports": exports,
            "otlp_export_cpu_us": otlp_cpu_us.json(),
            "sdk_collect_wall_us": sdk_collect_us.json(),
            "scrape_cpu_us": scrape_cpu_us.json(),
            "scrape_bytes": bytes,
            "exports_succeeded": successes,
        });
        Ok(Figures {
            points,
            otlp_cpu_us,
            sdk_collect_us,
            scrape_cpu_us,
            scrape_bytes: bytes,
            json,
        })
    })
}
