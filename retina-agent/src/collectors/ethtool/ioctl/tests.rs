use super::*;

#[test]
fn ifname_rules() {
    assert!(IfName::new("eth0").is_some());
    assert!(IfName::new("").is_none());
    assert!(IfName::new("0123456789abcdef").is_none());
    assert!(IfName::new("0123456789abcde").is_some());
    assert!(IfName::new("a\0b").is_none());
    assert_eq!(
        IfName::from_bytes(b"\xff\xfe\x01").map(|n| n.0[..4].to_vec()),
        Some(vec![0xff, 0xfe, 0x01, 0])
    );
}

#[test]
fn c_text_stops_at_nul_or_end() {
    assert_eq!(c_text(b"veth\0\0\0"), "veth");
    assert_eq!(c_text(b"abc"), "abc");
    assert_eq!(c_text(b"\0abc"), "");
}

#[test]
fn guarded_buf_grows_and_tail_ends_at_guard() {
    let mut b = GuardedBuf::new(10).unwrap();
    let cap = b.capacity();
    assert!(cap >= 10);
    let p = b.tail(16) as usize;
    assert_eq!((p + 16) % b.page, 0);
    b.reserve(cap + 1).unwrap();
    assert!(b.capacity() > cap);
}

#[test]
fn kernel_copy_past_the_tail_faults() {
    // The same copy_to_user path an overlong ethtool reply takes: read(2) from
    // /dev/zero into the last 64 bytes, asking for more than fits.
    let mut b = GuardedBuf::new(64).unwrap();
    let p = b.tail(64);
    // SAFETY: opening a path with a NUL-terminated literal.
    let fd = unsafe { libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `p` has 64 writable bytes followed by the PROT_NONE guard page; the
    // kernel stops (partial read or EFAULT) at the guard instead of writing into it.
    let n = unsafe { libc::read(fd, p.cast(), 64 + 4096) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    assert!(
        n == 64 || (n < 0 && err.raw_os_error() == Some(libc::EFAULT)),
        "{n} {err}"
    );
}

#[test]
fn raw_struct_sizes_match_the_kernel() {
    assert_eq!(std::mem::size_of::<IfReq>(), 40);
    assert_eq!(std::mem::size_of::<DrvInfoRaw>(), 196);
    assert_eq!(std::mem::size_of::<SsetInfoRaw>(), 24);
}
