//! Export end to end: the agent binary (`retina-agent run`) pushing OTLP to a real
//! collector (`rotel-agent`, from PyPI `rotel`) over gRPC and HTTP, scraped by a real
//! Prometheus (Debian `prometheus`), and surviving collectors that are down, restarted or
//! never answer.
//!
//! Every process a test starts (collector, agent, Prometheus) and every directory it
//! writes is owned by an RAII guard, killed or removed on drop even when an assertion
//! fails. Ports are fresh loopback ports; the agent's OTLP and Prometheus settings are
//! given through the standard environment variables (`OTEL_EXPORTER_OTLP_*`,
//! `OTEL_EXPORTER_PROMETHEUS_PORT`), its configuration file is an empty temporary file.
//! Waits are polling loops with generous deadlines; nothing asserts on speed except the
//! shutdown bound the agent promises.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use retina_tests::{
    rotel::{
        DataPoint, PATIENCE, Proc, parse_rotel, rotel_exports, start_rotel, wait_for, wait_for_port,
    },
    *,
};

mod hostile;
mod http;
mod otlp;
mod prometheus;
mod reload;
mod resilience;
mod series;
mod tls;

use http::{dechunk, http_request, scrape_value, url_encode};

/// Datagrams each test sends to a closed port (NO_SOCKET drops).
const DROPS: u64 = 300;
/// UDP payload; at the drop point skb->len is the UDP header plus payload.
const PAYLOAD: u64 = 32;

// ---- The collector's points ----

/// The latest value of every series of `metric` whose attributes include `want`, summed.
/// `None` when no such series arrived yet.
fn latest(points: &[DataPoint], metric: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut series: BTreeMap<&BTreeMap<String, String>, f64> = BTreeMap::new();
    for p in points.iter().filter(|p| p.metric == metric) {
        if want
            .iter()
            .all(|(k, v)| p.attrs.get(*k).map(String::as_str) == Some(*v))
        {
            series.insert(&p.attrs, p.value);
        }
    }
    (!series.is_empty()).then(|| series.values().sum())
}

/// Waits until the collector has received `metric` at all (the agent exported once).
fn wait_for_metric(rotel: &mut Proc, metric: &str) -> Result<()> {
    wait_for(&format!("{metric} at the collector"), PATIENCE, || {
        rotel.ensure_alive()?;
        Ok(parse_rotel(&rotel.log_text())
            .iter()
            .any(|p| p.metric == metric)
            .then_some(()))
    })
}

/// Waits until the collector's latest value of the drop series of `netns` reaches
/// `want`; returns the points seen then.
fn wait_for_drops(rotel: &mut Proc, netns: u64, want: u64) -> Result<Vec<DataPoint>> {
    let inode = netns.to_string();
    let filter = [
        ("drop.reason", "NO_SOCKET"),
        ("network.namespace.inode", inode.as_str()),
    ];
    let mut last = None;
    let r = wait_for(
        &format!("retina.drop.count = {want} for netns {netns} at the collector"),
        PATIENCE,
        || {
            rotel.ensure_alive()?;
            let points = parse_rotel(&rotel.log_text());
            last = latest(&points, "retina.drop.count", &filter);
            Ok((last.unwrap_or(0.0) >= want as f64).then_some(points))
        },
    );
    r.with_context(|| format!("last value seen: {last:?}"))
}

// ---- The agent ----

struct Agent {
    proc: Proc,
    prometheus_port: u16,
    _config: PathBuf,
}

/// How a test starts the agent: always as the packaged unit runs it (uid 65534 with the
/// unit's capabilities, `unit::run_as_unit`); nothing the export does needs more.
#[derive(Clone, Copy)]
enum Launch<'a> {
    /// As the unit.
    AsUnit,
    /// As the unit, inside the cgroup whose `cgroup.procs` is this.
    InCgroup(&'a std::path::Path),
}

/// Starts `retina-agent run --interval 1s` as the unit with an empty configuration file,
/// the Prometheus endpoint on a fresh port, no inherited `OTEL_*` variables, plus `env`.
fn start_agent(dir: &TempDir, tag: &str, env: &[(&str, String)]) -> Result<Agent> {
    start_agent_with(dir, tag, env, Launch::AsUnit, "# empty: defaults\n")
}

/// [`start_agent`], launched as `launch` says, with `config` as the configuration file's
/// text.
fn start_agent_with(
    dir: &TempDir,
    tag: &str,
    env: &[(&str, String)],
    launch: Launch,
    config_text: &str,
) -> Result<Agent> {
    let config = dir.join(&format!("{tag}.toml"));
    std::fs::write(&config, config_text)?;
    let prometheus_port = match env
        .iter()
        .find(|(k, _)| *k == "OTEL_EXPORTER_PROMETHEUS_PORT")
    {
        Some((_, v)) => v.parse()?,
        None => free_port()?,
    };
    let unit = unit::run_as_unit(&config, "1s");
    let mut cmd = match launch {
        Launch::AsUnit => unit,
        Launch::InCgroup(procs) => {
            // The shell (root) moves itself into the cgroup, then becomes the unit's
            // command: `setpriv` dropping to the unit's user and capabilities.
            let mut c = Command::new("sh");
            c.args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
                .arg(procs)
                .arg(unit.get_program())
                .args(unit.get_args());
            for (k, v) in unit.get_envs() {
                match v {
                    Some(v) => c.env(k, v),
                    None => c.env_remove(k),
                };
            }
            c
        }
    };
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_PROMETHEUS_PORT", prometheus_port.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn(tag, cmd, dir.join(&format!("{tag}.log")))?;
    proc.wait_running()?;
    Ok(Agent {
        proc,
        prometheus_port,
        _config: config,
    })
}

impl Agent {
    /// SIGTERM; the agent must exit 0 within a few seconds (its shutdown budget is 3 s).
    fn stop(&mut self) -> Result<Duration> {
        let (status, took) = self.proc.terminate(Duration::from_secs(15))?;
        ensure!(
            status.success(),
            "agent exited with {status} after SIGTERM; its log:\n{}",
            self.proc.log_text()
        );
        Ok(took)
    }

    fn log(&self) -> String {
        self.proc.log_text()
    }

    fn count_in_log(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// `retina.agent.export.failures` of the OTLP exporter, from the Prometheus endpoint.
    fn export_failures(&self) -> Result<f64> {
        let (_, body) = http_request(self.prometheus_port, "GET", "/metrics", "")?;
        Ok(scrape_value(
            &body,
            "retina_agent_export_failures_total",
            &[("exporter", "otlp")],
        )
        .unwrap_or(0.0))
    }

    /// Waits (up to `limit`) until the agent counts at least `n` failed OTLP exports;
    /// returns the count.
    fn wait_for_export_failures(&mut self, n: f64, limit: Duration) -> Result<f64> {
        wait_for(&format!("{n} failed exports"), limit, || {
            self.proc.ensure_alive()?;
            let failures = self.export_failures()?;
            Ok((failures >= n).then_some(failures))
        })
    }
}

/// Sends DROPS datagrams to a closed port inside `ns`.
fn make_drops(ns: &NetNs) -> Result<()> {
    let traffic = helper_bin("traffic");
    ns.exec(
        traffic.to_str().context("path")?,
        &[
            "udp",
            "127.0.0.1:9",
            &DROPS.to_string(),
            &PAYLOAD.to_string(),
        ],
    )?;
    Ok(())
}

/// Checks the points of one export path: the test namespace's NO_SOCKET drops, exactly,
/// with their attributes; interface counters; self-telemetry; the resource.
fn check_delivery(points: &[DataPoint], netns: u64, rotel_log: &str) -> Result<()> {
    let inode = netns.to_string();
    let filter = [
        ("drop.reason", "NO_SOCKET"),
        ("network.namespace.inode", inode.as_str()),
    ];
    assert_eq!(
        latest(points, "retina.drop.count", &filter),
        Some(DROPS as f64)
    );
    assert_eq!(
        latest(points, "retina.drop.bytes", &filter),
        Some((DROPS * (8 + PAYLOAD)) as f64)
    );
    let p = points
        .iter()
        .rev()
        .find(|p| {
            p.metric == "retina.drop.count"
                && filter
                    .iter()
                    .all(|(k, v)| p.attrs.get(*k).map(String::as_str) == Some(*v))
        })
        .context("drop point")?;
    // lo inside the test namespace. (Its name is resolved when the series first appears,
    // by a lookup the drop collector rate-limits; naming is the drops tests' subject.)
    assert_eq!(
        p.attrs.get("network.interface.index").map(String::as_str),
        Some("1"),
        "{p:?}"
    );
    assert_eq!(
        p.attrs.get("network.type").map(String::as_str),
        Some("ipv4"),
        "{p:?}"
    );
    // Interface counters (netdev collector) and the agent's own metrics come along.
    assert!(
        latest(
            points,
            "system.network.io",
            &[("network.interface.name", "lo")]
        )
        .is_some(),
        "system.network.io for lo missing"
    );
    assert!(
        latest(
            points,
            "retina.agent.collect.duration",
            &[("collector", "drops")]
        )
        .is_some(),
        "self-telemetry missing"
    );
    assert!(
        rotel_log.contains("service.name: Str(retina-agent)"),
        "resource missing"
    );
    assert!(
        rotel_log.contains("os.type: Str(linux)"),
        "resource missing"
    );
    assert!(
        rotel_log.contains("AGGREGATION_TEMPORALITY_CUMULATIVE"),
        "sums are not cumulative"
    );
    Ok(())
}

#[test]
fn rotel_log_parser() {
    let text = "ResourceMetrics #0\nResource attributes:\n     -> service.name: Str(x)\n\
                Metric #0\nDescriptor:\n     -> Name: retina.drop.count\n     -> Unit: {packet}\n\
                NumberDataPoints #0\nData point attributes:\n     -> drop.reason: Str(NO_SOCKET)\n\
                     -> network.namespace.inode: Int(4026532000)\nValue: 300\n\
                Metric #1\nDescriptor:\n     -> Name: g\nNumberDataPoints #0\nValue: 1.5\nValue: 2";
    let points = parse_rotel(text);
    assert_eq!(points.len(), 2, "{points:?}");
    assert_eq!(points[0].metric, "retina.drop.count");
    assert_eq!(points[0].attrs["network.namespace.inode"], "4026532000");
    assert_eq!(points[0].value, 300.0);
    assert_eq!(points[1].value, 1.5);
    assert_eq!(
        latest(
            &points,
            "retina.drop.count",
            &[("drop.reason", "NO_SOCKET")]
        ),
        Some(300.0)
    );
    assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    assert_eq!(
        scrape_value("a_total{x=\"1\",y=\"2\"} 5\n", "a_total", &[("y", "2")]),
        Some(5.0)
    );
}
