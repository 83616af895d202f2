//! The TCP event programs (`retina-tcp`): per socket cgroup, counts of retransmitted
//! segments, failed active connects and resets sent and received, for the sockets of the
//! host's network namespace (those of systemd services and of processes without a
//! namespace of their own).

/// The BTF-enabled tracepoint programs, by the tracepoint each attaches to.
pub const TCP_PROGRAMS: [(&str, &str); 4] = [
    ("tcp_retransmit", "tcp_retransmit_skb"),
    ("tcp_state", "inet_sock_set_state"),
    ("tcp_reset_sent", "tcp_send_reset"),
    ("tcp_reset_received", "tcp_receive_reset"),
];
/// Per-CPU hash map of cgroup v2 id (`u64`) to [`TcpCounts`].
pub const TCP_COUNTS_MAP: &str = "TCP_COUNTS";
/// Per-CPU array with one [`TcpCounts`]: events whose cgroup found [`TCP_COUNTS_MAP`] full.
pub const TCP_OVERFLOW_MAP: &str = "TCP_OVERFLOW";
/// The read-only global holding [`TcpOffsets`].
pub const TCP_OFFSETS_GLOBAL: &str = "TCP_OFFSETS";
/// Default capacity of [`TCP_COUNTS_MAP`] (distinct socket cgroups).
pub const DEFAULT_TCP_MAX_ENTRIES: u32 = 4096;

/// Index in [`TcpCounts::events`]: segments retransmitted (`tcp:tcp_retransmit_skb`, only
/// those the kernel sent).
pub const RETRANSMITS: usize = 0;
/// Index: active connects that failed (`SYN_SENT` → `CLOSE`, `sock:inet_sock_set_state`).
pub const CONNECT_FAILURES: usize = 1;
/// Index: resets sent from a full socket (`tcp:tcp_send_reset`).
pub const RESETS_SENT: usize = 2;
/// Index: resets received (`tcp:tcp_receive_reset`).
pub const RESETS_RECEIVED: usize = 3;
/// Kinds of events counted.
pub const TCP_EVENTS: usize = 4;

/// [`TcpOffsets::flags`]: the loader filled the offsets in.
pub const TCP_OFFSETS_VALID: u32 = 1;
/// [`TcpOffsets::flags`]: `tcp_retransmit_skb` has its third argument, `err` (newer
/// kernels call it for failed retransmits too; only `err == 0` is counted).
pub const TCP_OFFSETS_RETRANSMIT_ERR: u32 = 1 << 1;

/// Byte offsets of the kernel fields the programs read, from the running kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOffsets {
    /// `struct sock`: `sk_cgrp_data.cgroup`.
    pub sk_cgroup: u32,
    /// `struct cgroup`: `kn`.
    pub cgroup_kn: u32,
    /// `struct kernfs_node`: `id` (a `u64`).
    pub kn_id: u32,
    /// `struct sock`: `__sk_common.skc_state` (a `u8`, in every kind of socket).
    pub sk_state: u32,
    /// `struct sock`: `sk_protocol` (a `u16`).
    pub sk_protocol: u32,
    /// `struct sock`: `__sk_common.skc_net.net`.
    pub sk_net: u32,
    /// `struct net`: `ns.inum`.
    pub net_inum: u32,
    /// The inode of the network namespace whose sockets are counted (the agent's own).
    pub host_netns: u32,
    /// `TCP_OFFSETS_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

impl TcpOffsets {
    pub const fn zeroed() -> Self {
        Self {
            sk_cgroup: 0,
            cgroup_kn: 0,
            kn_id: 0,
            sk_state: 0,
            sk_protocol: 0,
            sk_net: 0,
            net_inum: 0,
            host_netns: 0,
            flags: 0,
            _pad: 0,
        }
    }
}

/// The counts of one socket cgroup on one CPU, by kind ([`RETRANSMITS`], ...).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounts {
    pub events: [u64; TCP_EVENTS],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: #[repr(C)], only integers, no padding (sizes asserted below).
    unsafe impl aya::Pod for super::TcpOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TcpCounts {}
}

const _: () = assert!(core::mem::size_of::<TcpOffsets>() == 10 * 4);
const _: () = assert!(core::mem::size_of::<TcpCounts>() == TCP_EVENTS * 8);
