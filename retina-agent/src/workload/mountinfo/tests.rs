use super::*;

#[test]
fn the_cgroup2_mount_is_read_from_mountinfo() {
    let hybrid = "25 30 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n\
        26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
        27 25 0:24 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd\n";
    assert_eq!(
        mount_with(hybrid, "cgroup2", None),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    assert_eq!(
        mount_with(hybrid, "cgroup", Some("name=systemd")),
        Some(PathBuf::from("/sys/fs/cgroup/systemd"))
    );
    let v1 = "27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    assert_eq!(mount_with(v1, "cgroup", Some("name=systemd")), None);
    let escaped = "1 0 0:1 / /mnt/with\\040space rw - cgroup2 none rw\n";
    assert_eq!(
        mount_with(escaped, "cgroup2", None),
        Some(PathBuf::from("/mnt/with space"))
    );
    assert_eq!(mount_with("garbage\n\n - \n", "cgroup2", None), None);
    assert_eq!(mount_with("1 2 3 - cgroup2 x y\n", "cgroup2", None), None);
    // Unescaping never reads past the end.
    assert_eq!(unescape("a\\04"), PathBuf::from("a\\04"));
}
