//! A procfs (or sysfs) file kept open and read again from offset 0 every cycle, into a
//! buffer reused across cycles: after the first read, a cycle costs one `pread` loop ([`pread_to_end`]) and
//! allocates nothing (seq_file and sysctl files produce fresh contents for a read at 0).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use crate::fsutil::pread_to_end;

/// The path contains a NUL byte.
#[derive(Debug, thiserror::Error)]
#[error("path {} contains a NUL byte", path.display())]
pub struct NulPath {
    pub(crate) path: PathBuf,
}

/// One file, opened lazily and kept open while reads succeed.
#[derive(Debug)]
pub struct ProcFile {
    path: PathBuf,
    cpath: CString,
    fd: Option<OwnedFd>,
    buf: Vec<u8>,
}

impl ProcFile {
    pub fn new(path: PathBuf, capacity: usize) -> Result<ProcFile, NulPath> {
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| NulPath { path: path.clone() })?;
        Ok(ProcFile {
            path,
            cpath,
            fd: None,
            buf: Vec::with_capacity(capacity),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's whole current contents. Opens it if needed; after a failed read the file
    /// is closed, so the next read opens it again (a module loaded or unloaded meanwhile).
    pub fn read(&mut self) -> io::Result<&[u8]> {
        let fd = match &self.fd {
            Some(fd) => fd,
            None => {
                // SAFETY: `cpath` is NUL-terminated; the descriptor is owned below.
                let fd =
                    unsafe { libc::open(self.cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `fd` was just opened and is owned by nobody else.
                self.fd.insert(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        };
        match pread_to_end(fd.as_fd(), &mut self.buf, usize::MAX) {
            Ok(()) => Ok(&self.buf),
            Err(e) => {
                self.fd = None;
                Err(e)
            }
        }
    }
}

/// Parses a CPU list as in `/sys/devices/system/cpu/online` (`0-3,8,10-11`) into `out`
/// (cleared first). `None` when the text is not such a list.
pub fn parse_cpu_list(text: &[u8], out: &mut Vec<u32>) -> Option<()> {
    out.clear();
    let text = text.trim_ascii();
    if text.is_empty() {
        return Some(());
    }
    for part in text.split(|&b| b == b',') {
        let (lo, hi) = match part.iter().position(|&b| b == b'-') {
            Some(i) => (dec_u32(&part[..i])?, dec_u32(&part[i + 1..])?),
            None => {
                let v = dec_u32(part)?;
                (v, v)
            }
        };
        if hi < lo || hi - lo > 1 << 16 {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(())
}

/// A decimal `u32` (no sign, no spaces).
pub(crate) fn dec_u32(b: &[u8]) -> Option<u32> {
    let v = dec_u64(b)?;
    u32::try_from(v).ok()
}

/// A decimal `u64` (no sign, no spaces).
pub fn dec_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// A hexadecimal `u64` as procfs prints with `%08x` (no `0x`, at most 16 digits).
pub fn hex_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// A kernel counter printed as 32 bits, widened to 64: the first value as read, then
/// every change modulo 2^32 added (a collection interval is far shorter than the time
/// any of these counters takes to wrap). Counters printed wider are taken as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Wide {
    raw: u64,
    total: u64,
}

impl Wide {
    pub(crate) fn new(raw: u64) -> Wide {
        Wide { raw, total: raw }
    }

    pub(crate) fn update(&mut self, raw: u64) {
        if raw <= u64::from(u32::MAX) && self.raw <= u64::from(u32::MAX) {
            let delta = (raw as u32).wrapping_sub(self.raw as u32);
            self.total = self.total.wrapping_add(u64::from(delta));
        } else {
            self.total = raw;
        }
        self.raw = raw;
    }

    pub(crate) fn get(self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests;
