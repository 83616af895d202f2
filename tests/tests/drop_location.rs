//! `drop.location`: the kernel function that freed a dropped packet, checked against the
//! name the kernel itself prints for the same drops (tracefs `skb:kfree_skb`, `%pS`).
//!
//! The agent runs as the packaged unit (uid 65534, `CAP_BPF`, `CAP_PERFMON`) with the
//! drop-in locations need: `CAP_SYSLOG` added, for the addresses in `/proc/kallsyms`. As the
//! unit is shipped, without it, locations are off and the agent says so.

use std::collections::BTreeMap;

use retina_tests::{
    unit::{CONFIG, Proc, snapshot_as_unit_with, snapshot_as_with, unit_capabilities},
    *,
};

/// `snapshot --cumulative` as the packaged unit with the drop-in that locations need
/// (`CAP_SYSLOG` added), the configuration `config` and `extra` arguments, while `during`
/// makes the test's drops (as root).
fn snapshot_with_syslog(
    config: &str,
    extra: &[&str],
    during: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<serde_json::Value> {
    let mut caps = unit_capabilities();
    caps.push("CAP_SYSLOG".to_string());
    let (doc, _stderr) = snapshot_as_with(&caps, Proc::Host, config, extra, during)?;
    Ok(doc)
}

/// `count` datagrams of 32 bytes from inside `ns` to `dst`.
fn udp_in(ns: &NetNs, dst: &str, count: u64) -> anyhow::Result<()> {
    ns.exec(&traffic(), &["udp", dst, &count.to_string(), "32"])
        .map(|_| ())
}

/// The `skb:kfree_skb` event enabled in a trace instance of its own (so the global buffer
/// and whatever else traces are untouched); disabled and removed on drop.
struct KfreeSkbTrace {
    dir: std::path::PathBuf,
    _mount: TracefsMount,
}

impl KfreeSkbTrace {
    fn start() -> anyhow::Result<Self> {
        let mount = TracefsMount::ensure()?;
        let dir = std::path::Path::new(TRACEFS)
            .join("instances")
            .join(unique_name("r13loc"));
        std::fs::create_dir(&dir)?;
        let trace = KfreeSkbTrace { dir, _mount: mount };
        // Kernels before 6.2 print the location as a hashed `%p`: the histogram's `.sym`
        // modifier is where they name it, where the kernel has histograms
        // (CONFIG_HIST_TRIGGERS; this one may not).
        let _ = std::fs::write(trace.dir.join(HIST_TRIGGER_FILE), HIST_TRIGGER);
        std::fs::write(trace.dir.join("events/skb/kfree_skb/enable"), "1")?;
        Ok(trace)
    }

    /// The text of the instance's buffer.
    fn read(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.join("trace"))?)
    }

    /// Drops by the kernel's name of their location, from the histogram.
    fn hist(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let path = self.dir.join("events/skb/kfree_skb/hist");
        if !path.exists() {
            return Ok(BTreeMap::new());
        }
        let text = std::fs::read_to_string(path)?;
        let mut out = BTreeMap::new();
        // `{ location: [ffffffff8a1b2c3d] __udp4_lib_rcv+0x4bc/0xd00 } hitcount: 777`
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let Some((key, count)) = line.split_once("hitcount:") else {
                continue;
            };
            let Some(sym) = key.split(']').nth(1) else {
                continue;
            };
            let func = sym.trim().trim_end_matches('}').trim();
            let func = func.split('+').next().unwrap_or(func).to_string();
            let n: u64 = count.trim().parse().unwrap_or(0);
            *out.entry(func).or_insert(0) += n;
        }
        Ok(out)
    }
}

const HIST_TRIGGER_FILE: &str = "events/skb/kfree_skb/trigger";
const HIST_TRIGGER: &str = "hist:keys=location.sym:vals=hitcount:size=4096";

impl Drop for KfreeSkbTrace {
    fn drop(&mut self) {
        let enable = self.dir.join("events/skb/kfree_skb/enable");
        if let Err(e) = std::fs::write(&enable, "0") {
            eprintln!("cleanup: disabling {}: {e}", enable.display());
        }
        let hist = self.dir.join("events/skb/kfree_skb/hist");
        let trigger = self.dir.join(HIST_TRIGGER_FILE);
        if hist.exists()
            && let Err(e) = std::fs::write(&trigger, format!("!{HIST_TRIGGER}"))
        {
            eprintln!("cleanup: removing the histogram {}: {e}", trigger.display());
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("cleanup: rmdir {}: {e}", self.dir.display());
        }
    }
}

/// Functions the kernel named in `location=FUNC+0xOFF/0xSIZE` for events with `reason`,
/// with how many events each.
fn kernel_locations(trace: &str, reason: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in trace.lines().filter(|l| !l.starts_with('#')) {
        if !line.ends_with(&format!("reason: {reason}")) {
            continue;
        }
        let Some(loc) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("location="))
        else {
            continue;
        };
        let func = loc.split('+').next().unwrap_or(loc);
        *out.entry(func.to_string()).or_insert(0) += 1;
    }
    out
}

#[test]
fn no_socket_drop_is_located_where_the_kernel_says() -> anyhow::Result<()> {
    require_root();
    const SENT: u64 = 777;
    let ns = NetNs::new("rloc")?;
    let inode = ns.inode()?.to_string();
    let trace = KfreeSkbTrace::start()?;
    let doc = snapshot_with_syslog(CONFIG, &["--locations"], || {
        udp_in(&ns, "127.0.0.1:9", SENT)
    })?;
    let text = trace.read()?;
    let hist = trace.hist()?;
    drop(trace);
    let want = [
        ("drop.reason", "NO_SOCKET"),
        ("network.namespace.inode", inode.as_str()),
    ];
    let ours = points(&doc, "retina.drop.count", &want);
    assert_eq!(sum(&doc, "retina.drop.count", &want), SENT, "{doc:#}");
    let located: BTreeMap<String, u64> = ours
        .iter()
        .map(|p| {
            (
                attr_str(p, "drop.location").unwrap_or_default(),
                p["value"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(located.len(), 1, "one function drops them: {located:?}");
    let (function, count) = located.iter().next().map(|(f, c)| (f.clone(), *c)).unwrap();
    assert_eq!(count, SENT);
    assert!(!function.is_empty(), "no drop.location: {doc:#}");
    // The kernel names the same function for these drops. Other NO_SOCKET drops on the
    // host in the same moment can only add events, never take ours away.
    let mut kernel = kernel_locations(&text, "NO_SOCKET");
    // A hashed `%p` (hex only) names nothing: take the histogram's names then.
    if kernel
        .keys()
        .all(|k| k.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        eprintln!("the trace prints hashed locations ({kernel:?}); using the histogram");
        anyhow::ensure!(
            !hist.is_empty(),
            "this kernel prints drop locations hashed (%p) and has no tracefs histogram \
             (CONFIG_HIST_TRIGGERS) to name them: nothing to compare with"
        );
        kernel = hist;
    }
    assert!(
        kernel.get(&function).copied().unwrap_or(0) >= SENT,
        "we say {function} ({SENT} drops); the kernel says {kernel:?}"
    );
    // The option is bounded and reported.
    assert_eq!(
        sum(&doc, "retina.drop.location.overflow", &[]),
        0,
        "{doc:#}"
    );
    assert!(
        !points(&doc, "retina.drop.location.named", &[]).is_empty(),
        "{doc:#}"
    );
    Ok(())
}

/// Without `--locations` the series carry no location and the location metrics are absent.
#[test]
fn locations_are_off_by_default() -> anyhow::Result<()> {
    require_root();
    let ns = NetNs::new("rlof")?;
    let inode = ns.inode()?.to_string();
    let (doc, _) =
        snapshot_as_unit_with(Proc::Host, CONFIG, &[], || udp_in(&ns, "127.0.0.1:9", 100))?;
    let want = [
        ("drop.reason", "NO_SOCKET"),
        ("network.namespace.inode", inode.as_str()),
    ];
    assert_eq!(sum(&doc, "retina.drop.count", &want), 100, "{doc:#}");
    let all = points(&doc, "retina.drop.count", &[]);
    assert!(
        all.iter().all(|p| attr_str(p, "drop.location").is_none()),
        "{doc:#}"
    );
    assert!(points(&doc, "retina.drop.location.named", &[]).is_empty());
    Ok(())
}

/// With a capacity of one function, drops in a second function keep their reason and
/// count, go without `drop.location`, and are counted as location overflow.
#[test]
fn functions_beyond_the_capacity_are_counted_as_overflow() -> anyhow::Result<()> {
    require_root();
    let a = NetNs::new("rlca")?;
    a.exec(
        "nft",
        &["add table inet retina_test; add chain inet retina_test input { type filter hook input priority 0; }; add rule inet retina_test input udp dport 9999 drop"],
    )?;
    let inode = a.inode()?.to_string();
    // Two functions drop them (the UDP receive path, the netfilter hook); one can be named.
    let script = format!(
        "{t} udp 127.0.0.1:9 200 32 && {t} udp 127.0.0.1:9999 300 32",
        t = traffic()
    );
    let doc = snapshot_with_syslog(
        "[drops]\nlocations = true\nlocations_capacity = 1\n",
        &[],
        || a.exec("sh", &["-c", &script]).map(|_| ()),
    )?;
    let ns = ("network.namespace.inode", inode.as_str());
    assert_eq!(
        sum(
            &doc,
            "retina.drop.count",
            &[("drop.reason", "NO_SOCKET"), ns]
        ),
        200
    );
    assert_eq!(
        sum(
            &doc,
            "retina.drop.count",
            &[("drop.reason", "NETFILTER_DROP"), ns]
        ),
        300
    );
    let mut named: Vec<String> = points(&doc, "retina.drop.count", &[])
        .iter()
        .filter_map(|p| attr_str(p, "drop.location"))
        .collect();
    named.sort();
    named.dedup();
    assert!(named.len() <= 1, "capacity 1: {named:?}");
    // In our namespace each reason is all named or all unnamed, and not both are named.
    let unnamed = |reason: &str| -> (u64, u64) {
        let pts = points(&doc, "retina.drop.count", &[("drop.reason", reason), ns]);
        let without: u64 = pts
            .iter()
            .filter(|p| attr_str(p, "drop.location").is_none())
            .map(|p| p["value"].as_u64().unwrap_or(0))
            .sum();
        let total: u64 = pts.iter().map(|p| p["value"].as_u64().unwrap_or(0)).sum();
        (without, total)
    };
    let (no_socket, netfilter) = (unnamed("NO_SOCKET"), unnamed("NETFILTER_DROP"));
    for (without, total) in [no_socket, netfilter] {
        assert!(without == 0 || without == total, "{doc:#}");
    }
    assert!(no_socket.0 + netfilter.0 >= 200, "{doc:#}");
    // Every drop of the window without a location is overflow, and nothing else is.
    let all_unnamed: u64 = points(&doc, "retina.drop.count", &[])
        .iter()
        .filter(|p| attr_str(p, "drop.location").is_none())
        .map(|p| p["value"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        sum(&doc, "retina.drop.location.overflow", &[]),
        all_unnamed,
        "{doc:#}"
    );
    Ok(())
}

/// As the unit is shipped (no `CAP_SYSLOG`) the kernel hides its symbol addresses: the
/// agent says so (log and `degraded`; `check` in tests/tests/check.rs) and counts every
/// drop, without a location.
#[test]
fn as_the_unit_without_cap_syslog_locations_are_off_and_said_so() -> anyhow::Result<()> {
    require_root();
    let ns = NetNs::new("rlns")?;
    let inode = ns.inode()?.to_string();
    let (doc, stderr) = snapshot_as_unit_with(Proc::Host, CONFIG, &["--locations"], || {
        udp_in(&ns, "127.0.0.1:9", 150)
    })?;
    let degraded = doc["degraded"].as_array().cloned().unwrap_or_default();
    let off = degraded
        .iter()
        .find(|d| d["collector"] == "drops.locations")
        .unwrap_or_else(|| panic!("drops.locations is not degraded: {doc:#}"));
    let reason = off["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("CAP_SYSLOG"), "{reason}");
    assert!(
        stderr.lines().any(|l| l.contains("WARN")
            && l.contains("drop locations off")
            && l.contains("CAP_SYSLOG")),
        "{stderr}"
    );
    let want = [
        ("drop.reason", "NO_SOCKET"),
        ("network.namespace.inode", inode.as_str()),
    ];
    assert_eq!(sum(&doc, "retina.drop.count", &want), 150, "{doc:#}");
    assert!(
        points(&doc, "retina.drop.count", &[])
            .iter()
            .all(|p| attr_str(p, "drop.location").is_none()),
        "{doc:#}"
    );
    Ok(())
}
