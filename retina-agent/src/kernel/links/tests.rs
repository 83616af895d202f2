//! Tests of the interface table: message builders shared with the parser tests
//! (`parse/tests.rs`) and the dump tests (`socket/tests.rs`),
//! and the tests against the real kernel (unprivileged: the calling thread's namespace).

use std::{os::unix::fs::MetadataExt, path::Path};

use super::{
    socket::{Dump, DumpKind, Step},
    table::Table,
    uapi::*,
};
use crate::kernel::links::{FULL_DUMP_EVERY, Link, LinkError, Links, uapi::RTM_GETLINK};

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

// Against the real kernel, without privileges: the calling thread's namespace.

/// Against the real kernel (unprivileged): the first refresh is a full dump, the
/// safety net forces another within `FULL_DUMP_EVERY` refreshes. Link changes between
/// refreshes are covered by the privileged tests (tests/tests/netdev.rs).
#[test]
fn host_refreshes_are_counters_only_until_the_safety_net() {
    let mut links = Links::new().unwrap();
    links.refresh().unwrap();
    assert_eq!(links.full_dumps(), 1);
    let lo = links.get(1).unwrap().instance;
    let mut full = links.full_dumps();
    for _ in 0..FULL_DUMP_EVERY + 1 {
        links.refresh().unwrap();
    }
    // Other tests may create interfaces meanwhile (each notification means a full
    // dump), so only a lower bound: the safety net ran at least once.
    assert!(
        links.full_dumps() > full,
        "no full dump in {FULL_DUMP_EVERY} refreshes"
    );
    assert_eq!(links.get(1).unwrap().instance, lo);
    full = links.full_dumps();
    links.refresh().unwrap();
    assert!(links.full_dumps() <= full + 1);
    assert_eq!(&*links.get(1).unwrap().name, "lo");
}

#[test]
fn host_dump_finds_lo() {
    let mut links = Links::new().unwrap();
    assert!(links.is_empty());
    links.refresh().unwrap();
    let lo = links.get(1).expect("ifindex 1");
    assert_eq!(&*lo.name, "lo");
    assert!(lo.is_loopback());
    assert_eq!(lo.mtu, Some(65536));
    let instance = lo.instance;
    let own_ns = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_eq!(links.netns_inode(), own_ns);
    // A second refresh keeps the identity.
    links.refresh().unwrap();
    assert_eq!(links.get(1).unwrap().instance, instance);
    // Every interface sysfs knows about is there with the same index.
    for entry in std::fs::read_dir("/sys/class/net").unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let Ok(idx) = std::fs::read_to_string(entry.path().join("ifindex")) else {
            continue; // vanished meanwhile (other tests create interfaces)
        };
        let idx: u32 = idx.trim().parse().unwrap();
        if let Some(l) = links.get(idx) {
            assert_eq!(&*l.name, name);
        }
    }
}

/// Every `rtnl_link_stats64` field lands in the right place: each value lies between
/// two sysfs reads of the same counter taken around the dump.
#[test]
fn stats_match_sysfs() {
    fn fields(l: &Link) -> Vec<(&'static str, u64)> {
        let (s, d) = (&l.stats, &l.detail);
        let mut v = vec![
            ("rx_packets", s.rx_packets),
            ("tx_packets", s.tx_packets),
            ("rx_bytes", s.rx_bytes),
            ("tx_bytes", s.tx_bytes),
            ("rx_errors", s.rx_errors),
            ("tx_errors", s.tx_errors),
            ("rx_dropped", s.rx_dropped),
            ("tx_dropped", s.tx_dropped),
            ("multicast", d.multicast),
            ("collisions", d.collisions),
            ("rx_length_errors", d.rx_length_errors),
            ("rx_over_errors", d.rx_over_errors),
            ("rx_crc_errors", d.rx_crc_errors),
            ("rx_frame_errors", d.rx_frame_errors),
            ("rx_fifo_errors", d.rx_fifo_errors),
            ("rx_missed_errors", d.rx_missed_errors),
            ("tx_aborted_errors", d.tx_aborted_errors),
            ("tx_carrier_errors", d.tx_carrier_errors),
            ("tx_fifo_errors", d.tx_fifo_errors),
            ("tx_heartbeat_errors", d.tx_heartbeat_errors),
            ("tx_window_errors", d.tx_window_errors),
            ("rx_compressed", d.rx_compressed),
            ("tx_compressed", d.tx_compressed),
        ];
        v.extend(d.rx_nohandler.map(|x| ("rx_nohandler", x)));
        v
    }
    let sysfs = |name: &str, field: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/{field}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let mut links = Links::new().unwrap();
    links.refresh().unwrap();
    let names: Vec<String> = links
        .iter()
        .filter(|l| &*l.name == "lo" || &*l.name == "eth0")
        .map(|l| l.name.to_string())
        .collect();
    assert!(names.iter().any(|n| n == "lo"));
    for name in names {
        let before: Vec<u64> = fields(links.get_by_name(&name).unwrap())
            .iter()
            .map(|(f, _)| sysfs(&name, f))
            .collect();
        links.refresh().unwrap();
        let now = fields(links.get_by_name(&name).unwrap());
        for ((field, v), b) in now.iter().zip(before) {
            let after = sysfs(&name, field);
            assert!(
                b <= *v && *v <= after,
                "{name} {field}: {b} <= {v} <= {after}"
            );
        }
    }
}

#[test]
fn tiny_buffer_grows_after_truncation() {
    let mut links = Links::new().unwrap();
    links.sock.as_mut().unwrap().buf = vec![0; 64];
    links.refresh().unwrap();
    assert!(links.sock.as_ref().unwrap().buf.len() > 64);
    assert_eq!(&*links.get(1).unwrap().name, "lo");
    // A further refresh needs no growth.
    let len = links.sock.as_ref().unwrap().buf.len();
    links.refresh().unwrap();
    assert_eq!(links.sock.as_ref().unwrap().buf.len(), len);
}

#[test]
#[ignore = "needs root: opens a network namespace by path (`cargo xtask test` runs it)"]
fn opens_in_own_netns_by_path() {
    let links = Links::open_in_netns(Path::new("/proc/self/ns/net"));
    let mut links = links.unwrap();
    links.refresh().unwrap();
    assert_eq!(&*links.get(1).unwrap().name, "lo");
    let err = Links::open_in_netns(Path::new("/nonexistent/ns")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
    // A file that is not a network namespace.
    let err = Links::open_in_netns(Path::new("/proc/self/ns/uts")).unwrap_err();
    assert!(matches!(err, LinkError::EnterNetns { .. }), "{err}");
}

#[test]
fn a_request_too_large_for_the_frame_is_refused_not_sent() {
    let (sock, _) = crate::kernel::links::open_socket(0, 0).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let err = crate::kernel::links::send_request(fd, RTM_GETLINK, 0, 1, &[0; 21]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    // The largest body fits (a tcmsg-sized RTM_GETLINK header is accepted by the kernel,
    // which answers with a dump or an error, not silence).
    crate::kernel::links::send_dump_request(fd, RTM_GETLINK, 2, &[0; 20]).unwrap();
    let mut buf = vec![0; 64 * 1024];
    assert!(crate::kernel::links::recv(fd, &mut buf, 0).unwrap() >= 16);
    crate::kernel::links::drain(fd, &mut buf, Some(2));
}
