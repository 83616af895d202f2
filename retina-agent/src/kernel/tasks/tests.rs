use std::os::unix::fs::MetadataExt as _;

use super::*;

#[test]
fn the_tests_run_in_the_initial_pid_namespace() {
    // As the agent does under its unit; inside a pid namespace pids are not asked by
    // pid (`workload::peers`).
    assert!(in_initial_pid_ns());
}

#[test]
fn offsets_on_this_kernel() {
    let o = offsets_from_btf(&Btf::from_sys().unwrap()).unwrap();
    assert_eq!(o.flags, TASK_OFFSETS_VALID | TASK_OFFSETS_HAS_CGROUP);
    // pid and tgid are two adjacent pid_t.
    assert_eq!(o.task_tgid, o.task_pid + 4);
    assert!(o.task_nsproxy > 0 && o.task_cgroups > 0);
}

/// Needs root (or CAP_BPF + CAP_PERFMON), as the unit tests run under `cargo xtask test`.
#[test]
fn the_walk_sees_this_process_in_its_namespace_and_cgroup() {
    let mut it = TaskIter::load().unwrap();
    let mut records = Vec::new();
    it.read(&mut records).unwrap();
    let me = records
        .iter()
        .find(|r| r.tgid == std::process::id())
        .unwrap_or_else(|| panic!("this process is not among {} records", records.len()));
    let netns = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_eq!(u64::from(me.netns), netns);
    // Our cgroup v2 directory's inode is the cgroup's id.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split(' ').nth(2) == Some("cgroup2"))
        .and_then(|l| l.split(' ').nth(1))
        .unwrap();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap();
    let dir = format!("{root}{path}");
    assert_eq!(me.cgroup, std::fs::metadata(&dir).unwrap().ino(), "{dir}");
    // One record per process, never per thread: the test harness has several threads.
    let mine = records.iter().filter(|r| r.tgid == std::process::id()).count();
    assert_eq!(mine, 1);
    // A second walk works the same (a new link and iterator each time).
    let n = records.len();
    it.read(&mut records).unwrap();
    assert!(records.len().abs_diff(n) < n / 2 + 10);
}
