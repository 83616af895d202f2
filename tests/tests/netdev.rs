//! Interface counters end to end: the rtnetlink table (`retina_agent::kernel::links::Links`) and
//! the `netdev` / `netstat` collectors against real veth pairs and namespaces.
//!
//! Also checks the project's central rule on the real kernel: once warmed up, a cycle
//! (rtnetlink dump, both collectors, visiting every point) allocates nothing.

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet},
    net::UdpSocket,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use retina_agent::{
    collectors::{
        Collector,
        netdev::{NetdevCollector, NetdevConfig},
        netstat::{NetstatCollector, NetstatConfig},
    },
    filter::Pattern,
    kernel::links::{LinkStats, Links},
    model::{Metric, Number},
};
use retina_tests::*;

// ---- Allocation counting (the suite's allocator: tests/tests/main.rs) ----

/// Heap allocations `f` makes on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    retina_tests::alloc::count(f).0 as usize
}

// ---- Helpers ----

/// UDP payload sent by the traffic helper.
const PAYLOAD: u64 = 32;
/// What one datagram adds to a veth's byte counters: Ethernet + IPv4 + UDP headers.
const FRAME: u64 = 14 + 20 + 8 + PAYLOAD;

/// A /24 of 10.232.0.0/16 for this process (drops.rs uses 10.231/16).
fn subnet() -> u8 {
    (std::process::id() % 250) as u8
}

fn netns_path(ns: &NetNs) -> PathBuf {
    Path::new("/run/netns").join(&ns.name)
}

fn mac(ns: Option<&NetNs>, ifname: &str) -> Result<String> {
    match ns {
        Some(ns) => ns.link_attr(ifname, "address"),
        None => Ok(
            std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?
                .trim()
                .to_string(),
        ),
    }
}

/// Host end `veth.host` = 10.232.S.1/24 in the host namespace, `veth.peer` = .2 in `ns`;
/// IPv6 off and permanent neighbour entries on both sides, so only the test's datagrams
/// cross the pair.
fn wire(veth: &mut Veth, ns: &NetNs) -> Result<(String, String)> {
    let s = subnet();
    let (host_ip, peer_ip) = (format!("10.232.{s}.1"), format!("10.232.{s}.2"));
    veth.move_peer(ns)?;
    let (h, p) = (veth.host.as_str(), veth.peer.as_str());
    run(
        "sysctl",
        ["-qw", &format!("net.ipv6.conf.{h}.disable_ipv6=1")],
    )?;
    ns.exec(
        "sysctl",
        &["-qw", &format!("net.ipv6.conf.{p}.disable_ipv6=1")],
    )?;
    ip(&["addr", "add", &format!("{host_ip}/24"), "dev", h])?;
    ns.exec("ip", &["addr", "add", &format!("{peer_ip}/24"), "dev", p])?;
    let (host_mac, peer_mac) = (mac(None, h)?, mac(Some(ns), p)?);
    ip(&[
        "neigh",
        "replace",
        &peer_ip,
        "lladdr",
        &peer_mac,
        "dev",
        h,
        "nud",
        "permanent",
    ])?;
    ns.exec(
        "ip",
        &[
            "neigh",
            "replace",
            &host_ip,
            "lladdr",
            &host_mac,
            "dev",
            p,
            "nud",
            "permanent",
        ],
    )?;
    ip(&["link", "set", h, "up"])?;
    ns.exec("ip", &["link", "set", p, "up"])?;
    Ok((host_ip, peer_ip))
}

/// Waits until `name`'s counters stop moving (link-up noise, if any, has passed).
fn settled(links: &mut Links, name: &str) -> Result<LinkStats> {
    let mut last = None;
    for _ in 0..50 {
        links.refresh()?;
        let now = links
            .get_by_name(name)
            .context(format!("{name} missing"))?
            .stats;
        if last == Some(now) {
            return Ok(now);
        }
        last = Some(now);
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("counters of {name} keep moving")
}

/// `(metric, interface, direction) -> value` from the netdev collector.
fn netdev_points(c: &NetdevCollector) -> BTreeMap<(&'static str, String, String), u64> {
    let mut out = BTreeMap::new();
    c.visit(
        &mut |m: &'static Metric, a: &[opentelemetry::KeyValue], v: Number| {
            let Number::U64(v) = v else { panic!("{v:?}") };
            out.insert((m.name, a[0].value.to_string(), a[1].value.to_string()), v);
        },
    );
    out
}

/// Names of the interfaces in `ns`, according to sysfs.
fn sysfs_names(ns: &NetNs) -> Result<BTreeSet<String>> {
    let out = ns.exec("ls", &["/sys/class/net"])?;
    Ok(String::from_utf8(out.stdout)?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

fn table_names(links: &Links) -> BTreeSet<String> {
    links.iter().map(|l| l.name.to_string()).collect()
}

// ---- Tests ----

#[test]
fn udp_datagrams_move_veth_counters_exactly() -> Result<()> {
    require_root();
    const N: u64 = 500;
    let ns = NetNs::new("rnd")?;
    let mut veth = Veth::new("rnd")?;
    let (host_ip, _) = wire(&mut veth, &ns)?;

    // A receiver on the host end, so no ICMP port-unreachable goes back.
    let sock = UdpSocket::bind(format!("{host_ip}:0"))?;
    // Room for every datagram even if the receiver thread lags (root may exceed rmem_max).
    let rcvbuf: libc::c_int = 8 << 20;
    // SAFETY: valid socket and option buffer of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&rcvbuf as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    ensure!(
        rc == 0,
        "SO_RCVBUFFORCE: {}",
        std::io::Error::last_os_error()
    );
    let dst = sock.local_addr()?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut got = 0u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while got < N && Instant::now() < deadline {
            if sock.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
        got
    });

    let mut host = Links::new()?;
    let mut inner = Links::open_in_netns(&netns_path(&ns))?;
    assert_eq!(inner.netns_inode(), ns.inode()?);
    assert_ne!(inner.netns_inode(), host.netns_inode());
    let mut netdev = NetdevCollector::new(&NetdevConfig {
        include: vec![Pattern::new(&veth.host)?],
        ..NetdevConfig::default()
    });

    let before = settled(&mut host, &veth.host)?;
    let peer_before = settled(&mut inner, &veth.peer)?;
    netdev.collect(&host).map_err(|e| anyhow::anyhow!(e))?;
    let points_before = netdev_points(&netdev);
    let link = host.get_by_name(&veth.host).unwrap();
    let sysfs_index: u32 =
        std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", veth.host))?
            .trim()
            .parse()?;
    assert_eq!(link.ifindex, sysfs_index);
    assert_eq!(link.kind.as_deref(), Some("veth"));
    assert!(link.is_up());
    let instance = link.instance;
    let peer = inner.get_by_name(&veth.peer).unwrap();
    assert_eq!(peer.ifindex, ns.ifindex(&veth.peer)?);

    ns.exec(&traffic(), &["udp", &dst.to_string(), &N.to_string()])?;
    let received = receiver.join().expect("receiver thread");
    assert_eq!(received, N, "datagrams received on the host end");

    let after = settled(&mut host, &veth.host)?;
    let peer_after = settled(&mut inner, &veth.peer)?;
    assert_eq!(after.rx_packets - before.rx_packets, N, "host rx_packets");
    assert_eq!(after.rx_bytes - before.rx_bytes, N * FRAME, "host rx_bytes");
    assert_eq!(after.tx_packets - before.tx_packets, 0, "host tx_packets");
    assert_eq!(after.rx_dropped, before.rx_dropped);
    assert_eq!(after.rx_errors, before.rx_errors);
    assert_eq!(peer_after.tx_packets - peer_before.tx_packets, N, "peer tx");
    assert_eq!(
        peer_after.tx_bytes - peer_before.tx_bytes,
        N * FRAME,
        "peer tx_bytes"
    );
    assert_eq!(host.get_by_name(&veth.host).unwrap().instance, instance);

    // The collector reports the same deltas, and only the included interface.
    netdev.collect(&host).map_err(|e| anyhow::anyhow!(e))?;
    let points_after = netdev_points(&netdev);
    let delta = |m: &'static str, dir: &str| {
        let k = (m, veth.host.clone(), dir.to_string());
        points_after[&k] - points_before[&k]
    };
    assert_eq!(delta("system.network.packet.count", "receive"), N);
    assert_eq!(delta("system.network.io", "receive"), N * FRAME);
    assert_eq!(delta("system.network.packet.count", "transmit"), 0);
    assert_eq!(delta("system.network.packet.dropped", "receive"), 0);
    assert_eq!(delta("system.network.errors", "receive"), 0);
    assert_eq!(points_after.len(), 8, "{points_after:?}");
    Ok(())
}

#[test]
fn churn_leaves_nothing_stale() -> Result<()> {
    require_root();
    // A private namespace: nobody else creates interfaces in it, so the table can be
    // compared with sysfs exactly.
    let ns = NetNs::new("rch")?;
    let mut links = Links::open_in_netns(&netns_path(&ns))?;
    let mut netdev = NetdevCollector::new(&NetdevConfig::default());
    links.refresh()?;
    assert_eq!(table_names(&links), BTreeSet::from(["lo".to_string()]));

    // Enough interfaces for the dump to span many datagrams.
    let pairs = 60;
    let add = |i: usize| {
        ns.exec(
            "ip",
            &[
                "link",
                "add",
                &format!("ca{i}"),
                "type",
                "veth",
                "peer",
                "name",
                &format!("cb{i}"),
            ],
        )
    };
    for i in 0..pairs {
        add(i)?;
    }
    links.refresh()?;
    netdev.collect(&links).map_err(|e| anyhow::anyhow!(e))?;
    assert_eq!(table_names(&links), sysfs_names(&ns)?);
    assert_eq!(links.len(), 1 + 2 * pairs);
    assert_eq!(netdev.exported(), 1 + 2 * pairs);
    let index_of =
        |links: &Links, name: &str| links.get_by_name(name).map(|l| (l.ifindex, l.instance));
    let (ca0, ca0_inst) = index_of(&links, "ca0").unwrap();
    let (ca1, ca1_inst) = index_of(&links, "ca1").unwrap();
    let (ca2, ca2_inst) = index_of(&links, "ca2").unwrap();
    let generation = links.generation();

    // Delete every even pair, rename ca1, recreate ca2 with the same name.
    for i in (0..pairs).step_by(2) {
        ns.exec("ip", &["link", "del", &format!("ca{i}")])?;
    }
    ns.exec("ip", &["link", "set", "ca1", "name", "renamed1"])?;
    add(2)?;
    links.refresh()?;
    netdev.collect(&links).map_err(|e| anyhow::anyhow!(e))?;
    assert_eq!(table_names(&links), sysfs_names(&ns)?);
    assert_ne!(links.generation(), generation);
    assert!(
        links.get(ca0).is_none(),
        "deleted ifindex still in the table"
    );
    assert!(links.get_by_name("ca0").is_none() && links.get_by_name("cb0").is_none());
    let renamed = links.get(ca1).context("renamed interface lost")?;
    assert_eq!(&*renamed.name, "renamed1");
    assert_ne!(renamed.instance, ca1_inst);
    assert!(links.get_by_name("ca1").is_none());
    let (new_ca2, new_ca2_inst) = index_of(&links, "ca2").unwrap();
    assert_ne!(new_ca2, ca2, "the kernel reused an ifindex");
    assert_ne!(new_ca2_inst, ca2_inst);
    assert!(links.get(ca2).is_none());
    assert_ne!(ca0_inst, new_ca2_inst);
    // 1 lo + 30 odd pairs + the recreated pair.
    assert_eq!(links.len(), 1 + pairs + 2);
    let exported: BTreeSet<String> = netdev_points(&netdev).into_keys().map(|k| k.1).collect();
    assert_eq!(
        exported,
        table_names(&links),
        "netdev collector kept stale interfaces"
    );

    // Everything but lo gone.
    for i in (1..pairs).step_by(2) {
        let name = if i == 1 {
            "renamed1".to_string()
        } else {
            format!("ca{i}")
        };
        ns.exec("ip", &["link", "del", &name])?;
    }
    ns.exec("ip", &["link", "del", "ca2"])?;
    links.refresh()?;
    netdev.collect(&links).map_err(|e| anyhow::anyhow!(e))?;
    assert_eq!(table_names(&links), BTreeSet::from(["lo".to_string()]));
    assert_eq!(netdev.exported(), 1);
    Ok(())
}

/// Steady refreshes only ask for counters (`RTM_GETSTATS`); every change that leaves the
/// set of ifindexes alone (rename, MTU, up/down) or changes it (delete and re-create under
/// the same name) still reaches the table on the next refresh, through the link
/// notification socket.
#[test]
fn changes_between_counter_only_refreshes_are_not_missed() -> Result<()> {
    require_root();
    let ns = NetNs::new("rgs")?;
    let mut links = Links::open_in_netns(&netns_path(&ns))?;
    let add = |i: usize| {
        ns.exec(
            "ip",
            &[
                "link",
                "add",
                &format!("ga{i}"),
                "type",
                "veth",
                "peer",
                "name",
                &format!("gb{i}"),
            ],
        )
    };
    for i in 0..4 {
        add(i)?;
    }
    links.refresh()?;
    assert_eq!(table_names(&links), sysfs_names(&ns)?);
    // Nothing changes: counters only.
    let full = links.full_dumps();
    for _ in 0..5 {
        links.refresh()?;
    }
    assert_eq!(links.full_dumps(), full, "steady refreshes did full dumps");
    let (ga1, ga1_inst) = {
        let l = links.get_by_name("ga1").context("ga1")?;
        (l.ifindex, l.instance)
    };
    let generation = links.generation();

    // A rename: same ifindexes, only the notification tells.
    ns.exec("ip", &["link", "set", "ga1", "name", "gr1"])?;
    links.refresh()?;
    let l = links.get(ga1).context("renamed interface lost")?;
    assert_eq!(&*l.name, "gr1");
    assert_ne!(l.instance, ga1_inst);
    assert_ne!(links.generation(), generation);
    assert!(links.get_by_name("ga1").is_none());
    let full = links.full_dumps();
    links.refresh()?;
    assert_eq!(links.full_dumps(), full);

    // MTU and administrative state.
    ns.exec("ip", &["link", "set", "ga3", "mtu", "1400"])?;
    links.refresh()?;
    assert_eq!(links.get_by_name("ga3").context("ga3")?.mtu, Some(1400));
    assert!(!links.get_by_name("ga2").context("ga2")?.is_up());
    ns.exec("ip", &["link", "set", "ga2", "up"])?;
    links.refresh()?;
    assert!(links.get_by_name("ga2").context("ga2")?.is_up());

    // Delete and re-create under the same name: a new ifindex and instance.
    let (ga0, ga0_inst) = {
        let l = links.get_by_name("ga0").context("ga0")?;
        (l.ifindex, l.instance)
    };
    ns.exec("ip", &["link", "del", "ga0"])?;
    add(0)?;
    links.refresh()?;
    assert_eq!(table_names(&links), sysfs_names(&ns)?);
    assert!(
        links.get(ga0).is_none(),
        "deleted ifindex still in the table"
    );
    let l = links.get_by_name("ga0").context("re-created ga0")?;
    assert_ne!((l.ifindex, l.instance), (ga0, ga0_inst));

    // A plain delete.
    ns.exec("ip", &["link", "del", "ga3"])?;
    links.refresh()?;
    assert_eq!(table_names(&links), sysfs_names(&ns)?);

    // More notifications than the socket queues (ENOBUFS): still a full dump.
    for i in 10..110 {
        add(i)?;
    }
    links.refresh()?;
    assert_eq!(table_names(&links), sysfs_names(&ns)?);
    let full = links.full_dumps();
    links.refresh()?;
    assert_eq!(links.full_dumps(), full);
    assert_eq!(table_names(&links), sysfs_names(&ns)?);
    Ok(())
}

#[test]
fn host_table_tracks_veths_created_and_deleted() -> Result<()> {
    require_root();
    let mut links = Links::new()?;
    links.refresh()?;
    let a = Veth::new("rhv")?;
    let b = Veth::new("rhv")?;
    links.refresh()?;
    let index = |name: &str| -> Result<u32> {
        Ok(
            std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?
                .trim()
                .parse()?,
        )
    };
    for name in [&a.host, &a.peer, &b.host, &b.peer] {
        let l = links.get_by_name(name).context(format!("{name} missing"))?;
        assert_eq!(l.ifindex, index(name)?);
        assert_eq!(l.kind.as_deref(), Some("veth"));
    }
    let gone = [a.host.clone(), a.peer.clone()];
    let gone_idx = [index(&gone[0])?, index(&gone[1])?];
    drop(a);
    links.refresh()?;
    for (name, idx) in gone.iter().zip(gone_idx) {
        assert!(
            links.get_by_name(name).is_none(),
            "{name} still in the table"
        );
        assert!(links.get(idx).is_none_or(|l| &*l.name != name));
    }
    assert!(links.get_by_name(&b.host).is_some());
    Ok(())
}

/// A `sleep` running inside `ns`, so `/proc/PID/net` is that namespace's procfs view.
struct NsProcess(Child);

impl NsProcess {
    fn start(ns: &NetNs) -> Result<NsProcess> {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sleep", "300"])
            .stdin(Stdio::null())
            .spawn()?;
        let p = NsProcess(child);
        // `ip netns exec` execs the program in the same process once it entered the ns.
        let want = ns.inode()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ns_link = format!("/proc/{}/ns/net", p.0.id());
            if std::fs::metadata(&ns_link).is_ok_and(|m| m.ino() == want) {
                return Ok(p);
            }
            ensure!(
                Instant::now() < deadline,
                "process did not enter {}",
                ns.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn proc_root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}", self.0.id()))
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn steady_state_cycle_allocates_nothing() -> Result<()> {
    require_root();
    // Everything in a private namespace, so no other test's interfaces or ICMP traffic
    // can legitimately cause allocations (new interfaces, new IcmpMsg fields).
    let ns = NetNs::new("ral")?;
    for i in 0..20 {
        ns.exec(
            "ip",
            &[
                "link",
                "add",
                &format!("aa{i}"),
                "type",
                "veth",
                "peer",
                "name",
                &format!("ab{i}"),
            ],
        )?;
    }
    let inside = NsProcess::start(&ns)?;
    let mut links = Links::open_in_netns(&netns_path(&ns))?;
    let mut netdev = NetdevCollector::new(&NetdevConfig {
        exclude: Pattern::list(&["ab1.*"])?,
        ..NetdevConfig::default()
    });
    let mut netstat = NetstatCollector::new(&NetstatConfig {
        proc_root: inside.proc_root(),
        ..NetstatConfig::default()
    })?;
    let points = Cell::new(0usize);
    let sum = Cell::new(0f64);
    let cycle =
        |links: &mut Links, netdev: &mut NetdevCollector, netstat: &mut NetstatCollector| {
            links.refresh().expect("refresh");
            netdev.collect(links).expect("netdev");
            netstat.collect(links).expect("netstat");
            let mut visitor = |_: &'static Metric, _: &[opentelemetry::KeyValue], v: Number| {
                points.set(points.get() + 1);
                sum.set(sum.get() + v.as_f64());
            };
            netdev.visit(&mut visitor);
            netstat.visit(&mut visitor);
        };
    // Warm-up: interfaces discovered, tables built, buffers sized.
    for _ in 0..3 {
        cycle(&mut links, &mut netdev, &mut netstat);
    }
    let n = allocations_in(|| {
        for _ in 0..100 {
            cycle(&mut links, &mut netdev, &mut netstat);
        }
    });
    assert_eq!(n, 0, "steady-state cycles allocated {n} times");
    let points = points.get();
    assert!(points > 100 * 200, "{points} points visited");
    assert!(sum.get().is_finite());
    assert_eq!(links.len(), 41);
    assert!(netstat.exported() > 100);

    // A new interface is allowed to allocate, and is picked up.
    ns.exec(
        "ip",
        &[
            "link", "add", "new0", "type", "veth", "peer", "name", "new1",
        ],
    )?;
    let n = allocations_in(|| cycle(&mut links, &mut netdev, &mut netstat));
    assert!(n > 0);
    assert!(links.get_by_name("new0").is_some());
    // ...and then the cycle is allocation-free again.
    let n = allocations_in(|| cycle(&mut links, &mut netdev, &mut netstat));
    assert_eq!(n, 0);
    Ok(())
}
