//! Small system helpers shared by the agent, the bench and the tests: the `bpf(2)` system
//! call, the effective capabilities, `uname(2)`, and an error's chain of causes as text.

use std::{ffi::CStr, io};

/// `bpf(2)` commands (`enum bpf_cmd`, include/uapi/linux/bpf.h) used here and by the bench.
#[cfg(feature = "internals")]
pub const BPF_MAP_CREATE: libc::c_long = 0;
pub(crate) const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
pub(crate) const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
#[cfg(feature = "internals")]
pub const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
#[cfg(feature = "internals")]
pub const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
pub const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `bpf(2)` system call with `attr`, a `union bpf_attr` variant of `size_of::<T>()`
/// bytes: its non-negative result (a file descriptor for the commands that make one), or
/// the error.
///
/// # Safety
///
/// `attr` must be laid out as the bpf_attr variant that `cmd` expects, with every byte the
/// kernel does not know for `cmd` zero, and every pointer in it must refer to live memory
/// of the size the command reads or writes there (the kernel writes through them).
pub unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller guarantees that `attr` is the variant `cmd` expects and that its
    // pointers are valid; the kernel reads and writes only `size_of::<T>()` bytes of it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Capability numbers (include/uapi/linux/capability.h).
pub(crate) const CAP_NET_ADMIN: u32 = 12;
pub(crate) const CAP_SYS_ADMIN: u32 = 21;
pub(crate) const CAP_PERFMON: u32 = 38;
pub(crate) const CAP_BPF: u32 = 39;

/// Effective capability bits of this process, from /proc/self/status; `None` when they
/// cannot be read.
pub(crate) fn effective_caps() -> Option<u64> {
    parse_cap_eff(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The `CapEff:` bits of /proc/PID/status text.
pub(crate) fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// `uname(2)` fields as strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uname {
    pub release: String,
    pub(crate) machine: String,
    pub(crate) nodename: String,
}

/// `uname(2)`, or `None` if it fails.
pub fn uname() -> Option<Uname> {
    // SAFETY: utsname is plain data, for which all zeroes is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname; uname fills it and NUL-terminates every
    // field.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let field = |f: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates each field within its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Some(Uname {
        release: field(&u.release),
        machine: field(&u.machine),
        nodename: field(&u.nodename),
    })
}

/// An error and its causes, `: `-separated, each said once: the agent's error types
/// already print their source in their own message, so a cause is only added when the text
/// so far does not contain it.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
