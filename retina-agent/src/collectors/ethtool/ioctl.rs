//! The legacy `SIOCETHTOOL` ioctl interface, just the four read-only commands the driver
//! statistics path needs: `ETHTOOL_GDRVINFO`, `ETHTOOL_GSSET_INFO`, `ETHTOOL_GSTRINGS` and
//! `ETHTOOL_GSTATS`.
//!
//! # Why the reply buffers live in a guarded mapping
//!
//! For `ETHTOOL_GSTRINGS` and `ETHTOOL_GSTATS` the kernel ignores the length the caller put
//! in the request: it asks the driver for its *current* count and copies that many entries
//! to user memory (see `ethtool_get_strings` / `ethtool_get_stats` in
//! `net/ethtool/ioctl.c`). A driver's count changes at run time (`ethtool -L` on virtio_net,
//! mlx5 or veth changes the number of per-queue statistics), so a buffer sized for the count
//! seen when the names were fetched would be overrun by the next `ETHTOOL_GSTATS` after the
//! count grew. The reply therefore goes into [`GuardedBuf`]: an anonymous mapping whose
//! last page is `PROT_NONE`, with the expected reply placed so it ends exactly at that
//! page. A longer reply makes `copy_to_user` fault and the ioctl fail with `EFAULT` instead
//! of corrupting the heap; a shorter one is caught by comparing the count in the reply
//! header. Both are reported as [`Reply::CountChanged`].
//!
//! Kernels with the December 2025 fix ("ethtool: Avoid overflowing userspace buffer on
//! stats query", backported to stable series) honour a non-zero count in the request: when
//! it differs from the driver's they reply with a count of 0 and copy nothing. That too is
//! a [`Reply::CountChanged`]. The guard stays for every kernel without the fix.

use std::{
    ffi::c_void,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr::NonNull,
};

/// `SIOCETHTOOL` from `<linux/sockios.h>`.
const SIOCETHTOOL: u64 = 0x8946;

/// Command numbers from `<linux/ethtool.h>`.
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
const ETHTOOL_GSTRINGS: u32 = 0x0000_001b;
const ETHTOOL_GSTATS: u32 = 0x0000_001d;
const ETHTOOL_GSSET_INFO: u32 = 0x0000_0037;

/// `ETH_SS_STATS`: the string set of driver statistics.
const ETH_SS_STATS: u32 = 1;
/// `ETH_GSTRING_LEN`: every name in a string set takes this many bytes, NUL-padded.
pub(crate) const ETH_GSTRING_LEN: usize = 32;
/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;

/// Upper bound on the statistics count we accept from a driver (the largest real drivers
/// report a few thousand). It bounds the memory a bogus count could make us map.
pub const MAX_STATS: u32 = 1 << 16;

/// Size of the `struct ethtool_stats` header (`cmd`, `n_stats`) in front of the values.
const STATS_HEADER: usize = 8;
/// Size of the `struct ethtool_gstrings` header (`cmd`, `string_set`, `len`).
const GSTRINGS_HEADER: usize = 12;

/// `struct ifreq` as `SIOCETHTOOL` reads it: the name and the `ifr_data` pointer, padded
/// to the kernel's 40 bytes (the union's largest member is `struct ifmap`).
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    data: *mut c_void,
    _pad: [u8; 16],
}

/// `struct ethtool_drvinfo`.
#[repr(C)]
struct DrvInfoRaw {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ethtool_sset_info` with room for the one `data` entry a one-bit mask returns.
#[repr(C)]
struct SsetInfoRaw {
    cmd: u32,
    reserved: u32,
    sset_mask: u64,
    data: [u32; 1],
}

/// An interface name ready for `ifr_name`: at most 15 bytes plus the NUL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfName([u8; IFNAMSIZ]);

impl IfName {
    /// `None` when the name does not fit `IFNAMSIZ` or contains a NUL (the kernel never
    /// reports such a name).
    #[cfg(any(test, feature = "internals"))]
    pub fn new(name: &str) -> Option<IfName> {
        Self::from_bytes(name.as_bytes())
    }

    /// [`IfName::new`] for a name as the kernel has it ([`crate::kernel::links::Link::name_bytes`]),
    /// which need not be UTF-8.
    pub fn from_bytes(bytes: &[u8]) -> Option<IfName> {
        if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
            return None;
        }
        let mut raw = [0u8; IFNAMSIZ];
        raw[..bytes.len()].copy_from_slice(bytes);
        Some(IfName(raw))
    }
}

/// What `ETHTOOL_GDRVINFO` reports, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DrvInfo {
    pub(crate) driver: String,
    pub(crate) version: String,
    pub(crate) fw_version: String,
    pub(crate) bus_info: String,
    /// The statistics count as of this call (the fallback when `ETHTOOL_GSSET_INFO` is
    /// not supported).
    pub(crate) n_stats: u32,
}

/// The outcome of a reply whose length the kernel decides.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// The reply had exactly the expected number of entries.
    Complete,
    /// The driver's count is no longer the expected one. `got` is the count in the reply
    /// header (the driver's count on older kernels, 0 on kernels that refuse a mismatched
    /// request), or `None` when the reply overran the buffer into the guard page and the
    /// ioctl failed with `EFAULT`. Nothing in the buffer can be trusted.
    CountChanged { got: Option<u32> },
}

/// The one `AF_INET`/`SOCK_DGRAM` socket every `SIOCETHTOOL` goes through. It belongs to
/// the network namespace the agent was in when it was opened.
#[derive(Debug)]
pub struct EthtoolSocket {
    fd: OwnedFd,
}

impl EthtoolSocket {
    pub fn new() -> io::Result<EthtoolSocket> {
        // SAFETY: socket(2) has no memory preconditions; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly opened descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EthtoolSocket { fd })
    }

    /// Issues `SIOCETHTOOL` for `name` with `data` as `ifr_data`.
    ///
    /// # Safety
    /// `data` must point to writable memory laid out as the ethtool command in its first
    /// `u32` expects, large enough for everything the kernel will write for that command
    /// (or guarded so that an overrun faults, see [`GuardedBuf`]).
    unsafe fn ioctl(&self, name: &IfName, data: *mut c_void) -> io::Result<()> {
        let mut req = IfReq {
            name: name.0,
            data,
            _pad: [0; 16],
        };
        // SAFETY: `req` is a valid `struct ifreq` for the duration of the call; the caller
        // guarantees `data`. The request type differs between libc flavours, hence `as _`.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                SIOCETHTOOL as _,
                &mut req as *mut IfReq,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// `ETHTOOL_GDRVINFO`: driver name, versions, bus and the statistics count.
    pub(crate) fn drvinfo(&self, name: &IfName) -> io::Result<DrvInfo> {
        // SAFETY: all-zero is a valid value of this plain-integer struct.
        let mut raw: DrvInfoRaw = unsafe { std::mem::zeroed() };
        raw.cmd = ETHTOOL_GDRVINFO;
        // SAFETY: `raw` is a complete `struct ethtool_drvinfo`, the fixed size the kernel
        // writes for this command.
        unsafe { self.ioctl(name, (&raw mut raw).cast())? };
        Ok(DrvInfo {
            driver: c_text(&raw.driver),
            version: c_text(&raw.version),
            fw_version: c_text(&raw.fw_version),
            bus_info: c_text(&raw.bus_info),
            n_stats: raw.n_stats,
        })
    }

    /// `ETHTOOL_GSSET_INFO` for `ETH_SS_STATS`: `Ok(None)` when the driver has no such
    /// string set.
    pub(crate) fn stats_count(&self, name: &IfName) -> io::Result<Option<u32>> {
        let mut raw = SsetInfoRaw {
            cmd: ETHTOOL_GSSET_INFO,
            reserved: 0,
            sset_mask: 1 << ETH_SS_STATS,
            data: [0],
        };
        // SAFETY: with one bit set in `sset_mask` the kernel writes the header and at most
        // one `u32` of `data`, which `raw` holds.
        unsafe { self.ioctl(name, (&raw mut raw).cast())? };
        Ok((raw.sset_mask & (1 << ETH_SS_STATS) != 0).then_some(raw.data[0]))
    }

    /// `ETHTOOL_GSTRINGS` for `ETH_SS_STATS`, expecting `count` names. On
    /// [`Reply::Complete`], `names` is called with the raw 32-byte name of every
    /// statistic in order.
    pub fn stat_names(
        &self,
        name: &IfName,
        count: u32,
        buf: &mut GuardedBuf,
        names: impl FnMut(&[u8]),
    ) -> io::Result<Reply> {
        let n = count as usize;
        let len = GSTRINGS_HEADER + n * ETH_GSTRING_LEN;
        buf.reserve(len)?;
        let ptr = buf.tail(len);
        let header = [ETHTOOL_GSTRINGS, ETH_SS_STATS, count];
        // SAFETY: `ptr` is valid for `len` >= 12 bytes and 4-aligned (the tail ends on a
        // page boundary and `len` is 12 mod 32).
        unsafe { ptr.cast::<[u32; 3]>().write(header) };
        // SAFETY: the buffer ends at a PROT_NONE page, so a reply longer than `len` makes
        // the kernel's copy fault (EFAULT) instead of writing past it.
        match unsafe { self.ioctl(name, ptr.cast()) } {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                return Ok(Reply::CountChanged { got: None });
            }
            Err(e) => return Err(e),
        }
        // SAFETY: the kernel wrote the header and at most `len` bytes in all (a longer
        // reply faulted above), all inside the tail; nothing else refers to that memory
        // while `reply` lives.
        let reply = unsafe { std::slice::from_raw_parts(ptr.cast_const(), len) };
        Ok(gstrings_reply(reply, count, names))
    }

    /// `ETHTOOL_GSTATS`, expecting `count` values; on [`Reply::Complete`] returns them (a
    /// view into `buf`, valid until its next use). No allocation and exactly one syscall
    /// once `buf` has been reserved for `count`.
    pub fn stats<'b>(
        &self,
        name: &IfName,
        count: u32,
        buf: &'b mut GuardedBuf,
    ) -> io::Result<(Reply, &'b [u64])> {
        let n = count as usize;
        let len = STATS_HEADER + n * 8;
        buf.reserve(len)?;
        let ptr = buf.tail(len);
        // SAFETY: `ptr` is valid for `len` >= 8 bytes and 8-aligned (`len` is a multiple
        // of 8 and the tail ends on a page boundary).
        unsafe { ptr.cast::<[u32; 2]>().write([ETHTOOL_GSTATS, count]) };
        // SAFETY: as in `stat_names`: a longer reply faults on the guard page.
        match unsafe { self.ioctl(name, ptr.cast()) } {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                return Ok((Reply::CountChanged { got: None }, &[]));
            }
            Err(e) => return Err(e),
        }
        // SAFETY: the kernel wrote the header.
        let got = unsafe { ptr.cast::<[u32; 2]>().read() }[1];
        if got != count {
            return Ok((Reply::CountChanged { got: Some(got) }, &[]));
        }
        // SAFETY: `count` u64 values follow the 8-byte header inside the tail, 8-aligned;
        // the slice borrows `buf` mutably, so nothing writes there while it lives.
        let values = unsafe { std::slice::from_raw_parts(ptr.add(STATS_HEADER).cast::<u64>(), n) };
        Ok((Reply::Complete, values))
    }
}

/// Reads an `ETHTOOL_GSTRINGS` reply (`struct ethtool_gstrings`: `cmd`, `string_set`,
/// `len`, then `len` names of [`ETH_GSTRING_LEN`] bytes) that should hold `count` names;
/// on [`Reply::Complete`], `names` was called with each raw name in order. A reply whose
/// count differs, or too short for its count, is [`Reply::CountChanged`].
pub(crate) fn gstrings_reply(reply: &[u8], count: u32, mut names: impl FnMut(&[u8])) -> Reply {
    let Some(header) = reply.get(..GSTRINGS_HEADER) else {
        return Reply::CountChanged { got: None };
    };
    let got = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
    if got != count {
        return Reply::CountChanged { got: Some(got) };
    }
    let Some(data) = (count as usize)
        .checked_mul(ETH_GSTRING_LEN)
        .and_then(|n| reply.get(GSTRINGS_HEADER..GSTRINGS_HEADER.checked_add(n)?))
    else {
        return Reply::CountChanged { got: None };
    };
    for raw in data.chunks_exact(ETH_GSTRING_LEN) {
        names(raw);
    }
    Reply::Complete
}

/// Text of a NUL-padded fixed-size C string (the whole array when there is no NUL).
pub(crate) fn c_text(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Reply memory for ioctls whose reply length the kernel decides: an anonymous mapping
/// whose last page is `PROT_NONE`. Replies are placed at the *end* of the usable part
/// ([`GuardedBuf::tail`]), so writing even one byte more than expected faults.
///
/// One buffer serves every interface: it grows (a new mapping) only when names are
/// fetched for a driver with more statistics than any before, never in steady state.
#[derive(Debug)]
pub struct GuardedBuf {
    base: NonNull<u8>,
    /// Bytes before the guard page.
    usable: usize,
    page: usize,
}

// SAFETY: the mapping is owned exclusively by this value (like a `Box<[u8]>`); nothing
// about it is tied to the thread that created it.
unsafe impl Send for GuardedBuf {}

impl GuardedBuf {
    /// A buffer with at least `min` usable bytes.
    pub fn new(min: usize) -> io::Result<GuardedBuf> {
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => 4096,
        };
        let usable = min.max(1).div_ceil(page) * page;
        let total = usable + page;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; no
        // existing memory is affected. The result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = base.cast::<u8>();
        // SAFETY: `base + usable` is page-aligned and the page after it lies inside the
        // mapping just created.
        if unsafe { libc::mprotect(base.add(usable).cast(), page, libc::PROT_NONE) } != 0 {
            let err = io::Error::last_os_error();
            // SAFETY: unmapping exactly what was mapped above; nothing refers to it.
            unsafe { libc::munmap(base.cast(), total) };
            return Err(err);
        }
        Ok(GuardedBuf {
            // mmap never returns NULL on success for a non-fixed mapping.
            base: NonNull::new(base).ok_or_else(|| io::Error::other("mmap returned NULL"))?,
            usable,
            page,
        })
    }

    /// Usable bytes before the guard page.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.usable
    }

    /// Makes sure `len` bytes fit, replacing the mapping with a larger one if needed.
    pub(crate) fn reserve(&mut self, len: usize) -> io::Result<()> {
        if len > self.usable {
            *self = GuardedBuf::new(len)?;
        }
        Ok(())
    }

    /// Pointer to the last `len` usable bytes: `len` bytes from there end right at the
    /// guard page. The caller must have reserved `len` bytes.
    fn tail(&mut self, len: usize) -> *mut u8 {
        assert!(len <= self.usable, "GuardedBuf::tail beyond capacity");
        // SAFETY: `usable - len` is within the mapping.
        unsafe { self.base.as_ptr().add(self.usable - len) }
    }
}

impl Drop for GuardedBuf {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this value owns; no reference into it
        // outlives `self` (the slices handed out borrow `self`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.usable + self.page) };
    }
}

#[cfg(test)]
mod tests;
