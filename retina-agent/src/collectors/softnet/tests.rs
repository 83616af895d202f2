use std::collections::BTreeMap;

use super::*;
use crate::collectors::Collector;

/// 2.6.35-3.10: 10 columns (received_rps last).
const V2_6: &str = "0000a1b2 00000003 00000004 00000000 00000000 00000000 00000000 00000000 00000000 00000005\n\
                        00000010 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n";
/// 3.11-5.9: 11 columns.
const V3_11: &str = "0000a1b2 00000003 00000004 00000000 00000000 00000000 00000000 00000000 00000000 00000005 00000006\n";
/// 5.10+: 13 columns, with backlog length and CPU number.
const V5_10: &str = "0000a1b2 00000003 00000004 00000000 00000000 00000000 00000000 00000000 00000000 00000005 00000006 00000007 00000000\n\
                         00000100 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002\n";
/// This machine's 6.18: 15 columns.
const V6_18: &str = "0000000a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n\
                         00001806 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000003 00000001 00000002 00000001\n";

fn collector(dir: &std::path::Path, text: &str, online: Option<&str>) -> SoftnetCollector {
    std::fs::create_dir_all(dir.join("proc/net")).unwrap();
    std::fs::create_dir_all(dir.join("sys/devices/system/cpu")).unwrap();
    std::fs::write(dir.join("proc/net/softnet_stat"), text).unwrap();
    if let Some(o) = online {
        std::fs::write(dir.join("sys/devices/system/cpu/online"), o).unwrap();
    }
    SoftnetCollector::new(&SoftnetConfig {
        enabled: true,
        proc_root: dir.join("proc"),
        sys_root: dir.join("sys"),
    })
    .unwrap()
}

/// A scratch directory, removed when the test ends (also when it fails).
fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("retina-softnet-{name}-"))
        .tempdir()
        .unwrap()
}

/// (metric, cpu) -> value.
fn points(c: &SoftnetCollector) -> BTreeMap<(&'static str, i64), u64> {
    let mut out = BTreeMap::new();
    c.visit(&mut |m: &'static Metric, a: &[KeyValue], v: Number| {
        let opentelemetry::Value::I64(cpu) = a[0].value else {
            panic!("{a:?}")
        };
        let Number::U64(v) = v else { panic!() };
        assert!(out.insert((m.name, cpu), v).is_none());
    });
    out
}

#[test]
fn every_layout() {
    let dir = tmp("layouts");
    let d = dir.path();
    // 10 columns, CPUs 0 and 2 online (1 offline): rows map to the online list.
    let mut c = collector(d, V2_6, Some("0,2\n"));
    c.update().unwrap();
    let p = points(&c);
    assert_eq!(p[&("retina.softnet.processed", 0)], 0xa1b2);
    assert_eq!(p[&("retina.softnet.dropped", 0)], 3);
    assert_eq!(p[&("retina.softnet.time_squeeze", 0)], 4);
    assert_eq!(p[&("retina.softnet.received_rps", 0)], 5);
    assert_eq!(p[&("retina.softnet.processed", 2)], 0x10);
    assert!(!p.contains_key(&("retina.softnet.flow_limit_count", 0)));
    assert!(!p.contains_key(&("retina.softnet.backlog.length", 0)));
    assert_eq!(p.len(), 8);

    let dir = tmp("v311");
    let d = dir.path();
    let mut c = collector(d, V3_11, None);
    c.update().unwrap();
    let p = points(&c);
    assert_eq!(p[&("retina.softnet.flow_limit_count", 0)], 6);
    assert_eq!(p.len(), 5);

    let dir = tmp("v510");
    let d = dir.path();
    let mut c = collector(d, V5_10, Some("0-1\n"));
    c.update().unwrap();
    let p = points(&c);
    // CPU numbers come from the file, not the online list.
    assert_eq!(p[&("retina.softnet.backlog.length", 0)], 7);
    assert_eq!(p[&("retina.softnet.processed", 2)], 0x100);
    assert_eq!(p.len(), 12);
    assert_eq!(c.columns(), 13);

    let dir = tmp("v618");
    let d = dir.path();
    let mut c = collector(d, V6_18, None);
    c.update().unwrap();
    let p = points(&c);
    assert_eq!(p[&("retina.softnet.processed", 1)], 0x1806);
    assert_eq!(p[&("retina.softnet.backlog.length", 1)], 3);
    assert_eq!(p.len(), 12);
    assert_eq!(c.columns(), 15);

    // Nine columns (2.6 before RPS).
    let nine = "00000001 00000002 00000003 00000000 00000000 00000000 00000000 00000000 00000000\n";
    let dir = tmp("v9");
    let d = dir.path();
    let mut c = collector(d, nine, Some("0"));
    c.update().unwrap();
    assert_eq!(points(&c).len(), 3);
}

#[test]
fn malformed_lines_are_errors_and_keep_the_last_values() {
    let dir = tmp("bad");
    let d = dir.path();
    let mut c = collector(d, V6_18, None);
    c.update().unwrap();
    let before = points(&c);
    let path = d.join("proc/net/softnet_stat");
    for (text, want) in [
        ("", "file is empty"),
        ("\n\n", "file is empty"),
        ("0000000a 00000000\n", "2 columns, expected at least 9"),
        (
            "0000000a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 0000000g 00000000\n",
            "column 9: `0000000g` is not a hexadecimal",
        ),
        (
            "00000001 00000002 00000003 00000000 00000000 00000000 00000000 00000000 00000000\n\
                 00000001 00000002 00000003 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n",
            "10 columns, but the first line has 9",
        ),
        (
            "00000001 00000002 00000003 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001\n\
                 00000001 00000002 00000003 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001\n",
            "CPU number 1 appears twice",
        ),
        ("\u{0}\u{ff}garbage \u{7f}\n", "is not a hexadecimal"),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = c.update().unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(err.contains("softnet_stat:"), "{err}");
        assert_eq!(points(&c), before, "{text:?} changed the values");
    }
    std::fs::write(&path, V6_18).unwrap();
    c.update().unwrap();
    // A missing file is a read error naming it.
    let mut missing = SoftnetCollector::new(&SoftnetConfig {
        proc_root: d.join("nowhere"),
        ..SoftnetConfig::default()
    })
    .unwrap();
    let err = missing.update().unwrap_err().to_string();
    assert!(
        err.contains("reading") && err.contains("nowhere/net/softnet_stat"),
        "{err}"
    );
}

#[test]
fn counters_widen_and_layout_changes_rebuild() {
    let dir = tmp("wrap");
    let d = dir.path();
    let row = |processed: u32| {
        format!(
            "{processed:08x} 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n"
        )
    };
    let mut c = collector(d, &row(0xffff_fff0), None);
    c.update().unwrap();
    std::fs::write(d.join("proc/net/softnet_stat"), row(0x20)).unwrap();
    c.update().unwrap();
    assert_eq!(
        points(&c)[&("retina.softnet.processed", 0)],
        (1 << 32) + 0x20
    );
    // A second CPU comes online: rebuilt, values as read.
    std::fs::write(d.join("proc/net/softnet_stat"), V5_10).unwrap();
    c.update().unwrap();
    assert_eq!(points(&c)[&("retina.softnet.processed", 0)], 0xa1b2);
    assert_eq!(c.cpus(), 2);
}

#[test]
fn parses_this_kernels_file() {
    let mut c = SoftnetCollector::new(&SoftnetConfig::default()).unwrap();
    c.update().unwrap();
    assert!(c.cpus() >= 1);
    assert!(c.columns() >= MIN_COLUMNS);
    let p = points(&c);
    assert!(p.keys().any(|k| k.0 == "retina.softnet.processed"));
}

#[test]
fn config_rejects_unknown_keys() {
    let c: SoftnetConfig = serde_json::from_str(r#"{"enabled": false}"#).unwrap();
    assert!(!c.enabled);
    assert_eq!(c.proc_root, PathBuf::from("/proc"));
    assert!(serde_json::from_str::<SoftnetConfig>(r#"{"proc": "/x"}"#).is_err());
}
