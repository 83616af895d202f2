//! Collectors that are down at start, killed and restarted, or never answer; SIGTERM during a
//! hung export.

use super::*;

// ---- A collector that accepts connections and never answers ----

/// Accepts TCP connections on a loopback port and holds them open without reading or
/// writing, until dropped.
struct Silent {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Silent {
    fn start(port: u16) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        held.push(conn);
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            // Dropping `held` and `listener` closes everything.
        });
        Ok(Silent {
            accepted,
            stop,
            thread: Some(thread),
        })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn collector_down_at_start_then_up() -> Result<()> {
    require_root();
    let dir = TempDir::new("down")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let agent_env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".to_string()),
    ];
    let mut agent = start_agent(&dir, "agent", &agent_env)?;
    wait_for("the first export failure in the log", PATIENCE, || {
        agent.proc.ensure_alive()?;
        Ok((agent.count_in_log("OTLP export failed") > 0).then_some(()))
    })?;
    let ns = NetNs::new("rdown")?;
    make_drops(&ns)?;
    // Several more failed exports (one per second): logged once, not every time.
    let first = agent.export_failures()?;
    agent.wait_for_export_failures(first + 4.0, PATIENCE)?;
    agent.proc.ensure_alive()?;
    assert_eq!(
        agent.count_in_log("OTLP export failed"),
        1,
        "{}",
        agent.log()
    );
    assert_eq!(agent.count_in_log("still failing"), 0, "{}", agent.log());

    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let points = wait_for_drops(&mut rotel, ns.inode()?, DROPS)?;
    check_delivery(&points, ns.inode()?, &rotel.log_text())?;
    wait_for("the recovery message", PATIENCE, || {
        Ok(agent.log().contains("OTLP export recovered").then_some(()))
    })?;
    agent.stop()?;
    Ok(())
}

#[test]
fn collector_killed_and_restarted() -> Result<()> {
    killed_and_restarted(false)
}

/// Under delta temporality the SDK forgets the change an export carried once it is
/// collected: the agent feeds the changes of a failed export again, so the deltas that
/// reach the collector after the outage still add up to every drop.
#[test]
fn collector_killed_and_restarted_delta_loses_nothing() -> Result<()> {
    killed_and_restarted(true)
}

fn killed_and_restarted(delta: bool) -> Result<()> {
    require_root();
    let dir = TempDir::new("restart")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel1")?;
    let mut agent_env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".to_string()),
    ];
    if delta {
        agent_env.push((
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            "delta".to_string(),
        ));
    }
    let mut agent = start_agent(&dir, "agent", &agent_env)?;
    wait_for_metric(&mut rotel, "retina.drop.map.capacity")?;
    rotel.kill();
    wait_for(
        "an export failure after the collector died",
        PATIENCE,
        || {
            agent.proc.ensure_alive()?;
            Ok((agent.count_in_log("OTLP export failed") > 0).then_some(()))
        },
    )?;
    let ns = NetNs::new("rrst")?;
    make_drops(&ns)?;
    // Two more exports fail with the drops in them before the collector is back.
    let failed = agent.export_failures()?;
    agent.wait_for_export_failures(failed + 2.0, PATIENCE)?;
    let mut rotel = start_rotel(&dir, grpc, http, "rotel2")?;
    if delta {
        let inode = ns.inode()?.to_string();
        let ours = |p: &&DataPoint| {
            p.metric == "retina.drop.count"
                && p.attrs.get("drop.reason").map(String::as_str) == Some("NO_SOCKET")
                && p.attrs.get("network.namespace.inode") == Some(&inode)
        };
        // The sum of the deltas, once three more exports have come after its last point.
        let deltas = wait_for("the deltas of the drops after the outage", PATIENCE, || {
            rotel.ensure_alive()?;
            let points = parse_rotel(&rotel.log_text());
            let last = points.iter().rposition(|p| ours(&p));
            let exports_since = last.map_or(0, |l| {
                points[l..]
                    .iter()
                    .filter(|p| p.metric == "retina.drop.map.capacity")
                    .count()
            });
            let deltas: Vec<f64> = points.iter().filter(ours).map(|p| p.value).collect();
            Ok((exports_since >= 3).then_some(deltas))
        })?;
        assert_eq!(
            deltas.iter().sum::<f64>(),
            DROPS as f64,
            "the deltas after the outage: {deltas:?}"
        );
    } else {
        let points = wait_for_drops(&mut rotel, ns.inode()?, DROPS)?;
        check_delivery(&points, ns.inode()?, &rotel.log_text())?;
    }
    wait_for("the recovery message", PATIENCE, || {
        Ok(agent.log().contains("OTLP export recovered").then_some(()))
    })?;
    agent.stop()?;
    Ok(())
}

#[test]
fn collector_that_never_answers() -> Result<()> {
    require_root();
    let dir = TempDir::new("silent")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let silent = Silent::start(grpc)?;
    let agent_env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".to_string()),
    ];
    let mut agent = start_agent(&dir, "agent", &agent_env)?;
    wait_for("a connection to the silent collector", PATIENCE, || {
        Ok((silent.accepted() > 0).then_some(()))
    })?;
    let ns = NetNs::new("rsil")?;
    make_drops(&ns)?;
    std::thread::sleep(Duration::from_secs(3));
    let rss_before = agent.proc.rss_kib()?;
    // Twelve more intervals against a collector that never answers.
    std::thread::sleep(Duration::from_secs(12));
    agent.proc.ensure_alive()?;
    let rss_after = agent.proc.rss_kib()?;
    eprintln!("agent RSS: {rss_before} KiB, 12 s later {rss_after} KiB");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let log = agent.log();
    assert!(log.contains("OTLP export failed"), "{log}");
    assert!(
        log.contains("no answer") || log.contains("Timeout") || log.contains("timed out"),
        "{log}"
    );
    assert!(
        log.contains("still in flight"),
        "no export was skipped: {log}"
    );
    // Still collecting meanwhile: the Prometheus endpoint has the drops.
    let inode = ns.inode()?.to_string();
    let (_, body) = http_request(agent.prometheus_port, "GET", "/metrics", "")?;
    assert_eq!(
        scrape_value(
            &body,
            "retina_drop_count_total",
            &[
                ("drop_reason", "NO_SOCKET"),
                ("network_namespace_inode", &inode)
            ]
        ),
        Some(DROPS as f64)
    );

    // The real collector takes the port over: data arrives.
    drop(silent);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let points = wait_for_drops(&mut rotel, ns.inode()?, DROPS)?;
    check_delivery(&points, ns.inode()?, &rotel.log_text())?;
    agent.stop()?;
    Ok(())
}

#[test]
fn sigterm_during_a_hung_export_exits_promptly() -> Result<()> {
    require_root();
    let dir = TempDir::new("term")?;
    let grpc = free_port()?;
    let silent = Silent::start(grpc)?;
    // The default 10 s export timeout: the export is still in flight at SIGTERM.
    let agent_env = [(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{grpc}"),
    )];
    let mut agent = start_agent(&dir, "agent", &agent_env)?;
    wait_for("a connection to the silent collector", PATIENCE, || {
        Ok((silent.accepted() > 0).then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    let took = agent.stop()?;
    eprintln!("exited {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(8), "took {took:?} to exit");
    let log = agent.log();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    Ok(())
}
