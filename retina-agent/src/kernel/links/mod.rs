//! The interfaces of one network namespace (the host's, for the daemon) and their kernel
//! counters from rtnetlink, parsed into a table reused across cycles.
//!
//! # What a refresh asks the kernel
//!
//! A full `RTM_GETLINK` dump (`IFLA_IFNAME`, `IFLA_STATS64`, flags, operstate, MTU, kind)
//! costs about twelve times as much kernel and parsing time as the counters alone, so it
//! runs only when something other than counters may have changed:
//!
//! * on the first refresh;
//! * when a link notification arrived: a second socket in the same namespace listens to
//!   the `RTNLGRP_LINK` multicast group and is drained (without waiting) at the start of
//!   each refresh; any `RTM_NEWLINK`/`RTM_DELLINK` (renames, flag, operstate, MTU changes,
//!   interfaces added or removed) or a lost notification (`ENOBUFS`) means a full dump;
//! * when the counters dump disagrees with the table (an ifindex it does not know, one it
//!   knows missing, counters that went backwards, an interrupted or truncated dump);
//! * after a failed refresh, and every [`FULL_DUMP_EVERY`] refreshes as a safety net.
//!
//! Otherwise a refresh is one `RTM_GETSTATS` dump restricted to `IFLA_STATS_LINK_64`
//! (`struct rtnl_link_stats64`), which updates [`Link::stats`] and [`Link::detail`] by
//! ifindex. Kernels without `RTM_GETSTATS` (before 4.7) get a full dump every time.
//!
//! Every collector that needs interfaces (driver stats, drop attribution, interface
//! counters) reads this table instead of asking the kernel again.
//!
//! # Allocation
//!
//! The table talks to the kernel over raw `NETLINK_ROUTE` sockets and parses the replies in
//! place, out of one receive buffer reused across cycles. A steady-state [`Links::refresh`]
//! allocates nothing: known interfaces are updated in place, their names (`Arc<str>`) kept.
//! Memory is allocated only when an interface appears, is renamed or changes kind, or when
//! a reply needs a larger receive buffer (grown once, then kept).
//!
//! # Robustness
//!
//! Every length the kernel reports is bounds-checked; a malformed reply is a
//! [`LinkError`] naming the namespace and, where known, the interface. A refresh that fails
//! never removes interfaces and never stores a partially parsed message: each interface
//! either keeps its previous values or gets the ones of a fully validated message.
//!
//! # Layout
//!
//! This file has [`Links`], its refresh policy and the errors; `table` the interfaces
//! proper ([`Link`]); `parse` the bounds-checked message and attribute parsers; `socket`
//! the netlink sockets, requests, receives and the dump state machine; `uapi` the kernel's
//! constants and structs. The qdisc collector and the veth peer resolver
//! (`workload::peers`) reuse the socket, framing and parsing helpers.

mod parse;
mod socket;
mod table;
#[cfg(test)]
mod tests;
mod uapi;

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

pub(crate) use parse::{Attrs, Messages, nul_terminated};
use socket::{Dump, DumpKind, Sockets};
pub(crate) use socket::{drain, open_socket, recv, send_dump_request, send_request};
pub(crate) use table::Link;
use table::Table;
pub(crate) use table::{lossy_arc, lossy_eq};
pub use uapi::LinkStats;
use crate::model::Workload;
#[cfg(test)]
use uapi::OperState;
pub(crate) use uapi::{
    NETNSA_FD, NETNSA_NSID, NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLMSG_NOOP,
    NLMSG_OVERRUN, RTGENMSG_LEN, RTM_GETNSID, RTM_NEWNSID, align4, read_i32, read_u16, read_u32,
    read_u64,
};

/// Initial receive buffer. The kernel sizes dump datagrams after the largest `recvmsg`
/// buffer it has seen, capped near 32 KiB, unless one interface's message is bigger.
pub(crate) const INITIAL_BUF: usize = 64 * 1024;
/// Upper bound for growing the receive buffer after a truncated datagram.
pub(crate) const MAX_BUF: usize = 16 * 1024 * 1024;
/// How long one `recv` may wait for the kernel before the refresh fails.
pub(crate) const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Full dumps tried per refresh (a retry follows a truncated datagram or an interface list
/// that changed during the dump).
pub(crate) const MAX_ATTEMPTS: u32 = 4;
/// Datagrams read at most by one non-blocking drain: the rest of an abandoned dump, or the
/// queued link notifications.
const MAX_DRAIN: usize = 100_000;
/// Refreshes after which a full `RTM_GETLINK` dump runs even though no notification asked
/// for one: a safety net against a lost notification the kernel did not report.
pub(crate) const FULL_DUMP_EVERY: u32 = 60;

/// What was wrong with a reply from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{left} bytes left after the last message, less than a message header")]
    TrailingBytes { left: usize },
    #[error("nlmsg_len {len} is below the header size or beyond the {avail} bytes left")]
    MessageLength { len: u32, avail: usize },
    #[error("message payload of {len} bytes is shorter than its fixed header ({need} bytes)")]
    ShortPayload { len: usize, need: usize },
    #[error("attribute at payload offset {offset}: rta_len {len} invalid ({avail} bytes left)")]
    AttributeLength {
        offset: usize,
        len: usize,
        avail: usize,
    },
    #[error("ifindex {0} is not positive")]
    Ifindex(i32),
    #[error("required attribute {0} missing")]
    Missing(&'static str),
    #[error("IFLA_IFNAME is empty")]
    EmptyName,
    #[error("64-bit link statistics are {0} bytes, expected at least 184")]
    ShortStats(usize),
    #[error("attribute {attr} has length {len}, expected {want}")]
    AttributeSize {
        attr: &'static str,
        len: usize,
        want: usize,
    },
}

/// Why opening or refreshing the interface table failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("opening network namespace {}: {source}", path.display())]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("entering network namespace {}: {source}", path.display())]
    EnterNetns { path: PathBuf, source: io::Error },
    #[error("thread entering network namespace {} panicked", path.display())]
    NetnsThread { path: PathBuf },
    #[error("rtnetlink socket: {op}: {source}")]
    Socket { op: &'static str, source: io::Error },
    #[error("rtnetlink link dump (netns inode {netns_inode}): {op}: {source}")]
    Io {
        netns_inode: u64,
        op: &'static str,
        source: io::Error,
    },
    #[error("rtnetlink link dump (netns inode {netns_inode}): no reply within {timeout:?}")]
    Timeout { netns_inode: u64, timeout: Duration },
    #[error("rtnetlink link dump (netns inode {netns_inode}): kernel error: {source}")]
    Kernel { netns_inode: u64, source: io::Error },
    #[error(
        "rtnetlink link dump (netns inode {netns_inode}): malformed reply \
         (message at byte {offset}): {what}"
    )]
    Malformed {
        netns_inode: u64,
        offset: usize,
        what: Malformed,
    },
    #[error(
        "rtnetlink link dump (netns inode {netns_inode}): interface {ifindex}{}: \
         malformed message: {what}",
        name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
    )]
    MalformedLink {
        netns_inode: u64,
        ifindex: u32,
        /// The name the table had for this ifindex, if any.
        name: Option<Arc<str>>,
        what: Malformed,
    },
    #[error(
        "rtnetlink link dump (netns inode {netns_inode}): a {len}-byte datagram exceeds \
         the {max}-byte receive buffer limit"
    )]
    TooLarge {
        netns_inode: u64,
        len: usize,
        max: usize,
    },
    #[error(
        "rtnetlink link dump (netns inode {netns_inode}): interfaces kept changing during \
         {attempts} dumps"
    )]
    Inconsistent { netns_inode: u64, attempts: u32 },
    #[error("interface table has no kernel socket (built with Links::from_links)")]
    Detached,
}

/// The interface table of one network namespace, refreshed in place.
pub struct Links {
    /// `None` for a table built by [`Links::from_links`].
    sock: Option<Sockets>,
    netns_inode: u64,
    /// The next refresh must be a full `RTM_GETLINK` dump.
    need_full: bool,
    /// Refreshes since the last full dump.
    since_full: u32,
    /// Full dumps done so far.
    full_dumps: u64,
    /// The kernel rejected `RTM_GETSTATS`: every refresh is a full dump.
    no_getstats: bool,
    table: Table,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("netns_inode", &self.netns_inode)
            .field("links", &self.table.entries.len())
            .field("generation", &self.table.generation)
            .field("full_dumps", &self.full_dumps)
            .finish_non_exhaustive()
    }
}

impl Links {
    /// Opens the rtnetlink sockets (dumps and link notifications) in the calling thread's
    /// network namespace (the host's, for the daemon). The table is empty until the first
    /// [`refresh`](Links::refresh).
    pub fn new() -> Result<Links, LinkError> {
        let path = Path::new("/proc/thread-self/ns/net");
        let netns_inode = std::fs::metadata(path)
            .map_err(|source| LinkError::OpenNetns {
                path: path.to_path_buf(),
                source,
            })?
            .ino();
        Ok(Links::with_sockets(Sockets::open()?, netns_inode))
    }

    /// Opens the rtnetlink sockets (dumps and link notifications) inside the network
    /// namespace at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`). A short-lived thread
    /// enters the namespace and creates the sockets, which stay bound to that namespace;
    /// the calling thread's namespace does not change.
    pub fn open_in_netns(path: &Path) -> Result<Links, LinkError> {
        let ns = File::open(path).map_err(|source| LinkError::OpenNetns {
            path: path.to_path_buf(),
            source,
        })?;
        let netns_inode = ns
            .metadata()
            .map_err(|source| LinkError::OpenNetns {
                path: path.to_path_buf(),
                source,
            })?
            .ino();
        let thread_path = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("retina-netns".into())
            .spawn(move || {
                // SAFETY: `ns` is an open file; setns only changes this thread's namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(LinkError::EnterNetns {
                        path: thread_path,
                        source: io::Error::last_os_error(),
                    });
                }
                Sockets::open()
            })
            .map_err(|source| LinkError::Socket {
                op: "spawning the namespace thread",
                source,
            })?;
        let sockets = handle.join().map_err(|_| LinkError::NetnsThread {
            path: path.to_path_buf(),
        })??;
        Ok(Links::with_sockets(sockets, netns_inode))
    }

    /// A fixed table without a kernel socket, for tests and replays:
    /// [`refresh`](Links::refresh) fails with [`LinkError::Detached`]. Links are sorted by
    /// ifindex; of duplicates the last one wins.
    #[cfg(any(test, feature = "internals"))]
    pub fn from_links(links: impl IntoIterator<Item = Link>) -> Links {
        let mut l = Links::with(None, 0);
        for link in links {
            l.upsert(link);
        }
        l
    }

    fn with_sockets(sockets: Sockets, netns_inode: u64) -> Links {
        Links::with(Some(sockets), netns_inode)
    }

    fn with(sock: Option<Sockets>, netns_inode: u64) -> Links {
        Links {
            sock,
            netns_inode,
            need_full: true,
            since_full: 0,
            full_dumps: 0,
            no_getstats: false,
            table: Table::default(),
        }
    }

    /// Inserts or replaces the link with `link.ifindex` (for tests and replays).
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn upsert(&mut self, link: Link) {
        self.table.upsert(link);
    }

    /// Removes the link with this ifindex (for tests and replays).
    #[cfg(test)]
    pub(crate) fn remove(&mut self, ifindex: u32) -> Option<Link> {
        self.table.remove(ifindex)
    }

    /// Full `RTM_GETLINK` dumps done so far by [`refresh`](Links::refresh) (the others
    /// only asked for counters); for diagnostics and tests.
    #[cfg(any(test, feature = "internals"))]
    pub fn full_dumps(&self) -> u64 {
        self.full_dumps
    }

    /// Inode number of the network namespace this table describes (what the agent
    /// exports as `network.namespace.inode`); 0 for a table built by
    /// [`from_links`](Links::from_links).
    #[cfg(any(test, feature = "internals"))]
    pub fn netns_inode(&self) -> u64 {
        self.netns_inode
    }

    /// Changes whenever an interface appears or disappears or a link's
    /// [`instance`](Link::instance) changes; a collector caching per-interface state can
    /// skip reconciling it while this stays the same.
    pub fn generation(&self) -> u64 {
        self.table.generation
    }

    /// The interface with this index, if it existed at the last refresh.
    pub fn get(&self, ifindex: u32) -> Option<&Link> {
        self.table.get(ifindex)
    }

    /// Sets the workload of a link's peer namespace; a change gives the link a new
    /// [`instance`](Link::instance) (collectors rebuild its attribute sets) and the table a
    /// new generation. Returns whether it changed.
    pub(crate) fn set_workload(
        &mut self,
        ifindex: u32,
        workload: Option<Arc<Workload>>,
    ) -> bool {
        self.table.set_workload(ifindex, workload)
    }

    /// The interface with this name, if any (a linear search).
    #[cfg(any(test, feature = "internals"))]
    pub fn get_by_name(&self, name: &str) -> Option<&Link> {
        self.iter().find(|l| &*l.name == name)
    }

    /// Every interface seen at the last refresh, in ifindex order.
    pub fn iter(&self) -> impl Iterator<Item = &Link> {
        self.table.entries.iter().map(|e| &e.link)
    }

    /// Number of interfaces.
    #[cfg(any(test, feature = "internals"))]
    pub fn len(&self) -> usize {
        self.table.entries.len()
    }

    /// Beside `len`, as clippy expects of a public type (`len_without_is_empty`).
    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.table.entries.is_empty()
    }

    /// Updates the table from the kernel: new interfaces are added, vanished ones removed,
    /// the rest updated in place. Costs one counters-only `RTM_GETSTATS` dump when no link
    /// notification arrived since the last refresh, a full `RTM_GETLINK` dump otherwise (see
    /// the [module documentation](self)).
    ///
    /// On error no interface is removed; interfaces whose messages were valid carry their
    /// new values, the others keep their previous ones, and the next refresh is a full
    /// dump. A dump the kernel reports as interrupted (`NLM_F_DUMP_INTR`: interfaces changed
    /// meanwhile) or that overflowed the receive buffer is retried, a few times at most.
    pub fn refresh(&mut self) -> Result<(), LinkError> {
        let Some(sock) = &mut self.sock else {
            return Err(LinkError::Detached);
        };
        sock.discard_abandoned();
        // Consumed before the dump: a change made after this point is either in the dump
        // or queued for the next refresh.
        if sock.link_events() {
            self.need_full = true;
        }
        if !self.need_full && !self.no_getstats && self.since_full < FULL_DUMP_EVERY {
            match self.stats_dump() {
                Ok(true) => {
                    self.since_full += 1;
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    self.need_full = true;
                    return Err(e);
                }
            }
        }
        self.need_full = true;
        self.full_dumps += 1;
        self.full_dump()?;
        self.need_full = false;
        self.since_full = 0;
        Ok(())
    }

    /// Applies the reply datagrams of one dump as [`Links::refresh`] would, without a
    /// socket: an `RTM_GETLINK` dump, or with `stats` an `RTM_GETSTATS` one. The dump's
    /// sequence number and port id are those of the first message. `Ok(true)`: the dump
    /// was complete and consistent (a link dump then prunes the interfaces it did not
    /// report); `Ok(false)`: a refresh would dump again. The entry point of the fuzz target
    /// `rtnetlink` (`fuzz/`) and of tests.
    #[cfg(feature = "internals")]
    pub fn apply_replies(&mut self, stats: bool, datagrams: &[&[u8]]) -> Result<bool, LinkError> {
        let (seq, portid) = datagrams
            .iter()
            .find(|d| d.len() >= NLMSG_HDRLEN)
            .map_or((0, 0), |d| (read_u32(d, 8), read_u32(d, 12)));
        let kind = if stats {
            DumpKind::Stats
        } else {
            DumpKind::Links
        };
        let mut dump = Dump::new(kind, seq, portid, self.netns_inode);
        self.table.begin_dump();
        let mut step = socket::Step::More;
        for data in datagrams {
            step = dump.feed(&mut self.table, data);
            if step != socket::Step::More {
                break;
            }
        }
        if let Some(e) = dump.error {
            return Err(e);
        }
        if step != socket::Step::Done || dump.interrupted {
            return Ok(false);
        }
        if kind == DumpKind::Links {
            self.table.remove_unseen();
            return Ok(true);
        }
        Ok(!dump.unknown && !dump.went_back && self.table.all_seen())
    }

    /// One dump over the table's sockets.
    fn dump_once(&mut self, kind: DumpKind) -> Result<Dump, LinkError> {
        let Some(sock) = &mut self.sock else {
            return Err(LinkError::Detached);
        };
        sock.dump(kind, &mut self.table, self.netns_inode)
    }

    /// One counters-only dump applied to the table. `Ok(false)` when the table needs a
    /// full dump: the dump named an unknown interface or missed a known one, counters went
    /// backwards, or the dump was interrupted, truncated or refused by the kernel.
    fn stats_dump(&mut self) -> Result<bool, LinkError> {
        let dump = self.dump_once(DumpKind::Stats)?;
        if let Some(e) = dump.error {
            if let LinkError::Kernel { source, .. } = &e
                && matches!(
                    source.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
                )
            {
                // No RTM_GETSTATS (or no IFLA_STATS_LINK_64) in this kernel.
                self.no_getstats = true;
                return Ok(false);
            }
            return Err(e);
        }
        if dump.truncated.is_some() || dump.interrupted || dump.unknown || dump.went_back {
            return Ok(false);
        }
        Ok(self.table.all_seen())
    }

    /// A full `RTM_GETLINK` dump, retried while truncated or interrupted; prunes vanished
    /// interfaces when complete.
    fn full_dump(&mut self) -> Result<(), LinkError> {
        for _attempt in 0..MAX_ATTEMPTS {
            let dump = self.dump_once(DumpKind::Links)?;
            if dump.truncated.is_some() {
                continue;
            }
            if let Some(e) = dump.error {
                return Err(e);
            }
            if dump.interrupted {
                continue;
            }
            self.table.remove_unseen();
            return Ok(());
        }
        Err(LinkError::Inconsistent {
            netns_inode: self.netns_inode,
            attempts: MAX_ATTEMPTS,
        })
    }
}
