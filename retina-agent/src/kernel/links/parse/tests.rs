//! Message and attribute parsers: valid messages, every kind of malformed one.

use super::{is_link_event, parse_link, parse_stats_msg};
use crate::kernel::links::{Malformed, tests::*, uapi::*};

#[test]
fn parses_a_full_message() {
    let mut kind = b"veth".to_vec();
    kind.push(0);
    let linkinfo = attr(IFLA_LINKINFO | 0x8000, &attr(IFLA_INFO_KIND, &kind));
    let payload = ifinfo(
        5,
        0x1003,
        &[
            attr(IFLA_IFNAME, b"veth0\0"),
            attr(IFLA_OPERSTATE, &[2]),
            attr(999, b"ignored attribute"),
            linkinfo,
            stats_attr(100),
        ],
    );
    let m = parse_link(&payload).unwrap();
    assert_eq!(m.ifindex, 5);
    assert_eq!(m.flags, 0x1003);
    assert_eq!(m.name, b"veth0");
    assert_eq!(m.kind, Some(&b"veth"[..]));
    assert_eq!(m.operstate, Some(2));
    assert_eq!(m.mtu, None);
    assert_eq!(
        m.stats,
        LinkStats {
            rx_packets: 100,
            tx_packets: 101,
            rx_bytes: 102,
            tx_bytes: 103,
            rx_errors: 104,
            tx_errors: 105,
            rx_dropped: 106,
            tx_dropped: 107,
        }
    );
    assert_eq!(m.detail.multicast, 108);
    assert_eq!(m.detail.rx_missed_errors, 115);
    assert_eq!(m.detail.tx_compressed, 122);
    assert_eq!(m.detail.rx_nohandler, Some(123));
    assert_eq!(m.detail.rx_otherhost_dropped, Some(124));
}

#[test]
fn old_kernel_stats_have_no_optional_fields() {
    let vals: Vec<u64> = (0..23).collect();
    let payload = ifinfo(
        2,
        0,
        &[
            attr(IFLA_IFNAME, b"eth0\0"),
            attr(IFLA_STATS64, &stats64(&vals)),
        ],
    );
    let m = parse_link(&payload).unwrap();
    assert_eq!(m.stats.tx_dropped, 7);
    assert_eq!(m.detail.rx_nohandler, None);
    assert_eq!(m.detail.rx_otherhost_dropped, None);
}

#[test]
fn malformed_messages_are_errors() {
    // Payload shorter than ifinfomsg.
    assert_eq!(
        parse_link(&[0; 10]).unwrap_err(),
        (None, Malformed::ShortPayload { len: 10, need: 16 })
    );
    // Non-positive ifindex.
    assert_eq!(
        parse_link(&ifinfo(-3, 0, &[])).unwrap_err(),
        (None, Malformed::Ifindex(-3))
    );
    // Missing attributes.
    assert_eq!(
        parse_link(&ifinfo(3, 0, &[stats_attr(0)])).unwrap_err(),
        (Some(3), Malformed::Missing("IFLA_IFNAME"))
    );
    assert_eq!(
        parse_link(&ifinfo(3, 0, &[attr(IFLA_IFNAME, b"x\0")])).unwrap_err(),
        (Some(3), Malformed::Missing("IFLA_STATS64"))
    );
    // Short stats.
    let short = attr(IFLA_STATS64, &stats64(&[1, 2, 3, 4, 5, 6, 7, 8]));
    assert_eq!(
        parse_link(&ifinfo(3, 0, &[attr(IFLA_IFNAME, b"x\0"), short])).unwrap_err(),
        (Some(3), Malformed::ShortStats(64))
    );
    // Empty name.
    assert_eq!(
        parse_link(&ifinfo(3, 0, &[attr(IFLA_IFNAME, b"\0"), stats_attr(0)])).unwrap_err(),
        (Some(3), Malformed::EmptyName)
    );
    // Wrong-size fixed attributes.
    assert!(matches!(
        parse_link(&ifinfo(3, 0, &[attr(IFLA_MTU, &[1, 2])])).unwrap_err(),
        (
            Some(3),
            Malformed::AttributeSize {
                attr: "IFLA_MTU",
                ..
            }
        )
    ));
    assert!(matches!(
        parse_link(&ifinfo(3, 0, &[attr(IFLA_OPERSTATE, &[1, 2])])).unwrap_err(),
        (Some(3), Malformed::AttributeSize { .. })
    ));
    // An attribute whose rta_len runs past the message.
    let mut p = ifinfo(3, 0, &[attr(IFLA_IFNAME, b"x\0")]);
    p.extend_from_slice(&200u16.to_ne_bytes());
    p.extend_from_slice(&IFLA_STATS64.to_ne_bytes());
    p.extend_from_slice(&[0; 8]);
    assert!(matches!(
        parse_link(&p).unwrap_err(),
        (
            Some(3),
            Malformed::AttributeLength {
                offset: 24,
                len: 200,
                avail: 12
            }
        )
    ));
    // rta_len below the attribute header size (would loop forever if accepted).
    let mut p = ifinfo(3, 0, &[]);
    p.extend_from_slice(&[2, 0, 3, 0]);
    assert!(matches!(
        parse_link(&p).unwrap_err(),
        (Some(3), Malformed::AttributeLength { len: 2, .. })
    ));
    // Two stray bytes after the last attribute.
    let mut p = link_payload(3, "x", 0);
    p.extend_from_slice(&[1, 2]);
    assert!(matches!(
        parse_link(&p).unwrap_err(),
        (Some(3), Malformed::AttributeLength { avail: 2, .. })
    ));
    // Broken nested attribute inside IFLA_LINKINFO.
    let p = ifinfo(3, 0, &[attr(IFLA_LINKINFO, &[9, 0, 1, 0])]);
    assert!(matches!(
        parse_link(&p).unwrap_err(),
        (Some(3), Malformed::AttributeLength { len: 9, .. })
    ));
}

#[test]
fn parses_a_stats_message() {
    let m = parse_stats_msg(&stats_payload(7, 100)).unwrap();
    assert_eq!(m.ifindex, 7);
    assert_eq!(m.stats.rx_packets, 100);
    assert_eq!(m.stats.tx_dropped, 107);
    assert_eq!(m.detail.multicast, 108);
    assert_eq!(m.detail.tx_compressed, 122);
    assert_eq!(m.detail.rx_nohandler, Some(123));
    assert_eq!(m.detail.rx_otherhost_dropped, Some(124));
    // The same counters as the IFLA_STATS64 of a link message.
    let payload = link_payload(7, "x", 100);
    let l = parse_link(&payload).unwrap();
    assert_eq!((m.stats, m.detail), (l.stats, l.detail));
    // A pad attribute before (as on architectures aligning 64-bit attributes) and an
    // unknown one after are skipped; an old kernel's 23 counters are enough.
    let vals: Vec<u64> = (0..23).collect();
    let p = stats_msg(
        3,
        &[
            attr(0, &[]),
            attr(IFLA_STATS_LINK_64, &stats64(&vals)),
            attr(5 | 0x8000, &[1, 2, 3, 4]),
        ],
    );
    let m = parse_stats_msg(&p).unwrap();
    assert_eq!(m.stats.tx_dropped, 7);
    assert_eq!(m.detail.rx_nohandler, None);
}

#[test]
fn malformed_stats_messages_are_errors() {
    assert_eq!(
        parse_stats_msg(&[0; 11]).unwrap_err(),
        (None, Malformed::ShortPayload { len: 11, need: 12 })
    );
    assert_eq!(
        parse_stats_msg(&stats_msg(0, &[])).unwrap_err(),
        (None, Malformed::Ifindex(0))
    );
    assert_eq!(
        parse_stats_msg(&stats_msg(-5, &[])).unwrap_err(),
        (None, Malformed::Ifindex(-5))
    );
    assert_eq!(
        parse_stats_msg(&stats_msg(4, &[])).unwrap_err(),
        (Some(4), Malformed::Missing("IFLA_STATS_LINK_64"))
    );
    // Other statistics only (IFLA_STATS_LINK_XSTATS = 2).
    assert_eq!(
        parse_stats_msg(&stats_msg(4, &[attr(2, &[0; 8])])).unwrap_err(),
        (Some(4), Malformed::Missing("IFLA_STATS_LINK_64"))
    );
    let short = attr(IFLA_STATS_LINK_64, &stats64(&[1; 22]));
    assert_eq!(
        parse_stats_msg(&stats_msg(4, &[short])).unwrap_err(),
        (Some(4), Malformed::ShortStats(176))
    );
    // rta_len past the end, below the header size, stray bytes.
    let mut p = stats_msg(4, &[]);
    p.extend_from_slice(&200u16.to_ne_bytes());
    p.extend_from_slice(&IFLA_STATS_LINK_64.to_ne_bytes());
    p.extend_from_slice(&[0; 8]);
    assert_eq!(
        parse_stats_msg(&p).unwrap_err(),
        (
            Some(4),
            Malformed::AttributeLength {
                offset: 12,
                len: 200,
                avail: 12
            }
        )
    );
    let mut p = stats_msg(4, &[]);
    p.extend_from_slice(&[3, 0, 1, 0]);
    assert!(matches!(
        parse_stats_msg(&p).unwrap_err(),
        (Some(4), Malformed::AttributeLength { len: 3, .. })
    ));
    let mut p = stats_payload(4, 0);
    p.push(9);
    assert!(matches!(
        parse_stats_msg(&p).unwrap_err(),
        (Some(4), Malformed::AttributeLength { avail: 1, .. })
    ));
    // Every truncation of a valid payload is an error, never a panic.
    let full = stats_payload(4, 0);
    for cut in 0..full.len() {
        assert!(parse_stats_msg(&full[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn link_events_are_recognised() {
    let newlink = nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 0));
    let dellink = nlmsg(RTM_DELLINK, &link_payload(3, "eth0", 0));
    assert!(is_link_event(&newlink));
    assert!(is_link_event(&dellink));
    assert!(is_link_event(&[nlmsg(NLMSG_NOOP, &[]), dellink].concat()));
    assert!(!is_link_event(&[]));
    assert!(!is_link_event(&nlmsg(NLMSG_NOOP, &[])));
    assert!(!is_link_event(&nlmsg(RTM_NEWSTATS, &stats_payload(3, 0))));
    // Broken framing: assume a change.
    assert!(is_link_event(&newlink[..10]));
    assert!(is_link_event(&newlink[..newlink.len() - 4]));
    assert!(is_link_event(&[0; 16]));
}

#[test]
fn messages_walk_a_datagram_and_stop_at_broken_framing() {
    use crate::kernel::links::Messages;
    let a = nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 0));
    let b = nlmsg_full(NLMSG_DONE, 2, SEQ + 1, PID + 1, &[0; 4]);
    let dg = [a.clone(), b.clone()].concat();
    let msgs: Vec<_> = Messages::new(&dg).map(Result::unwrap).collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0].at, msgs[0].ty, msgs[0].seq), (0, RTM_NEWLINK, SEQ));
    assert_eq!(msgs[0].payload, &a[NLMSG_HDRLEN..]);
    let m = &msgs[1];
    assert_eq!((m.at, m.ty, m.flags), (a.len(), NLMSG_DONE, 2));
    assert_eq!((m.seq, m.pid, m.payload), (SEQ + 1, PID + 1, &[0u8; 4][..]));
    assert_eq!(Messages::new(&[]).count(), 0);
    // Stray bytes after the last message: an error at their offset, then nothing.
    let stray_dg = [a.as_slice(), &[1, 2, 3]].concat();
    let mut stray = Messages::new(&stray_dg).collect::<Vec<_>>();
    assert_eq!(stray.len(), 2);
    assert_eq!(
        stray.pop().unwrap().unwrap_err(),
        (a.len(), Malformed::TrailingBytes { left: 3 })
    );
    // nlmsg_len beyond the datagram, or below the header size.
    let mut long = b.clone();
    long[0..4].copy_from_slice(&100u32.to_ne_bytes());
    let mut it = Messages::new(&long);
    assert_eq!(
        it.next().unwrap().unwrap_err(),
        (
            0,
            Malformed::MessageLength {
                len: 100,
                avail: 20
            }
        )
    );
    assert!(it.next().is_none());
    let mut short = b;
    short[0..4].copy_from_slice(&8u32.to_ne_bytes());
    assert_eq!(
        Messages::new(&short).next().unwrap().unwrap_err(),
        (0, Malformed::MessageLength { len: 8, avail: 20 })
    );
}
