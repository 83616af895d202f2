use super::*;

fn metric(name: &'static str, kind: Kind) -> &'static Metric {
    Box::leak(Box::new(Metric {
        name,
        unit: "1",
        description: "",
        kind,
    }))
}

fn point(m: &'static Metric, attrs: &[(&str, &str)], v: u64) -> Point {
    Point {
        metric: m,
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), Json::from(*v)))
            .collect(),
        value: Number::U64(v),
    }
}

#[test]
fn drops_name_the_workload_of_their_namespace() {
    let drops = metric("retina.drop.count", Kind::Counter);
    let uid = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
    let rows = rows(&[
        point(
            drops,
            &[
                ("drop.reason", "SOCKET_RCVBUFF"),
                ("network.namespace.name", "cni-1"),
                ("k8s.pod.uid", uid),
                ("container.id", "abc"),
            ],
            3,
        ),
        point(
            drops,
            &[
                ("drop.reason", "NO_SOCKET"),
                ("systemd.unit", "unbound.service"),
            ],
            2,
        ),
    ]);
    assert_eq!(
        rows.iter().map(|r| r.place.as_str()).collect::<Vec<_>>(),
        [
            format!("reason=SOCKET_RCVBUFF netns=cni-1 pod={uid} container=abc"),
            "reason=NO_SOCKET unit=unbound.service".to_string(),
        ]
    );
}

#[test]
fn every_layer_sorted_by_count_with_its_place() {
    let drops = metric("retina.drop.count", Kind::Counter);
    let nic = metric("retina.nic.driver.stat", Kind::Counter);
    let qdisc = metric("retina.qdisc.drops", Kind::Counter);
    let ct = metric("retina.conntrack.stat", Kind::Counter);
    let softnet = metric("retina.softnet.dropped", Kind::Counter);
    let netdev = metric("system.network.packet.dropped", Kind::Counter);
    let gauge = metric("retina.drop.map.entries", Kind::Gauge);
    let points = vec![
        point(
            drops,
            &[
                ("drop.reason", "NO_SOCKET"),
                ("network.interface.name", "lo"),
                ("network.namespace.name", "a"),
                ("drop.location", "__udp4_lib_rcv"),
            ],
            1000,
        ),
        point(
            drops,
            &[
                ("drop.reason", "NO_SOCKET"),
                ("network.interface.name", "lo"),
                ("network.namespace.name", "a"),
                ("drop.location", "__udp4_lib_rcv"),
                ("network.type", "ipv6"),
            ],
            5,
        ),
        point(
            nic,
            &[
                ("network.interface.name", "eth0"),
                ("nic.stat.name", "rx_missed_errors"),
            ],
            7,
        ),
        // Not a loss counter.
        point(
            nic,
            &[
                ("network.interface.name", "eth0"),
                ("nic.stat.name", "rx_packets"),
            ],
            99999,
        ),
        point(
            qdisc,
            &[
                ("network.interface.name", "v0"),
                ("qdisc.kind", "tbf"),
                ("qdisc.handle", "8001:"),
                ("qdisc.parent", "root"),
            ],
            770,
        ),
        point(ct, &[("conntrack.stat", "insert_failed"), ("cpu", "0")], 3),
        point(ct, &[("conntrack.stat", "insert_failed"), ("cpu", "1")], 4),
        point(ct, &[("conntrack.stat", "found"), ("cpu", "1")], 50),
        point(softnet, &[("cpu", "1")], 2),
        point(
            netdev,
            &[
                ("network.interface.name", "v0"),
                ("network.io.direction", "receive"),
            ],
            0,
        ),
        point(gauge, &[], 12),
    ];
    let got: Vec<(u64, &str, &str, String)> = rows(&points)
        .into_iter()
        .map(|r| (r.packets, r.layer.as_str(), r.metric, r.place))
        .collect();
    let want = vec![
        (
            1005,
            "stack reason",
            "retina.drop.count",
            "reason=NO_SOCKET if=lo netns=a".to_string(),
        ),
        (
            1005,
            "stack location",
            "retina.drop.count",
            "function=__udp4_lib_rcv reason=NO_SOCKET if=lo netns=a".into(),
        ),
        (
            770,
            "qdisc",
            "retina.qdisc.drops",
            "if=v0 qdisc=tbf handle=8001: parent=root".into(),
        ),
        (
            7,
            "NIC",
            "retina.nic.driver.stat",
            "if=eth0 stat=rx_missed_errors".into(),
        ),
        (
            7,
            "conntrack",
            "retina.conntrack.stat",
            "stat=insert_failed".into(),
        ),
        (2, "backlog", "retina.softnet.dropped", "cpu=1".into()),
    ];
    assert_eq!(got, want);
    let text = render(&rows(&points));
    assert!(
        text.starts_with("where packets died:\nPACKETS  LAYER"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("   1005  stack location  retina.drop.count")),
        "{text}"
    );
}

#[test]
fn nothing_lost_says_so() {
    assert_eq!(render(&[]), "where packets died: no loss counter moved\n");
    let gauge = metric("retina.drop.map.entries", Kind::Gauge);
    assert!(reads(&QDISC_DROPS) && !reads(gauge));
}
