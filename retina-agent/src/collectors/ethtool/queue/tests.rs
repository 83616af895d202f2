use super::*;

fn p(name: &str) -> Option<(String, u32)> {
    parse(name).map(|q| (q.base, q.queue))
}

fn s(base: &str, q: u32) -> Option<(String, u32)> {
    Some((base.to_string(), q))
}

#[test]
fn recognises_driver_patterns() {
    assert_eq!(p("rx_queue_0_packets"), s("rx_queue_packets", 0));
    assert_eq!(p("tx_queue_3_bytes"), s("tx_queue_bytes", 3));
    assert_eq!(p("rx_queue_0_xdp_packets"), s("rx_queue_xdp_packets", 0));
    assert_eq!(p("rx0_packets"), s("rx_queue_packets", 0));
    assert_eq!(p("tx12_bytes"), s("tx_queue_bytes", 12));
    assert_eq!(p("rx0_xdp_tx_xmit"), s("rx_queue_xdp_tx_xmit", 0));
    assert_eq!(p("ch3_events"), s("ch_queue_events", 3));
    assert_eq!(p("rx-0.packets"), s("rx_queue_packets", 0));
    assert_eq!(p("tx-1.bytes"), s("tx_queue_bytes", 1));
    assert_eq!(p("tx-0.tx_packets"), s("tx_queue_packets", 0));
    assert_eq!(p("queue_0_tx_cnt"), s("queue_tx_cnt", 0));
    assert_eq!(p("[2]: rx_ucast_packets"), s("rx_ucast_packets", 2));
    assert_eq!(p("rx_posted_desc[7]"), s("rx_posted_desc", 7));
}

#[test]
fn leaves_device_wide_names_alone() {
    for name in [
        "rx_packets",
        "rx_drops",
        "peer_ifindex",
        "rx_64_bytes",
        "rx_1024_to_1518_bytes",
        "tx_65_127_byte_packets",
        "rx_prio0_bytes",
        "rx_queue_",
        "rx_queue_x_packets",
        "rx0",
        "rx0_",
        "queue_",
        "[x]: a",
        "[1]:",
        "[3]",
        "a[b]",
        "tx_tx_timeouts",
        "rx99999999_packets",
    ] {
        assert_eq!(p(name), None, "{name}");
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn series(plan: &Plan) -> Vec<(&str, Option<u32>)> {
    plan.series
        .iter()
        .map(|s| (s.name.as_str(), s.queue))
        .collect()
}

/// eth0 on the project's VMs (virtio_net, kernel 6.18).
const VIRTIO: &[&str] = &[
    "rx_drops",
    "rx_kicks",
    "tx_kicks",
    "rx0_drops",
    "rx0_kicks",
    "rx1_drops",
    "rx1_kicks",
    "tx0_kicks",
    "tx1_kicks",
];

#[test]
fn sum_mode_adds_queues_up() {
    let p = plan(&names(VIRTIO), QueueMode::Sum, |_| true);
    assert_eq!(
        series(&p),
        [
            ("rx_drops", None),
            ("rx_kicks", None),
            ("tx_kicks", None),
            ("rx_queue_drops", None),
            ("rx_queue_kicks", None),
            ("tx_queue_kicks", None),
        ]
    );
    assert_eq!(p.slots, [0, 1, 2, 3, 4, 3, 4, 5, 5]);
}

#[test]
fn split_mode_moves_the_queue_to_an_attribute() {
    let p = plan(&names(VIRTIO), QueueMode::Split, |_| true);
    assert_eq!(p.series.len(), 9);
    assert_eq!(p.series[3].name, "rx_queue_drops");
    assert_eq!(p.series[3].queue, Some(0));
    assert_eq!(p.series[5].queue, Some(1));
    assert_eq!(p.slots, (0..9).collect::<Vec<u32>>());
}

#[test]
fn keep_and_drop_modes() {
    let keep = plan(&names(VIRTIO), QueueMode::Keep, |_| true);
    assert_eq!(keep.series.len(), 9);
    assert!(keep.series.iter().all(|s| s.queue.is_none()));
    assert_eq!(keep.series[3].name, "rx0_drops");
    let drop = plan(&names(VIRTIO), QueueMode::Drop, |_| true);
    assert_eq!(
        series(&drop),
        [("rx_drops", None), ("rx_kicks", None), ("tx_kicks", None)]
    );
    assert_eq!(drop.slots[3..], [DROPPED; 6]);
}

#[test]
fn filter_applies_to_exported_names_once() {
    let mut asked = Vec::new();
    let p = plan(&names(VIRTIO), QueueMode::Sum, |n| {
        asked.push(n.to_string());
        !n.ends_with("kicks")
    });
    assert_eq!(series(&p), [("rx_drops", None), ("rx_queue_drops", None)]);
    assert_eq!(asked.len(), 6, "{asked:?}");
    assert_eq!(
        p.slots,
        [
            0, DROPPED, DROPPED, 1, DROPPED, 1, DROPPED, DROPPED, DROPPED
        ]
    );
}

#[test]
fn collisions_and_duplicates() {
    // A device-wide stat with the exported name: the queue stats keep their names.
    let n = names(&[
        "rx_queue_packets",
        "rx_queue_0_packets",
        "rx_queue_1_packets",
    ]);
    let p = plan(&n, QueueMode::Sum, |_| true);
    assert_eq!(
        series(&p),
        [
            ("rx_queue_packets", None),
            ("rx_queue_0_packets", None),
            ("rx_queue_1_packets", None)
        ]
    );
    // The same name twice is exported once, never summed.
    let n = names(&["tx_errors", "tx_errors", "rx0_a"]);
    let p = plan(&n, QueueMode::Sum, |_| true);
    assert_eq!(p.slots, [0, DROPPED, 1]);
}
