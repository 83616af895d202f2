use super::*;

fn point(pod: &str, field: &str, v: u64) -> Point {
    Point {
        metric: &WORKLOAD_NETSTAT_COUNTER,
        attributes: vec![
            ("k8s.pod.uid".into(), Json::from(pod)),
            ("netstat.field".into(), Json::from(field)),
            ("netstat.group".into(), Json::from("Tcp")),
            ("network.namespace.inode".into(), Json::from(4026532000u64)),
        ],
        value: Number::U64(v),
    }
}

#[test]
fn workloads_largest_first_and_quiet_ones_left_out() {
    let points = [
        point("a", "RetransSegs", 3),
        point("a", "AttemptFails", 1),
        point("b", "AttemptFails", 20),
        point("c", "RetransSegs", 0),
        point("c", "OutRsts", 9),
    ];
    let rows = netns_rows(&points);
    assert_eq!(rows.len(), 3);
    // A second source's row for a service in the host's namespace.
    let mut all = rows;
    all.push(Row {
        workload: "unit=x.service".into(),
        retransmits: 2,
        failed_connects: 0,
        source: "cgroup",
    });
    let text = render(all);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[2].contains("pod=b") && lines[2].contains("20"), "{text}");
    assert!(lines[3].contains("pod=a netns=4026532000"), "{text}");
    assert!(lines[4].contains("unit=x.service") && lines[4].contains("cgroup"));
    assert!(!text.contains("pod=c"), "{text}");
    assert_eq!(render(Vec::new()), "");
}

#[test]
fn tcp_events_name_the_socket_owner_else_its_cgroup() {
    let event = |metric: &'static Metric, attrs: &[(&str, &str)], v: u64| Point {
        metric,
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), Json::from(*v)))
            .collect(),
        value: Number::U64(v),
    };
    let unit = [
        ("socket.cgroup", "/system.slice/a.service"),
        ("systemd.unit", "a.service"),
    ];
    let bare = [("socket.cgroup", "/user.slice/x")];
    let points = [
        event(&TCP_RETRANSMITS, &unit, 4),
        event(&TCP_CONNECT_FAILURES, &unit, 2),
        event(&TCP_CONNECT_FAILURES, &bare, 7),
        // Another metric of the same owner is not this section's.
        event(&WORKLOAD_NETSTAT_COUNTER, &unit, 99),
    ];
    let rows = cgroup_rows(&points);
    assert_eq!(
        rows,
        vec![
            Row {
                workload: "cgroup=/user.slice/x".into(),
                retransmits: 0,
                failed_connects: 7,
                source: "cgroup",
            },
            Row {
                workload: "unit=a.service".into(),
                retransmits: 4,
                failed_connects: 2,
                source: "cgroup",
            },
        ]
    );
    assert!(reads(&TCP_RETRANSMITS) && reads(&TCP_CONNECT_FAILURES));
    let text = render(rows);
    assert!(text.lines().nth(2).is_some_and(|l| l.contains("cgroup=/user.slice/x")), "{text}");
}
