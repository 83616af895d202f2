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
//!   three exports in a row that agree on every counter. A drop-map entry
//!   pruned in the window (its namespace or interface gone) takes its count out of the
//!   sum: the test says so rather than compare then.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use retina_tests::{
    rotel::{self, DataPoint, PATIENCE, Proc as RProc, parse_rotel, total, wait_for},
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

/// The counters of one export, as rotel logged it.
fn totals(points: &[DataPoint]) -> Result<Totals> {
    let sum = |name: &str| -> Result<u64> {
        let found = points.iter().any(|p| p.metric == name);
        // Every counter here is exported at zero, but the drop count's series only with
        // their first drop.
        ensure!(
            found || name == "retina.drop.count",
            "{name} missing from an export"
        );
        Ok(total(points, name, &[]) as u64)
    };
    Ok(Totals {
        drops: sum("retina.drop.count")? + sum("retina.drop.overflow.count")?,
        sent: sum("retina.drop.sample.sent")?,
        suppressed: sum("retina.drop.sample.suppressed")?,
        unparsed: sum("retina.drop.sample.unparsed")?,
        pruned: sum("retina.drop.map.pruned")?,
        records: (
            sum("retina.agent.export.logs.exported")?,
            sum("retina.agent.export.logs.failed")?,
            sum("retina.agent.export.logs.dropped")?,
        ),
    })
}

/// Exports rotel has logged so far.
fn exports(rotel: &RProc) -> usize {
    rotel.log_text().matches("ResourceMetrics #0").count()
}

/// The counters at a quiet moment: three exports in a row (one a second, so that each
/// reading task has read its counters since the first) that agree, every event sent
/// handed over as a record, all three begun after the first `since` exports (so after
/// what the caller waits for: blocks logged before a fast flood ended would look quiet
/// with the counts from before it). They are read from the collector's log, not the agent's
/// scrape endpoint: read that way, each scrape added one drop on the node (a new TCP
/// connection each time; which drop it is was not looked into), so the node never looked
/// quiet.
fn quiet(rotel: &mut RProc, agent: &mut RProc, since: usize) -> Result<Totals> {
    let mut last = None;
    wait_for("a quiet moment on the node", PATIENCE * 3, || {
        rotel.ensure_alive()?;
        agent.ensure_alive()?;
        let text = rotel.log_text();
        // The last four blocks: the last may be incomplete.
        let blocks: Vec<&str> = text.rsplitn(5, "ResourceMetrics #0").collect();
        // The export in flight when `since` was counted may hold counts from before: the
        // three compared begin after it.
        if blocks.len() < 5 || text.matches("ResourceMetrics #0").count() < since + 5 {
            return Ok(None);
        }
        let t: Vec<Totals> = blocks[1..4]
            .iter()
            .map(|b| totals(&parse_rotel(b)))
            .collect::<Result<_>>()?;
        let (exported, failed, dropped) = t[0].records;
        let quiet = t[0] == t[1] && t[1] == t[2] && exported + failed + dropped == t[0].sent;
        if !quiet && last != Some(t[0]) {
            eprintln!("not quiet: {:?} -> {:?}", t[2], t[0]);
            last = Some(t[0]);
        }
        Ok(quiet.then_some(t[0]))
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
    // The metrics to one collector, which logs them; the records to another, which logs
    // those.
    let (grpc, http) = (free_port()?, free_port()?);
    let mut metrics = rotel::start_rotel(&dir, grpc, http, "rotel-metrics")?;
    let (mut rotel, logs_grpc, _) = start_rotel(&dir, "rotel-logs", &[])?;
    let budget_line = format!("flow_events_per_second = {BUDGET}");
    let (mut agent, _prometheus) = start_agent(
        &dir,
        &[("flow_events_per_second = 100", budget_line.as_str())],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{grpc}"),
            ),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                format!("http://127.0.0.1:{logs_grpc}"),
            ),
        ],
    )?;
    let before = quiet(&mut metrics, &mut agent, 0)?;
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
    let since = exports(&metrics);
    let after = quiet(&mut metrics, &mut agent, since)?;
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
    agent.stop_cleanly()?;
    Ok(())
}
