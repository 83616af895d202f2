//! Counts TCP events per socket cgroup, for the sockets of the host's network namespace:
//! retransmitted segments (`tcp:tcp_retransmit_skb`), failed active connects (`SYN_SENT`
//! → `CLOSE` in `sock:inet_sock_set_state`), resets sent (`tcp:tcp_send_reset`) and
//! received (`tcp:tcp_receive_reset`). Nothing is sent to user space per event.
//!
//! Each program is a BTF-enabled tracepoint (`tp_btf`): it attaches by name, without
//! tracefs, and reads the socket with plain loads that the verifier checks against the
//! kernel's BTF (and turns into fault-tolerant `PROBE_MEM` loads). Structure offsets are not
//! compiled in: the loader reads them from the running kernel's BTF into [`TCP_OFFSETS`].
//!
//! The counts live in a per-CPU array ([`TCP_COUNTS`]), one slot per socket cgroup; the
//! hash map [`TCP_SLOTS`] says which slot a cgroup v2 id has (bounded; an event whose
//! cgroup finds no free slot is counted in [`TCP_OVERFLOW`]). A per-CPU direct-mapped
//! cache ([`TCP_CACHE`]) keeps recent id-to-slot answers, so the common event costs array
//! lookups instead of a hash table lookup (a jhash, a bucket walk and a helper call: about
//! two thirds of the program's cost per event, measured). A slot changes hands only after
//! user space removed its id, bumped [`TCP_EPOCH`] (which voids every cached answer),
//! waited for every program run that could still use the old answer, and zeroed the slot:
//! the mechanism of the drop program's cache (`main.rs`), with maps of its own.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, PerCpuArray, Stack},
    programs::BtfTracePointContext,
};
use retina_ebpf_common::tcp::{
    CONNECT_FAILURES, DEFAULT_TCP_MAX_ENTRIES, RESETS_RECEIVED, RESETS_SENT, RETRANSMITS,
    TCP_CACHE_ENTRIES, TCP_OFFSETS_RETRANSMIT_ERR, TCP_OFFSETS_VALID, TcpCacheEntry, TcpCounts,
    TcpOffsets,
};

/// Filled in by the loader from kernel BTF (read-only data, constant once loaded).
#[unsafe(no_mangle)]
static TCP_OFFSETS: TcpOffsets = TcpOffsets::zeroed();

/// Cgroup v2 id to its slot in [`TCP_COUNTS`]; looked up only when [`TCP_CACHE`] misses.
#[map]
static TCP_SLOTS: HashMap<u64, u32> = HashMap::with_max_entries(DEFAULT_TCP_MAX_ENTRIES, 0);

/// The counts, per slot and CPU. The loader sizes it like [`TCP_SLOTS`].
#[map]
static TCP_COUNTS: PerCpuArray<TcpCounts> =
    PerCpuArray::with_max_entries(DEFAULT_TCP_MAX_ENTRIES, 0);

/// Slots not in use; filled by the loader before the programs are attached.
#[map]
static TCP_FREE_SLOTS: Stack<u32> = Stack::with_max_entries(DEFAULT_TCP_MAX_ENTRIES, 0);

/// Epoch of the [`TCP_CACHE`] entries (index 0); set to 1 by the loader, incremented by
/// user space when it removes an id.
#[map]
static TCP_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// Per-CPU direct-mapped id-to-slot cache, indexed by the low bits of the id (kernfs
/// hands ids out in sequence, so recent cgroups fall in different entries). Per CPU: a
/// fill never races with another CPU and the entries stay in this CPU's cache.
#[map]
static TCP_CACHE: PerCpuArray<TcpCacheEntry> = PerCpuArray::with_max_entries(TCP_CACHE_ENTRIES, 0);

#[map]
static TCP_OVERFLOW: PerCpuArray<TcpCounts> = PerCpuArray::with_max_entries(1, 0);

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;
const IPPROTO_TCP: u16 = 6;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;

macro_rules! offset {
    ($field:ident) => {
        // SAFETY: TCP_OFFSETS is only ever written by the loader before load.
        unsafe { core::ptr::read_volatile(&raw const TCP_OFFSETS.$field) }
    };
}

/// A field of a BTF-typed kernel pointer; `None` for a null pointer.
#[inline(always)]
fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: `base` is a BTF-typed kernel pointer and `offset` a field offset of its type
    // (the verifier checks both); the load is a PROBE_MEM load, 0 on a bad address.
    Some(unsafe { core::ptr::read_volatile((base + offset as u64) as *const T) })
}

/// Counts event `kind` for socket `sk` if it is a full socket of the host's namespace.
#[inline(always)]
fn count(sk: u64, kind: usize) {
    if offset!(flags) & TCP_OFFSETS_VALID == 0 || sk == 0 {
        return;
    }
    // A timewait or request socket is smaller than `struct sock`: no cgroup to read.
    match read::<u8>(sk, offset!(sk_state)) {
        Some(TCP_TIME_WAIT | TCP_NEW_SYN_RECV) | None => return,
        Some(_) => {}
    }
    let netns = read::<u64>(sk, offset!(sk_net))
        .and_then(|net| read::<u32>(net, offset!(net_inum)))
        .unwrap_or(0);
    if netns != offset!(host_netns) {
        return;
    }
    let cgroup = read::<u64>(sk, offset!(sk_cgroup))
        .and_then(|cgroup| read::<u64>(cgroup, offset!(cgroup_kn)))
        .and_then(|kn| read::<u64>(kn, offset!(kn_id)))
        .unwrap_or(0);
    if cgroup == 0 {
        return;
    }
    let value = match slot(cgroup) {
        Some(slot) => TCP_COUNTS.get_ptr_mut(slot),
        None => None,
    };
    let value = match value {
        Some(v) => v,
        None => match TCP_OVERFLOW.get_ptr_mut(0) {
            Some(v) => v,
            None => return,
        },
    };
    if kind < 4 {
        // SAFETY: this CPU's value, valid while the program runs; only programs on this
        // CPU write it, one at a time, with aligned 8-byte stores user space reads whole.
        unsafe { (*value).events[kind] += 1 };
    }
}

/// The slot of cgroup `id` (not 0) in [`TCP_COUNTS`]: from this CPU's cache when it holds
/// `id` for the current epoch, else from [`TCP_SLOTS`] (creating the id with a free slot),
/// caching the answer. `None` when no slot is free or the map is full.
#[inline(always)]
fn slot(id: u64) -> Option<u32> {
    // Read before `TCP_SLOTS`, so that an answer from a lookup that raced with a removal by
    // user space carries the old epoch and is never used.
    let epoch = TCP_EPOCH.get(0).copied().unwrap_or(0);
    let entry = TCP_CACHE.get_ptr_mut((id as u32) & (TCP_CACHE_ENTRIES - 1))?;
    // SAFETY: this CPU's entry, valid while the program runs; only programs on this CPU
    // use it, one at a time. An empty entry has id 0, which never matches.
    let entry = unsafe { &mut *entry };
    if entry.id == id && entry.epoch == epoch {
        return Some(entry.slot);
    }
    let slot = lookup_or_create(id)?;
    *entry = TcpCacheEntry { id, slot, epoch };
    Some(slot)
}

#[inline(always)]
fn lookup_or_create(id: u64) -> Option<u32> {
    if let Some(slot) = TCP_SLOTS.get_ptr(id) {
        // SAFETY: a value pointer of the hash map, valid while the program runs.
        return Some(unsafe { *slot });
    }
    // A never-used slot holds zeros, and user space zeroes a slot before freeing it.
    let slot = TCP_FREE_SLOTS.pop().ok().flatten()?;
    match TCP_SLOTS.insert(id, slot, BPF_NOEXIST) {
        Ok(()) => Some(slot),
        Err(e) => {
            // Another CPU created the id between our lookup and insert (use its slot), or
            // the map is full: our slot was never counted into, so it is still free.
            let _ = TCP_FREE_SLOTS.push(slot, 0);
            if e == -EEXIST {
                // SAFETY: as above.
                TCP_SLOTS.get_ptr(id).map(|s| unsafe { *s })
            } else {
                None
            }
        }
    }
}

/// `tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb[, int err])`.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit(ctx: BtfTracePointContext) -> i32 {
    // Kernels with `err` call the tracepoint for failed retransmits too; the verifier drops
    // the read of the argument where the flag (constant) says it does not exist.
    if offset!(flags) & TCP_OFFSETS_RETRANSMIT_ERR != 0 && ctx.arg::<i64>(2) as i32 != 0 {
        return 0;
    }
    count(ctx.arg(0), RETRANSMITS);
    0
}

/// `inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tcp_state(ctx: BtfTracePointContext) -> i32 {
    let (old, new) = (ctx.arg::<i64>(1) as i32, ctx.arg::<i64>(2) as i32);
    if old != TCP_SYN_SENT || new != TCP_CLOSE {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    if read::<u16>(sk, offset!(sk_protocol)) != Some(IPPROTO_TCP) {
        return 0;
    }
    count(sk, CONNECT_FAILURES);
    0
}

/// `tcp_send_reset(const struct sock *sk, const struct sk_buff *skb, ...)`: `sk` is NULL
/// for a reset answering a segment no socket took, or a timewait or request socket.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_reset_sent(ctx: BtfTracePointContext) -> i32 {
    count(ctx.arg(0), RESETS_SENT);
    0
}

/// `tcp_receive_reset(struct sock *sk)`.
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_reset_received(ctx: BtfTracePointContext) -> i32 {
    count(ctx.arg(0), RESETS_RECEIVED);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
