use retina_ebpf_common::flows::{FAMILY_IPV6, FlowKey};

use super::*;

#[test]
fn flows_are_described_by_protocol() {
    let mut k = FlowKey {
        family: FAMILY_IPV4,
        protocol: 17,
        sport: 40000,
        dport: 9,
        ..FlowKey::default()
    };
    k.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
    k.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
    assert_eq!(describe(&k), "udp 10.0.0.1:40000 > 10.0.0.2:9");
    k.protocol = 1;
    (k.sport, k.dport) = (8, 0);
    assert_eq!(describe(&k), "icmp 10.0.0.1 > 10.0.0.2 type 8 code 0");
    let mut k6 = FlowKey {
        family: FAMILY_IPV6,
        protocol: 6,
        sport: 1234,
        dport: 80,
        ..FlowKey::default()
    };
    k6.saddr[15] = 1;
    k6.daddr[15] = 1;
    assert_eq!(describe(&k6), "tcp [::1]:1234 > [::1]:80");
    assert_eq!(tcp_flags(0x02), "SYN");
    assert_eq!(tcp_flags(0x14), "RST|ACK");
}
