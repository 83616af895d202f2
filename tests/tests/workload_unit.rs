//! Pod, container and unit attribution as the packaged unit runs the agent (issue 26, item
//! 1): uid 65534 with only the unit's capabilities (CAP_BPF, CAP_PERFMON), once with the
//! host's `/proc` and once with `ProtectProc=invisible` (a private `/proc` mounted
//! `hidepid=invisible`, as systemd does for the service). Neither lets the agent read
//! another user's `/proc/PID/ns/net`; the agent learns each process's namespace and cgroup
//! from a BPF task iterator instead.
//!
//! One snapshot per test covers every layout of `workload.rs` (which runs the agent as
//! root): kubelet's two cgroup drivers, a docker scope, a systemd service, a look-alike
//! that must give nothing, and a pod whose host veth must carry the pod.

use anyhow::{Result, ensure};
use retina_tests::{
    unit::{self, Proc, snapshot_as_unit},
    workload::Workload,
    *,
};

const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
const DROPS: u64 = 40;

/// A fresh pod uid per test and case, so that a leftover cgroup of an earlier run cannot
/// match.
fn uid(case: u8) -> String {
    format!("0b1c2d3e-4f50-{case:04x}-8394-{:012x}", std::process::id())
}

/// A namespace with a process in a cgroup of one layout, and what it must be attributed to.
struct Case {
    // Dropped first: the process and its cgroups, then the namespace.
    _w: Workload,
    ns: NetNs,
    pod: Option<String>,
    container: Option<&'static str>,
    unit: Option<&'static str>,
}

fn case(
    path: &str,
    pod: Option<String>,
    container: Option<&'static str>,
    unit: Option<&'static str>,
) -> Result<Case> {
    let ns = NetNs::new("rwu")?;
    let w = Workload::start(&ns.name, path)?;
    Ok(Case {
        _w: w,
        ns,
        pod,
        container,
        unit,
    })
}

fn cases(tag: u8) -> Result<Vec<Case>> {
    let (a, b) = (uid(tag), uid(tag + 1));
    let a_ = a.replace('-', "_");
    Ok(vec![
        case(
            &format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{a_}.slice/cri-containerd-{ID}.scope"
            ),
            Some(a),
            Some(ID),
            None,
        )?,
        case(
            &format!("kubepods/burstable/pod{b}/{ID}"),
            Some(b),
            Some(ID),
            None,
        )?,
        case(
            &format!("system.slice/docker-{ID}.scope"),
            None,
            Some(ID),
            None,
        )?,
        case(
            "system.slice/retina-test-unit.service",
            None,
            None,
            Some("retina-test-unit.service"),
        )?,
        // 63 hex digits: not a container id, so nothing.
        case(
            &format!("system.slice/docker-{}.scope", &ID[..63]),
            None,
            None,
            None,
        )?,
    ])
}

/// A pod with a veth, as kubelet and a CNI plugin make one (see `workload.rs`).
struct Pod {
    uid: String,
    _w: Workload,
    ns: NetNs,
    veth: Veth,
    peer_ip: String,
}

impl Pod {
    fn new(tag: u8, subnet: u8) -> Result<Pod> {
        let uid = uid(tag);
        let u = uid.replace('-', "_");
        let ns = NetNs::new("rwv")?;
        let mut veth = Veth::new("rwv")?;
        let (_, peer_ip) = wire_host_to(&mut veth, &ns, subnet)?;
        let w = Workload::start(
            &ns.name,
            &format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
            ),
        )?;
        Ok(Pod {
            uid,
            _w: w,
            ns,
            veth,
            peer_ip,
        })
    }
}

/// Sends [`DROPS`] datagrams to a closed port in each case's namespace and from the host to
/// the pod, and waits until the kernel has counted them.
fn traffic_for(cases: &[Case], pod: &Pod) -> Result<()> {
    for c in cases {
        let before = poll::udp_no_ports(&c.ns)?;
        c.ns.exec(
            &traffic(),
            &["udp", "127.0.0.1:9", &DROPS.to_string(), "32"],
        )?;
        poll::udp_no_ports_reach(&c.ns, before + DROPS)?;
    }
    let before = poll::udp_no_ports(&pod.ns)?;
    run(
        &traffic(),
        [
            "udp",
            &format!("{}:9", pod.peer_ip),
            &DROPS.to_string(),
            "32",
        ],
    )?;
    poll::udp_no_ports_reach(&pod.ns, before + DROPS)?;
    Ok(())
}

fn attr(p: &serde_json::Value, key: &str) -> Option<String> {
    p["attributes"][key].as_str().map(str::to_string)
}

fn attribution_as_the_unit(proc: Proc, tag: u8, subnet: u8) -> Result<()> {
    require_root();
    let cases = cases(tag)?;
    let pod = Pod::new(tag + 2, subnet)?;
    let (doc, stderr) = snapshot_as_unit(proc, || traffic_for(&cases, &pod))?;
    for c in &cases {
        let inode = c.ns.inode()?.to_string();
        let pts = points(
            &doc,
            "retina.drop.count",
            &[
                ("drop.reason", "NO_SOCKET"),
                ("network.namespace.inode", &inode),
            ],
        );
        ensure!(
            pts.len() == 1,
            "one NO_SOCKET series in {inode} expected: {doc:#}"
        );
        let p = pts[0];
        ensure!(
            p["value"].as_u64() >= Some(DROPS),
            "{DROPS} drops expected: {p:#}"
        );
        assert_eq!(attr(p, "k8s.pod.uid"), c.pod, "{p:#}\nstderr: {stderr}");
        assert_eq!(attr(p, "container.id").as_deref(), c.container, "{p:#}");
        assert_eq!(attr(p, "systemd.unit").as_deref(), c.unit, "{p:#}");
    }
    // The pod's drops carry it, and so does every series of its host veth.
    let inode = pod.ns.inode()?.to_string();
    let drops = points(
        &doc,
        "retina.drop.count",
        &[
            ("drop.reason", "NO_SOCKET"),
            ("network.namespace.inode", &inode),
        ],
    );
    ensure!(drops.len() == 1, "the pod's drops: {doc:#}");
    assert_eq!(
        attr(drops[0], "k8s.pod.uid").as_deref(),
        Some(pod.uid.as_str())
    );
    let on_veth = points(
        &doc,
        "system.network.packet.count",
        &[("network.interface.name", &pod.veth.host)],
    );
    ensure!(
        !on_veth.is_empty(),
        "no packet series of {}: {doc:#}",
        pod.veth.host
    );
    for p in on_veth {
        assert_eq!(
            attr(p, "k8s.pod.uid").as_deref(),
            Some(pod.uid.as_str()),
            "the pod's host veth lost the pod: {p:#}\nstderr: {stderr}"
        );
        assert_eq!(attr(p, "container.id").as_deref(), Some(ID), "{p:#}");
    }
    // Nothing was degraded, so nothing was said about it.
    assert!(
        !stderr.contains("task iterator") && !stderr.contains("ns/net"),
        "the agent reported a degraded attribution: {stderr}"
    );
    Ok(())
}

#[test]
fn pods_containers_and_units_are_attributed_as_the_unit_runs_the_agent() -> Result<()> {
    attribution_as_the_unit(Proc::Host, 0x10, 81)
}

#[test]
fn attribution_holds_with_protect_proc_invisible() -> Result<()> {
    attribution_as_the_unit(Proc::Invisible, 0x20, 82)
}

#[test]
fn check_as_the_unit_passes_the_workloads_line() -> Result<()> {
    require_root();
    // A namespace with a process of its own, so the walk has something to count.
    let c = case("system.slice/retina-test-check.service", None, None, None)?;
    let args = unit::setpriv_args(&unit::unit_capabilities());
    let dir = TempDir::shared("rwuc")?;
    let config = unit::packaged_config(&dir)?;
    let out = std::process::Command::new(&args[0])
        .args(&args[1..])
        .arg(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["check", "--format", "json"])
        .stdin(std::process::Stdio::null())
        .output()?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let line = doc["checks"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == "workloads"))
        .cloned()
        .unwrap_or_else(|| panic!("no workloads check: {doc:#}"));
    assert_eq!(line["status"], "PASS", "{line:#}");
    let detail = line["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("BPF task iterator"), "{detail}");
    // At least the host's namespace and the test's.
    let namespaces: u64 = detail
        .split(" processes in ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no namespace count in {detail}"));
    assert!(namespaces >= 2, "{detail}");
    drop(c);
    Ok(())
}
