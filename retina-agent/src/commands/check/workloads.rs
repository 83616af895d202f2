//! The `workloads` check: can the agent tell which processes, and so which pod, container
//! or systemd unit, each network namespace holds? It really loads and walks the BPF task
//! iterator the agent uses; where that fails, it says what the `/proc` fallback sees.

use std::collections::HashSet;

use super::Check;
use crate::kernel::{sys::error_chain, tasks::TaskIter};

const NAME: &str = "workloads";

pub(super) fn workloads() -> Check {
    let walked = TaskIter::load().and_then(|mut it| {
        let mut records = Vec::new();
        it.read(&mut records).map(|()| (records, it.has_cgroup()))
    });
    match walked {
        Ok((records, has_cgroup)) => {
            let namespaces: HashSet<u32> = records.iter().map(|r| r.netns).collect();
            let cgroups = if has_cgroup {
                "and cgroup v2 ids"
            } else {
                "(cgroups from /proc/PID/cgroup: no cgroup v2 fields in BTF)"
            };
            Check::pass(
                NAME,
                format!(
                    "BPF task iterator: namespaces {cgroups} of {} processes in {} network namespaces, without /proc/PID/ns/net",
                    records.len(),
                    namespaces.len()
                ),
            )
        }
        Err(e) => {
            let (seen, denied) = proc_scan();
            Check::warn(
                NAME,
                format!(
                    "{}; falling back to /proc: {denied} of {seen} visible processes' network namespaces are refused (the ptrace access check), and other users' processes are invisible under ProtectProc=invisible: drops in their namespaces and their pods' host veths get no k8s.pod.uid, container.id or systemd.unit",
                    error_chain(&e)
                ),
                "the task iterator needs Linux 5.8+, kernel BTF and CAP_BPF + CAP_PERFMON (what the unit grants); or run as root",
            )
        }
    }
}

/// Processes `/proc` shows, and how many of their `ns/net` this process may not read.
fn proc_scan() -> (usize, usize) {
    let (mut seen, mut denied) = (0, 0);
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for entry in procs.flatten() {
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        seen += 1;
        match std::fs::metadata(entry.path().join("ns/net")) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied += 1,
            Err(_) => {}
        }
    }
    (seen, denied)
}
