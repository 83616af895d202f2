//! A BPF task iterator: for every process (thread group leader) it writes the process id,
//! the inode of its network namespace and the id of its cgroup v2 cgroup
//! ([`TaskRecord`]) into the iterator's file, which the agent reads.
//!
//! The agent needs these to attribute a namespace's drops to the pod, container or unit
//! whose processes run in it. `/proc/PID/ns/net` would tell the namespace too, but the
//! kernel lets only processes that may ptrace PID read it, which the agent, a non-root
//! user with only CAP_BPF and CAP_PERFMON, may not. A task iterator (Linux 5.8+) sees every
//! task; loading it needs exactly those two capabilities.
//!
//! Structure offsets are not compiled in: the loader reads them from the running kernel's
//! BTF and writes them into [`TASK_OFFSETS`] before the program is loaded, like the drop
//! program's. Every read is a `bpf_probe_read_kernel`, so a bad pointer costs the record,
//! never the kernel.
#![no_std]
#![no_main]

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_seq_write};
use retina_ebpf_common::tasks::{
    TASK_OFFSETS_HAS_CGROUP, TASK_OFFSETS_VALID, TaskOffsets, TaskRecord,
};

/// Filled in by the loader from kernel BTF (read-only data, constant once loaded).
#[unsafe(no_mangle)]
static TASK_OFFSETS: TaskOffsets = TaskOffsets::zeroed();

/// One field of [`TASK_OFFSETS`]; a volatile load keeps the zero initialiser from being
/// folded into the code.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: TASK_OFFSETS is only ever written by the loader before load.
        unsafe { core::ptr::read_volatile(&raw const TASK_OFFSETS.$field) }
    };
}

#[inline(always)]
fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address and reports failure.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// `struct bpf_iter__task`: `{ struct bpf_iter_meta *meta; struct task_struct *task; }`,
/// and `struct bpf_iter_meta` starts with `struct seq_file *seq`.
/// Not `pub`: only the kernel calls it, with its context (`no_mangle` keeps the symbol).
#[unsafe(link_section = "iter/task")]
#[unsafe(no_mangle)]
fn retina_tasks(ctx: *mut u64) -> i32 {
    if offset!(flags) & TASK_OFFSETS_VALID == 0 {
        return 0;
    }
    // SAFETY: the context of an `iter/task` program is a `struct bpf_iter__task`; the
    // verifier checks these two loads against its layout.
    let (meta, task) = unsafe { (*ctx, *ctx.add(1)) };
    if meta == 0 || task == 0 {
        // The last call of a walk (task NULL): nothing to write.
        return 0;
    }
    // SAFETY: `meta` is a `struct bpf_iter_meta *` whose first field is the seq_file.
    let seq = unsafe { *(meta as *const u64) };
    let (Some(pid), Some(tgid)) = (
        read::<i32>(task, offset!(task_pid)),
        read::<i32>(task, offset!(task_tgid)),
    ) else {
        return 0;
    };
    // Threads share their leader's namespace and cgroup (as /proc/PID shows them).
    if pid != tgid {
        return 0;
    }
    // An exiting task has no nsproxy any more: it tells nothing.
    let Some(netns) = read::<u64>(task, offset!(task_nsproxy))
        .and_then(|ns| read::<u64>(ns, offset!(nsproxy_net)))
        .and_then(|net| read::<u32>(net, offset!(net_inum)))
    else {
        return 0;
    };
    let cgroup = if offset!(flags) & TASK_OFFSETS_HAS_CGROUP != 0 {
        read::<u64>(task, offset!(task_cgroups))
            .and_then(|cset| read::<u64>(cset, offset!(css_dfl_cgrp)))
            .and_then(|cgrp| read::<u64>(cgrp, offset!(cgroup_kn)))
            .and_then(|kn| read::<u64>(kn, offset!(kn_id)))
            .unwrap_or(0)
    } else {
        0
    };
    let record = TaskRecord {
        tgid: tgid as u32,
        netns,
        cgroup,
    };
    // SAFETY: `seq` is the iterator's seq_file; the record lives on this stack.
    unsafe {
        bpf_seq_write(
            seq as *mut _,
            (&raw const record).cast(),
            core::mem::size_of::<TaskRecord>() as u32,
        )
    };
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
