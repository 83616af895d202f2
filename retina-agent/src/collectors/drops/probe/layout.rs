//! What the probe needs to know about the running kernel, from its BTF: the tracepoint's
//! arguments, the structure offsets the program reads, and which reason values are not
//! drops.

use retina_ebpf_common::{
    OFFSETS_HAS_NETNS, OFFSETS_HAS_RX_SK, OFFSETS_HAS_SK_CGROUP, OFFSETS_HAS_USER_NS,
    OFFSETS_VALID, Offsets, REASON_ARG, RX_SK_ARG, TRACEPOINT,
};

use super::ProbeError;
use crate::kernel::btf::Btf;

/// Derives the offsets the program needs from the running kernel's BTF.
pub fn offsets_from_btf(btf: &Btf) -> Result<Offsets, ProbeError> {
    let args = match btf.tracepoint_args(TRACEPOINT) {
        None => return Err(ProbeError::NoTracepoint),
        Some(n) if (n as usize) <= REASON_ARG => {
            return Err(ProbeError::NoReasonArgument { found: n });
        }
        Some(n) => n as usize,
    };
    let field = |s: &str, f: &str| btf.field_offset(s, f).map_err(ProbeError::Layout);
    let mut offsets = Offsets {
        skb_dev: field("sk_buff", "dev")?,
        skb_sk: field("sk_buff", "sk")?,
        skb_len: field("sk_buff", "len")?,
        skb_protocol: field("sk_buff", "protocol")?,
        dev_ifindex: field("net_device", "ifindex")?,
        flags: OFFSETS_VALID,
        ..Offsets::zeroed()
    };
    // Without CONFIG_NET_NS, possible_net_t is empty and every drop is in init_net.
    if let (Ok(dev_net), Ok(sk_net), Ok(net_inum)) = (
        btf.field_offset("net_device", "nd_net.net"),
        btf.field_offset("sock", "__sk_common.skc_net.net"),
        btf.field_offset("net", "ns.inum"),
    ) {
        offsets.dev_net = dev_net;
        offsets.sk_net = sk_net;
        offsets.net_inum = net_inum;
        offsets.flags |= OFFSETS_HAS_NETNS;
        // The user namespace owning each network namespace (CONFIG_USER_NS), so the keys of
        // namespaces an unprivileged user made stay in their reserved pool.
        if let (Ok(net_user_ns), Ok(user_ns_level)) = (
            btf.field_offset("net", "user_ns"),
            btf.field_offset("user_namespace", "level"),
        ) {
            offsets.net_user_ns = net_user_ns;
            offsets.user_ns_level = user_ns_level;
            offsets.flags |= OFFSETS_HAS_USER_NS;
        }
    }
    // The socket's cgroup v2 (CONFIG_SOCK_CGROUP_DATA; a plain pointer since 5.15).
    if let (Ok(sk_cgroup), Ok(cgroup_kn), Ok(kn_id)) = (
        btf.field_offset("sock", "sk_cgrp_data.cgroup"),
        btf.field_offset("cgroup", "kn"),
        btf.field_offset("kernfs_node", "id"),
    ) {
        offsets.sk_cgroup = sk_cgroup;
        offsets.cgroup_kn = cgroup_kn;
        offsets.kn_id = kn_id;
        offsets.flags |= OFFSETS_HAS_SK_CGROUP;
    }
    if args > RX_SK_ARG {
        offsets.flags |= OFFSETS_HAS_RX_SK;
    }
    Ok(offsets)
}

/// Which drops this kernel lets the probe attribute to the cgroup owning their socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SocketOwnerSupport {
    /// Received packets too: the tracepoint passes `rx_sk` (Linux 6.11+).
    Received,
    /// Only packets whose `skb->sk` is still set (those a local socket sent).
    SentOnly,
    /// None: sockets carry no cgroup v2 pointer in this kernel's BTF.
    Unavailable,
}

impl SocketOwnerSupport {
    /// What the offsets derived from BTF allow.
    pub(crate) fn of(offsets: &Offsets) -> SocketOwnerSupport {
        if offsets.flags & OFFSETS_HAS_SK_CGROUP == 0 {
            SocketOwnerSupport::Unavailable
        } else if offsets.flags & OFFSETS_HAS_RX_SK == 0 {
            SocketOwnerSupport::SentOnly
        } else {
            SocketOwnerSupport::Received
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SocketOwnerSupport::Received => "socket owners of received and sent packets",
            SocketOwnerSupport::SentOnly => {
                "socket owners of sent packets only (no rx_sk argument before Linux 6.11)"
            }
            SocketOwnerSupport::Unavailable => "no socket owners (no sk_cgrp_data.cgroup in BTF)",
        }
    }
}

/// Values of `enum skb_drop_reason` that are not drops, as a bit mask (bit N: value N):
/// `SKB_NOT_DROPPED_YET` and `SKB_CONSUMED` where this kernel defines them. Their numbers
/// differ between kernels (6.1: NOT_DROPPED_YET = 0 and NOT_SPECIFIED = 1; 6.2+: CONSUMED =
/// 1 and NOT_SPECIFIED = 2; 5.17: neither, NOT_SPECIFIED = 0), so they come from BTF like
/// the reason names.
pub fn not_drop_reasons(btf: &Btf) -> u32 {
    btf.enum_values(crate::collectors::drops::reasons::CORE_ENUM)
        .unwrap_or_default()
        .iter()
        .filter(|v| matches!(v.name.as_str(), "SKB_NOT_DROPPED_YET" | "SKB_CONSUMED"))
        .filter(|v| v.value < 32)
        .fold(0, |mask, v| mask | (1 << v.value))
}

#[cfg(test)]
mod tests;
