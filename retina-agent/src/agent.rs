//! Assembles the collectors and runs one collection cycle over all of them.

use std::time::{Duration, Instant};

use crate::{
    collectors::drops::{self, probe::ProbeOptions},
    collectors::{
        Collector,
        conntrack::{ConntrackCollector, ConntrackError},
        ethtool::{EthtoolCollector, EthtoolError, LinkStateCollector},
        netdev::NetdevCollector,
        netstat::{NetstatCollector, NetstatError},
        qdisc::{QdiscCollector, QdiscError},
        softnet::{SoftnetCollector, SoftnetError},
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
    pub duration: Duration,
    pub failures: u64,
    pub last_failed: bool,
    /// Logging of the current streak of failures.
    pub streak: crate::ratelimit::Streak,
}

pub struct Agent {
    links: Links,
    /// Gives host veths the workload of their peer's namespace.
    peers: Option<PeerOwners>,
    collectors: Vec<Box<dyn Collector>>,
    stats: Vec<CollectorStats>,
    degraded: Vec<Degraded>,
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
                Ok(c) => agent.push(Box::new(c)),
                Err(e) => agent.degraded.push(Degraded {
                    collector: "drops",
                    reason: error_chain(&e),
                }),
            }
        }
        if config.ethtool.enabled {
            agent.push(Box::new(EthtoolCollector::new(&config.ethtool)?));
            if config.ethtool.link_state {
                agent.push(Box::new(LinkStateCollector::new(&config.ethtool)?));
            }
        }
        if config.netdev.enabled {
            agent.push(Box::new(NetdevCollector::new(&config.netdev)));
        }
        if config.netstat.enabled {
            agent.push(Box::new(NetstatCollector::new(&config.netstat)?));
        }
        if config.softnet.enabled {
            agent.push(Box::new(SoftnetCollector::new(&config.softnet)?));
        }
        if config.qdisc.enabled {
            agent.push(Box::new(QdiscCollector::new(&config.qdisc)?));
        }
        if config.conntrack.enabled {
            agent.push(Box::new(ConntrackCollector::new(&config.conntrack)?));
        }
        Ok(agent)
    }

    fn push(&mut self, collector: Box<dyn Collector>) {
        self.collectors.push(collector);
        self.stats.push(CollectorStats::default());
    }

    /// Adds a collector (used to plug in the NIC, netdev and netstat collectors).
    #[cfg_attr(not(feature = "internals"), allow(dead_code, reason = "used by the tests, the bench or the fuzz targets"))]
    pub fn add(&mut self, collector: Box<dyn Collector>) {
        self.push(collector);
    }

    pub fn degraded(&self) -> &[Degraded] {
        &self.degraded
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code, reason = "used by the tests, the bench or the fuzz targets"))]
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
