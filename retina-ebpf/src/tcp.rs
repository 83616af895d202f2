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
//! The counts live in a per-CPU hash map keyed by the socket's cgroup v2 id (bounded; an
//! event whose cgroup finds it full is counted in [`TCP_OVERFLOW`]).
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use retina_ebpf_common::tcp::{
    CONNECT_FAILURES, DEFAULT_TCP_MAX_ENTRIES, RESETS_RECEIVED, RESETS_SENT, RETRANSMITS,
    TCP_OFFSETS_RETRANSMIT_ERR, TCP_OFFSETS_VALID, TcpCounts, TcpOffsets,
};

/// Filled in by the loader from kernel BTF (read-only data, constant once loaded).
#[unsafe(no_mangle)]
static TCP_OFFSETS: TcpOffsets = TcpOffsets::zeroed();

#[map]
static TCP_COUNTS: PerCpuHashMap<u64, TcpCounts> =
    PerCpuHashMap::with_max_entries(DEFAULT_TCP_MAX_ENTRIES, 0);

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
    let value = match TCP_COUNTS.get_ptr_mut(cgroup) {
        Some(v) => Some(v),
        None => match TCP_COUNTS.insert(cgroup, TcpCounts::default(), BPF_NOEXIST) {
            Ok(()) => TCP_COUNTS.get_ptr_mut(cgroup),
            Err(e) if e == -EEXIST => TCP_COUNTS.get_ptr_mut(cgroup),
            Err(_) => None,
        },
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
