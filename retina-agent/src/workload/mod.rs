//! Which workload lives in a network namespace: the pod, container or systemd service
//! whose processes run in it, from their cgroups ([`cgroup`]).
//!
//! The map is built by one walk over every process, consulted when a drop series first
//! appears, so nothing is read per cycle: a namespace not in the map is looked up again by
//! a new walk at most every [`RESCAN_AFTER`]. The walk is a BPF task iterator ([`tasks`]:
//! each process's namespace inode and cgroup v2 id, the id resolved to its path by the
//! socket-owner resolver) wherever it loads; else a scan of `/proc` (each process's
//! `ns/net` and `cgroup`), which as a non-root user without CAP_SYS_PTRACE sees only the
//! agent's own user's namespaces: that is said once in the log, with the count of
//! processes refused. Every process of a namespace must agree on an attribute for the
//! namespace to get it (a pod's containers share the pod's namespace: the pod uid is
//! kept, a container id only if there is one container). The host's namespace gets no
//! workload attributes.

pub(crate) mod cgroup;
pub(crate) mod delegation;
pub(crate) mod mountinfo;
pub mod peers;
pub mod sockets;
pub(crate) mod tasks;

use std::{
    collections::HashMap,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::model::Workload;

/// Attribute keys of the socket owners ([`sockets`]); the workload's own are in
/// [`crate::model::attr`].
pub(crate) mod attr {
    /// The cgroup v2 path of the socket a dropped packet had reached.
    pub(crate) const SOCKET_CGROUP: &str = "socket.cgroup";
    /// Its cgroup id (never reused, so two incarnations of one service stay two series).
    pub(crate) const SOCKET_CGROUP_ID: &str = "socket.cgroup.id";
}

/// A namespace the last scan did not find is scanned for again after this long.
pub(crate) const RESCAN_AFTER: Duration = Duration::from_secs(5);
/// The most of a `/proc/PID/cgroup` file that is read (a hybrid host lists a dozen
/// hierarchies; paths are at most 4096 bytes each).
const MAX_CGROUP_FILE: u64 = 64 * 1024;

/// Workloads by network namespace inode, from the last walk over the processes.
#[derive(Debug)]
pub struct Workloads {
    proc_root: PathBuf,
    host_netns: u32,
    by_netns: HashMap<u32, Arc<Workload>>,
    /// One process of each namespace of `by_netns`, as the scan saw it.
    pids: HashMap<u32, u32>,
    last_scan: Option<Instant>,
    /// Process cgroups, checked for delegation to unprivileged users.
    cgroups: delegation::Cgroups,
    /// The task iterator; `None`: `/proc` is scanned.
    tasks: Option<tasks::Tasks>,
    /// Processes whose `/proc/PID/ns/net` the last `/proc` scan was refused.
    denied: usize,
}

impl Workloads {
    /// With the task iterator where it loads, else `/proc`.
    pub fn new(host_netns: u32) -> Workloads {
        let mut w = Workloads::with_proc(host_netns, "/proc");
        w.cgroups = delegation::Cgroups::new();
        w.tasks = tasks::Tasks::load();
        w
    }

    /// Whether the map is built from the task iterator (else from `/proc`).
    pub(crate) fn uses_tasks(&self) -> bool {
        self.tasks.is_some()
    }

    /// The namespace process `pid` was in at the last walk of the task iterator; `None`
    /// without it.
    pub(crate) fn netns_of(&self, pid: u32) -> Option<u32> {
        self.tasks.as_ref()?.netns_of(pid)
    }

    /// Walks the processes again (without rebuilding the map), for [`Workloads::netns_of`];
    /// false without the task iterator or when the walk failed.
    pub(crate) fn walk_again(&mut self) -> bool {
        self.tasks.as_mut().is_some_and(|t| t.walk().is_ok())
    }

    /// Inodes of every network namespace alive as far as this host can tell: those of
    /// all processes (from a fresh walk), and those bound in the usual directories.
    pub(crate) fn live_netns_inodes(&mut self) -> std::collections::HashSet<u32> {
        if let Some(t) = &mut self.tasks
            && let Ok(mut live) = t.live_netns()
        {
            crate::kernel::netns::add_bound(&mut live);
            return live;
        }
        crate::kernel::netns::live_netns_inodes()
    }

    /// With another `/proc` (tests).
    pub(crate) fn with_proc(host_netns: u32, proc_root: impl Into<PathBuf>) -> Workloads {
        Workloads {
            proc_root: proc_root.into(),
            host_netns,
            by_netns: HashMap::new(),
            pids: HashMap::new(),
            last_scan: None,
            // A fake /proc's cgroups do not exist: judged by their names.
            cgroups: delegation::Cgroups::names_only(),
            tasks: None,
            denied: 0,
        }
    }

    /// The workload of namespace `netns`; `None` for the host's, and for a namespace
    /// without one (or with no process in it).
    pub(crate) fn lookup(&mut self, netns: u32) -> Option<Arc<Workload>> {
        if netns == self.host_netns || netns == 0 {
            return None;
        }
        if !self.by_netns.contains_key(&netns)
            && self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_AFTER)
        {
            self.scan();
        }
        self.by_netns.get(&netns).filter(|w| !w.is_empty()).cloned()
    }

    /// The namespaces of the last scan (other than the host's): inode, one process in
    /// it, and its workload (empty when its processes name none).
    pub fn namespaces(&self) -> impl Iterator<Item = (u32, u32, &Arc<Workload>)> {
        self.by_netns
            .iter()
            .filter_map(|(ns, w)| Some((*ns, *self.pids.get(ns)?, w)))
    }

    /// The `/proc` this map reads.
    pub(crate) fn proc_root(&self) -> &std::path::Path {
        &self.proc_root
    }

    /// Rebuilds the map from the task iterator, or from `/proc` without it (or when a
    /// walk fails).
    pub fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        if let Some(t) = &mut self.tasks {
            let mut found: HashMap<u32, Workload> = HashMap::new();
            let mut pids = HashMap::new();
            let proc_root = &self.proc_root;
            let cgroups = &mut self.cgroups;
            let walked = t.scan(self.host_netns, &mut found, &mut pids, |pid| {
                let mut text = String::new();
                read_cgroup(&proc_root.join(pid.to_string()), &mut text, cgroups)
            });
            if walked.is_ok() {
                self.pids = pids;
                self.by_netns = found.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
                return;
            }
        }
        self.scan_proc();
    }

    /// Rebuilds the map from `/proc`.
    fn scan_proc(&mut self) {
        let mut found: HashMap<u32, Workload> = HashMap::new();
        let procs = match std::fs::read_dir(&self.proc_root) {
            Ok(procs) => procs,
            Err(e) => {
                crate::fdshortage::failed(crate::fdshortage::Lost::Workload, &e);
                return;
            }
        };
        self.pids.clear();
        let mut denied = 0usize;
        let mut text = String::new();
        for entry in procs.flatten() {
            let is_pid = entry
                .file_name()
                .to_str()
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !is_pid {
                continue;
            }
            let dir = entry.path();
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let netns = match std::fs::metadata(dir.join("ns/net")) {
                Ok(m) => u32::try_from(m.ino()).ok(),
                // The ptrace access check: another user's process, and no CAP_SYS_PTRACE.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    denied += 1;
                    None
                }
                Err(_) => None,
            };
            let Some(netns) = netns else {
                continue;
            };
            if netns == self.host_netns {
                continue;
            }
            let Some(w) = read_cgroup(&dir, &mut text, &mut self.cgroups) else {
                continue;
            };
            self.pids.entry(netns).or_insert(pid);
            found
                .entry(netns)
                .and_modify(|have| *have = have.common(&w))
                .or_insert(w);
        }
        self.by_netns = found.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        if denied > 0 && self.denied == 0 {
            tasks::say_once(format_args!(
                "{denied} processes' network namespaces cannot be read from {}/PID/ns/net (the kernel's ptrace access check: the agent is not root and has no CAP_SYS_PTRACE, and no task iterator): drops in their namespaces and their pods' host veths carry no pod, container or unit",
                self.proc_root.display()
            ));
        }
        self.denied = denied;
    }
}

/// The workload named by the cgroup v2 line of `dir/cgroup` (a `/proc/PID`); `None` when
/// it cannot be read (the process is gone, the file is not text).
/// The workload of the process at `dir` from its `cgroup` file, checked for delegation by
/// `cgroups`. `None`: the process is gone, or the file is not text (it tells nothing), or no
/// descriptor was left (counted and logged).
fn read_cgroup(
    dir: &std::path::Path,
    text: &mut String,
    cgroups: &mut delegation::Cgroups,
) -> Option<Workload> {
    text.clear();
    let read = std::fs::File::open(dir.join("cgroup"))
        .and_then(|f| f.take(MAX_CGROUP_FILE).read_to_string(text));
    match read {
        Ok(_) => {
            crate::fdshortage::succeeded(crate::fdshortage::Lost::Workload);
            Some(cgroups.of_process(text))
        }
        Err(e) => {
            crate::fdshortage::failed(crate::fdshortage::Lost::Workload, &e);
            None
        }
    }
}

#[cfg(test)]
mod tests;
