//! The `drops` collector: reads the probe's maps and keeps one series per drop key.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use opentelemetry::{KeyValue, Value};
use retina_ebpf_common::{DropKey, DropValue};

use super::{
    probe::{DropProbe, ReadBuffers},
    reasons::DropReasons,
};
use crate::{
    collectors::{CollectError, Collector},
    links::Links,
    metrics::{Kind, Metric, Number, Visitor, attr},
    netns::NetnsNames,
};

pub const DROP_COUNT: Metric = Metric {
    name: "retina.drop.count",
    unit: "{packet}",
    description: "Packets the kernel dropped (kfree_skb), by the kernel's drop reason",
    kind: Kind::Counter,
};
pub const DROP_BYTES: Metric = Metric {
    name: "retina.drop.bytes",
    unit: "By",
    description: "Bytes of the packets the kernel dropped (skb->len at the drop point)",
    kind: Kind::Counter,
};
pub const OVERFLOW_COUNT: Metric = Metric {
    name: "retina.drop.overflow.count",
    unit: "{packet}",
    description: "Drops counted without attributes because the drop map was full",
    kind: Kind::Counter,
};
pub const OVERFLOW_BYTES: Metric = Metric {
    name: "retina.drop.overflow.bytes",
    unit: "By",
    description: "Bytes of the drops counted without attributes because the drop map was full",
    kind: Kind::Counter,
};
pub const MAP_ENTRIES: Metric = Metric {
    name: "retina.drop.map.entries",
    unit: "{entry}",
    description: "Distinct drop keys in the kernel map",
    kind: Kind::Gauge,
};
pub const MAP_CAPACITY: Metric = Metric {
    name: "retina.drop.map.capacity",
    unit: "{entry}",
    description: "Capacity of the kernel drop map; at capacity new keys go to the overflow counters",
    kind: Kind::Gauge,
};

pub const MAP_PRUNED: Metric = Metric {
    name: "retina.drop.map.pruned",
    unit: "{entry}",
    description: "Drop map entries removed because their namespace or interface no longer exists",
    kind: Kind::Counter,
};

pub const MISSED: Metric = Metric {
    name: "retina.drop.missed",
    unit: "{packet}",
    description: "Drops the program could not count: the kernel skipped it because it was already running on that CPU (a drop in an interrupt that arrived meanwhile; bpf_prog_info recursion_misses)",
    kind: Kind::Counter,
};

/// Housekeeping starts when the map is this full (percent)...
const PRUNE_AT_PERCENT: u64 = 75;
/// ... and runs at most this often.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

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

/// The `network.type` of an EtherType: OpenTelemetry's `ipv4`/`ipv6`, `arp`, else hex.
fn network_type(protocol: u32) -> Option<Value> {
    match protocol {
        0 => None,
        0x0800 => Some(Value::from("ipv4")),
        0x86dd => Some(Value::from("ipv6")),
        0x0806 => Some(Value::from("arp")),
        p => Some(Value::from(format!("0x{p:04x}"))),
    }
}

struct Series {
    attributes: Box<[KeyValue]>,
    value: DropValue,
    /// The cycle the key first appeared in: a key younger than the link table or the
    /// namespace scan it is checked against is never taken for dead.
    born: u64,
    /// Removed from the kernel map: visited once more with its final value, then dropped.
    retired: bool,
}

pub struct DropCollector {
    probe: DropProbe,
    reasons: DropReasons,
    buffers: ReadBuffers,
    host_netns: u32,
    netns: NetnsNames,
    series: HashMap<DropKey, Series>,
    overflow: DropValue,
    missed: u64,
    entries: u64,
    pruned: u64,
    last_prune: Option<Instant>,
    cycle: u64,
    links_generation: Option<u64>,
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
            series: HashMap::with_capacity(capacity),
            overflow: DropValue::default(),
            missed: 0,
            entries: 0,
            pruned: 0,
            last_prune: None,
            cycle: 0,
            links_generation: None,
        }
    }

    pub fn probe_mut(&mut self) -> &mut DropProbe {
        &mut self.probe
    }

    pub fn reasons(&self) -> &DropReasons {
        &self.reasons
    }

    /// Attributes of a new series: resolved once, when the key first appears.
    fn attributes(&mut self, key: &DropKey, links: &Links) -> Box<[KeyValue]> {
        let mut attrs = Vec::with_capacity(7);
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
        if let Some(t) = network_type(key.protocol) {
            attrs.push(KeyValue::new(attr::NETWORK_TYPE, t));
        }
        attrs.into_boxed_slice()
    }
}

impl DropCollector {
    /// A host interface renamed since its series were made: their attributes take the new
    /// name (the series stays one series for the exporters' delta and cumulative state,
    /// keyed by the kernel key). Only runs when the link table changed; allocates only
    /// for the series of a renamed interface.
    fn follow_renames(&mut self, links: &Links) {
        let host = self.host_netns;
        let stale: Vec<DropKey> = self
            .series
            .iter()
            .filter(|(k, s)| {
                if s.retired || k.ifindex == 0 || !(k.netns == host || k.netns == 0) {
                    return false;
                }
                let Some(link) = links.get(k.ifindex) else {
                    return false;
                };
                let held = s
                    .attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == attr::INTERFACE_NAME);
                match held.map(|kv| &kv.value) {
                    Some(Value::String(name)) => name.as_str() != &*link.name,
                    _ => true,
                }
            })
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            let attributes = self.attributes(&key, links);
            if let Some(s) = self.series.get_mut(&key) {
                s.attributes = attributes;
            }
        }
    }

    /// Keys never leave the kernel map on their own, so on a host where pods come and go
    /// it would fill up with namespaces and interfaces that no longer exist. When the host's
    /// link table changes (a pod's veth comes or goes), keys of host interfaces that are
    /// gone are removed, and so are keys of interfaces gone from named namespaces (one link
    /// dump per such namespace that has keys); keys of vanished namespaces (which needs a
    /// scan of /proc) go when the map is nearly full. Their last counts were exported and
    /// nothing can drop on a dead device or namespace any more, so new drops keep their
    /// attributes instead of going to the overflow counter, and memory stays flat.
    fn prune(&mut self, links: &Links, namespaces: bool) -> Result<(), DropCollectError> {
        let live = if namespaces {
            crate::netns::live_netns_inodes()
        } else {
            Default::default()
        };
        let (host, cycle) = (self.host_netns, self.cycle);
        let netns = &mut self.netns;
        let since = Instant::now();
        let dead: Vec<DropKey> = self
            .series
            .iter()
            .filter(|(k, s)| {
                if s.retired || s.born >= cycle {
                    return false;
                }
                let in_host = k.netns == host || k.netns == 0;
                let ns_gone = namespaces && !in_host && !live.contains(&k.netns);
                let dev_gone = k.ifindex != 0
                    && if in_host {
                        links.get(k.ifindex).is_none()
                    } else {
                        netns.has_interface(k.netns, k.ifindex, since) == Some(false)
                    };
                ns_gone || dev_gone
            })
            .map(|(k, _)| *k)
            .collect();
        for key in &dead {
            if self.probe.remove(key)? {
                self.pruned += 1;
            }
            if let Some(s) = self.series.get_mut(key) {
                s.retired = true;
            }
        }
        if !dead.is_empty() {
            tracing::debug!(
                removed = dead.len(),
                capacity = self.probe.max_entries(),
                "removed drop map entries of vanished namespaces and interfaces"
            );
            self.entries = self.entries.saturating_sub(dead.len() as u64);
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("drop collector: {0}")]
pub struct DropCollectError(#[from] super::probe::ProbeError);

impl Collector for DropCollector {
    fn name(&self) -> &'static str {
        "drops"
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        METRICS
    }

    fn collect(&mut self, links: &Links) -> Result<(), CollectError> {
        // Keys are never deleted from the map, so values only grow: read them into the
        // series table, creating series (the only allocation) for new keys.
        // Series retired last cycle have had their final value exported.
        self.series.retain(|_, s| !s.retired);
        let mut fresh: Vec<(DropKey, DropValue)> = Vec::new();
        let mut entries = 0u64;
        let series = &mut self.series;
        self.probe
            .read(&mut self.buffers, |key, value| {
                entries += 1;
                match series.get_mut(key) {
                    Some(s) => s.value = value,
                    None => fresh.push((*key, value)),
                }
            })
            .map_err(DropCollectError)?;
        self.cycle += 1;
        let born = self.cycle;
        for (key, value) in fresh {
            let attributes = self.attributes(&key, links);
            self.series.insert(
                key,
                Series {
                    attributes,
                    value,
                    born,
                    retired: false,
                },
            );
        }
        self.entries = entries;
        // Sockets in deleted namespaces would keep those namespaces alive.
        self.netns.release_deleted();
        let full = entries * 100 >= u64::from(self.probe.max_entries()) * PRUNE_AT_PERCENT;
        let links_changed = self.links_generation != Some(links.generation());
        self.links_generation = Some(links.generation());
        if full
            && self
                .last_prune
                .is_none_or(|t| t.elapsed() >= PRUNE_INTERVAL)
        {
            self.last_prune = Some(Instant::now());
            self.prune(links, true)?;
        } else if links_changed {
            // Interfaces came or went: shed the keys of host interfaces that are gone right
            // away (cheap: no syscall unless there is one), so churn does not pile up.
            self.prune(links, false)?;
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
        visitor.point(&MAP_ENTRIES, &[], Number::U64(self.entries));
        visitor.point(&MAP_PRUNED, &[], Number::U64(self.pruned));
        visitor.point(&MISSED, &[], Number::U64(self.missed));
        visitor.point(
            &MAP_CAPACITY,
            &[],
            Number::U64(u64::from(self.probe.max_entries())),
        );
    }
}
