use super::*;

const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
const UID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

/// A directory tree standing for a hierarchy, owned by whoever runs the test; the
/// subtree `d` is chowned to another uid (needs root).
struct Tree(tempfile::TempDir);

impl Tree {
    fn new(tag: &str) -> Tree {
        let dir = tempfile::Builder::new()
            .prefix(&format!("retina-deleg-{tag}-"))
            .tempdir()
            .unwrap();
        Tree(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn mkdir(&self, rel: &str) -> PathBuf {
        let d = self.path().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

fn require_root() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "this test chowns directories to another user: run it as root"
    );
}

#[test]
fn a_subtree_owned_by_another_uid_is_that_users_whatever_it_is_named() {
    require_root();
    let t = Tree::new("user");
    let uid_ = UID.replace('-', "_");
    let d = t.mkdir("/d");
    std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
    let forged = [
        format!("/d/kubepods-burstable-pod{uid_}.slice"),
        format!("/d/docker-{ID}.scope"),
        "/d/sshd.service".to_string(),
        format!("/d/x/libpod_parent/libpod-{ID}"),
        format!("/d/kubepods/pod{UID}/{ID}"),
    ];
    for p in &forged {
        t.mkdir(p);
        assert_eq!(delegated_to(t.path(), p).unwrap(), Some((65534, 2)), "{p}");
        let w = workload_at(t.path(), p).unwrap();
        assert_eq!(
            w,
            Workload {
                user_id: Some(65534),
                ..Workload::default()
            },
            "{p}"
        );
    }
    // Root's own cgroups beside it keep their names.
    let svc = "/system.slice/sshd.service";
    t.mkdir(svc);
    assert_eq!(delegated_to(t.path(), svc).unwrap(), None);
    assert_eq!(workload_at(t.path(), svc).unwrap().unit.as_deref(), Some("sshd.service"));
    // A user's manager: delegated at user@1000.service, which root named.
    let mgr = t.mkdir("/user.slice/user-1000.slice/user@1000.service");
    std::os::unix::fs::chown(&mgr, Some(1000), Some(1000)).unwrap();
    let inner = format!("/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope");
    t.mkdir(&inner);
    let w = workload_at(t.path(), &inner).unwrap();
    assert_eq!(w.unit.as_deref(), Some("user@1000.service"));
    assert_eq!((w.user_id, w.container_id), (Some(1000), None));
    // A container root hands to its user namespace: its id stays, the uid is added.
    let scope = format!("/system.slice/docker-{ID}.scope");
    let c = t.mkdir(&scope);
    std::os::unix::fs::chown(&c, Some(100_000), None).unwrap();
    t.mkdir(&format!("{scope}/sshd.service"));
    let w = workload_at(t.path(), &format!("{scope}/sshd.service")).unwrap();
    assert_eq!((w.container_id.as_deref(), w.user_id, w.unit), (Some(ID), Some(100_000), None));
    // A cgroup that is gone gives nothing.
    assert!(workload_at(t.path(), "/gone.service").is_none());
}

#[test]
fn processes_are_judged_in_their_hierarchy_and_cached_by_id() {
    require_root();
    let (v2, v1) = (Tree::new("v2"), Tree::new("v1"));
    let d = v2.mkdir("/d");
    std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
    v2.mkdir("/d/sshd.service");
    v1.mkdir("/system.slice/sshd.service");
    let mut c = Cgroups::with_mounts(Some(v2.path().to_path_buf()), Some(v1.path().to_path_buf()));
    let w = c.of_process("0::/d/sshd.service\n");
    assert_eq!((w.unit, w.user_id), (None, Some(65534)));
    // Hybrid: v2 at its root, the name=systemd path is checked in that hierarchy.
    let w = c.of_process("1:name=systemd:/system.slice/sshd.service\n0::/\n");
    assert_eq!((w.unit.as_deref(), w.user_id), (Some("sshd.service"), None));
    assert_eq!(c.cache.len(), 2);
    c.of_process("0::/d/sshd.service\n");
    assert_eq!(c.cache.len(), 2, "the second look is the cached answer");
    // Not there, or the hierarchy not mounted: nothing.
    assert!(c.of_process("0::/system.slice/gone.service\n").is_empty());
    let mut none = Cgroups::with_mounts(None, None);
    assert!(none.of_process("0::/system.slice/sshd.service\n").is_empty());
    // Names alone (a fake /proc).
    let w = Cgroups::names_only().of_process("0::/system.slice/sshd.service\n");
    assert_eq!(w.unit.as_deref(), Some("sshd.service"));
}
