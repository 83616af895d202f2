//! Drops attributed to the workload of their namespace: pods made the way kubelet and the
//! container runtimes make them (a network namespace and a real process inside a real
//! cgroup named in their layout), a docker-style scope, and a plain systemd service.
//!
//! Each test creates its cgroups in the cgroup v2 hierarchy (`/sys/fs/cgroup` on a pure-v2
//! host, `/sys/fs/cgroup/unified` on a hybrid one) and removes them, with the process in
//! them, on drop, also when an assertion fails.

use std::time::Duration;

use anyhow::{Context, Result};
use retina_tests::{
    rotel::{Export, total},
    workload::Workload,
    *,
};

const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

/// 40 datagrams to a closed port inside `ns` under `retina-agent snapshot`; returns the
/// attributes of the namespace's NO_SOCKET series.
fn drop_attributes(ns: &NetNs) -> Result<serde_json::Value> {
    let inode = ns.inode()?.to_string();
    let doc = snapshot_json(&[
        "--",
        "ip",
        "netns",
        "exec",
        &ns.name,
        &traffic(),
        "udp",
        "127.0.0.1:9",
        "40",
        "32",
    ])?;
    let want = [
        ("drop.reason", "NO_SOCKET"),
        ("network.namespace.inode", inode.as_str()),
    ];
    let pts = points(&doc, "retina.drop.count", &want);
    anyhow::ensure!(pts.len() == 1, "one series expected: {doc:#}");
    anyhow::ensure!(pts[0]["value"] == 40, "40 drops expected: {:#}", pts[0]);
    Ok(pts[0]["attributes"].clone())
}

fn check(path: &str, pod: Option<&str>, container: Option<&str>, unit: Option<&str>) -> Result<()> {
    require_root();
    let ns = NetNs::new("rwl")?;
    let _w = Workload::start(&ns.name, path)?;
    let attrs = drop_attributes(&ns)?;
    let get = |k: &str| attrs[k].as_str().map(str::to_string);
    assert_eq!(get("k8s.pod.uid").as_deref(), pod, "{attrs:#}");
    assert_eq!(get("container.id").as_deref(), container, "{attrs:#}");
    assert_eq!(get("systemd.unit").as_deref(), unit, "{attrs:#}");
    // The namespace keeps its name beside the workload.
    assert_eq!(
        get("network.namespace.name").as_deref(),
        Some(ns.name.as_str())
    );
    Ok(())
}

fn uid() -> String {
    // A fresh pod uid per test, so that a leftover cgroup of an earlier run cannot match.
    let n = std::process::id();
    format!("0b1c2d3e-4f50-6172-8394-{n:012x}")
}

#[test]
fn kubelet_systemd_driver_pod() -> Result<()> {
    let uid = uid();
    let u = uid.replace('-', "_");
    let path = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
    );
    check(&path, Some(&uid), Some(ID), None)
}

#[test]
fn kubelet_cgroupfs_driver_pod() -> Result<()> {
    let uid = uid();
    let path = format!("kubepods/burstable/pod{uid}/{ID}");
    check(&path, Some(&uid), Some(ID), None)
}

#[test]
fn docker_scope() -> Result<()> {
    check(
        &format!("system.slice/docker-{ID}.scope"),
        None,
        Some(ID),
        None,
    )
}

#[test]
fn systemd_service() -> Result<()> {
    check(
        "system.slice/retina-test-dns.service",
        None,
        None,
        Some("retina-test-dns.service"),
    )
}

#[test]
fn a_cgroup_that_only_looks_like_a_container_gives_nothing() -> Result<()> {
    // 63 hex digits: not a container id.
    check(
        &format!("system.slice/docker-{}.scope", &ID[..63]),
        None,
        None,
        None,
    )
}

// ---- The pod side of a veth, at a real collector ----

/// A pod made the way kubelet and a CNI plugin make one: a named namespace, a veth whose
/// peer is moved into it (addresses, permanent neighbours, IPv6 off: no chatter), and a
/// process in the kubelet systemd-driver cgroup of the pod's container.
struct Pod {
    uid: String,
    // Dropped in this order: the process and its cgroups, then the namespace (which takes
    // the veth with it), then the veth guard (which finds it gone).
    workload: Option<Workload>,
    ns: Option<NetNs>,
    veth: Veth,
    peer_ip: String,
}

impl Pod {
    fn new(subnet: u8) -> Result<Pod> {
        let uid = uid();
        let u = uid.replace('-', "_");
        let ns = NetNs::new("rpv")?;
        let mut veth = Veth::new("rpv")?;
        let (_, peer_ip) = wire_host_to(&mut veth, &ns, subnet)?;
        let path = format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
        );
        let workload = Workload::start(&ns.name, &path)?;
        Ok(Pod {
            uid,
            workload: Some(workload),
            ns: Some(ns),
            veth,
            peer_ip,
        })
    }

    /// `n` datagrams from the host to a closed port of the pod: `n` packets out of the host
    /// veth, `n` NO_SOCKET drops inside the pod's namespace.
    fn send(&self, n: u32) -> Result<()> {
        run(
            &traffic(),
            ["udp", &format!("{}:9", self.peer_ip), &n.to_string(), "32"],
        )?;
        Ok(())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        drop(self.workload.take());
        drop(self.ns.take());
        // The kernel deletes the veth with the namespace asynchronously: give it a moment
        // so the veth guard does not race it.
        let dev = format!("/sys/class/net/{}", self.veth.host);
        for _ in 0..100 {
            if !std::path::Path::new(&dev).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A `sum by (k8s.pod.uid)` of one export: per metric, the total of the pod's points.
fn by_pod(points: &[rotel::DataPoint], uid: &str) -> std::collections::BTreeMap<String, f64> {
    let mut m = std::collections::BTreeMap::new();
    for p in points
        .iter()
        .filter(|p| p.attrs.get("k8s.pod.uid").map(String::as_str) == Some(uid))
    {
        *m.entry(p.metric.clone()).or_insert(0.0) += p.value;
    }
    m
}

#[test]
fn a_pods_host_veth_carries_the_pod_on_interface_driver_and_drop_series() -> Result<()> {
    require_root();
    let pod = Pod::new(77)?;
    let mut x = Export::start("podveth")?;
    pod.send(50)?;
    let (uid, host) = (pod.uid.clone(), pod.veth.host.clone());
    let on_veth = [
        ("network.interface.name", host.as_str()),
        ("k8s.pod.uid", uid.as_str()),
        ("container.id", ID),
    ];
    let tx: Vec<(&str, &str)> = on_veth
        .iter()
        .copied()
        .chain([("network.io.direction", "transmit")])
        .collect();
    let first = x.wait("the pod's veth and drops at the collector", |e| {
        total(e, "system.network.packet.count", &tx) >= 50.0
            && total(
                e,
                "retina.drop.count",
                &[("k8s.pod.uid", &uid), ("drop.reason", "NO_SOCKET")],
            ) >= 50.0
            && total(e, "retina.nic.info", &on_veth) > 0.0
    })?;
    // Every series of the pod is about one of the pair's two ends (never another interface),
    // and the host veth's series carry the pod on all three sources. The pod's own protocol
    // counters (per namespace, not per interface) are the one exception. The agent runs as
    // the unit: a series of the peer, inside the pod's namespace, names its interface by
    // index (its name would need CAP_SYS_ADMIN, which the unit does not have).
    let ns = pod.ns.as_ref().context("the pod's namespace")?;
    let (peer_index, pod_inode) = (
        ns.ifindex(&pod.veth.peer)?.to_string(),
        ns.inode()?.to_string(),
    );
    for p in first.iter().filter(|p| {
        p.attrs.get("k8s.pod.uid") == Some(&uid) && p.metric != "retina.workload.netstat.stat"
    }) {
        let name = p.attrs.get("network.interface.name").map(String::as_str);
        let peer_by_index = name.is_none()
            && p.attrs.get("network.interface.index") == Some(&peer_index)
            && p.attrs.get("network.namespace.inode") == Some(&pod_inode);
        assert!(
            name == Some(&host) || name == Some(&pod.veth.peer) || peer_by_index,
            "pod attributes on {p:?}"
        );
        assert_eq!(p.attrs.get("container.id").map(String::as_str), Some(ID));
    }
    // The ethtool collector's series of a veth: its info (the driver's statistics are
    // XDP and NAPI counters, zero here, so the default policy leaves them out).
    for metric in [
        "system.network.io",
        "system.network.packet.count",
        "retina.nic.info",
        "retina.drop.count",
    ] {
        assert!(
            first
                .iter()
                .any(|p| p.metric == metric && p.attrs.get("k8s.pod.uid") == Some(&uid)),
            "{metric} has no series of the pod"
        );
    }
    // The host's other interfaces carry no pod.
    assert!(
        first.iter().any(
            |p| p.attrs.get("network.interface.name").map(String::as_str) == Some("lo")
                && !p.attrs.contains_key("k8s.pod.uid")
        ),
        "lo must be exported without pod attributes"
    );
    // A rate by pod: 30 more datagrams move the pod's drop total by exactly 30 and its
    // host veth's transmitted packets by at least 30, in one `sum by (k8s.pod.uid)`.
    let before = by_pod(&first, &uid);
    pod.send(30)?;
    let drops0 = before["retina.drop.count"];
    let after = x.wait("30 more drops of the pod", |e| {
        by_pod(e, &uid).get("retina.drop.count").copied() == Some(drops0 + 30.0)
    })?;
    let after_tx = total(&after, "system.network.packet.count", &tx);
    assert!(
        after_tx >= total(&first, "system.network.packet.count", &tx) + 30.0,
        "the host veth's transmit count did not follow: {after_tx}"
    );
    let after = by_pod(&after, &uid);
    assert_eq!(after["retina.drop.count"] - drops0, 30.0);
    assert!(after["system.network.packet.count"] - before["system.network.packet.count"] >= 30.0);
    Ok(())
}

#[test]
fn a_workload_that_has_gone_leaves_the_export_within_two_intervals() -> Result<()> {
    require_root();
    let mut pod = Pod::new(78)?;
    let inode = pod
        .ns
        .as_ref()
        .map(NetNs::inode)
        .transpose()?
        .unwrap_or(0)
        .to_string();
    let mut x = Export::start("podgone")?;
    pod.send(20)?;
    let uid = pod.uid.clone();
    x.wait("the pod's series at the collector", |e| {
        total(e, "retina.drop.count", &[("k8s.pod.uid", &uid)]) >= 20.0
            && total(
                e,
                "system.network.packet.count",
                &[("k8s.pod.uid", &uid), ("network.io.direction", "transmit")],
            ) >= 20.0
    })?;
    // The pod goes: its process exits, its cgroups and namespace are deleted; the
    // namespace takes the veth with it once nothing holds it.
    drop(pod.workload.take());
    drop(pod.ns.take());
    let host = pod.veth.host.clone();
    rotel::wait_for("the pod's veth to vanish", rotel::PATIENCE, || {
        Ok((!std::path::Path::new(&format!("/sys/class/net/{host}")).exists()).then_some(()))
    })?;
    let before = x.exports()?.len();
    let exports = rotel::wait_for("five exports after the deletion", rotel::PATIENCE, || {
        let e = x.exports()?;
        Ok((e.len() >= before + 5).then_some(e))
    })?;
    let mentions = |e: &[rotel::DataPoint]| {
        e.iter().any(|p| {
            p.attrs.get("k8s.pod.uid") == Some(&uid)
                || p.attrs.get("network.namespace.inode") == Some(&inode)
                || p.attrs.get("network.interface.name") == Some(&host)
        })
    };
    let still: Vec<usize> = exports[before..]
        .iter()
        .enumerate()
        .filter(|(_, e)| mentions(e))
        .map(|(i, _)| i + 1)
        .collect();
    eprintln!("exports after the pod's veth vanished still naming the pod: {still:?}");
    assert!(
        still.iter().all(|&i| i <= 2),
        "the gone pod is still exported in exports {still:?} after its deletion"
    );
    // The agent itself carries on.
    assert!(
        exports[before..].iter().all(|e| e.iter().any(|p| p
            .attrs
            .get("network.interface.name")
            .map(String::as_str)
            == Some("lo"))),
        "the other interfaces must stay"
    );
    Ok(())
}
