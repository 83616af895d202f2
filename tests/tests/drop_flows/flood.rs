//! Issue 22's flood: the daemon, as the packaged unit runs it with flows on and a small
//! budget, exports to rotel while a client in a test namespace sends [`FLOOD`] UDP
//! datagrams to a closed port.
//!
//! - The records rotel receives of the flood's flow are at most what the kernel's token
//!   buckets allow over the flood: each CPU's bucket (`drops.flow_events_per_second` / CPUs,
//!   rounded up, per second) holds at most one second of its rate when the flood starts,
//!   and gains its rate per second.
//! - Every drop the probe counts goes through exactly one sample outcome: the program
//!   counts the drop (`retina.drop.count`, or `retina.drop.overflow.count` when the map is
//!   full), then, flows on, either finds no parseable header (`unparsed`) or takes a token
//!   (`sent`) or does not get one or finds the ring full (`suppressed`; ring-full drops are
//!   counted in `suppressed` too, so they are not added again). Drops of the reasons that
//!   are not drops (`NOT_DROP_REASONS`) are left out of both before either counts. So over
//!   a window, growth of drops counted == growth of sent + suppressed + unparsed, exactly.
//!   The counters are the node's (any drop on the machine adds to both), and the two are
//!   read by different tasks once an interval each: they are compared at quiet moments,
//!   two reads an interval and more apart that agree on every counter. A drop-map entry
//!   pruned in the window (its namespace or interface gone) takes its count out of the
//!   sum: the test says so rather than compare then.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use retina_tests::{
    rotel::{PATIENCE, wait_for},
    *,
};

use super::export::{parse_records, start_agent, start_rotel};

/// Datagrams of the flood: issue 22's million.
const FLOOD: u64 = 1_000_000;
/// The node's budget of sampled events per second.
const BUDGET: u64 = 20;
/// The flood's source port.
const SPORT: u16 = 40013;

/// The node-wide counters the comparison needs, from one scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    /// `retina.drop.count` over every series, plus `retina.drop.overflow.count`.
    drops: u64,
    sent: u64,
    suppressed: u64,
    unparsed: u64,
    pruned: u64,
    /// The log export's: exported, failed, dropped.
    records: (u64, u64, u64),
}

fn totals(prometheus: &str) -> Result<Totals> {
    let (status, body) = http_get(prometheus, "/metrics")?;
    ensure!(status == 200, "GET /metrics: {status}");
    let sum = |name: &str| -> Result<u64> {
        let mut found = false;
        let mut total = 0u64;
        for l in body.lines().filter(|l| !l.starts_with('#')) {
            let Some(rest) = l.strip_prefix(name) else {
                continue;
            };
            if !rest.starts_with([' ', '{']) {
                continue;
            }
            let v: f64 = l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("value of {l:?}"))?;
            total += v as u64;
            found = true;
        }
        // Every counter here is exported at zero, but the drop count's series only with
        // their first drop.
        ensure!(
            found || name == "retina_drop_count_total",
            "{name} missing from the scrape:\n{body}"
        );
        Ok(total)
    };
    Ok(Totals {
        drops: sum("retina_drop_count_total")? + sum("retina_drop_overflow_count_total")?,
        sent: sum("retina_drop_sample_sent_total")?,
        suppressed: sum("retina_drop_sample_suppressed_total")?,
        unparsed: sum("retina_drop_sample_unparsed_total")?,
        pruned: sum("retina_drop_map_pruned_total")?,
        records: (
            sum("retina_agent_export_logs_exported_total")?,
            sum("retina_agent_export_logs_failed_total")?,
            sum("retina_agent_export_logs_dropped_total")?,
        ),
    })
}

/// The counters at a quiet moment: two reads 2.5 intervals apart that agree (each task
/// has read its counters since the first, and found nothing new), every event sent
/// handed over as a record.
fn quiet(prometheus: &str) -> Result<Totals> {
    wait_for("a quiet moment on the node", PATIENCE * 3, || {
        let a = totals(prometheus)?;
        std::thread::sleep(Duration::from_millis(2500));
        let b = totals(prometheus)?;
        let (exported, failed, dropped) = b.records;
        let quiet = a == b && exported + failed + dropped == b.sent;
        if !quiet {
            eprintln!("not quiet: {a:?} -> {b:?}");
        }
        Ok(quiet.then_some(b))
    })
}

/// CPUs the kernel may run the probe on: the agent sizes the buckets by them
/// (`aya::util::nr_cpus`, the possible CPUs).
fn possible_cpus() -> Result<u64> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in text.trim().split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u64>()? - a.parse::<u64>()? + 1,
            None => 1,
        };
    }
    Ok(n)
}

#[test]
fn a_million_drop_flood_stays_within_the_budget_and_every_drop_has_one_outcome() -> Result<()> {
    require_root();
    let ns = NetNs::new("rflf")?;
    let dir = TempDir::shared("rflflood")?;
    let (mut rotel, grpc, _) = start_rotel(&dir, "rotel", &[])?;
    let budget_line = format!("flow_events_per_second = {BUDGET}");
    let (mut agent, prometheus) = start_agent(
        &dir,
        &[("flow_events_per_second = 100", budget_line.as_str())],
        &[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        )],
    )?;
    let before = quiet(&prometheus)?;
    let start = Instant::now();
    ns.exec(
        &traffic(),
        &[
            "udp",
            "127.0.0.1:9",
            &FLOOD.to_string(),
            "1",
            &SPORT.to_string(),
        ],
    )?;
    let seconds = start.elapsed().as_secs_f64();
    agent.ensure_alive()?;
    let after = quiet(&prometheus)?;
    let drops = after.drops - before.drops;
    eprintln!(
        "{FLOOD} datagrams in {seconds:.1} s; {before:?} -> {after:?}: {drops} drops counted"
    );
    ensure!(
        drops >= FLOOD,
        "{drops} drops counted for {FLOOD} datagrams to a closed port"
    );
    ensure!(
        after.pruned == before.pruned,
        "drop-map entries pruned during the flood ({before:?} -> {after:?}): their counts \
         left the sum, so it cannot be compared"
    );
    let outcomes = (after.sent + after.suppressed + after.unparsed)
        - (before.sent + before.suppressed + before.unparsed);
    assert_eq!(
        outcomes, drops,
        "sent + suppressed + unparsed grew by {outcomes}, the drops by {drops}: \
         {before:?} -> {after:?}"
    );

    // What the kernel may have sent over the flood, node-wide.
    let cpus = possible_cpus()?;
    let per_cpu = BUDGET.div_ceil(cpus);
    let allowed = (cpus as f64 * per_cpu as f64 * (seconds + 1.0)).floor() as u64;
    let sent = after.sent - before.sent;
    let inode = ns.inode()?.to_string();
    let port = SPORT.to_string();
    // Every record was handed over before `after`; rotel prints them a moment later: the
    // flood's are those once their number stops growing.
    let mut seen = usize::MAX;
    let ours = wait_for("rotel to print the flood's records", PATIENCE, || {
        rotel.ensure_alive()?;
        let n = parse_records(&rotel.log_text())
            .iter()
            .filter(|r| {
                r.attrs.get("source.port") == Some(&port)
                    && r.attrs.get("network.namespace.inode") == Some(&inode)
            })
            .count();
        let stable = n > 0 && n == seen;
        seen = n;
        std::thread::sleep(Duration::from_millis(750));
        Ok(stable.then_some(n as u64))
    })?;
    eprintln!(
        "{ours} records of the flood received, {sent} events sent node-wide; the buckets \
         allow {allowed} ({cpus} CPUs × {per_cpu}/s × ({seconds:.1} s + 1 s of burst))"
    );
    ensure!(
        ours <= sent,
        "{ours} records of the flood, {sent} events sent in all"
    );
    ensure!(
        ours <= allowed,
        "{ours} records of the flood: more than the budget allows ({allowed})"
    );
    let (status, _) = agent.terminate(Duration::from_secs(20))?;
    ensure!(
        status.success(),
        "agent exit: {status}\n{}",
        agent.log_text()
    );
    Ok(())
}
