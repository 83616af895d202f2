//! Which EtherTypes keep their own drop key, and the `network.type` of a key.
//!
//! Anyone who can put a frame on a device can choose its EtherType: a remote host on the
//! link, or any unprivileged user with AF_PACKET in a network namespace of their own
//! (`unshare -Urn`). Counted one key each, the 65 536 values would fill the drop map
//! (issue 26). The program keeps its own key only for the EtherTypes the kernel names
//! (`ETH_P_*` in `include/uapi/linux/if_ether.h`) and counts every other as
//! [`PROTOCOL_OTHER`], exported as `network.type="other"`.

use opentelemetry::Value;
use retina_ebpf_common::{PROTOCOL_OTHER, PROTOCOL_WORDS};

/// The EtherTypes the kernel names (`ETH_P_*` of `linux/if_ether.h`, 6.18), and 0 (a
/// packet whose `skb->protocol` was never set).
pub const NAMED: &[u16] = &[
    0x0000, // no protocol
    0x0001, // ETH_P_802_3
    0x0002, // ETH_P_AX25
    0x0003, // ETH_P_ALL
    0x0004, // ETH_P_802_2
    0x0005, // ETH_P_SNAP
    0x0006, // ETH_P_DDCMP
    0x0007, // ETH_P_WAN_PPP
    0x0008, // ETH_P_PPP_MP
    0x0009, // ETH_P_LOCALTALK
    0x000c, // ETH_P_CAN
    0x000d, // ETH_P_CANFD
    0x000e, // ETH_P_CANXL
    0x0010, // ETH_P_PPPTALK
    0x0011, // ETH_P_TR_802_2
    0x0015, // ETH_P_MOBITEX
    0x0016, // ETH_P_CONTROL
    0x0017, // ETH_P_IRDA
    0x0018, // ETH_P_ECONET
    0x0019, // ETH_P_HDLC
    0x001a, // ETH_P_ARCNET
    0x001b, // ETH_P_DSA
    0x001c, // ETH_P_TRAILER
    0x0060, // ETH_P_LOOP
    0x00f5, // ETH_P_PHONET
    0x00f6, // ETH_P_IEEE802154
    0x00f7, // ETH_P_CAIF
    0x00f8, // ETH_P_XDSA
    0x00f9, // ETH_P_MAP
    0x00fa, // ETH_P_MCTP
    0x0200, // ETH_P_PUP
    0x0201, // ETH_P_PUPAT
    0x0600, // ETH_P_802_3_MIN
    0x0800, // ETH_P_IP
    0x0805, // ETH_P_X25
    0x0806, // ETH_P_ARP
    0x0a00, // ETH_P_IEEEPUP
    0x0a01, // ETH_P_IEEEPUPAT
    0x22eb, // ETH_P_ERSPAN2
    0x22f0, // ETH_P_TSN
    0x4305, // ETH_P_BATMAN
    0x6000, // ETH_P_DEC
    0x6001, // ETH_P_DNA_DL
    0x6002, // ETH_P_DNA_RC
    0x6003, // ETH_P_DNA_RT
    0x6004, // ETH_P_LAT
    0x6005, // ETH_P_DIAG
    0x6006, // ETH_P_CUST
    0x6007, // ETH_P_SCA
    0x6558, // ETH_P_TEB
    0x8035, // ETH_P_RARP
    0x809b, // ETH_P_ATALK
    0x80f3, // ETH_P_AARP
    0x8100, // ETH_P_8021Q
    0x8137, // ETH_P_IPX
    0x86dd, // ETH_P_IPV6
    0x8808, // ETH_P_PAUSE
    0x8809, // ETH_P_SLOW
    0x883e, // ETH_P_WCCP
    0x8847, // ETH_P_MPLS_UC
    0x8848, // ETH_P_MPLS_MC
    0x884c, // ETH_P_ATMMPOA
    0x8863, // ETH_P_PPP_DISC
    0x8864, // ETH_P_PPP_SES
    0x886c, // ETH_P_LINK_CTL
    0x8884, // ETH_P_ATMFATE
    0x888e, // ETH_P_PAE
    0x8892, // ETH_P_PROFINET
    0x8899, // ETH_P_REALTEK
    0x88a2, // ETH_P_AOE
    0x88a4, // ETH_P_ETHERCAT
    0x88a8, // ETH_P_8021AD
    0x88b5, // ETH_P_802_EX1
    0x88be, // ETH_P_ERSPAN
    0x88c7, // ETH_P_PREAUTH
    0x88ca, // ETH_P_TIPC
    0x88cc, // ETH_P_LLDP
    0x88e3, // ETH_P_MRP
    0x88e5, // ETH_P_MACSEC
    0x88e7, // ETH_P_8021AH
    0x88f5, // ETH_P_MVRP
    0x88f7, // ETH_P_1588
    0x88f8, // ETH_P_NCSI
    0x88fb, // ETH_P_PRP
    0x8902, // ETH_P_CFM
    0x8906, // ETH_P_FCOE
    0x890d, // ETH_P_TDLS
    0x8914, // ETH_P_FIP
    0x8915, // ETH_P_IBOE
    0x8917, // ETH_P_80221
    0x892f, // ETH_P_HSR
    0x894f, // ETH_P_NSH
    0x9000, // ETH_P_LOOPBACK
    0x9100, // ETH_P_QINQ1
    0x9200, // ETH_P_QINQ2
    0x9300, // ETH_P_QINQ3
    0xdada, // ETH_P_EDSA
    0xdadb, // ETH_P_DSA_8021Q
    0xe001, // ETH_P_DSA_A5PSW
    0xed3e, // ETH_P_IFE
    0xfbfb, // ETH_P_AF_IUCV
];

/// [`NAMED`] as the words of the program's bit set (`DROP_PROTOCOLS`): bit `p % 32` of
/// word `p / 32` for each EtherType `p` that keeps its own key.
pub(crate) fn words() -> Vec<u32> {
    let mut words = vec![0u32; PROTOCOL_WORDS as usize];
    for &p in NAMED {
        words[usize::from(p) / 32] |= 1 << (p % 32);
    }
    words
}

/// The `network.type` of a key's protocol: OpenTelemetry's `ipv4`/`ipv6`, `arp`, `other`
/// for the folded EtherTypes, else the EtherType in hex; none for 0.
pub(crate) fn network_type(protocol: u32) -> Option<Value> {
    match protocol {
        0 => None,
        0x0800 => Some(Value::from("ipv4")),
        0x86dd => Some(Value::from("ipv6")),
        0x0806 => Some(Value::from("arp")),
        PROTOCOL_OTHER => Some(Value::from("other")),
        p => Some(Value::from(format!("0x{p:04x}"))),
    }
}

#[cfg(test)]
mod tests;
