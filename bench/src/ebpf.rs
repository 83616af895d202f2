//! Section 5: the drop probe's cost per drop (kernel run-time statistics) next to an empty
//! program on the same hook, under a flood of UDP datagrams to a closed port, and whether
//! the agent counted exactly the drops that happened.

use std::{collections::BTreeMap, os::fd::AsFd as _, time::Duration};

use anyhow::{Context, Result};
use opentelemetry::KeyValue;
use retina_agent::{
    collectors::Collector,
    collectors::drops::DropCollector,
    kernel::links::Links,
    model::{Metric, Number, attr},
};
use retina_tests::NetNs;
use serde_json::{Value, json};

use super::{
    bpf::{
        BpfStats, EmptyProgram, Measured, ReadOffsets, ReadVariants, agent_program,
        direct_reads_variant, map_variant, program_json, vmlinux_typedef_id,
    },
    cycle, net, sys,
};

pub struct EbpfReport {
    pub json: Value,
    pub ours_ns: f64,
    pub empty_ns: f64,
    /// The six reads with bpf_probe_read_kernel (raw tracepoint), ns per run.
    pub probe6_ns: f64,
    /// The same six reads as direct BTF loads (tp_btf), ns per run, if it loaded; attached
    /// after the agent's program, so they find the agent's cache lines warm.
    pub direct6_ns: Option<f64>,
    /// Phase 2: the direct reads attached ahead of the agent's program (cold lines), and the
    /// agent's program behind them, ns per run.
    pub direct6_first_ns: Option<f64>,
    pub ours_after_reads_ns: Option<f64>,
    pub empty2_ns: f64,
    /// Lookup of one constant 16-byte key in a per-CPU hash of the agent's size, plus the
    /// increments; the same with a per-CPU array; ns per run.
    pub hash_const_ns: f64,
    pub array_const_ns: f64,
    pub counted: u64,
    pub sent: u64,
    /// Third flood: the agent's program loaded with drop locations (`drops.locations`)
    /// and an empty program, ns per run; and what it counted for that flood.
    pub locations_ns: f64,
    pub locations_empty_ns: f64,
    pub locations_counted: u64,
    /// Fourth flood: the agent's program with drop flows on.
    pub flows: super::ebpf_flows::FlowsPhase,
}

/// The agent's drop collector with drop locations on, as `drops.locations = true` loads it.
fn drop_collector_with_locations() -> Result<DropCollector> {
    use retina_agent::collectors::drops::{
        kallsyms::Kallsyms,
        locations::{DEFAULT_CAPACITY, Locations},
        probe::{DropProbe, ProbeOptions},
        reasons::DropReasons,
    };
    let btf = retina_agent::kernel::btf::Btf::from_sys()?;
    let reasons = DropReasons::load(&btf, Some(std::path::Path::new("/sys/kernel/btf")))?;
    let options = ProbeOptions {
        locations: true,
        ..ProbeOptions::default()
    };
    let probe = DropProbe::load(&btf, &options)?;
    let host = retina_agent::kernel::netns::current_netns_inode()?;
    Ok(DropCollector::new(probe, reasons, host)
        .with_locations(Locations::new(Kallsyms::load()?, DEFAULT_CAPACITY)))
}

/// Drops the collector holds for namespace `inode`, by reason and network type.
fn drops_in(
    c: &mut DropCollector,
    links: &Links,
    inode: u64,
) -> Result<BTreeMap<(String, String), u64>> {
    c.collect(links).map_err(|e| anyhow::anyhow!("{e}"))?;
    let inode = inode.to_string();
    let mut out = BTreeMap::new();
    c.visit(&mut |m: &'static Metric, attrs: &[KeyValue], v: Number| {
        if m.name != "retina.drop.count" {
            return;
        }
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.as_str().into_owned())
        };
        if get(attr::NETNS_INODE).as_deref() != Some(inode.as_str()) {
            return;
        }
        let key = (
            get(attr::DROP_REASON).unwrap_or_default(),
            get(attr::NETWORK_TYPE).unwrap_or_default(),
        );
        if let Number::U64(v) = v {
            *out.entry(key).or_insert(0) += v;
        }
    });
    Ok(out)
}

/// Section 5, in two floods of `packets` drops each (programs on one tracepoint run in
/// attach order, and the first to touch `skb->dev`, `dev->nd_net` and `net->ns.inum` pays
/// for their cache misses):
/// 1. the agent's program attached first, as in production (the headline figure and the
///    accuracy check), then the empty program, the read-method variants and the two
///    map-only variants (constant key in a per-CPU hash / array);
/// 2. the direct reads attached first, then a second instance of the agent's program
///    (which now finds those lines warm), then the empty program: what the cold lines cost.
pub fn run(packets: u64) -> Result<EbpfReport> {
    let stats = BpfStats::enable()?;
    let tp = c"kfree_skb";
    let o = retina_agent::collectors::drops::probe::offsets_from_btf(
        &retina_agent::kernel::btf::Btf::from_sys()?,
    )?;
    let reads = ReadOffsets {
        skb_dev: o.skb_dev,
        skb_len: o.skb_len,
        skb_protocol: o.skb_protocol,
        dev_ifindex: o.dev_ifindex,
        dev_net: o.dev_net,
        net_inum: o.net_inum,
    };
    let btf_id = vmlinux_typedef_id("btf_trace_kfree_skb")?;
    let ns = NetNs::new("rbd")?;
    let inode = ns.inode()?;
    let path = format!("/run/netns/{}", ns.name);
    let mut links = Links::new()?;
    links.refresh()?;

    // ---- phase 1: the agent first ----
    let mut drops = cycle::drop_collector().context("loading the agent's drop probe")?;
    let (ours_name, ours_fd) = agent_program(&mut drops)?;
    let empty = EmptyProgram::attach(tp).context("attaching the empty program")?;
    let variants =
        ReadVariants::attach(&reads, tp, btf_id).context("attaching the read-method variants")?;
    // NO_SOCKET / ifindex 1 / some inode / IPv4: any constant key does.
    let key = [3, 1, inode as u32, 0x0800];
    let max = retina_ebpf_common::DEFAULT_DROPS_MAX_ENTRIES;
    let hash = map_variant(true, key, max, tp, btf_id).context("per-CPU hash variant")?;
    let array = map_variant(false, key, max, tp, btf_id).context("per-CPU array variant")?;
    let mut progs = vec![
        ours_fd.as_fd(),
        empty.prog.as_fd(),
        variants.probe.0.as_fd(),
        hash.prog.as_fd(),
        array.prog.as_fd(),
    ];
    if let Some((fd, _)) = &variants.direct {
        progs.push(fd.as_fd());
    }

    let counts0 = drops_in(&mut drops, &links, inode)?;
    let m = Measured::start(&progs)?;
    let flood = net::flood(&path, 9, packets, 256)?;
    // Let softirq processing finish.
    sys::sleep(Duration::from_millis(300))?;
    let r1 = m.end(&progs)?;
    let counts1 = drops_in(&mut drops, &links, inode)?;
    let (ours_ns, empty_ns, probe6_ns, hash_const_ns, array_const_ns) =
        (r1[0].1, r1[1].1, r1[2].1, r1[3].1, r1[4].1);
    let direct6_ns = r1.get(5).map(|r| r.1);
    let variants_error = variants.direct_error.clone();
    drop(progs);
    drop((variants, hash, array, empty, ours_fd));
    drop(drops);

    // ---- phase 2: the direct reads first, then the agent, then the empty program ----
    let (phase2, direct_first_error) = match btf_id {
        Some(id) => match direct_reads_variant(&reads, tp, id) {
            Ok(first) => {
                let mut drops2 = cycle::drop_collector()?;
                let (_, ours2) = agent_program(&mut drops2)?;
                let empty2 = EmptyProgram::attach(tp)?;
                let progs = [first.prog.as_fd(), ours2.as_fd(), empty2.prog.as_fd()];
                let m = Measured::start(&progs)?;
                net::flood(&path, 9, packets, 256)?;
                sys::sleep(Duration::from_millis(300))?;
                (Some(m.end(&progs)?), None)
            }
            Err(e) => (None, Some(format!("{e:#}"))),
        },
        None => (
            None,
            Some("no btf_trace_kfree_skb in the kernel's BTF".into()),
        ),
    };

    // ---- phase 3: the agent's program with drop locations, then the empty program ----
    let (locations_ns, locations_empty_ns, locations_counted, phase3) = {
        let mut drops3 = drop_collector_with_locations().context("drops with locations")?;
        let (_, ours3) = agent_program(&mut drops3)?;
        let empty3 = EmptyProgram::attach(tp)?;
        let progs = [ours3.as_fd(), empty3.prog.as_fd()];
        let before = drops_in(&mut drops3, &links, inode)?;
        let m = Measured::start(&progs)?;
        let flood3 = net::flood(&path, 9, packets, 256)?;
        sys::sleep(Duration::from_millis(300))?;
        let r = m.end(&progs)?;
        let after = drops_in(&mut drops3, &links, inode)?;
        let key = ("NO_SOCKET".to_string(), "ipv4".to_string());
        let counted =
            after.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0);
        let json = json!({
            "what": "third flood: the agent's program loaded with drops.locations (the tracepoint's location in the key, named once per address from /proc/kallsyms), then the empty program",
            "agent_program": program_json(&r[0]),
            "empty_program": program_json(&r[1]),
            "overhead_ns_per_drop_above_empty": sys::round3(r[0].1 - r[1].1),
            "datagrams_sent": flood3.sent,
            "no_socket_ipv4_counted": counted,
            "exact": counted == flood3.sent,
        });
        (r[0].1, r[1].1, counted, json)
    };

    // ---- phase 4: the agent's program with drop flows, then the empty program ----
    let flows = super::ebpf_flows::run(&path, inode, packets).context("drops with flows")?;

    let delta: BTreeMap<String, u64> = counts1
        .iter()
        .map(|((reason, ty), v)| {
            let before = counts0
                .get(&(reason.clone(), ty.clone()))
                .copied()
                .unwrap_or(0);
            (format!("{reason}/{ty}"), v - before)
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    let counted = delta.get("NO_SOCKET/ipv4").copied().unwrap_or(0);
    let restored = stats.previous().to_string();
    drop(stats);
    let direct6_first_ns = phase2.as_ref().map(|r| r[0].1);
    let ours_after_reads_ns = phase2.as_ref().map(|r| r[1].1);
    let empty2_ns = phase2.as_ref().map_or(f64::NAN, |r| r[2].1);
    let json = json!({
        "datagrams_sent": flood.sent,
        "flood_seconds": sys::round3(flood.elapsed.as_secs_f64()),
        "flood_rate_per_s": (flood.sent as f64 / flood.elapsed.as_secs_f64()).round(),
        "flood_sender_cpu_ns_per_datagram": sys::round3(flood.cpu.as_nanos() as f64 / flood.sent.max(1) as f64),
        "agent_program": {
            "name": ours_name,
            "info": r1[0].2.json(),
            "runs": r1[0].0,
            "ns_per_run": sys::round3(ours_ns),
        },
        "empty_program": program_json(&r1[1]),
        "overhead_ns_per_drop_above_empty": sys::round3(ours_ns - empty_ns),
        "read_method": {
            "what": "the agent's six kernel reads per drop and nothing else, attached after the agent's program",
            "probe_read_kernel_raw_tp_ns_per_run": sys::round3(probe6_ns),
            "direct_btf_loads_tp_btf_ns_per_run": direct6_ns.map(sys::round3),
            "direct_error": variants_error,
        },
        "map_only": {
            "what": "lookup of one constant key plus packets += 1, bytes += 32 on its per-CPU slot, no kernel reads; maps of the agent's max_entries, key present beforehand; attached after the agent's program",
            "max_entries": max,
            "percpu_hash_16_byte_key": program_json(&r1[3]),
            "percpu_array": program_json(&r1[4]),
        },
        "reads_first": {
            "what": "second flood: the six direct reads attached ahead of a second instance of the agent's program, then the empty program; the reads meet the cold cache lines, the agent's program finds them warm",
            "direct_reads_first": phase2.as_ref().map(|r| program_json(&r[0])),
            "agent_program_after_reads": phase2.as_ref().map(|r| program_json(&r[1])),
            "empty_program": phase2.as_ref().map(|r| program_json(&r[2])),
            "error": direct_first_error,
        },
        "with_locations": phase3,
        "with_flows": flows.json.clone(),
        "target_max_ns": 40,
        "accuracy": {
            "netns_inode": inode,
            "no_socket_ipv4_counted": counted,
            "exact": counted == flood.sent,
            "drops_in_netns_by_reason_and_type": delta,
        },
        "bpf_stats_enabled_restored_to": restored,
    });
    Ok(EbpfReport {
        json,
        ours_ns,
        empty_ns,
        probe6_ns,
        direct6_ns,
        direct6_first_ns,
        ours_after_reads_ns,
        empty2_ns,
        hash_const_ns,
        array_const_ns,
        counted,
        sent: flood.sent,
        locations_ns,
        locations_empty_ns,
        locations_counted,
        flows,
    })
}
