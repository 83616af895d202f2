//! `retina-agent check` end to end: as root on this machine, and as the packaged unit (uid
//! 65534 with `CAP_BPF` and `CAP_PERFMON`), every check that can FAIL passes (the probe is
//! really loaded, attached and detached), and as the unit what only more privilege gives is
//! said (interface names in other namespaces, drop locations); without capabilities the
//! capability check fails with a hint and exit status 1; a bad configuration (status 2), a taken
//! Prometheus port and an unreachable collector are reported for what they are.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing, with its message"
)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use anyhow::{Context, Result};
use retina_tests::{
    unit::{setpriv_args, unit_capabilities},
    *,
};

/// Every check, in output order.
const CHECKS: [&str; 14] = [
    "config",
    "kernel",
    "btf",
    "capabilities",
    "tracepoint",
    "probe",
    "drop_locations",
    "tcp_events",
    "workloads",
    "workload_netstat",
    "bpffs",
    "tracefs",
    "otlp",
    "prometheus",
];

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Result<Dir> {
        let path = std::env::temp_dir().join(format!("retina-check-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        // Readable by the unprivileged run below.
        run("chmod", ["755", path.to_str().unwrap()])?;
        Ok(Dir(path))
    }

    fn file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, text)?;
        run("chmod", ["644", path.to_str().unwrap()])?;
        Ok(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A configuration whose exporters cannot collide with anything: an ephemeral Prometheus
/// port and the given OTLP endpoint.
fn config_text(endpoint: &str) -> String {
    format!("[export]\nendpoint = \"{endpoint}\"\n[prometheus]\nlisten = \"127.0.0.1:0\"\n")
}

fn check(prefix: &[String], args: &[&str]) -> Result<Output> {
    let bin = agent_bin();
    let (program, pre) = match prefix.split_first() {
        Some((p, rest)) => (PathBuf::from(p), rest.to_vec()),
        None => (bin.clone(), Vec::new()),
    };
    let mut cmd = Command::new(&program);
    cmd.args(&pre);
    if !prefix.is_empty() {
        cmd.arg(&bin);
    }
    cmd.arg("check")
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("RETINA_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .stdin(Stdio::null());
    cmd.output().with_context(|| format!("running {cmd:?}"))
}

/// One `STATUS  name: detail` line.
#[derive(Debug)]
struct Line {
    status: String,
    name: String,
    detail: String,
}

/// `(check name, hint)` for every hint line.
type Hints = Vec<(String, String)>;

/// The check lines, and the hint lines by check name.
fn parse(stdout: &str) -> (Vec<Line>, Hints) {
    let mut checks: Vec<Line> = Vec::new();
    let mut hints = Vec::new();
    for line in stdout.lines() {
        if let Some(hint) = line.trim_start().strip_prefix("hint: ") {
            let owner = checks.last().map(|c| c.name.clone()).unwrap_or_default();
            hints.push((owner, hint.to_string()));
            continue;
        }
        let Some((status, rest)) = line.split_once("  ") else {
            continue;
        };
        if !["PASS", "WARN", "FAIL"].contains(&status) {
            continue;
        }
        let (name, detail) = rest.split_once(": ").unwrap_or((rest, ""));
        checks.push(Line {
            status: status.to_string(),
            name: name.to_string(),
            detail: detail.to_string(),
        });
    }
    (checks, hints)
}

fn find<'a>(checks: &'a [Line], name: &str) -> &'a Line {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {checks:?}"))
}

fn status_of<'a>(checks: &'a [Line], name: &str) -> &'a str {
    &find(checks, name).status
}

#[test]
fn as_root_every_check_that_can_fail_passes() -> Result<()> {
    require_root();
    let dir = Dir::new("root")?;
    // A collector that accepts connections.
    let collector = TcpListener::bind("127.0.0.1:0")?;
    let endpoint = format!("http://{}", collector.local_addr()?);
    let config = dir.file("ok.toml", &config_text(&endpoint))?;
    let before = std::fs::read_to_string("/proc/self/mounts")?;

    let out = check(&[], &["--config", config.to_str().unwrap()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let (checks, hints) = parse(&stdout);
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CHECKS, "{stdout}");
    for Line {
        status,
        name,
        detail,
    } in &checks
    {
        assert_ne!(status, "FAIL", "{name}: {detail}\n{stdout}");
        if status == "WARN" {
            assert!(
                hints.iter().any(|(owner, _)| owner == name),
                "WARN {name} without a hint: {stdout}"
            );
        }
    }
    for name in [
        "config",
        "kernel",
        "btf",
        "capabilities",
        "tracepoint",
        "probe",
        "tcp_events",
        "otlp",
        "prometheus",
    ] {
        assert_eq!(status_of(&checks, name), "PASS", "{name}: {stdout}");
    }
    let probe = &find(&checks, "probe").detail;
    assert!(
        probe.contains("attached") && probe.contains("detached"),
        "{probe}"
    );
    // bpffs and tracefs are informational: PASS when mounted, WARN when not; never FAIL.
    for (name, fstype) in [("bpffs", " bpf "), ("tracefs", " tracefs ")] {
        let expected = if before.contains(fstype) {
            "PASS"
        } else {
            "WARN"
        };
        assert_eq!(status_of(&checks, name), expected, "{name}: {stdout}");
    }

    // The same as JSON.
    let out = check(
        &[],
        &["--config", config.to_str().unwrap(), "--format", "json"],
    )?;
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(doc["ok"], true, "{doc:#}");
    let list = doc["checks"].as_array().context("checks")?;
    assert_eq!(list.len(), CHECKS.len());
    assert!(list.iter().all(|c| c["status"] != "FAIL"), "{doc:#}");
    Ok(())
}

/// The packaged unit's user and capabilities, with `extra` capabilities (`CAP_SYSLOG`).
fn as_unit_with(extra: &[&str]) -> Vec<String> {
    let mut caps = unit_capabilities();
    caps.extend(extra.iter().map(|c| c.to_string()));
    setpriv_args(&caps)
}

#[test]
fn as_the_unit_every_check_passes_and_what_needs_more_is_said() -> Result<()> {
    require_root();
    let dir = Dir::new("unit")?;
    let collector = TcpListener::bind("127.0.0.1:0")?;
    let endpoint = format!("http://{}", collector.local_addr()?);
    let plain = dir.file("ok.toml", &config_text(&endpoint))?;
    let unit = as_unit_with(&[]);

    let out = check(&unit, &["--config", plain.to_str().unwrap()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let (checks, _) = parse(&stdout);
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CHECKS, "{stdout}");
    for name in [
        "config",
        "kernel",
        "btf",
        "capabilities",
        "tracepoint",
        "probe",
        "drop_locations",
        "tcp_events",
        "workloads",
        "otlp",
        "prometheus",
    ] {
        assert_eq!(status_of(&checks, name), "PASS", "{name}: {stdout}");
    }
    // The capabilities it runs with, and what it cannot do with only these.
    let caps = &find(&checks, "capabilities").detail;
    assert!(
        caps.contains("effective: CAP_BPF, CAP_PERFMON")
            && caps.contains(
                "without CAP_SYS_ADMIN, drops in other named namespaces carry no interface name"
            ),
        "{caps}"
    );
    assert_eq!(
        find(&checks, "drop_locations").detail,
        "off (drops.locations = false)"
    );

    // Drop locations name kernel functions from /proc/kallsyms, whose addresses the kernel
    // hides from a process without CAP_SYSLOG: the unit as shipped runs without them and
    // `check` says so, with the fix.
    let hidden = std::fs::read_to_string("/proc/sys/kernel/kptr_restrict")?;
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")?;
    anyhow::ensure!(
        hidden.trim() != "0" || paranoid.trim().parse::<i32>()? > 1,
        "this kernel shows kallsyms addresses to every process (kptr_restrict 0, \
         perf_event_paranoid {}): nothing to check",
        paranoid.trim()
    );
    let locations = dir.file(
        "locations.toml",
        &format!("{}[drops]\nlocations = true\n", config_text(&endpoint)),
    )?;
    let out = check(&unit, &["--config", locations.to_str().unwrap()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A warning: the agent runs, without locations.
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let (checks, hints) = parse(&stdout);
    assert_eq!(status_of(&checks, "drop_locations"), "WARN", "{stdout}");
    let detail = &find(&checks, "drop_locations").detail;
    assert!(
        detail.contains("CAP_SYSLOG") && detail.contains("drop locations off"),
        "{detail}"
    );
    assert!(
        hints
            .iter()
            .any(|(o, h)| o == "drop_locations" && h.contains("CAP_SYSLOG")),
        "{stdout}"
    );
    // The drop-in's fix: with CAP_SYSLOG the same check passes.
    let syslog = as_unit_with(&["CAP_SYSLOG"]);
    let out = check(&syslog, &["--config", locations.to_str().unwrap()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let (checks, _) = parse(&stdout);
    assert_eq!(status_of(&checks, "drop_locations"), "PASS", "{stdout}");
    assert!(
        find(&checks, "drop_locations")
            .detail
            .contains("kernel functions"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn without_capabilities_the_capability_check_fails_with_a_hint() -> Result<()> {
    require_root();
    let dir = Dir::new("nocaps")?;
    let config = dir.file("ok.toml", &config_text("http://127.0.0.1:1"))?;
    let setpriv = setpriv_args(&[]);
    let out = check(&setpriv, &["--config", config.to_str().unwrap()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let (checks, hints) = parse(&stdout);
    assert_eq!(status_of(&checks, "capabilities"), "FAIL", "{stdout}");
    let detail = &find(&checks, "capabilities").detail;
    assert!(detail.contains("missing CAP_BPF, CAP_PERFMON"), "{detail}");
    let hint = hints
        .iter()
        .find(|(owner, _)| owner == "capabilities")
        .map(|(_, h)| h.as_str())
        .unwrap_or_else(|| panic!("no hint for capabilities: {stdout}"));
    assert!(hint.contains("CAP_BPF") && hint.contains("root"), "{hint}");
    // The real load is refused too, and says why.
    assert_eq!(status_of(&checks, "probe"), "FAIL", "{stdout}");
    // The TCP event programs likewise; the agent runs without them, so a warning.
    assert_eq!(status_of(&checks, "tcp_events"), "WARN", "{stdout}");
    let detail = &find(&checks, "tcp_events").detail;
    assert!(detail.contains("CAP_BPF"), "{detail}");
    // So is the task iterator: pod attribution falls back to /proc, which refuses other
    // users' namespaces, and the check says so (issue 26, item 1).
    assert_eq!(status_of(&checks, "workloads"), "WARN", "{stdout}");
    let detail = &find(&checks, "workloads").detail;
    assert!(
        detail.contains("task iterator") && detail.contains("are refused"),
        "{detail}"
    );
    // What does not need privileges still passes.
    for name in ["config", "kernel", "btf", "tracepoint", "prometheus"] {
        assert_eq!(status_of(&checks, name), "PASS", "{name}: {stdout}");
    }
    // An unreachable collector is a warning, not a failure.
    assert_eq!(status_of(&checks, "otlp"), "WARN", "{stdout}");
    Ok(())
}

#[test]
fn bad_config_taken_port_and_disabled_drops() -> Result<()> {
    require_root();
    let dir = Dir::new("bad")?;

    // A bad configuration is one failing check; the rest still run.
    let bad = dir.file("bad.toml", "[netdev]\ninclude = [\"eth[\"]\n")?;
    let out = check(&[], &["--config", bad.to_str().unwrap()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Status 2, as `run` exits for this configuration.
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let (checks, hints) = parse(&stdout);
    assert_eq!(status_of(&checks, "config"), "FAIL");
    let detail = &find(&checks, "config").detail;
    assert!(
        detail.contains(&format!("{}: key `netdev.include[0]`", bad.display()))
            && detail.contains("invalid regular expression"),
        "{detail}"
    );
    assert!(hints.iter().any(|(o, _)| o == "config"), "{stdout}");
    assert_eq!(status_of(&checks, "probe"), "PASS", "{stdout}");

    // A Prometheus port somebody else holds.
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let out = check(
        &[],
        &[
            "--config",
            dir.file("ok.toml", &config_text("http://127.0.0.1:1"))?
                .to_str()
                .unwrap(),
            "--prometheus-listen",
            &format!("127.0.0.1:{port}"),
        ],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let (checks, hints) = parse(&stdout);
    assert_eq!(status_of(&checks, "prometheus"), "FAIL", "{stdout}");
    assert!(
        hints
            .iter()
            .any(|(o, h)| o == "prometheus" && h.contains("already running")),
        "{stdout}"
    );
    drop(taken);

    // With drops disabled, a failing drop check is only a warning.
    let off = dir.file(
        "off.toml",
        &format!(
            "{}[drops]\nenabled = false\n",
            config_text("http://127.0.0.1:1")
        ),
    )?;
    let setpriv = setpriv_args(&[]);
    let out = check(&setpriv, &["--config", off.to_str().unwrap()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let (checks, _) = parse(&stdout);
    assert_eq!(status_of(&checks, "capabilities"), "WARN", "{stdout}");
    assert_eq!(status_of(&checks, "probe"), "WARN", "{stdout}");
    Ok(())
}
