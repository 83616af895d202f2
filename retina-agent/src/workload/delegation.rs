//! Whether a cgroup was delegated to an unprivileged user, so that its name (and the
//! names below it) are that user's choice and name no pod, container or service.
//!
//! Delegation is ownership: systemd (`Delegate=` with `User=`, `user@UID.service`),
//! container runtimes (user-namespaced containers) and an administrator's `chown` all
//! hand a subtree over by making its directory (and its `cgroup.procs`) the user's. Only
//! the owner of a directory can create cgroups in it, and cgroups are renamed only
//! within their parent, so every name on the path from the hierarchy's root down to the
//! first directory another uid owns was chosen by root (the owner of the hierarchy's
//! root); everything below it, by that user. The check is one `stat` per component of the path (cgroupfs is world-readable,
//! so it works as the agent's unprivileged user), cached per cgroup id.

use std::{
    collections::HashMap,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Once},
};

use super::cgroup::{self, Hierarchy, Workload};

/// Cached answers, at most (a busy node has a few thousand process cgroups).
const MAX_CACHED: usize = 8192;
/// The largest `/proc/self/mountinfo` read.
const MAX_MOUNTINFO: u64 = 16 << 20;

/// The uid a cgroup at `rel` below `root` is delegated to, with the length of the prefix
/// of `rel` naming the delegated directory; `None` when the hierarchy root's owner (root,
/// or the mapped root of a container's user namespace) owns every directory on the way.
/// An error when one cannot be `stat`ed (the cgroup is gone).
pub(crate) fn delegated_to(root: &Path, rel: &str) -> io::Result<Option<(u32, usize)>> {
    let manager = std::fs::symlink_metadata(root)?.uid();
    let mut dir = root.to_path_buf();
    let mut end = 0;
    for c in rel.split('/') {
        end += c.len() + 1;
        if c.is_empty() {
            continue;
        }
        dir.push(c);
        let uid = std::fs::symlink_metadata(&dir)?.uid();
        if uid != manager {
            return Ok(Some((uid, (end - 1).min(rel.len()))));
        }
    }
    Ok(None)
}

/// The workload of the cgroup at `rel` below `root`: by its name where root named it,
/// else the user it is delegated to (and what root named the delegated directory);
/// `None` when its directories cannot be `stat`ed.
pub(crate) fn workload_at(root: &Path, rel: &str) -> Option<Workload> {
    match delegated_to(root, rel) {
        Ok(None) => Some(cgroup::parse(rel)),
        Ok(Some((uid, end))) => Some(Workload {
            user_id: Some(uid),
            ..cgroup::parse(&rel[..end])
        }),
        Err(_) => None,
    }
}

/// The workloads of processes' cgroups, checked for delegation, cached by cgroup id.
#[derive(Debug)]
pub(crate) struct Cgroups {
    /// The cgroup v2 and v1 `name=systemd` mounts; `None` when not mounted.
    v2: Option<PathBuf>,
    systemd: Option<PathBuf>,
    /// `false` (tests with a fake `/proc`): cgroups are judged by their names alone.
    check: bool,
    cache: HashMap<(Hierarchy, u64), Arc<Workload>>,
}

impl Cgroups {
    /// With this host's mounts, from `/proc/self/mountinfo`.
    pub(crate) fn new() -> Cgroups {
        let text = crate::fsutil::read_regular_string(
            Path::new("/proc/self/mountinfo"),
            MAX_MOUNTINFO,
        )
        .unwrap_or_default();
        Cgroups::with_mounts(
            super::sockets::mount_with(&text, "cgroup2", None),
            super::sockets::mount_with(&text, "cgroup", Some("name=systemd")),
        )
    }

    /// With these mounts (tests).
    pub(crate) fn with_mounts(v2: Option<PathBuf>, systemd: Option<PathBuf>) -> Cgroups {
        Cgroups {
            v2,
            systemd,
            check: true,
            cache: HashMap::new(),
        }
    }

    /// Judging cgroups by their names alone, for a fake `/proc` whose cgroups do not
    /// exist (tests).
    pub(crate) fn names_only() -> Cgroups {
        Cgroups {
            check: false,
            ..Cgroups::with_mounts(None, None)
        }
    }

    /// The workload of a process, from the text of its `/proc/PID/cgroup`; empty when its
    /// cgroup cannot be found in a mounted hierarchy.
    pub(crate) fn of_process(&mut self, text: &str) -> Workload {
        let Some((hierarchy, rel)) = cgroup::process_cgroup(text) else {
            return Workload::default();
        };
        if !self.check {
            return cgroup::parse(rel);
        }
        let root = match hierarchy {
            Hierarchy::V2 => &self.v2,
            Hierarchy::SystemdV1 => &self.systemd,
        };
        let Some(root) = root else {
            static ONCE: Once = Once::new();
            ONCE.call_once(|| {
                tracing::warn!(
                    ?hierarchy,
                    "the cgroup hierarchy of processes is not mounted here: their cgroups \
                     cannot be checked for delegation and give no workload"
                );
            });
            return Workload::default();
        };
        let leaf = root.join(rel.trim_start_matches('/'));
        let Ok(id) = std::fs::symlink_metadata(&leaf).map(|m| m.ino()) else {
            return Workload::default();
        };
        if let Some(w) = self.cache.get(&(hierarchy, id)) {
            return (**w).clone();
        }
        let w = workload_at(root, rel).unwrap_or_default();
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert((hierarchy, id), Arc::new(w.clone()));
        w
    }
}

impl Default for Cgroups {
    fn default() -> Self {
        Cgroups::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const UID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

    /// A directory tree standing for a hierarchy, owned by whoever runs the test; the
    /// subtree `d` is chowned to another uid (needs root).
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!("retina-deleg-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }

        fn mkdir(&self, rel: &str) -> PathBuf {
            let d = self.0.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(&d).unwrap();
            d
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
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
            assert_eq!(delegated_to(&t.0, p).unwrap(), Some((65534, 2)), "{p}");
            let w = workload_at(&t.0, p).unwrap();
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
        assert_eq!(delegated_to(&t.0, svc).unwrap(), None);
        assert_eq!(workload_at(&t.0, svc).unwrap().unit.as_deref(), Some("sshd.service"));
        // A user's manager: delegated at user@1000.service, which root named.
        let mgr = t.mkdir("/user.slice/user-1000.slice/user@1000.service");
        std::os::unix::fs::chown(&mgr, Some(1000), Some(1000)).unwrap();
        let inner = format!("/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope");
        t.mkdir(&inner);
        let w = workload_at(&t.0, &inner).unwrap();
        assert_eq!(w.unit.as_deref(), Some("user@1000.service"));
        assert_eq!((w.user_id, w.container_id), (Some(1000), None));
        // A container root hands to its user namespace: its id stays, the uid is added.
        let scope = format!("/system.slice/docker-{ID}.scope");
        let c = t.mkdir(&scope);
        std::os::unix::fs::chown(&c, Some(100_000), None).unwrap();
        t.mkdir(&format!("{scope}/sshd.service"));
        let w = workload_at(&t.0, &format!("{scope}/sshd.service")).unwrap();
        assert_eq!((w.container_id.as_deref(), w.user_id, w.unit), (Some(ID), Some(100_000), None));
        // A cgroup that is gone gives nothing.
        assert!(workload_at(&t.0, "/gone.service").is_none());
    }

    #[test]
    fn processes_are_judged_in_their_hierarchy_and_cached_by_id() {
        require_root();
        let (v2, v1) = (Tree::new("v2"), Tree::new("v1"));
        let d = v2.mkdir("/d");
        std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
        v2.mkdir("/d/sshd.service");
        v1.mkdir("/system.slice/sshd.service");
        let mut c = Cgroups::with_mounts(Some(v2.0.clone()), Some(v1.0.clone()));
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
}
