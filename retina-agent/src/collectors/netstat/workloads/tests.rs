//! The per-workload collector over a fake `/proc` whose one process is this test process
//! (so that its pidfd is real): files read through held descriptors, the default field
//! set, the workload's attributes, and a namespace's series gone with its process.

use std::{os::unix::fs::MetadataExt as _, path::PathBuf};

use super::*;
use crate::model::Number;

struct FakeProc(PathBuf);

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const UID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

/// `/proc/<our pid>` with a namespace file, a pod's cgroup and this host's real
/// `net/{snmp,netstat,snmp6}`.
fn fake_proc(tag: &str) -> (FakeProc, u32) {
    let root = std::env::temp_dir().join(format!("retina-wns-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join(std::process::id().to_string());
    std::fs::create_dir_all(dir.join("ns")).unwrap();
    std::fs::create_dir_all(dir.join("net")).unwrap();
    std::fs::write(root.join("podns"), "").unwrap();
    std::os::unix::fs::symlink(root.join("podns"), dir.join("ns/net")).unwrap();
    std::fs::write(
        dir.join("cgroup"),
        format!("0::/kubepods/besteffort/pod{UID}/abc\n"),
    )
    .unwrap();
    for f in ["snmp", "netstat", "snmp6"] {
        let text = std::fs::read(format!("/proc/self/net/{f}")).unwrap();
        std::fs::write(dir.join("net").join(f), text).unwrap();
    }
    let inode = std::fs::metadata(root.join("podns")).unwrap().ino() as u32;
    (FakeProc(root), inode)
}

fn points(c: &WorkloadNetstatCollector) -> Vec<(String, Vec<KeyValue>, Number)> {
    let mut out = Vec::new();
    c.visit(&mut |m: &'static Metric, a: &[KeyValue], v: Number| {
        out.push((m.name.to_string(), a.to_vec(), v));
    });
    out
}

fn value_of(pts: &[(String, Vec<KeyValue>, Number)], group: &str, field: &str) -> Option<Number> {
    pts.iter()
        .find(|(_, a, _)| {
            a.iter().any(|kv| kv.key.as_str() == "netstat.group" && kv.value.as_str() == group)
                && a.iter()
                    .any(|kv| kv.key.as_str() == "netstat.field" && kv.value.as_str() == field)
        })
        .map(|(_, _, v)| *v)
}

#[test]
fn the_default_patterns_compile() {
    assert_eq!(
        Pattern::list(DEFAULT_FIELDS).unwrap().len(),
        DEFAULT_FIELDS.len()
    );
    assert_eq!(WorkloadNetstatConfig::default().include.len(), DEFAULT_FIELDS.len());
}

#[test]
fn a_pods_namespace_is_read_with_the_default_fields_and_its_attributes() {
    let (p, inode) = fake_proc("read");
    let w = Workloads::with_proc(1, &p.0);
    let mut c = WorkloadNetstatCollector::with_workloads(&WorkloadNetstatConfig::default(), w);
    c.update().unwrap();
    assert_eq!(c.namespaces(), 1);
    let pts = points(&c);
    // 17 fields, all counters; fewer only where this host has no IPv6 (no Udp6).
    let ipv6 = std::path::Path::new("/proc/self/net/snmp6").exists();
    assert_eq!(pts.len(), if ipv6 { 17 } else { 13 }, "{pts:#?}");
    for (name, attrs, _) in &pts {
        assert_eq!(name, "retina.workload.netstat.stat");
        assert!(attrs.contains(&KeyValue::new("k8s.pod.uid", UID)), "{attrs:?}");
        assert!(attrs.contains(&KeyValue::new(attr::NETNS_INODE, i64::from(inode))));
    }
    // A new value through the same open file.
    let snmp = p.0.join(format!("{}/net/snmp", std::process::id()));
    let text = std::fs::read_to_string(&snmp).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let i = lines.iter().position(|l| l.starts_with("Tcp: ") && l.contains("AttemptFails")).unwrap();
    let col = lines[i].split_whitespace().position(|n| n == "AttemptFails").unwrap();
    let mut values: Vec<String> = lines[i + 1].split_whitespace().map(str::to_string).collect();
    values[col] = "123456".into();
    lines[i + 1] = values.join(" ");
    std::fs::write(&snmp, lines.join("\n") + "\n").unwrap();
    c.update().unwrap();
    assert_eq!(value_of(&points(&c), "Tcp", "AttemptFails"), Some(Number::U64(123456)));
    assert_eq!(c.scans(), 1, "a steady cycle walks no processes");
}

#[test]
fn patterns_choose_more_or_fewer_fields() {
    let (p, _) = fake_proc("patterns");
    let config = WorkloadNetstatConfig {
        include: Pattern::list(&["Tcp:.*"]).unwrap(),
        exclude: Pattern::list(&["Tcp:(RtoMin|RtoMax)"]).unwrap(),
        ..WorkloadNetstatConfig::default()
    };
    let mut c = WorkloadNetstatCollector::with_workloads(&config, Workloads::with_proc(1, &p.0));
    c.update().unwrap();
    let pts = points(&c);
    assert!(value_of(&pts, "Tcp", "ActiveOpens").is_some());
    assert!(value_of(&pts, "Tcp", "RtoMin").is_none());
    assert!(value_of(&pts, "Udp", "NoPorts").is_none());
    // CurrEstab is a state: exported as the gauge.
    assert!(pts.iter().any(|(n, _, v)| n == "retina.workload.netstat.state" && matches!(v, Number::F64(_))));
}

#[test]
fn a_malformed_file_names_the_namespace_the_process_and_the_line() {
    let (p, inode) = fake_proc("bad");
    let pid = std::process::id();
    std::fs::write(p.0.join(format!("{pid}/net/netstat")), "TcpExt: A B\nTcpExt: 1\n").unwrap();
    let mut c = WorkloadNetstatCollector::with_workloads(
        &WorkloadNetstatConfig::default(),
        Workloads::with_proc(1, &p.0),
    );
    let e = c.update().unwrap_err().to_string();
    assert!(e.contains(&format!("network namespace {inode} (process {pid})")), "{e}");
    assert!(e.contains("net/netstat:2"), "{e}");
    // The other files were read.
    assert!(value_of(&points(&c), "Tcp", "AttemptFails").is_some());
}

/// Child processes (`sleep`), killed and reaped on drop.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn with_a_budget_for_one_namespace_a_cycle_every_namespace_is_read_in_turn() {
    // Five pods, each a real child process (for its pidfd) with a namespace of its own in
    // a fake /proc.
    let root = std::env::temp_dir().join(format!("retina-wns-turn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let guard = FakeProc(root.clone());
    let mut children = Children(Vec::new());
    for i in 0..5 {
        let child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let dir = root.join(child.id().to_string());
        children.0.push(child);
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        std::fs::create_dir_all(dir.join("net")).unwrap();
        let ns = root.join(format!("podns{i}"));
        std::fs::write(&ns, "").unwrap();
        std::os::unix::fs::symlink(&ns, dir.join("ns/net")).unwrap();
        std::fs::write(
            dir.join("cgroup"),
            format!("0::/kubepods/besteffort/pod0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f{i}/abc\n"),
        )
        .unwrap();
        for f in ["snmp", "netstat", "snmp6"] {
            let text = std::fs::read(format!("/proc/self/net/{f}")).unwrap();
            std::fs::write(dir.join("net").join(f), text).unwrap();
        }
    }
    let mut c = WorkloadNetstatCollector::with_workloads(
        &WorkloadNetstatConfig::default(),
        Workloads::with_proc(1, &guard.0),
    );
    // Every cycle spends its budget on its first namespace; a walk of the processes every
    // other cycle (the daemon's come every 10 s) must not start the turn over.
    c.budget_ns = 1;
    let mut last = vec![0u64; 0];
    for cycle in 0..20 {
        if cycle % 2 == 0 {
            c.rescan_now = true;
        }
        c.update().unwrap();
        assert_eq!(c.read_last, 1);
        last = c.entries.iter().map(|e| e.last_read).collect();
        if cycle >= 4 {
            // Each of the five was read within the last five cycles.
            let newest = c.reads;
            assert!(
                last.iter().all(|&r| r + 5 > newest),
                "cycle {cycle}: reads {last:?} of {newest}"
            );
        }
    }
    assert_eq!(last.len(), 5);
    drop(children);
}
