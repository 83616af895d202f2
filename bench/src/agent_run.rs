//! Section 7: the real daemon (`retina-agent run --interval 10s`) next to node_exporter
//! (same collectors, scraped every 10 s) over the same period: RSS and CPU share of each.

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{
    node_exporter::{self, NodeExporter},
    sys::{self, ChildGuard},
};

pub struct Options<'a> {
    pub agent_bin: &'a Path,
    pub node_exporter: &'a Path,
    pub rotel: Option<&'a Path>,
    pub window: Duration,
    pub log: PathBuf,
}

/// One process's figures over the window.
struct Proc {
    pid: u32,
    /// CPU time (ns, the process's CPU clock: every thread) at the start of the window.
    ns0: u64,
    /// CPU time at each 10 s mark, to show the CPU of every interval.
    marks: Vec<u64>,
    rss_max: u64,
    rss_sum: u64,
    rss_n: u64,
}

impl Proc {
    fn new(pid: u32) -> Result<Proc> {
        Ok(Proc {
            pid,
            ns0: sys::cpu_ns(pid)?,
            marks: Vec::new(),
            rss_max: 0,
            rss_sum: 0,
            rss_n: 0,
        })
    }

    fn sample(&mut self) {
        if let Ok(r) = sys::status_kib(&self.pid.to_string(), "VmRSS") {
            self.rss_max = self.rss_max.max(r);
            self.rss_sum += r;
            self.rss_n += 1;
        }
    }

    fn mark(&mut self) {
        if let Ok(t) = sys::cpu_ns(self.pid) {
            self.marks.push(t);
        }
    }

    fn finish(&self, elapsed: Duration) -> Result<Value> {
        let now = sys::cpu_ns(self.pid)?;
        let cpu_s = now.saturating_sub(self.ns0) as f64 / 1e9;
        let mut per_interval = Vec::new();
        let mut prev = self.ns0;
        for &m in self.marks.iter().skip(1).chain(std::iter::once(&now)) {
            per_interval.push(sys::round3(m.saturating_sub(prev) as f64 / 1e6));
            prev = m;
        }
        Ok(json!({
            "cpu_seconds": sys::round3(cpu_s),
            "cpu_share_percent": sys::round3(cpu_s / elapsed.as_secs_f64() * 100.0),
            "cpu_ms_per_10s": sys::round3(cpu_s * 1000.0 / (elapsed.as_secs_f64() / 10.0)),
            "cpu_ms_each_interval": per_interval,
            "rss_kib_end": sys::status_kib(&self.pid.to_string(), "VmRSS").unwrap_or(0),
            "rss_kib_max": self.rss_max,
            // Start-up included (BTF parsing, before its memory is handed back).
            "rss_kib_peak_since_launch": sys::status_kib(&self.pid.to_string(), "VmHWM").unwrap_or(0),
            "rss_kib_mean": self.rss_sum / self.rss_n.max(1),
            "rss_anon_kib_end": sys::status_kib(&self.pid.to_string(), "RssAnon").unwrap_or(0),
            "rss_file_kib_end": sys::status_kib(&self.pid.to_string(), "RssFile").unwrap_or(0),
        }))
    }
}

pub fn run(o: &Options) -> Result<Value> {
    // A collector for the agent's OTLP export, when rotel is available; else the export
    // fails every interval (connection refused), which costs little.
    let otlp_port = sys::free_port()?;
    let _rotel = match o.rotel {
        Some(bin) => {
            let mut cmd = sys::blackhole_rotel(bin, otlp_port, sys::free_port()?);
            Some(ChildGuard::spawn("rotel-agent", &mut cmd)?)
        }
        None => None,
    };
    // The agent as shipped (OTLP export and Prometheus endpoint on, MALLOC_ARENA_MAX unset:
    // the agent sets its allocator up itself), and collection only (both outputs off).
    let collect_only = o.log.with_file_name("collect-only.toml");
    std::fs::write(&collect_only, "[export]\nenabled = false\n")
        .with_context(|| format!("writing {}", collect_only.display()))?;
    // The agent with every series exported (`export.series = "everything"`).
    let everything = o.log.with_file_name("everything.toml");
    std::fs::write(&everything, "[export]\nseries = \"everything\"\n")
        .with_context(|| format!("writing {}", everything.display()))?;
    // The agent under delta temporality (only the counters that moved are exported).
    let delta = o.log.with_file_name("delta.toml");
    std::fs::write(&delta, "[export]\ntemporality = \"delta\"\n")
        .with_context(|| format!("writing {}", delta.display()))?;
    let mut agents = Vec::new();
    for (name, outputs, config) in [
        ("agent", true, None),
        ("agent_everything", true, Some(&everything)),
        ("agent_delta", true, Some(&delta)),
        ("agent_collection_only", false, Some(&collect_only)),
    ] {
        let prom: SocketAddr = ([127, 0, 0, 1], sys::free_port()?).into();
        let log_path = o.log.with_file_name(format!("{name}-run.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(o.agent_bin);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(["run", "--interval", "10s"])
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{otlp_port}"),
            )
            .env("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
            .env("OTEL_EXPORTER_PROMETHEUS_PORT", prom.port().to_string())
            .env_remove("RUST_LOG")
            .env_remove("MALLOC_ARENA_MAX")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !outputs {
            cmd.arg("--no-prometheus");
        }
        let child = ChildGuard::spawn("retina-agent", &mut cmd)?;
        agents.push(Agent {
            name,
            command: format!(
                "{}{} run --interval 10s{}",
                o.agent_bin.display(),
                config.map_or(String::new(), |c| format!(" --config {}", c.display())),
                if outputs { "" } else { " --no-prometheus" },
            ),
            child,
            prom: outputs.then_some(prom),
            log: log_path,
            scraped: false,
            failures: 0,
            proc: None,
        });
    }
    let ne = NodeExporter::start(o.node_exporter)?;

    // Let the agents load their probes and run their first cycles.
    let ready = Instant::now() + Duration::from_secs(20);
    for a in &mut agents {
        let Some(prom) = a.prom else { continue };
        while Instant::now() < ready {
            sys::check_stop()?;
            a.alive("at start")?;
            if node_exporter::scrape(prom).is_ok() {
                a.scraped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !a.scraped {
            eprintln!(
                "warning: the Prometheus endpoint {prom} of {} does not answer; measuring without scraping it",
                a.name
            );
        }
    }
    // Past the first cycles and exports (new drop keys, first series): steady state.
    sys::sleep(Duration::from_secs(12))?;

    for a in &mut agents {
        a.proc = Some(Proc::new(a.child.pid())?);
    }
    let mut n = Proc::new(ne.child.pid())?;
    let start = Instant::now();
    let mut next_scrape = start;
    let mut scrapes = 0u32;
    while start.elapsed() < o.window {
        sys::check_stop()?;
        let scrape_now = Instant::now() >= next_scrape;
        if scrape_now {
            n.mark();
            for a in &mut agents {
                if let Some(p) = &mut a.proc {
                    p.mark();
                }
            }
            node_exporter::scrape(ne.addr)?;
            scrapes += 1;
            next_scrape += Duration::from_secs(10);
        }
        for a in &mut agents {
            a.alive("during the run")?;
            if let Some(prom) = a.prom
                && scrape_now
                && a.scraped
                && node_exporter::scrape(prom).is_err()
            {
                a.failures += 1;
            }
            if let Some(p) = &mut a.proc {
                p.sample();
            }
        }
        n.sample();
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = start.elapsed();
    let mut doc = json!({
        "window_seconds": sys::round3(elapsed.as_secs_f64()),
        "interval_seconds": 10,
        "scrapes_each": scrapes,
        "otlp_collector": if o.rotel.is_some() { "rotel-agent" } else { "none (export fails: connection refused)" },
        "node_exporter": n.finish(elapsed)?,
    });
    for a in &agents {
        doc[a.name] = json!({
            "command": a.command,
            "prometheus_scraped_every_10s": a.scraped,
            "prometheus_scrape_failures": a.failures,
            "figures": a.proc.as_ref().context("agent figures")?.finish(elapsed)?,
        });
    }
    Ok(doc)
}

struct Agent {
    name: &'static str,
    command: String,
    child: ChildGuard,
    /// The Prometheus endpoint, when the variant serves one.
    prom: Option<SocketAddr>,
    log: PathBuf,
    scraped: bool,
    failures: u32,
    proc: Option<Proc>,
}

impl Agent {
    fn alive(&mut self, when: &str) -> Result<()> {
        if let Some(status) = self.child.exited() {
            bail!(
                "retina-agent ({}) exited {when} ({status}); see {}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }
}
