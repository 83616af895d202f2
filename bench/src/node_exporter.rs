//! The peer: Prometheus node_exporter with only the ethtool, netdev and netstat collectors,
//! scraped over plain HTTP; its own per-collector durations and its process CPU.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::sys::{self, ChildGuard, Summary};

/// The collectors compared.
pub const COLLECTORS: [&str; 3] = ["ethtool", "netdev", "netstat"];

/// `GET /metrics` over HTTP/1.0 (no chunked encoding); returns the body.
pub fn scrape(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the reply of {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr}: no HTTP header"))?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1).is_none_or(|c| c != "200") {
        bail!(
            "{addr}: {}",
            head.lines().next().unwrap_or("no status line")
        );
    }
    Ok(body.to_string())
}

/// `node_scrape_collector_duration_seconds{collector="X"} V` → X → V.
pub fn collector_durations(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("node_scrape_collector_duration_seconds{collector=\"")?;
            let (name, rest) = rest.split_once('"')?;
            let v = rest.rsplit(' ').next()?.parse().ok()?;
            Some((name.to_string(), v))
        })
        .collect()
}

/// Number of sample lines (not comments).
pub fn samples(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// A running node_exporter on 127.0.0.1.
pub struct NodeExporter {
    pub child: ChildGuard,
    pub addr: SocketAddr,
}

impl NodeExporter {
    pub fn start(bin: &Path) -> Result<NodeExporter> {
        let port = sys::free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--collector.disable-defaults",
            "--collector.ethtool",
            "--collector.netdev",
            "--collector.netstat",
            // Its own Go runtime and process metrics are not collectors: leave them out
            // (this makes node_exporter a little cheaper, never dearer).
            "--web.disable-exporter-metrics",
            "--log.level=warn",
        ])
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = ChildGuard::spawn("node_exporter", &mut cmd)?;
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            sys::check_stop()?;
            if let Some(status) = child.exited() {
                bail!("node_exporter exited at start ({status}): {cmd:?}");
            }
            if scrape(addr).is_ok() {
                return Ok(NodeExporter { child, addr });
            }
            if Instant::now() > end {
                bail!("node_exporter did not answer on {addr} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// node_exporter's cost over `k` scrapes (after one warm-up scrape).
pub struct Measured {
    pub k: usize,
    /// Per collector: its own node_scrape_collector_duration_seconds over the scrapes, ms.
    pub durations_ms: BTreeMap<String, Summary>,
    /// Process CPU (utime + stime) per scrape, ms (clock-tick resolution over the run).
    pub cpu_ms_per_scrape: f64,
    /// Wall time of one scrape as the client sees it, ms.
    pub wall_ms: Summary,
    pub samples: usize,
    pub rss_kib: u64,
}

impl Measured {
    pub fn json(&self) -> Value {
        json!({
            "scrapes": self.k,
            "collector_duration_ms": self.durations_ms.iter()
                .map(|(k, v)| (k.clone(), v.json())).collect::<serde_json::Map<_, _>>(),
            "cpu_ms_per_scrape": sys::round3(self.cpu_ms_per_scrape),
            "scrape_wall_ms": self.wall_ms.json(),
            "samples_per_scrape": self.samples,
            "rss_kib": self.rss_kib,
        })
    }
}

pub fn measure(bin: &Path, k: usize) -> Result<Measured> {
    let ne = NodeExporter::start(bin)?;
    let pid = ne.child.pid();
    // Warm-up: the first scrape pays for lazy initialisation.
    let first = scrape(ne.addr)?;
    for c in COLLECTORS {
        if !collector_durations(&first).contains_key(c) {
            bail!("node_exporter reports no `{c}` collector duration");
        }
    }
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut wall = Vec::with_capacity(k);
    let mut samples_seen = 0;
    let ticks0 = sys::cpu_ticks(pid)?;
    for _ in 0..k {
        sys::check_stop()?;
        let t = Instant::now();
        let body = scrape(ne.addr)?;
        wall.push(t.elapsed().as_nanos() as u64);
        samples_seen = samples(&body);
        for (c, v) in collector_durations(&body) {
            per.entry(c).or_default().push((v * 1e9) as u64);
        }
    }
    let ticks = sys::cpu_ticks(pid)? - ticks0;
    let rss_kib = sys::status_kib(&pid.to_string(), "VmRSS").unwrap_or(0);
    Ok(Measured {
        k,
        durations_ms: per
            .into_iter()
            .map(|(c, v)| (c, Summary::of(&v).scaled(1e-6)))
            .collect(),
        cpu_ms_per_scrape: ticks as f64 * 1000.0 / sys::clk_tck() as f64 / k as f64,
        wall_ms: Summary::of(&wall).scaled(1e-6),
        samples: samples_seen,
        rss_kib,
    })
}
