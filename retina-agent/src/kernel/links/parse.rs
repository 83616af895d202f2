//! Bounds-checked parsers of rtnetlink replies: the messages of a datagram, the attributes
//! of a message, and the interface (`RTM_NEWLINK`) and counters (`RTM_NEWSTATS`) messages
//! the table is built from. They borrow the receive buffer and allocate nothing.

use super::{
    Malformed,
    uapi::{
        IF_STATS_MSG_LEN, IFINFOMSG_LEN, IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINK_NETNSID,
        IFLA_LINKINFO, IFLA_MTU, IFLA_OPERSTATE, IFLA_STATS_LINK_64, IFLA_STATS64, LinkStats,
        LinkStatsDetail, NLA_TYPE_MASK, NLMSG_ERROR, NLMSG_HDRLEN, NLMSG_OVERRUN, RTM_DELLINK,
        RTM_NEWLINK, STATS64_MIN_LEN, align4, read_i32, read_u16, read_u32, read_u64,
    },
};

/// One netlink message of a datagram: its header fields (`struct nlmsghdr`) and payload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NlMsg<'a> {
    /// Offset of the message in the datagram.
    pub(crate) at: usize,
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) pid: u32,
    /// The bytes after the header, up to `nlmsg_len`.
    pub(crate) payload: &'a [u8],
}

/// Iterates over the messages of one datagram. Broken framing (fewer bytes left than a
/// header, or an `nlmsg_len` below the header size or beyond the datagram) is an error
/// with the offset of the message, and ends the walk.
pub(crate) struct Messages<'a> {
    data: &'a [u8],
    off: usize,
}

impl<'a> Messages<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Messages<'a> {
        Messages { data, off: 0 }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<NlMsg<'a>, (usize, Malformed)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (data, at) = (self.data, self.off);
        let left = data.len().checked_sub(at).filter(|&l| l > 0)?;
        if left < NLMSG_HDRLEN {
            self.off = data.len();
            return Some(Err((at, Malformed::TrailingBytes { left })));
        }
        let len = read_u32(data, at);
        if (len as usize) < NLMSG_HDRLEN || len as usize > left {
            self.off = data.len();
            return Some(Err((at, Malformed::MessageLength { len, avail: left })));
        }
        self.off = at + align4(len as usize);
        Some(Ok(NlMsg {
            at,
            ty: read_u16(data, at + 4),
            flags: read_u16(data, at + 6),
            seq: read_u32(data, at + 8),
            pid: read_u32(data, at + 12),
            payload: &data[at + NLMSG_HDRLEN..at + len as usize],
        }))
    }
}

/// Iterates over netlink attributes (`struct rtattr`/`nlattr`), bounds-checked. `base` is
/// the offset of `buf` in its message payload, for error messages.
pub(crate) struct Attrs<'a> {
    buf: &'a [u8],
    off: usize,
    base: usize,
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Attrs<'a> {
        Attrs { buf, off: 0, base }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        let avail = self.buf.len().checked_sub(self.off).filter(|&a| a > 0)?;
        let len = if avail >= 4 {
            usize::from(read_u16(self.buf, self.off))
        } else {
            0
        };
        if len < 4 || len > avail {
            let offset = self.base + self.off;
            self.off = self.buf.len();
            return Some(Err(Malformed::AttributeLength { offset, len, avail }));
        }
        let ty = read_u16(self.buf, self.off + 2) & NLA_TYPE_MASK;
        let data = &self.buf[self.off + 4..self.off + len];
        self.off += align4(len);
        Some(Ok((ty, data)))
    }
}

/// The bytes before the first NUL (all of them if there is none).
pub(crate) fn nul_terminated(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |i| &b[..i])
}

/// Whether a datagram from the notification socket reports a link change (or is too
/// broken to tell).
pub(super) fn is_link_event(data: &[u8]) -> bool {
    Messages::new(data).any(|m| match m {
        Err(_) => true,
        Ok(m) => matches!(
            m.ty,
            RTM_NEWLINK | RTM_DELLINK | NLMSG_OVERRUN | NLMSG_ERROR
        ),
    })
}

/// One interface message, parsed and validated, borrowing the receive buffer.
#[derive(Debug)]
pub(super) struct LinkMsg<'a> {
    pub(super) ifindex: u32,
    pub(super) flags: u32,
    pub(super) name: &'a [u8],
    pub(super) stats: LinkStats,
    pub(super) detail: LinkStatsDetail,
    pub(super) operstate: Option<u8>,
    pub(super) mtu: Option<u32>,
    pub(super) kind: Option<&'a [u8]>,
    pub(super) link_netnsid: Option<i32>,
}

/// One `RTM_NEWSTATS` message, parsed and validated.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StatsMsg {
    pub(super) ifindex: u32,
    pub(super) stats: LinkStats,
    pub(super) detail: LinkStatsDetail,
}

/// A message that does not parse: what is wrong, and its ifindex if its fixed header
/// could be read.
pub(super) type ParseError = (Option<u32>, Malformed);

/// The ifindex of an `ifinfomsg` or `if_stats_msg` (both keep it at byte 4) whose fixed
/// header is `header_len` bytes; it must be positive.
fn header_ifindex(payload: &[u8], header_len: usize) -> Result<u32, ParseError> {
    if payload.len() < header_len {
        return Err((
            None,
            Malformed::ShortPayload {
                len: payload.len(),
                need: header_len,
            },
        ));
    }
    let raw_index = read_i32(payload, 4);
    match u32::try_from(raw_index) {
        Ok(i) if i > 0 => Ok(i),
        _ => Err((None, Malformed::Ifindex(raw_index))),
    }
}

/// Parses the payload of an `RTM_NEWLINK` message (`ifinfomsg` + attributes).
pub(super) fn parse_link(payload: &[u8]) -> Result<LinkMsg<'_>, ParseError> {
    // struct ifinfomsg { u8 family; u8 pad; u16 type; i32 index; u32 flags; u32 change; }
    let ifindex = header_ifindex(payload, IFINFOMSG_LEN)?;
    let flags = read_u32(payload, 8);
    let fail = |what| (Some(ifindex), what);
    let mut name = None;
    let mut stats = None;
    let mut operstate = None;
    let mut mtu = None;
    let mut kind = None;
    let mut link_netnsid = None;
    for attr in Attrs::new(&payload[IFINFOMSG_LEN..], IFINFOMSG_LEN) {
        let (ty, data) = attr.map_err(fail)?;
        match ty {
            IFLA_IFNAME => {
                let n = nul_terminated(data);
                if n.is_empty() {
                    return Err(fail(Malformed::EmptyName));
                }
                name = Some(n);
            }
            IFLA_STATS64 => stats = Some(parse_stats64(data).map_err(fail)?),
            IFLA_OPERSTATE => match data {
                [v] => operstate = Some(*v),
                _ => {
                    return Err(fail(Malformed::AttributeSize {
                        attr: "IFLA_OPERSTATE",
                        len: data.len(),
                        want: 1,
                    }));
                }
            },
            IFLA_MTU => match data.len() {
                4 => mtu = Some(read_u32(data, 0)),
                len => {
                    return Err(fail(Malformed::AttributeSize {
                        attr: "IFLA_MTU",
                        len,
                        want: 4,
                    }));
                }
            },
            // Negative is NETNSA_NSID_NOT_ASSIGNED; another size only loses the peer's
            // workload, not the interface.
            IFLA_LINK_NETNSID if data.len() == 4 => {
                link_netnsid = Some(read_i32(data, 0)).filter(|id| *id >= 0);
            }
            IFLA_LINKINFO => {
                for nested in Attrs::new(data, 0) {
                    let (nty, ndata) = nested.map_err(fail)?;
                    if nty == IFLA_INFO_KIND {
                        let k = nul_terminated(ndata);
                        if !k.is_empty() {
                            kind = Some(k);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let name = name.ok_or(fail(Malformed::Missing("IFLA_IFNAME")))?;
    let (stats, detail) = stats.ok_or(fail(Malformed::Missing("IFLA_STATS64")))?;
    Ok(LinkMsg {
        ifindex,
        flags,
        name,
        stats,
        detail,
        operstate,
        mtu,
        kind,
        link_netnsid,
    })
}

/// Parses the payload of an `RTM_NEWSTATS` message (`if_stats_msg` + attributes) that
/// must carry `IFLA_STATS_LINK_64`.
pub(super) fn parse_stats_msg(payload: &[u8]) -> Result<StatsMsg, ParseError> {
    // struct if_stats_msg { u8 family; u8 pad1; u16 pad2; u32 ifindex; u32 filter_mask; }
    let ifindex = header_ifindex(payload, IF_STATS_MSG_LEN)?;
    let fail = |what| (Some(ifindex), what);
    let mut stats = None;
    for attr in Attrs::new(&payload[IF_STATS_MSG_LEN..], IF_STATS_MSG_LEN) {
        let (ty, data) = attr.map_err(fail)?;
        if ty == IFLA_STATS_LINK_64 {
            stats = Some(parse_stats64(data).map_err(fail)?);
        }
    }
    let (stats, detail) = stats.ok_or(fail(Malformed::Missing("IFLA_STATS_LINK_64")))?;
    Ok(StatsMsg {
        ifindex,
        stats,
        detail,
    })
}

/// Parses `struct rtnl_link_stats64` (184 bytes on old kernels, up to 200 today; longer
/// future versions are accepted and their extra fields ignored).
fn parse_stats64(data: &[u8]) -> Result<(LinkStats, LinkStatsDetail), Malformed> {
    if data.len() < STATS64_MIN_LEN {
        return Err(Malformed::ShortStats(data.len()));
    }
    let f = |i: usize| read_u64(data, i * 8);
    let opt = |i: usize| (data.len() >= (i + 1) * 8).then(|| f(i));
    let stats = LinkStats {
        rx_packets: f(0),
        tx_packets: f(1),
        rx_bytes: f(2),
        tx_bytes: f(3),
        rx_errors: f(4),
        tx_errors: f(5),
        rx_dropped: f(6),
        tx_dropped: f(7),
    };
    let detail = LinkStatsDetail {
        multicast: f(8),
        collisions: f(9),
        rx_length_errors: f(10),
        rx_over_errors: f(11),
        rx_crc_errors: f(12),
        rx_frame_errors: f(13),
        rx_fifo_errors: f(14),
        rx_missed_errors: f(15),
        tx_aborted_errors: f(16),
        tx_carrier_errors: f(17),
        tx_fifo_errors: f(18),
        tx_heartbeat_errors: f(19),
        tx_window_errors: f(20),
        rx_compressed: f(21),
        tx_compressed: f(22),
        rx_nohandler: opt(23),
        rx_otherhost_dropped: opt(24),
    };
    Ok((stats, detail))
}

#[cfg(test)]
mod tests;
