//! The `tcp_events` collector: TCP retransmits, failed active connects and resets sent and
//! received, per socket cgroup, for the sockets of the host's network namespace (systemd
//! services, processes without a namespace of their own), counted in the kernel by the
//! TCP event programs ([`probe`]) and exported with the workload the cgroup names
//! (`systemd.unit`, `k8s.pod.uid`, `container.id`), resolved by the socket-owner map the
//! drop collector uses ([`SocketOwners`]).
//!
//! A cgroup id is resolved once, when its series first appears. A cgroup found removed
//! (its service stopped) leaves the map and the export one cycle after its last count.

pub mod probe;

use std::{collections::HashMap, path::Path, sync::Arc};

use opentelemetry::{KeyValue, Value};
use retina_ebpf_common::tcp::{
    CONNECT_FAILURES, RESETS_RECEIVED, RESETS_SENT, RETRANSMITS, TCP_EVENTS, TcpCounts,
};

pub(crate) use self::probe::{TcpProbe, TcpProbeError};
use crate::{
    collectors::{CollectError, Collector},
    kernel::{
        btf::{Btf, BtfError},
        links::Links,
    },
    model::{Kind, Metric, Number, Visitor, Workload, attr, in_key_order},
    workload::{attr as workload_attr, sockets::SocketOwners},
};

pub(crate) const TCP_RETRANSMITS: Metric = Metric {
    name: "retina.tcp.retransmit.count",
    unit: "{segment}",
    description: "TCP segments retransmitted by the sockets of a cgroup in the host's network \
                  namespace (tcp:tcp_retransmit_skb; SYN retransmits included)",
    kind: Kind::Counter,
};
pub(crate) const TCP_CONNECT_FAILURES: Metric = Metric {
    name: "retina.tcp.connect.failure.count",
    unit: "{connection}",
    description: "Active TCP connects of a cgroup's sockets that failed: SYN_SENT to CLOSE \
                  (refused, timed out, or given up by the application)",
    kind: Kind::Counter,
};
pub(crate) const TCP_RESETS: Metric = Metric {
    name: "retina.tcp.reset.count",
    unit: "{reset}",
    description: "TCP resets sent (network.io.direction=transmit) or received \
                  (network.io.direction=receive) by the sockets of a cgroup",
    kind: Kind::Counter,
};
pub(crate) const TCP_OVERFLOW: Metric = Metric {
    name: "retina.tcp.event.overflow",
    unit: "{event}",
    description: "TCP events of cgroups that found the per-cgroup map full: counted here, \
                  without a workload, by kind (tcp.event)",
    kind: Kind::Counter,
};

static METRICS: &[&Metric] = &[&TCP_RETRANSMITS, &TCP_CONNECT_FAILURES, &TCP_RESETS, &TCP_OVERFLOW];

/// Attribute key of the overflow series: which kind of event.
pub(crate) const ATTR_TCP_EVENT: &str = "tcp.event";
/// The values of [`ATTR_TCP_EVENT`], by index of `TcpCounts::events`.
const EVENT_NAMES: [&str; TCP_EVENTS] =
    ["retransmit", "connect_failure", "reset_sent", "reset_received"];

/// Why the collector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Probe(#[from] TcpProbeError),
    #[error("/proc/self/ns/net: {0}")]
    HostNetns(#[source] std::io::Error),
}

#[derive(Debug, thiserror::Error)]
#[error("tcp_events collector: {0}")]
pub(crate) struct TcpCollectError(#[from] TcpProbeError);

/// One socket cgroup's counts, with what it names: the narrow entry point for views
/// (the "where packets died" TCP section).
#[cfg(feature = "internals")]
#[derive(Clone, Debug)]
pub struct TcpRow {
    /// The cgroup v2 id (never reused: a key for deltas between two reads).
    pub cgroup_id: u64,
    /// The cgroup's path, when it was found.
    pub cgroup: Option<Arc<str>>,
    /// What the path names (empty when nothing).
    pub workload: Arc<Workload>,
    pub retransmits: u64,
    pub connect_failures: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
}

#[derive(Debug)]
struct Series {
    counts: TcpCounts,
    /// The cgroup, the workload: the attributes of every point but the resets'.
    attrs: Box<[KeyValue]>,
    sent: Box<[KeyValue]>,
    received: Box<[KeyValue]>,
    #[cfg_attr(not(feature = "internals"), allow(dead_code, reason = "read by `rows`"))]
    cgroup: Option<Arc<str>>,
    #[cfg_attr(not(feature = "internals"), allow(dead_code, reason = "read by `rows`"))]
    workload: Arc<Workload>,
    /// Whether the counts changed in the last read.
    grew: bool,
    /// Its cgroup was found removed.
    gone: bool,
}

pub struct TcpEventCollector {
    probe: TcpProbe,
    owners: SocketOwners,
    series: HashMap<u64, Series>,
    overflow: TcpCounts,
    overflow_attrs: [Box<[KeyValue]>; TCP_EVENTS],
    /// Ids read this cycle that have no series yet (capacity kept).
    fresh: Vec<(u64, TcpCounts)>,
    /// Ids of series to remove (capacity kept).
    done: Vec<u64>,
}

impl std::fmt::Debug for TcpEventCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpEventCollector")
            .field("probe", &self.probe)
            .field("series", &self.series.len())
            .finish_non_exhaustive()
    }
}

impl TcpEventCollector {
    /// Loads the programs for the running kernel (offsets from `btf_path` when given) and
    /// attaches them; a tracepoint the kernel lacks is logged and left out.
    pub fn load(btf_path: Option<&Path>, max_entries: u32) -> Result<Self, BuildError> {
        Self::load_with(btf_path, max_entries, false)
    }

    /// [`Self::load`], keeping the programs' descriptors (the bench).
    pub fn load_with(
        btf_path: Option<&Path>,
        max_entries: u32,
        keep_programs: bool,
    ) -> Result<Self, BuildError> {
        let btf = match btf_path {
            Some(p) => Btf::from_file(p),
            None => Btf::from_sys(),
        }?;
        let host = crate::kernel::netns::current_netns_inode().map_err(BuildError::HostNetns)?;
        let probe = TcpProbe::load_with(&btf, host, max_entries, keep_programs)?;
        drop(btf);
        if probe.missing().is_empty() {
            tracing::info!(
                "TCP event programs attached: retransmits, failed connects, resets sent and received per socket cgroup"
            );
        } else {
            tracing::warn!(
                missing = ?probe.missing(),
                "TCP event programs attached without the tracepoints this kernel lacks: their events are not counted"
            );
        }
        Ok(Self::with_probe(probe))
    }

    fn with_probe(probe: TcpProbe) -> Self {
        let capacity = probe.max_entries() as usize;
        let overflow_attrs =
            EVENT_NAMES.map(|n| vec![KeyValue::new(ATTR_TCP_EVENT, n)].into_boxed_slice());
        TcpEventCollector {
            probe,
            owners: SocketOwners::new(),
            series: HashMap::with_capacity(capacity.min(1024)),
            overflow: TcpCounts::default(),
            overflow_attrs,
            fresh: Vec::with_capacity(64),
            done: Vec::with_capacity(64),
        }
    }

    /// The probe (bench: its programs' run statistics).
    #[cfg(feature = "internals")]
    pub fn probe(&self) -> &TcpProbe {
        &self.probe
    }

    /// The tracepoints this kernel lacks.
    pub(crate) fn missing(&self) -> &[&'static str] {
        self.probe.missing()
    }

    /// Every socket cgroup's counts (running totals since the agent started), as of the
    /// last `collect`.
    #[cfg(feature = "internals")]
    pub fn rows(&self) -> impl Iterator<Item = TcpRow> + '_ {
        self.series.iter().map(|(&id, s)| TcpRow {
            cgroup_id: id,
            cgroup: s.cgroup.clone(),
            workload: s.workload.clone(),
            retransmits: s.counts.events[RETRANSMITS],
            connect_failures: s.counts.events[CONNECT_FAILURES],
            resets_sent: s.counts.events[RESETS_SENT],
            resets_received: s.counts.events[RESETS_RECEIVED],
        })
    }

    /// Events that found the map full, by kind (`TcpCounts::events`).
    #[cfg(feature = "internals")]
    pub fn overflow(&self) -> TcpCounts {
        self.overflow
    }

    fn new_series(&self, id: u64, counts: TcpCounts) -> Series {
        let owner = self.owners.get(id).cloned();
        let mut attrs = vec![KeyValue::new(
            workload_attr::SOCKET_CGROUP_ID,
            i64::try_from(id).unwrap_or(i64::MAX),
        )];
        if let Some(o) = &owner {
            attrs.push(KeyValue::new(
                workload_attr::SOCKET_CGROUP,
                Value::String(o.path.clone().into()),
            ));
            o.workload.push_attributes(&mut attrs);
        }
        let with_direction = |d: &'static str| {
            let mut a = attrs.clone();
            a.push(KeyValue::new(attr::IO_DIRECTION, d));
            in_key_order(a).into_boxed_slice()
        };
        Series {
            counts,
            sent: with_direction("transmit"),
            received: with_direction("receive"),
            cgroup: owner.as_ref().map(|o| o.path.clone()),
            workload: owner.map_or_else(|| Arc::new(Workload::default()), |o| o.workload.clone()),
            attrs: in_key_order(attrs).into_boxed_slice(),
            grew: true,
            gone: false,
        }
    }
}

impl Collector for TcpEventCollector {
    fn name(&self) -> &'static str {
        "tcp_events"
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        METRICS
    }

    fn collect(&mut self, _links: &Links) -> Result<(), CollectError> {
        let (series, fresh) = (&mut self.series, &mut self.fresh);
        fresh.clear();
        self.probe
            .read(|id, counts| match series.get_mut(&id) {
                Some(s) => {
                    s.grew = s.counts != counts;
                    s.counts = counts;
                }
                None => fresh.push((id, counts)),
            })
            .map_err(TcpCollectError)?;
        if !self.fresh.is_empty() {
            // One walk of the cgroup tree for all new ids.
            self.owners.resolve(self.fresh.iter().map(|(id, _)| *id));
            let fresh = std::mem::take(&mut self.fresh);
            for &(id, counts) in &fresh {
                let s = self.new_series(id, counts);
                self.series.insert(id, s);
            }
            self.fresh = fresh;
        }
        // A cgroup removed (its service stopped): its series goes once it stopped growing,
        // and its key leaves the kernel map.
        if self.owners.check() {
            self.done.clear();
            for (&id, s) in &mut self.series {
                if self.owners.is_gone(id) {
                    if s.gone && !s.grew {
                        self.done.push(id);
                    }
                    s.gone = true;
                }
            }
            for i in 0..self.done.len() {
                let id = self.done[i];
                self.probe.remove(id).map_err(TcpCollectError)?;
                self.series.remove(&id);
            }
            let series = &self.series;
            self.owners.forget_gone(|id| series.contains_key(&id));
        }
        self.overflow = self.probe.overflow().map_err(TcpCollectError)?;
        Ok(())
    }

    fn visit(&self, visitor: &mut dyn Visitor) {
        for s in self.series.values() {
            let e = &s.counts.events;
            visitor.point(&TCP_RETRANSMITS, &s.attrs, Number::U64(e[RETRANSMITS]));
            visitor.point(&TCP_CONNECT_FAILURES, &s.attrs, Number::U64(e[CONNECT_FAILURES]));
            visitor.point(&TCP_RESETS, &s.sent, Number::U64(e[RESETS_SENT]));
            visitor.point(&TCP_RESETS, &s.received, Number::U64(e[RESETS_RECEIVED]));
        }
        for (attrs, &v) in self.overflow_attrs.iter().zip(&self.overflow.events) {
            visitor.point(&TCP_OVERFLOW, attrs, Number::U64(v));
        }
    }
}
