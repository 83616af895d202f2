//! The qdisc collector against the kernel's own numbers: a `tbf` qdisc with a tiny rate
//! and an `htb` tree (classes and a child qdisc) on veths, flooded with UDP until they
//! drop; the agent's packets, bytes, drops, overlimits and requeues must equal what
//! `tc -s` prints in the same test, once the queues have drained. The agent runs as the
//! packaged unit runs it (uid 65534, `CAP_BPF`, `CAP_PERFMON`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use retina_tests::{
    unit::{Proc, snapshot_as_unit},
    *,
};
use serde_json::Value;

/// A veth whose host end (IPv4 only, static neighbour) sends to its peer in a namespace.
struct Link {
    veth: Veth,
    _ns: NetNs,
    peer_ip: String,
}

fn link(subnet: u8) -> Result<Link> {
    let ns = NetNs::new("rqd")?;
    let mut veth = Veth::new("rqd")?;
    // No IPv6 on the host end: its router solicitations and MLD reports would pass the
    // qdisc at any time and move the counts between two reads.
    std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", veth.host),
        "1",
    )?;
    veth.move_peer(&ns)?;
    let host_ip = format!("10.213.{subnet}.1/24");
    let peer_ip = format!("10.213.{subnet}.2");
    ip(&["addr", "add", &host_ip, "dev", &veth.host])?;
    ip(&["link", "set", &veth.host, "up"])?;
    ns.exec(
        "ip",
        &["addr", "add", &format!("{peer_ip}/24"), "dev", &veth.peer],
    )?;
    ns.exec("ip", &["link", "set", &veth.peer, "up"])?;
    let mac = ns.link_attr(&veth.peer, "address")?;
    // No ARP either way (the peer's ICMP errors would make the host answer an ARP
    // request through the qdisc).
    let neigh = [
        "neigh",
        "replace",
        "ADDR",
        "lladdr",
        "MAC",
        "dev",
        "DEV",
        "nud",
        "permanent",
    ];
    let mut n = neigh;
    (n[2], n[4], n[6]) = (&peer_ip, &mac, &veth.host);
    ip(&n)?;
    let host_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", veth.host))?;
    let host_addr = format!("10.213.{subnet}.1");
    let mut n = neigh;
    (n[2], n[4], n[6]) = (&host_addr, host_mac.trim(), &veth.peer);
    ns.exec("ip", &n)?;
    Ok(Link {
        veth,
        _ns: ns,
        peer_ip,
    })
}

fn tc(args: &[&str]) -> Result<()> {
    run("tc", args).map(|_| ())
}

/// One qdisc or class as `tc -s` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TcEntry {
    class: bool,
    kind: String,
    handle: String,
    parent: String,
    bytes: u64,
    packets: u64,
    drops: u64,
    overlimits: u64,
    requeues: u64,
    qlen: u64,
}

/// `tc -s -j qdisc show dev DEV`.
fn tc_qdiscs(dev: &str) -> Result<Vec<TcEntry>> {
    let out = run("tc", ["-s", "-j", "qdisc", "show", "dev", dev])?;
    let doc: Value = serde_json::from_slice(&out.stdout).context("tc -j output")?;
    let num = |q: &Value, k: &str| q[k].as_u64().with_context(|| format!("{k} in {q}"));
    doc.as_array()
        .context("tc -j: not an array")?
        .iter()
        .map(|q| {
            Ok(TcEntry {
                class: false,
                kind: q["kind"].as_str().context("kind")?.to_string(),
                handle: q["handle"].as_str().context("handle")?.to_string(),
                parent: if q["root"] == Value::Bool(true) {
                    "root".into()
                } else {
                    q["parent"].as_str().context("parent")?.to_string()
                },
                bytes: num(q, "bytes")?,
                packets: num(q, "packets")?,
                drops: num(q, "drops")?,
                overlimits: num(q, "overlimits")?,
                requeues: num(q, "requeues")?,
                qlen: num(q, "qlen")?,
            })
        })
        .collect()
}

/// `tc -s class show dev DEV` (iproute2 6.1 has no JSON for classes): classes with
/// statistics.
fn tc_classes(dev: &str) -> Result<Vec<TcEntry>> {
    let out = run("tc", ["-s", "class", "show", "dev", dev])?;
    let text = String::from_utf8(out.stdout)?;
    let mut all = Vec::new();
    let mut current: Option<TcEntry> = None;
    let n = |s: &str| -> Result<u64> {
        s.trim_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .with_context(|| format!("number in {s:?}"))
    };
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.first().copied() {
            Some("class") => {
                all.extend(current.take());
                ensure!(t.len() >= 4, "class line {line:?}");
                let parent = if t[3] == "root" {
                    "root"
                } else {
                    t.get(4).context("parent")?
                };
                current = Some(TcEntry {
                    class: true,
                    kind: t[1].into(),
                    handle: t[2].into(),
                    parent: parent.to_string(),
                    bytes: u64::MAX,
                    packets: 0,
                    drops: 0,
                    overlimits: 0,
                    requeues: 0,
                    qlen: 0,
                });
            }
            // Sent 3276 bytes 26 pkt (dropped 774, overlimits 790 requeues 0)
            Some("Sent") => {
                let c = current.as_mut().context("Sent line before a class line")?;
                ensure!(t.len() >= 11, "stats line {line:?}");
                c.bytes = n(t[1])?;
                c.packets = n(t[3])?;
                c.drops = n(t[6])?;
                c.overlimits = n(t[8])?;
                c.requeues = n(t[10])?;
            }
            // backlog 0b 0p requeues 0
            Some("backlog") => {
                let c = current
                    .as_mut()
                    .context("backlog line before a class line")?;
                c.qlen = n(t.get(2).context("backlog line")?)?;
            }
            _ => {}
        }
    }
    all.extend(current);
    // Classes without statistics (tbf's pseudo class) have no Sent line.
    Ok(all.into_iter().filter(|c| c.bytes != u64::MAX).collect())
}

fn tc_all(dev: &str) -> Result<Vec<TcEntry>> {
    let mut v = tc_qdiscs(dev)?;
    v.extend(tc_classes(dev)?);
    Ok(v)
}

/// Polls `tc` until every queue of `dev` is empty and two reads agree.
fn settled(dev: &str) -> Result<Vec<TcEntry>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = tc_all(dev)?;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = tc_all(dev)?;
        if now == last && now.iter().all(|e| e.qlen == 0) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("tc statistics of {dev} did not settle: {now:?}");
        }
        last = now;
    }
}

/// The agent's view of `dev`, as `TcEntry`s, from `snapshot --cumulative`.
fn ours(doc: &Value, dev: &str) -> Result<Vec<TcEntry>> {
    let mut out = Vec::new();
    for p in points(
        doc,
        "retina.qdisc.packets",
        &[("network.interface.name", dev)],
    ) {
        let get = |k: &str| attr_str(p, k).with_context(|| format!("{k} in {p}"));
        let (kind, handle, parent, class) = (
            get("qdisc.kind")?,
            get("qdisc.handle")?,
            get("qdisc.parent")?,
            get("qdisc.class")?,
        );
        let want = [
            ("network.interface.name", dev),
            ("qdisc.handle", handle.as_str()),
            ("qdisc.parent", parent.as_str()),
            ("qdisc.class", class.as_str()),
        ];
        let one = |metric: &str| -> Result<u64> {
            let found = points(doc, metric, &want);
            ensure!(found.len() == 1, "{metric} {want:?}: {found:?}");
            found[0]["value"].as_u64().context("value")
        };
        out.push(TcEntry {
            class: class == "class",
            kind,
            handle: handle.clone(),
            parent: parent.clone(),
            bytes: one("retina.qdisc.bytes")?,
            packets: one("retina.qdisc.packets")?,
            drops: one("retina.qdisc.drops")?,
            overlimits: one("retina.qdisc.overlimits")?,
            requeues: one("retina.qdisc.requeues")?,
            qlen: one("retina.qdisc.qlen")?,
        });
    }
    out.sort_by(|a, b| (a.class, &a.handle).cmp(&(b.class, &b.handle)));
    Ok(out)
}

/// Floods `link`, waits for the queues to drain, then compares the agent with `tc`
/// (read before and after the snapshot, which must agree).
fn flood_and_compare(l: &Link, datagrams: &str) -> Result<Vec<TcEntry>> {
    let dev = &l.veth.host;
    let dst = format!("{}:9", l.peer_ip);
    run(&traffic(), ["udp", dst.as_str(), datagrams, "200"])?;
    for _attempt in 0..3 {
        let mut before = settled(dev)?;
        let (doc, _) = snapshot_as_unit(Proc::Host, || Ok(()))?;
        let mut after = tc_all(dev)?;
        if before != after {
            eprintln!("tc moved while the agent read it; again: {before:?} -> {after:?}");
            continue;
        }
        for v in [&mut before, &mut after] {
            v.sort_by(|a, b| (a.class, &a.handle).cmp(&(b.class, &b.handle)));
        }
        let ours = ours(&doc, dev)?;
        assert_eq!(ours, before, "agent (left) vs tc -s (right) for {dev}");
        return Ok(ours);
    }
    bail!("{dev}: tc statistics kept moving");
}

#[test]
fn tbf_drops_overlimits_and_packets_equal_tc() -> Result<()> {
    require_root();
    let l = link(71)?;
    let dev = l.veth.host.clone();
    tc(&[
        "qdisc", "replace", "dev", &dev, "root", "tbf", "rate", "8kbit", "burst", "1600", "limit",
        "3000",
    ])?;
    let seen = flood_and_compare(&l, "800")?;
    let tbf = seen
        .iter()
        .find(|e| e.kind == "tbf" && !e.class)
        .context("no tbf qdisc in the agent's output")?;
    assert_eq!(tbf.parent, "root");
    assert!(tbf.drops > 0, "the flood did not make tbf drop: {tbf:?}");
    assert!(tbf.overlimits > 0, "{tbf:?}");
    assert!(tbf.packets > 0, "{tbf:?}");
    // Every datagram is either sent or dropped.
    assert_eq!(tbf.packets + tbf.drops, 800, "{tbf:?}");
    // tbf's pseudo class has no statistics: not exported.
    assert!(seen.iter().all(|e| !e.class), "{seen:?}");
    Ok(())
}

#[test]
fn htb_classes_and_child_qdisc_equal_tc() -> Result<()> {
    require_root();
    let l = link(72)?;
    let dev = l.veth.host.clone();
    tc(&[
        "qdisc", "replace", "dev", &dev, "root", "handle", "1:", "htb", "default", "10",
    ])?;
    tc(&[
        "class", "add", "dev", &dev, "parent", "1:", "classid", "1:1", "htb", "rate", "1mbit",
    ])?;
    tc(&[
        "class", "add", "dev", &dev, "parent", "1:1", "classid", "1:10", "htb", "rate", "8kbit",
        "ceil", "8kbit",
    ])?;
    tc(&[
        "qdisc", "add", "dev", &dev, "parent", "1:10", "handle", "10:", "pfifo", "limit", "5",
    ])?;
    let seen = flood_and_compare(&l, "300")?;
    let find = |class: bool, handle: &str| {
        seen.iter()
            .find(|e| e.class == class && e.handle == handle)
            .with_context(|| format!("{handle} (class: {class}) missing: {seen:?}"))
    };
    let root = find(false, "1:")?;
    assert_eq!((root.kind.as_str(), root.parent.as_str()), ("htb", "root"));
    let child = find(false, "10:")?;
    assert_eq!(
        (child.kind.as_str(), child.parent.as_str()),
        ("pfifo", "1:10")
    );
    assert!(
        child.drops > 0,
        "the flood did not overflow the leaf: {child:?}"
    );
    let leaf = find(true, "1:10")?;
    assert_eq!((leaf.kind.as_str(), leaf.parent.as_str()), ("htb", "1:1"));
    assert!(leaf.packets > 0 && leaf.overlimits > 0, "{leaf:?}");
    let inner = find(true, "1:1")?;
    assert_eq!(inner.parent, "root");
    assert_eq!(child.packets + child.drops, 300, "{child:?}");
    Ok(())
}
