//! Kernel floors for the other parts of the cycle, measured in the same loop as the
//! collectors: what the same kernel interface costs with no parsing and no bookkeeping.
//!
//! * `RTM_GETLINK` dump received into one buffer, messages only counted (the floor for
//!   `Links::refresh`), and an `RTM_GETSTATS` dump restricted to `IFLA_STATS_LINK_64` (the
//!   same 64-bit counters without the rest of each link's attributes), and an
//!   `RTM_GETQDISC` dump (the floor for the qdisc collector);
//! * `/proc/net/{netstat,snmp,snmp6}` read into one buffer (the floor for `netstat`);
//! * `BPF_MAP_LOOKUP_BATCH` over the drop map into preallocated buffers (the floor for
//!   `drops`).

use std::{
    ffi::CString,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result, ensure};
use retina_agent::kernel::sys::{BPF_MAP_LOOKUP_BATCH, bpf};

const NETLINK_ROUTE: libc::c_int = 0;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const RTM_GETLINK: u16 = 18;
const RTM_GETSTATS: u16 = 94;
const RTM_GETQDISC: u16 = 38;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
/// `IFLA_STATS_LINK_64` (1) as a filter bit: `1 << (1 - 1)`.
const IFLA_STATS_FILTER_LINK_64: u32 = 1;

/// A raw `NETLINK_ROUTE` socket and one receive buffer.
pub struct NetlinkFloor {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
}

/// `struct nlmsghdr` + a body of up to 20 bytes (`struct ifinfomsg`: 16, `struct
/// if_stats_msg`: 12, `struct tcmsg`: 20); only `len` bytes are sent.
#[repr(C)]
struct Request {
    len: u32,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    body: [u32; 5],
}

impl NetlinkFloor {
    pub fn new() -> Result<NetlinkFloor> {
        // SAFETY: socket(2); checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_ROUTE,
            )
        };
        ensure!(
            fd >= 0,
            "netlink socket: {}",
            std::io::Error::last_os_error()
        );
        Ok(NetlinkFloor {
            // SAFETY: a fresh descriptor nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            buf: vec![0; 64 * 1024],
            seq: 0,
        })
    }

    /// One full dump; returns the number of messages (links) received.
    fn dump(&mut self, ty: u16, body: [u32; 5]) -> Result<usize> {
        self.seq = self.seq.wrapping_add(1);
        // `struct if_stats_msg` is 12 bytes: send no trailing padding the kernel would try
        // to parse as attributes.
        let len = match ty {
            RTM_GETSTATS => 16 + 12,
            RTM_GETQDISC => 16 + 20,
            _ => 16 + 16,
        };
        let req = Request {
            len: len as u32,
            ty,
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            seq: self.seq,
            pid: 0,
            body,
        };
        let fd = self.fd.as_raw_fd();
        // SAFETY: `req` holds at least `len` bytes: a complete netlink request.
        let sent = unsafe { libc::send(fd, (&raw const req).cast(), len, 0) };
        ensure!(
            sent >= 0,
            "netlink send: {}",
            std::io::Error::last_os_error()
        );
        let mut msgs = 0;
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(fd, self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            ensure!(n >= 0, "netlink recv: {}", std::io::Error::last_os_error());
            let data = &self.buf[..n as usize];
            let mut off = 0;
            while off + 16 <= data.len() {
                let len = u32::from_ne_bytes(data[off..off + 4].try_into()?) as usize;
                let ty = u16::from_ne_bytes(data[off + 4..off + 6].try_into()?);
                if ty == NLMSG_DONE {
                    return Ok(msgs);
                }
                ensure!(ty != NLMSG_ERROR, "netlink dump type {ty}: error reply");
                msgs += 1;
                if len < 16 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// `RTM_GETLINK` dump, as `Links::refresh` asks for it.
    pub fn getlink(&mut self) -> Result<usize> {
        self.dump(RTM_GETLINK, [0; 5])
    }

    /// `RTM_GETSTATS` dump of `IFLA_STATS_LINK_64` only: `struct if_stats_msg` is family,
    /// pad, ifindex, filter_mask.
    pub fn getstats(&mut self) -> Result<usize> {
        self.dump(RTM_GETSTATS, [0, 0, IFLA_STATS_FILTER_LINK_64, 0, 0])
    }

    /// `RTM_GETQDISC` dump of every qdisc (the floor for the qdisc collector's qdisc dump).
    pub fn getqdisc(&mut self) -> Result<usize> {
        self.dump(RTM_GETQDISC, [0; 5])
    }
}

/// `/proc/net/{netstat,snmp,snmp6}` opened once, read with pread(2) into one buffer.
pub struct ProcFloor {
    files: Vec<OwnedFd>,
    buf: Vec<u8>,
}

impl ProcFloor {
    pub fn new() -> Result<ProcFloor> {
        let mut files = Vec::new();
        for p in ["/proc/net/netstat", "/proc/net/snmp", "/proc/net/snmp6"] {
            let c = CString::new(p)?;
            // SAFETY: a NUL-terminated path; the result is checked.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd >= 0 {
                // SAFETY: a fresh descriptor nothing else owns.
                files.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        ensure!(!files.is_empty(), "cannot open /proc/net/netstat");
        Ok(ProcFloor {
            files,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Reads every file to its end; returns the bytes read.
    pub fn pass(&mut self) -> usize {
        let mut total = 0;
        for f in &self.files {
            let mut off = 0usize;
            loop {
                // SAFETY: `buf` is writable for its length.
                let n = unsafe {
                    libc::pread(
                        f.as_raw_fd(),
                        self.buf.as_mut_ptr().cast(),
                        self.buf.len(),
                        off as libc::off_t,
                    )
                };
                if n <= 0 {
                    break;
                }
                off += n as usize;
            }
            total += off;
        }
        total
    }
}

#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Batched reads of the drop map (a hash of `DropKey` to a `u32` slot) into buffers
/// allocated once. The key buffer is sized from the shared key type: the kernel writes
/// `count` whole keys into it.
pub struct MapFloor {
    fd: OwnedFd,
    keys: Vec<u8>,
    values: Vec<u8>,
}

const BATCH: usize = 256;

impl MapFloor {
    pub fn new(map: BorrowedFd<'_>, ncpus: usize) -> Result<MapFloor> {
        Ok(MapFloor {
            fd: map.try_clone_to_owned().context("dup map fd")?,
            keys: vec![0; std::mem::size_of::<retina_ebpf_common::DropKey>() * BATCH],
            // Room for per-CPU values of up to 16 bytes (the map's are 4).
            values: vec![0; 16 * BATCH * ncpus],
        })
    }

    /// One pass over the whole map; returns the number of entries.
    pub fn pass(&mut self) -> Result<usize> {
        let mut token = 0u32;
        let mut first = true;
        let mut total = 0;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { &raw const token as u64 },
                out_batch: &raw mut token as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: BATCH as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                elem_flags: 0,
                flags: 0,
            };
            first = false;
            // SAFETY: a BPF_MAP_LOOKUP_BATCH attr whose buffers hold `count` keys and
            // `count * ncpus` values of this map's sizes.
            let r = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
            total += attr.count as usize;
            if let Err(e) = r {
                ensure!(e.raw_os_error() == Some(libc::ENOENT), "map batch: {e}");
                return Ok(total);
            }
        }
    }
}
