//! `snapshot --pcap FILE`: the sampled dropped packets as pcapng (pcap-file), one raw-IP
//! interface, each packet with its drop reason, flow and location in the packet comment,
//! as `tshark -r` and Wireshark show it (`frame.comment`).

use std::{
    borrow::Cow,
    io::Write,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};
use retina_ebpf_common::flows::{FLOW_SNAPLEN_MAX, FlowEvent};

/// The comment of one packet: `drop.reason=NO_SOCKET drop.location=__udp4_lib_rcv
/// flow="udp 10.0.0.1:40000 > 10.0.0.2:9" socket.cgroup.id=1234`.
pub(crate) fn comment(e: &FlowEvent, reason: &str, location: Option<&str>) -> String {
    let mut s = format!(
        "drop.reason={reason} flow=\"{}\"",
        crate::collectors::drops::flows::describe(&e.key)
    );
    if let Some(l) = location {
        s.push_str(&format!(" drop.location={l}"));
    }
    s.push_str(&format!(
        " network.interface.index={} network.namespace.inode={}",
        e.key.ifindex, e.key.netns
    ));
    if e.cgroup != 0 {
        s.push_str(&format!(" socket.cgroup.id={}", e.cgroup));
    }
    s
}

/// Wall-clock time of a `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) value.
pub(crate) struct Clock {
    offset: Duration,
}

impl Clock {
    pub(crate) fn now() -> Clock {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let mono = Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.max(0) as u32);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            offset: wall.saturating_sub(mono),
        }
    }

    pub(crate) fn wall(&self, ktime_ns: u64) -> Duration {
        self.offset + Duration::from_nanos(ktime_ns)
    }
}

/// Writes `events` to `out` as pcapng; `names(event)` gives its reason and location.
pub(crate) fn write<W: Write>(
    out: W,
    events: &[FlowEvent],
    mut names: impl FnMut(&FlowEvent) -> (std::sync::Arc<str>, Option<std::sync::Arc<str>>),
) -> Result<W, pcap_file::PcapError> {
    let mut w = PcapNgWriter::new(out)?;
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: FLOW_SNAPLEN_MAX,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Borrowed("retina-drops")),
            InterfaceDescriptionOption::IfDescription(Cow::Borrowed(
                "packets the kernel dropped (kfree_skb), sampled by retina-agent, from their IP header",
            )),
        ],
    })?;
    let clock = Clock::now();
    for e in events {
        let cap = (e.cap_len as usize).min(e.data.len());
        let (reason, location) = names(e);
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: clock.wall(e.time_ns),
            original_len: e.len.max(cap as u32),
            data: Cow::Borrowed(&e.data[..cap]),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment(
                e,
                &reason,
                location.as_deref(),
            )))],
        })?;
    }
    Ok(w.into_inner())
}

#[cfg(test)]
mod tests;
