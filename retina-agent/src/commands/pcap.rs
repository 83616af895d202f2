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
pub fn comment(e: &FlowEvent, reason: &str, location: Option<&str>) -> String {
    let mut s = format!(
        "drop.reason={reason} flow=\"{}\"",
        super::flows::describe(&e.key)
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
pub struct Clock {
    offset: Duration,
}

impl Clock {
    pub fn now() -> Clock {
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

    pub fn wall(&self, ktime_ns: u64) -> Duration {
        self.offset + Duration::from_nanos(ktime_ns)
    }
}

/// Writes `events` to `out` as pcapng; `names(event)` gives its reason and location.
pub fn write<W: Write>(
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
mod tests {
    use std::sync::Arc;

    use pcap_file::pcapng::{Block, PcapNgReader};
    use retina_ebpf_common::flows::{FAMILY_IPV4, FlowKey};

    use super::*;

    /// A UDP datagram 127.0.0.1:40000 > 127.0.0.1:9 as the program copies it (IP header on).
    fn udp_event() -> FlowEvent {
        let mut data = [0u8; 128];
        let packet: [u8; 32] = [
            0x45, 0, 0, 32, 0, 1, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1, // IPv4
            0x9c, 0x40, 0, 9, 0, 12, 0, 0, // UDP 40000 > 9
            1, 2, 3, 4,
        ];
        data[..32].copy_from_slice(&packet);
        let mut key = FlowKey {
            family: FAMILY_IPV4,
            protocol: 17,
            sport: 40000,
            dport: 9,
            reason: 3,
            netns: 4026531840,
            ifindex: 1,
            ..FlowKey::default()
        };
        key.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        key.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        FlowEvent {
            key,
            tcp_flags: 0,
            time_ns: 1_000_000_000,
            cgroup: 0,
            location: 0,
            len: 32,
            cap_len: 32,
            data,
        }
    }

    #[test]
    fn packets_carry_their_drop_reason_in_the_comment() {
        let e = udp_event();
        let out = write(Vec::new(), &[e, e], |_| {
            (Arc::from("NO_SOCKET"), Some(Arc::from("__udp4_lib_rcv+0x4bc")))
        })
        .unwrap();
        let mut r = PcapNgReader::new(&out[..]).unwrap();
        let mut packets = 0;
        while let Some(block) = r.next_block() {
            if let Block::EnhancedPacket(p) = block.unwrap() {
                packets += 1;
                assert_eq!(&p.data[..], &e.data[..32]);
                assert_eq!(p.original_len, 32);
                let comments: Vec<String> = p
                    .options
                    .iter()
                    .filter_map(|o| match o {
                        EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                        _ => None,
                    })
                    .collect();
                assert_eq!(
                    comments,
                    vec![
                        "drop.reason=NO_SOCKET flow=\"udp 127.0.0.1:40000 > 127.0.0.1:9\" drop.location=__udp4_lib_rcv+0x4bc network.interface.index=1 network.namespace.inode=4026531840"
                    ]
                );
            }
        }
        assert_eq!(packets, 2);
    }
}
