//! The agent's core promise: once interfaces are known, a collection cycle (link dump,
//! every collector's `collect`, and `visit`) performs no heap allocation at all.
//!
//! A counting global allocator counts `alloc`/`alloc_zeroed`/`realloc` calls made on the
//! test's own thread while counting is switched on (other threads — the test harness, the
//! link-state worker — allocate freely). 16 veth pairs are created, a few warm-up cycles
//! size every buffer, then 1000 cycles must allocate exactly nothing.
//!
//! To cover another collector, add one line to `collectors()`.

use anyhow::Result;
use retina_agent::{
    collectors::{
        Collector,
        conntrack::{ConntrackCollector, ConntrackConfig},
        ethtool::{EthtoolCollector, EthtoolConfig, LinkStateCollector},
        qdisc::{QdiscCollector, QdiscConfig},
        softnet::{SoftnetCollector, SoftnetConfig},
    },
    links::Links,
    metrics::{Metric, Number},
};
use retina_tests::*;

#[global_allocator]
static GLOBAL: retina_tests::alloc::Counting = retina_tests::alloc::Counting;

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
    ])
}

/// One agent cycle: link dump, every collector, then a visit that reads every point.
/// Returns the number of points seen and a checksum, so nothing is optimised away.
fn cycle(links: &mut Links, collectors: &mut [Box<dyn Collector>]) -> (u64, u64) {
    links.refresh().expect("link dump");
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
    let veths: Vec<Veth> = (0..PAIRS)
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
    let mut collectors = collectors()?;

    // A new interface appearing in another process's test allocates (legitimately): in
    // that case measure again.
    let mut last = None;
    for attempt in 0..3 {
        for _ in 0..5 {
            cycle(&mut links, &mut collectors);
        }
        let before = identity(&links);
        let (allocs, (points, _)) = count_allocs(|| {
            let mut points = 0;
            for _ in 0..CYCLES {
                points = cycle(&mut links, &mut collectors).0;
            }
            (points, ())
        });
        let changed = identity(&links) != before;
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
            drop(veths);
            return Ok(());
        }
        eprintln!(
            "attempt {attempt}: {allocs} allocations in {CYCLES} cycles (links changed: {changed})"
        );
        last = Some((allocs, changed));
        if !changed {
            break;
        }
    }
    panic!("steady-state cycles allocated: {last:?} (allocations, link table changed)");
}
