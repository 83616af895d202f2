//! Kernel drop counting, end to end: real drops generated in network namespaces the tests
//! create, counted by the real eBPF program, read through `retina-agent snapshot` run as the
//! packaged unit runs the agent (uid 65534 with `CAP_BPF` and `CAP_PERFMON`); the traffic is
//! made by the test, as root. The one test that runs the agent as root is about what only
//! root can do: naming an interface inside another network namespace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing, with its message"
)]

use std::collections::BTreeMap;

use retina_tests::{
    unit::{self, CONFIG, Proc, agent_as_unit, snapshot_as_unit_with},
    *,
};

const NO_SOCKET: &str = "NO_SOCKET";
const TRACEPOINT_NAME: &str = "kfree_skb";
const NETFILTER_DROP: &str = "NETFILTER_DROP";
/// UDP payload the traffic helper sends.
const PAYLOAD: u64 = 32;
/// At the drop point of an unclaimed or filtered UDP datagram the IP header has been
/// pulled: skb->len is the UDP header plus payload.
const UDP_LEN_AT_DROP: u64 = 8 + PAYLOAD;

/// `retina-agent snapshot --cumulative --format json EXTRA` as the packaged unit runs the
/// agent, while `during` makes the test's drops (as root, in the test's process).
fn snapshot(
    extra: &[&str],
    during: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<serde_json::Value> {
    let (doc, _stderr) = snapshot_as_unit_with(Proc::Host, CONFIG, extra, during)?;
    Ok(doc)
}

/// `retina-agent ARGS` as the packaged unit runs the agent, its exit status unchecked.
fn unit_output(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(agent_as_unit(args)
        .stdin(std::process::Stdio::null())
        .output()?)
}

/// `count` datagrams of 32 bytes from inside `ns` to `dst`, with the traffic helper.
fn udp_in(ns: &NetNs, dst: &str, count: &str) -> anyhow::Result<()> {
    ns.exec(&traffic(), &["udp", dst, count, "32"]).map(|_| ())
}

/// The drop points of one namespace, as (reason, interface index) → packets. By index: as
/// the unit (without `CAP_SYS_ADMIN`) the agent cannot name an interface inside another
/// namespace.
fn by_reason(doc: &serde_json::Value, netns: u64) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for p in points(
        doc,
        "retina.drop.count",
        &[("network.namespace.inode", &netns.to_string())],
    ) {
        let key = (
            attr_str(p, "drop.reason").unwrap_or_default(),
            attr_str(p, "network.interface.index").unwrap_or_default(),
        );
        *out.entry(key).or_insert(0) += p["value"].as_u64().unwrap();
    }
    out
}

#[test]
fn udp_to_closed_port_counts_no_socket() -> anyhow::Result<()> {
    require_root();
    let ns = NetNs::new("rdrop")?;
    let inode = ns.inode()?;
    let (doc, stderr) = snapshot_as_unit_with(Proc::Host, CONFIG, &[], || {
        udp_in(&ns, "127.0.0.1:9", "1000")
    })?;
    let inode_s = inode.to_string();
    let want = [
        ("drop.reason", NO_SOCKET),
        ("network.namespace.inode", inode_s.as_str()),
        ("network.type", "ipv4"),
    ];
    assert_eq!(sum(&doc, "retina.drop.count", &want), 1000, "{doc:#}");
    assert_eq!(
        sum(&doc, "retina.drop.bytes", &want),
        1000 * UDP_LEN_AT_DROP,
        "{doc:#}"
    );
    let pts = points(&doc, "retina.drop.count", &want);
    assert_eq!(pts.len(), 1, "one series: {pts:#?}");
    let p = pts[0];
    assert_eq!(p["type"], "sum");
    assert_eq!(p["unit"], "{packet}");
    // lo inside the namespace has ifindex 1, like the host's lo: the drop must carry the
    // test namespace, and no name from the host's table. Naming it inside the namespace
    // needs CAP_SYS_ADMIN, which the unit lacks (`check` says so): root's naming is
    // `drops_on_one_side_of_a_veth_pair_between_namespaces`.
    assert_eq!(attr_str(p, "network.interface.index").as_deref(), Some("1"));
    assert_eq!(attr_str(p, "network.interface.name"), None, "{p:#}");
    // ... and the log says so, once, naming the capability.
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("interface names inside other network namespaces"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].contains("INFO") && said[0].contains("CAP_SYS_ADMIN"),
        "{stderr}"
    );
    assert_eq!(
        attr_str(p, "network.namespace.name").as_deref(),
        Some(ns.name.as_str())
    );
    Ok(())
}

/// Kernels without BTF-enabled tracepoints run the raw tracepoint program: it must count
/// exactly as well, and `check` must name the hook each flavour uses.
#[test]
fn both_hooks_count_exactly() -> anyhow::Result<()> {
    require_root();
    for (hook, program) in [("raw", "kfree_skb"), ("btf", "kfree_skb_btf")] {
        let ns = NetNs::new("rhook")?;
        let inode = ns.inode()?.to_string();
        let doc = snapshot(&["--drop-hook", hook], || udp_in(&ns, "127.0.0.1:9", "250"))?;
        let want = [
            ("drop.reason", NO_SOCKET),
            ("network.namespace.inode", inode.as_str()),
            ("network.interface.index", "1"),
        ];
        assert_eq!(
            sum(&doc, "retina.drop.count", &want),
            250,
            "{hook}: {doc:#}"
        );
        assert_eq!(
            sum(&doc, "retina.drop.bytes", &want),
            250 * UDP_LEN_AT_DROP,
            "{hook}"
        );
        let check = unit_output(&["--drop-hook", hook, "check"])?;
        let text = String::from_utf8_lossy(&check.stdout);
        let probe_line = text
            .lines()
            .find(|l| l.contains("probe"))
            .unwrap_or_default()
            .to_string();
        assert!(
            probe_line.contains(&format!("tracepoint {TRACEPOINT_NAME}"))
                && probe_line.contains(if hook == "raw" { "raw" } else { "BTF" }),
            "{hook} ({program}): {text}"
        );
    }
    Ok(())
}

#[test]
fn nftables_drop_counts_netfilter_drop() -> anyhow::Result<()> {
    require_root();
    let ns = NetNs::new("rnft")?;
    ns.exec(
        "nft",
        &["add table inet retina_test; add chain inet retina_test input { type filter hook input priority 0; }; add rule inet retina_test input udp dport 9999 drop"],
    )?;
    let doc = snapshot(&[], || udp_in(&ns, "127.0.0.1:9999", "500"))?;
    let got = by_reason(&doc, ns.inode()?);
    // lo, index 1 inside the namespace.
    assert_eq!(
        got.get(&(NETFILTER_DROP.to_string(), "1".to_string())),
        Some(&500),
        "{got:?}"
    );
    // The filter drops them before any socket lookup: no NO_SOCKET for this traffic.
    assert_eq!(
        got.get(&(NO_SOCKET.to_string(), "1".to_string())),
        None,
        "{got:?}"
    );
    let inode = ns.inode()?.to_string();
    let want = [
        ("drop.reason", NETFILTER_DROP),
        ("network.namespace.inode", inode.as_str()),
    ];
    // The input hook sees the datagram before the IP header is pulled: IPv4 header (20
    // bytes, no options) plus UDP header plus payload.
    assert_eq!(
        sum(&doc, "retina.drop.bytes", &want),
        500 * (20 + UDP_LEN_AT_DROP)
    );
    Ok(())
}

/// Sets up `veth` with `a` on one side (host namespace when `a_ns` is None) and `b` in
/// `b_ns`, addresses 10.x.y.1/24 and .2, IPv6 off and static neighbours so no ARP or IPv6
/// chatter mixes with the test traffic.
fn wire(
    veth: &Veth,
    a_ns: Option<&NetNs>,
    b_ns: &NetNs,
    subnet: u8,
) -> anyhow::Result<(String, String)> {
    let a_ip = format!("10.231.{subnet}.1");
    let b_ip = format!("10.231.{subnet}.2");
    let in_a = |args: &[&str]| match a_ns {
        Some(ns) => ns.exec(args[0], &args[1..]).map(|_| ()),
        None => run(args[0], &args[1..]).map(|_| ()),
    };
    let a_if = &veth.host;
    let b_if = &veth.peer;
    in_a(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{a_if}.disable_ipv6=1"),
    ])?;
    b_ns.exec(
        "sysctl",
        &["-qw", &format!("net.ipv6.conf.{b_if}.disable_ipv6=1")],
    )?;
    in_a(&["ip", "addr", "add", &format!("{a_ip}/24"), "dev", a_if])?;
    b_ns.exec("ip", &["addr", "add", &format!("{b_ip}/24"), "dev", b_if])?;
    in_a(&["ip", "link", "set", a_if, "up"])?;
    b_ns.exec("ip", &["link", "set", b_if, "up"])?;
    let mac = |ns: Option<&NetNs>, ifname: &str| -> anyhow::Result<String> {
        let path = format!("/sys/class/net/{ifname}/address");
        let out = match ns {
            Some(ns) => ns.exec("cat", &[&path])?,
            None => run("cat", [&path])?,
        };
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    };
    let a_mac = mac(a_ns, a_if)?;
    let b_mac = mac(Some(b_ns), b_if)?;
    in_a(&[
        "ip",
        "neigh",
        "replace",
        &b_ip,
        "lladdr",
        &b_mac,
        "dev",
        a_if,
        "nud",
        "permanent",
    ])?;
    b_ns.exec(
        "ip",
        &[
            "neigh",
            "replace",
            &a_ip,
            "lladdr",
            &a_mac,
            "dev",
            b_if,
            "nud",
            "permanent",
        ],
    )?;
    Ok((a_ip, b_ip))
}

/// The agent as root: naming an interface inside another namespace (rtnetlink asked from
/// inside it) needs CAP_SYS_ADMIN, which the unit does not have; as the unit the same drops
/// are counted by index, without a name (`udp_to_closed_port_counts_no_socket`).
#[test]
fn drops_on_one_side_of_a_veth_pair_between_namespaces() -> anyhow::Result<()> {
    require_root();
    let a = NetNs::new("rva")?;
    let b = NetNs::new("rvb")?;
    let mut veth = Veth::new("rv")?;
    veth.move_peer(&b)?;
    run("ip", ["link", "set", &veth.host, "netns", &a.name])?;
    let (_, b_ip) = wire(&veth, Some(&a), &b, 1)?;
    let b_ifindex = b.ifindex(&veth.peer)?;
    let doc = snapshot_json(&[
        "--",
        "ip",
        "netns",
        "exec",
        &a.name,
        &traffic(),
        "udp",
        &format!("{b_ip}:9"),
        "700",
        "32",
    ])?;
    let inode_b = b.inode()?.to_string();
    let want = [
        ("drop.reason", NO_SOCKET),
        ("network.namespace.inode", inode_b.as_str()),
        ("network.interface.name", veth.peer.as_str()),
        ("network.interface.index", &b_ifindex.to_string()),
        ("network.type", "ipv4"),
    ];
    assert_eq!(sum(&doc, "retina.drop.count", &want), 700, "{doc:#}");
    assert_eq!(sum(&doc, "retina.drop.bytes", &want), 700 * UDP_LEN_AT_DROP);
    // The sending side dropped nothing.
    let a_drops = by_reason(&doc, a.inode()?);
    assert!(a_drops.is_empty(), "sender namespace dropped: {a_drops:?}");
    Ok(())
}

#[test]
fn host_side_drops_carry_the_host_interface_name() -> anyhow::Result<()> {
    require_root();
    let ns = NetNs::new("rvh")?;
    let mut veth = Veth::new("rh")?;
    veth.move_peer(&ns)?;
    let (host_ip, _) = wire(&veth, None, &ns, 2)?;
    let host_inode = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?
        .to_string();
    let doc = snapshot(&[], || udp_in(&ns, &format!("{host_ip}:9"), "300"))?;
    let want = [
        ("drop.reason", NO_SOCKET),
        ("network.namespace.inode", host_inode.as_str()),
        ("network.interface.name", veth.host.as_str()),
    ];
    assert_eq!(sum(&doc, "retina.drop.count", &want), 300, "{doc:#}");
    Ok(())
}

#[test]
fn full_map_counts_overflow_instead_of_losing_drops() -> anyhow::Result<()> {
    require_root();
    let a = NetNs::new("rofa")?;
    let b = NetNs::new("rofb")?;
    let doc = snapshot(&["--drop-map-entries", "1"], || {
        udp_in(&a, "127.0.0.1:9", "300")?;
        udp_in(&b, "127.0.0.1:9", "200")
    })?;
    let count_a = sum(
        &doc,
        "retina.drop.count",
        &[("network.namespace.inode", &a.inode()?.to_string())],
    );
    let count_b = sum(
        &doc,
        "retina.drop.count",
        &[("network.namespace.inode", &b.inode()?.to_string())],
    );
    let overflow = sum(&doc, "retina.drop.overflow.count", &[]);
    // One key fits; whichever namespace did not get it went to the overflow counter whole.
    assert!(count_a == 0 || count_a == 300, "a: {count_a}");
    assert!(count_b == 0 || count_b == 200, "b: {count_b}");
    assert!(
        count_a == 0 || count_b == 0,
        "both fit in a one-entry map: {doc:#}"
    );
    assert!(
        overflow >= 500 - count_a - count_b,
        "overflow {overflow}, a {count_a}, b {count_b}"
    );
    assert_eq!(sum(&doc, "retina.drop.map.capacity", &[]), 1);
    Ok(())
}

#[test]
fn reason_names_from_btf_match_the_tracepoint_format() -> anyhow::Result<()> {
    require_root();
    let _tracefs = TracefsMount::ensure()?;
    let format = std::fs::read_to_string(format!("{TRACEFS}/events/skb/kfree_skb/format"))?;
    // print fmt: ... __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, ... }, ...)
    let symbolic = format
        .split("__print_symbolic(REC->reason,")
        .nth(1)
        .expect("kfree_skb format prints reasons symbolically");
    let mut from_format = BTreeMap::new();
    for entry in symbolic.split('{').skip(1) {
        let Some((value, rest)) = entry.split_once(',') else {
            continue;
        };
        let Some(name) = rest.split('"').nth(1) else {
            continue;
        };
        let value = value.trim();
        let value = match value.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16)?,
            None => value.parse()?,
        };
        from_format.insert(value, name.to_string());
    }
    assert!(
        from_format.len() > 50,
        "parsed only {} reasons",
        from_format.len()
    );

    let out = unit_output(&["reasons", "--format", "json"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ours: BTreeMap<u32, String> = doc["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["value"].as_u64().unwrap() as u32,
                r["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (value, name) in &from_format {
        assert_eq!(ours.get(value), Some(name), "reason {value}");
    }
    Ok(())
}

#[test]
fn without_capabilities_drops_are_reported_unavailable_not_a_panic() -> anyhow::Result<()> {
    require_root();
    let out = unit::setpriv(&[])
        .arg(agent_bin())
        .args(["snapshot", "--format", "json", "--duration", "100ms"])
        .stdin(std::process::Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("missing capabilities CAP_BPF, CAP_PERFMON"),
        "stderr should name the missing capabilities: {stderr}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let degraded = doc["degraded"].as_array().unwrap();
    assert!(
        degraded.iter().any(|d| d["collector"] == "drops"
            && d["reason"].as_str().unwrap().contains("CAP_BPF")),
        "{doc:#}"
    );
    Ok(())
}

#[test]
fn missing_or_broken_btf_gives_a_clear_reason() -> anyhow::Result<()> {
    require_root();
    let dir = std::env::temp_dir().join(format!("retina-btf-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let garbage = dir.join("garbage");
    std::fs::write(&garbage, b"not btf at all, longer than a header")?;
    let no_enum = dir.join("no-enum");
    std::fs::write(&no_enum, fixture_btf(&[]))?;
    let no_tracepoint = dir.join("no-tracepoint");
    std::fs::write(
        &no_tracepoint,
        fixture_btf(&[("SKB_DROP_REASON_NO_SOCKET", 3)]),
    )?;
    // (BTF file, expected reason, whether `reasons` can still list names from it)
    let cases = [
        (
            "/nonexistent/vmlinux".to_string(),
            "cannot read BTF /nonexistent/vmlinux",
            false,
        ),
        (garbage.display().to_string(), "malformed BTF", false),
        (
            no_enum.display().to_string(),
            "no `enum skb_drop_reason`: drop reasons need Linux 5.17",
            false,
        ),
        (
            no_tracepoint.display().to_string(),
            "no `kfree_skb` tracepoint",
            true,
        ),
    ];
    for (path, want, names_available) in cases {
        let out = unit_output(&[
            "--btf",
            &path,
            "snapshot",
            "--format",
            "json",
            "--duration",
            "50ms",
        ])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{path}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains(want),
            "{path}: expected {want:?} in {stderr}"
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(doc["degraded"][0]["collector"], "drops", "{doc:#}");
        let reasons = unit_output(&["--btf", &path, "reasons"])?;
        assert_eq!(
            reasons.status.success(),
            names_available,
            "`reasons` with {path}"
        );
        assert!(!String::from_utf8_lossy(&reasons.stderr).contains("panicked"));
    }
    Ok(())
}

#[test]
fn a_nearly_full_map_sheds_keys_of_vanished_namespaces() -> anyhow::Result<()> {
    use retina_agent::{
        agent::Agent,
        collectors::drops::DropsConfig,
        config::Config,
        model::{Metric, Number},
    };
    require_root();
    let options = Config {
        drops: DropsConfig {
            map_entries: 64,
            ..DropsConfig::default()
        },
        ..Config::default()
    };
    let rt = runtime()?;
    let _rt = rt.enter();
    let mut agent = Agent::new(&options)?;
    assert!(agent.degraded().is_empty(), "{:?}", agent.degraded());
    let t = traffic();
    let send = |ns: &NetNs, n: &str| ns.exec(&t, &["udp", "127.0.0.1:9", n, "32"]).map(|_| ());
    // Read the probe's numbers for one namespace, and the map's housekeeping counters.
    let read = |agent: &Agent, inode: u64| {
        let (mut drops, mut pruned, mut overflow) = (0, 0, 0);
        agent.visit(
            &mut |m: &'static Metric, attrs: &[opentelemetry::KeyValue], v: Number| {
                let Number::U64(v) = v else { return };
                match m.name {
                    "retina.drop.count"
                        if attrs.iter().any(|kv| {
                            kv.key.as_str() == "network.namespace.inode"
                                && kv.value == opentelemetry::Value::I64(inode as i64)
                        }) =>
                    {
                        drops += v
                    }
                    "retina.drop.map.pruned" => pruned = v,
                    // The shared map's overflow (not the user namespaces' pool's).
                    "retina.drop.overflow.count" if attrs.is_empty() => overflow = v,
                    _ => {}
                }
            },
        );
        (drops, pruned, overflow)
    };

    // 30 namespaces take 30 of 64 entries; after a cycle 29 of them are deleted, then 18 new
    // ones bring the map to 48 entries (75 %, where housekeeping starts). Other drops on
    // the host can only add to that, and after pruning there is room to spare.
    let keep = NetNs::new("rpk")?;
    let gone: Vec<NetNs> = (0..29)
        .map(|_| NetNs::new("rpg"))
        .collect::<Result<_, _>>()?;
    let gone_inodes: Vec<u64> = gone.iter().map(NetNs::inode).collect::<Result<_, _>>()?;
    send(&keep, "10")?;
    for ns in &gone {
        send(ns, "10")?;
    }
    let keep_inode = keep.inode()?;
    let all_drops = |agent: &mut Agent| {
        agent.cycle();
        let ours = gone_inodes.iter().chain([&keep_inode]);
        ours.map(|inode| read(agent, *inode).0).sum::<u64>()
    };
    poll::settle(|| Ok(all_drops(&mut agent)), |&n| n >= 300)?;
    assert_eq!(read(&agent, gone_inodes[0]).0, 10, "drops before deletion");
    drop(gone);
    let fill: Vec<NetNs> = (0..18)
        .map(|_| NetNs::new("rpf"))
        .collect::<Result<_, _>>()?;
    for ns in &fill {
        send(ns, "10")?;
    }
    // The new keys reach the map as the kernel processes the datagrams: the cycle that
    // prunes is the first to see it 75 % full. Pruned series are exported once more with
    // their final value, then gone.
    let pruned_at = poll::until(|| {
        agent.cycle();
        let (drops, pruned, _) = read(&agent, gone_inodes[0]);
        assert_eq!(drops, 10, "a deleted namespace's series, pruned {pruned}");
        Ok((pruned >= 29).then_some(()))
    })?;
    assert!(
        pruned_at.is_some(),
        "no cycle pruned the map: {:?}",
        read(&agent, 0)
    );
    agent.cycle();
    for inode in &gone_inodes {
        assert_eq!(
            read(&agent, *inode).0,
            0,
            "series of a deleted namespace remains"
        );
    }
    assert_eq!(
        read(&agent, keep.inode()?).0,
        10,
        "a live namespace's series was pruned"
    );
    let fill_inodes: Vec<u64> = fill.iter().map(NetNs::inode).collect::<Result<_, _>>()?;
    let fill_drops = |agent: &mut Agent| -> Vec<u64> {
        agent.cycle();
        fill_inodes
            .iter()
            .map(|inode| read(agent, *inode).0)
            .collect()
    };
    let counts = poll::settle(
        || Ok(fill_drops(&mut agent)),
        |c: &Vec<u64>| c.iter().all(|&n| n >= 10),
    )?;
    assert!(
        counts.iter().all(|&n| n == 10),
        "a new namespace's series was pruned: {counts:?}"
    );
    let (_, pruned, _) = read(&agent, 0);
    assert!(pruned >= 29, "pruned {pruned}");

    // The freed room takes new keys with their attributes, not the overflow counter.
    let d = NetNs::new("rpd")?;
    let e = NetNs::new("rpe")?;
    send(&d, "25")?;
    send(&e, "35")?;
    let (d_inode, e_inode) = (d.inode()?, e.inode()?);
    let (d_drops, e_drops, overflow) = poll::settle(
        || {
            agent.cycle();
            let (d_drops, _, overflow) = read(&agent, d_inode);
            Ok((d_drops, read(&agent, e_inode).0, overflow))
        },
        |&(d, e, _)| d + e >= 60,
    )?;
    assert_eq!((d_drops, e_drops, overflow), (25, 35, 0));
    Ok(())
}

/// Drops counted by `agent` in the series `ours` selects, and the map's pruned count.
fn drops_and_pruned(
    agent: &retina_agent::agent::Agent,
    ours: &dyn Fn(&[opentelemetry::KeyValue]) -> bool,
) -> (u64, u64) {
    use retina_agent::model::{Metric, Number};
    let (mut drops, mut pruned) = (0, 0);
    agent.visit(
        &mut |m: &'static Metric, attrs: &[opentelemetry::KeyValue], v: Number| {
            let Number::U64(v) = v else { return };
            match m.name {
                "retina.drop.count" if ours(attrs) => drops += v,
                "retina.drop.map.pruned" => pruned = v,
                _ => {}
            }
        },
    );
    (drops, pruned)
}

/// `want` drops counted in the series `ours` selects; then, once `veth` is deleted, their
/// final value is exported once more, the map's pruned count grows, and a cycle later the
/// series are gone.
fn assert_series_leave_with(
    agent: &mut retina_agent::agent::Agent,
    veth: Veth,
    ours: &dyn Fn(&[opentelemetry::KeyValue]) -> bool,
    want: u64,
) -> anyhow::Result<()> {
    let (drops, pruned_before) = poll::settle(
        || {
            agent.cycle();
            Ok(drops_and_pruned(agent, ours))
        },
        |&(drops, _)| drops >= want,
    )?;
    assert_eq!(drops, want, "drops before the interface goes");
    drop(veth);
    agent.cycle();
    let (drops, pruned_after) = drops_and_pruned(agent, ours);
    assert_eq!(drops, want, "final value of the deleted interface");
    assert!(
        pruned_after > pruned_before,
        "{pruned_before} -> {pruned_after}"
    );
    agent.cycle();
    assert_eq!(
        drops_and_pruned(agent, ours).0,
        0,
        "series of the deleted interface remain"
    );
    Ok(())
}

/// Also with drop locations on, where one series sums the keys of one function.
#[test]
fn keys_of_a_deleted_host_interface_leave_with_it() -> anyhow::Result<()> {
    use retina_agent::{agent::Agent, collectors::drops::DropsConfig, config::Config};
    require_root();
    for locations in [false, true] {
        let options = Config {
            drops: DropsConfig {
                locations,
                ..DropsConfig::default()
            },
            ..Config::default()
        };
        let rt = runtime()?;
        let _rt = rt.enter();
        let mut agent = Agent::new(&options)?;
        assert!(agent.degraded().is_empty(), "{:?}", agent.degraded());
        let ns = NetNs::new("rdel")?;
        let mut veth = Veth::new("rd")?;
        veth.move_peer(&ns)?;
        let (host_ip, _) = wire(&veth, None, &ns, 3)?;
        let host_if = veth.host.clone();
        agent.cycle();
        ns.exec(&traffic(), &["udp", &format!("{host_ip}:9"), "40", "32"])?;
        let ours = |attrs: &[opentelemetry::KeyValue]| {
            attrs.iter().any(|kv| {
                kv.key.as_str() == "network.interface.name" && kv.value.as_str() == host_if.as_str()
            }) && attrs.iter().any(|kv| kv.key.as_str() == "drop.location") == locations
        };
        assert_series_leave_with(&mut agent, veth, &ours, 40)?;
    }
    Ok(())
}

/// The same inside a named namespace: a pod's interface goes with its veth while the
/// namespace stays (a persistent namespace with churning interfaces would otherwise keep
/// every dead interface's keys until the map is 75 % full, and the memory with them).
#[test]
fn keys_of_an_interface_deleted_in_a_named_namespace_leave_with_it() -> anyhow::Result<()> {
    use retina_agent::{agent::Agent, config::Config};
    require_root();
    let rt = runtime()?;
    let _rt = rt.enter();
    let mut agent = Agent::new(&Config::default())?;
    assert!(agent.degraded().is_empty(), "{:?}", agent.degraded());
    let ns = NetNs::new("rnd")?;
    let inode = ns.inode()?.to_string();
    let mut veth = Veth::new("rn")?;
    veth.move_peer(&ns)?;
    let (_, peer_ip) = wire(&veth, None, &ns, 4)?;
    agent.cycle();
    // NO_SOCKET drops on the peer, inside the namespace, which stays: only the interface
    // goes.
    run(&traffic(), ["udp", &format!("{peer_ip}:9"), "30", "32"])?;
    let ours = |attrs: &[opentelemetry::KeyValue]| {
        attrs
            .iter()
            .any(|kv| kv.key.as_str() == "network.namespace.inode" && kv.value.to_string() == inode)
    };
    assert_series_leave_with(&mut agent, veth, &ours, 30)?;
    drop(ns);
    Ok(())
}

/// `retina.drop.missed` is the kernel's own count of the runs it skipped for the agent's
/// program (`recursion_misses`, what `bpftool prog show` prints): read before and after
/// bpftool's, the agent's figure brackets it.
#[test]
fn missed_drops_are_the_kernels_recursion_misses() -> anyhow::Result<()> {
    use retina_agent::{
        agent::Agent,
        config::Config,
        model::{Metric, Number},
    };
    require_root();
    let rt = runtime()?;
    let _rt = rt.enter();
    let mut agent = Agent::new(&Config::default())?;
    assert!(agent.degraded().is_empty(), "{:?}", agent.degraded());
    let ns = NetNs::new("rmis")?;
    ns.exec(&traffic(), &["udp", "127.0.0.1:9", "2000", "32"])?;
    let missed = |agent: &mut Agent| {
        agent.cycle();
        let mut v = None;
        agent.visit(
            &mut |m: &'static Metric, _: &[opentelemetry::KeyValue], n: Number| {
                if m.name == "retina.drop.missed"
                    && let Number::U64(n) = n
                {
                    v = Some(n);
                }
            },
        );
        v
    };
    let before = missed(&mut agent).expect("retina.drop.missed not reported");
    let out = run("bpftool", ["-j", "prog", "show"])?;
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    // Program names are cut at 15 characters.
    let ours: Vec<&serde_json::Value> = progs
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("bpftool output: {progs}"))?
        .iter()
        .filter(|p| {
            let name = p["name"].as_str().unwrap_or_default();
            [
                retina_ebpf_common::BTF_PROGRAM_NAME,
                retina_ebpf_common::PROGRAM_NAME,
            ]
            .iter()
            .any(|n| n.starts_with(name) && !name.is_empty())
        })
        .collect();
    assert_eq!(ours.len(), 1, "the agent's program among {progs:#}");
    // bpftool leaves the field out while it is 0.
    let kernel = ours[0]["recursion_misses"].as_u64().unwrap_or(0);
    let after = missed(&mut agent).expect("retina.drop.missed not reported");
    assert!(
        before <= kernel && kernel <= after,
        "agent {before}..{after}, kernel {kernel}"
    );
    drop(ns);
    Ok(())
}

/// A removed key's slot in the counts array is reused, zeroed, for the next new key, and
/// the programs' per-CPU key-to-slot caches forget the removed key: drops of a key that
/// comes back after removal start from zero in a slot of their own, and never land in the
/// slot now holding another key.
#[test]
fn removed_keys_free_their_slot_and_leave_no_stale_cache() -> anyhow::Result<()> {
    use retina_agent::collectors::drops::probe::{DropProbe, ProbeOptions};
    use retina_ebpf_common::{DROPS_MAP, DropKey};
    require_root();
    let btf = retina_agent::kernel::btf::Btf::from_sys()?;
    let mut probe = DropProbe::load(
        &btf,
        &ProbeOptions {
            max_entries: 64,
            ..Default::default()
        },
    )?;
    let mut buffers = probe.buffers();
    let a = NetNs::new("rsla")?;
    let c = NetNs::new("rslc")?;
    let (ia, ic) = (a.inode()? as u32, c.inode()? as u32);
    let send = |ns: &NetNs, n: u32| -> anyhow::Result<()> {
        ns.exec(&traffic(), &["udp", "127.0.0.1:9", &n.to_string(), "32"])?;
        Ok(())
    };
    // Packets per namespace, and its key.
    let read =
        |probe: &mut DropProbe, buffers: &mut _| -> anyhow::Result<BTreeMap<u32, (u64, DropKey)>> {
            let mut out = BTreeMap::new();
            probe.read(buffers, |k, v| {
                if k.netns == ia || k.netns == ic {
                    let e = out.entry(k.netns).or_insert((0, *k));
                    e.0 += v.packets;
                }
            })?;
            Ok(out)
        };
    let slot_of = |probe: &mut DropProbe, key: &DropKey| -> anyhow::Result<Option<u32>> {
        let map = probe.ebpf_mut().map(DROPS_MAP).expect("drop map");
        let map = aya::maps::HashMap::<_, DropKey, u32>::try_from(map)?;
        Ok(map.get(key, 0).ok())
    };

    // The kernel counts a datagram when it processes it, maybe after `traffic` returned.
    let has = |got: &BTreeMap<u32, (u64, DropKey)>, ns: u32, n: u64| {
        got.get(&ns).is_some_and(|g| g.0 >= n)
    };
    send(&a, 100)?;
    let got = poll::settle(|| read(&mut probe, &mut buffers), |got| has(got, ia, 100))?;
    let (n, key_a) = got[&ia];
    assert_eq!(n, 100);
    let slot_a = slot_of(&mut probe, &key_a)?.expect("slot of a");
    assert!(probe.remove(&key_a)?);
    // This read frees the slot (after a grace period) and no longer sees the key.
    let got = read(&mut probe, &mut buffers)?;
    assert!(!got.contains_key(&ia), "{got:?}");

    // The next new key takes the freed slot (top of the free stack), from zero.
    send(&c, 70)?;
    poll::settle(|| read(&mut probe, &mut buffers), |got| has(got, ic, 70))?;
    // The removed key comes back: a fresh slot, from zero, not the cached old one.
    send(&a, 50)?;
    let got = poll::settle(|| read(&mut probe, &mut buffers), |got| has(got, ia, 50))?;
    assert_eq!(got.get(&ic).map(|g| g.0), Some(70), "{got:?}");
    assert_eq!(got.get(&ia).map(|g| g.0), Some(50), "{got:?}");
    let slot_c = slot_of(&mut probe, &got[&ic].1)?.expect("slot of c");
    let slot_a2 = slot_of(&mut probe, &key_a)?.expect("new slot of a");
    assert_ne!(slot_a2, slot_a, "a kept its old slot");
    assert_ne!(slot_a2, slot_c);
    let mut overflow_buffers = probe.buffers();
    assert_eq!(probe.overflow(&mut overflow_buffers)?.packets, 0);
    Ok(())
}
