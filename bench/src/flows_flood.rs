//! Section 13 (`--only flows-flood`): issue 22's CPU target for the daemon with drop flows
//! on. The agent runs as the packaged unit does (uid 65534, CAP_BPF + CAP_PERFMON),
//! `run --interval 1s` with `drops.flows = true` and a budget of [`BUDGET`] events a
//! second for the node, exporting the events as OTLP log records to rotel (blackhole).
//! Its process CPU clock is read over three windows of the same wall time:
//!
//! - idle: no drops of ours; its CPU per second is the CPU of one collection cycle (the
//!   interval is 1 s);
//! - flood: [`FLOOD`] UDP datagrams to a closed port from a namespace, as fast as one
//!   sender goes, every one a drop the probe counts and samples (most suppressed in the
//!   kernel);
//! - events: as many datagrams as the flood window exported records, paced over the window
//!   (the buckets let most through): the CPU per exported record, (events − idle) over the
//!   records it exported beyond idle's.
//!
//! The figure: the flood's CPU beyond idle, less its records beyond idle's at that cost, per
//! second and in collection cycles: what the flood costs beyond the events it actually
//! exports (target: under one cycle per second). Drops elsewhere on the machine send events
//! in every window; where the events window exported no more records than idle, no cost per
//! record can be told and none is taken off (the figure is then the flood's whole CPU
//! beyond idle).

use std::{
    fs::File,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::{
    node_exporter,
    sys::{self, ChildGuard},
};

/// Datagrams of the flood.
pub const FLOOD: u64 = 1_000_000;
/// Sampled events a second for the node (`drops.flow_events_per_second`).
const BUDGET: u64 = 100;

pub struct Options<'a> {
    pub agent_bin: &'a Path,
    pub rotel: &'a Path,
    pub window: Duration,
    pub log: PathBuf,
}

/// A counter of the agent's scrape (the sum of its series).
fn counter(prom: SocketAddr, name: &str) -> Result<u64> {
    let body = node_exporter::scrape(prom)?;
    Ok(body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// The agent's CPU (ms) and the records it exported over `length` from now, while
/// `during` runs (it returns before the window ends; the window is waited out).
fn window(
    agent: &mut ChildGuard,
    prom: SocketAddr,
    length: Duration,
    during: impl FnOnce() -> Result<()>,
) -> Result<(f64, u64, f64)> {
    let exported = "retina_agent_export_logs_exported_total";
    let records0 = counter(prom, exported)?;
    let pid = agent.pid();
    let start = Instant::now();
    let cpu0 = sys::cpu_ns(pid)?;
    during()?;
    let busy = start.elapsed().as_secs_f64();
    ensure!(
        start.elapsed() < length,
        "the load took {busy:.1} s, longer than the {length:?} window"
    );
    sys::sleep(length - start.elapsed())?;
    let cpu = sys::cpu_ns(pid)? - cpu0;
    if let Some(status) = agent.exited() {
        bail!("retina-agent exited ({status})");
    }
    // The records of the window's last second are exported within the next one.
    sys::sleep(Duration::from_secs(2))?;
    let records = counter(prom, exported)? - records0;
    Ok((cpu as f64 / 1e6, records, busy))
}

pub fn run(o: &Options) -> Result<Value> {
    let exe = std::env::current_exe().context("current_exe")?;
    let ns = retina_tests::NetNs::new("bflows")?;
    let (grpc, http) = (sys::free_port()?, sys::free_port()?);
    let _rotel = ChildGuard::spawn(
        "rotel-agent",
        &mut sys::blackhole_rotel(o.rotel, grpc, http),
    )?;
    sys::wait_for_port(grpc, "rotel-agent")?;
    let prom: SocketAddr = ([127, 0, 0, 1], sys::free_port()?).into();
    let config = o.log.with_file_name("flows-flood-agent.toml");
    std::fs::write(
        &config,
        format!(
            "[export]\nendpoint = \"http://127.0.0.1:{grpc}\"\n[prometheus]\nlisten = \"{prom}\"\n\
             [drops]\nflows = true\nflow_events_per_second = {BUDGET}\n"
        ),
    )?;
    let log = File::create(&o.log).with_context(|| format!("creating {}", o.log.display()))?;
    let mut cmd = sys::agent_as_unit(o.agent_bin);
    cmd.args(["run", "--interval", "1s", "--no-summary", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut agent = ChildGuard::spawn("retina-agent", &mut cmd)?;
    let ready = Instant::now() + Duration::from_secs(20);
    while node_exporter::scrape(prom).is_err() {
        if Instant::now() > ready || agent.exited().is_some() {
            bail!(
                "the agent's endpoint {prom} never answered; see {}",
                o.log.display()
            );
        }
        sys::sleep(Duration::from_millis(200))?;
    }
    // Past the start-up (BTF, the first walks).
    sys::sleep(Duration::from_secs(5))?;
    let (idle_ms, idle_records, _) = window(&mut agent, prom, o.window, || Ok(()))?;
    let drops0 = counter(prom, "retina_drop_sample_suppressed_total")?
        + counter(prom, "retina_drop_sample_sent_total")?;
    let (flood_ms, flood_records, flood_busy) = window(&mut agent, prom, o.window, || {
        let status = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(&exe)
            .args(["udp-child", &FLOOD.to_string()])
            .status()?;
        ensure!(status.success(), "udp-child: {status}");
        Ok(())
    })?;
    let sampled = counter(prom, "retina_drop_sample_suppressed_total")?
        + counter(prom, "retina_drop_sample_sent_total")?
        - drops0;
    // As many drops as the flood window exported records, evenly over most of the window.
    let n = flood_records.max(1);
    let (events_ms, events_records, _) = window(&mut agent, prom, o.window, || {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let spread = o.window.mul_f64(0.9);
        let start = Instant::now();
        for i in 0..n {
            let due = start + spread.mul_f64(i as f64 / n as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            match socket.send_to(&[0x5a; 32], "127.0.0.1:9") {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })?;
    let seconds = o.window.as_secs_f64();
    let cycle_ms = idle_ms / seconds;
    let per_record_ms = if events_records > idle_records {
        (events_ms - idle_ms).max(0.0) / (events_records - idle_records) as f64
    } else {
        0.0
    };
    let flood_extra_records = flood_records.saturating_sub(idle_records) as f64;
    let beyond = (flood_ms - idle_ms - per_record_ms * flood_extra_records) / seconds;
    Ok(json!({
        "command": format!("setpriv (uid 65534, CAP_BPF+CAP_PERFMON) {} run --interval 1s --config {}", o.agent_bin.display(), config.display()),
        "window_seconds": seconds,
        "budget_events_per_second": BUDGET,
        "flood_datagrams": FLOOD,
        "flood_send_seconds": sys::round3(flood_busy),
        "flood_drops_sampled_or_suppressed": sampled,
        "idle": { "cpu_ms": sys::round3(idle_ms), "records_exported": idle_records },
        "flood": { "cpu_ms": sys::round3(flood_ms), "records_exported": flood_records },
        "events_only": { "cpu_ms": sys::round3(events_ms), "records_exported": events_records, "datagrams": n },
        "cycle_cpu_ms": sys::round3(cycle_ms),
        "flood_minus_idle_ms_per_s": sys::round3((flood_ms - idle_ms) / seconds),
        "flood_minus_idle_cycles_per_second": sys::round3((flood_ms - idle_ms) / seconds / cycle_ms),
        "cpu_ms_per_exported_record": sys::round3(per_record_ms),
        "flood_beyond_its_records_ms_per_s": sys::round3(beyond),
        "cycles_per_second_beyond_events": sys::round3(beyond / cycle_ms),
    }))
}
