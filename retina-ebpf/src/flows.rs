//! Drop flows (`drops.flows`, off by default): the dropped packet's L3/L4 headers, counted
//! exactly per flow in an LRU map, and a rate-limited sample sent through a ring buffer.
//! See `retina_ebpf_common::flows` for the maps and how evictions are told apart.
//!
//! Packet bytes are read with `bpf_probe_read_kernel` in both program flavours (`skb->head`
//! is a plain byte pointer the verifier does not let a `tp_btf` program dereference), and
//! only where the headers lie within the linear data (`skb->tail`): a drop whose headers
//! are not there is counted as unparsed, never read out of bounds.

use core::intrinsics::{AtomicOrdering::Relaxed, atomic_or, atomic_xadd};

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use retina_ebpf_common::{
    DropKey,
    flows::{
        FAMILY_IPV4, FAMILY_IPV6, FLOW_BUCKET_SKIP, FLOW_FRONT_MAX, FLOW_OFFSETS_VALID,
        FLOW_SNAPLEN_MAX, FLOW_STAT_RING_FULL, FLOW_STAT_SENT, FLOW_STAT_SEQ_LOST,
        FLOW_STAT_SUPPRESSED, FLOW_STAT_UNCOUNTED, FLOW_STAT_UNPARSED, FLOW_STATS, FlowEvent,
        FlowFront, FlowKey, FlowOffsets, FlowValue, TokenBucket,
    },
};

use crate::Kernel;

/// 1: flows on. Read-only data set by the loader; 0 makes the verifier drop the flow path.
#[unsafe(no_mangle)]
static FLOWS: u32 = 0;

#[unsafe(no_mangle)]
static FLOW_OFFSETS: FlowOffsets = FlowOffsets::zeroed();

/// Events per second per CPU.
#[unsafe(no_mangle)]
static FLOW_RATE: u64 = 0;

#[unsafe(no_mangle)]
static FLOW_SNAPLEN: u32 = 0;

/// The loader sizes it (`drops.flows_capacity`; 1 with flows off).
#[map]
static DROP_FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(1, 0);

#[map]
static DROP_FLOW_SEQ: Array<u64> = Array::with_max_entries(1, 0);

#[map]
static DROP_FLOW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FLOW_STATS, 0);

/// This CPU's last flow and its drops not yet in [`DROP_FLOWS`] (see `FlowFront`).
#[map]
static DROP_FLOW_FRONT: PerCpuArray<FlowFront> = PerCpuArray::with_max_entries(1, 0);

#[map]
static DROP_FLOW_BUCKET: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);

/// The loader sizes it (a page with flows off).
#[map]
static DROP_FLOW_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

const BPF_NOEXIST: u64 = 1;
const NS: u64 = 1_000_000_000;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

macro_rules! ro {
    ($e:expr) => {
        // SAFETY: read-only data written by the loader before load.
        unsafe { core::ptr::read_volatile(&raw const $e) }
    };
}

/// Whether flows are on: checked once, before anything else of the flow path.
#[inline(always)]
pub fn enabled() -> bool {
    ro!(FLOWS) != 0
}

/// `*ptr += value`, atomically, returning the old value. The compiler emits the BPF
/// atomic fetch-add (Linux 5.12+) only for `-mcpu=v3`; the rest of the program keeps its
/// instruction set, so this one instruction is written out.
#[inline(always)]
unsafe fn fetch_add(ptr: *mut u64, value: u64) -> u64 {
    let mut v = value;
    // SAFETY: the caller passes a valid, 8-byte aligned pointer into a map value.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            v = inout(reg) v,
            p = in(reg) ptr,
        );
    }
    v
}

#[inline(always)]
fn stat(index: u32, n: u64) {
    if let Some(c) = DROP_FLOW_STATS.get_ptr_mut(index) {
        // SAFETY: this CPU's counter; the program does not nest on a CPU.
        unsafe { *c += n };
    }
}

/// Packet bytes on the stack as little-endian 32-bit words, 8-byte aligned. The key is
/// assembled from whole words (an address is one or four of them): read as bytes, LLVM
/// split every field into single bytes and moved each through the stack.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Words<const W: usize>([u32; W]);

/// Reads `W` words at `addr` (a kernel address; a failed read gives `None`).
#[inline(always)]
fn words<const W: usize>(addr: u64) -> Option<Words<W>> {
    // SAFETY: bpf_probe_read_kernel copes with any address and reports failure.
    unsafe { bpf_probe_read_kernel(addr as *const Words<W>).ok() }
}

/// The key's word of ports from the first word of the L4 header: TCP/UDP ports in host
/// order (source in the low half), or the ICMP type and code.
#[inline(always)]
fn key_ports(protocol: u32, l4: u32) -> u32 {
    if protocol == IPPROTO_TCP as u32 || protocol == IPPROTO_UDP as u32 {
        // Each big-endian half byte-swapped in place.
        ((l4 & 0x00ff_00ff) << 8) | ((l4 >> 8) & 0x00ff_00ff)
    } else {
        (l4 & 0xff) | ((l4 >> 8) & 0xff) << 16
    }
}

/// The parsed headers of a dropped packet.
struct Parsed {
    key: FlowKey,
    tcp_flags: u32,
    /// Address of the network header, and the linear bytes from there.
    l3: u64,
    linear: u32,
}

const KEY_WORDS: usize = 13;

/// Parses the headers at `skb->head + skb->network_header`, within `skb->tail`. Reads 40
/// bytes for IPv4 (a header without options and the first 14 bytes of TCP/UDP/ICMP need
/// 34) and 56 for IPv6 (40 and 14); an IPv4 header with options takes a second read.
#[inline(always)]
fn parse<K: Kernel>(skb: u64, protocol: u32) -> Option<Parsed> {
    let head: u64 = K::read(skb, ro!(FLOW_OFFSETS.skb_head))?;
    let nh = K::read::<u16>(skb, ro!(FLOW_OFFSETS.skb_network_header))? as u32;
    let tail = K::read::<u32>(skb, ro!(FLOW_OFFSETS.skb_tail))?;
    if head == 0 || nh == 0xffff || nh >= tail {
        return None;
    }
    let linear = tail - nh;
    let l3 = head + nh as u64;
    // The addresses as words (IPv4: the first of each), the key's word of family,
    // protocol and fragment, the IP protocol, whether an L4 header follows, its offset,
    // its first word and its word 3 (TCP flags in bits 8-15). Kept as scalars: an array
    // filled in parts was split by LLVM into pieces moved through the stack.
    let (s0, s1, s2, s3, d0, d1, d2, d3);
    let (fam, proto, has_l4, l4_off, l4, l4_w3): (u32, u32, bool, u32, u32, u32);
    match protocol {
        ETH_P_IP => {
            let b = words::<10>(l3)?.0;
            if b[0] & 0xf0 != 0x40 {
                return None;
            }
            let ihl = (b[0] & 0x0f) * 4;
            if ihl < 20 || linear < ihl {
                return None;
            }
            proto = (b[2] >> 8) & 0xff;
            (s0, s1, s2, s3) = (b[3], 0, 0, 0);
            (d0, d1, d2, d3) = (b[4], 0, 0, 0);
            // Fragment offset: the low 13 bits of the big-endian half-word at byte 6.
            let fragment = (b[1] >> 16) & 0xff1f != 0;
            fam = FAMILY_IPV4 as u32 | (fragment as u32) << 16;
            has_l4 = !fragment;
            l4_off = ihl;
            (l4, l4_w3) = if fragment {
                (0, 0)
            } else if ihl == 20 {
                (b[5], b[8])
            } else {
                let o = words::<4>(l3 + ihl as u64)?.0;
                (o[0], o[3])
            };
        }
        ETH_P_IPV6 => {
            let b = words::<14>(l3)?.0;
            if b[0] & 0xf0 != 0x60 || linear < 40 {
                return None;
            }
            proto = (b[1] >> 16) & 0xff;
            (s0, s1, s2, s3) = (b[2], b[3], b[4], b[5]);
            (d0, d1, d2, d3) = (b[6], b[7], b[8], b[9]);
            fam = FAMILY_IPV6 as u32;
            has_l4 = true;
            l4_off = 40;
            (l4, l4_w3) = (b[10], b[13]);
        }
        _ => return None,
    }
    let mut ports = 0;
    let mut tcp_flags = 0;
    if has_l4 {
        // The part of the L4 header that is read must be in the linear data. Another
        // protocol, or an IPv6 extension header: the flow has no ports.
        let need = match proto as u8 {
            IPPROTO_TCP => 14,
            IPPROTO_UDP => 4,
            IPPROTO_ICMP | IPPROTO_ICMPV6 => 2,
            _ => 0,
        };
        if linear < l4_off + need {
            return None;
        }
        if need != 0 {
            ports = key_ports(proto, l4);
        }
        if proto == IPPROTO_TCP as u32 {
            tcp_flags = (l4_w3 >> 8) & 0xff;
        }
    }
    let k: [u32; KEY_WORDS] = [
        s0,
        s1,
        s2,
        s3,
        d0,
        d1,
        d2,
        d3,
        ports,
        fam | proto << 8,
        0,
        0,
        0,
    ];
    // SAFETY: FlowKey is 52 bytes of integers, 4-byte aligned (asserted in common), with
    // every bit pattern valid; word 8 holds the ports, word 9 family, protocol, fragment
    // and padding, words 10-12 reason, netns and ifindex (set by the caller).
    let key = unsafe { core::mem::transmute::<[u32; KEY_WORDS], FlowKey>(k) };
    Some(Parsed {
        key,
        tcp_flags,
        l3,
        linear,
    })
}

/// Counts the drop in its flow and maybe samples it. `drop`: the drop's counting key (its
/// reason, interface, netns, cgroup, location and EtherType as read); `len`: `skb->len`.
#[inline(always)]
pub fn record<K: Kernel>(skb: u64, drop: &DropKey, len: u64) {
    if ro!(FLOW_OFFSETS.flags) & FLOW_OFFSETS_VALID == 0 {
        return;
    }
    let Some(mut p) = parse::<K>(skb, drop.protocol) else {
        stat(FLOW_STAT_UNPARSED, 1);
        return;
    };
    p.key.reason = drop.reason;
    p.key.netns = drop.netns;
    p.key.ifindex = drop.ifindex;
    count(&p.key, len, p.tcp_flags);
    sample(&p, drop, len);
}

/// Counts the drop: in this CPU's front entry when it holds the same flow (the common case
/// in a flood: no hash, no shared cache line), else in the LRU map, after moving what the
/// front entry held there. Under the front entry's seqlock whenever the LRU map is touched
/// for a flow the entry holds counts of, or the entry changes flow.
#[inline(always)]
fn count(key: &FlowKey, len: u64, tcp_flags: u32) {
    let tcp_flags = tcp_flags as u64;
    let Some(f) = DROP_FLOW_FRONT.get_ptr_mut(0) else {
        add(key, 1, len, tcp_flags);
        return;
    };
    // SAFETY: this CPU's entry; the program does not nest on a CPU. User space only reads.
    let f = unsafe { &mut *f };
    let same = same_flow(&f.key, key);
    if same && f.packets < FLOW_FRONT_MAX {
        f.packets += 1;
        f.bytes += len;
        f.tcp_flags |= tcp_flags;
        return;
    }
    // SAFETY: a field of this CPU's entry. The fetch-add is a full barrier, so user space
    // never sees the new key or the moved counts without the odd number.
    unsafe { fetch_add(&raw mut f.generation, 1) };
    if same {
        // The bound reached: the held drops and this one go to the flow's entry.
        add(key, f.packets + 1, f.bytes + len, f.tcp_flags | tcp_flags);
    } else {
        if f.packets != 0 {
            add(&f.key, f.packets, f.bytes, f.tcp_flags);
        }
        // A flow's first drop on this CPU always reaches the LRU map, so its entry (and
        // sequence number) exists from its first drop, as without the front entry.
        add(key, 1, len, tcp_flags);
        f.key = *key;
    }
    f.packets = 0;
    f.bytes = 0;
    f.tcp_flags = 0;
    // SAFETY: as above.
    unsafe { fetch_add(&raw mut f.generation, 1) };
}

/// Whether two keys are equal, compared as 13 words without branches between them.
#[inline(always)]
fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    // SAFETY: FlowKey is 52 bytes of integers with 4-byte alignment (asserted in common).
    let (a, b) = unsafe {
        (
            &*(a as *const FlowKey).cast::<[u32; 13]>(),
            &*(b as *const FlowKey).cast::<[u32; 13]>(),
        )
    };
    let mut diff = 0;
    for i in 0..13 {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

/// Adds `packets` drops (`bytes`, `tcp_flags`) to the flow's LRU entry, creating it (with
/// the next sequence number) when missing.
#[inline(always)]
fn add(key: &FlowKey, packets: u64, bytes: u64, tcp_flags: u64) {
    let mut value = DROP_FLOWS.get_ptr_mut(key);
    if value.is_none() {
        let Some(seq) = DROP_FLOW_SEQ.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: the array's only element, valid while the program runs; atomic because
        // every CPU takes numbers from it.
        let seq = unsafe { fetch_add(seq, 1) };
        let new = FlowValue {
            seq,
            ..FlowValue::default()
        };
        if DROP_FLOWS.insert(key, new, BPF_NOEXIST).is_err() {
            // Another CPU created it first (or the insert failed): the number is unused.
            stat(FLOW_STAT_SEQ_LOST, 1);
        }
        value = DROP_FLOWS.get_ptr_mut(key);
    }
    let Some(v) = value else {
        stat(FLOW_STAT_UNCOUNTED, packets);
        return;
    };
    // SAFETY: a value of the map, valid while the program runs; other CPUs update it too,
    // so atomically.
    unsafe {
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).packets, packets);
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).bytes, bytes);
        if tcp_flags != 0 {
            atomic_or::<u64, u64, { Relaxed }>(&raw mut (*v).tcp_flags, tcp_flags);
        }
    }
}

/// Takes a token from this CPU's bucket: whether the drop may be sent.
///
/// `bpf_ktime_get_ns` is the dearest part of a drop with flows on (measured ~30-40 ns of
/// the ~70, 2026-12-06), so the clock is read only when needed: a bucket holding a token
/// gives it without refilling (the refill is owed to the time since `last_ns` and comes
/// at the next read), and once a read found the bucket empty, the next
/// [`FLOW_BUCKET_SKIP`] drops of the same flow are suppressed without a read. The rate is
/// never exceeded; what is lost is at most that many samples of a flow that was just
/// over the rate, and a drop of another flow always reads the clock.
#[inline(always)]
fn take_token() -> bool {
    let Some(b) = DROP_FLOW_BUCKET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's bucket; the program does not nest on a CPU.
    let b = unsafe { &mut *b };
    if b.tokens >= NS {
        b.tokens -= NS;
        return true;
    }
    // The drop was a front entry hit (the same flow as the CPU's previous drop) when the
    // entry now holds counts. Read from the map rather than passed from `count`: a flag
    // carried in a register multiplied the verifier's paths (11 k to 418 k instructions
    // processed on 6.18, too near the 1 M limit for older verifiers).
    let repeat = DROP_FLOW_FRONT.get(0).is_some_and(|f| f.packets != 0);
    if repeat && b.skip != 0 {
        b.skip -= 1;
        return false;
    }
    let rate = ro!(FLOW_RATE);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let elapsed = now.wrapping_sub(b.last_ns).min(NS);
    b.last_ns = now;
    // `rate` is at most 10^6 (the configuration's limit) and `elapsed` at most 10^9, so
    // neither product nor sum comes near 2^64.
    b.tokens = (b.tokens + elapsed * rate).min(rate * NS);
    if b.tokens >= NS {
        b.tokens -= NS;
        b.skip = 0;
        true
    } else {
        b.skip = FLOW_BUCKET_SKIP;
        false
    }
}

#[inline(always)]
fn sample(p: &Parsed, drop: &DropKey, len: u64) {
    if !take_token() {
        stat(FLOW_STAT_SUPPRESSED, 1);
        return;
    }
    let Some(mut entry) = DROP_FLOW_EVENTS.reserve::<FlowEvent>(0) else {
        stat(FLOW_STAT_SUPPRESSED, 1);
        stat(FLOW_STAT_RING_FULL, 1);
        return;
    };
    let e = entry.as_mut_ptr();
    let snaplen = ro!(FLOW_SNAPLEN);
    let mut cap = if p.linear < snaplen {
        p.linear
    } else {
        snaplen
    };
    if cap > FLOW_SNAPLEN_MAX {
        cap = FLOW_SNAPLEN_MAX;
    }
    // SAFETY: `e` is the reserved record, ours until submitted; the copy writes `cap` ≤ 128
    // bytes into its 128-byte `data`, from kernel memory bpf_probe_read_kernel checks.
    unsafe {
        (*e).key = p.key;
        (*e).tcp_flags = p.tcp_flags;
        (*e).time_ns = bpf_ktime_get_ns();
        (*e).cgroup = drop.cgroup;
        (*e).location = drop.location;
        (*e).len = len as u32;
        let ok = generated::bpf_probe_read_kernel(
            (&raw mut (*e).data).cast(),
            cap,
            p.l3 as *const core::ffi::c_void,
        ) == 0;
        (*e).cap_len = if ok { cap } else { 0 };
    }
    entry.submit(0);
    stat(FLOW_STAT_SENT, 1);
}
