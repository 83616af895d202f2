//! Section 5, fourth flood: the agent's program with drop flows on (`drops.flows`), next to
//! an empty program, and whether the flow map counted every drop of the flood's one flow.

use std::{os::fd::AsFd as _, time::Duration};

use anyhow::{Context, Result};
use retina_agent::{
    collectors::drops::{
        DropCollector,
        flows::FlowOptions,
        probe::{DropProbe, ProbeOptions},
        reasons::DropReasons,
    },
    kernel::btf::Btf,
};
use serde_json::{Value, json};

use super::{
    bpf::{EmptyProgram, Measured, agent_program, program_json},
    net, sys,
};

pub struct FlowsPhase {
    pub ns: f64,
    pub empty_ns: f64,
    /// Drops of the flood's flow counted in the flow map, and whether that count is exact.
    pub counted: u64,
    pub exact: bool,
    pub sent: u64,
    pub json: Value,
}

/// Floods `packets` UDP datagrams to a closed port in the namespace at `netns_path`
/// (inode `inode`) with the agent's program loaded with flows on.
pub fn run(netns_path: &str, inode: u64, packets: u64) -> Result<FlowsPhase> {
    let btf = Btf::from_sys()?;
    let reasons = DropReasons::load(&btf, Some(std::path::Path::new("/sys/kernel/btf")))?;
    let options = ProbeOptions {
        flows: Some(FlowOptions::default()),
        ..ProbeOptions::default()
    };
    let probe = DropProbe::load(&btf, &options).context("the probe with flows on")?;
    drop(btf);
    let host = retina_agent::kernel::netns::current_netns_inode()?;
    let mut drops = DropCollector::new(probe, reasons, host);
    let flows = drops
        .take_flows()
        .context("the probe loaded with flows has no flow maps")?;
    let (_, ours) = agent_program(&mut drops)?;
    let empty = EmptyProgram::attach(c"kfree_skb")?;
    let progs = [ours.as_fd(), empty.prog.as_fd()];
    let m = Measured::start(&progs)?;
    let flood = net::flood(netns_path, 9, packets, 256)?;
    sys::sleep(Duration::from_millis(300))?;
    let r = m.end(&progs)?;
    let (all, stats) = flows.maps.read()?;
    let ours_flows: Vec<_> = all
        .iter()
        .filter(|f| u64::from(f.key.netns) == inode && f.key.protocol == 17 && f.key.dport == 9)
        .collect();
    let counted: u64 = ours_flows.iter().map(|f| f.value.packets).sum();
    let exact = ours_flows.iter().all(|f| f.exact);
    let json = json!({
        "what": "fourth flood: the agent's program loaded with drops.flows (headers parsed, the flow counted in the LRU map, sampled at the default 100 events/s), then the empty program",
        "agent_program": program_json(&r[0]),
        "empty_program": program_json(&r[1]),
        "overhead_ns_per_drop_above_empty": sys::round3(r[0].1 - r[1].1),
        "datagrams_sent": flood.sent,
        "flows_of_the_flood": ours_flows.len(),
        "counted_in_flows": counted,
        "flows_exact": exact,
        "exact": exact && counted == flood.sent,
        "stats": stats,
    });
    Ok(FlowsPhase {
        ns: r[0].1,
        empty_ns: r[1].1,
        counted,
        exact,
        sent: flood.sent,
        json,
    })
}
