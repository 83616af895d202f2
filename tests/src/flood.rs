//! The EtherType flood of issue 26, item 3, as an unprivileged user would run it: in a user
//! and network namespace of its own (`unshare -Urn`), one minimal Ethernet frame per
//! EtherType out of that namespace's `lo` through AF_PACKET. Loopback hands each frame back
//! to the stack, which has no handler for the made-up EtherTypes and drops them with
//! `UNHANDLED_PROTO`: before the fix, one drop-map key per EtherType.
//!
//! [`run`] is called in a process that already runs as the unprivileged user (the test
//! and the bench start `traffic flood` with `setpriv`); it needs no capability outside the
//! namespaces it makes.

use std::io::Write as _;

use anyhow::{Context, Result, bail, ensure};

/// EtherTypes of the flood: every value an Ethernet II frame can carry (below 0x0600 the
/// field is an 802.3 length).
pub const ETHERTYPES: std::ops::RangeInclusive<u16> = 0x0600..=0xffff;

/// Enters a new user and network namespace, brings its `lo` up, prints
/// `netns <inode>` on stdout once the first pass over [`ETHERTYPES`] is sent, and sends
/// `passes` passes (forever with `None`).
pub fn run(passes: Option<u64>) -> Result<()> {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    ensure!(
        uid != 0,
        "the flood must run as an unprivileged user, not root"
    );
    // SAFETY: unshare(2) with flags only; checked below.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } != 0 {
        bail!(
            "unshare(CLONE_NEWUSER | CLONE_NEWNET) as uid {uid}: {} (unprivileged user namespaces disabled?)",
            std::io::Error::last_os_error()
        );
    }
    std::fs::write("/proc/self/setgroups", "deny").context("/proc/self/setgroups")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).context("uid_map")?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).context("gid_map")?;
    let lo = loopback_up()?;
    let inode = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .context("stat /proc/self/ns/net")?;
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    let mut frame = [0u8; 60];
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = lo;
    addr.sll_halen = 6;
    let mut pass = 0u64;
    while passes.is_none_or(|n| pass < n) {
        for ethertype in ETHERTYPES {
            frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
            // SAFETY: `frame` and `addr` outlive the call; the lengths are theirs.
            let r = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            ensure!(
                r == frame.len() as isize,
                "send 0x{ethertype:04x}: {}",
                std::io::Error::last_os_error()
            );
        }
        if pass == 0 {
            let mut out = std::io::stdout();
            writeln!(out, "netns {inode}")?;
            out.flush()?;
        }
        pass += 1;
    }
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Sets `lo` up in the current network namespace (SIOCSIFFLAGS); its ifindex.
fn loopback_up() -> Result<i32> {
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS/SIOCGIFINDEX on a live ifreq naming `lo`.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            Err("SIOCGIFFLAGS")
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req) != 0 {
                Err("SIOCSIFFLAGS")
            } else if libc::ioctl(fd, libc::SIOCGIFINDEX, &mut req) != 0 {
                Err("SIOCGIFINDEX")
            } else {
                Ok(req.ifr_ifru.ifru_ifindex)
            }
        }
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
    result.map_err(|op| anyhow::anyhow!("{op} on lo: {err}"))
}
