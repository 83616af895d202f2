//! Names of network namespaces and of the interfaces inside them.
//!
//! A drop counted in another namespace carries that namespace's inode number; an ifindex
//! there means nothing in the host namespace. Named namespaces (`ip netns add`, CNI
//! plugins: `/run/netns/NAME`) are resolved to their name, and their interfaces through an
//! rtnetlink socket opened inside them.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    fdshortage::{self, Lost},
    kernel::links::{LinkError, Links},
};

/// Whether the process has said that it may not enter other network namespaces (once, for
/// every [`NetnsNames`] in it: the drop collector's and the flows').
static ENTER_DENIED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Whether `e` says this process may not enter a network namespace at all: `setns` needs
/// CAP_SYS_ADMIN, which the packaged unit does not grant, and capabilities do not change
/// while the agent runs, so every other namespace would answer the same.
fn enter_denied(e: &LinkError) -> bool {
    matches!(e, LinkError::EnterNetns { source, .. } if source.raw_os_error() == Some(libc::EPERM))
}

/// Where `ip netns` and CNI plugins bind named namespaces.
pub(crate) const NETNS_RUN_DIR: &str = "/run/netns";

/// Where other tools bind namespaces that may have no process in them.
pub(crate) const BIND_DIRS: &[&str] = &[NETNS_RUN_DIR, "/var/run/docker/netns"];

/// Inodes of every network namespace that is still alive as far as this host can tell:
/// those of all processes, and those bound in the usual directories. Reads /proc, so it is
/// for occasional housekeeping, not for every cycle; as a non-root user without
/// CAP_SYS_PTRACE it sees only its own user's processes, so
/// `workload::Workloads::live_netns_inodes` (the task iterator) is preferred.
pub(crate) fn live_netns_inodes() -> std::collections::HashSet<u32> {
    let mut live = std::collections::HashSet::new();
    let mut add = |path: &Path| {
        if let Ok(meta) = std::fs::metadata(path)
            && let Ok(ino) = u32::try_from(meta.ino())
        {
            live.insert(ino);
        }
    };
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for entry in procs.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                add(&entry.path().join("ns/net"));
            }
        }
    }
    add_bound(&mut live);
    live
}

/// Adds the inodes of the namespaces bound in [`BIND_DIRS`] to `live`.
pub(crate) fn add_bound(live: &mut std::collections::HashSet<u32>) {
    for dir in BIND_DIRS {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if let Ok(meta) = std::fs::metadata(entry.path())
                    && let Ok(ino) = u32::try_from(meta.ino())
                {
                    live.insert(ino);
                }
            }
        }
    }
}

/// Inode of the namespace this process runs in (the host namespace for the daemon).
pub fn current_netns_inode() -> std::io::Result<u32> {
    let ino = std::fs::metadata("/proc/self/ns/net")?.ino();
    u32::try_from(ino).map_err(|_| std::io::Error::other("netns inode exceeds 32 bits"))
}

struct Named {
    name: Arc<str>,
    path: PathBuf,
    links: Option<Links>,
    /// When `links` was last refreshed: many new drop keys of one namespace in one cycle
    /// share one dump.
    refreshed: Option<Instant>,
}

/// A namespace's interface table this fresh answers lookups of interfaces it holds.
const FRESH: Duration = Duration::from_millis(500);

/// Resolves namespace inodes to names, and ifindexes inside them to interface names.
/// Used only when a new drop series appears, never per cycle.
pub(crate) struct NetnsNames {
    dir: PathBuf,
    by_inode: HashMap<u32, Named>,
    /// Inodes a scan did not find, and when: unnamed namespaces (containers) are asked
    /// about again only after [`RESCAN`], while a namespace never asked about before
    /// always triggers a scan, so a freshly created named namespace is always found.
    unnamed: HashMap<u32, Instant>,
    /// When [`NetnsNames::release_deleted`] last looked.
    checked: Option<Instant>,
    /// Entering a namespace was refused ([`enter_denied`]): interface names inside other
    /// namespaces are not looked up again.
    denied: bool,
}

/// Check that the named namespaces we hold sockets in still exist at most this often.
const RELEASE_CHECK: Duration = Duration::from_secs(1);

/// Look an unnamed namespace up again at most this often.
const RESCAN: Duration = Duration::from_secs(1);
/// Bound on the negative cache; cleared whole when exceeded (it only saves scans).
const MAX_UNNAMED: usize = 4096;

impl NetnsNames {
    pub(crate) fn new() -> Self {
        Self::with_dir(NETNS_RUN_DIR)
    }

    pub(crate) fn with_dir(dir: impl AsRef<Path>) -> Self {
        NetnsNames {
            dir: dir.as_ref().to_path_buf(),
            by_inode: HashMap::new(),
            unnamed: HashMap::new(),
            checked: None,
            denied: false,
        }
    }

    fn scan(&mut self) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                fdshortage::failed(Lost::InterfaceName, &e);
                return;
            }
        };
        let mut seen = HashMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let (Ok(meta), Some(name)) = (
                std::fs::metadata(&path),
                entry.file_name().to_str().map(Arc::<str>::from),
            ) else {
                continue;
            };
            let Ok(inode) = u32::try_from(meta.ino()) else {
                continue;
            };
            seen.insert(inode, (name, path));
        }
        self.by_inode.retain(|inode, _| seen.contains_key(inode));
        for (inode, (name, path)) in seen {
            self.by_inode.entry(inode).or_insert(Named {
                name,
                path,
                links: None,
                refreshed: None,
            });
        }
    }

    /// Forgets named namespaces whose name is gone (`ip netns del`) or now names another
    /// namespace, closing the rtnetlink sockets opened in them: a socket holds its
    /// namespace alive, so keeping it would keep a deleted namespace (and its devices)
    /// in the kernel. Runs at most every [`RELEASE_CHECK`]; one `stat` per namespace
    /// held, no allocation. Returns how many were released.
    pub(crate) fn release_deleted(&mut self) -> usize {
        let now = Instant::now();
        if self
            .checked
            .is_some_and(|t| now.saturating_duration_since(t) < RELEASE_CHECK)
        {
            return 0;
        }
        self.checked = Some(now);
        let before = self.by_inode.len();
        self.by_inode.retain(|inode, named| {
            std::fs::metadata(&named.path)
                .is_ok_and(|m| u32::try_from(m.ino()).is_ok_and(|ino| ino == *inode))
        });
        let released = before - self.by_inode.len();
        if released > 0 {
            tracing::debug!(released, "closed rtnetlink sockets of deleted namespaces");
        }
        released
    }

    fn named(&mut self, inode: u32) -> Option<&mut Named> {
        let recently_missed = self
            .unnamed
            .get(&inode)
            .is_some_and(|t| t.elapsed() < RESCAN);
        if !self.by_inode.contains_key(&inode) && !recently_missed {
            self.scan();
            if !self.by_inode.contains_key(&inode) {
                if self.unnamed.len() >= MAX_UNNAMED {
                    self.unnamed.clear();
                }
                self.unnamed.insert(inode, Instant::now());
            }
        }
        self.by_inode.get_mut(&inode)
    }

    /// The name of the namespace with this inode, if it is a named one.
    pub(crate) fn name(&mut self, inode: u32) -> Option<Arc<str>> {
        self.named(inode).map(|n| n.name.clone())
    }

    /// The interface table of named namespace `inode`, refreshed unless it is fresh and
    /// holds `ifindex` (a lookup), or unless it was refreshed after `since` (a check).
    fn links(
        &mut self,
        inode: u32,
        ifindex: Option<u32>,
        since: Option<Instant>,
    ) -> Option<&Links> {
        if self.denied {
            return None;
        }
        // The rtnetlink socket inside the namespace, opened on its first lookup.
        let opened = match self.named(inode) {
            None => return None,
            Some(named) if named.links.is_some() => None,
            Some(named) => {
                Some(Links::open_in_netns(&named.path).map_err(|e| (e, named.name.clone())))
            }
        };
        match opened {
            None => {}
            Some(Ok(links)) => {
                fdshortage::succeeded(Lost::InterfaceName);
                self.by_inode.get_mut(&inode)?.links = Some(links);
            }
            Some(Err((e, netns))) if enter_denied(&e) => {
                if !ENTER_DENIED_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        %netns,
                        "interface names inside other network namespaces are not \
                         available: {e} (entering one needs CAP_SYS_ADMIN, which the agent \
                         does not have); drops there carry network.interface.index without \
                         network.interface.name"
                    );
                }
                self.denied = true;
                return None;
            }
            Some(Err((e, netns))) => {
                if !fdshortage::failed(Lost::InterfaceName, &e) {
                    tracing::debug!(%netns, "cannot open rtnetlink in namespace: {e}");
                }
                return None;
            }
        }
        let named = self.by_inode.get_mut(&inode)?;
        let links = named.links.as_mut()?;
        let fresh = match since {
            Some(since) => named.refreshed.is_some_and(|t| t >= since),
            None => named.refreshed.is_some_and(|t| t.elapsed() < FRESH),
        };
        if !fresh || ifindex.is_some_and(|i| links.get(i).is_none()) {
            if let Err(e) = links.refresh() {
                tracing::debug!(netns = %named.name, "link dump in namespace failed: {e}");
                return None;
            }
            named.refreshed = Some(Instant::now());
        }
        named.links.as_ref()
    }

    /// The name of interface `ifindex` inside namespace `inode`, as it is now.
    pub(crate) fn interface(&mut self, inode: u32, ifindex: u32) -> Option<Arc<str>> {
        let links = self.links(inode, Some(ifindex), None)?;
        links.get(ifindex).map(|l| l.name.clone())
    }

    /// Whether interface `ifindex` exists in namespace `inode`, from a link dump made
    /// after `since` (one per namespace for all the checks of one housekeeping pass);
    /// `None` when that cannot be told (an unnamed namespace, or no rtnetlink socket in it).
    pub(crate) fn has_interface(&mut self, inode: u32, ifindex: u32, since: Instant) -> Option<bool> {
        let links = self.links(inode, None, Some(since))?;
        Some(links.get(ifindex).is_some())
    }
}

impl Default for NetnsNames {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::{io, path::PathBuf};

    use super::*;

    fn enter_error(errno: i32) -> LinkError {
        LinkError::EnterNetns {
            path: PathBuf::from("/run/netns/pod"),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// Only a refused `setns` stops the lookups: a descriptor shortage or a file that is
    /// not a namespace is about that one attempt.
    #[test]
    fn only_a_refused_setns_means_no_namespace_can_be_entered() {
        assert!(enter_denied(&enter_error(libc::EPERM)));
        assert!(!enter_denied(&enter_error(libc::EMFILE)));
        assert!(!enter_denied(&enter_error(libc::EINVAL)));
        assert!(!enter_denied(&LinkError::OpenNetns {
            path: PathBuf::from("/run/netns/pod"),
            source: io::Error::from_raw_os_error(libc::EPERM),
        }));
    }
}
