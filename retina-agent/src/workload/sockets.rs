//! Who owns a socket: the cgroup v2 id the drop program read from a socket
//! (`sk_cgrp_data.cgroup->kn->id`, which is the inode number of the cgroup's directory),
//! mapped to the cgroup's path and to the pod, container or service it names ([`cgroup`]).
//!
//! Ids are resolved by walking the cgroup v2 tree, once per collection cycle that brings
//! ids not seen before (never per cycle otherwise). Kernel cgroup ids are never reused, so
//! an answer stays right for as long as the cgroup exists, and an id once found removed
//! stays removed: the last [`MAX_REMOVED`] such ids are remembered (with what they were),
//! so a socket that outlives its cgroup and keeps dropping costs no walk.
//!
//! A cgroup delegated to an unprivileged user, or below one, is that user's
//! ([`super::delegation`]): its owner is the user, not what its name claims.
//!
//! [`SocketOwners::check`] tells which owners have since been removed. A cgroup can only be
//! removed once it is empty, and the kernel reports a cgroup emptying as a change of its
//! `cgroup.events` file (`populated 0`), which inotify delivers. So each cycle costs one
//! non-blocking read of the inotify descriptor, plus one `stat` per owner that is empty;
//! every owner is `stat`ed once a minute as well, and every cycle where inotify is not
//! available.

use std::{
    collections::HashMap,
    io::Read as _,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use super::{cgroup::MAX_DEPTH, delegation};
use crate::model::Workload;

/// The most cgroups one walk visits (a busy Kubernetes node has a few thousand).
pub(crate) const MAX_CGROUPS: usize = 100_000;
/// The largest `/proc/self/mountinfo` read (a busy node has a few hundred mounts, ~100 KiB).
const MAX_MOUNTINFO: u64 = 16 << 20;
/// Every owner is `stat`ed this often, whatever inotify said.
pub(crate) const FULL_CHECK: Duration = Duration::from_secs(60);
/// Room for a few dozen inotify events per read (no names: the watches are on files).
const EVENT_BUFFER: usize = 4096;
/// Removed cgroups remembered (a negative cache: their ids are never looked up again).
pub(crate) const MAX_REMOVED: usize = 16_384;

/// A socket-owning cgroup.
#[derive(Debug, PartialEq, Eq)]
pub struct Owner {
    /// The cgroup's path below the cgroup v2 root (`/system.slice/unbound.service`).
    pub(crate) path: Arc<str>,
    /// What the path names; empty for a cgroup that names no workload.
    pub(crate) workload: Arc<Workload>,
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
    /// Its `cgroup.events`, watched; `None` (the root, or no inotify): `stat`ed every cycle
    /// unless it is the root, which is never removed.
    watch: Option<WatchDescriptor>,
    /// Empty when last seen (or its watch overflowed): `stat`ed every cycle until it is
    /// gone or populated again.
    empty: bool,
    /// Known removed (from the negative cache): gone, with no `stat`.
    removed: bool,
}

/// Socket owners by cgroup id.
#[derive(Debug)]
pub struct SocketOwners {
    /// Where cgroup v2 is mounted; `None` on a host without it, where no id is resolved
    /// and none is taken for gone.
    root: Option<PathBuf>,
    by_id: HashMap<u64, Entry>,
    /// Watches of the owners' `cgroup.events`; `None` where inotify could not be had.
    notify: Option<Inotify>,
    watched: HashMap<WatchDescriptor, u64>,
    events: Box<[u8]>,
    last_full: Instant,
    /// Cgroups found removed and forgotten, with what they were; oldest first in
    /// `removed_order`. At most [`MAX_REMOVED`].
    removed: HashMap<u64, Option<Arc<Owner>>>,
    removed_order: std::collections::VecDeque<u64>,
}

impl SocketOwners {
    /// With the cgroup v2 mount of this host (the first `cgroup2` entry of
    /// `/proc/self/mountinfo`: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid
    /// host).
    pub(crate) fn new() -> SocketOwners {
        SocketOwners::with_root(cgroup2_mount())
    }

    /// With another cgroup v2 root (tests), or none.
    pub fn with_root(root: Option<PathBuf>) -> SocketOwners {
        // Without cgroup v2 nothing is resolved, so nothing is watched.
        let notify = root.as_ref().and_then(|_| match Inotify::init() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(
                    "inotify unavailable ({e}): socket-owning cgroups are checked with a stat each cycle"
                );
                None
            }
        });
        SocketOwners {
            root,
            by_id: HashMap::new(),
            notify,
            watched: HashMap::new(),
            events: vec![0; EVENT_BUFFER].into_boxed_slice(),
            last_full: Instant::now(),
            removed: HashMap::new(),
            removed_order: std::collections::VecDeque::new(),
        }
    }

    /// Whether `id` has been looked up (so [`SocketOwners::resolve`] need not see it).
    pub(crate) fn knows(&self, id: u64) -> bool {
        id == 0 || self.by_id.contains_key(&id)
    }

    /// Looks up every id of `ids` not known yet, with at most one walk of the tree (none
    /// for ids already found removed).
    pub fn resolve(&mut self, ids: impl IntoIterator<Item = u64>) {
        let mut wanted: HashMap<u64, Option<Arc<Owner>>> = HashMap::new();
        for id in ids {
            if self.knows(id) {
                continue;
            }
            if let Some(owner) = self.removed.get(&id) {
                // Removed before: it still is (ids are never reused).
                let entry = Entry {
                    owner: owner.clone(),
                    missing: true,
                    gone: true,
                    watch: None,
                    empty: false,
                    removed: true,
                };
                self.by_id.insert(id, entry);
                continue;
            }
            wanted.insert(id, None);
        }
        if wanted.is_empty() {
            return;
        }
        let complete = match &self.root {
            Some(root) => walk(root, &mut wanted),
            None => false,
        };
        for (id, owner) in wanted {
            let missing = complete && owner.is_none();
            let mut entry = Entry {
                owner,
                missing,
                gone: false,
                watch: None,
                empty: false,
                removed: false,
            };
            if let (Some(o), Some(n)) = (&entry.owner, &mut self.notify)
                && &*o.path != "/"
            {
                // Watched first, then read: an emptying in between is not missed.
                let events = o.dir.join("cgroup.events");
                if let Ok(wd) = n.watches().add(&events, WatchMask::MODIFY) {
                    self.watched.insert(wd.clone(), id);
                    entry.watch = Some(wd);
                    entry.empty = !populated(&events);
                }
            }
            self.by_id.insert(id, entry);
        }
    }

    /// The owner of cgroup `id`, if it was found.
    pub fn get(&self, id: u64) -> Option<&Arc<Owner>> {
        self.by_id.get(&id).and_then(|e| e.owner.as_ref())
    }

    /// Marks the cgroups removed since they were found (and those removed before a whole
    /// walk could find them) as gone; true when there is one. Reads the inotify events,
    /// then `stat`s the owners that emptied (all of them once every [`FULL_CHECK`], or
    /// when events were lost); allocates nothing unless an owner's `cgroup.events` changed.
    pub fn check(&mut self) -> bool {
        if self.by_id.is_empty() {
            // Nothing watched: no syscall.
            return false;
        }
        let full = self.changes() || self.last_full.elapsed() >= FULL_CHECK;
        if full {
            self.last_full = Instant::now();
        }
        let mut any = false;
        for (id, e) in &mut self.by_id {
            e.gone = match &e.owner {
                _ if e.removed => true,
                None => e.missing,
                // The root is never removed.
                Some(o) if &*o.path == "/" => false,
                Some(o) if full || e.empty || e.watch.is_none() => {
                    std::fs::symlink_metadata(&o.dir).map_or(true, |m| m.ino() != *id)
                }
                Some(_) => false,
            };
            any |= e.gone;
        }
        any
    }

    /// Reads what inotify has (without waiting): an owner whose `cgroup.events` changed is
    /// read again (empty or populated). True when events were lost (a full queue, a
    /// failed read), so that every owner must be checked.
    fn changes(&mut self) -> bool {
        let Some(n) = &mut self.notify else {
            return false;
        };
        let mut lost = false;
        loop {
            let events = match n.read_events(&mut self.events) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return true,
            };
            let mut read = false;
            for event in events {
                read = true;
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    lost = true;
                }
                let Some(e) = self.watched.get(&event.wd).and_then(|id| self.by_id.get_mut(id))
                else {
                    continue;
                };
                // IGNORED: the watch is gone with the file; only a stat can tell now.
                e.empty = event.mask.contains(EventMask::IGNORED)
                    || e
                        .owner
                        .as_ref()
                        .is_none_or(|o| !populated(&o.dir.join("cgroup.events")));
            }
            if !read {
                break;
            }
        }
        lost
    }

    /// Whether cgroup `id` was found gone by the last [`SocketOwners::check`].
    pub(crate) fn is_gone(&self, id: u64) -> bool {
        self.by_id.get(&id).is_some_and(|e| e.gone)
    }

    /// Forgets the cgroups found gone, but for those `in_use` still says are needed;
    /// they are remembered as removed (so that a socket still in one costs no walk).
    pub fn forget_gone(&mut self, in_use: impl Fn(u64) -> bool) {
        let (notify, watched) = (&mut self.notify, &mut self.watched);
        let (removed, order) = (&mut self.removed, &mut self.removed_order);
        self.by_id.retain(|id, e| {
            let keep = !e.gone || in_use(*id);
            if !keep {
                if let Some(wd) = e.watch.take() {
                    watched.remove(&wd);
                    if let Some(n) = notify {
                        // The file is gone with its cgroup, and its watch with it, normally.
                        let _ = n.watches().remove(wd);
                    }
                }
                if removed.insert(*id, e.owner.take()).is_none() {
                    order.push_back(*id);
                }
                while order.len() > MAX_REMOVED {
                    if let Some(old) = order.pop_front() {
                        removed.remove(&old);
                    }
                }
            }
            keep
        });
    }

    /// How many removed cgroups are remembered (tests, bench).
    #[cfg(any(test, feature = "internals"))]
    pub fn removed_len(&self) -> usize {
        self.removed.len()
    }
}

impl Default for SocketOwners {
    fn default() -> Self {
        SocketOwners::new()
    }
}

/// Whether a `cgroup.events` file says `populated 1`; false when it cannot be read.
fn populated(events: &Path) -> bool {
    let mut buf = [0u8; 256];
    let Ok(mut f) = std::fs::File::open(events) else {
        return false;
    };
    let n = f.read(&mut buf).unwrap_or(0);
    buf[..n]
        .split(|b| *b == b'\n')
        .any(|line| line == b"populated 1")
}

/// Walks the tree below `root` (at most [`MAX_DEPTH`] deep and [`MAX_CGROUPS`] cgroups),
/// filling in the owners of the ids in `wanted`; stops when all are found. True when
/// every cgroup was seen (or all were found), so an id not found no longer exists.
fn walk(root: &Path, wanted: &mut HashMap<u64, Option<Arc<Owner>>>) -> bool {
    let mut missing = wanted.len();
    if let Ok(m) = std::fs::symlink_metadata(root) {
        missing -= usize::from(fill(wanted, m.ino(), root, "/", root));
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
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                // Removed meanwhile, or unreadable, or no descriptor left (counted and
                // logged): what is below it was not seen.
                crate::fdshortage::failed(crate::fdshortage::Lost::Workload, &e);
                complete = false;
                continue;
            }
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
            missing -= usize::from(fill(wanted, entry.ino(), root, &child_rel, &child));
            if depth + 1 < MAX_DEPTH {
                stack.push((child, child_rel, depth + 1));
            } else {
                complete = false;
            }
        }
    }
    complete || missing == 0
}

/// Records the cgroup at `dir` (`rel` below `root`) if its id is wanted and not yet
/// found; true when it was. Its workload is what its path names where root named it,
/// else the user it is delegated to (no workload if its directories cannot be read).
fn fill(
    wanted: &mut HashMap<u64, Option<Arc<Owner>>>,
    ino: u64,
    root: &Path,
    rel: &str,
    dir: &Path,
) -> bool {
    match wanted.get_mut(&ino) {
        Some(slot @ None) => {
            *slot = Some(Arc::new(Owner {
                path: Arc::from(rel),
                workload: Arc::new(delegation::workload_at(root, rel).unwrap_or_default()),
                dir: dir.to_path_buf(),
            }));
            true
        }
        _ => false,
    }
}

/// The mount point of the first cgroup v2 file system in `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    let text = crate::fsutil::read_regular_string(Path::new(MOUNTINFO), MAX_MOUNTINFO)
        .inspect_err(|e| {
            tracing::warn!("cannot read {MOUNTINFO} ({e}): drops are not attributed to socket owners")
        })
        .ok()?;
    let root = super::mountinfo::mount_with(&text, "cgroup2", None);
    if root.is_none() {
        tracing::info!("no cgroup v2 mounted: drops are not attributed to socket owners");
    }
    root
}

#[cfg(test)]
mod tests;
