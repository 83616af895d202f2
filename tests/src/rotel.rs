//! A real OpenTelemetry collector for end-to-end tests: `rotel-agent` (PyPI `rotel`) logging
//! every data point it receives, its log parsed back into points, and the agent started
//! against it. (Shared by `tests/export/` and `tests/workload.rs`.)

use std::{
    collections::BTreeMap,
    fs::File,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::TempDir;

/// How long a wait lasts for something that should happen within a few intervals.
pub const PATIENCE: Duration = Duration::from_secs(40);

/// A child process with stdout and stderr in a log file; killed (SIGKILL) and reaped on
/// drop unless it already exited.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Self> {
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Waits for the agent's "retina-agent running" line; fails if it exits first.
    pub fn wait_running(&mut self) -> Result<()> {
        wait_for("the agent to start", PATIENCE, || {
            self.ensure_alive()?;
            Ok(self
                .log_text()
                .contains("retina-agent running")
                .then_some(()))
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Fails with the log when the process has exited.
    pub fn ensure_alive(&mut self) -> Result<()> {
        if let Some(status) = self.exited() {
            bail!(
                "{} exited ({status}); its output:\n{}",
                self.name,
                self.log_text()
            );
        }
        Ok(())
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS missing")
    }

    /// Sends SIGTERM and waits up to `limit` for the exit.
    pub fn terminate(&mut self, limit: Duration) -> Result<(ExitStatus, Duration)> {
        let start = Instant::now();
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        if unsafe { libc::kill(self.pid(), libc::SIGTERM) } != 0 {
            bail!(
                "kill -TERM {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        while start.elapsed() < limit {
            if let Some(status) = self.exited() {
                return Ok((status, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} still running {limit:?} after SIGTERM; its output:\n{}",
            self.name,
            self.log_text()
        )
    }

    /// Sends SIGTERM and fails unless the process exits with success within 20 s (its
    /// output in the error).
    pub fn stop_cleanly(&mut self) -> Result<()> {
        let (status, _) = self.terminate(Duration::from_secs(20))?;
        anyhow::ensure!(
            status.success(),
            "{} exit: {status}\n{}",
            self.name,
            self.log_text()
        );
        Ok(())
    }

    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last_err = None;
    while start.elapsed() < limit {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    match last_err {
        Some(e) => Err(e.context(format!("timed out after {limit:?} waiting for {what}"))),
        None => bail!("timed out after {limit:?} waiting for {what}"),
    }
}

pub fn wait_for_port(port: u16) -> Result<()> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(&format!("a listener on {addr}"), PATIENCE, || {
        Ok(
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ()),
        )
    })
}

/// `rotel-agent` from the `rotel` wheel: `RETINA_ROTEL_AGENT`, else found through the
/// venv's Python (`RETINA_TOOLS_VENV_BIN`, set by `cargo xtask test`).
pub fn rotel_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RETINA_ROTEL_AGENT") {
        return PathBuf::from(p);
    }
    let python = std::env::var_os("RETINA_TOOLS_VENV_BIN")
        .map(|d| PathBuf::from(d).join("python3"))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let out = Command::new(&python)
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output();
    let path = match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        other => panic!(
            "cannot locate rotel-agent with {}: {other:?}; run the tests with `cargo xtask test`, \
             which installs PyPI `rotel` into the tools venv",
            python.display()
        ),
    };
    assert!(
        path.is_file(),
        "rotel-agent not found at {}",
        path.display()
    );
    path
}

/// A collector logging every data point it receives.
pub fn start_rotel(dir: &TempDir, grpc: u16, http: u16, tag: &str) -> Result<Proc> {
    spawn_rotel(dir, grpc, http, tag, Some("metrics"), &[])
}

/// A collector that discards what it receives without logging it: an export that is
/// healthy, for tests that do not read the points.
pub fn start_rotel_quiet(dir: &TempDir, grpc: u16, http: u16, tag: &str) -> Result<Proc> {
    spawn_rotel(dir, grpc, http, tag, None, &[])
}

/// A collector logging every log record it receives (`extra`: more arguments of
/// `rotel-agent start`).
pub fn start_rotel_logs(
    dir: &TempDir,
    grpc: u16,
    http: u16,
    tag: &str,
    extra: &[&str],
) -> Result<Proc> {
    spawn_rotel(dir, grpc, http, tag, Some("logs"), extra)
}

/// `debug_log`: the signal rotel prints in detail (`metrics`, `logs`), if any.
fn spawn_rotel(
    dir: &TempDir,
    grpc: u16,
    http: u16,
    tag: &str,
    debug_log: Option<&str>,
    extra: &[&str],
) -> Result<Proc> {
    let mut cmd = Command::new(rotel_bin());
    cmd.args(["start", "--otlp-grpc-endpoint"])
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{http}"))
        .args(["--exporter", "blackhole"]);
    if let Some(signal) = debug_log {
        cmd.args(["--debug-log", signal, "--debug-log-verbosity", "detailed"]);
    }
    cmd.args(extra);
    let p = Proc::spawn(tag, cmd, dir.join(&format!("{tag}.log")))?;
    wait_for_port(grpc)?;
    wait_for_port(http)?;
    Ok(p)
}

/// One data point from rotel's detailed debug log.
#[derive(Debug, Clone)]
pub struct DataPoint {
    pub metric: String,
    pub attrs: BTreeMap<String, String>,
    pub value: f64,
    /// The point's `StartTimestamp` as rotel prints it (empty if it printed none).
    pub start: String,
    /// The metric's `DataType` (`Sum`, `Gauge`).
    pub kind: String,
}

/// Parses rotel's `--debug-log-verbosity detailed` output (the collector's debug exporter
/// format): `Metric #n`, `-> Name: …`, `NumberDataPoints #n`, `-> key: Str(v)`, `Value: v`.
pub fn parse_rotel(text: &str) -> Vec<DataPoint> {
    #[derive(PartialEq)]
    enum State {
        Other,
        Descriptor,
        Point,
    }
    // Only complete lines: the collector may be writing the last one.
    let text = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut points = Vec::new();
    let mut state = State::Other;
    let mut metric = String::new();
    let mut attrs = BTreeMap::new();
    let mut start = String::new();
    let mut kind = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if line.starts_with("ResourceMetrics #") || line.starts_with("ScopeMetrics #") {
            state = State::Other;
        } else if line.starts_with("Metric #") {
            state = State::Descriptor;
            metric.clear();
            kind.clear();
        } else if line.starts_with("NumberDataPoints #") {
            state = State::Point;
            attrs = BTreeMap::new();
            start.clear();
        } else if let Some(v) = line.strip_prefix("StartTimestamp: ")
            && state == State::Point
        {
            start = v.trim().to_string();
        } else if let Some(kv) = trimmed.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(": ") else {
                continue;
            };
            match state {
                State::Descriptor if k == "Name" => metric = v.to_string(),
                State::Descriptor if k == "DataType" => kind = v.trim().to_string(),
                State::Point => {
                    // `Str(lo)`, `Int(4026531840)`, `Double(1.5)`, `Bool(true)`
                    let v = match (v.find('('), v.rfind(')')) {
                        (Some(a), Some(b)) if a < b => &v[a + 1..b],
                        _ => v,
                    };
                    attrs.insert(k.to_string(), v.to_string());
                }
                _ => {}
            }
        } else if let Some(v) = line.strip_prefix("Value: ")
            && state == State::Point
            && let Ok(value) = v.trim().parse::<f64>()
        {
            points.push(DataPoint {
                metric: metric.clone(),
                attrs: attrs.clone(),
                value,
                start: start.clone(),
                kind: kind.clone(),
            });
        }
    }
    points
}

/// The exports rotel logged so far, each as its data points (the log shows one
/// `ResourceMetrics #0` block per export request).
pub fn rotel_exports(text: &str) -> Vec<Vec<DataPoint>> {
    text.split("ResourceMetrics #0")
        .skip(1)
        .map(parse_rotel)
        .collect()
}

/// `retina-agent run --interval 1s --no-summary` as the packaged unit runs it (uid 65534,
/// the unit's capabilities) with an empty configuration file, exporting OTLP/gRPC to
/// `127.0.0.1:grpc`, no inherited `OTEL_*` variables, plus `env`. Waits for "retina-agent
/// running".
pub fn start_agent(dir: &TempDir, tag: &str, grpc: u16, env: &[(&str, String)]) -> Result<Proc> {
    let config = dir.join(&format!("{tag}.toml"));
    std::fs::write(&config, "# empty: defaults\n")?;
    let mut cmd = crate::unit::run_as_unit(&config, "1s");
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{grpc}"),
    )
    .env(
        "OTEL_EXPORTER_PROMETHEUS_PORT",
        crate::free_port()?.to_string(),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn(tag, cmd, dir.join(&format!("{tag}.log")))?;
    proc.wait_running()?;
    Ok(proc)
}

/// Sum of the points of `metric` in `points` whose attributes include `want`.
pub fn total(points: &[DataPoint], metric: &str, want: &[(&str, &str)]) -> f64 {
    points
        .iter()
        .filter(|p| {
            p.metric == metric
                && want
                    .iter()
                    .all(|(k, v)| p.attrs.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|p| p.value)
        .sum()
}

/// rotel and the agent (`run --interval 1s`, OTLP/gRPC), killed on drop.
pub struct Export {
    pub rotel: Proc,
    pub agent: Proc,
    _dir: TempDir,
}

impl Export {
    pub fn start(tag: &str) -> Result<Export> {
        let dir = TempDir::new(tag)?;
        let (grpc, http) = (crate::free_port()?, crate::free_port()?);
        let rotel = start_rotel(&dir, grpc, http, "rotel")?;
        let agent = start_agent(&dir, "agent", grpc, &[])?;
        Ok(Export {
            rotel,
            agent,
            _dir: dir,
        })
    }

    pub fn exports(&mut self) -> Result<Vec<Vec<DataPoint>>> {
        self.rotel.ensure_alive()?;
        self.agent.ensure_alive()?;
        Ok(rotel_exports(&self.rotel.log_text()))
    }

    /// Waits for an export in which `ok` holds; returns it.
    pub fn wait(
        &mut self,
        what: &str,
        mut ok: impl FnMut(&[DataPoint]) -> bool,
    ) -> Result<Vec<DataPoint>> {
        wait_for(what, PATIENCE, || {
            Ok(self.exports()?.pop().filter(|e| ok(e)))
        })
    }
}
