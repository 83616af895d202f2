//! The interface table proper: [`Link`]s sorted by ifindex, updated in place from validated
//! messages, with the identity ([`Link::instance`]) and generation bookkeeping collectors
//! rely on.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::{
    parse::{LinkMsg, StatsMsg},
    uapi::{LinkStats, LinkStatsDetail, OperState},
};
use crate::model::Workload;

/// Source of [`Link::instance`] ids, unique in the process.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

fn next_instance() -> u64 {
    NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
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
    pub(crate) raw_name: Option<Arc<[u8]>>,
    /// `IFF_*` flags from `ifinfomsg`.
    pub(crate) flags: u32,
    pub stats: LinkStats,
    /// Identity of the device behind this ifindex, unique in the process. It changes when
    /// the ifindex (re)appears, when the interface is renamed or its kind changes, when
    /// its counters go backwards (device recreated with the same index and name, or
    /// counters reset), when its peer moves to another namespace, and when its workload
    /// changes. A collector keeping per-interface state keyed by ifindex must reset that
    /// state (cumulative sums, cached names) when this changes.
    pub instance: u64,
    /// Detailed counters from the rest of `rtnl_link_stats64`.
    pub(crate) detail: LinkStatsDetail,
    pub(crate) operstate: OperState,
    /// `IFLA_MTU`, if the kernel reported it.
    pub mtu: Option<u32>,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, ...); `None` for devices without one (physical
    /// NICs, `lo`).
    pub kind: Option<Arc<str>>,
    /// `IFLA_LINK_NETNSID`: for a veth (or other paired device) whose peer lives in another
    /// namespace, that namespace's id as this namespace numbers it (`RTM_GETNSID`).
    pub link_netnsid: Option<i32>,
    /// The workload of the peer's namespace (a pod's host-side veth), set by
    /// `workload::peers::PeerOwners`; collectors add its attributes to the
    /// interface's series. Changing it gives the link a new [`instance`](Link::instance).
    pub workload: Option<Arc<Workload>>,
}

impl Link {
    /// A link with the given identity and zeroed counters, with a fresh
    /// [`instance`](Link::instance) (for tests and replays).
    #[cfg(test)]
    pub(crate) fn new(ifindex: u32, name: &str) -> Link {
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
    #[cfg(feature = "internals")]
    pub fn is_up(&self) -> bool {
        self.flags & libc::IFF_UP as u32 != 0
    }

    /// `IFF_LOOPBACK`.
    #[cfg(test)]
    pub(crate) fn is_loopback(&self) -> bool {
        self.flags & libc::IFF_LOOPBACK as u32 != 0
    }
}

/// A table entry: the link and the dump attempt that last reported it.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) link: Link,
    pub(super) seen: u64,
}

/// The interfaces proper, sorted by ifindex; separate from the sockets so dump replies can
/// be parsed out of the sockets' buffer into it.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) entries: Vec<Entry>,
    /// Incremented per dump attempt; entries not stamped with it at the end of a complete
    /// dump are gone.
    pub(super) stamp: u64,
    pub(super) generation: u64,
}

/// What storing a stats message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StatsApplied {
    /// The counters were stored.
    Updated,
    /// The counters were stored and went backwards: the link has a new instance.
    WentBack,
    /// The table has no interface with this ifindex; nothing was stored.
    Unknown,
}

impl Table {
    fn find(&self, ifindex: u32) -> Result<usize, usize> {
        self.entries
            .binary_search_by_key(&ifindex, |e| e.link.ifindex)
    }

    pub(super) fn get(&self, ifindex: u32) -> Option<&Link> {
        self.find(ifindex).ok().map(|i| &self.entries[i].link)
    }

    /// Inserts or replaces the link with `link.ifindex`.
    #[cfg(any(test, feature = "internals"))]
    pub(super) fn upsert(&mut self, link: Link) {
        self.generation += 1;
        match self.find(link.ifindex) {
            Ok(i) => self.entries[i].link = link,
            Err(i) => self.entries.insert(i, Entry { link, seen: 0 }),
        }
    }

    /// Removes the link with this ifindex.
    #[cfg(test)]
    pub(super) fn remove(&mut self, ifindex: u32) -> Option<Link> {
        let i = self.find(ifindex).ok()?;
        self.generation += 1;
        Some(self.entries.remove(i).link)
    }

    /// Sets the workload of a link; a change gives it a new instance and the table a new
    /// generation. Returns whether it changed.
    pub(super) fn set_workload(
        &mut self,
        ifindex: u32,
        workload: Option<Arc<Workload>>,
    ) -> bool {
        let Ok(i) = self.find(ifindex) else {
            return false;
        };
        let l = &mut self.entries[i].link;
        if l.workload.as_deref() == workload.as_deref() {
            return false;
        }
        l.workload = workload;
        l.instance = next_instance();
        self.generation += 1;
        true
    }

    /// Starts a dump attempt: entries it reports are stamped with a new value.
    pub(super) fn begin_dump(&mut self) {
        self.stamp += 1;
    }

    /// Whether the current dump attempt reported every entry.
    pub(super) fn all_seen(&self) -> bool {
        self.entries.iter().all(|e| e.seen == self.stamp)
    }

    /// Stores one validated message: updates the interface in place (no allocation unless
    /// its name or kind changed) or inserts it.
    pub(super) fn apply(&mut self, m: &LinkMsg<'_>) {
        let stamp = self.stamp;
        let operstate = m.operstate.map_or(OperState::Unknown, OperState::from_u8);
        match self.find(m.ifindex) {
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
    /// reported (the table needs a full dump to learn its name); counters going backwards
    /// give the link a new instance, as in [`apply`](Table::apply).
    pub(super) fn apply_stats(&mut self, m: &StatsMsg) -> StatsApplied {
        let Ok(i) = self.find(m.ifindex) else {
            return StatsApplied::Unknown;
        };
        let e = &mut self.entries[i];
        e.seen = self.stamp;
        let l = &mut e.link;
        let mut applied = StatsApplied::Updated;
        if m.stats.went_back_from(&l.stats) {
            l.instance = next_instance();
            self.generation += 1;
            applied = StatsApplied::WentBack;
        }
        l.stats = m.stats;
        l.detail = m.detail;
        applied
    }

    /// After a complete dump: drops every interface the dump did not report.
    pub(super) fn remove_unseen(&mut self) {
        let before = self.entries.len();
        let stamp = self.stamp;
        self.entries.retain(|e| e.seen == stamp);
        if self.entries.len() != before {
            self.generation += 1;
        }
    }
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
