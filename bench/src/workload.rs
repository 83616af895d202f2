//! Section 9: the workload mapping (issue 12) at scale: `--pods` pods made like kubelet and
//! a CNI plugin make them (a named namespace, a veth whose peer is in it, a process in a
//! kubelet systemd-driver cgroup with its own pod uid and container id), then
//!
//! * the cost of one `/proc` scan (`Workloads::scan`, what the drop collector runs when a
//!   namespace it does not know appears) and of one veth-peer resolution
//!   (`PeerOwners::resolve`: the scan, one `RTM_GETNSID` per namespace, the link table
//!   updated), CPU and wall;
//! * the steady per-cycle check (`PeerOwners::update` with nothing to do): CPU and
//!   allocations;
//! * the socket owners' cgroup walk (`SocketOwners::resolve` of an id that is nowhere, so
//!   the whole tree is walked: what a cycle with a new socket cgroup costs at most) and the
//!   per-cycle check of 256 owners (`SocketOwners::check`: a read of the inotify
//!   descriptor watching their `cgroup.events`; none has emptied): CPU, and allocations of
//!   the check;
//! * the series per workload: netdev, ethtool and drop collectors (one NO_SOCKET drop on
//!   each pod's loopback) visited, points counted per `k8s.pod.uid`.
//!
//! Everything is removed on drop (processes killed, cgroups, namespaces and veths deleted).

use std::{
    collections::BTreeMap,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use retina_agent::{
    collectors::{
        Collector,
        ethtool::{EthtoolCollector, EthtoolConfig},
        netdev::{NetdevCollector, NetdevConfig},
    },
    kernel::links::Links,
    model::{Metric, Number},
    workload::{Workloads, peers::PeerOwners, sockets::SocketOwners},
};
use retina_tests::workload::Workload;
use serde_json::{Value, json};

use super::{net::batch, sys};

/// The bench's pods; all removed on drop.
pub struct Pods {
    pub names: Vec<String>,
    pub veths: Vec<String>,
    pub uids: Vec<String>,
    /// Each pod's container cgroup (below the cgroup v2 root).
    pub cgroups: Vec<String>,
    /// In creation order (the first made the shared parent cgroups): dropped in reverse.
    workloads: Vec<Workload>,
}

impl Pods {
    pub fn new(count: usize) -> Result<Pods> {
        let tag = std::process::id() % 10_000;
        let mut pods = Pods {
            names: (0..count).map(|i| format!("rwb{tag}n{i}")).collect(),
            veths: (0..count).map(|i| format!("rwb{tag}v{i}")).collect(),
            uids: (0..count)
                .map(|i| format!("{:08x}-0000-4000-8000-{i:012x}", std::process::id()))
                .collect(),
            cgroups: Vec::new(),
            workloads: Vec::new(),
        };
        let mut lines: Vec<String> = pods
            .names
            .iter()
            .map(|n| format!("netns add {n}"))
            .collect();
        for (v, n) in pods.veths.iter().zip(&pods.names) {
            lines.push(format!("link add {v} type veth peer name {v}p netns {n}"));
            lines.push(format!("link set {v} up"));
        }
        batch("ip", None, &lines, false)?;
        for (i, name) in pods.names.iter().enumerate() {
            let uid_ = pods.uids[i].replace('-', "_");
            let id = format!("{:056x}{i:08x}", std::process::id());
            let path = format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope"
            );
            pods.workloads.push(Workload::start(name, &path)?);
            pods.cgroups.push(path);
        }
        Ok(pods)
    }

    /// Each pod's process.
    pub fn pids(&self) -> Vec<u32> {
        self.workloads.iter().map(Workload::pid).collect()
    }

    /// One datagram to a closed port on each pod's loopback (brought up): one NO_SOCKET
    /// drop key per namespace.
    pub fn drop_one_each(&self) -> Result<()> {
        for name in &self.names {
            let path = format!("/run/netns/{name}");
            let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
            std::thread::scope(|s| {
                s.spawn(|| -> Result<()> {
                    // SAFETY: setns on this (scoped, short-lived) thread only.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        bail!("setns {path}: {}", std::io::Error::last_os_error());
                    }
                    lo_up()?;
                    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
                    sock.send_to(&[0u8; 32], "127.0.0.1:9")?;
                    Ok(())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
            })?;
        }
        Ok(())
    }
}

/// `ip link set lo up` in the calling thread's namespace.
fn lo_up() -> Result<()> {
    // SAFETY: plain socket and ioctl calls on a zeroed ifreq we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[..2].copy_from_slice(&[b'l' as libc::c_char, b'o' as libc::c_char]);
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        ensure!(rc == 0, "bringing lo up: {err}");
    }
    Ok(())
}

impl Drop for Pods {
    fn drop(&mut self) {
        while let Some(workload) = self.workloads.pop() {
            drop(workload);
        }
        let lines: Vec<String> = self
            .names
            .iter()
            .map(|n| format!("netns del {n}"))
            .collect();
        if let Err(e) = batch("ip", None, &lines, true) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

pub struct WorkloadReport {
    pub pods: usize,
    pub host_links_with_peer: usize,
    pub namespaces_scanned: usize,
    pub scan_cpu_us: sys::Summary,
    pub scan_wall_us: sys::Summary,
    pub resolve_cpu_us: sys::Summary,
    pub resolve_wall_us: sys::Summary,
    pub update_cpu_ns: f64,
    pub update_allocs_per_call: f64,
    pub owners_walk_cpu_us: sys::Summary,
    pub owners_walk_wall_us: sys::Summary,
    pub owners_check_cpu_us: f64,
    pub owners_check_allocs: f64,
    /// Pods whose container cgroup the walk found, of the pods.
    pub owners_found: usize,
    /// Pods whose host veth got their uid.
    pub pods_resolved: usize,
    /// Points per pod uid: min, median, max, and by metric for the first pod.
    pub series_per_pod: sys::Summary,
    pub first_pod_by_metric: BTreeMap<String, usize>,
    /// Socket cgroup ids that are nowhere, per cycle: walked for, or remembered.
    pub removed: super::removed_owners::RemovedReport,
    pub json: Value,
}

fn time<T>(f: impl FnOnce() -> T) -> (u64, u64, T) {
    let (c0, w0) = (sys::thread_cpu_ns(), Instant::now());
    let out = f();
    (
        sys::thread_cpu_ns() - c0,
        w0.elapsed().as_nanos() as u64,
        out,
    )
}

pub fn run(count: usize, runs: usize) -> Result<WorkloadReport> {
    let pods = Pods::new(count)?;
    let host = retina_agent::kernel::netns::current_netns_inode()?;
    let mut links = Links::new()?;
    links.refresh()?;
    let host_links_with_peer = links.iter().filter(|l| l.link_netnsid.is_some()).count();

    // The /proc scan alone.
    let mut w = Workloads::new(host);
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        sys::check_stop()?;
        let (c, t, ()) = time(|| w.scan());
        cpu.push(c);
        wall.push(t);
    }
    let namespaces_scanned = w.namespaces().count();
    let scan_cpu_us = sys::Summary::of(&cpu).scaled(1e-3);
    let scan_wall_us = sys::Summary::of(&wall).scaled(1e-3);

    // The full resolution (the first also gives every veth its pod).
    let mut peers = PeerOwners::new(host)?;
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        sys::check_stop()?;
        let (c, t, ()) = time(|| peers.resolve(&mut links));
        cpu.push(c);
        wall.push(t);
    }
    let resolve_cpu_us = sys::Summary::of(&cpu).scaled(1e-3);
    let resolve_wall_us = sys::Summary::of(&wall).scaled(1e-3);
    let by_name: BTreeMap<&str, Option<String>> = links
        .iter()
        .map(|l| {
            (
                &*l.name,
                l.workload
                    .as_ref()
                    .and_then(|w| w.pod_uid.as_deref().map(str::to_string)),
            )
        })
        .collect();
    let pods_resolved = pods
        .veths
        .iter()
        .zip(&pods.uids)
        .filter(|(v, u)| by_name.get(v.as_str()).cloned().flatten().as_deref() == Some(u.as_str()))
        .count();

    // The steady check, as each cycle runs it.
    const CALLS: usize = 10_000;
    let runs_before = peers.runs();
    let (c, _, (allocs, ())) = time(|| {
        retina_tests::alloc::count(|| {
            for _ in 0..CALLS {
                peers.update(&mut links);
            }
        })
    });
    ensure!(
        peers.runs() == runs_before,
        "a resolution ran during the steady measurement"
    );
    let update_cpu_ns = c as f64 / CALLS as f64;
    let update_allocs_per_call = allocs as f64 / CALLS as f64;

    // Socket owners: a full walk (an id that is nowhere) and the per-cycle check.
    let root = retina_tests::workload::cgroup_v2_root()?;
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        sys::check_stop()?;
        let mut owners = SocketOwners::with_root(Some(root.clone()));
        let (c, t, ()) = time(|| owners.resolve([u64::MAX]));
        cpu.push(c);
        wall.push(t);
    }
    let owners_walk_cpu_us = sys::Summary::of(&cpu).scaled(1e-3);
    let owners_walk_wall_us = sys::Summary::of(&wall).scaled(1e-3);
    let ids: Vec<u64> = pods
        .cgroups
        .iter()
        .map(|p| std::fs::metadata(root.join(p)).map(|m| std::os::unix::fs::MetadataExt::ino(&m)))
        .collect::<std::io::Result<_>>()?;
    let mut owners = SocketOwners::with_root(Some(root.clone()));
    owners.resolve(ids.iter().copied());
    let owners_found = ids.iter().filter(|id| owners.get(**id).is_some()).count();
    const CHECKS: usize = 200;
    let (c, _, (allocs, gone)) =
        time(|| retina_tests::alloc::count(|| (0..CHECKS).filter(|_| owners.check()).count()));
    ensure!(
        gone == 0,
        "a pod's cgroup went during the check measurement"
    );
    let owners_check_cpu_us = c as f64 / CHECKS as f64 / 1e3;
    let owners_check_allocs = allocs as f64 / CHECKS as f64;
    let removed = super::removed_owners::run(runs)?;

    // Series per workload: one drop per pod, then the interface, driver and drop
    // collectors over the resolved link table.
    let mut collectors: Vec<Box<dyn Collector>> = vec![
        Box::new(NetdevCollector::new(&NetdevConfig::default())),
        Box::new(EthtoolCollector::new(&EthtoolConfig::default())?),
        Box::new(super::cycle::drop_collector()?),
    ];
    pods.drop_one_each()?;
    for _ in 0..3 {
        links.refresh()?;
        peers.update(&mut links);
        for c in &mut collectors {
            c.collect(&links)
                .map_err(|e| anyhow::anyhow!("{} collector: {e}", c.name()))?;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut per_pod: BTreeMap<String, usize> = BTreeMap::new();
    let mut first: BTreeMap<String, usize> = BTreeMap::new();
    let first_uid = pods.uids.first().cloned().unwrap_or_default();
    for c in &collectors {
        c.visit(
            &mut |m: &'static Metric, attrs: &[opentelemetry::KeyValue], _: Number| {
                if let Some(uid) = attrs
                    .iter()
                    .find(|kv| kv.key.as_str() == "k8s.pod.uid")
                    .map(|kv| kv.value.as_str().into_owned())
                {
                    if uid == first_uid {
                        *first.entry(m.name.to_string()).or_default() += 1;
                    }
                    *per_pod.entry(uid).or_default() += 1;
                }
            },
        );
    }
    let counts: Vec<u64> = pods
        .uids
        .iter()
        .map(|u| per_pod.get(u).copied().unwrap_or(0) as u64)
        .collect();
    let series_per_pod = sys::Summary::of(&counts);
    let json = json!({
        "pods": count,
        "host_links_with_peer_netns": host_links_with_peer,
        "namespaces_scanned": namespaces_scanned,
        "proc_scan_cpu_us": scan_cpu_us.json(),
        "proc_scan_wall_us": scan_wall_us.json(),
        "peer_resolve_cpu_us": resolve_cpu_us.json(),
        "peer_resolve_wall_us": resolve_wall_us.json(),
        "steady_update_cpu_ns": sys::round3(update_cpu_ns),
        "steady_update_allocs_per_call": update_allocs_per_call,
        "socket_owners_walk_cpu_us": owners_walk_cpu_us.json(),
        "socket_owners_walk_wall_us": owners_walk_wall_us.json(),
        "socket_owners_check_cpu_us": sys::round3(owners_check_cpu_us),
        "socket_owners_check_allocs": owners_check_allocs,
        "socket_owners_found": owners_found,
        "pods_resolved": pods_resolved,
        "series_per_pod": series_per_pod.json(),
        "first_pod_series_by_metric": first.clone(),
        "removed_socket_cgroups": removed.json.clone(),
    });
    drop(collectors);
    drop(pods);
    Ok(WorkloadReport {
        pods: count,
        host_links_with_peer,
        namespaces_scanned,
        scan_cpu_us,
        scan_wall_us,
        resolve_cpu_us,
        resolve_wall_us,
        update_cpu_ns,
        update_allocs_per_call,
        owners_walk_cpu_us,
        owners_walk_wall_us,
        owners_check_cpu_us,
        owners_check_allocs,
        owners_found,
        pods_resolved,
        series_per_pod,
        first_pod_by_metric: first,
        removed,
        json,
    })
}
