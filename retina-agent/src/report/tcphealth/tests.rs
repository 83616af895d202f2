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
        source: "ebpf",
    });
    let text = render(all);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[2].contains("pod=b") && lines[2].contains("20"), "{text}");
    assert!(lines[3].contains("pod=a netns=4026532000"), "{text}");
    assert!(lines[4].contains("unit=x.service") && lines[4].contains("ebpf"));
    assert!(!text.contains("pod=c"), "{text}");
    assert_eq!(render(Vec::new()), "");
}
