//! SIGHUP re-reads the configuration (issue 26, item 7), on a real daemon run as the
//! packaged unit runs it (uid 65534, only CAP_BPF and CAP_PERFMON), exporting to real
//! collectors (rotel) and counting real drops.

use retina_tests::unit::agent_as_unit;

use super::*;

/// The agent's configuration file: `interval`, OTLP/gRPC to `grpc`, the scrape endpoint
/// on `prom`, and the sections in `extra`.
fn config_text(interval: &str, grpc: u16, prom: u16, extra: &str) -> String {
    format!(
        "interval = \"{interval}\"\n{extra}\n[export]\nendpoint = \"http://127.0.0.1:{grpc}\"\n\
         [prometheus]\nlisten = \"127.0.0.1:{prom}\"\n"
    )
}

/// Sends `signal` to `pid`.
fn signal(pid: i32, signal: libc::c_int) -> Result<()> {
    // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
    let r = unsafe { libc::kill(pid, signal) };
    ensure!(r == 0, "kill {pid}: {}", std::io::Error::last_os_error());
    Ok(())
}

/// The NO_SOCKET drops of namespace `inode` on the scrape endpoint.
fn scraped_drops(prom: u16, inode: &str) -> Result<Option<f64>> {
    let (status, body) = http_request(prom, "GET", "/metrics", "")?;
    ensure!(status == 200, "GET /metrics: {status}");
    Ok(scrape_value(
        &body,
        "retina_drop_count_total",
        &[
            ("drop_reason", "NO_SOCKET"),
            ("network_namespace_inode", inode),
        ],
    ))
}

/// The NO_SOCKET drops of namespace `inode` in the newest export `rotel` received.
fn exported_drops(rotel: &mut Proc, inode: &str) -> Result<Option<f64>> {
    rotel.ensure_alive()?;
    let exports = rotel_exports(&rotel.log_text());
    Ok(exports.last().and_then(|e| {
        latest(
            e,
            "retina.drop.count",
            &[
                ("drop.reason", "NO_SOCKET"),
                ("network.namespace.inode", inode),
            ],
        )
    }))
}

/// SIGHUP with a changed, valid file: the export moves to a second collector, a collector
/// is disabled, the interval changes; the drop program stays attached and its counts go
/// on exactly (300, 600 at both ends); `drops.map_entries`, which needs a restart, is
/// named and kept. Then a file that does not parse: refused with the file, key and
/// reason, and the daemon goes on with what it had (900 drops). SIGTERM still stops it
/// cleanly.
#[test]
fn sighup_applies_a_valid_config_and_refuses_a_bad_one() -> Result<()> {
    require_root();
    let dir = TempDir::shared("rreload")?;
    let (grpc_a, http_a, grpc_b, http_b) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let mut rotel_a = start_rotel(&dir, grpc_a, http_a, "rotel-a")?;
    let mut rotel_b = start_rotel(&dir, grpc_b, http_b, "rotel-b")?;
    let prom = free_port()?;
    let config = dir.join("agent.toml");
    std::fs::write(&config, config_text("1s", grpc_a, prom, ""))?;
    let config_arg = config.to_str().context("utf-8 path")?;
    let cmd = agent_as_unit(&["--config", config_arg, "run", "--no-summary"]);
    let mut agent = Proc::spawn("agent", cmd, dir.join("agent.log"))?;
    agent.wait_running()?;
    let ns = NetNs::new("rrld")?;
    let inode = ns.inode()?.to_string();
    make_drops(&ns)?;
    let first = DROPS as f64;
    wait_for("the first drops at collector A", PATIENCE, || {
        agent.ensure_alive()?;
        Ok(exported_drops(&mut rotel_a, &inode)?.filter(|v| *v == first))
    })?;
    let (_, body) = http_request(prom, "GET", "/metrics", "")?;
    ensure!(
        body.contains("retina_netstat_"),
        "netstat not collected: {body}"
    );

    // A valid change: export to B, netstat off, another interval, a restart-only key.
    std::fs::write(
        &config,
        config_text(
            "2s",
            grpc_b,
            prom,
            "[netstat]\nenabled = false\n[drops]\nmap_entries = 1024\n",
        ),
    )?;
    signal(agent.pid(), libc::SIGHUP)?;
    wait_for("the reload", PATIENCE, || {
        agent.ensure_alive()?;
        Ok(agent
            .log_text()
            .contains("SIGHUP: configuration reloaded")
            .then_some(()))
    })?;
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("SIGHUP: configuration reloaded"))
        .context("no reload line")?;
    for applied in ["netstat", "interval", "export"] {
        assert!(line.contains(applied), "{applied} not applied: {line}");
    }
    assert!(
        log.contains("drops.map_entries changed; it only takes effect at a restart"),
        "{log}"
    );
    make_drops(&ns)?;
    let second = 2.0 * DROPS as f64;
    wait_for("all drops at collector B", PATIENCE, || {
        agent.ensure_alive()?;
        Ok(exported_drops(&mut rotel_b, &inode)?.filter(|v| *v == second))
    })?;
    let body = wait_for("the scrape without netstat", PATIENCE, || {
        let (_, body) = http_request(prom, "GET", "/metrics", "")?;
        Ok((!body.contains("retina_netstat_")).then_some(body))
    })?;
    assert_eq!(
        scrape_value(&body, "retina_drop_map_capacity", &[]),
        Some(f64::from(retina_ebpf_common::DEFAULT_DROPS_MAX_ENTRIES)),
        "the drop map must keep its size until a restart"
    );
    // Collector A gets nothing more: its last export still has the first count.
    let a_exports = rotel_exports(&rotel_a.log_text()).len();
    assert_eq!(exported_drops(&mut rotel_a, &inode)?, Some(first));

    // A bad file: refused, named, and the daemon keeps running on the previous config.
    std::fs::write(
        &config,
        config_text("1s", grpc_a, prom, "[netdev]\nbogus_key = 1\n"),
    )?;
    signal(agent.pid(), libc::SIGHUP)?;
    let refused = wait_for("the refusal", PATIENCE, || {
        agent.ensure_alive()?;
        Ok(agent
            .log_text()
            .lines()
            .find(|l| l.contains("SIGHUP: configuration refused"))
            .map(str::to_string))
    })?;
    for needle in [config_arg, "bogus_key", "netdev"] {
        assert!(refused.contains(needle), "{needle:?} not in {refused:?}");
    }
    make_drops(&ns)?;
    let third = 3.0 * DROPS as f64;
    wait_for(
        "all drops on the endpoint after the refusal",
        PATIENCE,
        || {
            agent.ensure_alive()?;
            Ok(scraped_drops(prom, &inode)?.filter(|v| *v == third))
        },
    )?;
    wait_for(
        "all drops at collector B after the refusal",
        PATIENCE,
        || Ok(exported_drops(&mut rotel_b, &inode)?.filter(|v| *v == third)),
    )?;
    assert_eq!(
        rotel_exports(&rotel_a.log_text()).len(),
        a_exports,
        "the refused file's endpoint (A) must not be used"
    );
    let (status, took) = agent.terminate(Duration::from_secs(15))?;
    assert!(
        status.success(),
        "{status} after {took:?}: {}",
        agent.log_text()
    );
    let log = agent.log_text();
    assert_eq!(log.matches("retina-agent running").count(), 1, "{log}");
    assert!(!log.contains("panicked"), "{log}");
    Ok(())
}

/// SIGHUP sent many times in a row, while the agent runs: never fatal; with the same file
/// each reload says there is nothing to apply.
#[test]
fn repeated_sighup_never_kills_the_daemon() -> Result<()> {
    require_root();
    let dir = TempDir::shared("rhup")?;
    let prom = free_port()?;
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\n[export]\nenabled = false\n[prometheus]\nlisten = \"127.0.0.1:{prom}\"\n"
        ),
    )?;
    let config_arg = config.to_str().context("utf-8 path")?;
    let cmd = agent_as_unit(&["--config", config_arg, "run", "--no-summary"]);
    let mut agent = Proc::spawn("agent", cmd, dir.join("agent.log"))?;
    agent.wait_running()?;
    for _ in 0..5 {
        signal(agent.pid(), libc::SIGHUP)?;
    }
    wait_for("the reloads", PATIENCE, || {
        agent.ensure_alive()?;
        Ok((agent.log_text().matches("nothing to apply").count() >= 1).then_some(()))
    })?;
    agent.ensure_alive()?;
    assert_eq!(http_request(prom, "GET", "/metrics", "")?.0, 200);
    let (status, _) = agent.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "{status}: {}", agent.log_text());
    Ok(())
}
