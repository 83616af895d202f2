//! The bench's interfaces (veth pairs whose peers live in one bench namespace), the raw
//! `ETHTOOL_GSTATS` floor loop, and the UDP flood that makes the kernel drop packets.

use std::{
    ffi::c_void,
    fs::File,
    io::Write as _,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use retina_tests::NetNs;

use super::sys;

/// Runs `ip [-n NS] -batch -` with `lines` on stdin.
fn ip_batch(netns: Option<&str>, lines: &[String], force: bool) -> Result<()> {
    batch("ip", netns, lines, force)
}

/// Runs `PROGRAM [-n NS] [-force] -batch -` (`ip` or `tc`) with `lines` on stdin.
pub fn batch(program: &str, netns: Option<&str>, lines: &[String], force: bool) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new(program);
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{program} -batch -`"))?;
    let mut script = lines.join("\n");
    script.push('\n');
    child
        .stdin
        .take()
        .context("ip stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() && !force {
        bail!(
            "`{program} -batch` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Veth pairs created for the run: the host end in the host namespace (what the agent and
/// node_exporter see), the peer in the bench namespace, like a pod's. All deleted on drop,
/// and the namespace with them (deleting it also destroys any pair whose peer is inside).
pub struct BenchNet {
    /// Host-end names, in creation order.
    pub hosts: Vec<String>,
    prefix: String,
    next: usize,
    // Declared last: dropped after `Drop::drop` deleted the veths.
    pub ns: NetNs,
}

impl BenchNet {
    pub fn new() -> Result<BenchNet> {
        let ns = NetNs::new("rbn")?;
        Ok(BenchNet {
            hosts: Vec::new(),
            prefix: format!("rb{}", std::process::id() % 10_000),
            next: 0,
            ns,
        })
    }

    /// The name prefix of every veth of this run (for a final sweep).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates `count` more pairs, both ends up, each host end with a `pfifo` root qdisc
    /// (what the qdisc collector reads; veths have none of their own).
    pub fn add(&mut self, count: usize) -> Result<Vec<String>> {
        let names: Vec<String> = (0..count)
            .map(|i| format!("{}v{}", self.prefix, self.next + i))
            .collect();
        ensure!(
            names.iter().all(|n| n.len() < 15),
            "veth names too long: {}",
            names.last().map_or("", |n| n.as_str())
        );
        self.next += count;
        let mut host = Vec::new();
        let mut peer = Vec::new();
        for n in &names {
            host.push(format!(
                "link add {n} type veth peer name {n}p netns {}",
                self.ns.name
            ));
            host.push(format!("link set {n} up"));
            peer.push(format!("link set {n}p up"));
        }
        // Record the names first: a failure half-way still deletes what was made.
        self.hosts.extend(names.iter().cloned());
        ip_batch(None, &host, false)?;
        ip_batch(Some(&self.ns.name), &peer, false)?;
        let qdiscs: Vec<String> = names
            .iter()
            .map(|n| format!("qdisc replace dev {n} root pfifo limit 1000"))
            .collect();
        batch("tc", None, &qdiscs, false)?;
        Ok(names)
    }

    /// Waits until the kernel settles after a burst of link changes (carrier, IPv6 DAD and
    /// the first router solicitations, whose drops create the new veths' drop keys).
    pub fn settle(&self) -> Result<()> {
        sys::sleep(Duration::from_secs(5))
    }
}

impl Drop for BenchNet {
    fn drop(&mut self) {
        let lines: Vec<String> = self.hosts.iter().map(|n| format!("link del {n}")).collect();
        if let Err(e) = ip_batch(None, &lines, true) {
            eprintln!("cleanup: {e:#}");
        }
        sweep(&self.prefix);
    }
}

/// Deletes every interface of the host namespace named `<prefix>v…` or `<prefix>c…` (what a
/// killed soak child may have left).
pub fn sweep(prefix: &str) {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return;
    };
    let lines: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('v') || rest.starts_with('c'))
        })
        .map(|n| format!("link del {n}"))
        .collect();
    if let Err(e) = ip_batch(None, &lines, true) {
        eprintln!("cleanup: {e:#}");
    }
}

// ---- SIOCETHTOOL floor ----

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETH_SS_STATS: u32 = 1;

/// `struct ifreq` as SIOCETHTOOL reads it (name + `ifr_data`, padded to 40 bytes).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: *mut c_void,
    _pad: [u8; 16],
}

fn ifreq(name: &str, data: *mut c_void) -> Result<IfReq> {
    let b = name.as_bytes();
    ensure!(!b.is_empty() && b.len() < 16, "bad interface name {name}");
    let mut n = [0u8; 16];
    n[..b.len()].copy_from_slice(b);
    Ok(IfReq {
        name: n,
        data,
        _pad: [0; 16],
    })
}

fn ethtool_ioctl(fd: libc::c_int, req: &mut IfReq) -> std::io::Result<()> {
    // SAFETY: `req` is a valid ifreq; its `data` points to a buffer laid out for the
    // command in its first u32 and large enough for the reply (see the callers).
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, req as *mut IfReq) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn dgram_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2) has no memory preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Driver statistics count of `name` (ETHTOOL_GSSET_INFO), `None` without any.
fn stats_count(fd: libc::c_int, name: &str) -> Option<u32> {
    #[repr(C)]
    struct SsetInfo {
        cmd: u32,
        reserved: u32,
        mask: u64,
        data: [u32; 1],
    }
    let mut info = SsetInfo {
        cmd: ETHTOOL_GSSET_INFO,
        reserved: 0,
        mask: 1 << ETH_SS_STATS,
        data: [0],
    };
    let mut req = ifreq(name, (&raw mut info).cast()).ok()?;
    ethtool_ioctl(fd, &mut req).ok()?;
    (info.mask & (1 << ETH_SS_STATS) != 0 && info.data[0] > 0).then_some(info.data[0])
}

struct FloorIface {
    req: IfReq,
    /// `struct ethtool_stats`: header (cmd, n_stats) in the first u64, then the values.
    buf: Box<[u64]>,
    n: u32,
}

/// The floor for driver statistics: one ETHTOOL_GSTATS per interface into buffers
/// allocated once, no parsing, like the C loop in docs/performance.md.
pub struct Floor {
    sock: OwnedFd,
    ifaces: Vec<FloorIface>,
}

impl Floor {
    /// Prepares every interface in `names` that reports driver statistics.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Floor> {
        let sock = dgram_socket()?;
        let mut ifaces = Vec::new();
        for name in names {
            let Some(n) = stats_count(sock.as_raw_fd(), name) else {
                continue;
            };
            // Slack for a count that grows meanwhile: the kernel copies its own count.
            let mut buf = vec![0u64; 1 + n as usize + 64].into_boxed_slice();
            let req = ifreq(name, buf.as_mut_ptr().cast())?;
            ifaces.push(FloorIface { req, buf, n });
        }
        Ok(Floor { sock, ifaces })
    }

    pub fn len(&self) -> usize {
        self.ifaces.len()
    }

    /// One pass over every interface; returns the number of failed ioctls.
    pub fn pass(&mut self) -> usize {
        let fd = self.sock.as_raw_fd();
        let mut failed = 0;
        for i in &mut self.ifaces {
            // cmd in the low half, the expected n_stats in the high half (little endian).
            i.buf[0] = u64::from(ETHTOOL_GSTATS) | (u64::from(i.n) << 32);
            if ethtool_ioctl(fd, &mut i.req).is_err() {
                failed += 1;
            }
        }
        failed
    }

    /// Sum of every value read by the last pass (so the work is observable).
    pub fn checksum(&self) -> u64 {
        self.ifaces
            .iter()
            .flat_map(|i| i.buf[1..=i.n as usize].iter())
            .fold(0u64, |a, &v| a.wrapping_add(v))
    }
}

// ---- Drop flood ----

/// What a flood did.
#[derive(Debug)]
pub struct Flood {
    pub sent: u64,
    pub elapsed: Duration,
    pub cpu: Duration,
}

/// Sends `count` 32-byte UDP datagrams to 127.0.0.1:`port` (closed) from inside the
/// namespace at `netns_path`, `batch` per sendmmsg(2) call: every one is dropped by the
/// kernel as NO_SOCKET.
pub fn flood(netns_path: &str, port: u16, count: u64, batch: usize) -> Result<Flood> {
    let ns = File::open(netns_path).with_context(|| format!("opening {netns_path}"))?;
    std::thread::Builder::new()
        .name("bench-flood".into())
        .spawn(move || -> Result<Flood> {
            // SAFETY: `ns` is an open namespace file; setns changes only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
            send_loop(port, count, batch)
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))?
}

fn send_loop(port: u16, count: u64, batch: usize) -> Result<Flood> {
    let sock = {
        // SAFETY: socket(2); checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut payload = [0x5au8; 32];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: all-zero is a valid mmsghdr; the pointers set below outlive every call.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_name = (&raw const addr) as *mut c_void;
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        m.msg_hdr.msg_iov = &raw mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let cpu0 = sys::thread_cpu_ns();
    let mut sent = 0u64;
    let mut errors = 0u64;
    while sent < count {
        if sent.is_multiple_of(batch as u64 * 64) {
            sys::check_stop()?;
        }
        let n = (count - sent).min(batch as u64) as usize;
        // SAFETY: `msgs[..n]` are valid mmsghdrs whose name, iov and payload pointers refer
        // to live locals of this function.
        let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as _, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            errors += 1;
            ensure!(
                errors < 10_000,
                "sendmmsg keeps failing after {sent} datagrams: {e}"
            );
            // ENOBUFS/EAGAIN/ECONNREFUSED: the datagram was not sent; try again.
            continue;
        }
        sent += rc as u64;
    }
    Ok(Flood {
        sent,
        elapsed: start.elapsed(),
        cpu: Duration::from_nanos(sys::thread_cpu_ns() - cpu0),
    })
}
