//! Counts every packet the kernel drops, by drop reason, network namespace, interface, L3
//! protocol and the cgroup of the socket the packet had reached. Nothing is sent to user
//! space per packet.
//!
//! The counts live in an array (`DROP_COUNTS`), one slot per key and CPU, which user space
//! reads through a memory mapping; the hash map `DROPS` says which slot a key has. A per-CPU
//! direct-mapped cache (`DROP_CACHE`) keeps recent key-to-slot answers, so the common drop
//! costs array lookups (which the verifier inlines) instead of a hash table lookup (a
//! jhash, a bucket walk and two calls).
//! Counts never move: a key's slot changes only after user space removed the key, waited
//! for every program run that could still see it, and zeroed the slot.
//!
//! Attached to the `kfree_skb` raw tracepoint: `TP_PROTO(struct sk_buff *skb, void
//! *location, enum skb_drop_reason reason, ...)`. Raw tracepoints attach by name, so tracefs
//! need not be mounted. Structure offsets are not compiled in: the loader reads them from
//! the running kernel's BTF and writes them into [`OFFSETS`] before the program is loaded.
#![no_std]
#![no_main]
// Atomic fetch-and-add for the flow counts: the BPF target's `core` has no atomic types.
#![feature(core_intrinsics, asm_experimental_arch)]
#![allow(internal_features)]

mod flows;

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_smp_processor_id, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray, Stack},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use aya_log_ebpf::warn;
use retina_ebpf_common::{
    CACHE_ENTRIES, CacheEntry, DEFAULT_DROPS_MAX_ENTRIES, DropKey, DropValue, LOCATION_ARG,
    OFFSETS_HAS_NETNS, OFFSETS_HAS_RX_SK, OFFSETS_HAS_SK_CGROUP, OFFSETS_HAS_USER_NS,
    OFFSETS_VALID, Offsets, PROTOCOL_OTHER, PROTOCOL_WORDS, REASON_ARG, RX_SK_ARG,
};

/// Filled in by the loader from kernel BTF (read-only data, constant once loaded).
#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets::zeroed();

/// Key to slot in [`COUNTS`]; looked up only when the per-CPU [`CACHE`] misses.
#[map]
static DROPS: HashMap<DropKey, u32> = HashMap::with_max_entries(DEFAULT_DROPS_MAX_ENTRIES, 0);

/// The counts, per CPU and slot: CPU `c`'s counts of slot `s` at `c * COUNTS_STRIDE + s`,
/// and at `c * COUNTS_STRIDE + COUNTS_STRIDE - 1` the number of keys CPU `c` created (in
/// `packets`), so user space knows when to re-read `DROPS`. Memory-mappable: user space
/// reads it without a syscall. The loader sizes it (possible CPUs × stride).
#[map]
static DROP_COUNTS: Array<DropValue> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Entries per CPU in [`DROP_COUNTS`]: the capacity of [`DROPS`] plus one. Filled in by
/// the loader (read-only data, constant once loaded).
#[unsafe(no_mangle)]
static COUNTS_STRIDE: u32 = 0;

/// Slots not in use; filled by the loader before the program is attached.
#[map]
static DROP_FREE_SLOTS: Stack<u32> = Stack::with_max_entries(DEFAULT_DROPS_MAX_ENTRIES, 0);

/// Slots reserved for keys of namespaces owned by a non-initial user namespace (see
/// `retina_ebpf_common::USERNS_FREE_SLOTS_MAP`); filled by the loader. Such keys take slots
/// only from here; other keys take from here only when [`DROP_FREE_SLOTS`] is empty.
#[map]
static DROP_USERNS_SLOTS: Stack<u32> = Stack::with_max_entries(1, 0);

/// Bit set of the EtherTypes that keep their own key (the ones the kernel names); every
/// other is counted as `PROTOCOL_OTHER`. Filled by the loader.
#[map]
static DROP_PROTOCOLS: Array<u32> = Array::with_max_entries(PROTOCOL_WORDS, 0);

/// Epoch of the [`CACHE`] entries (index 0); set to 1 by the loader, incremented by user
/// space when it removes keys.
#[map]
static DROP_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// Per-CPU direct-mapped key-to-slot cache.
#[map]
static DROP_CACHE: PerCpuArray<CacheEntry> = PerCpuArray::with_max_entries(CACHE_ENTRIES, 0);

/// Drops that found no free slot (or `DROPS` full): counted here so none is lost silently.
#[map]
static DROP_OVERFLOW: PerCpuArray<DropValue> = PerCpuArray::with_max_entries(1, 0);

/// Drops in namespaces owned by a non-initial user namespace that found their reserved
/// pool ([`DROP_USERNS_SLOTS`]) empty.
#[map]
static DROP_USERNS_OVERFLOW: PerCpuArray<DropValue> = PerCpuArray::with_max_entries(1, 0);

/// Bit N set: reason value N is not a drop (`SKB_NOT_DROPPED_YET`, `SKB_CONSUMED`). Filled
/// in by the loader from kernel BTF, like [`OFFSETS`], because the numbers moved: 5.17 has
/// neither (0 is `NOT_SPECIFIED`), 5.18 to 6.1 have `NOT_DROPPED_YET` = 0 and
/// `NOT_SPECIFIED` = 1, later kernels add `CONSUMED` = 1 (`NOT_SPECIFIED` = 2). A constant
/// "below 2" silently lost every `NOT_SPECIFIED` drop on 6.1.
#[unsafe(no_mangle)]
static NOT_DROP_REASONS: u32 = 0;

/// 1: put the tracepoint's `location` into the key (`drops.locations`); 0: leave it 0.
/// Set by the loader (read-only data, constant once loaded), so with the default 0 the
/// verifier sees the branch that reads it as dead and removes it: the default path costs
/// nothing extra.
#[unsafe(no_mangle)]
static LOCATIONS: u32 = 0;

const BPF_NOEXIST: u64 = 1;
const BPF_F_MMAPABLE: u32 = 1024;
const EEXIST: i32 = 17;

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb(ctx: RawTracePointContext) -> i32 {
    // A failed kernel read only loses the attributes it would have given; never the count.
    try_kfree_skb::<ProbeRead, _>(
        &ctx,
        ctx.arg(0),
        ctx.arg::<u64>(REASON_ARG),
        || ctx.arg(LOCATION_ARG),
        || ctx.arg(RX_SK_ARG),
    );
    0
}

/// The same program as a BTF-enabled tracepoint (`tp_btf`, Linux 5.5+), which the loader
/// prefers: the verifier knows `skb` is a `struct sk_buff *`, so the fields are read with
/// plain loads (turned into fault-tolerant `PROBE_MEM` loads) instead of helper calls.
/// The offsets come from the frozen read-only [`OFFSETS`], which the verifier sees as
/// constants, so each load is checked against the kernel's BTF like `skb->dev` would be.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    try_kfree_skb::<DirectLoad, _>(
        &ctx,
        ctx.arg(0),
        ctx.arg::<u64>(REASON_ARG),
        || ctx.arg(LOCATION_ARG),
        || ctx.arg(RX_SK_ARG),
    );
    0
}

/// How the program reads kernel memory: the raw tracepoint only has untyped pointers.
trait Kernel {
    fn read<T: Copy>(base: u64, offset: u32) -> Option<T>;
}

struct ProbeRead;

impl Kernel for ProbeRead {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
        if base == 0 {
            return None;
        }
        // SAFETY: bpf_probe_read_kernel copes with any address and reports failure.
        unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
    }
}

struct DirectLoad;

impl Kernel for DirectLoad {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
        if base == 0 {
            return None;
        }
        // SAFETY: `base` is a BTF-typed kernel pointer and `offset` a field offset of its
        // type (the verifier checks both); the kernel turns the load into a PROBE_MEM load,
        // which yields 0 instead of faulting on a bad address.
        Some(unsafe { core::ptr::read_volatile((base + offset as u64) as *const T) })
    }
}

/// One field of [`OFFSETS`]. A volatile load keeps the compiler from folding the zero
/// initialiser into the code; the verifier, seeing the map frozen, knows the value.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: OFFSETS is only ever written by the loader before load.
        unsafe { core::ptr::read_volatile(&raw const OFFSETS.$field) }
    };
}

/// The `struct net` of a device or socket, and its inode number (0 when unknown).
#[inline(always)]
fn netns<K: Kernel>(net_holder: u64, net_offset: u32) -> (u64, u32) {
    if offset!(flags) & OFFSETS_HAS_NETNS == 0 {
        return (0, 0);
    }
    let net = K::read::<u64>(net_holder, net_offset).unwrap_or(0);
    (net, K::read::<u32>(net, offset!(net_inum)).unwrap_or(0))
}

/// Whether network namespace `net` is owned by a user namespace other than the initial one
/// (`net->user_ns->level != 0`): one any unprivileged user can create (`unshare -Urn`) and
/// do anything in. Unknown (no such fields, a failed read): no.
#[inline(always)]
fn owned_by_user_ns<K: Kernel>(net: u64) -> bool {
    if offset!(flags) & OFFSETS_HAS_USER_NS == 0 {
        return false;
    }
    K::read::<u64>(net, offset!(net_user_ns))
        .and_then(|user_ns| K::read::<u32>(user_ns, offset!(user_ns_level)))
        .is_some_and(|level| level != 0)
}

/// `protocol` if it keeps its own key ([`DROP_PROTOCOLS`]), else `PROTOCOL_OTHER`.
#[inline(always)]
fn fold_protocol(protocol: u32) -> u32 {
    match DROP_PROTOCOLS.get(protocol >> 5) {
        Some(word) if word & (1 << (protocol & 31)) != 0 => protocol,
        _ => PROTOCOL_OTHER,
    }
}

/// The cgroup v2 id of socket `sk` (`sk->sk_cgrp_data.cgroup->kn->id`); 0 when unknown.
#[inline(always)]
fn sk_cgroup_id<K: Kernel>(sk: u64) -> u64 {
    if offset!(flags) & OFFSETS_HAS_SK_CGROUP == 0 {
        return 0;
    }
    K::read::<u64>(sk, offset!(sk_cgroup))
        .and_then(|cgroup| K::read::<u64>(cgroup, offset!(cgroup_kn)))
        .and_then(|kn| K::read::<u64>(kn, offset!(kn_id)))
        .unwrap_or(0)
}

#[inline(always)]
fn try_kfree_skb<K: Kernel, C: EbpfContext>(
    ctx: &C,
    skb: u64,
    reason: u64,
    location: impl FnOnce() -> u64,
    rx_sk: impl FnOnce() -> u64,
) {
    if offset!(flags) & OFFSETS_VALID == 0 {
        return;
    }
    let reason = reason as u32;
    // SAFETY: as for OFFSETS.
    let not_drops = unsafe { core::ptr::read_volatile(&NOT_DROP_REASONS) };
    if reason < 32 && not_drops & (1 << reason) != 0 {
        return;
    }

    // The socket the packet had reached: on the receive path only `rx_sk` says (6.11+;
    // without the flag the verifier removes the read of an argument the kernel lacks).
    let rx_sk = if offset!(flags) & OFFSETS_HAS_RX_SK != 0 {
        rx_sk()
    } else {
        0
    };
    let sk: u64 = if rx_sk != 0 {
        rx_sk
    } else {
        K::read(skb, offset!(skb_sk)).unwrap_or(0)
    };
    let dev: u64 = K::read(skb, offset!(skb_dev)).unwrap_or(0);
    let (ifindex, (net, netns)) = if dev != 0 {
        (
            K::read::<u32>(dev, offset!(dev_ifindex)).unwrap_or(0),
            netns::<K>(dev, offset!(dev_net)),
        )
    } else {
        (0, netns::<K>(sk, offset!(sk_net)))
    };
    let cgroup = sk_cgroup_id::<K>(sk);
    let protocol = u16::from_be(K::read::<u16>(skb, offset!(skb_protocol)).unwrap_or(0));
    let len = K::read::<u32>(skb, offset!(skb_len)).unwrap_or(0) as u64;

    // SAFETY: as for OFFSETS.
    let location = if unsafe { core::ptr::read_volatile(&LOCATIONS) } != 0 {
        location()
    } else {
        0
    };
    let key = DropKey {
        reason,
        ifindex,
        netns,
        protocol: protocol as u32,
        location,
        cgroup,
    };
    // Whether the namespace is an unprivileged user's is asked only when a key is created.
    let slot = slot(&key, || owned_by_user_ns::<K>(net));
    let counts = match slot {
        NO_SLOT_USER_NS => Err(Spill::UserNs),
        NO_SLOT => Err(Spill::Full),
        s => count_of(s).ok_or(Spill::Full),
    };
    match counts {
        Ok(value) => {
            // SAFETY: the pointer is this CPU's element of the array, valid for the duration
            // of the program; only programs on this CPU write it, one at a time (the
            // program does not run nested on one CPU), with aligned 8-byte stores that user
            // space reads whole.
            unsafe {
                (*value).packets += 1;
                (*value).bytes += len;
            }
        }
        Err(spill) => overflow(ctx, spill, len),
    }
    // Off by default: a read-only 0, so the verifier removes the flow path entirely.
    if flows::enabled() {
        flows::record::<K>(skb, &key, len);
    }
}

/// What [`slot`] returns for a drop that found no slot: the map is full (or a slot was out
/// of range), or the slots reserved for namespaces owned by a non-initial user namespace
/// are taken. A plain `u32` rather than a `Result<u32, Spill>` or `Option<u32>`: LLVM
/// leaves the slot bits of an `Err`/`None` undefined and may fill them from any register,
/// and when that register holds a BTF pointer (`struct net` in the `tp_btf` flavour) the
/// verifier rejects the shift that packs it ("pointer arithmetic with <<= operator
/// prohibited"), which a change elsewhere in the program (the drop flows) made happen.
const NO_SLOT: u32 = u32::MAX;
const NO_SLOT_USER_NS: u32 = u32::MAX - 1;

/// Why a drop found no slot.
#[derive(Clone, Copy)]
enum Spill {
    /// The map is full (or a slot was out of range).
    Full,
    /// The drop is in a namespace owned by a non-initial user namespace, and the slots
    /// reserved for those are taken.
    UserNs,
}

/// This CPU's counts of `slot` (`COUNTS_STRIDE - 1`: the keys this CPU created); `None`
/// for a slot outside this CPU's region.
#[inline(always)]
fn count_of(slot: u32) -> Option<*mut DropValue> {
    // SAFETY: written by the loader before load, like OFFSETS.
    let stride = unsafe { core::ptr::read_volatile(&COUNTS_STRIDE) };
    if slot >= stride {
        return None;
    }
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    DROP_COUNTS.get_ptr_mut(cpu.wrapping_mul(stride).wrapping_add(slot))
}

/// The slot of `key` in `DROP_COUNTS`: from this CPU's cache when it holds `key` for the
/// current epoch, else from `DROPS` (creating the key, its protocol folded, with a free
/// slot), caching the answer. The cache holds the key as read (its protocol not folded),
/// so a cache hit costs no fold.
#[inline(always)]
fn slot(key: &DropKey, owned_by_user_ns: impl FnOnce() -> bool) -> u32 {
    // Read before `DROPS`, so a mapping cached from a lookup that raced with a removal by
    // user space carries the old epoch and is never used.
    let epoch = DROP_EPOCH.get(0).copied().unwrap_or(0);
    let location = (key.location ^ (key.location >> 32)) as u32;
    let cgroup = (key.cgroup ^ (key.cgroup >> 32)) as u32;
    let h = (key.reason
        ^ key.ifindex.rotate_left(8)
        ^ key.netns.rotate_left(16)
        ^ key.protocol
        ^ location.rotate_left(24)
        ^ cgroup.rotate_left(4))
    .wrapping_mul(0x9e37_79b1);
    let Some(entry) = DROP_CACHE.get_ptr_mut(h >> (32 - CACHE_ENTRIES.trailing_zeros())) else {
        return NO_SLOT;
    };
    // SAFETY: this CPU's cache entry, as in `try_kfree_skb`.
    let entry = unsafe { &mut *entry };
    if entry.epoch == epoch && entry.key == *key {
        return entry.slot;
    }
    let folded = DropKey {
        protocol: fold_protocol(key.protocol),
        ..*key
    };
    let slot = lookup_or_create(&folded, owned_by_user_ns);
    if slot == NO_SLOT || slot == NO_SLOT_USER_NS {
        return slot;
    }
    *entry = CacheEntry {
        key: *key,
        slot,
        epoch,
    };
    slot
}

#[inline(always)]
fn lookup_or_create(key: &DropKey, owned_by_user_ns: impl FnOnce() -> bool) -> u32 {
    if let Some(slot) = DROPS.get_ptr(key) {
        // SAFETY: a value pointer of the hash map, valid while the program runs.
        return unsafe { *slot };
    }
    // A never-used slot holds zeros, and user space zeroes a slot before freeing it. A
    // namespace an unprivileged user owns takes only from its reserved pool; others take
    // from the shared slots first.
    let spill = if owned_by_user_ns() {
        NO_SLOT_USER_NS
    } else if let Some(slot) = DROP_FREE_SLOTS.pop().ok().flatten() {
        return insert(key, slot, &DROP_FREE_SLOTS);
    } else {
        NO_SLOT
    };
    match DROP_USERNS_SLOTS.pop().ok().flatten() {
        Some(slot) => insert(key, slot, &DROP_USERNS_SLOTS),
        None => spill,
    }
}

/// Creates `key` with `slot` (taken from `from`, where it goes back if the key cannot be
/// created); [`NO_SLOT`] when it cannot.
#[inline(always)]
fn insert(key: &DropKey, slot: u32, from: &Stack<u32>) -> u32 {
    match DROPS.insert(key, slot, BPF_NOEXIST) {
        Ok(()) => {
            // Tell user space there is a new key (after inserting it).
            // SAFETY: as for OFFSETS.
            let stride = unsafe { core::ptr::read_volatile(&COUNTS_STRIDE) };
            if let Some(created) = count_of(stride.wrapping_sub(1)) {
                // SAFETY: as in `try_kfree_skb`.
                unsafe { (*created).packets += 1 };
            }
            slot
        }
        Err(e) => {
            // Another CPU created the key between our lookup and insert (use its slot), or
            // the map is full: our slot was never counted into, so it is still free.
            let _ = from.push(slot, 0);
            match DROPS.get_ptr(key) {
                // SAFETY: as above.
                Some(s) if e == -EEXIST => unsafe { *s },
                _ => NO_SLOT,
            }
        }
    }
}

#[inline(always)]
fn overflow<C: EbpfContext>(ctx: &C, spill: Spill, len: u64) {
    let map = match spill {
        Spill::Full => &DROP_OVERFLOW,
        Spill::UserNs => &DROP_USERNS_OVERFLOW,
    };
    if let Some(value) = map.get_ptr_mut(0) {
        // SAFETY: as in `add`.
        let first = unsafe {
            (*value).packets += 1;
            (*value).bytes += len;
            (*value).packets == 1
        };
        if first && matches!(spill, Spill::Full) {
            warn!(
                ctx,
                "drop map full: drops now counted in DROP_OVERFLOW only (this CPU reports once)"
            );
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
