//! `snapshot --flows`: the kernel's drop flows as a "top flows" table and JSON, and the
//! sampled events drained from the ring buffer while the snapshot watches.

use std::{fmt::Write as _, path::Path, sync::Arc};

use anyhow::Context as _;

use aya::maps::{MapData, RingBuf};
use retina_ebpf_common::flows::{FAMILY_IPV4, FlowEvent};
use serde_json::{Map, Value as Json, json};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
    task::JoinHandle,
};

use crate::{
    agent::Agent,
    collectors::drops::{
        flows::{
            Flow, FlowSource, FlowStats, address, describe, event, has_ports, is_icmp, transport,
        },
        kallsyms::Kallsyms,
        reasons::DropReasons,
    },
    kernel::links::Links,
    model::Workload,
    workload::Workloads,
};

/// Rows the table shows (the JSON has every flow).
const TABLE_ROWS: usize = 20;
/// Sampled events kept for `--pcap` (the rest are counted in `events_dropped`).
const MAX_EVENTS: usize = 100_000;

/// Drains the ring buffer of sampled events in the background until stopped.
pub(crate) struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<FlowEvent>>,
}

impl Sampler {
    pub(crate) fn start(ring: RingBuf<MapData>) -> std::io::Result<Sampler> {
        // SAFETY: the ring buffer owns its descriptor, which stays open and the same for as
        // long as it lives, and the AsyncFd owns the ring buffer.
        let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut events = Vec::new();
            let drain = |ring: &mut RingBuf<MapData>, events: &mut Vec<FlowEvent>| {
                while let Some(item) = ring.next() {
                    if events.len() < MAX_EVENTS
                        && let Some(e) = event(&item)
                    {
                        events.push(e);
                    }
                }
            };
            loop {
                tokio::select! {
                    guard = fd.readable_mut() => match guard {
                        Ok(mut guard) => {
                            drain(guard.get_inner_mut(), &mut events);
                            guard.clear_ready();
                        }
                        Err(_) => break,
                    },
                    _ = stopped.changed() => break,
                }
            }
            drain(fd.get_mut(), &mut events);
            events
        });
        Ok(Sampler { stop, task })
    }

    /// Stops draining and returns the events, oldest first.
    pub async fn finish(self) -> Vec<FlowEvent> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// What a flow is shown with.
pub(crate) struct Names<'a> {
    pub(crate) reasons: &'a DropReasons,
    pub(crate) links: &'a Links,
    pub(crate) host_netns: u32,
    pub(crate) workloads: Workloads,
}

impl Names<'_> {
    /// The workload of the flow's namespace, or for a host interface of its peer's.
    fn workload(&mut self, netns: u32, ifindex: u32) -> Option<Arc<Workload>> {
        if netns == self.host_netns || netns == 0 {
            return self.links.get(ifindex).and_then(|l| l.workload.clone());
        }
        self.workloads.lookup(netns)
    }

    fn interface(&self, netns: u32, ifindex: u32) -> Option<Arc<str>> {
        (netns == self.host_netns || netns == 0)
            .then(|| self.links.get(ifindex).map(|l| l.name.clone()))
            .flatten()
    }
}

/// TCP flags as tcpdump names them (`SYN`, `ACK|RST`, ...).
pub(crate) fn tcp_flags(flags: u64) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let set: Vec<&str> = (0..8)
        .filter(|b| flags & (1 << b) != 0)
        .map(|b| NAMES[b])
        .collect();
    set.join("|")
}

/// The flows as JSON objects (semantic-convention keys), and the counters.
pub(crate) fn json(flows: &[Flow], stats: &FlowStats, names: &mut Names<'_>) -> Json {
    let top: Vec<Json> = flows
        .iter()
        .map(|f| {
            let k = &f.key;
            let mut o = Map::new();
            o.insert("network.transport".into(), json!(transport(k.protocol)));
            let t = if k.family == FAMILY_IPV4 { "ipv4" } else { "ipv6" };
            o.insert("network.type".into(), json!(t));
            o.insert("source.address".into(), json!(address(k.family, &k.saddr).to_string()));
            o.insert("destination.address".into(), json!(address(k.family, &k.daddr).to_string()));
            if k.fragment != 0 {
                o.insert("fragment".into(), json!(true));
            } else if has_ports(k.protocol) {
                o.insert("source.port".into(), json!(k.sport));
                o.insert("destination.port".into(), json!(k.dport));
            } else if is_icmp(k.protocol) {
                o.insert("icmp.type".into(), json!(k.sport));
                o.insert("icmp.code".into(), json!(k.dport));
            }
            if k.protocol == 6 {
                o.insert("tcp.flags".into(), json!(tcp_flags(f.value.tcp_flags)));
            }
            o.insert("drop.reason".into(), json!(&*names.reasons.name(k.reason)));
            o.insert("network.interface.index".into(), json!(k.ifindex));
            if let Some(i) = names.interface(k.netns, k.ifindex) {
                o.insert("network.interface.name".into(), json!(&*i));
            }
            o.insert("network.namespace.inode".into(), json!(k.netns));
            if let Some(w) = names.workload(k.netns, k.ifindex) {
                let mut attrs = Vec::new();
                w.push_attributes(&mut attrs);
                for kv in attrs {
                    o.insert(kv.key.as_str().into(), json!(kv.value.as_str()));
                }
            }
            o.insert("packets".into(), json!(f.value.packets));
            o.insert("bytes".into(), json!(f.value.bytes));
            o.insert("exact".into(), json!(f.exact));
            Json::Object(o)
        })
        .collect();
    json!({ "top": top, "stats": stats })
}

/// The "top flows" table: largest first, at most [`TABLE_ROWS`].
pub(crate) fn table(flows: &[Flow], stats: &FlowStats, names: &mut Names<'_>) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    for f in flows.iter().take(TABLE_ROWS) {
        let k = &f.key;
        let mut workload = Vec::new();
        if let Some(w) = names.workload(k.netns, k.ifindex) {
            let mut attrs = Vec::new();
            w.push_attributes(&mut attrs);
            workload = attrs
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
        }
        let mut flow = describe(k);
        if k.protocol == 6 && f.value.tcp_flags != 0 {
            let _ = write!(flow, " [{}]", tcp_flags(f.value.tcp_flags));
        }
        let iface = names
            .interface(k.netns, k.ifindex)
            .map_or_else(|| format!("ifindex {} netns {}", k.ifindex, k.netns), |n| n.to_string());
        let count = if f.exact {
            f.value.packets.to_string()
        } else {
            format!("≥ {}", f.value.packets)
        };
        let reason = names.reasons.name(k.reason).to_string();
        rows.push([count, format!("{flow} ({iface})"), reason, workload.join(" ")]);
    }
    let w = |i: usize, min: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(min);
    let (cw, fw, rw) = (w(0, 7), w(1, 4), w(2, 6));
    let mut out = String::from("TOP FLOWS (counted since the snapshot attached)\n");
    let _ = writeln!(out, "{:>cw$}  {:fw$}  {:rw$}  WORKLOAD", "DROPPED", "FLOW", "REASON");
    for r in &rows {
        let pad = cw - r[0].chars().count();
        let _ = writeln!(out, "{}{}  {:fw$}  {:rw$}  {}", " ".repeat(pad), r[0], r[1], r[2], r[3]);
    }
    if flows.len() > TABLE_ROWS {
        let _ = writeln!(out, "... {} more flows (--format json has them all)", flows.len() - TABLE_ROWS);
    }
    let _ = writeln!(
        out,
        "flows evicted: {} (a flow created after an eviction shows \"≥ N\")  unparsed drops: {}  sampled: {} sent, {} suppressed",
        stats.evicted, stats.unparsed, stats.sent, stats.suppressed
    );
    out
}

/// `snapshot --flows` / `--pcap` from start to end: the flow maps taken from the agent
/// and the sampler draining their ring buffer.
pub(crate) struct Look {
    source: FlowSource,
    sampler: Option<Sampler>,
}

/// What a look shows: the JSON section, the table, and the pcapng written.
pub(crate) struct Shown {
    pub(crate) json: Json,
    pub(crate) table: String,
}

impl Look {
    /// Takes the flow maps from `agent` (loaded with `drops.flows`) and starts draining
    /// sampled events.
    pub(crate) fn start(agent: &mut Agent) -> anyhow::Result<Look> {
        let mut source = agent
            .take_flows()
            .context("drop flows are not available: the drop probe did not load (see the warnings above)")?;
        let sampler = match source.maps.take_events() {
            Some(ring) => Some(Sampler::start(ring).context("polling the flow events")?),
            None => None,
        };
        Ok(Look { source, sampler })
    }

    /// Reads the flows, stops sampling, writes `pcap` if asked.
    pub async fn finish(
        self,
        agent: &Agent,
        pcap: Option<&Path>,
        locations: bool,
    ) -> anyhow::Result<Shown> {
        let events = match self.sampler {
            Some(s) => s.finish().await,
            None => Vec::new(),
        };
        let (flows, stats) = self.source.maps.read().context("reading the drop flows")?;
        let mut names = Names {
            reasons: &self.source.reasons,
            links: agent.links(),
            host_netns: self.source.host_netns,
            workloads: Workloads::new(self.source.host_netns),
        };
        let mut json = json(&flows, &stats, &mut names);
        json["sampled_events"] = Json::from(events.len());
        let table = table(&flows, &stats, &mut names);
        if let Some(path) = pcap {
            let symbols = if locations { Kallsyms::load().ok() } else { None };
            let reasons = &self.source.reasons;
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let out = super::pcap::write(std::io::BufWriter::new(file), &events, |e| {
                let location = symbols.as_ref().and_then(|k| {
                    k.lookup(e.location)
                        .map(|(start, name)| format!("{name}+0x{:x}", e.location - start).into())
                });
                (reasons.name(e.key.reason), location)
            })
            .with_context(|| format!("writing {}", path.display()))?;
            out.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "retina-agent: {} sampled dropped packets written to {}",
                events.len(),
                path.display()
            );
        }
        Ok(Shown { json, table })
    }
}

#[cfg(test)]
mod tests;
