//! The drop collector's series bookkeeping: series follow interface renames, and the
//! kernel keys of vanished interfaces, namespaces and socket cgroups are removed (their
//! series retired) so that the map stays bounded and memory flat.

use std::{collections::HashSet, time::Instant};

use opentelemetry::Value;
use retina_ebpf_common::DropKey;

use super::{DropCollectError, DropCollector};
use crate::{kernel::links::Links, model::attr};

impl DropCollector {
    /// A host interface renamed, or given another peer workload, since its series were
    /// made: their attributes take the new name and workload (the series stays one series
    /// for the exporters' delta and cumulative state, keyed by the kernel key). Only runs
    /// when the link table changed; allocates only for the series of a renamed interface.
    pub(super) fn follow_renames(&mut self, links: &Links) {
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
                if s.peer.as_deref() != link.workload.as_deref() {
                    return true;
                }
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
            let peer = self.peer(&key, links);
            if let Some(s) = self.series.get_mut(&key) {
                s.attributes = attributes;
                s.peer = peer;
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
    pub(super) fn prune(&mut self, links: &Links, namespaces: bool) -> Result<(), DropCollectError> {
        let live = if namespaces {
            self.workloads.live_netns_inodes()
        } else {
            Default::default()
        };
        self.mark_gone_owners();
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
                ns_gone || dev_gone || s.owner_done(cycle)
            })
            .map(|(k, _)| *k)
            .collect();
        self.retire(dead)
    }

    /// The series of removed socket cgroups that are done ([`Series::owner_done`]), alone:
    /// no link dump, no `/proc` scan. Runs each cycle while such a cgroup is held.
    pub(super) fn retire_gone_owners(&mut self) -> Result<(), DropCollectError> {
        self.mark_gone_owners();
        let cycle = self.cycle;
        let dead: Vec<DropKey> = self
            .series
            .iter()
            .filter(|(_, s)| !s.retired && s.born < cycle && s.owner_done(cycle))
            .map(|(k, _)| *k)
            .collect();
        self.retire(dead)
    }

    /// Notes the cycle each series' socket cgroup was first found removed in.
    fn mark_gone_owners(&mut self) {
        let (owners, cycle) = (&self.owners, self.cycle);
        for (k, s) in self.series.iter_mut() {
            if s.gone_at == 0 && k.cgroup != 0 && !s.retired && owners.is_gone(k.cgroup) {
                s.gone_at = cycle;
            }
        }
    }

    /// Removes the kernel keys of `dead` series and retires them (their final values are
    /// exported once more); forgets socket cgroups no series needs any more.
    fn retire(&mut self, dead: Vec<DropKey>) -> Result<(), DropCollectError> {
        // The kernel keys behind the dead series: the same keys, or with locations every
        // key whose address is in the series' function.
        let kernel_keys: Vec<DropKey> = if self.locations.is_some() {
            let dead: HashSet<&DropKey> = dead.iter().collect();
            self.probe
                .keys()
                .filter(|k| {
                    self.series_key(k)
                        .is_some_and(|series| dead.contains(&series))
                })
                .copied()
                .collect()
        } else {
            dead.clone()
        };
        for key in &kernel_keys {
            if self.probe.remove(key)? {
                self.pruned += 1;
            }
        }
        for key in &dead {
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
            self.entries = self.entries.saturating_sub(kernel_keys.len() as u64);
        }
        let series = &self.series;
        self.owners.forget_gone(|id| {
            series
                .iter()
                .any(|(k, s)| k.cgroup == id && !s.retired)
        });
        Ok(())
    }
}
