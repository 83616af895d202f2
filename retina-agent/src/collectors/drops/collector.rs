//! The `drops` collector: reads the probe's maps and keeps one series per drop key.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::{KeyValue, Value};
use retina_ebpf_common::{DropKey, DropValue};

use super::{
    locations::{self, Locations},
    protocols::network_type,
    probe::{DropProbe, ReadBuffers},
    reasons::DropReasons,
};
use crate::{
    collectors::{CollectError, Collector},
    kernel::links::Links,
    kernel::netns::NetnsNames,
    model::{Kind, Metric, Number, Visitor, Workload, attr, in_key_order},
    workload::{Workloads, attr as workload_attr, sockets::SocketOwners},
};

mod prune;

pub(crate) const DROP_COUNT: Metric = Metric {
    name: "retina.drop.count",
    unit: "{packet}",
    description: "Packets the kernel dropped (kfree_skb), by the kernel's drop reason",
    kind: Kind::Counter,
};
pub(crate) const DROP_BYTES: Metric = Metric {
    name: "retina.drop.bytes",
    unit: "By",
    description: "Bytes of the packets the kernel dropped (skb->len at the drop point)",
    kind: Kind::Counter,
};
/// The attribute of the overflow series of the slots reserved for namespaces owned by
/// non-initial user namespaces: `drop.pool="user_namespace"`.
pub(crate) const POOL: &str = "drop.pool";
pub(crate) const POOL_USER_NAMESPACE: &str = "user_namespace";

pub(crate) const OVERFLOW_COUNT: Metric = Metric {
    name: "retina.drop.overflow.count",
    unit: "{packet}",
    description: "Drops counted without attributes because the drop map was full (drop.pool=user_namespace: the part reserved for namespaces of non-initial user namespaces was)",
    kind: Kind::Counter,
};
pub(crate) const OVERFLOW_BYTES: Metric = Metric {
    name: "retina.drop.overflow.bytes",
    unit: "By",
    description: "Bytes of the drops counted without attributes because the drop map was full",
    kind: Kind::Counter,
};
pub(crate) const MAP_ENTRIES: Metric = Metric {
    name: "retina.drop.map.entries",
    unit: "{entry}",
    description: "Distinct drop keys in the kernel map",
    kind: Kind::Gauge,
};
pub(crate) const MAP_CAPACITY: Metric = Metric {
    name: "retina.drop.map.capacity",
    unit: "{entry}",
    description: "Capacity of the kernel drop map; at capacity new keys go to the overflow counters",
    kind: Kind::Gauge,
};

pub(crate) const MAP_PRUNED: Metric = Metric {
    name: "retina.drop.map.pruned",
    unit: "{entry}",
    description: "Drop map entries removed because their namespace or interface no longer exists",
    kind: Kind::Counter,
};

pub(crate) const MISSED: Metric = Metric {
    name: "retina.drop.missed",
    unit: "{packet}",
    description: "Drops the program could not count: the kernel skipped it because it was already running on that CPU (a drop in an interrupt that arrived meanwhile; bpf_prog_info recursion_misses)",
    kind: Kind::Counter,
};

pub(crate) const LOCATION_OVERFLOW: Metric = Metric {
    name: "retina.drop.location.overflow",
    unit: "{packet}",
    description: "Drops counted without drop.location because drops.locations_capacity distinct functions were already named",
    kind: Kind::Counter,
};

pub(crate) const LOCATIONS_NAMED: Metric = Metric {
    name: "retina.drop.location.named",
    unit: "{function}",
    description: "Distinct kernel functions named in drop.location (at most drops.locations_capacity)",
    kind: Kind::Gauge,
};

/// Housekeeping starts when the map is this full (percent)...
const PRUNE_AT_PERCENT: u64 = 75;
/// ... and runs at most this often.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// A series of a removed socket cgroup that kept growing after the removal was seen (a
/// socket that outlived its cgroup: handed to another process, or its process moved
/// out) is taken as closed only after this many cycles without a drop.
pub(crate) const ORPHAN_IDLE_CYCLES: u64 = 60;

static METRICS: &[&Metric] = &[
    &MAP_PRUNED,
    &DROP_COUNT,
    &DROP_BYTES,
    &OVERFLOW_COUNT,
    &OVERFLOW_BYTES,
    &MAP_ENTRIES,
    &MAP_CAPACITY,
    &MISSED,
];

static METRICS_WITH_LOCATIONS: &[&Metric] = &[
    &MAP_PRUNED,
    &DROP_COUNT,
    &DROP_BYTES,
    &OVERFLOW_COUNT,
    &OVERFLOW_BYTES,
    &MAP_ENTRIES,
    &MAP_CAPACITY,
    &MISSED,
    &LOCATION_OVERFLOW,
    &LOCATIONS_NAMED,
];

struct Series {
    attributes: Box<[KeyValue]>,
    value: DropValue,
    /// The cycle the key first appeared in: a key younger than the link table or the
    /// namespace scan it is checked against is never taken for dead.
    born: u64,
    /// Removed from the kernel map: visited once more with its final value, then dropped.
    retired: bool,
    /// For a host interface: the workload of its peer namespace the attributes were made
    /// with (a pod's host veth), so a change is followed like a rename.
    peer: Option<Arc<Workload>>,
    /// The packets of the last cycle, and the last cycle they grew in.
    prev: u64,
    grew: u64,
    /// The cycle its socket's cgroup was first found removed; 0 while it exists.
    gone_at: u64,
}

impl Series {
    /// Whether a series whose socket's cgroup was removed is done: it did not grow this
    /// cycle and, if it grew after the removal was seen (the socket outlived its cgroup),
    /// not for [`ORPHAN_IDLE_CYCLES`]. Until then its key stays, so its count never
    /// restarts while the socket still drops.
    fn owner_done(&self, cycle: u64) -> bool {
        self.gone_at != 0
            && self.grew < cycle
            && (self.grew <= self.gone_at || cycle - self.grew >= ORPHAN_IDLE_CYCLES)
    }
}

pub struct DropCollector {
    probe: DropProbe,
    reasons: DropReasons,
    buffers: ReadBuffers,
    host_netns: u32,
    netns: NetnsNames,
    workloads: Workloads,
    /// The cgroups of the sockets dropped packets had reached.
    owners: SocketOwners,
    series: HashMap<DropKey, Series>,
    overflow: DropValue,
    /// Drops in namespaces owned by non-initial user namespaces that found their pool full.
    user_ns_overflow: DropValue,
    /// `drop.pool="user_namespace"`, made once.
    user_ns_pool: [KeyValue; 1],
    missed: u64,
    entries: u64,
    pruned: u64,
    last_prune: Option<Instant>,
    cycle: u64,
    links_generation: Option<u64>,
    /// With `drops.locations`: the named functions. Series are then keyed by the key
    /// with its `location` replaced by the function's (several kernel keys, one series).
    locations: Option<Locations>,
    /// Drops without `drop.location` because the capacity was full, in series already
    /// removed (so the counter never goes back).
    location_overflow_retired: u64,
    location_overflow: u64,
}

impl DropCollector {
    pub fn new(probe: DropProbe, reasons: DropReasons, host_netns: u32) -> Self {
        let buffers = probe.buffers();
        let capacity = probe.max_entries().min(4096) as usize;
        DropCollector {
            probe,
            reasons,
            buffers,
            host_netns,
            netns: NetnsNames::new(),
            workloads: Workloads::new(host_netns),
            owners: SocketOwners::new(),
            series: HashMap::with_capacity(capacity),
            overflow: DropValue::default(),
            user_ns_overflow: DropValue::default(),
            user_ns_pool: [KeyValue::new(POOL, POOL_USER_NAMESPACE)],
            missed: 0,
            entries: 0,
            pruned: 0,
            last_prune: None,
            cycle: 0,
            links_generation: None,
            locations: None,
            location_overflow_retired: 0,
            location_overflow: 0,
        }
    }

    /// Names drop locations with `locations`; the probe must have been loaded with
    /// `ProbeOptions::locations`, else every key's location is 0 and nothing is named.
    pub fn with_locations(mut self, locations: Locations) -> Self {
        self.locations = Some(locations);
        self
    }

    /// The series key of a kernel key: itself, or with locations its location replaced by
    /// its function's; `None` for an address not seen yet.
    fn series_key(&self, key: &DropKey) -> Option<DropKey> {
        match &self.locations {
            None => Some(*key),
            Some(l) => l
                .get(key.location)
                .map(|location| DropKey { location, ..*key }),
        }
    }

    #[cfg(feature = "internals")]
    pub fn probe_mut(&mut self) -> &mut DropProbe {
        &mut self.probe
    }

    /// With flows on: what `snapshot --flows` reads them with (once).
    pub fn take_flows(&mut self) -> Option<super::flows::FlowSource> {
        let maps = self.probe.take_flows()?;
        Some(super::flows::FlowSource {
            maps,
            reasons: self.reasons.clone(),
            host_netns: self.host_netns,
        })
    }

    fn in_host(&self, key: &DropKey) -> bool {
        key.netns == self.host_netns || key.netns == 0
    }

    /// The workload of the peer namespace of a host interface's key.
    fn peer(&self, key: &DropKey, links: &Links) -> Option<Arc<Workload>> {
        if key.ifindex == 0 || !self.in_host(key) {
            return None;
        }
        links.get(key.ifindex).and_then(|l| l.workload.clone())
    }

    /// Attributes of a new series: resolved once, when the key first appears.
    fn attributes(&mut self, key: &DropKey, links: &Links) -> Box<[KeyValue]> {
        let mut attrs = Vec::with_capacity(10);
        attrs.push(KeyValue::new(
            attr::DROP_REASON,
            Value::String(self.reasons.name(key.reason).into()),
        ));
        let name = if key.ifindex == 0 {
            None
        } else if key.netns == self.host_netns || key.netns == 0 {
            links.get(key.ifindex).map(|l| l.name.clone())
        } else {
            self.netns.interface(key.netns, key.ifindex)
        };
        if let Some(name) = name {
            attrs.push(KeyValue::new(
                attr::INTERFACE_NAME,
                Value::String(name.into()),
            ));
        }
        if key.ifindex != 0 {
            attrs.push(KeyValue::new(attr::INTERFACE_INDEX, i64::from(key.ifindex)));
        }
        if key.netns != 0 {
            attrs.push(KeyValue::new(attr::NETNS_INODE, i64::from(key.netns)));
            if key.netns != self.host_netns
                && let Some(ns) = self.netns.name(key.netns)
            {
                attrs.push(KeyValue::new(attr::NETNS_NAME, Value::String(ns.into())));
            }
        }
        // The pod, container or service that owns the socket the packet had reached; else
        // the one living in that namespace; for a host interface, the one in its peer's
        // namespace (a pod's host veth).
        let owner = self.owners.get(key.cgroup).cloned();
        if key.cgroup != 0 {
            attrs.push(KeyValue::new(
                workload_attr::SOCKET_CGROUP_ID,
                i64::try_from(key.cgroup).unwrap_or(i64::MAX),
            ));
        }
        if let Some(o) = &owner {
            attrs.push(KeyValue::new(
                workload_attr::SOCKET_CGROUP,
                Value::String(o.path.clone().into()),
            ));
        }
        let workload = match owner {
            Some(o) if !o.workload.is_empty() => Some(o.workload.clone()),
            _ if self.in_host(key) => self.peer(key, links),
            _ => self.workloads.lookup(key.netns),
        };
        if let Some(w) = workload {
            w.push_attributes(&mut attrs);
        }
        if let Some(t) = network_type(key.protocol) {
            attrs.push(KeyValue::new(attr::NETWORK_TYPE, t));
        }
        if let Some(name) = self.locations.as_ref().and_then(|l| l.name(key.location)) {
            attrs.push(KeyValue::new(attr::DROP_LOCATION, name.clone()));
        }
        in_key_order(attrs).into_boxed_slice()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("drop collector: {0}")]
pub(crate) struct DropCollectError(#[from] super::probe::ProbeError);

impl Collector for DropCollector {
    fn name(&self) -> &'static str {
        "drops"
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        if self.locations.is_some() {
            METRICS_WITH_LOCATIONS
        } else {
            METRICS
        }
    }

    fn collect(&mut self, links: &Links) -> Result<(), CollectError> {
        // A key's values only grow while it is in the map (only `prune` removes keys, and
        // retires their series): read them into the series table, creating series (the
        // only allocation of a cycle that prunes nothing) for new keys. Series retired
        // last cycle have had their final value exported.
        let retired_overflow = &mut self.location_overflow_retired;
        self.series.retain(|k, s| {
            if s.retired && k.location == locations::UNNAMED {
                *retired_overflow += s.value.packets;
            }
            !s.retired
        });
        // A series sums its kernel keys (one, unless locations put several addresses of
        // one function in it).
        for s in self.series.values_mut() {
            s.value = DropValue::default();
        }
        let mut fresh: Vec<(DropKey, DropValue)> = Vec::new();
        let mut entries = 0u64;
        let series = &mut self.series;
        let locations = &self.locations;
        self.probe
            .read(&mut self.buffers, |key, value| {
                entries += 1;
                let series_key = match locations {
                    None => Some(*key),
                    Some(l) => l
                        .get(key.location)
                        .map(|location| DropKey { location, ..*key }),
                };
                match series_key.and_then(|k| series.get_mut(&k)) {
                    Some(s) => add(&mut s.value, value),
                    None => fresh.push((*key, value)),
                }
            })
            .map_err(DropCollectError)?;
        self.cycle += 1;
        let born = self.cycle;
        // New socket cgroups: one walk of the cgroup tree for all of them.
        self.owners.resolve(fresh.iter().map(|(k, _)| k.cgroup));
        for (mut key, value) in fresh {
            if let Some(l) = &mut self.locations {
                key.location = l.learn(key.location);
            }
            if let Some(s) = self.series.get_mut(&key) {
                add(&mut s.value, value);
                continue;
            }
            let attributes = self.attributes(&key, links);
            let peer = self.peer(&key, links);
            self.series.insert(
                key,
                Series {
                    attributes,
                    value,
                    born,
                    retired: false,
                    peer,
                    prev: value.packets,
                    grew: born,
                    gone_at: 0,
                },
            );
        }
        if self.locations.is_some() {
            self.location_overflow = self.location_overflow_retired
                + self
                    .series
                    .iter()
                    .filter(|(k, _)| k.location == locations::UNNAMED)
                    .map(|(_, s)| s.value.packets)
                    .sum::<u64>();
        }
        self.entries = entries;
        // Sockets in deleted namespaces would keep those namespaces alive.
        self.netns.release_deleted();
        // The user namespaces' pool spilled since the last cycle: its keys may be of
        // namespaces gone (a flood that stopped), which nothing else would remove while the
        // host's links stay as they are.
        let user_ns_overflow = self
            .probe
            .user_ns_overflow(&mut self.buffers)
            .map_err(DropCollectError)?;
        let pool_full = user_ns_overflow.packets != self.user_ns_overflow.packets;
        self.user_ns_overflow = user_ns_overflow;
        let full = pool_full
            || entries * 100 >= u64::from(self.probe.max_entries()) * PRUNE_AT_PERCENT;
        let links_changed = self.links_generation != Some(links.generation());
        self.links_generation = Some(links.generation());
        // A socket-owning cgroup removed (its service stopped, its pod went), so that its
        // series leave within two intervals (inotify says which owners emptied).
        let owners_gone = self.owners.check();
        let cycle = self.cycle;
        for s in self.series.values_mut() {
            if s.value.packets != s.prev {
                s.prev = s.value.packets;
                s.grew = cycle;
            }
        }
        if full
            && self
                .last_prune
                .is_none_or(|t| t.elapsed() >= PRUNE_INTERVAL)
        {
            self.last_prune = Some(Instant::now());
            self.prune(links, true)?;
        } else if links_changed {
            // Interfaces came or went (a pod's veth goes with its namespace): shed the keys
            // of host interfaces and of namespaces that are gone right away, so a workload
            // that has gone leaves the export within two intervals and churn does not pile
            // up. (A namespace without a veth to the host goes at the next link change or
            // when the map is nearly full.) Reads /proc only if some series is in another
            // namespace.
            let namespaces = self.series.keys().any(|k| !self.in_host(k));
            self.prune(links, namespaces)?;
        } else if owners_gone {
            self.retire_gone_owners()?;
        }
        if links_changed {
            self.follow_renames(links);
        }
        self.overflow = self
            .probe
            .overflow(&mut self.buffers)
            .map_err(DropCollectError)?;
        self.missed = self.probe.missed().map_err(DropCollectError)?;
        Ok(())
    }

    fn visit(&self, visitor: &mut dyn Visitor) {
        for s in self.series.values() {
            visitor.point(&DROP_COUNT, &s.attributes, Number::U64(s.value.packets));
            visitor.point(&DROP_BYTES, &s.attributes, Number::U64(s.value.bytes));
        }
        visitor.point(&OVERFLOW_COUNT, &[], Number::U64(self.overflow.packets));
        visitor.point(&OVERFLOW_BYTES, &[], Number::U64(self.overflow.bytes));
        visitor.point(
            &OVERFLOW_COUNT,
            &self.user_ns_pool,
            Number::U64(self.user_ns_overflow.packets),
        );
        visitor.point(
            &OVERFLOW_BYTES,
            &self.user_ns_pool,
            Number::U64(self.user_ns_overflow.bytes),
        );
        visitor.point(&MAP_ENTRIES, &[], Number::U64(self.entries));
        visitor.point(&MAP_PRUNED, &[], Number::U64(self.pruned));
        visitor.point(&MISSED, &[], Number::U64(self.missed));
        visitor.point(
            &MAP_CAPACITY,
            &[],
            Number::U64(u64::from(self.probe.max_entries())),
        );
        if let Some(l) = &self.locations {
            visitor.point(&LOCATION_OVERFLOW, &[], Number::U64(self.location_overflow));
            visitor.point(&LOCATIONS_NAMED, &[], Number::U64(l.named() as u64));
        }
    }
}

fn add(total: &mut DropValue, value: DropValue) {
    total.packets = total.packets.wrapping_add(value.packets);
    total.bytes = total.bytes.wrapping_add(value.bytes);
}
