//! Drop flows (`drops.flows`): what the probe is loaded with, and reading the flow map, its
//! counters and the sampled events back. See `retina_ebpf_common::flows` for the design.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
};
use retina_ebpf_common::flows::{
    FAMILY_IPV4, FLOW_EVENTS_MAP, FLOW_FRONT_MAP, FLOW_OFFSETS_VALID, FLOW_SEQ_MAP, FLOW_STAT_RING_FULL,
    FLOW_STAT_SENT, FLOW_STAT_SEQ_LOST, FLOW_STAT_SUPPRESSED, FLOW_STAT_UNCOUNTED,
    FLOW_STAT_UNPARSED, FLOW_STATS_MAP, FLOWS_MAP, FlowEvent, FlowFront, FlowKey, FlowOffsets, FlowValue,
};

use crate::kernel::btf::Btf;

/// Default capacity of the flow map (`drops.flows_capacity`).
pub(crate) const DEFAULT_CAPACITY: u32 = 4096;
/// Default sampled events per second, for the whole node (`drops.flow_events_per_second`).
pub(crate) const DEFAULT_EVENTS_PER_SECOND: u32 = 100;
/// Default bytes of each sampled packet kept (`drops.flow_snaplen`).
pub(crate) const DEFAULT_SNAPLEN: u32 = 128;
/// Bytes of the ring buffer with flows on: room for a few thousand events between reads.
pub(crate) const RING_BYTES: u32 = 1 << 20;

/// How the probe counts and samples flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowOptions {
    pub capacity: u32,
    /// For the node: each CPU gets its share (rounded up), and a burst of one second.
    pub events_per_second: u32,
    pub snaplen: u32,
}

impl Default for FlowOptions {
    fn default() -> Self {
        FlowOptions {
            capacity: DEFAULT_CAPACITY,
            events_per_second: DEFAULT_EVENTS_PER_SECOND,
            snaplen: DEFAULT_SNAPLEN,
        }
    }
}

impl FlowOptions {
    /// Each CPU's token bucket rate.
    pub(crate) fn per_cpu_rate(&self, ncpus: usize) -> u64 {
        u64::from(self.events_per_second).div_ceil(ncpus.max(1) as u64)
    }
}

/// The `sk_buff` offsets the flow part reads; not valid (flows count nothing, every drop
/// is left alone) where BTF lacks one.
pub(crate) fn offsets_from_btf(btf: &Btf) -> FlowOffsets {
    match (
        btf.field_offset("sk_buff", "head"),
        btf.field_offset("sk_buff", "network_header"),
        btf.field_offset("sk_buff", "tail"),
    ) {
        (Ok(skb_head), Ok(skb_network_header), Ok(skb_tail)) => FlowOffsets {
            skb_head,
            skb_network_header,
            skb_tail,
            flags: FLOW_OFFSETS_VALID,
        },
        _ => FlowOffsets::zeroed(),
    }
}

/// What `snapshot --flows` needs of the drop collector: the flow maps, the reason names
/// and the host's namespace.
pub struct FlowSource {
    pub maps: FlowMaps,
    pub reasons: super::reasons::DropReasons,
    pub host_netns: u32,
}

/// Counters of the flow part, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowStats {
    /// Flows evicted from the LRU map (entries created, less those in it, less numbers
    /// lost to races).
    pub evicted: u64,
    /// Drops whose headers could not be parsed (not IP, or a truncated linear head).
    pub unparsed: u64,
    pub sent: u64,
    pub suppressed: u64,
    /// Of `suppressed`: lost because the ring buffer was full.
    pub ring_full: u64,
    /// Parsed drops not counted in the flow map (an entry evicted as it was created).
    pub uncounted: u64,
}

/// One flow as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub key: FlowKey,
    pub value: FlowValue,
    /// False when the flow may have been evicted before and come back: `value.packets` is
    /// then a lower bound.
    pub exact: bool,
}

/// The flow maps, taken out of the loaded object.
pub struct FlowMaps {
    flows: HashMap<MapData, FlowKey, FlowValue>,
    seq: Array<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
    /// Each CPU's last flow and the drops of it not yet in `flows`.
    front: PerCpuArray<MapData, FlowFront>,
    events: Option<RingBuf<MapData>>,
}

/// Reads of the flow map a front entry may change under before the held counts are taken
/// as a lower bound (see [`held`]).
const FRONT_READS: usize = 3;

/// A flow map missing from the object, or failing to read.
#[derive(Debug, thiserror::Error)]
pub enum FlowMapError {
    #[error("eBPF object has no `{0}` map")]
    Missing(&'static str),
    #[error("reading eBPF map `{map}`: {source}")]
    Read {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

fn read_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> FlowMapError {
    move |source| FlowMapError::Read { map, source }
}

impl FlowMaps {
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<FlowMaps, FlowMapError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(FlowMapError::Missing(name));
        Ok(FlowMaps {
            flows: HashMap::try_from(take(FLOWS_MAP)?).map_err(read_err(FLOWS_MAP))?,
            seq: Array::try_from(take(FLOW_SEQ_MAP)?).map_err(read_err(FLOW_SEQ_MAP))?,
            stats: PerCpuArray::try_from(take(FLOW_STATS_MAP)?)
                .map_err(read_err(FLOW_STATS_MAP))?,
            front: PerCpuArray::try_from(take(FLOW_FRONT_MAP)?)
                .map_err(read_err(FLOW_FRONT_MAP))?,
            events: Some(
                RingBuf::try_from(take(FLOW_EVENTS_MAP)?).map_err(read_err(FLOW_EVENTS_MAP))?,
            ),
        })
    }

    /// The ring buffer of sampled events, once.
    pub(crate) fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    fn stat(&self, index: u32) -> Result<u64, FlowMapError> {
        Ok(self
            .stats
            .get(&index, 0)
            .map_err(read_err(FLOW_STATS_MAP))?
            .iter()
            .sum())
    }

    fn fronts(&self) -> Result<Vec<FlowFront>, FlowMapError> {
        Ok(self
            .front
            .get(&0, 0)
            .map_err(read_err(FLOW_FRONT_MAP))?
            .iter()
            .copied()
            .collect())
    }

    /// Every flow in the map, largest first, and the counters.
    pub fn read(&self) -> Result<(Vec<Flow>, FlowStats), FlowMapError> {
        let mut attempt = 0;
        let (issued, mut raw, held) = loop {
            attempt += 1;
            let before = self.fronts()?;
            // The number of entries created so far, read before the entries: any entry
            // created later has a higher number and is left out of the search for missing
            // ones.
            let issued = self.seq.get(&0, 0).map_err(read_err(FLOW_SEQ_MAP))?;
            let mut raw = Vec::new();
            for item in self.flows.iter() {
                match item {
                    Ok(kv) => raw.push(kv),
                    // An entry evicted while the map was walked: it is missing, as it should.
                    Err(aya::maps::MapError::KeyNotFound) => continue,
                    Err(e) => return Err(read_err(FLOWS_MAP)(e)),
                }
            }
            let after = self.fronts()?;
            if let Some(held) = held(&before, &after, attempt == FRONT_READS) {
                break (issued, raw, held);
            }
        };
        let mut seqs: Vec<u64> = raw.iter().map(|(_, v)| v.seq).collect();
        let first_missing = first_missing(&mut seqs, issued);
        let lost = self.stat(FLOW_STAT_SEQ_LOST)?;
        let present = raw.iter().filter(|(_, v)| v.seq < issued).count() as u64;
        let stats = FlowStats {
            evicted: issued.saturating_sub(present).saturating_sub(lost),
            unparsed: self.stat(FLOW_STAT_UNPARSED)?,
            sent: self.stat(FLOW_STAT_SENT)?,
            suppressed: self.stat(FLOW_STAT_SUPPRESSED)?,
            ring_full: self.stat(FLOW_STAT_RING_FULL)?,
            uncounted: self.stat(FLOW_STAT_UNCOUNTED)?,
        };
        add_held(&mut raw, &held);
        let mut flows: Vec<Flow> = raw
            .into_iter()
            .map(|(key, value)| Flow {
                key,
                value,
                // A flow only held in front entries (its LRU entry evicted since) has
                // `seq` u64::MAX: not exact.
                exact: value.seq < first_missing,
            })
            .collect();
        flows.sort_by(|a, b| {
            b.value
                .packets
                .cmp(&a.value.packets)
                .then_with(|| a.key.cmp(&b.key))
        });
        Ok((flows, stats))
    }
}

/// The counts the CPUs' front entries hold, from their reads before and after a read of the
/// flow map. A CPU whose entry kept the same even generation moved nothing into the map in
/// between: its held counts are in neither read of the map twice. Otherwise `None` (read
/// again), or with `last` the counts held after, which the map read lacks at most the
/// last move of: a lower bound, never counted twice.
pub(crate) fn held(before: &[FlowFront], after: &[FlowFront], last: bool) -> Option<Vec<FlowFront>> {
    let mut out = Vec::new();
    for (b, a) in before.iter().zip(after) {
        let f = if b.generation == a.generation && b.generation % 2 == 0 {
            b
        } else if last && a.generation % 2 == 0 {
            a
        } else if last {
            continue;
        } else {
            return None;
        };
        if f.packets != 0 {
            out.push(*f);
        }
    }
    Some(out)
}

/// Adds the held counts to their flows; a flow held but not in the map (its entry was
/// evicted and comes back when the CPU moves the counts) is added with `seq` u64::MAX.
pub(crate) fn add_held(raw: &mut Vec<(FlowKey, FlowValue)>, held: &[FlowFront]) {
    for h in held {
        match raw.iter_mut().find(|(k, _)| *k == h.key) {
            Some((_, v)) => {
                v.packets += h.packets;
                v.bytes += h.bytes;
                v.tcp_flags |= h.tcp_flags;
            }
            None => raw.push((
                h.key,
                FlowValue {
                    packets: h.packets,
                    bytes: h.bytes,
                    seq: u64::MAX,
                    tcp_flags: h.tcp_flags,
                },
            )),
        }
    }
}

/// The lowest sequence number below `issued` that no entry holds: every entry with a lower
/// number was created before any flow now missing, so it cannot be a flow that was evicted
/// and came back. `issued` when none is missing. Sequence numbers lost to a race (an insert
/// another CPU won) count as missing too: that only makes fewer flows exact, never more.
pub(crate) fn first_missing(seqs: &mut [u64], issued: u64) -> u64 {
    seqs.sort_unstable();
    let mut next = 0u64;
    for &s in seqs.iter() {
        if s >= issued || s > next {
            break;
        }
        next = s + 1;
    }
    next.min(issued)
}

/// An address of a flow key.
pub(crate) fn address(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == FAMILY_IPV4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

/// The transport's name (`network.transport`-like) for the key's IP protocol.
pub(crate) fn transport(protocol: u8) -> std::borrow::Cow<'static, str> {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        p => format!("ip-proto-{p}").into(),
    }
}

fn endpoint(family: u8, addr: &[u8; 16], port: Option<u16>) -> String {
    let a = address(family, addr);
    match (port, family == FAMILY_IPV4) {
        (Some(p), true) => format!("{a}:{p}"),
        (Some(p), false) => format!("[{a}]:{p}"),
        (None, _) => a.to_string(),
    }
}

pub(crate) fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132)
}

pub(crate) fn is_icmp(protocol: u8) -> bool {
    matches!(protocol, 1 | 58)
}

/// One line naming a flow: `udp 10.0.0.1:40000 > 10.0.0.2:9`, `icmp 10.0.0.1 > 10.0.0.2
/// type 8 code 0`.
pub(crate) fn describe(key: &FlowKey) -> String {
    let ports = has_ports(key.protocol) && key.fragment == 0;
    let mut s = format!(
        "{} {} > {}",
        transport(key.protocol),
        endpoint(key.family, &key.saddr, ports.then_some(key.sport)),
        endpoint(key.family, &key.daddr, ports.then_some(key.dport)),
    );
    if is_icmp(key.protocol) && key.fragment == 0 {
        let _ = write!(s, " type {} code {}", key.sport, key.dport);
    }
    if key.fragment != 0 {
        s.push_str(" (fragment)");
    }
    s
}

/// A sampled event from the ring buffer's bytes; `None` for a record of another size.
pub(crate) fn event(bytes: &[u8]) -> Option<FlowEvent> {
    if bytes.len() < std::mem::size_of::<FlowEvent>() {
        return None;
    }
    // SAFETY: FlowEvent is plain integers (aya::Pod), any bit pattern is valid, and the
    // slice holds at least its size; read_unaligned copes with any alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlowEvent>()) })
}

#[cfg(test)]
mod tests;
