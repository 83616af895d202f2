use std::os::unix::fs::MetadataExt as _;

use super::*;

const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

/// A directory tree standing for a cgroup v2 mount: a directory's inode is its "id".
struct FakeTree(tempfile::TempDir);

impl FakeTree {
    fn new(tag: &str) -> FakeTree {
        let dir = tempfile::Builder::new()
            .prefix(&format!("retina-owners-{tag}-"))
            .tempdir()
            .unwrap();
        FakeTree(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Creates cgroup `rel` (with an interface file beside it, as cgroupfs has) and returns
    /// its id.
    fn add(&self, rel: &str) -> u64 {
        let dir = self.path().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        std::fs::metadata(&dir).unwrap().ino()
    }
}

#[test]
fn ids_resolve_to_paths_and_the_workloads_they_name() {
    let t = FakeTree::new("resolve");
    let unit = t.add("/system.slice/unbound.service");
    let pod = t.add(&format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b1c2d3e_4f50_6172_8394_a5b6c7d8e9f0.slice/cri-containerd-{ID}.scope"
    ));
    let session = t.add("/user.slice/user-0.slice/session-1.scope");
    let root = std::fs::metadata(t.path()).unwrap().ino();
    let mut o = SocketOwners::with_root(Some(t.path().to_path_buf()));
    o.resolve([unit, pod, session, root, 0]);
    let got = |id| o.get(id).map(|o| (o.path.to_string(), (*o.workload).clone()));
    let (path, w) = got(unit).unwrap();
    assert_eq!(path, "/system.slice/unbound.service");
    assert_eq!(w.unit.as_deref(), Some("unbound.service"));
    let (_, w) = got(pod).unwrap();
    assert_eq!(w.container_id.as_deref(), Some(ID));
    assert_eq!(
        w.pod_uid.as_deref(),
        Some("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")
    );
    let (path, w) = got(session).unwrap();
    assert_eq!(path, "/user.slice/user-0.slice/session-1.scope");
    assert!(w.is_empty());
    assert_eq!(got(root).unwrap().0, "/");
    // 0 is "no socket": never looked up.
    assert!(o.knows(0) && o.get(0).is_none());
}

#[test]
fn removed_and_never_found_cgroups_are_gone_and_forgotten() {
    let t = FakeTree::new("gone");
    let a = t.add("/system.slice/a.service");
    let b = t.add("/system.slice/b.service");
    let mut o = SocketOwners::with_root(Some(t.path().to_path_buf()));
    let unknown = u64::MAX;
    o.resolve([a, b, unknown]);
    assert!(o.get(unknown).is_none() && o.knows(unknown));
    assert!(o.check(), "the unknown id was never found");
    assert!(o.is_gone(unknown) && !o.is_gone(a) && !o.is_gone(b));
    o.forget_gone(|_| false);
    assert!(!o.check());
    std::fs::remove_dir_all(t.path().join("system.slice/b.service")).unwrap();
    assert!(o.check());
    assert!(o.is_gone(b) && !o.is_gone(a));
    // Still needed (a series too young to remove): kept, and gone again next check.
    o.forget_gone(|id| id == b);
    assert!(o.check() && o.is_gone(b));
    o.forget_gone(|_| false);
    assert!(!o.knows(b) && o.get(a).is_some());
}

#[test]
fn without_cgroup_v2_nothing_resolves_and_nothing_is_gone() {
    let mut o = SocketOwners::with_root(None);
    o.resolve([7, 8]);
    assert!(o.get(7).is_none() && o.knows(8));
    assert!(!o.check());
    assert!(!o.is_gone(7));
}

#[test]
fn hostile_names_give_no_attribute_and_deep_trees_are_bounded() {
    let t = FakeTree::new("hostile");
    // Ids of the wrong length and odd characters: a path, but no workload.
    let short = t.add(&format!("/system.slice/docker-{}.scope", &ID[..63]));
    let upper = t.add(&format!("/system.slice/docker-{}.scope", ID.to_uppercase()));
    let odd = t.add("/system.slice/a b$.service");
    let mut deep = String::new();
    for i in 0..MAX_DEPTH + 4 {
        deep.push_str(&format!("/d{i}"));
    }
    let too_deep = t.add(&deep);
    let mut o = SocketOwners::with_root(Some(t.path().to_path_buf()));
    o.resolve([short, upper, odd, too_deep]);
    for id in [short, upper, odd] {
        let owner = o.get(id).unwrap();
        assert!(owner.workload.is_empty(), "{}", owner.path);
    }
    assert!(o.get(too_deep).is_none(), "below MAX_DEPTH is not walked");
    // The walk did not see everything, so the id is not taken for gone.
    assert!(!o.check() && !o.is_gone(too_deep));
}

/// What the kernel does to a cgroup that empties and goes: `cgroup.events` changes to
/// `populated 0`, then the directory disappears without an event of its own (a rename
/// stands for the removal here: it too keeps the watched file and sends nothing).
#[test]
fn owners_are_checked_when_they_empty_and_once_a_minute() {
    let t = FakeTree::new("events");
    let a = t.add("/system.slice/a.service");
    let b = t.add("/system.slice/b.service");
    for s in ["a", "b"] {
        let f = t.path().join(format!("system.slice/{s}.service/cgroup.events"));
        std::fs::write(f, "populated 1\nfrozen 0\n").unwrap();
    }
    let away = t.path().join("away");
    std::fs::create_dir_all(&away).unwrap();
    let mut o = SocketOwners::with_root(Some(t.path().to_path_buf()));
    assert!(o.notify.is_some(), "inotify is needed by this test");
    o.resolve([a, b]);
    assert!(!o.check());
    // a goes without emptying first (impossible for a real cgroup): no event, no stat, so
    // it is only found by the check once a minute.
    std::fs::rename(t.path().join("system.slice/a.service"), away.join("a")).unwrap();
    assert!(!o.check() && !o.is_gone(a), "a populated owner is not stat'ed each cycle");
    o.last_full = Instant::now().checked_sub(FULL_CHECK).unwrap();
    assert!(o.check() && o.is_gone(a));
    o.forget_gone(|_| false);
    // b empties: from then on it is stat'ed every cycle, and found gone as soon as it is.
    let events = t.path().join("system.slice/b.service/cgroup.events");
    std::fs::write(&events, "populated 0\nfrozen 0\n").unwrap();
    assert!(!o.check() && !o.is_gone(b));
    std::fs::rename(t.path().join("system.slice/b.service"), away.join("b")).unwrap();
    assert!(o.check() && o.is_gone(b));
    o.forget_gone(|_| false);
    assert!(!o.knows(a) && !o.knows(b) && o.watched.is_empty());
}

#[test]
fn removed_cgroups_are_remembered_and_never_walked_for_again() {
    let t = FakeTree::new("negative");
    let a = t.add("/system.slice/a.service");
    let mut o = SocketOwners::with_root(Some(t.path().to_path_buf()));
    o.resolve([a]);
    std::fs::remove_dir_all(t.path().join("system.slice/a.service")).unwrap();
    assert!(o.check() && o.is_gone(a));
    o.forget_gone(|_| false);
    assert!(!o.knows(a) && o.removed_len() == 1);
    // A socket still in it drops again: its key comes back. A walk could not find it (the
    // root is elsewhere now); the negative cache answers, with what the cgroup was.
    o.root = Some(t.path().join("nowhere"));
    o.resolve([a]);
    let owner = o.get(a).expect("remembered");
    assert_eq!(&*owner.path, "/system.slice/a.service");
    assert_eq!(owner.workload.unit.as_deref(), Some("a.service"));
    assert!(o.check() && o.is_gone(a));
    // Bounded: the oldest are forgotten first.
    for id in 0..MAX_REMOVED as u64 + 10 {
        o.removed.insert(u64::MAX - id, None);
        o.removed_order.push_back(u64::MAX - id);
    }
    o.forget_gone(|_| false);
    assert_eq!(o.removed_len(), MAX_REMOVED);
    assert_eq!(o.removed_order.len(), MAX_REMOVED);
}

#[test]
fn a_socket_cgroup_delegated_to_a_user_is_that_users() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "chowns a directory: run as root");
    let t = FakeTree::new("delegated");
    let d = t.path().join("d");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
    let forged = t.add(&format!("/d/docker-{ID}.scope"));
    let real = t.add(&format!("/system.slice/docker-{ID}.scope"));
    let mut o = SocketOwners::with_root(Some(t.path().to_path_buf()));
    o.resolve([forged, real]);
    let w = o.get(forged).map(|o| (*o.workload).clone()).unwrap();
    assert_eq!(w.user_id, Some(65534));
    assert_eq!((w.container_id, w.pod_uid, w.unit), (None, None, None));
    let w = o.get(real).map(|o| (*o.workload).clone()).unwrap();
    assert_eq!((w.container_id.as_deref(), w.user_id), (Some(ID), None));
}
