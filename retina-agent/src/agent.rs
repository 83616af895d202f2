//! Assembles the collectors and runs one collection cycle over all of them.

use std::time::{Duration, Instant};

use crate::{
    btf::Btf,
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
    drops::{
        DropCollector,
        kallsyms::Kallsyms,
        locations::Locations,
        probe::{DropProbe, ProbeOptions},
        reasons::DropReasons,
    },
    links::{LinkError, Links},
    metrics::Visitor,
    netns,
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
            let mut options = ProbeOptions {
                max_entries: config.drops.map_entries,
                hook: config.drops.hook,
                locations: config.drops.locations,
            };
            // The symbol table first: without it the probe is loaded without locations.
            let symbols = match options.locations {
                false => None,
                true => match Kallsyms::load() {
                    Ok(k) => Some(k),
                    Err(e) => {
                        agent.degraded.push(Degraded {
                            collector: "drops.locations",
                            reason: format!("drop locations off: {e}"),
                        });
                        options.locations = false;
                        None
                    }
                },
            };
            match Self::drop_collector(config.btf.as_deref(), &options).map(|c| match symbols {
                Some(k) => c.with_locations(Locations::new(k, config.drops.locations_capacity)),
                None => c,
            }) {
                Ok(c) => agent.push(Box::new(c)),
                Err(reason) => agent.degraded.push(Degraded {
                    collector: "drops",
                    reason,
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

    fn drop_collector(
        btf_path: Option<&std::path::Path>,
        options: &ProbeOptions,
    ) -> Result<DropCollector, String> {
        let btf = match btf_path {
            Some(path) => Btf::from_file(path),
            None => Btf::from_sys(),
        }
        .map_err(|e| e.to_string())?;
        let reasons = DropReasons::load(
            &btf,
            btf_path
                .is_none()
                .then(|| std::path::Path::new("/sys/kernel/btf")),
        )
        .map_err(|e| e.to_string())?;
        let mut probe = DropProbe::load(&btf, options).map_err(|e| {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            msg
        })?;
        crate::ebpf_log::spawn(probe.ebpf_mut());
        let host = netns::current_netns_inode().map_err(|e| format!("/proc/self/ns/net: {e}"))?;
        Ok(DropCollector::new(probe, reasons, host))
    }

    fn push(&mut self, collector: Box<dyn Collector>) {
        self.collectors.push(collector);
        self.stats.push(CollectorStats::default());
    }

    /// Adds a collector (used to plug in the NIC, netdev and netstat collectors).
    pub fn add(&mut self, collector: Box<dyn Collector>) {
        self.push(collector);
    }

    pub fn degraded(&self) -> &[Degraded] {
        &self.degraded
    }

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
