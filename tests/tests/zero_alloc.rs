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
        ethtool::{EthtoolCollector, EthtoolConfig, LinkStateCollector},
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
