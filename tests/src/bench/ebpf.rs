//! Section 5: the drop probe's cost per drop (kernel run-time statistics) next to an empty
//! program on the same hook, under a flood of UDP datagrams to a closed port, and whether
//! the agent counted exactly the drops that happened.

use std::{collections::BTreeMap, os::fd::AsFd as _, time::Duration};

use anyhow::{Context, Result};
use opentelemetry::KeyValue;
use retina_agent::{
    collectors::Collector,
    drops::DropCollector,
    links::Links,
    metrics::{Metric, Number, attr},
};
use retina_tests::NetNs;
use serde_json::{Value, json};

use super::{
    bpf::{BpfStats, EmptyProgram, ProgInfo, ReadOffsets, ReadVariants, vmlinux_typedef_id},
    net, sys,
};

pub struct EbpfReport {
    pub json: Value,
    pub ours_ns: f64,
    pub empty_ns: f64,
    /// The six reads with bpf_probe_read_kernel (raw tracepoint), ns per run.
    pub probe6_ns: f64,
    /// The same six reads as direct BTF loads (tp_btf), ns per run, if it loaded.
    pub direct6_ns: Option<f64>,
    pub counted: u64,
    pub sent: u64,
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

fn per_run(before: &ProgInfo, after: &ProgInfo) -> (u64, f64) {
    let runs = after.run_cnt - before.run_cnt;
    let ns = (after.run_time_ns - before.run_time_ns) as f64 / runs.max(1) as f64;
    (runs, ns)
}

pub fn run(drops: &mut DropCollector, packets: u64) -> Result<EbpfReport> {
    let stats = BpfStats::enable()?;
    let empty = EmptyProgram::attach(c"kfree_skb").context("attaching the empty program")?;
    let o = retina_agent::drops::probe::offsets_from_btf(&retina_agent::btf::Btf::from_sys()?)?;
    let variants = ReadVariants::attach(
        &ReadOffsets {
            skb_dev: o.skb_dev,
            skb_len: o.skb_len,
            skb_protocol: o.skb_protocol,
            dev_ifindex: o.dev_ifindex,
            dev_net: o.dev_net,
            net_inum: o.net_inum,
        },
        c"kfree_skb",
        vmlinux_typedef_id("btf_trace_kfree_skb")?,
    )
    .context("attaching the read-method variants")?;
    // The probe attaches its BTF-typed program where the kernel allows it, else the raw
    // tracepoint one: measure whichever is loaded.
    let ebpf = drops.probe_mut().ebpf_mut();
    let (ours_name, ours_fd) = [
        retina_ebpf_common::BTF_PROGRAM_NAME,
        retina_ebpf_common::PROGRAM_NAME,
    ]
    .into_iter()
    .find_map(|name| {
        let fd = ebpf
            .program(name)?
            .fd()
            .ok()?
            .as_fd()
            .try_clone_to_owned()
            .ok()?;
        Some((name, fd))
    })
    .context("the agent's drop program is not loaded")?;
    let ns = NetNs::new("rbd")?;
    let inode = ns.inode()?;
    let path = format!("/run/netns/{}", ns.name);
    let mut links = Links::new()?;
    links.refresh()?;

    let counts0 = drops_in(drops, &links, inode)?;
    let ours0 = ProgInfo::of(ours_fd.as_fd())?;
    let empty0 = ProgInfo::of(empty.prog.as_fd())?;
    let probe0 = ProgInfo::of(variants.probe.0.as_fd())?;
    let direct0 = match &variants.direct {
        Some((fd, _)) => Some(ProgInfo::of(fd.as_fd())?),
        None => None,
    };
    let flood = net::flood(&path, 9, packets, 256)?;
    // Let softirq processing finish.
    sys::sleep(Duration::from_millis(300))?;
    let ours1 = ProgInfo::of(ours_fd.as_fd())?;
    let empty1 = ProgInfo::of(empty.prog.as_fd())?;
    let probe1 = ProgInfo::of(variants.probe.0.as_fd())?;
    let direct1 = match &variants.direct {
        Some((fd, _)) => Some(ProgInfo::of(fd.as_fd())?),
        None => None,
    };
    let counts1 = drops_in(drops, &links, inode)?;

    let (ours_runs, ours_ns) = per_run(&ours0, &ours1);
    let (empty_runs, empty_ns) = per_run(&empty0, &empty1);
    let (_, probe6_ns) = per_run(&probe0, &probe1);
    let direct6_ns = direct0.zip(direct1).map(|(a, b)| per_run(&a, &b).1);
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
    let variants_error = variants.direct_error.clone();
    drop(variants);
    drop(empty);
    drop(stats);
    let json = json!({
        "datagrams_sent": flood.sent,
        "flood_seconds": sys::round3(flood.elapsed.as_secs_f64()),
        "flood_rate_per_s": (flood.sent as f64 / flood.elapsed.as_secs_f64()).round(),
        "flood_sender_cpu_ns_per_datagram": sys::round3(flood.cpu.as_nanos() as f64 / flood.sent.max(1) as f64),
        "agent_program": {
            "name": ours_name,
            "info": ours1.json(),
            "runs": ours_runs,
            "ns_per_run": sys::round3(ours_ns),
        },
        "empty_program": {
            "info": empty1.json(),
            "runs": empty_runs,
            "ns_per_run": sys::round3(empty_ns),
        },
        "overhead_ns_per_drop_above_empty": sys::round3(ours_ns - empty_ns),
        "read_method": {
            "what": "the agent's six kernel reads per drop and nothing else",
            "probe_read_kernel_raw_tp_ns_per_run": sys::round3(probe6_ns),
            "direct_btf_loads_tp_btf_ns_per_run": direct6_ns.map(sys::round3),
            "direct_error": variants_error,
        },
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
        counted,
        sent: flood.sent,
    })
}
