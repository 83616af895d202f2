//! The kernel's own record of drops against the agent's. A tracefs instance records every
//! `skb:kfree_skb` event while a mixed workload drops packets inside the agent's window:
//! UDP to a closed port, an nftables rule, datagrams to a host that does not forward, and
//! ARP requests for a loopback address (freed by a plain `kfree_skb()` on 6.1, i.e.
//! `NOT_SPECIFIED`). For every reason the trace shows, the agent must count at least as many
//! drops (more only from drops outside the trace's shorter window). This catches reasons the
//! probe filters out or misreads on a kernel, as it once did 6.1's `NOT_SPECIFIED` (value 1
//! there, 2 from 6.2 on). The agent runs as the packaged unit runs it (uid 65534,
//! `CAP_BPF`, `CAP_PERFMON`); the workload runs as root.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, Result, ensure};
use retina_tests::{
    unit::{CONFIG, Proc, snapshot_as_unit_with},
    *,
};

/// A tracefs instance (its own ring buffer and event switches), removed on drop.
struct Instance(PathBuf);

impl Instance {
    fn new() -> Result<Instance> {
        let dir = PathBuf::from(TRACEFS)
            .join("instances")
            .join(format!("retina-test-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let inst = Instance(dir);
        // Room for every event of the workload on one CPU (about 100 bytes each).
        std::fs::write(inst.0.join("buffer_size_kb"), "2048")?;
        ensure!(
            inst.event().join("enable").is_file(),
            "no skb/kfree_skb event in {}",
            inst.0.display()
        );
        Ok(inst)
    }

    fn event(&self) -> PathBuf {
        self.0.join("events/skb/kfree_skb")
    }

    /// Drops per reason name, from the recorded events' `reason: NAME`.
    fn reasons(&self) -> Result<BTreeMap<String, u64>> {
        let trace = std::fs::read_to_string(self.0.join("trace"))?;
        let mut out = BTreeMap::new();
        // Event lines only (not the header, nor `[LOST n EVENTS]`: fewer traced drops only
        // make the comparison below easier to pass, never wrong).
        for line in trace.lines().filter(|l| l.contains(" kfree_skb: ")) {
            let reason = line
                .rsplit_once("reason: ")
                .map(|(_, r)| r.trim())
                .with_context(|| format!("a kfree_skb event without a reason: {line}"))?;
            *out.entry(reason.to_string()).or_default() += 1;
        }
        Ok(out)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::write(self.event().join("enable"), "0");
        if let Err(e) = std::fs::remove_dir(&self.0) {
            eprintln!("cleanup: rmdir {}: {e}", self.0.display());
        }
    }
}

#[test]
fn every_drop_the_kernel_traces_is_counted() -> Result<()> {
    require_root();
    let _tracefs = TracefsMount::ensure()?;
    let inst = Instance::new()?;
    let closed = NetNs::new("rtc")?;
    let filtered = NetNs::new("rtf")?;
    filtered.exec(
        "nft",
        &["add table inet retina_trace; \
           add chain inet retina_trace input { type filter hook input priority 0; }; \
           add rule inet retina_trace input udp dport 9999 drop"],
    )?;
    // A veth into the host namespace, which drops datagrams to a port nobody listens on
    // and ARP requests for a loopback address.
    let peer_ns = NetNs::new("rtp")?;
    let mut veth = Veth::new("rtv")?;
    veth.move_peer(&peer_ns)?;
    let subnet = 64 + (std::process::id() % 100) as u8;
    let host_ip = format!("10.233.{subnet}.1");
    let peer_ip = format!("10.233.{subnet}.2");
    run(
        "sysctl",
        [
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", veth.host),
        ],
    )?;
    ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &veth.host])?;
    ip(&["link", "set", &veth.host, "up"])?;
    peer_ns.exec(
        "ip",
        &["addr", "add", &format!("{peer_ip}/24"), "dev", &veth.peer],
    )?;
    peer_ns.exec("ip", &["link", "set", &veth.peer, "up"])?;

    let enable = inst.event().join("enable");
    let t = traffic();
    let script = format!(
        "set -e\n\
         echo 1 > {enable}\n\
         ip netns exec {closed} {t} udp 127.0.0.1:9 200 32\n\
         ip netns exec {filtered} {t} udp 127.0.0.1:9999 100 32\n\
         ip netns exec {peer} {t} udp {host_ip}:9 50 32\n\
         arping -c 5 -w 3 -I {host_if} -s {host_ip} 127.0.0.1 >/dev/null || test $? -eq 1\n\
         sleep 0.3\n\
         echo 0 > {enable}\n",
        enable = enable.display(),
        closed = closed.name,
        filtered = filtered.name,
        peer = peer_ns.name,
        host_if = veth.host,
    );
    let (doc, _) = snapshot_as_unit_with(Proc::Host, CONFIG, &["--settle", "500ms"], || {
        run("sh", ["-c", &script]).map(|_| ())
    })?;
    let traced = inst.reasons()?;

    // The workload's own drops must be in the trace, or the comparison proves nothing
    // (arping answers 1 when nobody replies, which is expected: nobody may).
    let seen = |name: &str| traced.get(name).copied().unwrap_or(0);
    ensure!(
        seen("NO_SOCKET") >= 250 && seen("NETFILTER_DROP") >= 100,
        "the trace missed the workload's drops: {traced:?}"
    );
    let mut missed = Vec::new();
    for (reason, &kernel) in &traced {
        let ours = sum(
            &doc,
            "retina.drop.count",
            &[("drop.reason", reason.as_str())],
        );
        eprintln!("{reason}: kernel traced {kernel}, agent counted {ours}");
        if ours < kernel {
            missed.push(format!("{reason}: kernel {kernel}, agent {ours}"));
        }
    }
    assert!(
        missed.is_empty(),
        "the agent counted fewer drops than the kernel traced: {missed:?} (trace {traced:?})"
    );
    Ok(())
}
