//! The processes of each network namespace and their cgroups, from the BPF task iterator
//! ([`crate::kernel::tasks`]): what [`super::Workloads`] is built from wherever the
//! iterator loads, because `/proc/PID/ns/net` hides other users' processes from the agent
//! as the packaged unit runs it (see [`super::Workloads::scan`]).
//!
//! Cgroup ids are turned into paths, and paths into workloads, by the socket-owner
//! resolver ([`super::sockets::SocketOwners`]), which walks the cgroup v2 tree only for
//! ids it has not seen and forgets cgroups once they are removed.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicBool, Ordering},
};

use retina_ebpf_common::tasks::TaskRecord;

use super::sockets::SocketOwners;
use crate::model::Workload;
use crate::kernel::{
    sys::error_chain,
    tasks::{TaskIter, TasksError},
};

/// Set once the iterator's absence or failure has been logged (one line per process,
/// however many maps there are).
static SAID: AtomicBool = AtomicBool::new(false);

/// Logs `what` as a warning once per process.
pub(super) fn say_once(what: std::fmt::Arguments<'_>) {
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!("{what}");
    }
}

/// The iterator, the cgroup resolver, and the last walk's records.
#[derive(Debug)]
pub(crate) struct Tasks {
    iter: TaskIter,
    owners: SocketOwners,
    records: Vec<TaskRecord>,
}

impl Tasks {
    /// Loads the iterator; `None` (said once in the log) where it cannot be.
    pub(crate) fn load() -> Option<Tasks> {
        match TaskIter::load() {
            Ok(iter) => {
                if !iter.has_cgroup() {
                    tracing::info!(
                        "task iterator: this kernel's BTF has no cgroup v2 fields; process cgroups are read from /proc/PID/cgroup"
                    );
                }
                Some(Tasks {
                    iter,
                    owners: SocketOwners::new(),
                    records: Vec::new(),
                })
            }
            Err(e) => {
                say_once(format_args!(
                    "{}: namespaces' processes are read from /proc instead, where a non-root agent without CAP_SYS_PTRACE cannot see other users' processes: drops in their namespaces and their pods' host veths get no pod, container or unit",
                    error_chain(&e)
                ));
                None
            }
        }
    }

    /// Walks every process; `Err` (said once) leaves the caller to fall back to `/proc`.
    pub(crate) fn walk(&mut self) -> Result<&[TaskRecord], TasksError> {
        self.iter.read(&mut self.records).inspect_err(|e| {
            say_once(format_args!(
                "{}: namespaces' processes are read from /proc instead",
                error_chain(e)
            ))
        })?;
        Ok(&self.records)
    }

    /// Namespace inodes of every process, from a fresh walk.
    pub(crate) fn live_netns(&mut self) -> Result<HashSet<u32>, TasksError> {
        Ok(self.walk()?.iter().map(|r| r.netns).collect())
    }

    /// Fills `found` (workload by namespace) and `pids` (one process by namespace) from a
    /// fresh walk, for every namespace but `host`'s. A process whose cgroup v2 id is
    /// unknown (this kernel's BTF has none, the cgroup was removed meanwhile) or names no
    /// workload is read from `/proc/PID/cgroup` by `from_proc` (which every user may read
    /// where `/proc` shows the process); a process that tells nothing either way is left
    /// out.
    pub(crate) fn scan(
        &mut self,
        host: u32,
        found: &mut HashMap<u32, Workload>,
        pids: &mut HashMap<u32, u32>,
        mut from_proc: impl FnMut(u32) -> Option<Workload>,
    ) -> Result<(), TasksError> {
        self.walk()?;
        let foreign = |r: &&TaskRecord| r.netns != host && r.netns != 0;
        self.owners.resolve(
            self.records
                .iter()
                .filter(foreign)
                .map(|r| r.cgroup)
                .filter(|id| *id != 0),
        );
        for r in self.records.iter().filter(foreign) {
            // A cgroup v2 path that names no workload (the v2 root of a hybrid host, whose
            // runtimes use v1 and `name=systemd`) or is unknown: `/proc/PID/cgroup`, as the
            // `/proc` scan reads it (the v2 line, else the `name=systemd` one).
            let v2 = self.owners.get(r.cgroup).map(|o| Workload::clone(&o.workload));
            let w = match v2 {
                Some(w) if !w.is_empty() => Some(w),
                v2 => from_proc(r.tgid).or(v2),
            };
            let Some(w) = w else { continue };
            pids.entry(r.netns).or_insert(r.tgid);
            found
                .entry(r.netns)
                .and_modify(|have| *have = have.common(&w))
                .or_insert(w);
        }
        // Removed cgroups are forgotten, so the resolver holds only live ones.
        if self.owners.check() {
            self.owners.forget_gone(|_| false);
        }
        Ok(())
    }

    /// The namespace process `pid` was in at the last walk.
    pub(crate) fn netns_of(&self, pid: u32) -> Option<u32> {
        self.records.iter().find(|r| r.tgid == pid).map(|r| r.netns)
    }
}

