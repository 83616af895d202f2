//! Assembles the collectors and runs one collection cycle over all of them.

use std::time::{Duration, Instant};

use crate::{
    collectors::drops::{self, probe::ProbeOptions},
    collectors::{
        Collector,
        conntrack::{ConntrackCollector, ConntrackError},
        ethtool::{EthtoolCollector, EthtoolError, LinkStateCollector},
        netdev::NetdevCollector,
        netstat::{NetstatCollector, NetstatError, workloads::WorkloadNetstatCollector},
        qdisc::{QdiscCollector, QdiscError},
        softnet::{SoftnetCollector, SoftnetError},
        tcp_events::{TcpEventCollector, probe::DEFAULT_MAX_ENTRIES as DEFAULT_TCP_MAX_ENTRIES},
    },
    config::Config,
    kernel::links::{LinkError, Links},
    kernel::netns,
    kernel::sys::error_chain,
    model::Visitor,
    workload::peers::PeerOwners,
};

/// What the agent could not start, and why; it runs without those parts.
#[derive(Debug)]
pub struct Degraded {
    pub collector: &'static str,
    pub reason: String,
}

/// The outcome of one collector in one cycle.
#[derive(Debug, Default, Clone, Copy)]
pub struct CollectorStats {
    pub(crate) duration: Duration,
    pub(crate) failures: u64,
    pub(crate) last_failed: bool,
    /// Logging of the current streak of failures.
    pub(crate) streak: crate::ratelimit::Streak,
}

pub struct Agent {
    links: Links,
    /// Gives host veths the workload of their peer's namespace.
    peers: Option<PeerOwners>,
    collectors: Vec<Box<dyn Collector>>,
    stats: Vec<CollectorStats>,
    degraded: Vec<Degraded>,
    /// With `drops.flows`: the flow maps, until taken ([`Agent::take_flows`]).
    flows: Option<drops::flows::FlowSource>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("rtnetlink: {0}")]
    Links(#[from] LinkError),
    #[error("ethtool collector: {0}")]
    Ethtool(#[from] EthtoolError),
    #[error("netstat collector: {0}")]
    Netstat(#[from] NetstatError),
    #[error("softnet collector: {0}")]
    Softnet(#[from] SoftnetError),
    #[error("qdisc collector: {0}")]
    Qdisc(#[from] QdiscError),
    #[error("conntrack collector: {0}")]
    Conntrack(#[from] ConntrackError),
}

/// The collectors besides `drops`, in the order the agent runs them.
const OTHERS: [&str; 8] = [
    "ethtool",
    "ethtool_link",
    "netdev",
    "netstat",
    "netstat_workloads",
    "softnet",
    "qdisc",
    "conntrack",
];

/// The collector `name` (one of [`OTHERS`]) as `config` has it; `None` when disabled.
fn build_other(name: &str, config: &Config) -> Result<Option<Box<dyn Collector>>, AgentError> {
    let c: Box<dyn Collector> = match name {
        "ethtool" if config.ethtool.enabled => Box::new(EthtoolCollector::new(&config.ethtool)?),
        "ethtool_link" if config.ethtool.enabled && config.ethtool.link_state => {
            Box::new(
                LinkStateCollector::new(&config.ethtool)?.hiding_driver_constants(
                    config.export.series == crate::config::SeriesPolicy::Informative,
                ),
            )
        }
        "netdev" if config.netdev.enabled => Box::new(NetdevCollector::new(&config.netdev)),
        "netstat" if config.netstat.enabled => Box::new(NetstatCollector::new(&config.netstat)?),
        "netstat_workloads" if config.netstat.enabled && config.netstat.workloads.enabled => {
            match netns::current_netns_inode() {
                Ok(host) => Box::new(WorkloadNetstatCollector::new(
                    &config.netstat.workloads,
                    host,
                )),
                Err(e) => {
                    tracing::warn!(
                        "netstat_workloads collector not started: /proc/self/ns/net: {e}"
                    );
                    return Ok(None);
                }
            }
        }
        "softnet" if config.softnet.enabled => Box::new(SoftnetCollector::new(&config.softnet)?),
        "qdisc" if config.qdisc.enabled => Box::new(QdiscCollector::new(&config.qdisc)?),
        "conntrack" if config.conntrack.enabled => {
            Box::new(ConntrackCollector::new(&config.conntrack)?)
        }
        _ => return Ok(None),
    };
    Ok(Some(c))
}

/// Whether the configuration section of collector `name` differs between `a` and `b`.
fn section_changed(name: &str, a: &Config, b: &Config) -> bool {
    match name {
        "ethtool" => a.ethtool != b.ethtool,
        // It leaves out the drivers' constants under the `informative` series policy.
        "ethtool_link" => a.ethtool != b.ethtool || a.export.series != b.export.series,
        "netdev" => a.netdev != b.netdev,
        "netstat" => a.netstat != b.netstat,
        "netstat_workloads" => a.netstat.workloads != b.netstat.workloads,
        "softnet" => a.softnet != b.softnet,
        "qdisc" => a.qdisc != b.qdisc,
        "conntrack" => a.conntrack != b.conntrack,
        _ => false,
    }
}

impl Agent {
    /// Starts every collector that can run on this kernel; what cannot is reported in
    /// [`Agent::degraded`] instead of failing the whole agent. Which collectors run and
    /// how: the sections of `config` (and `config.btf`).
    pub fn new(config: &Config) -> Result<Self, AgentError> {
        let links = Links::new()?;
        let mut agent = Agent {
            links,
            peers: None,
            collectors: Vec::new(),
            stats: Vec::new(),
            degraded: Vec::new(),
            flows: None,
        };
        match netns::current_netns_inode()
            .map_err(|e| format!("/proc/self/ns/net: {e}"))
            .and_then(|host| PeerOwners::new(host).map_err(|e| e.to_string()))
        {
            Ok(p) => agent.peers = Some(p),
            Err(reason) => agent.degraded.push(Degraded {
                collector: "workload.peers",
                reason: format!("host veths get no workload attributes: {reason}"),
            }),
        }
        if config.drops.enabled {
            let probe = ProbeOptions {
                max_entries: config.drops.map_entries,
                hook: config.drops.hook,
                locations: config.drops.locations,
                flows: config.drops.flows.then_some(drops::flows::FlowOptions {
                    capacity: config.drops.flows_capacity,
                    events_per_second: config.drops.flow_events_per_second,
                    snaplen: config.drops.flow_snaplen,
                }),
            };
            let builder = drops::Builder::new(
                probe,
                config.drops.locations_capacity,
                config.btf.as_deref(),
            );
            if let Some(e) = builder.locations_off() {
                agent.degraded.push(Degraded {
                    collector: "drops.locations",
                    reason: format!("drop locations off: {e}"),
                });
            }
            match builder.build() {
                Ok(mut c) => {
                    agent.flows = c.take_flows();
                    agent.push(Box::new(c));
                }
                Err(e) => agent.degraded.push(Degraded {
                    collector: "drops",
                    reason: error_chain(&e),
                }),
            }
            // The TCP events per socket cgroup come with the drop probe (`drops.enabled`).
            match TcpEventCollector::load(config.btf.as_deref(), DEFAULT_TCP_MAX_ENTRIES) {
                Ok(c) => {
                    if !c.missing().is_empty() {
                        agent.degraded.push(Degraded {
                            collector: "tcp_events",
                            reason: format!(
                                "this kernel lacks the tracepoints {}: their TCP events are not counted",
                                c.missing().join(", ")
                            ),
                        });
                    }
                    agent.push(Box::new(c));
                }
                Err(e) => agent.degraded.push(Degraded {
                    collector: "tcp_events",
                    reason: error_chain(&e),
                }),
            }
        }
        for &name in &OTHERS {
            if let Some(c) = build_other(name, config)? {
                agent.push(c);
            }
        }
        Ok(agent)
    }

    /// Applies a re-read configuration (SIGHUP) to the collectors other than `drops`: a
    /// collector whose section changed is rebuilt, one newly enabled is started, one
    /// disabled is dropped; the others (and `drops`, with its eBPF program and maps) are
    /// kept as they are, with their failure counts. Collectors read the kernel's running
    /// totals, so a rebuilt one exports the same counts. Nothing changes when a collector
    /// cannot be built. Returns the names of the collectors rebuilt, started or dropped.
    pub(crate) fn reconfigure(
        &mut self,
        old: &Config,
        new: &Config,
    ) -> Result<Vec<&'static str>, AgentError> {
        // Everything that can fail first, so that a failure changes nothing.
        let mut fresh = Vec::new();
        for &name in OTHERS.iter().filter(|n| section_changed(n, old, new)) {
            fresh.push((name, build_other(name, new)?));
        }
        let mut previous: Vec<_> = std::mem::take(&mut self.collectors)
            .into_iter()
            .zip(std::mem::take(&mut self.stats))
            .map(Some)
            .collect();
        let mut take_previous = |name: &str| {
            previous
                .iter_mut()
                .find(|p| p.as_ref().is_some_and(|(c, _)| c.name() == name))
                .and_then(Option::take)
        };
        // In the order they were added (the exporters index the collectors by position).
        for kept in ["drops", "drop_flows", "tcp_events"] {
            if let Some((c, s)) = take_previous(kept) {
                self.push_with(c, s);
            }
        }
        let mut changed = Vec::new();
        for &name in &OTHERS {
            let before = take_previous(name);
            match fresh.iter_mut().find(|(n, _)| *n == name) {
                Some((_, new_collector)) => {
                    if before.is_some() || new_collector.is_some() {
                        changed.push(name);
                    }
                    if let Some(c) = new_collector.take() {
                        self.push_with(c, before.map(|(_, s)| s).unwrap_or_default());
                    }
                }
                None => {
                    if let Some((c, s)) = before {
                        self.push_with(c, s);
                    }
                }
            }
        }
        Ok(changed)
    }

    fn push_with(&mut self, collector: Box<dyn Collector>, stats: CollectorStats) {
        self.collectors.push(collector);
        self.stats.push(stats);
    }

    fn push(&mut self, collector: Box<dyn Collector>) {
        self.push_with(collector, CollectorStats::default());
    }

    /// Adds a collector (used to plug in the NIC, netdev and netstat collectors).
    #[cfg(any(test, feature = "internals"))]
    pub fn add(&mut self, collector: Box<dyn Collector>) {
        self.push(collector);
    }

    /// With `drops.flows`: the kernel's flow maps (once).
    pub fn take_flows(&mut self) -> Option<drops::flows::FlowSource> {
        self.flows.take()
    }

    /// Adds the `drop_flows` collector (`run` with `drops.flows`), before the exporters
    /// start: right after `drops`, where [`Agent::reconfigure`] keeps it.
    pub(crate) fn add_flow_collector(&mut self, collector: drops::flow_metrics::FlowCollector) {
        let at = self
            .collectors
            .iter()
            .position(|c| c.name() == "drops")
            .map_or(self.collectors.len(), |i| i + 1);
        self.collectors.insert(at, Box::new(collector));
        self.stats.insert(at, CollectorStats::default());
    }

    pub fn degraded(&self) -> &[Degraded] {
        &self.degraded
    }

    /// The interface table (the snapshot's flows name interfaces by it).
    pub fn links(&self) -> &Links {
        &self.links
    }

    pub fn collectors(&self) -> impl Iterator<Item = (&dyn Collector, &CollectorStats)> {
        self.collectors.iter().map(|c| &**c).zip(self.stats.iter())
    }

    /// One collection cycle: one link dump, then every collector. A failing collector is
    /// counted and logged; the others still run.
    pub fn cycle(&mut self) {
        if let Err(e) = self.links.refresh() {
            tracing::warn!("rtnetlink link dump failed: {e}");
        }
        if let Some(p) = &mut self.peers {
            p.update(&mut self.links);
        }
        for (collector, stats) in self.collectors.iter_mut().zip(self.stats.iter_mut()) {
            let start = Instant::now();
            let result = collector.collect(&self.links);
            stats.duration = start.elapsed();
            match result {
                Ok(()) => {
                    stats.last_failed = false;
                    if stats.streak.ok() {
                        tracing::info!(collector = collector.name(), "collection works again");
                    }
                }
                Err(e) => {
                    stats.failures += 1;
                    stats.last_failed = true;
                    // The first failure of a streak, then at most once a minute.
                    match stats.streak.fail() {
                        Some(0) => {
                            tracing::warn!(collector = collector.name(), "collection failed: {e}");
                        }
                        Some(n) => tracing::warn!(
                            collector = collector.name(),
                            "collection still failing ({n} more failures): {e}"
                        ),
                        None => {}
                    }
                }
            }
        }
    }

    /// Visits every data point of every collector.
    pub fn visit(&self, visitor: &mut dyn Visitor) {
        for c in &self.collectors {
            c.visit(visitor);
        }
    }
}

#[cfg(test)]
mod tests;
