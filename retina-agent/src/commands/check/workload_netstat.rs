//! The `workload_netstat` check: can the agent read the protocol counters of the network
//! namespaces that hold processes (`/proc/PID/net/snmp` of one process of each)? Reading a
//! process's `/proc/PID/net` needs no ptrace access, but under `ProtectProc=invisible`
//! another user's `/proc/PID` does not exist for the agent: those namespaces are counted
//! and named as what the unit hides.

use std::{collections::HashMap, io::ErrorKind, os::unix::fs::MetadataExt as _};

use super::Check;
use crate::kernel::{sys::error_chain, tasks::TaskIter};

const NAME: &str = "workload_netstat";

pub(super) fn workload_netstat(enabled: bool) -> Check {
    if !enabled {
        return Check::pass(NAME, "off (netstat.enabled or netstat.workloads.enabled = false)");
    }
    let own = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino() as u32);
    let walked = TaskIter::load().and_then(|mut it| {
        let mut records = Vec::new();
        it.read(&mut records).map(|()| records)
    });
    let records = match walked {
        Ok(r) => r,
        Err(e) => {
            return Check::warn(
                NAME,
                format!(
                    "{}: without the task iterator only namespaces found through /proc are read",
                    error_chain(&e)
                ),
                "the task iterator needs Linux 5.8+, kernel BTF and CAP_BPF + CAP_PERFMON",
            );
        }
    };
    // One process per namespace other than ours.
    let mut one: HashMap<u32, u32> = HashMap::new();
    for r in records.iter().filter(|r| r.netns != own && r.netns != 0) {
        one.entry(r.netns).or_insert(r.tgid);
    }
    let (mut readable, mut hidden, mut other) = (0usize, 0usize, 0usize);
    let mut last_error = None;
    for pid in one.values() {
        match std::fs::read(format!("/proc/{pid}/net/snmp")) {
            Ok(_) => readable += 1,
            // Gone since the walk, or hidden: /proc/PID itself tells.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    other += 1;
                } else if process_alive(*pid) {
                    hidden += 1;
                }
            }
            Err(e) => {
                other += 1;
                last_error = Some(e);
            }
        }
    }
    let total = readable + hidden + other;
    if hidden > 0 {
        return Check::warn(
            NAME,
            format!(
                "{hidden} of {total} network namespaces with processes are hidden from this process (their processes' /proc/PID does not exist here: ProtectProc=invisible hides other users' processes): their per-workload protocol counters (retina.workload.netstat.*) are not exported; {readable} readable"
            ),
            "reading /proc/PID/net needs no ptrace access: a drop-in for the unit with `[Service]` `ProtectProc=default` makes them readable (docs/operations.md)",
        );
    }
    if other > 0 {
        return Check::warn(
            NAME,
            format!(
                "{other} of {total} network namespaces' /proc/PID/net/snmp could not be read{}",
                last_error.map(|e| format!(" ({e})")).unwrap_or_default()
            ),
            "see the agent's log",
        );
    }
    Check::pass(
        NAME,
        format!("protocol counters of {readable} of {total} network namespaces with processes are readable through /proc/PID/net"),
    )
}

/// Whether process `pid` exists (`kill(pid, 0)`: EPERM means it does, as another user's).
fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
