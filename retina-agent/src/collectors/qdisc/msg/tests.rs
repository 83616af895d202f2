use super::{build::*, *};

#[test]
fn parses_stats2_and_prefers_it() {
    let mut p = tcmsg(3, 0x10000, TC_H_ROOT);
    nla(&mut p, TCA_KIND, b"tbf\0");
    let mut nested = Vec::new();
    nla(&mut nested, TCA_STATS_BASIC, &basic(1000, 10));
    nla(&mut nested, TCA_STATS_QUEUE, &queue([1, 2, 3, 4, 5]));
    nla(&mut p, TCA_STATS2, &nested);
    nla(&mut p, TCA_STATS, &[0xff; 36]);
    let m = parse_tc(&p).unwrap();
    assert_eq!(m.kind, b"tbf");
    assert_eq!((m.ifindex, m.handle, m.parent), (3, 0x10000, TC_H_ROOT));
    assert_eq!(
        m.stats,
        Some(TcStats {
            bytes: 1000,
            packets: 10,
            qlen: 1,
            backlog: 2,
            drops: 3,
            requeues: Some(4),
            overlimits: 5,
        })
    );
    // 64-bit packet count.
    let mut p = tcmsg(3, 0x10000, TC_H_ROOT);
    nla(&mut p, TCA_KIND, b"htb\0");
    let mut nested = Vec::new();
    nla(&mut nested, TCA_STATS_BASIC, &basic(1, u32::MAX));
    nla(&mut nested, TCA_STATS_PKT64, &(5u64 << 32).to_ne_bytes());
    nla(&mut p, TCA_STATS2, &nested);
    assert_eq!(parse_tc(&p).unwrap().stats.unwrap().packets, 5 << 32);
}

#[test]
fn legacy_stats_and_classes_without_stats() {
    let mut p = tcmsg(2, 0x10000, TC_H_ROOT);
    nla(&mut p, TCA_KIND, b"pfifo\0");
    let mut legacy = Vec::new();
    for v in [
        7u64.to_ne_bytes().to_vec(),
        queue([8, 9, 10, 11, 12]),
        queue([13, 14, 0, 0, 0]),
    ] {
        legacy.extend_from_slice(&v);
    }
    nla(&mut p, TCA_STATS, &legacy[..36]);
    let s = parse_tc(&p).unwrap().stats.unwrap();
    assert_eq!((s.bytes, s.packets, s.drops, s.overlimits), (7, 8, 9, 10));
    assert_eq!((s.qlen, s.backlog, s.requeues), (13, 14, None));
    // STATS2 without BASIC (tbf's pseudo class): no statistics.
    let mut p = tcmsg(2, 0x10001, TC_H_ROOT);
    nla(&mut p, TCA_KIND, b"tbf\0");
    nla(&mut p, TCA_STATS2, &[]);
    nla(&mut p, TCA_STATS, &[0; 36]);
    assert_eq!(parse_tc(&p).unwrap().stats, None);
}

#[test]
fn malformed_messages() {
    assert!(matches!(
        parse_tc(&[0; 10]),
        Err((None, Malformed::ShortPayload { len: 10, need: 20 }))
    ));
    assert!(matches!(
        parse_tc(&tcmsg(0, 0, 0)),
        Err((None, Malformed::Ifindex(0)))
    ));
    assert!(matches!(
        parse_tc(&tcmsg(4, 0, 0)),
        Err((Some(4), Malformed::Missing("TCA_KIND")))
    ));
    let mut p = tcmsg(4, 0, 0);
    nla(&mut p, TCA_KIND, b"htb\0");
    p.extend_from_slice(&[200, 0, 7, 0]);
    assert!(matches!(
        parse_tc(&p),
        Err((Some(4), Malformed::AttributeLength { .. }))
    ));
    let mut p = tcmsg(4, 0, 0);
    nla(&mut p, TCA_KIND, b"htb\0");
    let mut nested = Vec::new();
    nla(&mut nested, TCA_STATS_QUEUE, &[0; 8]);
    nla(&mut p, TCA_STATS2, &nested);
    let err = parse_tc(&p).unwrap_err();
    assert!(
        matches!(
            err.1,
            Malformed::AttributeSize {
                attr: "TCA_STATS_QUEUE",
                len: 8,
                want: 20
            }
        ),
        "{err:?}"
    );
    let mut p = tcmsg(4, 0, 0);
    nla(&mut p, TCA_KIND, b"htb\0");
    nla(&mut p, TCA_STATS, &[0; 20]);
    assert!(parse_tc(&p).is_err());
    // Arbitrary bytes never panic.
    let mut x: u32 = 12345;
    for len in 0..200 {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let _ = parse_tc(&junk);
    }
}

#[test]
fn handles_in_tc_notation() {
    assert_eq!(qdisc_handle(0x10000), "1:");
    assert_eq!(qdisc_handle(0), "0:");
    assert_eq!(qdisc_handle(0xffff0000), "ffff:");
    assert_eq!(classid(TC_H_ROOT), "root");
    assert_eq!(classid(0x10010), "1:10");
    assert_eq!(classid(0x10000), "1:");
    assert_eq!(classid(0xfffffff1), "ffff:fff1");
    assert_eq!(classid(0x5), ":5");
    assert_eq!(classid(0), "none");
}
