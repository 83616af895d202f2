use std::sync::Arc;

use pcap_file::pcapng::{Block, PcapNgReader};
use retina_ebpf_common::flows::{FAMILY_IPV4, FlowKey};

use super::*;

/// A UDP datagram 127.0.0.1:40000 > 127.0.0.1:9 as the program copies it (IP header on).
fn udp_event() -> FlowEvent {
    let mut data = [0u8; 128];
    let packet: [u8; 32] = [
        0x45, 0, 0, 32, 0, 1, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1, // IPv4
        0x9c, 0x40, 0, 9, 0, 12, 0, 0, // UDP 40000 > 9
        1, 2, 3, 4,
    ];
    data[..32].copy_from_slice(&packet);
    let mut key = FlowKey {
        family: FAMILY_IPV4,
        protocol: 17,
        sport: 40000,
        dport: 9,
        reason: 3,
        netns: 4026531840,
        ifindex: 1,
        ..FlowKey::default()
    };
    key.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    key.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    FlowEvent {
        key,
        tcp_flags: 0,
        time_ns: 1_000_000_000,
        cgroup: 0,
        location: 0,
        len: 32,
        cap_len: 32,
        data,
    }
}

#[test]
fn packets_carry_their_drop_reason_in_the_comment() {
    let e = udp_event();
    let out = write(Vec::new(), &[e, e], |_| {
        (Arc::from("NO_SOCKET"), Some(Arc::from("__udp4_lib_rcv+0x4bc")))
    })
    .unwrap();
    let mut r = PcapNgReader::new(&out[..]).unwrap();
    let mut packets = 0;
    while let Some(block) = r.next_block() {
        if let Block::EnhancedPacket(p) = block.unwrap() {
            packets += 1;
            assert_eq!(&p.data[..], &e.data[..32]);
            assert_eq!(p.original_len, 32);
            let comments: Vec<String> = p
                .options
                .iter()
                .filter_map(|o| match o {
                    EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                comments,
                vec![
                    "drop.reason=NO_SOCKET flow=\"udp 127.0.0.1:40000 > 127.0.0.1:9\" drop.location=__udp4_lib_rcv+0x4bc network.interface.index=1 network.namespace.inode=4026531840"
                ]
            );
        }
    }
    assert_eq!(packets, 2);
}
