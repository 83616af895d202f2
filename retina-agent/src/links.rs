//! The host's interfaces and their kernel counters from rtnetlink, parsed into a table
//! reused across cycles.
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
//! The table talks to the kernel over a raw `NETLINK_ROUTE` socket and parses the replies in
//! place, out of one receive buffer reused across cycles. A steady-state [`Links::refresh`]
//! allocates nothing: known interfaces are updated in place, their names (`Arc<str>`) kept.
//! Memory is allocated only when an interface appears, is renamed, or when a reply needs a
//! larger receive buffer (grown once, then kept).
//!
//! # Robustness
//!
//! Every length the kernel reports is bounds-checked; a malformed reply is a
//! [`LinkError`] naming the namespace and, where known, the interface. A refresh that fails
//! never removes interfaces and never stores a partially parsed message: each interface
//! either keeps its previous values or gets the ones of a fully validated message.

use std::{
    fs::File,
    io, mem,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

// ---- Kernel UAPI (include/uapi/linux/netlink.h, rtnetlink.h, if_link.h) ----

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWSTATS: u16 = 92;
const RTM_GETSTATS: u16 = 94;
/// `RTMGRP_LINK`: the `RTNLGRP_LINK` multicast group as a `nl_groups` bit.
const RTMGRP_LINK: u32 = 1;
/// `sizeof(struct if_stats_msg)`: family, pad1, pad2, ifindex, filter_mask.
const IF_STATS_MSG_LEN: usize = 12;
/// `IFLA_STATS_LINK_64`: `struct rtnl_link_stats64` in an `RTM_NEWSTATS` message.
const IFLA_STATS_LINK_64: u16 = 1;
/// `IFLA_STATS_FILTER_BIT(IFLA_STATS_LINK_64)`.
const IFLA_STATS_FILTER_LINK_64: u32 = 1 << (IFLA_STATS_LINK_64 - 1);
const NLM_F_REQUEST: u16 = 0x01;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
/// `sizeof(struct ifinfomsg)`.
const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_STATS64: u16 = 23;
const IFLA_INFO_KIND: u16 = 1;
/// `IFLA_LINK_NETNSID`: the nsid (in this namespace) of the namespace of a link's peer.
const IFLA_LINK_NETNSID: u16 = 37;
/// Masks `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` off an attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// The 23 `__u64` fields `struct rtnl_link_stats64` has had since Linux 2.6.35.
const STATS64_MIN_LEN: usize = 23 * 8;

// ---- Tuning ----

/// Initial receive buffer. The kernel sizes dump datagrams after the largest `recvmsg`
/// buffer it has seen, capped near 32 KiB, unless one interface's message is bigger.
pub(crate) const INITIAL_BUF: usize = 64 * 1024;
/// Upper bound for growing the receive buffer after a truncated datagram.
pub(crate) const MAX_BUF: usize = 16 * 1024 * 1024;
/// How long one `recv` may wait for the kernel before the refresh fails.
pub(crate) const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Dumps tried per refresh (a retry follows a truncated datagram or an interface list that
/// changed during the dump).
pub(crate) const MAX_ATTEMPTS: u32 = 4;
/// Datagrams read at most while discarding the rest of an abandoned dump.
const MAX_DRAIN: usize = 100_000;
/// Refreshes after which a full `RTM_GETLINK` dump runs even though no notification asked
/// for one: a safety net against a lost notification the kernel did not report.
pub const FULL_DUMP_EVERY: u32 = 60;

/// Source of [`Link::instance`] ids, unique in the process.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

fn next_instance() -> u64 {
    NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
}

/// `struct rtnl_link_stats64` as the kernel reports it (fields the agent exports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

impl LinkStats {
    /// Whether any counter is lower than in `earlier`: the kernel's counters were reset
    /// (device recreated, or a driver that clears its statistics).
    fn went_back_from(&self, earlier: &LinkStats) -> bool {
        self.rx_packets < earlier.rx_packets
            || self.tx_packets < earlier.tx_packets
            || self.rx_bytes < earlier.rx_bytes
            || self.tx_bytes < earlier.tx_bytes
            || self.rx_errors < earlier.rx_errors
            || self.tx_errors < earlier.tx_errors
            || self.rx_dropped < earlier.rx_dropped
            || self.tx_dropped < earlier.tx_dropped
    }
}

/// The rest of `struct rtnl_link_stats64`: detailed error counters, not exported by the
/// interface collector but kept for whoever needs them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStatsDetail {
    pub multicast: u64,
    pub collisions: u64,
    pub rx_length_errors: u64,
    pub rx_over_errors: u64,
    pub rx_crc_errors: u64,
    pub rx_frame_errors: u64,
    pub rx_fifo_errors: u64,
    pub rx_missed_errors: u64,
    pub tx_aborted_errors: u64,
    pub tx_carrier_errors: u64,
    pub tx_fifo_errors: u64,
    pub tx_heartbeat_errors: u64,
    pub tx_window_errors: u64,
    pub rx_compressed: u64,
    pub tx_compressed: u64,
    /// Packets dropped because no protocol handler took them (Linux 4.6+; `None` when the
    /// kernel does not report it).
    pub rx_nohandler: Option<u64>,
    /// Packets dropped because they were addressed to another host (Linux 5.19+).
    pub rx_otherhost_dropped: Option<u64>,
}

/// RFC 2863 operational state (`IFLA_OPERSTATE`, `IF_OPER_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OperState {
    /// `IF_OPER_UNKNOWN`, a value this agent does not know, or no attribute at all.
    #[default]
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

impl OperState {
    fn from_u8(v: u8) -> OperState {
        match v {
            1 => OperState::NotPresent,
            2 => OperState::Down,
            3 => OperState::LowerLayerDown,
            4 => OperState::Testing,
            5 => OperState::Dormant,
            6 => OperState::Up,
            _ => OperState::Unknown,
        }
    }

    /// The name `ip link` prints (`UP`, `DOWN`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OperState::Unknown => "UNKNOWN",
            OperState::NotPresent => "NOTPRESENT",
            OperState::Down => "DOWN",
            OperState::LowerLayerDown => "LOWERLAYERDOWN",
            OperState::Testing => "TESTING",
            OperState::Dormant => "DORMANT",
            OperState::Up => "UP",
        }
    }
}

/// One interface of the table's network namespace.
#[derive(Clone, Debug)]
pub struct Link {
    pub ifindex: u32,
    /// Shared so attribute sets can hold it without copying. A name that is not UTF-8
    /// (interface names are bytes) is here with U+FFFD for each invalid sequence, as every
    /// exported attribute has it; [`Link::name_bytes`] has the kernel's bytes.
    pub name: Arc<str>,
    /// The kernel's bytes of a name that is not UTF-8 (`None` when `name` is exact).
    pub raw_name: Option<Arc<[u8]>>,
    /// `IFF_*` flags from `ifinfomsg`.
    pub flags: u32,
    pub stats: LinkStats,
    /// Identity of the device behind this ifindex, unique in the process. It changes when
    /// the ifindex (re)appears, when the interface is renamed or its kind changes, and when
    /// its counters go backwards (device recreated with the same index and name, or
    /// counters reset). A collector keeping per-interface state keyed by ifindex must reset
    /// that state (cumulative sums, cached names) when this changes.
    pub instance: u64,
    /// Detailed counters from the rest of `rtnl_link_stats64`.
    pub detail: LinkStatsDetail,
    pub operstate: OperState,
    /// `IFLA_MTU`, if the kernel reported it.
    pub mtu: Option<u32>,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, ...); `None` for devices without one (physical
    /// NICs, `lo`).
    pub kind: Option<Arc<str>>,
    /// `IFLA_LINK_NETNSID`: for a veth (or other paired device) whose peer lives in another
    /// namespace, that namespace's id as this namespace numbers it (`RTM_GETNSID`).
    pub link_netnsid: Option<i32>,
    /// The workload of the peer's namespace (a pod's host-side veth), set by
    /// [`crate::workload::peers::PeerOwners`]; collectors add its attributes to the
    /// interface's series. Changing it gives the link a new [`instance`](Link::instance).
    pub workload: Option<Arc<crate::workload::Workload>>,
}

impl Link {
    /// A link with the given identity and zeroed counters, with a fresh
    /// [`instance`](Link::instance) (for tests and replays).
    pub fn new(ifindex: u32, name: &str) -> Link {
        Link {
            ifindex,
            name: Arc::from(name),
            raw_name: None,
            flags: 0,
            stats: LinkStats::default(),
            instance: next_instance(),
            detail: LinkStatsDetail::default(),
            operstate: OperState::Unknown,
            mtu: None,
            kind: None,
            link_netnsid: None,
            workload: None,
        }
    }

    /// The name as the kernel has it, for ioctls and netlink requests by name.
    pub fn name_bytes(&self) -> &[u8] {
        self.raw_name.as_deref().unwrap_or(self.name.as_bytes())
    }

    /// `IFF_UP`: administratively up.
    pub fn is_up(&self) -> bool {
        self.flags & libc::IFF_UP as u32 != 0
    }

    /// `IFF_LOOPBACK`.
    pub fn is_loopback(&self) -> bool {
        self.flags & libc::IFF_LOOPBACK as u32 != 0
    }
}

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

/// A table entry: the link and the refresh attempt that last reported it.
#[derive(Debug)]
struct Entry {
    link: Link,
    seen: u64,
}

/// The interfaces proper, sorted by ifindex; separate from the socket so dump replies can
/// be parsed out of the socket's buffer into it.
#[derive(Debug, Default)]
struct Table {
    entries: Vec<Entry>,
    /// Incremented per dump attempt; entries not stamped with it at the end of a complete
    /// dump are gone.
    stamp: u64,
    generation: u64,
}

/// One interface message, parsed and validated, borrowing the receive buffer.
#[derive(Debug)]
struct LinkMsg<'a> {
    ifindex: u32,
    flags: u32,
    name: &'a [u8],
    stats: LinkStats,
    detail: LinkStatsDetail,
    operstate: Option<u8>,
    mtu: Option<u32>,
    kind: Option<&'a [u8]>,
    link_netnsid: Option<i32>,
}

/// One `RTM_NEWSTATS` message, parsed and validated.
#[derive(Debug, PartialEq, Eq)]
struct StatsMsg {
    ifindex: u32,
    stats: LinkStats,
    detail: LinkStatsDetail,
}

/// What a dump asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DumpKind {
    /// `RTM_GETLINK`: every attribute of every interface.
    Links,
    /// `RTM_GETSTATS` with `IFLA_STATS_LINK_64`: counters only.
    Stats,
}

/// State of one dump request while its reply datagrams arrive.
#[derive(Debug)]
struct Dump {
    kind: DumpKind,
    seq: u32,
    portid: u32,
    netns_inode: u64,
    /// Some message carried `NLM_F_DUMP_INTR`: the list changed while it was dumped.
    interrupted: bool,
    /// The first error; the dump is still read to its end.
    error: Option<LinkError>,
    /// Stats dump: a message for an ifindex the table does not have.
    unknown: bool,
    /// Stats dump: some interface's counters went backwards.
    went_back: bool,
    /// A datagram of this length did not fit the receive buffer (its messages are lost).
    truncated: Option<usize>,
}

impl Dump {
    fn new(kind: DumpKind, seq: u32, portid: u32, netns_inode: u64) -> Dump {
        Dump {
            kind,
            seq,
            portid,
            netns_inode,
            interrupted: false,
            error: None,
            unknown: false,
            went_back: false,
            truncated: None,
        }
    }
}

/// What a datagram told about the dump it belongs to.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` or the final `NLMSG_ERROR` was seen.
    Done,
    /// The datagram could not be walked to its end (its framing is broken), so whether the
    /// dump ended in it is unknown: discard whatever is still queued.
    Abort,
}

/// The interface table of one network namespace, refreshed in place.
pub struct Links {
    /// `None` for a table built by [`Links::from_links`].
    sock: Option<OwnedFd>,
    /// Non-blocking socket subscribed to `RTNLGRP_LINK` in the same namespace.
    events: Option<OwnedFd>,
    portid: u32,
    netns_inode: u64,
    seq: u32,
    buf: Vec<u8>,
    /// The socket may still hold datagrams of an abandoned dump.
    dirty: bool,
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
    /// Opens the rtnetlink sockets (dumps and link notifications) in the calling thread's network namespace (the host's, for
    /// the daemon). The table is empty until the first [`refresh`](Links::refresh).
    pub fn new() -> Result<Links, LinkError> {
        let path = Path::new("/proc/thread-self/ns/net");
        let netns_inode = std::fs::metadata(path)
            .map_err(|source| LinkError::OpenNetns {
                path: path.to_path_buf(),
                source,
            })?
            .ino();
        let (sock, portid, events) = open_sockets()?;
        Ok(Links::with_sockets(sock, portid, events, netns_inode))
    }

    /// Opens the rtnetlink sockets (dumps and link notifications) inside the network namespace at `path`
    /// (`/run/netns/NAME`, `/proc/PID/ns/net`). A short-lived thread enters the namespace
    /// and creates the socket, which stays bound to that namespace; the calling thread's
    /// namespace does not change.
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
                open_sockets()
            })
            .map_err(|source| LinkError::Socket {
                op: "spawning the namespace thread",
                source,
            })?;
        let (sock, portid, events) = handle.join().map_err(|_| LinkError::NetnsThread {
            path: path.to_path_buf(),
        })??;
        Ok(Links::with_sockets(sock, portid, events, netns_inode))
    }

    /// A fixed table without a kernel socket, for tests and replays:
    /// [`refresh`](Links::refresh) fails with [`LinkError::Detached`]. Links are sorted by
    /// ifindex; of duplicates the last one wins.
    pub fn from_links(links: impl IntoIterator<Item = Link>) -> Links {
        let mut l = Links {
            sock: None,
            events: None,
            portid: 0,
            netns_inode: 0,
            seq: 0,
            buf: Vec::new(),
            dirty: false,
            need_full: true,
            since_full: 0,
            full_dumps: 0,
            no_getstats: false,
            table: Table::default(),
        };
        for link in links {
            l.upsert(link);
        }
        l
    }

    /// Inserts or replaces the link with `link.ifindex` (for tests and replays).
    pub fn upsert(&mut self, link: Link) {
        let t = &mut self.table;
        t.generation += 1;
        match t
            .entries
            .binary_search_by_key(&link.ifindex, |e| e.link.ifindex)
        {
            Ok(i) => t.entries[i].link = link,
            Err(i) => t.entries.insert(i, Entry { link, seen: 0 }),
        }
    }

    /// Removes the link with this ifindex (for tests and replays).
    pub fn remove(&mut self, ifindex: u32) -> Option<Link> {
        let t = &mut self.table;
        let i = t
            .entries
            .binary_search_by_key(&ifindex, |e| e.link.ifindex)
            .ok()?;
        t.generation += 1;
        Some(t.entries.remove(i).link)
    }

    fn with_sockets(sock: OwnedFd, portid: u32, events: OwnedFd, netns_inode: u64) -> Links {
        Links {
            sock: Some(sock),
            events: Some(events),
            portid,
            netns_inode,
            seq: 0,
            buf: vec![0; INITIAL_BUF],
            dirty: false,
            need_full: true,
            since_full: 0,
            full_dumps: 0,
            no_getstats: false,
            table: Table::default(),
        }
    }

    /// Full `RTM_GETLINK` dumps done so far by [`refresh`](Links::refresh) (the others
    /// only asked for counters); for diagnostics and tests.
    pub fn full_dumps(&self) -> u64 {
        self.full_dumps
    }

    /// Inode number of the network namespace this table describes (what the agent
    /// exports as `network.namespace.inode`); 0 for a table built by
    /// [`from_links`](Links::from_links).
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
        let e = &self.table.entries;
        e.binary_search_by_key(&ifindex, |e| e.link.ifindex)
            .ok()
            .map(|i| &e[i].link)
    }

    /// Sets the workload of a link's peer namespace; a change gives the link a new
    /// [`instance`](Link::instance) (collectors rebuild its attribute sets) and the table a
    /// new generation. Returns whether it changed.
    pub fn set_workload(
        &mut self,
        ifindex: u32,
        workload: Option<Arc<crate::workload::Workload>>,
    ) -> bool {
        let t = &mut self.table;
        let Ok(i) = t.entries.binary_search_by_key(&ifindex, |e| e.link.ifindex) else {
            return false;
        };
        let l = &mut t.entries[i].link;
        if l.workload.as_deref() == workload.as_deref() {
            return false;
        }
        l.workload = workload;
        l.instance = next_instance();
        t.generation += 1;
        true
    }

    /// The interface with this name, if any (a linear search).
    pub fn get_by_name(&self, name: &str) -> Option<&Link> {
        self.iter().find(|l| &*l.name == name)
    }

    /// Every interface seen at the last refresh, in ifindex order.
    pub fn iter(&self) -> impl Iterator<Item = &Link> {
        self.table.entries.iter().map(|e| &e.link)
    }

    /// Number of interfaces.
    pub fn len(&self) -> usize {
        self.table.entries.len()
    }

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
        let Some(sock) = &self.sock else {
            return Err(LinkError::Detached);
        };
        let fd = sock.as_raw_fd();
        if self.dirty {
            drain(fd, &mut self.buf, None);
            self.dirty = false;
        }
        // Consumed before the dump: a change made after this point is either in the dump
        // or queued for the next refresh.
        if self.link_events() {
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
        self.table.stamp += 1;
        let mut step = Step::More;
        for data in datagrams {
            step = self.table.feed(&mut dump, data);
            if step != Step::More {
                break;
            }
        }
        if let Some(e) = dump.error {
            return Err(e);
        }
        if step != Step::Done || dump.interrupted {
            return Ok(false);
        }
        if kind == DumpKind::Links {
            self.table.remove_unseen();
            return Ok(true);
        }
        let stamp = self.table.stamp;
        Ok(!dump.unknown && !dump.went_back && self.table.entries.iter().all(|e| e.seen == stamp))
    }

    /// Drains the notification socket without waiting; whether any link changed (or
    /// notifications were lost).
    fn link_events(&mut self) -> bool {
        let Some(events) = &self.events else {
            return false;
        };
        let fd = events.as_raw_fd();
        let mut changed = false;
        for _ in 0..MAX_DRAIN {
            match recv(fd, &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    // A cut datagram still had something to say.
                    if n > self.buf.len() || is_link_event(&self.buf[..n]) {
                        changed = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return changed,
                // ENOBUFS: the queue overflowed and notifications were lost. Anything else
                // is unexpected: be safe.
                Err(_) => changed = true,
            }
        }
        true
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
        let stamp = self.table.stamp;
        Ok(self.table.entries.iter().all(|e| e.seen == stamp))
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

    /// Sends one dump request and feeds its replies to the table. A datagram that did not
    /// fit the buffer grows it (the dump is then marked truncated and its rest discarded).
    fn dump_once(&mut self, kind: DumpKind) -> Result<Dump, LinkError> {
        let netns_inode = self.netns_inode;
        let Some(sock) = &self.sock else {
            return Err(LinkError::Detached);
        };
        let fd = sock.as_raw_fd();
        self.seq = self.seq.wrapping_add(1);
        let mut dump = Dump::new(kind, self.seq, self.portid, netns_inode);
        self.table.stamp += 1;
        let sent = match kind {
            DumpKind::Links => send_dump_request(fd, RTM_GETLINK, dump.seq, &[0; IFINFOMSG_LEN]),
            DumpKind::Stats => {
                let mut body = [0u8; IF_STATS_MSG_LEN];
                body[8..12].copy_from_slice(&IFLA_STATS_FILTER_LINK_64.to_ne_bytes());
                send_dump_request(fd, RTM_GETSTATS, dump.seq, &body)
            }
        };
        sent.map_err(|source| LinkError::Io {
            netns_inode,
            op: match kind {
                DumpKind::Links => "sending RTM_GETLINK",
                DumpKind::Stats => "sending RTM_GETSTATS",
            },
            source,
        })?;
        loop {
            let n = match recv(fd, &mut self.buf, 0) {
                Ok(n) => n,
                Err(e) => {
                    self.dirty = true;
                    return Err(recv_error(netns_inode, e));
                }
            };
            if n > self.buf.len() {
                // The datagram was cut: its messages are lost. Grow, then redo the dump.
                drain(fd, &mut self.buf, Some(dump.seq));
                if n > MAX_BUF {
                    return Err(LinkError::TooLarge {
                        netns_inode,
                        len: n,
                        max: MAX_BUF,
                    });
                }
                let grown = n.next_power_of_two().clamp(INITIAL_BUF, MAX_BUF);
                self.buf.resize(grown, 0);
                dump.truncated = Some(n);
                return Ok(dump);
            }
            match self.table.feed(&mut dump, &self.buf[..n]) {
                Step::More => {}
                Step::Done => return Ok(dump),
                Step::Abort => {
                    drain(fd, &mut self.buf, Some(dump.seq));
                    return Ok(dump);
                }
            }
        }
    }
}

/// Whether a datagram from the notification socket reports a link change (or is too
/// broken to tell).
fn is_link_event(data: &[u8]) -> bool {
    let mut off = 0;
    while off < data.len() {
        let left = data.len() - off;
        if left < NLMSG_HDRLEN {
            return true;
        }
        let len = read_u32(data, off) as usize;
        if len < NLMSG_HDRLEN || len > left {
            return true;
        }
        match read_u16(data, off + 4) {
            RTM_NEWLINK | RTM_DELLINK | NLMSG_OVERRUN | NLMSG_ERROR => return true,
            _ => {}
        }
        off += align4(len);
    }
    false
}

impl Table {
    /// Walks one reply datagram of `dump`, applying every valid interface message.
    fn feed(&mut self, dump: &mut Dump, data: &[u8]) -> Step {
        let mut off = 0;
        while off < data.len() {
            let left = data.len() - off;
            if left < NLMSG_HDRLEN {
                dump.error.get_or_insert(LinkError::Malformed {
                    netns_inode: dump.netns_inode,
                    offset: off,
                    what: Malformed::TrailingBytes { left },
                });
                return Step::Abort;
            }
            let len = read_u32(data, off);
            let ty = read_u16(data, off + 4);
            let flags = read_u16(data, off + 6);
            let seq = read_u32(data, off + 8);
            let pid = read_u32(data, off + 12);
            if (len as usize) < NLMSG_HDRLEN || len as usize > left {
                dump.error.get_or_insert(LinkError::Malformed {
                    netns_inode: dump.netns_inode,
                    offset: off,
                    what: Malformed::MessageLength { len, avail: left },
                });
                return Step::Abort;
            }
            let payload = &data[off + NLMSG_HDRLEN..off + len as usize];
            let at = off;
            off += align4(len as usize);
            if seq != dump.seq || pid != dump.portid {
                // A reply to an earlier, abandoned request.
                continue;
            }
            if flags & NLM_F_DUMP_INTR != 0 {
                dump.interrupted = true;
            }
            match ty {
                NLMSG_NOOP => {}
                NLMSG_DONE => {
                    // A dump that failed half-way reports its error here.
                    if let Some(err) = payload.get(..4).map(|b| read_i32(b, 0))
                        && err < 0
                    {
                        dump.error.get_or_insert(LinkError::Kernel {
                            netns_inode: dump.netns_inode,
                            source: io::Error::from_raw_os_error(err.saturating_neg()),
                        });
                    }
                    return Step::Done;
                }
                NLMSG_ERROR => {
                    let err = match payload.get(..4) {
                        Some(b) => read_i32(b, 0),
                        None => {
                            dump.error.get_or_insert(LinkError::Malformed {
                                netns_inode: dump.netns_inode,
                                offset: at,
                                what: Malformed::ShortPayload {
                                    len: payload.len(),
                                    need: 4,
                                },
                            });
                            return Step::Done;
                        }
                    };
                    if err != 0 {
                        dump.error.get_or_insert(LinkError::Kernel {
                            netns_inode: dump.netns_inode,
                            source: io::Error::from_raw_os_error(err.saturating_neg()),
                        });
                    }
                    // An error (or an acknowledgement) ends the request.
                    return Step::Done;
                }
                NLMSG_OVERRUN => {
                    dump.error.get_or_insert(LinkError::Kernel {
                        netns_inode: dump.netns_inode,
                        source: io::Error::from_raw_os_error(libc::ENOBUFS),
                    });
                    return Step::Abort;
                }
                RTM_NEWSTATS if dump.kind == DumpKind::Stats => match parse_stats_msg(payload) {
                    Ok(msg) => self.apply_stats(dump, &msg),
                    Err((ifindex, what)) => self.malformed(dump, at, ifindex, what),
                },
                RTM_NEWLINK if dump.kind == DumpKind::Links => match parse_link(payload) {
                    Ok(msg) => self.apply(&msg),
                    Err((ifindex, what)) => self.malformed(dump, at, ifindex, what),
                },
                _ => {}
            }
        }
        Step::More
    }

    fn get(&self, ifindex: u32) -> Option<&Link> {
        self.entries
            .binary_search_by_key(&ifindex, |e| e.link.ifindex)
            .ok()
            .map(|i| &self.entries[i].link)
    }

    /// Stores one validated message: updates the interface in place (no allocation unless
    /// its name or kind changed) or inserts it.
    fn apply(&mut self, m: &LinkMsg<'_>) {
        let stamp = self.stamp;
        let operstate = m.operstate.map_or(OperState::Unknown, OperState::from_u8);
        match self
            .entries
            .binary_search_by_key(&m.ifindex, |e| e.link.ifindex)
        {
            Ok(i) => {
                let e = &mut self.entries[i];
                e.seen = stamp;
                let l = &mut e.link;
                let mut changed = m.stats.went_back_from(&l.stats);
                if m.name != l.name_bytes() {
                    l.name = lossy_arc(m.name);
                    l.raw_name = raw_name(m.name);
                    changed = true;
                }
                let same_kind = match (m.kind, &l.kind) {
                    (None, None) => true,
                    (Some(raw), Some(kind)) => lossy_eq(raw, kind),
                    _ => false,
                };
                if !same_kind {
                    l.kind = m.kind.map(lossy_arc);
                    changed = true;
                }
                if m.link_netnsid != l.link_netnsid {
                    // The peer moved to another namespace: not the same pod's interface.
                    l.link_netnsid = m.link_netnsid;
                    l.workload = None;
                    changed = true;
                }
                if changed {
                    l.instance = next_instance();
                    self.generation += 1;
                }
                l.flags = m.flags;
                l.stats = m.stats;
                l.detail = m.detail;
                l.operstate = operstate;
                l.mtu = m.mtu;
            }
            Err(i) => {
                let link = Link {
                    ifindex: m.ifindex,
                    name: lossy_arc(m.name),
                    raw_name: raw_name(m.name),
                    flags: m.flags,
                    stats: m.stats,
                    instance: next_instance(),
                    detail: m.detail,
                    operstate,
                    mtu: m.mtu,
                    kind: m.kind.map(lossy_arc),
                    link_netnsid: m.link_netnsid,
                    workload: None,
                };
                self.entries.insert(i, Entry { link, seen: stamp });
                self.generation += 1;
            }
        }
    }

    /// Stores the counters of one validated stats message. An unknown ifindex is only
    /// noted (the table needs a full dump to learn its name); counters going backwards
    /// give the link a new instance, as in [`apply`](Table::apply).
    /// Records a message that does not parse (the first of the dump): named by its
    /// interface when its header could be read, else by its offset in the reply.
    fn malformed(&self, dump: &mut Dump, at: usize, ifindex: Option<u32>, what: Malformed) {
        let error = match ifindex {
            Some(ifindex) => LinkError::MalformedLink {
                netns_inode: dump.netns_inode,
                ifindex,
                name: self.get(ifindex).map(|l| l.name.clone()),
                what,
            },
            None => LinkError::Malformed {
                netns_inode: dump.netns_inode,
                offset: at,
                what,
            },
        };
        dump.error.get_or_insert(error);
    }

    fn apply_stats(&mut self, dump: &mut Dump, m: &StatsMsg) {
        let Ok(i) = self
            .entries
            .binary_search_by_key(&m.ifindex, |e| e.link.ifindex)
        else {
            dump.unknown = true;
            return;
        };
        let e = &mut self.entries[i];
        e.seen = self.stamp;
        let l = &mut e.link;
        if m.stats.went_back_from(&l.stats) {
            l.instance = next_instance();
            self.generation += 1;
            dump.went_back = true;
        }
        l.stats = m.stats;
        l.detail = m.detail;
    }

    /// After a complete dump: drops every interface the dump did not report.
    fn remove_unseen(&mut self) {
        let before = self.entries.len();
        let stamp = self.stamp;
        self.entries.retain(|e| e.seen == stamp);
        if self.entries.len() != before {
            self.generation += 1;
        }
    }
}

/// The ifindex of an `ifinfomsg` or `if_stats_msg` (both keep it at byte 4) whose fixed
/// header is `header_len` bytes; it must be positive.
fn header_ifindex(payload: &[u8], header_len: usize) -> Result<u32, (Option<u32>, Malformed)> {
    if payload.len() < header_len {
        return Err((
            None,
            Malformed::ShortPayload {
                len: payload.len(),
                need: header_len,
            },
        ));
    }
    let raw_index = read_i32(payload, 4);
    match u32::try_from(raw_index) {
        Ok(i) if i > 0 => Ok(i),
        _ => Err((None, Malformed::Ifindex(raw_index))),
    }
}

/// Parses the payload of an `RTM_NEWLINK` message (`ifinfomsg` + attributes). On error,
/// returns the ifindex if the fixed header was readable.
fn parse_link(payload: &[u8]) -> Result<LinkMsg<'_>, (Option<u32>, Malformed)> {
    // struct ifinfomsg { u8 family; u8 pad; u16 type; i32 index; u32 flags; u32 change; }
    let ifindex = header_ifindex(payload, IFINFOMSG_LEN)?;
    let flags = read_u32(payload, 8);
    let fail = |what| (Some(ifindex), what);
    let mut name = None;
    let mut stats = None;
    let mut operstate = None;
    let mut mtu = None;
    let mut kind = None;
    let mut link_netnsid = None;
    for attr in Attrs::new(&payload[IFINFOMSG_LEN..], IFINFOMSG_LEN) {
        let (ty, data) = attr.map_err(fail)?;
        match ty {
            IFLA_IFNAME => {
                let n = nul_terminated(data);
                if n.is_empty() {
                    return Err(fail(Malformed::EmptyName));
                }
                name = Some(n);
            }
            IFLA_STATS64 => stats = Some(parse_stats64(data).map_err(fail)?),
            IFLA_OPERSTATE => match data {
                [v] => operstate = Some(*v),
                _ => {
                    return Err(fail(Malformed::AttributeSize {
                        attr: "IFLA_OPERSTATE",
                        len: data.len(),
                        want: 1,
                    }));
                }
            },
            IFLA_MTU => match data.len() {
                4 => mtu = Some(read_u32(data, 0)),
                len => {
                    return Err(fail(Malformed::AttributeSize {
                        attr: "IFLA_MTU",
                        len,
                        want: 4,
                    }));
                }
            },
            // Negative is NETNSA_NSID_NOT_ASSIGNED; another size only loses the peer's
            // workload, not the interface.
            IFLA_LINK_NETNSID if data.len() == 4 => {
                link_netnsid = Some(read_i32(data, 0)).filter(|id| *id >= 0);
            }
            IFLA_LINKINFO => {
                for nested in Attrs::new(data, 0) {
                    let (nty, ndata) = nested.map_err(fail)?;
                    if nty == IFLA_INFO_KIND {
                        let k = nul_terminated(ndata);
                        if !k.is_empty() {
                            kind = Some(k);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let name = name.ok_or(fail(Malformed::Missing("IFLA_IFNAME")))?;
    let (stats, detail) = stats.ok_or(fail(Malformed::Missing("IFLA_STATS64")))?;
    Ok(LinkMsg {
        ifindex,
        flags,
        name,
        stats,
        detail,
        operstate,
        mtu,
        kind,
        link_netnsid,
    })
}

/// Parses the payload of an `RTM_NEWSTATS` message (`if_stats_msg` + attributes) that
/// must carry `IFLA_STATS_LINK_64`. On error, returns the ifindex if the fixed header was
/// readable.
fn parse_stats_msg(payload: &[u8]) -> Result<StatsMsg, (Option<u32>, Malformed)> {
    // struct if_stats_msg { u8 family; u8 pad1; u16 pad2; u32 ifindex; u32 filter_mask; }
    let ifindex = header_ifindex(payload, IF_STATS_MSG_LEN)?;
    let fail = |what| (Some(ifindex), what);
    let mut stats = None;
    for attr in Attrs::new(&payload[IF_STATS_MSG_LEN..], IF_STATS_MSG_LEN) {
        let (ty, data) = attr.map_err(fail)?;
        if ty == IFLA_STATS_LINK_64 {
            stats = Some(parse_stats64(data).map_err(fail)?);
        }
    }
    let (stats, detail) = stats.ok_or(fail(Malformed::Missing("IFLA_STATS_LINK_64")))?;
    Ok(StatsMsg {
        ifindex,
        stats,
        detail,
    })
}

/// Parses `struct rtnl_link_stats64` (184 bytes on old kernels, up to 200 today; longer
/// future versions are accepted and their extra fields ignored).
fn parse_stats64(data: &[u8]) -> Result<(LinkStats, LinkStatsDetail), Malformed> {
    if data.len() < STATS64_MIN_LEN {
        return Err(Malformed::ShortStats(data.len()));
    }
    let f = |i: usize| read_u64(data, i * 8);
    let opt = |i: usize| (data.len() >= (i + 1) * 8).then(|| f(i));
    let stats = LinkStats {
        rx_packets: f(0),
        tx_packets: f(1),
        rx_bytes: f(2),
        tx_bytes: f(3),
        rx_errors: f(4),
        tx_errors: f(5),
        rx_dropped: f(6),
        tx_dropped: f(7),
    };
    let detail = LinkStatsDetail {
        multicast: f(8),
        collisions: f(9),
        rx_length_errors: f(10),
        rx_over_errors: f(11),
        rx_crc_errors: f(12),
        rx_frame_errors: f(13),
        rx_fifo_errors: f(14),
        rx_missed_errors: f(15),
        tx_aborted_errors: f(16),
        tx_carrier_errors: f(17),
        tx_fifo_errors: f(18),
        tx_heartbeat_errors: f(19),
        tx_window_errors: f(20),
        rx_compressed: f(21),
        tx_compressed: f(22),
        rx_nohandler: opt(23),
        rx_otherhost_dropped: opt(24),
    };
    Ok((stats, detail))
}

/// Iterates over netlink attributes (`struct rtattr`/`nlattr`), bounds-checked. `base` is
/// the offset of `buf` in its message payload, for error messages.
pub(crate) struct Attrs<'a> {
    buf: &'a [u8],
    off: usize,
    base: usize,
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Attrs<'a> {
        Attrs { buf, off: 0, base }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        let avail = self.buf.len().checked_sub(self.off).filter(|&a| a > 0)?;
        let len = if avail >= 4 {
            usize::from(read_u16(self.buf, self.off))
        } else {
            0
        };
        if len < 4 || len > avail {
            let offset = self.base + self.off;
            self.off = self.buf.len();
            return Some(Err(Malformed::AttributeLength { offset, len, avail }));
        }
        let ty = read_u16(self.buf, self.off + 2) & NLA_TYPE_MASK;
        let data = &self.buf[self.off + 4..self.off + len];
        self.off += align4(len);
        Some(Ok((ty, data)))
    }
}

pub(crate) fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// The bytes before the first NUL (all of them if there is none).
pub(crate) fn nul_terminated(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |i| &b[..i])
}

/// Whether `s` equals `String::from_utf8_lossy(raw)`, without allocating.
pub(crate) fn lossy_eq(raw: &[u8], s: &str) -> bool {
    let mut rest = s.as_bytes();
    for chunk in raw.utf8_chunks() {
        let Some(r) = rest.strip_prefix(chunk.valid().as_bytes()) else {
            return false;
        };
        rest = r;
        if !chunk.invalid().is_empty() {
            let Some(r) = rest.strip_prefix("\u{FFFD}".as_bytes()) else {
                return false;
            };
            rest = r;
        }
    }
    rest.is_empty()
}

/// The bytes of a name that is not UTF-8, kept next to its lossy text.
fn raw_name(raw: &[u8]) -> Option<Arc<[u8]>> {
    std::str::from_utf8(raw).is_err().then(|| Arc::from(raw))
}

/// Interface names are bytes; the rare non-UTF-8 one is stored lossily.
pub(crate) fn lossy_arc(raw: &[u8]) -> Arc<str> {
    Arc::from(String::from_utf8_lossy(raw))
}

// The callers have checked bounds; these only convert.
pub(crate) fn read_u16(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

pub(crate) fn read_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(crate) fn read_i32(b: &[u8], off: usize) -> i32 {
    read_u32(b, off) as i32
}

pub(crate) fn read_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

// ---- Socket ----

fn socket_err(op: &'static str) -> LinkError {
    LinkError::Socket {
        op,
        source: io::Error::last_os_error(),
    }
}

/// Creates, in the calling thread's namespace, the dump socket (returned with the port id
/// the kernel assigned) and the non-blocking socket subscribed to link notifications.
fn open_sockets() -> Result<(OwnedFd, u32, OwnedFd), LinkError> {
    let (sock, portid) = open_socket(0, 0)?;
    let (events, _) = open_socket(libc::SOCK_NONBLOCK, RTMGRP_LINK)?;
    Ok((sock, portid, events))
}

/// Creates and binds a `NETLINK_ROUTE` socket in the calling thread's namespace, member of
/// the multicast `groups`; returns it with the port id the kernel assigned.
pub(crate) fn open_socket(
    type_flags: libc::c_int,
    groups: u32,
) -> Result<(OwnedFd, u32), LinkError> {
    // SAFETY: plain syscalls on a descriptor we own; the structs are fully initialized.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | type_flags,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(socket_err("socket(AF_NETLINK)"));
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        ) != 0
        {
            return Err(socket_err("setsockopt(SO_RCVTIMEO)"));
        }
        let mut addr: libc::sockaddr_nl = mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        let addr_len = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        if libc::bind(fd, (&addr as *const libc::sockaddr_nl).cast(), addr_len) != 0 {
            return Err(socket_err("bind"));
        }
        let mut len = addr_len;
        if libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_nl).cast(), &mut len) != 0 {
            return Err(socket_err("getsockname"));
        }
        Ok((sock, addr.nl_pid))
    }
}

/// Sends a dump request (`NLM_F_DUMP`) of type `ty` whose fixed header is `body`:
/// `RTM_GETLINK` with a zeroed `ifinfomsg` (all interfaces, default attributes, which
/// include `IFLA_STATS64`), or `RTM_GETSTATS` with an `if_stats_msg` (no trailing padding,
/// which the kernel would try to parse as attributes).
pub(crate) fn send_dump_request(fd: RawFd, ty: u16, seq: u32, body: &[u8]) -> io::Result<()> {
    // Room for the largest fixed header sent: `struct tcmsg` (20 bytes, qdisc dumps).
    const MAX: usize = NLMSG_HDRLEN + 20;
    let len = NLMSG_HDRLEN + body.len();
    let mut buf = [0u8; MAX];
    let req = &mut buf[..len];
    req[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&ty.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0.
    req[NLMSG_HDRLEN..].copy_from_slice(body);
    // SAFETY: sockaddr_nl is plain data; zeroed then filled.
    let mut kernel: libc::sockaddr_nl = unsafe { mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    loop {
        // SAFETY: `req` and `kernel` outlive the call; lengths match.
        let n = unsafe {
            libc::sendto(
                fd,
                req.as_ptr().cast(),
                req.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `recv` with `MSG_TRUNC`: returns the datagram's real length, which exceeds
/// `buf.len()` when it was cut. Retries on `EINTR`.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags | libc::MSG_TRUNC,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn recv_error(netns_inode: u64, e: io::Error) -> LinkError {
    if e.kind() == io::ErrorKind::WouldBlock {
        LinkError::Timeout {
            netns_inode,
            timeout: RECV_TIMEOUT,
        }
    } else {
        LinkError::Io {
            netns_inode,
            op: "receiving the dump",
            source: e,
        }
    }
}

/// Discards queued datagrams without waiting: those of the dump with sequence number `seq`
/// up to its end, or everything if `seq` is `None`. The kernel queues the next part of a dump while the previous one
/// is received, so an empty queue means the dump is over.
pub(crate) fn drain(fd: RawFd, buf: &mut [u8], seq: Option<u32>) {
    for _ in 0..MAX_DRAIN {
        let Ok(n) = recv(fd, buf, libc::MSG_DONTWAIT) else {
            return;
        };
        let Some(dump_seq) = seq else { continue };
        let data = &buf[..n.min(buf.len())];
        let mut off = 0;
        while data.len() - off >= NLMSG_HDRLEN {
            let len = read_u32(data, off) as usize;
            let ty = read_u16(data, off + 4);
            let seq = read_u32(data, off + 8);
            if len < NLMSG_HDRLEN {
                break;
            }
            if seq == dump_seq && (ty == NLMSG_DONE || ty == NLMSG_ERROR) {
                return;
            }
            off = off.saturating_add(align4(len));
            if off > data.len() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQ: u32 = 7;
    const PID: u32 = 4242;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    fn stats64(vals: &[u64]) -> Vec<u8> {
        vals.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    /// 25 counters: field i holds base + i.
    fn stats_attr(base: u64) -> Vec<u8> {
        let vals: Vec<u64> = (0..25).map(|i| base + i).collect();
        attr(IFLA_STATS64, &stats64(&vals))
    }

    fn ifinfo(ifindex: i32, flags: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![0u8; IFINFOMSG_LEN];
        v[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        v[8..12].copy_from_slice(&flags.to_ne_bytes());
        for a in attrs {
            v.extend_from_slice(a);
        }
        v
    }

    fn link_payload(ifindex: i32, name: &str, stats_base: u64) -> Vec<u8> {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        ifinfo(
            ifindex,
            libc::IFF_UP as u32,
            &[
                attr(IFLA_IFNAME, &n),
                attr(IFLA_MTU, &1500u32.to_ne_bytes()),
                attr(IFLA_OPERSTATE, &[6]),
                stats_attr(stats_base),
            ],
        )
    }

    fn nlmsg_full(ty: u16, flags: u16, seq: u32, pid: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&pid.to_ne_bytes());
        v.extend_from_slice(payload);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    fn nlmsg(ty: u16, payload: &[u8]) -> Vec<u8> {
        nlmsg_full(ty, 2, SEQ, PID, payload)
    }

    fn done() -> Vec<u8> {
        nlmsg(NLMSG_DONE, &0i32.to_ne_bytes())
    }

    fn dump() -> Dump {
        Dump::new(DumpKind::Links, SEQ, PID, 99)
    }

    fn stats_dump() -> Dump {
        Dump::new(DumpKind::Stats, SEQ, PID, 99)
    }

    /// `if_stats_msg` + attributes.
    fn stats_msg(ifindex: i32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![0u8; IF_STATS_MSG_LEN];
        v[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        v[8..12].copy_from_slice(&IFLA_STATS_FILTER_LINK_64.to_ne_bytes());
        for a in attrs {
            v.extend_from_slice(a);
        }
        v
    }

    /// An `RTM_NEWSTATS` payload with 25 counters, field i holding base + i.
    fn stats_payload(ifindex: i32, base: u64) -> Vec<u8> {
        let vals: Vec<u64> = (0..25).map(|i| base + i).collect();
        stats_msg(ifindex, &[attr(IFLA_STATS_LINK_64, &stats64(&vals))])
    }

    /// Feeds datagrams as one stats dump, like `Links::stats_dump` does; whether the
    /// table is consistent with it.
    fn run_stats(t: &mut Table, datagrams: &[Vec<u8>]) -> (Dump, bool) {
        t.stamp += 1;
        let mut d = stats_dump();
        for dg in datagrams {
            if t.feed(&mut d, dg) != Step::More {
                break;
            }
        }
        let stamp = t.stamp;
        let ok = d.error.is_none()
            && !d.unknown
            && !d.went_back
            && !d.interrupted
            && t.entries.iter().all(|e| e.seen == stamp);
        (d, ok)
    }

    /// Feeds datagrams as one complete dump, like `refresh` does.
    fn run_dump(t: &mut Table, datagrams: &[Vec<u8>]) -> (Dump, Step) {
        t.stamp += 1;
        let mut d = dump();
        let mut step = Step::More;
        for dg in datagrams {
            step = t.feed(&mut d, dg);
            if step != Step::More {
                break;
            }
        }
        if step == Step::Done && d.error.is_none() && !d.interrupted {
            t.remove_unseen();
        }
        (d, step)
    }

    fn names(t: &Table) -> Vec<(u32, String)> {
        t.entries
            .iter()
            .map(|e| (e.link.ifindex, e.link.name.to_string()))
            .collect()
    }

    #[test]
    fn parses_a_full_message() {
        let mut kind = b"veth".to_vec();
        kind.push(0);
        let linkinfo = attr(IFLA_LINKINFO | 0x8000, &attr(IFLA_INFO_KIND, &kind));
        let payload = ifinfo(
            5,
            0x1003,
            &[
                attr(IFLA_IFNAME, b"veth0\0"),
                attr(IFLA_OPERSTATE, &[2]),
                attr(999, b"ignored attribute"),
                linkinfo,
                stats_attr(100),
            ],
        );
        let m = parse_link(&payload).unwrap();
        assert_eq!(m.ifindex, 5);
        assert_eq!(m.flags, 0x1003);
        assert_eq!(m.name, b"veth0");
        assert_eq!(m.kind, Some(&b"veth"[..]));
        assert_eq!(m.operstate, Some(2));
        assert_eq!(m.mtu, None);
        assert_eq!(
            m.stats,
            LinkStats {
                rx_packets: 100,
                tx_packets: 101,
                rx_bytes: 102,
                tx_bytes: 103,
                rx_errors: 104,
                tx_errors: 105,
                rx_dropped: 106,
                tx_dropped: 107,
            }
        );
        assert_eq!(m.detail.multicast, 108);
        assert_eq!(m.detail.rx_missed_errors, 115);
        assert_eq!(m.detail.tx_compressed, 122);
        assert_eq!(m.detail.rx_nohandler, Some(123));
        assert_eq!(m.detail.rx_otherhost_dropped, Some(124));
    }

    #[test]
    fn old_kernel_stats_have_no_optional_fields() {
        let vals: Vec<u64> = (0..23).collect();
        let payload = ifinfo(
            2,
            0,
            &[
                attr(IFLA_IFNAME, b"eth0\0"),
                attr(IFLA_STATS64, &stats64(&vals)),
            ],
        );
        let m = parse_link(&payload).unwrap();
        assert_eq!(m.stats.tx_dropped, 7);
        assert_eq!(m.detail.rx_nohandler, None);
        assert_eq!(m.detail.rx_otherhost_dropped, None);
    }

    #[test]
    fn malformed_messages_are_errors() {
        // Payload shorter than ifinfomsg.
        assert_eq!(
            parse_link(&[0; 10]).unwrap_err(),
            (None, Malformed::ShortPayload { len: 10, need: 16 })
        );
        // Non-positive ifindex.
        assert_eq!(
            parse_link(&ifinfo(-3, 0, &[])).unwrap_err(),
            (None, Malformed::Ifindex(-3))
        );
        // Missing attributes.
        assert_eq!(
            parse_link(&ifinfo(3, 0, &[stats_attr(0)])).unwrap_err(),
            (Some(3), Malformed::Missing("IFLA_IFNAME"))
        );
        assert_eq!(
            parse_link(&ifinfo(3, 0, &[attr(IFLA_IFNAME, b"x\0")])).unwrap_err(),
            (Some(3), Malformed::Missing("IFLA_STATS64"))
        );
        // Short stats.
        let short = attr(IFLA_STATS64, &stats64(&[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(
            parse_link(&ifinfo(3, 0, &[attr(IFLA_IFNAME, b"x\0"), short])).unwrap_err(),
            (Some(3), Malformed::ShortStats(64))
        );
        // Empty name.
        assert_eq!(
            parse_link(&ifinfo(3, 0, &[attr(IFLA_IFNAME, b"\0"), stats_attr(0)])).unwrap_err(),
            (Some(3), Malformed::EmptyName)
        );
        // Wrong-size fixed attributes.
        assert!(matches!(
            parse_link(&ifinfo(3, 0, &[attr(IFLA_MTU, &[1, 2])])).unwrap_err(),
            (
                Some(3),
                Malformed::AttributeSize {
                    attr: "IFLA_MTU",
                    ..
                }
            )
        ));
        assert!(matches!(
            parse_link(&ifinfo(3, 0, &[attr(IFLA_OPERSTATE, &[1, 2])])).unwrap_err(),
            (Some(3), Malformed::AttributeSize { .. })
        ));
        // An attribute whose rta_len runs past the message.
        let mut p = ifinfo(3, 0, &[attr(IFLA_IFNAME, b"x\0")]);
        p.extend_from_slice(&200u16.to_ne_bytes());
        p.extend_from_slice(&IFLA_STATS64.to_ne_bytes());
        p.extend_from_slice(&[0; 8]);
        assert!(matches!(
            parse_link(&p).unwrap_err(),
            (
                Some(3),
                Malformed::AttributeLength {
                    offset: 24,
                    len: 200,
                    avail: 12
                }
            )
        ));
        // rta_len below the attribute header size (would loop forever if accepted).
        let mut p = ifinfo(3, 0, &[]);
        p.extend_from_slice(&[2, 0, 3, 0]);
        assert!(matches!(
            parse_link(&p).unwrap_err(),
            (Some(3), Malformed::AttributeLength { len: 2, .. })
        ));
        // Two stray bytes after the last attribute.
        let mut p = link_payload(3, "x", 0);
        p.extend_from_slice(&[1, 2]);
        assert!(matches!(
            parse_link(&p).unwrap_err(),
            (Some(3), Malformed::AttributeLength { avail: 2, .. })
        ));
        // Broken nested attribute inside IFLA_LINKINFO.
        let p = ifinfo(3, 0, &[attr(IFLA_LINKINFO, &[9, 0, 1, 0])]);
        assert!(matches!(
            parse_link(&p).unwrap_err(),
            (Some(3), Malformed::AttributeLength { len: 9, .. })
        ));
    }

    #[test]
    fn every_truncation_of_a_message_is_an_error_not_a_panic() {
        let full = nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 10));
        for cut in 0..full.len() {
            let mut t = Table::default();
            let mut d = dump();
            let step = t.feed(&mut d, &full[..cut]);
            if cut == 0 {
                assert_eq!(step, Step::More);
                continue;
            }
            assert_eq!(step, Step::Abort, "cut at {cut}");
            assert!(d.error.is_some(), "cut at {cut}");
            assert!(t.entries.is_empty(), "cut at {cut}");
        }
        // The same message with nlmsg_len shrunk to each length: the framing is intact, the
        // payload is cut.
        for len in NLMSG_HDRLEN..full.len() {
            let mut m = full[..len].to_vec();
            m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
            let mut t = Table::default();
            let mut d = dump();
            t.feed(&mut d, &m);
            assert!(d.error.is_some(), "len {len}");
            assert!(t.entries.is_empty(), "len {len}");
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        // A small xorshift generator: deterministic, no dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let good = nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 10));
        for _ in 0..20_000 {
            let mut m = good.clone();
            for _ in 0..(rnd() % 4 + 1) {
                let i = (rnd() as usize) % m.len();
                m[i] = rnd() as u8;
            }
            let mut t = Table::default();
            let mut d = dump();
            let _ = t.feed(&mut d, &m);
        }
    }

    #[test]
    fn dump_builds_updates_and_prunes_the_table() {
        let mut t = Table::default();
        // Two datagrams, the second ending with DONE.
        let dg1 = [
            nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 0)),
            nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 1000)),
        ]
        .concat();
        let dg2 = [nlmsg(RTM_NEWLINK, &link_payload(2, "eth1", 500)), done()].concat();
        let (d, step) = run_dump(&mut t, &[dg1.clone(), dg2.clone()]);
        assert_eq!(step, Step::Done);
        assert!(d.error.is_none());
        assert_eq!(
            names(&t),
            [(1, "lo".into()), (2, "eth1".into()), (3, "eth0".into())]
        );
        let eth0 = &t.get(3).unwrap();
        assert_eq!(eth0.stats.rx_packets, 1000);
        assert_eq!(eth0.operstate, OperState::Up);
        assert_eq!(eth0.mtu, Some(1500));
        let (inst_lo, inst_eth0) = (t.get(1).unwrap().instance, eth0.instance);
        let name_ptr = Arc::as_ptr(&eth0.name);
        let gen1 = t.generation;

        // Same interfaces, counters up: updated in place, same names, same instances.
        let dg = [
            nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 5)),
            nlmsg(RTM_NEWLINK, &link_payload(2, "eth1", 600)),
            nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 2000)),
            done(),
        ]
        .concat();
        run_dump(&mut t, &[dg]);
        let eth0 = t.get(3).unwrap();
        assert_eq!(eth0.stats.rx_packets, 2000);
        assert_eq!(eth0.instance, inst_eth0);
        assert_eq!(Arc::as_ptr(&eth0.name), name_ptr);
        assert_eq!(t.get(1).unwrap().instance, inst_lo);
        assert_eq!(t.generation, gen1);

        // eth1 vanished, eth0 renamed, ifindex 4 appeared.
        let dg = [
            nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 6)),
            nlmsg(RTM_NEWLINK, &link_payload(3, "wan0", 2001)),
            nlmsg(RTM_NEWLINK, &link_payload(4, "eth2", 0)),
            done(),
        ]
        .concat();
        run_dump(&mut t, &[dg]);
        assert_eq!(
            names(&t),
            [(1, "lo".into()), (3, "wan0".into()), (4, "eth2".into())]
        );
        assert_ne!(t.get(3).unwrap().instance, inst_eth0);
        assert_eq!(t.get(1).unwrap().instance, inst_lo);
        assert!(t.generation > gen1);

        // Counters going back mean a new device behind the same index and name.
        let inst = t.get(4).unwrap().instance;
        let generation = t.generation;
        let dg = [
            nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 6)),
            nlmsg(RTM_NEWLINK, &link_payload(3, "wan0", 2001)),
            nlmsg(RTM_NEWLINK, &link_payload(4, "eth2", 0)),
            done(),
        ]
        .concat();
        run_dump(&mut t, &[dg]);
        assert_eq!(t.get(4).unwrap().instance, inst);
        assert_eq!(t.generation, generation);
        let dg = [
            nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 0)),
            nlmsg(RTM_NEWLINK, &link_payload(3, "wan0", 2001)),
            nlmsg(RTM_NEWLINK, &link_payload(4, "eth2", 0)),
            done(),
        ]
        .concat();
        run_dump(&mut t, &[dg]);
        assert_ne!(t.get(1).unwrap().instance, inst_lo);

        // Everything gone.
        run_dump(&mut t, &[done()]);
        assert!(t.entries.is_empty());
    }

    #[test]
    fn failed_dump_removes_nothing_and_keeps_bad_links_old_values() {
        let mut t = Table::default();
        let dg = [
            nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 0)),
            nlmsg(RTM_NEWLINK, &link_payload(2, "eth0", 10)),
            done(),
        ]
        .concat();
        run_dump(&mut t, &[dg]);
        // eth0's message lacks its stats, and lo is missing from this dump.
        let dg = [
            nlmsg(RTM_NEWLINK, &ifinfo(2, 0, &[attr(IFLA_IFNAME, b"eth0\0")])),
            done(),
        ]
        .concat();
        let (d, step) = run_dump(&mut t, &[dg]);
        assert_eq!(step, Step::Done);
        let err = d.error.unwrap();
        assert!(matches!(
            err,
            LinkError::MalformedLink {
                ifindex: 2,
                what: Malformed::Missing("IFLA_STATS64"),
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("interface 2 (eth0)"), "{msg}");
        assert_eq!(names(&t), [(1, "lo".into()), (2, "eth0".into())]);
        assert_eq!(t.get(2).unwrap().stats.rx_packets, 10);
    }

    #[test]
    fn control_messages() {
        // Kernel error for our request.
        let mut t = Table::default();
        let mut d = dump();
        let err = nlmsg(
            NLMSG_ERROR,
            &[(-libc::EBUSY).to_ne_bytes(), [0; 4]].concat(),
        );
        assert_eq!(t.feed(&mut d, &err), Step::Done);
        match d.error {
            Some(LinkError::Kernel { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EBUSY))
            }
            other => panic!("{other:?}"),
        }
        // DONE carrying an error.
        let mut d = dump();
        let m = nlmsg(NLMSG_DONE, &(-libc::EMSGSIZE).to_ne_bytes());
        assert_eq!(t.feed(&mut d, &m), Step::Done);
        assert!(matches!(d.error, Some(LinkError::Kernel { .. })));
        // DONE and ERROR carrying i32::MIN, which has no positive errno (found by fuzzing).
        for ty in [NLMSG_DONE, NLMSG_ERROR] {
            let mut d = dump();
            let m = nlmsg(ty, &[i32::MIN.to_ne_bytes(), [0; 4]].concat());
            assert_eq!(t.feed(&mut d, &m), Step::Done);
            match d.error {
                Some(LinkError::Kernel { source, .. }) => {
                    assert_eq!(source.raw_os_error(), Some(i32::MAX))
                }
                other => panic!("{other:?}"),
            }
        }
        // Truncated NLMSG_ERROR.
        let mut d = dump();
        assert_eq!(t.feed(&mut d, &nlmsg(NLMSG_ERROR, &[1, 2])), Step::Done);
        assert!(matches!(d.error, Some(LinkError::Malformed { .. })));
        // Overrun.
        let mut d = dump();
        assert_eq!(t.feed(&mut d, &nlmsg(NLMSG_OVERRUN, &[])), Step::Abort);
        // Replies to other requests (stale sequence, other port) are skipped, even DONE.
        let mut d = dump();
        let dg = [
            nlmsg_full(RTM_NEWLINK, 2, SEQ - 1, PID, &link_payload(9, "old", 0)),
            nlmsg_full(NLMSG_DONE, 2, SEQ - 1, PID, &[0; 4]),
            nlmsg_full(NLMSG_DONE, 2, SEQ, PID + 1, &[0; 4]),
            nlmsg(NLMSG_NOOP, &[]),
            nlmsg(77, b"unknown type"),
        ]
        .concat();
        assert_eq!(t.feed(&mut d, &dg), Step::More);
        assert!(d.error.is_none());
        assert!(t.entries.is_empty());
        // NLM_F_DUMP_INTR marks the dump inconsistent.
        let mut d = dump();
        let m = nlmsg_full(
            RTM_NEWLINK,
            2 | NLM_F_DUMP_INTR,
            SEQ,
            PID,
            &link_payload(1, "lo", 0),
        );
        t.feed(&mut d, &m);
        assert!(d.interrupted);
    }

    #[test]
    fn non_utf8_names_are_stored_lossily_and_compared_without_churn() {
        let raw = b"et\xffh0";
        assert!(lossy_eq(raw, "et\u{FFFD}h0"));
        assert!(!lossy_eq(raw, "et\u{FFFD}h"));
        assert!(!lossy_eq(raw, "eth0"));
        assert!(lossy_eq(b"", ""));
        assert!(!lossy_eq(b"a", ""));
        let mut t = Table::default();
        let mut payload = link_payload(2, "xxxxx", 0);
        // Overwrite the name bytes in place ("xxxxx" -> "et\xffh0").
        let pos = payload.windows(5).position(|w| w == b"xxxxx").unwrap();
        payload[pos..pos + 5].copy_from_slice(raw);
        let dg = [nlmsg(RTM_NEWLINK, &payload), done()].concat();
        run_dump(&mut t, std::slice::from_ref(&dg));
        let inst = t.get(2).unwrap().instance;
        assert_eq!(&*t.get(2).unwrap().name, "et\u{FFFD}h0");
        run_dump(&mut t, &[dg]);
        assert_eq!(t.get(2).unwrap().instance, inst);
    }

    #[test]
    fn parses_a_stats_message() {
        let m = parse_stats_msg(&stats_payload(7, 100)).unwrap();
        assert_eq!(m.ifindex, 7);
        assert_eq!(m.stats.rx_packets, 100);
        assert_eq!(m.stats.tx_dropped, 107);
        assert_eq!(m.detail.multicast, 108);
        assert_eq!(m.detail.tx_compressed, 122);
        assert_eq!(m.detail.rx_nohandler, Some(123));
        assert_eq!(m.detail.rx_otherhost_dropped, Some(124));
        // The same counters as the IFLA_STATS64 of a link message.
        let payload = link_payload(7, "x", 100);
        let l = parse_link(&payload).unwrap();
        assert_eq!((m.stats, m.detail), (l.stats, l.detail));
        // A pad attribute before (as on architectures aligning 64-bit attributes) and an
        // unknown one after are skipped; an old kernel's 23 counters are enough.
        let vals: Vec<u64> = (0..23).collect();
        let p = stats_msg(
            3,
            &[
                attr(0, &[]),
                attr(IFLA_STATS_LINK_64, &stats64(&vals)),
                attr(5 | 0x8000, &[1, 2, 3, 4]),
            ],
        );
        let m = parse_stats_msg(&p).unwrap();
        assert_eq!(m.stats.tx_dropped, 7);
        assert_eq!(m.detail.rx_nohandler, None);
    }

    #[test]
    fn malformed_stats_messages_are_errors() {
        assert_eq!(
            parse_stats_msg(&[0; 11]).unwrap_err(),
            (None, Malformed::ShortPayload { len: 11, need: 12 })
        );
        assert_eq!(
            parse_stats_msg(&stats_msg(0, &[])).unwrap_err(),
            (None, Malformed::Ifindex(0))
        );
        assert_eq!(
            parse_stats_msg(&stats_msg(-5, &[])).unwrap_err(),
            (None, Malformed::Ifindex(-5))
        );
        assert_eq!(
            parse_stats_msg(&stats_msg(4, &[])).unwrap_err(),
            (Some(4), Malformed::Missing("IFLA_STATS_LINK_64"))
        );
        // Other statistics only (IFLA_STATS_LINK_XSTATS = 2).
        assert_eq!(
            parse_stats_msg(&stats_msg(4, &[attr(2, &[0; 8])])).unwrap_err(),
            (Some(4), Malformed::Missing("IFLA_STATS_LINK_64"))
        );
        let short = attr(IFLA_STATS_LINK_64, &stats64(&[1; 22]));
        assert_eq!(
            parse_stats_msg(&stats_msg(4, &[short])).unwrap_err(),
            (Some(4), Malformed::ShortStats(176))
        );
        // rta_len past the end, below the header size, stray bytes.
        let mut p = stats_msg(4, &[]);
        p.extend_from_slice(&200u16.to_ne_bytes());
        p.extend_from_slice(&IFLA_STATS_LINK_64.to_ne_bytes());
        p.extend_from_slice(&[0; 8]);
        assert_eq!(
            parse_stats_msg(&p).unwrap_err(),
            (
                Some(4),
                Malformed::AttributeLength {
                    offset: 12,
                    len: 200,
                    avail: 12
                }
            )
        );
        let mut p = stats_msg(4, &[]);
        p.extend_from_slice(&[3, 0, 1, 0]);
        assert!(matches!(
            parse_stats_msg(&p).unwrap_err(),
            (Some(4), Malformed::AttributeLength { len: 3, .. })
        ));
        let mut p = stats_payload(4, 0);
        p.push(9);
        assert!(matches!(
            parse_stats_msg(&p).unwrap_err(),
            (Some(4), Malformed::AttributeLength { avail: 1, .. })
        ));
        // Every truncation of a valid payload is an error, never a panic.
        let full = stats_payload(4, 0);
        for cut in 0..full.len() {
            assert!(parse_stats_msg(&full[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn truncated_or_garbled_stats_datagrams_never_panic_or_apply() {
        let mut base = Table::default();
        run_dump(
            &mut base,
            &[[nlmsg(RTM_NEWLINK, &link_payload(4, "eth0", 10)), done()].concat()],
        );
        let full = nlmsg(RTM_NEWSTATS, &stats_payload(4, 50));
        for cut in 1..full.len() {
            let mut t = Table::default();
            run_dump(
                &mut t,
                &[[nlmsg(RTM_NEWLINK, &link_payload(4, "eth0", 10)), done()].concat()],
            );
            let mut d = stats_dump();
            assert_eq!(t.feed(&mut d, &full[..cut]), Step::Abort, "cut at {cut}");
            assert!(d.error.is_some(), "cut at {cut}");
            assert_eq!(t.get(4).unwrap().stats.rx_packets, 10, "cut at {cut}");
        }
        // nlmsg_len shrunk: framing intact, payload cut.
        for len in NLMSG_HDRLEN..full.len() {
            let mut m = full[..len].to_vec();
            m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
            let mut t = Table::default();
            run_dump(
                &mut t,
                &[[nlmsg(RTM_NEWLINK, &link_payload(4, "eth0", 10)), done()].concat()],
            );
            let mut d = stats_dump();
            t.feed(&mut d, &m);
            assert!(d.error.is_some(), "len {len}");
            assert_eq!(t.get(4).unwrap().stats.rx_packets, 10, "len {len}");
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut m = full.clone();
            for _ in 0..(rnd() % 4 + 1) {
                let i = (rnd() as usize) % m.len();
                m[i] = rnd() as u8;
            }
            let mut d = stats_dump();
            let _ = base.feed(&mut d, &m);
        }
    }

    #[test]
    fn stats_dump_updates_counters_and_detects_disagreement() {
        let mut t = Table::default();
        run_dump(
            &mut t,
            &[[
                nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 0)),
                nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 1000)),
                done(),
            ]
            .concat()],
        );
        let (inst_lo, inst_eth0) = (t.get(1).unwrap().instance, t.get(3).unwrap().instance);
        let name_ptr = Arc::as_ptr(&t.get(3).unwrap().name);
        let generation = t.generation;

        // Counters up, in two datagrams: updated in place, nothing else touched.
        let (d, ok) = run_stats(
            &mut t,
            &[
                nlmsg(RTM_NEWSTATS, &stats_payload(1, 5)),
                [nlmsg(RTM_NEWSTATS, &stats_payload(3, 2000)), done()].concat(),
            ],
        );
        assert!(ok, "{d:?}");
        let eth0 = t.get(3).unwrap();
        assert_eq!(eth0.stats.rx_packets, 2000);
        assert_eq!(eth0.detail.multicast, 2008);
        assert_eq!(eth0.detail.rx_otherhost_dropped, Some(2024));
        assert_eq!((eth0.instance, &*eth0.name), (inst_eth0, "eth0"));
        assert_eq!(Arc::as_ptr(&eth0.name), name_ptr);
        assert_eq!(eth0.mtu, Some(1500));
        assert_eq!(eth0.operstate, OperState::Up);
        assert_eq!(t.get(1).unwrap().instance, inst_lo);
        assert_eq!(t.generation, generation);

        // RTM_NEWLINK messages in a stats dump (and vice versa) are ignored.
        let (_, ok) = run_stats(
            &mut t,
            &[[
                nlmsg(RTM_NEWSTATS, &stats_payload(1, 5)),
                nlmsg(RTM_NEWLINK, &link_payload(3, "evil", 1)),
                nlmsg(RTM_NEWSTATS, &stats_payload(3, 2000)),
                done(),
            ]
            .concat()],
        );
        assert!(ok);
        assert_eq!(&*t.get(3).unwrap().name, "eth0");
        assert_eq!(t.get(3).unwrap().stats.rx_packets, 2000);

        // A known interface missing: not consistent, nothing removed.
        let (_, ok) = run_stats(
            &mut t,
            &[[nlmsg(RTM_NEWSTATS, &stats_payload(1, 6)), done()].concat()],
        );
        assert!(!ok);
        assert_eq!(t.entries.len(), 2);

        // An unknown interface: not consistent, not inserted.
        let (d, ok) = run_stats(
            &mut t,
            &[[
                nlmsg(RTM_NEWSTATS, &stats_payload(1, 6)),
                nlmsg(RTM_NEWSTATS, &stats_payload(3, 2001)),
                nlmsg(RTM_NEWSTATS, &stats_payload(9, 0)),
                done(),
            ]
            .concat()],
        );
        assert!(!ok && d.unknown);
        assert!(t.get(9).is_none());
        assert_eq!(t.get(3).unwrap().stats.rx_packets, 2001);

        // Counters going backwards: new instance, new generation, and a full dump asked.
        let (d, ok) = run_stats(
            &mut t,
            &[[
                nlmsg(RTM_NEWSTATS, &stats_payload(1, 6)),
                nlmsg(RTM_NEWSTATS, &stats_payload(3, 0)),
                done(),
            ]
            .concat()],
        );
        assert!(!ok && d.went_back);
        assert_ne!(t.get(3).unwrap().instance, inst_eth0);
        assert_eq!(t.get(1).unwrap().instance, inst_lo);
        assert!(t.generation > generation);

        // Interrupted dump.
        let (d, ok) = run_stats(
            &mut t,
            &[[
                nlmsg_full(
                    RTM_NEWSTATS,
                    2 | NLM_F_DUMP_INTR,
                    SEQ,
                    PID,
                    &stats_payload(1, 6),
                ),
                nlmsg(RTM_NEWSTATS, &stats_payload(3, 0)),
                done(),
            ]
            .concat()],
        );
        assert!(!ok && d.interrupted);

        // A malformed message: a typed error naming the interface; the others applied.
        let (d, ok) = run_stats(
            &mut t,
            &[[
                nlmsg(RTM_NEWSTATS, &stats_msg(3, &[])),
                nlmsg(RTM_NEWSTATS, &stats_payload(1, 7)),
                done(),
            ]
            .concat()],
        );
        assert!(!ok);
        let err = d.error.unwrap();
        assert!(matches!(
            err,
            LinkError::MalformedLink {
                ifindex: 3,
                what: Malformed::Missing("IFLA_STATS_LINK_64"),
                ..
            }
        ));
        assert!(err.to_string().contains("interface 3 (eth0)"), "{err}");
        assert_eq!(t.get(1).unwrap().stats.rx_packets, 7);
        assert_eq!(t.get(3).unwrap().stats.rx_packets, 0);

        // The kernel refusing the request.
        let mut d = stats_dump();
        let m = nlmsg(
            NLMSG_ERROR,
            &[(-libc::EOPNOTSUPP).to_ne_bytes(), [0; 4]].concat(),
        );
        assert_eq!(t.feed(&mut d, &m), Step::Done);
        assert!(matches!(d.error, Some(LinkError::Kernel { .. })));
    }

    #[test]
    fn link_events_are_recognised() {
        let newlink = nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 0));
        let dellink = nlmsg(RTM_DELLINK, &link_payload(3, "eth0", 0));
        assert!(is_link_event(&newlink));
        assert!(is_link_event(&dellink));
        assert!(is_link_event(&[nlmsg(NLMSG_NOOP, &[]), dellink].concat()));
        assert!(!is_link_event(&[]));
        assert!(!is_link_event(&nlmsg(NLMSG_NOOP, &[])));
        assert!(!is_link_event(&nlmsg(RTM_NEWSTATS, &stats_payload(3, 0))));
        // Broken framing: assume a change.
        assert!(is_link_event(&newlink[..10]));
        assert!(is_link_event(&newlink[..newlink.len() - 4]));
        assert!(is_link_event(&[0; 16]));
    }

    /// Against the real kernel (unprivileged): the first refresh is a full dump, the
    /// safety net forces another within `FULL_DUMP_EVERY` refreshes. Link changes between
    /// refreshes are covered by the privileged tests (tests/tests/netdev.rs).
    #[test]
    fn host_refreshes_are_counters_only_until_the_safety_net() {
        let mut links = Links::new().unwrap();
        links.refresh().unwrap();
        assert_eq!(links.full_dumps(), 1);
        let lo = links.get(1).unwrap().instance;
        let mut full = links.full_dumps();
        for _ in 0..FULL_DUMP_EVERY + 1 {
            links.refresh().unwrap();
        }
        // Other tests may create interfaces meanwhile (each notification means a full
        // dump), so only a lower bound: the safety net ran at least once.
        assert!(
            links.full_dumps() > full,
            "no full dump in {FULL_DUMP_EVERY} refreshes"
        );
        assert_eq!(links.get(1).unwrap().instance, lo);
        full = links.full_dumps();
        links.refresh().unwrap();
        assert!(links.full_dumps() <= full + 1);
        assert_eq!(&*links.get(1).unwrap().name, "lo");
    }

    #[test]
    fn detached_table() {
        let mut l = Links::from_links([Link::new(3, "b"), Link::new(1, "a")]);
        assert_eq!(l.iter().map(|l| l.ifindex).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(l.get_by_name("b").unwrap().ifindex, 3);
        assert!(matches!(l.refresh(), Err(LinkError::Detached)));
        l.remove(1);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn host_dump_finds_lo() {
        let mut links = Links::new().unwrap();
        assert!(links.is_empty());
        links.refresh().unwrap();
        let lo = links.get(1).expect("ifindex 1");
        assert_eq!(&*lo.name, "lo");
        assert!(lo.is_loopback());
        assert_eq!(lo.mtu, Some(65536));
        let instance = lo.instance;
        let own_ns = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(links.netns_inode(), own_ns);
        // A second refresh keeps the identity.
        links.refresh().unwrap();
        assert_eq!(links.get(1).unwrap().instance, instance);
        // Every interface sysfs knows about is there with the same index.
        for entry in std::fs::read_dir("/sys/class/net").unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let Ok(idx) = std::fs::read_to_string(entry.path().join("ifindex")) else {
                continue; // vanished meanwhile (other tests create interfaces)
            };
            let idx: u32 = idx.trim().parse().unwrap();
            if let Some(l) = links.get(idx) {
                assert_eq!(&*l.name, name);
            }
        }
    }

    /// Every `rtnl_link_stats64` field lands in the right place: each value lies between
    /// two sysfs reads of the same counter taken around the dump.
    #[test]
    fn stats_match_sysfs() {
        fn fields(l: &Link) -> Vec<(&'static str, u64)> {
            let (s, d) = (&l.stats, &l.detail);
            let mut v = vec![
                ("rx_packets", s.rx_packets),
                ("tx_packets", s.tx_packets),
                ("rx_bytes", s.rx_bytes),
                ("tx_bytes", s.tx_bytes),
                ("rx_errors", s.rx_errors),
                ("tx_errors", s.tx_errors),
                ("rx_dropped", s.rx_dropped),
                ("tx_dropped", s.tx_dropped),
                ("multicast", d.multicast),
                ("collisions", d.collisions),
                ("rx_length_errors", d.rx_length_errors),
                ("rx_over_errors", d.rx_over_errors),
                ("rx_crc_errors", d.rx_crc_errors),
                ("rx_frame_errors", d.rx_frame_errors),
                ("rx_fifo_errors", d.rx_fifo_errors),
                ("rx_missed_errors", d.rx_missed_errors),
                ("tx_aborted_errors", d.tx_aborted_errors),
                ("tx_carrier_errors", d.tx_carrier_errors),
                ("tx_fifo_errors", d.tx_fifo_errors),
                ("tx_heartbeat_errors", d.tx_heartbeat_errors),
                ("tx_window_errors", d.tx_window_errors),
                ("rx_compressed", d.rx_compressed),
                ("tx_compressed", d.tx_compressed),
            ];
            v.extend(d.rx_nohandler.map(|x| ("rx_nohandler", x)));
            v
        }
        let sysfs = |name: &str, field: &str| -> u64 {
            std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/{field}"))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let mut links = Links::new().unwrap();
        links.refresh().unwrap();
        let names: Vec<String> = links
            .iter()
            .filter(|l| &*l.name == "lo" || &*l.name == "eth0")
            .map(|l| l.name.to_string())
            .collect();
        assert!(names.iter().any(|n| n == "lo"));
        for name in names {
            let before: Vec<u64> = fields(links.get_by_name(&name).unwrap())
                .iter()
                .map(|(f, _)| sysfs(&name, f))
                .collect();
            links.refresh().unwrap();
            let now = fields(links.get_by_name(&name).unwrap());
            for ((field, v), b) in now.iter().zip(before) {
                let after = sysfs(&name, field);
                assert!(
                    b <= *v && *v <= after,
                    "{name} {field}: {b} <= {v} <= {after}"
                );
            }
        }
    }

    #[test]
    fn tiny_buffer_grows_after_truncation() {
        let mut links = Links::new().unwrap();
        links.buf = vec![0; 64];
        links.refresh().unwrap();
        assert!(links.buf.len() > 64);
        assert_eq!(&*links.get(1).unwrap().name, "lo");
        // A further refresh needs no growth.
        let len = links.buf.len();
        links.refresh().unwrap();
        assert_eq!(links.buf.len(), len);
    }

    #[test]
    fn opens_in_own_netns_by_path() {
        let links = Links::open_in_netns(Path::new("/proc/self/ns/net"));
        let mut links = links.unwrap();
        links.refresh().unwrap();
        assert_eq!(&*links.get(1).unwrap().name, "lo");
        let err = Links::open_in_netns(Path::new("/nonexistent/ns")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
        // A file that is not a network namespace.
        let err = Links::open_in_netns(Path::new("/proc/self/ns/uts")).unwrap_err();
        assert!(matches!(err, LinkError::EnterNetns { .. }), "{err}");
    }

    #[test]
    fn the_peer_namespace_id_of_a_veth() {
        let msg = |nsid: &[u8]| {
            ifinfo(
                7,
                0,
                &[
                    attr(IFLA_IFNAME, b"veth7\0"),
                    stats_attr(1),
                    attr(IFLA_LINK_NETNSID, nsid),
                ],
            )
        };
        assert_eq!(
            parse_link(&msg(&3i32.to_ne_bytes())).unwrap().link_netnsid,
            Some(3)
        );
        // NETNSA_NSID_NOT_ASSIGNED, and an attribute of the wrong size: no peer namespace,
        // the interface itself still parses.
        assert_eq!(
            parse_link(&msg(&(-1i32).to_ne_bytes()))
                .unwrap()
                .link_netnsid,
            None
        );
        assert_eq!(parse_link(&msg(&[1, 2])).unwrap().link_netnsid, None);
        // The peer moving to another namespace makes it another interface for collectors.
        let mut t = Table::default();
        run_dump(&mut t, &[nlmsg(RTM_NEWLINK, &msg(&3i32.to_ne_bytes()))]);
        let (instance, generation) = (t.entries[0].link.instance, t.generation);
        run_dump(&mut t, &[nlmsg(RTM_NEWLINK, &msg(&3i32.to_ne_bytes()))]);
        assert_eq!(t.entries[0].link.instance, instance);
        run_dump(&mut t, &[nlmsg(RTM_NEWLINK, &msg(&4i32.to_ne_bytes()))]);
        assert_eq!(t.entries[0].link.link_netnsid, Some(4));
        assert_ne!(t.entries[0].link.instance, instance);
        assert!(t.generation > generation);
    }

    #[test]
    fn setting_a_workload_makes_a_new_instance() {
        let mut l = Links::from_links([Link::new(4, "veth4")]);
        let w = Arc::new(crate::workload::Workload {
            pod_uid: Some(Arc::from("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")),
            ..Default::default()
        });
        let (i0, g0) = (l.get(4).unwrap().instance, l.generation());
        assert!(l.set_workload(4, Some(w.clone())));
        assert_ne!(l.get(4).unwrap().instance, i0);
        assert!(l.generation() > g0);
        let (i1, g1) = (l.get(4).unwrap().instance, l.generation());
        // The same workload again (another Arc): nothing changes.
        assert!(!l.set_workload(4, Some(Arc::new((*w).clone()))));
        assert_eq!((l.get(4).unwrap().instance, l.generation()), (i1, g1));
        assert!(l.set_workload(4, None));
        assert!(!l.set_workload(99, None));
    }
}
