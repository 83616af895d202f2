//! The kernel's netlink ABI as the interface table and its users speak it: constants of
//! `include/uapi/linux/netlink.h`, `rtnetlink.h`, `if_link.h` and `net_namespace.h`, the
//! counters of `struct rtnl_link_stats64`, the `IF_OPER_*` states, and native-endian field
//! reads.

// ---- netlink.h ----

/// `NLMSG_HDRLEN`: `sizeof(struct nlmsghdr)`.
pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;
pub(super) const NLM_F_REQUEST: u16 = 0x01;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NLM_F_ROOT | NLM_F_MATCH`.
pub(super) const NLM_F_DUMP: u16 = 0x300;
/// Masks `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` off an attribute type.
pub(super) const NLA_TYPE_MASK: u16 = 0x3fff;

// ---- rtnetlink.h ----

pub(super) const RTM_NEWLINK: u16 = 16;
pub(super) const RTM_DELLINK: u16 = 17;
pub(super) const RTM_GETLINK: u16 = 18;
pub(crate) const RTM_NEWNSID: u16 = 88;
pub(crate) const RTM_GETNSID: u16 = 90;
pub(super) const RTM_NEWSTATS: u16 = 92;
pub(super) const RTM_GETSTATS: u16 = 94;
/// `RTMGRP_LINK`: the `RTNLGRP_LINK` multicast group as a `nl_groups` bit.
pub(super) const RTMGRP_LINK: u32 = 1;
/// `struct rtgenmsg` (one byte) padded to the netlink alignment.
pub(crate) const RTGENMSG_LEN: usize = 4;

// ---- if_link.h ----

/// `sizeof(struct ifinfomsg)`.
pub(super) const IFINFOMSG_LEN: usize = 16;
/// `sizeof(struct if_stats_msg)`: family, pad1, pad2, ifindex, filter_mask.
pub(super) const IF_STATS_MSG_LEN: usize = 12;
pub(super) const IFLA_IFNAME: u16 = 3;
pub(super) const IFLA_MTU: u16 = 4;
pub(super) const IFLA_OPERSTATE: u16 = 16;
pub(super) const IFLA_LINKINFO: u16 = 18;
pub(super) const IFLA_STATS64: u16 = 23;
/// `IFLA_LINK_NETNSID`: the nsid (in this namespace) of the namespace of a link's peer.
pub(super) const IFLA_LINK_NETNSID: u16 = 37;
pub(super) const IFLA_INFO_KIND: u16 = 1;
/// `IFLA_STATS_LINK_64`: `struct rtnl_link_stats64` in an `RTM_NEWSTATS` message.
pub(super) const IFLA_STATS_LINK_64: u16 = 1;
/// `IFLA_STATS_FILTER_BIT(IFLA_STATS_LINK_64)`.
pub(super) const IFLA_STATS_FILTER_LINK_64: u32 = 1 << (IFLA_STATS_LINK_64 - 1);
/// The 23 `__u64` fields `struct rtnl_link_stats64` has had since Linux 2.6.35.
pub(super) const STATS64_MIN_LEN: usize = 23 * 8;

// ---- net_namespace.h ----

pub(crate) const NETNSA_NSID: u16 = 1;
pub(crate) const NETNSA_FD: u16 = 3;

/// `struct rtnl_link_stats64` as the kernel reports it (fields the agent exports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub(crate) tx_errors: u64,
    pub rx_dropped: u64,
    pub(crate) tx_dropped: u64,
}

impl LinkStats {
    /// Whether any counter is lower than in `earlier`: the kernel's counters were reset
    /// (device recreated, or a driver that clears its statistics).
    pub(super) fn went_back_from(&self, earlier: &LinkStats) -> bool {
        self.rx_packets < earlier.rx_packets
            || self.tx_packets < earlier.tx_packets
            || self.rx_bytes < earlier.rx_bytes
            || self.tx_bytes < earlier.tx_bytes
            || self.rx_errors < earlier.rx_errors
            || self.tx_errors < earlier.tx_errors
            || self.rx_dropped < earlier.rx_dropped
            || self.tx_dropped < earlier.tx_dropped
    }
}

/// The rest of `struct rtnl_link_stats64`: detailed error counters, not exported by the
/// interface collector but kept for whoever needs them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkStatsDetail {
    pub(crate) multicast: u64,
    pub(crate) collisions: u64,
    pub(crate) rx_length_errors: u64,
    pub(crate) rx_over_errors: u64,
    pub(crate) rx_crc_errors: u64,
    pub(crate) rx_frame_errors: u64,
    pub(crate) rx_fifo_errors: u64,
    pub(crate) rx_missed_errors: u64,
    pub(crate) tx_aborted_errors: u64,
    pub(crate) tx_carrier_errors: u64,
    pub(crate) tx_fifo_errors: u64,
    pub(crate) tx_heartbeat_errors: u64,
    pub(crate) tx_window_errors: u64,
    pub(crate) rx_compressed: u64,
    pub(crate) tx_compressed: u64,
    /// Packets dropped because no protocol handler took them (Linux 4.6+; `None` when the
    /// kernel does not report it).
    pub(crate) rx_nohandler: Option<u64>,
    /// Packets dropped because they were addressed to another host (Linux 5.19+).
    pub(crate) rx_otherhost_dropped: Option<u64>,
}

/// RFC 2863 operational state (`IFLA_OPERSTATE`, `IF_OPER_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum OperState {
    /// `IF_OPER_UNKNOWN`, a value this agent does not know, or no attribute at all.
    #[default]
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

impl OperState {
    pub(super) fn from_u8(v: u8) -> OperState {
        match v {
            1 => OperState::NotPresent,
            2 => OperState::Down,
            3 => OperState::LowerLayerDown,
            4 => OperState::Testing,
            5 => OperState::Dormant,
            6 => OperState::Up,
            _ => OperState::Unknown,
        }
    }

}

/// `NLMSG_ALIGN`/`RTA_ALIGN`: rounds up to a multiple of 4.
pub(crate) fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

// Native-endian field reads. The callers have checked bounds; these only convert.

pub(crate) fn read_u16(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

pub(crate) fn read_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(crate) fn read_i32(b: &[u8], off: usize) -> i32 {
    read_u32(b, off) as i32
}

pub(crate) fn read_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}
