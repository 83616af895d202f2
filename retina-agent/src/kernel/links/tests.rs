//! Tests of the interface table: message builders shared by the parser and dump tests,
//! and the tests against the real kernel (unprivileged: the calling thread's namespace).

mod dump;
mod kernel;
mod parse;

use super::{
    socket::{Dump, DumpKind, Step},
    table::Table,
    uapi::*,
};

pub(super) const SEQ: u32 = 7;

pub(super) const PID: u32 = 4242;

pub(super) fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

pub(super) fn stats64(vals: &[u64]) -> Vec<u8> {
    vals.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// 25 counters: field i holds base + i.
pub(super) fn stats_attr(base: u64) -> Vec<u8> {
    let vals: Vec<u64> = (0..25).map(|i| base + i).collect();
    attr(IFLA_STATS64, &stats64(&vals))
}

pub(super) fn ifinfo(ifindex: i32, flags: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0u8; IFINFOMSG_LEN];
    v[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    v[8..12].copy_from_slice(&flags.to_ne_bytes());
    for a in attrs {
        v.extend_from_slice(a);
    }
    v
}

pub(super) fn link_payload(ifindex: i32, name: &str, stats_base: u64) -> Vec<u8> {
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    ifinfo(
        ifindex,
        libc::IFF_UP as u32,
        &[
            attr(IFLA_IFNAME, &n),
            attr(IFLA_MTU, &1500u32.to_ne_bytes()),
            attr(IFLA_OPERSTATE, &[6]),
            stats_attr(stats_base),
        ],
    )
}

pub(super) fn nlmsg_full(ty: u16, flags: u16, seq: u32, pid: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&pid.to_ne_bytes());
    v.extend_from_slice(payload);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

pub(super) fn nlmsg(ty: u16, payload: &[u8]) -> Vec<u8> {
    nlmsg_full(ty, 2, SEQ, PID, payload)
}

pub(super) fn done() -> Vec<u8> {
    nlmsg(NLMSG_DONE, &0i32.to_ne_bytes())
}

pub(super) fn dump() -> Dump {
    Dump::new(DumpKind::Links, SEQ, PID, 99)
}

pub(super) fn stats_dump() -> Dump {
    Dump::new(DumpKind::Stats, SEQ, PID, 99)
}

/// `if_stats_msg` + attributes.
pub(super) fn stats_msg(ifindex: i32, attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0u8; IF_STATS_MSG_LEN];
    v[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    v[8..12].copy_from_slice(&IFLA_STATS_FILTER_LINK_64.to_ne_bytes());
    for a in attrs {
        v.extend_from_slice(a);
    }
    v
}

/// An `RTM_NEWSTATS` payload with 25 counters, field i holding base + i.
pub(super) fn stats_payload(ifindex: i32, base: u64) -> Vec<u8> {
    let vals: Vec<u64> = (0..25).map(|i| base + i).collect();
    stats_msg(ifindex, &[attr(IFLA_STATS_LINK_64, &stats64(&vals))])
}

/// Feeds datagrams as one stats dump, like `Links::stats_dump` does; whether the
/// table is consistent with it.
pub(super) fn run_stats(t: &mut Table, datagrams: &[Vec<u8>]) -> (Dump, bool) {
    t.stamp += 1;
    let mut d = stats_dump();
    for dg in datagrams {
        if d.feed(t, dg) != Step::More {
            break;
        }
    }
    let stamp = t.stamp;
    let ok = d.error.is_none()
        && !d.unknown
        && !d.went_back
        && !d.interrupted
        && t.entries.iter().all(|e| e.seen == stamp);
    (d, ok)
}

/// Feeds datagrams as one complete dump, like `refresh` does.
pub(super) fn run_dump(t: &mut Table, datagrams: &[Vec<u8>]) -> (Dump, Step) {
    t.stamp += 1;
    let mut d = dump();
    let mut step = Step::More;
    for dg in datagrams {
        step = d.feed(t, dg);
        if step != Step::More {
            break;
        }
    }
    if step == Step::Done && d.error.is_none() && !d.interrupted {
        t.remove_unseen();
    }
    (d, step)
}

pub(super) fn names(t: &Table) -> Vec<(u32, String)> {
    t.entries
        .iter()
        .map(|e| (e.link.ifindex, e.link.name.to_string()))
        .collect()
}
