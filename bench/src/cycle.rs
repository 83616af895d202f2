//! Sections 1, 2 and 4: the agent's collection cycle and each of its parts, the raw
//! ETHTOOL_GSTATS floor, and heap allocations per cycle, all in one interleaved loop so that
//! every figure (and every ratio) sees the same machine load.

use std::{collections::BTreeMap, os::fd::AsFd as _, path::Path, time::Instant};

use anyhow::{Context, Result, bail};
use opentelemetry::KeyValue;
use retina_agent::{
    agent::Agent,
    collectors::drops::{
        DropCollector,
        probe::{DropProbe, ProbeOptions},
        reasons::DropReasons,
    },
    collectors::{
        Collector,
        conntrack::{ConntrackCollector, ConntrackConfig},
        ethtool::{EthtoolCollector, EthtoolConfig, InterfaceStatus, LinkStateCollector},
        netdev::{NetdevCollector, NetdevConfig},
        netstat::{NetstatCollector, NetstatConfig},
        qdisc::{QdiscCollector, QdiscConfig},
        softnet::{SoftnetCollector, SoftnetConfig},
    },
    config::Config,
    kernel::btf::Btf,
    kernel::links::Links,
    model::{Metric, Number},
};
use retina_tests::alloc;
use serde_json::{Value, json};

use super::{
    floors::{MapFloor, NetlinkFloor, ProcFloor},
    net::Floor,
    sys::{self, Rusage, Summary},
};

/// The runtime the link-state collector's task runs on, for the whole process: the bench
/// drives cycles itself, so this stands in for the daemon's runtime.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = retina_tests::runtime()?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// The agent as the daemon assembles it: drops, netdev, netstat, plus the NIC driver
/// statistics and link-state collectors when `Agent::new` does not add them itself.
pub fn full_agent() -> Result<Agent> {
    let _rt = runtime()?.enter();
    let mut agent = Agent::new(&Config::default()).context("starting the agent")?;
    if let Some(d) = agent.degraded().first() {
        bail!(
            "the agent could not start `{}`: {} (the bench needs every collector)",
            d.collector,
            d.reason
        );
    }
    let has = |agent: &Agent, name: &str| agent.collectors().any(|(c, _)| c.name() == name);
    let config = EthtoolConfig::default();
    if !has(&agent, "ethtool") {
        agent.add(Box::new(EthtoolCollector::new(&config)?));
    }
    if config.link_state && !has(&agent, "ethtool_link") {
        agent.add(Box::new(LinkStateCollector::new(&config)?));
    }
    Ok(agent)
}

/// The drop collector with its own probe, as `Agent` builds it.
pub fn drop_collector() -> Result<DropCollector> {
    let btf = Btf::from_sys()?;
    let reasons = DropReasons::load(&btf, Some(Path::new("/sys/kernel/btf")))?;
    let probe = DropProbe::load(&btf, &ProbeOptions::default())?;
    let host = retina_agent::kernel::netns::current_netns_inode()?;
    Ok(DropCollector::new(probe, reasons, host))
}

/// A batch reader of the key-to-slot map of `drops` (for the floor: what the collector
/// reads when the program created keys; otherwise it only sums its memory-mapped counts).
fn map_floor(drops: &mut DropCollector) -> Result<MapFloor> {
    let ebpf = drops.probe_mut().ebpf_mut();
    let Some(aya::maps::Map::HashMap(map)) = ebpf.map(retina_ebpf_common::DROPS_MAP) else {
        bail!(
            "the probe has no hash map {}",
            retina_ebpf_common::DROPS_MAP
        );
    };
    let ncpus = aya::util::nr_cpus().map_err(|(p, e)| anyhow::anyhow!("{p}: {e}"))?;
    MapFloor::new(map.fd().as_fd(), ncpus)
}

/// Each part of the cycle on its own.
pub struct Parts {
    pub links: Links,
    pub ethtool: EthtoolCollector,
    pub netdev: NetdevCollector,
    pub netstat: NetstatCollector,
    pub drops: DropCollector,
    pub softnet: SoftnetCollector,
    pub qdisc: QdiscCollector,
    pub conntrack: ConntrackCollector,
}

impl Parts {
    pub fn new() -> Result<Parts> {
        Ok(Parts {
            links: Links::new()?,
            ethtool: EthtoolCollector::new(&EthtoolConfig::default())?,
            netdev: NetdevCollector::new(&NetdevConfig::default()),
            netstat: NetstatCollector::new(&NetstatConfig::default())?,
            drops: drop_collector()?,
            softnet: SoftnetCollector::new(&SoftnetConfig::default())?,
            qdisc: QdiscCollector::new(&QdiscConfig::default())?,
            conntrack: ConntrackCollector::new(&ConntrackConfig::default())?,
        })
    }

    fn warm(&mut self) -> Result<()> {
        self.links.refresh()?;
        self.ethtool
            .collect(&self.links)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.netdev
            .collect(&self.links)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.netstat
            .collect(&self.links)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.drops
            .collect(&self.links)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for c in [
            &mut self.softnet as &mut dyn Collector,
            &mut self.qdisc,
            &mut self.conntrack,
        ] {
            c.collect(&self.links)
                .map_err(|e| anyhow::anyhow!("{}: {e}", c.name()))?;
        }
        Ok(())
    }
}

/// Per-iteration samples of one measured thing.
#[derive(Default)]
struct Series {
    cpu_ns: Vec<u64>,
    wall_ns: Vec<u64>,
    allocs: u64,
    failures: u64,
}

impl Series {
    fn with_capacity(n: usize) -> Series {
        Series {
            cpu_ns: Vec::with_capacity(n),
            wall_ns: Vec::with_capacity(n),
            ..Series::default()
        }
    }

    /// Runs `f`, recording this thread's CPU time, wall time and heap allocations.
    fn time(&mut self, f: impl FnOnce() -> bool) {
        let w = Instant::now();
        let c = sys::thread_cpu_ns();
        let (a, ok) = alloc::count(f);
        let cpu = sys::thread_cpu_ns() - c;
        let wall = w.elapsed().as_nanos() as u64;
        self.cpu_ns.push(cpu);
        self.wall_ns.push(wall);
        self.allocs += a;
        self.failures += u64::from(!ok);
    }

    fn cpu_us(&self) -> Summary {
        Summary::of(&self.cpu_ns).scaled(1e-3)
    }

    fn wall_us(&self) -> Summary {
        Summary::of(&self.wall_ns).scaled(1e-3)
    }

    fn json(&self, per: usize) -> Value {
        let cpu = self.cpu_us();
        json!({
            "cpu_us": cpu.json(),
            "wall_us": self.wall_us().json(),
            "cpu_us_per_interface_median": sys::round3(cpu.median / per.max(1) as f64),
            "allocations": self.allocs,
            "allocations_per_cycle": self.allocs as f64 / self.cpu_ns.len().max(1) as f64,
            "failures": self.failures,
        })
    }
}

/// What one interface count measured (the figures other sections compare with).
pub struct CycleReport {
    pub json: Value,
    /// Whole agent cycle, CPU µs.
    pub cycle_cpu_us: Summary,
    /// Whole agent cycle, wall µs.
    pub cycle_wall_us: Summary,
    /// Per part, wall µs (for node_exporter's per-collector wall durations).
    pub part_wall_us: BTreeMap<&'static str, Summary>,
    pub part_cpu_us: BTreeMap<&'static str, Summary>,
    pub ethtool_over_floor: f64,
    pub floor_us_per_interface: f64,
    pub cycle_allocs_per_cycle: f64,
    pub visit_allocs_per_cycle: f64,
    pub driver_stat_interfaces: usize,
    pub table_interfaces: usize,
    pub points: u64,
    pub map_entries: u64,
}

fn collect(c: &mut dyn Collector, links: &Links) -> bool {
    c.collect(links).is_ok()
}

/// Runs `cycles` interleaved iterations: agent cycle, agent visit, then each part alone and
/// the floor pass.
pub fn run(agent: &mut Agent, parts: &mut Parts, cycles: usize) -> Result<CycleReport> {
    // Warm-up: interfaces discovered, names fetched, buffers sized.
    for _ in 0..30 {
        sys::check_stop()?;
        agent.cycle();
        parts.warm()?;
    }
    let names: Vec<String> = parts
        .links
        .iter()
        .filter(|l| &*l.name != "lo")
        .map(|l| l.name.to_string())
        .collect();
    let mut floor = Floor::new(names.iter().map(String::as_str))?;
    let mut nl = NetlinkFloor::new()?;
    let mut procf = ProcFloor::new()?;
    let mut mapf = map_floor(&mut parts.drops)?;
    let active = parts
        .links
        .iter()
        .filter(|l| {
            matches!(
                parts.ethtool.status(l.ifindex),
                Some(InterfaceStatus::Active { valid: true, .. })
            )
        })
        .count();
    if active != floor.len() {
        eprintln!(
            "warning: the ethtool collector reads {active} interfaces, the floor {}",
            floor.len()
        );
    }
    let table = parts.links.len();

    let mut points = 0u64;
    let mut driver_points = 0u64;
    let map_entries = std::cell::Cell::new(0u64);
    let mut sum = 0u64;
    let mut visitor = |m: &'static Metric, attrs: &[KeyValue], v: Number| {
        points += 1;
        if m.name == "retina.nic.driver.stat" {
            driver_points += 1;
        }
        if m.name == "retina.drop.map.entries"
            && let Number::U64(n) = v
        {
            map_entries.set(n);
        }
        sum = sum.wrapping_add(attrs.len() as u64).wrapping_add(match v {
            Number::U64(v) => v,
            Number::F64(v) => v.to_bits(),
        });
    };

    let mut s_cycle = Series::with_capacity(cycles);
    let mut s_visit = Series::with_capacity(cycles);
    let mut s_links = Series::with_capacity(cycles);
    let mut s_ethtool = Series::with_capacity(cycles);
    let mut s_floor = Series::with_capacity(cycles);
    let mut s_netdev = Series::with_capacity(cycles);
    let mut s_netstat = Series::with_capacity(cycles);
    let mut s_drops = Series::with_capacity(cycles);
    let mut s_softnet = Series::with_capacity(cycles);
    let mut s_qdisc = Series::with_capacity(cycles);
    let mut s_conntrack = Series::with_capacity(cycles);
    let mut s_getlink = Series::with_capacity(cycles);
    let mut s_getstats = Series::with_capacity(cycles);
    let mut s_getqdisc = Series::with_capacity(cycles);
    let mut s_proc = Series::with_capacity(cycles);
    let mut s_map = Series::with_capacity(cycles);
    let mut paired = Vec::with_capacity(cycles);
    let mut floor_sum = 0u64;
    let generation = parts.links.generation();
    let load0 = sys::loadavg();
    // Cycles on which a new drop key appeared (a new series is built: allocations are
    // expected there) are counted apart from the steady ones.
    let mut prev_entries = None;
    let mut new_key_cycles = 0u64;
    let mut new_key_allocs = 0u64;
    for i in 0..cycles {
        if i.is_multiple_of(64) {
            sys::check_stop()?;
        }
        let before = s_cycle.allocs;
        s_cycle.time(|| {
            agent.cycle();
            true
        });
        s_visit.time(|| {
            agent.visit(&mut visitor);
            true
        });
        if prev_entries.is_some_and(|p| p != map_entries.get()) {
            new_key_cycles += 1;
            new_key_allocs += s_cycle.allocs - before;
            s_cycle.allocs = before;
        }
        prev_entries = Some(map_entries.get());
        let p = &mut *parts;
        s_links.time(|| p.links.refresh().is_ok());
        s_ethtool.time(|| collect(&mut p.ethtool, &p.links));
        s_floor.time(|| floor.pass() == 0);
        floor_sum = floor_sum.wrapping_add(floor.checksum());
        s_netdev.time(|| collect(&mut p.netdev, &p.links));
        s_netstat.time(|| collect(&mut p.netstat, &p.links));
        s_drops.time(|| collect(&mut p.drops, &p.links));
        s_softnet.time(|| collect(&mut p.softnet, &p.links));
        s_qdisc.time(|| collect(&mut p.qdisc, &p.links));
        s_conntrack.time(|| collect(&mut p.conntrack, &p.links));
        s_getlink.time(|| nl.getlink().is_ok());
        s_getstats.time(|| nl.getstats().is_ok());
        s_getqdisc.time(|| nl.getqdisc().is_ok());
        s_proc.time(|| procf.pass() > 0);
        s_map.time(|| mapf.pass().is_ok());
        let (e, f) = (s_ethtool.cpu_ns[i], s_floor.cpu_ns[i]);
        if f > 0 {
            paired.push(e as f64 / f as f64);
        }
    }
    let churned = parts.links.generation() != generation;
    if churned {
        eprintln!("warning: the link table changed during the measurement (another process?)");
    }

    // A tight loop of whole cycles only: user/system split and process-wide CPU (the
    // runtime thread running the link-state task included).
    let tight = cycles.min(500);
    let ru0 = Rusage::thread();
    let pc0 = sys::process_cpu_ns();
    let w0 = Instant::now();
    for _ in 0..tight {
        agent.cycle();
    }
    let wall_tight = w0.elapsed().as_nanos() as f64 / tight as f64 / 1e3;
    let proc_tight = (sys::process_cpu_ns() - pc0) as f64 / tight as f64 / 1e3;
    let ru = Rusage::thread().since(ru0);

    let per_iface = floor.len().max(1);
    let ethtool_cpu = s_ethtool.cpu_us();
    let floor_cpu = s_floor.cpu_us();
    let ratio = ethtool_cpu.median / floor_cpu.median;
    paired.sort_by(f64::total_cmp);
    let paired_median = paired.get(paired.len() / 2).copied().unwrap_or(f64::NAN);
    let visits = cycles.max(1) as u64;
    let points_per_cycle = points / visits;
    let json = json!({
        "cycles": cycles,
        "interfaces_in_link_table": table,
        "interfaces_with_driver_stats": floor.len(),
        "ethtool_collector_active_interfaces": active,
        "points_per_cycle": points_per_cycle,
        "driver_stat_points_per_cycle": driver_points / visits,
        "link_table_changed_during_run": churned,
        "loadavg_before": load0,
        "loadavg_after": sys::loadavg(),
        "agent_cycle": s_cycle.json(table),
        "agent_visit": s_visit.json(table),
        "parts": {
            "links_refresh": s_links.json(table),
            "ethtool": s_ethtool.json(per_iface),
            "netdev": s_netdev.json(table),
            "netstat": s_netstat.json(table),
            "drops": s_drops.json(table),
            "softnet": s_softnet.json(table),
            "qdisc": s_qdisc.json(table),
            "conntrack": s_conntrack.json(table),
        },
        "qdisc_series": parts.qdisc.exported(),
        "softnet_cpus": parts.softnet.cpus(),
        "conntrack_series": parts.conntrack.exported(),
        "drop_map_entries": map_entries.get(),
        "new_drop_key_cycles": new_key_cycles,
        "new_drop_key_allocations": new_key_allocs,
        "floor_gstats": s_floor.json(per_iface),
        "floors": {
            "rtm_getlink_dump": s_getlink.json(table),
            "rtm_getstats_link64_dump": s_getstats.json(table),
            "rtm_getqdisc_dump": s_getqdisc.json(table),
            "proc_net_read": s_proc.json(table),
            "drop_map_batch_read": s_map.json(table),
        },
        "ours_over_floor": {
            "links_refresh_over_rtm_getlink": sys::round3(s_links.cpu_us().median / s_getlink.cpu_us().median),
            "netstat_over_proc_read": sys::round3(s_netstat.cpu_us().median / s_proc.cpu_us().median),
            "drops_over_map_batch_read": sys::round3(s_drops.cpu_us().median / s_map.cpu_us().median),
        },
        "ethtool_over_floor": {
            "ratio_of_median_cpu": sys::round3(ratio),
            "median_of_paired_ratios": sys::round3(paired_median),
            "target_max": 1.3,
        },
        "tight_cycle_loop": {
            "cycles": tight,
            "wall_us_mean": sys::round3(wall_tight),
            "process_cpu_us_mean": sys::round3(proc_tight),
            "thread_user_us_mean": sys::round3(ru.user_us as f64 / tight as f64),
            "thread_sys_us_mean": sys::round3(ru.sys_us as f64 / tight as f64),
        },
        "checksums": [sum, floor_sum],
    });
    let mut part_wall_us = BTreeMap::new();
    let mut part_cpu_us = BTreeMap::new();
    for (name, s) in [
        ("links_refresh", &s_links),
        ("ethtool", &s_ethtool),
        ("netdev", &s_netdev),
        ("netstat", &s_netstat),
        ("drops", &s_drops),
        ("softnet", &s_softnet),
        ("qdisc", &s_qdisc),
        ("conntrack", &s_conntrack),
        ("visit", &s_visit),
        ("floor", &s_floor),
        ("floor_getlink", &s_getlink),
        ("floor_getstats", &s_getstats),
        ("floor_getqdisc", &s_getqdisc),
        ("floor_proc", &s_proc),
        ("floor_map", &s_map),
    ] {
        part_wall_us.insert(name, s.wall_us());
        part_cpu_us.insert(name, s.cpu_us());
    }
    Ok(CycleReport {
        json,
        cycle_cpu_us: s_cycle.cpu_us(),
        cycle_wall_us: s_cycle.wall_us(),
        part_wall_us,
        part_cpu_us,
        ethtool_over_floor: ratio,
        floor_us_per_interface: floor_cpu.median / per_iface as f64,
        cycle_allocs_per_cycle: s_cycle.allocs as f64 / cycles.max(1) as f64,
        visit_allocs_per_cycle: s_visit.allocs as f64 / cycles.max(1) as f64,
        driver_stat_interfaces: floor.len(),
        table_interfaces: table,
        points: points_per_cycle,
        map_entries: map_entries.get(),
    })
}
