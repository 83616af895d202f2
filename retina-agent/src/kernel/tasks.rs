//! Every process's network namespace and cgroup v2 id, from a BPF task iterator
//! (`retina-ebpf/src/tasks.rs`).
//!
//! `/proc/PID/ns/net` names a process's namespace only to a reader allowed to ptrace the
//! process: as the packaged unit runs the agent (a non-root user with only CAP_BPF and
//! CAP_PERFMON, `ProtectProc=invisible`), every other user's process is hidden or refused.
//! A task iterator is a tracing program the same two capabilities may load, and it sees
//! every task. Reading it costs one `bpf(BPF_LINK_CREATE)`, one `bpf(BPF_ITER_CREATE)` and
//! a few `read`s of 16 bytes per process; it runs when a namespace's workload is looked
//! up, never per cycle.

use std::io::Read as _;

use aya::{Ebpf, EbpfLoader, programs::Iter};
use retina_ebpf_common::tasks::{
    TASK_OFFSETS_GLOBAL, TASK_OFFSETS_HAS_CGROUP, TASK_OFFSETS_VALID, TASKS_PROGRAM_NAME,
    TaskOffsets, TaskRecord,
};

use crate::kernel::{
    btf::{Btf, BtfError},
    sys::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, effective_caps},
};

/// The iterator program built by `cargo xtask build`, embedded like the drop program.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("RETINA_TASKS_OBJECT"));

/// The most records one read accepts (a node runs a few thousand processes; pid_max is
/// 4 194 304): 64 MiB at worst, never reached in practice.
const MAX_RECORDS: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TasksError {
    #[error(
        "task iterator: this retina-agent was built without its eBPF programs (no nightly rust-src or bpf-linker at build time): build it with `cargo xtask build`"
    )]
    NotEmbedded,
    #[error(
        "task iterator: missing capabilities {0}: loading it needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"
    )]
    Capabilities(String),
    #[error("task iterator: kernel structure layout: {0}")]
    Layout(#[source] BtfError),
    #[error("task iterator: loading: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("task iterator: no program `{TASKS_PROGRAM_NAME}` in the embedded object")]
    Missing,
    #[error("task iterator: kernel BTF (/sys/kernel/btf/vmlinux): {0}")]
    Btf(#[source] aya::BtfError),
    #[error(
        "task iterator: {0} (BPF task iterators need Linux 5.8+, CAP_BPF and CAP_PERFMON)"
    )]
    Program(#[source] aya::programs::ProgramError),
    #[error("task iterator: {0}")]
    Link(#[source] aya::programs::links::LinkError),
    #[error("task iterator: reading: {0}")]
    Read(#[source] std::io::Error),
}

/// The offsets the iterator reads, from the running kernel's BTF.
pub(crate) fn offsets_from_btf(btf: &Btf) -> Result<TaskOffsets, TasksError> {
    let field = |s: &str, f: &str| btf.field_offset(s, f).map_err(TasksError::Layout);
    let mut o = TaskOffsets {
        task_pid: field("task_struct", "pid")?,
        task_tgid: field("task_struct", "tgid")?,
        task_nsproxy: field("task_struct", "nsproxy")?,
        nsproxy_net: field("nsproxy", "net_ns")?,
        net_inum: field("net", "ns.inum")?,
        flags: TASK_OFFSETS_VALID,
        ..TaskOffsets::zeroed()
    };
    // Without CONFIG_CGROUPS there is no cgroup to tell; the namespace still is.
    if let (Ok(cgroups), Ok(dfl), Ok(kn), Ok(id)) = (
        btf.field_offset("task_struct", "cgroups"),
        btf.field_offset("css_set", "dfl_cgrp"),
        btf.field_offset("cgroup", "kn"),
        btf.field_offset("kernfs_node", "id"),
    ) {
        (o.task_cgroups, o.css_dfl_cgrp, o.cgroup_kn, o.kn_id) = (cgroups, dfl, kn, id);
        o.flags |= TASK_OFFSETS_HAS_CGROUP;
    }
    Ok(o)
}

/// `PROC_PID_INIT_INO`: the inode of the initial pid namespace (`include/linux/proc_ns.h`).
const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;

/// Whether this process runs in the initial pid namespace, where the iterator's pids (the
/// kernel's global ones) are the pids this process sees.
pub(crate) fn in_initial_pid_ns() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == INITIAL_PID_NS)
}

/// The loaded iterator program.
pub(crate) struct TaskIter {
    ebpf: Ebpf,
    buf: Vec<u8>,
    has_cgroup: bool,
}

impl std::fmt::Debug for TaskIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskIter").finish_non_exhaustive()
    }
}

impl TaskIter {
    /// Loads the iterator for the running kernel.
    pub(crate) fn load() -> Result<TaskIter, TasksError> {
        // Without them aya's feature probes fail quietly and the load fails later with a
        // relocation error that names no cause: say the cause.
        if let Some(caps) = effective_caps() {
            let has = |c: u32| caps & (1 << c) != 0;
            if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
                let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
                    .into_iter()
                    .filter(|(c, _)| !has(*c))
                    .map(|(_, n)| n)
                    .collect();
                return Err(TasksError::Capabilities(missing.join(", ")));
            }
        }
        let offsets = {
            let btf = Btf::from_sys().map_err(TasksError::Layout)?;
            offsets_from_btf(&btf)?
        };
        if OBJECT.is_empty() {
            return Err(TasksError::NotEmbedded);
        }
        // The program has no CO-RE relocations: the loader need not parse the kernel's BTF.
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .override_global(TASK_OFFSETS_GLOBAL, &offsets, true)
            .load(OBJECT)
            .map_err(|e| TasksError::Load(Box::new(e)))?;
        let btf = aya::Btf::from_sys_fs().map_err(TasksError::Btf)?;
        let program: &mut Iter = ebpf
            .program_mut(TASKS_PROGRAM_NAME)
            .ok_or(TasksError::Missing)?
            .try_into()
            .map_err(TasksError::Program)?;
        program.load("task", &btf).map_err(TasksError::Program)?;
        drop(btf);
        Ok(TaskIter {
            ebpf,
            buf: Vec::new(),
            has_cgroup: offsets.flags & TASK_OFFSETS_HAS_CGROUP != 0,
        })
    }

    /// Whether records carry cgroup ids (else every `cgroup` is 0).
    pub(crate) fn has_cgroup(&self) -> bool {
        self.has_cgroup
    }

    /// One walk over every process: replaces `out` with their records.
    pub(crate) fn read(&mut self, out: &mut Vec<TaskRecord>) -> Result<(), TasksError> {
        out.clear();
        let program: &mut Iter = self
            .ebpf
            .program_mut(TASKS_PROGRAM_NAME)
            .ok_or(TasksError::Missing)?
            .try_into()
            .map_err(TasksError::Program)?;
        let id = program.attach().map_err(TasksError::Program)?;
        let link = program.take_link(id).map_err(TasksError::Program)?;
        let file = link
            .into_file()
            .map_err(TasksError::Link)?;
        self.buf.clear();
        (&file)
            .take((MAX_RECORDS * size_of::<TaskRecord>()) as u64)
            .read_to_end(&mut self.buf)
            .map_err(TasksError::Read)?;
        out.extend(self.buf.chunks_exact(size_of::<TaskRecord>()).map(|c| {
            let u32_at = |i: usize| u32::from_ne_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            let mut id = [0u8; 8];
            id.copy_from_slice(&c[8..16]);
            TaskRecord {
                tgid: u32_at(0),
                netns: u32_at(4),
                cgroup: u64::from_ne_bytes(id),
            }
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
