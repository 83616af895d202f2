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

use super::cgroup::{self, Hierarchy};
use crate::model::Workload;

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
            super::mountinfo::mount_with(&text, "cgroup2", None),
            super::mountinfo::mount_with(&text, "cgroup", Some("name=systemd")),
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
mod tests;
