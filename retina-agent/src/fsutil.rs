//! Opening files the agent is told about (the configuration, `--btf`, TLS files, procfs
//! files under `netstat.proc_root`) as regular files only, and reading them with a cap.
//!
//! A FIFO, a device (`/dev/zero`), a socket or a directory is refused at once with an
//! error that says what it is: the open never blocks (`O_NONBLOCK`, which means nothing
//! for a regular file), and a read stops at the cap instead of filling memory.

use std::{
    ffi::CStr,
    fs::File,
    io::{self, Read},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::fs::{FileTypeExt, OpenOptionsExt},
    },
    path::Path,
};

/// Largest configuration file the agent reads (1 MiB; the packaged one is ~6 KiB).
pub(crate) const CONFIG_MAX_BYTES: u64 = 1 << 20;
/// Largest BTF blob (`/sys/kernel/btf/vmlinux` is 5-8 MiB on current kernels).
pub(crate) const BTF_MAX_BYTES: u64 = 64 << 20;
/// Largest PEM file for TLS (CA bundles are ~200 KiB).
pub(crate) const PEM_MAX_BYTES: u64 = 4 << 20;
/// Largest procfs statistics file (`/proc/net/snmp6` is ~10 KiB).
pub(crate) const PROC_MAX_BYTES: usize = 1 << 20;

/// What kind of file this is, for an error message.
fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn not_regular(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({what})"),
    )
}

fn too_big(cap: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than the limit of {cap} bytes"),
    )
}

/// Opens `path` for reading if it is a regular file (symbolic links followed).
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let ft = file.metadata()?.file_type();
    if !ft.is_file() {
        return Err(not_regular(kind(ft)));
    }
    Ok(file)
}

/// Reads the regular file at `path`, refusing one longer than `cap` bytes.
pub(crate) fn read_regular(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > cap {
        return Err(too_big(cap));
    }
    // The size may be 0 or stale (procfs, sysfs, a file being written): read to the cap.
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(cap.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > cap {
        return Err(too_big(cap));
    }
    Ok(data)
}

/// [`read_regular`] for text.
pub(crate) fn read_regular_string(path: &Path, cap: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, cap)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Reads the regular file at `path` into `buf` (cleared first), refusing one longer than
/// `cap` bytes. Allocates only if the file outgrew the buffer's capacity; the path is
/// already a C string, so opening allocates nothing either (for the per-cycle procfs
/// reads).
pub(crate) fn read_regular_into(path: &CStr, buf: &mut Vec<u8>, cap: usize) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; the returned descriptor is owned below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid, writable `stat`.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        let what = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => "a directory",
            libc::S_IFIFO => "a FIFO",
            libc::S_IFCHR => "a character device",
            libc::S_IFBLK => "a block device",
            libc::S_IFSOCK => "a socket",
            _ => "not a regular file",
        };
        return Err(not_regular(what));
    }
    pread_to_end(fd.as_fd(), buf, cap)
}

/// Reads `fd` from offset 0 to its end into `buf` (cleared first; the file position is not
/// used), retrying a read that a signal interrupted, growing `buf` only when the file
/// outgrew its capacity, and refusing more than `cap` bytes. The one read loop of the
/// agent's files: [`read_regular_into`] and the procfs files read every cycle
/// (`collectors::procfile`).
pub fn pread_to_end(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, cap: usize) -> io::Result<()> {
    buf.clear();
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(4096));
        }
        let offset = buf.len() as libc::off_t;
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is valid for writes of `spare.len()` bytes.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare.len(),
                offset,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
        let len = buf.len() + n as usize;
        // SAFETY: the kernel initialized `n` more bytes, within capacity.
        unsafe { buf.set_len(len) };
        if len > cap {
            return Err(too_big(cap as u64));
        }
    }
}

#[cfg(test)]
mod tests;
