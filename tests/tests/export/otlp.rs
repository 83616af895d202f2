//! OTLP delivery to a real collector: gRPC and HTTP, gzip, deleted interfaces, delta
//! temporality.

use super::*;

fn otlp_delivery(protocol: &str, gzip: bool) -> Result<()> {
    require_root();
    let dir = TempDir::new("otlp")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let mut env = match protocol {
        "grpc" => vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        )],
        _ => vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
            // A base URL: the agent appends /v1/metrics.
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{http}"),
            ),
            // Exercise the header path; the value must never be logged.
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-test-token=s3cret-value".to_string(),
            ),
        ],
    };
    if gzip {
        env.push(("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_string()));
    }
    let mut agent = start_agent(&dir, "agent", &env)?;
    let ns = NetNs::new("rexp")?;
    // The first export proves the probe is attached before the traffic.
    wait_for_metric(&mut rotel, "retina.drop.map.capacity")?;
    make_drops(&ns)?;
    let points = wait_for_drops(&mut rotel, ns.inode()?, DROPS)?;
    check_delivery(&points, ns.inode()?, &rotel.log_text())?;
    agent.proc.ensure_alive()?;
    agent.stop()?;
    let log = agent.log();
    assert!(!log.contains("s3cret"), "a header value was logged:\n{log}");
    assert!(!log.contains("OTLP export failed"), "{log}");
    Ok(())
}

#[test]
fn otlp_grpc_delivers_drops_to_a_real_collector() -> Result<()> {
    otlp_delivery("grpc", false)
}

#[test]
fn otlp_grpc_gzip_delivers_drops_to_a_real_collector() -> Result<()> {
    otlp_delivery("grpc", true)
}

#[test]
fn otlp_http_gzip_delivers_drops_to_a_real_collector() -> Result<()> {
    otlp_delivery("http/protobuf", true)
}

#[test]
fn otlp_http_delivers_drops_to_a_real_collector() -> Result<()> {
    otlp_delivery("http/protobuf", false)
}

/// The exports rotel logged so far, each as its data points (the log shows one
/// `ResourceMetrics #0` block per export request).
/// Whether any point of `points` carries `name` as its interface.
fn names_interface(points: &[DataPoint], name: &str) -> bool {
    points
        .iter()
        .any(|p| p.attrs.get("network.interface.name").map(String::as_str) == Some(name))
}

/// A veth deleted while the daemon runs: its series (interface counters, driver
/// statistics, NIC info) are in no export the collector receives from the third after the
/// deletion on (one may be in flight, one more may have been collected before the link
/// table saw the deletion: two intervals).
fn deleted_interface_leaves_the_export(protocol: &str) -> Result<()> {
    require_root();
    let dir = TempDir::new("vethgone")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let env = match protocol {
        "grpc" => vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        )],
        _ => vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{http}"),
            ),
        ],
    };
    let veth = Veth::new("rgone")?;
    ip(&["link", "set", &veth.host, "up"])?;
    ip(&["link", "set", &veth.peer, "up"])?;
    let mut agent = start_agent(&dir, "agent", &env)?;
    // Start times of the surviving sums, read from the last export before the deletion.
    let starts_before = wait_for("sums with start times", PATIENCE, || {
        let exports = rotel_exports(&rotel.log_text());
        Ok(exports
            .last()
            .filter(|e| names_interface(e, &veth.host))
            .map(|e| sum_starts(e, &veth.host))
            .filter(|s| !s.is_empty()))
    })?;
    let name = veth.host.clone();
    wait_for(&format!("{name} in an export"), PATIENCE, || {
        rotel.ensure_alive()?;
        agent.proc.ensure_alive()?;
        let exports = rotel_exports(&rotel.log_text());
        Ok(exports
            .last()
            .is_some_and(|e| names_interface(e, &name))
            .then_some(()))
    })?;
    let before = rotel_exports(&rotel.log_text()).len();
    // (The guard sees the link gone and leaves it.)
    ip(&["link", "del", &veth.host])?;
    // Five more exports (one a second).
    let exports = wait_for("five exports after the deletion", PATIENCE, || {
        rotel.ensure_alive()?;
        agent.proc.ensure_alive()?;
        let exports = rotel_exports(&rotel.log_text());
        Ok((exports.len() >= before + 5).then_some(exports))
    })?;
    let after = &exports[before..];
    let still: Vec<usize> = after
        .iter()
        .enumerate()
        .filter(|(_, e)| names_interface(e, &name))
        .map(|(i, _)| i + 1)
        .collect();
    eprintln!("{protocol}: exports after the deletion still naming {name}: {still:?}");
    assert!(
        still.iter().all(|&i| i <= 2),
        "{name} still exported in exports {still:?} after its deletion"
    );
    assert!(
        after.iter().all(|e| names_interface(e, "lo")),
        "the other interfaces must stay"
    );
    // Every surviving sum keeps its start time across the deletion and an addition.
    let added = Veth::new("radd")?;
    ip(&["link", "set", &added.host, "up"])?;
    let seen = rotel_exports(&rotel.log_text()).len();
    let exports = wait_for("an export naming the added interface", PATIENCE, || {
        rotel.ensure_alive()?;
        agent.proc.ensure_alive()?;
        let exports = rotel_exports(&rotel.log_text());
        Ok(exports
            .iter()
            .skip(seen)
            .any(|e| names_interface(e, &added.host))
            .then_some(exports))
    })?;
    let last = exports.last().context("no export")?;
    let starts_after = sum_starts(last, &name);
    let mut compared = 0;
    for (series, start) in &starts_before {
        if let Some(after) = starts_after.get(series) {
            compared += 1;
            assert_eq!(after, start, "start time of {series} changed");
        }
    }
    eprintln!("{protocol}: {compared} surviving sums kept their start times");
    assert!(
        compared > 0,
        "no surviving sum to compare: {starts_before:?}"
    );
    agent.stop()?;
    Ok(())
}

/// The start time of every sum point of `export` that is not about interface `gone`,
/// keyed by metric and attributes.
fn sum_starts(export: &[DataPoint], gone: &str) -> BTreeMap<String, String> {
    export
        .iter()
        .filter(|p| p.kind == "Sum" && !p.start.is_empty())
        .filter(|p| p.attrs.get("network.interface.name").map(String::as_str) != Some(gone))
        .map(|p| (format!("{} {:?}", p.metric, p.attrs), p.start.clone()))
        .collect()
}

#[test]
fn deleted_interface_leaves_the_grpc_export() -> Result<()> {
    deleted_interface_leaves_the_export("grpc")
}

#[test]
fn deleted_interface_leaves_the_http_export() -> Result<()> {
    deleted_interface_leaves_the_export("http")
}

#[test]
fn otlp_delta_temporality_reports_changes() -> Result<()> {
    require_root();
    let dir = TempDir::new("delta")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            "delta".to_string(),
        ),
    ];
    let mut agent = start_agent(&dir, "agent", &env)?;
    let ns = NetNs::new("rdelta")?;
    wait_for_metric(&mut rotel, "retina.drop.map.capacity")?;
    make_drops(&ns)?;
    let inode = ns.inode()?.to_string();
    let is_ours = |p: &DataPoint| {
        p.metric == "retina.drop.count"
            && p.attrs.get("drop.reason").map(String::as_str) == Some("NO_SOCKET")
            && p.attrs.get("network.namespace.inode") == Some(&inode)
    };
    // Each export carries the change since the previous one: they add up to the drops.
    // Once the traffic is over the series sends no point at all (a series that did not
    // move is not exported under delta), while every export still carries the gauges.
    let (total, points_of_ours) = wait_for("the deltas to add up and settle", PATIENCE, || {
        rotel.ensure_alive()?;
        let points = parse_rotel(&rotel.log_text());
        let ours: Vec<f64> = points
            .iter()
            .filter(|p| is_ours(p))
            .map(|p| p.value)
            .collect();
        let last = points.iter().rposition(&is_ours);
        let exports_since = last.map_or(0, |l| {
            points[l..]
                .iter()
                .filter(|p| p.metric == "retina.drop.map.capacity")
                .count()
        });
        let total: f64 = ours.iter().sum();
        Ok((total >= DROPS as f64 && exports_since >= 3).then_some((total, ours)))
    })?;
    assert_eq!(total, DROPS as f64, "deltas: {points_of_ours:?}");
    assert!(
        points_of_ours.iter().all(|&v| v > 0.0),
        "a point of an unmoved series was exported: {points_of_ours:?}"
    );
    let log = rotel.log_text();
    assert!(
        log.contains("AGGREGATION_TEMPORALITY_DELTA"),
        "sums are not delta"
    );
    agent.stop()?;
    Ok(())
}
