//! Drops attributed to the workload of their namespace: pods made the way kubelet and the
//! container runtimes make them (a network namespace and a real process inside a real
//! cgroup named in their layout), a docker-style scope, and a plain systemd service.
//!
//! Each test creates its cgroups in the cgroup v2 hierarchy (`/sys/fs/cgroup` on a pure-v2
//! host, `/sys/fs/cgroup/unified` on a hybrid one) and removes them, with the process in
//! them, on drop, also when an assertion fails.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use retina_tests::*;

const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

/// The cgroup v2 mount point.
fn v2_root() -> Result<PathBuf> {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if std::path::Path::new(root).join("cgroup.procs").exists()
            && std::fs::read_to_string("/proc/mounts")?
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(root) && l.contains("cgroup2"))
        {
            return Ok(PathBuf::from(root));
        }
    }
    bail!("no cgroup v2 hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}

/// A `sleep` inside namespace `ns`, moved into the cgroup `path` (created, with every
/// missing parent); killed and the cgroups removed on drop.
struct Workload {
    child: Child,
    created: Vec<PathBuf>,
}

impl Workload {
    fn start(ns: &NetNs, path: &str) -> Result<Workload> {
        let root = v2_root()?;
        let mut w = Workload {
            child: Command::new("ip")
                .args(["netns", "exec", &ns.name, "sleep", "300"])
                .stdin(Stdio::null())
                .spawn()
                .context("starting sleep in the namespace")?,
            created: Vec::new(),
        };
        let mut dir = root;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            dir.push(c);
            if !dir.exists() {
                std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                w.created.push(dir.clone());
            }
        }
        let pid = w.child.id();
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", dir.display()))?;
        // `ip netns exec` has become `sleep` in that namespace once its ns/net differs.
        let host = std::fs::read_link("/proc/self/ns/net")?;
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/net"))? == host {
            if Instant::now() > end {
                bail!("process {pid} never entered {}", ns.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        anyhow::ensure!(cg.contains(path), "process {pid} is not in {path}: {cg}");
        Ok(w)
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in self.created.iter().rev() {
            let mut removed = false;
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() {
                    removed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !removed {
                eprintln!("cleanup: could not remove {}", dir.display());
            }
        }
    }
}

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
    let _w = Workload::start(&ns, path)?;
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
