//! Mount points from `/proc/self/mountinfo` (proc(5)): where the cgroup v2 hierarchy (or
//! the v1 `name=systemd` one) is mounted, for the socket-owner resolver ([`super::sockets`])
//! and the delegation check ([`super::delegation`]).

use std::path::PathBuf;

/// The mount point of the first file system of type `fstype` in mountinfo `text` whose
/// super options include `option` (`name=systemd`), if given.
pub(crate) fn mount_with(text: &str, fstype: &str, option: Option<&str>) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        let matches = r.next() == Some(fstype)
            && option.is_none_or(|o| r.nth(1).is_some_and(|s| s.split(',').any(|x| x == o)));
        matches.then(|| left.split(' ').nth(4).map(unescape)).flatten()
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| {
            b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests;
