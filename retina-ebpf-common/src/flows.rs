//! Drop flows (`drops.flows`): the types the program's flow part and the agent share.
//!
//! With flows on, the program parses the dropped packet's L3/L4 headers and counts every
//! drop exactly per [`FlowKey`] in an LRU hash map ([`FLOWS_MAP`]) of bounded capacity,
//! and sends a sample of the drops, at most a configured rate, as [`FlowEvent`]s through a
//! ring buffer ([`FLOW_EVENTS_MAP`]).
//!
//! Evictions: every flow entry is created with a sequence number taken from a global
//! counter ([`FLOW_SEQ_MAP`]). User space sees which numbers are missing from the map: each
//! missing one is an evicted flow (or a number lost to a race, counted in
//! [`FLOW_STAT_SEQ_LOST`]). A flow whose number is above the lowest missing one may have
//! been evicted before and come back, so its count is only a lower bound; one below it
//! cannot have been (its earlier self would be missing with a lower number).
//!
//! Front cache: a flood is one flow, so each CPU keeps the last flow it counted in
//! [`FLOW_FRONT_MAP`] and adds that flow's next drops there, touching the LRU map only when
//! the flow changes or [`FLOW_FRONT_MAX`] drops are held. The first drop of a flow on a CPU
//! always goes to the LRU map (creating the entry, with its sequence number, as before), so
//! a flow held in a front entry has an LRU entry or had one that was evicted: eviction
//! detection is unchanged. User space adds the held drops to what it reads from the map
//! (see [`FlowFront::generation`] for how it avoids counting them twice).

/// Name of the read-only global (`u32`): 1 with flows on, 0 (default) off. The program
/// reads it first, so with 0 the verifier removes the whole flow path.
pub const FLOWS_GLOBAL: &str = "FLOWS";
/// Name of the read-only global [`FlowOffsets`].
pub const FLOW_OFFSETS_GLOBAL: &str = "FLOW_OFFSETS";
/// Name of the read-only global (`u64`): events per second each CPU may send (its token
/// bucket's rate and, for one second, its burst).
pub const FLOW_RATE_GLOBAL: &str = "FLOW_RATE";
/// Name of the read-only global (`u32`): bytes of each sampled packet copied into its
/// event, from the network header on (at most [`FLOW_SNAPLEN_MAX`]).
pub const FLOW_SNAPLEN_GLOBAL: &str = "FLOW_SNAPLEN";
/// LRU hash map of [`FlowKey`] to [`FlowValue`].
pub const FLOWS_MAP: &str = "DROP_FLOWS";
/// Array with one `u64`: the next flow sequence number.
pub const FLOW_SEQ_MAP: &str = "DROP_FLOW_SEQ";
/// Per-CPU array of [`FLOW_STATS`] `u64` counters (`FLOW_STAT_*`).
pub const FLOW_STATS_MAP: &str = "DROP_FLOW_STATS";
/// Per-CPU array with one [`TokenBucket`].
pub const FLOW_BUCKET_MAP: &str = "DROP_FLOW_BUCKET";
/// Ring buffer of [`FlowEvent`]s.
pub const FLOW_EVENTS_MAP: &str = "DROP_FLOW_EVENTS";
/// Per-CPU array with one [`FlowFront`].
pub const FLOW_FRONT_MAP: &str = "DROP_FLOW_FRONT";

/// Most drops a front entry holds before they are added to the LRU map: the flow's entry is
/// then looked up at least once per this many drops, which keeps it recent in the LRU map
/// while a flood goes on (and costs a lookup per 256 drops).
pub const FLOW_FRONT_MAX: u64 = 256;

/// Most bytes of a packet an event carries.
pub const FLOW_SNAPLEN_MAX: u32 = 128;

/// Sequence numbers taken for an entry the program then did not create (another CPU
/// created the same flow first, or the insert failed): not evictions.
pub const FLOW_STAT_SEQ_LOST: u32 = 0;
/// Drops whose headers could not be parsed: not IPv4/IPv6, no network header, or headers
/// beyond the packet's linear data.
pub const FLOW_STAT_UNPARSED: u32 = 1;
/// Events sent to the ring buffer.
pub const FLOW_STAT_SENT: u32 = 2;
/// Drops not sent as an event: over the rate budget, or the ring buffer was full (those
/// also in [`FLOW_STAT_RING_FULL`]).
pub const FLOW_STAT_SUPPRESSED: u32 = 3;
/// Events lost because the ring buffer was full (user space did not read in time).
pub const FLOW_STAT_RING_FULL: u32 = 4;
/// Parsed drops not counted in the flow map: its entry was evicted between creation and
/// counting, or could not be created (the LRU map found no free entry for this CPU).
pub const FLOW_STAT_UNCOUNTED: u32 = 5;
/// Counters in [`FLOW_STATS_MAP`].
pub const FLOW_STATS: u32 = 6;

/// `FlowKey::family` of IPv4 and IPv6.
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// The flow of a dropped packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source and destination address: IPv4 in the first 4 bytes (network order), the rest 0.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// TCP/UDP ports (host order); ICMP/ICMPv6: type and code; otherwise 0.
    pub sport: u16,
    pub dport: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// IP protocol number (IPv6: the first next header).
    pub protocol: u8,
    /// 1: a non-first IPv4 fragment (no L4 header, ports 0).
    pub fragment: u8,
    pub _pad: u8,
    /// The full 32-bit `enum skb_drop_reason` value.
    pub reason: u32,
    /// Network namespace inode (as in `DropKey::netns`).
    pub netns: u32,
    /// `skb->dev->ifindex`, 0 without a device.
    pub ifindex: u32,
}

/// Counts of one flow (shared by all CPUs, updated atomically).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub packets: u64,
    /// Sum of `skb->len`.
    pub bytes: u64,
    /// Sequence number of the entry's creation (see the module documentation).
    pub seq: u64,
    /// TCP flags seen (OR of the flags byte of every packet counted); 0 for other protocols.
    pub tcp_flags: u64,
}

/// One sampled drop.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlowEvent {
    pub key: FlowKey,
    /// The TCP flags byte of this packet (0 if not TCP).
    pub tcp_flags: u32,
    /// `bpf_ktime_get_ns()` at the drop.
    pub time_ns: u64,
    /// cgroup v2 id of the socket the packet had reached (as in `DropKey::cgroup`).
    pub cgroup: u64,
    /// Drop location address when locations are on, else 0.
    pub location: u64,
    /// `skb->len`.
    pub len: u32,
    /// Bytes of `data` that hold the packet (from its network header).
    pub cap_len: u32,
    pub data: [u8; FLOW_SNAPLEN_MAX as usize],
}

/// A CPU's last counted flow and its drops not yet added to the LRU map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFront {
    /// Odd while the program changes `key` or moves the held counts into the LRU map,
    /// incremented before and after (a seqlock). User space reads the entries, then the
    /// LRU map, then the entries again: where the number did not change and is even, the
    /// held counts were in neither map twice nor half-written, so they add exactly.
    pub generation: u64,
    /// All zeros (family 0, never a parsed flow) until the CPU counts its first flow.
    pub key: FlowKey,
    pub _pad: u32,
    /// Drops of `key` counted here and not in the LRU map, their bytes and TCP flags.
    pub packets: u64,
    pub bytes: u64,
    pub tcp_flags: u64,
}

/// A per-CPU token bucket, in nanosecond-tokens: one event costs `1e9`, and `rate` per
/// second are added, up to `rate * 1e9` (one second of burst).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenBucket {
    pub tokens: u64,
    pub last_ns: u64,
    /// Drops of the same flow still to suppress without reading the clock (see
    /// [`FLOW_BUCKET_SKIP`]).
    pub skip: u64,
}

/// After the clock found a CPU's bucket empty, how many next drops of the same flow are
/// suppressed without reading it again (`bpf_ktime_get_ns` costs more than the rest of
/// the sampling): the clock is read once per 16 drops of a flood.
pub const FLOW_BUCKET_SKIP: u64 = 15;

/// The `FlowOffsets::flags` bit saying the loader filled the offsets in.
pub const FLOW_OFFSETS_VALID: u32 = 1;

/// `struct sk_buff` field offsets the flow part reads, from kernel BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowOffsets {
    /// `head` (`unsigned char *`).
    pub skb_head: u32,
    /// `network_header` (`__u16`, offset from `head`; `0xffff` unset).
    pub skb_network_header: u32,
    /// `tail` (`sk_buff_data_t`: a `u32` offset from `head` on 64-bit kernels).
    pub skb_tail: u32,
    pub flags: u32,
}

impl FlowOffsets {
    pub const fn zeroed() -> Self {
        Self {
            skb_head: 0,
            skb_network_header: 0,
            skb_tail: 0,
            flags: 0,
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: #[repr(C)], integers only, no padding (sizes asserted below).
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowFront {}
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 32 + 4 + 4 + 12);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 32);
const _: () = assert!(core::mem::size_of::<FlowOffsets>() == 16);
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 52 + 4 + 24 + 8 + 128);
const _: () = assert!(core::mem::size_of::<TokenBucket>() == 24);
const _: () = assert!(core::mem::size_of::<FlowFront>() == 8 + 52 + 4 + 24);
