use super::*;

#[test]
fn flows_created_after_an_eviction_are_not_exact() {
    // Nothing evicted: every flow exact.
    assert_eq!(first_missing(&mut [2, 0, 1], 3), 3);
    // Number 1 evicted: 0 stays exact; 2 and 3 may be 1's flow come back.
    assert_eq!(first_missing(&mut [0, 2, 3], 4), 1);
    // Entries created after `issued` was read are not taken for gaps.
    assert_eq!(first_missing(&mut [0, 1, 5], 2), 2);
    assert_eq!(first_missing(&mut [], 0), 0);
    assert_eq!(first_missing(&mut [], 5), 0);
}

#[test]
fn per_cpu_rate_rounds_up() {
    let o = FlowOptions {
        events_per_second: 100,
        ..FlowOptions::default()
    };
    assert_eq!(o.per_cpu_rate(3), 34);
    assert_eq!(o.per_cpu_rate(0), 100);
}

fn front(generation: u64, dport: u16, packets: u64) -> FlowFront {
    FlowFront {
        generation,
        key: FlowKey {
            dport,
            family: FAMILY_IPV4,
            ..FlowKey::default()
        },
        packets,
        bytes: packets * 100,
        ..FlowFront::default()
    }
}

#[test]
fn held_counts_add_only_from_a_front_entry_that_did_not_move() {
    // Unchanged and even: the counts held before the map read.
    let before = [front(2, 9, 5), front(4, 10, 0)];
    let after = [front(2, 9, 7), front(4, 10, 0)];
    assert_eq!(held(&before, &after, false), Some(vec![front(2, 9, 5)]));
    // A CPU moved its counts (or changed flow) in between: read again...
    let after = [front(4, 9, 1), front(4, 10, 0)];
    assert_eq!(held(&before, &after, false), None);
    // ...or, on the last read, take what it holds after (a lower bound).
    assert_eq!(held(&before, &after, true), Some(vec![front(4, 9, 1)]));
    // Caught in the middle of a move on the last read: nothing from that CPU.
    let after = [front(3, 9, 5), front(4, 10, 0)];
    assert_eq!(held(&before, &after, true), Some(vec![]));
}

#[test]
fn held_counts_join_their_flow_or_stand_alone_as_not_exact() {
    let mut raw = vec![(
        front(0, 9, 0).key,
        FlowValue {
            packets: 10,
            bytes: 1000,
            seq: 0,
            tcp_flags: 0x02,
        },
    )];
    let mut h = front(2, 9, 3);
    h.tcp_flags = 0x10;
    add_held(&mut raw, &[h, front(2, 11, 4)]);
    assert_eq!(raw[0].1.packets, 13);
    assert_eq!(raw[0].1.bytes, 1300);
    assert_eq!(raw[0].1.tcp_flags, 0x12);
    assert_eq!(raw[1].0.dport, 11);
    assert_eq!(raw[1].1.packets, 4);
    assert_eq!(raw[1].1.seq, u64::MAX);
}
