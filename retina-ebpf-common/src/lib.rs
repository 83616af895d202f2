//! Types shared by the `retina-ebpf` program and the `retina-agent` user-space loader.
//!
//! Every type here is `#[repr(C)]` and free of implicit padding, so the bytes the kernel
//! program writes are exactly the bytes user space reads. The `user` feature adds the
//! `aya::Pod` impls the agent needs; the eBPF side builds without it.
#![no_std]

pub mod flows;
pub mod tasks;
pub mod tcp;

/// Name of the eBPF program (and of the raw tracepoint it attaches to).
pub const PROGRAM_NAME: &str = "kfree_skb";
/// Name of the same program as a BTF-enabled tracepoint (`tp_btf`), which reads kernel
/// structures with plain loads instead of helper calls; the loader prefers it and falls
/// back to [`PROGRAM_NAME`] where the kernel refuses it.
pub const BTF_PROGRAM_NAME: &str = "kfree_skb_btf";
/// The raw tracepoint the program attaches to: `trace_kfree_skb()`.
pub const TRACEPOINT: &str = "kfree_skb";
/// Hash map of [`DropKey`] to its slot (`u32`): where the key's counts live in
/// [`COUNTS_MAP`]. A key keeps its slot until user space removes the key.
pub const DROPS_MAP: &str = "DROPS";
/// Memory-mappable array of [`DropValue`]: CPU `c`'s counts of slot `s` (the slot
/// [`DROPS_MAP`] gives a key) at `c * stride + s`, where stride is the capacity plus one
/// ([`COUNTS_STRIDE_GLOBAL`]); entry `c * stride + stride - 1` counts (in `packets`) the keys
/// CPU `c` created. Counts never move between slots, so per-CPU sums only grow.
pub const COUNTS_MAP: &str = "DROP_COUNTS";
/// The read-only global holding the stride of [`COUNTS_MAP`] (capacity + 1).
pub const COUNTS_STRIDE_GLOBAL: &str = "COUNTS_STRIDE";
/// Stack of free slots (`u32`). User space pushes every slot before attaching the program
/// (the last pushed, slot 0, is popped first), and pushes a removed key's slot back once
/// no program can still be counting into it and its counts are zeroed.
pub const FREE_SLOTS_MAP: &str = "DROP_FREE_SLOTS";
/// Array with one `u32`, the epoch of [`CACHE_MAP`] entries: user space increments it when
/// it removes keys, which invalidates every cached key-to-slot mapping on every CPU.
pub const EPOCH_MAP: &str = "DROP_EPOCH";
/// Per-CPU array of [`CacheEntry`], [`CACHE_ENTRIES`] of them, direct-mapped by a hash of
/// the key: the program's key-to-slot cache, so that a drop whose key is cached costs two
/// inlined per-CPU array lookups instead of a hash table lookup.
pub const CACHE_MAP: &str = "DROP_CACHE";
/// Entries of [`CACHE_MAP`] per CPU (a power of two).
pub const CACHE_ENTRIES: u32 = 64;
/// Per-CPU array with one [`DropValue`]: drops that could not be counted in [`DROPS_MAP`]
/// because it was full.
pub const OVERFLOW_MAP: &str = "DROP_OVERFLOW";
/// Stack of the free slots reserved for keys of network namespaces owned by a user
/// namespace other than the initial one (`unshare -Urn`, rootless containers): the slots
/// `[capacity - pool, capacity)`. Such keys take slots only from here, so whatever an
/// unprivileged user does in namespaces of their own, they occupy at most `pool` keys and
/// never the slots of the host's and root-created namespaces, which take from
/// [`FREE_SLOTS_MAP`] first and from here only when that is empty.
pub const USERNS_FREE_SLOTS_MAP: &str = "DROP_USERNS_SLOTS";
/// Per-CPU array with one [`DropValue`]: drops in namespaces owned by a non-initial user
/// namespace that found the reserved pool ([`USERNS_FREE_SLOTS_MAP`]) empty.
pub const USERNS_OVERFLOW_MAP: &str = "DROP_USERNS_OVERFLOW";
/// Array of [`PROTOCOL_WORDS`] `u32`s, a bit set over the 65 536 EtherTypes: bit `p % 32`
/// of word `p / 32` set means EtherType `p` keeps its own key; any other is counted as
/// [`PROTOCOL_OTHER`]. The loader sets the bits of the EtherTypes the kernel names
/// (`ETH_P_*` of `linux/if_ether.h`), so a flood of frames with made-up EtherTypes makes one
/// key, not 65 536.
pub const PROTOCOLS_MAP: &str = "DROP_PROTOCOLS";
/// Words of [`PROTOCOLS_MAP`].
pub const PROTOCOL_WORDS: u32 = 65536 / 32;
/// [`DropKey::protocol`] of every EtherType not in [`PROTOCOLS_MAP`]: outside the 16-bit
/// range, so it never equals a real EtherType.
pub const PROTOCOL_OTHER: u32 = 0x1_0000;
/// The read-only global holding the [`Offsets`] the loader derived from kernel BTF.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// The read-only global holding the bit mask of `enum skb_drop_reason` values that are not
/// drops (`SKB_NOT_DROPPED_YET`, `SKB_CONSUMED`), which the loader reads from kernel BTF.
pub const NOT_DROP_REASONS_GLOBAL: &str = "NOT_DROP_REASONS";
/// The read-only global (`u32`) saying whether the program puts the drop location (the
/// tracepoint's `location` argument) into [`DropKey::location`]: 1 yes, 0 no (the default;
/// the key's `location` stays 0 and the verifier removes the code that would read it).
pub const LOCATIONS_GLOBAL: &str = "LOCATIONS";
/// Default capacity of [`DROPS_MAP`]; the loader may change it.
pub const DEFAULT_DROPS_MAX_ENTRIES: u32 = 16384;

/// Index of the `reason` argument in `TP_PROTO(struct sk_buff *skb, void *location,
/// enum skb_drop_reason reason, ...)`, the same on every kernel since 5.17.
pub const REASON_ARG: usize = 2;
/// Index of the `location` argument (the return address into the function that freed the
/// packet), the same on every kernel.
pub const LOCATION_ARG: usize = 1;
/// Index of the `rx_sk` argument (Linux 6.11+): the socket a received packet had reached
/// when it was dropped, which `skb->sk` does not hold on the receive path.
pub const RX_SK_ARG: usize = 3;

/// What one counted drop is aggregated by.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// The full 32-bit `enum skb_drop_reason` value (subsystem reasons live above bit 16).
    pub reason: u32,
    /// `skb->dev->ifindex`, 0 when the skb has no device.
    pub ifindex: u32,
    /// Inode number of the network namespace of the device (or of the socket when there is
    /// no device); 0 when neither is known.
    pub netns: u32,
    /// `skb->protocol` (the L3 EtherType) in host byte order when the kernel names it
    /// ([`PROTOCOLS_MAP`]), else [`PROTOCOL_OTHER`].
    pub protocol: u32,
    /// The kernel address the packet was freed from (the tracepoint's `location`: a return
    /// address inside the function that dropped it) when the loader enabled locations
    /// ([`LOCATIONS_GLOBAL`]); 0 otherwise.
    pub location: u64,
    /// The cgroup v2 id (the inode of its directory) of the socket the packet had reached:
    /// the tracepoint's `rx_sk` where the kernel has it, else `skb->sk`; 0 when the packet
    /// had reached no socket or the kernel does not say ([`OFFSETS_HAS_SK_CGROUP`]).
    pub cgroup: u64,
}

/// One entry of the per-CPU key-to-slot cache. Valid when `epoch` equals the current
/// epoch (which starts at 1, so a zeroed entry is never valid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: DropKey,
    pub slot: u32,
    pub epoch: u32,
}

/// Packets and bytes counted for one [`DropKey`] on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropValue {
    pub packets: u64,
    /// Sum of `skb->len` at the drop point.
    pub bytes: u64,
}

/// The `Offsets::flags` bit saying the kernel has network namespaces (`possible_net_t`
/// holds a pointer); without it every drop reports namespace 0.
pub const OFFSETS_HAS_NETNS: u32 = 1;
/// The `Offsets::flags` bit saying the loader filled the offsets in. The program counts
/// nothing without it, so an object loaded without the loader can never read at offset 0.
pub const OFFSETS_VALID: u32 = 1 << 1;
/// The `Offsets::flags` bit saying sockets carry a cgroup v2 pointer the program can follow
/// to the cgroup's id (`sk_cgrp_data.cgroup->kn->id`).
pub const OFFSETS_HAS_SK_CGROUP: u32 = 1 << 2;
/// The `Offsets::flags` bit saying the tracepoint has the `rx_sk` argument ([`RX_SK_ARG`]).
pub const OFFSETS_HAS_RX_SK: u32 = 1 << 3;
/// The `Offsets::flags` bit saying the program can tell the user namespace owning a
/// network namespace (`net->user_ns->level`), to keep the keys of namespaces owned by
/// non-initial user namespaces in their reserved pool ([`USERNS_FREE_SLOTS_MAP`]).
pub const OFFSETS_HAS_USER_NS: u32 = 1 << 4;

/// Byte offsets of the kernel structure fields the program reads, derived from the running
/// kernel's BTF by the loader and written into the program's read-only data before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// `struct sk_buff`: `dev`.
    pub skb_dev: u32,
    /// `struct sk_buff`: `sk`.
    pub skb_sk: u32,
    /// `struct sk_buff`: `len`.
    pub skb_len: u32,
    /// `struct sk_buff`: `protocol` (a `__be16`).
    pub skb_protocol: u32,
    /// `struct net_device`: `ifindex`.
    pub dev_ifindex: u32,
    /// `struct net_device`: `nd_net.net`.
    pub dev_net: u32,
    /// `struct sock`: `__sk_common.skc_net.net`.
    pub sk_net: u32,
    /// `struct net`: `ns.inum`.
    pub net_inum: u32,
    /// `struct sock`: `sk_cgrp_data.cgroup`.
    pub sk_cgroup: u32,
    /// `struct cgroup`: `kn`.
    pub cgroup_kn: u32,
    /// `struct kernfs_node`: `id` (a `u64`).
    pub kn_id: u32,
    /// `struct net`: `user_ns` (the user namespace owning the network namespace).
    pub net_user_ns: u32,
    /// `struct user_namespace`: `level` (0 for the initial user namespace only).
    pub user_ns_level: u32,
    /// `OFFSETS_*` bits.
    pub flags: u32,
}

impl Offsets {
    pub const fn zeroed() -> Self {
        Self {
            skb_dev: 0,
            skb_sk: 0,
            skb_len: 0,
            skb_protocol: 0,
            dev_ifindex: 0,
            dev_net: 0,
            sk_net: 0,
            net_inum: 0,
            sk_cgroup: 0,
            cgroup_kn: 0,
            kn_id: 0,
            net_user_ns: 0,
            user_ns_level: 0,
            flags: 0,
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four are #[repr(C)], contain only integers and have no padding (their
    // sizes are asserted below), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::DropKey {}
    // SAFETY: as for DropKey above.
    unsafe impl aya::Pod for super::DropValue {}
    // SAFETY: as for DropKey above.
    unsafe impl aya::Pod for super::Offsets {}
    // SAFETY: as for DropKey above.
    unsafe impl aya::Pod for super::CacheEntry {}
}

// Padding-free layouts: a size that is the sum of the fields proves there is no padding.
const _: () = assert!(core::mem::size_of::<DropKey>() == 4 * 4 + 2 * 8);
const _: () = assert!(core::mem::size_of::<DropValue>() == 16);
const _: () = assert!(core::mem::size_of::<Offsets>() == 14 * 4);
const _: () = assert!(core::mem::size_of::<CacheEntry>() == 32 + 2 * 4);
const _: () = assert!(CACHE_ENTRIES.is_power_of_two());
