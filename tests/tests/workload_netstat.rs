//! Per-workload protocol counters (`retina.workload.netstat.stat`, issue 23 item 1) against
//! the namespaces' own `/proc/net/snmp` and `/proc/net/netstat`, with the agent run as the
//! packaged unit runs it (uid 65534, only CAP_BPF + CAP_PERFMON). `/proc/PID/net` needs no
//! ptrace access, so the host's `/proc` is enough; under `ProtectProc=invisible` another
//! user's `/proc/PID` does not exist for the agent, and the agent must say so.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, ensure};
use retina_tests::{
    nstcp::{connect_from, counter},
    rotel::{DataPoint, rotel_exports, start_agent, start_rotel, wait_for},
    unit::{Proc, snapshot_as_unit},
    workload::Workload,
    *,
};
use serde_json::Value;

const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
const STAT: &str = "retina.workload.netstat.stat";

/// A pod uid unique to this test run and `case`.
fn uid(case: u16) -> String {
    format!("7c0a2b3c-4d5e-{case:04x}-8394-{:012x}", std::process::id())
}

/// kubelet's systemd-driver layout for pod `uid` and one containerd container.
fn pod_path(uid: &str) -> String {
    let u = uid.replace('-', "_");
    format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
    )
}

/// A pod-like namespace: a process in it, in a kubelet-style cgroup. Dropped process
/// first, then the namespace.
struct Pod {
    uid: String,
    w: Option<Workload>,
    ns: NetNs,
}

impl Pod {
    fn new(case: u16) -> Result<Pod> {
        let uid = uid(case);
        let ns = NetNs::new("rwn")?;
        let w = Workload::start(&ns.name, &pod_path(&uid))?;
        Ok(Pod {
            uid,
            w: Some(w),
            ns,
        })
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.w.take();
    }
}

/// The value of the pod's `group:field` in a snapshot document.
fn pod_value(doc: &Value, pod: &Pod, group: &str, field: &str) -> Option<u64> {
    let pts = points(
        doc,
        STAT,
        &[
            ("k8s.pod.uid", &pod.uid),
            ("netstat.group", group),
            ("netstat.field", field),
        ],
    );
    assert!(pts.len() <= 1, "two series for one field: {pts:#?}");
    pts.first().and_then(|p| p["value"].as_u64())
}

#[test]
fn failed_connects_of_a_pod_equal_its_namespaces_own_count() -> Result<()> {
    require_root();
    let pod = Pod::new(1)?;
    let before = counter(Some(&pod.ns), "Tcp", "AttemptFails")?;
    let host_before = counter(None, "Tcp", "AttemptFails")?;
    let (doc, stderr) = snapshot_as_unit(Proc::Host, || {
        // Nothing listens in a fresh namespace: each SYN is answered with a RST.
        let out = connect_from(&pod.ns, "127.0.0.1:9".parse()?, 20, Duration::from_secs(5))?;
        ensure!(out.refused == 20, "20 refused connects expected: {out:?}");
        Ok(())
    })?;
    let after = counter(Some(&pod.ns), "Tcp", "AttemptFails")?;
    let host_after = counter(None, "Tcp", "AttemptFails")?;
    assert_eq!(after - before, 20, "the namespace's own count");
    let agent = pod_value(&doc, &pod, "Tcp", "AttemptFails")
        .with_context(|| format!("no Tcp:AttemptFails of the pod: {stderr}"))?;
    assert_eq!(agent, after, "the agent's count is the namespace's");
    // The workload's attributes, as the drop metrics carry them.
    let p = points(&doc, STAT, &[("k8s.pod.uid", &pod.uid)]);
    assert_eq!(p.len(), 17, "the default field set: {p:#?}");
    for p in &p {
        assert_eq!(attr_str(p, "container.id").as_deref(), Some(ID), "{p:#}");
        assert_eq!(
            p["attributes"]["network.namespace.inode"].as_u64(),
            Some(pod.ns.inode()?)
        );
    }
    // The host's series did not move, and the host namespace has no workload series.
    assert_eq!(host_after, host_before, "the host's own AttemptFails moved");
    let host = points(
        &doc,
        "retina.netstat.stat",
        &[("netstat.group", "Tcp"), ("netstat.field", "AttemptFails")],
    );
    ensure!(host.len() == 1, "one host series expected: {host:#?}");
    assert_eq!(host[0]["value"].as_u64(), Some(host_after));
    let host_inode =
        std::fs::metadata("/proc/self/ns/net").map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    let all = points(&doc, STAT, &[]);
    assert!(
        all.iter()
            .all(|p| p["attributes"]["network.namespace.inode"].as_u64() != Some(host_inode)),
        "a workload series of the host's namespace"
    );
    Ok(())
}

/// An nftables table in the host's namespace, deleted on drop.
struct NftTable(String);

impl Drop for NftTable {
    fn drop(&mut self) {
        if let Err(e) = run("nft", ["delete", "table", "inet", &self.0]) {
            eprintln!("cleanup: {e}");
        }
    }
}

#[test]
fn syn_retransmits_of_a_pod_equal_its_namespaces_own_count() -> Result<()> {
    require_root();
    const ATTEMPTS: u64 = 5;
    let pod = Pod::new(2)?;
    let mut veth = Veth::new("rwn")?;
    let (host_ip, _) = wire_host_to(&mut veth, &pod.ns, 83)?;
    // The peer (the host end) listens, but its SYN-ACKs towards the pod are dropped: the
    // pod retransmits its SYNs (the first after 1 s) until it gives up after 2.5 s.
    let listener = std::net::TcpListener::bind((host_ip.as_str(), 0))?;
    let port = listener.local_addr()?.port();
    let table = NftTable(unique_name("rwn"));
    run("nft", ["add", "table", "inet", &table.0])?;
    run(
        "nft",
        [format!(
            "add chain inet {} out {{ type filter hook output priority 0 ; }}",
            table.0
        )],
    )?;
    run(
        "nft",
        [format!(
            "add rule inet {} out oifname {} tcp flags & (syn | ack) == (syn | ack) drop",
            table.0, veth.host
        )],
    )?;
    let before = counter(Some(&pod.ns), "TcpExt", "TCPSynRetrans")?;
    let (doc, stderr) = snapshot_as_unit(Proc::Host, || {
        let addr: SocketAddr = format!("{host_ip}:{port}").parse()?;
        let out = connect_from(&pod.ns, addr, ATTEMPTS, Duration::from_millis(2500))?;
        ensure!(
            out.timed_out == ATTEMPTS,
            "every connect must time out: {out:?}"
        );
        Ok(())
    })?;
    let after = counter(Some(&pod.ns), "TcpExt", "TCPSynRetrans")?;
    let agent = pod_value(&doc, &pod, "TcpExt", "TCPSynRetrans")
        .with_context(|| format!("no TcpExt:TCPSynRetrans of the pod: {stderr}"))?;
    assert_eq!(agent, after, "the agent's count is the namespace's");
    assert!(
        after - before >= ATTEMPTS,
        "at least one SYN retransmit per attempt: {before} -> {after}"
    );
    drop(listener);
    Ok(())
}

#[test]
fn protect_proc_invisible_hides_other_users_namespaces_and_the_agent_says_so() -> Result<()> {
    require_root();
    let pod = Pod::new(3)?;
    let (doc, stderr) = snapshot_as_unit(Proc::Invisible, || {
        connect_from(&pod.ns, "127.0.0.1:9".parse()?, 3, Duration::from_secs(5))?;
        Ok(())
    })?;
    // Its process runs as root: under hidepid=invisible its /proc/PID is not there.
    assert!(
        points(&doc, STAT, &[("k8s.pod.uid", &pod.uid)]).is_empty(),
        "series of a namespace the agent cannot see"
    );
    assert!(
        stderr.contains("protocol counters cannot be read")
            && stderr.contains("ProtectProc=invisible"),
        "the agent did not say why: {stderr}"
    );
    Ok(())
}

/// Pods whose series appear in `export`.
fn pods_in(export: &[DataPoint], uids: &[String]) -> usize {
    uids.iter()
        .filter(|u| {
            export
                .iter()
                .any(|p| p.metric == STAT && p.attrs.get("k8s.pod.uid") == Some(u))
        })
        .count()
}

#[test]
fn churned_namespaces_leave_the_export_within_two_intervals_and_rss_stays_flat() -> Result<()> {
    require_root();
    const PODS: u16 = 50;
    const ROUNDS: u16 = 3;
    let dir = TempDir::shared("rwnc")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut rotel = start_rotel(&dir, grpc, http, "rotel")?;
    let mut agent = start_agent(
        &dir,
        "agent",
        grpc,
        &[(
            "RUST_LOG",
            "info,retina_agent::collectors::netstat::workloads=debug".into(),
        )],
    )?;
    let mut rss = Vec::new();
    for round in 0..ROUNDS {
        let pods: Vec<Pod> = (0..PODS)
            .map(|i| Pod::new(0x100 * (round + 1) + i))
            .collect::<Result<_>>()?;
        // A counter that moves, so that every pod has exported series under the default
        // series policy (counters at zero since they appeared are left out).
        // From inside each pod's cgroup, as the pod's own process: a namespace whose
        // processes are in different cgroups names no workload, so a sender from the
        // test's cgroup would hide the pod from a process walk that saw it.
        let root = retina_tests::workload::cgroup_v2_root()?;
        // By its path: a busybox `sh` (the guests') runs its own `ip` applet, which knows
        // no netns.
        let ip = which("ip").ok_or_else(|| anyhow::anyhow!("no ip on PATH"))?;
        for p in &pods {
            let procs = root.join(pod_path(&p.uid)).join("cgroup.procs");
            run(
                "sh",
                [
                    "-c".to_string(),
                    format!(
                        "echo $$ > {} && exec {ip} netns exec {} {} udp 127.0.0.1:9 1 8",
                        procs.display(),
                        p.ns.name,
                        traffic(),
                        ip = ip.display()
                    ),
                ],
            )?;
        }
        let uids: Vec<String> = pods.iter().map(|p| p.uid.clone()).collect();
        // A new namespace is found by the next process walk (every 10 s) and read within
        // the collector's CPU budget, new ones first, then the least recently read: on a
        // slow machine (a QEMU guest) a cycle reads one or two, so a pod read before its
        // sender ran is read again within about 50 intervals.
        let all_seen = wait_for(
            "every pod's series in one export",
            Duration::from_secs(180),
            || {
                rotel.ensure_alive()?;
                agent.ensure_alive()?;
                let exports = rotel_exports(&rotel.log_text());
                Ok(exports
                    .last()
                    .filter(|e| pods_in(e, &uids) == PODS as usize)
                    .map(|_| ()))
            },
        );
        if let Err(e) = all_seen {
            // What the exports held, and what the collector did, for the failure's report.
            let exports = rotel_exports(&rotel.log_text());
            let seen: Vec<usize> = exports.iter().map(|e| pods_in(e, &uids)).collect();
            let last: Vec<String> = exports
                .last()
                .map(|e| {
                    e.iter()
                        .filter(|p| {
                            p.metric == STAT || p.attrs.contains_key("otel.metric.overflow")
                        })
                        .map(|p| format!("{} {:?} {}", p.metric, p.attrs, p.value))
                        .collect()
                })
                .unwrap_or_default();
            let log = agent.log_text();
            let notable: Vec<&str> = log
                .lines()
                .filter(|l| {
                    !l.contains("DEBUG") || l.contains("rescanned") || l.contains("new namespace")
                })
                .collect();
            anyhow::bail!(
                "round {round}: {e:#}\nour uids: {uids:?}\npods per export: {seen:?}\nlast export's {STAT} points ({}):\n{}\nagent log (info and up, rescans):\n{}",
                last.len(),
                last.join("\n"),
                notable.join("\n")
            );
        }
        // In reverse creation order: the first pod made the shared parent cgroups.
        let mut pods = pods;
        while let Some(p) = pods.pop() {
            drop(p);
        }
        // Exports logged from now on: the first may have been collected before the pods
        // went; the second was collected at least one interval after, and must not have
        // any of them.
        let seen = rotel_exports(&rotel.log_text()).len();
        let exports = wait_for("three more exports", Duration::from_secs(60), || {
            agent.ensure_alive()?;
            let e = rotel_exports(&rotel.log_text());
            Ok((e.len() >= seen + 3).then_some(e))
        })?;
        for (i, e) in exports[seen + 1..].iter().enumerate() {
            assert_eq!(
                pods_in(e, &uids),
                0,
                "round {round}: export {} after the pods went still has some",
                i + 2
            );
        }
        rss.push(agent.rss_kib()?);
    }
    // After the second round every buffer and table has had its size; the third adds
    // nothing that stays. (Three rounds: the test runs in the QEMU guests too, where each
    // round of 50 namespaces takes about two minutes.)
    let (warm, last) = (rss[1], rss[ROUNDS as usize - 1]);
    eprintln!("agent RSS per round (KiB): {rss:?}");
    assert!(
        last <= warm + 1024,
        "RSS grew from {warm} KiB to {last} KiB over {} rounds of {PODS} namespaces",
        ROUNDS - 2
    );
    let log = agent.log_text();
    assert!(!log.contains("panicked"), "{log}");
    Ok(())
}
