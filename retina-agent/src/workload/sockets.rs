//! Who owns a socket: the cgroup v2 id the drop program read from a socket
//! (`sk_cgrp_data.cgroup->kn->id`, which is the inode number of the cgroup's directory),
//! mapped to the cgroup's path and to the pod, container or service it names ([`cgroup`]).
//!
//! Ids are resolved by walking the cgroup v2 tree, once per collection cycle that brings
//! ids not seen before (never per cycle otherwise). Kernel cgroup ids are never reused, so
//! an answer stays right for as long as the cgroup exists; [`SocketOwners::check`] tells,
//! with one `stat` per owner, which of them have since been removed.

use std::{
    collections::HashMap,
    io::Read as _,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::cgroup::{self, MAX_DEPTH, Workload};

/// The most cgroups one walk visits (a busy Kubernetes node has a few thousand).
pub const MAX_CGROUPS: usize = 100_000;
/// The most of `/proc/self/mountinfo` that is read.
const MAX_MOUNTINFO: u64 = 1024 * 1024;

/// A socket-owning cgroup.
#[derive(Debug, PartialEq, Eq)]
pub struct Owner {
    /// The cgroup's path below the cgroup v2 root (`/system.slice/unbound.service`).
    pub path: Arc<str>,
    /// What the path names; empty for a cgroup that names no workload.
    pub workload: Arc<Workload>,
    /// The directory, to tell whether the cgroup still exists.
    dir: PathBuf,
}

#[derive(Debug)]
struct Entry {
    /// `None`: not found by the walk that looked for it.
    owner: Option<Arc<Owner>>,
    /// Not found by a walk that saw the whole tree: the cgroup was removed before it.
    missing: bool,
    gone: bool,
}

/// Socket owners by cgroup id.
#[derive(Debug)]
pub struct SocketOwners {
    /// Where cgroup v2 is mounted; `None` on a host without it, where no id is resolved
    /// and none is taken for gone.
    root: Option<PathBuf>,
    by_id: HashMap<u64, Entry>,
}

impl SocketOwners {
    /// With the cgroup v2 mount of this host (the first `cgroup2` entry of
    /// `/proc/self/mountinfo`: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid
    /// host).
    pub fn new() -> SocketOwners {
        SocketOwners::with_root(cgroup2_mount())
    }

    /// With another cgroup v2 root (tests), or none.
    pub fn with_root(root: Option<PathBuf>) -> SocketOwners {
        SocketOwners {
            root,
            by_id: HashMap::new(),
        }
    }

    /// Whether `id` has been looked up (so [`SocketOwners::resolve`] need not see it).
    pub fn knows(&self, id: u64) -> bool {
        id == 0 || self.by_id.contains_key(&id)
    }

    /// Looks up every id of `ids` not known yet, with at most one walk of the tree.
    pub fn resolve(&mut self, ids: impl IntoIterator<Item = u64>) {
        let mut wanted: HashMap<u64, Option<Arc<Owner>>> = ids
            .into_iter()
            .filter(|id| !self.knows(*id))
            .map(|id| (id, None))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let complete = match &self.root {
            Some(root) => walk(root, &mut wanted),
            None => false,
        };
        for (id, owner) in wanted {
            let missing = complete && owner.is_none();
            self.by_id.insert(
                id,
                Entry {
                    owner,
                    missing,
                    gone: false,
                },
            );
        }
    }

    /// The owner of cgroup `id`, if it was found.
    pub fn get(&self, id: u64) -> Option<&Arc<Owner>> {
        self.by_id.get(&id).and_then(|e| e.owner.as_ref())
    }

    /// Marks the cgroups removed since they were found (and those removed before a whole
    /// walk could find them) as gone; true when there is one. One `stat` per owner;
    /// allocates nothing.
    pub fn check(&mut self) -> bool {
        let mut any = false;
        for (id, e) in &mut self.by_id {
            e.gone = match &e.owner {
                None => e.missing,
                Some(o) => std::fs::symlink_metadata(&o.dir).map_or(true, |m| m.ino() != *id),
            };
            any |= e.gone;
        }
        any
    }

    /// Whether cgroup `id` was found gone by the last [`SocketOwners::check`].
    pub fn is_gone(&self, id: u64) -> bool {
        self.by_id.get(&id).is_some_and(|e| e.gone)
    }

    /// Forgets the cgroups found gone, but for those `in_use` still says are needed.
    pub fn forget_gone(&mut self, in_use: impl Fn(u64) -> bool) {
        self.by_id.retain(|id, e| !e.gone || in_use(*id));
    }
}

impl Default for SocketOwners {
    fn default() -> Self {
        SocketOwners::new()
    }
}

/// Walks the tree below `root` (at most [`MAX_DEPTH`] deep and [`MAX_CGROUPS`] cgroups),
/// filling in the owners of the ids in `wanted`; stops when all are found. True when
/// every cgroup was seen (or all were found), so an id not found no longer exists.
fn walk(root: &Path, wanted: &mut HashMap<u64, Option<Arc<Owner>>>) -> bool {
    let mut missing = wanted.len();
    if let Ok(m) = std::fs::symlink_metadata(root) {
        missing -= usize::from(fill(wanted, m.ino(), "/", root));
    }
    // (directory, its path below the root, depth)
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    let mut visited = 0usize;
    let mut complete = true;
    while let Some((dir, rel, depth)) = stack.pop() {
        if missing == 0 {
            return true;
        }
        if visited >= MAX_CGROUPS {
            return false;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            // Removed meanwhile, or unreadable: what is below it was not seen.
            complete = false;
            continue;
        };
        for entry in entries.flatten() {
            // Cgroups are directories; the interface files beside them are not.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            visited += 1;
            let child_rel = format!("{rel}/{name}");
            let child = entry.path();
            missing -= usize::from(fill(wanted, entry.ino(), &child_rel, &child));
            if depth + 1 < MAX_DEPTH {
                stack.push((child, child_rel, depth + 1));
            } else {
                complete = false;
            }
        }
    }
    complete || missing == 0
}

/// Records the cgroup at `dir` (`rel` below the root) if its id is wanted and not yet
/// found; true when it was.
fn fill(wanted: &mut HashMap<u64, Option<Arc<Owner>>>, ino: u64, rel: &str, dir: &Path) -> bool {
    match wanted.get_mut(&ino) {
        Some(slot @ None) => {
            *slot = Some(Arc::new(Owner {
                path: Arc::from(rel),
                workload: Arc::new(cgroup::parse(rel)),
                dir: dir.to_path_buf(),
            }));
            true
        }
        _ => false,
    }
}

/// The mount point of the first cgroup v2 file system in `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let mut text = String::new();
    std::fs::File::open("/proc/self/mountinfo")
        .and_then(|f| f.take(MAX_MOUNTINFO).read_to_string(&mut text))
        .ok()?;
    mount_of(&text, "cgroup2")
}

/// The mount point of the first file system of type `fstype` in mountinfo `text`.
fn mount_of(text: &str, fstype: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        (right.split(' ').next() == Some(fstype))
            .then(|| left.split(' ').nth(4).map(unescape))
            .flatten()
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
#[path = "sockets_tests.rs"]
mod tests;
