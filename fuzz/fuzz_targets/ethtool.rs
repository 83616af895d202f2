//! Ethtool replies: `ETHTOOL_GSTRINGS` (statistic names) and `ETHTOOL_GSTATS` (values)
//! as the driver-statistics collector maps them to series in every per-queue mode, and
//! ethtool generic-netlink datagrams decoded as the link-state collector's connection
//! decodes them (`netlink-proto`'s codec, the `ethtool` crate's messages), folded into the
//! link-state table.
//!
//! Input: records (see `src/lib.rs`); tag % 3: 0 a GSTRINGS reply (its header's count is
//! taken as the driver's count), 1 a GSTATS reply, 2 a generic-netlink datagram.
#![no_main]

use bytes::BytesMut;
use ethtool::EthtoolMessage;
use libfuzzer_sys::fuzz_target;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_generic::GenlMessage;
use netlink_proto::{NetlinkCodec, NetlinkMessageCodec as _};
use retina_agent::{
    collectors::ethtool::{LinkStateTable, QueueMode, apply_link_state, parse_replies},
    filter::NameFilter,
};
use retina_agent_fuzz::records;

fuzz_target!(|data: &[u8]| {
    let filter = NameFilter::all();
    let mut gstrings: Option<&[u8]> = None;
    let mut gstats: Vec<Vec<u64>> = Vec::new();
    let mut table = LinkStateTable::new();
    for (tag, bytes) in records(data) {
        match tag % 3 {
            0 => gstrings = Some(bytes),
            1 => gstats.push(
                // After the 8-byte header (cmd, n_stats): the values.
                bytes
                    .get(8..)
                    .unwrap_or_default()
                    .chunks_exact(8)
                    .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            _ => {
                let mut buf = BytesMut::from(bytes);
                while let Ok(Some(msg)) =
                    NetlinkCodec::decode::<GenlMessage<EthtoolMessage>>(&mut buf)
                {
                    if let NetlinkPayload::InnerMessage(genl) = msg.payload {
                        apply_link_state(&mut table, &filter, &genl.payload.nlas);
                    }
                }
            }
        }
    }
    if let Some(reply) = gstrings {
        let count = reply
            .get(8..12)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        let values: Vec<&[u64]> = gstats
            .iter()
            .filter(|v| v.len() == count as usize)
            .map(Vec::as_slice)
            .collect();
        for mode in [
            QueueMode::Split,
            QueueMode::Sum,
            QueueMode::Keep,
            QueueMode::Drop,
        ] {
            if let Some(points) = parse_replies(reply, count, mode, &filter, &values) {
                assert!(points.len() <= count as usize);
            }
        }
    }
});
