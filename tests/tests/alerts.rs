//! The alerting rules that ship with the agent (`packaging/alerts/*.yml`):
//!
//! - `promtool check rules` accepts every file;
//! - every alert follows the monitoring mixins' conventions (a `severity`, a `summary`, a
//!   `description`, a `runbook_url` pointing at its own section of docs/runbooks.md, which
//!   says what it means, how to confirm it with `retina-agent snapshot` and what to do);
//! - `promtool test rules` passes the unit tests of `packaging/alerts/tests/`, and they
//!   cover every alert both firing and staying silent;
//! - end to end: a real Prometheus (Debian's) scrapes the real agent, run as the unit runs
//!   it (uid 65534 with only the unit's capabilities), with the shipped rules loaded. A UDP
//!   server in a `.service` cgroup overflows its receive buffer; the matching alert fires
//!   at `/api/v1/alerts` with the unit's labels, and no other alert of the set fires. The
//!   rules are loaded from a temporary copy whose `for:` durations are cut to 5 s (the
//!   only change: expressions, rate windows and thresholds are the shipped ones), so the
//!   test takes seconds instead of ten minutes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing, with its message"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use retina_tests::{
    rotel::{Proc, start_rotel_quiet},
    workload::{cgroup_v2_root, remove_cgroup},
    *,
};

/// `for:` in the end-to-end test's copy of the rules.
const TEST_FOR: &str = "5s";

fn alerts_dir() -> PathBuf {
    repo().join("packaging/alerts")
}

/// The shipped rule files (what the .deb installs), sorted.
fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(alerts_dir())
        .expect("packaging/alerts")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "rule files: {files:?}");
    files
}

/// The promtool unit test files.
fn test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(alerts_dir().join("tests"))
        .expect("packaging/alerts/tests")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yml"))
        .collect();
    files.sort();
    files
}

/// One alerting rule as the files spell it.
#[derive(Debug, Default)]
struct Alert {
    name: String,
    file: String,
    fields: BTreeMap<String, String>,
}

/// Every `- alert:` rule with its `severity` label and annotations (the files keep one
/// key per line, which this reads; promtool checks the YAML itself).
fn alerts() -> Vec<Alert> {
    let mut out: Vec<Alert> = Vec::new();
    for file in rule_files() {
        let text = fs::read_to_string(&file).expect("rule file");
        let fname = file.file_name().unwrap().to_string_lossy().into_owned();
        for line in text.lines() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix("- alert:") {
                out.push(Alert {
                    name: name.trim().to_string(),
                    file: fname.clone(),
                    ..Alert::default()
                });
            } else if let Some(a) = out.last_mut().filter(|a| a.file == fname)
                && let Some((k, v)) = t.split_once(": ")
                && ["severity", "summary", "description", "runbook_url", "for"].contains(&k)
            {
                a.fields
                    .insert(k.to_string(), v.trim_matches('\'').to_string());
            }
        }
    }
    out
}

/// The repository URL of the workspace manifest, which every `runbook_url` starts with.
fn repository_url() -> String {
    let manifest = fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("repository = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("repository in Cargo.toml")
}

/// The first executable called `name` on PATH, or a loud failure.
fn tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!("{name} not found (Debian package `prometheus`, installed by `cargo xtask test`)")
    })
}

#[test]
fn promtool_accepts_the_shipped_rules() -> Result<()> {
    let files = rule_files();
    let out = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .args(&files)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool check rules: {text}");
    // promtool's own count of the rules matches what this file reads.
    let found: usize = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SUCCESS: "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(found, alerts().len(), "{text}");
    Ok(())
}

#[test]
fn every_alert_follows_the_mixin_conventions_and_has_its_runbook() -> Result<()> {
    let alerts = alerts();
    let runbooks = fs::read_to_string(repo().join("docs/runbooks.md"))?;
    let base = format!("{}/blob/main/docs/runbooks.md#", repository_url());
    let mut names = BTreeSet::new();
    for a in &alerts {
        assert!(names.insert(a.name.clone()), "{} defined twice", a.name);
        assert!(
            a.name.starts_with("Retina") && a.name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{}: not a mixin-style CamelCase name",
            a.name
        );
        let f = |k: &str| a.fields.get(k).map(String::as_str);
        assert!(
            matches!(f("severity"), Some("critical" | "warning" | "info")),
            "{}: severity {:?}",
            a.name,
            f("severity")
        );
        assert!(f("for").is_some(), "{}: no for:", a.name);
        for k in ["summary", "description"] {
            assert!(
                f(k).is_some_and(|v| v.len() > 20),
                "{}: no {k} annotation",
                a.name
            );
        }
        let anchor = a.name.to_ascii_lowercase();
        assert_eq!(
            f("runbook_url"),
            Some(format!("{base}{anchor}").as_str()),
            "{}",
            a.name
        );
        // Its section: the heading GitHub turns into that anchor, and what it must say.
        let heading = format!("\n### {}\n", a.name);
        let start = runbooks
            .find(&heading)
            .with_context(|| format!("docs/runbooks.md has no `### {}` section", a.name))?;
        let body = &runbooks[start + heading.len()..];
        let section = &body[..body.find("\n### ").unwrap_or(body.len())];
        for part in ["**Meaning.**", "**Confirm.**", "**Causes and fixes.**"] {
            assert!(section.contains(part), "{}: runbook lacks {part}", a.name);
        }
        assert!(
            section.contains("retina-agent snapshot"),
            "{}: the runbook does not say how to confirm with `retina-agent snapshot`",
            a.name
        );
        let for_ = f("for").unwrap_or_default();
        assert!(
            section.contains(&format!("`for: {for_}`")),
            "{}: the runbook does not justify `for: {for_}`",
            a.name
        );
    }
    // And no section for an alert that does not exist.
    for line in runbooks.lines() {
        if let Some(h) = line.strip_prefix("### Retina") {
            assert!(
                names.contains(&format!("Retina{h}")),
                "runbook section for unknown alert Retina{h}"
            );
        }
    }
    Ok(())
}

#[test]
fn promtool_unit_tests_pass_and_cover_every_alert_firing_and_silent() -> Result<()> {
    let tests = test_files();
    let out = Command::new(tool("promtool"))
        .args(["test", "rules"])
        .args(&tests)
        .output()?;
    ensure!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Which alerts some test expects to fire, and which it expects silent.
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let mut loaded = BTreeSet::new();
    for file in &tests {
        let text = fs::read_to_string(file)?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if let Some(rules) = t.strip_prefix("- ../") {
                loaded.insert(rules.to_string());
            }
            let Some(rest) = t.split("alertname: ").nth(1) else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
            if t.contains("exp_alerts: []") || next == "exp_alerts: []" {
                silent.insert(name);
            } else if next == "exp_alerts:"
                && lines
                    .get(i + 2)
                    .is_some_and(|l| l.trim().starts_with("- exp_labels:"))
            {
                firing.insert(name);
            }
        }
    }
    for a in alerts() {
        assert!(firing.contains(&a.name), "no test where {} fires", a.name);
        assert!(
            silent.contains(&a.name),
            "no test where {} stays silent",
            a.name
        );
    }
    for f in rule_files() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(loaded.contains(&name), "no unit test loads {name}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// End to end.

/// The rule files with every `for:` set to [`TEST_FOR`], written into `dir`.
fn rules_for_test(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for file in rule_files() {
        let text = fs::read_to_string(&file)?;
        let mut changed = 0;
        let copy: String = text
            .lines()
            .map(|l| {
                let t = l.trim_start();
                if t.starts_with("for: ") {
                    changed += 1;
                    format!("{}for: {TEST_FOR}\n", &l[..l.len() - t.len()])
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        ensure!(changed > 0, "{}: no for: to shorten", file.display());
        let to = dir.join(file.file_name().context("file name")?);
        fs::write(&to, copy)?;
        out.push(to);
    }
    Ok(out)
}

/// The agent (`run`, packaged configuration, 1 s interval) as the unit runs it.
fn start_agent(dir: &TempDir, caps: &[String], listen: &str, otlp: &str) -> Result<Proc> {
    let mut cmd = unit::setpriv(caps);
    cmd.arg(agent_bin())
        .arg("--config")
        .arg(repo().join("packaging/config.toml"))
        .args(["run", "--interval", "1s", "--no-summary"])
        .args(["--prometheus-listen", listen, "--otlp-endpoint", otlp])
        .env_remove("RUST_LOG")
        .env_remove("OTEL_METRIC_EXPORT_INTERVAL")
        .env_remove("RETINA_CONFIG");
    Proc::spawn("retina-agent", cmd, dir.join("agent.log"))
}

/// A slice of our own for the test's service; removed on drop (after it).
struct Slice(PathBuf);

impl Drop for Slice {
    fn drop(&mut self) {
        remove_cgroup(&self.0);
    }
}

/// A UDP server that never reads (2 KiB receive buffer), started inside the cgroup
/// `slice/unit`; killed and the cgroup removed on drop.
struct Service {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Service {
    fn start(slice: &Slice, unit: &str) -> Result<Service> {
        let dir = slice.0.join(unit);
        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        // The shell moves itself into the cgroup, then becomes the server: the socket is
        // created inside the cgroup.
        let script = format!(
            "echo $$ > '{}/cgroup.procs' && exec '{}' sink 127.0.0.1:0 2048",
            dir.display(),
            traffic()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn();
        let mut s = Service {
            child: match child {
                Ok(c) => c,
                Err(e) => {
                    remove_cgroup(&dir);
                    bail!("starting the server: {e}");
                }
            },
            dir,
            port: 0,
        };
        let mut line = String::new();
        BufReader::new(s.child.stdout.take().context("server stdout")?).read_line(&mut line)?;
        s.port = line
            .trim()
            .parse()
            .with_context(|| format!("port {line:?}"))?;
        Ok(s)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_cgroup(&self.dir);
    }
}

fn prom_api(prom: &str, path: &str) -> Result<Value> {
    let (status, body) = http_get(prom, path)?;
    let doc: Value = serde_json::from_str(&body).with_context(|| format!("{path}: {body}"))?;
    ensure!(
        status == 200 && doc["status"] == "success",
        "{path}: HTTP {status}: {body}"
    );
    Ok(doc["data"].clone())
}

/// The alerts Prometheus reports firing.
fn firing(prom: &str) -> Result<Vec<Value>> {
    let data = prom_api(prom, "/api/v1/alerts")?;
    Ok(data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .cloned()
        .collect())
}

fn labels(alert: &Value) -> BTreeMap<String, String> {
    alert["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn a_services_full_receive_buffer_fires_its_alert_in_a_real_prometheus() -> Result<()> {
    require_root();
    let prometheus = tool("prometheus");
    let dir = TempDir::new("ralerts")?;
    let rules_dir = dir.join("rules");
    fs::create_dir(&rules_dir)?;
    let rules = rules_for_test(&rules_dir)?;

    // A real OTLP collector, so that the export is healthy (rotel, discarding).
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel_quiet(&dir, grpc, http, "rotel")?;

    // The service whose buffer will overflow, in a slice of its own.
    let root = cgroup_v2_root()?;
    // A top-level slice's name has no `-` (systemd reads `a-b.slice` as `b` inside `a.slice`,
    // and the agent names units only where systemd would put them).
    let slice = Slice(root.join(format!("retinatestalerts{}.slice", std::process::id())));
    fs::create_dir(&slice.0).with_context(|| format!("mkdir {}", slice.0.display()))?;
    let unit = format!("retina-test-alerts-{}.service", std::process::id());
    let service = Service::start(&slice, &unit)?;
    let cgroup_path = format!(
        "/{}",
        service
            .dir
            .strip_prefix(&root)
            .unwrap_or(&service.dir)
            .display()
    );

    let agent_addr = format!("127.0.0.1:{}", free_port()?);
    let mut agent = start_agent(
        &dir,
        &unit::unit_capabilities(),
        &agent_addr,
        &format!("http://127.0.0.1:{grpc}"),
    )?;

    let prom_addr = format!("127.0.0.1:{}", free_port()?);
    let rule_list: String = rules
        .iter()
        .map(|r| format!("  - {}\n", r.display()))
        .collect();
    let config = dir.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{rule_list}\
             scrape_configs:\n  - job_name: retina-agent\n    \
             static_configs:\n      - targets: ['{agent_addr}']\n"
        ),
    )?;
    let mut prom_cmd = Command::new(&prometheus);
    prom_cmd
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .arg("--log.level=warn");
    let mut prom = Proc::spawn("prometheus", prom_cmd, dir.join("prometheus.log"))?;
    let logs = |agent: &Proc, prom: &Proc, rotel: &Proc| {
        format!(
            "\nagent log:\n{}\nprometheus log:\n{}\nrotel log:\n{}",
            agent.log_text(),
            prom.log_text(),
            rotel.log_text()
        )
    };

    // Prometheus is up with every shipped group loaded, and scrapes the agent.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        agent.ensure_alive()?;
        prom.ensure_alive()?;
        let groups = prom_api(&prom_addr, "/api/v1/rules")
            .ok()
            .and_then(|d| d["groups"].as_array().map(Vec::len));
        let up = prom_api(&prom_addr, "/api/v1/query?query=up")
            .ok()
            .and_then(|d| d["result"][0]["value"][1].as_str().map(str::to_string));
        if groups == Some(rules.len()) && up.as_deref() == Some("1") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "Prometheus not ready (groups {groups:?}, up {up:?}){}",
            logs(&agent, &prom, &rotel)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing fires before the condition is caused.
    let before = firing(&prom_addr)?;
    ensure!(
        before.is_empty(),
        "alerts firing before the test: {before:#?}"
    );

    // The overflow: 200 datagrams a second at the 2 KiB buffer until the alert fires.
    let name = "RetinaSocketReceiveBufferDrops";
    let deadline = Instant::now() + Duration::from_secs(90);
    let alert = loop {
        agent.ensure_alive()?;
        prom.ensure_alive()?;
        rotel.ensure_alive()?;
        run(
            &traffic(),
            ["udp", &format!("127.0.0.1:{}", service.port), "200", "64"],
        )?;
        let now = firing(&prom_addr)?;
        if let Some(a) = now.iter().find(|a| a["labels"]["alertname"] == name) {
            break a.clone();
        }
        ensure!(
            Instant::now() < deadline,
            "{name} did not fire; firing: {now:#?}{}",
            logs(&agent, &prom, &rotel)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!("{name} fired: {alert:#}");
    let want: BTreeMap<String, String> = [
        ("alertname", name),
        ("severity", "warning"),
        ("instance", agent_addr.as_str()),
        ("systemd_unit", unit.as_str()),
        ("socket_cgroup", cgroup_path.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(labels(&alert), want, "{alert:#}");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        format!(
            "{}/blob/main/docs/runbooks.md#retinasocketreceivebufferdrops",
            repository_url()
        )
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap_or("");
    assert!(summary.contains(&unit), "{summary}");

    // No other alert of the set fires, now or a few evaluations later (any condition
    // true for TEST_FOR would).
    for _ in 0..2 {
        let all = firing(&prom_addr)?;
        let others: Vec<&Value> = all
            .iter()
            .filter(|a| a["labels"]["alertname"] != name)
            .collect();
        assert!(others.is_empty(), "other alerts fire: {others:#?}");
        assert_eq!(all.len(), 1, "{name} fires more than once: {all:#?}");
        std::thread::sleep(Duration::from_secs(6));
    }
    Ok(())
}

/// A part that cannot start is a series the degraded-collector alert reads: without
/// CAP_PERFMON the drop probe cannot load, and the agent (otherwise as the unit runs it)
/// exports `retina_agent_collector_degraded{collector="drops"} 1`; with the unit's
/// capabilities it exports no such series.
#[test]
fn a_collector_that_cannot_start_is_exported_as_degraded() -> Result<()> {
    require_root();
    let dir = TempDir::new("ralerts-degraded")?;
    let caps = unit::unit_capabilities();
    let without: Vec<String> = caps
        .iter()
        .filter(|c| *c != "CAP_PERFMON")
        .cloned()
        .collect();
    ensure!(
        without.len() < caps.len(),
        "the unit does not grant CAP_PERFMON"
    );
    let otlp = format!("http://127.0.0.1:{}", free_port()?);
    for (caps, want) in [(&without, true), (&caps, false)] {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut agent = start_agent(&dir, caps, &addr, &otlp)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = loop {
            agent.ensure_alive()?;
            if let Ok((200, body)) = http_get(&addr, "/metrics") {
                break body;
            }
            ensure!(Instant::now() < deadline, "no scrape: {}", agent.log_text());
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut degraded: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("retina_agent_collector_degraded"))
            .collect();
        degraded.sort_unstable();
        if want {
            // Both eBPF collectors need CAP_PERFMON: the drop probe and the TCP events.
            assert_eq!(
                degraded,
                [
                    "retina_agent_collector_degraded{collector=\"drops\"} 1",
                    "retina_agent_collector_degraded{collector=\"tcp_events\"} 1",
                ],
                "caps {caps:?}"
            );
            assert!(body.contains("# TYPE retina_agent_collector_degraded gauge"));
        } else {
            assert!(degraded.is_empty(), "caps {caps:?}: {degraded:?}");
        }
        agent.kill();
    }
    Ok(())
}

/// GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every panel of the Grafana dashboard links to the runbook section of its alerts (or,
/// for a panel of traffic no alert is about, to how the alerts' ratios use it), and every
/// link lands on a section that exists; a linked alert exists in the shipped rules.
#[test]
fn every_dashboard_panel_links_to_its_alerts_runbook() -> Result<()> {
    let path = repo().join("packaging/grafana/retina-agent.json");
    let dash: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
    let runbooks = fs::read_to_string(repo().join("docs/runbooks.md"))?;
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("### ").or_else(|| l.strip_prefix("## ")))
        .map(anchor)
        .collect();
    let names: BTreeSet<String> = alerts().into_iter().map(|a| a.name).collect();
    let base = format!("{}/blob/main/docs/runbooks.md#", repository_url());
    let mut panels: Vec<&Value> = Vec::new();
    for p in dash["panels"].as_array().context("panels")? {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut linked = BTreeSet::new();
    for p in panels.into_iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or("?");
        let links = p["links"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(!links.is_empty(), "panel {title:?} links to no runbook");
        for l in links {
            let url = l["url"].as_str().unwrap_or("");
            let a = url
                .strip_prefix(&base)
                .with_context(|| format!("panel {title:?}: {url} is not a runbook section"))?;
            assert!(anchors.contains(a), "panel {title:?}: no section #{a}");
            if let Some(alert) = names.iter().find(|n| n.to_ascii_lowercase() == a) {
                let label = l["title"].as_str().unwrap_or("");
                assert!(label.contains(alert.as_str()), "panel {title:?}: {label}");
                linked.insert(alert.clone());
            }
        }
    }
    assert!(linked.len() >= 10, "only {linked:?} are linked from panels");
    Ok(())
}
