use std::{collections::BTreeMap, path::Path};

use super::{parse::*, *};
use crate::collectors::Collector;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc")
}

fn collector(root: &Path) -> NetstatCollector {
    NetstatCollector::new(&NetstatConfig {
        proc_root: root.to_path_buf(),
        ..NetstatConfig::default()
    })
    .unwrap()
}

/// "Group:Field" -> (metric name, value).
fn points(c: &NetstatCollector) -> BTreeMap<String, (&'static str, Number)> {
    let mut out = BTreeMap::new();
    c.visit(&mut |m: &'static Metric, a: &[KeyValue], v: Number| {
        // In key order (`model::in_key_order`): the field, then the group.
        assert_eq!(a[0].key.as_str(), ATTR_FIELD);
        assert_eq!(a[1].key.as_str(), ATTR_GROUP);
        let k = format!("{}:{}", a[1].value, a[0].value);
        assert!(out.insert(k, (m.name, v)).is_none(), "duplicate");
    });
    out
}

fn counter(p: &BTreeMap<String, (&'static str, Number)>, k: &str) -> u64 {
    match p.get(k) {
        Some(("retina.netstat.stat", Number::U64(v))) => *v,
        other => panic!("{k}: {other:?}"),
    }
}

fn gauge(p: &BTreeMap<String, (&'static str, Number)>, k: &str) -> f64 {
    match p.get(k) {
        Some(("retina.netstat.state", Number::F64(v))) => *v,
        other => panic!("{k}: {other:?}"),
    }
}

/// A scratch proc root with the given files (`None` = absent).
struct TempRoot(tempfile::TempDir);

impl TempRoot {
    fn new(tag: &str) -> TempRoot {
        let dir = tempfile::Builder::new()
            .prefix(&format!("retina-netstat-{tag}-"))
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("net")).unwrap();
        TempRoot(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn write(&self, file: &str, content: &str) {
        std::fs::write(self.path().join("net").join(file), content).unwrap();
    }
}

#[test]
fn parses_this_machines_files_exactly() {
    let mut c = collector(&fixtures().join("host"));
    c.update().unwrap();
    let p = points(&c);
    // Values copied from the fixture files.
    assert_eq!(gauge(&p, "Ip:Forwarding"), 2.0);
    assert_eq!(gauge(&p, "Ip:DefaultTTL"), 64.0);
    assert_eq!(counter(&p, "Ip:InReceives"), 11713);
    assert_eq!(counter(&p, "Ip:OutTransmits"), 7979);
    assert_eq!(counter(&p, "Icmp:OutRateLimitHost"), 94);
    assert_eq!(counter(&p, "IcmpMsg:InType3"), 1);
    assert_eq!(counter(&p, "IcmpMsg:OutType3"), 6);
    assert_eq!(gauge(&p, "Tcp:RtoAlgorithm"), 1.0);
    assert_eq!(gauge(&p, "Tcp:RtoMin"), 200.0);
    assert_eq!(gauge(&p, "Tcp:RtoMax"), 120000.0);
    assert_eq!(gauge(&p, "Tcp:MaxConn"), -1.0);
    assert_eq!(gauge(&p, "Tcp:CurrEstab"), 1.0);
    assert_eq!(counter(&p, "Tcp:ActiveOpens"), 77);
    assert_eq!(counter(&p, "Tcp:InSegs"), 11461);
    assert_eq!(counter(&p, "Udp:NoPorts"), 100);
    assert_eq!(counter(&p, "Udp:OutDatagrams"), 152);
    assert_eq!(counter(&p, "UdpLite:MemErrors"), 0);
    assert_eq!(counter(&p, "TcpExt:TW"), 16);
    assert_eq!(counter(&p, "TcpExt:DelayedACKs"), 3);
    assert_eq!(counter(&p, "TcpExt:TCPPureAcks"), 196);
    assert_eq!(counter(&p, "TcpExt:ListenDrops"), 0);
    assert_eq!(counter(&p, "TcpExt:TCPOrigDataSent"), 2017);
    assert_eq!(counter(&p, "TcpExt:TCPAODroppedIcmps"), 0);
    assert_eq!(counter(&p, "IpExt:InOctets"), 182220009);
    assert_eq!(counter(&p, "IpExt:OutOctets"), 701068);
    assert_eq!(counter(&p, "IpExt:InNoECTPkts"), 11713);
    assert_eq!(gauge(&p, "MPTcpExt:MPCurrEstab"), 0.0);
    assert_eq!(counter(&p, "MPTcpExt:WinProbe"), 0);
    assert_eq!(counter(&p, "Ip6:InReceives"), 1);
    assert_eq!(counter(&p, "Ip6:OutNoRoutes"), 0);
    assert_eq!(counter(&p, "Icmp6:InMsgs"), 1);
    assert_eq!(counter(&p, "Udp6:InDatagrams"), 0);
    assert_eq!(counter(&p, "UdpLite6:MemErrors"), 0);
    // Every field of every file, once: snmp 20 + 29 + 2 + 15 + 9 + 9, netstat
    // TcpExt 135 + IpExt 18 + MPTcpExt 76, snmp6 90 lines.
    assert_eq!(p.len(), 84 + 229 + 90);
    let gauges = p
        .values()
        .filter(|(m, _)| *m == "retina.netstat.state")
        .count();
    assert_eq!(gauges, GAUGES.len());
    assert_eq!(c.exported(), p.len());
}

#[test]
fn steady_state_updates_in_place_and_layout_changes_rebuild() {
    let root = TempRoot::new("layout");
    root.write("netstat", "TcpExt: A B\nTcpExt: 1 2\n");
    root.write("snmp", "Tcp: MaxConn CurrEstab\nTcp: -1 3\n");
    root.write("snmp6", "Ip6InReceives   \t5\nIcmp6InMsgs\t6\n");
    let mut c = collector(root.path());
    c.update().unwrap();
    let p = points(&c);
    assert_eq!(counter(&p, "TcpExt:A"), 1);
    assert_eq!(gauge(&p, "Tcp:MaxConn"), -1.0);
    assert_eq!(gauge(&p, "Tcp:CurrEstab"), 3.0);
    assert_eq!(counter(&p, "Ip6:InReceives"), 5);
    assert_eq!(counter(&p, "Icmp6:InMsgs"), 6);
    let slots_ptr = c.sources[0].slots.as_ptr();

    // Same layout: updated by position, same table.
    root.write("netstat", "TcpExt: A B\nTcpExt: 10 20\n");
    c.update().unwrap();
    assert_eq!(counter(&points(&c), "TcpExt:B"), 20);
    assert_eq!(c.sources[0].slots.as_ptr(), slots_ptr);

    // A new IcmpMsg pair (a new ICMP type): rebuilt.
    root.write(
        "snmp",
        "Tcp: MaxConn CurrEstab\nTcp: -1 4\nIcmpMsg: InType3\nIcmpMsg: 7\n",
    );
    c.update().unwrap();
    let p = points(&c);
    assert_eq!(gauge(&p, "Tcp:CurrEstab"), 4.0);
    assert_eq!(counter(&p, "IcmpMsg:InType3"), 7);
    // A field renamed with the same count: rebuilt too (layout compared byte for byte).
    root.write("netstat", "TcpExt: A C\nTcpExt: 11 21\n");
    c.update().unwrap();
    let p = points(&c);
    assert_eq!(counter(&p, "TcpExt:C"), 21);
    assert!(!p.contains_key("TcpExt:B"));
    // A group removed.
    root.write("snmp", "Tcp: MaxConn CurrEstab\nTcp: -1 4\n");
    c.update().unwrap();
    assert!(!points(&c).contains_key("IcmpMsg:InType3"));

    // snmp6 disappears (IPv6 disabled): no data from it, no error.
    std::fs::remove_file(root.path().join("net/snmp6")).unwrap();
    c.update().unwrap();
    let p = points(&c);
    assert!(!p.contains_key("Ip6:InReceives"));
    assert!(p.contains_key("TcpExt:A"));
}

#[test]
fn filter_on_group_and_field() {
    let mut c = NetstatCollector::new(&NetstatConfig {
        proc_root: fixtures().join("host"),
        include: Pattern::list(&["TcpExt:Listen.*", "Tcp:.*", "Ip6:InReceives"]).unwrap(),
        exclude: Pattern::list(&["Tcp:Rto.*"]).unwrap(),
        ..NetstatConfig::default()
    })
    .unwrap();
    c.update().unwrap();
    let keys: Vec<String> = points(&c).into_keys().collect();
    assert_eq!(
        keys,
        [
            "Ip6:InReceives",
            "Tcp:ActiveOpens",
            "Tcp:AttemptFails",
            "Tcp:CurrEstab",
            "Tcp:EstabResets",
            "Tcp:InCsumErrors",
            "Tcp:InErrs",
            "Tcp:InSegs",
            "Tcp:MaxConn",
            "Tcp:OutRsts",
            "Tcp:OutSegs",
            "Tcp:PassiveOpens",
            "Tcp:RetransSegs",
            "TcpExt:ListenDrops",
            "TcpExt:ListenOverflows",
        ]
    );
}

/// Runs a fixture case and returns the error and the collector's points.
fn case(name: &str) -> NetstatError {
    let mut c = collector(&fixtures().join(name));
    let err = c.update().unwrap_err();
    // The files that are fine were still read.
    assert!(c.exported() > 0, "{name}: nothing from the good files");
    err
}

fn malformed(err: &NetstatError) -> (&Path, usize, &Problem) {
    match err {
        NetstatError::Malformed {
            path,
            line,
            problem,
        } => (path, *line, problem),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_fixtures() {
    let e = case("missing_value_line");
    let (path, line, problem) = malformed(&e);
    assert!(path.ends_with("missing_value_line/net/snmp"));
    assert_eq!(line, 11);
    assert_eq!(
        problem,
        &Problem::MissingValueLine {
            group: "UdpLite".into()
        }
    );
    assert!(
        e.to_string().contains("missing_value_line/net/snmp:11"),
        "{e}"
    );

    let e = case("count_mismatch");
    let (path, line, problem) = malformed(&e);
    assert!(path.ends_with("count_mismatch/net/netstat"));
    assert_eq!(line, 4);
    assert_eq!(
        problem,
        &Problem::CountMismatch {
            group: "IpExt".into(),
            names: 18,
            values: 17
        }
    );

    let e = case("not_a_number");
    let (path, line, problem) = malformed(&e);
    assert!(path.ends_with("not_a_number/net/netstat"));
    assert_eq!(line, 2);
    assert_eq!(
        problem,
        &Problem::NotANumber {
            field: "TcpExt:TW".into(),
            text: "16x".into()
        }
    );

    let e = case("overflow");
    let (_, line, problem) = malformed(&e);
    assert_eq!(line, 2);
    assert!(
        matches!(problem, Problem::NotANumber { field, text }
                if field == "Ip:InReceives" && text == "18446744073709551616"),
        "{problem:?}"
    );

    let e = case("negative_counter");
    let (path, line, problem) = malformed(&e);
    assert!(path.ends_with("negative_counter/net/snmp"));
    assert_eq!(line, 8);
    assert_eq!(
        problem,
        &Problem::NegativeCounter {
            field: "Tcp:ActiveOpens".into(),
            value: -77
        }
    );

    let e = case("prefix_mismatch");
    let (_, line, problem) = malformed(&e);
    assert_eq!(line, 6);
    assert_eq!(
        problem,
        &Problem::PrefixMismatch {
            header: "MPTcpExt".into(),
            values: "MPTcpExtra".into()
        }
    );

    let e = case("no_prefix");
    let (_, line, problem) = malformed(&e);
    assert_eq!((line, problem), (1, &Problem::NoPrefix));

    let e = case("empty");
    let (path, line, problem) = malformed(&e);
    assert!(path.ends_with("empty/net/netstat"));
    assert_eq!((line, problem), (1, &Problem::Empty));

    let e = case("snmp6_bad_line");
    let (path, line, problem) = malformed(&e);
    assert!(path.ends_with("snmp6_bad_line/net/snmp6"));
    assert_eq!((line, problem), (3, &Problem::Snmp6Fields { tokens: 3 }));

    let e = case("duplicate_field");
    let (_, line, problem) = malformed(&e);
    assert_eq!(line, 9);
    assert_eq!(
        problem,
        &Problem::Duplicate {
            group: "Udp".into(),
            field: "NoPorts".into()
        }
    );

    match case("missing_file") {
        NetstatError::Read { path, source } => {
            assert!(path.ends_with("missing_file/net/netstat"));
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ipv6_disabled_is_no_error() {
    let mut c = collector(&fixtures().join("no_ipv6"));
    c.update().unwrap();
    let p = points(&c);
    assert!(p.contains_key("TcpExt:ListenDrops"));
    assert!(!p.keys().any(|k| k.starts_with("Ip6:")));
}

#[test]
fn a_malformed_cycle_updates_nothing_from_that_file() {
    let root = TempRoot::new("keep");
    root.write("netstat", "TcpExt: A B\nTcpExt: 1 2\n");
    root.write("snmp", "Udp: X\nUdp: 5\n");
    let mut c = collector(root.path());
    c.update().unwrap();
    // The second value is bad: the first must not be updated either.
    root.write("netstat", "TcpExt: A B\nTcpExt: 100 x\n");
    root.write("snmp", "Udp: X\nUdp: 6\n");
    let err = c.update().unwrap_err();
    assert!(err.to_string().contains("net/netstat:2"), "{err}");
    let p = points(&c);
    assert_eq!(counter(&p, "TcpExt:A"), 1);
    assert_eq!(counter(&p, "TcpExt:B"), 2);
    // The other file was updated.
    assert_eq!(counter(&p, "Udp:X"), 6);
    // Same for a malformed file with a new layout.
    root.write("netstat", "TcpExt: A B C\nTcpExt: 100 200 -3\n");
    c.update().unwrap_err();
    let p = points(&c);
    assert_eq!(counter(&p, "TcpExt:A"), 1);
    assert!(!p.contains_key("TcpExt:C"));
    // A missing mandatory file keeps the last values and reports the path.
    std::fs::remove_file(root.path().join("net/netstat")).unwrap();
    let err = c.update().unwrap_err();
    assert!(err.to_string().contains("net/netstat"), "{err}");
    assert_eq!(counter(&points(&c), "TcpExt:A"), 1);
}

#[test]
fn numbers() {
    assert_eq!(parse_num(b"0"), Some(0));
    assert_eq!(parse_num(b"18446744073709551615"), Some(u64::MAX as i128));
    assert_eq!(parse_num(b"18446744073709551616"), None);
    assert_eq!(parse_num(b"99999999999999999999"), None);
    assert_eq!(parse_num(b"999999999999999999999"), None);
    assert_eq!(parse_num(b"-1"), Some(-1));
    assert_eq!(parse_num(b"-9223372036854775808"), Some(i64::MIN as i128));
    assert_eq!(parse_num(b"-9223372036854775809"), None);
    assert_eq!(parse_num(b"-"), None);
    assert_eq!(parse_num(b""), None);
    assert_eq!(parse_num(b"+1"), None);
    assert_eq!(parse_num(b"1.5"), None);
    assert_eq!(
        split_snmp6(b"Ip6InReceives"),
        (&b"Ip6"[..], &b"InReceives"[..])
    );
    assert_eq!(
        split_snmp6(b"UdpLite6InErrors"),
        (&b"UdpLite6"[..], &b"InErrors"[..])
    );
    assert_eq!(
        split_snmp6(b"Icmp6OutType133"),
        (&b"Icmp6"[..], &b"OutType133"[..])
    );
    assert_eq!(split_snmp6(b"Weird"), (&b"snmp6"[..], &b"Weird"[..]));
    assert_eq!(split_snmp6(b"Ip6"), (&b"snmp6"[..], &b"Ip6"[..]));
}

#[test]
fn reads_real_proc() {
    let mut c = NetstatCollector::new(&NetstatConfig::default()).unwrap();
    c.update().unwrap();
    let p = points(&c);
    assert_eq!(gauge(&p, "Tcp:MaxConn"), -1.0);
    assert!(counter(&p, "Ip:InReceives") > 0);
    // The second cycle takes the in-place path.
    let layout = c.sources[1].layout.as_ptr();
    c.update().unwrap();
    assert_eq!(c.sources[1].layout.as_ptr(), layout);
}

#[test]
fn config_deserializes_with_defaults() {
    let c: NetstatConfig = serde_json::from_str(r#"{"proc_root": "/host/proc"}"#).unwrap();
    assert!(c.enabled);
    assert_eq!(c.proc_root, Path::new("/host/proc"));
    let c: NetstatConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, NetstatConfig::default());
    assert!(serde_json::from_str::<NetstatConfig>(r#"{"procroot": "/"}"#).is_err());
}
