//! The command `snapshot -- CMD` runs, and as whom.
//!
//! CMD runs with the caller's identity (the uid, gids and groups the agent was started
//! with) or, with `--user NAME`, as NAME: its uid, its primary group and its supplementary
//! groups from the user database (`getpwnam`, `getgrouplist`, as `initgroups` would set
//! them). Either way it never gets capabilities the agent holds that CMD would not have
//! had on its own: the child clears its ambient and inheritable sets before `exec`, so a
//! CMD started by the agent under the unit (uid 65534 with CAP_BPF and CAP_PERFMON
//! ambient) runs with no capability at all. Run by root without `--user`, CMD runs as root
//! (the caller), and a `sudo` caller is told so on stderr.

use std::{ffi::CString, io};

/// Who CMD runs as with `--user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups, the primary one included.
    pub(crate) groups: Vec<libc::gid_t>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountError {
    #[error("--user {0:?}: no such user in the user database")]
    Unknown(String),
    #[error("--user {0:?}: a user name cannot contain a NUL byte")]
    Nul(String),
    #[error("--user {name:?}: looking the user up failed: {source}")]
    Lookup { name: String, source: io::Error },
}

/// Looks `name` up in the user database.
pub(crate) fn lookup(name: &str) -> Result<Account, AccountError> {
    let cname = CString::new(name).map_err(|_| AccountError::Nul(name.to_string()))?;
    let lookup_err = |source| AccountError::Lookup {
        name: name.to_string(),
        source,
    };
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: `passwd` is plain old data, filled in by getpwnam_r before it is read.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    loop {
        // SAFETY: every pointer is valid for the call and `buf.len()` is its size.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 => break,
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            e => return Err(lookup_err(io::Error::from_raw_os_error(e))),
        }
    }
    if found.is_null() {
        return Err(AccountError::Unknown(name.to_string()));
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `groups` holds `n` entries; getgrouplist writes at most `n` and sets `n`
        // to the number it has.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        let n = usize::try_from(n).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(n);
            break;
        }
        if groups.len() >= 1 << 16 {
            return Err(lookup_err(io::Error::other("more than 65536 groups")));
        }
        groups.resize(n.max(groups.len() * 2), 0);
    }
    Ok(Account {
        name: name.to_string(),
        uid,
        gid,
        groups,
    })
}

/// Prepares `cmd` to run as described in the module documentation: as `account` if
/// given, without the agent's ambient or inheritable capabilities in any case.
pub(crate) fn confine(cmd: &mut tokio::process::Command, account: Option<Account>) {
    // SAFETY: the closure runs in the child between fork and exec. It only makes system
    // calls (prctl, capget, capset, setgroups, setgid, setuid) on memory it owns
    // (`account`'s group list, built before the fork); it does not allocate or lock.
    unsafe {
        cmd.pre_exec(move || in_child(account.as_ref()));
    }
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn in_child(account: Option<&Account>) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    // EINVAL: a kernel older than 4.3 has no ambient set, so nothing to clear.
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two `CapData` for version 3, which `data` holds.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    if data.iter().any(|d| d.inheritable != 0) {
        for d in &mut data {
            d.inheritable = 0;
        }
        // SAFETY: as above; dropping inheritable bits is always permitted.
        check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })?;
    }
    if let Some(a) = account {
        // SAFETY: `groups` is a live slice of `len` gids.
        check(unsafe { libc::setgroups(a.groups.len(), a.groups.as_ptr()) }.into())?;
        // SAFETY: plain system calls on integers.
        check(unsafe { libc::setgid(a.gid) }.into())?;
        // SAFETY: as above. From root to another uid this also empties the permitted and
        // effective sets.
        check(unsafe { libc::setuid(a.uid) }.into())?;
    }
    Ok(())
}

/// The note for a root caller that came through sudo and gave no `--user`: CMD runs as
/// root, which may not be what was meant.
pub(crate) fn sudo_note(program: &str) -> Option<String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let user = std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty() && u != "root")?;
    Some(format!(
        "retina-agent: {program} runs as root; `--user {user}` runs it as {user}"
    ))
}

#[cfg(test)]
mod tests;
