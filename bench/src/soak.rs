//! Section 6: memory soak. Runs in a child process of the bench (the same binary, hidden
//! `soak-child` command) so that its RSS is the agent's and the exporter's alone, not the
//! bench's samples and buffers.
//!
//! The child runs the full agent cycle back to back (no sleep, or `--interval-us`) over the
//! interfaces the parent created, replaces a few veths of its own every `--churn-every`
//! cycles, and, with `--export`, runs the real OTLP exporter after every cycle against a
//! collector that goes down and comes back up every tenth of the run. It prints one JSON
//! document on stdout.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use opentelemetry::KeyValue;
use retina_agent::{
    config::{ExportConfig, PrometheusConfig},
    export::{Exporters, SharedAgent},
    model::{Metric, Number},
};
use retina_tests::alloc;
use serde_json::{Value, json};

use super::{
    cycle,
    sys::{self, ChildGuard, Summary},
};

#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    /// Measured cycles (after the warm-up).
    #[arg(long)]
    pub cycles: usize,
    /// Namespace the churned veths' peers go to.
    #[arg(long)]
    pub netns: String,
    /// Name prefix of the churned veths (`<prefix>c<n>`).
    #[arg(long)]
    pub prefix: String,
    /// Replace `--churn-count` veths every this many cycles.
    #[arg(long, default_value_t = 1000)]
    pub churn_every: usize,
    #[arg(long, default_value_t = 4)]
    pub churn_count: usize,
    /// `none`, `tcp` (a listener that accepts and closes) or `rotel` (needs `--rotel`).
    #[arg(long, default_value = "none")]
    pub export: String,
    #[arg(long)]
    pub rotel: Option<PathBuf>,
    /// Pause between cycles, µs (0: none).
    #[arg(long, default_value_t = 0)]
    pub interval_us: u64,
}

/// Runs the soak in a child process and returns its report.
pub fn spawn(args: &SoakArgs) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("soak-child")
        .args(["--cycles", &args.cycles.to_string()])
        .args(["--netns", &args.netns])
        .args(["--prefix", &args.prefix])
        .args(["--churn-every", &args.churn_every.to_string()])
        .args(["--churn-count", &args.churn_count.to_string()])
        .args(["--export", &args.export])
        .args(["--interval-us", &args.interval_us.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(r) = &args.rotel {
        cmd.arg("--rotel").arg(r);
    }
    let child = ChildGuard::spawn("soak child", &mut cmd)?;
    let (status, out) = child.wait_stdout()?;
    if !status.success() {
        bail!("the soak child failed ({status})");
    }
    serde_json::from_str(&out).with_context(|| format!("soak child output: {out}"))
}

/// Veths the child owns and replaces during the soak; deleted on drop.
struct Churn {
    netns: String,
    prefix: String,
    next: usize,
    live: Vec<String>,
}

impl Churn {
    fn ip(args: &[&str]) -> Result<()> {
        retina_tests::ip(args).map(|_| ())
    }

    fn create(&mut self, count: usize) -> Result<()> {
        for _ in 0..count {
            let name = format!("{}c{}", self.prefix, self.next);
            self.next += 1;
            let peer = format!("{name}p");
            self.live.push(name.clone());
            Self::ip(&[
                "link",
                "add",
                &name,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &self.netns,
            ])?;
            Self::ip(&["link", "set", &name, "up"])?;
            Self::ip(&["-n", &self.netns, "link", "set", &peer, "up"])?;
        }
        Ok(())
    }

    fn rotate(&mut self, count: usize) -> Result<()> {
        let old: Vec<String> = self.live.drain(..count.min(self.live.len())).collect();
        for n in &old {
            Self::ip(&["link", "del", n])?;
        }
        self.create(count)
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        for n in &self.live {
            if let Err(e) = Self::ip(&["link", "del", n]) {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

/// The OTLP collector the exporter talks to, alternately up and down.
enum Sink {
    /// A real collector process while up.
    Rotel {
        bin: PathBuf,
        grpc: u16,
        http: u16,
        proc: Option<ChildGuard>,
    },
    /// A thread accepting connections and closing them at once while up.
    Tcp {
        port: u16,
        up: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    },
}

impl Sink {
    fn port(&self) -> u16 {
        match self {
            Sink::Rotel { grpc, .. } => *grpc,
            Sink::Tcp { port, .. } => *port,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Sink::Rotel { .. } => "rotel-agent (OTLP/gRPC, blackhole exporter)",
            Sink::Tcp { .. } => "TCP listener that accepts and closes",
        }
    }

    fn is_up(&self) -> bool {
        match self {
            Sink::Rotel { proc, .. } => proc.is_some(),
            Sink::Tcp { thread, .. } => thread.is_some(),
        }
    }

    fn up(&mut self) -> Result<()> {
        match self {
            Sink::Rotel {
                bin,
                grpc,
                http,
                proc,
            } => {
                let mut cmd = sys::blackhole_rotel(bin, *grpc, *http);
                *proc = Some(ChildGuard::spawn("rotel-agent", &mut cmd)?);
            }
            Sink::Tcp { port, up, thread } => {
                let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], *port)))?;
                l.set_nonblocking(true)?;
                up.store(true, Ordering::SeqCst);
                let up = up.clone();
                *thread = Some(std::thread::spawn(move || {
                    while up.load(Ordering::SeqCst) {
                        match l.accept() {
                            Ok((s, _)) => drop(s),
                            Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                }));
            }
        }
        Ok(())
    }

    fn down(&mut self) {
        match self {
            Sink::Rotel { proc, .. } => *proc = None,
            Sink::Tcp { up, thread, .. } => {
                up.store(false, Ordering::SeqCst);
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }

    fn toggle(&mut self) -> Result<()> {
        if self.is_up() {
            self.down();
            Ok(())
        } else {
            self.up()
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.down();
    }
}

/// The warm-up lasts at least this long.
const WARM_SECONDS: u64 = 15;

/// Distinct keys in the agent's drop map (its `retina.drop.map.entries` gauge).
/// Data points the agent holds (what an export carries, self-telemetry aside).
fn points(shared: &SharedAgent) -> u64 {
    let guard = shared.lock();
    let mut n = 0u64;
    if let Some(a) = guard.as_ref() {
        a.visit(&mut |_: &'static retina_agent::model::Metric,
                      _: &[opentelemetry::KeyValue],
                      _: retina_agent::model::Number| n += 1);
    }
    n
}

fn drop_map_entries(shared: &SharedAgent) -> u64 {
    let mut entries = 0;
    if let Some(agent) = shared.lock().as_ref() {
        agent.visit(&mut |m: &'static Metric, _: &[KeyValue], v: Number| {
            if m.name == "retina.drop.map.entries"
                && let Number::U64(n) = v
            {
                entries = n;
            }
        });
    }
    entries
}

/// The child: prints its report as JSON on stdout.
pub fn child(args: &SoakArgs) -> Result<()> {
    // The allocator set up as the daemon sets it up.
    retina_agent::memory::configure();
    let rss_launch = sys::rss_kib_self();
    let mut sink = match args.export.as_str() {
        "none" => None,
        "tcp" => Some(Sink::Tcp {
            port: sys::free_port()?,
            up: Arc::new(AtomicBool::new(false)),
            thread: None,
        }),
        "rotel" => Some(Sink::Rotel {
            bin: args
                .rotel
                .clone()
                .context("--export rotel needs --rotel PATH")?,
            grpc: sys::free_port()?,
            http: sys::free_port()?,
            proc: None,
        }),
        other => bail!("unknown --export {other}"),
    };
    if let Some(s) = &mut sink {
        s.up()?;
    }
    let mut churn = Churn {
        netns: args.netns.clone(),
        prefix: args.prefix.clone(),
        next: 0,
        live: Vec::new(),
    };
    churn.create(args.churn_count)?;
    let mut agent = cycle::full_agent()?;
    agent.cycle();
    let rss_agent = sys::rss_kib_self();
    let interfaces = agent.links().len();
    let shared = SharedAgent::new(agent);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let mut exporters = match &sink {
            Some(s) => {
                let export = ExportConfig {
                    enabled: true,
                    endpoint: Some(format!("http://127.0.0.1:{}", s.port())),
                    timeout: Duration::from_secs(2),
                    insecure: true,
                    ..ExportConfig::default()
                };
                let prometheus = PrometheusConfig {
                    enabled: false,
                    ..PrometheusConfig::default()
                };
                Some(Exporters::start(&shared, &export, &prometheus).await?)
            }
            None => None,
        };
        // As the daemon does once start-up is over.
        retina_agent::memory::release_free_pages();
        let c = args.cycles.max(1);
        // The collector goes down and up twice during the warm-up, so that the start RSS
        // already includes what a failed and a successful export leave behind; the warm-up
        // also lasts at least WARM_SECONDS, for the exporter's memory to settle.
        let toggle_every = (c / 20).max(50);
        let warm_min = (c / 10).max(2 * toggle_every + 1);
        // 100 samples; start and end are the medians of the first and last ten (one
        // snapshot can catch an export's request in flight, or the collector up or down).
        let sample_every = (c / 100).max(1);
        let interval = Duration::from_micros(args.interval_us);
        // The bench's own record of every cycle (8 bytes each): faulted in now, so that
        // filling it is not counted as the agent's growth (100 000 cycles: 800 KB).
        // (`vec![0; c]` would map zero pages without touching them.)
        let mut cpu_ns: Vec<u64> = Vec::with_capacity(c);
        cpu_ns.resize(c, 1);
        cpu_ns.clear();
        let mut rss_samples: Vec<(usize, u64)> = Vec::with_capacity(128);
        let mut steady_allocs = 0u64;
        let mut steady_cycles = 0u64;
        let mut churn_allocs = 0u64;
        let mut churn_cycles = 0u64;
        let mut new_key_allocs = 0u64;
        let mut new_key_cycles = 0u64;
        let mut drop_keys = drop_map_entries(&shared);
        let mut churns = 0u64;
        let mut toggles = 0u64;
        let mut since_change = u64::MAX;
        let mut rss_start = 0;
        let (mut anon_start, mut file_start) = (0, 0);
        let (mut keys_start, mut points_start) = (0, 0);
        let mut all_allocs0 = 0;
        let launched = Instant::now();
        let mut t0 = launched;
        let mut warm: Option<usize> = None;
        let mut i = 0usize;
        loop {
            if i.is_multiple_of(64) {
                sys::check_stop()?;
            }
            if warm.is_none()
                && i >= warm_min
                && launched.elapsed() >= Duration::from_secs(WARM_SECONDS)
            {
                warm = Some(i);
                rss_start = sys::rss_kib_self();
                anon_start = sys::status_kib("self", "RssAnon").unwrap_or(0);
                file_start = sys::status_kib("self", "RssFile").unwrap_or(0);
                keys_start = drop_map_entries(&shared);
                points_start = points(&shared);
                all_allocs0 = alloc::total();
                t0 = Instant::now();
            }
            let j = warm.map(|w| i - w);
            if j == Some(c) {
                break;
            }
            let measured = j.is_some();
            let j = j.unwrap_or(0);
            if i > 0 && i.is_multiple_of(args.churn_every) {
                churn.rotate(args.churn_count)?;
                churns += u64::from(measured);
            }
            if let Some(s) = &mut sink
                && i > 0
                && i.is_multiple_of(toggle_every)
            {
                s.toggle()?;
                toggles += u64::from(measured);
            }
            let cpu = sys::thread_cpu_ns();
            let (allocs, changed) = alloc::count(|| {
                let mut guard = shared.lock();
                let agent = guard.as_mut()?;
                let generation = agent.links().generation();
                agent.cycle();
                Some(agent.links().generation() != generation)
            });
            let changed = changed.context("the shared agent is gone")?;
            let cpu = sys::thread_cpu_ns() - cpu;
            since_change = if changed {
                0
            } else {
                since_change.saturating_add(1)
            };
            if measured {
                cpu_ns.push(cpu);
                // A new interface is set up over the few cycles after it appears; a new drop
                // key (a new interface's first drops, seconds later) gets its series.
                let keys = if allocs > 0 {
                    drop_map_entries(&shared)
                } else {
                    drop_keys
                };
                if since_change < 5 {
                    churn_allocs += allocs;
                    churn_cycles += 1;
                } else if keys > drop_keys {
                    new_key_allocs += allocs;
                    new_key_cycles += 1;
                } else {
                    steady_allocs += allocs;
                    steady_cycles += 1;
                    if allocs > 0 {
                        eprintln!("soak: steady cycle {j} allocated {allocs} times");
                    }
                }
                drop_keys = keys;
                if j.is_multiple_of(sample_every) {
                    rss_samples.push((j, sys::rss_kib_self()));
                }
            }
            if let Some(e) = &mut exporters {
                e.export().await;
            }
            if interval.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(interval).await;
            }
            i += 1;
        }
        let warm = warm.unwrap_or(0);
        let elapsed = t0.elapsed();
        let rss_end_now = sys::rss_kib_self();
        let anon_end = sys::status_kib("self", "RssAnon").unwrap_or(0);
        let file_end = sys::status_kib("self", "RssFile").unwrap_or(0);
        let (keys_end, points_end) = (drop_map_entries(&shared), points(&shared));
        let all_allocs = alloc::total() - all_allocs0;
        if let Some(e) = exporters.take() {
            e.shutdown(Instant::now() + Duration::from_secs(3)).await;
        }
        let tenth = (cpu_ns.len() / 10).max(1);
        let first = Summary::of(&cpu_ns[..tenth]).scaled(1e-3);
        let last = Summary::of(&cpu_ns[cpu_ns.len() - tenth..]).scaled(1e-3);
        let window = |from: usize| {
            let mut w: Vec<u64> = rss_samples
                .iter()
                .skip(from)
                .take(10)
                .map(|s| s.1)
                .collect();
            w.sort_unstable();
            w.get(w.len() / 2).copied()
        };
        let rss_start_first = rss_start;
        let rss_start = window(0).unwrap_or(rss_start);
        let rss_end = window(rss_samples.len().saturating_sub(10)).unwrap_or(rss_end_now);
        let mid = window((rss_samples.len() / 2).saturating_sub(5)).unwrap_or(rss_start);
        let growth = (rss_end as f64 - rss_start as f64) / rss_start.max(1) as f64 * 100.0;
        let second_half = (rss_end as f64 - mid as f64) / mid.max(1) as f64 * 100.0;
        let rss_samples: Vec<Value> = rss_samples.iter().map(|&(j, r)| json!([j, r])).collect();
        anyhow::Ok(json!({
            "cycles": c,
            "warmup_cycles": warm,
            "interfaces_in_link_table": interfaces,
            "interval_us": args.interval_us,
            "seconds": sys::round3(elapsed.as_secs_f64()),
            "churn": {
                "every_cycles": args.churn_every,
                "veths_replaced_each_time": args.churn_count,
                "times": churns,
            },
            "export": match &sink {
                Some(s) => json!({
                    "collector": s.kind(),
                    "toggled_up_down_every_cycles": toggle_every,
                    "toggles": toggles,
                }),
                None => json!(null),
            },
            "rss_kib": {
                "at_launch": rss_launch,
                "after_agent_start": rss_agent,
                "start": rss_start,
                "end": rss_end,
                "what": "start, end: medians of the first and last 10 of 100 samples",
                "first_sample": rss_start_first,
                "after_last_cycle": rss_end_now,
                "max": sys::status_kib("self", "VmHWM").unwrap_or(0),
                "anon_start": anon_start,
                "file_start": file_start,
                "anon_end": anon_end,
                "file_end": file_end,
                "samples": rss_samples,
            },
            "series": {
                "drop_keys_start": keys_start,
                "drop_keys_end": keys_end,
                "data_points_start": points_start,
                "data_points_end": points_end,
            },
            "rss_growth_percent": sys::round3(growth),
            "rss_growth_second_half_percent": sys::round3(second_half),
            "allocations": {
                "steady_cycles": steady_cycles,
                "steady_allocations": steady_allocs,
                "per_steady_cycle": steady_allocs as f64 / steady_cycles.max(1) as f64,
                "churn_cycles": churn_cycles,
                "churn_allocations": churn_allocs,
                "new_drop_key_cycles": new_key_cycles,
                "new_drop_key_allocations": new_key_allocs,
                "process_wide_per_cycle": sys::round3(all_allocs as f64 / c as f64),
            },
            "cycle_cpu_us_first_tenth": first.json(),
            "cycle_cpu_us_last_tenth": last.json(),
        }))
    })?;
    drop(shared.take());
    drop(churn);
    drop(sink);
    println!("{report}");
    Ok(())
}
