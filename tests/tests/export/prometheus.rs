//! The Prometheus endpoint: scraped by a real Prometheus, only `GET /metrics`, a port in
//! use, stalled scrapers.

use super::*;

#[test]
fn prometheus_scrapes_the_drop_series() -> Result<()> {
    require_root();
    let dir = TempDir::new("prom")?;
    // OTLP off: only the scrape endpoint.
    let mut agent = start_agent(&dir, "agent", &[("OTEL_SDK_DISABLED", "true".into())])?;
    let port = agent.prometheus_port;
    let prom_port = free_port()?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: retina\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )?;
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let mut prom = Proc::spawn("prometheus", cmd, dir.join("prometheus.log"))?;
    wait_for_port(prom_port)?;

    let ns = NetNs::new("rprom")?;
    let inode = ns.inode()?.to_string();
    make_drops(&ns)?;

    // The endpoint itself: names as the OpenTelemetry Prometheus rules give them.
    let labels = [
        ("drop_reason", "NO_SOCKET"),
        ("network_namespace_inode", inode.as_str()),
    ];
    let body = wait_for("the drop series on /metrics", PATIENCE, || {
        agent.proc.ensure_alive()?;
        let (status, body) = http_request(port, "GET", "/metrics", "")?;
        ensure!(status == 200, "GET /metrics: {status}");
        Ok(scrape_value(&body, "retina_drop_count_total", &labels)
            .is_some_and(|v| v >= DROPS as f64)
            .then_some(body))
    })?;
    // OpenMetrics: `# TYPE` names the family (a counter's without `_total`), the samples
    // carry the series names Prometheus stores.
    let mut families: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    families.sort();
    eprintln!(
        "Prometheus families served by the agent:\n  {}",
        families.join("\n  ")
    );
    let series: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    assert_eq!(body.lines().last(), Some("# EOF"), "not OpenMetrics text");
    assert_eq!(
        scrape_value(&body, "retina_drop_count_total", &labels),
        Some(DROPS as f64)
    );
    assert_eq!(
        scrape_value(&body, "retina_drop_bytes_total", &labels),
        Some((DROPS * (8 + PAYLOAD)) as f64)
    );
    for (family, kind, name) in [
        (
            "retina_drop_overflow_count",
            "counter",
            "retina_drop_overflow_count_total",
        ),
        (
            "retina_drop_overflow_bytes",
            "counter",
            "retina_drop_overflow_bytes_total",
        ),
        (
            "retina_drop_map_capacity",
            "gauge",
            "retina_drop_map_capacity",
        ),
        (
            "system_network_io_bytes",
            "counter",
            "system_network_io_bytes_total",
        ),
        (
            "retina_agent_collect_duration_seconds",
            "gauge",
            "retina_agent_collect_duration_seconds",
        ),
        (
            "retina_agent_collect_failures",
            "counter",
            "retina_agent_collect_failures_total",
        ),
        ("target", "info", "target_info"),
    ] {
        let typed = format!("{family} {kind}");
        assert!(
            families.contains(&typed.as_str()),
            "{typed} not served: {families:?}"
        );
        assert!(series.contains(name), "no {name} series: {series:?}");
    }

    // Prometheus itself scraped and stored it.
    let query = format!(
        "retina_drop_count_total{{drop_reason=\"NO_SOCKET\",network_namespace_inode=\"{inode}\"}}"
    );
    let path = format!("/api/v1/query?query={}", url_encode(&query));
    let value = wait_for("the series in Prometheus", PATIENCE, || {
        prom.ensure_alive()?;
        agent.proc.ensure_alive()?;
        let (status, body) = http_request(prom_port, "GET", &path, "")?;
        ensure!(status == 200, "{path}: {status} {body}");
        let doc: serde_json::Value = serde_json::from_str(&body)?;
        let value = doc["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        Ok(value)
    })?;
    assert_eq!(value, DROPS as f64);
    let (_, up) = http_request(
        prom_port,
        "GET",
        &format!("/api/v1/query?query={}", url_encode("up{job=\"retina\"}")),
        "",
    )?;
    assert!(up.contains("\"1\""), "target not up: {up}");
    let (_, info) = http_request(
        prom_port,
        "GET",
        &format!(
            "/api/v1/query?query={}",
            url_encode("target_info{job=\"retina\",service_name=\"retina-agent\"}")
        ),
        "",
    )?;
    assert!(
        info.contains("\"os_type\":\"linux\""),
        "target_info not stored: {info}"
    );
    agent.stop()?;
    Ok(())
}

#[test]
fn prometheus_endpoint_answers_only_get_metrics() -> Result<()> {
    require_root();
    let dir = TempDir::new("promhttp")?;
    let mut agent = start_agent(&dir, "agent", &[("OTEL_SDK_DISABLED", "true".into())])?;
    let port = agent.prometheus_port;
    wait_for_port(port)?;
    let (status, body) = http_request(port, "GET", "/metrics", "")?;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE retina_drop_map_capacity gauge"),
        "{body}"
    );
    assert_eq!(http_request(port, "GET", "/", "")?.0, 404);
    assert_eq!(http_request(port, "GET", "/metricsx", "")?.0, 404);
    assert_eq!(
        http_request(port, "POST", "/metrics", "Content-Length: 0\r\n")?.0,
        405
    );
    assert_eq!(http_request(port, "HEAD", "/metrics", "")?.0, 200);
    // Oversized request headers are refused, not buffered.
    let huge = format!("X-Big: {}\r\n", "a".repeat(64 * 1024));
    // Refused with a 4xx, or the connection closed: either way not buffered.
    if let Ok((status, _)) = http_request(port, "GET", "/metrics", &huge) {
        assert!(status >= 400, "oversized request got {status}");
    }
    // A client that connects and sends nothing does not block others.
    let _idle = TcpStream::connect(("127.0.0.1", port))?;
    assert_eq!(http_request(port, "GET", "/metrics", "")?.0, 200);
    agent.proc.ensure_alive()?;
    agent.stop()?;
    Ok(())
}

#[test]
fn prometheus_port_in_use_is_a_clear_startup_error() -> Result<()> {
    require_root();
    let dir = TempDir::new("prombind")?;
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let config = dir.join("agent.toml");
    std::fs::write(&config, "")?;
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["run", "--interval", "1s", "--no-summary"])
        .env("OTEL_SDK_DISABLED", "true")
        .env("OTEL_EXPORTER_PROMETHEUS_PORT", port.to_string())
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "agent started on a taken port: {stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "error does not name the address: {stderr}"
    );
    Ok(())
}

/// Opens a connection with a 1 KiB receive buffer, sends `requests` pipelined
/// `GET /metrics` and never reads.
fn stalled_client(port: u16, requests: usize) -> Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_recv_buffer_size(1024)?;
    s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    let req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(requests);
    let mut w = &s;
    w.write_all(&req)?;
    Ok(s)
}

/// 32 clients that pipeline 50 scrapes each and never read, and 32 that connect and say
/// nothing, cannot keep a real scrape out: it gets through within seconds, and the agent's
/// thread count stays bounded.
#[test]
fn stalled_scrapers_cannot_lock_the_prometheus_endpoint() -> Result<()> {
    require_root();
    let dir = TempDir::new("stall")?;
    let mut agent = start_agent(&dir, "agent", &[("OTEL_SDK_DISABLED", "true".to_string())])?;
    let port = agent.prometheus_port;
    let mut hostile = Vec::new();
    for _ in 0..32 {
        hostile.push(stalled_client(port, 50)?);
    }
    for _ in 0..32 {
        hostile.push(socket2::Socket::from(TcpStream::connect((
            "127.0.0.1",
            port,
        ))?));
    }
    let threads = || -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", agent.proc.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
            .context("Threads: in status")
    };
    let start = Instant::now();
    // Several scrapes in a row while the hostile connections stay open.
    for i in 0..5 {
        let (status, body) = wait_for(
            &format!("scrape {i} under load"),
            Duration::from_secs(30),
            || Ok(http_request(port, "GET", "/metrics", "").ok()),
        )?;
        assert_eq!(status, 200);
        assert!(
            body.contains("retina_agent_collect_duration_seconds"),
            "{body}"
        );
        // More hostile clients arrive all the time.
        hostile.push(stalled_client(port, 50)?);
    }
    let took = start.elapsed();
    let n = threads()?;
    eprintln!("5 scrapes under load in {took:?}; agent threads: {n}");
    assert!(n <= 16, "the agent runs {n} threads under stalled scrapers");
    agent.proc.ensure_alive()?;
    drop(hostile);
    agent.stop()?;
    Ok(())
}
