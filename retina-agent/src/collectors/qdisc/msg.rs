//! Qdisc and class messages of rtnetlink (`RTM_NEWQDISC`, `RTM_NEWTCLASS`): parsed and
//! validated in place, and handles in tc's notation.

use crate::kernel::links::{Attrs, Malformed, nul_terminated, read_i32, read_u32, read_u64};

// ---- Kernel UAPI (rtnetlink.h, pkt_sched.h, gen_stats.h) ----
pub(super) const RTM_NEWQDISC: u16 = 36;
pub(super) const RTM_GETQDISC: u16 = 38;
pub(super) const RTM_NEWTCLASS: u16 = 40;
pub(super) const RTM_GETTCLASS: u16 = 42;
/// `sizeof(struct tcmsg)`.
pub(super) const TCMSG_LEN: usize = 20;
pub(super) const TCA_KIND: u16 = 1;
pub(super) const TCA_STATS: u16 = 3;
pub(super) const TCA_STATS2: u16 = 7;
pub(super) const TCA_STATS_BASIC: u16 = 1;
pub(super) const TCA_STATS_QUEUE: u16 = 3;
pub(super) const TCA_STATS_PKT64: u16 = 8;
/// `struct tc_stats` up to `backlog`.
pub(super) const TC_STATS_LEN: usize = 36;
/// `struct gnet_stats_basic` without its tail padding.
pub(super) const GNET_BASIC_LEN: usize = 12;
pub(super) const GNET_QUEUE_LEN: usize = 20;
pub(super) const TC_H_ROOT: u32 = 0xffff_ffff;

/// The statistics of one qdisc or class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcStats {
    pub(crate) bytes: u64,
    pub(crate) packets: u64,
    pub(crate) drops: u64,
    pub(crate) overlimits: u64,
    /// Absent with the legacy `TCA_STATS` only.
    pub(crate) requeues: Option<u64>,
    pub(crate) backlog: u64,
    pub(crate) qlen: u64,
}

/// One `RTM_NEWQDISC` / `RTM_NEWTCLASS` message, validated, borrowing the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TcMsg<'a> {
    pub(crate) ifindex: u32,
    pub(crate) handle: u32,
    pub(crate) parent: u32,
    pub(crate) kind: &'a [u8],
    pub(crate) stats: Option<TcStats>,
}

/// Parses the payload of a qdisc or class message.
pub(crate) fn parse_tc(payload: &[u8]) -> Result<TcMsg<'_>, (Option<u32>, Malformed)> {
    if payload.len() < TCMSG_LEN {
        return Err((
            None,
            Malformed::ShortPayload {
                len: payload.len(),
                need: TCMSG_LEN,
            },
        ));
    }
    let ifindex = read_i32(payload, 4);
    if ifindex <= 0 {
        return Err((None, Malformed::Ifindex(ifindex)));
    }
    let ifindex = ifindex as u32;
    let fail = |what| Err((Some(ifindex), what));
    let mut kind = None;
    let mut stats2 = None;
    let mut legacy = None;
    for a in Attrs::new(&payload[TCMSG_LEN..], TCMSG_LEN) {
        let (ty, data) = match a {
            Ok(a) => a,
            Err(what) => return fail(what),
        };
        match ty {
            TCA_KIND => kind = Some(nul_terminated(data)),
            TCA_STATS2 => stats2 = Some(data),
            TCA_STATS => legacy = Some(data),
            _ => {}
        }
    }
    let kind = match kind {
        Some(k) if !k.is_empty() => k,
        _ => return fail(Malformed::Missing("TCA_KIND")),
    };
    let stats = match (stats2, legacy) {
        (Some(nested), _) => match parse_stats2(nested) {
            Ok(s) => s,
            Err(what) => return fail(what),
        },
        (None, Some(data)) => {
            if data.len() < TC_STATS_LEN {
                return fail(Malformed::AttributeSize {
                    attr: "TCA_STATS",
                    len: data.len(),
                    want: TC_STATS_LEN,
                });
            }
            Some(TcStats {
                bytes: read_u64(data, 0),
                packets: read_u32(data, 8).into(),
                drops: read_u32(data, 12).into(),
                overlimits: read_u32(data, 16).into(),
                requeues: None,
                qlen: read_u32(data, 28).into(),
                backlog: read_u32(data, 32).into(),
            })
        }
        (None, None) => None,
    };
    Ok(TcMsg {
        ifindex,
        handle: read_u32(payload, 8),
        parent: read_u32(payload, 12),
        kind,
        stats,
    })
}

/// `TCA_STATS2`; `None` without `TCA_STATS_BASIC` (a class without statistics).
fn parse_stats2(nested: &[u8]) -> Result<Option<TcStats>, Malformed> {
    let mut basic = None;
    let mut queue = None;
    let mut pkt64 = None;
    for a in Attrs::new(nested, 0) {
        let (ty, data) = a?;
        let need = match ty {
            TCA_STATS_BASIC => GNET_BASIC_LEN,
            TCA_STATS_QUEUE => GNET_QUEUE_LEN,
            TCA_STATS_PKT64 => 8,
            _ => continue,
        };
        if data.len() < need {
            return Err(Malformed::AttributeSize {
                attr: match ty {
                    TCA_STATS_BASIC => "TCA_STATS_BASIC",
                    TCA_STATS_QUEUE => "TCA_STATS_QUEUE",
                    _ => "TCA_STATS_PKT64",
                },
                len: data.len(),
                want: need,
            });
        }
        match ty {
            TCA_STATS_BASIC => basic = Some(data),
            TCA_STATS_QUEUE => queue = Some(data),
            _ => pkt64 = Some(read_u64(data, 0)),
        }
    }
    let Some(basic) = basic else { return Ok(None) };
    let mut s = TcStats {
        bytes: read_u64(basic, 0),
        packets: pkt64.unwrap_or(read_u32(basic, 8).into()),
        ..TcStats::default()
    };
    if let Some(q) = queue {
        s.qlen = read_u32(q, 0).into();
        s.backlog = read_u32(q, 4).into();
        s.drops = read_u32(q, 8).into();
        s.requeues = Some(read_u32(q, 12).into());
        s.overlimits = read_u32(q, 16).into();
    }
    Ok(Some(s))
}

/// A qdisc handle as tc prints it: the major number, `1:`.
pub(crate) fn qdisc_handle(h: u32) -> String {
    format!("{:x}:", h >> 16)
}

/// A class id or parent as tc prints it: `root`, `none`, `1:`, `:10`, `1:10`.
pub(crate) fn classid(h: u32) -> String {
    let (maj, min) = (h >> 16, h & 0xffff);
    match h {
        TC_H_ROOT => "root".into(),
        0 => "none".into(),
        _ if maj == 0 => format!(":{min:x}"),
        _ if min == 0 => format!("{maj:x}:"),
        _ => format!("{maj:x}:{min:x}"),
    }
}

/// Builders of kernel messages, for this module's tests and the collector's.
#[cfg(test)]
pub(super) mod build {
    pub(in crate::collectors::qdisc) fn nla(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    pub(in crate::collectors::qdisc) fn tcmsg(ifindex: i32, handle: u32, parent: u32) -> Vec<u8> {
        let mut v = vec![0u8; 4];
        v.extend_from_slice(&ifindex.to_ne_bytes());
        v.extend_from_slice(&handle.to_ne_bytes());
        v.extend_from_slice(&parent.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v
    }

    pub(in crate::collectors::qdisc) fn basic(bytes: u64, packets: u32) -> Vec<u8> {
        let mut v = bytes.to_ne_bytes().to_vec();
        v.extend_from_slice(&packets.to_ne_bytes());
        v.extend_from_slice(&[0; 4]);
        v
    }

    pub(in crate::collectors::qdisc) fn queue(q: [u32; 5]) -> Vec<u8> {
        q.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }
}

#[cfg(test)]
mod tests {
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
}
