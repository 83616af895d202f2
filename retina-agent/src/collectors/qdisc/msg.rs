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
mod tests;
