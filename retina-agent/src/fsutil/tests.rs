use std::ffi::CString;

use super::*;

/// A scratch directory, removed when the test ends (also when it fails).
fn temp() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("retina-fsutil-").tempdir().unwrap()
}

#[test]
fn special_files_are_refused_at_once() {
    let dir = temp();
    let fifo = dir.path().join("fifo");
    let c = CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, what) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
        (Path::new("/etc"), "a directory"),
    ] {
        let e = read_regular(path, 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), format!("not a regular file ({what})"));
        let cpath = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let e = read_regular_into(&cpath, &mut Vec::new(), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), format!("not a regular file ({what})"));
    }
}

#[test]
fn size_cap() {
    let dir = temp();
    let f = dir.path().join("big");
    std::fs::write(&f, vec![b'x'; 1001]).unwrap();
    assert_eq!(read_regular(&f, 1001).unwrap().len(), 1001);
    let e = read_regular(&f, 1000).unwrap_err();
    assert!(e.to_string().contains("limit of 1000 bytes"), "{e}");
    let c = CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = Vec::new();
    read_regular_into(&c, &mut buf, 1001).unwrap();
    assert_eq!(buf.len(), 1001);
    assert!(read_regular_into(&c, &mut buf, 1000).is_err());
    // procfs reports size 0: the cap is still enforced by reading.
    let mut buf = Vec::new();
    read_regular_into(c"/proc/self/status", &mut buf, PROC_MAX_BYTES).unwrap();
    assert!(buf.starts_with(b"Name:"));
    assert!(read_regular_into(c"/proc/self/status", &mut buf, 16).is_err());
    std::fs::remove_file(&f).unwrap();
}
