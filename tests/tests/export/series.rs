//! What the outputs carry: the series policy (`export.series`), the per-metric series caps
//! (`export.series_caps`) with the SDK's overflow series, and the qdisc series that cannot
//! move. OTLP (at rotel) and Prometheus must agree.

use super::*;

/// The family and its OpenTelemetry name used for the cap: one series per interface and
/// direction, so lo alone has two and the test's veths add more.
const CAPPED: &str = "system.network.io";
const CAPPED_FAMILY: &str = "system_network_io_bytes_total";
const CAP: usize = 2;

/// Lines of `body` that are samples of `family`.
fn samples<'a>(body: &'a str, family: &str) -> Vec<&'a str> {
    body.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

#[test]
fn series_caps_fold_the_rest_into_the_overflow_series() -> Result<()> {
    require_root();
    let dir = TempDir::new("caps")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let veth = Veth::new("rcap")?;
    ip(&["link", "set", &veth.host, "up"])?;
    ip(&["link", "set", &veth.peer, "up"])?;
    let env = [(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{grpc}"),
    )];
    let config = format!("[export]\nseries_caps = {{ \"{CAPPED}\" = {CAP} }}\n");
    let mut agent = start_agent_with(&dir, "agent", &env, Launch::AsUnit, &config)?;

    // Prometheus: CAP series, then the overflow series; the self-metric says how many
    // did not fit.
    let body = wait_for("the capped family on /metrics", PATIENCE, || {
        agent.proc.ensure_alive()?;
        let (_, body) = http_request(agent.prometheus_port, "GET", "/metrics", "")?;
        Ok(scrape_value(
            &body,
            "retina_agent_export_series_capped",
            &[("metric", CAPPED)],
        )
        .is_some_and(|v| v > 0.0)
        .then_some(body))
    })?;
    let lines = samples(&body, CAPPED_FAMILY);
    let overflow: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("otel_metric_overflow=\"true\""))
        .collect();
    eprintln!("{CAPPED_FAMILY} on /metrics:\n  {}", lines.join("\n  "));
    assert_eq!(overflow.len(), 1, "{body}");
    assert_eq!(lines.len(), CAP + 1, "{body}");
    let capped = scrape_value(
        &body,
        "retina_agent_export_series_capped",
        &[("metric", CAPPED)],
    )
    .context("no capped gauge")?;
    assert!(capped >= 1.0, "{capped}");

    // OTLP: the same, through the SDK's cardinality limit.
    let export = wait_for("an export with the overflow series", PATIENCE, || {
        rotel.ensure_alive()?;
        let exports = rotel_exports(&rotel.log_text());
        Ok(exports.into_iter().rev().find(|e| {
            e.iter().any(|p| {
                p.metric == CAPPED
                    && p.attrs.get("otel.metric.overflow").map(String::as_str) == Some("true")
            })
        }))
    })?;
    let points: Vec<&DataPoint> = export.iter().filter(|p| p.metric == CAPPED).collect();
    eprintln!("{CAPPED} at rotel: {points:?}");
    assert_eq!(points.len(), CAP + 1, "{points:?}");

    // The log names the metric.
    let log = agent.log();
    assert!(
        log.contains(&format!("metric {CAPPED} hit its series cap ({CAP}")),
        "{log}"
    );
    agent.stop()?;
    Ok(())
}

/// The drop collector's health counters, exported at zero under every policy.
const HEALTH: &[&str] = &[
    "retina_drop_map_pruned_total",
    "retina_drop_overflow_count_total",
    "retina_drop_overflow_bytes_total",
    "retina_drop_missed_total",
    "retina_drop_location_overflow_total",
    "retina_tcp_event_overflow_total",
];

/// Counter samples at zero, other than the agent's own and the health counters.
fn zero_counters(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("retina_agent_"))
        .filter(|l| !HEALTH.iter().any(|h| l.starts_with(h)))
        .filter(|l| {
            l.split_once(['{', ' '])
                .is_some_and(|(name, _)| name.ends_with("_total"))
                && l.rsplit(' ').next() == Some("0")
        })
        .collect()
}

#[test]
fn informative_policy_leaves_out_idle_counters_and_everything_keeps_them() -> Result<()> {
    require_root();
    let dir = TempDir::new("policy")?;
    let veth = Veth::new("rpol")?;
    ip(&["link", "set", &veth.host, "up"])?;
    let off = [("OTEL_SDK_DISABLED", "true".to_string())];
    let mut informative = start_agent_with(&dir, "informative", &off, Launch::AsUnit, "")?;
    let mut everything = start_agent_with(
        &dir,
        "everything",
        &off,
        Launch::AsUnit,
        "[export]\nseries = \"everything\"\n",
    )?;
    let scrape = |a: &Agent| -> Result<String> {
        wait_for("a scrape with interface series", PATIENCE, || {
            let (_, body) = http_request(a.prometheus_port, "GET", "/metrics", "")?;
            Ok(body
                .contains("system_network_io_bytes_total")
                .then_some(body))
        })
    };
    let (i, e) = (scrape(&informative)?, scrape(&everything)?);
    let (zi, ze) = (zero_counters(&i), zero_counters(&e));
    eprintln!(
        "zero counters: informative {}, everything {}; series: {} and {}",
        zi.len(),
        ze.len(),
        i.lines().count(),
        e.lines().count()
    );
    assert!(zi.is_empty(), "informative exports zero counters: {zi:?}");
    assert!(!ze.is_empty(), "everything exports no zero counter");
    assert!(i.lines().count() < e.lines().count());
    // The agent's own counters and the drop health counters are there at zero under
    // both (alerts read them).
    for body in [&i, &e] {
        for name in [
            "retina_agent_collect_failures_total",
            "retina_drop_missed_total",
        ] {
            assert!(scrape_value(body, name, &[]).is_some(), "{name}: {body}");
        }
    }
    // A noqueue qdisc (the veth's) counts nothing and is exported by neither.
    for body in [&i, &e] {
        assert!(!body.contains("qdisc_kind=\"noqueue\""), "{body}");
    }
    informative.stop()?;
    everything.stop()?;
    Ok(())
}
