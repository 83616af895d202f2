use opentelemetry::KeyValue;

use super::*;

const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

/// A fake `/proc` with processes whose `ns/net` are files of our own (their inodes
/// stand for namespaces).
struct FakeProc(tempfile::TempDir);

impl FakeProc {
    fn new(tag: &str) -> FakeProc {
        let dir = tempfile::Builder::new()
            .prefix(&format!("retina-workload-{tag}-"))
            .tempdir()
            .unwrap();
        FakeProc(dir)
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    /// Adds process `pid` in the namespace `ns` (a file name) with `cgroup` as its
    /// cgroup file; returns the namespace's inode.
    fn add(&self, pid: u32, ns: &str, cgroup: &str) -> u32 {
        let ns_file = self.path().join(ns);
        if !ns_file.exists() {
            std::fs::write(&ns_file, "").unwrap();
        }
        let dir = self.path().join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        let _ = std::fs::remove_file(dir.join("ns/net"));
        std::os::unix::fs::symlink(&ns_file, dir.join("ns/net")).unwrap();
        std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        std::fs::metadata(&ns_file).unwrap().ino() as u32
    }
}

#[test]
fn namespaces_map_to_what_their_processes_agree_on() {
    let p = FakeProc::new("agree");
    let host = p.add(1, "host", "0::/init.scope\n");
    let svc = p.add(10, "svc", "0::/system.slice/unbound.service\n");
    let pod = p.add(
        20,
        "pod",
        &format!("0::/kubepods/besteffort/pod0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/{ID}\n"),
    );
    // A second container of the same pod: the pod stays, the container id goes.
    p.add(
        21,
        "pod",
        "0::/kubepods/besteffort/pod0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/aaaa\n",
    );
    let none = p.add(30, "none", "0::/\n");
    std::fs::create_dir_all(p.path().join("self")).unwrap();
    let mut w = Workloads::with_proc(host, p.path());
    assert_eq!(w.lookup(host), None);
    assert_eq!(
        w.lookup(svc).and_then(|w| w.unit.clone()).as_deref(),
        Some("unbound.service")
    );
    let pod = w.lookup(pod).unwrap();
    assert_eq!(
        pod.pod_uid.as_deref(),
        Some("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")
    );
    assert_eq!(pod.container_id, None);
    assert_eq!(w.lookup(none), None);
    let mut attrs = Vec::new();
    pod.push_attributes(&mut attrs);
    assert_eq!(
        attrs,
        vec![KeyValue::new(
            crate::model::attr::POD_UID,
            "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
        )]
    );
}

#[test]
fn unknown_namespaces_are_rescanned_at_most_every_few_seconds() {
    let p = FakeProc::new("rescan");
    let host = p.add(1, "host", "0::/\n");
    let mut w = Workloads::with_proc(host, p.path());
    assert_eq!(w.lookup(12345), None);
    let first = w.last_scan;
    let late = p.add(40, "late", &format!("0::/system.slice/docker-{ID}.scope\n"));
    // Scanned a moment ago: not again yet.
    assert_eq!(w.lookup(late), None);
    assert_eq!(w.last_scan, first);
    w.last_scan = Instant::now().checked_sub(RESCAN_AFTER);
    assert_eq!(
        w.lookup(late)
            .and_then(|w| w.container_id.clone())
            .as_deref(),
        Some(ID)
    );
}

#[test]
fn unreadable_and_odd_proc_entries_are_skipped() {
    let p = FakeProc::new("odd");
    let host = p.add(1, "host", "0::/\n");
    // A process without a cgroup file, one whose cgroup file is binary junk.
    let ns = p.add(50, "odd", "0::/system.slice/a.service\n");
    std::fs::remove_file(p.path().join("50/cgroup")).unwrap();
    let junk = p.add(51, "junk", "");
    std::fs::write(p.path().join("51/cgroup"), [0xff, 0xfe, 0x00, b'\n']).unwrap();
    let mut w = Workloads::with_proc(host, p.path());
    assert_eq!(w.lookup(ns), None);
    assert_eq!(w.lookup(junk), None);
}
