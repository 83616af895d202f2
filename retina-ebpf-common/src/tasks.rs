//! The task iterator (`retina-tasks`): one [`TaskRecord`] per process (thread group
//! leader), read by the agent to learn which network namespace and cgroup each process is
//! in without `/proc/PID/ns/net`, which the kernel hides from other users' processes (a
//! ptrace access check) unless the reader has CAP_SYS_PTRACE.

/// Name of the iterator program (`iter/task`).
pub const TASKS_PROGRAM_NAME: &str = "retina_tasks";
/// Name of the read-only global holding [`TaskOffsets`].
pub const TASK_OFFSETS_GLOBAL: &str = "TASK_OFFSETS";

/// The [`TaskOffsets::flags`] bit saying the loader filled the offsets in.
pub const TASK_OFFSETS_VALID: u32 = 1;
/// The [`TaskOffsets::flags`] bit saying the cgroup v2 offsets are valid.
pub const TASK_OFFSETS_HAS_CGROUP: u32 = 1 << 1;

/// Byte offsets of the kernel fields the iterator reads, from the running kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `struct task_struct`: `pid`.
    pub task_pid: u32,
    /// `struct task_struct`: `tgid`.
    pub task_tgid: u32,
    /// `struct task_struct`: `nsproxy`.
    pub task_nsproxy: u32,
    /// `struct nsproxy`: `net_ns`.
    pub nsproxy_net: u32,
    /// `struct net`: `ns.inum`.
    pub net_inum: u32,
    /// `struct task_struct`: `cgroups` (a `struct css_set *`).
    pub task_cgroups: u32,
    /// `struct css_set`: `dfl_cgrp` (the cgroup v2 cgroup).
    pub css_dfl_cgrp: u32,
    /// `struct cgroup`: `kn`.
    pub cgroup_kn: u32,
    /// `struct kernfs_node`: `id` (a `u64`).
    pub kn_id: u32,
    /// `TASK_OFFSETS_*` bits.
    pub flags: u32,
}

impl TaskOffsets {
    pub const fn zeroed() -> Self {
        Self {
            task_pid: 0,
            task_tgid: 0,
            task_nsproxy: 0,
            nsproxy_net: 0,
            net_inum: 0,
            task_cgroups: 0,
            css_dfl_cgrp: 0,
            cgroup_kn: 0,
            kn_id: 0,
            flags: 0,
        }
    }
}

/// What the iterator writes per process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskRecord {
    /// The process id (thread group id), in the initial pid namespace.
    pub tgid: u32,
    /// `nsproxy->net_ns->ns.inum`.
    pub netns: u32,
    /// `cgroups->dfl_cgrp->kn->id`: the cgroup v2 id (the inode of its directory); 0 when
    /// unknown.
    pub cgroup: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: #[repr(C)], only integers, no padding (sizes asserted below).
    unsafe impl aya::Pod for super::TaskOffsets {}
}

const _: () = assert!(core::mem::size_of::<TaskOffsets>() == 10 * 4);
const _: () = assert!(core::mem::size_of::<TaskRecord>() == 16);
