//! The Grafana dashboard (`packaging/grafana/retina-agent.json`) against a real Prometheus
//! scraping a real agent: every PromQL expression of every panel, and every variable
//! query, returns data. This is what catches a metric renamed by the agent or by the
//! OpenTelemetry → Prometheus name translation.

use std::{
    collections::BTreeSet,
    fs,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use retina_tests::*;

/// Grafana variables and what they become in the test: all nodes, all interfaces, a
/// rate window that spans several 1 s scrapes.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "1s"),
    ("$__range", "5m"),
    ("$instance", ".*"),
    ("$interface", ".*"),
];

fn dashboard() -> Value {
    let path = repo().join("packaging/grafana/retina-agent.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, including those nested in collapsed rows.
fn all_panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        for nested in panel["panels"].as_array().into_iter().flatten() {
            out.push(nested);
        }
    }
    out
}

/// (panel title, expression) for every Prometheus target.
fn expressions(dash: &Value) -> Vec<(String, String)> {
    all_panels(dash)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| t["expr"].as_str().map(|e| (title.clone(), e.to_string())))
        })
        .collect()
}

fn substitute(expr: &str) -> String {
    let mut out = expr.to_string();
    // Longest first: `$__rate_interval` before `$__interval`.
    for (var, value) in SUBSTITUTIONS {
        out = out.replace(var, value);
        out = out.replace(&format!("${{{}}}", &var[1..]), value);
    }
    out
}

#[test]
fn dashboard_is_well_formed() {
    let dash = dashboard();
    assert!(
        dash["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let panels = all_panels(&dash);
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{title}: no gridPos");
        if p["type"] == "row" {
            continue;
        }
        // The data source is the dashboard's variable, never a uid of one Grafana.
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    let exprs = expressions(&dash);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for (title, expr) in &exprs {
        let done = substitute(expr);
        assert!(
            !done.contains('$'),
            "{title}: unknown variable left in {done}"
        );
    }
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "instance", "interface"]);
}

// ---------------------------------------------------------------------------------------

/// A temporary directory, removed on drop.
/// A child process, killed and reaped on drop.
struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    fn spawn(name: &'static str, cmd: &mut Command) -> Result<Self> {
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Guard { name, child })
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Prometheus API call; its `data`.
fn prom_api(prom: &str, path: &str) -> Result<Value> {
    let (status, body) = http_get(prom, path)?;
    let doc: Value = serde_json::from_str(&body).with_context(|| format!("{path}: {body}"))?;
    ensure!(
        status == 200 && doc["status"] == "success",
        "{path}: HTTP {status}: {body}"
    );
    Ok(doc["data"].clone())
}

/// The result of an instant query.
fn query(prom: &str, expr: &str) -> Result<Vec<Value>> {
    let data = prom_api(prom, &format!("/api/v1/query?query={}", encode(expr)))?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}

/// The values of a Grafana `label_values(selector, label)` variable query.
fn label_values(prom: &str, definition: &str) -> Result<Vec<String>> {
    let inner = definition
        .trim()
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .with_context(|| format!("not a label_values() query: {definition}"))?;
    let (selector, label) = inner
        .rsplit_once(',')
        .context("label_values(selector, label)")?;
    let selector = substitute(selector.trim());
    let data = prom_api(
        prom,
        &format!(
            "/api/v1/label/{}/values?match[]={}",
            label.trim(),
            encode(&selector)
        ),
    )?;
    Ok(data
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() -> Result<()> {
    require_root();
    let prometheus = which("prometheus").context(
        "prometheus not found (Debian package `prometheus`, installed by `cargo xtask test`)",
    )?;
    let dash = dashboard();
    let dir = TempDir::new("retina-dashboard")?;
    let agent_addr = format!("127.0.0.1:{}", free_port()?);
    let prom_addr = format!("127.0.0.1:{}", free_port()?);

    // The agent with the packaged configuration, collecting every second, the Prometheus
    // endpoint on a free port. OTLP goes to a port nobody listens on: the export failure
    // counters the dashboard shows exist only while OTLP export is on. Every series is
    // exported (`series = "everything"`): the packaged default leaves out counters that
    // never counted, and this host has no NIC or interface drops and errors to show, so
    // their panels would query names that exist but carry no series here.
    let otlp = format!("http://127.0.0.1:{}", free_port()?);
    let packaged = fs::read_to_string(repo().join("packaging/config.toml"))?;
    ensure!(
        packaged.contains("series = \"informative\""),
        "packaging/config.toml no longer sets `series = \"informative\"`: update this test"
    );
    let agent_config = dir.0.join("agent.toml");
    fs::write(
        &agent_config,
        packaged.replace("series = \"informative\"", "series = \"everything\""),
    )?;
    // As the packaged unit runs it (uid 65534, the unit's capabilities).
    let mut agent = Guard::spawn(
        "retina-agent",
        retina_tests::unit::agent_as_unit(&[
            "--config",
            agent_config.to_str().context("config path")?,
            "run",
            "--interval",
            "1s",
            "--no-summary",
            "--prometheus-listen",
            &agent_addr,
            "--otlp-endpoint",
            &otlp,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.0.join("agent.log"))?),
    )?;

    let config = dir.0.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: retina-agent\n    scrape_interval: 1s\n    \
             static_configs:\n      - targets: ['{agent_addr}']\n"
        ),
    )?;
    let mut prom = Guard::spawn(
        "prometheus",
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.0.join("prometheus.log"))?),
    )?;
    let logs = || {
        format!(
            "\nagent log:\n{}\nprometheus log:\n{}",
            fs::read_to_string(dir.0.join("agent.log")).unwrap_or_default(),
            fs::read_to_string(dir.0.join("prometheus.log")).unwrap_or_default()
        )
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        agent.check_running().with_context(logs)?;
        prom.check_running().with_context(logs)?;
        let ready = http_get(&prom_addr, "/-/ready").is_ok_and(|(s, _)| s == 200)
            && http_get(&agent_addr, "/metrics").is_ok_and(|(s, _)| s == 200);
        if ready {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "agent or Prometheus not ready{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Something for every panel: drops in a named namespace, a veth pair (driver stats,
    // link speed, rings), traffic on it.
    let ns = NetNs::new("rdash")?;
    let mut veth = Veth::new("rdv")?;
    veth.move_peer(&ns)?;
    ip(&["addr", "add", "10.231.77.1/24", "dev", &veth.host])?;
    ip(&["link", "set", &veth.host, "up"])?;
    ns.exec("ip", &["addr", "add", "10.231.77.2/24", "dev", &veth.peer])?;
    ns.exec("ip", &["link", "set", &veth.peer, "up"])?;
    let traffic = helper_bin("traffic").display().to_string();
    ns.exec(&traffic, &["udp", "127.0.0.1:9", "300", "32"])?;
    run(&traffic, ["udp", "10.231.77.2:9", "200", "64"])?;

    // The drops arrive in Prometheus with their labels: the namespace's `lo` by its index
    // (always 1), as the unit cannot name interfaces of other namespaces (CAP_SYS_ADMIN).
    let ns_drops = format!(
        "sum(retina_drop_count_total{{drop_reason=\"NO_SOCKET\", network_namespace_name=\"{}\", network_interface_index=\"1\"}})",
        ns.name
    );
    let exprs = expressions(&dash);
    let mut empty: Vec<(String, String)>;
    loop {
        agent.check_running().with_context(logs)?;
        let drops = query(&prom_addr, &ns_drops)?;
        let got = drops
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse::<f64>().ok());
        empty = Vec::new();
        for (title, expr) in &exprs {
            let expr = substitute(expr);
            if query(&prom_addr, &expr)?.is_empty() {
                empty.push((title.clone(), expr));
            }
        }
        if got == Some(300.0) && empty.is_empty() {
            break;
        }
        if Instant::now() > deadline + Duration::from_secs(30) {
            bail!(
                "after waiting: NO_SOCKET drops in {} = {got:?} (want 300); queries without \
                 data: {empty:#?}{}",
                ns.name,
                logs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{} dashboard expressions all returned data", exprs.len());

    // The variables list this node and its interfaces.
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("?");
        let definition = var["definition"].as_str().context("variable definition")?;
        let values = label_values(&prom_addr, definition)?;
        assert!(
            !values.is_empty(),
            "variable {name}: {definition} has no values"
        );
        if name == "instance" {
            assert_eq!(values, std::slice::from_ref(&agent_addr), "{name}");
        }
        if name == "interface" {
            assert!(values.contains(&veth.host), "{name}: {values:?}");
        }
    }
    Ok(())
}
