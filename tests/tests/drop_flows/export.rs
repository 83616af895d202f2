//! `run` with `drops.flows`: the daemon, as the packaged unit runs it, exports the sampled
//! drop events to rotel as OTLP log records, and counts them (`retina.drop.sample.*`).

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, ensure};
use retina_tests::{
    rotel::{self, PATIENCE, Proc as RProc, wait_for},
    unit::{CONFIG, config_file, run_as_unit},
    workload, *,
};

use super::Pod;

/// Datagrams sent: far over the kernel's budget (100 a second for the node, one second
/// of burst), so most are suppressed.
const SENT: u64 = 1000;
/// The source port of the flow.
const SPORT: u16 = 40003;

/// One log record from rotel's detailed debug log.
#[derive(Debug, Default)]
pub(super) struct Record {
    pub(super) event: String,
    pub(super) body: String,
    pub(super) attrs: BTreeMap<String, String>,
}

/// Parses rotel's `--debug-log logs --debug-log-verbosity detailed` output: `LogRecord #n`,
/// `EventName: …`, `Body: Str(…)`, `-> key: Str(v)` / `Int(v)`.
pub(super) fn parse_records(text: &str) -> Vec<Record> {
    let inner = |v: &str| -> String {
        match (v.find('('), v.rfind(')')) {
            (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
            _ => v.to_string(),
        }
    };
    let mut out: Vec<Record> = Vec::new();
    // Only complete lines: rotel may be writing the last one.
    let text = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut current: Option<Record> = None;
    for line in text.lines() {
        if line.starts_with("LogRecord #") {
            out.extend(current.take());
            current = Some(Record::default());
        } else if line.starts_with("ResourceLog") || line.starts_with("ResourceMetrics") {
            out.extend(current.take());
        } else if let Some(r) = current.as_mut() {
            if let Some(v) = line.strip_prefix("EventName: ") {
                r.event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("Body: ") {
                r.body = inner(v.trim());
            } else if let Some((k, v)) = line
                .trim()
                .strip_prefix("-> ")
                .and_then(|kv| kv.split_once(": "))
            {
                r.attrs.insert(k.to_string(), inner(v));
            }
        }
    }
    out.extend(current);
    out
}

/// The agent's counters from its Prometheus endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counters {
    pub(super) sent: u64,
    pub(super) suppressed: u64,
    pub(super) exported: u64,
    pub(super) failed: u64,
    pub(super) dropped: u64,
}

pub(super) fn counters(prometheus: &str) -> Result<Counters> {
    let (status, body) = http_get(prometheus, "/metrics")?;
    ensure!(status == 200, "GET /metrics: {status}");
    let value = |name: &str| -> Result<u64> {
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .with_context(|| format!("{name} missing from the scrape:\n{body}"))
    };
    Ok(Counters {
        sent: value("retina_drop_sample_sent_total")?,
        suppressed: value("retina_drop_sample_suppressed_total")?,
        exported: value("retina_agent_export_logs_exported_total")?,
        failed: value("retina_agent_export_logs_failed_total")?,
        dropped: value("retina_agent_export_logs_dropped_total")?,
    })
}

/// The counters once the log export has caught up with what the kernel had sent `settle`
/// from now (the flow counters are read once a second).
pub(super) fn settled_counters(prometheus: &str, settle: Duration) -> Result<Counters> {
    std::thread::sleep(settle);
    let then = counters(prometheus)?;
    wait_for("the log export to catch up", PATIENCE, || {
        let now = counters(prometheus)?;
        Ok((now.exported + now.failed + now.dropped >= then.sent).then_some(then))
    })
}

/// rotel logging every log record it receives, on free ports (`extra`: more arguments);
/// its ports `(grpc, http)`.
pub(super) fn start_rotel(dir: &TempDir, name: &str, extra: &[&str]) -> Result<(RProc, u16, u16)> {
    let (grpc, http) = (free_port()?, free_port()?);
    let rotel = rotel::start_rotel_logs(dir, grpc, http, name, extra)?;
    Ok((rotel, grpc, http))
}

/// `run` as the packaged unit runs it, with the packaged configuration but `drops.flows`
/// on and the `[drops]` lines `edits` (`(old, new)`) replaced, interval 1 s, with `env`;
/// the address of its Prometheus endpoint.
pub(super) fn start_agent(
    dir: &TempDir,
    edits: &[(&str, &str)],
    env: &[(&str, String)],
) -> Result<(RProc, String)> {
    let mut config = CONFIG.to_string();
    for (old, new) in [("flows = false", "flows = true")].iter().chain(edits) {
        let edited = config.replace(&format!("\n{old}\n"), &format!("\n{new}\n"));
        ensure!(edited != config, "the packaged config has no `{old}` line");
        config = edited;
    }
    let config = config_file(dir, &config)?;
    let prom = free_port()?;
    let mut cmd = run_as_unit(&config, "1s");
    cmd.env("OTEL_EXPORTER_PROMETHEUS_PORT", prom.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut agent = RProc::spawn("agent", cmd, dir.join("agent.log"))?;
    agent.wait_running()?;
    ensure!(
        agent
            .log_text()
            .contains("exporting drop events as OTLP log records"),
        "the agent does not export drop events:\n{}",
        agent.log_text()
    );
    Ok((agent, format!("127.0.0.1:{prom}")))
}

#[test]
fn run_exports_sampled_drops_as_log_records_with_the_pod() -> Result<()> {
    let pod = Pod::new(0x27)?;
    let dir = TempDir::shared("rflrun")?;
    let (mut rotel, grpc, _) = start_rotel(&dir, "rotel", &[])?;
    let (mut agent, prometheus) = start_agent(
        &dir,
        &[],
        &[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        )],
    )?;

    let before = settled_counters(&prometheus, Duration::from_secs(2))?;
    let (count, sport) = (SENT.to_string(), SPORT.to_string());
    // From inside the pod's cgroup, as a pod's own process: a namespace whose processes
    // are in different cgroups names no workload.
    let cgroup = workload::cgroup_v2_root()?.join(format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope/cgroup.procs",
        pod.uid.replace('-', "_"),
        super::ID
    ));
    // By its path: a busybox `sh` (the guests') runs its own `ip` applet, which knows
    // no netns.
    let ip = which("ip").ok_or_else(|| anyhow::anyhow!("no ip on PATH"))?;
    let script = format!(
        "echo $$ > {} && exec {ip} netns exec {} {} udp 127.0.0.1:9 {count} 32 {sport}",
        cgroup.display(),
        pod.ns.name,
        traffic(),
        ip = ip.display()
    );
    run("sh", ["-c", &script])?;
    let after = settled_counters(&prometheus, Duration::from_secs(2))?;
    // The counters are the node's: drops elsewhere (another test, a closing connection)
    // add to them, so the burst's drops are a lower bound of their growth.
    let counted = (after.sent + after.suppressed) - (before.sent + before.suppressed);
    ensure!(
        counted >= SENT,
        "{counted} drops sent or suppressed for {SENT} dropped: {before:?} -> {after:?}"
    );
    let (sent, suppressed) = (
        after.sent - before.sent,
        after.suppressed - before.suppressed,
    );
    eprintln!(
        "over the burst: {sent} sent, {suppressed} suppressed ({} other drops on the node)",
        counted - SENT
    );
    assert_eq!(
        (after.failed, after.dropped),
        (0, 0),
        "log records lost: {after:?}\n{}",
        agent.log_text()
    );

    let inode = pod.ns.inode()?.to_string();
    // Every event was exported before `after` was read; rotel prints what it received a
    // moment later: the records are those once their number stops growing.
    let mut seen = 0;
    let records = wait_for("rotel to log the records", PATIENCE, || {
        std::thread::sleep(Duration::from_millis(750));
        rotel.ensure_alive()?;
        agent.ensure_alive()?;
        let ours: Vec<Record> = parse_records(&rotel.log_text())
            .into_iter()
            .filter(|r| {
                r.attrs.get("source.port").map(String::as_str) == Some("40003")
                    && r.attrs.get("network.namespace.inode") == Some(&inode)
            })
            .collect();
        let stable = !ours.is_empty() && ours.len() == seen;
        seen = ours.len();
        Ok(stable.then_some(ours))
    })?;
    let ours = records.len() as u64;
    eprintln!("{ours} records of the flow received");
    // The kernel's budget: 100 a second for the node plus one second of burst, over the
    // burst's few seconds.
    ensure!(
        ours <= 100 * 5 + 100,
        "{ours} records: more than the budget allows"
    );
    ensure!(
        ours <= sent,
        "{ours} records of the flow, {sent} events sent in all"
    );
    // The flow's drops not received were suppressed in the kernel.
    ensure!(
        suppressed >= SENT - ours,
        "{SENT} drops, {ours} records, but only {suppressed} suppressed"
    );
    for r in &records {
        assert_eq!(r.event, "retina.drop", "{r:#?}");
        assert_eq!(
            r.body, "NO_SOCKET udp 127.0.0.1:40003 > 127.0.0.1:9",
            "{r:#?}"
        );
        let want = [
            ("drop.reason", "NO_SOCKET"),
            ("network.transport", "udp"),
            ("network.type", "ipv4"),
            ("source.address", "127.0.0.1"),
            ("source.port", "40003"),
            ("destination.address", "127.0.0.1"),
            ("destination.port", "9"),
            ("k8s.pod.uid", pod.uid.as_str()),
            ("container.id", super::ID),
            // The pod's `lo` (its name needs the namespace opened: CAP_SYS_ADMIN, which the
            // unit does not have; the drop metrics go without it too).
            ("network.interface.index", "1"),
        ];
        for (k, v) in want {
            assert_eq!(r.attrs.get(k).map(String::as_str), Some(v), "{k} of {r:#?}");
        }
    }
    agent.stop_cleanly()?;
    Ok(())
}
