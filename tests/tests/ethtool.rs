//! NIC driver statistics and link state, checked against the real `ethtool` on veths the
//! tests create and on the machine's eth0.
//!
//! Run with `--test-threads=1`: the tests create and delete interfaces and count ioctls.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing, with its message"
)]

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use opentelemetry::KeyValue;
use retina_agent::{
    collectors::{
        Collector,
        ethtool::{
            EthtoolCollector, EthtoolConfig, EthtoolSocket, GuardedBuf, IfName, InterfaceStatus,
            LinkStateCollector, QueueMode, Reply, parse_queue_stat,
        },
    },
    filter::Pattern,
    kernel::links::Links,
    model::{Metric, Number},
};
use retina_tests::*;

/// A data point flattened to (metric, interface, stat name or other key, queue) → value.
type Key = (String, String, String, Option<String>);

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn capture(c: &dyn Collector) -> BTreeMap<Key, u64> {
    let mut out = BTreeMap::new();
    c.visit(&mut |m: &'static Metric, attrs: &[KeyValue], v: Number| {
        let Number::U64(v) = v else {
            panic!("{} reported a float", m.name)
        };
        let second = attr(attrs, "nic.stat.name")
            .or_else(|| {
                attr(attrs, "nic.ring")
                    .map(|r| format!("{r}/{}", attr(attrs, "nic.ring.setting").unwrap()))
            })
            .or_else(|| {
                attr(attrs, "nic.channel.type")
                    .map(|t| format!("{t}/{}", attr(attrs, "nic.channel.setting").unwrap()))
            })
            .or_else(|| attr(attrs, "nic.driver"))
            .unwrap_or_default();
        let key = (
            m.name.to_string(),
            attr(attrs, "network.interface.name").expect("interface attribute"),
            second,
            attr(attrs, "nic.queue"),
        );
        assert!(
            out.insert(key.clone(), v).is_none(),
            "duplicate series {key:?}"
        );
    });
    out
}

/// Driver statistics of one interface from a capture: stat name (with `#queue` in split
/// mode) → value.
fn stats_of(points: &BTreeMap<Key, u64>, iface: &str) -> BTreeMap<String, u64> {
    points
        .iter()
        .filter(|((m, i, _, _), _)| m == "retina.nic.driver.stat" && i == iface)
        .map(|((_, _, s, q), v)| {
            let name = match q {
                Some(q) => format!("{s}#{q}"),
                None => s.clone(),
            };
            (name, *v)
        })
        .collect()
}

/// `ethtool -S IFACE` as name → value, in the driver's order (first occurrence wins).
fn ethtool_s(iface: &str) -> Result<Vec<(String, u64)>> {
    let out = run("ethtool", ["-S", iface])?;
    let text = String::from_utf8(out.stdout)?;
    let mut stats = Vec::new();
    let mut lines = text.lines();
    ensure!(
        lines.next().map(str::trim) == Some("NIC statistics:"),
        "unexpected ethtool -S output: {text}"
    );
    for line in lines {
        let line = line.trim();
        // Names may themselves contain ": " (bnxt's "[0]: rx_ucast_packets").
        let (name, value) = line
            .rsplit_once(": ")
            .with_context(|| format!("ethtool -S line {line:?}"))?;
        if !stats.iter().any(|(n, _)| n == name) {
            stats.push((name.to_string(), value.trim().parse()?));
        }
    }
    Ok(stats)
}

fn ifindex(name: &str) -> Result<u32> {
    Ok(
        std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?
            .trim()
            .parse()?,
    )
}

fn config(mode: QueueMode, include: &[&str]) -> EthtoolConfig {
    EthtoolConfig {
        per_queue: mode,
        interfaces_include: Pattern::list(include).expect("test patterns compile"),
        interfaces_exclude: Vec::new(),
        ..EthtoolConfig::default()
    }
}

fn cycle(links: &mut Links, c: &mut dyn Collector) -> Result<()> {
    links.refresh()?;
    c.collect(links).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[test]
fn idle_veth_stats_equal_ethtool_exactly() -> Result<()> {
    require_root();
    let veths = [Veth::new("reti")?, Veth::new("reti")?];
    let names: Vec<&str> = veths
        .iter()
        .flat_map(|v| [v.host.as_str(), v.peer.as_str()])
        .collect();
    let mut links = Links::new()?;
    let mut c = EthtoolCollector::new(&config(QueueMode::Keep, &names))?;
    cycle(&mut links, &mut c)?;
    let points = capture(&c);
    for name in &names {
        let ours = stats_of(&points, name);
        let mut theirs: BTreeMap<String, u64> = ethtool_s(name)?.into_iter().collect();
        let n = theirs.len() as u32;
        // The peer's interface index: not a count, never exported.
        ensure!(
            theirs.remove("peer_ifindex").is_some(),
            "{name}: no peer_ifindex in ethtool -S: {theirs:?}"
        );
        assert_eq!(ours, theirs, "{name}: ours vs ethtool -S");
        assert!(ours.contains_key("rx_queue_0_xdp_packets"), "{ours:?}");
        let info = points
            .keys()
            .find(|(m, i, _, _)| m == "retina.nic.info" && i == name)
            .map(|k| k.2.clone());
        assert_eq!(
            info.as_deref(),
            Some("veth"),
            "{name}: retina.nic.info driver"
        );
        assert_eq!(
            c.status(ifindex(name)?),
            Some(InterfaceStatus::Active {
                stats: n,
                series: n - 1,
                valid: true
            })
        );
    }
    // Only the included interfaces are queried.
    assert_eq!(
        points
            .keys()
            .filter(|(m, i, _, _)| m == "retina.nic.driver.stat" && !names.contains(&i.as_str()))
            .count(),
        0
    );
    Ok(())
}

#[test]
fn eth0_stats_bracket_ethtool() -> Result<()> {
    require_root();
    ensure!(
        std::path::Path::new("/sys/class/net/eth0").exists(),
        "this test needs the machine's eth0"
    );
    let mut links = Links::new()?;
    for mode in [QueueMode::Keep, QueueMode::Sum, QueueMode::Split] {
        let mut c = EthtoolCollector::new(&config(mode, &["eth0"]))?;
        cycle(&mut links, &mut c)?;
        let before = stats_of(&capture(&c), "eth0");
        let theirs = ethtool_s("eth0")?;
        cycle(&mut links, &mut c)?;
        let after = stats_of(&capture(&c), "eth0");
        ensure!(!before.is_empty(), "no eth0 statistics");
        // What ethtool printed, folded the way this mode exports it.
        let mut folded: BTreeMap<String, u64> = BTreeMap::new();
        let plain: Vec<&str> = theirs
            .iter()
            .filter(|(n, _)| parse_queue_stat(n).is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        for (name, v) in &theirs {
            let q = parse_queue_stat(name).filter(|q| !plain.contains(&q.base.as_str()));
            let key = match (mode, q) {
                (QueueMode::Keep, _) | (_, None) => name.clone(),
                (QueueMode::Sum, Some(q)) => q.base,
                (QueueMode::Split, Some(q)) => format!("{}#{}", q.base, q.queue),
                (QueueMode::Drop, Some(_)) => continue,
            };
            *folded.entry(key).or_default() += v;
        }
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            folded.keys().collect::<Vec<_>>(),
            "{mode:?}: series names"
        );
        for (name, v) in &folded {
            let (lo, hi) = (before[name], after[name]);
            assert!(
                lo <= *v && *v <= hi,
                "{mode:?} eth0 {name}: ethtool says {v}, ours went {lo} -> {hi}"
            );
        }
    }
    Ok(())
}

/// A veth pair with the host end in the host namespace and the peer in a namespace
/// ([`wire_host_to`]: no IPv6, permanent neighbour entries), so the only packets the host end
/// receives are the ones the test sends.
struct Wire {
    veth: Veth,
    ns: NetNs,
    host_ip: String,
}

impl Wire {
    fn new(subnet: u8) -> Result<Wire> {
        let ns = NetNs::new("retn")?;
        let mut veth = Veth::new("retw")?;
        let (host_ip, _) = wire_host_to(&mut veth, &ns, subnet)?;
        // veth counts received packets in its ethtool stats on the NAPI path only: GRO on
        // the receiving end enables NAPI, TSO off on the sender makes every UDP skb
        // eligible for it.
        run("ethtool", ["-K", &veth.host, "gro", "on"])?;
        ns.exec("ethtool", &["-K", &veth.peer, "tso", "off"])?;
        Ok(Wire { veth, ns, host_ip })
    }

    /// Sends `count` UDP datagrams from the namespace to the host end.
    fn send(&self, count: u64) -> Result<()> {
        let traffic = helper_bin("traffic").display().to_string();
        self.ns.exec(
            &traffic,
            &[
                "udp",
                &format!("{}:9", self.host_ip),
                &count.to_string(),
                "32",
            ],
        )?;
        Ok(())
    }

    /// The namespace end's `tx_dropped`: veth counts there a datagram it could not hand to
    /// the host end because that end's receive ring (256 entries) was full, which a sender
    /// outrunning the receiver's NAPI poll causes (an emulated 6.1 guest beside another
    /// lost 424 of 1 000).
    fn peer_tx_dropped(&self) -> Result<u64> {
        let dropped = self
            .ns
            .link_attr(&self.veth.peer, "statistics/tx_dropped")?;
        Ok(dropped.parse()?)
    }
}

#[test]
fn udp_datagrams_move_veth_stats_by_exactly_n() -> Result<()> {
    require_root();
    const N: u64 = 1000;
    let wire = Wire::new(251)?;
    let host = wire.veth.host.clone();
    let mut links = Links::new()?;
    let mut keep = EthtoolCollector::new(&config(QueueMode::Keep, &[&host]))?;
    let mut sum = EthtoolCollector::new(&config(QueueMode::Sum, &[&host]))?;
    let mut split = EthtoolCollector::new(&config(QueueMode::Split, &[&host]))?;
    let mut all: [&mut dyn Collector; 3] = [&mut keep, &mut sum, &mut split];
    links.refresh()?;
    for c in all.iter_mut() {
        c.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let before: Vec<_> = all.iter().map(|c| stats_of(&capture(*c), &host)).collect();
    let dropped_before = wire.peer_tx_dropped()?;
    wire.send(N)?;
    // Every datagram is either received by the host end or counted as dropped by the
    // sending end when the host end's ring is full: the kernel's own count of what arrived
    // is N minus those. The host end counts a datagram in its NAPI poll, which can run after
    // send() returned: collect until both counts add up to N or 10 s have passed; the exact
    // comparisons below decide.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let key = "rx_queue_0_xdp_packets";
    let (after, dropped) = loop {
        links.refresh()?;
        for c in all.iter_mut() {
            c.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let after: Vec<_> = all.iter().map(|c| stats_of(&capture(*c), &host)).collect();
        let dropped = wire.peer_tx_dropped()? - dropped_before;
        let moved =
            after[0].get(key).copied().unwrap_or(0) - before[0].get(key).copied().unwrap_or(0);
        if moved + dropped >= N || std::time::Instant::now() >= deadline {
            break (after, dropped);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    ensure!(
        dropped < N,
        "all {N} datagrams were dropped by the sending end: nothing reached the counters"
    );
    let arrived = N - dropped;
    println!("{arrived} of {N} datagrams arrived, {dropped} dropped at the sending end");
    let delta = |i: usize, name: &str| -> u64 { after[i][name] - before[i][name] };
    assert_eq!(
        delta(0, key),
        arrived,
        "keep ({dropped} dropped at the sender): {:?}",
        after[0]
    );
    assert_eq!(delta(0, "rx_queue_0_xdp_bytes"), arrived * (20 + 8 + 32));
    assert_eq!(
        delta(1, "rx_queue_xdp_packets"),
        arrived,
        "sum: {:?}",
        after[1]
    );
    assert_eq!(
        delta(2, "rx_queue_xdp_packets#0"),
        arrived,
        "split: {:?}",
        after[2]
    );
    // Nothing else moved, and the values are what ethtool prints now (the link is idle).
    for (name, v) in &after[0] {
        if !name.starts_with("rx_queue_0_xdp_") {
            assert_eq!(before[0][name], *v, "{name} moved");
        }
    }
    let mut theirs: BTreeMap<String, u64> = ethtool_s(&host)?.into_iter().collect();
    theirs.remove("peer_ifindex"); // not a count: never exported
    assert_eq!(after[0], theirs);
    Ok(())
}

#[test]
fn churn_leaves_no_state_behind() -> Result<()> {
    require_root();
    let mut links = Links::new()?;
    // Every interface (lo too): the collector must track exactly the link table.
    let mut c = EthtoolCollector::new(&config(QueueMode::Sum, &[]))?;
    let rt = runtime()?;
    let _rt = rt.enter();
    let mut ls = LinkStateCollector::new(&config(QueueMode::Sum, &[]))?;
    cycle(&mut links, &mut c)?;
    let mut gone = Vec::new();
    for round in 0..3 {
        let pairs: Vec<Veth> = (0..4).map(|_| Veth::new("retc")).collect::<Result<_>>()?;
        cycle(&mut links, &mut c)?;
        ls.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
        rt.block_on(ls.refresh(&links, Duration::from_secs(10)))?;
        let points = capture(&c);
        let link_points = capture(&ls);
        for v in &pairs {
            for name in [&v.host, &v.peer] {
                let idx = ifindex(name)?;
                assert!(
                    matches!(
                        c.status(idx),
                        Some(InterfaceStatus::Active { valid: true, .. })
                    ),
                    "round {round}: {name}: {:?}",
                    c.status(idx)
                );
                assert!(!stats_of(&points, name).is_empty(), "{name}");
                assert_eq!(
                    link_points.get(&(
                        "retina.nic.link.speed".into(),
                        name.to_string(),
                        String::new(),
                        None
                    )),
                    Some(&10_000_000_000),
                    "{name}: {link_points:?}"
                );
                gone.push((idx, name.to_string()));
            }
        }
        assert_eq!(c.tracked_interfaces(), links.iter().count());
        drop(pairs);
        cycle(&mut links, &mut c)?;
        ls.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(c.tracked_interfaces(), links.iter().count());
        let points = capture(&c);
        let link_points = capture(&ls);
        for (idx, name) in &gone {
            assert_eq!(c.status(*idx), None, "{name} still tracked");
            assert!(stats_of(&points, name).is_empty(), "{name} still reported");
            assert!(
                !link_points.keys().any(|k| &k.1 == name),
                "{name} still has link state"
            );
        }
    }
    Ok(())
}

/// Deletes a link (and its veth peer) on drop.
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        if let Err(e) = ip(&["link", "del", &self.0]) {
            eprintln!("cleanup: {e}");
        }
    }
}

#[test]
fn reused_ifindex_starts_over() -> Result<()> {
    require_root();
    // Pick an ifindex far above the ones in use, create a veth on it, delete it, and
    // create another with a different name on the same index.
    let index = 40_000 + std::process::id() % 10_000;
    let mut links = Links::new()?;
    let mut c = EthtoolCollector::new(&config(QueueMode::Sum, &[]))?;
    let first = unique_name("retr");
    ip(&[
        "link",
        "add",
        &first,
        "index",
        &index.to_string(),
        "type",
        "veth",
        "peer",
        "name",
        &format!("{first}p"),
    ])?;
    let cleanup = LinkGuard(first.clone());
    cycle(&mut links, &mut c)?;
    assert!(matches!(
        c.status(index),
        Some(InterfaceStatus::Active { .. })
    ));
    assert!(!stats_of(&capture(&c), &first).is_empty());
    drop(cleanup);
    let second = unique_name("rets");
    ip(&[
        "link",
        "add",
        &second,
        "index",
        &index.to_string(),
        "type",
        "veth",
        "peer",
        "name",
        &format!("{second}p"),
    ])?;
    let _cleanup = LinkGuard(second.clone());
    cycle(&mut links, &mut c)?;
    let points = capture(&c);
    assert!(
        stats_of(&points, &first).is_empty(),
        "old name still reported"
    );
    assert_eq!(
        stats_of(&points, &second),
        ethtool_s(&second)?
            .into_iter()
            .filter(|(n, _)| n != "peer_ifindex") // not a count: never exported
            .map(|(n, v)| (parse_queue_stat(&n).map_or(n, |q| q.base), v))
            .collect()
    );
    Ok(())
}

#[test]
fn lo_is_skipped_and_retried_only_occasionally() -> Result<()> {
    require_root();
    let veth = Veth::new("retl")?;
    let mut links = Links::new()?;
    let cfg = EthtoolConfig {
        unsupported_retry_cycles: 5,
        ..config(QueueMode::Sum, &["lo", &veth.host])
    };
    let mut c = EthtoolCollector::new(&cfg)?;
    cycle(&mut links, &mut c)?;
    let lo = ifindex("lo")?;
    assert_eq!(
        c.status(lo),
        Some(InterfaceStatus::Unsupported { retry_at: 1 + 5 })
    );
    assert!(!capture(&c).keys().any(|k| k.1 == "lo"), "lo reported");
    // Cycles 2..=5: one GSTATS for the veth per cycle and nothing else at all.
    let start = c.ioctl_counts();
    for _ in 2..=5 {
        cycle(&mut links, &mut c)?;
    }
    let d = c.ioctl_counts();
    assert_eq!(d.gstats - start.gstats, 4, "{start:?} -> {d:?}");
    assert_eq!(
        (d.gdrvinfo, d.gsset_info, d.gstrings),
        (start.gdrvinfo, start.gsset_info, start.gstrings),
        "setup ioctls in steady state"
    );
    // Cycle 6 asks lo again, then it waits five more cycles.
    cycle(&mut links, &mut c)?;
    let e = c.ioctl_counts();
    assert_eq!(e.gdrvinfo - d.gdrvinfo, 1);
    assert_eq!(
        c.status(lo),
        Some(InterfaceStatus::Unsupported { retry_at: 11 })
    );
    Ok(())
}

#[test]
fn link_state_matches_ethtool() -> Result<()> {
    require_root();
    let veth = Veth::new("retk")?;
    let mut links = Links::new()?;
    links.refresh()?;
    let rt = runtime()?;
    let _rt = rt.enter();
    let mut ls = LinkStateCollector::new(&config(QueueMode::Sum, &[&veth.host, "eth0"]))?;
    ls.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
    rt.block_on(ls.refresh(&links, Duration::from_secs(10)))?;
    let points = capture(&ls);
    let get = |metric: &str, iface: &str, second: &str| {
        points
            .get(&(
                metric.to_string(),
                iface.to_string(),
                second.to_string(),
                None,
            ))
            .copied()
    };
    // veth: 10000Mb/s full duplex, channels rx/tx 1 of 2 (as `ethtool`/`ethtool -l` say).
    assert_eq!(
        get("retina.nic.link.speed", &veth.host, ""),
        Some(10_000_000_000)
    );
    assert_eq!(get("retina.nic.link.duplex", &veth.host, ""), Some(1));
    let ethtool_l = String::from_utf8(run("ethtool", ["-l", &veth.host])?.stdout)?;
    let mut sections = ethtool_l.split("Current hardware settings:");
    let (max, cur) = (sections.next().unwrap(), sections.next().unwrap());
    for (setting, text) in [("max", max), ("current", cur)] {
        for (label, kind) in [("RX:", "rx"), ("TX:", "tx"), ("Combined:", "combined")] {
            let want = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .map(str::trim)
                .and_then(|v| v.parse::<u64>().ok());
            assert_eq!(
                get(
                    "retina.nic.channels",
                    &veth.host,
                    &format!("{kind}/{setting}")
                ),
                want,
                "{kind}/{setting}: {ethtool_l}"
            );
        }
    }
    // eth0 (virtio_net): rings as `ethtool -g` says; speed unknown → no point.
    if std::path::Path::new("/sys/class/net/eth0").exists() {
        let g = String::from_utf8(run("ethtool", ["-g", "eth0"])?.stdout)?;
        let mut sections = g.split("Current hardware settings:");
        let (max, cur) = (sections.next().unwrap(), sections.next().unwrap());
        for (setting, text) in [("max", max), ("current", cur)] {
            for (label, ring) in [("RX:", "rx"), ("TX:", "tx")] {
                let want = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(label))
                    .map(str::trim)
                    .and_then(|v| v.parse::<u64>().ok());
                assert_eq!(
                    get("retina.nic.ring.size", "eth0", &format!("{ring}/{setting}")),
                    want,
                    "{ring}/{setting}: {g}"
                );
            }
        }
        let speed = String::from_utf8(run("ethtool", ["eth0"])?.stdout)?;
        if speed.contains("Speed: Unknown") {
            assert_eq!(get("retina.nic.link.speed", "eth0", ""), None);
        }
    }
    // Nothing outside the include list.
    let other: HashMap<_, _> = points
        .iter()
        .filter(|(k, _)| k.1 != veth.host && k.1 != "eth0")
        .collect();
    if !other.is_empty() {
        bail!("unexpected interfaces: {other:?}");
    }
    Ok(())
}

#[test]
fn channel_change_refetches_names() -> Result<()> {
    require_root();
    let veth = Veth::new("retq")?;
    let idx = ifindex(&veth.host)?;
    let mut links = Links::new()?;
    let mut sum = EthtoolCollector::new(&config(QueueMode::Sum, &[&veth.host]))?;
    let mut split = EthtoolCollector::new(&config(QueueMode::Split, &[&veth.host]))?;
    let both = |links: &mut Links, a: &mut EthtoolCollector, b: &mut EthtoolCollector| {
        links.refresh()?;
        a.collect(links).map_err(|e| anyhow::anyhow!("{e}"))?;
        b.collect(links).map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::Ok(())
    };
    both(&mut links, &mut sum, &mut split)?;
    let n1 = ethtool_s(&veth.host)?.len() as u32;
    assert!(
        matches!(sum.status(idx), Some(InterfaceStatus::Active { stats, valid: true, .. }) if stats == n1)
    );
    let split_names = |c: &EthtoolCollector| {
        stats_of(&capture(c), &veth.host)
            .into_keys()
            .collect::<Vec<_>>()
    };
    assert!(!split_names(&split).iter().any(|n| n.ends_with("#1")));

    // Two queues: the count grows under the collector. The next GSTATS reply is longer
    // than the buffer and must be refused (not written past it); names are fetched again
    // the cycle after.
    for (queues, grows) in [("2", true), ("1", false)] {
        run("ethtool", ["-L", &veth.host, "rx", queues, "tx", queues])?;
        let want = ethtool_s(&veth.host)?.len() as u32;
        assert_eq!(want > n1, grows);
        both(&mut links, &mut sum, &mut split)?;
        assert!(
            matches!(
                sum.status(idx),
                Some(InterfaceStatus::Active { valid: false, .. })
            ),
            "{:?}",
            sum.status(idx)
        );
        assert!(
            stats_of(&capture(&sum), &veth.host).is_empty(),
            "stale values reported"
        );
        both(&mut links, &mut sum, &mut split)?;
        assert!(
            matches!(sum.status(idx), Some(InterfaceStatus::Active { stats, valid: true, .. }) if stats == want),
            "{:?}",
            sum.status(idx)
        );
        let names = split_names(&split);
        assert_eq!(names.iter().any(|n| n.ends_with("#1")), grows, "{names:?}");
        // Sum mode: same series whatever the queue count, each the sum over queues.
        let theirs = ethtool_s(&veth.host)?;
        let mut folded: BTreeMap<String, u64> = BTreeMap::new();
        for (n, v) in theirs {
            *folded
                .entry(parse_queue_stat(&n).map_or(n, |q| q.base))
                .or_default() += v;
        }
        // The peer's interface index is not a count: never exported.
        ensure!(folded.remove("peer_ifindex").is_some(), "{folded:?}");
        assert_eq!(stats_of(&capture(&sum), &veth.host), folded);
    }
    Ok(())
}

#[test]
fn count_mismatch_is_detected_not_trusted() -> Result<()> {
    require_root();
    let veth = Veth::new("retg")?;
    let n = ethtool_s(&veth.host)?.len() as u32;
    let sock = EthtoolSocket::new()?;
    let name = IfName::new(&veth.host).context("name")?;
    let mut buf = GuardedBuf::new(4096)?;
    // Exact count: complete.
    let (reply, values) = sock.stats(&name, n, &mut buf)?;
    assert_eq!(reply, Reply::Complete);
    assert_eq!(values.len(), n as usize);
    // Expecting fewer than the driver has. Kernels with the 2025 ioctl fix answer with a
    // count of 0 and copy nothing; older ones copy all `n` values, which runs into the
    // guard page (EFAULT) instead of past the buffer. Either way: no values, and this
    // process is still alive.
    let (reply, values) = sock.stats(&name, n - 3, &mut buf)?;
    assert!(
        matches!(
            reply,
            Reply::CountChanged {
                got: None | Some(0)
            }
        ),
        "{reply:?}"
    );
    assert!(values.is_empty());
    let mut names = 0;
    let reply = sock.stat_names(&name, n - 1, &mut buf, |_| names += 1)?;
    assert!(
        matches!(
            reply,
            Reply::CountChanged {
                got: None | Some(0)
            }
        ),
        "{reply:?}"
    );
    assert_eq!(names, 0);
    // Expecting more: the reply header has the real count (older kernels) or 0.
    let (reply, values) = sock.stats(&name, n + 5, &mut buf)?;
    assert!(
        reply == Reply::CountChanged { got: Some(n) }
            || reply == Reply::CountChanged { got: Some(0) },
        "{reply:?}"
    );
    assert!(values.is_empty());
    // And the exact count still works afterwards.
    assert_eq!(sock.stats(&name, n, &mut buf)?.0, Reply::Complete);
    Ok(())
}
