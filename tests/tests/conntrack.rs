//! The conntrack collector against the kernel's own file, with a table made to overflow.
//!
//! `net.netfilter.nf_conntrack_max` is one global limit on this kernel: read-only inside
//! a network namespace, writable in the initial one, and checked against each
//! namespace's own entry count. So the test lowers it for its duration (restored by a
//! guard, also on failure), fills a fresh namespace's table with established (assured,
//! never evicted) TCP connections, and sends UDP datagrams to new ports: each needs a new
//! entry, finds the table full and nothing to evict, and is dropped (`drop`, sendto
//! fails with EPERM). The agent runs inside the namespace (`ip netns exec ...
//! snapshot`), as the packaged unit runs it (uid 65534, `CAP_BPF`, `CAP_PERFMON`), reading
//! that namespace's table, and must equal
//! `/proc/net/stat/nf_conntrack` read there before and after it.

use std::{
    collections::BTreeMap,
    net::{TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
};

use anyhow::{Context, Result, bail, ensure};
use retina_tests::{unit, *};
use serde_json::Value;

const MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
/// Entries the table may hold during the test.
const LIMIT: usize = 4;
/// Datagrams sent to new ports once it is full.
const REFUSED: usize = 10;

/// Sets the global conntrack limit; the previous value comes back on drop.
struct ConntrackMax(String);

impl ConntrackMax {
    fn set(value: usize) -> Result<ConntrackMax> {
        let old = std::fs::read_to_string(MAX).with_context(|| format!("reading {MAX}"))?;
        std::fs::write(MAX, value.to_string()).with_context(|| format!("writing {MAX}"))?;
        Ok(ConntrackMax(old.trim().to_string()))
    }
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(MAX, &self.0) {
            eprintln!("cleanup: restoring {MAX} to {}: {e}", self.0);
        }
    }
}

/// What the namespace's sockets did, and the sockets (kept open: the connections must
/// stay in the table).
struct Sockets {
    _tcp: Vec<TcpStream>,
    _listener: TcpListener,
    refused: usize,
}

/// In a thread that entered `ns`: `LIMIT` loopback TCP connections, then `REFUSED`
/// datagrams to ports nothing else used.
fn fill_and_overflow(ns: &NetNs) -> Result<Sockets> {
    let path = format!("/run/netns/{}", ns.name);
    let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    std::thread::spawn(move || -> Result<Sockets> {
        // SAFETY: `file` is an open namespace file; setns changes only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut tcp = Vec::new();
        for _ in 0..LIMIT {
            let client = TcpStream::connect(addr)?;
            let (server, _) = listener.accept()?;
            tcp.push(client);
            tcp.push(server);
        }
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let mut refused = 0;
        for i in 0..REFUSED {
            match udp.send_to(b"x", ("127.0.0.1", 20000 + i as u16)) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => refused += 1,
                Err(e) => bail!("datagram {i}: {e}"),
                Ok(_) => {}
            }
        }
        Ok(Sockets {
            _tcp: tcp,
            _listener: listener,
            refused,
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

/// `/proc/net/stat/nf_conntrack` of `ns`: (statistic, CPU row) -> value.
fn proc_stats(ns: &NetNs) -> Result<BTreeMap<(String, i64), u64>> {
    let out = ns.exec("cat", &["/proc/net/stat/nf_conntrack"])?;
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next().context("header")?.split_whitespace().collect();
    let mut map = BTreeMap::new();
    for (cpu, line) in lines.enumerate() {
        for (name, v) in names.iter().zip(line.split_whitespace()) {
            if *name != "entries" {
                map.insert((name.to_string(), cpu as i64), u64::from_str_radix(v, 16)?);
            }
        }
    }
    Ok(map)
}

fn sysctl(ns: &NetNs, name: &str) -> Result<u64> {
    let out = ns.exec("cat", &[&format!("/proc/sys/net/netfilter/{name}")])?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// `retina-agent snapshot --cumulative` inside `ns`, as the unit runs the agent.
fn snapshot_in(ns: &NetNs) -> Result<Value> {
    let bin = agent_bin();
    let setpriv = unit::setpriv_args(&unit::unit_capabilities());
    let mut args: Vec<&str> = setpriv[1..].iter().map(String::as_str).collect();
    args.extend([
        bin.to_str().context("agent path")?,
        "snapshot",
        "--format",
        "json",
        "--cumulative",
        "--duration",
        "100ms",
    ]);
    let out = ns.exec(&setpriv[0], &args)?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn ours(doc: &Value) -> Result<BTreeMap<(String, i64), u64>> {
    let mut map = BTreeMap::new();
    for p in points(doc, "retina.conntrack.stat", &[]) {
        let stat = attr_str(p, "conntrack.stat").context("conntrack.stat")?;
        let cpu: i64 = attr_str(p, "cpu").context("cpu")?.parse()?;
        let prev = map.insert((stat, cpu), p["value"].as_u64().context("value")?);
        ensure!(prev.is_none(), "duplicate point {p}");
    }
    Ok(map)
}

fn gauge(doc: &Value, name: &str) -> Result<u64> {
    let p = points(doc, name, &[]);
    ensure!(p.len() == 1, "{name}: {p:?}");
    p[0]["value"].as_u64().context("value")
}

fn total(m: &BTreeMap<(String, i64), u64>, stat: &str) -> u64 {
    m.iter().filter(|(k, _)| k.0 == stat).map(|(_, v)| v).sum()
}

#[test]
fn overflowing_table_counts_equal_the_proc_file() -> Result<()> {
    require_root();
    let ns = NetNs::new("rct")?;
    // A `ct` expression makes the namespace track connections.
    ns.exec("nft", &["add", "table", "ip", "t"])?;
    ns.exec(
        "nft",
        &[
            "add", "chain", "ip", "t", "out", "{", "type", "filter", "hook", "output", "priority",
            "0", ";", "}",
        ],
    )?;
    ns.exec(
        "nft",
        &[
            "add", "rule", "ip", "t", "out", "ct", "state", "new", "counter",
        ],
    )?;
    ensure!(
        sysctl(&ns, "nf_conntrack_count")? == 0,
        "fresh namespace has entries"
    );

    let limit = ConntrackMax::set(LIMIT)?;
    let sockets = fill_and_overflow(&ns)?;
    assert_eq!(sockets.refused, REFUSED, "datagrams conntrack refused");

    let mut last = None;
    for _attempt in 0..3 {
        let before = proc_stats(&ns)?;
        let doc = snapshot_in(&ns)?;
        let after = proc_stats(&ns)?;
        if before != after {
            last = Some((before, after));
            continue;
        }
        let ours = ours(&doc)?;
        assert_eq!(
            ours, before,
            "agent (left) vs /proc/net/stat/nf_conntrack (right)"
        );
        assert_eq!(gauge(&doc, "retina.conntrack.entries")?, LIMIT as u64);
        assert_eq!(
            gauge(&doc, "retina.conntrack.entries")?,
            sysctl(&ns, "nf_conntrack_count")?
        );
        assert_eq!(gauge(&doc, "retina.conntrack.limit")?, LIMIT as u64);
        // The overflow itself: every refused datagram is a `drop`, and none found an
        // entry to evict. (`insert` is not checked: 6.18 leaves it at 0 for connections
        // tracked from packets.)
        assert_eq!(total(&ours, "drop"), REFUSED as u64, "{ours:?}");
        assert_eq!(total(&ours, "early_drop"), 0, "{ours:?}");
        assert_eq!(total(&ours, "insert_failed"), 0, "{ours:?}");
        drop(sockets);
        drop(limit);
        return Ok(());
    }
    bail!("the namespace's conntrack statistics kept moving: {last:?}");
}
