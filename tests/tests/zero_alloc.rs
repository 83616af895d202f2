//! The agent's core promise: once interfaces are known, a collection cycle (link dump,
//! every collector's `collect`, and `visit`) performs no heap allocation at all.
//!
//! A counting global allocator counts `alloc`/`alloc_zeroed`/`realloc` calls made on the
//! test's own thread while counting is switched on (other threads — the test harness, the
//! tokio worker running the link-state task — allocate freely). 16 veth pairs are created, a few warm-up cycles
//! size every buffer, then 1000 cycles must allocate exactly nothing.
//!
//! To cover another collector, add one line to `collectors()`. The drop collector runs with
//! drop locations on (the path with more work per key), while a child process keeps
//! dropping datagrams of one key, so its values change every cycle.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing, with its message"
)]

use anyhow::Result;
use retina_agent::{
    collectors::{
        Collector,
        conntrack::{ConntrackCollector, ConntrackConfig},
        ethtool::{EthtoolCollector, EthtoolConfig, LinkStateCollector},
        netstat::workloads::{WorkloadNetstatCollector, WorkloadNetstatConfig},
        qdisc::{QdiscCollector, QdiscConfig},
        softnet::{SoftnetCollector, SoftnetConfig},
    },
    kernel::links::Links,
    model::{Metric, Number},
    workload::peers::PeerOwners,
};
use retina_tests::*;

/// Allocations made on this thread while `f` runs.
fn count_allocs<T>(f: impl FnOnce() -> T) -> (u64, T) {
    retina_tests::alloc::count(f)
}

/// Every collector under test, with its default configuration.
fn collectors() -> Result<Vec<Box<dyn Collector>>> {
    let ethtool = EthtoolConfig::default();
    Ok(vec![
        Box::new(EthtoolCollector::new(&ethtool)?),
        Box::new(LinkStateCollector::new(&ethtool)?),
        Box::new(SoftnetCollector::new(&SoftnetConfig::default())?),
        Box::new(QdiscCollector::new(&QdiscConfig::default())?),
        Box::new(ConntrackCollector::new(&ConntrackConfig::default())?),
        Box::new(NetnsCounted(WorkloadNetstatCollector::new(
            &WorkloadNetstatConfig::default(),
            retina_agent::kernel::netns::current_netns_inode()?,
        ))),
        Box::new(drops_with_locations()?),
        Box::new(
            retina_agent::collectors::tcp_events::TcpEventCollector::load(
                None,
                retina_agent::collectors::tcp_events::probe::DEFAULT_MAX_ENTRIES,
            )?,
        ),
    ])
}

/// Process walks of the per-workload netstat collector (they legitimately allocate:
/// every few seconds, and after a namespace's process exits).
static NETNS_SCANS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// The namespaces it reads, as of its last cycle.
static NETNS_READ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The per-workload netstat collector, publishing its walks to [`NETNS_SCANS`].
struct NetnsCounted(WorkloadNetstatCollector);

impl Collector for NetnsCounted {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn metrics(&self) -> &'static [&'static Metric] {
        self.0.metrics()
    }
    fn collect(&mut self, links: &Links) -> Result<(), retina_agent::collectors::CollectError> {
        let r = self.0.collect(links);
        NETNS_SCANS.store(self.0.scans(), std::sync::atomic::Ordering::Relaxed);
        NETNS_READ.store(self.0.namespaces(), std::sync::atomic::Ordering::Relaxed);
        r
    }
    fn visit(&self, visitor: &mut dyn retina_agent::model::Visitor) {
        self.0.visit(visitor)
    }
}

fn netns_scans() -> u64 {
    NETNS_SCANS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The drop collector as `drops.locations = true` builds it.
fn drops_with_locations() -> Result<retina_agent::collectors::drops::DropCollector> {
    use retina_agent::collectors::drops::{
        DropCollector,
        kallsyms::Kallsyms,
        locations::{DEFAULT_CAPACITY, Locations},
        probe::{DropProbe, ProbeOptions},
        reasons::DropReasons,
    };
    let btf = retina_agent::kernel::btf::Btf::from_sys()?;
    let reasons = DropReasons::load(&btf, Some(std::path::Path::new("/sys/kernel/btf")))?;
    let options = ProbeOptions {
        locations: true,
        ..ProbeOptions::default()
    };
    let probe = DropProbe::load(&btf, &options)?;
    let host = retina_agent::kernel::netns::current_netns_inode()?;
    Ok(DropCollector::new(probe, reasons, host)
        .with_locations(Locations::new(Kallsyms::load()?, DEFAULT_CAPACITY)))
}

/// A child process, killed and reaped on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's resolver of host veths' peer workloads.
fn peers() -> &'static std::sync::Mutex<Option<PeerOwners>> {
    static PEERS: std::sync::Mutex<Option<PeerOwners>> = std::sync::Mutex::new(None);
    &PEERS
}

/// Resolutions the peer resolver ran (its rescans legitimately allocate).
fn peer_runs() -> u64 {
    peers()
        .lock()
        .ok()
        .and_then(|p| p.as_ref().map(PeerOwners::runs))
        .unwrap_or(0)
}

/// One agent cycle: link dump, the veth peers' workloads, every collector, then a visit
/// that reads every point. Returns the number of points seen and a checksum, so nothing
/// is optimised away.
fn cycle(links: &mut Links, collectors: &mut [Box<dyn Collector>]) -> (u64, u64) {
    links.refresh().expect("link dump");
    if let Some(p) = peers().lock().expect("peers").as_mut() {
        p.update(links);
    }
    for c in collectors.iter_mut() {
        c.collect(links).expect("collect");
    }
    let mut points = 0u64;
    let mut checksum = 0u64;
    let mut visitor = |_: &'static Metric, attrs: &[opentelemetry::KeyValue], v: Number| {
        points += 1;
        checksum = checksum
            .wrapping_add(attrs.len() as u64)
            .wrapping_add(match v {
                Number::U64(v) => v,
                Number::F64(v) => v.to_bits(),
            });
    };
    for c in collectors.iter() {
        c.visit(&mut visitor);
    }
    (points, checksum)
}

/// The link table's identity (ifindex, name), to notice interfaces that came or went
/// during a measurement (other tests on the machine).
fn identity(links: &Links) -> Vec<(u32, String)> {
    links
        .iter()
        .map(|l| (l.ifindex, l.name.to_string()))
        .collect()
}

#[test]
fn steady_state_cycles_allocate_nothing() -> Result<()> {
    require_root();
    const PAIRS: usize = 16;
    const CYCLES: usize = 1000;
    let mut veths: Vec<Veth> = (0..PAIRS)
        .map(|_| Veth::new("reta"))
        .collect::<Result<_>>()?;
    // Qdiscs for the qdisc collector to read: a classless one on every veth, an htb tree
    // (classes: a class dump per cycle) on the first.
    for v in &veths[1..] {
        run(
            "tc",
            [
                "qdisc", "replace", "dev", &v.host, "root", "pfifo", "limit", "100",
            ],
        )?;
    }
    let h = veths[0].host.as_str();
    run(
        "tc",
        [
            "qdisc", "replace", "dev", h, "root", "handle", "1:", "htb", "default", "10",
        ],
    )?;
    run(
        "tc",
        [
            "class", "add", "dev", h, "parent", "1:", "classid", "1:10", "htb", "rate", "1mbit",
        ],
    )?;
    let mut links = Links::new()?;
    let rt = runtime()?;
    let _rt = rt.enter();
    let mut collectors = collectors()?;
    // Datagrams to a closed port, one drop key, for the whole test.
    let ns = NetNs::new("rzal")?;
    // A process of a systemd service in it: a workload namespace, whose protocol counters
    // (Udp:NoPorts moves every cycle) the per-workload netstat collector reads.
    let unit = format!("system.slice/retina-zal-{}.service", std::process::id());
    let service = retina_tests::workload::Workload::start(&ns.name, &unit)?;
    // One veth's peer in that namespace: a host link with IFLA_LINK_NETNSID, resolved to
    // the namespace's (sender) process.
    veths[1].move_peer(&ns)?;
    *peers().lock().expect("peers") = Some(PeerOwners::new(
        retina_agent::kernel::netns::current_netns_inode()?,
    )?);
    // The sender is one of the service's processes: a namespace whose processes are in
    // different cgroups names no workload.
    let procs = retina_tests::workload::cgroup_v2_root()?
        .join(&unit)
        .join("cgroup.procs");
    // By its path: a busybox `sh` (the guests') runs its own `ip` applet, which knows
    // no netns.
    let ip = which("ip").ok_or_else(|| anyhow::anyhow!("no ip on PATH"))?;
    let _sender = Child(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {} && exec {ip} netns exec {} {} udp 127.0.0.1:9 1000000000 32",
                procs.display(),
                ns.name,
                traffic(),
                ip = ip.display()
            ))
            .stdout(std::process::Stdio::null())
            .spawn()?,
    );
    let drops_of_ns = |collectors: &[Box<dyn Collector>]| {
        let inode = ns.inode().unwrap_or(0) as i64;
        let mut n = 0u64;
        let Some(drops) = collectors.iter().find(|c| c.name() == "drops") else {
            return 0;
        };
        drops.visit(
            &mut |m: &'static Metric, attrs: &[opentelemetry::KeyValue], v: Number| {
                if m.name == "retina.drop.count"
                    && attrs.iter().any(|kv| {
                        kv.key.as_str() == "network.namespace.inode"
                            && kv.value == opentelemetry::Value::I64(inode)
                    })
                    && attrs.iter().any(|kv| kv.key.as_str() == "drop.location")
                    && let Number::U64(v) = v
                {
                    n += v;
                }
            },
        );
        n
    };
    // Until the sender's drops are counted (its key and address known).
    let mut seen = 0;
    for _ in 0..1000 {
        cycle(&mut links, &mut collectors);
        seen = drops_of_ns(&collectors);
        if seen > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        seen > 0,
        "the sender's drops never showed up with a location"
    );
    // Until the per-workload netstat collector has found the service's namespace: it walks
    // the processes at most every few seconds, and the namespace is newer than its last
    // walk.
    let workload_points = |collectors: &[Box<dyn Collector>]| {
        let mut n = 0usize;
        for c in collectors {
            c.visit(
                &mut |m: &'static Metric, _: &[opentelemetry::KeyValue], _| {
                    n += usize::from(m.name == "retina.workload.netstat.stat");
                },
            );
        }
        n
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while workload_points(&collectors) < 17 {
        if std::time::Instant::now() >= deadline {
            // What a fresh walk of the processes sees, with the task iterator.
            let mut w = retina_agent::workload::Workloads::new(
                retina_agent::kernel::netns::current_netns_inode()?,
            );
            w.scan();
            let seen: Vec<String> = w
                .namespaces()
                .map(|(ns, pid, wl)| format!("{ns} pid {pid}: {wl:?}"))
                .collect();
            eprintln!("a fresh walk sees: {seen:?}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service's namespace {} never showed up in the per-workload netstat \
             collector ({} process walks, {} namespaces read; the service's process {} has \
             cgroup {:?})",
            ns.inode().unwrap_or(0),
            netns_scans(),
            NETNS_READ.load(std::sync::atomic::Ordering::Relaxed),
            service.pid(),
            std::fs::read_to_string(format!("/proc/{}/cgroup", service.pid())),
        );
        cycle(&mut links, &mut collectors);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // A new interface appearing in another process's test allocates (legitimately): in
    // that case measure again.
    let mut last = None;
    // Each attempt is at most CYCLES cycles and WINDOW long: the per-workload collector
    // walks the processes every 10 s (which allocates, and makes the attempt count as
    // changed), so on a slow machine (a QEMU guest) a shorter window is needed to fall
    // between two walks.
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(2);
    for attempt in 0..10 {
        for _ in 0..5 {
            cycle(&mut links, &mut collectors);
        }
        let before = identity(&links);
        let points_before = cycle(&mut links, &mut collectors).0;
        let runs_before = peer_runs();
        let scans_before = netns_scans();
        let drops_before = drops_of_ns(&collectors);
        let started = std::time::Instant::now();
        let (allocs, (points, cycles)) = count_allocs(|| {
            let mut points = 0;
            let mut cycles = 0;
            while cycles < CYCLES && (cycles < 20 || started.elapsed() < WINDOW) {
                points = cycle(&mut links, &mut collectors).0;
                cycles += 1;
            }
            (points, cycles)
        });
        // New series (a new interface, or a drop of a new key elsewhere on the host) may
        // allocate; the sender's key must have kept counting.
        // A rescan of the peers' namespaces (every few seconds while one is unresolved,
        // every minute otherwise) reads /proc and allocates.
        let changed = identity(&links) != before
            || points != points_before
            || peer_runs() != runs_before
            || netns_scans() != scans_before;
        assert!(
            drops_of_ns(&collectors) > drops_before,
            "the sender's drop series did not move during the measurement"
        );
        // Each veth reports its 9 driver statistics plus retina.nic.info.
        assert!(
            points >= (PAIRS * 2 * 10) as u64,
            "only {points} points per cycle for {PAIRS} veth pairs"
        );
        if allocs == 0 {
            // The new readers really read something in those cycles.
            let mut per_metric = std::collections::BTreeMap::<&str, usize>::new();
            let mut classes = 0;
            for c in &collectors {
                c.visit(
                    &mut |m: &'static Metric, a: &[opentelemetry::KeyValue], _| {
                        *per_metric.entry(m.name).or_default() += 1;
                        classes += usize::from(
                            m.name == "retina.qdisc.packets"
                                && a.iter().any(|kv| kv.value.as_str() == "class"),
                        );
                    },
                );
            }
            let n = |name| per_metric.get(name).copied().unwrap_or(0);
            assert!(n("retina.qdisc.packets") > PAIRS, "{per_metric:?}");
            assert!(classes >= 1, "no htb class read: {per_metric:?}");
            assert!(n("retina.softnet.processed") >= 1, "{per_metric:?}");
            assert!(n("retina.conntrack.stat") >= 1, "{per_metric:?}");
            // The service's namespace, the default field set.
            assert!(n("retina.workload.netstat.stat") >= 17, "{per_metric:?}");
            assert!(peer_runs() >= 1, "the veth peer was never resolved");
            drop(veths);
            drop(ns);
            return Ok(());
        }
        eprintln!(
            "attempt {attempt}: {allocs} allocations in {cycles} cycles (links changed: {changed})"
        );
        last = Some((allocs, changed));
        if !changed {
            break;
        }
    }
    panic!("steady-state cycles allocated: {last:?} (allocations, link table changed)");
}
