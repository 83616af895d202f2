//! Section 11: the TCP event programs' cost per event (kernel run-time statistics) next to
//! an empty program on each of the same hooks, under a stream of TCP connects to a closed
//! port on loopback (each: a failed connect, a reset received, a reset sent without a
//! socket), and whether the agent counted exactly the connects that failed.

use std::{os::fd::AsFd as _, time::Duration};

use anyhow::{Context, Result};
use retina_agent::{
    collectors::{Collector, tcp_events::TcpEventCollector},
    kernel::links::Links,
};
use serde_json::{Value, json};

use super::{
    bpf::{BpfStats, EmptyProgram, ProgInfo},
    sys,
};

pub struct TcpReport {
    pub json: Value,
    pub connects: u64,
    /// (program, tracepoint, runs, ns per run, empty program's ns per run), in
    /// `TCP_PROGRAMS` order, for the hooks the connects reach.
    pub programs: Vec<(&'static str, &'static str, u64, f64, f64)>,
    pub failures_counted: u64,
    pub resets_counted: u64,
}

/// This process's failed connects and resets received, as the collector holds them (its
/// `rows`, what the loss view reads).
fn counted(c: &mut TcpEventCollector, links: &Links, cgroup: u64) -> Result<(u64, u64)> {
    c.collect(links).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(c.rows()
        .find(|r| r.cgroup_id == cgroup)
        .map_or((0, 0), |r| (r.connect_failures, r.resets_received)))
}

/// The cgroup v2 id of this process's cgroup (the inode of its directory).
fn own_cgroup() -> Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let root = retina_tests::workload::cgroup_v2_root()?;
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("no cgroup v2 line in /proc/self/cgroup")?;
    Ok(std::fs::metadata(root.join(path.trim_start_matches('/')))?.ino())
}

pub fn run(connects: u64) -> Result<TcpReport> {
    let stats = BpfStats::enable()?;
    let mut links = Links::new()?;
    links.refresh()?;
    let mut c = TcpEventCollector::load_with(
        None,
        retina_agent::collectors::tcp_events::probe::DEFAULT_MAX_ENTRIES,
        true,
    )
    .context("loading the TCP event programs")?;
    let hooks = [
        ("tcp_state", "inet_sock_set_state", c"inet_sock_set_state"),
        ("tcp_reset_sent", "tcp_send_reset", c"tcp_send_reset"),
        (
            "tcp_reset_received",
            "tcp_receive_reset",
            c"tcp_receive_reset",
        ),
    ];
    let empties = hooks
        .iter()
        .map(|(_, _, tp)| EmptyProgram::attach(tp))
        .collect::<Result<Vec<_>>>()
        .context("attaching the empty programs")?;
    let ours = hooks
        .iter()
        .map(|(name, _, _)| {
            c.probe()
                .program_fd(name)
                .with_context(|| format!("program {name} not loaded"))?
                .try_clone_to_owned()
                .context("duplicating a program descriptor")
        })
        .collect::<Result<Vec<_>>>()?;
    let cgroup = own_cgroup()?;
    let before = counted(&mut c, &links, cgroup)?;
    let info = |fds: &mut dyn Iterator<Item = std::os::fd::BorrowedFd<'_>>| {
        fds.map(ProgInfo::of).collect::<Result<Vec<_>>>()
    };
    let ours0 = info(&mut ours.iter().map(|fd| fd.as_fd()))?;
    let empty0 = info(&mut empties.iter().map(|e| e.prog.as_fd()))?;
    let port = retina_tests::free_port()?;
    let dst = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let start = std::time::Instant::now();
    let mut refused = 0;
    for _ in 0..connects {
        match std::net::TcpStream::connect(dst) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            Err(e) => return Err(e).context("connect"),
            Ok(_) => anyhow::bail!("port {port} accepted a connection"),
        }
    }
    let elapsed = start.elapsed();
    sys::sleep(Duration::from_millis(100))?;
    let ours1 = info(&mut ours.iter().map(|fd| fd.as_fd()))?;
    let empty1 = info(&mut empties.iter().map(|e| e.prog.as_fd()))?;
    let after = counted(&mut c, &links, cgroup)?;
    let per_run = |a: &ProgInfo, b: &ProgInfo| {
        let runs = b.run_cnt - a.run_cnt;
        (
            runs,
            (b.run_time_ns - a.run_time_ns) as f64 / runs.max(1) as f64,
        )
    };
    let mut programs = Vec::new();
    let mut rows = Vec::new();
    for (i, (name, tp, _)) in hooks.iter().enumerate() {
        let (runs, ns) = per_run(&ours0[i], &ours1[i]);
        let (eruns, ens) = per_run(&empty0[i], &empty1[i]);
        programs.push((*name, *tp, runs, ns, ens));
        rows.push(json!({
            "program": name, "tracepoint": tp,
            "runs": runs, "ns_per_run": sys::round3(ns),
            "empty_runs": eruns, "empty_ns_per_run": sys::round3(ens),
            "overhead_ns_per_event_above_empty": sys::round3(ns - ens),
            "info": ours1[i].json(),
        }));
    }
    let (failures, resets) = (after.0 - before.0, after.1 - before.1);
    let restored = stats.previous().to_string();
    drop(stats);
    let json = json!({
        "what": "TCP connects to a closed loopback port from the bench's own cgroup: each is a failed connect (SYN_SENT -> CLOSE in inet_sock_set_state, which also runs for CLOSE -> SYN_SENT), a reset sent without a socket (tcp_send_reset: the program returns at once) and a reset received (tcp_receive_reset: the whole path, socket to cgroup to the per-CPU hash)",
        "connects": connects,
        "refused": refused,
        "seconds": sys::round3(elapsed.as_secs_f64()),
        "programs": rows,
        "target_max_ns": 50,
        "overflow": c.overflow().events,
        "accuracy": {
            "cgroup_id": cgroup,
            "connect_failures_counted": failures,
            "resets_received_counted": resets,
            "exact": failures == refused && resets == refused,
        },
        "bpf_stats_enabled_restored_to": restored,
    });
    Ok(TcpReport {
        json,
        connects: refused,
        programs,
        failures_counted: failures,
        resets_counted: resets,
    })
}
