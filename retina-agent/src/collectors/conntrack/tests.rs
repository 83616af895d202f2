use std::collections::BTreeMap;

use super::*;
use crate::collectors::Collector;

/// 6.x (this machine's 6.18).
const NEW: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
        00000003  00000000 00000001 00000000 00000002 00000000 00000000 00000000 00000004 00000000 00000005 00000006 00000000  00000000 00000000 00000000 00000007\n\
        00000003  00000000 00000010 00000000 00000000 00000000 00000000 00000000 00000001 00000001 00000000 00000000 00000000  00000000 00000000 00000000 00000000\n";
/// 3.x-4.x: `searched`, `new`, `delete`, `delete_list` still counted.
const OLD: &str = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
        0000000a  00000100 00000020 00000030 00000000 00000001 00000002 00000002 00000030 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000\n";

/// A scratch directory, removed when the test ends (also when it fails).
fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("retina-ct-{name}-"))
        .tempdir()
        .unwrap()
}

fn setup(d: &std::path::Path, stats: Option<&str>, possible: &str) -> ConntrackCollector {
    std::fs::create_dir_all(d.join("proc/net/stat")).unwrap();
    std::fs::create_dir_all(d.join("proc/sys/net/netfilter")).unwrap();
    std::fs::create_dir_all(d.join("sys/devices/system/cpu")).unwrap();
    if let Some(s) = stats {
        std::fs::write(d.join("proc/net/stat/nf_conntrack"), s).unwrap();
        std::fs::write(d.join("proc/sys/net/netfilter/nf_conntrack_count"), "3\n").unwrap();
        std::fs::write(
            d.join("proc/sys/net/netfilter/nf_conntrack_max"),
            "262144\n",
        )
        .unwrap();
    }
    std::fs::write(d.join("sys/devices/system/cpu/possible"), possible).unwrap();
    ConntrackCollector::new(&ConntrackConfig {
        enabled: true,
        proc_root: d.join("proc"),
        sys_root: d.join("sys"),
    })
    .unwrap()
}

fn points(c: &ConntrackCollector) -> BTreeMap<(String, String, i64), u64> {
    let mut out = BTreeMap::new();
    c.visit(&mut |m: &'static Metric, a: &[KeyValue], v: Number| {
        let Number::U64(v) = v else { panic!() };
        let (stat, cpu) = match a {
            [] => (String::new(), -1),
            [s, c] => {
                let opentelemetry::Value::I64(cpu) = c.value else {
                    panic!("{a:?}")
                };
                (s.value.to_string(), cpu)
            }
            _ => panic!("{a:?}"),
        };
        assert!(out.insert((m.name.to_string(), stat, cpu), v).is_none());
    });
    out
}

fn stat(p: &BTreeMap<(String, String, i64), u64>, name: &str, cpu: i64) -> Option<u64> {
    p.get(&("retina.conntrack.stat".to_string(), name.to_string(), cpu))
        .copied()
}

#[test]
fn new_and_old_layouts_by_header_name() {
    let dir = tmp("new");
    let d = dir.path();
    let mut c = setup(d, Some(NEW), "0-1\n");
    c.update().unwrap();
    assert!(c.present());
    let p = points(&c);
    assert_eq!(
        p[&("retina.conntrack.entries".into(), String::new(), -1)],
        3
    );
    assert_eq!(
        p[&("retina.conntrack.limit".into(), String::new(), -1)],
        262144
    );
    assert_eq!(stat(&p, "found", 0), Some(1));
    assert_eq!(stat(&p, "found", 1), Some(0x10));
    assert_eq!(stat(&p, "invalid", 0), Some(2));
    assert_eq!(stat(&p, "insert_failed", 1), Some(1));
    assert_eq!(stat(&p, "drop", 0), Some(5));
    assert_eq!(stat(&p, "early_drop", 0), Some(6));
    assert_eq!(stat(&p, "search_restart", 0), Some(7));
    assert_eq!(stat(&p, "entries", 0), None);
    // 16 columns besides entries, 2 CPUs, plus the two gauges.
    assert_eq!(p.len(), 16 * 2 + 2);

    let dir = tmp("old");
    let d = dir.path();
    // One possible CPU numbered 4 (a sparse possible mask).
    let mut c = setup(d, Some(OLD), "4\n");
    c.update().unwrap();
    let p = points(&c);
    assert_eq!(stat(&p, "searched", 4), Some(0x100));
    assert_eq!(stat(&p, "delete_list", 4), Some(2));
    assert_eq!(stat(&p, "clashres", 4), None);

    // The layout changes under a running collector (another kernel's file).
    std::fs::write(d.join("proc/net/stat/nf_conntrack"), NEW).unwrap();
    std::fs::write(d.join("sys/devices/system/cpu/possible"), "0-1").unwrap();
    c.update().unwrap();
    assert_eq!(stat(&points(&c), "search_restart", 0), Some(7));
}

#[test]
fn absent_conntrack_is_reported_not_an_error() {
    let dir = tmp("absent");
    let d = dir.path();
    let mut c = setup(d, None, "0\n");
    c.update().unwrap();
    assert!(!c.present());
    assert!(points(&c).is_empty());
    // Loaded later: picked up.
    std::fs::write(d.join("proc/net/stat/nf_conntrack"), NEW).unwrap();
    std::fs::write(d.join("proc/sys/net/netfilter/nf_conntrack_count"), "3\n").unwrap();
    std::fs::write(d.join("proc/sys/net/netfilter/nf_conntrack_max"), "9\n").unwrap();
    c.update().unwrap();
    assert!(c.present());
    assert_eq!(c.exported(), 16 * 2);
}

#[test]
fn malformed_files() {
    let dir = tmp("bad");
    let d = dir.path();
    let mut c = setup(d, Some(NEW), "0-1\n");
    c.update().unwrap();
    let before = points(&c);
    let path = d.join("proc/net/stat/nf_conntrack");
    for (text, want) in [
        ("", "file is empty"),
        ("entries found\n", "no CPU lines"),
        (
            "entries found\n00000001\n",
            "1 values, but the header names 2",
        ),
        (
            "entries found\n00000001 00000002 00000003\n",
            "3 values, but the header names 2",
        ),
        (
            "entries found\n00000001 0000zz02\n",
            "column found: `0000zz02`",
        ),
        (
            "entries found found\n00000001 00000002 00000003\n",
            "found appears twice",
        ),
        ("entries f\u{1}und\n00000001 00000002\n", "not printable"),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = c.update().unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(err.contains("nf_conntrack:"), "{err}");
        assert_eq!(points(&c), before, "{text:?}");
    }
    std::fs::write(&path, NEW).unwrap();
    std::fs::write(d.join("proc/sys/net/netfilter/nf_conntrack_count"), "x\n").unwrap();
    let err = c.update().unwrap_err().to_string();
    assert!(
        err.contains("nf_conntrack_count") && err.contains("`x\n`"),
        "{err}"
    );
}

#[test]
fn parses_this_kernels_files() {
    let mut c = ConntrackCollector::new(&ConntrackConfig::default()).unwrap();
    c.update().unwrap();
    // This machine's kernel has conntrack built in (see the toolchain notes).
    assert!(c.present());
    let p = points(&c);
    assert!(stat(&p, "insert_failed", 0).is_some(), "{p:?}");
    assert!(p.contains_key(&("retina.conntrack.limit".into(), String::new(), -1)));
}
