//! The log export of the drop events by its own settings: `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`
//! sends the records to a collector of their own, at the URL as given; and with that
//! collector down, the daemon keeps collecting while the records are counted as lost,
//! within a bounded memory.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use retina_tests::{
    rotel::{PATIENCE, wait_for},
    *,
};

use super::export::{Counters, counters, parse_records, start_agent, start_rotel};

/// The agent's interval in [`start_agent`]: the flow counters are read once an interval.
const INTERVAL: Duration = Duration::from_secs(1);

/// `traffic udp` of `count` datagrams from `sport` to a closed port of `ns`'s loopback.
fn udp_to_a_closed_port(ns: &NetNs, count: u64, sport: u16) -> Result<()> {
    ns.exec(
        &traffic(),
        &[
            "udp",
            "127.0.0.1:9",
            &count.to_string(),
            "1",
            &sport.to_string(),
        ],
    )
    .map(drop)
}

/// Metrics go to one collector (OTLP/HTTP, the generic endpoint as a base URL), the log
/// records to another one at `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`, a path of its own that the
/// agent must use as is (with `/v1/logs` appended it would find nothing there).
#[test]
fn the_logs_endpoint_variable_sends_the_records_to_their_own_collector_as_is() -> Result<()> {
    require_root();
    let ns = NetNs::new("rfll")?;
    let dir = TempDir::shared("rfllog")?;
    let (mut metrics_rotel, _, metrics_http) = start_rotel(&dir, "rotel-metrics", &[])?;
    let (mut logs_rotel, _, logs_http) = start_rotel(
        &dir,
        "rotel-logs",
        &["--otlp-receiver-logs-http-path", "/ingest/drops"],
    )?;
    let (mut agent, prometheus) = start_agent(
        &dir,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{metrics_http}"),
            ),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                format!("http://127.0.0.1:{logs_http}/ingest/drops"),
            ),
        ],
    )?;
    ensure!(
        agent
            .log_text()
            .contains(&format!("http://127.0.0.1:{logs_http}/ingest/drops")),
        "the agent does not name the logs endpoint:\n{}",
        agent.log_text()
    );
    udp_to_a_closed_port(&ns, 20, 40011)?;
    let inode = ns.inode()?.to_string();
    let ours = wait_for("the logs collector to print the records", PATIENCE, || {
        logs_rotel.ensure_alive()?;
        agent.ensure_alive()?;
        let n = parse_records(&logs_rotel.log_text())
            .iter()
            .filter(|r| {
                r.attrs.get("source.port").map(String::as_str) == Some("40011")
                    && r.attrs.get("network.namespace.inode") == Some(&inode)
            })
            .count();
        Ok((n > 0).then_some(n))
    })?;
    // Had the agent appended `/v1/logs`, every export would have failed.
    let after = counters(&prometheus)?;
    ensure!(
        after.exported > 0 && after.failed == 0 && after.dropped == 0,
        "log records lost: {after:?}\n{}",
        agent.log_text()
    );
    eprintln!("{ours} records of the flow at the logs collector; counters {after:?}");
    // The metrics collector is up and receives the metrics, not the records.
    metrics_rotel.ensure_alive()?;
    let stray = parse_records(&metrics_rotel.log_text()).len();
    ensure!(
        stray == 0,
        "{stray} log records went to the metrics collector"
    );
    agent.stop_cleanly()?;
    Ok(())
}

/// With the logs collector down (nothing listens at the logs endpoint) and the budget at
/// its maximum, floods of drops: the drops are still counted exactly (collection goes on),
/// every record is counted failed or dropped (none exported, none unaccounted for), and
/// the floods after the first, with thousands more records lost, leave the resident memory
/// where the first left it, give or take half of what keeping those records would take.
#[test]
fn with_the_logs_collector_down_collection_goes_on_and_the_loss_is_counted_in_bounded_memory()
-> Result<()> {
    require_root();
    let ns = NetNs::new("rflo")?;
    let dir = TempDir::shared("rflout")?;
    let (_rotel, grpc, _) = start_rotel(&dir, "rotel", &[])?;
    // A port that nothing listens on: bound, then closed.
    let down = free_port()?;
    let (mut agent, prometheus) = start_agent(
        &dir,
        &[(
            "flow_events_per_second = 100",
            "flow_events_per_second = 1000000",
        )],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{grpc}"),
            ),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                format!("http://127.0.0.1:{down}"),
            ),
        ],
    )?;
    /// Datagrams of each flood: enough that the second one loses about ten thousand
    /// records (the ring buffer fills: a few percent of the drops become events).
    const FLOOD: u64 = 300_000;
    let inode = ns.inode()?.to_string();
    // The pod's own series: every drop of the namespace is counted by the drop collector.
    let flood_drops = || -> Result<u64> {
        let (status, body) = http_get(&prometheus, "/metrics")?;
        ensure!(status == 200, "GET /metrics: {status}");
        Ok(body
            .lines()
            .filter(|l| {
                l.starts_with("retina_drop_count_total{")
                    && l.contains(&format!("network_namespace_inode=\"{inode}\""))
                    && l.contains("drop_reason=\"NO_SOCKET\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    };
    // A flood, then the check that every record of it is counted lost; the counters.
    let mut floods = 0u64;
    let mut flood = || -> Result<(Counters, u64)> {
        udp_to_a_closed_port(&ns, FLOOD, 40012)?;
        floods += 1;
        let want = floods * FLOOD;
        wait_for("the flood's drops to be counted", PATIENCE, || {
            agent.ensure_alive()?;
            let n = flood_drops()?;
            ensure!(n <= want, "{n} drops counted for {want} datagrams");
            Ok((n == want).then_some(()))
        })?;
        // Every event the kernel sent becomes a record that is failed or dropped, once
        // the processor has handed over what it queued (at least once a second). Events
        // keep coming meanwhile: each scrape of the endpoint ends in a drop of its own (the
        // FIN a closed server socket still queued, QUEUE_PURGE), so `sent` and the records
        // lost are compared at different times. `sent` is read once an interval: two
        // intervals on, it holds every event of the flood.
        std::thread::sleep(2 * INTERVAL);
        let (then, at) = (counters(&prometheus)?, Instant::now());
        let later = wait_for("every record to be counted lost", PATIENCE, || {
            agent.ensure_alive()?;
            let c = counters(&prometheus)?;
            ensure!(
                c.exported == 0,
                "records exported with nothing listening: {c:?}"
            );
            let caught_up = at.elapsed() >= 2 * INTERVAL && c.failed + c.dropped >= then.sent;
            Ok(caught_up.then_some(c))
        })?;
        // No record is lost twice, none comes from nowhere: those lost by `then` are events
        // the kernel had sent by then, which `later` (two intervals on) has all counted.
        ensure!(
            then.failed + then.dropped <= later.sent,
            "more records lost than events sent: {then:?}, then {later:?}"
        );
        let rss = agent.rss_kib()?;
        eprintln!("flood {floods}: {then:?}, rss {rss} KiB");
        Ok((then, rss))
    };
    let (start, first) = flood()?;
    ensure!(start.failed > 0, "no failed export counted: {start:?}");
    // Then floods until 8192 more records are lost (a few percent of the drops become
    // events, more or fewer with the machine's speed), ten at most.
    let (mut end, mut second) = (start, first);
    for _ in 0..10 {
        (end, second) = flood()?;
        if end.sent - start.sent >= 8192 {
            break;
        }
    }
    let lost = end.sent - start.sent;
    ensure!(
        end.failed > start.failed,
        "no failed export counted after the first flood: {start:?} -> {end:?}"
    );
    // A record holds at least its 5-tuple, its attributes and a body: far more than
    // 256 bytes. Kept, the records lost since the first flood would add `lost / 4` KiB at
    // least; the bound is half that, and only means something with enough of them.
    ensure!(
        lost >= 8192,
        "only {lost} records lost in ten floods: too few to tell memory growth"
    );
    let bound = lost / 8;
    ensure!(
        second <= first + bound,
        "resident memory {first} KiB after the first flood, {second} KiB after the last \
         ({lost} more records lost; bound {bound} KiB)"
    );
    ensure!(
        agent
            .log_text()
            .contains("OTLP log export of drop events failed"),
        "the failure is not logged:\n{}",
        agent.log_text()
    );
    let (status, _) = agent.terminate(Duration::from_secs(30))?;
    ensure!(
        status.success(),
        "agent exit: {status}\n{}",
        agent.log_text()
    );
    Ok(())
}
