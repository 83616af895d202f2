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
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use retina_tests::*;

/// Datagrams each test sends to a closed port (NO_SOCKET drops).
const DROPS: u64 = 300;
/// UDP payload; at the drop point skb->len is the UDP header plus payload.
const PAYLOAD: u64 = 32;
/// How long a test waits for something that should happen within a few intervals.
const PATIENCE: Duration = Duration::from_secs(40);

// ---- Processes, directories, ports ----

/// A child process with stdout and stderr in a log file; killed (SIGKILL) and reaped on
/// drop unless it already exited.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Self> {
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

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Fails with the log when the process has exited.
    fn ensure_alive(&mut self) -> Result<()> {
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
    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS missing")
    }

    /// Sends SIGTERM and waits up to `limit` for the exit.
    fn terminate(&mut self, limit: Duration) -> Result<(ExitStatus, Duration)> {
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

    fn kill(&mut self) {
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

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
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

fn wait_for_port(port: u16) -> Result<()> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(&format!("a listener on {addr}"), PATIENCE, || {
        Ok(
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ()),
        )
    })
}

// ---- The collector ----

/// `rotel-agent` from the `rotel` wheel: `RETINA_ROTEL_AGENT`, else found through the
/// venv's Python (`RETINA_TOOLS_VENV_BIN`, set by `cargo xtask test`).
fn rotel_bin() -> PathBuf {
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
fn start_rotel(dir: &TempDir, grpc: u16, http: u16, tag: &str) -> Result<Proc> {
    let mut cmd = Command::new(rotel_bin());
    cmd.args(["start", "--otlp-grpc-endpoint"])
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{http}"))
        .args([
            "--exporter",
            "blackhole",
            "--debug-log",
            "metrics",
            "--debug-log-verbosity",
            "detailed",
        ]);
    let p = Proc::spawn(tag, cmd, dir.join(&format!("{tag}.log")))?;
    wait_for_port(grpc)?;
    wait_for_port(http)?;
    Ok(p)
}

/// One data point from rotel's detailed debug log.
#[derive(Debug, Clone)]
struct DataPoint {
    metric: String,
    attrs: BTreeMap<String, String>,
    value: f64,
}

/// Parses rotel's `--debug-log-verbosity detailed` output (the collector's debug exporter
/// format): `Metric #n`, `-> Name: …`, `NumberDataPoints #n`, `-> key: Str(v)`, `Value: v`.
fn parse_rotel(text: &str) -> Vec<DataPoint> {
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
    for line in text.lines() {
        let trimmed = line.trim();
        if line.starts_with("ResourceMetrics #") || line.starts_with("ScopeMetrics #") {
            state = State::Other;
        } else if line.starts_with("Metric #") {
            state = State::Descriptor;
            metric.clear();
        } else if line.starts_with("NumberDataPoints #") {
            state = State::Point;
            attrs = BTreeMap::new();
        } else if let Some(kv) = trimmed.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(": ") else {
                continue;
            };
            match state {
                State::Descriptor if k == "Name" => metric = v.to_string(),
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
            });
        }
    }
    points
}

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

/// Starts `retina-agent run --interval 1s` with an empty configuration file, the
/// Prometheus endpoint on a fresh port, no inherited `OTEL_*` variables, plus `env`.
fn start_agent(dir: &TempDir, tag: &str, env: &[(&str, String)]) -> Result<Agent> {
    start_agent_in(dir, tag, env, None)
}

/// [`start_agent`], the agent started inside the cgroup whose `cgroup.procs` is `procs`.
fn start_agent_in(
    dir: &TempDir,
    tag: &str,
    env: &[(&str, String)],
    procs: Option<&std::path::Path>,
) -> Result<Agent> {
    let config = dir.join(&format!("{tag}.toml"));
    std::fs::write(&config, "# empty: defaults\n")?;
    let prometheus_port = match env
        .iter()
        .find(|(k, _)| *k == "OTEL_EXPORTER_PROMETHEUS_PORT")
    {
        Some((_, v)) => v.parse()?,
        None => free_port()?,
    };
    let mut cmd = match procs {
        None => Command::new(agent_bin()),
        Some(procs) => {
            // The shell moves itself into the cgroup, then becomes the agent.
            let mut c = Command::new("sh");
            c.args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
                .arg(procs)
                .arg(agent_bin());
            c
        }
    };
    cmd.arg("--config")
        .arg(&config)
        .args(["run", "--interval", "1s", "--no-summary"]);
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
    wait_for("the agent to start", PATIENCE, || {
        proc.ensure_alive()?;
        Ok(proc
            .log_text()
            .contains("retina-agent running")
            .then_some(()))
    })?;
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

// ---- Minimal HTTP client (tests have no HTTP crate) ----

/// `METHOD path` on 127.0.0.1:port with `Connection: close`; returns status and body.
fn http_request(port: u16, method: &str, path: &str, extra_headers: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra_headers}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a Prometheus sample line `name{labels} value` whose labels include all
/// of `want`.
fn scrape_value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        if !want
            .iter()
            .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        {
            return None;
        }
        l.rsplit(' ').next()?.parse().ok()
    })
}

// ---- A collector that accepts connections and never answers ----

/// Accepts TCP connections on a loopback port and holds them open without reading or
/// writing, until dropped.
struct Silent {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Silent {
    fn start(port: u16) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        held.push(conn);
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            // Dropping `held` and `listener` closes everything.
        });
        Ok(Silent {
            accepted,
            stop,
            thread: Some(thread),
        })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- Tests ----

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

fn otlp_delivery(protocol: &str, gzip: bool) -> Result<()> {
    require_root();
    let dir = TempDir::new("otlp")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let mut env = match protocol {
        "grpc" => vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        )],
        _ => vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
            // A base URL: the agent appends /v1/metrics.
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{http}"),
            ),
            // Exercise the header path; the value must never be logged.
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-test-token=s3cret-value".to_string(),
            ),
        ],
    };
    if gzip {
        env.push(("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_string()));
    }
    let mut agent = start_agent(&dir, "agent", &env)?;
    let ns = NetNs::new("rexp")?;
    // The first export proves the probe is attached before the traffic.
    wait_for_metric(&mut rotel, "retina.drop.map.capacity")?;
    make_drops(&ns)?;
    let points = wait_for_drops(&mut rotel, ns.inode()?, DROPS)?;
    check_delivery(&points, ns.inode()?, &rotel.log_text())?;
    agent.proc.ensure_alive()?;
    agent.stop()?;
    let log = agent.log();
    assert!(!log.contains("s3cret"), "a header value was logged:\n{log}");
    assert!(!log.contains("OTLP export failed"), "{log}");
    Ok(())
}

#[test]
fn otlp_grpc_delivers_drops_to_a_real_collector() -> Result<()> {
    otlp_delivery("grpc", false)
}

#[test]
fn otlp_grpc_gzip_delivers_drops_to_a_real_collector() -> Result<()> {
    otlp_delivery("grpc", true)
}

#[test]
fn otlp_http_gzip_delivers_drops_to_a_real_collector() -> Result<()> {
    otlp_delivery("http/protobuf", true)
}

#[test]
fn otlp_http_delivers_drops_to_a_real_collector() -> Result<()> {
    otlp_delivery("http/protobuf", false)
}

/// The exports rotel logged so far, each as its data points (the log shows one
/// `ResourceMetrics #0` block per export request).
fn rotel_exports(text: &str) -> Vec<Vec<DataPoint>> {
    text.split("ResourceMetrics #0")
        .skip(1)
        .map(parse_rotel)
        .collect()
}

/// Whether any point of `points` carries `name` as its interface.
fn names_interface(points: &[DataPoint], name: &str) -> bool {
    points
        .iter()
        .any(|p| p.attrs.get("network.interface.name").map(String::as_str) == Some(name))
}

/// A veth deleted while the daemon runs: its series (interface counters, driver
/// statistics, NIC info) are in no export the collector receives from the third after the
/// deletion on (one may be in flight, one more may have been collected before the link
/// table saw the deletion: two intervals).
fn deleted_interface_leaves_the_export(protocol: &str) -> Result<()> {
    require_root();
    let dir = TempDir::new("vethgone")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let env = match protocol {
        "grpc" => vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        )],
        _ => vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{http}"),
            ),
        ],
    };
    let veth = Veth::new("rgone")?;
    ip(&["link", "set", &veth.host, "up"])?;
    ip(&["link", "set", &veth.peer, "up"])?;
    let mut agent = start_agent(&dir, "agent", &env)?;
    let name = veth.host.clone();
    wait_for(&format!("{name} in an export"), PATIENCE, || {
        rotel.ensure_alive()?;
        agent.proc.ensure_alive()?;
        let exports = rotel_exports(&rotel.log_text());
        Ok(exports
            .last()
            .is_some_and(|e| names_interface(e, &name))
            .then_some(()))
    })?;
    let before = rotel_exports(&rotel.log_text()).len();
    // (The guard sees the link gone and leaves it.)
    ip(&["link", "del", &veth.host])?;
    // Five more exports (one a second).
    let exports = wait_for("five exports after the deletion", PATIENCE, || {
        rotel.ensure_alive()?;
        agent.proc.ensure_alive()?;
        let exports = rotel_exports(&rotel.log_text());
        Ok((exports.len() >= before + 5).then_some(exports))
    })?;
    let after = &exports[before..];
    let still: Vec<usize> = after
        .iter()
        .enumerate()
        .filter(|(_, e)| names_interface(e, &name))
        .map(|(i, _)| i + 1)
        .collect();
    eprintln!("{protocol}: exports after the deletion still naming {name}: {still:?}");
    assert!(
        still.iter().all(|&i| i <= 2),
        "{name} still exported in exports {still:?} after its deletion"
    );
    assert!(
        after.iter().all(|e| names_interface(e, "lo")),
        "the other interfaces must stay"
    );
    agent.stop()?;
    Ok(())
}

#[test]
fn deleted_interface_leaves_the_grpc_export() -> Result<()> {
    deleted_interface_leaves_the_export("grpc")
}

#[test]
fn deleted_interface_leaves_the_http_export() -> Result<()> {
    deleted_interface_leaves_the_export("http")
}

#[test]
fn otlp_delta_temporality_reports_changes() -> Result<()> {
    require_root();
    let dir = TempDir::new("delta")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            "delta".to_string(),
        ),
    ];
    let mut agent = start_agent(&dir, "agent", &env)?;
    let ns = NetNs::new("rdelta")?;
    wait_for_metric(&mut rotel, "retina.drop.map.capacity")?;
    make_drops(&ns)?;
    let inode = ns.inode()?.to_string();
    let is_ours = |p: &DataPoint| {
        p.metric == "retina.drop.count"
            && p.attrs.get("drop.reason").map(String::as_str) == Some("NO_SOCKET")
            && p.attrs.get("network.namespace.inode") == Some(&inode)
    };
    // Each export carries the change since the previous one: they add up to the drops,
    // and once the traffic is over the series reports zero.
    let total = wait_for("the deltas to add up and settle", PATIENCE, || {
        rotel.ensure_alive()?;
        let points = parse_rotel(&rotel.log_text());
        let ours: Vec<f64> = points
            .iter()
            .filter(|p| is_ours(p))
            .map(|p| p.value)
            .collect();
        let total: f64 = ours.iter().sum();
        Ok((total >= DROPS as f64 && ours.last() == Some(&0.0)).then_some(total))
    })?;
    assert_eq!(total, DROPS as f64);
    let log = rotel.log_text();
    assert!(
        log.contains("AGGREGATION_TEMPORALITY_DELTA"),
        "sums are not delta"
    );
    agent.stop()?;
    Ok(())
}

#[test]
fn prometheus_scrapes_the_drop_series() -> Result<()> {
    require_root();
    let dir = TempDir::new("prom")?;
    // OTLP off: only the scrape endpoint.
    let mut agent = start_agent(&dir, "agent", &[("OTEL_SDK_DISABLED", "true".into())])?;
    let port = agent.prometheus_port;
    let prom_port = free_port()?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: retina\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )?;
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let mut prom = Proc::spawn("prometheus", cmd, dir.join("prometheus.log"))?;
    wait_for_port(prom_port)?;

    let ns = NetNs::new("rprom")?;
    let inode = ns.inode()?.to_string();
    make_drops(&ns)?;

    // The endpoint itself: names as the OpenTelemetry Prometheus rules give them.
    let labels = [
        ("drop_reason", "NO_SOCKET"),
        ("network_namespace_inode", inode.as_str()),
    ];
    let body = wait_for("the drop series on /metrics", PATIENCE, || {
        agent.proc.ensure_alive()?;
        let (status, body) = http_request(port, "GET", "/metrics", "")?;
        ensure!(status == 200, "GET /metrics: {status}");
        Ok(scrape_value(&body, "retina_drop_count_total", &labels)
            .is_some_and(|v| v >= DROPS as f64)
            .then_some(body))
    })?;
    // OpenMetrics: `# TYPE` names the family (a counter's without `_total`), the samples
    // carry the series names Prometheus stores.
    let mut families: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    families.sort();
    eprintln!(
        "Prometheus families served by the agent:\n  {}",
        families.join("\n  ")
    );
    let series: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    assert_eq!(body.lines().last(), Some("# EOF"), "not OpenMetrics text");
    assert_eq!(
        scrape_value(&body, "retina_drop_count_total", &labels),
        Some(DROPS as f64)
    );
    assert_eq!(
        scrape_value(&body, "retina_drop_bytes_total", &labels),
        Some((DROPS * (8 + PAYLOAD)) as f64)
    );
    for (family, kind, name) in [
        (
            "retina_drop_overflow_count",
            "counter",
            "retina_drop_overflow_count_total",
        ),
        (
            "retina_drop_overflow_bytes",
            "counter",
            "retina_drop_overflow_bytes_total",
        ),
        (
            "retina_drop_map_capacity",
            "gauge",
            "retina_drop_map_capacity",
        ),
        (
            "system_network_io_bytes",
            "counter",
            "system_network_io_bytes_total",
        ),
        (
            "retina_agent_collect_duration_seconds",
            "gauge",
            "retina_agent_collect_duration_seconds",
        ),
        (
            "retina_agent_collect_failures",
            "counter",
            "retina_agent_collect_failures_total",
        ),
        ("target", "info", "target_info"),
    ] {
        let typed = format!("{family} {kind}");
        assert!(
            families.contains(&typed.as_str()),
            "{typed} not served: {families:?}"
        );
        assert!(series.contains(name), "no {name} series: {series:?}");
    }

    // Prometheus itself scraped and stored it.
    let query = format!(
        "retina_drop_count_total{{drop_reason=\"NO_SOCKET\",network_namespace_inode=\"{inode}\"}}"
    );
    let path = format!("/api/v1/query?query={}", url_encode(&query));
    let value = wait_for("the series in Prometheus", PATIENCE, || {
        prom.ensure_alive()?;
        agent.proc.ensure_alive()?;
        let (status, body) = http_request(prom_port, "GET", &path, "")?;
        ensure!(status == 200, "{path}: {status} {body}");
        let doc: serde_json::Value = serde_json::from_str(&body)?;
        let value = doc["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        Ok(value)
    })?;
    assert_eq!(value, DROPS as f64);
    let (_, up) = http_request(
        prom_port,
        "GET",
        &format!("/api/v1/query?query={}", url_encode("up{job=\"retina\"}")),
        "",
    )?;
    assert!(up.contains("\"1\""), "target not up: {up}");
    let (_, info) = http_request(
        prom_port,
        "GET",
        &format!(
            "/api/v1/query?query={}",
            url_encode("target_info{job=\"retina\",service_name=\"retina-agent\"}")
        ),
        "",
    )?;
    assert!(
        info.contains("\"os_type\":\"linux\""),
        "target_info not stored: {info}"
    );
    agent.stop()?;
    Ok(())
}

#[test]
fn prometheus_endpoint_answers_only_get_metrics() -> Result<()> {
    require_root();
    let dir = TempDir::new("promhttp")?;
    let mut agent = start_agent(&dir, "agent", &[("OTEL_SDK_DISABLED", "true".into())])?;
    let port = agent.prometheus_port;
    wait_for_port(port)?;
    let (status, body) = http_request(port, "GET", "/metrics", "")?;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE retina_drop_map_capacity gauge"),
        "{body}"
    );
    assert_eq!(http_request(port, "GET", "/", "")?.0, 404);
    assert_eq!(http_request(port, "GET", "/metricsx", "")?.0, 404);
    assert_eq!(
        http_request(port, "POST", "/metrics", "Content-Length: 0\r\n")?.0,
        405
    );
    assert_eq!(http_request(port, "HEAD", "/metrics", "")?.0, 200);
    // Oversized request headers are refused, not buffered.
    let huge = format!("X-Big: {}\r\n", "a".repeat(64 * 1024));
    // Refused with a 4xx, or the connection closed: either way not buffered.
    if let Ok((status, _)) = http_request(port, "GET", "/metrics", &huge) {
        assert!(status >= 400, "oversized request got {status}");
    }
    // A client that connects and sends nothing does not block others.
    let _idle = TcpStream::connect(("127.0.0.1", port))?;
    assert_eq!(http_request(port, "GET", "/metrics", "")?.0, 200);
    agent.proc.ensure_alive()?;
    agent.stop()?;
    Ok(())
}

#[test]
fn prometheus_port_in_use_is_a_clear_startup_error() -> Result<()> {
    require_root();
    let dir = TempDir::new("prombind")?;
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let config = dir.join("agent.toml");
    std::fs::write(&config, "")?;
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["run", "--interval", "1s", "--no-summary"])
        .env("OTEL_SDK_DISABLED", "true")
        .env("OTEL_EXPORTER_PROMETHEUS_PORT", port.to_string())
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "agent started on a taken port: {stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "error does not name the address: {stderr}"
    );
    Ok(())
}

#[test]
fn collector_down_at_start_then_up() -> Result<()> {
    require_root();
    let dir = TempDir::new("down")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let agent_env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".to_string()),
    ];
    let mut agent = start_agent(&dir, "agent", &agent_env)?;
    wait_for("the first export failure in the log", PATIENCE, || {
        agent.proc.ensure_alive()?;
        Ok((agent.count_in_log("OTLP export failed") > 0).then_some(()))
    })?;
    let ns = NetNs::new("rdown")?;
    make_drops(&ns)?;
    // Several more failed exports (one per second): logged once, not every time.
    std::thread::sleep(Duration::from_secs(4));
    agent.proc.ensure_alive()?;
    assert_eq!(
        agent.count_in_log("OTLP export failed"),
        1,
        "{}",
        agent.log()
    );
    assert_eq!(agent.count_in_log("still failing"), 0, "{}", agent.log());

    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let points = wait_for_drops(&mut rotel, ns.inode()?, DROPS)?;
    check_delivery(&points, ns.inode()?, &rotel.log_text())?;
    wait_for("the recovery message", PATIENCE, || {
        Ok(agent.log().contains("OTLP export recovered").then_some(()))
    })?;
    agent.stop()?;
    Ok(())
}

#[test]
fn collector_killed_and_restarted() -> Result<()> {
    require_root();
    let dir = TempDir::new("restart")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel1")?;
    let agent_env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".to_string()),
    ];
    let mut agent = start_agent(&dir, "agent", &agent_env)?;
    wait_for_metric(&mut rotel, "retina.drop.map.capacity")?;
    rotel.kill();
    wait_for(
        "an export failure after the collector died",
        PATIENCE,
        || {
            agent.proc.ensure_alive()?;
            Ok((agent.count_in_log("OTLP export failed") > 0).then_some(()))
        },
    )?;
    let ns = NetNs::new("rrst")?;
    make_drops(&ns)?;
    std::thread::sleep(Duration::from_secs(2));
    let mut rotel = start_rotel(&dir, grpc, http, "rotel2")?;
    let points = wait_for_drops(&mut rotel, ns.inode()?, DROPS)?;
    check_delivery(&points, ns.inode()?, &rotel.log_text())?;
    wait_for("the recovery message", PATIENCE, || {
        Ok(agent.log().contains("OTLP export recovered").then_some(()))
    })?;
    agent.stop()?;
    Ok(())
}

#[test]
fn collector_that_never_answers() -> Result<()> {
    require_root();
    let dir = TempDir::new("silent")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let silent = Silent::start(grpc)?;
    let agent_env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".to_string()),
    ];
    let mut agent = start_agent(&dir, "agent", &agent_env)?;
    wait_for("a connection to the silent collector", PATIENCE, || {
        Ok((silent.accepted() > 0).then_some(()))
    })?;
    let ns = NetNs::new("rsil")?;
    make_drops(&ns)?;
    std::thread::sleep(Duration::from_secs(3));
    let rss_before = agent.proc.rss_kib()?;
    // Twelve more intervals against a collector that never answers.
    std::thread::sleep(Duration::from_secs(12));
    agent.proc.ensure_alive()?;
    let rss_after = agent.proc.rss_kib()?;
    eprintln!("agent RSS: {rss_before} KiB, 12 s later {rss_after} KiB");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let log = agent.log();
    assert!(log.contains("OTLP export failed"), "{log}");
    assert!(
        log.contains("no answer") || log.contains("Timeout") || log.contains("timed out"),
        "{log}"
    );
    assert!(
        log.contains("still in flight"),
        "no export was skipped: {log}"
    );
    // Still collecting meanwhile: the Prometheus endpoint has the drops.
    let inode = ns.inode()?.to_string();
    let (_, body) = http_request(agent.prometheus_port, "GET", "/metrics", "")?;
    assert_eq!(
        scrape_value(
            &body,
            "retina_drop_count_total",
            &[
                ("drop_reason", "NO_SOCKET"),
                ("network_namespace_inode", &inode)
            ]
        ),
        Some(DROPS as f64)
    );

    // The real collector takes the port over: data arrives.
    drop(silent);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let points = wait_for_drops(&mut rotel, ns.inode()?, DROPS)?;
    check_delivery(&points, ns.inode()?, &rotel.log_text())?;
    agent.stop()?;
    Ok(())
}

#[test]
fn sigterm_during_a_hung_export_exits_promptly() -> Result<()> {
    require_root();
    let dir = TempDir::new("term")?;
    let grpc = free_port()?;
    let silent = Silent::start(grpc)?;
    // The default 10 s export timeout: the export is still in flight at SIGTERM.
    let agent_env = [(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{grpc}"),
    )];
    let mut agent = start_agent(&dir, "agent", &agent_env)?;
    wait_for("a connection to the silent collector", PATIENCE, || {
        Ok((silent.accepted() > 0).then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    let took = agent.stop()?;
    eprintln!("exited {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(8), "took {took:?} to exit");
    let log = agent.log();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    Ok(())
}

/// A TLS terminator in front of the collector (Python's `ssl`, ALPN `h2` and `http/1.1`,
/// client certificate required when `client_ca` is given).
const TLS_PROXY: &str = r#"
import asyncio, ssl, sys
listen, target, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["h2", "http/1.1"])
if len(sys.argv) > 5:
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(sys.argv[5])
async def pipe(r, w):
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        try:
            w.close()
        except Exception:
            pass
async def handle(r, w):
    try:
        tr, tw = await asyncio.open_connection("127.0.0.1", target)
    except Exception:
        w.close()
        return
    await asyncio.gather(pipe(r, tw), pipe(tr, w))
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=ctx)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"#;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the
/// `openssl` command.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &TempDir) -> Result<Pki> {
    let p = |n: &str| dir.join(n).display().to_string();
    let openssl = |args: &[&str]| run("openssl", args).map(|_| ());
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    let (ca, ca_key) = (p("ca.pem"), p("ca.key"));
    a.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=retina test CA",
    ]);
    openssl(&a)?;
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, cert, extfile) = (
            p(&format!("{name}.key")),
            p(&format!("{name}.csr")),
            p(&format!("{name}.pem")),
            p(&format!("{name}.ext")),
        );
        std::fs::write(&extfile, format!("basicConstraints=CA:FALSE\n{ext}"))?;
        let subject = format!("/CN=retina {name}");
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(&a)?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ])?;
    }
    Ok(Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}

fn start_tls_proxy(dir: &TempDir, pki: &Pki, listen: u16, target: u16, tag: &str) -> Result<Proc> {
    let script = dir.join("tlsproxy.py");
    std::fs::write(&script, TLS_PROXY)?;
    let python = std::env::var_os("RETINA_TOOLS_VENV_BIN")
        .map(|d| PathBuf::from(d).join("python3"))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg(listen.to_string())
        .arg(target.to_string())
        .arg(&pki.server_cert)
        .arg(&pki.server_key)
        .arg(&pki.ca);
    let p = Proc::spawn(tag, cmd, dir.join(&format!("{tag}.log")))?;
    wait_for_port(listen)?;
    Ok(p)
}

/// OTLP over mutual TLS through a TLS terminator in front of the collector: trusted with
/// the custom CA and the client certificate, refused (and logged with the reason) without
/// the CA.
fn otlp_over_tls(protocol: &str) -> Result<()> {
    require_root();
    let dir = TempDir::new("tls")?;
    let pki = make_pki(&dir)?;
    let (grpc, http, tls) = (free_port()?, free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let target = if protocol == "grpc" { grpc } else { http };
    let _proxy = start_tls_proxy(&dir, &pki, tls, target, "tlsproxy")?;
    let endpoint = (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("https://127.0.0.1:{tls}"),
    );
    let proto = ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string());

    // Without the CA: the system trust store does not know it.
    let mut agent = start_agent(&dir, "untrusted", &[endpoint.clone(), proto.clone()])?;
    wait_for("a certificate error in the agent's log", PATIENCE, || {
        agent.proc.ensure_alive()?;
        Ok(agent.log().contains("OTLP export failed").then_some(()))
    })?;
    let log = agent.log();
    assert!(
        log.contains("UnknownIssuer") || log.contains("certificate"),
        "{log}"
    );
    agent.stop()?;

    let path = |p: &PathBuf| p.display().to_string();
    let mut agent = start_agent(
        &dir,
        "agent",
        &[
            endpoint,
            proto,
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                path(&pki.client_cert),
            ),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&pki.client_key)),
        ],
    )?;
    let ns = NetNs::new("rtls")?;
    wait_for_metric(&mut rotel, "retina.drop.map.capacity")?;
    make_drops(&ns)?;
    let points = wait_for_drops(&mut rotel, ns.inode()?, DROPS)?;
    check_delivery(&points, ns.inode()?, &rotel.log_text())?;
    agent.stop()?;
    assert!(
        !agent.log().contains("OTLP export failed"),
        "{}",
        agent.log()
    );
    Ok(())
}

#[test]
fn otlp_grpc_over_mutual_tls_with_a_custom_ca() -> Result<()> {
    otlp_over_tls("grpc")
}

#[test]
fn otlp_http_over_mutual_tls_with_a_custom_ca() -> Result<()> {
    otlp_over_tls("http/protobuf")
}

// ---- Hostile peers ----

/// A memory cgroup limited to `limit` bytes, removed on drop (its processes are killed
/// first). Cgroup v2 where the memory controller is there (`/sys/fs/cgroup` on pure-v2
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones), else the v1 memory hierarchy.
struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    fn new(tag: &str, limit: u64) -> Result<Self> {
        let has_memory = |root: &str| {
            std::fs::read_to_string(format!("{root}/cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
        };
        let name = format!("retina-test-{tag}-{}", std::process::id());
        let (dir, v2) = if has_memory("/sys/fs/cgroup") {
            (PathBuf::from("/sys/fs/cgroup").join(&name), true)
        } else if has_memory("/sys/fs/cgroup/unified") {
            (PathBuf::from("/sys/fs/cgroup/unified").join(&name), true)
        } else if std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            (PathBuf::from("/sys/fs/cgroup/memory").join(&name), false)
        } else {
            bail!("no cgroup memory controller on this host (v2 or v1)");
        };
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let cg = MemoryCgroup { dir, v2 };
        let (file, value) = if v2 {
            ("memory.max", limit.to_string())
        } else {
            ("memory.limit_in_bytes", limit.to_string())
        };
        std::fs::write(cg.dir.join(file), value)
            .with_context(|| format!("setting {file} in {}", cg.dir.display()))?;
        if v2 {
            // No swap either, so the limit is the limit.
            let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        } else {
            let _ = std::fs::write(
                cg.dir.join("memory.memsw.limit_in_bytes"),
                limit.to_string(),
            );
        }
        Ok(cg)
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// OOM kills in the cgroup so far.
    fn oom_kills(&self) -> Result<u64> {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let text = std::fs::read_to_string(self.dir.join(file))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0))
    }

    /// The cgroup's peak memory use, in bytes, where the kernel keeps it.
    fn peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.procs()) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) on a pid read from our own test cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("cleanup: could not remove {}", self.dir.display());
    }
}

/// An OTLP/HTTP "collector" that answers every request `200` with `Content-Length: 1 GiB`
/// and streams zeros for as long as the client reads (at most 1 GiB a connection).
struct HugeAnswers {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HugeAnswers {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let flag = flag.clone();
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                    // The request: headers, then whatever body came with them.
                    let mut buf = [0u8; 64 * 1024];
                    let _ = s.read(&mut buf);
                    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1073741824\r\n\r\n";
                    if s.write_all(head).is_err() {
                        return;
                    }
                    let zeros = vec![0u8; 1 << 20];
                    for _ in 0..1024 {
                        if flag.load(Ordering::SeqCst) || s.write_all(&zeros).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(HugeAnswers {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HugeAnswers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A collector answering 1 GiB to every export: the agent, in a 256 MiB memory cgroup as
/// the unit runs it, reads at most 4 MiB of each answer, counts every export as failed
/// and keeps running.
#[test]
fn a_collector_answering_a_gigabyte_cannot_exhaust_memory() -> Result<()> {
    require_root();
    let dir = TempDir::new("huge")?;
    let cgroup = MemoryCgroup::new("huge", 256 << 20)?;
    let huge = HugeAnswers::start()?;
    let env = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", huge.port),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000".to_string()),
    ];
    let mut agent = start_agent_in(&dir, "agent", &env, Some(&cgroup.procs()))?;
    let failures = wait_for("five failed exports", Duration::from_secs(90), || {
        agent.proc.ensure_alive()?;
        let (_, body) = http_request(agent.prometheus_port, "GET", "/metrics", "")?;
        let n = scrape_value(
            &body,
            "retina_agent_export_failures_total",
            &[("exporter", "otlp")],
        )
        .unwrap_or(0.0);
        Ok((n >= 5.0).then_some(n))
    })?;
    agent.proc.ensure_alive()?;
    let rss = agent.proc.rss_kib()?;
    eprintln!(
        "after {failures} failed exports: RSS {rss} KiB, cgroup peak {:?} bytes, OOM kills {}",
        cgroup.peak(),
        cgroup.oom_kills()?
    );
    assert_eq!(cgroup.oom_kills()?, 0, "the agent was OOM-killed");
    assert!(rss < 64 * 1024, "RSS {rss} KiB reading a 1 GiB answer");
    let log = agent.log();
    assert!(log.contains("OTLP export failed"), "{log}");
    assert!(
        log.contains("4 MiB"),
        "the reason should name the limit: {log}"
    );
    agent.stop()?;
    Ok(())
}

/// Opens a connection with a 1 KiB receive buffer, sends `requests` pipelined
/// `GET /metrics` and never reads.
fn stalled_client(port: u16, requests: usize) -> Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_recv_buffer_size(1024)?;
    s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    let req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(requests);
    let mut w = &s;
    w.write_all(&req)?;
    Ok(s)
}

/// 32 clients that pipeline 50 scrapes each and never read, and 32 that connect and say
/// nothing, cannot keep a real scrape out: it gets through within seconds, and the agent's
/// thread count stays bounded.
#[test]
fn stalled_scrapers_cannot_lock_the_prometheus_endpoint() -> Result<()> {
    require_root();
    let dir = TempDir::new("stall")?;
    let mut agent = start_agent(&dir, "agent", &[("OTEL_SDK_DISABLED", "true".to_string())])?;
    let port = agent.prometheus_port;
    let mut hostile = Vec::new();
    for _ in 0..32 {
        hostile.push(stalled_client(port, 50)?);
    }
    for _ in 0..32 {
        hostile.push(socket2::Socket::from(TcpStream::connect((
            "127.0.0.1",
            port,
        ))?));
    }
    let threads = || -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", agent.proc.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
            .context("Threads: in status")
    };
    let start = Instant::now();
    // Several scrapes in a row while the hostile connections stay open.
    for i in 0..5 {
        let (status, body) = wait_for(
            &format!("scrape {i} under load"),
            Duration::from_secs(30),
            || Ok(http_request(port, "GET", "/metrics", "").ok()),
        )?;
        assert_eq!(status, 200);
        assert!(
            body.contains("retina_agent_collect_duration_seconds"),
            "{body}"
        );
        // More hostile clients arrive all the time.
        hostile.push(stalled_client(port, 50)?);
    }
    let took = start.elapsed();
    let n = threads()?;
    eprintln!("5 scrapes under load in {took:?}; agent threads: {n}");
    assert!(n <= 16, "the agent runs {n} threads under stalled scrapers");
    agent.proc.ensure_alive()?;
    drop(hostile);
    agent.stop()?;
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
