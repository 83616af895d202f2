//! Section 11: per-workload protocol counters (issue 23) at `--pods` pods (`--only netns`):
//! the `netstat_workloads` collector's steady cycle (three `pread`s per namespace of
//! `/proc/PID/net/{snmp,netstat,snmp6}` through held descriptors, parsed, one `poll` over
//! the pidfds), CPU per cycle and allocations, with the default field set and with every
//! field; and, to choose what is read every cycle, each file's read alone (the kernel's
//! work: it sums every counter over the CPUs on each read) over all namespaces.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use retina_agent::collectors::{
    Collector,
    netstat::workloads::{WorkloadNetstatCollector, WorkloadNetstatConfig},
    procfile::ProcFile,
};
use serde_json::{Value, json};

use super::{
    report::{Status, Table},
    rows::fmt_us,
    sys::{self, Summary},
    workload::Pods,
};

pub struct NetnsReport {
    pub pods: usize,
    pub namespaces: usize,
    pub default_cpu_us: Summary,
    pub all_cpu_us: Summary,
    pub points_default: usize,
    pub points_all: usize,
    pub allocs_per_cycle: f64,
    /// Namespaces read per cycle within the collector's CPU budget (default fields).
    pub read_per_cycle: usize,
    /// CPU of reading one file in every namespace, per file.
    pub read_cpu_us: Vec<(&'static str, Summary)>,
    pub json: Value,
}

/// CPU per `update` over `cycles` cycles, allocations per cycle, points per cycle.
fn measure(
    config: &WorkloadNetstatConfig,
    pods: usize,
    cycles: usize,
) -> Result<(Summary, f64, usize, usize, usize)> {
    let host = retina_agent::kernel::netns::current_netns_inode()?;
    let mut c = WorkloadNetstatCollector::new(config, host);
    // Until every namespace has been read once (the budget spreads the reads over cycles,
    // and a namespace's first read builds its points, which allocates): the points stop
    // growing for two whole rounds of the namespaces.
    let (mut last, mut still) = (0usize, 0usize);
    for _ in 0..1000 {
        c.update()?;
        let mut n = 0;
        c.visit(&mut |_: &'static _, _: &[opentelemetry::KeyValue], _| n += 1);
        if n == last {
            still += 1;
            if still >= 2 * pods.div_ceil(c.read_last_cycle().max(1)) {
                break;
            }
        } else {
            (last, still) = (n, 0);
        }
    }
    ensure!(
        c.namespaces() >= pods,
        "the collector reads {} namespaces of {pods} pods",
        c.namespaces()
    );
    let scans = c.scans();
    let mut cpu = Vec::with_capacity(cycles);
    let (allocs, r) = retina_tests::alloc::count(|| -> Result<()> {
        for _ in 0..cycles {
            let t = sys::thread_cpu_ns();
            c.update()?;
            cpu.push(sys::thread_cpu_ns() - t);
        }
        Ok(())
    });
    r?;
    // A process walk (every 10 s) allocates; it is counted in the CPU samples but the
    // allocation figure is for steady cycles only when no walk ran.
    let walks = c.scans() - scans;
    let allocs_per_cycle = if walks == 0 {
        allocs as f64 / cycles as f64
    } else {
        f64::NAN
    };
    let mut points = 0;
    c.visit(&mut |_: &'static _, _: &[opentelemetry::KeyValue], _| points += 1);
    Ok((
        Summary::of(&cpu).scaled(1e-3),
        allocs_per_cycle,
        points,
        c.namespaces(),
        c.read_last_cycle(),
    ))
}

pub fn run(pods_n: usize, cycles: usize) -> Result<NetnsReport> {
    let pods = Pods::new(pods_n)?;
    let (default_cpu_us, allocs_per_cycle, points_default, namespaces, read_per_cycle) =
        measure(&WorkloadNetstatConfig::default(), pods_n, cycles)?;
    let all = WorkloadNetstatConfig {
        include: Vec::new(),
        ..WorkloadNetstatConfig::default()
    };
    let (all_cpu_us, _, points_all, _, _) = measure(&all, pods_n, cycles)?;
    // Each file alone, through held descriptors, in every pod's namespace.
    let pids: Vec<u32> = pods.pids();
    let mut read_cpu_us = Vec::new();
    for name in ["snmp", "netstat", "snmp6"] {
        let mut files: Vec<ProcFile> = pids
            .iter()
            .map(|p| ProcFile::new(PathBuf::from(format!("/proc/{p}/net/{name}")), 16 * 1024))
            .collect::<Result<_, _>>()?;
        let mut cpu = Vec::with_capacity(cycles);
        for _ in 0..cycles {
            let t = sys::thread_cpu_ns();
            for f in &mut files {
                f.read()?;
            }
            cpu.push(sys::thread_cpu_ns() - t);
        }
        read_cpu_us.push((name, Summary::of(&cpu).scaled(1e-3)));
    }
    let json = json!({
        "pods": pods_n,
        "namespaces_read": namespaces,
        "cycle_cpu_us_default_fields": default_cpu_us.json(),
        "cycle_cpu_us_all_fields": all_cpu_us.json(),
        "points_default_fields": points_default,
        "points_all_fields": points_all,
        "allocations_per_steady_cycle": allocs_per_cycle,
        "namespaces_read_per_cycle": read_per_cycle,
        "read_only_cpu_us": read_cpu_us.iter().map(|(n, s)| (n.to_string(), s.json())).collect::<serde_json::Map<_, _>>(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
    });
    drop(pods);
    Ok(NetnsReport {
        pods: pods_n,
        namespaces,
        default_cpu_us,
        all_cpu_us,
        points_default,
        points_all,
        allocs_per_cycle,
        read_per_cycle,
        read_cpu_us,
        json,
    })
}

/// The section's rows.
pub fn add(table: &mut Table, r: &NetnsReport) {
    let s = &format!("netns counters, {} pods", r.pods);
    table.info(
        s,
        "namespaces read",
        format!("{} / {}", r.namespaces, r.pods),
    );
    table.info(
        s,
        "namespaces read per cycle within the budget",
        format!("{}", r.read_per_cycle),
    );
    table.push(
        s,
        "CPU per cycle, default fields (median / p99)",
        format!(
            "{} / {}",
            fmt_us(r.default_cpu_us.median),
            fmt_us(r.default_cpu_us.p99)
        ),
        "<= 2 ms",
        Status::check(r.default_cpu_us.median <= 2000.0),
    );
    table.info(
        s,
        "CPU per cycle, every field (median / p99)",
        format!(
            "{} / {}",
            fmt_us(r.all_cpu_us.median),
            fmt_us(r.all_cpu_us.p99)
        ),
    );
    table.info(
        s,
        "points per cycle, default / every field",
        format!("{} / {}", r.points_default, r.points_all),
    );
    for (name, cpu) in &r.read_cpu_us {
        table.info(
            s,
            &format!("read /proc/PID/net/{name} alone, all namespaces (median)"),
            fmt_us(cpu.median),
        );
    }
    table.push(
        s,
        "allocations per steady cycle",
        format!("{}", r.allocs_per_cycle),
        "0",
        Status::check(r.allocs_per_cycle == 0.0),
    );
}
