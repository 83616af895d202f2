//! The Prometheus endpoint: scraped by a real Prometheus, only `GET /metrics`, a port in
//! use, stalled scrapers.

use super::*;

/// The `Accept` header Prometheus 2.42 sends.
const OPENMETRICS: &str = "Accept: application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n";

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
        // As Prometheus asks: OpenMetrics (without it the endpoint answers in the text
        // format 0.0.4).
        let (status, body) = http_request(port, "GET", "/metrics", OPENMETRICS)?;
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
    let out = unit::run_as_unit(&config, "1s")
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

/// Resource attributes that would give `target_info` one label twice, or a label
/// Prometheus reserves, are refused at load: `run` and `check` exit 2 naming the key,
/// from the environment and from the file (which is named).
#[test]
fn colliding_resource_attributes_are_refused_at_load() -> Result<()> {
    require_root();
    let dir = TempDir::shared("rattrs")?;
    let empty = dir.join("empty.toml");
    std::fs::write(&empty, "")?;
    let colliding = dir.join("colliding.toml");
    std::fs::write(
        &colliding,
        "[export.resource_attributes]\n\"a.b\" = \"1\"\na_b = \"2\"\n",
    )?;
    let cases: [(&std::path::Path, Option<&str>, &[&str]); 4] = [
        (
            &empty,
            Some("host_name=node-7"),
            &["\"host_name\"", "\"host.name\""],
        ),
        (&empty, Some("a.b=1,a_b=2"), &["\"a.b\"", "\"a_b\""]),
        (&empty, Some("__name__=x"), &["\"__name__\"", "reserved"]),
        (&colliding, None, &["\"a.b\"", "\"a_b\"", "colliding.toml"]),
    ];
    for (config, attrs, needles) in cases {
        for command in ["run", "check"] {
            let mut args = vec!["--config", config.to_str().context("utf-8")?, command];
            if command == "run" {
                args.push("--no-summary");
            }
            let mut cmd = retina_tests::unit::agent_as_unit(&args);
            if let Some(a) = attrs {
                cmd.env("OTEL_RESOURCE_ATTRIBUTES", a);
            }
            let out = cmd.stdin(Stdio::null()).output()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(2), "{command} {attrs:?}: {text}");
            for needle in needles.iter().chain(&["export.resource_attributes"]) {
                assert!(
                    text.contains(needle),
                    "{command} {attrs:?}: {needle:?} not in {text}"
                );
            }
        }
    }
    Ok(())
}

/// One `GET /metrics` with `accept` (none when empty): the Content-Type and the body.
fn scrape_as(port: u16, accept: &str) -> Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, v)| v.trim().to_string())
        .context("no Content-Type")?;
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked answer: {head}"
    );
    Ok((content_type, body.to_string()))
}

/// The endpoint negotiates its format: `promtool check metrics` (the text format parser
/// and its lint) passes on what a plain client gets; Prometheus 2.42 (OpenMetrics) keeps
/// the target up with configured resource attributes, one of which replaces the agent's
/// own `host.name`, and stores `target_info` with them.
#[test]
fn promtool_and_prometheus_accept_the_endpoint() -> Result<()> {
    require_root();
    let dir = TempDir::shared("rpromtool")?;
    let port = free_port()?;
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\n[export]\nenabled = false\n[prometheus]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )?;
    let mut cmd = retina_tests::unit::agent_as_unit(&[
        "--config",
        config.to_str().context("utf-8")?,
        "run",
        "--no-summary",
    ]);
    cmd.env(
        "OTEL_RESOURCE_ATTRIBUTES",
        "host.name=node-7,deployment.environment.name=prod,k8s.node.name=node-7",
    );
    let mut agent = Proc::spawn("agent", cmd, dir.join("agent.log"))?;
    agent.wait_running()?;
    let ns = NetNs::new("rptool")?;
    make_drops(&ns)?;
    wait_for("the drop series on /metrics", PATIENCE, || {
        agent.ensure_alive()?;
        let (_, body) = scrape_as(port, "")?;
        Ok(body.contains("retina_drop_count_total{").then_some(()))
    })?;

    for accept in [
        "",
        "Accept: */*\r\n",
        "Accept: text/plain;version=0.0.4\r\n",
    ] {
        let (content_type, body) = scrape_as(port, accept)?;
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert!(!body.contains("# EOF"), "{body}");
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("promtool (Debian package prometheus)")?;
        promtool
            .stdin
            .take()
            .context("stdin")?
            .write_all(body.as_bytes())?;
        let out = promtool.wait_with_output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Exit 0: parsed, and no lint finding (a parse error exits 1, lint problems 3).
        assert!(
            out.status.success(),
            "promtool check metrics ({accept:?}): {}: {said}\n{body}",
            out.status
        );
        assert!(
            body.contains("# TYPE target_info gauge")
                && body.contains("host_name=\"node-7\"")
                && body.contains("# TYPE retina_drop_count_total counter"),
            "{body}"
        );
    }
    let (content_type, body) = scrape_as(port, OPENMETRICS)?;
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert_eq!(body.lines().last(), Some("# EOF"));

    let prom_port = free_port()?;
    let prom_config = dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: retina\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )?;
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let mut prom = Proc::spawn("prometheus", cmd, dir.join("prometheus.log"))?;
    wait_for_port(prom_port)?;
    let query = format!(
        "/api/v1/query?query={}",
        url_encode(
            "target_info{job=\"retina\",host_name=\"node-7\",deployment_environment_name=\"prod\"}"
        )
    );
    wait_for("target_info in Prometheus", PATIENCE, || {
        prom.ensure_alive()?;
        agent.ensure_alive()?;
        let (status, body) = http_request(prom_port, "GET", &query, "")?;
        ensure!(status == 200, "{query}: {status} {body}");
        Ok(body.contains("\"os_type\":\"linux\"").then_some(()))
    })?;
    let up = format!("/api/v1/query?query={}", url_encode("up{job=\"retina\"}"));
    let (_, up) = http_request(prom_port, "GET", &up, "")?;
    assert!(up.contains("\"1\""), "target not up: {up}");
    let targets = http_request(prom_port, "GET", "/api/v1/targets", "")?.1;
    assert!(
        targets.contains("\"health\":\"up\"") && !targets.contains("not unique"),
        "{targets}"
    );
    let (status, _) = agent.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "{}", agent.log_text());
    Ok(())
}
