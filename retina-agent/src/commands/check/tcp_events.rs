//! The `tcp_events` check: do the TCP event programs (retransmits, failed connects,
//! resets per socket cgroup) find their tracepoints in this kernel's BTF, and does the
//! kernel load and attach them? It really loads them, then detaches them.

use std::path::Path;

use super::Check;
use crate::{
    collectors::tcp_events::{TcpProbe, probe::DEFAULT_MAX_ENTRIES},
    kernel::{btf::Btf, netns::current_netns_inode, sys::error_chain},
};

const NAME: &str = "tcp_events";

pub(super) fn tcp_events(btf_path: Option<&Path>) -> Check {
    let btf = match btf_path {
        Some(p) => Btf::from_file(p),
        None => Btf::from_sys(),
    };
    let btf = match btf {
        Ok(b) => b,
        Err(e) => return Check::warn(NAME, format!("not checked: {e}"), "see the btf check above"),
    };
    let host = current_netns_inode().unwrap_or(0);
    match TcpProbe::load(&btf, host, DEFAULT_MAX_ENTRIES) {
        Ok(probe) if probe.missing().is_empty() => Check::pass(
            NAME,
            "loaded, attached to tcp_retransmit_skb, inet_sock_set_state, tcp_send_reset and tcp_receive_reset (BTF-enabled tracepoints) and detached",
        ),
        Ok(probe) => Check::warn(
            NAME,
            format!(
                "loaded and attached, but this kernel has no tracepoint {}: those TCP events are not counted",
                probe.missing().join(", ")
            ),
            "the other TCP events and everything else work; a newer kernel has the tracepoints",
        ),
        Err(e) => Check::warn(
            NAME,
            format!(
                "{}: no per-workload TCP retransmits, failed connects or resets",
                error_chain(&e)
            ),
            "the TCP event programs need kernel BTF with tp_btf support (Linux 5.5+) and CAP_BPF + CAP_PERFMON; drop counting does not depend on them",
        ),
    }
}
