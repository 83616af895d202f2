use super::*;

#[test]
fn numbers_and_cpu_lists() {
    assert_eq!(hex_u64(b"0000180a"), Some(0x180a));
    assert_eq!(hex_u64(b"ffffffff"), Some(u32::MAX as u64));
    assert_eq!(hex_u64(b"x1"), None);
    assert_eq!(hex_u64(b""), None);
    assert_eq!(hex_u64(b"11112222333344445"), None);
    assert_eq!(dec_u64(b"262144"), Some(262144));
    assert_eq!(dec_u64(b"-1"), None);
    assert_eq!(dec_u64(b"99999999999999999999"), None);
    let mut v = Vec::new();
    parse_cpu_list(b"0-3,8,10-11\n", &mut v).unwrap();
    assert_eq!(v, [0, 1, 2, 3, 8, 10, 11]);
    parse_cpu_list(b"0\n", &mut v).unwrap();
    assert_eq!(v, [0]);
    assert!(parse_cpu_list(b"3-1", &mut v).is_none());
    assert!(parse_cpu_list(b"a", &mut v).is_none());
}

#[test]
fn wide_counters_survive_a_wrap() {
    let mut w = Wide::new(0xffff_fff0);
    w.update(0xffff_ffff);
    assert_eq!(w.get(), 0xffff_ffff);
    w.update(0x10);
    assert_eq!(w.get(), (1 << 32) + 0x10);
    w.update(0x10);
    assert_eq!(w.get(), (1 << 32) + 0x10);
}

#[test]
fn reads_a_real_file_twice() {
    let mut f = ProcFile::new("/proc/self/stat".into(), 16).unwrap();
    let a = f.read().unwrap().to_vec();
    assert!(!a.is_empty());
    assert!(!f.read().unwrap().is_empty());
    let mut missing = ProcFile::new("/proc/no/such/file".into(), 16).unwrap();
    assert_eq!(missing.read().unwrap_err().kind(), io::ErrorKind::NotFound);
}
